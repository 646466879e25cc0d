//! Award periods: which period a payment belongs to, and until when a period
//! accepts data. Every number comes from configuration (RULES.md, "Award
//! periods"), never from code.

use crate::time::Timestamp;
use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::Deserialize;
use std::str::FromStr;

/// One award period exactly as configured in TOML (RULES.md).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AwardPeriod {
    /// Public name, e.g. "2021H1"; used in subjects and queries.
    pub id: String,
    /// First day, Europe/Rome.
    pub start: NaiveDate,
    /// Last day, inclusive, Europe/Rome.
    pub end: NaiveDate,
    /// Days after `end` during which late authorizations still count.
    pub grace_days: u32,
    /// Payments needed for any cashback to be payable, and for the Supercashback.
    pub min_transactions: u32,
    /// Share of each payment paid back (0.10 = 10%).
    #[serde(with = "rust_decimal::serde::str")]
    pub cashback_rate: Decimal,
    /// Cap on one payment's cashback.
    #[serde(with = "rust_decimal::serde::str")]
    pub max_cashback_per_transaction: Decimal,
    /// Cap on what is payable for the whole period.
    #[serde(with = "rust_decimal::serde::str")]
    pub max_cashback: Decimal,
    /// How many top-ranked citizens win the Supercashback (0: none).
    pub supercashback_winners: u32,
    /// The Supercashback prize.
    #[serde(with = "rust_decimal::serde::str")]
    pub supercashback_prize: Decimal,
    /// Most payments of one card at one shop (`merchant_id` of one
    /// `acquirer_code`) on one Europe/Rome day that count; 0 (or absent): no
    /// limit (RULES.md, "Split payments"). u16: a real limit is a handful,
    /// and the per-day slot counters that enforce it are 2 bytes each.
    #[serde(default)]
    pub max_payments_per_merchant_day: u16,
}

impl AwardPeriod {
    /// A period `start..=end` (Europe/Rome dates) with the numbers of the
    /// 2021 programme (RULES.md): 10% up to 15.00 EUR a payment, 150.00 EUR
    /// payable from 50 payments, 10 days of grace, 100,000 winners of
    /// 1500.00 EUR. For demos, benchmarks and tests.
    pub fn with_2021_rules(id: &str, start: NaiveDate, end: NaiveDate) -> AwardPeriod {
        let money = |s: &str| Decimal::from_str(s).expect("a decimal literal");
        AwardPeriod {
            id: id.into(),
            start,
            end,
            grace_days: 10,
            min_transactions: 50,
            cashback_rate: money("0.10"),
            max_cashback_per_transaction: money("15.00"),
            max_cashback: money("150.00"),
            supercashback_winners: 100_000,
            supercashback_prize: money("1500.00"),
            max_payments_per_merchant_day: 0,
        }
    }
}

/// Index of a period in the configured list; small so that it packs into
/// per-payment records.
pub type PeriodIdx = u16;

/// The configured periods, checked and with their closing instants computed once.
/// (`Default`: none, a placeholder until configuration is attached.)
#[derive(Clone, Debug, Default)]
pub struct Periods {
    /// In configuration order; sorted by start and never overlapping.
    periods: Vec<AwardPeriod>,
    /// For each period, the first instant at which it no longer accepts data:
    /// midnight in Rome ending day `end + grace_days`.
    closes_at: Vec<Timestamp>,
    /// For each period, the instant its first day starts (midnight in Rome),
    /// so that [`Periods::at_instant`] needs no time-zone conversion.
    starts_at: Vec<Timestamp>,
    /// For each period, the instant its last day ends (midnight in Rome
    /// starting the day after `end`).
    ends_at: Vec<Timestamp>,
}

impl Periods {
    /// Checks the periods (unique ids, start <= end, no overlap, sane money)
    /// and prepares them. An operator gets every problem at start, not later.
    pub fn new(mut periods: Vec<AwardPeriod>) -> Result<Periods, String> {
        if periods.len() > PeriodIdx::MAX as usize {
            return Err("too many award periods".into());
        }
        periods.sort_by_key(|p| p.start);
        for p in &periods {
            if p.id.is_empty()
                || !p
                    .id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(format!(
                    "award period id {:?} must be [A-Za-z0-9_-]+ (it is a subject token)",
                    p.id
                ));
            }
            if p.end < p.start {
                return Err(format!("award period {}: end is before start", p.id));
            }
            if p.cashback_rate.is_sign_negative()
                || p.max_cashback_per_transaction.is_sign_negative()
                || p.max_cashback.is_sign_negative()
                || p.supercashback_prize.is_sign_negative()
            {
                return Err(format!("award period {}: negative money", p.id));
            }
        }
        for pair in periods.windows(2) {
            if pair[0].id == pair[1].id {
                return Err(format!("award period {} is configured twice", pair[0].id));
            }
            if pair[1].start <= pair[0].end {
                return Err(format!(
                    "award periods {} and {} overlap",
                    pair[0].id, pair[1].id
                ));
            }
        }
        let mut ids: Vec<&str> = periods.iter().map(|p| p.id.as_str()).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            return Err("award period ids must be unique".into());
        }
        let closes_at = periods
            .iter()
            .map(|p| {
                let last_day = p.end + chrono::Days::new(p.grace_days as u64);
                Timestamp::rome_midnight(last_day + chrono::Days::new(1))
            })
            .collect();
        let starts_at = periods
            .iter()
            .map(|p| Timestamp::rome_midnight(p.start))
            .collect();
        let ends_at = periods
            .iter()
            .map(|p| Timestamp::rome_midnight(p.end + chrono::Days::new(1)))
            .collect();
        Ok(Periods {
            periods,
            closes_at,
            starts_at,
            ends_at,
        })
    }

    /// All periods, sorted by start.
    pub fn all(&self) -> &[AwardPeriod] {
        &self.periods
    }

    /// The period at `idx`.
    pub fn get(&self, idx: PeriodIdx) -> &AwardPeriod {
        &self.periods[idx as usize]
    }

    /// The period whose Rome dates contain the Rome date of `instant`.
    pub fn containing(&self, instant: Timestamp) -> Option<PeriodIdx> {
        self.containing_date(instant.rome_date())
    }

    /// The same as [`Periods::containing`], from precomputed instants: a
    /// binary search, no time-zone conversion. A day of Rome runs from its
    /// midnight to the next one, and Italy never skips or doubles midnight,
    /// so the two always agree (tested).
    pub fn at_instant(&self, instant: Timestamp) -> Option<PeriodIdx> {
        let after = self.starts_at.partition_point(|s| *s <= instant);
        let idx = after.checked_sub(1)?;
        (instant < self.ends_at[idx]).then_some(idx as PeriodIdx)
    }

    /// The period whose dates contain `date`.
    pub fn containing_date(&self, date: NaiveDate) -> Option<PeriodIdx> {
        let after = self.periods.partition_point(|p| p.start <= date);
        let idx = after.checked_sub(1)?;
        (date <= self.periods[idx].end).then_some(idx as PeriodIdx)
    }

    /// Whether a message the broker received at `broker_time` may still change
    /// period `idx` (RULES.md, rule 4).
    pub fn accepts_data(&self, idx: PeriodIdx, broker_time: Timestamp) -> bool {
        broker_time < self.closes_at[idx as usize]
    }

    /// The Rome date of `instant` as a day number within period `idx` (0 on
    /// its first day): what a split-payment slot records. `None` when the
    /// instant's date is outside the period.
    pub fn day_in(&self, idx: PeriodIdx, instant: Timestamp) -> Option<u16> {
        let p = &self.periods[idx as usize];
        let date = instant.rome_date();
        if date < p.start || date > p.end {
            return None;
        }
        u16::try_from((date - p.start).num_days()).ok()
    }

    /// The first instant at which period `idx` no longer accepts data.
    pub fn closes_at(&self, idx: PeriodIdx) -> Timestamp {
        self.closes_at[idx as usize]
    }

    /// The period named `id`.
    pub fn by_id(&self, id: &str) -> Option<PeriodIdx> {
        self.periods
            .iter()
            .position(|p| p.id == id)
            .map(|i| i as PeriodIdx)
    }

    /// The default period of a query: the one containing `today` (a Rome
    /// date), else the latest one that has started, else the earliest one.
    pub fn default_for(&self, today: NaiveDate) -> Option<PeriodIdx> {
        if let Some(idx) = self.containing_date(today) {
            return Some(idx);
        }
        let started = self.periods.partition_point(|p| p.start <= today);
        match started {
            0 if self.periods.is_empty() => None,
            0 => Some(0),
            n => Some((n - 1) as PeriodIdx),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A period with the 2021 rules between two dates.
    pub fn period(id: &str, start: &str, end: &str) -> AwardPeriod {
        AwardPeriod::with_2021_rules(
            id,
            NaiveDate::from_str(start).unwrap(),
            NaiveDate::from_str(end).unwrap(),
        )
    }

    fn ts(s: &str) -> Timestamp {
        Timestamp::parse_rfc3339(s).unwrap()
    }

    #[test]
    fn rome_dates_pick_the_period() {
        let p = Periods::new(vec![
            period("2021H1", "2021-01-01", "2021-06-30"),
            period("2020XMAS", "2020-12-08", "2020-12-31"),
        ])
        .unwrap();
        let xmas = p.by_id("2020XMAS").unwrap();
        let h1 = p.by_id("2021H1").unwrap();
        // 23:30 UTC on Dec 31 is already Jan 1 in Rome.
        assert_eq!(p.containing(ts("2020-12-31T22:59:59Z")), Some(xmas));
        assert_eq!(p.containing(ts("2020-12-31T23:00:00Z")), Some(h1));
        // Summer time: 22:00 UTC on June 30 is July 1 in Rome.
        assert_eq!(p.containing(ts("2021-06-30T21:59:59Z")), Some(h1));
        assert_eq!(p.containing(ts("2021-06-30T22:00:00Z")), None);
        assert_eq!(p.containing(ts("2020-12-07T22:59:59Z")), None);
    }

    #[test]
    fn instants_and_dates_pick_the_same_period() {
        let p = Periods::new(vec![
            period("2021H1", "2021-01-01", "2021-06-30"),
            period("2020XMAS", "2020-12-08", "2020-12-31"),
            period("2021H2", "2021-07-02", "2021-12-31"),
        ])
        .unwrap();
        for s in [
            "2020-12-07T22:59:59.999999999Z",
            "2020-12-07T23:00:00Z",
            "2020-12-31T22:59:59Z",
            "2020-12-31T23:00:00Z",
            "2021-03-27T23:00:00Z",
            "2021-06-30T21:59:59.999999999Z",
            "2021-06-30T22:00:00Z",
            "2021-07-01T21:59:59Z",
            "2021-07-01T22:00:00Z",
            "2021-12-31T22:59:59Z",
            "2021-12-31T23:00:00Z",
            "1999-01-01T00:00:00Z",
        ] {
            assert_eq!(p.at_instant(ts(s)), p.containing(ts(s)), "{s}");
        }
        let start = ts("2020-12-01T00:00:00Z").unix_secs();
        for hour in 0..24 * 400 {
            let t =
                Timestamp::from_unix_nanos((start + hour * 3600 + 1799) as i128 * 1_000_000_000);
            assert_eq!(p.at_instant(t), p.containing(t));
        }
    }

    #[test]
    fn grace_ends_at_rome_midnight() {
        let p = Periods::new(vec![period("2021H1", "2021-01-01", "2021-06-30")]).unwrap();
        // end + 10 days = July 10; data accepted until midnight Rome ending it.
        assert!(p.accepts_data(0, ts("2021-07-10T21:59:59.999999999Z")));
        assert!(!p.accepts_data(0, ts("2021-07-10T22:00:00Z")));
    }

    #[test]
    fn overlapping_or_reversed_periods_are_refused() {
        assert!(Periods::new(vec![
            period("A", "2021-01-01", "2021-06-30"),
            period("B", "2021-06-30", "2021-12-31"),
        ])
        .is_err());
        assert!(Periods::new(vec![period("A", "2021-02-01", "2021-01-01")]).is_err());
        assert!(Periods::new(vec![period("a.b", "2021-01-01", "2021-01-02")]).is_err());
    }

    #[test]
    fn default_period_for_queries() {
        let p = Periods::new(vec![
            period("A", "2021-01-01", "2021-06-30"),
            period("B", "2021-07-01", "2021-12-31"),
        ])
        .unwrap();
        let day = |s| NaiveDate::from_str(s).unwrap();
        assert_eq!(p.default_for(day("2021-03-01")), Some(0));
        assert_eq!(p.default_for(day("2026-11-22")), Some(1));
        assert_eq!(p.default_for(day("2020-01-01")), Some(0));
    }
}
