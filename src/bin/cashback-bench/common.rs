//! What every benchmark needs, written once: an embedded nats-server with the
//! engine's stream, the engine as a child process watched through `/health`,
//! `/metrics` and `/proc`, publishers (bulk and paced), request loads, the
//! simulator's citizens, latency percentiles and the report's header lines.
//!
//! The engine runs as a separate release process (`cashback serve`), never in
//! the benchmark's process, so that its CPU, memory and scheduling are those
//! of production and the benchmark's own work cannot hide inside its figures.

use anyhow::{bail, Context, Result};
use async_nats::jetstream;
use async_nats::HeaderMap;
use cashback::config::Config;
use cashback::nats::embedded::NatsServer;
use cashback::nats::stream::ensure_stream;
use cashback::nats::subjects::Subjects;
use cashback::sim::{cards_of, citizen_id, hpan, Generator, Outgoing};
use cashback_engine::enrollment::{make_iban, EnrollCommand};
use cashback_engine::time::Timestamp;
use futures::StreamExt;
use rust_decimal::Decimal;
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How every table's command starts: the benchmark binary through cargo, so
/// that a reader can paste it.
pub const BENCH_COMMAND: &str = "cargo run --release --bin cashback-bench --";

/// Cashback rate of the benchmark period: the programme's 10%.
pub const RATE: &str = "0.10";
/// Per-payment cashback cap of the benchmark period: the programme's 15 EUR.
pub const CAP: &str = "15.00";

/// JetStream publish acknowledgements a publisher keeps outstanding: the
/// setting MEASURED.md's "150-190 k/s" reference was taken with.
pub const ACKS_IN_FLIGHT: usize = 4096;

/// How long an engine may take to catch up before the benchmark gives up:
/// long enough for the largest default (1M citizens' memory run) on a slow
/// machine, short enough that a stuck engine does not hang `make bench`.
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(900);

/// "met" or "**missed**": the one place that words a verdict, so that every
/// table says it alike.
pub fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "**missed**"
    }
}

/// One benchmark's result: `main` adds the machine and the date (once per
/// table when run alone, once for the whole suite under `all`).
pub struct Report {
    /// Section title, e.g. "Catch-up".
    pub title: String,
    /// The exact command that reproduces this table.
    pub command: String,
    /// One paragraph on the set-up (sizes, what is measured and how).
    pub setup: String,
    /// The Markdown table (and any notes below it).
    pub table: String,
}

impl Report {
    /// The report as Markdown; `context` (machine and date) is printed under
    /// the title when given.
    pub fn render(&self, context: Option<&str>) -> String {
        let context = context.map(|c| format!("{c}\n")).unwrap_or_default();
        format!(
            "### {}\n{context}Command: `{}`\n\n{}\n\n{}\n",
            self.title, self.command, self.setup, self.table
        )
    }
}

/// "2 cores, 24 GiB, <CPU model>".
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem_gib = physical_memory() as f64 / (1u64 << 30) as f64;
    format!(
        "{} cores, {mem_gib:.0} GiB, {cpu}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    )
}

/// This machine's physical memory (`MemTotal`), bytes; 0 if unknown.
pub fn physical_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// The nats-server's own version line, so that a table says what it ran on.
pub fn nats_version() -> String {
    NatsServer::locate("")
        .ok()
        .and_then(|bin| Command::new(bin).arg("--version").output().ok())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "nats-server (version unknown)".into())
}

/// "Machine: ... . nats-server ... (embedded, file storage), release build.
/// Date: ...": the context line of a table or of the suite.
pub fn context_line() -> String {
    format!(
        "Machine: {}. {} (embedded, file storage), release build. Date: {}.",
        machine(),
        nats_version(),
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
    )
}

/// Latencies of one series, sorted once, read as percentiles.
pub struct Latencies {
    /// Sorted ascending.
    sorted: Vec<Duration>,
}

impl Latencies {
    /// Sorts `samples`.
    pub fn new(mut samples: Vec<Duration>) -> Latencies {
        samples.sort_unstable();
        Latencies { sorted: samples }
    }

    /// How many samples.
    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// The `p` quantile (0..=1, nearest rank) in milliseconds; NaN when empty,
    /// so that an empty series can never pass a goal.
    pub fn ms(&self, p: f64) -> f64 {
        percentile(&self.sorted, p).map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
    }

    /// "p50 / p99 ms" with two decimals.
    pub fn p50_p99(&self) -> String {
        format!("{:.2} / {:.2} ms", self.ms(0.50), self.ms(0.99))
    }
}

/// The `p` quantile (nearest rank) of an ascending slice.
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 * p) as usize).min(sorted.len() - 1);
    Some(sorted[i])
}

/// An embedded nats-server holding the engine's stream, with a client on it
/// and a configuration file for the engine: what every benchmark starts from.
pub struct Harness {
    /// The temporary directory of the server's store and the configuration;
    /// removed when the harness drops.
    pub _dir: tempfile::TempDir,
    /// The server; stopped when the harness drops (after the engine).
    pub server: NatsServer,
    /// The benchmark's own connection.
    pub client: async_nats::Client,
    /// JetStream on `client`.
    pub js: jetstream::Context,
    /// The engine's subjects (default prefix).
    pub subjects: Subjects,
    /// The engine's configuration file (see [`bench_config`]).
    pub config: PathBuf,
}

impl Harness {
    /// Starts a fresh server, creates the engine's stream as `serve` would,
    /// and writes the configuration.
    pub async fn start() -> Result<Harness> {
        let dir = tempfile::tempdir()?;
        let bin = NatsServer::locate("")?;
        let server = NatsServer::start(&bin, 0, &dir.path().join("nats"))?;
        let client = async_nats::ConnectOptions::new()
            .request_timeout(Some(Duration::from_secs(10)))
            .connect(server.url())
            .await?;
        let js = jetstream::new(client.clone());
        let subjects = Subjects::new("cashback");
        ensure_stream(&js, &Config::default(), &subjects).await?;
        let config = bench_config(dir.path(), 0)?;
        Ok(Harness {
            _dir: dir,
            server,
            client,
            js,
            subjects,
            config,
        })
    }

    /// Starts the engine on this server.
    pub fn engine(&self) -> Result<Engine> {
        Engine::spawn(self.server.url(), &self.config)
    }

    /// Starts cluster node `node` of `nodes` on this server (PROTOCOL.md
    /// section 8): it keeps the partitions `p % nodes == node`.
    pub fn node(&self, node: u16, nodes: u16) -> Result<Engine> {
        Engine::spawn_with(
            self.server.url(),
            &self.config,
            &[
                ("CASHBACK_NODE", node.to_string()),
                ("CASHBACK_NODES", nodes.to_string()),
            ],
        )
    }

    /// Deletes every snapshot an earlier engine of this run stored, so that
    /// the next one replays the whole log (an engine restores a snapshot it
    /// finds, whatever its own snapshot interval).
    pub async fn clear_snapshots(&self) {
        let bucket = format!("{}_SNAPSHOTS", Config::default().stream_name);
        // Absent before the first snapshot: nothing to delete.
        let _ = self.js.delete_object_store(&bucket).await;
    }

    /// Starts the engine with snapshots every `every_secs` seconds and no
    /// purge (the stream must stay whole for the next run).
    pub fn engine_snapshotting(&self, every_secs: u64) -> Result<Engine> {
        let config = bench_config(
            self.config.parent().expect("written in the temp dir"),
            every_secs,
        )?;
        Engine::spawn(self.server.url(), &config)
    }

    /// A publisher on the benchmark's connection.
    pub fn publisher(&self) -> Publisher {
        Publisher::new(self.js.clone())
    }

    /// The stream's last sequence now.
    pub async fn last_seq(&self) -> Result<u64> {
        let mut stream = self.js.get_stream(Config::default().stream_name).await?;
        Ok(stream.info().await?.state.last_sequence)
    }

    /// The simulator's generator for `citizens`, with the benchmark period's
    /// rate and cap and a fixed seed, so that every run sends the same mix.
    pub fn generator(citizens: usize) -> Generator {
        Generator::new(
            citizens,
            42,
            Timestamp::now(),
            // The benchmark period starts 90 days back (see `bench_config`).
            Timestamp::now().plus_secs(-90 * 86_400),
            RATE.parse::<Decimal>().expect("a decimal"),
            CAP.parse::<Decimal>().expect("a decimal"),
        )
    }
}

/// A configuration whose single period contains today (so the simulator's
/// payments, dated the last hour or two days, count), with snapshots every
/// `snapshot_secs` (0: off) and never a purge: a purge would make the next
/// engine of the same run restore instead of replaying, and its work would
/// not be measured.
fn bench_config(dir: &Path, snapshot_secs: u64) -> Result<PathBuf> {
    let today = Timestamp::now().rome_date();
    let toml = format!(
        r#"
snapshot_interval_secs = {snapshot_secs}
purge_after_snapshot = false

[[periods]]
id = "BENCH"
start = "{}"
end = "{}"
grace_days = 10
min_transactions = 50
cashback_rate = "{RATE}"
max_cashback_per_transaction = "{CAP}"
max_cashback = "150.00"
supercashback_winners = 100000
supercashback_prize = "1500.00"
"#,
        today - chrono::Days::new(90),
        today + chrono::Days::new(90)
    );
    let path = dir.join(format!("bench-snapshots-{snapshot_secs}.toml"));
    std::fs::write(&path, toml)?;
    Ok(path)
}

/// What `/health` answers.
#[derive(Clone, Copy, Debug, Default, serde::Deserialize)]
pub struct Health {
    /// Whether the engine has replayed the log it found at start.
    pub replayed: bool,
    /// The engine's own lag: stream last sequence (polled by the engine every
    /// 500 ms, so it trails) minus applied sequence.
    pub lag: u64,
    /// Highest stream sequence whose effects are applied.
    pub applied_seq: u64,
}

/// `cashback serve` as a child process, with its metrics port.
pub struct Engine {
    /// The process; behind a lock so that waiting for the engine, which
    /// checks that it is still alive, needs only a shared borrow and can run
    /// beside a lag sampler.
    child: std::sync::Mutex<Child>,
    /// Where `/health` and `/metrics` listen (loopback).
    port: u16,
    /// `perf record` on the engine, when `CASHBACK_BENCH_PERF=FILE` asks for
    /// a profile of what the benchmark makes the engine do.
    perf: Option<Child>,
}

impl Engine {
    /// Starts the release `cashback` binary that sits beside this one.
    pub fn spawn(url: &str, config: &Path) -> Result<Engine> {
        Engine::spawn_with(url, config, &[])
    }

    /// The same, with these environment variables set too (a cluster
    /// node's `CASHBACK_NODE` and `CASHBACK_NODES`).
    pub fn spawn_with(url: &str, config: &Path, env: &[(&str, String)]) -> Result<Engine> {
        let exe = std::env::current_exe()?.with_file_name("cashback");
        if !exe.is_file() {
            bail!(
                "{} not built: run `cargo build --release --bins` first",
                exe.display()
            );
        }
        let port = NatsServer::free_port()?;
        let child = Command::new(&exe)
            .args(["serve", "--config"])
            .arg(config)
            .args(["--nats-url", url])
            .env("CASHBACK_METRICS_LISTEN", format!("127.0.0.1:{port}"))
            .env("CASHBACK_LOG", "warn")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .spawn()
            .context("start the engine")?;
        let perf = std::env::var("CASHBACK_BENCH_PERF").ok().and_then(|out| {
            Command::new("perf")
                .args(["record", "-F", "1999", "-g", "-o", &out, "-p"])
                .arg(child.id().to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .ok()
        });
        Ok(Engine {
            child: std::sync::Mutex::new(child),
            port,
            perf,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.lock().unwrap_or_else(|e| e.into_inner()).id()
    }

    /// `/health`, or None while the engine does not answer yet.
    pub async fn health(&self) -> Option<Health> {
        serde_json::from_str(&http_get(self.port, "/health").await?).ok()
    }

    /// `/metrics` text, or None while the engine does not answer.
    pub async fn metrics(&self) -> Option<String> {
        http_get(self.port, "/metrics").await
    }

    /// Waits until the engine has applied sequence `last` (and replayed what
    /// it found at start), polling every 5 ms so that a catch-up time is
    /// exact to a few ms; fails if the engine exits or takes too long.
    pub async fn wait_applied(&self, last: u64) -> Result<()> {
        self.wait_until(last, true, CATCH_UP_TIMEOUT).await
    }

    /// Waits until the engine has applied sequence `seq`, and, if
    /// `replayed`, also replayed what it found at start: without it, a
    /// point inside the start-up replay can be waited for (to read the
    /// memory there). Polls every 5 ms; fails if the engine exits or
    /// `timeout` passes.
    pub async fn wait_until(&self, seq: u64, replayed: bool, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(h) = self.health().await {
                if (h.replayed || !replayed) && h.applied_seq >= seq {
                    return Ok(());
                }
            }
            if let Some(status) = self.exited()? {
                bail!("the engine exited with {status} before applying sequence {seq}");
            }
            if Instant::now() > deadline {
                bail!(
                    "the engine did not apply sequence {seq} within {} s",
                    timeout.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Whether the engine has exited, and how: lets a benchmark that waits
    /// on something else than `/health` (a query reply) stop at once when
    /// the engine dies, rather than at its timeout.
    pub fn exited(&self) -> Result<Option<std::process::ExitStatus>> {
        Ok(self
            .child
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .try_wait()?)
    }

    /// Resident and peak resident memory (VmRSS, VmHWM) of the engine, bytes.
    pub fn memory(&self) -> Result<(u64, u64)> {
        process_memory(self.pid())
    }

    /// CPU time the engine has used so far (user + system), seconds: where
    /// several processes share the cores, what each one's work cost.
    pub fn cpu_seconds(&self) -> Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))?;
        // Fields after the command name, which is in parentheses and may
        // hold spaces: utime and stime are the 14th and 15th of the line.
        let rest = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .context("unreadable /proc/<pid>/stat")?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| -> Result<f64> {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .context("unreadable /proc/<pid>/stat")
        };
        // SAFETY: sysconf only reads a system constant.
        let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        // After ')': state is field 3, so utime (14) and stime (15) are at 11 and 12.
        Ok((ticks(11)? + ticks(12)?) / per_sec)
    }

    /// SIGTERM (the engine drains what is in flight), then waits.
    pub fn stop(mut self) -> Result<()> {
        self.terminate()
    }

    fn terminate(&mut self) -> Result<()> {
        if let Some(perf) = self.perf.as_mut() {
            // SAFETY: kill(2) on our own child's pid has no memory effects.
            unsafe {
                libc::kill(perf.id() as libc::pid_t, libc::SIGINT);
            }
            let _ = perf.wait();
        }
        self.perf = None;
        let child = self.child.get_mut().unwrap_or_else(|e| e.into_inner());
        if child.try_wait()?.is_none() {
            // SAFETY: as above.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            }
            child.wait()?;
        }
        Ok(())
    }
}

impl Drop for Engine {
    /// A benchmark that fails half-way must not leave an engine running.
    fn drop(&mut self) {
        let _ = self.terminate();
    }
}

/// Resident and peak resident memory (VmRSS, VmHWM) of process `pid`,
/// bytes: the engine's, or this benchmark's own (`std::process::id()`) when
/// it builds state in process.
pub fn process_memory(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        let kb = status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .with_context(|| format!("no {name} in /proc/{pid}/status"))?;
        Ok(kb * 1024)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// Gives the memory of dropped state back to the system. Why: the
/// allocator keeps freed small blocks for reuse, so without this the
/// `restart` benchmark's process stayed at ~12 GB after dropping its state,
/// and the engine restoring beside it was killed for lack of memory at full
/// scale; and a resident size read as a baseline would count them.
pub fn release_freed_memory() {
    // SAFETY: malloc_trim only returns free pages of the allocator's own
    // heaps to the kernel; no live allocation is touched.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// One GET on loopback; the body, or None on any failure.
async fn http_get(port: u16, path: &str) -> Option<String> {
    let addr = format!("127.0.0.1:{port}");
    Some(cashback::commands::engine_health::get(&addr, path).await?.1)
}

pub use cashback::commands::engine_health::metric_value;

/// The sum of every series of metric `name` whose labels include `label`
/// (e.g. `outcome="counted"`), whatever its other labels: a cluster node
/// adds `node="K"` to every series, which [`metric_value`]'s exact series
/// name would miss. 0 when there is none.
pub fn metric_sum(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(r) => r.split_once("} ")?,
                None => ("", rest.strip_prefix(' ')?),
            };
            labels
                .contains(label)
                .then(|| value.trim().parse::<f64>().ok())?
        })
        .sum()
}

/// The cumulative buckets (upper bound, count) of a histogram without labels.
pub fn histogram_buckets(text: &str, name: &str) -> Vec<(f64, f64)> {
    labeled_histogram_buckets(text, name, "")
}

/// The cumulative buckets (upper bound, count) of one series of a histogram:
/// `labels` as the exporter renders them before `le`, e.g.
/// `query="wallet"` (empty: the series without labels).
pub fn labeled_histogram_buckets(text: &str, name: &str, labels: &str) -> Vec<(f64, f64)> {
    let prefix = if labels.is_empty() {
        format!("{name}_bucket{{le=\"")
    } else {
        format!("{name}_bucket{{{labels},le=\"")
    };
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.trim().parse().ok()?))
        })
        .collect()
}

/// The upper bound of the bucket holding the `p` quantile of what a histogram
/// recorded between two scrapes (`before`, `after`: [`histogram_buckets`]),
/// and how many events that was.
pub fn bucket_quantile(before: &[(f64, f64)], after: &[(f64, f64)], p: f64) -> (f64, f64) {
    let delta: Vec<(f64, f64)> = after
        .iter()
        .map(|(le, n)| {
            let old = before
                .iter()
                .find(|(b, _)| b == le)
                .map_or(0.0, |(_, c)| *c);
            (*le, n - old)
        })
        .collect();
    let total = delta.last().map_or(0.0, |(_, n)| *n);
    let bound = delta
        .iter()
        .find(|(_, n)| *n >= total * p && total > 0.0)
        .map_or(f64::NAN, |(le, _)| *le);
    (bound, total)
}

/// Publishes to JetStream with up to [`ACKS_IN_FLIGHT`] acknowledgements
/// outstanding, and keeps the highest acknowledged stream sequence where a
/// lag sampler can read it.
pub struct Publisher {
    /// Where to publish.
    js: jetstream::Context,
    /// Acknowledgements not awaited yet, oldest first.
    acks: VecDeque<jetstream::context::PublishAckFuture>,
    /// Highest stream sequence acknowledged so far: the true end of the log
    /// as far as this publisher knows (the engine's own view trails by its
    /// 500 ms poll).
    pub acked_seq: Arc<AtomicU64>,
    /// Messages published.
    pub sent: u64,
}

impl Publisher {
    /// A publisher on `js`.
    pub fn new(js: jetstream::Context) -> Publisher {
        Publisher {
            js,
            acks: VecDeque::with_capacity(ACKS_IN_FLIGHT),
            acked_seq: Arc::new(AtomicU64::new(0)),
            sent: 0,
        }
    }

    /// Publishes one message, awaiting the oldest acknowledgement when
    /// [`ACKS_IN_FLIGHT`] are outstanding.
    pub async fn send(
        &mut self,
        subject: String,
        msg_id: Option<&str>,
        body: Vec<u8>,
    ) -> Result<()> {
        let mut headers = HeaderMap::new();
        if let Some(id) = msg_id {
            headers.insert("Nats-Msg-Id", id);
        }
        let ack = self
            .js
            .publish_with_headers(subject, headers, body.into())
            .await?;
        self.acks.push_back(ack);
        self.sent += 1;
        if self.acks.len() >= ACKS_IN_FLIGHT {
            self.await_oldest().await?;
        }
        Ok(())
    }

    /// Publishes a simulator message to its acquirer's subject.
    pub async fn send_sim(&mut self, subjects: &Subjects, m: Outgoing) -> Result<()> {
        self.send(subjects.auth(&m.acquirer), Some(&m.msg_id), m.body)
            .await
    }

    /// Awaits every outstanding acknowledgement; returns the highest
    /// acknowledged sequence.
    pub async fn finish(&mut self) -> Result<u64> {
        while !self.acks.is_empty() {
            self.await_oldest().await?;
        }
        Ok(self.acked_seq.load(Relaxed))
    }

    async fn await_oldest(&mut self) -> Result<()> {
        if let Some(ack) = self.acks.pop_front() {
            let ack = ack.await?;
            self.acked_seq.fetch_max(ack.sequence, Relaxed);
        }
        Ok(())
    }
}

/// Journals the enrollment of the simulator's citizens `citizens` (each with
/// `cards_of(i)` cards, T&C accepted 80 days ago), exactly as the engine's
/// enrollment service would journal the requests: the cheap way to hold
/// many citizens before a benchmark starts.
pub async fn journal_citizens(
    p: &mut Publisher,
    subjects: &Subjects,
    citizens: std::ops::Range<usize>,
) -> Result<()> {
    let since = enrolled_since();
    for c in citizens {
        let cmd = citizen_enrollment(c, &since);
        p.send(subjects.journal(), None, cmd.to_journal()).await?;
        for card in 0..cards_of(c) {
            let cmd = card_enrollment(c, card, &since);
            p.send(subjects.journal(), None, cmd.to_journal()).await?;
        }
    }
    Ok(())
}

/// When the benchmarks' citizens accepted the T&C and activated their
/// cards: 80 days ago, inside the benchmark period (see `bench_config`).
pub fn enrolled_since() -> String {
    Timestamp::now().plus_secs(-80 * 86_400).to_rome_rfc3339()
}

/// The enrollment of simulator citizen `c` as the benchmarks journal it.
pub fn citizen_enrollment(c: usize, since: &str) -> EnrollCommand {
    EnrollCommand::Citizen {
        citizen_id: citizen_id(c),
        iban: make_iban("IT", &format!("X0542811101{c:012}")),
        tc_accepted_at: since.to_owned(),
    }
}

/// The activation of citizen `c`'s card number `card` (the simulator's
/// `hpan(c, card)`) as the benchmarks journal it.
pub fn card_enrollment(c: usize, card: usize, since: &str) -> EnrollCommand {
    EnrollCommand::Card {
        citizen_id: citizen_id(c),
        hpan: hpan(c, card),
        activated_at: since.to_owned(),
    }
}

/// Fills the stream: `citizens` citizens' enrollments, then `count` of the
/// generator's messages (payments, reversals, duplicates, late batches,
/// garbage); returns the stream's last sequence.
pub async fn prepublish(
    h: &Harness,
    generator: &mut Generator,
    citizens: usize,
    count: usize,
) -> Result<u64> {
    let mut p = h.publisher();
    journal_citizens(&mut p, &h.subjects, 0..citizens).await?;
    for _ in 0..count {
        p.send_sim(&h.subjects, generator.next_message()).await?;
    }
    p.finish().await?;
    h.last_seq().await
}

/// `count` of the generator's messages, generated before a paced run so that
/// generating them does not take CPU from the engine while it is measured.
pub fn pregenerate(generator: &mut Generator, count: usize) -> VecDeque<Outgoing> {
    (0..count).map(|_| generator.next_message()).collect()
}

/// Publishes pre-generated messages at a rate for a duration, on schedule:
/// a publisher that cannot keep up falls behind the schedule and the
/// achieved rate shows it (the schedule never slows down to suit it).
pub struct PacedLoad {
    /// The publisher, also open to other messages between steps (probes).
    pub publisher: Publisher,
    /// The messages still to publish.
    messages: VecDeque<Outgoing>,
    /// Messages per second wanted.
    rate: f64,
    /// When the run started.
    started: Instant,
    /// When it ends.
    until: Instant,
    /// Messages of `messages` published so far.
    released: u64,
}

impl PacedLoad {
    /// Largest number of messages published in one step, so that a publisher
    /// that fell behind still lets other work (probes) interleave.
    const MAX_BURST: u64 = 1000;

    /// Messages to pre-generate for `rate` over `duration`.
    pub fn messages_needed(rate: f64, duration: Duration) -> usize {
        (rate * duration.as_secs_f64()) as usize + 1
    }

    /// Starts the schedule now.
    pub fn start(
        publisher: Publisher,
        messages: VecDeque<Outgoing>,
        rate: f64,
        duration: Duration,
    ) -> PacedLoad {
        let started = Instant::now();
        PacedLoad {
            publisher,
            messages,
            rate,
            started,
            until: started + duration,
            released: 0,
        }
    }

    /// Publishes what is due now, sleeping until something is; false when
    /// the duration is over (or the messages ran out).
    pub async fn step(&mut self, subjects: &Subjects) -> Result<bool> {
        loop {
            let now = Instant::now();
            if now >= self.until || self.messages.is_empty() {
                return Ok(false);
            }
            let target = ((now - self.started).as_secs_f64() * self.rate) as u64;
            if target > self.released {
                for _ in 0..(target - self.released).min(Self::MAX_BURST) {
                    let Some(m) = self.messages.pop_front() else {
                        break;
                    };
                    self.publisher.send_sim(subjects, m).await?;
                    self.released += 1;
                }
                return Ok(true);
            }
            let next =
                self.started + Duration::from_secs_f64((self.released + 1) as f64 / self.rate);
            tokio::time::sleep_until(next.min(self.until).into()).await;
        }
    }

    /// Messages per second actually published over the run.
    pub fn achieved_rate(&self) -> f64 {
        self.released as f64 / self.started.elapsed().as_secs_f64()
    }
}

/// Publishes `count` pre-generated messages as fast as the publisher can (no
/// pacing, [`ACKS_IN_FLIGHT`] outstanding) to a scratch stream on the same
/// server, then deletes it: the raw JetStream publish capacity that a paced
/// run's achieved rate is to be read against. Run it with no engine up.
pub async fn raw_publish_rate(
    h: &Harness,
    messages: &VecDeque<Outgoing>,
    count: usize,
) -> Result<f64> {
    let name = "BENCH_RAW_PUBLISH";
    h.js.create_stream(jetstream::stream::Config {
        name: name.into(),
        subjects: vec!["bench.raw.>".into()],
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await?;
    let mut p = h.publisher();
    let started = Instant::now();
    for m in messages.iter().take(count) {
        p.send(
            format!("bench.raw.{}", m.acquirer),
            Some(&m.msg_id),
            m.body.clone(),
        )
        .await?;
    }
    p.finish().await?;
    let rate = p.sent as f64 / started.elapsed().as_secs_f64();
    h.js.delete_stream(name).await?;
    Ok(rate)
}

/// What a request load got back.
pub struct RequestLoad {
    /// Requests per second, first sent to last answered.
    pub rate: f64,
    /// Request-to-reply latencies of every request.
    pub latencies: Latencies,
    /// Replies with `"ok": true`.
    pub ok: usize,
    /// `"ok": false` replies by error code.
    pub errors: BTreeMap<String, usize>,
    /// Requests with no reply in 10 s (or no responder).
    pub no_reply: usize,
}

impl RequestLoad {
    /// Tallies `outcomes` (each with its latency) of requests answered at
    /// `rate` per second.
    pub fn tally(rate: f64, outcomes: Vec<(Duration, Outcome)>) -> RequestLoad {
        let mut load = RequestLoad {
            rate,
            latencies: Latencies::new(outcomes.iter().map(|r| r.0).collect()),
            ok: 0,
            errors: BTreeMap::new(),
            no_reply: 0,
        };
        for (_, outcome) in outcomes {
            match outcome {
                Outcome::Ok => load.ok += 1,
                Outcome::Error(code) => *load.errors.entry(code).or_default() += 1,
                Outcome::NoReply => load.no_reply += 1,
            }
        }
        load
    }

    /// Every request that did not get `"ok": true`.
    pub fn failures(&self) -> usize {
        self.errors.values().sum::<usize>() + self.no_reply
    }

    /// "0", or "3 of 200000 (unavailable=2, no reply=1)".
    pub fn failures_text(&self) -> String {
        let total = self.ok + self.failures();
        if self.failures() == 0 {
            return format!("0 of {total}");
        }
        let mut parts: Vec<String> = self
            .errors
            .iter()
            .map(|(c, n)| format!("{c}={n}"))
            .collect();
        if self.no_reply > 0 {
            parts.push(format!("no reply={}", self.no_reply));
        }
        format!("{} of {total} ({})", self.failures(), parts.join(", "))
    }
}

/// What a reply said.
pub enum Outcome {
    /// `"ok": true`.
    Ok,
    /// `"ok": false` with this code.
    Error(String),
    /// Timed out or nobody answered.
    NoReply,
}

impl Outcome {
    /// Reads a request's result: every reply of the protocol starts with
    /// `{"ok":true` when it is not a refusal.
    pub fn of(reply: Result<async_nats::Message, async_nats::RequestError>) -> Outcome {
        match reply {
            Ok(m) if m.payload.starts_with(b"{\"ok\":true") => Outcome::Ok,
            Ok(m) => Outcome::Error(
                serde_json::from_slice::<serde_json::Value>(&m.payload)
                    .ok()
                    .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| "unreadable_reply".into()),
            ),
            Err(_) => Outcome::NoReply,
        }
    }
}

/// Sends every body once to `subject` from one connection with `in_flight`
/// requests outstanding (how an app back end runs it, MEASURED.md), and
/// times each request to its reply.
pub async fn request_load(
    client: &async_nats::Client,
    subject: &str,
    bodies: Vec<bytes::Bytes>,
    in_flight: usize,
) -> RequestLoad {
    let count = bodies.len();
    let started = Instant::now();
    let results: Vec<(Duration, Outcome)> = futures::stream::iter(bodies)
        .map(|body| {
            let client = client.clone();
            let subject = subject.to_owned();
            async move {
                let t = Instant::now();
                let outcome = Outcome::of(client.request(subject, body).await);
                (t.elapsed(), outcome)
            }
        })
        .buffer_unordered(in_flight)
        .collect()
        .await;
    RequestLoad::tally(count as f64 / started.elapsed().as_secs_f64(), results)
}

/// Starts an echo responder on `client`: it answers every request on
/// `subject` at once with a small query-shaped reply and does no work, so
/// that what it costs is what NATS request-reply alone costs on this server
/// and machine, the reference of the request benchmarks. Abort the handle
/// to stop it.
pub async fn echo_responder(
    client: &async_nats::Client,
    subject: &str,
) -> Result<tokio::task::JoinHandle<()>> {
    let mut requests = client.subscribe(subject.to_owned()).await?;
    let responder = client.clone();
    Ok(tokio::spawn(async move {
        while let Some(m) = requests.next().await {
            if let Some(reply) = m.reply {
                let _ = responder
                    .publish(reply, bytes::Bytes::from_static(br#"{"ok":true,"echo":1}"#))
                    .await;
            }
        }
    }))
}

/// What `main` needs of every benchmark's options.
pub trait Options {
    /// Multiplies the sizes and durations by `factor` (`all --scale`), so
    /// that the whole suite can be smoke-tested small on the same code paths.
    fn scale(&mut self, factor: f64);

    /// The exact command that runs the benchmark with these options, for
    /// its table.
    fn command(&self) -> String;
}

/// Multiplies counts by `factor`, keeping at least 1,000 so that a smoke run
/// still exercises every path.
pub fn scale_counts<const N: usize>(factor: f64, counts: [&mut usize; N]) {
    for n in counts {
        *n = ((*n as f64 * factor) as usize).max(1000);
    }
}

/// Multiplies seconds by `factor`, keeping at least 3 so that a rate can
/// still be read.
pub fn scale_seconds(factor: f64, seconds: &mut u64) {
    *seconds = (*seconds as f64 * factor).ceil().max(3.0) as u64;
}
