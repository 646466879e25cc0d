//! Configuration: a TOML file (only `[[periods]]` is required), defaults for
//! everything else, and environment variables over both.

use anyhow::{bail, Context, Result};
use cashback_engine::authorization::DEFAULT_MAX_AUTHORIZATION_BYTES;
use cashback_engine::parking::ParkingLimits;
use cashback_engine::period::{AwardPeriod, Periods};
use cashback_engine::settings::Settings;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The configuration shipped in `config/cashback.toml`, used when no
/// `--config` is given.
pub const DEFAULT_TOML: &str = include_str!("../config/cashback.toml");

/// Everything `cashback serve` can be told.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// NATS server URL, or several servers of one cluster comma-separated
    /// (the client then connects to any that answers and fails over to the
    /// others); empty starts an embedded nats-server.
    pub nats_url: String,
    /// First token of every subject.
    pub subject_prefix: String,
    /// JetStream stream of authorizations and enrollment journal.
    pub stream_name: String,
    /// Stream retention, days.
    pub stream_max_age_days: u32,
    /// How long the rejections' stream keeps them, days.
    pub rejected_max_age_days: u32,
    /// Replicas of the stream and of the snapshot bucket when `serve`
    /// creates them: 3 on a 3-server cluster, so that losing one server
    /// loses neither the log nor the state. Existing ones keep theirs.
    pub stream_replicas: usize,
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
    /// User the engine authenticates to NATS as (empty: no credentials), so
    /// that the broker grants it the engine's permissions and nobody else's.
    pub nats_user: String,
    /// File holding that user's password (one line), so that the password
    /// lives in a secret file rather than in this configuration. The
    /// environment variable `CASHBACK_NATS_PASSWORD` is the other way.
    pub nats_password_file: String,
    /// The password itself: only from `CASHBACK_NATS_PASSWORD`, never from
    /// the file (a secret has no place in a checked-in configuration).
    #[serde(skip)]
    pub nats_password: Secret,
    /// Subject prefix of the engine's reply inboxes; empty: `_INBOX_<user>`
    /// with a user, else NATS's `_INBOX`. Per-user inboxes let the broker
    /// keep each role from reading the replies meant for another.
    pub nats_inbox_prefix: String,
    /// PEM file of the CA(s) that sign the NATS server's certificate (TLS).
    pub nats_tls_ca: String,
    /// PEM client certificate, when the server asks for one (mutual TLS).
    pub nats_tls_cert: String,
    /// PEM private key of `nats_tls_cert`.
    pub nats_tls_key: String,
    /// Refuse to talk to NATS without TLS.
    pub nats_tls_required: bool,
    /// Largest authorization body; longer ones are rejected unparsed.
    pub max_authorization_bytes: usize,
    /// Most reversals waiting for their payment on one card.
    pub max_parked_per_card: usize,
    /// Most reversals waiting for their payment in the whole engine,
    /// enforced as an equal share per partition (see `parking`).
    pub max_parked_total: usize,
    /// This process's node index in a cluster (PROTOCOL.md section 8): it
    /// owns the partitions `p` with `p % nodes == node`.
    pub node: u16,
    /// Nodes in the cluster (1: a single process owns every partition).
    pub nodes: u16,
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
            rejected_max_age_days: 7,
            stream_replicas: 1,
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
            nats_user: String::new(),
            nats_password_file: String::new(),
            nats_password: Secret::default(),
            nats_inbox_prefix: String::new(),
            nats_tls_ca: String::new(),
            nats_tls_cert: String::new(),
            nats_tls_key: String::new(),
            nats_tls_required: false,
            max_authorization_bytes: DEFAULT_MAX_AUTHORIZATION_BYTES,
            max_parked_per_card: ParkingLimits::DEFAULT_PER_CARD,
            max_parked_total: ParkingLimits::DEFAULT_TOTAL,
            node: 0,
            nodes: 1,
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
        if let Some(v) = var("CASHBACK_NODE") {
            self.node = v.parse().context("CASHBACK_NODE must be a number")?;
        }
        if let Some(v) = var("CASHBACK_NODES") {
            self.nodes = v.parse().context("CASHBACK_NODES must be a number")?;
        }
        if let Some(v) = var("CASHBACK_STREAM_REPLICAS") {
            self.stream_replicas = v
                .parse()
                .context("CASHBACK_STREAM_REPLICAS must be a number")?;
        }
        let env = NatsClientOptions::from_vars(&var)?;
        let set = |field: &mut String, value: String| {
            if !value.is_empty() {
                *field = value;
            }
        };
        set(&mut self.nats_user, env.user);
        set(&mut self.nats_password.0, env.password.0);
        set(&mut self.nats_password_file, env.password_file);
        set(&mut self.nats_inbox_prefix, env.inbox_prefix);
        set(&mut self.nats_tls_ca, env.tls_ca);
        set(&mut self.nats_tls_cert, env.tls_cert);
        set(&mut self.nats_tls_key, env.tls_key);
        if var("CASHBACK_NATS_TLS_REQUIRED").is_some() {
            self.nats_tls_required = env.tls_required;
        }
        Ok(())
    }

    /// How the engine connects to NATS, from the `nats_*` keys.
    pub fn nats_client(&self) -> NatsClientOptions {
        NatsClientOptions {
            user: self.nats_user.clone(),
            password: self.nats_password.clone(),
            password_file: self.nats_password_file.clone(),
            inbox_prefix: self.nats_inbox_prefix.clone(),
            tls_ca: self.nats_tls_ca.clone(),
            tls_cert: self.nats_tls_cert.clone(),
            tls_key: self.nats_tls_key.clone(),
            tls_required: self.nats_tls_required,
        }
    }

    /// The bounds on reversals waiting for their payment.
    pub fn parking_limits(&self) -> ParkingLimits {
        ParkingLimits::new(
            self.max_parked_per_card,
            self.max_parked_total,
            self.partitions,
        )
    }

    /// Everything decisions depend on (what a snapshot's fingerprint covers).
    pub fn settings(&self) -> Result<Arc<Settings>> {
        Ok(Arc::new(Settings {
            periods: Arc::new(self.periods()?),
            partitions: self.partitions,
            park_days: self.reversal_park_days,
            limits: self.parking_limits(),
            max_authorization_bytes: self.max_authorization_bytes,
        }))
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
        if self.nodes == 0 || self.node >= self.nodes {
            bail!(
                "node must be below nodes (node {} of {})",
                self.node,
                self.nodes
            );
        }
        if self.nodes > self.partitions {
            bail!("nodes must not exceed partitions: a node without partitions holds nothing");
        }
        if !(1..=5).contains(&self.stream_replicas) {
            bail!("stream_replicas must be 1 to 5 (JetStream's limit)");
        }
        if self.max_authorization_bytes < 512 {
            bail!("max_authorization_bytes must be at least 512 (a valid authorization is about 300 bytes)");
        }
        if self.nats_tls_cert.is_empty() != self.nats_tls_key.is_empty() {
            bail!("nats_tls_cert and nats_tls_key go together");
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

/// A secret string whose `Debug` never shows it, so that printing a
/// configuration cannot leak a password into a log.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

/// How a process of this binary connects to NATS: credentials, reply inbox
/// prefix and TLS. `serve` takes it from its configuration; the client
/// commands (`import`, `awards`), which have no configuration file, from the
/// same `CASHBACK_NATS_*` environment variables and from `user:password@`
/// in the URL.
#[derive(Clone, Debug, Default)]
pub struct NatsClientOptions {
    /// User name (empty: none).
    pub user: String,
    /// Its password (from the environment or the URL).
    pub password: Secret,
    /// A file holding the password, read at connect time.
    pub password_file: String,
    /// Reply inbox prefix; empty: `_INBOX_<user>` with a user, else `_INBOX`.
    pub inbox_prefix: String,
    /// PEM CA file that signs the server's certificate.
    pub tls_ca: String,
    /// PEM client certificate (mutual TLS).
    pub tls_cert: String,
    /// PEM key of the client certificate.
    pub tls_key: String,
    /// Refuse plain connections.
    pub tls_required: bool,
}

impl NatsClientOptions {
    /// From `CASHBACK_NATS_USER`, `CASHBACK_NATS_PASSWORD`,
    /// `CASHBACK_NATS_PASSWORD_FILE`, `CASHBACK_NATS_INBOX_PREFIX`,
    /// `CASHBACK_NATS_TLS_CA`, `CASHBACK_NATS_TLS_CERT`,
    /// `CASHBACK_NATS_TLS_KEY` and `CASHBACK_NATS_TLS_REQUIRED`.
    pub fn from_env() -> Result<NatsClientOptions> {
        Self::from_vars(&|k: &str| std::env::var(k).ok())
    }

    fn from_vars(var: &impl Fn(&str) -> Option<String>) -> Result<NatsClientOptions> {
        let get = |k: &str| var(k).unwrap_or_default();
        let tls_required = match var("CASHBACK_NATS_TLS_REQUIRED").as_deref() {
            None | Some("") | Some("0") | Some("false") => false,
            Some("1") | Some("true") => true,
            Some(other) => bail!("CASHBACK_NATS_TLS_REQUIRED must be true or false, not {other}"),
        };
        Ok(NatsClientOptions {
            user: get("CASHBACK_NATS_USER"),
            password: Secret(get("CASHBACK_NATS_PASSWORD")),
            password_file: get("CASHBACK_NATS_PASSWORD_FILE"),
            inbox_prefix: get("CASHBACK_NATS_INBOX_PREFIX"),
            tls_ca: get("CASHBACK_NATS_TLS_CA"),
            tls_cert: get("CASHBACK_NATS_TLS_CERT"),
            tls_key: get("CASHBACK_NATS_TLS_KEY"),
            tls_required,
        })
    }

    /// Applies these options to `options` for connecting to `url`. Returns
    /// the URL without any `user:password@` (async-nats ignores credentials
    /// in a URL, and a URL with a password must not be printed), with those
    /// credentials used when no user is configured.
    pub fn apply(
        &self,
        url: &str,
        mut options: async_nats::ConnectOptions,
    ) -> Result<(String, async_nats::ConnectOptions)> {
        let (url, from_url) = split_credentials(url);
        let (mut user, mut password) = (self.user.clone(), self.password.0.clone());
        if user.is_empty() {
            if let Some((u, p)) = from_url {
                (user, password) = (u, p);
            }
        }
        if !self.password_file.is_empty() {
            let text = std::fs::read_to_string(&self.password_file).with_context(|| {
                format!("cannot read the NATS password file {}", self.password_file)
            })?;
            password = text.trim_end_matches(['\r', '\n']).to_owned();
        }
        if !user.is_empty() {
            options = options.user_and_password(user.clone(), password);
        }
        let inbox = if !self.inbox_prefix.is_empty() {
            self.inbox_prefix.clone()
        } else if !user.is_empty() {
            format!("_INBOX_{user}")
        } else {
            String::new()
        };
        if !inbox.is_empty() {
            options = options.custom_inbox_prefix(inbox);
        }
        if !self.tls_ca.is_empty() {
            options = options.add_root_certificates(PathBuf::from(&self.tls_ca));
        }
        if !self.tls_cert.is_empty() {
            options = options.add_client_certificate(
                PathBuf::from(&self.tls_cert),
                PathBuf::from(&self.tls_key),
            );
        }
        if self.tls_required {
            options = options.require_tls(true);
        }
        Ok((url, options))
    }

    /// Connects to `url` with `options` plus these.
    pub async fn connect(
        &self,
        url: &str,
        options: async_nats::ConnectOptions,
    ) -> Result<async_nats::Client> {
        let (url, options) = self.apply(url, options)?;
        options
            .connect(server_addrs(&url)?)
            .await
            .with_context(|| format!("cannot connect to NATS at {url}"))
    }
}

/// Splits `user:password@` off every server of a (comma-separated) NATS URL;
/// returns the URL without them and the first credentials found, with
/// `%XX` escapes decoded.
pub fn split_credentials(url: &str) -> (String, Option<(String, String)>) {
    let mut found = None;
    let servers: Vec<String> = url
        .split(',')
        .map(|server| {
            let (scheme, rest) = match server.find("://") {
                Some(i) => server.split_at(i + 3),
                None => ("", server),
            };
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => {
                    let userinfo = &rest[..at];
                    let (u, p) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                    found.get_or_insert((percent_decode(u), percent_decode(p)));
                    format!("{scheme}{}", &rest[at + 1..])
                }
                None => server.to_owned(),
            }
        })
        .collect();
    (servers.join(","), found)
}

/// The servers of a NATS URL that may list several, comma-separated
/// (PROTOCOL.md section 7): async-nats parses one address per string.
/// Give it the URL without credentials (see [`split_credentials`]): the
/// error names the URL.
pub fn server_addrs(url: &str) -> Result<Vec<async_nats::ServerAddr>> {
    url.split(',')
        .map(str::trim)
        .map(|server| {
            if server.is_empty() {
                bail!("an empty server in the NATS URL {url}");
            }
            server
                .parse()
                .with_context(|| format!("invalid NATS server {server} in {url}"))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
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
    fn credentials_come_from_the_environment_or_the_url_and_never_print() {
        let mut c: Config = toml::from_str(DEFAULT_TOML).unwrap();
        c.apply_env(|k| match k {
            "CASHBACK_NATS_USER" => Some("engine".into()),
            "CASHBACK_NATS_PASSWORD" => Some("s3cret".into()),
            "CASHBACK_NATS_TLS_REQUIRED" => Some("true".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.nats_user, "engine");
        assert_eq!(c.nats_password.0, "s3cret");
        assert!(c.nats_tls_required);
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(toml::from_str::<Config>("nats_password = \"x\"").is_err());
        assert_eq!(
            split_credentials("nats://app:p%40ss@127.0.0.1:4222,nats://h2:1"),
            (
                "nats://127.0.0.1:4222,nats://h2:1".to_owned(),
                Some(("app".to_owned(), "p@ss".to_owned()))
            )
        );
        assert_eq!(
            split_credentials("nats://127.0.0.1:4222"),
            ("nats://127.0.0.1:4222".to_owned(), None)
        );
    }

    #[test]
    fn a_url_may_list_several_servers_each_losing_its_credentials() {
        let options = NatsClientOptions::default();
        let (url, _) = options
            .apply(
                "nats://127.0.0.1:4222, nats://engine:p%40ss@127.0.0.1:4223,127.0.0.1:4224",
                async_nats::ConnectOptions::new(),
            )
            .unwrap();
        assert_eq!(
            url,
            "nats://127.0.0.1:4222, nats://127.0.0.1:4223,127.0.0.1:4224"
        );
        let servers = server_addrs(&url).unwrap();
        assert_eq!(
            servers.iter().map(|s| s.port()).collect::<Vec<_>>(),
            [4222, 4223, 4224]
        );
        assert!(servers
            .iter()
            .all(|s| s.host() == "127.0.0.1" && s.username().is_none()));
        assert_eq!(server_addrs("tls://n1:4222").unwrap().len(), 1);
        assert!(server_addrs("nats://a:1,,nats://b:2").is_err());
        assert!(server_addrs("nats://a:1,http://b:2").is_err());
        assert!(server_addrs("").is_err());
    }

    #[test]
    fn stream_replicas_come_from_the_environment_within_jetstreams_limit() {
        let mut c: Config = toml::from_str(DEFAULT_TOML).unwrap();
        assert_eq!(c.stream_replicas, 1);
        c.apply_env(|k| (k == "CASHBACK_STREAM_REPLICAS").then(|| "3".to_string()))
            .unwrap();
        assert_eq!(c.stream_replicas, 3);
        c.check().unwrap();
        c.stream_replicas = 6;
        assert!(c.check().is_err());
        assert!(c
            .apply_env(|k| (k == "CASHBACK_STREAM_REPLICAS").then(|| "x".to_string()))
            .is_err());
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
