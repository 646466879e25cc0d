//! Crash anywhere, lose nothing, count nothing twice: SIGKILLs at random
//! points with frequent snapshots, a broker restart, and duplicates after
//! JetStream's window; the final state is compared with the single-threaded
//! reference engine fed the same inputs in the same order.

mod common;

use cashback_engine::enrollment::{parse_request, EnrollCommand, EnrollKind};
use cashback_engine::local::LocalEngine;
use cashback_engine::period::{AwardPeriod, Periods};
use cashback_engine::router::Position;
use cashback_engine::time::Timestamp;
use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// Frequent snapshots, no purge (the test reads nothing back, but keeps the
/// broker's view simple), a short JetStream duplicate window.
fn durable_config() -> String {
    // A snapshot pauses the pipeline while the shards encode their state; at
    // the long run's size (and in a debug build) one a second would leave
    // little time for anything else, so the long run may space them out.
    let every = std::env::var("CASHBACK_DURABILITY_SNAPSHOT_SECS").unwrap_or_else(|_| "1".into());
    format!(
        "snapshot_interval_secs = {every}\npurge_after_snapshot = false\nduplicate_window_secs = 1\n{}",
        config_toml(30)
    )
}

/// A count from the environment, or `default`.
fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.replace('_', "")
                .parse()
                .unwrap_or_else(|_| panic!("{name}: a number"))
        })
        .unwrap_or(default)
}

/// The reference: the same rules, one thread, no NATS, no actors, no
/// snapshots, fed the inputs in publication order.
fn reference(config: &str) -> LocalEngine {
    #[derive(serde::Deserialize)]
    struct Periods_ {
        periods: Vec<AwardPeriod>,
    }
    let p: Periods_ = toml::from_str(&config[config.find("[[periods]]").unwrap()..]).unwrap();
    LocalEngine::new(256, Arc::new(Periods::new(p.periods).unwrap()), 30)
}

/// A workload: enrollments, then payments with ~3% reversals (some before
/// their payment) and ~2% re-sends of earlier ids under new message ids.
fn workload(n: usize, citizens: usize, seed: u64) -> Vec<Value> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut sent: Vec<Value> = Vec::new();
    let mut out = Vec::new();
    for i in 0..n {
        let roll: f64 = rng.gen();
        let c = rng.gen_range(0..citizens);
        if roll < 0.02 && !sent.is_empty() {
            out.push(sent[rng.gen_range(0..sent.len())].clone());
        } else if roll < 0.05 {
            let amount = rng.gen_range(100..5000);
            let trx = at(-1, rng.gen_range(0..3600));
            let corr = format!("k{i}");
            out.push(reversal(
                &hpan(c as u64 + 1),
                &format!("r{i}"),
                &trx,
                amount / 2,
                Some(&corr),
            ));
            if rng.gen_bool(0.5) {
                let mut p = payment(&hpan(c as u64 + 1), &format!("p{i}"), &trx, amount);
                p["correlation_id"] = json!(corr);
                out.push(p.clone());
                sent.push(p);
            }
        } else {
            let p = payment(
                &hpan(c as u64 + 1),
                &format!("p{i}"),
                &at(-1, rng.gen_range(0..3600)),
                rng.gen_range(100..20000),
            );
            out.push(p.clone());
            sent.push(p);
        }
    }
    out
}

async fn enroll_all(h: &Harness, local: &mut LocalEngine, citizens: usize, seq: &mut u64) {
    let now = Timestamp::now();
    for c in 0..citizens {
        let id = format!("d{c}");
        let (tc, act) = (at(-40, 0), at(-30, 0));
        h.citizen(&id, &tc).await;
        h.card(&id, &hpan(c as u64 + 1), &act).await;
        for (kind, body) in [
            (
                EnrollKind::Citizen,
                json!({"citizen_id": id, "iban": IBAN, "tc_accepted_at": tc}),
            ),
            (
                EnrollKind::Card,
                json!({"citizen_id": id, "hpan": hpan(c as u64 + 1), "activated_at": act}),
            ),
        ] {
            *seq += 1;
            let cmd: EnrollCommand = parse_request(kind, body.to_string().as_bytes()).unwrap();
            local
                .enroll(
                    Position {
                        seq: *seq,
                        broker_time: now,
                    },
                    &cmd,
                )
                .unwrap();
        }
    }
}

async fn compare(h: &Harness, local: &LocalEngine, citizens: usize) {
    for c in 0..citizens {
        let id = format!("d{c}");
        let got = h.query(&id, "CUR").await;
        let want = local.standing(&id, "CUR").unwrap_or_default();
        assert_eq!(got["transaction_count"], json!(want.count), "{id}: {got}");
        assert_eq!(
            got["cashback"],
            json!(cashback_engine::money::money_string(want.cashback)),
            "{id}: {got}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_loses_nothing_and_counts_nothing_twice() {
    // The short version runs in CI; the long one (issue 4: 1M authorizations,
    // 10 kills) is `CASHBACK_DURABILITY_AUTHS=1000000 CASHBACK_DURABILITY_KILLS=10
    // CASHBACK_DURABILITY_SNAPSHOT_SECS=10`.
    let auths = env_number("CASHBACK_DURABILITY_AUTHS", 100_000);
    let kills = env_number("CASHBACK_DURABILITY_KILLS", 3);
    let config = durable_config();
    let mut h = Harness::start(&config).await;
    let mut local = reference(&config);
    let citizens = (auths / 400).clamp(50, 2_000);
    // Every position push, the last one per citizen kept: after the kills,
    // each citizen's last push must be their final state (issue 12: a change
    // applied but not pushed when the engine died is replayed, and was then
    // never pushed).
    let mut positions = h.client.subscribe("cashback.position.*").await.unwrap();
    let last_push = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::<
        String,
        Value,
    >::new()));
    let collector = {
        use futures::StreamExt;
        let last_push = last_push.clone();
        tokio::spawn(async move {
            while let Some(m) = positions.next().await {
                let v: Value = serde_json::from_slice(&m.payload).unwrap();
                let id = v["citizen_id"].as_str().unwrap().to_owned();
                last_push.lock().unwrap().insert(id, v);
            }
        })
    };
    h.client.flush().await.unwrap();
    let mut seq = 0;
    enroll_all(&h, &mut local, citizens, &mut seq).await;
    let messages = workload(auths, citizens, 11);
    let now = Timestamp::now();
    for m in &messages {
        seq += 1;
        local.authorization(
            Position {
                seq,
                broker_time: now,
            },
            "cashback.auth.32875",
            m.to_string().as_bytes(),
        );
    }

    // Publish from a separate task while the engine is killed three times.
    let js = h.js.clone();
    let to_send = messages.clone();
    let publisher = tokio::spawn(async move {
        let mut acks = std::collections::VecDeque::new();
        for m in to_send {
            acks.push_back(
                js.publish("cashback.auth.32875", m.to_string().into())
                    .await
                    .unwrap(),
            );
            if acks.len() > 256 {
                acks.pop_front().unwrap().await.unwrap();
            }
            tokio::task::yield_now().await;
        }
        for a in acks {
            a.await.unwrap();
        }
    });
    let mut rng = StdRng::seed_from_u64(5);
    // Spread the kills over the publishing, whatever its length.
    let pause_ms = (auths as u64 / 40 / kills.max(1) as u64).clamp(300, 10_000);
    for _ in 0..kills {
        tokio::time::sleep(Duration::from_millis(
            rng.gen_range(pause_ms / 3..pause_ms * 5 / 3),
        ))
        .await;
        h.kill_engine();
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..300))).await;
        h.start_engine().await;
    }
    publisher.await.unwrap();
    // One more kill right at the end of the traffic: the last changes are
    // then applied but not all pushed (pushes are coalesced per second),
    // and come back only through the replay.
    h.kill_engine();
    h.start_engine().await;
    h.caught_up().await;
    assert!(
        h.engine_log().contains("restored snapshot"),
        "restarts used snapshots"
    );
    compare(&h, &local, citizens).await;
    // The last push of every citizen is their final state (pushes are
    // coalesced per second, and owed ones paced after a replay: give them
    // time to go out).
    let stale = |last: &std::collections::HashMap<String, Value>| {
        (0..citizens)
            .map(|c| format!("d{c}"))
            .filter(|id| {
                let want = local.standing(id, "CUR").unwrap_or_default();
                want.count > 0
                    && last.get(id).is_none_or(|v| {
                        v["transaction_count"] != json!(want.count)
                            || v["cashback"]
                                != json!(cashback_engine::money::money_string(want.cashback))
                    })
            })
            .collect::<Vec<_>>()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let stale = stale(&last_push.lock().unwrap());
        if stale.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} citizens' last push is not their final state, e.g. {:?}",
            stale.len(),
            &stale[..stale.len().min(5)]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    collector.abort();
    // And once more after a clean stop: the shutdown snapshot holds it all.
    assert_eq!(h.stop_engine(), Some(0));
    h.start_engine().await;
    h.caught_up().await;
    compare(&h, &local, citizens).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_run_costs_nothing() {
    let config = durable_config();
    let mut h = Harness::start(&config).await;
    let mut local = reference(&config);
    let citizens = 20;
    let mut seq = 0;
    enroll_all(&h, &mut local, citizens, &mut seq).await;
    let messages = workload(3_000, citizens, 12);
    let now = Timestamp::now();
    for m in &messages {
        seq += 1;
        local.authorization(
            Position {
                seq,
                broker_time: now,
            },
            "cashback.auth.32875",
            m.to_string().as_bytes(),
        );
    }
    for (i, m) in messages.iter().enumerate() {
        if i == messages.len() / 2 {
            h.restart_nats();
        }
        // A publisher retries until acknowledged (what "published" means).
        loop {
            let attempt = async {
                h.js.publish("cashback.auth.32875", m.to_string().into())
                    .await?
                    .await
            };
            match tokio::time::timeout(Duration::from_secs(5), attempt).await {
                Ok(Ok(_)) => break,
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
    h.caught_up().await;
    compare(&h, &local, citizens).await;
    assert!(h.health().await.unwrap()["connected"] == json!(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_after_the_dedup_window_counts_once() {
    let h = Harness::start(&durable_config()).await;
    h.citizen("w", &at(-40, 0)).await;
    h.card("w", &hpan(3), &at(-30, 0)).await;
    let body = payment(&hpan(3), "once", &at(0, -60), 1000)
        .to_string()
        .into_bytes();
    let (_, dup) = h
        .publish_raw("cashback.auth.32875", body.clone(), Some("id-once"))
        .await;
    assert!(!dup);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, dup) = h
        .publish_raw("cashback.auth.32875", body, Some("id-once"))
        .await;
    assert!(!dup, "outside its window JetStream accepts the re-send");
    h.caught_up().await;
    assert_eq!(h.query("w", "CUR").await["transaction_count"], json!(1));
}

/// A snapshot this engine cannot use (here: taken under another reversal
/// parking, so another configuration fingerprint) after the stream was
/// purged: replaying what is left would lose the purged messages, so the
/// engine refuses to start and says why, instead of serving a wrong state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_snapshot_after_a_purge_stops_the_start_instead_of_losing_state() {
    let purging = |park_days| {
        format!(
            "snapshot_interval_secs = 3600\npurge_after_snapshot = true\n{}",
            config_toml(park_days)
        )
    };
    let mut h = Harness::start(&purging(30)).await;
    h.citizen("p", &at(-40, 0)).await;
    h.card("p", &hpan(9), &at(-30, 0)).await;
    h.publish(&payment(&hpan(9), "purged-1", &at(0, -60), 1000))
        .await;
    h.caught_up().await;
    // The clean stop stores a snapshot, then purges what it holds.
    assert_eq!(h.stop_engine(), Some(0));
    let mut stream = h.js.get_stream("CASHBACK").await.unwrap();
    let state = stream.info().await.unwrap().state.clone();
    assert!(
        state.first_sequence > 1,
        "the stop's snapshot purged the stream: {state:?}"
    );

    // Same configuration: it restores and still knows the payment.
    h.start_engine().await;
    h.caught_up().await;
    assert_eq!(h.query("p", "CUR").await["transaction_count"], json!(1));
    assert_eq!(h.stop_engine(), Some(0));

    // Another configuration: the snapshot does not apply, and the purged
    // messages cannot be replayed.
    std::fs::write(&h.config, purging(31)).unwrap();
    let log_path = h.dir.path().join("refused.log");
    let log_file = std::fs::File::create(&log_path).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cashback"))
        .args(["serve", "--config"])
        .arg(&h.config)
        .args(["--nats-url", h.nats.url()])
        .env("CASHBACK_METRICS_LISTEN", "127.0.0.1:0")
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .expect("run the engine");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    let status = status.unwrap_or_else(|| panic!("it must not start; it ran; log:\n{log}"));
    assert!(!status.success(), "it must not start; log:\n{log}");
    assert!(
        log.contains("were purged and would be lost"),
        "it says why; log:\n{log}"
    );
}

/// A process that falls behind a purge of the stream (a replica more than two
/// snapshot intervals behind the snapshots its node keeps, or cut off from
/// NATS that long) stops with an error, instead of reading on past the hole
/// and silently holding another state than its node's other processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_past_what_the_engine_has_read_stops_it_instead_of_skipping() {
    let mut h = Harness::start(&durable_config()).await;
    h.citizen("g", &at(-40, 0)).await;
    h.card("g", &hpan(5), &at(-30, 0)).await;
    h.publish(&payment(&hpan(5), "before", &at(0, -600), 1000))
        .await;
    h.caught_up().await;
    h.signal_engine(libc::SIGSTOP);
    // While it stands still, the log grows past what one pull delivers, and
    // is purged to its last few messages.
    let acks: Vec<_> = futures::future::join_all((0..5_000).map(|i| {
        let body = payment(&hpan(5), &format!("stalled-{i}"), &at(0, -500), 1000).to_string();
        h.js.publish("cashback.auth.32875", body.into())
    }))
    .await;
    for ack in acks {
        ack.expect("publish").await.expect("puback");
    }
    let stream = h.js.get_stream("CASHBACK").await.unwrap();
    stream.purge().keep(10).await.unwrap();
    h.signal_engine(libc::SIGCONT);
    let status = h.engine_exit(Duration::from_secs(120)).await;
    let log = h.engine_log();
    let status = status.unwrap_or_else(|| panic!("it read on past the hole; log:\n{log}"));
    assert!(!status.success(), "log:\n{log}");
    assert!(
        log.contains("the stream jumps from sequence"),
        "it says why; log:\n{log}"
    );
}

/// An engine restored from a snapshot whose broker restarts before any new
/// message: its ordered consumer, recreated before it delivered anything,
/// starts again from the stream's first message (async-nats 0.51). The
/// engine skips what its state already holds: it neither stops nor applies
/// anything twice (a re-applied payment would be rejected `duplicate`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_right_after_a_restore_applies_nothing_twice() {
    let mut h = Harness::start(&durable_config()).await;
    h.citizen("r", &at(-40, 0)).await;
    h.card("r", &hpan(6), &at(-30, 0)).await;
    h.publish(&payment(&hpan(6), "first", &at(0, -600), 1000))
        .await;
    h.caught_up().await;
    // The clean stop stores a snapshot; the new process restores it and has
    // nothing new to read.
    assert_eq!(h.stop_engine(), Some(0));
    h.start_engine().await;
    h.restart_nats();
    // The consumer is recreated.
    h.engine_logs("stream consumer: recovering", Duration::from_secs(90))
        .await;
    h.publish(&payment(&hpan(6), "second", &at(0, -500), 1000))
        .await;
    h.caught_up().await;
    let r = h.query("r", "CUR").await;
    assert_eq!(r["transaction_count"], json!(2), "{r}");
    let mut rejected = h.js.get_stream("CASHBACK_REJECTED").await.unwrap();
    let stored = rejected.info().await.unwrap().state.messages;
    assert_eq!(stored, 0, "nothing re-applied; log:\n{}", h.engine_log());
}

/// A credit whose decision always fails (here by an injected fault) is set
/// aside: the engine then withholds its snapshots, since one taken past the
/// credit would drop it for good, and a restart replays it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credit_set_aside_withholds_snapshots_and_a_restart_replays_it() {
    use cashback_engine::partition::{partition_of, DEFAULT_PARTITIONS};
    // The card's payments live with its first citizen's partition; after it
    // moves to a citizen of another partition, each payment is a credit.
    let first = "cred-a";
    let second = (0..)
        .map(|i| format!("cred-b{i}"))
        .find(|b| partition_of(b, DEFAULT_PARTITIONS) != partition_of(first, DEFAULT_PARTITIONS))
        .unwrap();
    // Sequences of a fresh stream: five journal entries, then the payment.
    let mut h =
        Harness::start_with_env(&durable_config(), &[("CASHBACK_FAULTS", "credit@6x*")]).await;
    h.citizen(first, &at(-40, 0)).await;
    h.card(first, &hpan(8), &at(-30, 0)).await;
    let removed = h
        .request(
            "cashback.enroll.card_remove",
            json!({"citizen_id": first, "hpan": hpan(8), "deactivated_at": at(-20, 0)}),
        )
        .await;
    assert_eq!(removed, json!({"ok": true}));
    h.citizen(&second, &at(-40, 0)).await;
    h.card(&second, &hpan(8), &at(-10, 0)).await;
    let seq = h
        .publish(&payment(&hpan(8), "moved", &at(0, -600), 1000))
        .await;
    assert_eq!(seq, 6, "the fault plan's sequence holds");
    h.caught_up().await;
    assert_eq!(h.query(&second, "CUR").await["transaction_count"], json!(0));
    h.engine_logs("snapshot withheld", Duration::from_secs(60))
        .await;
    assert_eq!(h.stop_engine(), Some(0));
    let store = h.js.get_object_store("CASHBACK_SNAPSHOTS").await.unwrap();
    let mut names = store.list().await.unwrap();
    let mut newest = 0;
    while let Some(info) = futures::StreamExt::next(&mut names).await {
        let name = info.unwrap().name;
        let taken: u64 = name.rsplit('-').next().unwrap().parse().unwrap();
        newest = newest.max(taken);
    }
    assert!(
        newest < seq,
        "a snapshot at {newest} is past the credit of {seq}"
    );
    // Without the fault, the restart replays the credit.
    h.env.clear();
    h.start_engine().await;
    h.caught_up().await;
    let r = h.query(&second, "CUR").await;
    assert_eq!(r["transaction_count"], json!(1), "{r}");
    assert_eq!(r["cashback"], json!("1.00"));
}
