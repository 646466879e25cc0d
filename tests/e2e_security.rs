//! Security end to end, on real nats-servers:
//! - `config/nats-server.conf` as shipped: every role is refused what is not
//!   its own (the broker's permission violation is observed) and allowed what
//!   is, while the real engine runs through it as the `engine` user, restarts,
//!   and stores and reads back its snapshot; only the operator may exclude
//!   and reinstate payments;
//! - a payment network cannot forge another acquirer's payments, neither by
//!   subject (the broker refuses) nor by body (the engine rejects);
//! - TLS: the engine serves over a TLS-only nats-server whose certificate the
//!   test signs with its own CA, and a plain connection is refused.

mod common;

use async_nats::jetstream;
use common::*;
use futures::StreamExt;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tokio::sync::mpsc;

/// The passwords the shipped configuration reads from the environment.
const PASSWORDS: [(&str, &str, &str); 5] = [
    ("engine", "CASHBACK_NATS_ENGINE_PASSWORD", "engine-pw-1"),
    ("app", "CASHBACK_NATS_APP_PASSWORD", "app-pw-2"),
    (
        "operator",
        "CASHBACK_NATS_OPERATOR_PASSWORD",
        "operator-pw-3",
    ),
    (
        "acquirer_32875",
        "CASHBACK_NATS_ACQUIRER_32875_PASSWORD",
        "acq-pw-4",
    ),
    (
        "acquirer_11111",
        "CASHBACK_NATS_ACQUIRER_11111_PASSWORD",
        "acq-pw-5",
    ),
];

fn password(user: &str) -> &'static str {
    PASSWORDS.iter().find(|(u, _, _)| *u == user).unwrap().2
}

fn shipped_conf() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/nats-server.conf")
}

/// nats-server with the shipped roles configuration, its store in `dir`.
fn start_roles_server(dir: &Path) -> ConfiguredNats {
    let store = dir.join("store").to_string_lossy().into_owned();
    let mut env: Vec<(&str, &str)> = PASSWORDS.iter().map(|(_, k, v)| (*k, *v)).collect();
    env.push(("CASHBACK_NATS_STORE_DIR", &store));
    ConfiguredNats::start(&shipped_conf(), dir.join("nats.log"), &env)
}

/// One connection of a role, with the broker's errors it received.
struct Role {
    /// Who, for messages.
    user: &'static str,
    /// The connection.
    client: async_nats::Client,
    /// Every `-ERR` the broker sent on this connection, as text.
    errors: mpsc::UnboundedReceiver<String>,
}

impl Role {
    /// Logs in as `user`, with the `_INBOX_<user>` inbox prefix the roles
    /// configuration expects.
    async fn connect(url: &str, user: &'static str) -> Role {
        let (tx, errors) = mpsc::unbounded_channel();
        let client = async_nats::ConnectOptions::new()
            .user_and_password(user.into(), password(user).into())
            .custom_inbox_prefix(format!("_INBOX_{user}"))
            .event_callback(move |event| {
                let tx = tx.clone();
                async move {
                    if let async_nats::Event::ServerError(e) = event {
                        let _ = tx.send(e.to_string());
                    }
                }
            })
            .connect(url)
            .await
            .unwrap_or_else(|e| panic!("{user} cannot log in: {e}"));
        Role {
            user,
            client,
            errors,
        }
    }

    /// Waits for the broker's permission violation for `op` ("Publish" or
    /// "Subscription") on `subject`; fails if it never comes.
    async fn expect_denied(&mut self, op: &str, subject: &str) {
        let want = format!("Permissions Violation for {op} to \"{subject}\"");
        let wait = async {
            while let Some(e) = self.errors.recv().await {
                if e.contains(&want) {
                    return;
                }
            }
        };
        if tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .is_err()
        {
            panic!("{}: no \"{want}\" from the broker", self.user);
        }
    }

    /// Publishes on a subject the role may not publish to and observes the refusal.
    async fn publish_denied(&mut self, subject: &str, body: &str) {
        self.client
            .publish(subject.to_owned(), body.to_owned().into())
            .await
            .unwrap();
        self.client.flush().await.unwrap();
        self.expect_denied("Publish", subject).await;
    }

    /// Subscribes where the role may not, observes the refusal, and checks
    /// nothing is delivered.
    async fn subscribe_denied(&mut self, subject: &str) -> async_nats::Subscriber {
        let sub = self.client.subscribe(subject.to_owned()).await.unwrap();
        self.client.flush().await.unwrap();
        self.expect_denied("Subscription", subject).await;
        sub
    }

    /// After a round trip to the broker (so every earlier operation was
    /// processed), asserts it refused nothing on this connection.
    async fn assert_no_violation(&mut self) {
        self.client.flush().await.unwrap();
        // A second round trip: an -ERR is sent before the PONG that answers
        // a later PING.
        self.client.flush().await.unwrap();
        if let Ok(e) = self.errors.try_recv() {
            panic!(
                "{}: the broker refused an allowed operation: {e}",
                self.user
            );
        }
    }
}

/// The engine's environment for logging in as `engine`.
fn engine_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("CASHBACK_NATS_USER", "engine"),
        ("CASHBACK_NATS_PASSWORD", password("engine")),
    ]
}

async fn request(role: &Role, subject: &str, body: Value) -> Value {
    let reply = tokio::time::timeout(
        Duration::from_secs(20),
        role.client
            .request(subject.to_owned(), body.to_string().into()),
    )
    .await
    .expect("request timed out")
    .unwrap_or_else(|e| panic!("{}: request on {subject} failed: {e}", role.user));
    serde_json::from_slice(&reply.payload).expect("JSON reply")
}

/// Publishes with JetStream and waits for the PubAck: the stream sequence.
async fn publish_acked(role: &Role, subject: &str, body: &Value) -> u64 {
    jetstream::new(role.client.clone())
        .publish(subject.to_owned(), body.to_string().into())
        .await
        .unwrap_or_else(|e| panic!("{}: publish on {subject}: {e}", role.user))
        .await
        .unwrap_or_else(|e| panic!("{}: no PubAck on {subject}: {e}", role.user))
        .sequence
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_gets_its_own_subjects_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let nats = start_roles_server(dir.path());
    let url = nats.url();

    // No credentials, or wrong ones: no connection at all.
    assert!(async_nats::connect(url.as_str()).await.is_err());
    assert!(async_nats::ConnectOptions::new()
        .user_and_password("app".into(), "guess".into())
        .connect(url.as_str())
        .await
        .is_err());

    let config = dir.path().join("cashback.toml");
    std::fs::write(&config, config_toml(30)).unwrap();
    let mut engine =
        EngineProcess::start(&config, &url, &engine_env(), dir.path().join("engine.log")).await;

    let mut app = Role::connect(&url, "app").await;
    let mut acquirer = Role::connect(&url, "acquirer_32875").await;
    let mut other_acquirer = Role::connect(&url, "acquirer_11111").await;
    let mut operator = Role::connect(&url, "operator").await;
    let mut engine_user = Role::connect(&url, "engine").await;

    // Allowed: the operator reads rejections, the app the live pushes.
    let mut rejections = operator
        .client
        .subscribe("cashback.rejected.>")
        .await
        .unwrap();
    let mut positions = app.client.subscribe("cashback.position.c1").await.unwrap();
    let _leaderboard = app
        .client
        .subscribe("cashback.leaderboard.CUR")
        .await
        .unwrap();
    operator.assert_no_violation().await;

    // Allowed: the operator discovers and measures the services (the NATS
    // services protocol); every service of the engine answers a PING.
    let inbox = operator.client.new_inbox();
    let mut pongs = operator.client.subscribe(inbox.clone()).await.unwrap();
    operator
        .client
        .publish_with_reply("$SRV.PING", inbox, "".into())
        .await
        .unwrap();
    let mut services = std::collections::BTreeSet::new();
    while services.len() < 3 {
        let pong = tokio::time::timeout(Duration::from_secs(20), pongs.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "only {services:?} answered $SRV.PING; engine log:\n{}",
                    engine.log_text()
                )
            })
            .unwrap();
        let pong: Value = serde_json::from_slice(&pong.payload).unwrap();
        services.insert(pong["name"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        services,
        std::collections::BTreeSet::from([
            "cashback-admin".into(),
            "cashback-enrollment".into(),
            "cashback-query".into()
        ])
    );
    let stats = request(&operator, "$SRV.STATS.cashback-query", json!({})).await;
    assert_eq!(stats["name"], json!("cashback-query"), "{stats}");
    operator.assert_no_violation().await;

    // Allowed: the app enrolls and queries (request-reply through its inbox).
    let r = request(
        &app,
        "cashback.enroll.citizen",
        json!({"citizen_id": "c1", "iban": IBAN, "tc_accepted_at": at(-2, 0)}),
    )
    .await;
    assert_eq!(r, json!({"ok": true}));
    let card = hpan(1);
    let r = request(
        &app,
        "cashback.enroll.card",
        json!({"citizen_id": "c1", "hpan": card, "activated_at": at(-1, 0)}),
    )
    .await;
    assert_eq!(r, json!({"ok": true}));

    // Allowed: the payment network publishes on its own subject and gets
    // its PubAck; the payment counts and is pushed to the app.
    let t1 = payment(&card, "t1", &at(0, -60), 2000);
    let seq = publish_acked(&acquirer, "cashback.auth.32875", &t1).await;
    engine.applied(seq).await;
    let q = request(
        &app,
        "cashback.query.citizen",
        json!({"citizen_id": "c1", "award_period": "CUR"}),
    )
    .await;
    assert_eq!(q["transaction_count"], json!(1), "{q}");
    let push = tokio::time::timeout(Duration::from_secs(20), positions.next())
        .await
        .expect("a position push")
        .unwrap();
    let push: Value = serde_json::from_slice(&push.payload).unwrap();
    assert_eq!(push["citizen_id"], json!("c1"));
    app.assert_no_violation().await;
    acquirer.assert_no_violation().await;

    // Allowed: the operator excludes the payment (the engine journals the
    // request, decides it and answers through its own inbox), then
    // reinstates it.
    let excluded = request(
        &operator,
        "cashback.admin.exclude",
        exclusion(&t1, "suspected split purchase"),
    )
    .await;
    assert_eq!(excluded, json!({"ok": true}), "{}", engine.log_text());
    let q = request(
        &app,
        "cashback.query.citizen",
        json!({"citizen_id": "c1", "award_period": "CUR"}),
    )
    .await;
    assert_eq!(q["transaction_count"], json!(0), "{q}");
    let reinstated = request(
        &operator,
        "cashback.admin.reinstate",
        exclusion(&t1, "checked: a real purchase"),
    )
    .await;
    assert_eq!(reinstated, json!({"ok": true}));
    operator.assert_no_violation().await;
    // The same in bulk: `cashback exclude` logs in as the operator from
    // CASHBACK_NATS_USER and _PASSWORD, with the operator's inbox.
    let csv = dir.path().join("exclusions.csv");
    let key: Vec<String> = [
        "hpan",
        "acquirer_code",
        "acquirer_id",
        "id_trx_acquirer",
        "operation_type",
        "trx_date",
    ]
    .iter()
    .map(|f| t1[*f].as_str().unwrap().to_owned())
    .collect();
    std::fs::write(
        &csv,
        format!(
            "{}\n{},checked in bulk\n",
            cashback::commands::exclude::HEADER,
            key.join(",")
        ),
    )
    .unwrap();
    for extra in [None, Some("--reinstate")] {
        let out = Command::new(env!("CARGO_BIN_EXE_cashback"))
            .arg("exclude")
            .arg(&csv)
            .args(extra)
            .args(["--nats-url", &url])
            .env("CASHBACK_NATS_USER", "operator")
            .env("CASHBACK_NATS_PASSWORD", password("operator"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(stderr.contains(": 1 ok, 0 skipped"), "{stderr}");
    }

    // Forgery by body: another acquirer, on its own subject, claims to be
    // 32875. The broker lets it publish; the engine rejects it.
    let mut forged = payment(&card, "t-forged", &at(0, -30), 9000);
    assert_eq!(forged["acquirer_code"], json!("32875"));
    forged["id_trx_acquirer"] = json!("t-forged");
    let forged_seq = publish_acked(&other_acquirer, "cashback.auth.11111", &forged).await;
    let rejection = tokio::time::timeout(Duration::from_secs(20), rejections.next())
        .await
        .expect("the forged payment's rejection")
        .unwrap();
    let rejection: Value = serde_json::from_slice(&rejection.payload).unwrap();
    assert_eq!(rejection["reason"], json!("invalid_field"), "{rejection}");
    assert_eq!(rejection["seq"], json!(forged_seq));
    assert_eq!(rejection["subject"], json!("cashback.auth.11111"));
    other_acquirer.assert_no_violation().await;

    // Denied: a payment network may do nothing but publish its own
    // authorizations and read its own PubAcks.
    let injected = payment(&card, "t-injected", &at(0, -20), 5000).to_string();
    acquirer
        .publish_denied("cashback.auth.11111", &injected)
        .await;
    acquirer
        .publish_denied(
            "cashback.enroll.citizen",
            &json!({"citizen_id": "x"}).to_string(),
        )
        .await;
    acquirer
        .publish_denied("cashback.query.citizen", "{}")
        .await;
    acquirer
        .publish_denied("$JS.API.STREAM.INFO.CASHBACK", "")
        .await;
    let exclude_t1 = exclusion(&t1, "forged").to_string();
    acquirer
        .publish_denied("cashback.admin.exclude", &exclude_t1)
        .await;
    let mut spy = vec![
        acquirer.subscribe_denied("cashback.position.*").await,
        acquirer.subscribe_denied("cashback.rejected.>").await,
        acquirer.subscribe_denied("_INBOX.>").await,
        acquirer.subscribe_denied("_INBOX_app.>").await,
        acquirer.subscribe_denied("cashback.auth.>").await,
    ];

    // Denied: the app back end cannot inject payments, forge the journal,
    // touch the stream, read rejections or other roles' inboxes, or pose as
    // the engine.
    app.publish_denied("cashback.auth.32875", &injected).await;
    app.publish_denied(
        "cashback.journal.enroll",
        &json!({"op": "citizen_remove", "citizen_id": "c1", "cancelled_at": at(0, 0)}).to_string(),
    )
    .await;
    app.publish_denied("$JS.API.STREAM.PURGE.CASHBACK", "")
        .await;
    app.publish_denied("cashback.rejected.duplicate", "{}")
        .await;
    app.publish_denied("cashback.admin.exclude", &exclude_t1)
        .await;
    app.publish_denied("cashback.admin.reinstate", &exclude_t1)
        .await;
    app.publish_denied("cashback.journal.admin", &exclude_t1)
        .await;
    spy.push(app.subscribe_denied("cashback.rejected.>").await);
    spy.push(app.subscribe_denied("_INBOX_engine.>").await);
    spy.push(app.subscribe_denied("_INBOX_acquirer_32875.>").await);
    spy.push(app.subscribe_denied("cashback.enroll.*").await);

    // Denied: an operator only reads rejections and sends its own requests.
    operator
        .publish_denied("cashback.auth.32875", &injected)
        .await;
    operator
        .publish_denied("cashback.query.citizen", "{}")
        .await;
    spy.push(operator.subscribe_denied("cashback.position.*").await);
    spy.push(operator.subscribe_denied("_INBOX_app.>").await);

    // Denied: even the engine's own user cannot publish authorizations or
    // read other roles' inboxes, nor administer other streams.
    engine_user
        .publish_denied("cashback.auth.32875", &injected)
        .await;
    engine_user
        .publish_denied("$JS.API.STREAM.DELETE.OTHER", "")
        .await;
    engine_user
        .publish_denied("cashback.admin.exclude", &exclude_t1)
        .await;
    engine_user
        .publish_denied("_INBOX_operator.forged", "{}")
        .await;
    spy.push(engine_user.subscribe_denied("cashback.auth.>").await);
    spy.push(engine_user.subscribe_denied("_INBOX_app.>").await);

    // None of the refused attempts changed anything (the payment the others
    // tried to exclude still counts), and the refused subscriptions received
    // nothing, while traffic went on: one more allowed payment and its query
    // reply passed through those subjects.
    let seq = publish_acked(
        &acquirer,
        "cashback.auth.32875",
        &payment(&card, "t2", &at(0, -10), 1000),
    )
    .await;
    engine.applied(seq).await;
    let q = request(
        &app,
        "cashback.query.citizen",
        json!({"citizen_id": "c1", "award_period": "CUR"}),
    )
    .await;
    assert_eq!(q["transaction_count"], json!(2), "{q}");
    assert_eq!(q["cashback"], json!("3.00"), "{q}");
    for sub in &mut spy {
        let leaked = tokio::time::timeout(Duration::from_millis(200), sub.next()).await;
        assert!(
            !matches!(leaked, Ok(Some(_))),
            "a refused subscription received a message"
        );
    }

    // The engine needs nothing it was not granted: a clean stop stores a
    // snapshot in the object store, a restart reads it back and answers
    // the same.
    assert_eq!(engine.stop(), Some(0), "{}", engine.log_text());
    let mut engine =
        EngineProcess::start(&config, &url, &engine_env(), dir.path().join("engine.log")).await;
    let log = engine.log_text();
    assert!(log.contains("snapshot stored"), "{log}");
    assert!(log.contains("restored snapshot"), "{log}");
    let q = request(
        &app,
        "cashback.query.citizen",
        json!({"citizen_id": "c1", "award_period": "CUR"}),
    )
    .await;
    assert_eq!(q["transaction_count"], json!(2), "{q}");
    assert_eq!(engine.stop(), Some(0));
    let log = engine.log_text();
    assert!(
        !log.contains("Permissions Violation"),
        "the engine was refused something it needs:\n{log}"
    );
}

/// Runs `openssl` with `args` in `dir`, failing the test if it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command line tool is needed to make test certificates");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A throw-away CA and a certificate for 127.0.0.1 and localhost signed by it.
fn make_certificates(dir: &Path) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    let mut ca = vec!["req", "-x509", "-nodes", "-days", "2"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca-key.pem",
        "-out",
        "ca.pem",
        "-subj",
        "/CN=cashback test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(dir, &ca);
    let mut csr = vec!["req", "-nodes"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "server-key.pem",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    openssl(dir, &csr);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            "server.pem",
            "-extfile",
            "server.ext",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_serves_over_tls_and_plain_connections_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_certificates(d);
    let conf = d.join("nats-tls.conf");
    std::fs::write(
        &conf,
        format!(
            "jetstream {{ store_dir: \"{store}\" }}\n\
             tls {{ cert_file: \"{cert}\", key_file: \"{key}\", timeout: 2 }}\n",
            store = d.join("store").display(),
            cert = d.join("server.pem").display(),
            key = d.join("server-key.pem").display(),
        ),
    )
    .unwrap();
    let nats = ConfiguredNats::start(&conf, d.join("nats.log"), &[]);
    let url = nats.url();
    let ca = d.join("ca.pem").to_string_lossy().into_owned();

    // The engine, trusting only the test CA and refusing plain text.
    let config = d.join("cashback.toml");
    std::fs::write(
        &config,
        format!(
            "nats_tls_ca = \"{ca}\"\nnats_tls_required = true\n{}",
            config_toml(30)
        ),
    )
    .unwrap();
    let mut engine = EngineProcess::start(&config, &url, &[], d.join("engine.log")).await;

    // A client over TLS, through the binary's own connect path.
    let tls = cashback::config::NatsClientOptions {
        tls_ca: ca.clone(),
        tls_required: true,
        ..Default::default()
    };
    let client = tls
        .connect(&url, async_nats::ConnectOptions::new())
        .await
        .expect("TLS connection with the test CA");
    let reply = client
        .request(
            "cashback.enroll.citizen",
            json!({"citizen_id": "t1", "iban": IBAN, "tc_accepted_at": at(-1, 0)})
                .to_string()
                .into(),
        )
        .await
        .unwrap();
    let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(reply, json!({"ok": true}));
    let reply = client
        .request(
            "cashback.query.citizen",
            json!({"citizen_id": "t1", "award_period": "CUR"})
                .to_string()
                .into(),
        )
        .await
        .unwrap();
    let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(reply["ok"], json!(true), "{reply}");
    assert_eq!(reply["transaction_count"], json!(0), "{reply}");

    // A plain-text client is refused: the server demands TLS in its INFO
    // and answers a plain CONNECT with an error, never a PONG.
    {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", nats.port))
            .await
            .unwrap();
        let mut stream = BufReader::new(stream);
        let mut info = String::new();
        stream.read_line(&mut info).await.unwrap();
        assert!(info.contains("\"tls_required\":true"), "{info}");
        let _ = stream
            .get_mut()
            .write_all(b"CONNECT {\"verbose\":false}\r\nPING\r\n")
            .await;
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
        let rest = String::from_utf8_lossy(&rest);
        assert!(!rest.contains("PONG"), "a plain client was served: {rest}");
    }
    // A client that does not trust the test CA is refused too.
    assert!(async_nats::ConnectOptions::new()
        .require_tls(true)
        .connect(url.as_str())
        .await
        .is_err());

    // And with TLS required, the engine's connect path will not fall back
    // to plain text against a server without TLS.
    let plain_dir = tempfile::tempdir().unwrap();
    let bin = cashback::nats::embedded::NatsServer::locate("").unwrap();
    let plain = cashback::nats::embedded::NatsServer::start(&bin, 0, plain_dir.path()).unwrap();
    assert!(tls
        .connect(plain.url(), async_nats::ConnectOptions::new())
        .await
        .is_err());

    assert_eq!(engine.stop(), Some(0), "{}", engine.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unmatched_reversals_stays_within_the_caps() {
    // The engine-wide bound is enforced as an equal share per partition
    // (30 each of 256 here), so both citizens live in one partition.
    let config = format!(
        "max_parked_per_card = 20\nmax_parked_total = {}\n{}",
        30 * 256,
        config_toml(30)
    );
    let home = cashback_engine::partition::partition_of("c1", 256);
    let c2 = (2..)
        .map(|i| format!("c{i}"))
        .find(|id| cashback_engine::partition::partition_of(id, 256) == home)
        .unwrap();
    let h = Harness::start(&config).await;
    h.citizen("c1", &at(-2, 0)).await;
    h.citizen(&c2, &at(-2, 0)).await;
    h.card("c1", &hpan(1), &at(-1, 0)).await;
    h.card(&c2, &hpan(2), &at(-1, 0)).await;
    let mut refused = h
        .client
        .subscribe("cashback.rejected.unmatched_reversal")
        .await
        .unwrap();
    h.client.flush().await.unwrap();
    // 200 reversals that match nothing on c1's card, then 200 on c2's: 20
    // wait on the first card (its cap), 10 on the second (the partition's
    // share of the engine's), and every other one is refused at once.
    for card in [1, 2] {
        for i in 0..200u64 {
            let r = reversal(
                &hpan(card),
                &format!("r{card}-{i}"),
                &at(0, -60),
                100 + i,
                None,
            );
            h.publish(&r).await;
        }
    }
    h.caught_up().await;
    let rejected = drain(&mut refused, Duration::from_millis(500)).await;
    assert_eq!(rejected.len(), 370, "{:?}", rejected.first());
    let (_, metrics) = h.http_get("/metrics").await.unwrap();
    let parked = metrics
        .lines()
        .find(|l| l.starts_with("cashback_reversals_parked_total "))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok());
    assert_eq!(parked, Some(30.0), "{metrics}");
}
