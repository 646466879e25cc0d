//! Observability, end to end: the engine's `/metrics` under traffic, checked
//! by `promtool check metrics` and for exact values; a real Prometheus
//! (Debian's `prometheus` package, installed by scripts/install-prometheus.sh
//! when missing) scraping the running engine, with every PromQL expression
//! of the dashboards evaluated through its HTTP API; the dashboard JSON and
//! provisioning checked for what Grafana needs to import them; and a taken
//! metrics port reported as a clear error.
//!
//! Where Prometheus cannot be installed, the Prometheus test skips with a
//! loud message, except under CI (`CI=true`), where it fails.

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The repository root.
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every dashboard JSON in dashboards/.
fn dashboards() -> Vec<(PathBuf, Value)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root().join("dashboards")).expect("dashboards/") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).unwrap();
            let json: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
            out.push((path, json));
        }
    }
    assert!(!out.is_empty(), "no dashboard JSON in dashboards/");
    out
}

/// The panels of a dashboard, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().expect("panels") {
        out.push(p);
        if let Some(nested) = p["panels"].as_array() {
            out.extend(nested.iter());
        }
    }
    out
}

/// Every (panel title, PromQL) of the dashboards.
fn expressions() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (_, d) in dashboards() {
        for p in panels(&d) {
            for t in p["targets"].as_array().into_iter().flatten() {
                out.push((
                    p["title"].as_str().unwrap_or("?").to_owned(),
                    t["expr"].as_str().expect("expr").to_owned(),
                ));
            }
        }
    }
    out
}

/// An expression with Grafana's variables replaced as Grafana would with
/// "All" selected and a short range.
fn concrete(expr: &str) -> String {
    let e = expr
        .replace("$__rate_interval", "1m")
        .replace("$__interval", "15s")
        .replace("$__range", "5m")
        .replace("${instance}", ".+")
        .replace("$instance", ".+")
        .replace("${period}", ".+")
        .replace("$period", ".+");
    assert!(!e.contains('$'), "unreplaced variable in {expr}");
    e
}

/// Every metric name the dashboards query, in panels and template variables
/// (a histogram's `_bucket`, `_count` and `_sum` as they are exposed).
fn dashboard_metric_names() -> BTreeSet<String> {
    let mut texts: Vec<String> = expressions().into_iter().map(|(_, e)| e).collect();
    for (_, d) in dashboards() {
        for v in d["templating"]["list"].as_array().into_iter().flatten() {
            if let Some(def) = v["definition"].as_str() {
                texts.push(def.to_owned());
            }
        }
    }
    texts
        .iter()
        .flat_map(|t| t.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')))
        .filter(|w| w.starts_with("cashback_"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_series_the_dashboards_query_is_exposed_from_the_first_scrape() {
    let wanted = dashboard_metric_names();
    assert!(
        wanted.len() >= 20,
        "only {} metric names: {wanted:?}",
        wanted.len()
    );
    // A fresh engine: no snapshot yet, no traffic, no request; scraped as
    // soon as it reports ready.
    let h = Harness::start(&config_toml(30)).await;
    let (status, text) = h.http_get("/metrics").await.expect("/metrics");
    assert_eq!(status, 200);
    let exposed: BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|n| !exposed.contains(n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "series the dashboards query, missing from a fresh engine's /metrics: {missing:?}\n\n{text}"
    );
}

#[test]
fn the_dashboards_have_what_grafana_needs_to_import_them() {
    for (path, d) in dashboards() {
        let name = path.display().to_string();
        assert!(
            d["uid"]
                .as_str()
                .is_some_and(|u| !u.is_empty() && u.len() <= 40),
            "{name}: uid"
        );
        assert!(
            d["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{name}: title"
        );
        assert!(
            d["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
            "{name}: schemaVersion (Grafana 10 writes 38+)"
        );
        assert!(d["time"]["from"].is_string(), "{name}: time range");
        let vars: BTreeMap<String, &Value> = d["templating"]["list"]
            .as_array()
            .expect("templating.list")
            .iter()
            .map(|v| (v["name"].as_str().expect("variable name").to_owned(), v))
            .collect();
        let ds = vars.get("datasource").expect("a datasource variable");
        assert_eq!(ds["type"], "datasource");
        assert_eq!(ds["query"], "prometheus");
        for (var, v) in &vars {
            if v["type"] == "query" {
                assert!(
                    v["datasource"]["uid"].is_string(),
                    "{name}: variable {var} datasource"
                );
                assert!(
                    v["definition"]
                        .as_str()
                        .is_some_and(|q| q.starts_with("label_values(")),
                    "{name}: variable {var} query"
                );
            }
        }
        let mut ids = BTreeSet::new();
        let mut graphs = 0;
        for p in panels(&d) {
            let title = p["title"].as_str().unwrap_or("?");
            assert!(p["type"].is_string(), "{name}: panel {title}: type");
            assert!(
                ids.insert(p["id"].as_u64().expect("panel id")),
                "{name}: panel {title}: duplicate id"
            );
            for k in ["h", "w", "x", "y"] {
                assert!(
                    p["gridPos"][k].is_u64(),
                    "{name}: panel {title}: gridPos.{k}"
                );
            }
            assert!(
                p["gridPos"]["x"].as_u64().unwrap() + p["gridPos"]["w"].as_u64().unwrap() <= 24,
                "{name}: panel {title} wider than the grid"
            );
            if p["type"] == "row" {
                continue;
            }
            graphs += 1;
            assert!(!title.is_empty(), "{name}: a panel without title");
            assert_eq!(
                p["datasource"]["type"], "prometheus",
                "{name}: panel {title}: datasource"
            );
            let uid = p["datasource"]["uid"].as_str().expect("datasource uid");
            assert_eq!(uid, "${datasource}", "{name}: panel {title}: datasource");
            let targets = p["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{name}: panel {title}: no targets");
            let mut refs = BTreeSet::new();
            for t in targets {
                assert!(
                    refs.insert(t["refId"].as_str().expect("refId")),
                    "{name}: panel {title}: duplicate refId"
                );
                assert!(
                    t["expr"].as_str().is_some_and(|e| !e.is_empty()),
                    "{name}: panel {title}: expr"
                );
                assert_eq!(t["datasource"], p["datasource"]);
                // Every variable used is defined (or built in).
                let expr = t["expr"].as_str().unwrap();
                for var in expr.split('$').skip(1) {
                    let var: String = var
                        .trim_start_matches('{')
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    assert!(
                        var.starts_with("__") || vars.contains_key(&var),
                        "{name}: panel {title}: undefined variable ${var}"
                    );
                }
            }
        }
        assert!(graphs >= 10, "{name}: only {graphs} panels");
    }
    // Provisioning: a Prometheus datasource with the uid the dashboards
    // default to, and a file provider.
    let ds =
        std::fs::read_to_string(root().join("dashboards/provisioning/datasources/cashback.yaml"))
            .expect("datasource provisioning");
    for needle in [
        "apiVersion: 1",
        "datasources:",
        "type: prometheus",
        "uid: cashback-prometheus",
        "url: ",
    ] {
        assert!(
            ds.contains(needle),
            "datasource provisioning lacks {needle:?}"
        );
    }
    let (_, d) = &dashboards()[0];
    let default = d["templating"]["list"][0]["current"]["value"].as_str();
    assert_eq!(default, Some("cashback-prometheus"));
    let provider =
        std::fs::read_to_string(root().join("dashboards/provisioning/dashboards/cashback.yaml"))
            .expect("dashboard provisioning");
    for needle in ["apiVersion: 1", "providers:", "type: file", "path: "] {
        assert!(
            provider.contains(needle),
            "dashboard provisioning lacks {needle:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_metrics_port_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cashback.toml");
    std::fs::write(&config, config_toml(30)).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cashback"))
        .args(["serve", "--config"])
        .arg(&config)
        .args(["--nats-url", "nats://127.0.0.1:1"])
        .env("CASHBACK_METRICS_LISTEN", format!("127.0.0.1:{port}"))
        .env("CASHBACK_DATA_DIR", dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the engine kept running with its metrics port taken");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "stderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
    drop(taken);
}

/// Polls `/metrics` until every (series, value) holds, or fails with the text.
async fn wait_for_values(h: &Harness, want: &[(&str, f64)]) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, text) = h.http_get("/metrics").await.expect("/metrics");
        assert_eq!(status, 200);
        let wrong: Vec<_> = want
            .iter()
            .filter(|(s, v)| sample(&text, s) != Some(*v))
            .map(|(s, v)| format!("{s}: want {v}, have {:?}", sample(&text, s)))
            .collect();
        if wrong.is_empty() {
            return text;
        }
        if Instant::now() > deadline {
            panic!(
                "metrics never reached the expected values:\n{}\n\n{text}",
                wrong.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `promtool`, `prometheus`: present, installed now, or `None` when they
/// cannot be installed here (a failure under CI).
fn prometheus_tools() -> Option<()> {
    let present = |bin: &str| {
        Command::new(bin)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if present("prometheus") && present("promtool") {
        return Some(());
    }
    let script = root().join("scripts/install-prometheus.sh");
    let status = Command::new("bash").arg(&script).status();
    if status.as_ref().is_ok_and(|s| s.success()) && present("prometheus") && present("promtool") {
        return Some(());
    }
    let why = format!(
        "Prometheus is not installed and {} could not install it (status {status:?})",
        script.display()
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{why}; under CI this is a failure");
    }
    eprintln!(
        "\n{}\n!!! SKIPPED: {why}.\n!!! The Prometheus end-to-end test did NOT run.\n{}\n",
        "!".repeat(78),
        "!".repeat(78)
    );
    None
}

/// A Prometheus server, killed on drop.
struct Prometheus {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts Prometheus scraping `target` every second.
    fn start(target: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: cashback\n    scrape_timeout: 1s\n    \
                 static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .unwrap();
        check_config(&config);
        let port = cashback::nats::embedded::NatsServer::free_port().unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        Prometheus { child, port, dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// GET a path of Prometheus's HTTP API, as JSON.
    async fn get(&self, path_and_query: &str) -> Option<Value> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .ok()?;
        // HTTP/1.0: the body comes whole, without chunked encoding.
        conn.write_all(
            format!("GET {path_and_query} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes(),
        )
        .await
        .ok()?;
        let mut text = String::new();
        conn.read_to_string(&mut text).await.ok()?;
        serde_json::from_str(text.split_once("\r\n\r\n")?.1).ok()
    }

    /// An instant query's result vector, `None` while Prometheus does not answer.
    async fn try_query(&self, expr: &str) -> Option<Vec<Value>> {
        let reply = self
            .get(&format!("/api/v1/query?query={}", encode(expr)))
            .await?;
        assert_eq!(reply["status"], "success", "{expr}: {reply}");
        Some(
            reply["data"]["result"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        )
    }

    /// An instant query's result vector.
    async fn query(&self, expr: &str) -> Vec<Value> {
        self.try_query(expr)
            .await
            .unwrap_or_else(|| panic!("no answer from Prometheus to {expr}"))
    }
}

/// `promtool check config` on a file.
fn check_config(path: &Path) {
    let out = Command::new("promtool")
        .args(["check", "config"])
        .arg(path)
        .output()
        .expect("promtool");
    assert!(
        out.status.success(),
        "promtool check config {}: {}{}",
        path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Percent-encodes a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A sample's value as a number (Prometheus sends "NaN" for empty quantiles).
fn value(series: &Value) -> f64 {
    series["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_engine_and_every_dashboard_query_returns_data() {
    if prometheus_tools().is_none() {
        return;
    }
    check_config(&root().join("config/prometheus.yml"));
    // Snapshots every second, so that their series move under traffic.
    let config = format!("snapshot_interval_secs = 1\n{}", config_toml(30));
    let mut h = Harness::start(&config).await;

    // Known traffic: six citizens in the open period "CUR" (2 winners),
    // citizen i with i + 1 payments of 10.00 EUR (1.00 EUR cashback each).
    let (tc, activated) = (at(-45, 0), at(-40, 0));
    let ids: Vec<String> = (0..6).map(|i| format!("obs-citizen-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        h.citizen(id, &tc).await;
        h.card(id, &hpan(7000 + i as u64), &activated).await;
    }
    let bad = h
        .request(
            "cashback.enroll.citizen",
            json!({"citizen_id": "obs-bad", "iban": "IT00X0000000000000000000000", "tc_accepted_at": tc}),
        )
        .await;
    assert_eq!(bad["error"]["code"], "invalid_iban");
    for (i, _) in ids.iter().enumerate() {
        for k in 0..=i {
            let mut p = payment(
                &hpan(7000 + i as u64),
                &format!("obs-{i}-{k}"),
                &at(-1, k as i64),
                1000,
            );
            p["correlation_id"] = json!(format!("corr-{i}-{k}"));
            h.publish(&p).await;
        }
    }
    // Citizen 5 loses one payment: count 5, cashback 5.00.
    h.publish(&reversal(
        &hpan(7005),
        "obs-rev",
        &at(-1, 30),
        1000,
        Some("corr-5-0"),
    ))
    .await;
    // Three rejections: a re-send, a card nobody enrolled, garbage.
    let mut again = payment(&hpan(7000), "obs-0-0", &at(-1, 0), 1000);
    again["correlation_id"] = json!("corr-0-0");
    h.publish(&again).await;
    h.publish(&payment(&hpan(7999), "obs-x", &at(-1, 0), 1000))
        .await;
    h.publish_raw("cashback.auth.32875", b"not json".to_vec(), None)
        .await;
    h.caught_up().await;
    for id in &ids {
        assert_eq!(h.query(id, "CUR").await["ok"], true);
    }
    let board = h
        .request(
            "cashback.query.leaderboard",
            json!({"award_period": "CUR", "offset": 0, "limit": 10}),
        )
        .await;
    assert_eq!(board["ok"], true, "{board}");

    // Exact values: 21 payments counted, one reversed; ranked 6, top 5 (two
    // citizens at 5), cut-off (position 2) 5; cashback 21.00 - 1.00.
    let text = wait_for_values(
        &h,
        &[
            ("cashback_authorizations_total{outcome=\"counted\"}", 21.0),
            (
                "cashback_authorizations_total{outcome=\"reversal_applied\"}",
                1.0,
            ),
            ("cashback_authorizations_total{outcome=\"rejected\"}", 3.0),
            // Each message once: 21 + 1 + 3.
            ("cashback_authorizations_read_total", 25.0),
            ("cashback_rejections_total{reason=\"duplicate\"}", 1.0),
            (
                "cashback_rejections_total{reason=\"card_not_enrolled\"}",
                1.0,
            ),
            ("cashback_rejections_total{reason=\"malformed\"}", 1.0),
            (
                "cashback_enrollment_requests_total{subject=\"citizen\",outcome=\"ok\"}",
                6.0,
            ),
            (
                "cashback_enrollment_requests_total{subject=\"card\",outcome=\"ok\"}",
                6.0,
            ),
            (
                "cashback_enrollment_requests_total{subject=\"citizen\",outcome=\"invalid_iban\"}",
                1.0,
            ),
            ("cashback_ranked_participants{period=\"CUR\"}", 6.0),
            ("cashback_ranking_top_transactions{period=\"CUR\"}", 5.0),
            ("cashback_ranking_cutoff_transactions{period=\"CUR\"}", 5.0),
            ("cashback_supercashback_winners{period=\"CUR\"}", 2.0),
            ("cashback_ranked_participants{period=\"2021H1\"}", 0.0),
            ("cashback_accrued_euros{period=\"CUR\"}", 20.0),
            ("cashback_accrued_euros{period=\"2021H1\"}", 0.0),
            ("cashback_enrolled_citizens", 6.0),
            ("cashback_stream_lag_messages", 0.0),
            ("cashback_healthy", 1.0),
            ("cashback_nats_connected", 1.0),
            ("cashback_log_replayed", 1.0),
        ],
    )
    .await;
    let shard_citizens: f64 = (0..3)
        .filter_map(|s| sample(&text, &format!("cashback_shard_citizens{{shard=\"{s}\"}}")))
        .sum();
    assert_eq!(shard_citizens, 6.0, "citizens over the shards");
    for s in 0..3 {
        let series = format!("cashback_shard_batches_in_flight{{shard=\"{s}\"}}");
        assert!(
            sample(&text, &series).is_none_or(|v| v == 0.0),
            "{series} while idle"
        );
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("cashback_build_info{version=\"") && l.ends_with("} 1")),
        "build info"
    );

    // Real histograms (buckets, never summaries), units in names.
    for h in [
        "cashback_apply_latency_seconds",
        "cashback_enrollment_latency_seconds",
        "cashback_query_latency_seconds",
        "cashback_snapshot_duration_seconds",
        "cashback_snapshot_pause_seconds",
    ] {
        assert!(text.contains(&format!("# TYPE {h} histogram")), "{h} type");
        assert!(text.contains(&format!("{h}_bucket{{")), "{h} buckets");
    }
    assert!(!text.contains(" summary\n"), "a summary was exported");
    assert!(!text.contains("quantile=\""), "a summary was exported");

    // No IBAN, hpan or citizen id anywhere in the exposition.
    for (i, id) in ids.iter().enumerate() {
        assert!(!text.contains(id.as_str()), "citizen id {id} in /metrics");
        assert!(
            !text.contains(&hpan(7000 + i as u64)),
            "an hpan in /metrics"
        );
    }
    assert!(!text.contains(IBAN), "an IBAN in /metrics");
    assert!(!text.contains("IT00X"), "an IBAN in /metrics");

    // promtool's linter.
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Prometheus scrapes the engine every second while traffic keeps flowing:
    // payments, enrollments, queries.
    let port = h.engine.as_ref().unwrap().metrics_port;
    let prom = Prometheus::start(&format!("127.0.0.1:{port}"));
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (client, js, stop) = (h.client.clone(), h.js.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let i = n % 6;
                let p = payment(
                    &hpan(7000 + i),
                    &format!("live-{n}"),
                    &at(-1, n as i64),
                    1500,
                );
                let _ = js
                    .publish(
                        format!("cashback.auth.{}", p["acquirer_code"].as_str().unwrap()),
                        p.to_string().into(),
                    )
                    .await;
                let q = json!({"citizen_id": format!("obs-citizen-{i}"), "award_period": "CUR"});
                let _ = client
                    .request("cashback.query.citizen", q.to_string().into())
                    .await;
                if n % 5 == 1 {
                    let e = json!({"citizen_id": format!("obs-citizen-{i}"), "hpan": hpan(7000 + i),
                        "activated_at": at(-40, 0)});
                    let _ = client
                        .request("cashback.enroll.card", e.to_string().into())
                        .await;
                    let b = json!({"award_period": "CUR", "offset": 0, "limit": 3});
                    let _ = client
                        .request("cashback.query.leaderboard", b.to_string().into())
                        .await;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    // Wait for a few successful scrapes.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // Prometheus answers once it has started.
        let up = prom
            .try_query("count_over_time(up{job=\"cashback\"}[1m]) >= 4")
            .await
            .unwrap_or_default();
        let healthy = prom
            .try_query("min_over_time(up{job=\"cashback\"}[1m]) == 1")
            .await
            .unwrap_or_default();
        if !up.is_empty() && !healthy.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            let targets = prom.get("/api/v1/targets").await;
            panic!(
                "Prometheus did not scrape the engine: targets {targets:?}\nlog:\n{}",
                prom.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Every dashboard expression returns data, with at least one number.
    let exprs = expressions();
    assert!(exprs.len() >= 20, "only {} expressions", exprs.len());
    let mut failures = Vec::new();
    for (title, expr) in &exprs {
        let promql = concrete(expr);
        let result = prom.query(&promql).await;
        if result.is_empty() {
            failures.push(format!("{title}: no data: {promql}"));
        } else if !result.iter().any(|s| value(s).is_finite()) {
            failures.push(format!("{title}: only NaN: {promql} -> {result:?}"));
        }
    }
    // Template variables: label_values(metric, label) has values.
    for (_, d) in dashboards() {
        for v in d["templating"]["list"].as_array().unwrap() {
            let Some(def) = v["definition"].as_str() else {
                continue;
            };
            let inner = def
                .strip_prefix("label_values(")
                .and_then(|s| s.strip_suffix(')'))
                .expect("label_values(metric, label)");
            let (metric, label) = inner.split_once(',').expect("metric, label");
            let reply = prom
                .get(&format!(
                    "/api/v1/label/{}/values?match[]={}",
                    label.trim(),
                    encode(metric.trim())
                ))
                .await
                .expect("label values");
            if reply["data"].as_array().is_none_or(|a| a.is_empty()) {
                failures.push(format!("variable {}: no values: {def}", v["name"]));
            }
        }
    }
    // The ranking as Prometheus stored it.
    let ranked = prom
        .query("cashback_ranked_participants{job=\"cashback\",period=\"CUR\"}")
        .await;
    assert_eq!(ranked.len(), 1);
    assert_eq!(value(&ranked[0]), 6.0);
    stop.store(true, Ordering::Relaxed);
    let _ = traffic.await;
    drop(prom);
    assert!(
        failures.is_empty(),
        "dashboard expressions without data:\n{}",
        failures.join("\n")
    );

    // After a restart from the final snapshot, the state series say the same.
    h.caught_up().await;
    // The state series are polled from the actors once a second: wait for
    // a poll that follows the last applied message.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, before) = h.http_get("/metrics").await.expect("/metrics");
    let state = [
        "cashback_accrued_euros{period=\"CUR\"}",
        "cashback_ranked_participants{period=\"CUR\"}",
        "cashback_ranking_cutoff_transactions{period=\"CUR\"}",
        "cashback_ranking_top_transactions{period=\"CUR\"}",
        "cashback_enrolled_citizens",
    ];
    let want: Vec<(&str, f64)> = state
        .iter()
        .map(|s| {
            (
                *s,
                sample(&before, s).unwrap_or_else(|| panic!("{s} missing")),
            )
        })
        .collect();
    assert!(want[0].1 > 20.0, "live payments accrued cashback");
    assert_eq!(h.stop_engine(), Some(0));
    let restarted_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    h.start_engine().await;
    let after = wait_for_values(&h, &want).await;
    // The snapshot's own time, taken before the restart (before there is
    // one, the gauge holds the engine's start).
    assert!(
        sample(&after, "cashback_snapshot_timestamp_seconds")
            .is_some_and(|t| t > 1.6e9 && t < restarted_at),
        "the restored snapshot's time"
    );
    assert!(
        sample(&after, "cashback_snapshot_bytes").is_some_and(|b| b > 0.0),
        "the restored snapshot's size"
    );
    assert!(
        h.engine_log().contains("restored snapshot"),
        "the engine restarted from a snapshot"
    );
}
