//! `cashback`: the command line (PROTOCOL.md section 7).

use anyhow::Result;
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
        /// NATS server URL (overrides the configuration).
        #[arg(long, env = "CASHBACK_NATS_URL")]
        nats_url: Option<String>,
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
            status,
            demo,
        } => {
            let mut config = Config::load(config.as_deref())?;
            if let Some(url) = nats_url {
                config.nats_url = url;
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
