//! `cashback-bench`: the benchmark suite (issue 6), against a real, embedded
//! nats-server and the release engine as a child process. Each benchmark
//! prints a Markdown table with its figure, its goal and whether it was met,
//! the reference measured in the same run where one applies, and the exact
//! command; `all` runs every one with its defaults under one header giving
//! the machine and the date. `--append FILE` appends what is printed.
//!
//! One file per benchmark; `common.rs` holds what they share.

mod catchup;
mod cluster;
mod common;
mod cpu;
mod enrollment;
mod launch_day;
mod live;
mod memory;
mod queries;
mod rank;
mod restart;
mod statement;

use anyhow::Result;
use clap::{Parser, Subcommand};
use common::{context_line, Options, Report};
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

/// The command line.
#[derive(Parser)]
#[command(about = "Benchmarks of the cashback engine against their references")]
struct Cli {
    /// Which benchmark.
    #[command(subcommand)]
    bench: Bench,
    /// Append the result (Markdown) to this file.
    #[arg(long, global = true)]
    append: Option<PathBuf>,
}

/// The benchmarks.
#[derive(Subcommand)]
enum Bench {
    /// Catch-up: authorizations applied per second vs raw consume+decode.
    Catchup(catchup::Args),
    /// Citizen position queries over NATS request-reply from one client
    /// connection, vs an echo responder on the same server.
    Queries(queries::Args),
    /// Statement query latency for a citizen with 1,000 payments, idle and
    /// while authorizations are published at `--rate`.
    Statement(statement::Args),
    /// Live load: lag and publish -> position-push latency at `--rate`.
    Live(live::Args),
    /// Enrollment requests/s and latency at saturation from one connection.
    Enrollment(enrollment::Args),
    /// The app's launch-day mix (wallet, citizen query, new card,
    /// statement), open loop from one connection at `--rates`, while
    /// authorizations are published; next to an echo responder.
    LaunchDay(launch_day::Args),
    /// Resident memory per citizen.
    Memory(memory::Args),
    /// The rank index example, next to Redis.
    Rank(rank::Args),
    /// Restart to serving queries from a snapshot of 8.4M citizens and 50M
    /// payments, and that snapshot's encode time, size and upload (not in
    /// `all`: it needs ~20 GB of memory and several minutes).
    Restart(restart::Args),
    /// Cluster nodes: per-node memory and catch-up with N = 1 and N = 3
    /// over the same log, a citizen query through a non-owning node next
    /// to the owning one, and the projection of the real programme onto
    /// nodes of 24 GiB (not in `all`: 15-20 minutes).
    Cluster(cluster::Args),
    /// Every benchmark in sequence with its defaults, under one header.
    All(AllArgs),
}

/// Options of `all`.
#[derive(clap::Args)]
struct AllArgs {
    /// Multiply every size and duration by this (e.g. 0.05 to check that the
    /// suite runs; figures at other than 1 are not the suite's figures).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut out = Output::new(cli.append)?;
    if let Bench::All(args) = &cli.bench {
        return rt.block_on(all(args.scale, &mut out));
    }
    let report = rt.block_on(cli.bench.run())?;
    out.write(&report.render(Some(&context_line())))
}

impl Bench {
    /// Runs one benchmark.
    async fn run(&self) -> Result<Report> {
        match self {
            Bench::Catchup(args) => catchup::run(args).await,
            Bench::Queries(args) => queries::run(args).await,
            Bench::Statement(args) => statement::run(args).await,
            Bench::Live(args) => live::run(args).await,
            Bench::Enrollment(args) => enrollment::run(args).await,
            Bench::LaunchDay(args) => launch_day::run(args).await,
            Bench::Memory(args) => memory::run(args).await,
            Bench::Rank(args) => rank::run(args).await,
            Bench::Restart(args) => restart::run(args).await,
            Bench::Cluster(args) => cluster::run(args).await,
            Bench::All(_) => anyhow::bail!("`all` is a suite, not one benchmark"),
        }
    }

    /// The suite of `all`: every benchmark with its defaults, times `scale`,
    /// in the order issue 6 lists them, the rank index last.
    fn suite(scale: f64) -> Vec<(&'static str, Bench)> {
        vec![
            ("catchup", Bench::Catchup(defaults(scale))),
            ("queries", Bench::Queries(defaults(scale))),
            ("statement", Bench::Statement(defaults(scale))),
            ("live", Bench::Live(defaults(scale))),
            ("enrollment", Bench::Enrollment(defaults(scale))),
            ("launch-day", Bench::LaunchDay(defaults(scale))),
            ("memory", Bench::Memory(defaults(scale))),
            ("rank", Bench::Rank(defaults(scale))),
        ]
    }
}

/// A benchmark's options at their defaults, times `scale`.
fn defaults<A: Parser + Options>(scale: f64) -> A {
    // The first word is the program name, which parsing skips.
    let mut args = A::parse_from(["cashback-bench"]);
    args.scale(scale);
    args
}

/// Where results go: stdout, and the `--append` file if any, written as
/// each result comes so that a failure later in `all` loses nothing.
struct Output {
    /// The file appended to.
    file: Option<(PathBuf, std::fs::File)>,
}

impl Output {
    fn new(append: Option<PathBuf>) -> Result<Output> {
        let file = match append {
            Some(path) => {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)?;
                Some((path, f))
            }
            None => None,
        };
        Ok(Output { file })
    }

    fn write(&mut self, markdown: &str) -> Result<()> {
        println!("{markdown}");
        if let Some((path, f)) = self.file.as_mut() {
            writeln!(f, "\n{markdown}")?;
            f.flush()?;
            eprintln!("appended to {}", path.display());
        }
        Ok(())
    }
}

/// Every benchmark with its defaults (times `scale`), one after another, so
/// that each has the machine to itself. A benchmark that fails is reported
/// as failed and the suite goes on.
async fn all(scale: f64, out: &mut Output) -> Result<()> {
    let started = Instant::now();
    let scaled_note = if scale == 1.0 {
        String::new()
    } else {
        format!(" **Scaled by {scale}: a smoke run, not the suite's figures.**")
    };
    out.write(&format!(
        "## Benchmark suite, {}\n{}{scaled_note}\nCommand: `make bench` (`cashback-bench all{}`), each benchmark alone on the machine, in sequence.",
        chrono::Utc::now().format("%Y-%m-%d"),
        context_line(),
        if scale == 1.0 { String::new() } else { format!(" --scale {scale}") },
    ))?;
    let mut times = Vec::new();
    for (name, bench) in Bench::suite(scale) {
        let t = Instant::now();
        eprintln!("== {name}");
        let outcome = match bench.run().await {
            Ok(report) => {
                out.write(&report.render(None))?;
                "done"
            }
            Err(e) => {
                out.write(&format!("### {name}\n**failed**: {e:#}\n"))?;
                "**failed**"
            }
        };
        times.push(format!(
            "| {name} | {:.0} s | {outcome} |",
            t.elapsed().as_secs_f64()
        ));
    }
    out.write(&format!(
        "Suite wall time {:.1} min.\n\n| benchmark | wall time | outcome |\n|---|---|---|\n{}",
        started.elapsed().as_secs_f64() / 60.0,
        times.join("\n")
    ))
}
