//! The citizens of one partition: each one's summary packed into 64 bytes
//! (issue 4: at most 64 bytes per citizen summary; there are 8.4 million of
//! them), with their identity kept beside it.
//!
//! A summary holds what counting and ranking need: the T&C time (the
//! ranking's tie-break), the withdrawn flag, and the totals of up to two
//! award periods (a programme runs a semester at a time, and a citizen's
//! payments near a boundary touch at most two). Values are packed exactly:
//! times as i64 nanoseconds, cashback as i64 cents (every score is rounded
//! to cents, so every sum of scores is a whole number of cents).
//!
//! Anything that does not pack (a third period, a time outside 1677-2262, a
//! cashback that is not whole cents) goes to the *overflow* side table with
//! its exact value. Nothing is ever rounded; the table is normally empty.

use crate::directory::CitizenIdx;
use crate::fasthash::FastMap;
use crate::period::PeriodIdx;
use crate::standing::{CitizenFacts, Standing};
use crate::time::Timestamp;
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use smallvec::SmallVec;
use std::collections::HashMap;
use std::sync::Arc;

/// A period's totals, packed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Slot {
    /// Latest counted `trx_date`, i64 nanoseconds; [`NO_TRX`] for none.
    last_trx: i64,
    /// Cashback after reversals, cents.
    cashback_cents: i64,
    /// Payments that count.
    count: u32,
    /// Which period; [`FREE`] when the slot is unused.
    period: PeriodIdx,
}

/// `Slot::period` of an unused slot (never a period's index: `Periods::new`
/// refuses more than 65,535 periods, so indexes stop at 65,534).
const FREE: PeriodIdx = PeriodIdx::MAX;
/// `Slot::last_trx` when nothing counted yet.
const NO_TRX: i64 = i64::MIN;
/// `CitizenSummary::flags`: the citizen has withdrawn.
const WITHDRAWN: u8 = 1;
/// `CitizenSummary::flags`: `tc_accepted_at` is in the overflow table.
const TC_OVERFLOW: u8 = 2;

const EMPTY_SLOT: Slot = Slot {
    last_trx: NO_TRX,
    cashback_cents: 0,
    count: 0,
    period: FREE,
};

impl Slot {
    /// Packs `standing` for `period`, if every value fits exactly.
    fn pack(period: PeriodIdx, standing: &Standing) -> Option<Slot> {
        let last_trx = match standing.last_trx {
            None => NO_TRX,
            Some(t) => i64::try_from(t.unix_nanos())
                .ok()
                .filter(|n| *n != NO_TRX)?,
        };
        Some(Slot {
            last_trx,
            cashback_cents: cents(standing.cashback)?,
            count: standing.count,
            period,
        })
    }

    fn unpack(&self) -> Standing {
        Standing {
            count: self.count,
            cashback: Decimal::new(self.cashback_cents, 2),
            last_trx: (self.last_trx != NO_TRX)
                .then(|| Timestamp::from_unix_nanos(self.last_trx as i128)),
        }
    }
}

/// `value` in whole cents, if it is a whole number of cents that fits i64.
fn cents(value: Decimal) -> Option<i64> {
    let c = value.checked_mul(Decimal::ONE_HUNDRED)?;
    if c.fract().is_zero() {
        c.to_i64()
    } else {
        None
    }
}

/// One citizen's summary: 64 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CitizenSummary {
    /// `tc_accepted_at`, i64 nanoseconds (see [`TC_OVERFLOW`]).
    tc_accepted_at: i64,
    /// Totals of up to two periods.
    slots: [Slot; 2],
    /// [`WITHDRAWN`], [`TC_OVERFLOW`].
    flags: u8,
}

/// Who a summary belongs to. Apart from the summary because the id and the
/// IBAN are strings (64 and 27 characters), shared with the directory.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Identity {
    /// The citizen's number.
    idx: CitizenIdx,
    /// The public id, for queries and position pushes.
    id: Arc<str>,
    /// For the payout file.
    iban: Arc<str>,
}

/// What a summary cannot hold. Normally no citizen has one.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
struct Overflow {
    /// `tc_accepted_at` outside i64 nanoseconds.
    tc_accepted_at: Option<Timestamp>,
    /// Totals of periods that found no slot or did not pack.
    standings: Vec<(PeriodIdx, Standing)>,
}

/// The citizens of one partition.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Citizens {
    /// Summaries, by slot number (the order citizens arrived in).
    summaries: Vec<CitizenSummary>,
    /// Identities, by the same slot number.
    identities: Vec<Identity>,
    /// What did not pack, by slot number.
    overflow: FastMap<u32, Overflow>,
    /// Citizen number -> slot (derived).
    #[serde(skip)]
    slot_of: FastMap<CitizenIdx, u32>,
    /// Public id -> slot, for queries (derived).
    #[serde(skip)]
    by_id: HashMap<Arc<str>, u32>,
}

impl Citizens {
    /// How many.
    pub fn len(&self) -> usize {
        self.summaries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.summaries.is_empty()
    }

    /// Whether citizen `idx` is held here.
    pub fn contains(&self, idx: CitizenIdx) -> bool {
        self.slot_of.contains_key(&idx)
    }

    /// The number of the citizen with this public id, if held here.
    pub fn idx_by_id(&self, id: &str) -> Option<CitizenIdx> {
        self.by_id.get(id).map(|s| self.identities[*s as usize].idx)
    }

    /// Every citizen held here, by number, in arrival order.
    pub fn numbers(&self) -> impl Iterator<Item = CitizenIdx> + '_ {
        self.identities.iter().map(|i| i.idx)
    }

    /// Records a citizen, or their new facts (IBAN, withdrawal).
    pub fn upsert(&mut self, facts: &CitizenFacts) {
        let slot = match self.slot_of.get(&facts.idx) {
            Some(&s) => s,
            None => {
                let s = u32::try_from(self.summaries.len())
                    .expect("fewer than 2^32 citizens per partition");
                self.summaries.push(CitizenSummary {
                    tc_accepted_at: 0,
                    slots: [EMPTY_SLOT; 2],
                    flags: 0,
                });
                self.identities.push(Identity {
                    idx: facts.idx,
                    id: facts.id.clone(),
                    iban: facts.iban.clone(),
                });
                self.slot_of.insert(facts.idx, s);
                s
            }
        };
        let identity = &mut self.identities[slot as usize];
        if identity.id != facts.id {
            self.by_id.remove(&identity.id);
            identity.id = facts.id.clone();
        }
        // A withdrawal carries no IBAN (the directory keeps none): keep ours.
        if !facts.iban.is_empty() {
            identity.iban = facts.iban.clone();
        }
        self.by_id.insert(facts.id.clone(), slot);
        let tc = i64::try_from(facts.tc_accepted_at.unix_nanos()).ok();
        let summary = &mut self.summaries[slot as usize];
        summary.tc_accepted_at = tc.unwrap_or(0);
        summary.flags = if facts.withdrawn { WITHDRAWN } else { 0 };
        if tc.is_none() {
            summary.flags |= TC_OVERFLOW;
        }
        match tc {
            Some(_) => {
                if let Some(o) = self.overflow.get_mut(&slot) {
                    o.tc_accepted_at = None;
                }
            }
            None => {
                self.overflow.entry(slot).or_default().tc_accepted_at = Some(facts.tc_accepted_at);
            }
        }
        self.drop_empty_overflow(slot);
    }

    /// The citizen's identity and status, if held here.
    pub fn facts(&self, idx: CitizenIdx) -> Option<CitizenFacts> {
        let slot = *self.slot_of.get(&idx)?;
        let summary = &self.summaries[slot as usize];
        let identity = &self.identities[slot as usize];
        let tc_accepted_at = if summary.flags & TC_OVERFLOW != 0 {
            self.overflow[&slot]
                .tc_accepted_at
                .expect("flagged, so in the overflow table")
        } else {
            Timestamp::from_unix_nanos(summary.tc_accepted_at as i128)
        };
        Some(CitizenFacts {
            idx,
            id: identity.id.clone(),
            iban: identity.iban.clone(),
            tc_accepted_at,
            withdrawn: summary.flags & WITHDRAWN != 0,
        })
    }

    /// The periods the citizen has totals in, slots first.
    pub fn periods(&self, idx: CitizenIdx) -> SmallVec<[PeriodIdx; 2]> {
        let Some(&slot) = self.slot_of.get(&idx) else {
            return SmallVec::new();
        };
        let mut out: SmallVec<[PeriodIdx; 2]> = self.summaries[slot as usize]
            .slots
            .iter()
            .filter(|s| s.period != FREE)
            .map(|s| s.period)
            .collect();
        if let Some(o) = self.overflow.get(&slot) {
            out.extend(o.standings.iter().map(|(p, _)| *p));
        }
        out
    }

    /// The citizen's totals in `period` (zero when nothing counted there),
    /// if the citizen is held here.
    pub fn standing(&self, idx: CitizenIdx, period: PeriodIdx) -> Option<Standing> {
        let slot = *self.slot_of.get(&idx)?;
        Some(self.standing_at(slot, period))
    }

    fn standing_at(&self, slot: u32, period: PeriodIdx) -> Standing {
        if let Some(s) = self.summaries[slot as usize]
            .slots
            .iter()
            .find(|s| s.period == period)
        {
            return s.unpack();
        }
        self.overflow
            .get(&slot)
            .and_then(|o| o.standings.iter().find(|(p, _)| *p == period))
            .map(|(_, s)| s.clone())
            .unwrap_or_default()
    }

    /// Changes the citizen's totals in `period` with `change`; false (and
    /// nothing changed) when the citizen is not held here.
    pub fn update(
        &mut self,
        idx: CitizenIdx,
        period: PeriodIdx,
        change: impl FnOnce(&mut Standing),
    ) -> bool {
        let Some(&slot) = self.slot_of.get(&idx) else {
            return false;
        };
        let mut standing = self.standing_at(slot, period);
        change(&mut standing);
        self.store(slot, period, standing);
        true
    }

    /// Writes `standing` where it belongs: its slot if it has one and packs,
    /// a free slot if it packs, the overflow table otherwise. A period is in
    /// exactly one place at any time.
    fn store(&mut self, slot: u32, period: PeriodIdx, standing: Standing) {
        let packed = Slot::pack(period, &standing);
        let overflowed = self.in_overflow(slot, period);
        let slots = &mut self.summaries[slot as usize].slots;
        let home = slots.iter().position(|s| s.period == period);
        let free = slots.iter().position(|s| s.period == FREE);
        match (packed, home, free) {
            (Some(p), Some(i), _) => slots[i] = p,
            (None, Some(i), _) => {
                slots[i] = EMPTY_SLOT;
                self.overflow_put(slot, period, standing);
            }
            (Some(p), None, Some(i)) if !overflowed => slots[i] = p,
            _ => self.overflow_put(slot, period, standing),
        }
    }

    fn in_overflow(&self, slot: u32, period: PeriodIdx) -> bool {
        self.overflow
            .get(&slot)
            .is_some_and(|o| o.standings.iter().any(|(p, _)| *p == period))
    }

    fn overflow_put(&mut self, slot: u32, period: PeriodIdx, standing: Standing) {
        let o = self.overflow.entry(slot).or_default();
        match o.standings.iter_mut().find(|(p, _)| *p == period) {
            Some((_, s)) => *s = standing,
            None => o.standings.push((period, standing)),
        }
    }

    fn drop_empty_overflow(&mut self, slot: u32) {
        if self
            .overflow
            .get(&slot)
            .is_some_and(|o| o.tc_accepted_at.is_none() && o.standings.is_empty())
        {
            self.overflow.remove(&slot);
        }
    }

    /// Rebuilds the derived indexes (after loading from a snapshot).
    pub fn rebuild_indexes(&mut self) {
        self.slot_of = self
            .identities
            .iter()
            .enumerate()
            .map(|(s, i)| (i.idx, s as u32))
            .collect();
        self.by_id = self
            .identities
            .iter()
            .enumerate()
            .map(|(s, i)| (i.id.clone(), s as u32))
            .collect();
    }

    /// How many citizens have something in the overflow table.
    pub fn overflowed(&self) -> usize {
        self.overflow.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn facts(idx: CitizenIdx, tc: Timestamp) -> CitizenFacts {
        CitizenFacts {
            idx,
            id: format!("c{idx}").into(),
            iban: "IT60X0542811101000000123456".into(),
            tc_accepted_at: tc,
            withdrawn: false,
        }
    }

    fn ts(s: &str) -> Timestamp {
        Timestamp::parse_rfc3339(s).unwrap()
    }

    #[test]
    fn a_summary_is_64_bytes() {
        assert_eq!(std::mem::size_of::<CitizenSummary>(), 64);
    }

    #[test]
    fn what_does_not_pack_overflows_exactly_and_comes_back() {
        let mut c = Citizens::default();
        let far = Timestamp::from_unix_nanos(i64::MAX as i128 + 1);
        c.upsert(&facts(7, far));
        assert_eq!(c.facts(7).unwrap().tc_accepted_at, far);
        let t = ts("2021-03-01T10:00:00.123456789Z");
        // Three periods: two slots, then the overflow table.
        for p in 0..3 {
            assert!(c.update(7, p, |s| {
                s.count += 1 + p as u32;
                s.cashback += Decimal::from_str("1.25").unwrap();
                s.last_trx = Some(t);
            }));
        }
        // A cashback that is not whole cents cannot pack: it moves out of
        // its slot, exactly.
        let odd = Decimal::from_str("0.005").unwrap();
        c.update(7, 0, |s| s.cashback += odd);
        assert_eq!(c.standing(7, 0).unwrap().cashback.to_string(), "1.255");
        assert_eq!(c.standing(7, 2).unwrap().count, 3);
        assert_eq!(c.standing(7, 1).unwrap().last_trx, Some(t));
        let mut periods = c.periods(7).to_vec();
        periods.sort();
        assert_eq!(periods, vec![0, 1, 2]);
        // Back to whole cents: period 0 stays in the overflow table (its
        // slot went to no one else), still exact.
        c.update(7, 0, |s| s.cashback -= odd);
        assert_eq!(
            c.standing(7, 0).unwrap().cashback,
            Decimal::from_str("1.25").unwrap()
        );
        // Ordinary values back in range: the flag and the table clear.
        c.upsert(&facts(7, t));
        assert_eq!(c.facts(7).unwrap().tc_accepted_at, t);
        assert_eq!(c.overflowed(), 1, "periods 0 and 2 are still there");
        // A snapshot round trip keeps all of it.
        let mut back: Citizens = bincode::deserialize(&bincode::serialize(&c).unwrap()).unwrap();
        back.rebuild_indexes();
        for p in 0..3 {
            assert_eq!(back.standing(7, p), c.standing(7, p));
        }
        assert_eq!(back.idx_by_id("c7"), Some(7));
        assert_eq!(back.facts(7).unwrap().tc_accepted_at, t);
    }

    #[test]
    fn standings_round_trip_through_slots() {
        let mut c = Citizens::default();
        c.upsert(&facts(1, ts("2020-12-08T09:00:00+01:00")));
        assert_eq!(c.standing(1, 0), Some(Standing::default()));
        assert_eq!(c.standing(2, 0), None);
        assert!(!c.update(2, 0, |s| s.count += 1));
        let t = ts("2021-06-30T23:59:59.999999999+02:00");
        c.update(1, 0, |s| {
            s.count = 50;
            s.cashback = Decimal::from_str("150.00").unwrap();
            s.last_trx = Some(t);
        });
        c.update(1, 0, |s| s.cashback -= Decimal::from_str("0.01").unwrap());
        let s = c.standing(1, 0).unwrap();
        assert_eq!(
            (s.count, s.cashback.to_string(), s.last_trx),
            (50, "149.99".into(), Some(t))
        );
        assert_eq!(c.overflowed(), 0);
        let mut withdrawn = facts(1, ts("2020-12-08T09:00:00+01:00"));
        withdrawn.withdrawn = true;
        c.upsert(&withdrawn);
        assert!(c.facts(1).unwrap().withdrawn);
        assert_eq!(c.standing(1, 0).unwrap().count, 50);
    }
}
