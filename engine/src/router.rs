//! The sequential heart of the engine: it reads the log in order, keeps the
//! directory and the de-duplication keys, decides every payment, and hands
//! each message to the partition that holds the card's payments.
//!
//! Why here and not in the partitions: the de-duplication key of RULES.md does
//! not contain the card, so it must be checked in one place for the whole log;
//! and a payment's fate (card window, T&C, withdrawal, period) depends only on
//! the directory and the configuration, both of which live here. Reversals
//! need the card's payments and are judged by the partition; their keys stay
//! "in flight" until the partition reports, and a re-send of an in-flight key
//! makes the caller settle outstanding work first (`Routed::Wait`), so the
//! result is exactly that of applying the log one message at a time.

use crate::authorization::{Authorization, Hpan, Operation};
use crate::directory::{CitizenIdx, Directory, EnrollEffect, Owner};
use crate::enrollment::{EnrollCommand, EnrollError};
use crate::fasthash::{FastMap, FastSet};
use crate::item::{
    CitizenFacts, Item, LateRejection, Origin, PaymentItem, Report, Reversal, ReversalItem, Settled,
};
use crate::period::Periods;
use crate::reason::{Reason, Rejection};
use crate::time::Timestamp;
use smallvec::SmallVec;
use std::collections::BTreeSet;
use std::sync::Arc;

/// A set of de-duplication keys.
pub type KeySet = FastSet<u128>;

/// Where a message sits in the log.
#[derive(Clone, Copy, Debug)]
pub struct Position {
    /// JetStream stream sequence.
    pub seq: u64,
    /// JetStream receive time.
    pub broker_time: Timestamp,
}

/// The router's decision about one authorization.
#[derive(Debug)]
pub enum Routed {
    /// It does not count.
    Reject(Rejection),
    /// Send this item to this partition.
    Forward(u16, Item),
    /// A reversal for a card nobody ever enrolled: it waits here.
    ParkedHere,
    /// Its key belongs to a reversal still being judged: settle outstanding
    /// reports, then route it again.
    Wait,
}

/// Bounds on reversals waiting for their payment, so that a flood of
/// reversals that match nothing cannot make the engine grow without limit.
/// Beyond a bound a reversal that would wait is rejected `unmatched_reversal`
/// at once. Both bounds are decided in log order, so a replay decides alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParkingLimits {
    /// Most reversals waiting on one card. A reversal waits on its card, not
    /// yet on a citizen: it reaches a citizen only through the payment it
    /// matches, so the card is the unit a flood "for one citizen" fills.
    pub per_card: usize,
    /// Most reversals waiting in the whole engine, orphans included: the
    /// bound on memory (each keeps its original message).
    pub total: usize,
}

impl ParkingLimits {
    /// 100 per card: a card with that many refunds ahead of their payments is
    /// not a real card.
    pub const DEFAULT_PER_CARD: usize = 100;
    /// 200,000 in all: about 60 MB of typical reversals, at most 3.3 GB at
    /// the 16 KiB message limit.
    pub const DEFAULT_TOTAL: usize = 200_000;
}

impl Default for ParkingLimits {
    fn default() -> ParkingLimits {
        ParkingLimits {
            per_card: Self::DEFAULT_PER_CARD,
            total: Self::DEFAULT_TOTAL,
        }
    }
}

/// The sequential router.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Router {
    /// Citizens and cards.
    directory: Directory,
    /// Award periods (configuration, not state).
    #[serde(skip)]
    periods: Arc<Periods>,
    /// How long reversals wait for their payment, in seconds.
    park_secs: i64,
    /// Keys of payments that counted and reversals applied or parked.
    #[serde(deserialize_with = "crate::fasthash::presized_set")]
    remembered: KeySet,
    /// Keys of reversals handed to a partition and not yet reported on
    /// (always empty in a snapshot: snapshots are taken with nothing in flight).
    #[serde(skip)]
    in_flight: KeySet,
    /// Reversals for cards never enrolled, by card, in arrival order.
    orphans: FastMap<Hpan, Vec<Reversal>>,
    /// Their deadlines (derived).
    #[serde(skip)]
    orphan_expiry: BTreeSet<(Timestamp, u64, Hpan)>,
    /// Keys of reversals parked in a partition: their deadline and partition.
    parked: FastMap<u128, (Timestamp, u16)>,
    /// The same, by deadline (entries whose key left `parked` are skipped;
    /// derived).
    #[serde(skip)]
    parked_expiry: BTreeSet<(Timestamp, u128)>,
    /// Acquirer codes, interned: a handful of distinct codes shared by
    /// millions of payment records.
    acquirers: FastMap<Box<str>, Arc<str>>,
    /// Broker time of the message being processed: the clock for expiring
    /// parked reversals (RULES.md: "a processed message's broker time").
    now: Timestamp,
    /// Bounds on waiting reversals (configuration, not state).
    #[serde(skip)]
    limits: ParkingLimits,
    /// The key of the reversal for which `route` last answered `Wait`
    /// because the engine-wide bound might be reached: when it comes back,
    /// the caller has settled everything, so the count of waiting reversals
    /// is exact and the bound can be decided as in a one-at-a-time replay.
    #[serde(skip)]
    settled_for: Option<u128>,
}

impl Router {
    /// A router for an empty log.
    pub fn new(partitions: u16, periods: Arc<Periods>, park_days: u32) -> Router {
        Router {
            directory: Directory::new(partitions),
            periods,
            park_secs: park_days as i64 * 86_400,
            remembered: KeySet::default(),
            in_flight: KeySet::default(),
            orphans: FastMap::default(),
            orphan_expiry: BTreeSet::new(),
            parked: FastMap::default(),
            acquirers: FastMap::default(),
            parked_expiry: BTreeSet::new(),
            now: Timestamp::default(),
            limits: ParkingLimits::default(),
            settled_for: None,
        }
    }

    /// Sets the bounds on waiting reversals (also after a restore: they are
    /// configuration, not state).
    pub fn set_parking_limits(&mut self, limits: ParkingLimits) {
        self.limits = limits;
    }

    /// The same, builder style.
    pub fn with_parking_limits(mut self, limits: ParkingLimits) -> Router {
        self.limits = limits;
        self
    }

    /// Reversals waiting for their payment, here and in every partition, as
    /// far as the partitions have reported.
    pub fn waiting_reversals(&self) -> usize {
        self.parked.len() + self.orphan_expiry.len()
    }

    /// Makes a router loaded from a snapshot whole: configuration and
    /// derived indexes.
    pub fn restore(&mut self, periods: Arc<Periods>) {
        self.periods = periods;
        self.directory.restore();
        self.orphan_expiry = self
            .orphans
            .iter()
            .flat_map(|(h, list)| {
                list.iter()
                    .map(|r| (r.broker_time.plus_secs(self.park_secs), r.seq, *h))
            })
            .collect();
        self.parked_expiry = self.parked.iter().map(|(k, (d, _))| (*d, *k)).collect();
    }

    /// The directory, for reading.
    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    /// Number of keys remembered for de-duplication.
    pub fn remembered_keys(&self) -> usize {
        self.remembered.len()
    }

    /// Whether some reversal is still being judged by a partition.
    pub fn has_in_flight(&self) -> bool {
        !self.in_flight.is_empty()
    }

    /// Broker time of the message being processed.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// Moves the clock to a message's broker time. Reversals whose wait is
    /// over expire now: orphans here (returned as rejections), parked ones in
    /// their partition (returned as `Tick` items to deliver before anything
    /// else); either way their keys are forgotten at once, so a re-send from
    /// this message on is judged afresh. Call before routing each message.
    pub fn advance(&mut self, broker_time: Timestamp) -> (Vec<LateRejection>, Vec<(u16, Item)>) {
        self.now = broker_time;
        let mut ticks: Vec<(u16, Item)> = Vec::new();
        while let Some(&(deadline, key)) = self.parked_expiry.first() {
            if deadline > self.now {
                break;
            }
            self.parked_expiry.pop_first();
            if let Some(&(d, partition)) = self.parked.get(&key) {
                if d == deadline {
                    self.parked.remove(&key);
                    self.remembered.remove(&key);
                    if !ticks.iter().any(|(p, _)| *p == partition) {
                        ticks.push((partition, Item::Tick(self.now)));
                    }
                }
            }
        }
        let mut expired = Vec::new();
        while let Some(&(deadline, seq, hpan)) = self.orphan_expiry.first() {
            if deadline > self.now {
                break;
            }
            self.orphan_expiry.pop_first();
            let Some(list) = self.orphans.get_mut(&hpan) else {
                continue;
            };
            let Some(pos) = list.iter().position(|r| r.seq == seq) else {
                continue;
            };
            let r = list.remove(pos);
            if list.is_empty() {
                self.orphans.remove(&hpan);
            }
            self.remembered.remove(&r.key);
            expired.push(LateRejection {
                seq: r.seq,
                rejection: Rejection::new(
                    Reason::UnmatchedReversal,
                    format!(
                        "no payment matched the reversal within {} days",
                        self.park_secs / 86_400
                    ),
                ),
                origin: Some(r.origin),
            });
        }
        (expired, ticks)
    }

    /// Decides or routes one valid authorization (checks 2 to 4 of RULES.md).
    /// `origin` is asked for only when the message must be kept (reversals).
    pub fn route(
        &mut self,
        at: Position,
        auth: &Authorization,
        origin: impl FnOnce() -> Origin,
    ) -> Routed {
        if self.remembered.contains(&auth.dedup_key) {
            return Routed::Reject(Rejection::new(
                Reason::Duplicate,
                "an authorization with the same key was already counted",
            ));
        }
        if !self.in_flight.is_empty() && self.in_flight.contains(&auth.dedup_key) {
            return Routed::Wait;
        }
        match auth.operation {
            Operation::Payment => self.route_payment(at, auth),
            Operation::Reversal => self.route_reversal(at, auth, origin),
        }
    }

    fn route_payment(&mut self, at: Position, auth: &Authorization) -> Routed {
        let citizen = match self.directory.owner_at(&auth.hpan, auth.trx_date) {
            Owner::NotEnrolled => {
                return Routed::Reject(Rejection::new(
                    Reason::CardNotEnrolled,
                    "no citizen ever enrolled this card",
                ))
            }
            Owner::NotActive => {
                return Routed::Reject(Rejection::new(
                    Reason::CardNotActive,
                    "the card was not active at trx_date",
                ))
            }
            Owner::Citizen(idx) => idx,
        };
        let record = self.directory.citizen(citizen);
        if record.withdrawn {
            return Routed::Reject(Rejection::new(
                Reason::CitizenWithdrawn,
                "the card's citizen has withdrawn",
            ));
        }
        if auth.trx_date < record.tc_accepted_at {
            return Routed::Reject(Rejection::new(
                Reason::TcNotAccepted,
                "the citizen had not accepted the T&C at trx_date",
            ));
        }
        let Some(period) = self.periods.containing(auth.trx_date) else {
            return Routed::Reject(Rejection::new(
                Reason::OutsideAwardPeriod,
                format!(
                    "{} (Europe/Rome) is in no award period",
                    auth.trx_date.rome_date()
                ),
            ));
        };
        if !self.periods.accepts_data(period, at.broker_time) {
            return Routed::Reject(Rejection::new(
                Reason::PeriodClosed,
                format!(
                    "award period {} closed to new data",
                    self.periods.get(period).id
                ),
            ));
        }
        self.remembered.insert(auth.dedup_key);
        let acquirer = match self.acquirers.get(&auth.acquirer_code) {
            Some(a) => a.clone(),
            None => {
                let a: Arc<str> = auth.acquirer_code.as_ref().into();
                self.acquirers.insert(auth.acquirer_code.clone(), a.clone());
                a
            }
        };
        let card = self.directory.card(&auth.hpan).expect("owner found");
        Routed::Forward(
            card.anchor,
            Item::Payment(PaymentItem {
                seq: at.seq,
                key: auth.dedup_key,
                broker_time: at.broker_time,
                now: self.now,
                hpan: auth.hpan,
                citizen,
                period,
                trx_date: auth.trx_date,
                amount: auth.total_amount,
                acquirer,
                circuit_type: auth.circuit_type,
                operation_type: auth.operation_type,
                terminal_key: auth.terminal_key,
                correlation_key: auth.correlation_key,
                withdrawn: self.withdrawn_owners(&auth.hpan),
                injected_panics: auth.injected_panics,
            }),
        )
    }

    /// Whether one more reversal may wait, engine-wide; `None`: cannot tell
    /// yet (answer `Wait`). While the partitions' reports are outstanding
    /// the router's count is an upper bound (reversals in flight may park;
    /// payments in flight may release parked ones), so below the bound the
    /// answer is certain. At the bound the caller settles everything first
    /// and the count is exact, as in a one-at-a-time replay.
    fn room_to_park(&mut self, key: u128) -> Option<bool> {
        let waiting = self.waiting_reversals();
        let settled = self.settled_for.take() == Some(key);
        if waiting + self.in_flight.len() < self.limits.total {
            return Some(true);
        }
        if settled {
            return Some(waiting < self.limits.total);
        }
        self.settled_for = Some(key);
        None
    }

    fn too_many_waiting(&self, what: &str) -> Routed {
        Routed::Reject(Rejection::new(
            Reason::UnmatchedReversal,
            format!("no payment matched the reversal, and {what}"),
        ))
    }

    fn route_reversal(
        &mut self,
        at: Position,
        auth: &Authorization,
        origin: impl FnOnce() -> Origin,
    ) -> Routed {
        let Some(room) = self.room_to_park(auth.dedup_key) else {
            return Routed::Wait;
        };
        let known_card = self.directory.card(&auth.hpan).is_some();
        if !known_card {
            let waiting_on_card = self.orphans.get(&auth.hpan).map_or(0, Vec::len);
            if waiting_on_card >= self.limits.per_card {
                return self.too_many_waiting(&format!(
                    "the card already has {} reversals waiting (the limit)",
                    self.limits.per_card
                ));
            }
            if !room {
                return self.too_many_waiting(&format!(
                    "{} reversals are already waiting (the limit)",
                    self.limits.total
                ));
            }
        }
        let origin = origin();
        let reversal = Reversal {
            seq: at.seq,
            broker_time: at.broker_time,
            key: auth.dedup_key,
            amount: auth.total_amount,
            terminal_key: auth.terminal_key,
            correlation_key: auth.correlation_key,
            origin,
        };
        let Some(card) = self.directory.card(&auth.hpan) else {
            self.remembered.insert(auth.dedup_key);
            self.orphan_expiry.insert((
                at.broker_time.plus_secs(self.park_secs),
                at.seq,
                auth.hpan,
            ));
            self.orphans.entry(auth.hpan).or_default().push(reversal);
            return Routed::ParkedHere;
        };
        let anchor = card.anchor;
        self.in_flight.insert(auth.dedup_key);
        Routed::Forward(
            anchor,
            Item::Reversal(ReversalItem {
                reversal,
                now: self.now,
                hpan: auth.hpan,
                withdrawn: self.withdrawn_owners(&auth.hpan),
                injected_panics: auth.injected_panics,
                park_room: if room { self.limits.per_card } else { 0 },
            }),
        )
    }

    /// Owners of the card who withdrew: their payments can no longer be reversed.
    fn withdrawn_owners(&self, hpan: &Hpan) -> SmallVec<[CitizenIdx; 1]> {
        let mut out = SmallVec::new();
        if self.directory.withdrawn_count() == 0 {
            return out;
        }
        if let Some(card) = self.directory.card(hpan) {
            for w in &card.windows {
                if self.directory.citizen(w.citizen).withdrawn && !out.contains(&w.citizen) {
                    out.push(w.citizen);
                }
            }
        }
        out
    }

    /// Applies one journaled enrollment; returns its reply and the items the
    /// partitions must receive because of it.
    pub fn enroll(&mut self, cmd: &EnrollCommand) -> (Result<(), EnrollError>, Vec<(u16, Item)>) {
        let mut items = Vec::new();
        let effect = match self.directory.apply(cmd) {
            Ok(effect) => effect,
            Err(e) => return (Err(e), items),
        };
        match effect {
            EnrollEffect::Citizen(idx) => {
                let c = self.directory.citizen(idx);
                items.push((
                    c.partition,
                    Item::Citizen(CitizenFacts {
                        idx,
                        id: c.id.clone(),
                        iban: c.iban.clone(),
                        tc_accepted_at: c.tc_accepted_at,
                        withdrawn: c.withdrawn,
                    }),
                ));
            }
            EnrollEffect::FirstCard(hpan) => {
                if let Some(parked) = self.orphans.remove(&hpan) {
                    let anchor = self.directory.card(&hpan).expect("just enrolled").anchor;
                    for r in &parked {
                        let deadline = r.broker_time.plus_secs(self.park_secs);
                        self.orphan_expiry.remove(&(deadline, r.seq, hpan));
                        self.track_parked(r.key, deadline, anchor);
                    }
                    items.push((anchor, Item::Adopt { hpan, parked }));
                }
            }
            EnrollEffect::Card | EnrollEffect::Unchanged => {}
        }
        (Ok(()), items)
    }

    /// Takes in what a partition reported: reversal keys to remember or
    /// forget. Returns the items to deliver next: credits for other
    /// partitions, and a tick where a reversal parked already past its
    /// deadline (possible when the wait is shorter than a batch).
    pub fn settle(&mut self, report: &Report) -> Vec<(u16, Item)> {
        let mut items = Vec::new();
        for settled in &report.settled {
            match *settled {
                Settled::Remember(key) => {
                    self.in_flight.remove(&key);
                    self.parked.remove(&key);
                    self.remembered.insert(key);
                }
                Settled::Forget(key) => {
                    self.in_flight.remove(&key);
                    self.parked.remove(&key);
                    self.remembered.remove(&key);
                }
                Settled::Parked {
                    key,
                    deadline,
                    partition,
                } => {
                    self.in_flight.remove(&key);
                    // Strictly before: a later message has been processed
                    // past the deadline (the reversal's own does not count).
                    if deadline < self.now {
                        self.remembered.remove(&key);
                        items.push((partition, Item::Tick(self.now)));
                    } else {
                        self.track_parked(key, deadline, partition);
                    }
                }
            }
        }
        items.extend(
            report
                .credits
                .iter()
                .map(|c| (self.partition_of(c.citizen), Item::Credit(c.clone()))),
        );
        items
    }

    /// Remembers a parked reversal's key until its deadline.
    fn track_parked(&mut self, key: u128, deadline: Timestamp, partition: u16) {
        self.remembered.insert(key);
        self.parked.insert(key, (deadline, partition));
        self.parked_expiry.insert((deadline, key));
    }

    /// The partition of a citizen.
    pub fn partition_of(&self, citizen: CitizenIdx) -> u16 {
        self.directory.citizen(citizen).partition
    }
}
