//! The sequential part of the engine: it reads the log in order, keeps the
//! routing directory, decides what the directory and the periods decide
//! (card window, T&C, withdrawal, period, grace), and hands each message to
//! the partition that holds the card's payments.
//!
//! Everything about a card's own history is decided by that partition: its
//! de-duplication keys (RULES.md: the card is part of the key), its parked
//! reversals, its split-payment slots. So the router never waits for a
//! partition: it is a pure function of the log, which is what lets every
//! cluster node run it alone (PROTOCOL.md section 8). The one exception is a
//! reversal for a card nobody ever enrolled: it waits here (as an *orphan*)
//! until the card is enrolled, since no partition holds the card yet.

use crate::authorization::{Authorization, Hpan, Operation};
use crate::directory::{CitizenIdx, Directory, EnrollEffect, Owner};
use crate::enrollment::{EnrollCommand, EnrollError};
use crate::fasthash::FastMap;
use crate::item::{
    Credit, ExclusionItem, ExclusionOp, Fate, Item, LateRejection, Origin, PaymentItem, Reversal,
    ReversalItem, WalletChange,
};
use crate::parking::ParkingLimits;
use crate::partition;
use crate::period::Periods;
use crate::reason::{Reason, Rejection};
use crate::standing::CitizenFacts;
use crate::time::Timestamp;
use smallvec::SmallVec;
use std::collections::BTreeSet;
use std::sync::Arc;

/// Where a message sits in the log.
#[derive(Clone, Copy, Debug)]
pub struct Position {
    /// JetStream stream sequence.
    pub seq: u64,
    /// JetStream receive time.
    pub broker_time: Timestamp,
}

/// The router's decision about one authorization. Returned and consumed at
/// once for every message: boxing the large variant would cost an
/// allocation per message on the hot path to save stack bytes nobody keeps.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Routed {
    /// It does not count; `partition` is the one whose owner publishes the
    /// rejection (PROTOCOL.md section 8).
    Reject {
        /// Whose owner publishes it.
        partition: u16,
        /// Why.
        rejection: Rejection,
    },
    /// Send this item to this partition.
    Forward(u16, Item),
    /// A reversal for a card nobody ever enrolled: it waits here.
    ParkedHere,
}

/// The sequential router.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Router {
    /// Citizens and cards.
    directory: Directory,
    /// Award periods (configuration, not state).
    #[serde(skip)]
    periods: Arc<Periods>,
    /// How long reversals wait for their payment, in seconds (configuration).
    #[serde(skip)]
    park_secs: i64,
    /// Bounds on waiting reversals (configuration).
    #[serde(skip)]
    limits: ParkingLimits,
    /// Reversals for cards never enrolled, by card, in arrival order.
    orphans: FastMap<Hpan, Vec<Reversal>>,
    /// Their deadlines (derived).
    #[serde(skip)]
    orphan_expiry: BTreeSet<(Timestamp, u64, Hpan)>,
    /// Acquirer codes, interned: a handful of distinct codes shared by
    /// millions of payment records.
    acquirers: FastMap<Box<str>, Arc<str>>,
    /// The engine's clock: the latest broker time processed. Monotonic even
    /// if a cluster's stream leader changes to a server whose clock is
    /// behind, so that a parked reversal expires once, for good, whichever
    /// partition is asked first (RULES.md: "a processed message's broker
    /// time").
    now: Timestamp,
}

impl Router {
    /// A router for an empty log.
    pub fn new(
        partitions: u16,
        periods: Arc<Periods>,
        park_days: u32,
        limits: ParkingLimits,
    ) -> Router {
        Router {
            directory: Directory::new(partitions),
            periods,
            park_secs: park_days as i64 * 86_400,
            limits,
            orphans: FastMap::default(),
            orphan_expiry: BTreeSet::new(),
            acquirers: FastMap::default(),
            now: Timestamp::default(),
        }
    }

    /// Makes a router loaded from a snapshot whole: configuration and
    /// derived indexes.
    pub fn restore(&mut self, periods: Arc<Periods>, park_days: u32, limits: ParkingLimits) {
        self.periods = periods;
        self.park_secs = park_days as i64 * 86_400;
        self.limits = limits;
        self.orphan_expiry = self
            .orphans
            .iter()
            .flat_map(|(h, list)| {
                list.iter()
                    .map(|r| (r.broker_time.plus_secs(self.park_secs), r.seq, *h))
            })
            .collect();
    }

    /// The directory, for reading.
    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    /// The award periods.
    pub fn periods(&self) -> &Arc<Periods> {
        &self.periods
    }

    /// The engine's clock.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// Reversals waiting here for their card to be enrolled.
    pub fn orphan_count(&self) -> usize {
        self.orphan_expiry.len()
    }

    /// The partition of a citizen.
    pub fn partition_of(&self, citizen: CitizenIdx) -> u16 {
        self.directory.citizen(citizen).partition
    }

    /// The partition whose owner publishes what is decided about a card
    /// outside any partition: the card's anchor once enrolled, else a
    /// stable hash of the card.
    pub fn card_partition(&self, hpan: &Hpan) -> u16 {
        self.directory
            .card(hpan)
            .map_or_else(|| partition::of_card(hpan, self.partitions()), |c| c.anchor)
    }

    /// Number of partitions.
    pub fn partitions(&self) -> u16 {
        self.directory.partitions()
    }

    /// Moves the clock to a message's broker time (never back). Orphans
    /// whose wait is over are rejected now, with the partition whose owner
    /// publishes each. Call before routing each message; partitions expire
    /// their own parked reversals against the clock each item carries.
    pub fn advance(&mut self, broker_time: Timestamp) -> Vec<(u16, LateRejection)> {
        self.now = self.now.max(broker_time);
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
            expired.push((
                self.card_partition(&hpan),
                LateRejection {
                    seq: r.seq,
                    rejection: Rejection::new(
                        Reason::UnmatchedReversal,
                        format!(
                            "no payment matched the reversal within {} days",
                            self.park_secs / 86_400
                        ),
                    ),
                    origin: Some(r.origin),
                },
            ));
        }
        expired
    }

    /// Decides or routes one valid authorization (RULES.md checks 2 to 4, as
    /// far as the directory and the periods decide them). `origin` is asked
    /// for when the message goes to a partition (which may reject it, or
    /// keep a reversal waiting), with `true` when it may be kept beyond the
    /// batch (a reversal may wait for weeks: the caller then copies the
    /// bytes rather than pin a shared read buffer).
    pub fn route(
        &mut self,
        at: Position,
        auth: &Authorization,
        origin: impl FnOnce(bool) -> Origin,
    ) -> Routed {
        match auth.operation {
            Operation::Payment => self.route_payment(at, auth, origin),
            Operation::Reversal => self.route_reversal(at, auth, origin),
        }
    }

    fn route_payment(
        &mut self,
        at: Position,
        auth: &Authorization,
        origin: impl FnOnce(bool) -> Origin,
    ) -> Routed {
        let Some(card) = self.directory.card(&auth.hpan) else {
            // Never enrolled: it never counted, so it cannot be a duplicate.
            return Routed::Reject {
                partition: partition::of_card(&auth.hpan, self.partitions()),
                rejection: Rejection::new(
                    Reason::CardNotEnrolled,
                    "no citizen ever enrolled this card",
                ),
            };
        };
        let anchor = card.anchor;
        let fate = self.payment_fate(at, auth);
        let acquirer = self.intern(&auth.acquirer_code);
        Routed::Forward(
            anchor,
            Item::Payment(PaymentItem {
                seq: at.seq,
                key: auth.key,
                broker_time: at.broker_time,
                now: self.now,
                hpan: auth.hpan,
                fate,
                trx_date: auth.trx_date,
                amount: auth.total_amount,
                acquirer,
                circuit_type: auth.circuit_type,
                operation_type: auth.operation_type,
                terminal_key: auth.terminal_key,
                correlation_key: auth.correlation_key,
                merchant_key: auth.merchant_key,
                withdrawn: self.withdrawn_owners(&auth.hpan),
                origin: origin(false),
            }),
        )
    }

    /// RULES.md checks 3 for a payment on an enrolled card, in order, but
    /// for the split-payment limit (the card's partition keeps the slots).
    fn payment_fate(&self, at: Position, auth: &Authorization) -> Fate {
        let citizen = match self.directory.owner_at(&auth.hpan, auth.trx_date) {
            Owner::NotEnrolled | Owner::NotActive => {
                return Fate::Rejected(Rejection::new(
                    Reason::CardNotActive,
                    "the card was not active at trx_date",
                ))
            }
            Owner::Citizen(idx) => idx,
        };
        let record = self.directory.citizen(citizen);
        if record.withdrawn {
            return Fate::Rejected(Rejection::new(
                Reason::CitizenWithdrawn,
                "the card's citizen has withdrawn",
            ));
        }
        if auth.trx_date < record.tc_accepted_at {
            return Fate::Rejected(Rejection::new(
                Reason::TcNotAccepted,
                "the citizen had not accepted the T&C at trx_date",
            ));
        }
        let Some(period) = self.periods.containing(auth.trx_date) else {
            return Fate::Rejected(Rejection::new(
                Reason::OutsideAwardPeriod,
                format!(
                    "{} (Europe/Rome) is in no award period",
                    auth.trx_date.rome_date()
                ),
            ));
        };
        // Closed by the log's clock (the latest broker time so far), not by
        // this message's own: broker times can step back (a stream leader
        // moves to a server whose clock is behind), and a partition drops a
        // period's split-payment slots when a tick at the log's clock finds it
        // closed; judged by its own time, a payment after that tick could
        // still count, and whether it met its slots would depend on where a
        // batch ended. By the log's clock, every process decides it alike.
        if !self
            .periods
            .accepts_data(period, self.now.max(at.broker_time))
        {
            return Fate::Rejected(Rejection::new(
                Reason::PeriodClosed,
                format!(
                    "award period {} closed to new data",
                    self.periods.get(period).id
                ),
            ));
        }
        Fate::Counts { citizen, period }
    }

    fn intern(&mut self, code: &str) -> Arc<str> {
        match self.acquirers.get(code) {
            Some(a) => a.clone(),
            None => {
                let a: Arc<str> = code.into();
                self.acquirers.insert(code.into(), a.clone());
                a
            }
        }
    }

    fn route_reversal(
        &mut self,
        at: Position,
        auth: &Authorization,
        origin: impl FnOnce(bool) -> Origin,
    ) -> Routed {
        if let Some(card) = self.directory.card(&auth.hpan) {
            let anchor = card.anchor;
            return Routed::Forward(
                anchor,
                Item::Reversal(ReversalItem {
                    reversal: self.reversal(at, auth, origin),
                    now: self.now,
                    hpan: auth.hpan,
                    withdrawn: self.withdrawn_owners(&auth.hpan),
                }),
            );
        }
        let partition = partition::of_card(&auth.hpan, self.partitions());
        let waiting = self.orphans.get(&auth.hpan);
        if waiting.is_some_and(|list| list.iter().any(|r| r.key == auth.key)) {
            return Routed::Reject {
                partition,
                rejection: Rejection::new(
                    Reason::Duplicate,
                    "a reversal with the same key on this card is already waiting",
                ),
            };
        }
        let on_card = waiting.map_or(0, Vec::len);
        let full = if on_card >= self.limits.per_card {
            Some(format!(
                "the card already has {on_card} reversals waiting (the limit)"
            ))
        } else if self.orphan_count() >= self.limits.per_partition {
            Some(format!(
                "{} reversals for cards nobody enrolled already wait (the limit)",
                self.orphan_count()
            ))
        } else {
            None
        };
        if let Some(what) = full {
            return Routed::Reject {
                partition,
                rejection: Rejection::new(
                    Reason::UnmatchedReversal,
                    format!("no payment matched the reversal, and {what}"),
                ),
            };
        }
        let reversal = self.reversal(at, auth, origin);
        self.orphan_expiry
            .insert((at.broker_time.plus_secs(self.park_secs), at.seq, auth.hpan));
        self.orphans.entry(auth.hpan).or_default().push(reversal);
        Routed::ParkedHere
    }

    fn reversal(
        &self,
        at: Position,
        auth: &Authorization,
        origin: impl FnOnce(bool) -> Origin,
    ) -> Reversal {
        Reversal {
            seq: at.seq,
            broker_time: at.broker_time,
            key: auth.key,
            amount: auth.total_amount,
            terminal_key: auth.terminal_key,
            correlation_key: auth.correlation_key,
            origin: origin(true),
        }
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
    pub fn enroll(
        &mut self,
        at: Position,
        cmd: &EnrollCommand,
    ) -> (Result<(), EnrollError>, Vec<(u16, Item)>) {
        let mut items = Vec::new();
        let effect = match self.directory.apply(at.seq, cmd) {
            Ok(effect) => effect,
            Err(e) => return (Err(e), items),
        };
        match effect {
            EnrollEffect::Unchanged => {}
            EnrollEffect::Citizen(idx) => {
                let c = self.directory.citizen(idx);
                let iban = match cmd {
                    EnrollCommand::Citizen { iban, .. } => Some(iban.as_str()),
                    _ => None,
                };
                items.push((
                    c.partition,
                    Item::Citizen(CitizenFacts {
                        idx,
                        id: cmd.citizen_id().into(),
                        // A withdrawal carries no IBAN: the partition keeps
                        // the one it has (see `Citizens::upsert`).
                        iban: iban.unwrap_or_default().into(),
                        tc_accepted_at: c.tc_accepted_at,
                        withdrawn: c.withdrawn,
                    }),
                ));
            }
            EnrollEffect::Opened {
                hpan,
                citizen,
                from,
                first,
            } => {
                items.push((
                    self.partition_of(citizen),
                    Item::Wallet(WalletChange::Opened {
                        citizen,
                        hpan,
                        from,
                    }),
                ));
                if first {
                    if let Some(parked) = self.orphans.remove(&hpan) {
                        for r in &parked {
                            let deadline = r.broker_time.plus_secs(self.park_secs);
                            self.orphan_expiry.remove(&(deadline, r.seq, hpan));
                        }
                        items.push((self.partition_of(citizen), Item::Adopt { hpan, parked }));
                    }
                }
            }
            EnrollEffect::Closed {
                hpan,
                citizen,
                until,
            } => items.push((
                self.partition_of(citizen),
                Item::Wallet(WalletChange::Closed {
                    citizen,
                    hpan,
                    until,
                }),
            )),
        }
        (Ok(()), items)
    }

    /// Routes one journaled exclusion or reinstatement to the card's
    /// partition; a card nobody ever enrolled has no payment:
    /// `unknown_payment`, decided here (with the partition whose owner
    /// answers it).
    pub fn exclusion(
        &mut self,
        at: Position,
        op: ExclusionOp,
        cmd: &crate::admin::ExclusionCommand,
    ) -> Result<(u16, Item), u16> {
        let hpan = Hpan::parse(&cmd.hpan).unwrap_or(Hpan([0; 32]));
        let Some(card) = self.directory.card(&hpan) else {
            return Err(partition::of_card(&hpan, self.partitions()));
        };
        Ok((
            card.anchor,
            Item::Exclusion(ExclusionItem {
                seq: at.seq,
                broker_time: at.broker_time,
                now: self.now,
                op,
                hpan,
                key: cmd.key(),
                reason: cmd.reason.as_str().into(),
            }),
        ))
    }

    /// The items that deliver credits a partition reported, each to its
    /// citizen's partition.
    pub fn deliver(&self, credits: &[Credit]) -> Vec<(u16, Item)> {
        credits
            .iter()
            .map(|c| (self.partition_of(c.citizen), Item::Credit(c.clone())))
            .collect()
    }
}
