//! The periods query and NATS service discovery (`$SRV.PING`, `$SRV.INFO`,
//! `$SRV.STATS`) end to end, against a real nats-server and the engine.

mod common;

use chrono::{Days, NaiveDate};
use common::*;
use futures::StreamExt;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// Four non-overlapping periods around today, one in each state: CLOSED
/// (its grace ended), GRACE (ended, grace running), CUR (active), NEXT
/// (upcoming). Margins of days keep the states when the test runs across a
/// midnight. The numbers differ per period so that a field read from the
/// wrong place shows.
fn four_periods() -> (String, Value) {
    let d = |offset: i64| -> NaiveDate {
        if offset < 0 {
            today() - Days::new(offset.unsigned_abs())
        } else {
            today() + Days::new(offset as u64)
        }
    };
    // Money as configured, then as replied (always two decimals).
    let periods = [
        (
            "CLOSED",
            d(-100),
            d(-60),
            10,
            50,
            "0.10",
            ["15.00", "150.00", "1500.00"],
            ["15.00", "150.00", "1500.00"],
            100,
            "closed",
        ),
        (
            "GRACE",
            d(-50),
            d(-5),
            10,
            3,
            "0.05",
            ["10", "20.0", "100"],
            ["10.00", "20.00", "100.00"],
            2,
            "grace",
        ),
        (
            "CUR",
            d(-4),
            d(30),
            7,
            10,
            "0.2",
            ["1.5", "30.00", "250.5"],
            ["1.50", "30.00", "250.50"],
            5,
            "active",
        ),
        (
            "NEXT",
            d(40),
            d(80),
            0,
            1,
            "0.10",
            ["15", "150", "0"],
            ["15.00", "150.00", "0.00"],
            0,
            "upcoming",
        ),
    ];
    let mut toml = String::from("reversal_park_days = 30\nshards = 2\n");
    let mut want = Vec::new();
    for (id, start, end, grace, min, rate, [per_trx, max, prize], replied, winners, status) in
        periods
    {
        toml.push_str(&format!(
            r#"
[[periods]]
id = "{id}"
start = "{start}"
end = "{end}"
grace_days = {grace}
min_transactions = {min}
cashback_rate = "{rate}"
max_cashback_per_transaction = "{per_trx}"
max_cashback = "{max}"
supercashback_winners = {winners}
supercashback_prize = "{prize}"
"#
        ));
        want.push(json!({
            "id": id, "start": start.to_string(), "end": end.to_string(),
            "grace_days": grace, "min_transactions": min, "cashback_rate": rate,
            "max_cashback_per_transaction": replied[0], "max_cashback": replied[1],
            "supercashback_winners": winners, "supercashback_prize": replied[2],
            "max_payments_per_merchant_day": 0, "status": status
        }));
    }
    (toml, json!({"ok": true, "periods": want}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_periods_query_lists_every_period_with_its_status() {
    let (config, want) = four_periods();
    let h = Harness::start(&config).await;
    assert_eq!(h.request("cashback.query.periods", json!({})).await, want);
    // Unknown fields are ignored, as everywhere.
    assert_eq!(
        h.request("cashback.query.periods", json!({"award_period": "CUR"}))
            .await,
        want
    );
    // Not an object: an empty array would read as the empty struct.
    for body in [json!([1]), json!([])] {
        let refused = h.request("cashback.query.periods", body).await;
        assert_eq!(refused["error"]["code"], json!("bad_request"), "{refused}");
    }
    // The default period of a query is the active one.
    h.citizen("ann", &at(-3, 0)).await;
    assert_eq!(
        h.request("cashback.query.citizen", json!({"citizen_id": "ann"}))
            .await["award_period"],
        json!("CUR")
    );
}

/// Sends `body` to `subject` and returns the JSON reply with its
/// `Nats-Service-Error` header (None on success).
async fn call(h: &Harness, subject: &str, body: Value) -> (Value, Option<String>) {
    let reply = tokio::time::timeout(
        Duration::from_secs(20),
        h.client
            .request(subject.to_owned(), body.to_string().into()),
    )
    .await
    .expect("request timed out")
    .expect("request failed");
    let error = reply
        .headers
        .as_ref()
        .and_then(|h| h.get("Nats-Service-Error"))
        .map(|v| v.as_str().to_owned());
    (serde_json::from_slice(&reply.payload).expect("JSON"), error)
}

/// A `$SRV` request answered by exactly one service instance.
async fn srv(h: &Harness, subject: &str) -> Value {
    h.request(subject, json!({})).await
}

/// Each endpoint's (requests, errors) in a `$SRV.STATS` reply.
fn counts(stats: &Value) -> BTreeMap<String, (u64, u64)> {
    stats["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                (
                    e["num_requests"].as_u64().unwrap(),
                    e["num_errors"].as_u64().unwrap(),
                ),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_tooling_discovers_and_measures_every_service() {
    let h = Harness::start(&config_toml(30)).await;

    // PING: every service answers on the shared subject.
    let inbox = h.client.new_inbox();
    let mut pongs = h.client.subscribe(inbox.clone()).await.unwrap();
    h.client
        .publish_with_reply("$SRV.PING", inbox, "".into())
        .await
        .unwrap();
    let mut names = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while names.len() < 3 {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(Some(pong)) = tokio::time::timeout(left, pongs.next()).await else {
            panic!("only {names:?} answered $SRV.PING");
        };
        let pong: Value = serde_json::from_slice(&pong.payload).unwrap();
        assert_eq!(pong["type"], json!("io.nats.micro.v1.ping_response"));
        assert_eq!(pong["version"], json!(env!("CARGO_PKG_VERSION")));
        names.insert(pong["name"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        names,
        BTreeSet::from([
            "cashback-admin".into(),
            "cashback-enrollment".into(),
            "cashback-query".into()
        ])
    );

    // INFO: every request-reply subject, in the engine's queue group.
    let endpoints = |info: &Value| -> BTreeSet<(String, String, String)> {
        info["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let s = |k: &str| e[k].as_str().unwrap().to_owned();
                (s("name"), s("subject"), s("queue_group"))
            })
            .collect()
    };
    let expect = |prefix: &str, names: &[&str]| -> BTreeSet<(String, String, String)> {
        names
            .iter()
            .map(|n| {
                (
                    n.to_string(),
                    format!("{prefix}.{n}"),
                    "cashback-engine".to_owned(),
                )
            })
            .collect()
    };
    let info = srv(&h, "$SRV.INFO.cashback-enrollment").await;
    assert_eq!(info["type"], json!("io.nats.micro.v1.info_response"));
    assert_eq!(
        endpoints(&info),
        expect(
            "cashback.enroll",
            &["citizen", "card", "card_remove", "citizen_remove"]
        )
    );
    let info = srv(&h, "$SRV.INFO.cashback-query").await;
    assert_eq!(
        endpoints(&info),
        expect(
            "cashback.query",
            &[
                "citizen",
                "transactions",
                "leaderboard",
                "wallet",
                "periods",
                "awards"
            ]
        )
    );

    // Requests, some refused: a refusal is an endpoint error, with the
    // services protocol's header, and its body is still the protocol's.
    h.citizen("ann", &at(-40, 0)).await;
    let (r, err) = call(
        &h,
        "cashback.enroll.citizen",
        json!({"citizen_id": "bob", "iban": "IT00X0542811101000000123456",
               "tc_accepted_at": at(-40, 0)}),
    )
    .await;
    assert_eq!(r["error"]["code"], json!("invalid_iban"), "{r}");
    assert_eq!(err.as_deref(), Some("invalid_iban"));
    let (r, err) = call(
        &h,
        "cashback.enroll.card",
        json!({"citizen_id": "nobody", "hpan": hpan(1), "activated_at": at(-30, 0)}),
    )
    .await;
    assert_eq!(
        r,
        json!({"ok": false, "error": {"code": "unknown_citizen",
                                      "message": "no citizen with this citizen_id"}})
    );
    assert_eq!(err.as_deref(), Some("unknown_citizen"));
    let (r, err) = call(
        &h,
        "cashback.query.citizen",
        json!({"citizen_id": "ann", "award_period": "CUR"}),
    )
    .await;
    assert_eq!((r["ok"].clone(), err), (json!(true), None), "{r}");
    let (r, _) = call(&h, "cashback.query.citizen", json!({"citizen_id": "zed"})).await;
    assert_eq!(r["error"]["code"], json!("unknown_citizen"));
    let (r, err) = call(&h, "cashback.query.periods", json!({})).await;
    assert_eq!((r["ok"].clone(), err), (json!(true), None));
    let (r, _) = call(&h, "cashback.query.leaderboard", json!({"limit": 1001})).await;
    assert_eq!(r["error"]["code"], json!("bad_request"));
    let (r, err) = call(&h, "cashback.query.wallet", json!({"citizen_id": "ann"})).await;
    assert_eq!((r["ok"].clone(), err), (json!(true), None), "{r}");

    // STATS: the counts of what was sent above. A reply may reach the
    // requester just before its request is counted, so wait for them.
    let want_enrollment = BTreeMap::from([
        ("citizen".to_owned(), (2, 1)),
        ("card".to_owned(), (1, 1)),
        ("card_remove".to_owned(), (0, 0)),
        ("citizen_remove".to_owned(), (0, 0)),
    ]);
    let want_query = BTreeMap::from([
        ("citizen".to_owned(), (2, 1)),
        ("transactions".to_owned(), (0, 0)),
        ("leaderboard".to_owned(), (1, 1)),
        ("wallet".to_owned(), (1, 0)),
        ("periods".to_owned(), (1, 0)),
        ("awards".to_owned(), (0, 0)),
    ]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let (enrollment, query) = loop {
        let e = srv(&h, "$SRV.STATS.cashback-enrollment").await;
        let q = srv(&h, "$SRV.STATS.cashback-query").await;
        if (counts(&e) == want_enrollment && counts(&q) == want_query) || Instant::now() > deadline
        {
            break (e, q);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(counts(&enrollment), want_enrollment, "{enrollment}");
    assert_eq!(counts(&query), want_query, "{query}");
    assert_eq!(query["type"], json!("io.nats.micro.v1.stats_response"));
    for e in query["endpoints"].as_array().unwrap() {
        if e["name"] == json!("citizen") {
            assert_eq!(e["last_error"], json!("404:unknown_citizen"), "{e}");
        }
        if e["num_requests"].as_u64() > Some(0) {
            assert!(e["processing_time"].as_u64() > Some(0), "{e}");
        }
    }

    // The engine's own metrics count the same requests as before.
    let (_, metrics) = h.http_get("/metrics").await.expect("metrics");
    assert_eq!(
        sample(
            &metrics,
            "cashback_enrollment_requests_total{subject=\"citizen\",outcome=\"invalid_iban\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &metrics,
            "cashback_query_latency_seconds_count{query=\"citizen\"}"
        ),
        Some(2.0)
    );
}
