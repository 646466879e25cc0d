//! Memory per citizen at `--citizens` (issue 6: 1M): the engine's resident
//! memory (`VmRSS` of its process in `/proc/<pid>/status`) empty, then with
//! the simulator's citizens enrolled (1-4 cards each, journaled as the
//! enrollment service would), then after `--payments` authorizations per
//! citizen on average (the simulator's mix), each read once the engine has
//! caught up and settled. RSS is what the operating system must really
//! provide, allocator slack and buffers included; the peak (`VmHWM`) is
//! reported beside it.
//!
//! Issue 6 sets no number; the table projects the figures to the real
//! programme (8.4M citizens, median 90 payments each) against this machine's
//! memory, for sizing.

use crate::common::{
    journal_citizens, metric_value, physical_memory, scale_counts, verdict, Engine, Harness,
    Options, Report, BENCH_COMMAND,
};
use anyhow::Result;
use cashback::sim::cards_of;
use std::time::Duration;

/// The real programme's enrolled citizens (MEASURED.md).
const PROGRAMME_CITIZENS: f64 = 8.4e6;
/// Median payments per citizen per semester in the real programme.
const PROGRAMME_PAYMENTS: f64 = 90.0;

/// Time given to the engine after catching up before its memory is read, so
/// that batches in flight and their buffers are gone.
const SETTLE: Duration = Duration::from_secs(2);

/// Options of `memory`.
#[derive(clap::Parser, Clone, Debug)]
pub struct Args {
    /// Citizens enrolled (the simulator's, 1-4 cards each).
    #[arg(long, default_value_t = 1_000_000)]
    pub citizens: usize,
    /// Authorizations per citizen on average (the simulator's heavy-tailed mix).
    #[arg(long, default_value_t = 5)]
    pub payments: usize,
}

impl Options for Args {
    fn scale(&mut self, factor: f64) {
        scale_counts(factor, [&mut self.citizens]);
    }

    fn command(&self) -> String {
        format!(
            "{BENCH_COMMAND} memory --citizens {} --payments {}",
            self.citizens, self.payments
        )
    }
}

/// Resident memory of the engine once it has applied `last` and settled.
async fn settled_rss(engine: &Engine, last: u64) -> Result<(u64, u64)> {
    engine.wait_applied(last).await?;
    tokio::time::sleep(SETTLE).await;
    engine.memory()
}

/// Runs the benchmark.
pub async fn run(args: &Args) -> Result<Report> {
    let h = Harness::start().await?;
    let engine = h.engine()?;
    let (empty, _) = settled_rss(&engine, 0).await?;
    eprintln!(
        "memory: empty engine {:.0} MiB; journaling {} citizens...",
        mib(empty),
        args.citizens
    );
    let mut p = h.publisher();
    journal_citizens(&mut p, &h.subjects, 0..args.citizens).await?;
    let last = p.finish().await?;
    let (enrolled, _) = settled_rss(&engine, last).await?;
    let authorizations = args.citizens * args.payments;
    eprintln!(
        "memory: enrolled {:.0} MiB; publishing {authorizations} authorizations...",
        mib(enrolled)
    );
    let mut generator = Harness::generator(args.citizens);
    for _ in 0..authorizations {
        p.send_sim(&h.subjects, generator.next_message()).await?;
    }
    let last = p.finish().await?;
    let (paid, peak) = settled_rss(&engine, last).await?;
    let counted = engine
        .metrics()
        .await
        .and_then(|m| metric_value(&m, "cashback_authorizations_total{outcome=\"counted\"}"))
        .unwrap_or(0.0);
    engine.stop()?;

    let citizens = args.citizens as f64;
    let cards: usize = (0..args.citizens).map(cards_of).sum();
    let per_citizen_enrolled = (enrolled as f64 - empty as f64) / citizens;
    let per_citizen_paid = (paid as f64 - empty as f64) / citizens;
    let per_payment = (paid as f64 - enrolled as f64) / counted.max(1.0);
    let projected = PROGRAMME_CITIZENS * per_citizen_enrolled
        + PROGRAMME_CITIZENS * PROGRAMME_PAYMENTS * per_payment
        + empty as f64;
    let ram = physical_memory() as f64;
    Ok(Report {
        title: "Memory per citizen".into(),
        command: args.command(),
        setup: format!(
            "The engine's VmRSS (`/proc/<pid>/status`), each read {} s after it caught up: empty; with {} simulator citizens \
             and their {cards} cards enrolled through the journal; then after {authorizations} simulator authorizations \
             ({counted:.0} counted payments; the rest are reversals, duplicates, late and malformed messages).",
            SETTLE.as_secs(),
            args.citizens
        ),
        table: format!(
            "| state | engine RSS | per citizen | per counted payment |\n\
             |---|---|---|---|\n\
             | empty engine | {:.0} MiB | | |\n\
             | {} citizens, {cards} cards | {:.0} MiB | {per_citizen_enrolled:.0} bytes | |\n\
             | + {authorizations} authorizations | {:.0} MiB (peak {:.0} MiB) | {per_citizen_paid:.0} bytes | {per_payment:.0} bytes |\n\n\
             Projection for sizing (issue 6 sets no goal): 8.4M citizens with the programme's median of 90 counted payments \
             each would need about {:.1} GiB ({:.0} bytes x 8.4M + {per_payment:.0} bytes x 756M + the empty engine); \
             this machine has {:.1} GiB: fits: {}.",
            mib(empty),
            args.citizens,
            mib(enrolled),
            mib(paid),
            mib(peak),
            projected / (1u64 << 30) as f64,
            per_citizen_enrolled,
            ram / (1u64 << 30) as f64,
            verdict(projected < ram),
        ),
    })
}

/// Bytes as MiB.
fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}
