//! The engine on a 3-server NATS cluster (the shipped
//! `config/nats-cluster/` files, their users and permissions): it creates
//! its stream and snapshot bucket with `stream_replicas = 3`, and a restart
//! while one server is down (killed, so that the leaders it held are
//! elected again) rides out the elections, loads its snapshot and answers
//! as before. MEASURED.md: such a restart used to exit with `cannot list
//! snapshots`; without the start-up retries it exits with that or with
//! `cannot create or open stream CASHBACK`, depending on what the killed
//! server led.

mod common;

use async_nats::jetstream;
use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Citizens of the test, with 1, 2 and 3 payments.
const CITIZENS: [&str; 3] = ["cl-0", "cl-1", "cl-2"];

/// A request-reply call with a JSON body, through the cluster. "No
/// responders" is retried for a while: the engine's subscriptions reach the
/// other servers of the cluster a moment after it reports ready.
async fn request(client: &async_nats::Client, subject: &str, body: Value) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = tokio::time::timeout(
            Duration::from_secs(20),
            client.request(subject.to_owned(), body.to_string().into()),
        )
        .await
        .unwrap_or_else(|_| panic!("{subject}: no reply in 20 s"));
        match reply {
            Ok(reply) => return serde_json::from_slice(&reply.payload).expect("reply is JSON"),
            Err(e)
                if e.kind() == async_nats::RequestErrorKind::NoResponders
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("{subject}: {e}"),
        }
    }
}

/// Each citizen's position in the open period.
async fn positions(app: &async_nats::Client) -> Vec<Value> {
    let mut out = Vec::new();
    for id in CITIZENS {
        let q = json!({"citizen_id": id, "award_period": "CUR"});
        out.push(request(app, "cashback.query.citizen", q).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_a_server_down_rides_out_the_elections_and_restores_its_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = NatsCluster::start(dir.path()).await;
    let config = dir.path().join("cashback.toml");
    std::fs::write(&config, format!("stream_replicas = 3\n{}", config_toml(30))).unwrap();
    let env = cluster.engine_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let log = dir.path().join("engine.log");
    let mut engine = EngineProcess::start(&config, &cluster.url(), &env, log.clone()).await;

    // Enrollments and payments through the cluster, as the app back end and
    // a payment network log in.
    let app = cluster.connect("app").await;
    let network = jetstream::new(cluster.connect("acquirer_32875").await);
    let (tc, activated) = (at(-45, 0), at(-40, 0));
    let mut last = 0;
    for (i, id) in CITIZENS.iter().enumerate() {
        let card = hpan(9100 + i as u64);
        let r = request(
            &app,
            "cashback.enroll.citizen",
            json!({"citizen_id": id, "iban": IBAN, "tc_accepted_at": tc}),
        )
        .await;
        assert_eq!(r, json!({"ok": true}), "enroll {id}");
        let r = request(
            &app,
            "cashback.enroll.card",
            json!({"citizen_id": id, "hpan": card, "activated_at": activated}),
        )
        .await;
        assert_eq!(r, json!({"ok": true}), "card of {id}");
        for k in 0..=i {
            let p = payment(&card, &format!("cl-{i}-{k}"), &at(-1, k as i64), 1000);
            let ack = network
                .publish("cashback.auth.32875", p.to_string().into())
                .await
                .expect("publish")
                .await
                .expect("puback");
            last = ack.sequence;
        }
    }
    engine.applied(last).await;
    let before = positions(&app).await;
    let counts: Vec<_> = before
        .iter()
        .map(|p| p["transaction_count"].clone())
        .collect();
    assert_eq!(counts, [json!(1), json!(2), json!(3)], "{before:?}");

    // The stream and the snapshot bucket were created with three replicas.
    let inspector = jetstream::new(cluster.connect("engine").await);
    for name in ["CASHBACK", "OBJ_CASHBACK_SNAPSHOTS"] {
        let info = inspector
            .get_stream(name)
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .clone();
        assert_eq!(info.config.num_replicas, 3, "{name}");
    }

    // A clean stop stores the final snapshot.
    assert_eq!(engine.stop(), Some(0), "{}", engine.log_text());
    assert!(
        engine.log_text().contains("snapshot stored"),
        "{}",
        engine.log_text()
    );

    // Kill the server whose loss forces the most elections: the one that
    // leads the most of the JetStream meta group (stream and consumer
    // creation), the log and the snapshot bucket, the first two weighing
    // double: a start cannot go on without either, while the bucket's
    // objects can still be read from a follower.
    let mut leaders = vec![cluster.meta_leader().await.expect("a meta leader")];
    for name in ["CASHBACK", "OBJ_CASHBACK_SNAPSHOTS"] {
        let info = inspector
            .get_stream(name)
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .clone();
        leaders.push(
            info.cluster
                .and_then(|c| c.leader)
                .expect("a stream leader"),
        );
    }
    let weight = |server: &String| {
        [2, 2, 1]
            .iter()
            .zip(&leaders)
            .filter(|(_, l)| *l == server)
            .map(|(w, _)| w)
            .sum::<u32>()
    };
    let victim = leaders.iter().max_by_key(|s| weight(s)).unwrap().clone();
    let down = cluster.index_of(&victim).await.expect("one of ours");
    eprintln!("killing {victim}; leaders of meta, CASHBACK, snapshots: {leaders:?}");
    drop(inspector);
    cluster.kill(down);

    // The engine starts again at once, with every server in its URL, the
    // dead one included.
    let restarted_from = engine.log_text().len();
    let mut engine = EngineProcess::start(&config, &cluster.url(), &env, log).await;
    let restart_log = engine.log_text()[restarted_from..].to_owned();
    assert!(
        restart_log.contains("restored snapshot"),
        "the restart did not load the snapshot:\n{restart_log}"
    );
    assert!(
        !restart_log.contains("no snapshot"),
        "the restart fell back to a full replay:\n{restart_log}"
    );
    assert_eq!(positions(&app).await, before, "{restart_log}");

    // It goes on with two servers of three: a payment counts.
    let card = hpan(9100);
    let p = payment(&card, "cl-0-late", &at(-1, 100), 1000);
    let ack = network
        .publish("cashback.auth.32875", p.to_string().into())
        .await
        .expect("publish with a server down")
        .await
        .expect("puback with a server down");
    engine.applied(ack.sequence).await;
    let after = positions(&app).await;
    assert_eq!(after[0]["transaction_count"], json!(2), "{after:?}");

    // The killed server comes back and the engine still answers.
    cluster.restart(down).await;
    assert_eq!(positions(&app).await, after);
    assert_eq!(engine.stop(), Some(0), "{}", engine.log_text());
}
