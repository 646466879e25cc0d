//! Operators' requests (PROTOCOL.md section 6): the exclusion and the
//! reinstatement of a payment, their stateless checks, and the journal entry
//! that carries an accepted request into the ordered log (RULES.md,
//! "Operator exclusions": they take effect in log order, like enrollments).

use crate::authorization::{payment_key, Hpan};
use crate::enrollment::EnrollError;
use crate::item::ExclusionOp;
use crate::refusal::ErrorCode;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};

/// Largest request body: a request is a few hundred bytes.
pub const MAX_REQUEST_BYTES: usize = 4096;

/// An exclusion or reinstatement that passed the stateless checks: the
/// payment's de-duplication key, exactly as the payment carried it, and the
/// operator's reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExclusionCommand {
    /// The card.
    pub hpan: String,
    /// The acquirer's ABI code.
    pub acquirer_code: String,
    /// The acquirer's id.
    pub acquirer_id: String,
    /// The acquirer's transaction id.
    pub id_trx_acquirer: String,
    /// The payment's operation type ("00", "02", "03").
    pub operation_type: String,
    /// `trx_date` exactly as the payment carried it.
    pub trx_date: String,
    /// Why, for audit: 1-255 characters.
    pub reason: String,
}

/// A journal entry: the command and which of the two it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// Exclude or reinstate.
    pub op: ExclusionOp,
    /// The request.
    #[serde(flatten)]
    pub command: ExclusionCommand,
}

impl ExclusionCommand {
    /// The payment's de-duplication key among its card's messages.
    pub fn key(&self) -> u64 {
        payment_key(
            &self.acquirer_code,
            &self.acquirer_id,
            &self.id_trx_acquirer,
            &self.operation_type,
            &self.trx_date,
        )
    }
}

fn bad(message: impl Into<String>) -> EnrollError {
    EnrollError::new(ErrorCode::BadRequest, message)
}

/// Checks a request body: a JSON object with every field a string of the
/// protocol's shape (section 1 for the key's fields). Anything else is
/// `bad_request`.
pub fn parse_request(body: &[u8]) -> Result<ExclusionCommand, EnrollError> {
    if body.len() > MAX_REQUEST_BYTES {
        return Err(bad(format!(
            "the request is over {MAX_REQUEST_BYTES} bytes"
        )));
    }
    // serde reads a struct from a JSON array too: the protocol wants an object.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(bad("the request must be a JSON object"));
    }
    let cmd: ExclusionCommand = serde_json::from_slice(body).map_err(|e| {
        bad(format!(
            "expected {{\"hpan\", \"acquirer_code\", \"acquirer_id\", \"id_trx_acquirer\", \
             \"operation_type\", \"trx_date\", \"reason\"}}, all strings: {e}"
        ))
    })?;
    let chars = |field: &str, value: &str, min: usize, max: usize| {
        let n = value.chars().count();
        if n < min || n > max {
            Err(bad(format!("{field} must be {min} to {max} characters")))
        } else {
            Ok(())
        }
    };
    if Hpan::parse(&cmd.hpan).is_none() {
        return Err(bad("hpan must be 64 lower-case hex characters"));
    }
    chars("acquirer_code", &cmd.acquirer_code, 1, 20)?;
    chars("acquirer_id", &cmd.acquirer_id, 1, 255)?;
    chars("id_trx_acquirer", &cmd.id_trx_acquirer, 1, 255)?;
    if cmd.operation_type.len() != 2 || !cmd.operation_type.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("operation_type must be 2 ASCII digits"));
    }
    if Timestamp::parse_rfc3339(&cmd.trx_date).is_none() {
        return Err(bad(
            "trx_date must be RFC 3339: YYYY-MM-DDTHH:MM:SS[.fraction] then Z or ±HH:MM",
        ));
    }
    chars("reason", &cmd.reason, 1, 255)?;
    Ok(cmd)
}

impl JournalEntry {
    /// The journal entry's bytes.
    pub fn to_journal(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("journal entries always serialize")
    }

    /// Reads a journal entry back, re-running the stateless checks (a
    /// replay must not trust bytes it cannot vouch for).
    pub fn from_journal(bytes: &[u8]) -> Result<JournalEntry, EnrollError> {
        let entry: JournalEntry = serde_json::from_slice(bytes)
            .map_err(|e| bad(format!("unreadable journal entry: {e}")))?;
        let command = parse_request(&serde_json::to_vec(&entry.command).unwrap_or_default())?;
        Ok(JournalEntry {
            op: entry.op,
            command,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request() -> serde_json::Value {
        json!({"hpan": "a".repeat(64), "acquirer_code": "32875", "acquirer_id": "4567",
               "id_trx_acquirer": "123", "operation_type": "00",
               "trx_date": "2021-03-14T10:22:33+01:00", "reason": "split purchase"})
    }

    #[test]
    fn requests_are_checked_and_journaled_faithfully() {
        let cmd = parse_request(request().to_string().as_bytes()).unwrap();
        assert_eq!(
            cmd.key(),
            payment_key("32875", "4567", "123", "00", "2021-03-14T10:22:33+01:00")
        );
        let entry = JournalEntry {
            op: ExclusionOp::Exclude,
            command: cmd,
        };
        assert_eq!(
            JournalEntry::from_journal(&entry.to_journal()).unwrap(),
            entry
        );
        for (field, value) in [
            ("hpan", json!("A".repeat(64))),
            ("reason", json!("")),
            ("reason", json!("x".repeat(256))),
            ("trx_date", json!("2021-03-14 10:22:33")),
            ("operation_type", json!("0")),
            ("acquirer_code", json!(32875)),
        ] {
            let mut v = request();
            v[field] = value;
            let e = parse_request(v.to_string().as_bytes()).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadRequest, "{field}");
        }
        assert_eq!(
            parse_request(b"[]").unwrap_err().code,
            ErrorCode::BadRequest
        );
        // A struct's fields as a JSON array are not a request either (serde
        // would read them so).
        let r = request();
        let array = json!([
            r["hpan"],
            r["acquirer_code"],
            r["acquirer_id"],
            r["id_trx_acquirer"],
            r["operation_type"],
            r["trx_date"],
            r["reason"]
        ])
        .to_string();
        assert_eq!(
            parse_request(array.as_bytes()).unwrap_err().code,
            ErrorCode::BadRequest
        );
    }
}
