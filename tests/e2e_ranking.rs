//! The live ranking against a naive recomputation, pushes, and the payout
//! file, through a real nats-server.

mod common;

use common::*;
use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

/// The independent model: what each citizen should show, computed from the
/// inputs alone.
#[derive(Default, Clone)]
struct Model {
    /// T&C instant (as sent) and its order key.
    tc: String,
    withdrawn: bool,
    /// The latest IBAN enrolled: the payout file's.
    iban: String,
    /// (amount cents, trx_date text, reversed).
    payments: Vec<(u64, String, bool)>,
}

impl Model {
    fn count(&self) -> u32 {
        self.payments.iter().filter(|p| !p.2).count() as u32
    }
    fn last(&self) -> Option<String> {
        self.payments.iter().map(|p| p.1.clone()).max()
    }
}

/// Runs `cashback awards` for `period`: (the file, if it succeeded; stderr).
fn awards(h: &Harness, period: &str, provisional: bool) -> (Option<String>, String) {
    let out = h.dir.path().join(format!("{period}-{provisional}.csv"));
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_cashback"))
        .args(["awards", "--period", period, "--out"])
        .arg(&out)
        .args(["--nats-url", h.nats.url()])
        .args(provisional.then_some("--provisional"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    let file = run
        .status
        .success()
        .then(|| std::fs::read_to_string(&out).unwrap());
    (file, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ranking_equals_a_naive_recomputation() {
    let h = Harness::start(&config_toml(30)).await;
    let mut rng = StdRng::seed_from_u64(7);
    let n = 200;
    // Ids whose order is unrelated to enrollment order; T&C instants with ties.
    let ids: Vec<String> = (0..n)
        .map(|i| format!("{}-{i}", ["zed", "amy", "kim", "bo"][i % 4]))
        .collect();
    let tcs = [at(-45, 0), at(-44, 0), at(-43, 0)];
    let mut model: HashMap<String, Model> = HashMap::new();
    // Trx dates from a small set (UTC, whole minutes) so last_trx ties are common.
    let dates: Vec<String> = (0..30).map(|k| at(-3, k * 60)).collect();
    for op in 0..4000 {
        let i = rng.gen_range(0..n);
        let id = &ids[i];
        // Citizens enroll when they first show up, in random order and
        // interleaved with everyone else's payments; some re-enroll later
        // (a new IBAN: nothing else may change).
        if !model.contains_key(id) {
            let tc = tcs[i % 3].clone();
            h.citizen(id, &tc).await;
            h.card(id, &hpan(1000 + i as u64), &at(-40, 0)).await;
            model.insert(
                id.clone(),
                Model {
                    tc,
                    iban: IBAN.into(),
                    ..Default::default()
                },
            );
        } else if rng.gen_bool(0.01) && !model[id].withdrawn {
            let r = h
                .request(
                    "cashback.enroll.citizen",
                    json!({"citizen_id": id, "iban": "DE89370400440532013000", "tc_accepted_at": at(-1, 0)}),
                )
                .await;
            assert_eq!(r, json!({"ok": true}), "{id}");
            model.get_mut(id).unwrap().iban = "DE89370400440532013000".into();
        }
        let roll: f64 = rng.gen();
        if roll < 0.003 {
            let r = h
                .request(
                    "cashback.enroll.citizen_remove",
                    json!({"citizen_id": id, "cancelled_at": at(0, 0)}),
                )
                .await;
            assert_eq!(r, json!({"ok": true}));
            model.get_mut(id).unwrap().withdrawn = true;
        } else if roll < 0.2 {
            // Reverse one of the citizen's payments in full, by correlation id.
            let m = model.get_mut(id).unwrap();
            let open: Vec<usize> = (0..m.payments.len())
                .filter(|&k| !m.payments[k].2)
                .collect();
            if open.is_empty() {
                continue;
            }
            let k = open[rng.gen_range(0..open.len())];
            let (amount, trx, _) = m.payments[k].clone();
            h.publish(&reversal(
                &hpan(1000 + i as u64),
                &format!("r{op}"),
                &trx,
                amount,
                Some(&format!("{id}/{k}")),
            ))
            .await;
            if !m.withdrawn {
                m.payments[k].2 = true;
            }
        } else {
            let trx = dates[rng.gen_range(0..dates.len())].clone();
            let amount = rng.gen_range(100..20_000);
            let m = model.get_mut(id).unwrap();
            let k = m.payments.len();
            let mut p = payment(&hpan(1000 + i as u64), &format!("p{op}"), &trx, amount);
            p["correlation_id"] = json!(format!("{id}/{k}"));
            h.publish(&p).await;
            if !m.withdrawn {
                m.payments.push((amount, trx, false));
            }
        }
    }
    h.caught_up().await;

    // Naive ranking: sort by the RULES.md order. The dates share one format
    // (UTC, whole seconds), so comparing their text compares instants.
    let mut ranked: Vec<(&String, &Model)> = model
        .iter()
        .filter(|(_, m)| !m.withdrawn && m.count() >= 1)
        .collect();
    ranked.sort_by(|(a_id, a), (b_id, b)| {
        b.count()
            .cmp(&a.count())
            .then(a.last().cmp(&b.last()))
            .then(a.tc.cmp(&b.tc))
            .then(a_id.as_bytes().cmp(b_id.as_bytes()))
    });
    let total = ranked.len() as u64;
    let winners = 2usize;
    let max = ranked.first().map_or(0, |r| r.1.count());
    let min = ranked
        .get(winners.min(ranked.len()).saturating_sub(1))
        .map_or(0, |r| r.1.count());
    assert!(total > 150, "the workload ranks most citizens: {total}");
    let instant = |v: &Value| {
        v.as_str()
            .map(|t| chrono::DateTime::parse_from_rfc3339(t).unwrap().timestamp())
    };
    let model_instant = |m: &Model| {
        m.last().map(|t| {
            chrono::DateTime::parse_from_rfc3339(&t)
                .unwrap()
                .timestamp()
        })
    };

    for (id, m) in &model {
        let r = h.query(id, "CUR").await;
        if m.withdrawn {
            assert_eq!(r["error"]["code"], json!("citizen_withdrawn"));
            continue;
        }
        let pos = ranked
            .iter()
            .position(|(rid, _)| rid == &id)
            .map(|p| p as u64 + 1);
        assert_eq!(r["transaction_count"], json!(m.count()), "{id}: {r}");
        assert_eq!(instant(&r["last_trx_date"]), model_instant(m), "{id}: {r}");
        assert_eq!(r["ranking"], json!(pos), "{id}: {r}");
        assert_eq!(r["total_participants"], json!(total));
        assert_eq!(r["max_transaction_number"], json!(max));
        assert_eq!(r["min_transaction_number"], json!(min));
        let winner = pos.is_some_and(|p| p <= winners as u64) && m.count() >= 3;
        assert_eq!(r["supercashback"], json!(winner), "{id}");
    }
    // Every leaderboard page, with a page size that does not divide the total.
    let mut offset = 0;
    while offset < total + 7 {
        let page = h
            .request(
                "cashback.query.leaderboard",
                json!({"award_period": "CUR", "offset": offset, "limit": 7}),
            )
            .await;
        type Entry = (u64, String, u32, Option<i64>);
        let got: Vec<Entry> = page["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["ranking"].as_u64().unwrap(),
                    e["citizen_id"].as_str().unwrap().to_owned(),
                    e["transaction_count"].as_u64().unwrap() as u32,
                    instant(&e["last_trx_date"]),
                )
            })
            .collect();
        let want: Vec<Entry> = ranked
            .iter()
            .enumerate()
            .skip(offset as usize)
            .take(7)
            .map(|(p, (id, m))| (p as u64 + 1, (*id).clone(), m.count(), model_instant(m)))
            .collect();
        assert_eq!(got, want, "page at offset {offset}");
        assert_eq!(page["total_participants"], json!(total));
        assert_eq!(page["max_transaction_number"], json!(max));
        assert_eq!(page["min_transaction_number"], json!(min));
        offset += 7;
    }
    let too_big = h
        .request(
            "cashback.query.leaderboard",
            json!({"award_period": "CUR", "limit": 1001}),
        )
        .await;
    assert_eq!(too_big["error"]["code"], json!("bad_request"));
    let unknown = h
        .request(
            "cashback.query.leaderboard",
            json!({"award_period": "nope"}),
        )
        .await;
    assert_eq!(unknown["error"]["code"], json!("unknown_award_period"));

    // The payout file, provisional (the period is open), equals the model.
    let (refused, stderr) = awards(&h, "CUR", false);
    assert!(refused.is_none(), "an open period needs --provisional");
    assert!(stderr.contains("--provisional"), "{stderr}");
    let (csv, stderr) = awards(&h, "CUR", true);
    let csv = csv.unwrap_or_else(|| panic!("{stderr}"));
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some(cashback::commands::awards::HEADER));
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len() as u64, total);
    for (p, ((id, m), row)) in ranked.iter().zip(&rows).enumerate() {
        let cashback: u64 = m
            .payments
            .iter()
            .filter(|x| !x.2)
            .map(|x| (x.0 / 10).min(1500) + u64::from(x.0 % 10 > 5 && x.0 < 15000))
            .sum();
        let payable = if m.count() >= 3 {
            cashback.min(2000)
        } else {
            0
        };
        let winner = p < winners && m.count() >= 3;
        let want = format!(
            "{id},{},{},{}.{:02},{},{winner},{}",
            m.iban,
            m.count(),
            payable / 100,
            payable % 100,
            p + 1,
            if winner { "1500.00" } else { "0.00" }
        );
        assert_eq!(*row, want);
    }
    // A closed period with nobody ranked gives just the header.
    let (empty, stderr) = awards(&h, "2021H1", false);
    assert_eq!(
        empty.unwrap_or_else(|| panic!("{stderr}")).trim(),
        cashback::commands::awards::HEADER
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn position_pushes_coalesce_but_never_lose_the_latest_state() {
    let h = Harness::start(&config_toml(30)).await;
    h.citizen("pia", &at(-40, 0)).await;
    h.card("pia", &hpan(77), &at(-30, 0)).await;
    let mut pushes = h.client.subscribe("cashback.position.pia").await.unwrap();
    let mut boards = h
        .client
        .subscribe("cashback.leaderboard.CUR")
        .await
        .unwrap();
    h.client.flush().await.unwrap();

    h.publish(&payment(&hpan(77), "first", &at(0, -100), 1000))
        .await;
    let first = tokio::time::timeout(Duration::from_secs(5), pushes.next())
        .await
        .unwrap()
        .unwrap();
    let first: Value = serde_json::from_slice(&first.payload).unwrap();
    assert_eq!(
        first["transaction_count"],
        json!(1),
        "the first change is pushed at once"
    );
    assert_eq!(first["ranking"], json!(1));
    assert_eq!(first["citizen_id"], json!("pia"));

    // A burst inside the interval: coalesced, ending on the latest state.
    for i in 0..10 {
        h.publish(&payment(
            &hpan(77),
            &format!("burst{i}"),
            &at(0, -90 + i),
            1000,
        ))
        .await;
    }
    let mut seen = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(2500), pushes.next()).await {
        let v: Value = serde_json::from_slice(&m.payload).unwrap();
        seen.push(v["transaction_count"].as_u64().unwrap());
    }
    assert_eq!(
        seen.last(),
        Some(&11),
        "the last push carries the latest state: {seen:?}"
    );
    assert!(seen.len() <= 3, "coalesced: {seen:?}");
    assert_eq!(h.query("pia", "CUR").await["transaction_count"], json!(11));

    // The leaderboard was pushed while it changed.
    let board = tokio::time::timeout(Duration::from_secs(3), boards.next())
        .await
        .unwrap()
        .unwrap();
    let board: Value = serde_json::from_slice(&board.payload).unwrap();
    assert_eq!(board["award_period"], json!("CUR"));
    assert_eq!(board["entries"][0]["citizen_id"], json!("pia"));
}

/// Within the winners' positions but below `min_transactions`: ranked, no
/// Supercashback, nothing payable; reaching the minimum turns both on. The
/// payout file says the same. ("CUR": 2 winners, minimum 3 payments, at
/// most 20.00 EUR payable.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_winner_needs_the_minimum_number_of_payments() {
    let h = Harness::start(&config_toml(30)).await;
    for (i, id) in ["few", "fewer"].iter().enumerate() {
        h.citizen(id, &at(-45, 0)).await;
        h.card(id, &hpan(2000 + i as u64), &at(-40, 0)).await;
    }
    let pay = |card: u64, n: u32| {
        payment(
            &hpan(card),
            &format!("w{card}-{n}"),
            &at(-1, n as i64),
            1_000,
        )
    };
    for n in 0..2 {
        h.publish(&pay(2000, n)).await;
    }
    h.publish(&pay(2001, 0)).await;
    h.caught_up().await;

    let few = h.query("few", "CUR").await;
    assert_eq!(
        (
            &few["ranking"],
            &few["transaction_count"],
            &few["supercashback"],
            &few["cashback"],
            &few["cashback_payable"],
            &few["threshold_reached"]
        ),
        (
            &json!(1),
            &json!(2),
            &json!(false),
            &json!("2.00"),
            &json!("0.00"),
            &json!(false)
        ),
        "{few}"
    );
    let fewer = h.query("fewer", "CUR").await;
    assert_eq!(
        (&fewer["ranking"], &fewer["supercashback"]),
        (&json!(2), &json!(false)),
        "{fewer}"
    );

    let file = awards(&h, "CUR", true).0.unwrap();
    assert!(
        file.contains("\nfew,IT60X0542811101000000123456,2,0.00,1,false,0.00\n"),
        "{file}"
    );

    // A third payment reaches the minimum: a winner, with all 3.00 EUR
    // payable (under max_cashback, 20.00).
    h.publish(&pay(2000, 2)).await;
    h.caught_up().await;
    let few = h.query("few", "CUR").await;
    assert_eq!(
        (
            &few["supercashback"],
            &few["cashback_payable"],
            &few["threshold_reached"]
        ),
        (&json!(true), &json!("3.00"), &json!(true)),
        "{few}"
    );
    let file = awards(&h, "CUR", true).0.unwrap();
    assert!(
        file.contains("\nfew,IT60X0542811101000000123456,3,3.00,1,true,1500.00\n"),
        "{file}"
    );
    assert!(
        file.contains("\nfewer,IT60X0542811101000000123456,1,0.00,2,false,0.00\n"),
        "{file}"
    );
}
