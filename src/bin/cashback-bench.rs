//! `cashback-bench`: benchmarks against a real, embedded nats-server, each
//! engine figure next to its reference measured in the same run.
//!
//! `catchup`: N authorizations (with enrollments, reversals, duplicates and
//! garbage) are pre-published; then (a) "raw": an ordered consumer reads the
//! stream and decodes each message into a borrowed struct, nothing else;
//! (b) the engine (`cashback serve`, release build, as a child process)
//! replays the same stream until `/health` reports it applied the last
//! message. Both are timed from start to the last message.

use anyhow::{bail, Context, Result};
use async_nats::jetstream::{self, consumer};
use async_nats::HeaderMap;
use cashback::config::Config;
use cashback::nats::embedded::NatsServer;
use cashback::nats::stream::ensure_stream;
use cashback::nats::subjects::Subjects;
use cashback_engine::enrollment::{make_iban, EnrollCommand};
use cashback_engine::time::Timestamp;
use clap::{Parser, Subcommand};
use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use serde_json::json;
use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "Benchmarks of the cashback engine against their references")]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
    /// Append the result table to this Markdown file.
    #[arg(long, global = true)]
    append: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Bench {
    /// Catch-up: authorizations applied per second vs raw consume+decode.
    Catchup {
        /// Authorizations to pre-publish.
        #[arg(long, default_value_t = 1_000_000)]
        count: usize,
        /// Enrolled citizens (one or two cards each).
        #[arg(long, default_value_t = 100_000)]
        citizens: usize,
        /// Runs of each side; the best is reported.
        #[arg(long, default_value_t = 2)]
        runs: usize,
    },
    /// Citizen position queries over NATS request-reply from one client
    /// connection, vs an echo responder on the same server.
    Queries {
        /// Enrolled citizens (each with some payments, so they are ranked).
        #[arg(long, default_value_t = 100_000)]
        citizens: usize,
        /// Queries to send.
        #[arg(long, default_value_t = 200_000)]
        count: usize,
        /// Requests in flight on the one connection.
        #[arg(long, default_value_t = 256)]
        in_flight: usize,
    },
    /// Statement query latency for a citizen with 1,000 payments, idle and
    /// while authorizations are published at `--rate`.
    Statement {
        /// Authorizations per second offered during the loaded phase.
        #[arg(long, default_value_t = 50_000)]
        rate: usize,
        /// Seconds of load.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
}

/// What the raw reader decodes into: the same fields, borrowed, no checks.
#[derive(Deserialize)]
#[allow(dead_code)]
struct RawAuthorization<'a> {
    acquirer_code: &'a str,
    operation_type: &'a str,
    circuit_type: &'a str,
    hpan: &'a str,
    trx_date: &'a str,
    id_trx_acquirer: &'a str,
    total_amount: u64,
    currency: &'a str,
    acquirer_id: &'a str,
    merchant_id: &'a str,
    terminal_id: &'a str,
    bin: &'a str,
    mcc: &'a str,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let table = match cli.bench {
        Bench::Catchup {
            count,
            citizens,
            runs,
        } => rt.block_on(catchup(count, citizens, runs))?,
        Bench::Queries {
            citizens,
            count,
            in_flight,
        } => rt.block_on(queries(citizens, count, in_flight))?,
        Bench::Statement { rate, seconds } => rt.block_on(statement(rate, seconds))?,
    };
    println!("{table}");
    if let Some(path) = cli.append {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        writeln!(f, "\n{table}")?;
        println!("appended to {}", path.display());
    }
    Ok(())
}

/// "2 cores, 24 GiB, <CPU model>".
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb as f64 / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    format!(
        "{} cores, {mem_gib:.0} GiB, {cpu}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    )
}

fn hpan(citizen: usize, card: usize) -> String {
    format!("{:056x}{:08x}", citizen, card)
}

/// A configuration whose single period contains today.
fn bench_config(dir: &std::path::Path) -> Result<PathBuf> {
    let today = Timestamp::now().rome_date();
    let toml = format!(
        r#"
[[periods]]
id = "BENCH"
start = "{}"
end = "{}"
grace_days = 10
min_transactions = 50
cashback_rate = "0.10"
max_cashback_per_transaction = "15.00"
max_cashback = "150.00"
supercashback_winners = 100000
supercashback_prize = "1500.00"
"#,
        today - chrono::Days::new(90),
        today + chrono::Days::new(90)
    );
    let path = dir.join("bench.toml");
    std::fs::write(&path, toml)?;
    Ok(path)
}

/// Publishes with up to 4096 acknowledgements outstanding.
struct Publisher {
    js: jetstream::Context,
    acks: VecDeque<jetstream::context::PublishAckFuture>,
}

impl Publisher {
    async fn send(&mut self, subject: String, msg_id: Option<String>, body: Vec<u8>) -> Result<()> {
        let mut headers = HeaderMap::new();
        if let Some(id) = msg_id {
            headers.insert("Nats-Msg-Id", id.as_str());
        }
        let ack = self
            .js
            .publish_with_headers(subject, headers, body.into())
            .await?;
        self.acks.push_back(ack);
        if self.acks.len() >= 4096 {
            self.acks.pop_front().expect("non-empty").await?;
        }
        Ok(())
    }

    async fn finish(&mut self) -> Result<()> {
        while let Some(ack) = self.acks.pop_front() {
            ack.await?;
        }
        Ok(())
    }
}

/// Fills the stream: enrollments, then `count` authorizations.
async fn prepublish(
    js: &jetstream::Context,
    subjects: &Subjects,
    count: usize,
    citizens: usize,
) -> Result<u64> {
    let mut p = Publisher {
        js: js.clone(),
        acks: VecDeque::new(),
    };
    let since = Timestamp::now().plus_secs(-80 * 86_400).to_rome_rfc3339();
    for c in 0..citizens {
        let id = format!("bench-{c}");
        let cmd = EnrollCommand::Citizen {
            citizen_id: id.clone(),
            iban: make_iban("IT", &format!("X0542811101{c:012}")),
            tc_accepted_at: since.clone(),
        };
        p.send(subjects.journal(), None, cmd.to_journal()).await?;
        for card in 0..1 + c % 2 {
            let cmd = EnrollCommand::Card {
                citizen_id: id.clone(),
                hpan: hpan(c, card),
                activated_at: since.clone(),
            };
            p.send(subjects.journal(), None, cmd.to_journal()).await?;
        }
    }
    let mut rng = StdRng::seed_from_u64(42);
    let now = Timestamp::now();
    let mut recent: Vec<serde_json::Value> = Vec::with_capacity(4096);
    for n in 0..count {
        let roll: f64 = rng.gen();
        let body = if roll < 0.001 {
            b"garbage, not JSON".to_vec()
        } else if roll < 0.006 && !recent.is_empty() {
            recent[rng.gen_range(0..recent.len())]
                .to_string()
                .into_bytes()
        } else if roll < 0.026 && !recent.is_empty() {
            let mut r = recent[rng.gen_range(0..recent.len())].clone();
            r["operation_type"] = json!("01");
            r.to_string().into_bytes()
        } else {
            // Heavy-tailed: a few citizens pay far more often.
            let c = (rng.gen::<f64>().powi(2) * citizens as f64) as usize;
            let v = json!({
                "acquirer_code": "32875", "operation_type": "00", "circuit_type": "01",
                "hpan": hpan(c, if c % 2 == 1 { rng.gen_range(0..2) } else { 0 }),
                "trx_date": now.plus_secs(-rng.gen_range(60..70 * 86_400)).to_rome_rfc3339(),
                "id_trx_acquirer": format!("t{n}"), "total_amount": rng.gen_range(100..9000u64),
                "currency": "978", "acquirer_id": "A1", "merchant_id": format!("M{}", n % 997),
                "terminal_id": "T1", "bin": "40000000", "mcc": "5411"
            });
            if recent.len() < 4096 {
                recent.push(v.clone());
            } else {
                let i = rng.gen_range(0..recent.len());
                recent[i] = v.clone();
            }
            v.to_string().into_bytes()
        };
        p.send(subjects.auth("32875"), Some(format!("m{n}")), body)
            .await?;
    }
    p.finish().await?;
    let mut stream = js.get_stream("CASHBACK").await?;
    Ok(stream.info().await?.state.last_sequence)
}

/// Raw: ordered consumer + borrowed decode of every authorization.
async fn raw_consume(js: &jetstream::Context, last: u64) -> Result<Duration> {
    let stream = js.get_stream("CASHBACK").await?;
    let started = Instant::now();
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    let mut decoded = 0u64;
    while let Some(m) = messages.next().await {
        let m = m?;
        if serde_json::from_slice::<RawAuthorization>(&m.payload).is_ok() {
            decoded += 1;
        }
        let seq = m
            .info()
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .stream_sequence;
        if seq >= last {
            break;
        }
    }
    std::hint::black_box(decoded);
    Ok(started.elapsed())
}

/// The engine: `cashback serve` replaying the stream from the start.
async fn engine_consume(url: &str, config: &std::path::Path, last: u64) -> Result<Duration> {
    let exe = std::env::current_exe()?.with_file_name("cashback");
    if !exe.is_file() {
        bail!("{} not built: run `cargo build --release`", exe.display());
    }
    let port = NatsServer::free_port()?;
    let started = Instant::now();
    let mut child = Command::new(&exe)
        .args(["serve", "--config"])
        .arg(config)
        .args(["--nats-url", url])
        .env("CASHBACK_METRICS_LISTEN", format!("127.0.0.1:{port}"))
        .env("CASHBACK_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .context("start the engine")?;
    // Profiling aid: CASHBACK_BENCH_PERF=FILE records the engine with perf.
    let mut perf = std::env::var("CASHBACK_BENCH_PERF").ok().map(|out| {
        Command::new("perf")
            .args(["record", "-F", "1999", "-g", "-o", &out, "-p"])
            .arg(child.id().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
    });
    let deadline = Instant::now() + Duration::from_secs(600);
    let result = loop {
        if let Some(applied) = applied_seq(port).await {
            if applied >= last {
                break Ok(started.elapsed());
            }
        }
        if Instant::now() > deadline {
            break Err(anyhow::anyhow!("engine did not catch up in 600 s"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    if let Some(Ok(p)) = perf.as_mut() {
        unsafe {
            libc::kill(p.id() as libc::pid_t, libc::SIGINT);
        }
        let _ = p.wait();
    }
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    child.wait()?;
    result
}

async fn applied_seq(port: u16) -> Option<u64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    conn.write_all(b"GET /health HTTP/1.1\r\n\r\n").await.ok()?;
    let mut text = String::new();
    conn.read_to_string(&mut text).await.ok()?;
    let body = text.split_once("\r\n\r\n")?.1;
    serde_json::from_str::<serde_json::Value>(body).ok()?["applied_seq"].as_u64()
}

async fn catchup(count: usize, citizens: usize, runs: usize) -> Result<String> {
    let dir = tempfile::tempdir()?;
    let bin = NatsServer::locate("")?;
    let server = NatsServer::start(&bin, 0, &dir.path().join("nats"))?;
    let client = async_nats::connect(server.url()).await?;
    let js = jetstream::new(client);
    let subjects = Subjects::new("cashback");
    ensure_stream(&js, &Config::default(), &subjects).await?;
    let config = bench_config(dir.path())?;
    eprintln!("pre-publishing {citizens} citizens and {count} authorizations...");
    let t = Instant::now();
    let last = prepublish(&js, &subjects, count, citizens).await?;
    let publish_rate = last as f64 / t.elapsed().as_secs_f64();
    eprintln!("stream holds {last} messages ({publish_rate:.0}/s published)");

    let (mut raw, mut engine) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let r = raw_consume(&js, last).await?;
        eprintln!("run {run}: raw {:.2} s", r.as_secs_f64());
        raw.push(r);
        let e = engine_consume(server.url(), &config, last).await?;
        eprintln!("run {run}: engine {:.2} s", e.as_secs_f64());
        engine.push(e);
    }
    let best = |v: &[Duration]| v.iter().min().copied().unwrap_or_default();
    let raw_rate = last as f64 / best(&raw).as_secs_f64();
    let engine_rate = last as f64 / best(&engine).as_secs_f64();
    let ratio = engine_rate / raw_rate;
    let date = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC");
    Ok(format!(
        "### Catch-up, {date}\n\
         Machine: {}. nats-server 2.15.1 (embedded, file storage), release build.\n\
         Command: `cargo run --release --bin cashback-bench -- catchup --count {count} --citizens {citizens} --runs {runs}`\n\n\
         | figure | engine | raw reference (same stream, same run) | ratio | goal |\n\
         |---|---|---|---|---|\n\
         | messages/s from stream start to last applied ({last} messages: {citizens} citizens' enrollments + {count} authorizations) | {engine_rate:.0} | {raw_rate:.0} (ordered consumer, borrowed decode) | {ratio:.2} | >= 0.80: {} |\n",
        machine(),
        if ratio >= 0.8 { "met" } else { "**missed**" },
    ))
}

/// Spawns the engine on `url` and waits until it has applied `last`.
async fn start_engine(
    url: &str,
    config: &std::path::Path,
    last: u64,
) -> Result<std::process::Child> {
    let exe = std::env::current_exe()?.with_file_name("cashback");
    let port = NatsServer::free_port()?;
    let child = Command::new(&exe)
        .args(["serve", "--config"])
        .arg(config)
        .args(["--nats-url", url])
        .env("CASHBACK_METRICS_LISTEN", format!("127.0.0.1:{port}"))
        .env("CASHBACK_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .context("start the engine")?;
    let deadline = Instant::now() + Duration::from_secs(600);
    while applied_seq(port).await.unwrap_or(0) < last {
        if Instant::now() > deadline {
            bail!("engine did not catch up");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(child)
}

/// Sends `count` requests from one connection with `in_flight` outstanding;
/// returns (requests/s, p50 µs, p99 µs, failures).
async fn request_load(
    client: &async_nats::Client,
    subject: &str,
    bodies: &[bytes::Bytes],
    count: usize,
    in_flight: usize,
) -> (f64, f64, f64, usize) {
    let started = Instant::now();
    let results: Vec<(Duration, bool)> = futures::stream::iter(0..count)
        .map(|i| {
            let client = client.clone();
            let body = bodies[i % bodies.len()].clone();
            let subject = subject.to_owned();
            async move {
                let t = Instant::now();
                let ok = match tokio::time::timeout(
                    Duration::from_secs(10),
                    client.request(subject, body),
                )
                .await
                {
                    Ok(Ok(m)) => m.payload.starts_with(b"{\"ok\":true"),
                    _ => false,
                };
                (t.elapsed(), ok)
            }
        })
        .buffer_unordered(in_flight)
        .collect()
        .await;
    let rate = count as f64 / started.elapsed().as_secs_f64();
    let mut lat: Vec<Duration> = results.iter().map(|r| r.0).collect();
    lat.sort();
    let pct =
        |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1e6;
    let failures = results.iter().filter(|r| !r.1).count();
    (rate, pct(0.50), pct(0.99), failures)
}

async fn queries(citizens: usize, count: usize, in_flight: usize) -> Result<String> {
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
    let config = bench_config(dir.path())?;
    eprintln!("pre-publishing {citizens} citizens with payments...");
    let last = prepublish(&js, &subjects, citizens * 5, citizens).await?;
    let mut engine = start_engine(server.url(), &config, last).await?;

    // Reference: an echo responder on the same server, answering a
    // query-shaped reply without doing any work.
    let mut echo = client.subscribe("bench.echo").await?;
    let responder = client.clone();
    let echo_task = tokio::spawn(async move {
        while let Some(m) = echo.next().await {
            if let Some(reply) = m.reply {
                let _ = responder
                    .publish(reply, bytes::Bytes::from_static(br#"{"ok":true,"echo":1}"#))
                    .await;
            }
        }
    });
    let bodies: Vec<bytes::Bytes> = (0..citizens)
        .map(|c| {
            json!({"citizen_id": format!("bench-{c}")})
                .to_string()
                .into()
        })
        .collect();
    // Warm-up, then the measured runs, engine and reference alternating.
    request_load(
        &client,
        "cashback.query.citizen",
        &bodies,
        count / 10,
        in_flight,
    )
    .await;
    let (e_rate, e50, e99, e_fail) =
        request_load(&client, "cashback.query.citizen", &bodies, count, in_flight).await;
    let (r_rate, r50, r99, _) =
        request_load(&client, "bench.echo", &bodies, count, in_flight).await;
    echo_task.abort();
    unsafe {
        libc::kill(engine.id() as libc::pid_t, libc::SIGTERM);
    }
    engine.wait()?;
    let date = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC");
    Ok(format!(
        "### Position queries over NATS, {date}\n\
         Machine: {}. nats-server 2.15.1 (embedded), release build, {citizens} ranked citizens, one client connection, {in_flight} requests in flight.\n\
         Command: `cargo run --release --bin cashback-bench -- queries --citizens {citizens} --count {count} --in-flight {in_flight}`\n\n\
         | figure | engine (`cashback.query.citizen`) | reference: echo responder, same server, same run | goal |\n\
         |---|---|---|---|\n\
         | requests/s | {e_rate:.0} | {r_rate:.0} | >= 30,000: {} |\n\
         | latency p50 / p99 | {:.2} / {:.2} ms | {:.2} / {:.2} ms | |\n\
         | failed requests | {e_fail} of {count} | | 0 |\n",
        machine(),
        if e_rate >= 30_000.0 && e_fail == 0 { "met" } else { "**missed**" },
        e50 / 1000.0,
        e99 / 1000.0,
        r50 / 1000.0,
        r99 / 1000.0,
    ))
}

/// Sequential statement queries for `bench-0` until `stop`; latencies in µs.
async fn statement_latencies(client: async_nats::Client, stop: Instant) -> Result<Vec<f64>> {
    let body: bytes::Bytes = json!({"citizen_id": "bench-0", "limit": 100})
        .to_string()
        .into();
    let mut lat = Vec::new();
    while Instant::now() < stop {
        let t = Instant::now();
        let reply = client
            .request("cashback.query.transactions", body.clone())
            .await?;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
        let v: serde_json::Value = serde_json::from_slice(&reply.payload)?;
        if v["total"].as_u64().unwrap_or(0) < 1000 {
            bail!("the statement should list 1,000 payments: {v}");
        }
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    Ok(lat)
}

fn pct(lat: &[f64], p: f64) -> f64 {
    lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)] / 1000.0
}

async fn statement(rate: usize, seconds: u64) -> Result<String> {
    let dir = tempfile::tempdir()?;
    let bin = NatsServer::locate("")?;
    let server = NatsServer::start(&bin, 0, &dir.path().join("nats"))?;
    let client = async_nats::connect(server.url()).await?;
    let js = jetstream::new(client.clone());
    let subjects = Subjects::new("cashback");
    ensure_stream(&js, &Config::default(), &subjects).await?;
    let config = bench_config(dir.path())?;
    let citizens = 100_000;
    prepublish(&js, &subjects, 200_000, citizens).await?;
    // bench-0's card: 1,000 payments more.
    let mut p = Publisher {
        js: js.clone(),
        acks: VecDeque::new(),
    };
    let now = Timestamp::now();
    for n in 0..1000 {
        let v = json!({
            "acquirer_code": "32875", "operation_type": "00", "circuit_type": "01",
            "hpan": hpan(0, 0), "trx_date": now.plus_secs(-3600 - n).to_rome_rfc3339(),
            "id_trx_acquirer": format!("s{n}"), "total_amount": 1000 + n,
            "currency": "978", "acquirer_id": "A1", "merchant_id": "M1",
            "terminal_id": "T1", "bin": "40000000", "mcc": "5411"
        });
        p.send(subjects.auth("32875"), None, v.to_string().into_bytes())
            .await?;
    }
    p.finish().await?;
    let last = js
        .get_stream("CASHBACK")
        .await?
        .info()
        .await?
        .state
        .last_sequence;
    let mut engine = start_engine(server.url(), &config, last).await?;
    let querier = async_nats::connect(server.url()).await?;

    let idle =
        statement_latencies(querier.clone(), Instant::now() + Duration::from_secs(5)).await?;

    // Load: `rate` payments a second for `seconds`, paced every 10 ms.
    let load_js = js.clone();
    let auth_subject = subjects.auth("32875");
    let load = tokio::spawn(async move {
        let mut p = Publisher {
            js: load_js,
            acks: VecDeque::new(),
        };
        let mut rng = StdRng::seed_from_u64(9);
        let per_tick = rate / 100;
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let started = Instant::now();
        let mut sent = 0usize;
        let now = Timestamp::now();
        while started.elapsed() < Duration::from_secs(seconds) {
            tick.tick().await;
            for _ in 0..per_tick {
                let c = rng.gen_range(1..citizens);
                let v = json!({
                    "acquirer_code": "32875", "operation_type": "00", "circuit_type": "01",
                    "hpan": hpan(c, 0), "trx_date": now.plus_secs(-rng.gen_range(60..86_400)).to_rome_rfc3339(),
                    "id_trx_acquirer": format!("l{sent}"), "total_amount": rng.gen_range(100..9000u64),
                    "currency": "978", "acquirer_id": "A1", "merchant_id": "M1",
                    "terminal_id": "T1", "bin": "40000000", "mcc": "5411"
                });
                p.send(auth_subject.clone(), None, v.to_string().into_bytes())
                    .await?;
                sent += 1;
            }
        }
        p.finish().await?;
        Ok::<_, anyhow::Error>(sent as f64 / started.elapsed().as_secs_f64())
    });
    let loaded =
        statement_latencies(querier, Instant::now() + Duration::from_secs(seconds)).await?;
    let offered = load.await??;
    unsafe {
        libc::kill(engine.id() as libc::pid_t, libc::SIGTERM);
    }
    engine.wait()?;
    let date = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC");
    Ok(format!(
        "### Statement query under load, {date}\n\
         Machine: {}. nats-server 2.15.1 (embedded), release build; 100,000 citizens; the queried citizen has 1,000 payments; page of 100; one query at a time.\n\
         Command: `cargo run --release --bin cashback-bench -- statement --rate {rate} --seconds {seconds}`\n\n\
         | figure | under load ({offered:.0} authorizations/s achieved of {rate} offered) | reference: same query, idle engine, same run | goal |\n\
         |---|---|---|---|\n\
         | statement latency p50 / p99 | {:.2} / {:.2} ms ({} queries) | {:.2} / {:.2} ms ({} queries) | p99 < 5 ms: {} |\n",
        machine(),
        pct(&loaded, 0.5),
        pct(&loaded, 0.99),
        loaded.len(),
        pct(&idle, 0.5),
        pct(&idle, 0.99),
        idle.len(),
        if pct(&loaded, 0.99) < 5.0 && offered >= rate as f64 * 0.95 { "met" } else { "**missed**" },
    ))
}
