//! End to end through a real nats-server: enrollment over request-reply,
//! authorizations over JetStream that hit every rule and every rejection
//! reason, every field of the query replies, and every message on
//! `cashback.rejected.>`.

mod common;

use cashback_engine::time::Timestamp;
use common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

fn rome(t: &str) -> String {
    Timestamp::parse_rfc3339(t).unwrap().to_rome_rfc3339()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rule_and_every_rejection_end_to_end() {
    let mut h = Harness::start(&config_toml(30)).await;
    let mut rejected = h.client.subscribe("cashback.rejected.>").await.unwrap();
    h.client.flush().await.unwrap();

    let (a1, a2, b1, c1, d1, m) = (
        hpan(0xA1),
        hpan(0xA2),
        hpan(0xB1),
        hpan(0xC1),
        hpan(0xD1),
        hpan(0x11),
    );
    let (old, recent) = (at(-40, 0), at(0, -600));
    h.citizen("alice", &old).await;
    h.citizen("bob", &old).await;
    h.citizen("carol", &recent).await; // T&C accepted 10 minutes ago
    h.citizen("dave", &old).await;
    h.card("alice", &a1, &at(-30, 0)).await;
    h.card("alice", &a2, &recent).await; // active only for the last 10 minutes
    h.card("bob", &b1, &at(-30, 0)).await;
    h.card("carol", &c1, &at(-30, 0)).await;
    h.card("dave", &d1, &at(-30, 0)).await;
    h.card("bob", &m, &at(-30, 0)).await;
    h.citizen("olga", "2019-01-01T00:00:00Z").await; // enrolled since 2019
    h.card("olga", &hpan(0x01), "2019-01-01T00:00:00Z").await;

    // Enrollment errors, each with its code, and idempotent repeats.
    let e = |r: Value| {
        r["error"]["code"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| r.to_string())
    };
    let req = |s: &'static str, b: Value| {
        let h = &h;
        async move { h.request(&format!("cashback.enroll.{s}"), b).await }
    };
    assert_eq!(
        h.client
            .request("cashback.enroll.citizen", "nope".into())
            .await
            .map(|m| serde_json::from_slice::<Value>(&m.payload).unwrap()["error"]["code"].clone())
            .unwrap(),
        json!("bad_request")
    );
    assert_eq!(
        e(req("citizen", json!({"citizen_id": "x", "iban": IBAN})).await),
        "bad_request"
    );
    assert_eq!(
        e(req(
            "citizen",
            json!({"citizen_id": "a.b", "iban": IBAN, "tc_accepted_at": old})
        )
        .await),
        "invalid_citizen_id"
    );
    assert_eq!(
        e(req(
            "citizen",
            json!({"citizen_id": "x", "iban": "IT00X0542811101000000123456", "tc_accepted_at": old})
        )
        .await),
        "invalid_iban"
    );
    assert_eq!(
        e(req("card", json!({"citizen_id": "alice", "hpan": a1})).await),
        "bad_request"
    );
    assert_eq!(
        e(req(
            "card",
            json!({"citizen_id": "alice", "hpan": a1.to_uppercase(), "activated_at": old})
        )
        .await),
        "invalid_hpan"
    );
    assert_eq!(
        e(req(
            "card",
            json!({"citizen_id": "nobody", "hpan": hpan(5), "activated_at": old})
        )
        .await),
        "unknown_citizen"
    );
    assert_eq!(
        e(req(
            "card",
            json!({"citizen_id": "bob", "hpan": a1, "activated_at": old})
        )
        .await),
        "card_owned_by_other_citizen"
    );
    assert_eq!(
        req(
            "card",
            json!({"citizen_id": "alice", "hpan": a1, "activated_at": old})
        )
        .await,
        json!({"ok": true})
    );
    assert_eq!(
        e(req(
            "card_remove",
            json!({"citizen_id": "alice", "hpan": a1, "deactivated_at": 5})
        )
        .await),
        "bad_request"
    );
    assert_eq!(
        e(req(
            "card_remove",
            json!({"citizen_id": "nobody", "hpan": a1, "deactivated_at": old})
        )
        .await),
        "unknown_citizen"
    );
    assert_eq!(
        e(req(
            "card_remove",
            json!({"citizen_id": "bob", "hpan": a1, "deactivated_at": old})
        )
        .await),
        "unknown_card"
    );
    assert_eq!(
        e(req(
            "citizen_remove",
            json!({"citizen_id": "nobody", "cancelled_at": old})
        )
        .await),
        "unknown_citizen"
    );
    assert_eq!(
        e(req("citizen_remove", json!({"citizen_id": "dave"})).await),
        "bad_request"
    );

    let mut want: BTreeMap<u64, &str> = BTreeMap::new();
    let t: Vec<String> = (0..10).map(|i| at(0, -3600 + i * 100)).collect();

    // alice: 35.50, 12.55, 150.01 and 100.00 (correlation C-1) on A1.
    let p1 = payment(&a1, "p1", &t[0], 3550);
    h.publish(&p1).await;
    let p2 = payment(&a1, "p2", &t[1], 1255);
    h.publish(&p2).await;
    h.publish(&payment(&a1, "p3", &t[2], 15001)).await;
    let mut p4 = payment(&a1, "p4", &t[3], 10000);
    p4["correlation_id"] = json!("C-1");
    h.publish(&p4).await;
    // Partial reversal of 30.00 by correlation id, then one too large.
    h.publish(&reversal(&a1, "r1", &t[3], 3000, Some("C-1")))
        .await;
    want.insert(
        h.publish(&reversal(&a1, "r2", &t[3], 8000, Some("C-1")))
            .await,
        "reversal_exceeds_original",
    );
    // Total reversal of p1 without correlation id (same terminal, equal balance).
    h.publish(&reversal(&a1, "r3", &t[0], 3550, None)).await;
    // A reversal before its payment: parked, then applied when it arrives.
    let mut early = reversal(&a1, "r4", &t[4], 2000, None);
    early["terminal_id"] = json!("T9");
    h.publish(&early).await;
    let mut late_payment = payment(&a1, "p5", &t[4], 2000);
    late_payment["terminal_id"] = json!("T9");
    h.publish(&late_payment).await;

    // Duplicates: same key under another message id (the engine), and the
    // same Nats-Msg-Id inside the window (JetStream itself; never reaches us).
    want.insert(h.publish(&p2).await, "duplicate");
    let body = payment(&b1, "b0", &t[0], 15000).to_string().into_bytes();
    let (_, first_dup) = h
        .publish_raw("cashback.auth.32875", body.clone(), Some("msg-b0"))
        .await;
    let (_, second_dup) = h
        .publish_raw("cashback.auth.32875", body, Some("msg-b0"))
        .await;
    assert!(
        !first_dup && second_dup,
        "JetStream answers the re-publish as duplicate"
    );
    for (i, tt) in t[1..4].iter().enumerate() {
        h.publish(&payment(&b1, &format!("b{}", i + 1), tt, 15000))
            .await;
    }

    // Malformed and invalid input, and the stateless rejections.
    want.insert(
        h.publish_raw("cashback.auth.32875", b"not json".to_vec(), None)
            .await
            .0,
        "malformed",
    );
    let mut no_hpan = payment(&a1, "x1", &t[0], 100);
    no_hpan.as_object_mut().unwrap().remove("hpan");
    want.insert(h.publish(&no_hpan).await, "invalid_field");
    let mut future = payment(&a1, "x2", &at(0, 600), 100);
    future["trx_date"] = json!(at(0, 600));
    want.insert(h.publish(&future).await, "invalid_field");
    let mut op = payment(&a1, "x3", &t[0], 100);
    op["operation_type"] = json!("07");
    want.insert(h.publish(&op).await, "unsupported_operation");
    let mut usd = payment(&a1, "x4", &t[0], 100);
    usd["currency"] = json!("840");
    want.insert(h.publish(&usd).await, "unsupported_currency");
    let mut cash = payment(&a1, "x5", &t[0], 100);
    cash["mcc"] = json!("6011");
    want.insert(h.publish(&cash).await, "excluded_mcc");

    // Card, T&C, period and withdrawal checks.
    want.insert(
        h.publish(&payment(&hpan(0x999), "x6", &t[0], 100)).await,
        "card_not_enrolled",
    );
    want.insert(
        h.publish(&payment(&a2, "x7", &t[0], 100)).await,
        "card_not_active",
    );
    want.insert(
        h.publish(&payment(&c1, "x8", &t[0], 100)).await,
        "tc_not_accepted",
    );
    want.insert(
        h.publish(&payment(
            &hpan(0x01),
            "x9",
            "2019-06-01T10:00:00+02:00",
            100,
        ))
        .await,
        "outside_award_period",
    );
    want.insert(
        h.publish(&payment(
            &hpan(0x01),
            "x10",
            "2021-03-01T10:00:00+01:00",
            100,
        ))
        .await,
        "period_closed",
    );
    h.publish(&payment(&d1, "d1", &t[0], 5000)).await;
    h.caught_up().await;
    assert_eq!(
        req(
            "citizen_remove",
            json!({"citizen_id": "dave", "cancelled_at": recent})
        )
        .await,
        json!({"ok": true})
    );
    assert_eq!(
        req(
            "citizen_remove",
            json!({"citizen_id": "dave", "cancelled_at": recent})
        )
        .await,
        json!({"ok": true})
    );
    assert_eq!(
        e(req(
            "citizen",
            json!({"citizen_id": "dave", "iban": IBAN, "tc_accepted_at": old})
        )
        .await),
        "citizen_withdrawn"
    );
    want.insert(
        h.publish(&payment(&d1, "d2", &t[1], 5000)).await,
        "citizen_withdrawn",
    );
    want.insert(
        h.publish(&reversal(&d1, "d3", &t[0], 5000, None)).await,
        "citizen_withdrawn",
    );

    // A card that moves from bob to carol: each keeps what was theirs, and a
    // reversal of bob's payment on it still finds it.
    let pm = payment(&m, "m1", &t[5], 4000);
    h.publish(&pm).await;
    assert_eq!(
        req(
            "card_remove",
            json!({"citizen_id": "bob", "hpan": m, "deactivated_at": at(0, -300)})
        )
        .await,
        json!({"ok": true})
    );
    assert_eq!(
        req(
            "card_remove",
            json!({"citizen_id": "bob", "hpan": m, "deactivated_at": at(0, -300)})
        )
        .await,
        json!({"ok": true})
    );
    h.card("carol", &m, &at(0, -200)).await;
    let now_ish = at(0, -100);
    h.publish(&payment(&m, "m2", &now_ish, 2500)).await;
    h.publish(&reversal(&m, "m3", &t[5], 4000, None)).await;

    h.caught_up().await;
    let got: BTreeMap<u64, String> = drain(&mut rejected, Duration::from_millis(500))
        .await
        .into_iter()
        .map(|r| {
            (
                r["seq"].as_u64().unwrap(),
                r["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want: BTreeMap<u64, String> = want.into_iter().map(|(k, v)| (k, v.to_owned())).collect();
    assert_eq!(got, want, "rejections by stream sequence");

    // Every field of the replies.
    let alice = h.query("alice", "CUR").await;
    assert_eq!(
        alice,
        json!({"ok": true, "citizen_id": "alice", "award_period": "CUR",
               "transaction_count": 3, "cashback": "23.25", "cashback_payable": "20.00",
               "min_transactions": 3, "threshold_reached": true,
               "ranking": 2, "total_participants": 3,
               "max_transaction_number": 4, "min_transaction_number": 3,
               "supercashback": true, "last_trx_date": rome(&t[4])})
    );
    let bob = h.query("bob", "CUR").await;
    assert_eq!(bob["transaction_count"], json!(4), "{bob}");
    assert_eq!(bob["cashback"], json!("60.00"));
    assert_eq!(bob["cashback_payable"], json!("20.00"));
    assert_eq!(
        bob["last_trx_date"],
        json!(rome(&t[5])),
        "a reversal never moves it back"
    );
    let carol = h.query("carol", "CUR").await;
    assert_eq!(carol["transaction_count"], json!(1), "{carol}");
    assert_eq!(carol["cashback"], json!("2.50"));
    assert_eq!(carol["cashback_payable"], json!("0.00"));
    assert_eq!(carol["threshold_reached"], json!(false));
    assert_eq!(carol["last_trx_date"], json!(rome(&now_ish)));
    assert_eq!(carol["ranking"], json!(3));
    assert_eq!(
        carol["supercashback"],
        json!(false),
        "ranked 3rd of 2 winners"
    );
    assert_eq!(bob["ranking"], json!(1));
    assert_eq!(bob["supercashback"], json!(true));
    // Dave withdrew: not ranked. The leaderboard agrees with the queries.
    let board = h
        .request(
            "cashback.query.leaderboard",
            json!({"award_period": "CUR", "offset": 0, "limit": 10}),
        )
        .await;
    assert_eq!(
        board,
        json!({"ok": true, "award_period": "CUR", "total_participants": 3,
               "max_transaction_number": 4, "min_transaction_number": 3,
               "entries": [
                   {"ranking": 1, "citizen_id": "bob", "transaction_count": 4, "last_trx_date": rome(&t[5])},
                   {"ranking": 2, "citizen_id": "alice", "transaction_count": 3, "last_trx_date": rome(&t[4])},
                   {"ranking": 3, "citizen_id": "carol", "transaction_count": 1, "last_trx_date": rome(&now_ish)}]})
    );
    let none = h.query("carol", "2021H1").await;
    assert_eq!(none["transaction_count"], json!(0));
    assert_eq!(none["cashback"], json!("0.00"));
    assert_eq!(none["last_trx_date"], json!(null));
    assert_eq!(none["ranking"], json!(null), "not ranked with no payment");
    assert_eq!(none["total_participants"], json!(0));
    assert_eq!(none["max_transaction_number"], json!(0));
    let default_period = h
        .request("cashback.query.citizen", json!({"citizen_id": "alice"}))
        .await;
    assert_eq!(
        default_period, alice,
        "the default period is the one containing today"
    );

    // Query errors.
    let q = |b: Value| h.request("cashback.query.citizen", b);
    assert_eq!(e(q(json!({"citizen": "alice"})).await), "bad_request");
    assert_eq!(
        e(q(json!({"citizen_id": "nobody"})).await),
        "unknown_citizen"
    );
    assert_eq!(
        e(q(json!({"citizen_id": "dave"})).await),
        "citizen_withdrawn"
    );
    assert_eq!(
        e(q(json!({"citizen_id": "alice", "award_period": "1999H1"})).await),
        "unknown_award_period"
    );

    // The rejection payload carries the original message.
    let mut sub = h
        .client
        .subscribe("cashback.rejected.duplicate")
        .await
        .unwrap();
    h.client.flush().await.unwrap();
    let seq = h.publish(&p1).await;
    let msgs = drain(&mut sub, Duration::from_secs(2)).await;
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0]["seq"], json!(seq));
    assert_eq!(msgs[0]["subject"], json!("cashback.auth.32875"));
    assert_eq!(msgs[0]["payload"], p1);
    assert!(msgs[0]["message"].as_str().unwrap().len() > 5);
    let mut sub = h
        .client
        .subscribe("cashback.rejected.malformed")
        .await
        .unwrap();
    h.client.flush().await.unwrap();
    h.publish_raw("cashback.auth.1", b"{oops".to_vec(), None)
        .await;
    let msgs = drain(&mut sub, Duration::from_secs(2)).await;
    assert_eq!(msgs[0]["payload"], json!("{oops"));

    // Rejections are counted in the metrics by reason.
    let (_, metrics) = h.http_get("/metrics").await.unwrap();
    assert!(
        metrics.contains("cashback_rejections_total{reason=\"duplicate\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("cashback_rejections_total{reason=\"period_closed\"} 1"));
    assert_eq!(h.stop_engine(), Some(0), "SIGTERM stops the engine cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reversal_that_waits_too_long_is_unmatched() {
    // With no parking time, any later message ends the wait.
    let h = Harness::start(&config_toml(0)).await;
    let mut rejected = h.client.subscribe("cashback.rejected.>").await.unwrap();
    h.client.flush().await.unwrap();
    h.citizen("erin", &at(-40, 0)).await;
    h.card("erin", &hpan(0xE), &at(-30, 0)).await;
    let r = h
        .publish(&reversal(&hpan(0xE), "r", &at(0, -60), 700, None))
        .await;
    // A reversal for a card nobody enrolled waits in the router: same rule.
    let orphan = h
        .publish(&reversal(&hpan(0xEE), "o", &at(0, -60), 700, None))
        .await;
    h.publish(&payment(&hpan(0xE), "p", &at(0, -50), 900)).await;
    h.caught_up().await;
    let got: Vec<(u64, String)> = drain(&mut rejected, Duration::from_millis(500))
        .await
        .iter()
        .map(|v| {
            (
                v["seq"].as_u64().unwrap(),
                v["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(got.contains(&(r, "unmatched_reversal".into())), "{got:?}");
    assert!(
        got.contains(&(orphan, "unmatched_reversal".into())),
        "{got:?}"
    );
    // Its key is forgotten: the re-send is judged afresh (parked again, then
    // expired again by the next message), never `duplicate`.
    let again = h
        .publish(&reversal(&hpan(0xE), "r", &at(0, -60), 700, None))
        .await;
    h.publish(&payment(&hpan(0xE), "p2", &at(0, -40), 900))
        .await;
    h.caught_up().await;
    let got: Vec<(u64, String)> = drain(&mut rejected, Duration::from_millis(500))
        .await
        .iter()
        .map(|v| {
            (
                v["seq"].as_u64().unwrap(),
                v["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(got, vec![(again, "unmatched_reversal".into())]);
    assert_eq!(h.query("erin", "CUR").await["transaction_count"], json!(2));
}
