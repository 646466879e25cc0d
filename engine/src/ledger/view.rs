//! A card's payments as a decision sees them: the book as committed, plus
//! what the decision has already decided but not committed (a payment being
//! recorded, balances lowered by reversals it releases). Why: a payment
//! releases its card's parked reversals as one chain, each judged against
//! the effects of the ones before, and all of it must be decided before
//! anything is written (decide, then commit).

use super::record::{fold_key, NewPayment};
use super::Ledger;
use crate::directory::CitizenIdx;
use crate::period::PeriodIdx;
use crate::time::Timestamp;
use smallvec::SmallVec;

/// The pending payment at the end of the book.
#[derive(Clone, Debug)]
pub(super) struct Pending {
    /// The payment.
    pub payment: NewPayment,
    /// Who it counts for.
    pub citizen: CitizenIdx,
}

/// A card's payments, committed and pending.
pub(super) struct View<'a> {
    /// The state.
    ledger: &'a Ledger,
    /// The card's number, if it has a book yet.
    card: Option<u32>,
    /// Payments in the book.
    committed: u32,
    /// A payment decided but not committed: position `committed`.
    pending: Option<&'a Pending>,
    /// Balances decided but not committed, by position (latest last).
    balances: SmallVec<[(u32, u64); 2]>,
}

impl<'a> View<'a> {
    /// The card's payments as committed, plus `pending`.
    pub fn new(ledger: &'a Ledger, card: Option<u32>, pending: Option<&'a Pending>) -> View<'a> {
        View {
            ledger,
            card,
            committed: card.map_or(0, |c| ledger.books[c as usize].payments.len() as u32),
            pending,
            balances: SmallVec::new(),
        }
    }

    /// Records a balance decided by an earlier step of the same decision.
    pub fn set_balance(&mut self, pos: u32, balance: u64) {
        self.balances.push((pos, balance));
    }

    /// How many payments.
    pub fn len(&self) -> u32 {
        self.committed + self.pending.is_some() as u32
    }

    fn pending_at(&self, pos: u32) -> Option<&'a Pending> {
        self.pending.filter(|_| pos == self.committed)
    }

    fn committed_at(&self, pos: u32) -> (u32, u32) {
        (self.card.expect("a committed position has a book"), pos)
    }

    /// The folded terminal key.
    pub fn terminal(&self, pos: u32) -> u32 {
        match self.pending_at(pos) {
            Some(p) => fold_key(p.payment.terminal_key),
            None => {
                let (c, p) = self.committed_at(pos);
                self.ledger.books[c as usize].payments[p as usize].terminal
            }
        }
    }

    /// The folded correlation key, 0 when absent.
    pub fn correlation(&self, pos: u32) -> u32 {
        match self.pending_at(pos) {
            Some(p) => p.payment.correlation_key.map_or(0, fold_key),
            None => {
                let (c, p) = self.committed_at(pos);
                self.ledger.books[c as usize].payments[p as usize].correlation
            }
        }
    }

    /// What is left after reversals, cents, as decided so far.
    pub fn balance(&self, pos: u32) -> u64 {
        if let Some(&(_, b)) = self.balances.iter().rev().find(|(p, _)| *p == pos) {
            return b;
        }
        match self.pending_at(pos) {
            Some(p) => p.payment.amount,
            None => {
                let (c, p) = self.committed_at(pos);
                self.ledger.balance(c, p)
            }
        }
    }

    /// When the card was used.
    pub fn trx_date(&self, pos: u32) -> Timestamp {
        match self.pending_at(pos) {
            Some(p) => p.payment.trx_date,
            None => {
                let (c, p) = self.committed_at(pos);
                self.ledger.trx_date(c, p)
            }
        }
    }

    /// Arrival order.
    pub fn seq(&self, pos: u32) -> u64 {
        match self.pending_at(pos) {
            Some(p) => p.payment.seq,
            None => {
                let (c, p) = self.committed_at(pos);
                self.ledger.seq(c, p)
            }
        }
    }

    /// Who it counted for.
    pub fn citizen(&self, pos: u32) -> CitizenIdx {
        match self.pending_at(pos) {
            Some(p) => p.citizen,
            None => {
                let (c, p) = self.committed_at(pos);
                self.ledger.owner(c, p)
            }
        }
    }

    /// The period it counted in.
    pub fn period(&self, pos: u32) -> PeriodIdx {
        match self.pending_at(pos) {
            Some(p) => p.payment.period,
            None => {
                let (c, p) = self.committed_at(pos);
                self.ledger.period(c, p)
            }
        }
    }

    /// Whether an operator excluded it (a pending payment never is).
    pub fn excluded(&self, pos: u32) -> bool {
        match self.pending_at(pos) {
            Some(_) => false,
            None => {
                let (c, p) = self.committed_at(pos);
                self.ledger.books[c as usize].payments[p as usize].excluded()
            }
        }
    }
}
