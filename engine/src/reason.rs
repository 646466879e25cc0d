//! Why an authorization did not count: the closed list of PROTOCOL.md section 5.

/// A rejection reason; its `as_str` is the last token of
/// `cashback.rejected.<reason>` and the `reason` field of the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    Malformed,
    InvalidField,
    UnsupportedCurrency,
    ExcludedMcc,
    UnsupportedOperation,
    CardNotEnrolled,
    CardNotActive,
    TcNotAccepted,
    CitizenWithdrawn,
    OutsideAwardPeriod,
    PeriodClosed,
    MerchantDailyLimit,
    Duplicate,
    ReversalExceedsOriginal,
    UnmatchedReversal,
    InternalError,
}

impl Reason {
    /// Every reason, for metrics that must show zeros before the first one.
    pub const ALL: [Reason; 16] = [
        Reason::Malformed,
        Reason::InvalidField,
        Reason::UnsupportedCurrency,
        Reason::ExcludedMcc,
        Reason::UnsupportedOperation,
        Reason::CardNotEnrolled,
        Reason::CardNotActive,
        Reason::TcNotAccepted,
        Reason::CitizenWithdrawn,
        Reason::OutsideAwardPeriod,
        Reason::PeriodClosed,
        Reason::MerchantDailyLimit,
        Reason::Duplicate,
        Reason::ReversalExceedsOriginal,
        Reason::UnmatchedReversal,
        Reason::InternalError,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Malformed => "malformed",
            Reason::InvalidField => "invalid_field",
            Reason::UnsupportedCurrency => "unsupported_currency",
            Reason::ExcludedMcc => "excluded_mcc",
            Reason::UnsupportedOperation => "unsupported_operation",
            Reason::CardNotEnrolled => "card_not_enrolled",
            Reason::CardNotActive => "card_not_active",
            Reason::TcNotAccepted => "tc_not_accepted",
            Reason::CitizenWithdrawn => "citizen_withdrawn",
            Reason::OutsideAwardPeriod => "outside_award_period",
            Reason::PeriodClosed => "period_closed",
            Reason::MerchantDailyLimit => "merchant_daily_limit",
            Reason::Duplicate => "duplicate",
            Reason::ReversalExceedsOriginal => "reversal_exceeds_original",
            Reason::UnmatchedReversal => "unmatched_reversal",
            Reason::InternalError => "internal_error",
        }
    }
}

/// A decision not to count a message: the reason and a sentence for operators.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// Machine-readable reason.
    pub reason: Reason,
    /// Human-readable detail, e.g. which field was wrong and why.
    pub message: String,
}

impl Rejection {
    /// A rejection with its explanation.
    pub fn new(reason: Reason, message: impl Into<String>) -> Rejection {
        Rejection {
            reason,
            message: message.into(),
        }
    }
}
