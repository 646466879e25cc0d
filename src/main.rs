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
    }
}
