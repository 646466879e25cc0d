//! Restart (issue 4, "Benchmarks"): from process spawn to serving queries
//! with `--citizens` citizens (default 8,400,000) and `--payments` counted
//! payments (default 50,000,000) in the snapshot, goal at most 15 s; and the
//! snapshot's encode time, size and upload time at the same scale.
//!
//! Not in `all`: at the default scale it needs about 20 GB of memory and
//! several minutes (most of them building the state), which the suite's
//! other benchmarks do not; run it alone.
//!
//! How:
//! 1. The state is built in this process through the engine's own decisions
//!    ([`LocalEngine`]: the router's directory and de-duplication, every
//!    partition's ledger): the citizens' and cards' enrollments, then the
//!    payments, already decoded (the JSON decoder is not what is measured
//!    here and would double the build time). Payments per citizen follow
//!    the 2021H1 shape scaled to the total; 1 to 3 cards per citizen.
//! 2. It is encoded as the real [`Snapshot`], under the fingerprint that
//!    `cashback serve` computes from the same configuration file: ledgers
//!    on one thread per shard and the router beside them, as the engine
//!    does, then cut into the segments the upload sends (as the engine's
//!    snapshotter does). The state is dropped.
//! 3. References in the same run: the decode of every part on one thread
//!    from memory (no download), and after the upload a plain download of
//!    the object into memory (no decode).
//! 4. The stream is made to look like a production stream purged up to the
//!    snapshot (first sequence just after it), the snapshot stored with the
//!    engine's [`SnapshotStore`], and the release engine spawned. The figure
//!    is the wall time from spawn to the first `cashback.query.citizen`
//!    reply, which must carry the count, cashback, position and number of
//!    participants that the built state says; any other answer fails the
//!    benchmark.

use crate::common::{release_freed_memory, verdict, Harness, Options, Report, BENCH_COMMAND};
use anyhow::{bail, Context, Result};
use cashback::config::Config;
use cashback::sim::{citizen_id, hpan};
use cashback::snapshots::SnapshotStore;
use cashback_engine::authorization::{Authorization, Hpan, Operation};
use cashback_engine::enrollment::{make_iban, EnrollCommand};
use cashback_engine::item::Origin;
use cashback_engine::local::LocalEngine;
use cashback_engine::period::Periods;
use cashback_engine::rank::bench::{self as shape, Rng};
use cashback_engine::rank::RankKey;
use cashback_engine::router::Position;
use cashback_engine::settings::Settings;
use cashback_engine::snapshot::{self, Header, Snapshot, FORMAT};
use cashback_engine::time::Timestamp;
use rust_decimal::Decimal;
use std::cmp::Ordering;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

/// The award period the state is built in.
const PERIOD: &str = "2021H1";
/// When the citizens accepted the T&C and activated their cards.
const ENROLLED_AT: &str = "2020-12-15T00:00:00Z";
/// The span of the period the payments' dates are spread over (the period
/// is 2021-01-01 to 2021-06-30).
const SPAN_SECS: i64 = 170 * 86_400;
/// The goal of issue 4.
const GOAL: Duration = Duration::from_secs(15);
/// How long the engine may take before the benchmark gives up on it.
const READY_TIMEOUT: Duration = Duration::from_secs(900);
/// Acquirer codes: a few large acquirers take most payments.
const ACQUIRERS: [&str; 12] = [
    "32875", "03069", "02008", "05034", "03104", "36081", "01030", "03062", "05696", "08000",
    "33500", "36772",
];

/// Options of `restart`.
#[derive(clap::Parser, Clone, Debug)]
pub struct Args {
    /// Citizens in the snapshot.
    #[arg(long, default_value_t = 8_400_000)]
    pub citizens: usize,
    /// Counted payments in the snapshot (heavy-tailed over the citizens).
    #[arg(long, default_value_t = 50_000_000)]
    pub payments: usize,
}

impl Options for Args {
    fn scale(&mut self, factor: f64) {
        crate::common::scale_counts(factor, [&mut self.citizens, &mut self.payments]);
    }

    fn command(&self) -> String {
        format!(
            "{BENCH_COMMAND} restart --citizens {} --payments {}",
            self.citizens, self.payments
        )
    }
}

/// What the restarted engine must answer for one citizen, taken from the
/// state that was snapshotted.
#[derive(Debug)]
struct Expected {
    /// Who is asked about.
    citizen_id: String,
    /// `transaction_count`.
    count: u64,
    /// `cashback` (exact).
    cashback: Decimal,
    /// `ranking`: 1 + the ranked citizens whose key is better.
    ranking: u64,
    /// `total_participants`: citizens with at least one counted payment.
    participants: u64,
}

/// The built state's shape, for the report.
struct Built {
    /// The engine with everything applied.
    engine: LocalEngine,
    /// The last sequence applied (enrollments, then payments).
    seq: u64,
    /// Cards enrolled.
    cards: usize,
    /// Payments that counted.
    counted: u64,
    /// The de-duplication keys the router remembers.
    keys: usize,
    /// Time to build it.
    secs: f64,
}

/// Cards of citizen `c`: 1 for 60%, 2 for 25%, 3 for 15% (1.55 on average).
fn cards_of(c: usize) -> usize {
    let h = shape::mix(c as u64 ^ 0xCA4D) % 100;
    1 + (h < 40) as usize + (h < 15) as usize
}

/// Writes the engine's configuration: the 2021H1 period with the
/// programme's rules and no snapshots of its own (a final snapshot of
/// several GB at shutdown would only slow the benchmark down).
fn write_config(dir: &Path) -> Result<PathBuf> {
    let path = dir.join("restart.toml");
    std::fs::write(
        &path,
        format!(
            r#"
snapshot_interval_secs = 0

[[periods]]
id = "{PERIOD}"
start = "2021-01-01"
end = "2021-06-30"
grace_days = 10
min_transactions = 50
cashback_rate = "0.10"
max_cashback_per_transaction = "15.00"
max_cashback = "150.00"
supercashback_winners = 100000
supercashback_prize = "1500.00"
"#
        ),
    )?;
    Ok(path)
}

/// Builds the state: enrollments, then `payments` payments in time order.
fn build(args: &Args, config: &Config, periods: Arc<Periods>) -> Result<Built> {
    let started = Instant::now();
    let mut e = LocalEngine::with_limits(
        config.partitions,
        periods,
        config.reversal_park_days,
        config.parking_limits(),
    );
    let mut rng = Rng::new(2021);
    let n = args.citizens;
    // Payments per citizen: the 2021H1 shape scaled to the total, rounded
    // stochastically (as engine/examples/state_bench.rs).
    let shape: Vec<f32> = (0..n).map(|_| shape::count(&mut rng) as f32).collect();
    let scale = args.payments as f64 / shape.iter().map(|x| *x as f64).sum::<f64>();
    let counts: Vec<u32> = shape
        .iter()
        .map(|x| (*x as f64 * scale + rng.unit()).floor() as u32)
        .collect();
    drop(shape);

    let enrolled = Timestamp::parse_rfc3339(ENROLLED_AT).expect("a date");
    let mut seq = 0u64;
    let mut cards = 0;
    for c in 0..n {
        seq += 1;
        let at = Position {
            seq,
            broker_time: enrolled,
        };
        let cmd = EnrollCommand::Citizen {
            citizen_id: citizen_id(c),
            iban: make_iban("IT", &format!("X0542811101{c:012}")),
            tc_accepted_at: ENROLLED_AT.into(),
        };
        e.enroll(at, &cmd)
            .map_err(|err| anyhow::anyhow!("citizen {c}: {err:?}"))?;
        for card in 0..cards_of(c) {
            seq += 1;
            let cmd = EnrollCommand::Card {
                citizen_id: citizen_id(c),
                hpan: hpan(c, card),
                activated_at: ENROLLED_AT.into(),
            };
            let at = Position {
                seq,
                broker_time: enrolled,
            };
            e.enroll(at, &cmd)
                .map_err(|err| anyhow::anyhow!("card of {c}: {err:?}"))?;
            cards += 1;
        }
    }
    eprintln!(
        "restart: {n} citizens and {cards} cards enrolled in {:.0} s",
        started.elapsed().as_secs_f64()
    );

    // Who pays when: every citizen's payments spread at random over the
    // period, so that the log interleaves citizens as the real one does.
    let mut slots: Vec<u32> = Vec::with_capacity(counts.iter().map(|c| *c as usize).sum());
    for (c, &k) in counts.iter().enumerate() {
        slots.extend(std::iter::repeat_n(c as u32, k as usize));
    }
    drop(counts);
    for i in (1..slots.len()).rev() {
        slots.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let first = Timestamp::parse_rfc3339("2021-01-01T06:00:00Z").expect("a date");
    let total = slots.len() as i128;
    let acquirers: Vec<Box<str>> = ACQUIRERS.iter().map(|a| (*a).into()).collect();
    let no_origin = || Origin {
        subject: "".into(),
        payload: bytes::Bytes::new(),
    };
    for (j, &c) in slots.iter().enumerate() {
        seq += 1;
        let c = c as usize;
        let offset = SPAN_SECS as i128 * 1_000_000_000 * j as i128 / total;
        let trx_date = Timestamp::from_unix_nanos(first.unix_nanos() + offset);
        let card = rng.below(cards_of(c) as u64) as usize;
        let auth = Authorization {
            operation: Operation::Payment,
            operation_type: [0, 2, 3][rng.below(3) as usize],
            circuit_type: rng.below(11) as u8,
            hpan: Hpan::parse(&hpan(c, card)).expect("the simulator's hpans parse"),
            trx_date,
            // Cents, log-normal around 35 EUR: an integer drawn once, the
            // money itself is computed by the engine in Decimal.
            total_amount: (3500.0 * (0.9 * rng.normal()).exp()).clamp(1.0, 500_000.0) as u64,
            key: rng.next_u64(),
            merchant_key: rng.below(10_000),
            terminal_key: rng.next_u64(),
            correlation_key: (rng.below(10) < 7).then(|| rng.next_u64()),
            acquirer_code: acquirers[(rng.below(64) as usize).min(rng.below(12) as usize)].clone(),
        };
        let at = Position {
            seq,
            broker_time: trx_date.plus_secs(60),
        };
        e.decoded(at, &auth, no_origin);
        if j % 10_000_000 == 9_999_999 {
            eprintln!(
                "restart: {} payments applied ({:.0} s)",
                j + 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
    if let Some((s, r)) = e.rejections.first() {
        bail!(
            "{} payments were rejected (first: seq {s}, {r:?}): the state is not the one intended",
            e.rejections.len()
        );
    }
    // De-duplication keys live in the payment records (one per payment).
    let keys = e.ledgers.iter().map(|l| l.payment_count().0).sum();
    Ok(Built {
        counted: slots.len() as u64,
        engine: e,
        seq,
        cards,
        keys,
        secs: started.elapsed().as_secs_f64(),
    })
}

/// What the engine must answer about a citizen of median activity, from
/// the built state: count and cashback from its ledger, the position by
/// comparing its ranking key with every other citizen's (RULES.md order).
fn expected(e: &LocalEngine, citizens: usize) -> Result<Expected> {
    let period = e.ledgers[0].periods().by_id(PERIOD).context("the period")?;
    let mut standings = Vec::new();
    let mut all: Vec<RankKey> = Vec::with_capacity(citizens);
    for l in &e.ledgers {
        standings.clear();
        l.all_standings(&mut standings);
        all.extend(
            standings
                .iter()
                .filter(|s| s.period == period && !s.withdrawn && s.standing.count > 0)
                .map(|s| RankKey {
                    count: s.standing.count,
                    last_trx: s.standing.last_trx.unwrap_or_default(),
                    tc_accepted_at: s.tc_accepted_at,
                    citizen_id: s.id.clone(),
                }),
        );
    }
    let mut counts: Vec<u32> = all.iter().map(|k| k.count).collect();
    counts.sort_unstable();
    let median = counts[counts.len() / 2];
    let probe = all
        .iter()
        .find(|k| k.count == median)
        .context("a citizen of median count")?
        .clone();
    let better = all
        .iter()
        .filter(|k| k.rank_cmp(&probe) == Ordering::Less)
        .count();
    let standing = e
        .standing(&probe.citizen_id, PERIOD)
        .context("the probe's standing")?;
    Ok(Expected {
        citizen_id: probe.citizen_id.to_string(),
        count: standing.count as u64,
        cashback: standing.cashback,
        ranking: better as u64 + 1,
        participants: all.len() as u64,
    })
}

/// The encoded router, the encoded ledgers by partition, and the seconds
/// the encoding took.
type Encoded = (Vec<u8>, Vec<(u16, Vec<u8>)>, f64);

/// Encodes the state as the pipeline does (ledgers on one thread per
/// shard, the router beside them).
fn encode_parts(e: &LocalEngine, shards: usize) -> Encoded {
    let started = Instant::now();
    let (router, mut ledgers) = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..shards)
            .map(|s| {
                scope.spawn(move || {
                    e.ledgers
                        .iter()
                        .filter(|l| l.partition() as usize % shards == s)
                        .map(|l| (l.partition(), snapshot::encode_ledger(l)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let router = snapshot::encode_router(&e.router);
        let ledgers: Vec<_> = workers
            .into_iter()
            .flat_map(|w| w.join().expect("an encoder panicked"))
            .collect();
        (router, ledgers)
    });
    ledgers.sort_unstable_by_key(|(p, _)| *p);
    (router, ledgers, started.elapsed().as_secs_f64())
}

/// The reference decode: every part of the snapshot, on one thread, from
/// memory; seconds in all and of which the router (the one part that
/// cannot be spread over threads).
fn decode_one_thread(snapshot: &Snapshot, settings: &Settings) -> Result<(f64, f64)> {
    let started = Instant::now();
    let router =
        snapshot::decode_router(&snapshot.router, settings).map_err(|e| anyhow::anyhow!(e))?;
    let router_secs = started.elapsed().as_secs_f64();
    let ledgers = snapshot
        .ledgers
        .iter()
        .map(|(_, b)| snapshot::decode_ledger(b, settings))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!(e))?;
    let secs = started.elapsed().as_secs_f64();
    drop((router, ledgers));
    Ok((secs, router_secs))
}

/// Asks the engine about the probe until it answers; the time from `spawned`.
async fn first_answer(
    h: &Harness,
    engine: &crate::common::Engine,
    want: &Expected,
    spawned: Instant,
) -> Result<Duration> {
    let body =
        serde_json::json!({"citizen_id": want.citizen_id, "award_period": PERIOD}).to_string();
    let subject = h.subjects.query("citizen");
    loop {
        if let Some(status) = engine.exited()? {
            bail!("the engine exited with {status} before answering");
        }
        if spawned.elapsed() > READY_TIMEOUT {
            bail!("no answer within {} s", READY_TIMEOUT.as_secs());
        }
        let reply = match h.client.request(subject.clone(), body.clone().into()).await {
            Ok(m) => m,
            Err(_) => {
                // No responder yet: the engine is still restoring.
                tokio::time::sleep(Duration::from_millis(2)).await;
                continue;
            }
        };
        let took = spawned.elapsed();
        let v: serde_json::Value = serde_json::from_slice(&reply.payload)?;
        let got = (
            v["ok"].as_bool(),
            v["transaction_count"].as_u64(),
            v["cashback"]
                .as_str()
                .and_then(|s| s.parse::<Decimal>().ok()),
            v["ranking"].as_u64(),
            v["total_participants"].as_u64(),
        );
        let wanted = (
            Some(true),
            Some(want.count),
            Some(want.cashback),
            Some(want.ranking),
            Some(want.participants),
        );
        if got != wanted {
            bail!("the restarted engine answered {v} where the snapshotted state says {want:?}");
        }
        return Ok(took);
    }
}

/// A metric of the engine's `/metrics`, if it is there.
fn gauge(metrics: &Option<String>, name: &str) -> Option<f64> {
    metrics
        .as_deref()
        .and_then(|m| crate::common::metric_value(m, name))
}

/// Runs the benchmark.
pub async fn run(args: &Args) -> Result<Report> {
    let scratch = tempfile::tempdir()?;
    let config_path = write_config(scratch.path())?;
    let config = Config::load(Some(&config_path))?;
    let settings = config.settings()?;
    let periods = settings.periods.clone();
    let fingerprint = settings.fingerprint();

    eprintln!(
        "restart: building {} citizens, {} payments...",
        args.citizens, args.payments
    );
    let built = build(args, &config, periods.clone())?;
    eprintln!("restart: built in {:.0} s", built.secs);
    let want = expected(&built.engine, args.citizens)?;
    eprintln!("restart: probe {want:?}");
    let (router, ledgers, encode_secs) = encode_parts(&built.engine, config.shards);
    let router_bytes = router.len();
    let seq = built.seq;
    let (cards, counted, keys, build_secs) = (built.cards, built.counted, built.keys, built.secs);
    drop(built);
    release_freed_memory();
    let snapshot = Snapshot {
        header: Header {
            format: FORMAT,
            seq,
            fingerprint,
            taken_at: Timestamp::now(),
            node: 0,
            nodes: 1,
        },
        router,
        ledgers,
    };
    let (decode_secs, router_decode_secs) = decode_one_thread(&snapshot, &settings)?;
    release_freed_memory();
    let started = Instant::now();
    let segments = snapshot.into_segments();
    let assemble_secs = started.elapsed().as_secs_f64();
    let size: usize = segments.iter().map(bytes::Bytes::len).sum();
    eprintln!(
        "restart: snapshot {:.2} GiB encoded in {encode_secs:.1} s",
        gib(size)
    );
    eprintln!("restart: one-thread decode {decode_secs:.1} s (router {router_decode_secs:.1} s)");

    let mut h = Harness::start().await?;
    h.config = config_path.clone();
    // A production stream purged up to the snapshot: empty, first sequence
    // just after it (what `purge_after_snapshot` leaves).
    let stream = cashback::nats::stream::ensure_stream(&h.js, &config, &h.subjects).await?;
    stream.purge().sequence(seq + 1).await?;
    let state =
        h.js.get_stream(&config.stream_name)
            .await?
            .info()
            .await?
            .state
            .clone();
    if state.first_sequence != seq + 1 || state.messages != 0 {
        bail!(
            "the purged stream starts at {} with {} messages, not at {} and empty",
            state.first_sequence,
            state.messages,
            seq + 1
        );
    }
    let store = SnapshotStore::open(&h.js, &config).await?;
    let started = Instant::now();
    store.put(seq, segments).await?;
    let upload_secs = started.elapsed().as_secs_f64();
    eprintln!("restart: uploaded in {upload_secs:.1} s");

    let started = Instant::now();
    let mut downloaded = Vec::new();
    store.get(seq).await?.read_to_end(&mut downloaded).await?;
    let download_secs = started.elapsed().as_secs_f64();
    if downloaded.len() != size {
        bail!("downloaded {} bytes of {size}", downloaded.len());
    }
    drop(downloaded);
    eprintln!("restart: raw download {download_secs:.1} s; starting the engine");

    let spawned = Instant::now();
    let engine = h.engine()?;
    let ready = first_answer(&h, &engine, &want, spawned).await?;
    let (rss, peak) = engine.memory()?;
    let metrics = engine.metrics().await;
    let phase = |p: &str| {
        gauge(
            &metrics,
            &format!("cashback_restore_seconds{{phase=\"{p}\"}}"),
        )
        .map_or("not reported".into(), |s| format!("{s:.1} s"))
    };
    let (download, decode, ranking) = (phase("download"), phase("decode"), phase("ranking"));
    engine.stop()?;
    let nats_rss = std::fs::read_to_string(format!("/proc/{}/status", h.server.pid()))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or("unknown".into(), |kb| {
            format!("{:.1} GiB", gib(kb as usize * 1024))
        });

    let ready_secs = ready.as_secs_f64();
    Ok(Report {
        title: "Restart to serving queries".into(),
        command: args.command(),
        setup: format!(
            "State built through the engine's router and ledgers (`LocalEngine`): {} citizens, {cards} cards, \
             {counted} counted payments (2021H1 shape scaled to the total; payments only, no reversals), \
             {keys} de-duplication keys, in {} partitions, built in {build_secs:.0} s. Encoded as the real `Snapshot` \
             under `cashback serve`'s fingerprint ({} shard threads for the ledgers, the router beside them, as the pipeline does), \
             stored with `SnapshotStore` in the embedded nats-server (file storage, same machine), the stream purged \
             to start at sequence {}. The restart figure is the wall time from spawning the release `cashback serve` to \
             the first `cashback.query.citizen` reply, which must match the built state for citizen `{}` \
             (count {}, cashback {}, ranking {} of {}; a mismatch fails the benchmark). The references are measured in the same \
             run on the same bytes; nats-server shares the 2 cores with the engine while serving the download.",
            args.citizens,
            config.partitions,
            config.shards,
            seq + 1,
            want.citizen_id,
            want.count,
            want.cashback,
            want.ranking,
            want.participants,
        ),
        table: format!(
            "| figure | value | reference (same run) | goal |\n\
             |---|---|---|---|\n\
             | restart: spawn to first correct query reply | {ready_secs:.1} s | raw object download into memory {download_secs:.1} s; \
             one-thread decode of the same parts {decode_secs:.1} s (of which the router {router_decode_secs:.1} s) | <= {} s: {} |\n\
             | engine's restore: download done / decode done (overlapped) / ranking rebuild | {download} / {decode} / {ranking} | | |\n\
             | engine RSS after restore (peak) | {:.1} GiB ({:.1} GiB) | nats-server peak {nats_rss} | |\n\
             | snapshot size | {:.2} GiB (router {:.2} GiB) | | |\n\
             | snapshot encode: parts / segments for the upload | {encode_secs:.1} s / {assemble_secs:.3} s | | |\n\
             | snapshot upload (`SnapshotStore::put`) | {upload_secs:.1} s | | |",
            GOAL.as_secs(),
            verdict(ready <= GOAL),
            gib(rss as usize),
            gib(peak as usize),
            gib(size),
            gib(router_bytes),
        ),
    })
}

/// Bytes as GiB.
fn gib(bytes: usize) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}
