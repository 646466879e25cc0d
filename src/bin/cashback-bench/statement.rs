//! Statement query latency (issue 8) for a citizen with 1,000 payments, one
//! query at a time: idle first (the reference, same run), then while the
//! simulator's authorizations are published at `--rate`. Goal: p99 < 5 ms
//! under load, with the load really offered (>= 95% of `--rate`).

use crate::common::{
    pregenerate, prepublish, scale_counts, scale_seconds, verdict, Harness, Latencies, Options,
    PacedLoad, Report, BENCH_COMMAND,
};
use anyhow::{bail, Result};
use cashback::sim::{citizen_id, hpan};
use cashback_engine::time::Timestamp;
use serde_json::json;
use std::time::{Duration, Instant};

/// Payments of the queried citizen: issue 8's "a citizen with 1,000 payments".
const STATEMENT_PAYMENTS: u64 = 1000;

/// Options of `statement`.
#[derive(clap::Parser, Clone, Debug)]
pub struct Args {
    /// Authorizations per second offered during the loaded phase.
    #[arg(long, default_value_t = 50_000)]
    pub rate: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Enrolled citizens besides the queried one's payments.
    #[arg(long, default_value_t = 100_000)]
    pub citizens: usize,
}

impl Options for Args {
    fn scale(&mut self, factor: f64) {
        scale_counts(factor, [&mut self.citizens]);
        scale_seconds(factor, &mut self.seconds);
    }

    fn command(&self) -> String {
        format!(
            "{BENCH_COMMAND} statement --rate {} --seconds {} --citizens {}",
            self.rate, self.seconds, self.citizens
        )
    }
}

/// Runs the benchmark.
pub async fn run(args: &Args) -> Result<Report> {
    let h = Harness::start().await?;
    let mut generator = Harness::generator(args.citizens);
    eprintln!(
        "statement: pre-publishing {} citizens and {} authorizations...",
        args.citizens,
        args.citizens * 2
    );
    prepublish(&h, &mut generator, args.citizens, args.citizens * 2).await?;
    // The queried citizen's first card: 1,000 payments more, an hour old.
    let mut p = h.publisher();
    let now = Timestamp::now();
    for n in 0..STATEMENT_PAYMENTS {
        let v = json!({
            "acquirer_code": "32875", "operation_type": "00", "circuit_type": "01",
            "hpan": hpan(0, 0), "trx_date": now.plus_secs(-3600 - n as i64).to_rome_rfc3339(),
            "id_trx_acquirer": format!("s{n}"), "total_amount": 1000 + n,
            "currency": "978", "acquirer_id": "A1", "merchant_id": "M1",
            "terminal_id": "T1", "bin": "40000000", "mcc": "5411"
        });
        p.send(
            h.subjects.auth("32875"),
            Some(&format!("statement-{n}")),
            v.to_string().into_bytes(),
        )
        .await?;
    }
    let last = p.finish().await?;
    let duration = Duration::from_secs(args.seconds);
    let load = pregenerate(
        &mut generator,
        PacedLoad::messages_needed(args.rate as f64, duration),
    );
    let engine = h.engine()?;
    engine.wait_applied(last).await?;
    let querier = async_nats::connect(h.server.url()).await?;

    eprintln!("statement: idle phase, 5 s...");
    let query = h.subjects.query("transactions");
    let idle = statement_latencies(&querier, &query, Duration::from_secs(5)).await?;
    eprintln!(
        "statement: loaded phase, {} s at {}/s...",
        args.seconds, args.rate
    );
    let subjects = h.subjects.clone();
    let (rate, publisher) = (args.rate as f64, h.publisher());
    let load = tokio::spawn(async move {
        let mut load = PacedLoad::start(publisher, load, rate, duration);
        while load.step(&subjects).await? {}
        let achieved = load.achieved_rate();
        load.publisher.finish().await?;
        Ok::<_, anyhow::Error>(achieved)
    });
    let loaded = statement_latencies(&querier, &query, duration).await?;
    let offered = load.await??;
    engine.stop()?;
    let met = loaded.ms(0.99) < 5.0 && offered >= args.rate as f64 * 0.95;
    Ok(Report {
        title: "Statement query under load".into(),
        command: args.command(),
        setup: format!(
            "{} simulator citizens and {} of their authorizations pre-published; the queried citizen (`{}`) has \
             {STATEMENT_PAYMENTS} payments more; page of 100; one query at a time; the load is the simulator's mix.",
            args.citizens,
            args.citizens * 2,
            citizen_id(0)
        ),
        table: format!(
            "| figure | under load ({offered:.0} authorizations/s achieved of {} offered) | reference: same query, idle engine, same run | goal |\n\
             |---|---|---|---|\n\
             | statement latency p50 / p99 | {} ({} queries) | {} ({} queries) | p99 < 5 ms at >= 95% of the rate: {} |",
            args.rate,
            loaded.p50_p99(),
            loaded.len(),
            idle.p50_p99(),
            idle.len(),
            verdict(met),
        ),
    })
}

/// Sequential statement queries for the queried citizen for `duration`.
async fn statement_latencies(
    client: &async_nats::Client,
    subject: &str,
    duration: Duration,
) -> Result<Latencies> {
    let body: bytes::Bytes = json!({"citizen_id": citizen_id(0), "limit": 100})
        .to_string()
        .into();
    let stop = Instant::now() + duration;
    let mut lat = Vec::new();
    while Instant::now() < stop {
        let t = Instant::now();
        let reply = client.request(subject.to_owned(), body.clone()).await?;
        lat.push(t.elapsed());
        let v: serde_json::Value = serde_json::from_slice(&reply.payload)?;
        if v["total"].as_u64().unwrap_or(0) < STATEMENT_PAYMENTS {
            bail!("the statement should list at least {STATEMENT_PAYMENTS} payments: {v}");
        }
    }
    Ok(Latencies::new(lat))
}
