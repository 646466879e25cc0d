//! The citizen's statement (`cashback.query.transactions`) end to end.

mod common;

use cashback_engine::time::Timestamp;
use common::*;
use serde_json::{json, Value};

fn rome(t: &str) -> String {
    Timestamp::parse_rfc3339(t).unwrap().to_rome_rfc3339()
}

fn line(
    trx: &str,
    circuit: &str,
    op: &str,
    amount: u64,
    balance: u64,
    cashback: &str,
    status: &str,
) -> Value {
    json!({"trx_date": rome(trx), "acquirer_code": "32875", "circuit_type": circuit,
           "operation_type": op, "total_amount": amount, "balance": balance,
           "cashback": cashback, "status": status})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_statement_shows_every_payment_with_its_balance_and_cashback() {
    let h = Harness::start(&config_toml(30)).await;
    let (card, moved) = (hpan(0x5a), hpan(0x5b));
    h.citizen("sara", &at(-40, 0)).await;
    h.citizen("tom", &at(-40, 0)).await;
    h.card("sara", &card, &at(-30, 0)).await;
    h.card("sara", &moved, &at(-30, 0)).await;
    let t: Vec<String> = (0..8).map(|i| at(-2, i * 600)).collect();

    let mut p0 = payment(&card, "s0", &t[0], 5000); // partially reversed below
    p0["correlation_id"] = json!("K0");
    h.publish(&p0).await;
    let mut p1 = payment(&card, "s1", &t[1], 1255); // totally reversed below
    p1["circuit_type"] = json!("02");
    h.publish(&p1).await;
    let mut p2 = payment(&card, "s2", &t[2], 20000); // Apple Pay, counted
    p2["operation_type"] = json!("02");
    h.publish(&p2).await;
    h.publish(&reversal(&card, "r0", &t[0], 1500, Some("K0")))
        .await;
    h.publish(&reversal(&card, "r1", &t[1], 1255, None)).await;
    // A reversal before its payment: the payment shows as reversed.
    h.publish(&reversal(&card, "r3", &t[3], 800, Some("K3")))
        .await;
    let mut p3 = payment(&card, "s3", &t[3], 800);
    p3["correlation_id"] = json!("K3");
    h.publish(&p3).await;
    // Same trx_date as p2, arriving later: listed before it.
    h.publish(&payment(&card, "s4", &t[2], 300)).await;
    // A card that moves to tom: sara keeps her payment, tom gets his.
    h.publish(&payment(&moved, "m0", &t[4], 1000)).await;
    assert_eq!(
        h.request(
            "cashback.enroll.card_remove",
            json!({"citizen_id": "sara", "hpan": moved, "deactivated_at": at(-2, 3000)})
        )
        .await,
        json!({"ok": true})
    );
    h.card("tom", &moved, &at(-2, 3001)).await;
    h.publish(&payment(&moved, "m1", &t[6], 2000)).await;
    h.caught_up().await;

    let want_sara = vec![
        line(&t[4], "01", "00", 1000, 1000, "1.00", "counted"),
        line(&t[3], "01", "00", 800, 0, "0.00", "reversed"),
        line(&t[2], "01", "00", 300, 300, "0.30", "counted"),
        line(&t[2], "01", "02", 20000, 20000, "15.00", "counted"),
        line(&t[1], "02", "00", 1255, 0, "0.00", "reversed"),
        line(&t[0], "01", "00", 5000, 3500, "3.50", "partially_reversed"),
    ];
    let all = h
        .request(
            "cashback.query.transactions",
            json!({"citizen_id": "sara", "award_period": "CUR"}),
        )
        .await;
    assert_eq!(all["ok"], json!(true));
    assert_eq!(all["total"], json!(6));
    assert_eq!(all["entries"], json!(want_sara));
    // Every page of two, and a page past the end.
    for offset in [0usize, 2, 4, 6, 7] {
        let page = h
            .request(
                "cashback.query.transactions",
                json!({"citizen_id": "sara", "award_period": "CUR", "offset": offset, "limit": 2}),
            )
            .await;
        assert_eq!(page["total"], json!(6), "total stable across pages");
        let want: Vec<Value> = want_sara.iter().skip(offset).take(2).cloned().collect();
        assert_eq!(page["entries"], json!(want), "offset {offset}");
    }
    let tom = h
        .request(
            "cashback.query.transactions",
            json!({"citizen_id": "tom", "award_period": "CUR"}),
        )
        .await;
    assert_eq!(
        tom["entries"],
        json!([line(&t[6], "01", "00", 2000, 2000, "2.00", "counted")])
    );
    // The statement agrees with the citizen query.
    let q = h.query("sara", "CUR").await;
    assert_eq!(q["transaction_count"], json!(4));
    assert_eq!(q["cashback"], json!("19.80"));

    let err = |v: Value| v["error"]["code"].clone();
    let r = |b: Value| h.request("cashback.query.transactions", b);
    assert_eq!(
        err(r(json!({"citizen_id": "sara", "limit": 1001})).await),
        json!("bad_request")
    );
    assert_eq!(
        r(json!({"citizen_id": "sara", "award_period": "CUR", "limit": 1000})).await["total"],
        json!(6)
    );
    assert_eq!(err(r(json!({"citizen_id": 5})).await), json!("bad_request"));
    assert_eq!(
        err(r(json!({"citizen_id": "nobody"})).await),
        json!("unknown_citizen")
    );
    assert_eq!(
        err(r(json!({"citizen_id": "sara", "award_period": "X"})).await),
        json!("unknown_award_period")
    );
    let empty = r(json!({"citizen_id": "sara", "award_period": "2021H1"})).await;
    assert_eq!(
        (empty["total"].clone(), empty["entries"].clone()),
        (json!(0), json!([]))
    );
}
