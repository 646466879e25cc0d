//! What a citizen is and how they stand: the two plain values that the
//! items, the ledger, the summaries and the queries all speak of. A leaf
//! module (it imports nothing of the engine but time and ids), so that those
//! modules depend on it instead of on each other.

use crate::directory::CitizenIdx;
use crate::time::Timestamp;
use rust_decimal::Decimal;
use std::sync::Arc;

/// A citizen's totals in one period.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Standing {
    /// Payments that count (reversed to zero or excluded ones no longer do).
    pub count: u32,
    /// Sum of the scores of the payments, after reversals; uncapped.
    pub cashback: Decimal,
    /// Latest `trx_date` among the payments that counted; never moved back.
    pub last_trx: Option<Timestamp>,
}

/// The citizen facts a partition needs to answer queries.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CitizenFacts {
    /// The citizen's number.
    pub idx: CitizenIdx,
    /// The public id.
    pub id: Arc<str>,
    /// Where the refund goes, for the payout file.
    pub iban: Arc<str>,
    /// For the ranking's tie-break.
    pub tc_accepted_at: Timestamp,
    /// Withdrawn citizens answer `citizen_withdrawn` and are not ranked.
    pub withdrawn: bool,
}
