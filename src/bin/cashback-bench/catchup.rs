//! Catch-up: how fast the engine replays a log it finds at start, next to the
//! fastest plain read of the same stream in the same run (MEASURED.md's
//! "raw": an ordered consumer decoding each message into a borrowed struct,
//! nothing else). Goal (issue 6): engine >= 0.8 of raw.
//!
//! The stream holds the simulator's citizens' enrollments and then `count`
//! of its messages (payments, reversals, duplicates, late batches, garbage).
//! Both sides are timed from their start to the last message; each runs
//! `runs` times, alternating, and the best of each is reported so that a
//! passing disturbance on a shared machine penalises neither side.

use crate::common::{
    metric_value, prepublish, scale_counts, verdict, Engine, Harness, Options, Report,
    BENCH_COMMAND,
};
use anyhow::Result;
use async_nats::jetstream::{self, consumer};
use cashback::config::Config;
use futures::StreamExt;
use serde::Deserialize;
use std::time::{Duration, Instant};

/// Options of `catchup`.
#[derive(clap::Parser, Clone, Debug)]
pub struct Args {
    /// Authorizations to pre-publish.
    #[arg(long, default_value_t = 1_000_000)]
    pub count: usize,
    /// Enrolled citizens (the simulator's: 1 to 4 cards each).
    #[arg(long, default_value_t = 100_000)]
    pub citizens: usize,
    /// Runs of each side; the best is reported.
    #[arg(long, default_value_t = 2)]
    pub runs: usize,
    /// Also run the engine with a snapshot every this many seconds, in the
    /// same run, to measure what snapshotting costs a catch-up (0: skip).
    #[arg(long, default_value_t = 5)]
    pub snapshot_secs: u64,
}

impl Options for Args {
    fn scale(&mut self, factor: f64) {
        scale_counts(factor, [&mut self.count, &mut self.citizens]);
    }

    fn command(&self) -> String {
        format!(
            "{BENCH_COMMAND} catchup --count {} --citizens {} --runs {} --snapshot-secs {}",
            self.count, self.citizens, self.runs, self.snapshot_secs
        )
    }
}

/// What the raw reader decodes into: the authorization's fields, borrowed,
/// with no checks: the least any consumer of this stream must do.
#[derive(Deserialize)]
#[allow(dead_code)]
struct RawAuthorization<'a> {
    /// PROTOCOL.md section 1 `acquirer_code`, undecoded beyond JSON.
    acquirer_code: &'a str,
    /// PROTOCOL.md section 1 `operation_type`, undecoded beyond JSON.
    operation_type: &'a str,
    /// PROTOCOL.md section 1 `circuit_type`, undecoded beyond JSON.
    circuit_type: &'a str,
    /// PROTOCOL.md section 1 `hpan`, undecoded beyond JSON.
    hpan: &'a str,
    /// PROTOCOL.md section 1 `trx_date`, undecoded beyond JSON.
    trx_date: &'a str,
    /// PROTOCOL.md section 1 `id_trx_acquirer`, undecoded beyond JSON.
    id_trx_acquirer: &'a str,
    /// PROTOCOL.md section 1 `total_amount`, undecoded beyond JSON.
    total_amount: u64,
    /// PROTOCOL.md section 1 `currency`, undecoded beyond JSON.
    currency: &'a str,
    /// PROTOCOL.md section 1 `acquirer_id`, undecoded beyond JSON.
    acquirer_id: &'a str,
    /// PROTOCOL.md section 1 `merchant_id`, undecoded beyond JSON.
    merchant_id: &'a str,
    /// PROTOCOL.md section 1 `terminal_id`, undecoded beyond JSON.
    terminal_id: &'a str,
    /// PROTOCOL.md section 1 `bin`, undecoded beyond JSON.
    bin: &'a str,
    /// PROTOCOL.md section 1 `mcc`, undecoded beyond JSON.
    mcc: &'a str,
}

/// Runs the benchmark.
pub async fn run(args: &Args) -> Result<Report> {
    let h = Harness::start().await?;
    eprintln!(
        "catchup: pre-publishing {} citizens and {} authorizations...",
        args.citizens, args.count
    );
    let t = Instant::now();
    let mut generator = Harness::generator(args.citizens);
    let last = prepublish(&h, &mut generator, args.citizens, args.count).await?;
    let publish_rate = last as f64 / t.elapsed().as_secs_f64();
    eprintln!("catchup: stream holds {last} messages ({publish_rate:.0}/s published)");

    let (mut raw, mut engine, mut snapshotting) = (Vec::new(), Vec::new(), Vec::new());
    let mut snapshot_runs = Vec::new();
    for run in 0..args.runs.max(1) {
        let r = raw_consume(&h.js, last).await?;
        eprintln!("catchup: run {run}: raw {:.2} s", r.as_secs_f64());
        raw.push(r);
        h.clear_snapshots().await;
        let took = timed_catch_up(h.engine()?, last).await?.took;
        eprintln!("catchup: run {run}: engine {:.2} s", took.as_secs_f64());
        engine.push(took);
        if args.snapshot_secs > 0 {
            h.clear_snapshots().await;
            let c = timed_catch_up(h.engine_snapshotting(args.snapshot_secs)?, last).await?;
            eprintln!(
                "catchup: run {run}: engine with snapshots every {} s {:.2} s ({} snapshots, intake paused {:.2} s)",
                args.snapshot_secs,
                c.took.as_secs_f64(),
                c.snapshots,
                c.paused
            );
            snapshotting.push(c.took);
            snapshot_runs.push(c);
        }
    }
    let best = |v: &[Duration]| v.iter().min().copied().unwrap_or_default();
    let raw_rate = last as f64 / best(&raw).as_secs_f64();
    let engine_rate = last as f64 / best(&engine).as_secs_f64();
    let ratio = engine_rate / raw_rate;
    let citizens = args.citizens;
    let count = args.count;
    let mut table = format!(
        "| figure | engine | raw reference (same stream, same run) | ratio | goal |\n\
         |---|---|---|---|---|\n\
         | messages/s, stream start to last applied | {engine_rate:.0} | {raw_rate:.0} (ordered consumer, borrowed decode) | {ratio:.2} | >= 0.80: {} |",
        verdict(ratio >= 0.8)
    );
    if !snapshotting.is_empty() {
        let with_rate = last as f64 / best(&snapshotting).as_secs_f64();
        let fastest = snapshot_runs
            .iter()
            .min_by_key(|c| c.took)
            .expect("not empty");
        table.push_str(&format!(
            "\n| messages/s with a snapshot every {} s (fastest run: {} snapshots stored, intake paused {:.2} s in all) | {with_rate:.0} | {engine_rate:.0} (the engine without snapshots, above) | {:.2} | (issue 4: measure the cost) |",
            args.snapshot_secs,
            fastest.snapshots,
            fastest.paused,
            with_rate / engine_rate
        ));
    }
    Ok(Report {
        title: "Catch-up".into(),
        command: args.command(),
        setup: format!(
            "The stream holds {last} messages: {citizens} citizens' enrollment journal entries (1-4 cards each), then {count} \
             simulator authorizations (payments, ~2% reversals, ~0.5% duplicates, late batches, ~0.1% malformed). \
             Each side timed from its start (the engine: process spawn) to the last message applied or read; best of {} runs each, alternating. \
             Every engine run starts with no snapshot stored, so each replays the whole stream; snapshots are stored in the \
             object store of the same nats-server, without purging the stream.",
            args.runs.max(1)
        ),
        table,
    })
}

/// What an engine's catch-up took.
struct CatchUp {
    /// Spawn to the last message applied.
    took: Duration,
    /// Snapshots stored meanwhile.
    snapshots: u64,
    /// Seconds intake stood still for them (settle + encode).
    paused: f64,
}

/// Times `engine` from its spawn to having applied `last`, and reads from
/// its own metrics the snapshots it stored meanwhile and their pauses.
async fn timed_catch_up(engine: Engine, last: u64) -> Result<CatchUp> {
    let started = Instant::now();
    engine.wait_applied(last).await?;
    let took = started.elapsed();
    let text = engine.metrics().await.unwrap_or_default();
    let sample = |name: &str| metric_value(&text, name).unwrap_or(0.0);
    let result = CatchUp {
        took,
        snapshots: sample("cashback_snapshot_duration_seconds_count") as u64,
        paused: sample("cashback_snapshot_pause_seconds_sum"),
    };
    engine.stop()?;
    Ok(result)
}

/// Raw: an ordered consumer from the stream's start, a borrowed decode of
/// every message, until sequence `last`.
pub async fn raw_consume(js: &jetstream::Context, last: u64) -> Result<Duration> {
    let stream = js.get_stream(Config::default().stream_name).await?;
    let started = Instant::now();
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    let mut decoded = 0u64;
    while let Some(m) = messages.next().await {
        let m = m?;
        if serde_json::from_slice::<RawAuthorization>(&m.payload).is_ok() {
            decoded += 1;
        }
        let seq = m
            .info()
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .stream_sequence;
        if seq >= last {
            break;
        }
    }
    std::hint::black_box(decoded);
    Ok(started.elapsed())
}
