//! `cashback`: the command line (PROTOCOL.md section 7).

use anyhow::{Context, Result};
use cashback::config::Config;
use cashback::serve::ServeOptions;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Live Cashback and Supercashback engine over NATS JetStream.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the engine. Without a NATS URL it starts an embedded nats-server.
    Serve {
        /// Configuration file (TOML); default: the shipped config/cashback.toml.
        #[arg(long)]
        config: Option<PathBuf>,
        /// NATS server URL, or several servers of one cluster
        /// comma-separated (overrides the configuration).
        #[arg(long, env = "CASHBACK_NATS_URL")]
        nats_url: Option<String>,
        /// Run node K of a cluster of `--nodes` (overrides `node` of the
        /// configuration and CASHBACK_NODE).
        #[arg(long, value_name = "K", requires = "nodes")]
        node: Option<u16>,
        /// How many nodes the cluster has (overrides `nodes` and
        /// CASHBACK_NODES).
        #[arg(long, value_name = "N", requires = "node")]
        nodes: Option<u16>,
        /// Print a status line every second.
        #[arg(long)]
        status: bool,
        /// Also enroll demo citizens and publish demo authorizations.
        #[arg(long)]
        demo: bool,
    },
    /// Publish RTD acquirer files (';'-separated, no header) to JetStream.
    Import {
        /// The files, imported in the order given.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// NATS server URL.
        #[arg(long, env = "CASHBACK_NATS_URL", default_value = cashback::commands::DEFAULT_URL)]
        nats_url: String,
        /// Subject prefix.
        #[arg(long, default_value = "cashback")]
        prefix: String,
    },
    /// A payment network: enroll citizens, then publish a realistic mix of
    /// authorizations at a chosen rate (deterministic from the seed).
    Simulate {
        /// Citizens to enroll, each with 1-4 cards.
        #[arg(long, default_value_t = 100_000)]
        citizens: usize,
        /// Authorizations per second offered (0: as fast as JetStream takes them).
        #[arg(long, default_value_t = 10_000)]
        rate: u64,
        /// Stop after this many authorizations.
        #[arg(long)]
        count: Option<u64>,
        /// Stop after this many seconds (default 60 when no --count is given).
        #[arg(long)]
        duration: Option<u64>,
        /// Seed of the generator.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// The simulated "now" for trx dates (RFC 3339); default the wall clock.
        #[arg(long)]
        now: Option<String>,
        /// Skip enrollment: the citizens are enrolled already.
        #[arg(long)]
        skip_enrollment: bool,
        /// Then wait for the engine and compare every citizen's count and
        /// cashback with what was sent; exit 1 on any difference.
        #[arg(long)]
        verify: bool,
        /// Engine configuration, for the period and the stream name; default
        /// the shipped one plus the current semester, as `serve --demo`.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The engine's metrics address, for its lag and --verify.
        #[arg(
            long,
            env = "CASHBACK_METRICS_LISTEN",
            default_value = "127.0.0.1:9464"
        )]
        engine: String,
        /// NATS server URL.
        #[arg(long, env = "CASHBACK_NATS_URL", default_value = cashback::commands::DEFAULT_URL)]
        nats_url: String,
    },
    /// Exclude (or reinstate) the payments listed in a CSV file, live: the
    /// header row `hpan,acquirer_code,acquirer_id,id_trx_acquirer,operation_type,trx_date,reason`,
    /// then one payment per row (the `operator` role).
    Exclude {
        /// The CSV file.
        file: PathBuf,
        /// Take the exclusions back instead.
        #[arg(long)]
        reinstate: bool,
        /// NATS server URL.
        #[arg(long, env = "CASHBACK_NATS_URL", default_value = cashback::commands::DEFAULT_URL)]
        nats_url: String,
        /// Subject prefix.
        #[arg(long, default_value = "cashback")]
        prefix: String,
    },
    /// Write the payout file of an award period from the running engine.
    Awards {
        /// The award period, e.g. 2021H1.
        #[arg(long)]
        period: String,
        /// The CSV file to write.
        #[arg(long)]
        out: PathBuf,
        /// Allow a file for a period that still accepts data.
        #[arg(long)]
        provisional: bool,
        /// NATS server URL.
        #[arg(long, env = "CASHBACK_NATS_URL", default_value = cashback::commands::DEFAULT_URL)]
        nats_url: String,
        /// Subject prefix.
        #[arg(long, default_value = "cashback")]
        prefix: String,
    },
}

/// A small runtime for the client commands.
fn client_runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CASHBACK_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Serve {
            config,
            nats_url,
            node,
            nodes,
            status,
            demo,
        } => {
            let mut config = Config::load(config.as_deref())?;
            if let Some(url) = nats_url {
                config.nats_url = url;
            }
            if let (Some(node), Some(nodes)) = (node, nodes) {
                config.node = node;
                config.nodes = nodes;
                config.check()?;
            }
            if demo {
                cashback::demo::ensure_current_period(&mut config);
            }
            cashback::serve::run(config, ServeOptions { status, demo })
        }
        Command::Import {
            files,
            nats_url,
            prefix,
        } => {
            client_runtime()?
                .block_on(cashback::commands::import::run(&nats_url, &prefix, &files))?;
            Ok(())
        }
        Command::Simulate {
            citizens,
            rate,
            count,
            duration,
            seed,
            now,
            skip_enrollment,
            verify,
            config,
            engine,
            nats_url,
        } => {
            let mut config = Config::load(config.as_deref())?;
            let configured = config.periods.len();
            cashback::demo::ensure_current_period(&mut config);
            if config.periods.len() > configured {
                eprintln!(
                    "simulate: no configured period contains today; using {} as `serve --demo` does \
                     (an engine without it rejects every payment: run it with --demo or the same --config)",
                    config.periods[configured].id
                );
            }
            let periods = config.periods()?;
            let now = now
                .map(|t| {
                    cashback_engine::time::Timestamp::parse_rfc3339(&t)
                        .with_context(|| format!("--now {t}: not RFC 3339"))
                })
                .transpose()?;
            let today = now
                .unwrap_or_else(cashback_engine::time::Timestamp::now)
                .rome_date();
            let period = periods
                .containing_date(today)
                .map(|p| periods.get(p).clone())
                .with_context(|| format!("no configured period contains {today}"))?;
            let options = cashback::commands::simulate::Options {
                citizens,
                rate,
                count,
                duration: duration
                    .or(count.is_none().then_some(60))
                    .map(std::time::Duration::from_secs),
                seed,
                now,
                engine: engine.replace("0.0.0.0", "127.0.0.1"),
                skip_enrollment,
                verify,
                enroll_in_flight: 512,
                quiet: false,
            };
            let report = client_runtime()?.block_on(async {
                let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
                tokio::spawn(async move {
                    if tokio::signal::ctrl_c().await.is_ok() {
                        let _ = stop_tx.send(true);
                    }
                });
                cashback::commands::simulate::run(
                    &nats_url,
                    &config.subject_prefix,
                    &config.stream_name,
                    &period,
                    &options,
                    stop_rx,
                )
                .await
            })?;
            if report.mismatches.is_some_and(|m| m > 0) {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Exclude {
            file,
            reinstate,
            nats_url,
            prefix,
        } => {
            let op = if reinstate {
                cashback_engine::item::ExclusionOp::Reinstate
            } else {
                cashback_engine::item::ExclusionOp::Exclude
            };
            client_runtime()?.block_on(cashback::commands::exclude::run(
                &nats_url, &prefix, &file, op,
            ))?;
            Ok(())
        }
        Command::Awards {
            period,
            out,
            provisional,
            nats_url,
            prefix,
        } => {
            let rows = client_runtime()?.block_on(cashback::commands::awards::run(
                &nats_url,
                &prefix,
                &period,
                &out,
                provisional,
            ))?;
            eprintln!("awards: {rows} rows written to {}", out.display());
            Ok(())
        }
    }
}
