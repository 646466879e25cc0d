//! `cashback simulate` against a real engine: what the simulator says it
//! sent is what the engine counted, citizen by citizen, and a second run
//! with the same seed publishes the same messages (all duplicates then, so
//! nothing changes); under a split-payment limit, `--verify` still agrees
//! with the engine on every citizen.

mod common;

use cashback::sim::{self, Generator};
use cashback_engine::money::money_string;
use cashback_engine::time::Timestamp;
use common::*;
use serde_json::json;
use std::process::Command;

/// Runs `cashback simulate` with `extra` arguments against `h`; returns
/// (success, stderr).
fn simulate(h: &Harness, now: &str, extra: &[&str]) -> (bool, String) {
    let metrics = format!("127.0.0.1:{}", h.engine.as_ref().unwrap().metrics_port);
    let out = Command::new(env!("CARGO_BIN_EXE_cashback"))
        .args([
            "simulate",
            "--citizens",
            "300",
            "--count",
            "20000",
            "--rate",
            "0",
        ])
        .args([
            "--seed", "7", "--now", now, "--verify", "--engine", &metrics,
        ])
        .arg("--config")
        .arg(&h.config)
        .args(["--nats-url", h.nats.url()])
        .args(extra)
        .output()
        .expect("run cashback simulate");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_counts_exactly_what_the_simulator_sent() {
    let h = Harness::start(&config_toml(30)).await;
    // A pinned "now" an hour ago (in the open period "CUR", never in the
    // broker's future), so both runs generate the same messages.
    let now = Timestamp::now().plus_secs(-3600);
    let now_text = now.to_rome_rfc3339();

    let (ok, log) = simulate(&h, &now_text, &[]);
    assert!(ok, "simulate failed:\n{log}");
    assert!(
        log.contains("enrolled 300 citizens (0 requests failed)"),
        "{log}"
    );
    assert!(
        log.contains("300 of 300 citizens match the engine"),
        "{log}"
    );

    // Independently of the command's own check: the same generator, fed
    // the same parameters here, expects what the engine answers.
    let start = today() - chrono::Days::new(60);
    let mut generator = Generator::new(
        300,
        7,
        now,
        Timestamp::rome_midnight(start),
        "0.10".parse().unwrap(),
        "15.00".parse().unwrap(),
    );
    let mut reversals = 0;
    for _ in 0..20_000 {
        let m = generator.next_message();
        reversals += m
            .body
            .windows(21)
            .filter(|w| w == b"\"operation_type\":\"01\"")
            .count();
    }
    generator.drain();
    assert!(reversals > 100, "the mix has reversals: {reversals}");
    let mut paid = 0;
    for i in 0..300 {
        let want = generator.expected().get(&i).cloned().unwrap_or_default();
        let got = h.query(&sim::citizen_id(i), "CUR").await;
        assert_eq!(got["transaction_count"], json!(want.count), "{i}: {got}");
        assert_eq!(
            got["cashback"],
            json!(money_string(want.cashback)),
            "{i}: {got}"
        );
        paid += (want.count > 0) as usize;
    }
    assert!(paid > 250, "most citizens paid: {paid}");

    // The same seed and now again: the same messages, every one a duplicate
    // (JetStream's window or the engine's key), so the totals stand.
    let before = h.health().await.unwrap()["applied_seq"].as_u64().unwrap();
    let (ok, log) = simulate(&h, &now_text, &["--skip-enrollment"]);
    assert!(ok, "second run failed:\n{log}");
    assert!(
        log.contains("300 of 300 citizens match the engine"),
        "{log}"
    );
    let after = h.health().await.unwrap()["applied_seq"].as_u64().unwrap();
    assert!(
        after >= before,
        "the second run was read ({before} -> {after})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_split_payment_limit_the_simulator_still_predicts_every_citizen() {
    // config_toml's last table is the open period "CUR": at most 2
    // payments of a card at a shop on a Rome day count there.
    let h = Harness::start(&format!(
        "{}max_payments_per_merchant_day = 2\n",
        config_toml(30)
    ))
    .await;
    let now = Timestamp::now().plus_secs(-3600).to_rome_rfc3339();
    let (ok, log) = simulate(&h, &now, &[]);
    assert!(ok, "simulate failed:\n{log}");
    assert!(
        log.contains("300 of 300 citizens match the engine"),
        "{log}"
    );
    // The split bursts (3 to 8 payments) went over the limit.
    let (_, metrics) = h.http_get("/metrics").await.unwrap();
    let over = sample(
        &metrics,
        "cashback_rejections_total{reason=\"merchant_daily_limit\"}",
    )
    .unwrap_or(0.0);
    assert!(over >= 20.0, "only {over} payments over the limit");
}
