//! Live: authorizations offered at `--rate` (issue 6: 60,000/s, ten times the
//! rate that broke the real app) for `--seconds`, against an engine already
//! holding `--citizens` enrolled citizens. Goals: the engine stays less than
//! 1 s of messages behind, and publish -> position-push latency p99 <= 50 ms.
//!
//! - Load: the simulator's mix, pre-generated (so that generating it takes no
//!   CPU from the engine while measured), published with JetStream async
//!   publish on schedule. The achieved rate is reported next to the raw
//!   JetStream publish capacity measured in the same run (same messages, no
//!   pacing, before the engine starts): if the publisher cannot offer the
//!   rate on this machine, the table says so.
//! - Lag: sampled every 100 ms as (highest acknowledged sequence) minus the
//!   engine's `/health` `applied_seq`, i.e. against the true end of the log
//!   (the engine's own `lag` trails by its 500 ms stream poll), and read as
//!   seconds behind = lag / achieved rate; plus the engine's
//!   `cashback_apply_latency_seconds` over the run (broker receive time to
//!   applied), from its `/metrics` buckets.
//! - Push latency: `--probes` probe citizens of one card each, enrolled
//!   through the real `cashback.enroll.*` request-reply, receive a payment
//!   now and then among the load; the benchmark records the instant before
//!   publishing it and the instant the first push on
//!   `cashback.position.<probe>` shows the new `transaction_count`. The
//!   pusher pushes the first change after a quiet push interval at once and
//!   coalesces later ones (src/push.rs), so a probe is only paid again once
//!   its last push is more than the push interval old: this measures the
//!   pipeline, not the coalescing delay. The measuring side subscribes to the
//!   probes' subjects only and counts slow-consumer events, so that no push
//!   is dropped unnoticed.

use crate::common::{
    bucket_quantile, histogram_buckets, journal_citizens, metric_value, pregenerate,
    raw_publish_rate, request_load, scale_counts, scale_seconds, verdict, Harness, Latencies,
    Options, PacedLoad, Publisher, Report, BENCH_COMMAND,
};
use anyhow::{bail, Result};
use cashback::config::Config;
use cashback::nats::subjects::Subjects;
use cashback_engine::enrollment::{make_iban, EnrollKind};
use cashback_engine::time::Timestamp;
use futures::StreamExt;
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Most messages the raw publish reference sends: a few seconds' worth is
/// enough for a steady rate.
const RAW_PUBLISH_MESSAGES: usize = 500_000;

/// How often the lag is sampled.
const LAG_SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// Issue 6's goal for publish -> position-push latency, p99.
const PUSH_P99_GOAL_MS: f64 = 50.0;

/// Issue 6's goal for lag: under one second's worth of messages.
const LAG_GOAL_SECS: f64 = 1.0;

/// Options of `live`.
#[derive(clap::Parser, Clone, Debug)]
pub struct Args {
    /// Authorizations per second offered.
    #[arg(long, default_value_t = 60_000)]
    pub rate: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Citizens enrolled before the load (the simulator's, 1-4 cards each).
    #[arg(long, default_value_t = 1_000_000)]
    pub citizens: usize,
    /// Probe citizens whose position pushes are timed.
    #[arg(long, default_value_t = 200)]
    pub probes: usize,
    /// Probe payments per second (each probe at most once per push interval).
    #[arg(long, default_value_t = 100)]
    pub probe_rate: u64,
}

impl Options for Args {
    fn scale(&mut self, factor: f64) {
        scale_seconds(factor, &mut self.seconds);
        scale_counts(factor, [&mut self.citizens]);
    }

    fn command(&self) -> String {
        format!(
            "{BENCH_COMMAND} live --rate {} --seconds {} --citizens {} --probes {} --probe-rate {}",
            self.rate, self.seconds, self.citizens, self.probes, self.probe_rate
        )
    }
}

/// How probe citizens' ids start: outside the simulator's `sim-*` ids, so
/// that only probe payments ever change a probe and its count is known
/// exactly.
const PROBE_PREFIX: &str = "probe-";

/// A probe citizen's id.
fn probe_id(k: usize) -> String {
    format!("{PROBE_PREFIX}{k}")
}

/// A probe citizen's one card: 64 hex digits no simulator hpan can take
/// (those are hashes; this is a fixed prefix and the index).
fn probe_hpan(k: usize) -> String {
    format!("{:048x}{k:016x}", 0xb0bu64)
}

/// One probe citizen's state, as the publisher and the push reader see it.
#[derive(Default)]
struct Probe {
    /// Probe payments sent: the `transaction_count` the next push must show.
    sent: u32,
    /// The count awaited and the instant before its payment was published.
    awaited: Option<(u32, Instant)>,
    /// When the last push for this probe arrived.
    last_push: Option<Instant>,
    /// When the last probe payment was published.
    last_paid: Option<Instant>,
}

/// The probes, shared by the publisher (who pays them) and the push reader.
struct ProbeBook {
    /// Indexed by probe number.
    probes: Vec<Probe>,
    /// Publish -> first push showing the payment, one per matched payment.
    latencies: Vec<Duration>,
    /// Where the round robin of the next payment starts.
    next: usize,
    /// Probe payments not sent because no probe had been quiet long enough.
    skipped: u64,
}

impl ProbeBook {
    /// Picks a probe quiet for more than `quiet` (no payment awaited, last push
    /// and last payment older than `quiet`), marks it paid, and returns its
    /// index and expected count.
    fn pay(&mut self, quiet: Duration) -> Option<(usize, u32)> {
        let now = Instant::now();
        let n = self.probes.len();
        let is_quiet = |t: Option<Instant>| t.is_none_or(|t| now.duration_since(t) > quiet);
        for i in (0..n).map(|i| (self.next + i) % n) {
            let p = &mut self.probes[i];
            if p.awaited.is_none() && is_quiet(p.last_push) && is_quiet(p.last_paid) {
                p.sent += 1;
                p.last_paid = Some(now);
                p.awaited = Some((p.sent, now));
                self.next = (i + 1) % n;
                return Some((i, p.sent));
            }
        }
        self.skipped += 1;
        None
    }

    /// A push for probe `i` showing `count` arrived now.
    fn pushed(&mut self, i: usize, count: u32) {
        let now = Instant::now();
        let Some(p) = self.probes.get_mut(i) else {
            return;
        };
        p.last_push = Some(now);
        if let Some((want, at)) = p.awaited {
            if count >= want {
                self.latencies.push(now - at);
                p.awaited = None;
            }
        }
    }

    /// Probe payments whose push never came.
    fn unanswered(&self) -> usize {
        self.probes.iter().filter(|p| p.awaited.is_some()).count()
    }
}

/// The field of a position push the benchmark reads.
#[derive(serde::Deserialize)]
struct Position {
    /// Payments that count for the citizen.
    transaction_count: u32,
}

/// Runs the benchmark.
pub async fn run(args: &Args) -> Result<Report> {
    let h = Harness::start().await?;
    let duration = Duration::from_secs(args.seconds);
    let mut generator = Harness::generator(args.citizens);
    let t = Instant::now();
    let messages = pregenerate(
        &mut generator,
        PacedLoad::messages_needed(args.rate as f64, duration),
    );
    eprintln!(
        "live: {} messages generated in {:.1} s; raw JetStream publish reference...",
        messages.len(),
        t.elapsed().as_secs_f64()
    );
    let raw_rate = raw_publish_rate(&h, &messages, RAW_PUBLISH_MESSAGES).await?;
    eprintln!(
        "live: raw publish {raw_rate:.0}/s; journaling {} citizens...",
        args.citizens
    );
    let mut p = h.publisher();
    journal_citizens(&mut p, &h.subjects, 0..args.citizens).await?;
    let last = p.finish().await?;
    let engine = h.engine()?;
    engine.wait_applied(last).await?;
    enroll_probes(&h, args.probes).await?;

    let push_interval = Duration::from_millis(Config::default().push_interval_ms);
    let quiet = push_interval + Duration::from_millis(200);
    let book = Arc::new(Mutex::new(ProbeBook {
        probes: (0..args.probes).map(|_| Probe::default()).collect(),
        latencies: Vec::new(),
        next: 0,
        skipped: 0,
    }));
    let slow_consumer = Arc::new(AtomicU64::new(0));
    let reader = read_pushes(&h, args.probes, book.clone(), slow_consumer.clone()).await?;

    let before = engine.metrics().await.unwrap_or_default();
    let load_publisher = h.publisher();
    let acked = load_publisher.acked_seq.clone();
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        let engine = &engine;
        async move {
            let (mut lags, mut engine_lags) = (Vec::new(), Vec::new());
            while sampling.load(Relaxed) {
                if let Some(health) = engine.health().await {
                    lags.push(acked.load(Relaxed).saturating_sub(health.applied_seq));
                    engine_lags.push(health.lag);
                }
                tokio::time::sleep(LAG_SAMPLE_EVERY).await;
            }
            (lags, engine_lags)
        }
    };
    eprintln!(
        "live: {} s at {}/s, {} probes...",
        args.seconds, args.rate, args.probes
    );
    let load = async {
        let mut load = PacedLoad::start(load_publisher, messages, args.rate as f64, duration);
        let probe_every = Duration::from_secs_f64(1.0 / args.probe_rate.max(1) as f64);
        let mut next_probe = Instant::now();
        let mut probe_no = 0u64;
        while load.step(&h.subjects).await? {
            while Instant::now() >= next_probe {
                next_probe += probe_every;
                let paid = book.lock().expect("probe book").pay(quiet);
                if let Some((k, _)) = paid {
                    probe_no += 1;
                    pay_probe(&mut load.publisher, &h.subjects, k, probe_no).await?;
                }
            }
        }
        let achieved = load.achieved_rate();
        let stopped = Instant::now();
        let last = load.publisher.finish().await?;
        Ok::<_, anyhow::Error>((achieved, stopped, last, load.publisher.sent))
    };
    let measured = async {
        let result = async {
            let (achieved, stopped, last, sent) = load.await?;
            engine.wait_applied(last).await?;
            Ok::<_, anyhow::Error>((achieved, stopped.elapsed(), sent))
        }
        .await;
        sampling.store(false, Relaxed);
        result
    };
    let (measured, (lags, engine_lags)) = futures::join!(measured, sampler);
    let (achieved, drained, sent) = measured?;
    // Pushes of the last probe payments come within the push interval.
    tokio::time::sleep(push_interval + Duration::from_secs(1)).await;
    let after = engine.metrics().await.unwrap_or_default();
    reader.abort();
    engine.stop()?;

    let book = book.lock().expect("probe book");
    let pushes = Latencies::new(book.latencies.clone());
    let mut sorted = lags.clone();
    sorted.sort_unstable();
    let lag_max = sorted.last().copied().unwrap_or(0);
    let lag_p99 = crate::common::percentile(&sorted, 0.99).unwrap_or(0);
    let engine_lag_max = engine_lags.iter().max().copied().unwrap_or(0);
    let behind = |lag: u64| lag as f64 / achieved;
    let apply = histogram_buckets(&before, "cashback_apply_latency_seconds");
    let apply_after = histogram_buckets(&after, "cashback_apply_latency_seconds");
    let (apply_p50, applied) = bucket_quantile(&apply, &apply_after, 0.50);
    let (apply_p99, _) = bucket_quantile(&apply, &apply_after, 0.99);
    let position_pushes =
        |text: &str| metric_value(text, "cashback_pushes_total{kind=\"position\"}").unwrap_or(0.0);
    let push_rate = (position_pushes(&after) - position_pushes(&before)) / args.seconds as f64;
    let slow = slow_consumer.load(Relaxed);
    let offered_met = achieved >= args.rate as f64 * 0.99;
    let lag_met = behind(lag_max) < LAG_GOAL_SECS;
    let push_met = pushes.ms(0.99) <= PUSH_P99_GOAL_MS && slow == 0 && pushes.len() > 0;
    let offered_note = if offered_met {
        String::new()
    } else {
        format!(
            " The publisher could not offer {}/s on this machine (it achieved {achieved:.0}/s, against a raw JetStream publish \
             capacity of {raw_rate:.0}/s with no engine running): lag and latency were measured at the achieved rate.",
            args.rate
        )
    };
    Ok(Report {
        title: "Live load".into(),
        command: args.command(),
        setup: format!(
            "{} simulator citizens (1-4 cards each) enrolled through the journal before the load, {} probe citizens through \
             `cashback.enroll.*`; {sent} messages (the simulator's mix plus probe payments) published in {} s with JetStream async \
             publish, {} acks in flight, on schedule. Lag: highest acknowledged sequence minus `/health` applied_seq, every \
             {} ms; seconds behind = lag / achieved rate. Push latency: from just before a probe payment is published to the \
             first `cashback.position.<probe>` push showing it; a probe is paid again only when its last push is more than \
             the push interval ({} ms) + 200 ms old, so the figure is the pipeline's and not the coalescing delay.{offered_note}",
            args.citizens,
            args.probes,
            args.seconds,
            crate::common::ACKS_IN_FLIGHT,
            LAG_SAMPLE_EVERY.as_millis(),
            push_interval.as_millis()
        ),
        table: format!(
            "| figure | measured | reference (same run) | goal |\n\
             |---|---|---|---|\n\
             | authorizations/s offered | {achieved:.0} | raw JetStream async publish, no pacing, no engine: {raw_rate:.0} | {} at >= 99%: {} |\n\
             | lag, max / p99 of {} samples | {lag_max} / {lag_p99} messages = {:.2} / {:.2} s behind | the engine's own `/health` lag (trails by its 500 ms poll), max: {engine_lag_max} | < {LAG_GOAL_SECS} s: {} |\n\
             | apply latency p50 / p99 (`cashback_apply_latency_seconds`, bucket upper bounds) | <= {} / <= {} ms ({applied:.0} messages) | | p99 < 1 s: {} |\n\
             | caught up, after the load stopped | {:.2} s | | |\n\
             | publish -> position push p50 / p99 | {} ({} probe payments) | | p99 <= {PUSH_P99_GOAL_MS} ms: {} |\n\
             | probe payments never pushed | {} | | 0: {} |\n\
             | probe payments not sent (no probe quiet long enough: pushes slower than probes) | {} | | |\n\
             | slow-consumer events on the measuring subscription | {slow} | | 0 |\n\
             | position pushes/s published by the engine | {push_rate:.0} | | |",
            args.rate,
            verdict(offered_met),
            lags.len(),
            behind(lag_max),
            behind(lag_p99),
            verdict(lag_met),
            apply_p50 * 1e3,
            apply_p99 * 1e3,
            verdict(apply_p99 < 1.0),
            drained.as_secs_f64(),
            pushes.p50_p99(),
            pushes.len(),
            verdict(push_met),
            book.unanswered(),
            verdict(book.unanswered() == 0),
            book.skipped,
        ),
    })
}

/// Enrolls the probe citizens and their cards through the engine's real
/// request-reply service; any failure stops the benchmark, since a probe that
/// is not enrolled would never be pushed.
async fn enroll_probes(h: &Harness, probes: usize) -> Result<()> {
    let since = Timestamp::now().plus_secs(-86_400).to_rome_rfc3339();
    let citizens = (0..probes)
        .map(|k| {
            json!({"citizen_id": probe_id(k), "iban": make_iban("IT", &format!("X0542811101{k:012}")),
                   "tc_accepted_at": since})
            .to_string()
            .into()
        })
        .collect();
    let cards = (0..probes)
        .map(|k| {
            json!({"citizen_id": probe_id(k), "hpan": probe_hpan(k), "activated_at": since})
                .to_string()
                .into()
        })
        .collect();
    for (kind, bodies) in [(EnrollKind::Citizen, citizens), (EnrollKind::Card, cards)] {
        let load = request_load(&h.client, &h.subjects.enroll(kind), bodies, 64).await;
        if load.failures() > 0 {
            bail!(
                "enrolling the probes ({}) failed: {}",
                kind.token(),
                load.failures_text()
            );
        }
    }
    Ok(())
}

/// Publishes probe `k`'s next payment (a plain payment that counts).
async fn pay_probe(p: &mut Publisher, subjects: &Subjects, k: usize, n: u64) -> Result<()> {
    let body = json!({
        "acquirer_code": "32875", "operation_type": "00", "circuit_type": "01",
        "hpan": probe_hpan(k), "trx_date": Timestamp::now().plus_secs(-1).to_rome_rfc3339(),
        "id_trx_acquirer": format!("probe-{n}"), "total_amount": 1234,
        "currency": "978", "acquirer_id": "A1", "merchant_id": "M1",
        "terminal_id": "T1", "bin": "40000000", "mcc": "5411"
    });
    p.send(
        subjects.auth("32875"),
        Some(&format!("probe-{n}")),
        body.to_string().into_bytes(),
    )
    .await
}

/// Subscribes (own connection) to each probe's position subject and feeds
/// the pushes to the book; counts slow-consumer events on that connection.
async fn read_pushes(
    h: &Harness,
    probes: usize,
    book: Arc<Mutex<ProbeBook>>,
    slow_consumer: Arc<AtomicU64>,
) -> Result<tokio::task::JoinHandle<()>> {
    let client = async_nats::ConnectOptions::new()
        .event_callback(move |event| {
            let slow_consumer = slow_consumer.clone();
            async move {
                if let async_nats::Event::SlowConsumer(_) = event {
                    slow_consumer.fetch_add(1, Relaxed);
                }
            }
        })
        .connect(h.server.url())
        .await?;
    let mut subscriptions = Vec::with_capacity(probes);
    for k in 0..probes {
        subscriptions.push(client.subscribe(h.subjects.position(&probe_id(k))).await?);
    }
    client.flush().await?;
    let prefix = format!("{}{PROBE_PREFIX}", h.subjects.position(""));
    let mut pushes = futures::stream::select_all(subscriptions);
    Ok(tokio::spawn(async move {
        let _client = client;
        while let Some(m) = pushes.next().await {
            let Some(k) = m
                .subject
                .strip_prefix(prefix.as_str())
                .and_then(|k| k.parse::<usize>().ok())
            else {
                continue;
            };
            if let Ok(position) = serde_json::from_slice::<Position>(&m.payload) {
                book.lock()
                    .expect("probe book")
                    .pushed(k, position.transaction_count);
            }
        }
    }))
}
