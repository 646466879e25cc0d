//! What cluster nodes ask each other, and answer (JSON, like the public
//! protocol, so that an operator can read it with `nats sub`).

use cashback_engine::directory::CitizenIdx;
use cashback_engine::period::PeriodIdx;
use cashback_engine::rank::RankKey;
use cashback_engine::time::Timestamp;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A ranking key on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Key {
    /// Payments that count.
    pub count: u32,
    /// Latest payment date.
    pub last_trx: Timestamp,
    /// T&C acceptance.
    pub tc: Timestamp,
    /// Public id.
    pub id: Arc<str>,
}

impl From<&RankKey> for Key {
    fn from(k: &RankKey) -> Key {
        Key {
            count: k.count,
            last_trx: k.last_trx,
            tc: k.tc_accepted_at,
            id: k.citizen_id.clone(),
        }
    }
}

impl From<Key> for RankKey {
    fn from(k: Key) -> RankKey {
        RankKey {
            count: k.count,
            last_trx: k.last_trx,
            tc_accepted_at: k.tc,
            citizen_id: k.id,
        }
    }
}

/// `before`: how many of the node's ranked citizens sort before each key.
#[derive(Debug, Serialize, Deserialize)]
pub struct BeforeAsk {
    /// Which period.
    pub period: PeriodIdx,
    /// The keys.
    pub keys: Vec<Key>,
}

/// The answer to [`BeforeAsk`].
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct BeforeAnswer {
    /// Per key.
    pub before: Vec<u64>,
    /// Ranked citizens of the node.
    pub len: u64,
    /// Its highest count.
    pub max: u32,
}

/// `histogram`: the node's ranked citizens per count.
#[derive(Debug, Serialize, Deserialize)]
pub struct HistogramAsk {
    /// Which period.
    pub period: PeriodIdx,
}

/// `page`: the node's ranked citizens in order from a key.
#[derive(Debug, Serialize, Deserialize)]
pub struct PageAsk {
    /// Which period.
    pub period: PeriodIdx,
    /// From the first that does not sort before it; from the top if none.
    pub from: Option<Key>,
    /// How many at most.
    pub limit: usize,
}

/// `at`: the node's `index`-th ranked citizen with `count` payments.
#[derive(Debug, Serialize, Deserialize)]
pub struct AtAsk {
    /// Which period.
    pub period: PeriodIdx,
    /// The count.
    pub count: u32,
    /// Place among the node's citizens with that count.
    pub index: u64,
}

/// `lines`: a citizen's statement lines on the node (the payments of cards
/// anchored in its partitions).
#[derive(Debug, Serialize, Deserialize)]
pub struct LinesAsk {
    /// The citizen.
    pub citizen: CitizenIdx,
    /// Which period.
    pub period: PeriodIdx,
}

/// `lookup`: citizens of the node, by number, for a payout page.
#[derive(Debug, Serialize, Deserialize)]
pub struct LookupAsk {
    /// Which period.
    pub period: PeriodIdx,
    /// (citizen's partition, number).
    pub citizens: Vec<(u16, CitizenIdx)>,
}

/// A looked-up citizen: IBAN and standing, or nothing (unknown there).
#[derive(Debug, Serialize, Deserialize)]
pub struct Found {
    /// For the payout file.
    pub iban: Arc<str>,
    /// Payments that count.
    pub count: u32,
    /// Cashback, uncapped.
    pub cashback: Decimal,
}

/// `progress`: whether the node has applied everything it found.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ProgressAnswer {
    /// It replayed the log it found at start.
    pub replayed: bool,
    /// Messages left to apply.
    pub lag: u64,
}
