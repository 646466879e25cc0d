//! The README's first command as a new user runs it: `cashback serve` with
//! no NATS URL starts its own nats-server (store in the data directory),
//! `--demo` traffic flows and counts, `--status` prints its line, queries
//! are answered, and Ctrl-C (SIGINT to the process group) stops everything
//! with exit code 0 after a final snapshot, without a warning or an error
//! in the output.

mod common;

use cashback::nats::embedded::NatsServer;
use common::*;
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The engine process, killed if the test fails before it stops it (a
/// failed assertion must not leave an engine and its nats-server behind).
struct Engine(std::process::Child);

impl Drop for Engine {
    fn drop(&mut self) {
        // SIGTERM first, so that the engine stops its nats-server too.
        unsafe {
            libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM);
        }
        for _ in 0..50 {
            if !matches!(self.0.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_without_a_url_embeds_nats_runs_the_demo_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (nats_port, metrics_port) = (
        NatsServer::free_port().unwrap(),
        NatsServer::free_port().unwrap(),
    );
    let config = dir.path().join("cashback.toml");
    std::fs::write(
        &config,
        format!("embedded_nats_port = {nats_port}\n{}", config_toml(30)),
    )
    .unwrap();
    let stdout = dir.path().join("stdout.log");
    use std::os::unix::process::CommandExt;
    // Its own process group, as a shell gives a foreground job: Ctrl-C in a
    // terminal signals the whole group, which is what the end simulates.
    let mut engine = Engine(
        Command::new(env!("CARGO_BIN_EXE_cashback"))
            .process_group(0)
            .args(["serve", "--status", "--demo", "--config"])
            .arg(&config)
            .env_remove("CASHBACK_NATS_URL")
            .env("CASHBACK_DATA_DIR", dir.path().join("data"))
            .env(
                "CASHBACK_METRICS_LISTEN",
                format!("127.0.0.1:{metrics_port}"),
            )
            .env(
                "CASHBACK_NATS_SERVER_BIN",
                NatsServer::locate("").expect("nats-server: run `make install-nats`"),
            )
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let log = || {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            std::fs::read_to_string(&stdout).unwrap_or_default(),
            std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default()
        )
    };

    // The demo enrolls 3,000 citizens and then pays: wait for counted payments.
    let deadline = Instant::now() + Duration::from_secs(90);
    let counted = loop {
        let metrics = http_get(metrics_port, "/metrics").await.map(|(_, b)| b);
        let counted = metrics
            .as_deref()
            .and_then(|m| sample(m, "cashback_authorizations_total{outcome=\"counted\"}"))
            .unwrap_or(0.0);
        if counted >= 1000.0 {
            break counted;
        }
        assert!(
            Instant::now() < deadline,
            "no demo payments counted; {}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(counted >= 1000.0);
    let (status, health) = http_get(metrics_port, "/health").await.unwrap();
    assert_eq!(status, 200, "{health}");

    // The embedded server is a real NATS on the configured loopback port,
    // with its store in the data directory.
    let client = async_nats::connect(format!("nats://127.0.0.1:{nats_port}"))
        .await
        .unwrap();
    let reply = client
        .request(
            "cashback.query.citizen",
            json!({"citizen_id": "sim-0"}).to_string().into(),
        )
        .await
        .unwrap();
    let reply: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(reply["ok"], json!(true), "{reply}");
    assert_eq!(reply["award_period"], json!("CUR"), "{reply}");
    assert!(
        dir.path().join("data/nats/jetstream").is_dir(),
        "store in the data dir"
    );
    drop(client);

    // The status line, once a second, shows the demo's citizens.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&stdout)
        .unwrap()
        .lines()
        .any(|l| l.contains(" auth/s | ") && l.contains("| citizens 3000 |"))
    {
        assert!(Instant::now() < deadline, "no status line; {}", log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Ctrl-C as a terminal sends it: SIGINT to the engine's whole process
    // group. The embedded nats-server must outlive the final snapshot.
    unsafe {
        libc::kill(-(engine.0.id() as libc::pid_t), libc::SIGINT);
    }
    let code = engine.0.wait().unwrap().code();
    assert_eq!(code, Some(0), "{}", log());
    // The broker outlived the drain: the final snapshot was stored.
    let stderr = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
    let stdout_text = std::fs::read_to_string(&stdout).unwrap();
    let after_stop = &stderr[stderr
        .find("shutdown requested")
        .expect("a logged shutdown")..];
    assert!(after_stop.contains("snapshot stored"), "{}", log());
    // A clean stop is quiet: nothing alarming from start to end, in
    // particular no client errors from a connection that outlived the
    // embedded nats-server.
    let alarming: Vec<&str> = stderr
        .lines()
        .chain(stdout_text.lines())
        .filter(|l| l.contains(" WARN") || l.contains(" ERROR"))
        .collect();
    assert!(
        alarming.is_empty(),
        "warnings or errors in a clean run:\n{}",
        alarming.join("\n")
    );
    // The embedded nats-server went with it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", nats_port)).is_ok() {
        assert!(
            Instant::now() < deadline,
            "the embedded nats-server is still running"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
