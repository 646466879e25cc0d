//! Built-in demo traffic for `serve --demo`: the payment-network simulator
//! (`cashback simulate`) at a small scale inside the engine's process: a
//! few thousand citizens enroll, then payments, reversals, duplicates, late
//! batches, split bursts and some garbage flow at about 2,000 authorizations
//! a second, so that a new user sees every part move.

use crate::commands::simulate::{self, Options};
use crate::config::Config;
use anyhow::{Context, Result};
use cashback_engine::period::{AwardPeriod, Periods};
use cashback_engine::time::Timestamp;
use chrono::Datelike;
use tokio::sync::watch;

/// Demo citizens.
const CITIZENS: usize = 3_000;

/// Authorizations per second.
const RATE: u64 = 2_000;

/// `max_payments_per_merchant_day` of the demo's period when the period it
/// copies sets none: the simulator's split bursts are 3 to 8 payments, so
/// the rule shows (`merchant_daily_limit` in the status line and on
/// `cashback.rejected.merchant_daily_limit`).
pub const DEMO_MAX_PAYMENTS_PER_MERCHANT_DAY: u16 = 3;

/// Adds a period for the current semester when no configured period contains
/// today: the shipped periods closed in 2022, and a demo where everything is
/// `period_closed` shows nothing. It copies the last configured period's
/// rules, with a split-payment limit if that has none
/// ([`DEMO_MAX_PAYMENTS_PER_MERCHANT_DAY`]).
pub fn ensure_current_period(config: &mut Config) {
    let today = Timestamp::now().rome_date();
    let Ok(periods) = config.periods() else {
        return;
    };
    if periods.containing_date(today).is_some() {
        return;
    }
    let (start, end, half) = if today.month() <= 6 {
        ((1, 1), (6, 30), 1)
    } else {
        ((7, 1), (12, 31), 2)
    };
    let date = |(m, d)| chrono::NaiveDate::from_ymd_opt(today.year(), m, d).expect("valid date");
    let mut period = config
        .periods
        .last()
        .cloned()
        .unwrap_or_else(|| AwardPeriod::with_2021_rules("", today, today));
    period.id = format!("DEMO{}H{half}", today.year());
    period.start = date(start);
    period.end = date(end);
    if period.max_payments_per_merchant_day == 0 {
        period.max_payments_per_merchant_day = DEMO_MAX_PAYMENTS_PER_MERCHANT_DAY;
    }
    config.periods.push(period);
    if config.periods().is_err() {
        config.periods.pop();
    }
}

/// Enrolls the demo citizens, then publishes until `shutdown`. A random
/// seed: a restarted demo must not re-send the previous run's messages
/// (they would all be duplicates).
pub async fn run(
    url: &str,
    prefix: &str,
    stream_name: &str,
    periods: &Periods,
    shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let today = Timestamp::now().rome_date();
    let period = periods
        .containing_date(today)
        .map(|p| periods.get(p).clone())
        .context("demo: no period contains today")?;
    println!("demo: enrolling {CITIZENS} citizens, then publishing about {RATE} authorizations/s");
    let options = Options {
        citizens: CITIZENS,
        rate: RATE,
        count: None,
        duration: None,
        seed: rand::random(),
        now: None,
        engine: String::new(),
        skip_enrollment: false,
        verify: false,
        enroll_in_flight: 256,
        quiet: true,
    };
    simulate::run(url, prefix, stream_name, &period, &options, shutdown).await?;
    Ok(())
}
