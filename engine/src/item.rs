//! What the router hands to a partition, and what a partition reports back.
//! Plain data: the actor shells carry these between threads.

use crate::authorization::Hpan;
use crate::directory::CitizenIdx;
use crate::period::PeriodIdx;
use crate::reason::Rejection;
use crate::time::Timestamp;
use bytes::Bytes;
use rust_decimal::Decimal;
use smallvec::SmallVec;
use std::sync::Arc;

/// Where a message came from, kept so that a rejection decided later (a parked
/// reversal that expires) can still be published with the original payload.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Origin {
    /// The subject it was published on.
    pub subject: Arc<str>,
    /// The bytes as received.
    pub payload: Bytes,
}

/// A payment the router has accepted: it counts, and the partition records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentItem {
    /// Stream sequence: arrival order.
    pub seq: u64,
    /// Its de-duplication key, released if the partition sets the payment
    /// aside after repeated failures.
    pub key: u128,
    /// Broker receive time of this message: the clock of every rule.
    pub broker_time: Timestamp,
    /// Broker time of the message being processed, for expiring parked reversals.
    pub now: Timestamp,
    /// The card, whose payments live in this partition.
    pub hpan: Hpan,
    /// The owner at `trx_date`, who gets the count (possibly in another partition).
    pub citizen: CitizenIdx,
    /// The period of `trx_date`.
    pub period: PeriodIdx,
    /// When the card was used.
    pub trx_date: Timestamp,
    /// Cents.
    pub amount: u64,
    /// The acquirer's code, interned: shown in the citizen's statement.
    pub acquirer: Arc<str>,
    /// Wire circuit type (0-10), for the statement.
    pub circuit_type: u8,
    /// Wire operation type (0, 2 or 3), for the statement.
    pub operation_type: u8,
    /// See `Authorization::terminal_key`.
    pub terminal_key: u64,
    /// See `Authorization::correlation_key`.
    pub correlation_key: Option<u64>,
    /// Owners of this card who have withdrawn, for parked reversals that
    /// this payment may release onto an older payment of theirs.
    pub withdrawn: SmallVec<[CitizenIdx; 1]>,
    /// Test hook: panics to inject (see `Decoder::fault_injection`).
    pub injected_panics: u8,
}

/// A reversal, waiting or not: everything needed to match and apply it later.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reversal {
    /// Stream sequence: arrival order; parked reversals are tried in it.
    pub seq: u64,
    /// Broker receive time; parking expires `reversal_park_days` after it.
    pub broker_time: Timestamp,
    /// The reversal's de-duplication key, released if it is rejected.
    pub key: u128,
    /// Cents to reverse.
    pub amount: u64,
    /// See `Authorization::terminal_key`.
    pub terminal_key: u64,
    /// See `Authorization::correlation_key`.
    pub correlation_key: Option<u64>,
    /// For publishing a late rejection.
    pub origin: Origin,
}

/// A reversal to match now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReversalItem {
    /// The reversal.
    pub reversal: Reversal,
    /// Broker time of the message being processed.
    pub now: Timestamp,
    /// The card.
    pub hpan: Hpan,
    /// Owners of this card who have withdrawn.
    pub withdrawn: SmallVec<[CitizenIdx; 1]>,
    /// Test hook, as for payments.
    pub injected_panics: u8,
    /// How many reversals the card may already have waiting for this one to
    /// wait too (0 when the engine-wide bound is reached); beyond it the
    /// reversal is `unmatched_reversal` at once (see `ParkingLimits`).
    pub park_room: usize,
}

/// A change to a citizen's count and cashback decided in another partition
/// (the card's), to be added here (the citizen's). Credits commute, so the
/// order in which they arrive does not change the result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credit {
    /// Whose summary.
    pub citizen: CitizenIdx,
    /// Which period.
    pub period: PeriodIdx,
    /// +1 for a payment, -1 for a payment reversed to zero.
    pub count: i32,
    /// Cashback to add (negative for reversals).
    pub cashback: Decimal,
    /// The payment's date, for `last_trx_date` (never for reversals).
    pub trx_date: Option<Timestamp>,
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

/// One unit of work for a partition, in log order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// Record an accepted payment.
    Payment(PaymentItem),
    /// Match a reversal.
    Reversal(ReversalItem),
    /// A citizen of this partition was created or changed.
    Citizen(CitizenFacts),
    /// Apply a credit decided elsewhere.
    Credit(Credit),
    /// Take over reversals parked before their card was ever enrolled.
    Adopt {
        /// The card, now anchored here.
        hpan: Hpan,
        /// In arrival order.
        parked: Vec<Reversal>,
    },
    /// Time passes: expire parked reversals.
    Tick(Timestamp),
}

impl Item {
    /// The stream sequence and de-duplication key of the message this item
    /// came from, if it came from an authorization.
    pub fn message(&self) -> Option<(u64, u128)> {
        match self {
            Item::Payment(p) => Some((p.seq, p.key)),
            Item::Reversal(r) => Some((r.reversal.seq, r.reversal.key)),
            _ => None,
        }
    }
}

/// A citizen's new standing in a period, for the ranking and the pushes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StandingChange {
    /// Who.
    pub citizen: CitizenIdx,
    /// Which period.
    pub period: PeriodIdx,
    /// Public id: the ranking's last tie-break and the push subject.
    pub id: Arc<str>,
    /// The ranking's third tie-break.
    pub tc_accepted_at: Timestamp,
    /// Withdrawn citizens leave the ranking and get no pushes.
    pub withdrawn: bool,
    /// Count, cashback, last payment date.
    pub standing: crate::ledger::Standing,
}

impl StandingChange {
    /// Where the change lands in its period's ranking, roughly: period, then
    /// count descending, then last payment date. Why: a rank index built
    /// from changes in this order inserts at the right edge of each count's
    /// tree, so a restart's rebuild walks one hot path instead of a cache
    /// miss per citizen. Only speed depends on it; the index orders exactly
    /// (the remaining tie-breaks) whatever the order of insertion.
    pub fn rank_hint(&self) -> (PeriodIdx, std::cmp::Reverse<u32>, Option<Timestamp>) {
        (
            self.period,
            std::cmp::Reverse(self.standing.count),
            self.standing.last_trx,
        )
    }
}

/// A rejection decided by a partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LateRejection {
    /// The rejected message's stream sequence.
    pub seq: u64,
    /// Why.
    pub rejection: Rejection,
    /// Its origin when the partition has it (reversals); otherwise the
    /// caller fetches the message from the stream by `seq`.
    pub origin: Option<Origin>,
}

/// The fate of a reversal's de-duplication key, as a partition reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settled {
    /// Applied: remember the key for good.
    Remember(u128),
    /// Rejected or set aside: forget it, a re-send is judged afresh.
    Forget(u128),
    /// Parked: remember it until `deadline` (broker time), when the reversal
    /// expires and its key is forgotten. The router tracks the deadline so that
    /// expiry happens at the first message past it, whatever its partition.
    Parked {
        /// The key.
        key: u128,
        /// When the wait ends.
        deadline: Timestamp,
        /// Where it waits.
        partition: u16,
    },
}

/// What a partition did with a batch of items.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Reversals rejected (now, or after waiting).
    pub rejections: Vec<LateRejection>,
    /// Reversal keys whose fate is now known, in decision order. (Expiry of a
    /// parked reversal reports nothing here: the router forgets the key on
    /// its own at the deadline.)
    pub settled: Vec<Settled>,
    /// Credits for citizens of other partitions.
    pub credits: Vec<Credit>,
    /// Citizens whose standing changed, by partition, with the period
    /// (`None`: every period, as after a withdrawal); may repeat. The shard
    /// turns these into `standings` at the end of a batch.
    pub changed: Vec<(u16, CitizenIdx, Option<PeriodIdx>)>,
    /// The new standings of the citizens that changed, once per citizen and
    /// period: what the ranking and the pushes consume.
    pub standings: Vec<StandingChange>,
    /// Payments recorded.
    pub payments: u64,
    /// Reversals applied to a payment.
    pub reversals_applied: u64,
    /// Reversals parked to wait for their payment.
    pub reversals_parked: u64,
    /// Net change of the accrued cashback (uncapped, after reversals) of the
    /// citizens held here, per period: for the `cashback_accrued_euros` metric.
    pub cashback: SmallVec<[(PeriodIdx, Decimal); 2]>,
}

impl Report {
    /// Adds `delta` to the accrued-cashback change of `period`.
    pub fn accrue(&mut self, period: PeriodIdx, delta: Decimal) {
        match self.cashback.iter_mut().find(|(p, _)| *p == period) {
            Some((_, sum)) => *sum += delta,
            None => self.cashback.push((period, delta)),
        }
    }

    /// Adds another report's contents to this one.
    pub fn merge(&mut self, other: Report) {
        for (period, delta) in other.cashback {
            self.accrue(period, delta);
        }
        self.rejections.extend(other.rejections);
        self.settled.extend(other.settled);
        self.credits.extend(other.credits);
        self.changed.extend(other.changed);
        self.standings.extend(other.standings);
        self.payments += other.payments;
        self.reversals_applied += other.reversals_applied;
        self.reversals_parked += other.reversals_parked;
    }
}
