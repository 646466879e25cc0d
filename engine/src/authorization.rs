//! Decoding and validating one authorization (PROTOCOL.md section 1).
//!
//! The decoder borrows from the message bytes and reduces the message to the
//! few facts the rules need: the card, the instant, the amount, and hashed keys
//! for de-duplication and reversal matching. Hashing the keys here keeps what
//! the engine retains per payment small and fixed-size.

use crate::reason::{Reason, Rejection};
use crate::time::Timestamp;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use std::borrow::Cow;
use std::fmt;
use xxhash_rust::xxh3::Xxh3;

/// The fields of an authorization, in the order of PROTOCOL.md section 1
/// (also the column order of RTD acquirer files).
pub const FIELDS: [&str; 16] = [
    "acquirer_code",
    "operation_type",
    "circuit_type",
    "hpan",
    "trx_date",
    "id_trx_acquirer",
    "id_trx_issuer",
    "correlation_id",
    "total_amount",
    "currency",
    "acquirer_id",
    "merchant_id",
    "terminal_id",
    "bin",
    "mcc",
    "par",
];

/// A hashed PAN, decoded from its 64 hex characters into 32 bytes.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Hpan(pub [u8; 32]);

impl Hpan {
    /// Parses exactly 64 lower-case hex characters; nothing is normalised.
    pub fn parse(text: &str) -> Option<Hpan> {
        let b = text.as_bytes();
        if b.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in b.chunks_exact(2).enumerate() {
            out[i] = (lower_hex(pair[0])? << 4) | lower_hex(pair[1])?;
        }
        Some(Hpan(out))
    }

    /// The 64 lower-case hex characters.
    pub fn to_hex(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(64);
        for byte in self.0 {
            s.push(HEX[(byte >> 4) as usize] as char);
            s.push(HEX[(byte & 15) as usize] as char);
        }
        s
    }
}

fn lower_hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// What an authorization does to a citizen's count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// "00" payment, "02" Apple Pay, "03" Google Pay.
    Payment,
    /// "01" reversal (refund).
    Reversal,
}

/// A valid authorization, reduced to what the rules use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authorization {
    /// Payment or reversal.
    pub operation: Operation,
    /// The wire operation type, 0 to 3, for statements.
    pub operation_type: u8,
    /// The wire circuit type, 0 to 10, for statements.
    pub circuit_type: u8,
    /// The card.
    pub hpan: Hpan,
    /// When the card was used.
    pub trx_date: Timestamp,
    /// Cents, at least 1.
    pub total_amount: u64,
    /// Hash of the de-duplication key without its card (acquirer_code,
    /// acquirer_id, id_trx_acquirer, operation_type, trx_date as received):
    /// see [`payment_key`]. The card is the rest of the key (RULES.md rule
    /// 6): keys are kept, and compared, only among one card's messages.
    pub key: u64,
    /// Hash of (acquirer_code, merchant_id): the shop, for the split-payment
    /// limit (RULES.md, "Split payments"). Compared only among one card's
    /// payments of one day.
    pub merchant_key: u64,
    /// Hash of (acquirer_code, acquirer_id, merchant_id, terminal_id): the
    /// place of a payment, for matching total reversals that carry no
    /// correlation id. Compared only among one card's payments.
    pub terminal_key: u64,
    /// Hash of (acquirer_code, acquirer_id, correlation_id) when a non-empty
    /// correlation id is present.
    pub correlation_key: Option<u64>,
    /// The acquirer's code, for statements (the router interns it).
    pub acquirer_code: Box<str>,
}

/// The de-duplication key of a message of one card, as 64 bits: a hash of
/// (acquirer_code, acquirer_id, id_trx_acquirer, operation_type, trx_date
/// exactly as received). The card is not hashed in: keys are only ever
/// compared among the messages of one card, where 64 bits make a false
/// duplicate practically impossible (about n^2 / 2^65 for a card with n
/// messages: under 10^-6 expected over the whole 2021 programme). Also how an
/// operator's exclusion names a payment (PROTOCOL.md section 6).
pub fn payment_key(
    acquirer_code: &str,
    acquirer_id: &str,
    id_trx_acquirer: &str,
    operation_type: &str,
    trx_date: &str,
) -> u64 {
    hash_parts(&[
        acquirer_code,
        acquirer_id,
        id_trx_acquirer,
        operation_type,
        trx_date,
    ])
    .digest()
}

/// How far past the broker's receive time a `trx_date` may lie (clock skew
/// between terminals and the broker); RULES.md rule 7.
pub const MAX_FUTURE_SECS: i64 = 300;

/// Default largest authorization body, in bytes. A valid authorization is a
/// few hundred bytes; every field at its longest, as raw UTF-8, stays under
/// 8 KiB. The limit bounds what one message can make the engine parse and,
/// for a parked reversal, keep.
pub const DEFAULT_MAX_AUTHORIZATION_BYTES: usize = 16 * 1024;

/// Decodes authorizations. Holds only options; cheap to copy.
#[derive(Clone, Copy, Debug)]
pub struct Decoder {
    /// Bodies longer than this are refused before any parsing, so that no
    /// message can make the decoder (or a parked reversal) hold more.
    pub max_payload_bytes: usize,
}

impl Default for Decoder {
    fn default() -> Decoder {
        Decoder {
            max_payload_bytes: DEFAULT_MAX_AUTHORIZATION_BYTES,
        }
    }
}

/// One JSON value of a field, whatever its type, so that a wrong type is
/// reported as `invalid_field` for that field rather than failing the whole
/// decode.
#[derive(Debug)]
enum Scalar<'a> {
    Str(Cow<'a, str>),
    Unsigned(u64),
    Null,
    /// A negative integer, a float, a boolean, an array or an object.
    Other(&'static str),
}

impl<'de: 'a, 'a> Deserialize<'de> for Scalar<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Owned(v)))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Scalar::Unsigned(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(if v >= 0 {
                    Scalar::Unsigned(v as u64)
                } else {
                    Scalar::Other("a negative number")
                })
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Scalar::Other("a non-integer number"))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Scalar::Other("a boolean"))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Scalar::Null)
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(Scalar::Null)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other("an array"))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other("an object"))
            }
        }
        d.deserialize_any(V)
    }
}

/// The wire object with every field kept loose; validation comes after.
#[derive(Deserialize, Default)]
struct Wire<'a> {
    #[serde(borrow)]
    acquirer_code: Option<Scalar<'a>>,
    #[serde(borrow)]
    operation_type: Option<Scalar<'a>>,
    #[serde(borrow)]
    circuit_type: Option<Scalar<'a>>,
    #[serde(borrow)]
    hpan: Option<Scalar<'a>>,
    #[serde(borrow)]
    trx_date: Option<Scalar<'a>>,
    #[serde(borrow)]
    id_trx_acquirer: Option<Scalar<'a>>,
    #[serde(borrow)]
    id_trx_issuer: Option<Scalar<'a>>,
    #[serde(borrow)]
    correlation_id: Option<Scalar<'a>>,
    #[serde(borrow)]
    total_amount: Option<Scalar<'a>>,
    #[serde(borrow)]
    currency: Option<Scalar<'a>>,
    #[serde(borrow)]
    acquirer_id: Option<Scalar<'a>>,
    #[serde(borrow)]
    merchant_id: Option<Scalar<'a>>,
    #[serde(borrow)]
    terminal_id: Option<Scalar<'a>>,
    #[serde(borrow)]
    bin: Option<Scalar<'a>>,
    #[serde(borrow)]
    mcc: Option<Scalar<'a>>,
    #[serde(borrow)]
    par: Option<Scalar<'a>>,
}

fn invalid(field: &str, why: impl fmt::Display) -> Rejection {
    Rejection::new(Reason::InvalidField, format!("{field}: {why}"))
}

/// A required string field of `min..=max` characters.
fn required<'s>(
    field: &str,
    value: &'s Option<Scalar<'_>>,
    min: usize,
    max: usize,
) -> Result<&'s str, Rejection> {
    match value {
        None | Some(Scalar::Null) => Err(invalid(field, "missing")),
        Some(Scalar::Str(s)) => {
            let n = s.chars().count();
            if n < min || n > max {
                Err(invalid(
                    field,
                    format!("must be {min} to {max} characters, got {n}"),
                ))
            } else {
                Ok(s)
            }
        }
        Some(Scalar::Unsigned(_)) => Err(invalid(field, "must be a string, got a number")),
        Some(Scalar::Other(what)) => Err(invalid(field, format!("must be a string, got {what}"))),
    }
}

/// An optional string field of at most `max` characters; null means absent.
fn optional<'s>(
    field: &str,
    value: &'s Option<Scalar<'_>>,
    max: usize,
) -> Result<Option<&'s str>, Rejection> {
    match value {
        None | Some(Scalar::Null) => Ok(None),
        _ => required(field, value, 0, max).map(Some),
    }
}

/// A required string of exactly `len` ASCII digits (or one of `lens`).
fn digits<'s>(
    field: &str,
    value: &'s Option<Scalar<'_>>,
    lens: &[usize],
) -> Result<&'s str, Rejection> {
    let s = required(field, value, 1, 255)?;
    if lens.contains(&s.len()) && s.bytes().all(|c| c.is_ascii_digit()) {
        Ok(s)
    } else {
        let lens: Vec<String> = lens.iter().map(|l| l.to_string()).collect();
        Err(invalid(
            field,
            format!("must be {} ASCII digits", lens.join(" or ")),
        ))
    }
}

/// Hashes length-prefixed parts, so that ("ab","c") and ("a","bc") differ.
fn hash_parts(parts: &[&str]) -> Xxh3 {
    let mut h = Xxh3::new();
    for p in parts {
        h.update(&(p.len() as u32).to_le_bytes());
        h.update(p.as_bytes());
    }
    h
}

impl Decoder {
    /// Decodes and checks one message published on
    /// `<prefix>.auth.<subject_acquirer>`, in the order of RULES.md:
    /// `malformed`, `invalid_field` (including a body longer than
    /// `max_payload_bytes`, an `acquirer_code` that differs from the subject's
    /// token, and a `trx_date` more than five minutes after `received`, the
    /// broker's receive time), `unsupported_operation`,
    /// `unsupported_currency`, `excluded_mcc`.
    ///
    /// The subject check is what keeps a payment network, which may publish
    /// only on its own subject, from forging another acquirer's payments.
    pub fn decode_on(
        &self,
        subject_acquirer: &str,
        payload: &[u8],
        received: Timestamp,
    ) -> Result<Authorization, Rejection> {
        self.decode_checked(Some(subject_acquirer), payload, received)
    }

    /// Decodes and checks one message whose subject is not known (tools,
    /// benchmarks): as `decode_on`, without the subject check.
    pub fn decode(&self, payload: &[u8], received: Timestamp) -> Result<Authorization, Rejection> {
        self.decode_checked(None, payload, received)
    }

    fn decode_checked(
        &self,
        subject_acquirer: Option<&str>,
        payload: &[u8],
        received: Timestamp,
    ) -> Result<Authorization, Rejection> {
        if payload.len() > self.max_payload_bytes {
            return Err(oversize(payload, self.max_payload_bytes));
        }
        let wire: Wire = match serde_json::from_slice(payload) {
            Ok(w) => w,
            Err(e) => return Err(classify_decode_error(payload, e)),
        };
        let acquirer_code = required("acquirer_code", &wire.acquirer_code, 1, 20)?;
        if subject_acquirer.is_some_and(|token| token != acquirer_code) {
            return Err(invalid(
                "acquirer_code",
                "differs from the acquirer token of the subject it was published on",
            ));
        }
        let operation_type = digits("operation_type", &wire.operation_type, &[2])?;
        let circuit_type = digits("circuit_type", &wire.circuit_type, &[2])?;
        let circuit: u8 = circuit_type.parse().unwrap_or(u8::MAX);
        if circuit > 10 {
            return Err(invalid("circuit_type", "must be one of \"00\" to \"10\""));
        }
        let hpan_text = required("hpan", &wire.hpan, 64, 64)
            .map_err(|_| invalid("hpan", "must be 64 lower-case hex characters"))?;
        let hpan = Hpan::parse(hpan_text)
            .ok_or_else(|| invalid("hpan", "must be 64 lower-case hex characters"))?;
        let trx_date_text = required("trx_date", &wire.trx_date, 1, 64)?;
        let trx_date = Timestamp::parse_rfc3339(trx_date_text).ok_or_else(|| {
            invalid(
                "trx_date",
                "must be RFC 3339: YYYY-MM-DDTHH:MM:SS[.fraction] then Z or ±HH:MM",
            )
        })?;
        if trx_date > received.plus_secs(MAX_FUTURE_SECS) {
            return Err(invalid(
                "trx_date",
                "is more than 5 minutes after the broker received the message",
            ));
        }
        let id_trx_acquirer = required("id_trx_acquirer", &wire.id_trx_acquirer, 1, 255)?;
        optional("id_trx_issuer", &wire.id_trx_issuer, 255)?;
        let correlation_id =
            optional("correlation_id", &wire.correlation_id, 255)?.filter(|c| !c.is_empty());
        let total_amount = match &wire.total_amount {
            None | Some(Scalar::Null) => return Err(invalid("total_amount", "missing")),
            Some(Scalar::Unsigned(v)) if *v >= 1 && *v <= i64::MAX as u64 => *v,
            Some(Scalar::Unsigned(_)) => {
                return Err(invalid("total_amount", "must be 1 to 2^63-1 cents"))
            }
            Some(Scalar::Str(_)) => {
                return Err(invalid(
                    "total_amount",
                    "must be a JSON integer, got a string",
                ))
            }
            Some(Scalar::Other(what)) => {
                return Err(invalid(
                    "total_amount",
                    format!("must be a JSON integer of cents, got {what}"),
                ))
            }
        };
        let currency = digits("currency", &wire.currency, &[3])?;
        let acquirer_id = required("acquirer_id", &wire.acquirer_id, 1, 255)?;
        let merchant_id = required("merchant_id", &wire.merchant_id, 1, 255)?;
        let terminal_id = required("terminal_id", &wire.terminal_id, 1, 255)?;
        digits("bin", &wire.bin, &[6, 8])?;
        let mcc = required("mcc", &wire.mcc, 1, 5)?;
        optional("par", &wire.par, 255)?;

        let (operation, op) = match operation_type {
            "00" => (Operation::Payment, 0),
            "01" => (Operation::Reversal, 1),
            "02" => (Operation::Payment, 2),
            "03" => (Operation::Payment, 3),
            other => {
                return Err(Rejection::new(
                    Reason::UnsupportedOperation,
                    format!("operation_type {other} is not 00, 01, 02 or 03"),
                ))
            }
        };
        if currency != "978" {
            return Err(Rejection::new(
                Reason::UnsupportedCurrency,
                format!("currency {currency} is not 978 (EUR)"),
            ));
        }
        if mcc == "6010" || mcc == "6011" {
            return Err(Rejection::new(
                Reason::ExcludedMcc,
                format!("mcc {mcc} is a cash withdrawal"),
            ));
        }

        let key = payment_key(
            acquirer_code,
            acquirer_id,
            id_trx_acquirer,
            operation_type,
            trx_date_text,
        );
        let merchant_key = hash_parts(&[acquirer_code, merchant_id]).digest();
        let terminal_key =
            hash_parts(&[acquirer_code, acquirer_id, merchant_id, terminal_id]).digest();
        let correlation_key =
            correlation_id.map(|c| hash_parts(&[acquirer_code, acquirer_id, c]).digest());
        Ok(Authorization {
            acquirer_code: acquirer_code.into(),
            operation,
            operation_type: op,
            circuit_type: circuit,
            hpan,
            trx_date,
            total_amount,
            key,
            merchant_key,
            terminal_key,
            correlation_key,
        })
    }
}

/// The rejection of a body over the size limit, decided without parsing it:
/// `invalid_field` when it starts like a JSON object, else `malformed`.
fn oversize(payload: &[u8], limit: usize) -> Rejection {
    let looks_like_object = payload
        .iter()
        .find(|c| !c.is_ascii_whitespace())
        .is_some_and(|c| *c == b'{');
    let why = format!(
        "{} bytes, more than the {limit} an authorization may have",
        payload.len()
    );
    if looks_like_object {
        invalid("message", why)
    } else {
        Rejection::new(Reason::Malformed, format!("not a JSON object: {why}"))
    }
}

/// Tells `malformed` (not a JSON object at all) from `invalid_field` (an
/// object whose fields the typed decode refused, e.g. a duplicated key).
fn classify_decode_error(payload: &[u8], err: serde_json::Error) -> Rejection {
    let is_object = serde_json::from_slice::<IgnoredAny>(payload).is_ok()
        && payload
            .iter()
            .find(|c| !c.is_ascii_whitespace())
            .is_some_and(|c| *c == b'{');
    if is_object {
        invalid("message", err)
    } else if payload.is_empty() {
        Rejection::new(Reason::Malformed, "empty message: not a JSON object")
    } else {
        Rejection::new(Reason::Malformed, format!("not a JSON object: {err}"))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// A valid payment as a JSON value, to be mutated by tests.
    pub fn sample() -> Value {
        json!({
            "acquirer_code": "32875",
            "operation_type": "00",
            "circuit_type": "01",
            "hpan": "a".repeat(64),
            "trx_date": "2021-03-14T10:22:33+01:00",
            "id_trx_acquirer": "123456789",
            "id_trx_issuer": "AUTH01",
            "correlation_id": null,
            "total_amount": 3550,
            "currency": "978",
            "acquirer_id": "4567",
            "merchant_id": "M1",
            "terminal_id": "T1",
            "bin": "40000000",
            "mcc": "5411",
            "par": null
        })
    }

    /// Broker time of the samples: well after their trx_date.
    pub fn received() -> Timestamp {
        Timestamp::parse_rfc3339("2021-03-20T00:00:00Z").unwrap()
    }

    fn decode(v: &Value) -> Result<Authorization, Rejection> {
        Decoder::default().decode(v.to_string().as_bytes(), received())
    }

    fn reason_with(field: &str, value: Value) -> Reason {
        let mut v = sample();
        if value == json!("__remove__") {
            v.as_object_mut().unwrap().remove(field);
        } else {
            v[field] = value;
        }
        match decode(&v) {
            Ok(_) => panic!("{field} should have been refused"),
            Err(r) => r.reason,
        }
    }

    #[test]
    fn a_valid_payment_decodes() {
        let a = decode(&sample()).unwrap();
        assert_eq!(a.operation, Operation::Payment);
        assert_eq!(a.total_amount, 3550);
        assert_eq!(a.hpan.to_hex(), "a".repeat(64));
        assert_eq!(a.correlation_key, None);
    }

    #[test]
    fn not_an_object_is_malformed() {
        for bad in ["", "nope", "[1,2]", "\"x\"", "42", "{\"a\":", "null"] {
            assert_eq!(
                Decoder::default()
                    .decode(bad.as_bytes(), received())
                    .unwrap_err()
                    .reason,
                Reason::Malformed,
                "{bad}"
            );
        }
        assert_eq!(
            Decoder::default()
                .decode(&[0xff, 0xfe], received())
                .unwrap_err()
                .reason,
            Reason::Malformed
        );
    }

    #[test]
    fn field_shapes() {
        use Reason::*;
        let cases: Vec<(&str, Value, Reason)> = vec![
            ("acquirer_code", json!("__remove__"), InvalidField),
            ("acquirer_code", json!(""), InvalidField),
            ("acquirer_code", json!("x".repeat(21)), InvalidField),
            ("acquirer_code", json!(32875), InvalidField),
            ("operation_type", json!("0"), InvalidField),
            ("operation_type", json!("0a"), InvalidField),
            ("operation_type", json!("04"), UnsupportedOperation),
            ("operation_type", json!("99"), UnsupportedOperation),
            ("circuit_type", json!("11"), InvalidField),
            ("circuit_type", json!(1), InvalidField),
            ("hpan", json!("A".repeat(64)), InvalidField),
            ("hpan", json!("a".repeat(63)), InvalidField),
            ("trx_date", json!("2021-03-14 10:22:33+01:00"), InvalidField),
            ("trx_date", json!(null), InvalidField),
            ("id_trx_acquirer", json!("x".repeat(256)), InvalidField),
            ("id_trx_issuer", json!("x".repeat(256)), InvalidField),
            ("id_trx_issuer", json!(5), InvalidField),
            ("correlation_id", json!(true), InvalidField),
            ("total_amount", json!(0), InvalidField),
            ("total_amount", json!(-5), InvalidField),
            ("total_amount", json!(10.5), InvalidField),
            ("total_amount", json!(1e3), InvalidField),
            ("total_amount", json!("3550"), InvalidField),
            (
                "total_amount",
                json!(9_223_372_036_854_775_808u64),
                InvalidField,
            ),
            ("currency", json!("EUR"), InvalidField),
            ("currency", json!("840"), UnsupportedCurrency),
            ("acquirer_id", json!([]), InvalidField),
            ("merchant_id", json!({}), InvalidField),
            ("terminal_id", json!(""), InvalidField),
            ("bin", json!("1234567"), InvalidField),
            ("bin", json!("12345a"), InvalidField),
            ("mcc", json!("123456"), InvalidField),
            ("mcc", json!("6010"), ExcludedMcc),
            ("mcc", json!("6011"), ExcludedMcc),
            ("par", json!("x".repeat(256)), InvalidField),
        ];
        for (field, value, want) in cases {
            assert_eq!(reason_with(field, value.clone()), want, "{field} = {value}");
        }
    }

    #[test]
    fn a_trx_date_from_the_future_is_invalid() {
        let at = |s: &str| {
            let mut v = sample();
            v["trx_date"] = json!(s);
            decode(&v).map(|_| ()).map_err(|r| r.reason)
        };
        assert_eq!(at("2021-03-20T00:05:00Z"), Ok(()));
        assert_eq!(
            at("2021-03-20T00:05:00.000000001Z"),
            Err(Reason::InvalidField)
        );
        // Still invalid_field before unsupported_operation.
        let mut v = sample();
        v["trx_date"] = json!("2022-01-01T00:00:00Z");
        v["operation_type"] = json!("09");
        assert_eq!(decode(&v).unwrap_err().reason, Reason::InvalidField);
    }

    #[test]
    fn limits_count_characters_not_bytes() {
        let mut v = sample();
        v["acquirer_code"] = json!("é".repeat(20)); // 40 bytes, 20 characters
        assert!(decode(&v).is_ok());
    }

    #[test]
    fn invalid_field_comes_before_unsupported() {
        let mut v = sample();
        v["operation_type"] = json!("07");
        v["bin"] = json!("1");
        assert_eq!(decode(&v).unwrap_err().reason, Reason::InvalidField);
    }

    #[test]
    fn optional_fields_may_be_null_or_absent_and_unknown_fields_are_ignored() {
        let mut v = sample();
        v.as_object_mut().unwrap().remove("par");
        v["id_trx_issuer"] = json!(null);
        v["correlation_id"] = json!("");
        v["extra"] = json!({"nested": [1, 2]});
        assert_eq!(decode(&v).unwrap().correlation_key, None);
        assert_eq!(
            Decoder::default()
                .decode(br#"{"acquirer_code":"1","acquirer_code":"2"}"#, received())
                .unwrap_err()
                .reason,
            Reason::InvalidField
        );
    }

    #[test]
    fn the_subject_token_must_be_the_acquirer_code() {
        let body = sample().to_string();
        let d = Decoder::default();
        assert!(d.decode_on("32875", body.as_bytes(), received()).is_ok());
        let forged = d
            .decode_on("11111", body.as_bytes(), received())
            .unwrap_err();
        assert_eq!(forged.reason, Reason::InvalidField);
        assert!(forged.message.starts_with("acquirer_code"), "{forged:?}");
        // Before unsupported_currency, as every invalid_field.
        let mut v = sample();
        v["currency"] = json!("840");
        assert_eq!(
            d.decode_on("1", v.to_string().as_bytes(), received())
                .unwrap_err()
                .reason,
            Reason::InvalidField
        );
        // A prefix of the code is not the code.
        assert!(d.decode_on("3287", body.as_bytes(), received()).is_err());
        assert!(d.decode_on("32875.x", body.as_bytes(), received()).is_err());
    }

    #[test]
    fn an_oversize_body_is_refused_before_parsing() {
        let d = Decoder {
            max_payload_bytes: 1000,
        };
        let mut v = sample();
        v["padding"] = json!("x".repeat(1000));
        let r = d.decode(v.to_string().as_bytes(), received()).unwrap_err();
        assert_eq!(r.reason, Reason::InvalidField, "{r:?}");
        let r = d.decode(&[b'x'; 1001], received()).unwrap_err();
        assert_eq!(r.reason, Reason::Malformed, "{r:?}");
        // At the limit it is decoded as usual.
        let body = sample().to_string();
        let exact = Decoder {
            max_payload_bytes: body.len(),
        };
        assert!(exact.decode(body.as_bytes(), received()).is_ok());
    }

    #[test]
    fn keys_distinguish_their_parts() {
        let a = decode(&sample()).unwrap();
        let mut v = sample();
        v["trx_date"] = json!("2021-03-14T09:22:33Z"); // same instant, other text
        let b = decode(&v).unwrap();
        assert_eq!(a.trx_date, b.trx_date);
        assert_ne!(a.key, b.key);
        let mut v = sample();
        v["operation_type"] = json!("01");
        assert_ne!(decode(&v).unwrap().key, a.key);
        let mut v = sample();
        v["correlation_id"] = json!("C1");
        v["merchant_id"] = json!("M2");
        let c = decode(&v).unwrap();
        assert!(c.correlation_key.is_some());
        assert_ne!(c.terminal_key, a.terminal_key);
        assert_ne!(c.merchant_key, a.merchant_key);
        // The card is not in the 64-bit key (it is the other half of the
        // rule's key, kept by where keys are stored).
        let mut v = sample();
        v["hpan"] = json!("b".repeat(64));
        assert_eq!(decode(&v).unwrap().key, a.key);
    }
}
