//! Position queries over NATS request-reply from one client connection with
//! many requests in flight, next to an echo responder on the same server in
//! the same run: the echo is what NATS request-reply alone costs here, so
//! the gap between the two is the engine's own share.

use crate::common::{
    echo_responder, prepublish, request_load, scale_counts, verdict, Harness, Options, Report,
    BENCH_COMMAND,
};
use anyhow::Result;
use cashback::sim::citizen_id;
use serde_json::json;

/// Issue 3's goal for position queries from one client.
const GOAL_PER_SEC: f64 = 30_000.0;

/// Options of `queries`.
#[derive(clap::Parser, Clone, Debug)]
pub struct Args {
    /// Enrolled citizens (each with some payments, so most are ranked).
    #[arg(long, default_value_t = 100_000)]
    pub citizens: usize,
    /// Queries to send, on each side.
    #[arg(long, default_value_t = 200_000)]
    pub count: usize,
    /// Requests in flight on the one connection.
    #[arg(long, default_value_t = 256)]
    pub in_flight: usize,
}

impl Options for Args {
    fn scale(&mut self, factor: f64) {
        scale_counts(factor, [&mut self.citizens, &mut self.count]);
    }

    fn command(&self) -> String {
        format!(
            "{BENCH_COMMAND} queries --citizens {} --count {} --in-flight {}",
            self.citizens, self.count, self.in_flight
        )
    }
}

/// Runs the benchmark.
pub async fn run(args: &Args) -> Result<Report> {
    let h = Harness::start().await?;
    eprintln!(
        "queries: pre-publishing {} citizens with payments...",
        args.citizens
    );
    let mut generator = Harness::generator(args.citizens);
    let last = prepublish(&h, &mut generator, args.citizens, args.citizens * 5).await?;
    let engine = h.engine()?;
    engine.wait_applied(last).await?;

    // Reference: an echo responder on the same server.
    let echo_task = echo_responder(&h.client, "bench.echo").await?;
    let bodies = |n: usize| -> Vec<bytes::Bytes> {
        (0..n)
            .map(|i| {
                json!({"citizen_id": citizen_id(i % args.citizens)})
                    .to_string()
                    .into()
            })
            .collect()
    };
    let subject = h.subjects.query("citizen");
    eprintln!("queries: warm-up, then {} queries each side...", args.count);
    request_load(&h.client, &subject, bodies(args.count / 10), args.in_flight).await;
    let e = request_load(&h.client, &subject, bodies(args.count), args.in_flight).await;
    let r = request_load(&h.client, "bench.echo", bodies(args.count), args.in_flight).await;
    echo_task.abort();
    engine.stop()?;
    Ok(Report {
        title: "Position queries over NATS".into(),
        command: args.command(),
        setup: format!(
            "{} citizens (the simulator's, {} payments pre-published), one client connection, {} requests in flight, \
             `cashback.query.citizen` for citizens in turn; a warm-up of {} queries first.",
            args.citizens,
            args.citizens * 5,
            args.in_flight,
            args.count / 10
        ),
        table: format!(
            "| figure | engine (`cashback.query.citizen`) | reference: echo responder, same server, same run | goal |\n\
             |---|---|---|---|\n\
             | requests/s | {:.0} | {:.0} | >= {GOAL_PER_SEC:.0}, 0 failures: {} |\n\
             | latency p50 / p99 | {} | {} | |\n\
             | failed requests | {} | {} | 0 |",
            e.rate,
            r.rate,
            verdict(e.rate >= GOAL_PER_SEC && e.failures() == 0),
            e.latencies.p50_p99(),
            r.latencies.p50_p99(),
            e.failures_text(),
            r.failures_text(),
        ),
    })
}
