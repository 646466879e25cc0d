//! Enrollment at saturation (issue 6): `cashback.enroll.citizen`, then
//! `cashback.enroll.card` for the same citizens, from one client connection
//! with many requests in flight (MEASURED.md: how an app back end runs it).
//! Goal: >= 20,000 requests/s, p99 < 50 ms, 0 errors.
//!
//! Each request is journaled in the stream and answered once applied, so
//! this measures the whole path: request, journal publish and ack, apply in
//! log order, reply. Latency under a closed loop is in-flight / throughput,
//! so one in-flight level would decide the p99 by itself: the table shows
//! several levels, fixed in advance, each with its own verdict, and every
//! level enrolls citizens never seen before (creations, not idempotent
//! repeats).

use crate::common::{
    request_load, scale_counts, verdict, Harness, Options, Report, RequestLoad, BENCH_COMMAND,
};
use anyhow::Result;
use cashback_engine::enrollment::{make_iban, EnrollKind};
use cashback_engine::time::Timestamp;
use serde_json::json;

/// Issue 6's goal: requests per second.
const GOAL_PER_SEC: f64 = 20_000.0;
/// Issue 6's goal: p99 latency, ms.
const GOAL_P99_MS: f64 = 50.0;

/// Options of `enrollment`.
#[derive(clap::Parser, Clone, Debug)]
pub struct Args {
    /// New citizens enrolled at each in-flight level (then one card each).
    #[arg(long, default_value_t = 50_000)]
    pub citizens: usize,
    /// Requests in flight on the one connection, one level after another.
    #[arg(long, value_delimiter = ',', default_value = "64,256,1024")]
    pub in_flight: Vec<usize>,
}

impl Options for Args {
    fn scale(&mut self, factor: f64) {
        scale_counts(factor, [&mut self.citizens]);
    }

    fn command(&self) -> String {
        let levels: Vec<String> = self.in_flight.iter().map(usize::to_string).collect();
        format!(
            "{BENCH_COMMAND} enrollment --citizens {} --in-flight {}",
            self.citizens,
            levels.join(",")
        )
    }
}

/// Runs the benchmark.
pub async fn run(args: &Args) -> Result<Report> {
    let h = Harness::start().await?;
    let engine = h.engine()?;
    engine.wait_applied(0).await?;
    let since = Timestamp::now().plus_secs(-86_400).to_rome_rfc3339();
    // Level 0 is the warm-up; each level's citizens and cards are new.
    let citizen = |level: usize, i: usize| format!("enr-{level}-{i}");
    let enroll = |level: usize, n: usize| -> [(EnrollKind, Vec<bytes::Bytes>); 2] {
        let citizens = (0..n)
            .map(|i| {
                json!({"citizen_id": citizen(level, i),
                       "iban": make_iban("IT", &format!("X0542811101{i:012}")),
                       "tc_accepted_at": since})
                .to_string()
                .into()
            })
            .collect();
        let cards = (0..n)
            .map(|i| {
                json!({"citizen_id": citizen(level, i),
                       "hpan": format!("{:016x}{i:048x}", 0xe000 + level),
                       "activated_at": since})
                .to_string()
                .into()
            })
            .collect();
        [(EnrollKind::Citizen, citizens), (EnrollKind::Card, cards)]
    };
    eprintln!("enrollment: warm-up...");
    for (kind, bodies) in enroll(0, 1000) {
        request_load(&h.client, &h.subjects.enroll(kind), bodies, 64).await;
    }
    let mut rows = Vec::new();
    for (level, &in_flight) in args.in_flight.iter().enumerate() {
        for (kind, bodies) in enroll(level + 1, args.citizens) {
            eprintln!(
                "enrollment: {} x {}, {in_flight} in flight...",
                args.citizens,
                kind.token()
            );
            let load = request_load(&h.client, &h.subjects.enroll(kind), bodies, in_flight).await;
            rows.push(row(in_flight, kind, &load));
        }
    }
    engine.stop()?;
    Ok(Report {
        title: "Enrollment at saturation".into(),
        command: args.command(),
        setup: format!(
            "One client connection; at each in-flight level, {} new citizens (`cashback.enroll.citizen`), then one card each \
             (`cashback.enroll.card`); a warm-up of 1,000 of each first. Each request is journaled in JetStream and answered \
             once applied in log order. Closed loop: mean latency = in flight / throughput, hence several levels.",
            args.citizens
        ),
        table: format!(
            "| in flight | subject | requests/s | latency p50 / p99 | errors | goal (>= {GOAL_PER_SEC:.0}/s, p99 < {GOAL_P99_MS} ms, 0 errors) |\n\
             |---|---|---|---|---|---|\n{}",
            rows.join("\n")
        ),
    })
}

/// One level's row.
fn row(in_flight: usize, kind: EnrollKind, load: &RequestLoad) -> String {
    let met =
        load.rate >= GOAL_PER_SEC && load.latencies.ms(0.99) < GOAL_P99_MS && load.failures() == 0;
    format!(
        "| {in_flight} | `{}` | {:.0} | {} | {} | {} |",
        kind.token(),
        load.rate,
        load.latencies.p50_p99(),
        load.failures_text(),
        verdict(met)
    )
}
