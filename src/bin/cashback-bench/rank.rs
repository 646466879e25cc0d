//! The rank index benchmark (issue 3): `engine/examples/rank_bench.rs`, with
//! its Redis sorted set side by side, run as a child process so that the
//! suite carries its figures. Its output is kept verbatim: the example words
//! its own goals and verdicts, and rewording them here could only drift.

use crate::common::{scale_counts, Options, Report};
use anyhow::{bail, Result};
use std::process::Stdio;

/// Options of `rank`.
#[derive(clap::Parser, Clone, Debug)]
pub struct Args {
    /// Ranked citizens (the example's own default: the programme's 8.4M).
    #[arg(long, default_value_t = 8_400_000)]
    pub citizens: usize,
}

impl Options for Args {
    fn scale(&mut self, factor: f64) {
        scale_counts(factor, [&mut self.citizens]);
    }

    fn command(&self) -> String {
        format!(
            "cargo run --release -p cashback-engine --example rank_bench -- {}",
            self.citizens
        )
    }
}

/// Runs the example: the release build beside this binary when there is one
/// (`make bench` builds it), else through cargo.
pub async fn run(args: &Args) -> Result<Report> {
    let built = std::env::current_exe()?
        .with_file_name("examples")
        .join("rank_bench");
    let mut command = if built.is_file() {
        tokio::process::Command::new(built)
    } else {
        let mut cargo = tokio::process::Command::new("cargo");
        cargo.args([
            "run",
            "--release",
            "-p",
            "cashback-engine",
            "--example",
            "rank_bench",
            "--",
        ]);
        cargo
    };
    eprintln!("rank: {}...", args.command());
    let output = command
        .arg(args.citizens.to_string())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .await?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "rank_bench exited with {}; its output:\n{text}",
            output.status
        );
    }
    Ok(Report {
        title: "Rank index, next to a Redis sorted set".into(),
        command: args.command(),
        setup: format!(
            "`engine/examples/rank_bench.rs` with {} ranked citizens (heavy-tailed counts as the programme's), its output verbatim.",
            args.citizens
        ),
        table: format!("```text\n{}\n```", text.trim_end()),
    })
}
