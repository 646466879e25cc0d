//! Decide, then commit, as types. [`Ledger::decide`](super::Ledger::decide)
//! judges an item with `&self` into a [`Decision`]: the list of every
//! change it will make, each one a plain write (a record appended, a
//! balance set, a reversal moved, a total added). [`Ledger::commit`]
//! performs them with `&mut self` and decides nothing: it has no fallible
//! step on a data path. So a panic while deciding leaves the state exactly
//! as it was, and a retried item can never apply anything twice
//! (`supervision` in the actors crate relies on this).

use super::book::MerchantSlot;
use super::record::{PaymentRecord, Spill};
use super::Ledger;
use crate::authorization::Hpan;
use crate::directory::CitizenIdx;
use crate::item::{
    Credit, CreditId, ExclusionOp, ExclusionOutcome, LateRejection, Report, Reversal, WalletChange,
};
use crate::period::PeriodIdx;
use crate::standing::CitizenFacts;
use crate::time::Timestamp;
use rust_decimal::Decimal;
use smallvec::SmallVec;
use std::sync::Arc;

/// A change to a citizen's totals in one period.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delta {
    /// Whose.
    pub citizen: CitizenIdx,
    /// Which period.
    pub period: PeriodIdx,
    /// Payments that start (+1) or stop (-1) counting.
    pub count: i32,
    /// Cashback to add.
    pub cashback: Decimal,
    /// A counted payment's date, for `last_trx_date`.
    pub trx_date: Option<Timestamp>,
}

/// An operator's exclusion or reinstatement, kept for audit (the journal
/// entry may be purged from the stream; the ledger keeps the reason).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditEntry {
    /// Stream sequence of the journal entry.
    pub seq: u64,
    /// Its broker time.
    pub at: Timestamp,
    /// Exclude or reinstate.
    pub op: ExclusionOp,
    /// The payment's stream sequence.
    pub payment_seq: u64,
    /// The operator's reason.
    pub reason: Arc<str>,
}

/// One write of a decision.
#[derive(Clone, Debug)]
pub(super) enum Effect {
    /// Append a payment to the card's book (creating the book if new).
    Record {
        /// The card.
        hpan: Hpan,
        /// The packed payment.
        record: PaymentRecord,
        /// Its exact values when they do not pack.
        spill: Option<Spill>,
        /// Who it counts for.
        citizen: CitizenIdx,
        /// An acquirer code to intern first (the record already holds the
        /// index it will get).
        new_acquirer: Option<Arc<str>>,
        /// The split-payment slot it takes.
        slot: Option<(u32, PeriodIdx, u16)>,
    },
    /// Set a payment's remaining balance.
    Balance {
        /// The card.
        hpan: Hpan,
        /// The payment's position.
        pos: u32,
        /// The new balance, cents.
        balance: u64,
    },
    /// Take a parked reversal off the card (released, rejected or expired).
    Unpark {
        /// The card.
        hpan: Hpan,
        /// The reversal's stream sequence.
        seq: u64,
    },
    /// Park a reversal on the card.
    Park {
        /// The card.
        hpan: Hpan,
        /// The reversal.
        reversal: Reversal,
        /// Whether it was routed here now (counted as parked) rather than
        /// adopted from before the card's enrollment (counted then).
        fresh: bool,
    },
    /// Remember an applied reversal's key.
    RememberReversal {
        /// The card.
        hpan: Hpan,
        /// The key.
        key: u64,
    },
    /// Add to a citizen's totals: here, or in the citizen's partition.
    Credit {
        /// The change.
        delta: Delta,
        /// Received from another partition (so the citizen must be here).
        received: bool,
    },
    /// Remember the last credit taken from a partition.
    CreditTaken(CreditId),
    /// A credit received again, ignored.
    CreditRepeated,
    /// Reject a message.
    Reject(LateRejection),
    /// Record a citizen's facts.
    Citizen(CitizenFacts),
    /// Change a citizen's wallet.
    Wallet(WalletChange),
    /// Set or clear an operator's exclusion of a payment.
    Exclude {
        /// The card.
        hpan: Hpan,
        /// The payment's position.
        pos: u32,
        /// Excluded or not.
        excluded: bool,
        /// The journal entry, for audit.
        audit: AuditEntry,
    },
    /// The answer to an operator's request.
    Outcome(u64, ExclusionOp, ExclusionOutcome),
    /// Forget the split-payment slots of a period that no longer accepts
    /// data (no payment can ask for them again).
    DropSlots(PeriodIdx),
    /// A broken invariant, survived: reported loudly.
    Violation(String),
}

/// Everything an item will change, decided.
#[derive(Clone, Debug, Default)]
pub struct Decision {
    /// The stream sequence of the message decided (0 for items that come
    /// from none): the first part of the ids of the credits it sends.
    pub(super) seq: u64,
    /// The writes, in order: a payment's are two (its record, its credit),
    /// kept inline so that deciding allocates nothing on the common path.
    pub(super) effects: SmallVec<[Effect; 2]>,
}

impl Decision {
    /// An empty decision about message `seq`.
    pub(super) fn new(seq: u64) -> Decision {
        Decision {
            seq,
            effects: SmallVec::new(),
        }
    }

    pub(super) fn push(&mut self, effect: Effect) {
        self.effects.push(effect);
    }

    /// Whether the decision changes nothing.
    pub fn is_empty(&self) -> bool {
        self.effects.is_empty()
    }
}

impl Ledger {
    /// Performs a decision. Decides nothing: every write was decided by
    /// [`decide`](Ledger::decide) against this same state.
    pub fn commit(&mut self, decision: Decision, report: &mut Report) {
        let mut credits_sent = 0u32;
        for effect in decision.effects {
            match effect {
                Effect::Record {
                    hpan,
                    record,
                    spill,
                    citizen,
                    new_acquirer,
                    slot,
                } => {
                    if let Some(code) = new_acquirer {
                        self.intern_acquirer(code);
                    }
                    let card = self.card_no(&hpan);
                    let book = &mut self.books[card as usize];
                    let pos = book.payments.len() as u32;
                    if book.owners.last().map(|(_, c)| *c) != Some(citizen) {
                        book.owners.push((pos, citizen));
                        let cards = self.statement.entry(citizen).or_default();
                        if !cards.contains(&card) {
                            cards.push(card);
                        }
                    }
                    if let Some((merchant, period, day)) = slot {
                        book.take_slot(merchant, period, day);
                        self.slot_periods.insert(period);
                    }
                    super::record::push_compact(&mut book.payments, record);
                    if let Some(spill) = spill {
                        self.spills.insert((card, pos), spill);
                    }
                    report.payments += 1;
                }
                Effect::Balance { hpan, pos, balance } => {
                    let card = self.card_no(&hpan);
                    match self.spills.get_mut(&(card, pos)) {
                        Some(s) => s.balance = balance,
                        // Not spilled: the amount fits u32, so does what is left.
                        None => {
                            self.books[card as usize].payments[pos as usize].balance =
                                balance as u32
                        }
                    }
                }
                Effect::Unpark { hpan, seq } => {
                    let card = self.card_no(&hpan);
                    let book = &mut self.books[card as usize];
                    if let Some(r) = book.reversals.as_mut() {
                        if let Some(i) = r.parked.iter().position(|p| p.seq == seq) {
                            if let Some(gone) = r.parked.remove(i) {
                                let deadline = gone.broker_time.plus_secs(self.park_secs);
                                self.expiry.remove(&(deadline, seq, hpan));
                            }
                        }
                    }
                    book.tidy();
                }
                Effect::Park {
                    hpan,
                    reversal,
                    fresh,
                } => {
                    let card = self.card_no(&hpan);
                    let deadline = reversal.broker_time.plus_secs(self.park_secs);
                    self.expiry.insert((deadline, reversal.seq, hpan));
                    self.books[card as usize]
                        .reversals_mut()
                        .parked
                        .push_back(reversal);
                    if fresh {
                        report.reversals_parked += 1;
                    }
                }
                Effect::RememberReversal { hpan, key } => {
                    let card = self.card_no(&hpan);
                    let keys = &mut self.books[card as usize].reversals_mut().applied_keys;
                    super::record::push_compact(keys, key);
                    report.reversals_applied += 1;
                }
                Effect::Credit { delta, received } => {
                    if self.citizens.contains(delta.citizen) {
                        self.add(delta, report);
                    } else if received {
                        report.invariant_violations.push(format!(
                            "partition {} received a credit for citizen {}, who is not held here",
                            self.partition, delta.citizen
                        ));
                    } else {
                        report.credits.push(Credit {
                            id: CreditId {
                                seq: decision.seq,
                                index: credits_sent,
                                source: self.partition,
                            },
                            citizen: delta.citizen,
                            period: delta.period,
                            count: delta.count,
                            cashback: delta.cashback,
                            trx_date: delta.trx_date,
                        });
                        credits_sent += 1;
                    }
                }
                Effect::CreditTaken(id) => {
                    self.credits_taken.insert(id.source, id);
                }
                Effect::CreditRepeated => report.credits_repeated += 1,
                Effect::Reject(rejection) => report.rejections.push(rejection),
                Effect::Citizen(facts) => {
                    if facts.withdrawn {
                        report.changed.push((self.partition, facts.idx, None));
                    }
                    self.citizens.upsert(&facts);
                }
                Effect::Wallet(change) => self.wallets.apply(&change),
                Effect::Exclude {
                    hpan,
                    pos,
                    excluded,
                    audit,
                } => {
                    let card = self.card_no(&hpan);
                    self.books[card as usize].payments[pos as usize].set_excluded(excluded);
                    self.audit.push(audit);
                }
                Effect::Outcome(seq, op, outcome) => report.exclusions.push((seq, op, outcome)),
                Effect::DropSlots(period) => {
                    for book in &mut self.books {
                        if book.slots.iter().any(|s| s.period == period) {
                            book.slots.retain(|s: &MerchantSlot| s.period != period);
                            book.slots.shrink_to_fit();
                        }
                    }
                    self.slot_periods.remove(&period);
                }
                Effect::Violation(what) => report.invariant_violations.push(what),
            }
        }
    }

    /// Adds a change to a citizen held here. A count that would fall below
    /// zero is a broken invariant (a payment is credited before any credit
    /// that takes it back): it is reported, never silently clamped.
    fn add(&mut self, delta: Delta, report: &mut Report) {
        let mut broken = None;
        self.citizens
            .update(delta.citizen, delta.period, |standing| {
                let count = standing.count as i64 + delta.count as i64;
                standing.count = match u32::try_from(count) {
                    Ok(c) => c,
                    Err(_) => {
                        broken = Some(count);
                        if count < 0 {
                            0
                        } else {
                            u32::MAX
                        }
                    }
                };
                standing.cashback += delta.cashback;
                if let Some(t) = delta.trx_date {
                    standing.last_trx = Some(standing.last_trx.map_or(t, |l| l.max(t)));
                }
            });
        if let Some(count) = broken {
            report.invariant_violations.push(format!(
                "citizen {} of partition {} would have a count of {count} in period {}",
                delta.citizen, self.partition, delta.period
            ));
        }
        report.accrue(delta.period, delta.cashback);
        report
            .changed
            .push((self.partition, delta.citizen, Some(delta.period)));
    }
}
