//! A card's book in its anchor partition: its payments, who they counted
//! for, the de-duplication keys of its reversals, the reversals waiting for
//! their payment, and its split-payment slots.

use super::record::{push_compact, PaymentRecord};
use crate::directory::CitizenIdx;
use crate::item::Reversal;
use crate::period::PeriodIdx;
use smallvec::SmallVec;
use std::collections::VecDeque;

/// How many payments of the card counted at one shop on one day of a period
/// (RULES.md, "Split payments"): 12 bytes per card, shop and day that has
/// payments, and only in periods that set a limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MerchantSlot {
    /// `Authorization::merchant_key` folded to 32 bits (see
    /// `record::fold_key`): compared only among one card's payments of one
    /// day, where a collision would take about 2^32 shops.
    pub merchant: u32,
    /// The period.
    pub period: PeriodIdx,
    /// The Rome day within the period (`Periods::day_in`).
    pub day: u16,
    /// Payments that took a slot.
    pub count: u16,
}

/// What few cards have: reversals applied or waiting. Boxed apart so that
/// the common card (payments only) does not pay two empty collections.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Reversals {
    /// De-duplication keys of the reversals applied to this card's payments
    /// (a parked reversal's key is in `parked`).
    pub applied_keys: Vec<u64>,
    /// Reversals that matched nothing yet, in arrival order.
    pub parked: VecDeque<Reversal>,
}

/// A card's book.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct CardBook {
    /// Every payment that counted, in arrival order: the position is the
    /// tie-break "the one that arrived first" among this card's payments.
    pub payments: Vec<PaymentRecord>,
    /// Who each payment counted for, as runs: (first position, citizen),
    /// ascending; a run lasts until the next one starts. A card has one
    /// owner at a time, so this is almost always one entry, instead of 4
    /// bytes in every payment.
    pub owners: SmallVec<[(u32, CitizenIdx); 1]>,
    /// Split-payment slots, unordered (a card has a few per day).
    pub slots: Vec<MerchantSlot>,
    /// Reversals applied or waiting, if any.
    pub reversals: Option<Box<Reversals>>,
}

impl CardBook {
    /// The citizen the payment at `pos` counted for; `pos` may be the
    /// position of a payment being decided (one past the end), which
    /// belongs to the last run or to `next_owner`.
    pub fn owner_at(&self, pos: u32) -> Option<CitizenIdx> {
        let run = self.owners.partition_point(|(start, _)| *start <= pos);
        run.checked_sub(1).map(|r| self.owners[r].1)
    }

    /// The positions of the payments that counted for `citizen`.
    pub fn positions_of(&self, citizen: CitizenIdx) -> impl Iterator<Item = u32> + '_ {
        let len = self.payments.len() as u32;
        self.owners
            .iter()
            .enumerate()
            .filter(move |(_, (_, c))| *c == citizen)
            .flat_map(move |(i, (start, _))| {
                let end = self.owners.get(i + 1).map_or(len, |(next, _)| *next);
                *start..end
            })
    }

    /// Reversals waiting, in arrival order.
    pub fn parked(&self) -> impl Iterator<Item = &Reversal> + '_ {
        self.reversals.iter().flat_map(|r| r.parked.iter())
    }

    /// How many reversals wait.
    pub fn parked_len(&self) -> usize {
        self.reversals.as_ref().map_or(0, |r| r.parked.len())
    }

    /// Whether `key` belongs to a payment that counted, a reversal that was
    /// applied, or a reversal still waiting and not in `expiring` (those
    /// being rejected now, whose keys are forgotten: RULES.md check 2).
    pub fn knows_key(&self, key: u64, expiring: &[u64]) -> bool {
        self.payments.iter().any(|p| p.key() == key)
            || self.reversals.as_ref().is_some_and(|r| {
                r.applied_keys.contains(&key)
                    || r.parked
                        .iter()
                        .any(|p| p.key == key && !expiring.contains(&p.seq))
            })
    }

    /// The slot count of a shop on a day.
    pub fn slot_count(&self, merchant: u32, period: PeriodIdx, day: u16) -> u16 {
        self.slots
            .iter()
            .find(|s| s.merchant == merchant && s.period == period && s.day == day)
            .map_or(0, |s| s.count)
    }

    /// Takes one slot of a shop on a day.
    pub fn take_slot(&mut self, merchant: u32, period: PeriodIdx, day: u16) {
        match self
            .slots
            .iter_mut()
            .find(|s| s.merchant == merchant && s.period == period && s.day == day)
        {
            Some(s) => s.count = s.count.saturating_add(1),
            None => push_compact(
                &mut self.slots,
                MerchantSlot {
                    merchant,
                    period,
                    day,
                    count: 1,
                },
            ),
        }
    }

    /// The reversal-side collections, created on first use.
    pub fn reversals_mut(&mut self) -> &mut Reversals {
        self.reversals.get_or_insert_with(Default::default)
    }

    /// Drops the reversal-side collections once both are empty.
    pub fn tidy(&mut self) {
        if self
            .reversals
            .as_ref()
            .is_some_and(|r| r.applied_keys.is_empty() && r.parked.is_empty())
        {
            self.reversals = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_book_and_a_slot_stay_small() {
        // Payments, owners, slots and one pointer: the common card holds no
        // reversal collections at all.
        assert!(std::mem::size_of::<CardBook>() <= 80);
        assert_eq!(std::mem::size_of::<MerchantSlot>(), 12);
    }

    #[test]
    fn slots_count_per_shop_day_and_period() {
        let mut b = CardBook::default();
        b.take_slot(1, 0, 5);
        b.take_slot(1, 0, 5);
        b.take_slot(2, 0, 5);
        b.take_slot(1, 0, 6);
        b.take_slot(1, 1, 5);
        assert_eq!(b.slot_count(1, 0, 5), 2);
        assert_eq!(b.slot_count(2, 0, 5), 1);
        assert_eq!(b.slot_count(1, 0, 6), 1);
        assert_eq!(b.slot_count(1, 1, 5), 1);
        assert_eq!(b.slot_count(3, 0, 5), 0);
    }
}
