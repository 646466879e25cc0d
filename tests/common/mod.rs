//! Test harness: a real nats-server (2.15.1, project-local install) on a free
//! loopback port with its own temporary store, and the real `cashback`
//! binary as a child process. Never a mock.

#![allow(dead_code)]

use async_nats::jetstream;
use async_nats::HeaderMap;
use cashback::nats::embedded::NatsServer;
use chrono::{Days, NaiveDate};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The project's IBAN for test citizens.
pub const IBAN: &str = "IT60X0542811101000000123456";

/// A citizen's card hpan: 64 lower-case hex from a small number.
pub fn hpan(n: u64) -> String {
    format!("{n:064x}")
}

/// Today's date in Rome.
pub fn today() -> NaiveDate {
    cashback_engine::time::Timestamp::now().rome_date()
}

/// A configuration with an open period "CUR" around today, a closed one
/// ("2021H1", closed long ago) and the given reversal parking.
pub fn config_toml(park_days: u32) -> String {
    let start = today() - Days::new(60);
    let end = today() + Days::new(60);
    format!(
        r#"
reversal_park_days = {park_days}
shards = 3

[[periods]]
id = "2021H1"
start = "2021-01-01"
end = "2021-06-30"
grace_days = 10
min_transactions = 50
cashback_rate = "0.10"
max_cashback_per_transaction = "15.00"
max_cashback = "150.00"
supercashback_winners = 100000
supercashback_prize = "1500.00"

[[periods]]
id = "CUR"
start = "{start}"
end = "{end}"
grace_days = 10
min_transactions = 3
cashback_rate = "0.10"
max_cashback_per_transaction = "15.00"
max_cashback = "20.00"
supercashback_winners = 2
supercashback_prize = "1500.00"
"#
    )
}

/// A running engine process.
pub struct Engine {
    child: Child,
    /// `/metrics` and `/health` port.
    pub metrics_port: u16,
}

/// nats-server + engine + a client.
pub struct Harness {
    /// The broker.
    pub nats: NatsServer,
    /// A client of the app back end / payment network.
    pub client: async_nats::Client,
    /// JetStream on that client.
    pub js: jetstream::Context,
    /// The engine, when running.
    pub engine: Option<Engine>,
    /// Engine configuration file.
    pub config: PathBuf,
    /// Extra environment for the engine.
    pub env: Vec<(String, String)>,
    /// Holds the store and config; removed at drop.
    pub dir: TempDir,
}

impl Harness {
    /// Starts nats-server and the engine with `config` (TOML text).
    pub async fn start(config: &str) -> Harness {
        Self::start_with_env(config, &[]).await
    }

    /// Same, with extra environment variables for the engine.
    pub async fn start_with_env(config: &str, env: &[(&str, &str)]) -> Harness {
        let dir = tempfile::tempdir().expect("temp dir");
        let bin = NatsServer::locate("").expect("nats-server: run `make install-nats`");
        let nats = NatsServer::start(&bin, 0, &dir.path().join("nats")).expect("nats-server");
        let client = async_nats::connect(nats.url()).await.expect("connect");
        let js = jetstream::new(client.clone());
        let config_path = dir.path().join("cashback.toml");
        std::fs::write(&config_path, config).unwrap();
        let mut h = Harness {
            nats,
            client,
            js,
            engine: None,
            config: config_path,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            dir,
        };
        h.start_engine().await;
        h
    }

    /// Starts (or restarts) the engine process and waits until it answers.
    pub async fn start_engine(&mut self) {
        assert!(self.engine.is_none(), "engine already running");
        let metrics_port = NatsServer::free_port().unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("engine.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_cashback"))
            .args(["serve", "--config"])
            .arg(&self.config)
            .args(["--nats-url", self.nats.url()])
            .env(
                "CASHBACK_METRICS_LISTEN",
                format!("127.0.0.1:{metrics_port}"),
            )
            .env("CASHBACK_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start engine");
        self.engine = Some(Engine {
            child,
            metrics_port,
        });
        // Generous: a restart replays whatever came after the last
        // snapshot, which in the long durability run is a lot.
        let deadline = Instant::now() + Duration::from_secs(300);
        while Instant::now() < deadline {
            if let Some(h) = self.health().await {
                if h["replayed"] == json!(true) {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("engine did not become ready; log:\n{}", self.engine_log());
    }

    /// Stops the engine with SIGTERM and returns its exit code.
    pub fn stop_engine(&mut self) -> Option<i32> {
        let mut engine = self.engine.take()?;
        unsafe {
            libc::kill(engine.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let status = engine.child.wait().expect("wait engine");
        status.code()
    }

    /// Sends `signal` to the engine (SIGSTOP and SIGCONT stand for a process
    /// that stalls or is cut off for a while).
    pub fn signal_engine(&self, signal: libc::c_int) {
        let engine = self.engine.as_ref().expect("engine running");
        unsafe {
            libc::kill(engine.child.id() as libc::pid_t, signal);
        }
    }

    /// Waits at most `within` for the engine to exit on its own; its status,
    /// or None (then it is killed).
    pub async fn engine_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let mut engine = self.engine.take()?;
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = engine.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = engine.child.kill();
                let _ = engine.child.wait();
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills the engine with SIGKILL (a crash).
    pub fn kill_engine(&mut self) {
        if let Some(mut engine) = self.engine.take() {
            let _ = engine.child.kill();
            let _ = engine.child.wait();
        }
    }

    /// Restarts nats-server on the same port and store (a broker crash and
    /// recovery as the engine sees it).
    pub fn restart_nats(&mut self) {
        let port: u16 = self.nats.url().rsplit(':').next().unwrap().parse().unwrap();
        self.nats.stop();
        let bin = NatsServer::locate("").unwrap();
        self.nats = NatsServer::start(&bin, port, &self.dir.path().join("nats"))
            .expect("nats-server restart");
    }

    /// The engine's log so far.
    pub fn engine_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("engine.log")).unwrap_or_default()
    }

    /// Waits at most `within` for the engine's log to show `needle`; panics
    /// with the log otherwise.
    pub async fn engine_logs(&self, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.engine_log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "the engine's log does not show {needle:?}; log:\n{}",
                self.engine_log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// GET a path of the engine's metrics listener.
    pub async fn http_get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.engine.as_ref()?.metrics_port, path).await
    }

    /// The `/health` body.
    pub async fn health(&self) -> Option<Value> {
        let (_, body) = self.http_get("/health").await?;
        serde_json::from_str(&body).ok()
    }

    /// Waits until the engine has applied everything in the stream.
    pub async fn caught_up(&self) {
        let mut stream = self.js.get_stream("CASHBACK").await.expect("stream");
        let last = stream.info().await.unwrap().state.last_sequence;
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if let Some(h) = self.health().await {
                if h["applied_seq"].as_u64().unwrap_or(0) >= last {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "engine did not catch up to {last}; log:\n{}",
            self.engine_log()
        );
    }

    /// A request-reply call with a JSON body.
    pub async fn request(&self, subject: &str, body: Value) -> Value {
        let reply = tokio::time::timeout(
            Duration::from_secs(20),
            self.client
                .request(subject.to_owned(), body.to_string().into()),
        )
        .await
        .expect("request timed out")
        .expect("request failed");
        serde_json::from_slice(&reply.payload).expect("reply is JSON")
    }

    /// Enrolls a citizen (T&C accepted at `tc`), asserting success.
    pub async fn citizen(&self, id: &str, tc: &str) {
        let r = self
            .request(
                "cashback.enroll.citizen",
                json!({"citizen_id": id, "iban": IBAN, "tc_accepted_at": tc}),
            )
            .await;
        assert_eq!(r, json!({"ok": true}), "enroll citizen {id}");
    }

    /// Enrolls a card, asserting success.
    pub async fn card(&self, id: &str, hpan: &str, at: &str) {
        let r = self
            .request(
                "cashback.enroll.card",
                json!({"citizen_id": id, "hpan": hpan, "activated_at": at}),
            )
            .await;
        assert_eq!(r, json!({"ok": true}), "enroll card for {id}");
    }

    /// Publishes raw bytes with JetStream, optionally with a `Nats-Msg-Id`,
    /// and returns (stream sequence, duplicate flag).
    pub async fn publish_raw(
        &self,
        subject: &str,
        body: Vec<u8>,
        msg_id: Option<&str>,
    ) -> (u64, bool) {
        let mut headers = HeaderMap::new();
        if let Some(id) = msg_id {
            headers.insert("Nats-Msg-Id", id);
        }
        let ack = self
            .js
            .publish_with_headers(subject.to_owned(), headers, body.into())
            .await
            .expect("publish")
            .await
            .expect("puback");
        (ack.sequence, ack.duplicate)
    }

    /// Publishes an authorization on `cashback.auth.<acquirer_code>`.
    pub async fn publish(&self, auth: &Value) -> u64 {
        let subject = format!(
            "cashback.auth.{}",
            auth["acquirer_code"].as_str().unwrap_or("x")
        );
        self.publish_raw(&subject, auth.to_string().into_bytes(), None)
            .await
            .0
    }

    /// `cashback.query.citizen` for a period.
    pub async fn query(&self, id: &str, period: &str) -> Value {
        self.request(
            "cashback.query.citizen",
            json!({"citizen_id": id, "award_period": period}),
        )
        .await
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.kill_engine();
    }
}

/// An RFC 3339 instant `days` days and `secs` seconds from now, in UTC.
///
/// "Now" is fixed at the first call of the test process: a re-send must carry
/// the very same `trx_date` (it is part of the de-duplication key) even when
/// the clock ticks between the two sends.
pub fn at(days: i64, secs: i64) -> String {
    static NOW: std::sync::OnceLock<chrono::DateTime<chrono::Utc>> = std::sync::OnceLock::new();
    let now = *NOW.get_or_init(chrono::Utc::now);
    let t = now + chrono::Duration::days(days) + chrono::Duration::seconds(secs);
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A payment of `cents` with the given card, id and trx_date.
pub fn payment(hpan: &str, id: &str, trx_date: &str, cents: u64) -> Value {
    json!({
        "acquirer_code": "32875", "operation_type": "00", "circuit_type": "01",
        "hpan": hpan, "trx_date": trx_date, "id_trx_acquirer": id,
        "total_amount": cents, "currency": "978", "acquirer_id": "A1",
        "merchant_id": "M1", "terminal_id": "T1", "bin": "40000000", "mcc": "5411"
    })
}

/// A reversal of `cents` of a payment, optionally by correlation id.
pub fn reversal(
    hpan: &str,
    id: &str,
    trx_date: &str,
    cents: u64,
    correlation: Option<&str>,
) -> Value {
    let mut r = payment(hpan, id, trx_date, cents);
    r["operation_type"] = json!("01");
    if let Some(c) = correlation {
        r["correlation_id"] = json!(c);
    }
    r
}

/// An operator's `cashback.admin.exclude` / `cashback.admin.reinstate`
/// request for `payment` (PROTOCOL.md section 6): its de-duplication key,
/// `trx_date` exactly as it carried it, and a reason.
pub fn exclusion(payment: &Value, reason: &str) -> Value {
    let mut request = json!({ "reason": reason });
    for field in [
        "hpan",
        "acquirer_code",
        "acquirer_id",
        "id_trx_acquirer",
        "operation_type",
        "trx_date",
    ] {
        request[field] = payment[field].clone();
    }
    request
}

/// Collects messages of a subscription until `quiet` passes without one.
pub async fn drain(sub: &mut async_nats::Subscriber, quiet: Duration) -> Vec<Value> {
    use futures::StreamExt;
    let mut out = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(quiet, sub.next()).await {
        out.push(serde_json::from_slice(&m.payload).expect("JSON"));
    }
    out
}

/// A nats-server started from a configuration file (for instance
/// `config/nats-server.conf`), on a free loopback port, with its store in a
/// temporary folder and extra environment (the passwords the file reads).
/// Killed on drop.
pub struct ConfiguredNats {
    /// The process.
    child: Child,
    /// Its client port on 127.0.0.1.
    pub port: u16,
    /// Its log file.
    pub log: PathBuf,
}

impl ConfiguredNats {
    /// Starts `nats-server -c conf -a 127.0.0.1 -p <free port>` with `env`
    /// and waits until the port accepts connections.
    pub fn start(conf: &std::path::Path, log: PathBuf, env: &[(&str, &str)]) -> ConfiguredNats {
        let bin = NatsServer::locate("").expect("nats-server: run `make install-nats`");
        let port = NatsServer::free_port().unwrap();
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin)
            .arg("-c")
            .arg(conf)
            .args(["-a", "127.0.0.1", "-p"])
            .arg(port.to_string())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start nats-server");
        let mut server = ConfiguredNats { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!(
                    "nats-server exited with {status}:\n{}",
                    std::fs::read_to_string(&server.log).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for ConfiguredNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `cashback serve` child with its own config, URL and environment,
/// killed on drop; for tests whose broker is not the harness's.
pub struct EngineProcess {
    /// The process.
    child: Option<Child>,
    /// `/metrics` and `/health` port.
    pub metrics_port: u16,
    /// Its log file.
    pub log: PathBuf,
}

impl EngineProcess {
    /// Starts the engine and waits until `/health` says it replayed the log.
    pub async fn start(
        config: &std::path::Path,
        url: &str,
        env: &[(&str, &str)],
        log: PathBuf,
    ) -> EngineProcess {
        let metrics_port = NatsServer::free_port().unwrap();
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_cashback"))
            .args(["serve", "--config"])
            .arg(config)
            .args(["--nats-url", url])
            .env(
                "CASHBACK_METRICS_LISTEN",
                format!("127.0.0.1:{metrics_port}"),
            )
            .env("CASHBACK_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start engine");
        let engine = EngineProcess {
            child: Some(child),
            metrics_port,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some((_, body)) = http_get(metrics_port, "/health").await {
                if serde_json::from_str::<Value>(&body).is_ok_and(|h| h["replayed"] == json!(true))
                {
                    return engine;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("engine did not become ready; log:\n{}", engine.log_text());
    }

    /// Stops it with SIGTERM (a clean shutdown, which stores a snapshot)
    /// and returns its exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        child.wait().expect("wait engine").code()
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until it has applied at least `seq`.
    pub async fn applied(&self, seq: u64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some((_, body)) = http_get(self.metrics_port, "/health").await {
                let h: Value = serde_json::from_str(&body).unwrap_or_default();
                if h["applied_seq"].as_u64().unwrap_or(0) >= seq {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("engine did not apply {seq}; log:\n{}", self.log_text());
    }
}

impl Drop for EngineProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// GET `path` on 127.0.0.1:`port`: (status, body).
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    cashback::commands::engine_health::get(&format!("127.0.0.1:{port}"), path).await
}

#[allow(unused_imports)]
pub use cashback::commands::engine_health::metric_value as sample;

/// A 3-server nats-server cluster on loopback, each server started from
/// the shipped `config/nats-cluster/cashback-<i>.conf` (so the roles and
/// permissions of `config/nats-server.conf` hold), on free ports given on
/// the command line, with a store of its own under the test's folder.
/// Servers can be killed (SIGKILL, a crash) and restarted on the same ports
/// and store. Every server is killed on drop.
pub struct NatsCluster {
    /// The three servers.
    servers: Vec<ClusterServer>,
    /// Routes to all three, for each server's `--routes`.
    routes: String,
    /// The passwords the configuration reads from the environment.
    passwords: Vec<(String, String)>,
}

/// One server of a [`NatsCluster`].
struct ClusterServer {
    /// Its configuration file.
    conf: PathBuf,
    /// The process, while it runs.
    child: Option<Child>,
    /// Client port on 127.0.0.1.
    port: u16,
    /// Route port.
    cluster_port: u16,
    /// HTTP monitoring port (`/varz`, `/jsz`).
    monitor_port: u16,
    /// Its JetStream store.
    store: PathBuf,
    /// Its log, appended across restarts.
    log: PathBuf,
}

impl NatsCluster {
    /// The password a test gives `user` (`CASHBACK_NATS_<USER>_PASSWORD`).
    pub fn password(user: &str) -> String {
        Self::password_of(&format!("CASHBACK_NATS_{}_PASSWORD", user.to_uppercase()))
    }

    fn password_of(variable: &str) -> String {
        format!("{}-test", variable.to_lowercase())
    }

    /// Starts the three servers with their stores and logs in `dir`, and
    /// waits until JetStream has a meta leader that every server knows.
    pub async fn start(dir: &std::path::Path) -> NatsCluster {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config");
        // Every password variable the shipped configuration reads: a user
        // added there is covered here without a second list.
        let shipped = std::fs::read_to_string(root.join("nats-server.conf")).unwrap();
        let mut passwords: Vec<(String, String)> = shipped
            .split('$')
            .skip(1)
            .map(|rest| {
                rest.chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect::<String>()
            })
            .filter(|v| v.ends_with("_PASSWORD"))
            .map(|v| {
                let password = Self::password_of(&v);
                (v, password)
            })
            .collect();
        passwords.sort();
        passwords.dedup();
        assert!(passwords.len() >= 3, "no passwords in nats-server.conf?");
        let free = || NatsServer::free_port().unwrap();
        let servers: Vec<ClusterServer> = (0..3)
            .map(|i| ClusterServer {
                conf: root.join(format!("nats-cluster/cashback-{i}.conf")),
                child: None,
                port: free(),
                cluster_port: free(),
                monitor_port: free(),
                store: dir.join(format!("nats-{i}")),
                log: dir.join(format!("nats-{i}.log")),
            })
            .collect();
        let routes = servers
            .iter()
            .map(|s| format!("nats://127.0.0.1:{}", s.cluster_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = NatsCluster {
            servers,
            routes,
            passwords,
        };
        for i in 0..3 {
            cluster.spawn(i);
        }
        cluster.ready().await;
        cluster
    }

    fn spawn(&mut self, i: usize) {
        let bin = NatsServer::locate("").expect("nats-server: run `make install-nats`");
        let s = &mut self.servers[i];
        assert!(s.child.is_none(), "server {i} is running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&s.log)
            .unwrap();
        let child = Command::new(bin)
            .arg("-c")
            .arg(&s.conf)
            .args(["-a", "127.0.0.1", "-p"])
            .arg(s.port.to_string())
            .arg("--cluster")
            .arg(format!("nats://127.0.0.1:{}", s.cluster_port))
            .args(["--routes", &self.routes, "-m"])
            .arg(s.monitor_port.to_string())
            .envs(self.passwords.iter().map(|(k, v)| (k, v)))
            .env("CASHBACK_NATS_STORE_DIR", &s.store)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start nats-server");
        s.child = Some(child);
    }

    /// The client URLs of all three servers, running or not.
    pub fn urls(&self) -> Vec<String> {
        self.servers
            .iter()
            .map(|s| format!("nats://127.0.0.1:{}", s.port))
            .collect()
    }

    /// [`NatsCluster::urls`] comma-separated, as `nats_url` takes them.
    pub fn url(&self) -> String {
        self.urls().join(",")
    }

    /// Connects as `user` (with the `_INBOX_<user>` inbox the roles
    /// configuration expects) to any running server.
    pub async fn connect(&self, user: &str) -> async_nats::Client {
        async_nats::ConnectOptions::new()
            .user_and_password(user.into(), Self::password(user))
            .custom_inbox_prefix(format!("_INBOX_{user}"))
            .connect(self.urls())
            .await
            .unwrap_or_else(|e| panic!("{user} cannot log in to the cluster: {e}"))
    }

    /// The engine's credentials, as `cashback serve` takes them from its
    /// environment.
    pub fn engine_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("CASHBACK_NATS_USER", "engine".into()),
            ("CASHBACK_NATS_PASSWORD", Self::password("engine")),
        ]
    }

    /// `/varz` or `/jsz` of server `i`, if it answers.
    async fn monitor(&self, i: usize, path: &str) -> Option<Value> {
        let (_, body) = http_get(self.servers[i].monitor_port, path).await?;
        serde_json::from_str(&body).ok()
    }

    /// The index of the server called `name` (its `server_name`).
    pub async fn index_of(&self, name: &str) -> Option<usize> {
        for i in 0..self.servers.len() {
            if let Some(varz) = self.monitor(i, "/varz").await {
                if varz["server_name"] == json!(name) {
                    return Some(i);
                }
            }
        }
        None
    }

    /// The server name of the JetStream meta leader, as a running server
    /// sees it.
    pub async fn meta_leader(&self) -> Option<String> {
        for (i, s) in self.servers.iter().enumerate() {
            if s.child.is_some() {
                let jsz = self.monitor(i, "/jsz").await.unwrap_or_default();
                if let Some(leader) = jsz["meta_cluster"]["leader"].as_str() {
                    return Some(leader.to_owned());
                }
            }
        }
        None
    }

    /// Waits until every running server names the same JetStream meta
    /// leader, one of the running servers, which sees every other running
    /// server current (so that replicas can be placed on all of them).
    pub async fn ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut views = Vec::new();
            for (i, s) in self.servers.iter().enumerate() {
                if s.child.is_some() {
                    let name = self.monitor(i, "/varz").await.unwrap_or_default()["server_name"]
                        .as_str()
                        .map(str::to_owned);
                    views.push((name, self.monitor(i, "/jsz").await.unwrap_or_default()));
                }
            }
            let leader_of = |jsz: &Value| jsz["meta_cluster"]["leader"].as_str().map(str::to_owned);
            let leader = views.first().and_then(|(_, jsz)| leader_of(jsz));
            let agreed = views.iter().all(|(_, jsz)| leader_of(jsz) == leader);
            let followers_current = views
                .iter()
                .find(|(name, _)| leader.is_some() && *name == leader)
                .and_then(|(_, jsz)| jsz["meta_cluster"]["replicas"].as_array().cloned())
                .map(|replicas| {
                    replicas
                        .iter()
                        .filter(|r| r["current"] == json!(true))
                        .count()
                        >= views.len() - 1
                });
            if agreed && followers_current == Some(true) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no JetStream meta leader in the cluster; logs:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills server `i` with SIGKILL: a crash, no leadership handed over.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.servers[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts server `i` again on its ports and store, and waits until the
    /// cluster has a meta leader again.
    pub async fn restart(&mut self, i: usize) {
        self.spawn(i);
        self.ready().await;
    }

    /// The servers' logs so far.
    pub fn logs(&self) -> String {
        self.servers
            .iter()
            .map(|s| {
                format!(
                    "--- {}:\n{}",
                    s.log.display(),
                    std::fs::read_to_string(&s.log).unwrap_or_default()
                )
            })
            .collect()
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.servers.len() {
            self.kill(i);
        }
    }
}
