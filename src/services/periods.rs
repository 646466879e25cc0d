//! `cashback.query.periods` (PROTOCOL.md section 3): the configured award
//! periods and where each is today, so that the app and operators read the
//! rules from the engine instead of keeping a copy that drifts.

use super::context::QueryContext;
use super::protocol::{parse, PeriodInfo, PeriodStatus, PeriodsQuery, PeriodsReply};
use cashback_engine::period::AwardPeriod;
use cashback_engine::refusal::Refusal;
use cashback_engine::time::Timestamp;
use chrono::{Days, NaiveDate};

/// Where `period` is on `today` (a Europe/Rome date): upcoming before
/// `start`, active from `start` to `end`, grace for the `grace_days` after
/// `end`, closed after. The same days as `Periods::accepts_data`, which
/// closes a period at the Rome midnight ending day `end + grace_days`.
pub fn status(period: &AwardPeriod, today: NaiveDate) -> PeriodStatus {
    if today < period.start {
        PeriodStatus::Upcoming
    } else if today <= period.end {
        PeriodStatus::Active
    } else if today <= period.end + Days::new(period.grace_days as u64) {
        PeriodStatus::Grace
    } else {
        PeriodStatus::Closed
    }
}

/// Answers the periods query: every period in order of start
/// (bad_request when the body is not a JSON object).
pub async fn periods(ctx: &QueryContext, body: &[u8]) -> Result<PeriodsReply, Refusal> {
    let PeriodsQuery {} = parse(body, "{}")?;
    let today = Timestamp::now().rome_date();
    Ok(PeriodsReply {
        ok: true,
        periods: ctx
            .periods
            .all()
            .iter()
            .map(|p| PeriodInfo::new(p, status(p, today)))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    /// 2021H1 with 10 days of grace: ends 2021-06-30, grace to 2021-07-10.
    fn h1(grace_days: u32) -> AwardPeriod {
        let mut p = AwardPeriod::with_2021_rules("2021H1", date("2021-01-01"), date("2021-06-30"));
        p.grace_days = grace_days;
        p
    }

    #[test]
    fn every_state_and_its_boundary_days() {
        let p = h1(10);
        let at = |d: &str| status(&p, date(d));
        assert_eq!(at("2020-06-01"), PeriodStatus::Upcoming);
        assert_eq!(at("2020-12-31"), PeriodStatus::Upcoming, "start - 1");
        assert_eq!(at("2021-01-01"), PeriodStatus::Active, "start");
        assert_eq!(at("2021-03-15"), PeriodStatus::Active);
        assert_eq!(at("2021-06-30"), PeriodStatus::Active, "end");
        assert_eq!(at("2021-07-01"), PeriodStatus::Grace, "end + 1");
        assert_eq!(at("2021-07-10"), PeriodStatus::Grace, "end + grace");
        assert_eq!(at("2021-07-11"), PeriodStatus::Closed, "end + grace + 1");
        assert_eq!(at("2022-01-01"), PeriodStatus::Closed);
    }

    #[test]
    fn without_grace_the_day_after_the_end_is_closed() {
        let p = h1(0);
        assert_eq!(status(&p, date("2021-06-30")), PeriodStatus::Active);
        assert_eq!(status(&p, date("2021-07-01")), PeriodStatus::Closed);
    }

    #[test]
    fn a_one_day_period_is_active_on_its_day() {
        let mut p = h1(1);
        p.end = p.start;
        assert_eq!(status(&p, date("2020-12-31")), PeriodStatus::Upcoming);
        assert_eq!(status(&p, date("2021-01-01")), PeriodStatus::Active);
        assert_eq!(status(&p, date("2021-01-02")), PeriodStatus::Grace);
        assert_eq!(status(&p, date("2021-01-03")), PeriodStatus::Closed);
    }
}
