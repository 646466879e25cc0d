//! Three engine nodes (node 0 with a replica) on a 3-server NATS cluster
//! with an R3 stream (PROTOCOL.md section 8), seen from outside as one
//! engine: mixed traffic with cards that move between citizens of different
//! nodes, reversals of such payments (credits across nodes), withdrawals and
//! re-sends; a kill -9 of a node without a replica, of node 0's primary
//! (queries go on through the replica), and of a nats-server, mid-run. Then
//! every citizen, every leaderboard page, every statement and the set of
//! rejections equal `LocalEngine` fed the same log, read back from the
//! stream.

mod common;

use async_nats::jetstream;
use cashback_engine::admin::JournalEntry;
use cashback_engine::enrollment::EnrollCommand;
use cashback_engine::local::LocalEngine;
use cashback_engine::money::money_string;
use cashback_engine::partition::partition_of;
use cashback_engine::period::{AwardPeriod, Periods};
use cashback_engine::rank::RankKey;
use cashback_engine::router::Position;
use cashback_engine::time::Timestamp;
use common::*;
use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const NODES: u16 = 3;
const PARTITIONS: u16 = 256;
const CITIZENS: usize = 36;

/// The node owning a citizen.
fn node_of(id: &str) -> u16 {
    partition_of(id, PARTITIONS) % NODES
}

/// A request through the cluster, retried while no engine is subscribed
/// yet or a node is being restarted (`unavailable`).
async fn request(client: &async_nats::Client, subject: &str, body: &Value) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let reply = tokio::time::timeout(
            Duration::from_secs(15),
            client.request(subject.to_owned(), body.to_string().into()),
        )
        .await;
        let retry = match reply {
            Ok(Ok(m)) => {
                let v: Value = serde_json::from_slice(&m.payload).unwrap();
                if v["error"]["code"] != json!("unavailable") {
                    return v;
                }
                format!("{v}")
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => "timeout".into(),
        };
        assert!(
            Instant::now() < deadline,
            "{subject} {body}: no answer ({retry})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Publishes with JetStream and a `Nats-Msg-Id`, retrying (same id) while
/// the cluster elects a leader: nothing lost, nothing stored twice.
async fn publish(js: &jetstream::Context, auth: &Value, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", id);
        let stored = match js
            .publish_with_headers("cashback.auth.32875", headers, auth.to_string().into())
            .await
        {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match stored {
            Ok(()) => return,
            Err(e) => {
                assert!(Instant::now() < deadline, "publish {id}: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// One node's engine process configuration.
fn node_config(dir: &Path, node: u16) -> std::path::PathBuf {
    let path = dir.join(format!("node-{node}.toml"));
    std::fs::write(
        &path,
        format!(
            "stream_replicas = 3\nnode = {node}\nnodes = {NODES}\nsnapshot_interval_secs = 2\n\
             purge_after_snapshot = false\npush_interval_ms = 200\n{}",
            config_toml(30).replace("shards = 3", "shards = 1")
        ),
    )
    .unwrap();
    path
}

/// The nodes and replicas of the test.
struct Nodes {
    dir: std::path::PathBuf,
    url: String,
    env: Vec<(&'static str, String)>,
    /// (node, process); node 0 twice.
    running: Vec<(u16, Option<EngineProcess>)>,
}

impl Nodes {
    async fn start(&mut self, which: usize) {
        let node = self.running[which].0;
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let log = self.dir.join(format!("engine-{which}.log"));
        let p = EngineProcess::start(&node_config(&self.dir, node), &self.url, &env, log).await;
        self.running[which].1 = Some(p);
    }

    fn kill(&mut self, which: usize) {
        self.running[which].1 = None; // dropped: SIGKILL
    }

    fn logs(&self) -> String {
        (0..self.running.len())
            .map(|i| {
                let log = self.dir.join(format!("engine-{i}.log"));
                format!(
                    "--- engine {i}:\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                )
            })
            .collect()
    }
}

/// The reference: every message of the stream, in order, through
/// `LocalEngine` (credits journaled by nodes are the cluster's own traffic
/// and change nothing in one process).
async fn reference(js: &jetstream::Context) -> LocalEngine {
    #[derive(serde::Deserialize)]
    struct Config {
        periods: Vec<AwardPeriod>,
    }
    let text = config_toml(30);
    let c: Config = toml::from_str(&text[text.find("[[periods]]").unwrap()..]).unwrap();
    let mut local = LocalEngine::new(PARTITIONS, Arc::new(Periods::new(c.periods).unwrap()), 30);
    let mut stream = js.get_stream("CASHBACK").await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig::default())
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut seq = 0;
    while seq < last {
        let m = messages.next().await.unwrap().unwrap();
        let info = m.info().unwrap();
        let at = Position {
            seq: info.stream_sequence,
            broker_time: Timestamp::from_unix_nanos(info.published.unix_timestamp_nanos()),
        };
        seq = at.seq;
        let subject = m.subject.to_string();
        if subject.starts_with("cashback.auth.") {
            local.authorization(at, &subject, &m.payload);
        } else if subject == "cashback.journal.enroll" {
            let _ = local.enroll(at, &EnrollCommand::from_journal(&m.payload).unwrap());
        } else if subject == "cashback.journal.admin" {
            let e = JournalEntry::from_journal(&m.payload).unwrap();
            let _ = local.exclusion(at, e.op, &e.command);
        }
    }
    local
}

/// The national ranking of `period` by the rules, from the reference.
fn ranking(local: &LocalEngine, ids: &[String]) -> Vec<RankKey> {
    let mut keys: Vec<RankKey> = ids
        .iter()
        .filter_map(|id| {
            let s = local.standing(id, "CUR")?;
            let idx = local.router.directory().find(id)?;
            let record = local.router.directory().citizen(idx);
            (s.count > 0 && !record.withdrawn).then(|| RankKey {
                count: s.count,
                last_trx: s.last_trx.unwrap_or_default(),
                tc_accepted_at: record.tc_accepted_at,
                citizen_id: id.as_str().into(),
            })
        })
        .collect();
    keys.sort_by(|a, b| a.rank_cmp(b));
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_and_a_replica_answer_as_one_engine_through_kills() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = NatsCluster::start(dir.path()).await;
    let mut nodes = Nodes {
        dir: dir.path().to_owned(),
        url: cluster.url(),
        env: cluster.engine_env(),
        running: vec![(0, None), (1, None), (2, None), (0, None)],
    };
    for which in 0..4 {
        nodes.start(which).await;
    }
    let app = cluster.connect("app").await;
    let network = jetstream::new(cluster.connect("acquirer_32875").await);
    // Rejections, read on a server that is never killed.
    let operator = async_nats::ConnectOptions::new()
        .user_and_password("operator".into(), NatsCluster::password("operator"))
        .custom_inbox_prefix("_INBOX_operator")
        .connect(cluster.urls()[2].as_str())
        .await
        .unwrap();
    let mut rejected_sub = operator.subscribe("cashback.rejected.>").await.unwrap();
    let rejected: Arc<Mutex<BTreeSet<(u64, String)>>> = Default::default();
    let collector = {
        let rejected = rejected.clone();
        tokio::spawn(async move {
            while let Some(m) = rejected_sub.next().await {
                let v: Value = serde_json::from_slice(&m.payload).unwrap();
                rejected.lock().unwrap().insert((
                    v["seq"].as_u64().unwrap(),
                    v["reason"].as_str().unwrap().to_owned(),
                ));
            }
        })
    };
    operator.flush().await.unwrap();

    // Citizens of every node; each a card.
    let ids: Vec<String> = (0..CITIZENS).map(|i| format!("n{i}")).collect();
    for n in 0..NODES {
        assert!(
            ids.iter().any(|id| node_of(id) == n),
            "no citizen on node {n}"
        );
    }
    let card = |c: usize| hpan(7000 + c as u64);
    for (i, id) in ids.iter().enumerate() {
        let tc = at(-50, i as i64);
        let r = request(
            &app,
            "cashback.enroll.citizen",
            &json!({"citizen_id": id, "iban": IBAN, "tc_accepted_at": tc}),
        )
        .await;
        assert_eq!(r, json!({"ok": true}), "{id}");
        let r = request(
            &app,
            "cashback.enroll.card",
            &json!({"citizen_id": id, "hpan": card(i), "activated_at": at(-40, 0)}),
        )
        .await;
        assert_eq!(r, json!({"ok": true}), "{id}");
    }

    let mut rng = StdRng::seed_from_u64(13);
    let mut sent: Vec<(Value, String)> = Vec::new();
    let mut owner: Vec<usize> = (0..CITIZENS).collect(); // card -> citizen
    let mut msg = 0;
    for step in 0..900 {
        // A card moves to a citizen of another node now and then (removed
        // at -20 days, enrolled from then on), so that its later payments,
        // and reversals of them, are credits across nodes.
        if step % 150 == 75 {
            let c = rng.gen_range(0..CITIZENS);
            let from = owner[c];
            let to = (0..CITIZENS)
                .find(|t| node_of(&ids[*t]) != node_of(&ids[from]) && !owner.contains(t))
                .or_else(|| (0..CITIZENS).find(|t| node_of(&ids[*t]) != node_of(&ids[from])))
                .unwrap();
            let r = request(
                &app,
                "cashback.enroll.card_remove",
                &json!({"citizen_id": ids[from], "hpan": card(c), "deactivated_at": at(-20, 0)}),
            )
            .await;
            assert_eq!(r, json!({"ok": true}));
            let r = request(
                &app,
                "cashback.enroll.card",
                &json!({"citizen_id": ids[to], "hpan": card(c), "activated_at": at(-20, 0)}),
            )
            .await;
            assert_eq!(r, json!({"ok": true}), "{r}");
            owner[c] = to;
        }
        // A withdrawal, once.
        if step == 600 {
            let r = request(
                &app,
                "cashback.enroll.citizen_remove",
                &json!({"citizen_id": ids[5], "cancelled_at": at(0, 0)}),
            )
            .await;
            assert_eq!(r, json!({"ok": true}));
        }
        // Faults, mid-run.
        match step {
            200 => nodes.kill(1),
            300 => nodes.start(1).await,
            400 => nodes.kill(0),
            500 => {
                // Queries about node 0's citizens go on through the replica.
                let id = ids.iter().find(|id| node_of(id) == 0).unwrap();
                let r = request(&app, "cashback.query.citizen", &json!({"citizen_id": id})).await;
                assert_eq!(r["ok"], json!(true), "{r}");
            }
            550 => nodes.start(0).await,
            650 => cluster.kill(1),
            750 => cluster.restart(1).await,
            _ => {}
        }
        let c = rng.gen_range(0..CITIZENS);
        let roll: f64 = rng.gen();
        msg += 1;
        let (auth, id) = if roll < 0.08 && !sent.is_empty() {
            // A reversal of an earlier payment, total or partial.
            let (p, _) = &sent[rng.gen_range(0..sent.len())];
            let cents = if rng.gen_bool(0.5) {
                p["total_amount"].as_u64().unwrap()
            } else {
                1 + rng.gen_range(0..p["total_amount"].as_u64().unwrap())
            };
            let mut r = reversal(
                p["hpan"].as_str().unwrap(),
                &format!("r{msg}"),
                &at(-1, msg),
                cents,
                None,
            );
            r["terminal_id"] = p["terminal_id"].clone();
            (r, format!("r{msg}"))
        } else if roll < 0.11 && !sent.is_empty() {
            // A re-send under a new message id: the engine's own key check.
            let (p, _) = sent[rng.gen_range(0..sent.len())].clone();
            (p, format!("again-{msg}"))
        } else {
            // Payments are made 10 to 5 days ago: after every move.
            let mut p = payment(
                &card(c),
                &format!("p{msg}"),
                &at(-10, msg),
                100 + rng.gen_range(0..5000),
            );
            p["terminal_id"] = json!(format!("T{}", msg % 7));
            let key = format!("p{msg}");
            sent.push((p.clone(), key.clone()));
            (p, key)
        };
        publish(&network, &auth, &id).await;
    }
    // Everyone caught up: every node (and the replica) applied the log.
    let last = jetstream::new(cluster.connect("engine").await)
        .get_stream("CASHBACK")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .last_sequence;
    for (_, p) in &nodes.running {
        p.as_ref().unwrap().applied(last).await;
    }
    // Credits journaled by nodes are in the log after their payments: wait
    // for the last of them too.
    let inspector = jetstream::new(cluster.connect("engine").await);
    let mut settled = 0;
    while settled != last_seq(&inspector).await {
        settled = last_seq(&inspector).await;
        for (_, p) in &nodes.running {
            p.as_ref().unwrap().applied(settled).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let local = reference(&inspector).await;
    assert!(local.invariant_violations.is_empty());
    // Cards did move across nodes: credits were journaled (and, with the
    // kills and the replica, some received again and ignored).
    let mut credits = 0.0;
    for (node, p) in &nodes.running {
        let (_, text) = http_get(p.as_ref().unwrap().metrics_port, "/metrics")
            .await
            .unwrap();
        let series =
            |name: &str| sample(&text, &format!("{name}{{node=\"{node}\"}}")).unwrap_or(0.0);
        credits += series("cashback_credits_sent_total");
        assert_eq!(series("cashback_invariant_violations_total"), 0.0, "{text}");
    }
    assert!(
        credits > 0.0,
        "no credit crossed nodes: the test moved no card across"
    );

    // Every citizen, asked of whichever node answers.
    let national = ranking(&local, &ids);
    let position: HashMap<&str, u64> = national
        .iter()
        .enumerate()
        .map(|(i, k)| (&*k.citizen_id, i as u64 + 1))
        .collect();
    let total = national.len() as u64;
    let max = national.first().map_or(0, |k| k.count);
    let cutoff = national
        .get(1.min(national.len().saturating_sub(1)))
        .map_or(0, |k| k.count);
    let mut mismatches = Vec::new();
    for id in &ids {
        let got = request(
            &app,
            "cashback.query.citizen",
            &json!({"citizen_id": id, "award_period": "CUR"}),
        )
        .await;
        if id == &ids[5] {
            assert_eq!(got["error"]["code"], json!("citizen_withdrawn"), "{got}");
            continue;
        }
        let want = local.standing(id, "CUR").unwrap_or_default();
        let expected = json!({
            "count": want.count,
            "cashback": money_string(want.cashback),
            "ranking": position.get(id.as_str()),
            "total": total,
            "max": max,
            "min": cutoff,
        });
        let seen = json!({
            "count": got["transaction_count"],
            "cashback": got["cashback"],
            "ranking": got["ranking"],
            "total": got["total_participants"],
            "max": got["max_transaction_number"],
            "min": got["min_transaction_number"],
        });
        if seen != expected {
            mismatches.push(format!(
                "{id} (node {}): got {seen}, want {expected}",
                node_of(id)
            ));
        }
        // The statement: every payment that counted for them, from every node.
        let statement = request(
            &app,
            "cashback.query.transactions",
            &json!({"citizen_id": id, "award_period": "CUR", "limit": 1000}),
        )
        .await;
        let idx = local.router.directory().find(id).unwrap();
        let mut lines = Vec::new();
        for l in &local.ledgers {
            l.statement_lines(idx, 1, &mut lines);
        }
        let got: BTreeSet<(u64, u64)> = statement["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["total_amount"].as_u64().unwrap(),
                    e["balance"].as_u64().unwrap(),
                )
            })
            .collect();
        let want: BTreeSet<(u64, u64)> = lines.iter().map(|l| (l.amount, l.balance)).collect();
        if statement["total"] != json!(lines.len()) || got != want {
            mismatches.push(format!("{id}: statement {statement}"));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}\n{}",
        mismatches.len(),
        mismatches.join("\n"),
        nodes.logs()
    );

    // Every leaderboard page (7 a page: pages start inside count buckets).
    let mut offset = 0;
    while offset < total as usize + 7 {
        let page = request(
            &app,
            "cashback.query.leaderboard",
            &json!({"award_period": "CUR", "offset": offset, "limit": 7}),
        )
        .await;
        let got: Vec<(u64, String, u64)> = page["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["ranking"].as_u64().unwrap(),
                    e["citizen_id"].as_str().unwrap().to_owned(),
                    e["transaction_count"].as_u64().unwrap(),
                )
            })
            .collect();
        let want: Vec<(u64, String, u64)> = national
            .iter()
            .enumerate()
            .skip(offset)
            .take(7)
            .map(|(i, k)| (i as u64 + 1, k.citizen_id.to_string(), k.count as u64))
            .collect();
        assert_eq!(got, want, "page at {offset}: {page}");
        assert_eq!(page["total_participants"], json!(total));
        offset += 7;
    }

    // Every rejection was published (at least once), with its reason.
    let want: BTreeSet<(u64, String)> = local
        .rejections
        .iter()
        .map(|(seq, r)| (*seq, r.reason.as_str().to_owned()))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = rejected.lock().unwrap().clone();
        if got == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rejections differ: missing {:?}, extra {:?}",
            want.difference(&got).collect::<Vec<_>>(),
            got.difference(&want).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // And they are all kept in the rejections' stream, which the operator
    // can read back after being away.
    let kept = {
        let js = jetstream::new(operator.clone());
        let mut stream = js.get_stream("CASHBACK_REJECTED").await.unwrap();
        let stored = stream.info().await.unwrap().state.messages;
        let consumer = stream
            .create_consumer(jetstream::consumer::pull::OrderedConfig::default())
            .await
            .unwrap();
        let mut messages = consumer.messages().await.unwrap();
        let mut kept = BTreeSet::new();
        for _ in 0..stored {
            let m = messages.next().await.unwrap().unwrap();
            let v: Value = serde_json::from_slice(&m.payload).unwrap();
            kept.insert((
                v["seq"].as_u64().unwrap(),
                v["reason"].as_str().unwrap().to_owned(),
            ));
        }
        kept
    };
    assert_eq!(kept, want, "the rejections' stream");
    let reasons: BTreeMap<&str, usize> = want.iter().fold(BTreeMap::new(), |mut m, (_, r)| {
        *m.entry(r.as_str()).or_default() += 1;
        m
    });
    assert!(reasons.contains_key("duplicate"), "{reasons:?}");
    collector.abort();
}

async fn last_seq(js: &jetstream::Context) -> u64 {
    js.get_stream("CASHBACK")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .last_sequence
}

/// Two batches of credits with the same first and last credit but different
/// middles (a restart or a replica batches the same credits otherwise) are
/// both stored in the journal: JetStream's duplicate window must drop only a
/// byte-identical re-send, or the credits only the second batch holds are
/// lost for good. The receiver takes each credit once by its id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credit_batch_that_overlaps_an_earlier_one_is_journaled() {
    use cashback::credits::Outbox;
    use cashback::nats::subjects::Subjects;
    use cashback_engine::item::{Credit, CreditId};
    let dir = tempfile::tempdir().unwrap();
    let bin = cashback::nats::embedded::NatsServer::locate("").expect("nats-server");
    let nats = cashback::nats::embedded::NatsServer::start(&bin, 0, &dir.path().join("nats"))
        .expect("nats-server");
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = jetstream::new(client);
    let config = cashback::config::Config::default();
    let subjects = Subjects::new(&config.subject_prefix);
    let stream = cashback::nats::stream::ensure_stream(&js, &config, &subjects)
        .await
        .unwrap();
    let credit = |seq: u64, source: u16| Credit {
        id: CreditId {
            seq,
            index: 0,
            source,
        },
        citizen: 7,
        period: 0,
        count: 1,
        cashback: "1.00".parse().unwrap(),
        trx_date: None,
    };
    let mut outbox = Outbox::start(js.clone(), subjects.clone(), 1);
    // First life: a flight up to seq 190. After a restart, a longer flight:
    // partition 0's credits first, then partition 1's, same bounds.
    outbox.send(vec![credit(100, 0), credit(120, 1), credit(180, 1)]);
    assert!(outbox.flush(Duration::from_secs(30)).await);
    outbox.send(vec![
        credit(100, 0),
        credit(195, 0),
        credit(120, 1),
        credit(180, 1),
    ]);
    // A re-send of the same bytes (a lost acknowledgement) is dropped.
    outbox.send(vec![
        credit(100, 0),
        credit(195, 0),
        credit(120, 1),
        credit(180, 1),
    ]);
    assert!(outbox.flush(Duration::from_secs(30)).await);
    let mut stream = stream;
    let info = stream.info().await.unwrap();
    assert_eq!(
        info.state.messages, 2,
        "both batches stored, the re-send dropped"
    );
    let last = stream
        .get_last_raw_message_by_subject(&subjects.journal_credit())
        .await
        .unwrap();
    let credits: Vec<Credit> = serde_json::from_slice(&last.payload).unwrap();
    assert!(credits.iter().any(|c| c.id.seq == 195));
}
