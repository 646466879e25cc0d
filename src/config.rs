//! Configuration: a TOML file (only `[[periods]]` is required), defaults for
//! everything else, and environment variables over both.

use anyhow::{bail, Context, Result};
use cashback_engine::period::{AwardPeriod, Periods};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The configuration shipped in `config/cashback.toml`, used when no
/// `--config` is given.
pub const DEFAULT_TOML: &str = include_str!("../config/cashback.toml");

/// Everything `cashback serve` can be told.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// NATS server URL; empty starts an embedded nats-server.
    pub nats_url: String,
    /// First token of every subject.
    pub subject_prefix: String,
    /// JetStream stream of authorizations and enrollment journal.
    pub stream_name: String,
    /// Stream retention, days.
    pub stream_max_age_days: u32,
    /// JetStream duplicate window for `Nats-Msg-Id`, seconds.
    pub duplicate_window_secs: u64,
    /// Citizen shard actors.
    pub shards: usize,
    /// Partitions citizens hash into.
    pub partitions: u16,
    /// Messages handed to shards at a time.
    pub batch_size: usize,
    /// Days a reversal waits for its payment.
    pub reversal_park_days: u32,
    /// Minimum time between two position pushes of one citizen, ms.
    pub push_interval_ms: u64,
    /// Time between leaderboard pushes while it changes, ms.
    pub leaderboard_interval_ms: u64,
    /// Seconds between snapshots (0: none; the log is replayed from its start).
    pub snapshot_interval_secs: u64,
    /// Purge the stream up to the oldest kept snapshot after each snapshot.
    pub purge_after_snapshot: bool,
    /// Address of `/metrics` and `/health`.
    pub metrics_listen: String,
    /// Lag (messages) above which `/health` answers 503.
    pub health_max_lag: u64,
    /// Embedded nats-server store.
    pub data_dir: PathBuf,
    /// Embedded nats-server port.
    pub embedded_nats_port: u16,
    /// Path of the nats-server binary for embedded mode; empty: look in
    /// `.local/nats-server/bin`, then `PATH`.
    pub nats_server_bin: String,
    /// Award periods.
    pub periods: Vec<AwardPeriod>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            nats_url: String::new(),
            subject_prefix: "cashback".into(),
            stream_name: "CASHBACK".into(),
            stream_max_age_days: 400,
            duplicate_window_secs: 120,
            shards: 2,
            partitions: cashback_engine::partition::DEFAULT_PARTITIONS,
            batch_size: 2048,
            reversal_park_days: 30,
            push_interval_ms: 1000,
            leaderboard_interval_ms: 1000,
            snapshot_interval_secs: 300,
            purge_after_snapshot: true,
            metrics_listen: "0.0.0.0:9464".into(),
            health_max_lag: 10_000,
            data_dir: "data".into(),
            embedded_nats_port: 4222,
            nats_server_bin: String::new(),
            periods: Vec::new(),
        }
    }
}

impl Config {
    /// Reads `path` (or the shipped default), then applies the environment.
    pub fn load(path: Option<&Path>) -> Result<Config> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p)
                .with_context(|| format!("cannot read configuration {}", p.display()))?,
            None => DEFAULT_TOML.to_owned(),
        };
        let mut config: Config = toml::from_str(&text).with_context(|| match path {
            Some(p) => format!("invalid configuration {}", p.display()),
            None => "invalid built-in configuration".into(),
        })?;
        config.apply_env(|k| std::env::var(k).ok())?;
        config.check()?;
        Ok(config)
    }

    /// Applies `CASHBACK_*` variables, read through `var`.
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<()> {
        if let Some(v) = var("CASHBACK_NATS_URL") {
            self.nats_url = v;
        }
        if let Some(v) = var("CASHBACK_METRICS_LISTEN") {
            self.metrics_listen = v;
        }
        if let Some(v) = var("CASHBACK_DATA_DIR") {
            self.data_dir = v.into();
        }
        if let Some(v) = var("CASHBACK_NATS_SERVER_BIN") {
            self.nats_server_bin = v;
        }
        if let Some(v) = var("CASHBACK_SHARDS") {
            self.shards = v.parse().context("CASHBACK_SHARDS must be a number")?;
        }
        Ok(())
    }

    /// Refuses configurations that cannot work, with a clear reason.
    pub fn check(&self) -> Result<()> {
        if self.shards == 0 || self.shards > 1024 {
            bail!("shards must be 1 to 1024");
        }
        if self.partitions == 0 || (self.partitions as usize) < self.shards {
            bail!("partitions must be at least the number of shards");
        }
        if self.batch_size == 0 {
            bail!("batch_size must be positive");
        }
        if self.subject_prefix.is_empty()
            || self.subject_prefix.contains(['*', '>', ' '])
            || self.subject_prefix.starts_with('.')
            || self.subject_prefix.ends_with('.')
        {
            bail!("subject_prefix must be a plain subject like \"cashback\"");
        }
        self.periods()?;
        Ok(())
    }

    /// The checked award periods.
    pub fn periods(&self) -> Result<Periods> {
        if self.periods.is_empty() {
            bail!("no [[periods]] configured");
        }
        Periods::new(self.periods.clone()).map_err(|e| anyhow::anyhow!(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_configuration_loads() {
        let c: Config = toml::from_str(DEFAULT_TOML).unwrap();
        c.check().unwrap();
        assert_eq!(c.periods.len(), 3);
        assert_eq!(c.shards, Config::default().shards);
        assert_eq!(c.batch_size, Config::default().batch_size);
    }

    #[test]
    fn periods_alone_are_enough_and_the_environment_wins() {
        let periods_only = DEFAULT_TOML
            .split_once("\n[[periods]]\n")
            .map(|(_, rest)| format!("[[periods]]\n{rest}"))
            .unwrap();
        let mut c: Config = toml::from_str(&periods_only).unwrap();
        assert_eq!(c.subject_prefix, "cashback");
        c.apply_env(|k| (k == "CASHBACK_NATS_URL").then(|| "nats://x:1".to_string()))
            .unwrap();
        assert_eq!(c.nats_url, "nats://x:1");
        c.check().unwrap();
    }

    #[test]
    fn bad_values_are_refused() {
        let mut c: Config = toml::from_str(DEFAULT_TOML).unwrap();
        c.shards = 0;
        assert!(c.check().is_err());
        let mut c: Config = toml::from_str(DEFAULT_TOML).unwrap();
        c.subject_prefix = "a.>".into();
        assert!(c.check().is_err());
        assert!(toml::from_str::<Config>("bogus = 1").is_err());
    }
}
