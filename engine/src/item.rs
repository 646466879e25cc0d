//! What the router hands to a partition, and what a partition reports back.
//! Plain data: the actor shells carry these between threads, and a cluster
//! node carries credits between machines.

use crate::authorization::Hpan;
use crate::directory::CitizenIdx;
use crate::period::PeriodIdx;
use crate::reason::Rejection;
use crate::standing::{CitizenFacts, Standing};
use crate::time::Timestamp;
use bytes::Bytes;
use rust_decimal::Decimal;
use smallvec::SmallVec;
use std::sync::Arc;

/// Where a message came from, kept so that a rejection decided later (a
/// duplicate found by the card's partition, a parked reversal that expires)
/// can still be published with the original payload.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Origin {
    /// The subject it was published on.
    pub subject: Arc<str>,
    /// The bytes as received.
    pub payload: Bytes,
}

/// What the router concluded about a payment from the directory and the
/// periods (RULES.md checks 3 for payments). The card's partition decides
/// the rest: a duplicate comes first in the order of checks, but only the
/// partition knows the card's keys; the split-payment limit comes last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fate {
    /// It counts for this citizen in this period, unless it is a duplicate
    /// or over the split-payment limit.
    Counts {
        /// The card's owner at `trx_date`, who gets the count (possibly
        /// in another partition).
        citizen: CitizenIdx,
        /// The period of `trx_date`.
        period: PeriodIdx,
    },
    /// It does not count for this reason, unless it is a duplicate.
    Rejected(Rejection),
}

/// A payment on an enrolled card, for the card's partition to judge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentItem {
    /// Stream sequence: arrival order.
    pub seq: u64,
    /// Its de-duplication key among the card's messages.
    pub key: u64,
    /// Broker receive time of this message.
    pub broker_time: Timestamp,
    /// The log's clock (the latest broker time so far, never behind
    /// `broker_time`): the clock of every rule (a period's close, the expiry
    /// of parked reversals), so that every process decides alike.
    pub now: Timestamp,
    /// The card, whose payments live in this partition.
    pub hpan: Hpan,
    /// The router's verdict.
    pub fate: Fate,
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
    /// See `Authorization::merchant_key`.
    pub merchant_key: u64,
    /// Owners of this card who have withdrawn, for parked reversals that
    /// this payment may release onto an older payment of theirs.
    pub withdrawn: SmallVec<[CitizenIdx; 1]>,
    /// The message, should it be rejected.
    pub origin: Origin,
}

impl PaymentItem {
    /// The citizen and period it counts for, if the router found any.
    pub fn counts(&self) -> Option<(CitizenIdx, PeriodIdx)> {
        match self.fate {
            Fate::Counts { citizen, period } => Some((citizen, period)),
            Fate::Rejected(_) => None,
        }
    }
}

/// A reversal, waiting or not: everything needed to match and apply it later.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reversal {
    /// Stream sequence: arrival order; parked reversals are tried in it.
    pub seq: u64,
    /// Broker receive time; parking expires `reversal_park_days` after it.
    pub broker_time: Timestamp,
    /// Its de-duplication key among the card's messages.
    pub key: u64,
    /// Cents to reverse.
    pub amount: u64,
    /// See `Authorization::terminal_key`.
    pub terminal_key: u64,
    /// See `Authorization::correlation_key`.
    pub correlation_key: Option<u64>,
    /// For publishing a late rejection.
    pub origin: Origin,
}

/// A reversal on an enrolled card, to match now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReversalItem {
    /// The reversal.
    pub reversal: Reversal,
    /// The log's clock: the reversal's period checks and expiries are judged at it.
    pub now: Timestamp,
    /// The card.
    pub hpan: Hpan,
    /// Owners of this card who have withdrawn.
    pub withdrawn: SmallVec<[CitizenIdx; 1]>,
}

/// Who sent a credit and where it stands in that sender's output: the
/// sending partition, the stream sequence of the message whose decision
/// produced it, and its place among that decision's credits. A sender
/// produces credits in increasing order of this id (it applies the log in
/// order, and every decision is deterministic), so a receiver that
/// remembers the last id it took from each sender takes each credit exactly
/// once, however many times it is re-sent: after a crash and replay, by a
/// replica, across nodes.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct CreditId {
    /// Stream sequence of the originating message (compared first).
    pub seq: u64,
    /// Place among the credits that message produced in its partition.
    pub index: u32,
    /// The sending partition.
    pub source: u16,
}

/// A change to a citizen's count and cashback decided in another partition
/// (the card's), to be added here (the citizen's). Credits commute, so the
/// order in which different senders' credits arrive does not change the
/// result; one sender's arrive in its order.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Credit {
    /// Identity, for exactly-once delivery.
    pub id: CreditId,
    /// Whose summary (the router maps it to the citizen's partition).
    pub citizen: CitizenIdx,
    /// Which period.
    pub period: PeriodIdx,
    /// +1 for a payment, -1 for a payment that stopped counting.
    pub count: i32,
    /// Cashback to add (negative for reversals).
    pub cashback: Decimal,
    /// The payment's date, for `last_trx_date` (never for reversals).
    pub trx_date: Option<Timestamp>,
}

/// A change of a citizen's wallet (PROTOCOL.md, `cashback.query.wallet`),
/// for the citizen's partition, which answers wallet queries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WalletChange {
    /// A window of `hpan` opened for the citizen at `from`.
    Opened {
        /// Whose wallet.
        citizen: CitizenIdx,
        /// The card.
        hpan: Hpan,
        /// `activated_at`.
        from: Timestamp,
    },
    /// The citizen's open window of `hpan` closed at `until`.
    Closed {
        /// Whose wallet.
        citizen: CitizenIdx,
        /// The card.
        hpan: Hpan,
        /// `deactivated_at`.
        until: Timestamp,
    },
}

/// Whether an operator excludes a payment or takes the exclusion back
/// (RULES.md, "Operator exclusions").
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ExclusionOp {
    /// `cashback.admin.exclude`.
    Exclude,
    /// `cashback.admin.reinstate`.
    Reinstate,
}

/// An operator's exclusion or reinstatement of one payment, journaled, for
/// the card's partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExclusionItem {
    /// Stream sequence of the journal entry.
    pub seq: u64,
    /// Broker time of the journal entry, kept in the audit trail.
    pub broker_time: Timestamp,
    /// The log's clock: whether the payment's period still accepts data is
    /// judged at it.
    pub now: Timestamp,
    /// Exclude or reinstate.
    pub op: ExclusionOp,
    /// The card.
    pub hpan: Hpan,
    /// The payment's de-duplication key among the card's messages.
    pub key: u64,
    /// The operator's reason, kept for audit.
    pub reason: Arc<str>,
}

/// One unit of work for a partition, in log order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// Judge a payment on one of the partition's cards.
    Payment(PaymentItem),
    /// Match a reversal.
    Reversal(ReversalItem),
    /// A citizen of this partition was created or changed.
    Citizen(CitizenFacts),
    /// A citizen of this partition enrolled or removed a card.
    Wallet(WalletChange),
    /// Apply a credit decided elsewhere.
    Credit(Credit),
    /// Take over reversals parked before their card was ever enrolled.
    Adopt {
        /// The card, now anchored here.
        hpan: Hpan,
        /// In arrival order.
        parked: Vec<Reversal>,
    },
    /// Exclude or reinstate a payment of one of the partition's cards.
    Exclusion(ExclusionItem),
    /// Time passes: expire parked reversals, drop the slots of closed
    /// periods.
    Tick(Timestamp),
}

impl Item {
    /// The stream sequence of the message this item came from, when it is
    /// one of the messages whose outcome is published (authorizations,
    /// exclusions): what a set-aside item is reported under.
    pub fn message_seq(&self) -> Option<u64> {
        match self {
            Item::Payment(p) => Some(p.seq),
            Item::Reversal(r) => Some(r.reversal.seq),
            Item::Exclusion(e) => Some(e.seq),
            _ => None,
        }
    }

    /// The message, for publishing its rejection, when the item carries it.
    pub fn origin(&self) -> Option<&Origin> {
        match self {
            Item::Payment(p) => Some(&p.origin),
            Item::Reversal(r) => Some(&r.reversal.origin),
            _ => None,
        }
    }

    /// The engine's clock at this item, when it carries one: a set-aside
    /// item still lets time pass.
    pub fn now(&self) -> Option<Timestamp> {
        match self {
            Item::Payment(p) => Some(p.now),
            Item::Reversal(r) => Some(r.now),
            Item::Exclusion(e) => Some(e.now),
            Item::Tick(t) => Some(*t),
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
    pub standing: Standing,
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
    /// Its origin when the partition has it; otherwise (an item set aside
    /// after repeated failures) the caller reads the message back from the
    /// stream by `seq`.
    pub origin: Option<Origin>,
}

/// How an operator's exclusion or reinstatement ended (PROTOCOL.md section
/// 6): `Ok(changed)` (false for an idempotent repeat), or the error code.
pub type ExclusionOutcome = Result<bool, crate::refusal::ErrorCode>;

/// What a partition did with a batch of items.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Messages rejected (now, or after waiting).
    pub rejections: Vec<LateRejection>,
    /// Credits for citizens of other partitions, in the order decided.
    pub credits: Vec<Credit>,
    /// Citizens whose standing changed, by partition, with the period
    /// (`None`: every period, as after a withdrawal); may repeat. The shard
    /// turns these into `standings` at the end of a batch.
    pub changed: Vec<(u16, CitizenIdx, Option<PeriodIdx>)>,
    /// The new standings of the citizens that changed, once per citizen and
    /// period: what the ranking and the pushes consume.
    pub standings: Vec<StandingChange>,
    /// Outcomes of operators' exclusions, by journal sequence.
    pub exclusions: Vec<(u64, ExclusionOp, ExclusionOutcome)>,
    /// Payments recorded.
    pub payments: u64,
    /// Reversals applied to a payment.
    pub reversals_applied: u64,
    /// Reversals parked to wait for their payment.
    pub reversals_parked: u64,
    /// Credits received again and ignored (a re-send after a crash, or a
    /// replica's copy): expected in a cluster, counted for operators.
    pub credits_repeated: u64,
    /// Credits that could not be decided and were set aside: the log holds
    /// them, but no stored rejection does, so the engine must not snapshot
    /// past them (a restart then replays them).
    pub credits_set_aside: u64,
    /// Broken invariants met and survived (a count that would go below zero,
    /// a credit for a citizen the partition does not hold): never expected;
    /// logged loudly and counted so that an operator sees them.
    pub invariant_violations: Vec<String>,
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
        self.credits.extend(other.credits);
        self.changed.extend(other.changed);
        self.standings.extend(other.standings);
        self.exclusions.extend(other.exclusions);
        self.invariant_violations.extend(other.invariant_violations);
        self.payments += other.payments;
        self.reversals_applied += other.reversals_applied;
        self.reversals_parked += other.reversals_parked;
        self.credits_repeated += other.credits_repeated;
        self.credits_set_aside += other.credits_set_aside;
    }
}
