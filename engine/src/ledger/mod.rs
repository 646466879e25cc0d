//! The state of one partition: its citizens' counts, cashback and wallets,
//! and, for the cards anchored here, the payments kept for reversal
//! matching, de-duplication and statements, the reversals waiting for their
//! payment and the split-payment slots (RULES.md).
//!
//! Where to look:
//! - [`record`]: the packed 40-byte payment record and its side table;
//! - [`book`]: a card's book (payments, owners, keys, parked reversals, slots);
//! - [`reversal`]: the reversal rules (matching and their checks);
//! - [`decision`]: decide, then commit, as types;
//! - this file: the ledger, how each kind of item is decided, and the
//!   queries (statement, wallet, standings).

pub mod book;
pub mod decision;
pub mod record;
mod reversal;
mod view;
pub mod wallet;

use crate::authorization::Hpan;
use crate::directory::CitizenIdx;
use crate::fasthash::FastMap;
use crate::fault::{self, Point};
use crate::item::{
    Credit, CreditId, ExclusionItem, ExclusionOp, Fate, Item, LateRejection, Origin, PaymentItem,
    Reversal, ReversalItem, StandingChange,
};
use crate::money::score;
use crate::parking::ParkingLimits;
use crate::period::{PeriodIdx, Periods};
use crate::reason::{Reason, Rejection};
use crate::refusal::ErrorCode;
use crate::summary::Citizens;
use crate::time::Timestamp;
use book::CardBook;
use decision::{AuditEntry, Decision, Delta, Effect};
use record::{fold_key, NewPayment, Spill};
use reversal::Verdict;
use rust_decimal::Decimal;
use smallvec::SmallVec;
use std::collections::BTreeSet;
use std::sync::Arc;
use view::{Pending, View};
use wallet::{WalletCard, Wallets};

pub use crate::standing::{CitizenFacts, Standing};

/// A payment with every value unpacked: what the rules and the statement
/// read (see [`Ledger::payment`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payment {
    /// Stream sequence: arrival order.
    pub seq: u64,
    /// When the card was used.
    pub trx_date: Timestamp,
    /// Original amount, cents.
    pub amount: u64,
    /// What is left after reversals, cents.
    pub balance: u64,
    /// Who it counted for (the card's owner at `trx_date`).
    pub citizen: CitizenIdx,
    /// Which period it counted in.
    pub period: PeriodIdx,
    /// The acquirer's code.
    pub acquirer: Arc<str>,
    /// Wire circuit type.
    pub circuit_type: u8,
    /// Wire operation type.
    pub operation_type: u8,
    /// Whether an operator excluded it.
    pub excluded: bool,
}

/// One line of a citizen's statement (PROTOCOL.md, `cashback.query.transactions`).
/// Serializable: in a cluster a citizen's lines come from every node.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StatementLine {
    /// When the card was used.
    pub trx_date: Timestamp,
    /// Arrival order: the second sort key.
    pub seq: u64,
    /// The acquirer's code.
    pub acquirer: Arc<str>,
    /// Wire circuit type.
    pub circuit_type: u8,
    /// Wire operation type.
    pub operation_type: u8,
    /// Original amount, cents.
    pub amount: u64,
    /// Remaining after reversals, cents.
    pub balance: u64,
    /// The payment's current score (0 when excluded).
    pub cashback: Decimal,
    /// Whether an operator excluded it.
    pub excluded: bool,
}

/// How much a ledger holds, for the state benchmark.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LedgerSizes {
    /// Card books.
    pub cards: usize,
    /// Retained payments.
    pub payments: usize,
    /// Heap bytes of the payment buffers, capacity included.
    pub payment_buffer_bytes: usize,
    /// Owner runs over all cards (one per card unless cards changed hands).
    pub owner_runs: usize,
    /// Payments whose values live in the side table.
    pub spilled: usize,
    /// Distinct acquirer codes.
    pub acquirers: usize,
    /// Split-payment slots.
    pub slots: usize,
    /// Cards in the partition's citizens' wallets.
    pub wallet_cards: usize,
}

/// The state of one partition.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Ledger {
    /// The partition this ledger holds.
    partition: u16,
    /// Award periods (configuration, not state).
    #[serde(skip)]
    periods: Arc<Periods>,
    /// Bounds on waiting reversals (configuration, not state).
    #[serde(skip)]
    limits: ParkingLimits,
    /// How long a reversal may wait for its payment, in seconds
    /// (configuration, not state).
    #[serde(skip)]
    park_secs: i64,
    /// Citizens of this partition, a 64-byte summary each.
    citizens: Citizens,
    /// Their wallets.
    wallets: Wallets,
    /// Cards anchored in this partition -> their number here, the index of
    /// their book in `books`. A u32 number lets indexes and the side table
    /// name a card in 4 bytes instead of its 32-byte hash.
    cards: FastMap<Hpan, u32>,
    /// The books of the cards anchored here, by card number.
    books: Vec<CardBook>,
    /// Every acquirer code seen here, once: records hold an index into it.
    /// A handful of codes cover every payment.
    acquirers: Vec<Arc<str>>,
    /// Acquirer code -> index in `acquirers` (derived).
    #[serde(skip)]
    acquirer_no: FastMap<Arc<str>, u32>,
    /// The exact values of spilled payments, by (card number, position):
    /// see [`record::PaymentRecord`]. Normally empty.
    spills: FastMap<(u32, u32), Spill>,
    /// The last credit taken from each partition that sent any: credits
    /// arrive once more after a crash, or from a replica, and are taken once.
    credits_taken: FastMap<u16, CreditId>,
    /// Operators' exclusions and reinstatements of payments anchored here.
    audit: Vec<AuditEntry>,
    /// Parked reversals by deadline, so expiry never scans every card:
    /// (deadline, the reversal's seq, its card) (derived).
    #[serde(skip)]
    expiry: BTreeSet<(Timestamp, u64, Hpan)>,
    /// For each citizen, the numbers of the cards here with payments that
    /// counted for them: a derived index for statements, per (citizen, card)
    /// rather than per payment (the owner runs of each card do the rest).
    #[serde(skip)]
    statement: FastMap<CitizenIdx, SmallVec<[u32; 2]>>,
    /// Periods that have split-payment slots here (derived).
    #[serde(skip)]
    slot_periods: BTreeSet<PeriodIdx>,
}

impl Ledger {
    /// An empty partition.
    pub fn new(
        partition: u16,
        periods: Arc<Periods>,
        park_days: u32,
        limits: ParkingLimits,
    ) -> Ledger {
        Ledger {
            partition,
            periods,
            limits,
            park_secs: park_days as i64 * 86_400,
            citizens: Citizens::default(),
            wallets: Wallets::default(),
            cards: FastMap::default(),
            books: Vec::new(),
            acquirers: Vec::new(),
            acquirer_no: FastMap::default(),
            spills: FastMap::default(),
            credits_taken: FastMap::default(),
            audit: Vec::new(),
            expiry: BTreeSet::new(),
            statement: FastMap::default(),
            slot_periods: BTreeSet::new(),
        }
    }

    /// The award periods.
    pub fn periods(&self) -> &Periods {
        &self.periods
    }

    /// Which partition this is.
    pub fn partition(&self) -> u16 {
        self.partition
    }

    /// Number of citizens held here.
    pub fn citizen_count(&self) -> usize {
        self.citizens.len()
    }

    /// Number of reversals waiting here.
    pub fn parked_count(&self) -> usize {
        self.expiry.len()
    }

    /// When the next parked reversal's wait ends, if any waits.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.expiry.first().map(|(d, _, _)| *d)
    }

    /// Number of payments kept here, and how many of them are spilled.
    pub fn payment_count(&self) -> (usize, usize) {
        (
            self.books.iter().map(|b| b.payments.len()).sum(),
            self.spills.len(),
        )
    }

    /// Counts for the state benchmark (`examples/state_bench.rs`).
    pub fn sizes(&self) -> LedgerSizes {
        LedgerSizes {
            cards: self.books.len(),
            payments: self.books.iter().map(|b| b.payments.len()).sum(),
            payment_buffer_bytes: self
                .books
                .iter()
                .map(|b| b.payments.capacity() * std::mem::size_of::<record::PaymentRecord>())
                .sum(),
            owner_runs: self.books.iter().map(|b| b.owners.len()).sum(),
            spilled: self.spills.len(),
            acquirers: self.acquirers.len(),
            slots: self.books.iter().map(|b| b.slots.len()).sum(),
            wallet_cards: self.wallets.card_count(),
        }
    }

    /// The facts and the totals in `period` of the citizen numbered `idx`,
    /// if held here.
    pub fn citizen(&self, idx: CitizenIdx, period: PeriodIdx) -> Option<(CitizenFacts, Standing)> {
        Some((
            self.citizens.facts(idx)?,
            self.citizens.standing(idx, period)?,
        ))
    }

    /// The same, for the citizen with this public id.
    pub fn citizen_by_id(&self, id: &str, period: PeriodIdx) -> Option<(CitizenFacts, Standing)> {
        self.citizen(self.citizens.idx_by_id(id)?, period)
    }

    /// The facts and the wallet of the citizen with this public id.
    pub fn wallet_by_id(&self, id: &str) -> Option<(CitizenFacts, Vec<WalletCard>)> {
        let idx = self.citizens.idx_by_id(id)?;
        Some((self.citizens.facts(idx)?, self.wallets.of(idx)))
    }

    /// The citizens held here (for the state benchmark's figures).
    pub fn citizens(&self) -> &Citizens {
        &self.citizens
    }

    /// The operators' exclusions and reinstatements, oldest first.
    pub fn audit(&self) -> &[AuditEntry] {
        &self.audit
    }

    /// A card's book, if anchored here.
    pub fn card(&self, hpan: &Hpan) -> Option<&CardBook> {
        self.cards.get(hpan).map(|n| &self.books[*n as usize])
    }

    /// The payments of a card, unpacked, in arrival order.
    pub fn payments_of(&self, hpan: &Hpan) -> Vec<Payment> {
        let Some(&card) = self.cards.get(hpan) else {
            return Vec::new();
        };
        (0..self.books[card as usize].payments.len() as u32)
            .map(|pos| self.payment(card, pos))
            .collect()
    }

    /// The payment at `pos` of card number `card`, every value exact.
    pub fn payment(&self, card: u32, pos: u32) -> Payment {
        let r = &self.books[card as usize].payments[pos as usize];
        let acquirer = match self.spill(card, pos) {
            Some(s) => s.acquirer as usize,
            None => r.acquirer as usize,
        };
        let (circuit_type, operation_type) = match self.spill(card, pos) {
            Some(s) => (s.circuit_type, s.operation_type),
            None => (r.circuit_type(), r.operation_type()),
        };
        Payment {
            seq: self.seq(card, pos),
            trx_date: self.trx_date(card, pos),
            amount: self.spill(card, pos).map_or(r.amount as u64, |s| s.amount),
            balance: self.balance(card, pos),
            citizen: self.owner(card, pos),
            period: self.period(card, pos),
            acquirer: self.acquirers[acquirer].clone(),
            circuit_type,
            operation_type,
            excluded: r.excluded(),
        }
    }

    /// The side-table entry of a spilled record.
    fn spill(&self, card: u32, pos: u32) -> Option<&Spill> {
        let r = &self.books[card as usize].payments[pos as usize];
        r.spilled().then(|| {
            self.spills
                .get(&(card, pos))
                .expect("every spilled record has its side-table entry")
        })
    }

    /// A record's remaining balance, cents.
    fn balance(&self, card: u32, pos: u32) -> u64 {
        let r = &self.books[card as usize].payments[pos as usize];
        self.spill(card, pos)
            .map_or(r.balance as u64, |s| s.balance)
    }

    /// A record's stream sequence.
    fn seq(&self, card: u32, pos: u32) -> u64 {
        let r = &self.books[card as usize].payments[pos as usize];
        self.spill(card, pos).map_or(r.packed_seq(), |s| s.seq)
    }

    /// A record's `trx_date`.
    fn trx_date(&self, card: u32, pos: u32) -> Timestamp {
        let r = &self.books[card as usize].payments[pos as usize];
        self.spill(card, pos)
            .map_or_else(|| r.packed_trx_date(), |s| s.trx_date)
    }

    /// A record's period.
    fn period(&self, card: u32, pos: u32) -> PeriodIdx {
        match self.spill(card, pos) {
            Some(s) => s.period,
            None => self
                .periods
                .at_instant(self.trx_date(card, pos))
                .expect("packed only when the period is trx_date's"),
        }
    }

    /// Who a record counted for.
    fn owner(&self, card: u32, pos: u32) -> CitizenIdx {
        self.books[card as usize]
            .owner_at(pos)
            .expect("every payment has an owner run")
    }

    /// The number of a card anchored here, giving it an empty book first if new.
    fn card_no(&mut self, hpan: &Hpan) -> u32 {
        if let Some(&n) = self.cards.get(hpan) {
            return n;
        }
        let n = self.books.len() as u32;
        self.books.push(CardBook::default());
        self.cards.insert(*hpan, n);
        n
    }

    /// The index an acquirer code has, or will have once interned.
    fn acquirer_index(&self, code: &Arc<str>) -> (u32, Option<Arc<str>>) {
        match self.acquirer_no.get(code) {
            Some(&i) => (i, None),
            None => (self.acquirers.len() as u32, Some(code.clone())),
        }
    }

    fn intern_acquirer(&mut self, code: Arc<str>) {
        let i = self.acquirers.len() as u32;
        self.acquirers.push(code.clone());
        self.acquirer_no.insert(code, i);
    }

    /// Decides and commits one item (the reference engine's path; a
    /// supervised shard decides under `catch_unwind` first).
    pub fn apply(&mut self, item: &Item, report: &mut crate::item::Report) {
        let decision = self.decide(item);
        self.commit(decision, report);
    }

    /// Judges one item against the state, changing nothing: the
    /// [`Decision`] holds every write [`commit`](Ledger::commit) will make.
    pub fn decide(&self, item: &Item) -> Decision {
        match item {
            Item::Payment(p) => self.decide_payment(p),
            Item::Reversal(r) => self.decide_reversal(r),
            Item::Exclusion(e) => self.decide_exclusion(e),
            Item::Credit(c) => self.decide_credit(c),
            Item::Citizen(facts) => Decision {
                seq: 0,
                effects: smallvec::smallvec![Effect::Citizen(facts.clone())],
            },
            Item::Wallet(change) => Decision {
                seq: 0,
                effects: smallvec::smallvec![Effect::Wallet(change.clone())],
            },
            Item::Adopt { hpan, parked } => Decision {
                seq: 0,
                effects: parked
                    .iter()
                    .map(|r| Effect::Park {
                        hpan: *hpan,
                        reversal: r.clone(),
                        fresh: false,
                    })
                    .collect(),
            },
            Item::Tick(now) => self.decide_tick(*now),
        }
    }

    /// Whether time passing to `now` would change anything here (a parked
    /// reversal's wait ends, a period with slots stops accepting data): a
    /// cheap check before [`decide_tick`](Self::decide_tick).
    pub fn needs_tick(&self, now: Timestamp) -> bool {
        self.next_deadline().is_some_and(|d| d <= now)
            || self
                .slot_periods
                .iter()
                .any(|p| !self.periods.accepts_data(*p, now))
    }

    /// What time passing to `now` does alone: expiries and dropped slots.
    /// Also what a set-aside item still does.
    pub fn decide_tick(&self, now: Timestamp) -> Decision {
        let mut d = Decision::new(0);
        self.decide_expiries(now, &mut d);
        for &period in &self.slot_periods {
            if !self.periods.accepts_data(period, now) {
                d.push(Effect::DropSlots(period));
            }
        }
        d
    }

    /// Rejects every parked reversal whose wait ended at or before `now`;
    /// returns their sequences (their keys are forgotten by the same
    /// decision, so a re-send in it is judged afresh).
    fn decide_expiries(&self, now: Timestamp, d: &mut Decision) -> SmallVec<[u64; 2]> {
        let mut expired = SmallVec::new();
        for &(deadline, seq, hpan) in &self.expiry {
            if deadline > now {
                break;
            }
            let Some(r) = self
                .card(&hpan)
                .and_then(|b| b.parked().find(|r| r.seq == seq))
            else {
                continue;
            };
            d.push(Effect::Unpark { hpan, seq });
            d.push(Effect::Reject(LateRejection {
                seq,
                rejection: Rejection::new(
                    Reason::UnmatchedReversal,
                    format!(
                        "no payment matched the reversal within {} days",
                        self.park_secs / 86_400
                    ),
                ),
                origin: Some(r.origin.clone()),
            }));
            expired.push(seq);
        }
        expired
    }

    fn reject(d: &mut Decision, seq: u64, rejection: Rejection, origin: &Origin) {
        d.push(Effect::Reject(LateRejection {
            seq,
            rejection,
            origin: Some(origin.clone()),
        }));
    }

    fn decide_payment(&self, p: &PaymentItem) -> Decision {
        let mut d = Decision::new(p.seq);
        let expiring = self.decide_expiries(p.now, &mut d);
        fault::point(Point::Payment, p.seq);
        let card = self.cards.get(&p.hpan).copied();
        if card.is_some_and(|c| self.books[c as usize].knows_key(p.key, &expiring)) {
            let why = Rejection::new(
                Reason::Duplicate,
                "an authorization with the same key on this card was already counted",
            );
            Self::reject(&mut d, p.seq, why, &p.origin);
            return d;
        }
        let (citizen, period) = match &p.fate {
            Fate::Rejected(why) => {
                Self::reject(&mut d, p.seq, why.clone(), &p.origin);
                return d;
            }
            Fate::Counts { citizen, period } => (*citizen, *period),
        };
        let rules = self.periods.get(period);
        let mut slot = None;
        if rules.max_payments_per_merchant_day > 0 {
            let merchant = fold_key(p.merchant_key);
            let day = self.periods.day_in(period, p.trx_date).unwrap_or(u16::MAX);
            let taken = card.map_or(0, |c| {
                self.books[c as usize].slot_count(merchant, period, day)
            });
            if taken >= rules.max_payments_per_merchant_day {
                let why = Rejection::new(
                    Reason::MerchantDailyLimit,
                    format!(
                        "the card already has {taken} payments at this shop on {} (the limit of period {})",
                        p.trx_date.rome_date(),
                        rules.id
                    ),
                );
                Self::reject(&mut d, p.seq, why, &p.origin);
                return d;
            }
            slot = Some((merchant, period, day));
        }
        let (acquirer, new_acquirer) = self.acquirer_index(&p.acquirer);
        let pending = Pending {
            payment: NewPayment {
                seq: p.seq,
                key: p.key,
                trx_date: p.trx_date,
                amount: p.amount,
                period,
                acquirer,
                circuit_type: p.circuit_type,
                operation_type: p.operation_type,
                terminal_key: p.terminal_key,
                correlation_key: p.correlation_key,
            },
            citizen,
        };
        let (record, spill) = pending.payment.pack(self.periods.at_instant(p.trx_date));
        d.push(Effect::Record {
            hpan: p.hpan,
            record,
            spill,
            citizen,
            new_acquirer,
            slot,
        });
        d.push(Effect::Credit {
            delta: Delta {
                citizen,
                period,
                count: 1,
                cashback: score(
                    p.amount,
                    rules.cashback_rate,
                    rules.max_cashback_per_transaction,
                ),
                trx_date: Some(p.trx_date),
            },
            received: false,
        });
        self.decide_release(&mut d, card, &pending, p, &expiring);
        d
    }

    /// After a payment, tries the card's parked reversals in arrival order,
    /// each by the ordinary rules against the payments as the earlier ones
    /// left them: one chain, decided before anything is written.
    fn decide_release(
        &self,
        d: &mut Decision,
        card: Option<u32>,
        pending: &Pending,
        p: &PaymentItem,
        expiring: &[u64],
    ) {
        let Some(c) = card else {
            return;
        };
        let book = &self.books[c as usize];
        if book.parked_len() == 0 {
            return;
        }
        let mut view = View::new(self, card, Some(pending));
        for r in book.parked() {
            if expiring.contains(&r.seq) {
                continue;
            }
            fault::point(Point::Release, p.seq);
            match reversal::judge(&view, r, p.now, &p.withdrawn, &self.periods) {
                Verdict::Park => {}
                Verdict::Reject(why) => {
                    d.push(Effect::Unpark {
                        hpan: p.hpan,
                        seq: r.seq,
                    });
                    Self::reject(d, r.seq, why, &r.origin);
                }
                Verdict::Apply {
                    pos,
                    balance_before,
                    balance_after,
                } => {
                    view.set_balance(pos, balance_after);
                    d.push(Effect::Unpark {
                        hpan: p.hpan,
                        seq: r.seq,
                    });
                    self.apply_effects(d, &view, p.hpan, r, pos, balance_before, balance_after);
                }
            }
        }
    }

    /// The writes of a reversal applied to the payment at `pos`: its
    /// balance, the reversal's key, and the change to its citizen's totals
    /// (none when an operator excluded the payment: RULES.md, "Operator
    /// exclusions").
    #[allow(clippy::too_many_arguments)]
    fn apply_effects(
        &self,
        d: &mut Decision,
        view: &View,
        hpan: Hpan,
        r: &Reversal,
        pos: u32,
        before: u64,
        after: u64,
    ) {
        d.push(Effect::Balance {
            hpan,
            pos,
            balance: after,
        });
        d.push(Effect::RememberReversal { hpan, key: r.key });
        if view.excluded(pos) {
            return;
        }
        let period = view.period(pos);
        let rules = self.periods.get(period);
        let (rate, cap) = (rules.cashback_rate, rules.max_cashback_per_transaction);
        d.push(Effect::Credit {
            delta: Delta {
                citizen: view.citizen(pos),
                period,
                count: if after == 0 && before > 0 { -1 } else { 0 },
                cashback: score(after, rate, cap) - score(before, rate, cap),
                trx_date: None,
            },
            received: false,
        });
    }

    fn decide_reversal(&self, item: &ReversalItem) -> Decision {
        let r = &item.reversal;
        let mut d = Decision::new(r.seq);
        let expiring = self.decide_expiries(item.now, &mut d);
        fault::point(Point::Reversal, r.seq);
        let card = self.cards.get(&item.hpan).copied();
        let book = card.map(|c| &self.books[c as usize]);
        if book.is_some_and(|b| b.knows_key(r.key, &expiring)) {
            let why = Rejection::new(
                Reason::Duplicate,
                "a reversal with the same key on this card was already applied or is waiting",
            );
            Self::reject(&mut d, r.seq, why, &r.origin);
            return d;
        }
        let view = View::new(self, card, None);
        match reversal::judge(&view, r, item.now, &item.withdrawn, &self.periods) {
            Verdict::Park => {
                let on_card = book.map_or(0, |b| {
                    b.parked().filter(|p| !expiring.contains(&p.seq)).count()
                });
                let here = self.expiry.len() - expiring.len();
                let full = if on_card >= self.limits.per_card {
                    Some(format!(
                        "the card already has {on_card} reversals waiting (the limit)"
                    ))
                } else if here >= self.limits.per_partition {
                    Some(format!(
                        "{here} reversals already wait in this partition (the engine's limit, shared evenly by partitions)"
                    ))
                } else {
                    None
                };
                match full {
                    Some(what) => {
                        let why = Rejection::new(
                            Reason::UnmatchedReversal,
                            format!("no payment matched the reversal, and {what}"),
                        );
                        Self::reject(&mut d, r.seq, why, &r.origin);
                    }
                    None => d.push(Effect::Park {
                        hpan: item.hpan,
                        reversal: r.clone(),
                        fresh: true,
                    }),
                }
            }
            Verdict::Reject(why) => Self::reject(&mut d, r.seq, why, &r.origin),
            Verdict::Apply {
                pos,
                balance_before,
                balance_after,
            } => self.apply_effects(
                &mut d,
                &view,
                item.hpan,
                r,
                pos,
                balance_before,
                balance_after,
            ),
        }
        d
    }

    fn decide_exclusion(&self, e: &ExclusionItem) -> Decision {
        let mut d = Decision::new(e.seq);
        self.decide_expiries(e.now, &mut d);
        fault::point(Point::Exclusion, e.seq);
        let found = self.cards.get(&e.hpan).and_then(|&card| {
            self.books[card as usize]
                .payments
                .iter()
                .position(|p| p.key() == e.key)
                .map(|pos| (card, pos as u32))
        });
        let Some((card, pos)) = found else {
            d.push(Effect::Outcome(e.seq, e.op, Err(ErrorCode::UnknownPayment)));
            return d;
        };
        let p = self.payment(card, pos);
        if !self.periods.accepts_data(p.period, e.now) {
            d.push(Effect::Outcome(e.seq, e.op, Err(ErrorCode::PeriodClosed)));
            return d;
        }
        let exclude = e.op == ExclusionOp::Exclude;
        if p.excluded == exclude {
            d.push(Effect::Outcome(e.seq, e.op, Ok(false)));
            return d;
        }
        let rules = self.periods.get(p.period);
        let effect = score(
            p.balance,
            rules.cashback_rate,
            rules.max_cashback_per_transaction,
        );
        let counts = (p.balance > 0) as i32;
        let sign = if exclude { -1 } else { 1 };
        d.push(Effect::Exclude {
            hpan: e.hpan,
            pos,
            excluded: exclude,
            audit: AuditEntry {
                seq: e.seq,
                at: e.broker_time,
                op: e.op,
                payment_seq: p.seq,
                reason: e.reason.clone(),
            },
        });
        d.push(Effect::Credit {
            delta: Delta {
                citizen: p.citizen,
                period: p.period,
                count: sign * counts,
                cashback: if exclude { -effect } else { effect },
                trx_date: None,
            },
            received: false,
        });
        d.push(Effect::Outcome(e.seq, e.op, Ok(true)));
        d
    }

    fn decide_credit(&self, c: &Credit) -> Decision {
        let mut d = Decision::new(0);
        fault::point(Point::Credit, c.id.seq);
        if self
            .credits_taken
            .get(&c.id.source)
            .is_some_and(|last| c.id <= *last)
        {
            d.push(Effect::CreditRepeated);
            return d;
        }
        if !self.citizens.contains(c.citizen) {
            d.push(Effect::Violation(format!(
                "partition {} received a credit for citizen {}, who is not held here",
                self.partition, c.citizen
            )));
            return d;
        }
        d.push(Effect::CreditTaken(c.id));
        d.push(Effect::Credit {
            delta: Delta {
                citizen: c.citizen,
                period: c.period,
                count: c.count,
                cashback: c.cashback,
                trx_date: c.trx_date,
            },
            received: true,
        });
        d
    }

    /// The current standings of the citizens in `changed` (held here), once
    /// per citizen and period.
    pub fn standing_changes(
        &self,
        changed: impl IntoIterator<Item = (CitizenIdx, Option<PeriodIdx>)>,
        out: &mut Vec<StandingChange>,
    ) {
        let mut seen: crate::fasthash::FastSet<(CitizenIdx, PeriodIdx)> = Default::default();
        for (idx, period) in changed {
            let Some(facts) = self.citizens.facts(idx) else {
                continue;
            };
            let periods: SmallVec<[PeriodIdx; 2]> = match period {
                Some(p) => smallvec::smallvec![p],
                None => self.citizens.periods(idx),
            };
            for p in periods {
                if seen.insert((idx, p)) {
                    out.push(StandingChange {
                        citizen: idx,
                        period: p,
                        id: facts.id.clone(),
                        tc_accepted_at: facts.tc_accepted_at,
                        withdrawn: facts.withdrawn,
                        standing: self.citizens.standing(idx, p).unwrap_or_default(),
                    });
                }
            }
        }
    }

    /// The payments kept here that counted for `citizen` in `period`.
    pub fn statement_lines(
        &self,
        citizen: CitizenIdx,
        period: PeriodIdx,
        out: &mut Vec<StatementLine>,
    ) {
        let Some(cards) = self.statement.get(&citizen) else {
            return;
        };
        let p = self.periods.get(period);
        for &card in cards {
            for pos in self.books[card as usize].positions_of(citizen) {
                let r = self.payment(card, pos);
                if r.period != period {
                    continue;
                }
                out.push(StatementLine {
                    trx_date: r.trx_date,
                    seq: r.seq,
                    cashback: if r.excluded {
                        Decimal::ZERO
                    } else {
                        score(r.balance, p.cashback_rate, p.max_cashback_per_transaction)
                    },
                    acquirer: r.acquirer,
                    circuit_type: r.circuit_type,
                    operation_type: r.operation_type,
                    amount: r.amount,
                    balance: r.balance,
                    excluded: r.excluded,
                });
            }
        }
    }

    /// Makes a ledger loaded from a snapshot whole: the configuration it does
    /// not carry and its derived indexes.
    pub fn restore(&mut self, periods: Arc<Periods>, park_days: u32, limits: ParkingLimits) {
        self.periods = periods;
        self.park_secs = park_days as i64 * 86_400;
        self.limits = limits;
        self.rebuild_indexes();
    }

    /// Every citizen's standing in every period, to rebuild the ranking.
    pub fn all_standings(&self, out: &mut Vec<StandingChange>) {
        self.standing_changes(self.citizens.numbers().map(|idx| (idx, None)), out);
    }

    /// Rebuilds what is derived from the primary state (the expiry, id,
    /// acquirer, statement and slot indexes). Called when a supervised shard
    /// restarts, so a restart never trusts an index that a panic may have
    /// left half-written.
    pub fn rebuild_indexes(&mut self) {
        self.expiry = self
            .cards
            .iter()
            .flat_map(|(h, n)| {
                self.books[*n as usize]
                    .parked()
                    .map(|r| (r.broker_time.plus_secs(self.park_secs), r.seq, *h))
            })
            .collect();
        self.citizens.rebuild_indexes();
        self.acquirer_no = self
            .acquirers
            .iter()
            .enumerate()
            .map(|(i, a)| (a.clone(), i as u32))
            .collect();
        self.statement.clear();
        for (card, book) in self.books.iter().enumerate() {
            for (_, citizen) in &book.owners {
                let cards = self.statement.entry(*citizen).or_default();
                if !cards.contains(&(card as u32)) {
                    cards.push(card as u32);
                }
            }
        }
        self.slot_periods = self
            .books
            .iter()
            .flat_map(|b| b.slots.iter().map(|s| s.period))
            .collect();
    }
}

#[cfg(test)]
mod tests;
