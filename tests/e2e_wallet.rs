//! The wallet query (`cashback.query.wallet`, PROTOCOL.md section 3) end to
//! end, against a real nats-server and the engine: what the app's wallet
//! section shows after cards moved between citizens, were removed and
//! enrolled again (also backdated), and for withdrawn and unknown citizens
//! and requests that are not a wallet query. Every field is checked, times
//! as instants (the reply renders them in Europe/Rome, the requests here
//! carry other offsets and fractions).

mod common;

use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};
use common::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// The instant `days` days and `secs` seconds from the test's "now".
fn instant(days: i64, secs: i64) -> DateTime<Utc> {
    at(days, secs).parse().expect("at() is RFC 3339")
}

/// That instant as a request carries it: with `offset_hours` east of UTC
/// and a fraction of a second (`millis`), so that a reply that kept the
/// string, or dropped the fraction, shows.
fn sent(days: i64, secs: i64, millis: i64, offset_hours: i32) -> String {
    let t = instant(days, secs) + chrono::Duration::milliseconds(millis);
    let offset = FixedOffset::east_opt(offset_hours * 3600).expect("an offset");
    t.with_timezone(&offset)
        .to_rfc3339_opts(SecondsFormat::AutoSi, false)
}

/// A reply's time read as an instant; it must be RFC 3339 with an offset.
fn read_time(v: &Value) -> DateTime<Utc> {
    let s = v.as_str().unwrap_or_else(|| panic!("a time string: {v}"));
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{s} is not RFC 3339: {e}"))
        .with_timezone(&Utc)
}

/// A request's time read as an instant.
fn parsed(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("RFC 3339")
        .with_timezone(&Utc)
}

/// One card as the wallet should show it: its hpan, whether it is active,
/// and its windows (activated_at, deactivated_at) oldest first.
struct Card<'a> {
    hpan: String,
    active: bool,
    windows: &'a [(&'a str, Option<&'a str>)],
}

/// The object's field names.
fn keys(v: &Value) -> BTreeSet<&str> {
    v.as_object()
        .unwrap_or_else(|| panic!("an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect()
}

/// Asserts a wallet reply field by field: exactly the protocol's fields,
/// times compared as instants, cards and windows in the protocol's order.
fn assert_wallet(reply: &Value, citizen: &str, iban: &str, tc: &str, cards: &[Card]) {
    assert_eq!(
        keys(reply),
        BTreeSet::from(["ok", "citizen_id", "iban", "tc_accepted_at", "cards"]),
        "{reply}"
    );
    assert_eq!(reply["ok"], json!(true), "{reply}");
    assert_eq!(reply["citizen_id"], json!(citizen), "{reply}");
    assert_eq!(reply["iban"], json!(iban), "{reply}");
    assert_eq!(read_time(&reply["tc_accepted_at"]), parsed(tc), "{reply}");
    let got = reply["cards"].as_array().expect("cards");
    let hpans: Vec<&str> = got.iter().map(|c| c["hpan"].as_str().unwrap()).collect();
    let want: Vec<&str> = cards.iter().map(|c| c.hpan.as_str()).collect();
    assert_eq!(hpans, want, "card order of {citizen}: {reply}");
    for (g, w) in got.iter().zip(cards) {
        assert_eq!(
            keys(g),
            BTreeSet::from(["hpan", "active", "windows"]),
            "{g}"
        );
        assert_eq!(g["active"], json!(w.active), "active of {}: {g}", w.hpan);
        let windows = g["windows"].as_array().expect("windows");
        assert_eq!(windows.len(), w.windows.len(), "windows of {}: {g}", w.hpan);
        for (gw, (from, until)) in windows.iter().zip(w.windows) {
            assert_eq!(
                keys(gw),
                BTreeSet::from(["activated_at", "deactivated_at"]),
                "{g}"
            );
            assert_eq!(read_time(&gw["activated_at"]), parsed(from), "{g}");
            match until {
                Some(until) => {
                    assert_eq!(read_time(&gw["deactivated_at"]), parsed(until), "{g}")
                }
                None => assert_eq!(gw["deactivated_at"], Value::Null, "open window: {g}"),
            }
        }
    }
}

/// Enrolls a citizen with this IBAN and T&C time, asserting success.
async fn citizen(h: &Harness, id: &str, iban: &str, tc: &str) {
    let r = h
        .request(
            "cashback.enroll.citizen",
            json!({"citizen_id": id, "iban": iban, "tc_accepted_at": tc}),
        )
        .await;
    assert_eq!(r, json!({"ok": true}), "enroll citizen {id}");
}

/// Removes a card, asserting success.
async fn remove(h: &Harness, id: &str, hpan: &str, until: &str) {
    let r = h
        .request(
            "cashback.enroll.card_remove",
            json!({"citizen_id": id, "hpan": hpan, "deactivated_at": until}),
        )
        .await;
    assert_eq!(r, json!({"ok": true}), "remove card of {id}");
}

/// `cashback.query.wallet` for a citizen.
async fn wallet(h: &Harness, id: &str) -> Value {
    h.request("cashback.query.wallet", json!({"citizen_id": id}))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wallets_show_every_card_and_window_as_enrolled() {
    let mut h = Harness::start(&config_toml(30)).await;
    const OTHER_IBAN: &str = "DE89370400440532013000";

    // ann: T&C with a fraction and an offset east of Rome; re-enrolled
    // later with another IBAN (the IBAN changes, the T&C time does not).
    let ann_tc = sent(-60, 0, 250, 5);
    citizen(&h, "ann", IBAN, &ann_tc).await;
    citizen(&h, "bob", IBAN, &sent(-60, 0, 0, 0)).await;
    let (kept, cycled, moved) = (hpan(0xa1), hpan(0xa2), hpan(0xa3));
    // Same first activation as each other, enrolled in the order opposite
    // to their hpans: ordered by hpan.
    let (tie_high, tie_low) = (hpan(0xa5), hpan(0xa4));
    let early = hpan(0xa6);

    let kept_from = sent(-40, 0, 0, -3);
    h.card("ann", &kept, &kept_from).await;
    // Enrolling an active card again changes nothing.
    h.card("ann", &kept, &sent(-39, 0, 0, 0)).await;

    // Removed, then enrolled again: two windows, the last open.
    let cycled_from = sent(-30, 0, 0, 1);
    let cycled_until = sent(-20, 0, 999, 2);
    let cycled_again = sent(-10, 0, 0, 0);
    h.card("ann", &cycled, &cycled_from).await;
    remove(&h, "ann", &cycled, &cycled_until).await;
    // Removing it again changes nothing (its window stays as first closed).
    remove(&h, "ann", &cycled, &sent(-19, 0, 0, 0)).await;
    h.card("ann", &cycled, &cycled_again).await;

    // ann -> bob -> ann: each wallet shows its own windows only.
    let moved_1 = (sent(-35, 0, 0, 0), sent(-25, 0, 0, 0));
    let moved_bob = (sent(-15, 0, 0, 0), sent(-12, 0, 0, 0));
    let moved_2 = sent(-8, 0, 0, 0);
    h.card("ann", &moved, &moved_1.0).await;
    remove(&h, "ann", &moved, &moved_1.1).await;
    h.card("bob", &moved, &moved_bob.0).await;
    let refused = h
        .request(
            "cashback.enroll.card",
            json!({"citizen_id": "ann", "hpan": moved, "activated_at": sent(-14, 0, 0, 0)}),
        )
        .await;
    assert_eq!(
        refused["error"]["code"],
        json!("card_owned_by_other_citizen"),
        "{refused}"
    );
    // ann removing a card that is now bob's changes nothing.
    remove(&h, "ann", &moved, &sent(-13, 0, 0, 0)).await;
    remove(&h, "bob", &moved, &moved_bob.1).await;
    h.card("ann", &moved, &moved_2).await;

    let tie = sent(-5, 0, 0, 0);
    h.card("ann", &tie_high, &tie).await;
    // The same instant written with another offset.
    h.card("ann", &tie_low, &sent(-5, 0, 0, 3)).await;
    // Enrolled last, activated first: listed first.
    let early_from = sent(-45, 0, 0, 0);
    h.card("ann", &early, &early_from).await;

    citizen(&h, "ann", OTHER_IBAN, &sent(-1, 0, 0, 0)).await;

    let ann_cards = [
        Card {
            hpan: early.clone(),
            active: true,
            windows: &[(&early_from, None)],
        },
        Card {
            hpan: kept.clone(),
            active: true,
            windows: &[(&kept_from, None)],
        },
        Card {
            hpan: moved.clone(),
            active: true,
            windows: &[(&moved_1.0, Some(&moved_1.1)), (&moved_2, None)],
        },
        Card {
            hpan: cycled.clone(),
            active: true,
            windows: &[(&cycled_from, Some(&cycled_until)), (&cycled_again, None)],
        },
        Card {
            hpan: tie_low.clone(),
            active: true,
            windows: &[(&tie, None)],
        },
        Card {
            hpan: tie_high.clone(),
            active: true,
            windows: &[(&tie, None)],
        },
    ];
    let bob_cards = [Card {
        hpan: moved.clone(),
        active: false,
        windows: &[(&moved_bob.0, Some(&moved_bob.1))],
    }];
    assert_wallet(
        &wallet(&h, "ann").await,
        "ann",
        OTHER_IBAN,
        &ann_tc,
        &ann_cards,
    );
    let bob_tc = sent(-60, 0, 0, 0);
    assert_wallet(&wallet(&h, "bob").await, "bob", IBAN, &bob_tc, &bob_cards);

    // A citizen without cards has an empty wallet.
    let cy_tc = sent(-3, 0, 0, 0);
    citizen(&h, "cy", IBAN, &cy_tc).await;
    assert_wallet(&wallet(&h, "cy").await, "cy", IBAN, &cy_tc, &[]);

    // The wallet is state like any other: a restart (replaying the log)
    // answers the same.
    assert_eq!(h.stop_engine(), Some(0));
    h.start_engine().await;
    assert_wallet(
        &wallet(&h, "ann").await,
        "ann",
        OTHER_IBAN,
        &ann_tc,
        &ann_cards,
    );
    assert_wallet(&wallet(&h, "bob").await, "bob", IBAN, &bob_tc, &bob_cards);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_enrolled_again_backdated_is_active() {
    let h = Harness::start(&config_toml(30)).await;
    let tc = sent(-60, 0, 0, 0);
    citizen(&h, "dan", IBAN, &tc).await;
    let card = hpan(0xd1);
    let first = (sent(-10, 0, 0, 0), sent(-5, 0, 0, 0));
    // The app back end may relay an activation older than the card's last
    // window: the directory accepts it, and payments on the card count
    // for dan from it on.
    let again = sent(-20, 0, 0, 0);
    h.card("dan", &card, &first.0).await;
    remove(&h, "dan", &card, &first.1).await;
    h.card("dan", &card, &again).await;
    // Oldest first, and active: its window is open.
    assert_wallet(
        &wallet(&h, "dan").await,
        "dan",
        IBAN,
        &tc,
        &[Card {
            hpan: card.clone(),
            active: true,
            windows: &[(&again, None), (&first.0, Some(&first.1))],
        }],
    );
    // The card does count now, as the wallet says.
    h.publish(&payment(&card, "p1", &at(0, -60), 1000)).await;
    h.caught_up().await;
    assert_eq!(h.query("dan", "CUR").await["transaction_count"], json!(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdrawn_unknown_and_bad_requests_are_refused() {
    let h = Harness::start(&config_toml(30)).await;
    citizen(&h, "eve", IBAN, &at(-30, 0)).await;
    h.card("eve", &hpan(0xe1), &at(-20, 0)).await;
    assert_eq!(wallet(&h, "eve").await["cards"][0]["active"], json!(true));
    let r = h
        .request(
            "cashback.enroll.citizen_remove",
            json!({"citizen_id": "eve", "cancelled_at": at(-1, 0)}),
        )
        .await;
    assert_eq!(r, json!({"ok": true}));

    let refusal = |code: &str, message: &str| json!({"ok": false, "error": {"code": code, "message": message}});
    assert_eq!(
        wallet(&h, "eve").await,
        refusal(
            "citizen_withdrawn",
            "the citizen has withdrawn from the programme"
        )
    );
    let unknown = refusal("unknown_citizen", "no citizen with this citizen_id");
    assert_eq!(wallet(&h, "zed").await, unknown);
    // An id that could never be enrolled is simply unknown.
    assert_eq!(wallet(&h, "not a valid id!").await, unknown);

    for body in [
        json!({}),
        json!({"citizen_id": 42}),
        json!({"citizen_id": null}),
        json!(["eve"]),
        json!("eve"),
    ] {
        let r = h.request("cashback.query.wallet", body.clone()).await;
        assert_eq!(r["ok"], json!(false), "{body}: {r}");
        assert_eq!(r["error"]["code"], json!("bad_request"), "{body}: {r}");
    }
    let raw = h
        .client
        .request("cashback.query.wallet", "not json".into())
        .await
        .expect("a reply");
    let r: Value = serde_json::from_slice(&raw.payload).expect("JSON");
    assert_eq!(r["error"]["code"], json!("bad_request"), "{r}");
}
