//! `cashback import` of RTD acquirer files into a running engine.

mod common;

use common::*;
use serde_json::json;

fn row(hpan: &str, id: &str, trx: &str, amount: &str) -> String {
    format!("32875;00;01;{hpan};{trx};{id};AUTH;;{amount};978;A1;M1;T1;40000000;5411;")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_publishes_good_rows_and_reports_bad_ones() {
    let h = Harness::start(&config_toml(30)).await;
    h.citizen("ima", &at(-40, 0)).await;
    h.card("ima", &hpan(0x1a), &at(-30, 0)).await;
    h.citizen("ivo", &at(-40, 0)).await;
    h.card("ivo", &hpan(0x1b), &at(-30, 0)).await;
    let (a, b) = (hpan(0x1a), hpan(0x1b));
    let t = at(0, -600);
    let first = [
        row(&a, "1", &t, "1000"),
        row(&a, "2", &t, "2000"),
        "too;few;fields".to_owned(),
        row(&b, "3", &t, "35.50"),
        row(&b, "4", &t, "4000"),
        String::new(),
        row(&b, "5", &t, "500"),
    ]
    .join("\n");
    let second = [
        row(&a, "1", &t, "1000"),
        row(&a, "6", &t, "abc"),
        row(&a, "7", &t, "700"),
    ]
    .join("\r\n");
    let f1 = h
        .dir
        .path()
        .join("CSTAR.32875.TRNLOG.20261122.101500.001.csv");
    let f2 = h
        .dir
        .path()
        .join("CSTAR.32875.TRNLOG.20261122.111500.001.csv");
    std::fs::write(&f1, first + "\n").unwrap();
    std::fs::write(&f2, second).unwrap();

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cashback"))
        .arg("import")
        .arg(&f1)
        .arg(&f2)
        .args(["--nats-url", h.nats.url()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let reported: Vec<String> = stderr
        .lines()
        .filter(|l| l.contains("skipped:"))
        .map(|l| {
            let (file, rest) = l.split_once(".csv:").unwrap();
            let name = file.rsplit('/').next().unwrap();
            format!("{name}.csv:{}", rest.split(':').next().unwrap())
        })
        .collect();
    assert_eq!(
        reported,
        vec![
            "CSTAR.32875.TRNLOG.20261122.101500.001.csv:3",
            "CSTAR.32875.TRNLOG.20261122.101500.001.csv:4",
            "CSTAR.32875.TRNLOG.20261122.101500.001.csv:6",
            "CSTAR.32875.TRNLOG.20261122.111500.001.csv:2",
        ]
    );
    assert!(
        stderr.contains("6 rows published (1 already in JetStream's duplicate window), 4 skipped"),
        "{stderr}"
    );
    h.caught_up().await;
    let ima = h.query("ima", "CUR").await;
    assert_eq!(ima["transaction_count"], json!(3), "{ima}");
    assert_eq!(ima["cashback"], json!("3.70"));
    let ivo = h.query("ivo", "CUR").await;
    assert_eq!(ivo["transaction_count"], json!(2), "{ivo}");
    assert_eq!(ivo["cashback"], json!("4.50"));

    // A file that cannot be read fails the command.
    let missing = std::process::Command::new(env!("CARGO_BIN_EXE_cashback"))
        .args([
            "import",
            "/nonexistent/CSTAR.csv",
            "--nats-url",
            h.nats.url(),
        ])
        .output()
        .unwrap();
    assert!(!missing.status.success());
}
