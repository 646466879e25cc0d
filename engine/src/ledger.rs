//! The state of one partition: its citizens' counts and cashback per period,
//! and, for the cards anchored here, the payments kept for reversal matching
//! and the reversals waiting for their payment (RULES.md, "Reversals").
//!
//! Every change follows "decide, then commit": an item is first judged
//! against the state without touching it, and only then written with simple
//! inserts and additions. A panic while deciding therefore leaves the state
//! exactly as it was, which is what lets a supervised shard retry a message,
//! or set it aside, without losing or double-counting anything.

use crate::authorization::Hpan;
use crate::directory::CitizenIdx;
use crate::fasthash::FastMap;
use crate::item::{
    CitizenFacts, Credit, Item, LateRejection, PaymentItem, Report, Reversal, ReversalItem,
    Settled, StandingChange,
};
use crate::money::score;
use crate::period::{PeriodIdx, Periods};
use crate::reason::{Reason, Rejection};
use crate::time::Timestamp;
use rust_decimal::Decimal;
use smallvec::SmallVec;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

/// A citizen's totals in one period.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Standing {
    /// Payments that count (reversed to zero ones no longer do).
    pub count: u32,
    /// Sum of the scores of the payments, after reversals; uncapped.
    pub cashback: Decimal,
    /// Latest `trx_date` among the payments that counted; never moved back.
    pub last_trx: Option<Timestamp>,
}

/// A citizen of this partition.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct CitizenState {
    /// Identity and status as the directory last reported them.
    pub facts: CitizenFacts,
    /// Totals per period; most citizens have one or two periods.
    pub standings: SmallVec<[(PeriodIdx, Standing); 2]>,
}

impl CitizenState {
    /// The totals in `period` (zero when nothing counted there).
    pub fn standing(&self, period: PeriodIdx) -> Standing {
        self.standings
            .iter()
            .find(|(p, _)| *p == period)
            .map(|(_, s)| s.clone())
            .unwrap_or_default()
    }
}

/// One payment kept for reversal matching.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PaymentRecord {
    /// Arrival order, the last tie-break between candidates.
    pub seq: u64,
    /// First tie-break between candidates for a total reversal.
    pub trx_date: Timestamp,
    /// Original amount, cents.
    pub amount: u64,
    /// What is left after reversals, cents.
    pub balance: u64,
    /// Where it was paid (for total reversals without correlation id).
    pub terminal_key: u64,
    /// Its correlation id, hashed, if any.
    pub correlation_key: Option<u64>,
    /// Who it counted for.
    pub citizen: CitizenIdx,
    /// Which period it counted in.
    pub period: PeriodIdx,
    /// The acquirer's code (interned), for the statement.
    pub acquirer: Arc<str>,
    /// Wire circuit type, for the statement.
    pub circuit_type: u8,
    /// Wire operation type, for the statement.
    pub operation_type: u8,
}

/// One line of a citizen's statement (PROTOCOL.md, `cashback.query.transactions`).
#[derive(Clone, Debug, PartialEq, Eq)]
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
    /// The payment's current score.
    pub cashback: Decimal,
}

/// A card's book in its anchor partition.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct CardBook {
    /// Every payment that counted, in arrival order.
    pub payments: Vec<PaymentRecord>,
    /// Reversals that matched nothing yet, in arrival order.
    pub parked: VecDeque<Reversal>,
}

/// What deciding a reversal concluded.
enum Verdict {
    /// Apply to the payment at this index of the card's book.
    Apply(usize),
    /// Nothing matches: wait for the payment.
    Park,
    /// Matched, but refused.
    Reject(Rejection),
}

/// The state of one partition.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Ledger {
    /// The partition this ledger holds.
    partition: u16,
    /// Award periods, shared with the router (configuration, not state).
    #[serde(skip)]
    periods: Arc<Periods>,
    /// How long a reversal may wait for its payment, in seconds.
    park_secs: i64,
    /// Citizens of this partition.
    citizens: FastMap<CitizenIdx, CitizenState>,
    /// citizen_id -> number, for queries (derived).
    #[serde(skip)]
    by_id: HashMap<Arc<str>, CitizenIdx>,
    /// Cards anchored in this partition.
    cards: FastMap<Hpan, CardBook>,
    /// Parked reversals by deadline, so expiry never scans every card (derived).
    #[serde(skip)]
    expiry: BTreeSet<(Timestamp, u64, Hpan)>,
    /// Where each citizen's payments are among this partition's card books
    /// (card, position): a derived index for statements, rebuilt on restart.
    #[serde(skip)]
    statement: FastMap<CitizenIdx, Vec<(Hpan, u32)>>,
}

impl Ledger {
    /// An empty partition.
    pub fn new(partition: u16, periods: Arc<Periods>, park_days: u32) -> Ledger {
        Ledger {
            partition,
            periods,
            park_secs: park_days as i64 * 86_400,
            citizens: FastMap::default(),
            by_id: HashMap::new(),
            cards: FastMap::default(),
            expiry: BTreeSet::new(),
            statement: FastMap::default(),
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

    /// The citizen numbered `idx`, if held here.
    pub fn citizen(&self, idx: CitizenIdx) -> Option<&CitizenState> {
        self.citizens.get(&idx)
    }

    /// The citizen with this id, if held here.
    pub fn citizen_by_id(&self, id: &str) -> Option<&CitizenState> {
        self.by_id.get(id).and_then(|idx| self.citizens.get(idx))
    }

    /// A card's book, if anchored here.
    pub fn card(&self, hpan: &Hpan) -> Option<&CardBook> {
        self.cards.get(hpan)
    }

    /// Applies one item. `attempt` counts earlier tries of the same item
    /// that panicked; the fault-injection hook uses it.
    pub fn apply(&mut self, item: &Item, attempt: u8, report: &mut Report) {
        match item {
            Item::Payment(p) => {
                self.expire(p.now, report);
                if attempt < p.injected_panics {
                    panic!("injected fault in payment seq {}", p.seq);
                }
                self.record_payment(p, report);
            }
            Item::Reversal(r) => {
                self.expire(r.now, report);
                if attempt < r.injected_panics {
                    panic!("injected fault in reversal seq {}", r.reversal.seq);
                }
                self.reverse(r, report);
            }
            Item::Citizen(facts) => self.upsert_citizen(facts, report),
            Item::Credit(c) => self.credit(c.clone(), report),
            Item::Adopt { hpan, parked } => {
                let book = self.cards.entry(*hpan).or_default();
                for r in parked {
                    self.expiry
                        .insert((r.broker_time.plus_secs(self.park_secs), r.seq, *hpan));
                    book.parked.push_back(r.clone());
                }
            }
            Item::Tick(now) => self.expire(*now, report),
        }
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
            let Some(c) = self.citizens.get(&idx) else {
                continue;
            };
            let periods: SmallVec<[PeriodIdx; 2]> = match period {
                Some(p) => smallvec::smallvec![p],
                None => c.standings.iter().map(|(p, _)| *p).collect(),
            };
            for p in periods {
                if seen.insert((idx, p)) {
                    out.push(StandingChange {
                        citizen: idx,
                        period: p,
                        id: c.facts.id.clone(),
                        tc_accepted_at: c.facts.tc_accepted_at,
                        withdrawn: c.facts.withdrawn,
                        standing: c.standing(p),
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
        let Some(index) = self.statement.get(&citizen) else {
            return;
        };
        let p = self.periods.get(period);
        for (hpan, pos) in index {
            let Some(r) = self
                .cards
                .get(hpan)
                .and_then(|b| b.payments.get(*pos as usize))
            else {
                continue;
            };
            if r.period != period || r.citizen != citizen {
                continue;
            }
            out.push(StatementLine {
                trx_date: r.trx_date,
                seq: r.seq,
                acquirer: r.acquirer.clone(),
                circuit_type: r.circuit_type,
                operation_type: r.operation_type,
                amount: r.amount,
                balance: r.balance,
                cashback: score(r.balance, p.cashback_rate, p.max_cashback_per_transaction),
            });
        }
    }

    /// Makes a ledger loaded from a snapshot whole: the configuration it does
    /// not carry, its derived indexes, and one shared copy of each acquirer
    /// code (a snapshot stores each payment's copy).
    pub fn restore(&mut self, periods: Arc<Periods>) {
        self.periods = periods;
        let mut interned: HashMap<Arc<str>, Arc<str>> = HashMap::new();
        for book in self.cards.values_mut() {
            for p in &mut book.payments {
                let shared = interned
                    .entry(p.acquirer.clone())
                    .or_insert_with(|| p.acquirer.clone());
                p.acquirer = shared.clone();
            }
        }
        self.rebuild_indexes();
    }

    /// Every citizen's standing in every period, to rebuild the ranking.
    pub fn all_standings(&self, out: &mut Vec<StandingChange>) {
        self.standing_changes(self.citizens.keys().map(|idx| (*idx, None)), out);
    }

    /// Rebuilds what is derived from the primary state (the expiry index and
    /// the id index). Called when a supervised shard restarts, so a restart
    /// never trusts an index that a panic may have left half-written.
    pub fn rebuild_indexes(&mut self) {
        self.expiry = self
            .cards
            .iter()
            .flat_map(|(h, b)| {
                b.parked
                    .iter()
                    .map(|r| (r.broker_time.plus_secs(self.park_secs), r.seq, *h))
            })
            .collect();
        self.by_id = self
            .citizens
            .iter()
            .map(|(idx, c)| (c.facts.id.clone(), *idx))
            .collect();
        self.statement.clear();
        for (hpan, book) in &self.cards {
            for (pos, p) in book.payments.iter().enumerate() {
                self.statement
                    .entry(p.citizen)
                    .or_default()
                    .push((*hpan, pos as u32));
            }
        }
    }

    fn upsert_citizen(&mut self, facts: &CitizenFacts, report: &mut Report) {
        if facts.withdrawn {
            report.changed.push((self.partition, facts.idx, None));
        }
        self.by_id.insert(facts.id.clone(), facts.idx);
        self.citizens
            .entry(facts.idx)
            .and_modify(|c| c.facts = facts.clone())
            .or_insert_with(|| CitizenState {
                facts: facts.clone(),
                standings: SmallVec::new(),
            });
    }

    /// Adds a credit to a citizen held here, or passes it on.
    fn credit(&mut self, c: Credit, report: &mut Report) {
        let Some(citizen) = self.citizens.get_mut(&c.citizen) else {
            report.credits.push(c);
            return;
        };
        let standing = match citizen
            .standings
            .iter_mut()
            .position(|(p, _)| *p == c.period)
        {
            Some(i) => &mut citizen.standings[i].1,
            None => {
                citizen.standings.push((c.period, Standing::default()));
                &mut citizen.standings.last_mut().expect("just pushed").1
            }
        };
        standing.count = (standing.count as i64 + c.count as i64).max(0) as u32;
        standing.cashback += c.cashback;
        report.accrue(c.period, c.cashback);
        if let Some(t) = c.trx_date {
            standing.last_trx = Some(standing.last_trx.map_or(t, |l| l.max(t)));
        }
        report
            .changed
            .push((self.partition, c.citizen, Some(c.period)));
    }

    fn record_payment(&mut self, p: &PaymentItem, report: &mut Report) {
        let period = self.periods.get(p.period);
        let earned = score(
            p.amount,
            period.cashback_rate,
            period.max_cashback_per_transaction,
        );
        let book = self.cards.entry(p.hpan).or_default();
        self.statement
            .entry(p.citizen)
            .or_default()
            .push((p.hpan, book.payments.len() as u32));
        book.payments.push(PaymentRecord {
            seq: p.seq,
            trx_date: p.trx_date,
            amount: p.amount,
            balance: p.amount,
            terminal_key: p.terminal_key,
            correlation_key: p.correlation_key,
            citizen: p.citizen,
            period: p.period,
            acquirer: p.acquirer.clone(),
            circuit_type: p.circuit_type,
            operation_type: p.operation_type,
        });
        report.payments += 1;
        self.credit(
            Credit {
                citizen: p.citizen,
                period: p.period,
                count: 1,
                cashback: earned,
                trx_date: Some(p.trx_date),
            },
            report,
        );
        self.release_parked(&p.hpan, p.broker_time, &p.withdrawn, report);
    }

    /// After a payment arrives, tries the card's parked reversals in arrival
    /// order, each by the ordinary rules.
    fn release_parked(
        &mut self,
        hpan: &Hpan,
        broker_time: Timestamp,
        withdrawn: &[CitizenIdx],
        report: &mut Report,
    ) {
        let Some(book) = self.cards.get(hpan) else {
            return;
        };
        if book.parked.is_empty() {
            return;
        }
        let mut i = 0;
        while i < self.cards[hpan].parked.len() {
            let book = &self.cards[hpan];
            let r = &book.parked[i];
            match self.decide(book, r, broker_time, withdrawn) {
                Verdict::Park => i += 1,
                verdict => {
                    let r = self
                        .cards
                        .get_mut(hpan)
                        .and_then(|b| b.parked.remove(i))
                        .expect("index checked");
                    self.expiry
                        .remove(&(r.broker_time.plus_secs(self.park_secs), r.seq, *hpan));
                    self.commit_verdict(hpan, r, verdict, report);
                }
            }
        }
    }

    fn reverse(&mut self, item: &ReversalItem, report: &mut Report) {
        let r = &item.reversal;
        let book = self.cards.get(&item.hpan);
        let verdict = match book {
            Some(book) => self.decide(book, r, r.broker_time, &item.withdrawn),
            None => Verdict::Park,
        };
        let waiting = book.map_or(0, |b| b.parked.len());
        let verdict = match verdict {
            Verdict::Park if waiting >= item.park_room => Verdict::Reject(Rejection::new(
                Reason::UnmatchedReversal,
                if item.park_room == 0 {
                    "no payment matched the reversal, and the engine's limit of waiting reversals is reached".to_owned()
                } else {
                    format!(
                            "no payment matched the reversal, and the card already has {waiting} reversals waiting (the limit)"
                        )
                },
            )),
            verdict => verdict,
        };
        self.commit_verdict(&item.hpan, r.clone(), verdict, report);
    }

    /// Judges a reversal against the card's payments without changing anything.
    fn decide(
        &self,
        book: &CardBook,
        r: &Reversal,
        broker_time: Timestamp,
        withdrawn: &[CitizenIdx],
    ) -> Verdict {
        let candidates =
            book.payments
                .iter()
                .enumerate()
                .filter(|(_, p)| match r.correlation_key {
                    Some(k) => p.correlation_key == Some(k),
                    None => p.terminal_key == r.terminal_key && p.balance == r.amount,
                });
        let Some((idx, p)) = candidates.min_by_key(|(_, p)| (p.trx_date, p.seq)) else {
            return Verdict::Park;
        };
        if withdrawn.contains(&p.citizen) {
            return Verdict::Reject(Rejection::new(
                Reason::CitizenWithdrawn,
                "the payment's citizen has withdrawn",
            ));
        }
        if !self.periods.accepts_data(p.period, broker_time) {
            return Verdict::Reject(Rejection::new(
                Reason::PeriodClosed,
                format!(
                    "award period {} of the payment no longer accepts data",
                    self.periods.get(p.period).id
                ),
            ));
        }
        if r.amount > p.balance {
            return Verdict::Reject(Rejection::new(
                Reason::ReversalExceedsOriginal,
                format!(
                    "reversal of {} cents exceeds the payment's remaining {} cents",
                    r.amount, p.balance
                ),
            ));
        }
        Verdict::Apply(idx)
    }

    fn commit_verdict(&mut self, hpan: &Hpan, r: Reversal, verdict: Verdict, report: &mut Report) {
        match verdict {
            Verdict::Park => {
                let deadline = r.broker_time.plus_secs(self.park_secs);
                self.expiry.insert((deadline, r.seq, *hpan));
                report.settled.push(Settled::Parked {
                    key: r.key,
                    deadline,
                    partition: self.partition,
                });
                report.reversals_parked += 1;
                self.cards.entry(*hpan).or_default().parked.push_back(r);
            }
            Verdict::Reject(rejection) => {
                report.settled.push(Settled::Forget(r.key));
                report.rejections.push(LateRejection {
                    seq: r.seq,
                    rejection,
                    origin: Some(r.origin),
                });
            }
            Verdict::Apply(idx) => {
                let book = self.cards.get_mut(hpan).expect("matched in this book");
                let p = &mut book.payments[idx];
                let period = self.periods.get(p.period);
                let (rate, cap) = (period.cashback_rate, period.max_cashback_per_transaction);
                let before = score(p.balance, rate, cap);
                p.balance -= r.amount;
                let after = score(p.balance, rate, cap);
                let credit = Credit {
                    citizen: p.citizen,
                    period: p.period,
                    count: if p.balance == 0 { -1 } else { 0 },
                    cashback: after - before,
                    trx_date: None,
                };
                report.settled.push(Settled::Remember(r.key));
                report.reversals_applied += 1;
                self.credit(credit, report);
            }
        }
    }

    /// Rejects every parked reversal whose wait ended at or before `now`. The
    /// router forgets their keys by itself at the same instant.
    fn expire(&mut self, now: Timestamp, report: &mut Report) {
        while let Some(&(deadline, seq, hpan)) = self.expiry.first() {
            if deadline > now {
                break;
            }
            self.expiry.pop_first();
            let Some(book) = self.cards.get_mut(&hpan) else {
                continue;
            };
            let Some(pos) = book.parked.iter().position(|r| r.seq == seq) else {
                continue;
            };
            let r = book.parked.remove(pos).expect("position found");
            report.rejections.push(LateRejection {
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
    }
}
