//! Operator controls end to end, on a real nats-server (RULES.md "Split
//! payments" and "Operator exclusions", PROTOCOL.md sections 3, 5 and 6):
//! - bursts of payments at one shop on one Rome day, across a Rome midnight
//!   and on both DST days, with reversals of counted ones and another
//!   acquirer at the same merchant id: every count, cashback and rejection
//!   (seq, reason) equals the single-threaded reference engine fed the
//!   stream as JetStream stored it (same order, same broker times);
//! - exclusions and reinstatements mid-stream, repeated, of unknown keys,
//!   malformed, and of a payment that never counted in a closed period:
//!   the replies, statements, citizen queries, leaderboard and pushes
//!   follow, and a restart after a kill -9 keeps all of it;
//! - `cashback exclude FILE.csv [--reinstate]` in bulk.
//!
//! What is not here: an exclusion answered `period_closed`. It needs a
//! payment that counted while its period accepted data and a request after
//! the period closed, at a Rome midnight by broker time, which a test
//! cannot wait for; `engine/src/ledger/tests.rs` covers that decision.

mod common;

use async_nats::Subscriber;
use cashback_engine::admin::JournalEntry;
use cashback_engine::enrollment::EnrollCommand;
use cashback_engine::local::LocalEngine;
use cashback_engine::money::money_string;
use cashback_engine::period::{AwardPeriod, Periods};
use cashback_engine::refusal::ErrorCode;
use cashback_engine::router::Position;
use cashback_engine::time::Timestamp;
use chrono::{Datelike, Days, NaiveDate};
use common::*;
use futures::StreamExt;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `max_payments_per_merchant_day` of the period "SPLIT".
const LIMIT: u16 = 3;

/// The last Sunday of `month` (3: clocks go forward, a 23-hour day in Rome;
/// 10: back, a 25-hour day) in `year`.
fn last_sunday(year: i32, month: u32) -> NaiveDate {
    let last = NaiveDate::from_ymd_opt(year, month + 1, 1).unwrap() - Days::new(1);
    last - Days::new(last.weekday().num_days_from_sunday() as u64)
}

/// The latest last Sunday of `month` before today: a day in the past, so
/// that a payment at any hour of it is never from the broker's future.
fn past_dst_day(month: u32) -> NaiveDate {
    let this_year = last_sunday(today().year(), month);
    if this_year < today() {
        this_year
    } else {
        last_sunday(today().year() - 1, month)
    }
}

/// The first day of "SPLIT": before both DST days.
fn split_start() -> NaiveDate {
    past_dst_day(3).min(past_dst_day(10)) - Days::new(2)
}

/// One closed period ("OLD", 2021) and "SPLIT", from before the last two
/// DST days to a month from now (so everything in between still accepts
/// data by broker time), with the split-payment limit; snapshots every
/// second and never a purge, so that the reference can read the whole log.
fn config() -> String {
    format!(
        r#"
shards = 3
snapshot_interval_secs = 1
purge_after_snapshot = false

[[periods]]
id = "OLD"
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
id = "SPLIT"
start = "{start}"
end = "{end}"
grace_days = 10
min_transactions = 3
cashback_rate = "0.10"
max_cashback_per_transaction = "15.00"
max_cashback = "150.00"
supercashback_winners = 2
supercashback_prize = "1500.00"
max_payments_per_merchant_day = {LIMIT}
"#,
        start = split_start(),
        end = today() + Days::new(30),
    )
}

/// An instant `secs` seconds after midnight starting `date` in Rome, as
/// RFC 3339 in Rome's offset of that instant.
fn rome(date: NaiveDate, secs: i64) -> String {
    Timestamp::rome_midnight(date)
        .plus_secs(secs)
        .to_rome_rfc3339()
}

/// A payment of `cents` at `merchant` of `acquirer`, with a correlation id
/// of its own (so that a reversal can name it).
fn shop_payment(
    card: &str,
    acquirer: &str,
    merchant: &str,
    id: &str,
    trx: &str,
    cents: u64,
) -> Value {
    let mut p = payment(card, id, trx, cents);
    p["acquirer_code"] = json!(acquirer);
    p["merchant_id"] = json!(merchant);
    p["correlation_id"] = json!(format!("corr-{id}"));
    p
}

/// The total reversal of `p`, by its correlation id.
fn reversal_of(p: &Value, id: &str, cents: u64) -> Value {
    let mut r = p.clone();
    r["operation_type"] = json!("01");
    r["id_trx_acquirer"] = json!(id);
    r["total_amount"] = json!(cents);
    r
}

/// Enrolls `id` with `card`, both from the start of "SPLIT".
async fn enroll(h: &Harness, id: &str, card: &str) {
    let since = rome(split_start(), 0);
    h.citizen(id, &since).await;
    h.card(id, card, &since).await;
}

/// The reference: the periods of `config`, 256 partitions and the default
/// parking as the engine runs them, fed every message of the stream in
/// sequence order with the broker time JetStream stored it with.
async fn reference(h: &Harness, config: &str) -> LocalEngine {
    #[derive(serde::Deserialize)]
    struct Configured {
        periods: Vec<AwardPeriod>,
    }
    let c: Configured = toml::from_str(&config[config.find("[[periods]]").unwrap()..]).unwrap();
    let mut local = LocalEngine::new(256, Arc::new(Periods::new(c.periods).unwrap()), 30);
    let mut stream = h.js.get_stream("CASHBACK").await.unwrap();
    let state = stream.info().await.unwrap().state.clone();
    assert_eq!(state.first_sequence, 1, "the stream was purged");
    for seq in 1..=state.last_sequence {
        let m = stream.get_raw_message(seq).await.unwrap();
        let at = Position {
            seq,
            broker_time: Timestamp::from_unix_nanos(m.time.unix_timestamp_nanos()),
        };
        let subject = m.subject.as_str();
        if subject.starts_with("cashback.auth.") {
            local.authorization(at, subject, &m.payload);
        } else if subject == "cashback.journal.enroll" {
            let _ = local.enroll(at, &EnrollCommand::from_journal(&m.payload).unwrap());
        } else if subject == "cashback.journal.admin" {
            let e = JournalEntry::from_journal(&m.payload).unwrap();
            let _ = local.exclusion(at, e.op, &e.command);
        }
    }
    assert_eq!(local.invariant_violations, Vec::<String>::new());
    local
}

/// Every citizen's count, cashback and last_trx_date in "SPLIT" as the
/// engine answers them equal the reference's.
async fn assert_standings(h: &Harness, local: &LocalEngine, citizens: &[&str]) {
    for id in citizens {
        let got = h.query(id, "SPLIT").await;
        let want = local.standing(id, "SPLIT").unwrap_or_default();
        assert_eq!(got["transaction_count"], json!(want.count), "{id}: {got}");
        assert_eq!(
            got["cashback"],
            json!(money_string(want.cashback)),
            "{id}: {got}"
        );
        assert_eq!(
            got["last_trx_date"],
            json!(want.last_trx.map(|t| t.to_rome_rfc3339())),
            "{id}: {got}"
        );
    }
}

/// Rejections (seq, reason) from `sub` until `want` are all in, or 30 s
/// passed; then whatever else arrives within a moment (a rejection the
/// reference does not make would show there).
async fn rejections(
    sub: &mut Subscriber,
    want: &BTreeSet<(u64, String)>,
) -> BTreeSet<(u64, String)> {
    let mut got = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !want.is_subset(&got) && Instant::now() < deadline {
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(1), sub.next()).await {
            let r: Value = serde_json::from_slice(&m.payload).unwrap();
            got.insert((
                r["seq"].as_u64().unwrap(),
                r["reason"].as_str().unwrap().to_owned(),
            ));
        }
    }
    for r in drain(sub, Duration::from_millis(300)).await {
        got.insert((
            r["seq"].as_u64().unwrap(),
            r["reason"].as_str().unwrap().to_owned(),
        ));
    }
    got
}

/// The reference's rejections as (seq, reason).
fn reference_rejections(local: &LocalEngine) -> BTreeSet<(u64, String)> {
    local
        .rejections
        .iter()
        .map(|(seq, r)| (*seq, r.reason.as_str().to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_payments_count_as_the_reference_decides_on_any_rome_day() {
    let config = config();
    let h = Harness::start(&config).await;
    let mut rejected = h.client.subscribe("cashback.rejected.>").await.unwrap();
    h.client.flush().await.unwrap();
    let (a, b) = (hpan(101), hpan(102));
    enroll(&h, "split-a", &a).await;
    enroll(&h, "split-b", &b).await;
    let mut limited = 0;

    // One shop, one ordinary Rome day: 5 payments, the last 2 over the limit.
    let d1 = today() - Days::new(3);
    let burst: Vec<Value> = (0..5)
        .map(|k| {
            let trx = rome(d1, 10 * 3600 + k * 300);
            shop_payment(&a, "32875", "M1", &format!("m1-{k}"), &trx, 150 + k as u64)
        })
        .collect();
    for p in &burst {
        h.publish(p).await;
    }
    limited += 2;
    // A counted one reversed in full gives no slot back: the next one at
    // that shop that day is over the limit too.
    h.publish(&reversal_of(&burst[1], "m1-1-rev", 151)).await;
    h.publish(&shop_payment(
        &a,
        "32875",
        "M1",
        "m1-5",
        &rome(d1, 11 * 3600),
        155,
    ))
    .await;
    limited += 1;
    // A re-send of a counted one is a duplicate (and takes no slot); a
    // re-send of a rejected one is judged afresh: over the limit again.
    h.publish(&burst[0]).await;
    h.publish(&burst[4]).await;
    limited += 1;
    // Another acquirer's shop with the same merchant id has its own slots.
    for k in 0..4 {
        let trx = rome(d1, 12 * 3600 + k * 60);
        h.publish(&shop_payment(
            &a,
            "11111",
            "M1",
            &format!("o1-{k}"),
            &trx,
            200,
        ))
        .await;
    }
    limited += 1;
    // Another shop of the same acquirer, and another card at the first shop.
    h.publish(&shop_payment(
        &a,
        "32875",
        "M2",
        "m2-0",
        &rome(d1, 13 * 3600),
        300,
    ))
    .await;
    for k in 0..3 {
        let trx = rome(d1, 10 * 3600 + k * 60);
        h.publish(&shop_payment(
            &b,
            "32875",
            "M1",
            &format!("b1-{k}"),
            &trx,
            400,
        ))
        .await;
    }

    // Across a Rome midnight: 4 payments in the last quarter hour of a day
    // (one over), 3 from the next midnight on (a new day: all count; by UTC
    // date they would share the first day).
    let d2 = today() - Days::new(2);
    for (k, to_midnight) in [900, 600, 300, 120].into_iter().enumerate() {
        h.publish(&shop_payment(
            &a,
            "32875",
            "M3",
            &format!("m3-{k}"),
            &rome(d2 + Days::new(1), -to_midnight),
            500,
        ))
        .await;
    }
    limited += 1;
    for (k, secs) in [0, 300, 600].into_iter().enumerate() {
        let trx = rome(d2 + Days::new(1), secs);
        h.publish(&shop_payment(
            &a,
            "32875",
            "M3",
            &format!("m3n-{k}"),
            &trx,
            510,
        ))
        .await;
    }

    // The 25-hour day (clocks back at 03:00): 02:30 happens twice, and
    // 23:59 is 24 h 59 min after midnight, still the same day. 5 payments
    // that day (2 over), then one a minute after the next midnight.
    let autumn = past_dst_day(10);
    let hour = 3600;
    for (k, secs) in [
        hour + 1800,         // 01:30+02:00
        2 * hour + 1800,     // 02:30+02:00
        3 * hour + 1800,     // 02:30+01:00
        3 * hour + 2700,     // 02:45+01:00
        24 * hour + 59 * 60, // 23:59+01:00
    ]
    .into_iter()
    .enumerate()
    {
        let trx = rome(autumn, secs);
        if k == 2 {
            assert!(trx.ends_with("T02:30:00+01:00"), "{trx}");
        }
        h.publish(&shop_payment(
            &a,
            "32875",
            "M4",
            &format!("m4-{k}"),
            &trx,
            600,
        ))
        .await;
    }
    limited += 2;
    h.publish(&shop_payment(
        &a,
        "32875",
        "M4",
        "m4-next",
        &rome(autumn + Days::new(1), 60),
        610,
    ))
    .await;

    // The 23-hour day (clocks forward at 02:00): 23:59 is 22 h 59 min after
    // midnight, and 00:00:30 the next day only 23 h after it. 5 payments
    // that day (2 over), then one just after the next midnight.
    let spring = past_dst_day(3);
    for (k, secs) in [
        hour + 59 * 60,      // 01:59+01:00
        2 * hour + 60,       // 03:01+02:00
        11 * hour,           // 12:00+02:00
        22 * hour + 30 * 60, // 23:30+02:00
        22 * hour + 59 * 60, // 23:59+02:00
    ]
    .into_iter()
    .enumerate()
    {
        let trx = rome(spring, secs);
        if k == 1 {
            assert!(trx.ends_with("T03:01:00+02:00"), "{trx}");
        }
        h.publish(&shop_payment(
            &a,
            "32875",
            "M5",
            &format!("m5-{k}"),
            &trx,
            700,
        ))
        .await;
    }
    limited += 2;
    h.publish(&shop_payment(
        &a,
        "32875",
        "M5",
        "m5-next",
        &rome(spring + Days::new(1), 30),
        710,
    ))
    .await;

    h.caught_up().await;
    let local = reference(&h, &config).await;
    assert_standings(&h, &local, &["split-a", "split-b"]).await;
    let want = reference_rejections(&local);
    assert_eq!(rejections(&mut rejected, &want).await, want);
    // And the reference says what the rules say: every payment above
    // counts except those over the limit, the reversed one and the re-sent
    // counted one.
    let over: Vec<&(u64, String)> = want
        .iter()
        .filter(|(_, r)| r == "merchant_daily_limit")
        .collect();
    assert_eq!(over.len(), limited, "{want:?}");
    assert_eq!(
        want.iter().filter(|(_, r)| r == "duplicate").count(),
        1,
        "{want:?}"
    );
    assert_eq!(want.len(), limited + 1, "{want:?}");
    // 3 + 3 (other acquirer) + 1 (other shop) + 3 + 3 (either side of the
    // midnight) + 3 + 1 (autumn) + 3 + 1 (spring), less the reversed one.
    assert_eq!(h.query("split-a", "SPLIT").await["transaction_count"], 20);
    assert_eq!(h.query("split-b", "SPLIT").await["transaction_count"], 3);
    let (_, metrics) = h.http_get("/metrics").await.unwrap();
    assert_eq!(
        sample(
            &metrics,
            "cashback_rejections_total{reason=\"merchant_daily_limit\"}"
        ),
        Some(limited as f64)
    );
}

/// An operator's request and its reply.
async fn operator(h: &Harness, op: &str, body: Value) -> Value {
    h.request(&format!("cashback.admin.{op}"), body).await
}

/// The error code of a refused reply.
fn code(reply: &Value) -> &str {
    assert_eq!(reply["ok"], json!(false), "{reply}");
    reply["error"]["code"].as_str().unwrap()
}

/// "ok", or the error code of a refused reply.
fn outcome(reply: &Value) -> String {
    if reply["ok"] == json!(true) {
        "ok".into()
    } else {
        code(reply).to_owned()
    }
}

/// Waits for a message on `sub` that satisfies `wanted`; fails after 20 s.
async fn wait_push(sub: &mut Subscriber, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = Value::Null;
    while Instant::now() < deadline {
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(1), sub.next()).await {
            last = serde_json::from_slice(&m.payload).unwrap();
            if wanted(&last) {
                return last;
            }
        }
    }
    panic!("no {what} push as expected; the last one: {last}");
}

/// The citizen ids of a leaderboard reply or push, in ranking order.
fn board(reply: &Value) -> Vec<&str> {
    reply["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["citizen_id"].as_str().unwrap())
        .collect()
}

/// What the app sees of the three citizens: standings, statements, the
/// leaderboard.
async fn app_view(h: &Harness) -> Vec<Value> {
    let mut view = Vec::new();
    for id in ["ex-x", "ex-y", "ex-z"] {
        view.push(h.query(id, "SPLIT").await);
        view.push(
            h.request(
                "cashback.query.transactions",
                json!({"citizen_id": id, "award_period": "SPLIT"}),
            )
            .await,
        );
    }
    view.push(
        h.request(
            "cashback.query.leaderboard",
            json!({"award_period": "SPLIT"}),
        )
        .await,
    );
    view
}

/// A statement's entry for the payment made at `trx`.
fn entry<'a>(statement: &'a Value, trx: &str) -> &'a Value {
    statement["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["trx_date"] == json!(trx))
        .unwrap_or_else(|| panic!("no entry at {trx} in {statement}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusions_follow_everywhere_at_once_and_survive_a_kill() {
    let config = config();
    let mut h = Harness::start(&config).await;
    let (x, y, z) = (hpan(201), hpan(202), hpan(203));
    enroll(&h, "ex-x", &x).await;
    enroll(&h, "ex-y", &y).await;
    enroll(&h, "ex-z", &z).await;
    let day = today() - Days::new(1);
    // x: 3 payments of 10.00 (last at 09:20), y: 2 of 20.00 (last at
    // 10:10), z: 1 of 15.00 (at 08:00). Ranking: x, y, z.
    let px: Vec<Value> = (0..3)
        .map(|k| {
            let trx = rome(day, 9 * 3600 + k * 600);
            shop_payment(&x, "32875", &format!("X{k}"), &format!("x-{k}"), &trx, 1000)
        })
        .collect();
    let py: Vec<Value> = (0..2)
        .map(|k| {
            let trx = rome(day, 10 * 3600 + k * 600);
            shop_payment(&y, "32875", &format!("Y{k}"), &format!("y-{k}"), &trx, 2000)
        })
        .collect();
    let pz = shop_payment(&z, "32875", "Z0", "z-0", &rome(day, 8 * 3600), 1500);
    for p in px.iter().chain(&py).chain([&pz]) {
        h.publish(p).await;
    }
    // A payment in the closed period (rejected period_closed, so it never
    // counted) and a reversal, for the unknown keys below.
    let closed = payment(&x, "x-old", "2021-03-14T10:22:33+01:00", 1000);
    h.publish(&closed).await;
    let rev_y = reversal_of(&py[0], "y-0-rev", 500);
    h.publish(&rev_y).await;
    h.caught_up().await;
    let mut pushes_x = h.client.subscribe("cashback.position.ex-x").await.unwrap();
    let mut boards = h
        .client
        .subscribe("cashback.leaderboard.SPLIT")
        .await
        .unwrap();
    h.client.flush().await.unwrap();
    let q = h.query("ex-x", "SPLIT").await;
    assert_eq!(
        (q["transaction_count"].clone(), q["ranking"].clone()),
        (json!(3), json!(1))
    );
    // Every reply the operator gets, in order, to compare with the
    // reference's outcomes of the journal's entries.
    let mut outcomes: Vec<String> = Vec::new();

    // Excluding two of x's payments: x drops to 1 payment and 1.00, and
    // from first to third (tied with z at 1, z's last payment is earlier;
    // x's last_trx_date stays that of its latest payment).
    for p in &px[1..] {
        let r = operator(&h, "exclude", exclusion(p, "split purchase, reported")).await;
        assert_eq!(r, json!({"ok": true}));
        outcomes.push(outcome(&r));
    }
    let q = h.query("ex-x", "SPLIT").await;
    assert_eq!(q["transaction_count"], json!(1), "{q}");
    assert_eq!(q["cashback"], json!("1.00"), "{q}");
    assert_eq!(q["ranking"], json!(3), "{q}");
    assert_eq!(q["last_trx_date"], px[2]["trx_date"], "{q}");
    let statement = h
        .request(
            "cashback.query.transactions",
            json!({"citizen_id": "ex-x", "award_period": "SPLIT"}),
        )
        .await;
    assert_eq!(statement["total"], json!(3), "{statement}");
    for (p, status, cashback) in [
        (&px[0], "counted", "1.00"),
        (&px[1], "excluded", "0.00"),
        (&px[2], "excluded", "0.00"),
    ] {
        let e = entry(&statement, p["trx_date"].as_str().unwrap());
        assert_eq!(e["status"], json!(status), "{e}");
        assert_eq!(e["cashback"], json!(cashback), "{e}");
        assert_eq!(e["balance"], json!(1000), "{e}");
    }
    let lb = h
        .request(
            "cashback.query.leaderboard",
            json!({"award_period": "SPLIT"}),
        )
        .await;
    assert_eq!(board(&lb), ["ex-y", "ex-z", "ex-x"], "{lb}");
    wait_push(&mut pushes_x, "position", |p| {
        p["transaction_count"] == json!(1) && p["ranking"] == json!(3)
    })
    .await;
    wait_push(&mut boards, "leaderboard", |b| {
        board(b) == ["ex-y", "ex-z", "ex-x"]
    })
    .await;

    // Mid-stream: payments keep coming between the operator's requests.
    let pz1 = shop_payment(&z, "32875", "Z1", "z-1", &rome(day, 8 * 3600 + 60), 1500);
    h.publish(&pz1).await;
    h.caught_up().await;
    let before = app_view(&h).await;

    // Idempotent: excluding an excluded payment, or reinstating one that
    // is not excluded, is ok and changes nothing.
    let r = operator(&h, "exclude", exclusion(&px[1], "reported twice")).await;
    assert_eq!(r, json!({"ok": true}));
    outcomes.push(outcome(&r));
    let r = operator(&h, "reinstate", exclusion(&px[0], "never excluded")).await;
    assert_eq!(r, json!({"ok": true}));
    outcomes.push(outcome(&r));
    assert_eq!(app_view(&h).await, before);

    // No payment of that card with that key counted: a key nobody sent, a
    // payment of another card, the payment rejected in the closed period,
    // a reversal (not a payment).
    let mut unknown = exclusion(&px[0], "no such payment");
    unknown["id_trx_acquirer"] = json!("x-nope");
    let mut other_card = exclusion(&py[1], "wrong card");
    other_card["hpan"] = json!(x);
    for body in [
        unknown,
        other_card,
        exclusion(&closed, "closed period"),
        exclusion(&rev_y, "a reversal"),
    ] {
        let r = operator(&h, "exclude", body.clone()).await;
        assert_eq!(code(&r), "unknown_payment", "{body}: {r}");
        outcomes.push(outcome(&r));
    }
    let r = operator(&h, "reinstate", exclusion(&closed, "closed period")).await;
    assert_eq!(code(&r), "unknown_payment", "{r}");
    outcomes.push(outcome(&r));

    // Malformed requests are refused before the journal: the stream does
    // not grow.
    let mut stream = h.js.get_stream("CASHBACK").await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    let good = exclusion(&px[0], "fine");
    let mut bad: Vec<Vec<u8>> = vec![b"not json".to_vec(), b"[]".to_vec(), b"{}".to_vec()];
    for (field, value) in [
        ("hpan", json!(x.to_uppercase())),
        ("reason", json!("")),
        ("reason", json!("r".repeat(256))),
        ("trx_date", json!("yesterday")),
        ("operation_type", json!("0")),
        ("acquirer_code", json!(32875)),
    ] {
        let mut b = good.clone();
        b[field] = value;
        bad.push(b.to_string().into_bytes());
    }
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("reason");
    bad.push(missing.to_string().into_bytes());
    bad.push(vec![b' '; 5000]);
    for body in bad {
        for op in ["exclude", "reinstate"] {
            let reply = h
                .client
                .request(format!("cashback.admin.{op}"), body.clone().into())
                .await
                .unwrap();
            let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
            assert_eq!(code(&reply), "bad_request", "{reply}");
        }
    }
    assert_eq!(
        stream.info().await.unwrap().state.last_sequence,
        last,
        "a bad request reached the journal"
    );

    // A reversal of an excluded payment lowers its balance and nothing
    // else; reinstating it then counts its current balance.
    h.publish(&reversal_of(&px[1], "x-1-rev", 400)).await;
    h.caught_up().await;
    let q = h.query("ex-x", "SPLIT").await;
    assert_eq!(
        (q["transaction_count"].clone(), q["cashback"].clone()),
        (json!(1), json!("1.00")),
        "{q}"
    );
    let r = operator(
        &h,
        "reinstate",
        exclusion(&px[1], "checked: a real purchase"),
    )
    .await;
    assert_eq!(r, json!({"ok": true}));
    outcomes.push(outcome(&r));
    // x: 2 payments (1.00 + 0.60), tied with y (2) and ahead of it by the
    // earlier last_trx_date; z has 2 too, and its last is the earliest.
    let q = h.query("ex-x", "SPLIT").await;
    assert_eq!(q["transaction_count"], json!(2), "{q}");
    assert_eq!(q["cashback"], json!("1.60"), "{q}");
    assert_eq!(q["ranking"], json!(2), "{q}");
    let statement = h
        .request(
            "cashback.query.transactions",
            json!({"citizen_id": "ex-x", "award_period": "SPLIT"}),
        )
        .await;
    let e = entry(&statement, px[1]["trx_date"].as_str().unwrap());
    assert_eq!(
        (
            e["status"].clone(),
            e["balance"].clone(),
            e["cashback"].clone()
        ),
        (json!("partially_reversed"), json!(600), json!("0.60")),
        "{e}"
    );
    let lb = h
        .request(
            "cashback.query.leaderboard",
            json!({"award_period": "SPLIT"}),
        )
        .await;
    assert_eq!(board(&lb), ["ex-z", "ex-x", "ex-y"], "{lb}");
    wait_push(&mut pushes_x, "position", |p| {
        p["transaction_count"] == json!(2) && p["ranking"] == json!(2)
    })
    .await;
    wait_push(&mut boards, "leaderboard", |b| {
        board(b) == ["ex-z", "ex-x", "ex-y"]
    })
    .await;

    // Every decision so far, by op and outcome.
    let (_, metrics) = h.http_get("/metrics").await.unwrap();
    for (op, outcome, n) in [
        ("exclude", "applied", 2.0),
        ("exclude", "unchanged", 1.0),
        ("exclude", "unknown_payment", 4.0),
        ("exclude", "period_closed", 0.0),
        ("reinstate", "applied", 1.0),
        ("reinstate", "unchanged", 1.0),
        ("reinstate", "unknown_payment", 1.0),
    ] {
        let series = format!("cashback_exclusions_total{{op=\"{op}\",outcome=\"{outcome}\"}}");
        assert_eq!(sample(&metrics, &series), Some(n), "{series}");
    }

    // A snapshot holds all that; one more exclusion after it is only in the
    // log. Then a crash: the restart restores the snapshot, replays the
    // rest, and answers exactly as before.
    let covered = stream.info().await.unwrap().state.last_sequence;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, m) = h.http_get("/metrics").await.unwrap();
        if sample(&m, "cashback_snapshot_last_seq").is_some_and(|s| s >= covered as f64) {
            break;
        }
        assert!(Instant::now() < deadline, "no snapshot covering {covered}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = operator(&h, "exclude", exclusion(&py[1], "after the snapshot")).await;
    assert_eq!(r, json!({"ok": true}));
    outcomes.push(outcome(&r));
    h.caught_up().await;
    let before = app_view(&h).await;
    assert_eq!(
        before[2]["transaction_count"],
        json!(1),
        "y lost one: {}",
        before[2]
    );
    h.kill_engine();
    h.start_engine().await;
    h.caught_up().await;
    assert!(h.engine_log().contains("restored snapshot"));
    assert_eq!(app_view(&h).await, before);

    // The reference, fed the same log, agrees on every standing and on
    // every journaled request's outcome.
    let local = reference(&h, &config).await;
    assert_standings(&h, &local, &["ex-x", "ex-y", "ex-z"]).await;
    let journaled: Vec<String> = local
        .exclusions
        .iter()
        .map(|(_, _, o)| match o {
            Ok(_) => "ok".to_owned(),
            Err(c) => c.as_str().to_owned(),
        })
        .collect();
    assert_eq!(journaled, outcomes);
    assert!(!outcomes
        .iter()
        .any(|o| o == ErrorCode::Unavailable.as_str()));
}

/// Runs `cashback exclude` with `args` against `h`: (exit code, stderr).
fn exclude_command(h: &Harness, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cashback"))
        .arg("exclude")
        .args(args)
        .args(["--nats-url", h.nats.url()])
        .output()
        .expect("run cashback exclude");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cashback_exclude_applies_a_csv_file_in_bulk() {
    let mut h = Harness::start(&config()).await;
    let (card, many) = (hpan(301), hpan(302));
    enroll(&h, "bulk-c", &card).await;
    enroll(&h, "bulk-m", &many).await;
    let day = today() - Days::new(1);
    let payments: Vec<Value> = (0..6)
        .map(|k| {
            let trx = rome(day, 9 * 3600 + k * 60);
            shop_payment(
                &card,
                "32875",
                &format!("C{k}"),
                &format!("c-{k}"),
                &trx,
                1000,
            )
        })
        .collect();
    for p in &payments {
        h.publish(p).await;
    }
    // More rows than requests in flight.
    let lots: Vec<Value> = (0..400)
        .map(|k| {
            let trx = rome(day, 10 * 3600 + k);
            shop_payment(
                &many,
                "32875",
                &format!("B{k}"),
                &format!("b-{k}"),
                &trx,
                500,
            )
        })
        .collect();
    for p in &lots {
        h.publish(p).await;
    }
    h.caught_up().await;
    assert_eq!(h.query("bulk-m", "SPLIT").await["transaction_count"], 400);

    let row = |p: &Value, reason: &str| {
        format!(
            "{},{},{},{},{},{},{reason}",
            p["hpan"].as_str().unwrap(),
            p["acquirer_code"].as_str().unwrap(),
            p["acquirer_id"].as_str().unwrap(),
            p["id_trx_acquirer"].as_str().unwrap(),
            p["operation_type"].as_str().unwrap(),
            p["trx_date"].as_str().unwrap(),
        )
    };
    let mut unknown = payments[0].clone();
    unknown["id_trx_acquirer"] = json!("c-nope");
    let lines = [
        cashback::commands::exclude::HEADER.to_owned(), // 1
        row(&payments[0], "split purchase"),            // 2
        row(&payments[1], "\"court order 7/2021, \"\"urgent\"\"\""), // 3
        String::new(),                                  // 4
        row(&payments[2], "split purchase"),            // 5
        "a,b,c".to_owned(),                             // 6: skipped
        row(&unknown, "typo in the key"),               // 7: unknown_payment
        row(&payments[3], "split purchase").replace(&card, &card.to_uppercase()), // 8: skipped
        row(&payments[3], "split purchase"),            // 9
    ];
    let file = h.dir.path().join("exclusions.csv");
    std::fs::write(&file, lines.join("\r\n") + "\r\n").unwrap();
    let path = file.to_str().unwrap();

    let (status, log) = exclude_command(&h, &[path]);
    assert_eq!(status, Some(0), "{log}");
    assert!(
        log.contains(&format!("{path}:6: skipped: expected 7")),
        "{log}"
    );
    assert!(log.contains(&format!("{path}:8: skipped: hpan")), "{log}");
    assert!(
        log.contains(&format!("{path}:7: unknown_payment: ")),
        "{log}"
    );
    assert!(
        log.contains("exclude: 5 rows sent in ")
            && log.contains(": 4 ok, 1 unknown_payment, 2 skipped"),
        "{log}"
    );
    let q = h.query("bulk-c", "SPLIT").await;
    assert_eq!(
        (q["transaction_count"].clone(), q["cashback"].clone()),
        (json!(2), json!("2.00")),
        "{q}"
    );
    let statement = h
        .request(
            "cashback.query.transactions",
            json!({"citizen_id": "bulk-c", "award_period": "SPLIT"}),
        )
        .await;
    let excluded = statement["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["status"] == json!("excluded"))
        .count();
    assert_eq!(excluded, 4, "{statement}");
    // The reasons are in the journal for audit, quoted fields unquoted.
    let mut stream = h.js.get_stream("CASHBACK").await.unwrap();
    let mut reasons = BTreeSet::new();
    for seq in 1..=stream.info().await.unwrap().state.last_sequence {
        let m = stream.get_raw_message(seq).await.unwrap();
        if m.subject.as_str() == "cashback.journal.admin" {
            reasons.insert(
                JournalEntry::from_journal(&m.payload)
                    .unwrap()
                    .command
                    .reason,
            );
        }
    }
    assert_eq!(
        reasons,
        BTreeSet::from([
            "split purchase".to_owned(),
            "court order 7/2021, \"urgent\"".to_owned(),
            "typo in the key".to_owned(),
        ])
    );

    // The same file again: every request is ok and nothing changes.
    let (status, log) = exclude_command(&h, &[path]);
    assert_eq!(status, Some(0), "{log}");
    assert!(
        log.contains(": 4 ok, 1 unknown_payment, 2 skipped"),
        "{log}"
    );
    assert_eq!(h.query("bulk-c", "SPLIT").await, q);

    // Reinstated in bulk.
    let (status, log) = exclude_command(&h, &[path, "--reinstate"]);
    assert_eq!(status, Some(0), "{log}");
    assert!(log.contains("reinstate: 5 rows sent in "), "{log}");
    assert!(
        log.contains(": 4 ok, 1 unknown_payment, 2 skipped"),
        "{log}"
    );
    assert_eq!(h.query("bulk-c", "SPLIT").await["transaction_count"], 6);

    // Four hundred rows, 256 in flight at a time.
    let big = h.dir.path().join("many.csv");
    let mut text = cashback::commands::exclude::HEADER.to_owned();
    for p in &lots {
        text.push('\n');
        text.push_str(&row(p, "one of many"));
    }
    std::fs::write(&big, text).unwrap();
    let (status, log) = exclude_command(&h, &[big.to_str().unwrap()]);
    assert_eq!(status, Some(0), "{log}");
    assert!(log.contains(": 400 ok, 0 skipped"), "{log}");
    let q = h.query("bulk-m", "SPLIT").await;
    assert_eq!(
        (q["transaction_count"].clone(), q["ranking"].clone()),
        (json!(0), Value::Null),
        "{q}"
    );

    // A file the command cannot use sends nothing and fails: no header, or
    // no file.
    let last = stream.info().await.unwrap().state.last_sequence;
    let headless = h.dir.path().join("headless.csv");
    std::fs::write(&headless, row(&payments[5], "no header")).unwrap();
    let (status, log) = exclude_command(&h, &[headless.to_str().unwrap()]);
    assert_eq!(status, Some(1), "{log}");
    assert!(
        log.contains(&format!(
            "{}:1: the first line must be the header",
            headless.display()
        )),
        "{log}"
    );
    let missing = h.dir.path().join("missing.csv");
    let (status, log) = exclude_command(&h, &[missing.to_str().unwrap()]);
    assert_eq!(status, Some(1), "{log}");
    assert!(log.contains("cannot read"), "{log}");
    assert_eq!(stream.info().await.unwrap().state.last_sequence, last);

    // No engine to answer: the requests are retried, then the command
    // fails, saying where it stopped.
    h.kill_engine();
    let one = h.dir.path().join("one.csv");
    std::fs::write(
        &one,
        format!(
            "{}\n{}\n",
            cashback::commands::exclude::HEADER,
            row(&payments[5], "x")
        ),
    )
    .unwrap();
    let (status, log) = exclude_command(&h, &[one.to_str().unwrap()]);
    assert_eq!(status, Some(1), "{log}");
    assert!(log.contains("stopped after 0 of 1 rows"), "{log}");
    assert!(log.contains("(is the engine running?)"), "{log}");
}
