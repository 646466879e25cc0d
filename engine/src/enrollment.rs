//! Enrollment requests (PROTOCOL.md section 2): their stateless checks and the
//! journal entry that carries an accepted request into the ordered log.
//!
//! Checks that need no state (`bad_request`, `invalid_citizen_id`,
//! `invalid_iban`, `invalid_hpan`) are answered at once; everything else is
//! decided when the journal entry is applied in log order, so that a replay
//! decides exactly the same way.

use crate::authorization::Hpan;
use crate::refusal::{ErrorCode, Refusal};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Which enrollment subject a request came on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnrollKind {
    /// `cashback.enroll.citizen`
    Citizen,
    /// `cashback.enroll.card`
    Card,
    /// `cashback.enroll.card_remove`
    CardRemove,
    /// `cashback.enroll.citizen_remove`
    CitizenRemove,
}

impl EnrollKind {
    /// Every kind, with the last subject token that selects it.
    pub const ALL: [(EnrollKind, &'static str); 4] = [
        (EnrollKind::Citizen, "citizen"),
        (EnrollKind::Card, "card"),
        (EnrollKind::CardRemove, "card_remove"),
        (EnrollKind::CitizenRemove, "citizen_remove"),
    ];

    /// The last subject token.
    pub fn token(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(k, _)| *k == self)
            .map(|(_, t)| *t)
            .unwrap_or("?")
    }
}

/// A refused enrollment: one of the codes of PROTOCOL.md section 2 and a
/// sentence. The same shape as every other refusal, so the services answer
/// all of them alike.
pub type EnrollError = Refusal;

/// A request that passed the stateless checks: what goes into the journal.
/// Times stay as received text (they were checked to parse) so that the
/// journal is a faithful record of the request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum EnrollCommand {
    /// Create a citizen, or change the IBAN of an existing one.
    Citizen {
        citizen_id: String,
        iban: String,
        tc_accepted_at: String,
    },
    /// Register a card (a new activation window when not active).
    Card {
        citizen_id: String,
        hpan: String,
        activated_at: String,
    },
    /// Close the card's open activation window.
    CardRemove {
        citizen_id: String,
        hpan: String,
        deactivated_at: String,
    },
    /// Withdraw the citizen, for good.
    CitizenRemove {
        citizen_id: String,
        cancelled_at: String,
    },
}

impl EnrollCommand {
    /// The citizen the command is about.
    pub fn citizen_id(&self) -> &str {
        match self {
            EnrollCommand::Citizen { citizen_id, .. }
            | EnrollCommand::Card { citizen_id, .. }
            | EnrollCommand::CardRemove { citizen_id, .. }
            | EnrollCommand::CitizenRemove { citizen_id, .. } => citizen_id,
        }
    }

    /// The journal entry's bytes.
    pub fn to_journal(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("commands always serialize")
    }

    /// Reads a journal entry back, re-running the stateless checks: the
    /// journal subject is writable only by the engine, but a replay must not
    /// trust bytes it cannot vouch for.
    pub fn from_journal(bytes: &[u8]) -> Result<EnrollCommand, EnrollError> {
        let cmd: EnrollCommand = serde_json::from_slice(bytes).map_err(|e| {
            EnrollError::new(
                ErrorCode::BadRequest,
                format!("unreadable journal entry: {e}"),
            )
        })?;
        let (kind, value) = cmd.as_request();
        parse_request(kind, value.to_string().as_bytes())
    }

    fn as_request(&self) -> (EnrollKind, Value) {
        let v = serde_json::to_value(self).expect("commands always serialize");
        let mut map: Map<String, Value> = v.as_object().cloned().unwrap_or_default();
        map.remove("op");
        let kind = match self {
            EnrollCommand::Citizen { .. } => EnrollKind::Citizen,
            EnrollCommand::Card { .. } => EnrollKind::Card,
            EnrollCommand::CardRemove { .. } => EnrollKind::CardRemove,
            EnrollCommand::CitizenRemove { .. } => EnrollKind::CitizenRemove,
        };
        (kind, Value::Object(map))
    }
}

/// Whether `id` is 1-64 characters of `[A-Za-z0-9_-]` (safe as a subject token).
pub fn valid_citizen_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
}

/// Whether `iban` is an ISO 13616 IBAN in electronic form (no spaces,
/// upper-case) whose mod-97 check holds.
pub fn valid_iban(iban: &str) -> bool {
    let b = iban.as_bytes();
    if b.len() < 15 || b.len() > 34 {
        return false;
    }
    if !b[0..2].iter().all(|c| c.is_ascii_uppercase()) || !b[2..4].iter().all(u8::is_ascii_digit) {
        return false;
    }
    if !b[4..]
        .iter()
        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    {
        return false;
    }
    let mut rem: u32 = 0;
    for &c in b[4..].iter().chain(&b[0..4]) {
        if c.is_ascii_digit() {
            rem = (rem * 10 + (c - b'0') as u32) % 97;
        } else {
            let v = (c - b'A' + 10) as u32;
            rem = (rem * 100 + v) % 97;
        }
    }
    rem == 1
}

/// Builds a valid IBAN from a country code and a BBAN by computing its
/// check digits (for demos, simulators and tests).
pub fn make_iban(country: &str, bban: &str) -> String {
    let mut rem: u32 = 0;
    for c in bban.bytes().chain(country.bytes()).chain(*b"00") {
        rem = if c.is_ascii_digit() {
            (rem * 10 + (c - b'0') as u32) % 97
        } else {
            (rem * 100 + (c - b'A' + 10) as u32) % 97
        };
    }
    format!("{country}{:02}{bban}", 98 - rem)
}

/// Largest enrollment request body, in bytes. A valid request is under 300
/// bytes; the bound keeps any request from making the engine parse, or
/// journal, more.
pub const MAX_REQUEST_BYTES: usize = 4096;

/// Applies the stateless checks of PROTOCOL.md section 2 to a request body.
pub fn parse_request(kind: EnrollKind, body: &[u8]) -> Result<EnrollCommand, EnrollError> {
    if body.len() > MAX_REQUEST_BYTES {
        return Err(EnrollError::new(
            ErrorCode::BadRequest,
            format!(
                "the request has {} bytes, more than {MAX_REQUEST_BYTES}",
                body.len()
            ),
        ));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| EnrollError::new(ErrorCode::BadRequest, format!("not JSON: {e}")))?;
    let obj = value.as_object().ok_or_else(|| {
        EnrollError::new(ErrorCode::BadRequest, "the request must be a JSON object")
    })?;
    let field = |name: &str| -> Result<String, EnrollError> {
        match obj.get(name) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(EnrollError::new(
                ErrorCode::BadRequest,
                format!("{name} must be a string"),
            )),
            None => Err(EnrollError::new(
                ErrorCode::BadRequest,
                format!("{name} is missing"),
            )),
        }
    };
    let time = |name: &str| -> Result<String, EnrollError> {
        let s = field(name)?;
        if Timestamp::parse_rfc3339(&s).is_none() {
            return Err(EnrollError::new(
                ErrorCode::BadRequest,
                format!("{name} must be RFC 3339: YYYY-MM-DDTHH:MM:SS[.fraction] then Z or ±HH:MM"),
            ));
        }
        Ok(s)
    };
    match kind {
        EnrollKind::Citizen => {
            let citizen_id = field("citizen_id")?;
            let iban = field("iban")?;
            let tc_accepted_at = time("tc_accepted_at")?;
            if !valid_citizen_id(&citizen_id) {
                return Err(EnrollError::new(
                    ErrorCode::InvalidCitizenId,
                    "citizen_id must be 1-64 characters of A-Z, a-z, 0-9, _ and -",
                ));
            }
            if !valid_iban(&iban) {
                return Err(EnrollError::new(
                    ErrorCode::InvalidIban,
                    "iban must be an ISO 13616 IBAN (upper case, no spaces) with a valid check",
                ));
            }
            Ok(EnrollCommand::Citizen {
                citizen_id,
                iban,
                tc_accepted_at,
            })
        }
        EnrollKind::Card => {
            let citizen_id = field("citizen_id")?;
            let hpan = field("hpan")?;
            let activated_at = time("activated_at")?;
            if Hpan::parse(&hpan).is_none() {
                return Err(EnrollError::new(
                    ErrorCode::InvalidHpan,
                    "hpan must be 64 lower-case hex characters",
                ));
            }
            Ok(EnrollCommand::Card {
                citizen_id,
                hpan,
                activated_at,
            })
        }
        EnrollKind::CardRemove => Ok(EnrollCommand::CardRemove {
            citizen_id: field("citizen_id")?,
            hpan: field("hpan")?,
            deactivated_at: time("deactivated_at")?,
        }),
        EnrollKind::CitizenRemove => Ok(EnrollCommand::CitizenRemove {
            citizen_id: field("citizen_id")?,
            cancelled_at: time("cancelled_at")?,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn code(kind: EnrollKind, v: Value) -> &'static str {
        match parse_request(kind, v.to_string().as_bytes()) {
            Ok(_) => "ok",
            Err(e) => e.code.as_str(),
        }
    }

    #[test]
    fn ibans() {
        assert!(valid_iban("IT60X0542811101000000123456"));
        assert!(valid_iban("DE89370400440532013000"));
        assert!(!valid_iban("IT60X0542811101000000123457"));
        assert!(!valid_iban("it60x0542811101000000123456"));
        assert!(!valid_iban("IT60 X054 2811 1010 0000 0123 456"));
        assert!(!valid_iban("IT60"));
        assert_eq!(
            make_iban("IT", "X0542811101000000123456"),
            "IT60X0542811101000000123456"
        );
        assert!(valid_iban(&make_iban("IT", "X0542811101000000000042")));
    }

    #[test]
    fn citizen_checks_in_order() {
        let ok = json!({"citizen_id": "c-1", "iban": "IT60X0542811101000000123456",
                        "tc_accepted_at": "2021-01-01T00:00:00Z"});
        assert_eq!(code(EnrollKind::Citizen, ok.clone()), "ok");
        assert_eq!(code(EnrollKind::Citizen, json!([1])), "bad_request");
        let mut v = ok.clone();
        v["iban"] = json!(5);
        assert_eq!(code(EnrollKind::Citizen, v), "bad_request");
        let mut v = ok.clone();
        v["tc_accepted_at"] = json!("yesterday");
        v["citizen_id"] = json!("bad id");
        assert_eq!(code(EnrollKind::Citizen, v), "bad_request");
        let mut v = ok.clone();
        v["citizen_id"] = json!("a.b");
        v["iban"] = json!("nope");
        assert_eq!(code(EnrollKind::Citizen, v), "invalid_citizen_id");
        let mut v = ok.clone();
        v["citizen_id"] = json!("x".repeat(65));
        assert_eq!(code(EnrollKind::Citizen, v), "invalid_citizen_id");
        let mut v = ok;
        v["iban"] = json!("IT00X0542811101000000123456");
        assert_eq!(code(EnrollKind::Citizen, v), "invalid_iban");
    }

    #[test]
    fn card_checks() {
        let ok = json!({"citizen_id": "c1", "hpan": "b".repeat(64),
                        "activated_at": "2021-01-01T00:00:00+01:00"});
        assert_eq!(code(EnrollKind::Card, ok.clone()), "ok");
        let mut v = ok.clone();
        v["hpan"] = json!("B".repeat(64));
        assert_eq!(code(EnrollKind::Card, v.clone()), "invalid_hpan");
        // Removal does not check the hpan's shape: an unknown card is unknown_card.
        v["deactivated_at"] = json!("2021-01-02T00:00:00Z");
        assert_eq!(code(EnrollKind::CardRemove, v), "ok");
        assert_eq!(
            code(EnrollKind::CitizenRemove, json!({"citizen_id": "c1"})),
            "bad_request"
        );
    }

    #[test]
    fn journal_round_trip() {
        let cmd = parse_request(
            EnrollKind::Card,
            json!({"citizen_id": "c1", "hpan": "b".repeat(64),
                   "activated_at": "2021-01-01T00:00:00Z", "extra": 1})
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(EnrollCommand::from_journal(&cmd.to_journal()).unwrap(), cmd);
        assert!(EnrollCommand::from_journal(b"{\"op\":\"card\"}").is_err());
    }
}
