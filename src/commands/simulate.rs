//! `cashback simulate`: a payment network over NATS, for load and demos.
//!
//! It enrolls citizens with 1-4 cards each through the real request-reply
//! subjects, then publishes the generator's authorizations (`crate::sim`)
//! with JetStream at a chosen rate, showing a progress line with the live
//! rate and the engine's lag. Because the generator knows what every
//! citizen should end up with, `--verify` waits for the engine to catch up
//! and compares every citizen's count and cashback with the engine's
//! answer: the simulator doubles as an end-to-end check of a deployment.

use crate::commands::engine_health;
use crate::nats::publisher::AckWindow;
use crate::sim::{self, Generator};
use anyhow::{bail, Context, Result};
use cashback_engine::enrollment::make_iban;
use cashback_engine::money::money_string;
use cashback_engine::period::AwardPeriod;
use cashback_engine::time::Timestamp;
use futures::StreamExt;
use serde_json::{json, Value};
use std::io::Write;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// What to simulate.
#[derive(Clone, Debug)]
pub struct Options {
    /// Citizens to enroll (and to pay).
    pub citizens: usize,
    /// Authorizations per second offered; 0 publishes as fast as JetStream
    /// acknowledges.
    pub rate: u64,
    /// Stop after this many authorizations (held-back late ones follow).
    pub count: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Seed of the generator: the same seed and `now` give the same messages.
    pub seed: u64,
    /// The generator's "now" for trx dates; default the wall clock. Pin it to
    /// reproduce a run exactly (a re-run is then all duplicates).
    pub now: Option<Timestamp>,
    /// The engine's `metrics_listen` address, for its lag and `--verify`.
    pub engine: String,
    /// Skip enrollment (the citizens are enrolled already).
    pub skip_enrollment: bool,
    /// After publishing, wait for the engine and compare every citizen.
    pub verify: bool,
    /// Enrollment requests in flight at once.
    pub enroll_in_flight: usize,
    /// No progress lines (the demo inside `serve --status` prints its own).
    pub quiet: bool,
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Report {
    /// Citizens enrolled with all their cards.
    pub enrolled: usize,
    /// Enrollment requests that did not answer `ok: true`.
    pub enroll_failures: usize,
    /// Authorizations acknowledged by JetStream.
    pub published: u64,
    /// Of those, dropped by JetStream's own duplicate window.
    pub jetstream_duplicates: u64,
    /// With `--verify`: citizens whose engine state differs from the
    /// generator's expectation.
    pub mismatches: Option<usize>,
}

/// Runs the simulator against the engine behind `url`, for `period` (its
/// rate and caps give the expected cashback, its
/// `max_payments_per_merchant_day` which payments of a split burst count).
pub async fn run(
    url: &str,
    prefix: &str,
    stream_name: &str,
    period: &AwardPeriod,
    options: &Options,
    mut stop: watch::Receiver<bool>,
) -> Result<Report> {
    let client = crate::config::NatsClientOptions::from_env()?
        .connect(url, async_nats::ConnectOptions::new())
        .await?;
    let now = options.now.unwrap_or_else(Timestamp::now);
    let period_start = Timestamp::rome_midnight(period.start);
    if period.end < now.rome_date() || period_start > now {
        bail!(
            "period {} ({} to {}) does not contain the simulated now",
            period.id,
            period.start,
            period.end
        );
    }
    let mut report = Report::default();
    if !options.skip_enrollment {
        let started = Instant::now();
        let (enrolled, failures) = enroll(&client, prefix, options, period_start).await?;
        report.enrolled = enrolled;
        report.enroll_failures = failures;
        eprintln!(
            "\rsimulate: enrolled {enrolled} citizens ({failures} requests failed) in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }

    let lag = Arc::new(AtomicI64::new(-1));
    let lag_watch = tokio::spawn({
        let (lag, engine) = (lag.clone(), options.engine.clone());
        async move {
            while !engine.is_empty() {
                let seen = engine_health::fetch(&engine).await;
                lag.store(seen.and_then(|h| h["lag"].as_i64()).unwrap_or(-1), Relaxed);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    });

    let mut generator = Generator::new(
        options.citizens,
        options.seed,
        now,
        period_start,
        period.cashback_rate,
        period.max_cashback_per_transaction,
    )
    .with_merchant_day_limit(period.max_payments_per_merchant_day);
    let js = async_nats::jetstream::new(client.clone());
    let mut window = AckWindow::new(js.clone(), 4096);
    let started = Instant::now();
    let mut last_line = Instant::now();
    let mut sent: u64 = 0;
    let line = |window: &AckWindow, sent: u64| {
        let lag = match lag.load(Relaxed) {
            -1 => "?".to_string(),
            n => n.to_string(),
        };
        eprint!(
            "\rsimulate: {sent} sent, {} acknowledged, {:.0}/s | JetStream duplicates {} | engine lag {lag}   ",
            window.acknowledged,
            sent as f64 / started.elapsed().as_secs_f64(),
            window.duplicates
        );
        let _ = std::io::stderr().flush();
    };
    loop {
        if *stop.borrow_and_update()
            || options.count.is_some_and(|c| sent >= c)
            || options.duration.is_some_and(|d| started.elapsed() >= d)
        {
            break;
        }
        if options.rate > 0 {
            // Pace by the schedule, not by sleeping per message: sleep only
            // when more than a couple of milliseconds ahead of it.
            let due = started + Duration::from_secs_f64(sent as f64 / options.rate as f64);
            if due > Instant::now() + Duration::from_millis(2) {
                tokio::time::sleep_until(due.into()).await;
            }
        }
        let m = generator.next_message();
        window
            .publish(format!("{prefix}.auth.{}", m.acquirer), &m.msg_id, m.body)
            .await?;
        sent += 1;
        if !options.quiet && last_line.elapsed() >= Duration::from_secs(1) {
            last_line = Instant::now();
            line(&window, sent);
        }
    }
    // Late batches and payments held behind their reversal go out last.
    for m in generator.drain() {
        window
            .publish(format!("{prefix}.auth.{}", m.acquirer), &m.msg_id, m.body)
            .await?;
        sent += 1;
    }
    window.finish().await?;
    if !options.quiet {
        line(&window, sent);
        eprintln!();
    }
    report.published = window.acknowledged;
    report.jetstream_duplicates = window.duplicates;
    eprintln!(
        "simulate: {} authorizations published in {:.1} s ({:.0}/s), {} dropped by JetStream's duplicate window",
        report.published,
        started.elapsed().as_secs_f64(),
        report.published as f64 / started.elapsed().as_secs_f64(),
        report.jetstream_duplicates
    );

    if options.verify {
        let last = js
            .get_stream(stream_name)
            .await
            .with_context(|| format!("no stream {stream_name}"))?
            .info()
            .await?
            .state
            .last_sequence;
        wait_caught_up(&options.engine, last).await?;
        let mismatches = verify(&client, prefix, &period.id, &generator).await?;
        report.mismatches = Some(mismatches);
    }
    lag_watch.abort();
    Ok(report)
}

/// Enrolls every citizen and their cards, `enroll_in_flight` citizens at a
/// time (each citizen's own requests in order: the citizen before its
/// cards). Returns (citizens fully enrolled, failed requests).
async fn enroll(
    client: &async_nats::Client,
    prefix: &str,
    options: &Options,
    since: Timestamp,
) -> Result<(usize, usize)> {
    let since = since.to_rome_rfc3339();
    let started = Instant::now();
    let mut results = futures::stream::iter(0..options.citizens)
        .map(|i| {
            let (client, since) = (client.clone(), since.clone());
            async move {
                let id = sim::citizen_id(i);
                let mut requests = vec![(
                    "citizen",
                    json!({"citizen_id": id,
                           "iban": make_iban("IT", &format!("X0542811101{i:012}")),
                           "tc_accepted_at": since}),
                )];
                for card in 0..sim::cards_of(i) {
                    requests.push((
                        "card",
                        json!({"citizen_id": id, "hpan": sim::hpan(i, card),
                               "activated_at": since}),
                    ));
                }
                let mut failed = 0;
                for (kind, body) in requests {
                    let reply = client
                        .request(format!("{prefix}.enroll.{kind}"), body.to_string().into())
                        .await;
                    match reply {
                        Ok(m) if m.payload.starts_with(br#"{"ok":true"#) => {}
                        Ok(m) => {
                            failed += 1;
                            tracing::warn!(reply = %String::from_utf8_lossy(&m.payload), "enrollment refused");
                        }
                        Err(e) => {
                            failed += 1;
                            tracing::warn!(error = %e, "enrollment request failed");
                        }
                    }
                }
                failed
            }
        })
        .buffer_unordered(options.enroll_in_flight.max(1));
    let (mut enrolled, mut failures) = (0, 0);
    let mut last_line = Instant::now();
    while let Some(failed) = results.next().await {
        if failed == 0 {
            enrolled += 1;
        }
        failures += failed;
        if !options.quiet && last_line.elapsed() >= Duration::from_secs(1) {
            last_line = Instant::now();
            eprint!(
                "\rsimulate: enrolling {enrolled}/{} citizens, {:.0}/s   ",
                options.citizens,
                enrolled as f64 / started.elapsed().as_secs_f64()
            );
            let _ = std::io::stderr().flush();
        }
    }
    Ok((enrolled, failures))
}

/// Waits until the engine reports `applied_seq >= last`.
async fn wait_caught_up(engine: &str, last: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let applied = engine_health::fetch(engine)
            .await
            .and_then(|h| h["applied_seq"].as_u64());
        if applied.is_some_and(|a| a >= last) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the engine at {engine} did not apply up to sequence {last} within 10 minutes (applied: {applied:?})");
        }
        eprint!(
            "\rverify: waiting for the engine: applied {} of {last}   ",
            applied.map_or("?".into(), |a| a.to_string())
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Queries every citizen and compares count and cashback with what the
/// generator expects; prints the first differences. Returns how many differ.
async fn verify(
    client: &async_nats::Client,
    prefix: &str,
    period: &str,
    generator: &Generator,
) -> Result<usize> {
    let expected = generator.expected();
    let citizens = generator.citizens();
    let mut answers = futures::stream::iter(0..citizens)
        .map(|i| {
            let client = client.clone();
            async move {
                let q = json!({"citizen_id": sim::citizen_id(i), "award_period": period});
                let reply = client
                    .request(format!("{prefix}.query.citizen"), q.to_string().into())
                    .await;
                (i, reply)
            }
        })
        .buffer_unordered(256);
    let mut mismatches = 0;
    while let Some((i, reply)) = answers.next().await {
        let want = expected.get(&i).cloned().unwrap_or_default();
        let got: Option<Value> = reply
            .ok()
            .and_then(|m| serde_json::from_slice(&m.payload).ok());
        let same = got.as_ref().is_some_and(|g| {
            g["transaction_count"] == json!(want.count)
                && g["cashback"] == json!(money_string(want.cashback))
        });
        if !same {
            mismatches += 1;
            if mismatches <= 10 {
                eprintln!(
                    "\nverify: {}: expected {} payments and {} EUR, the engine says {}",
                    sim::citizen_id(i),
                    want.count,
                    money_string(want.cashback),
                    got.map_or("nothing".into(), |g| g.to_string())
                );
            }
        }
    }
    eprintln!(
        "\rverify: {} of {citizens} citizens match the engine{}",
        citizens - mismatches,
        if mismatches == 0 { "" } else { " (see above)" }
    );
    Ok(mismatches)
}
