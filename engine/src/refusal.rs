//! Why a request was refused: the error codes of the wire protocol
//! (PROTOCOL.md sections 2, 3 and 6) as one closed enum, so that a code can
//! only be one the protocol lists and every reply spells it the same way.

use serde::{Serialize, Serializer};

/// Every error code a request-reply answer may carry. The app back end
/// branches on these strings, so adding one is a protocol change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Not a JSON object, a required field missing or mistyped, a time that
    /// is not RFC 3339, a page limit over the maximum.
    BadRequest,
    /// `citizen_id` is not 1-64 characters of `[A-Za-z0-9_-]`.
    InvalidCitizenId,
    /// `iban` is not an ISO 13616 IBAN with a valid check.
    InvalidIban,
    /// The citizen withdrew; withdrawal is final.
    CitizenWithdrawn,
    /// No citizen with this id.
    UnknownCitizen,
    /// `hpan` is not 64 lower-case hex characters.
    InvalidHpan,
    /// The card is active for another citizen.
    CardOwnedByOtherCitizen,
    /// The citizen never had this card.
    UnknownCard,
    /// No award period with this id.
    UnknownAwardPeriod,
    /// No counted payment of that card with that key (operator exclusions).
    UnknownPayment,
    /// The period no longer accepts data (operator exclusions).
    PeriodClosed,
    /// The engine could not answer now (restarting, journal not written or
    /// not applied in time); nothing changed and a retry is safe.
    Unavailable,
}

impl ErrorCode {
    /// Every code, in the order of the protocol's tables.
    pub const ALL: [ErrorCode; 12] = [
        ErrorCode::BadRequest,
        ErrorCode::InvalidCitizenId,
        ErrorCode::InvalidIban,
        ErrorCode::CitizenWithdrawn,
        ErrorCode::UnknownCitizen,
        ErrorCode::InvalidHpan,
        ErrorCode::CardOwnedByOtherCitizen,
        ErrorCode::UnknownCard,
        ErrorCode::UnknownAwardPeriod,
        ErrorCode::UnknownPayment,
        ErrorCode::PeriodClosed,
        ErrorCode::Unavailable,
    ];

    /// The code on the wire (also a metrics label, hence `'static`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::InvalidCitizenId => "invalid_citizen_id",
            ErrorCode::InvalidIban => "invalid_iban",
            ErrorCode::CitizenWithdrawn => "citizen_withdrawn",
            ErrorCode::UnknownCitizen => "unknown_citizen",
            ErrorCode::InvalidHpan => "invalid_hpan",
            ErrorCode::CardOwnedByOtherCitizen => "card_owned_by_other_citizen",
            ErrorCode::UnknownCard => "unknown_card",
            ErrorCode::UnknownAwardPeriod => "unknown_award_period",
            ErrorCode::UnknownPayment => "unknown_payment",
            ErrorCode::PeriodClosed => "period_closed",
            ErrorCode::Unavailable => "unavailable",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Serialized from [`ErrorCode::as_str`], so the wire and the metrics can
/// never spell a code differently.
impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// A refused request: the `error` object of a `{"ok": false, ...}` reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Refusal {
    /// What the client branches on.
    pub code: ErrorCode,
    /// Human-readable detail, for logs and support; never parsed.
    pub message: String,
}

impl Refusal {
    /// A refusal with its code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_protocols_and_distinct() {
        let names: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(
            names,
            [
                "bad_request",
                "invalid_citizen_id",
                "invalid_iban",
                "citizen_withdrawn",
                "unknown_citizen",
                "invalid_hpan",
                "card_owned_by_other_citizen",
                "unknown_card",
                "unknown_award_period",
                "unknown_payment",
                "period_closed",
                "unavailable",
            ]
        );
        for code in ErrorCode::ALL {
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                serde_json::Value::from(code.as_str())
            );
        }
    }

    #[test]
    fn a_refusal_is_the_protocols_error_object() {
        let r = Refusal::new(ErrorCode::UnknownCard, "never had it");
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::json!({"code": "unknown_card", "message": "never had it"})
        );
    }
}
