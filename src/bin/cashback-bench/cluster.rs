//! Cluster nodes (issue 13, "Benchmarks"): what one node of an N-node
//! cluster costs next to a single process over the same log, a citizen
//! query through a node that does not own the citizen next to one answered
//! by the owner, and, from those measurements, the real programme (8.4M
//! citizens, 726M payments, about 2 cards each) on nodes of 24 GiB. Goal:
//! at most 6 nodes, each under 18 GiB.
//!
//! One run, one stream, in this order:
//! 1. The routing directory, the part of the state every node holds in
//!    full, is built in this process through `Directory::apply` from the
//!    same enrollments, at the run's scale and at the programme's (8.4M
//!    citizens with 2 cards each, the same share of moved cards). Its cost
//!    is this process's resident growth while the citizens, then the cards,
//!    are applied: what the system must provide, as for the engines' RSS
//!    below. `Directory::heap_bytes()` is reported beside it.
//! 2. An engine on the empty stream: the fixed cost of a process.
//! 3. The stream: `--citizens` simulator citizens (1-4 cards each) enrolled
//!    through the journal; every tenth citizen's first card then moved to
//!    the next citizen, so that a payment on it is decided on the node of
//!    the card's anchor and credited on the new owner's (another node for
//!    about 2 of 3 such cards at N = 3); then `--payments` simulator
//!    authorizations.
//! 4. The raw reference: an ordered consumer decoding every message of the
//!    same stream (`catchup`'s).
//! 5. N = 1: one engine from the stream's start. Its RSS is read when it
//!    has applied the end of the enrollments, half the authorizations, and
//!    all of them, and once more after it settled.
//! 6. N = 3: nodes 0, 1 and 2 started together over the same stream; the
//!    same readings for each, the last once the credits they journal for
//!    each other are applied too.
//! 7. Citizen queries through the cluster, each classified by the node that
//!    received it (see [`route_queries`]).
//! 8. The projection (see [`Model`]).
//!
//! Not in `all`: at its defaults it takes 15-20 minutes on 2 cores, more
//! than the suite's budget has room for; run it alone.

use crate::catchup::raw_consume;
use crate::common::{
    card_enrollment, citizen_enrollment, enrolled_since, metric_sum, process_memory,
    release_freed_memory, scale_counts, verdict, Engine, Harness, Latencies, Options, Report,
    BENCH_COMMAND,
};
use anyhow::{anyhow, Context, Result};
use cashback::config::Config;
use cashback::sim::{cards_of, citizen_id, hpan};
use cashback_engine::directory::Directory;
use cashback_engine::enrollment::EnrollCommand;
use cashback_engine::ledger::record::PaymentRecord;
use cashback_engine::partition::partition_of;
use cashback_engine::time::Timestamp;
use futures::future::join_all;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::{Duration, Instant};

/// The real programme's enrolled citizens (MEASURED.md).
const PROGRAMME_CITIZENS: usize = 8_400_000;
/// Cards per citizen in the projection (issue 13: about 2).
const PROGRAMME_CARDS_PER_CITIZEN: usize = 2;
/// Valid payments of the real programme's first semester (MEASURED.md).
const PROGRAMME_PAYMENTS: f64 = 726e6;
/// A node's machine.
const NODE_MEMORY: f64 = 24.0 * GIB;
/// Issue 13's goal: each node under this...
const GOAL_NODE_BYTES: f64 = 18.0 * GIB;
/// ...with at most this many nodes.
const GOAL_NODES: u16 = 6;
/// Node counts the projection is shown for.
const PROJECTED_NODES: std::ops::RangeInclusive<u16> = 1..=8;
/// The cluster measured.
const NODES: u16 = 3;
/// The authorizations are published, and the engines read, in this many
/// steps: the payments' memory is split into per payment and per card paid
/// over the steps (see [`split_costs`]).
const STEPS: usize = 10;
/// Every this-many-th citizen's first card moves to the next citizen.
const MOVE_EVERY: usize = 10;
/// When the moved cards moved: after their activation 80 days ago, before
/// any payment the simulator dates (the last two days), so that every
/// payment on a moved card counts for its new owner.
const MOVED_DAYS_AGO: i64 = 60;
/// Time given to an engine after catching up before its memory is read,
/// so that batches in flight and their buffers are gone.
const SETTLE: Duration = Duration::from_secs(2);
/// How long the nodes may take to catch up: three processes share the
/// machine's cores, each decoding the whole log.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(1800);
/// Queries sent (and not classified) before the measured ones.
const WARM_UP: usize = 200;
/// Bytes in a GiB.
const GIB: f64 = (1u64 << 30) as f64;
/// Bytes in a MiB.
const MIB: f64 = (1u64 << 20) as f64;

/// Options of `cluster`.
#[derive(clap::Parser, Clone, Debug)]
pub struct Args {
    /// Citizens enrolled (the simulator's, 1-4 cards each).
    #[arg(long, default_value_t = 1_000_000)]
    pub citizens: usize,
    /// Simulator authorizations published after the enrollments (payments,
    /// ~2% reversals, duplicates, late batches, malformed messages).
    #[arg(long, default_value_t = 10_000_000)]
    pub payments: usize,
    /// Citizen queries sent one at a time to the cluster and classified by
    /// the node that received them.
    #[arg(long, default_value_t = 3000)]
    pub queries: usize,
    /// Multiplies the sizes above and the programme-scale directory by this
    /// (e.g. 0.01 to check that the benchmark runs; such a run's figures
    /// are not the benchmark's and its report says so).
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
}

impl Options for Args {
    fn scale(&mut self, factor: f64) {
        self.scale *= factor;
    }

    fn command(&self) -> String {
        let scale = if self.scale == 1.0 {
            String::new()
        } else {
            format!(" --scale {}", self.scale)
        };
        format!(
            "{BENCH_COMMAND} cluster --citizens {} --payments {} --queries {}{scale}",
            self.citizens, self.payments, self.queries
        )
    }
}

/// The sizes of this run, `--scale` applied.
struct Sizes {
    /// Citizens in the stream.
    citizens: usize,
    /// Authorizations in the stream.
    payments: usize,
    /// Classified queries.
    queries: usize,
    /// Citizens of the directory built at the programme's scale.
    programme_citizens: usize,
}

impl Sizes {
    fn of(args: &Args) -> Sizes {
        let mut s = Sizes {
            citizens: args.citizens,
            payments: args.payments,
            queries: args.queries,
            programme_citizens: PROGRAMME_CITIZENS,
        };
        if args.scale != 1.0 {
            scale_counts(
                args.scale,
                [
                    &mut s.citizens,
                    &mut s.payments,
                    &mut s.queries,
                    &mut s.programme_citizens,
                ],
            );
        }
        s
    }
}

/// The routing directory built in this process, and what it cost.
struct DirectoryCost {
    /// Citizens enrolled.
    citizens: usize,
    /// Cards enrolled.
    cards: usize,
    /// Of which moved to another citizen (two windows each).
    moved: usize,
    /// This process's resident growth while the citizens were applied, bytes.
    rss_citizens: f64,
    /// The same while the cards and the moves were applied.
    rss_cards: f64,
    /// `Directory::heap_bytes()` at the end: (citizens, cards).
    heap: (usize, usize),
    /// Seconds to build it.
    secs: f64,
}

impl DirectoryCost {
    /// Resident bytes of the whole directory.
    fn rss(&self) -> f64 {
        self.rss_citizens + self.rss_cards
    }

    /// One row of the directory table.
    fn row(&self, what: &str) -> String {
        let (c, k) = (self.citizens as f64, self.cards as f64);
        format!(
            "| {what} | {} | {} ({} moved) | {:.0} MiB, {:.1} B | {:.0} MiB, {:.1} B | {:.0} MiB, {:.1} B | {:.0} MiB, {:.1} B | {:.0} MiB | {:.0} s |",
            self.citizens,
            self.cards,
            self.moved,
            self.rss_citizens / MIB,
            self.rss_citizens / c,
            self.rss_cards / MIB,
            self.rss_cards / k,
            self.heap.0 as f64 / MIB,
            self.heap.0 as f64 / c,
            self.heap.1 as f64 / MIB,
            self.heap.1 as f64 / k,
            self.rss() / MIB,
            self.secs,
        )
    }
}

/// When the moved cards moved (RFC 3339, Rome).
fn moved_at() -> String {
    Timestamp::now()
        .plus_secs(-MOVED_DAYS_AGO * 86_400)
        .to_rome_rfc3339()
}

/// The citizens whose first card moves.
fn movers(citizens: usize) -> impl Iterator<Item = usize> {
    (0..citizens)
        .step_by(MOVE_EVERY)
        .filter(move |_| citizens > 1)
}

/// The journal entries that move citizen `c`'s first card to the next
/// citizen at `at`: removed from `c`, then activated for `c + 1`.
fn card_move(c: usize, citizens: usize, at: &str) -> [EnrollCommand; 2] {
    [
        EnrollCommand::CardRemove {
            citizen_id: citizen_id(c),
            hpan: hpan(c, 0),
            deactivated_at: at.to_owned(),
        },
        EnrollCommand::Card {
            citizen_id: citizen_id((c + 1) % citizens),
            hpan: hpan(c, 0),
            activated_at: at.to_owned(),
        },
    ]
}

/// Builds the directory of `citizens` citizens with `cards_of(c)` cards
/// each and the moves, citizens first and cards after, and measures this
/// process's resident growth over each part.
fn build_directory(citizens: usize, cards_of: impl Fn(usize) -> usize) -> Result<DirectoryCost> {
    release_freed_memory();
    let started = Instant::now();
    let (since, at) = (enrolled_since(), moved_at());
    let me = std::process::id();
    let mut directory = Directory::new(Config::default().partitions);
    let mut seq = 0u64;
    let mut apply = |d: &mut Directory, cmd: &EnrollCommand| -> Result<()> {
        seq += 1;
        d.apply(seq, cmd)
            .map(|_| ())
            .map_err(|e| anyhow!("the directory refused {cmd:?}: {}", e.message))
    };
    let (before, _) = process_memory(me)?;
    for c in 0..citizens {
        apply(&mut directory, &citizen_enrollment(c, &since))?;
    }
    let (after_citizens, _) = process_memory(me)?;
    let mut cards = 0;
    for c in 0..citizens {
        for card in 0..cards_of(c) {
            apply(&mut directory, &card_enrollment(c, card, &since))?;
            cards += 1;
        }
    }
    let mut moved = 0;
    for c in movers(citizens) {
        for cmd in card_move(c, citizens, &at) {
            apply(&mut directory, &cmd)?;
        }
        moved += 1;
    }
    let (after_cards, _) = process_memory(me)?;
    let cost = DirectoryCost {
        citizens,
        cards,
        moved,
        rss_citizens: after_citizens.saturating_sub(before) as f64,
        rss_cards: after_cards.saturating_sub(after_citizens) as f64,
        heap: directory.heap_bytes(),
        secs: started.elapsed().as_secs_f64(),
    };
    drop(directory);
    release_freed_memory();
    Ok(cost)
}

/// The stream as published, and where its parts end.
struct Stream {
    /// Where the engines are read: the last sequence of the enrollments and
    /// card moves, then of each [`STEPS`]th of the authorizations (the
    /// last one is the stream's end).
    marks: Vec<u64>,
    /// Distinct cards named by the authorizations up to each mark (0 at
    /// the first).
    cards_paid: Vec<usize>,
    /// Cards enrolled.
    cards: usize,
    /// Cards moved to another citizen.
    moved: usize,
    /// Seconds to publish it all.
    secs: f64,
}

impl Stream {
    /// The last sequence of the enrollments and moves.
    fn enrolled(&self) -> u64 {
        self.marks[0]
    }

    /// The last sequence.
    fn last(&self) -> u64 {
        self.marks[STEPS]
    }

    /// Distinct cards paid in all.
    fn cards_paid(&self) -> usize {
        self.cards_paid[STEPS]
    }
}

/// A hash of the card an authorization names, if it decodes: to count the
/// distinct cards paid, which is what card books cost.
fn card_of(body: &[u8]) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Card<'a> {
        /// PROTOCOL.md section 1 `hpan`.
        hpan: &'a str,
    }
    let card: Card = serde_json::from_slice(body).ok()?;
    let mut hasher = DefaultHasher::new();
    card.hpan.hash(&mut hasher);
    Some(hasher.finish())
}

/// Publishes the enrollments, the moves and the authorizations.
async fn publish(h: &Harness, citizens: usize, payments: usize) -> Result<Stream> {
    let started = Instant::now();
    let mut p = h.publisher();
    crate::common::journal_citizens(&mut p, &h.subjects, 0..citizens).await?;
    let at = moved_at();
    let mut moved = 0;
    for c in movers(citizens) {
        for cmd in card_move(c, citizens, &at) {
            p.send(h.subjects.journal(), None, cmd.to_journal()).await?;
        }
        moved += 1;
    }
    let mut marks = vec![p.finish().await?];
    let mut cards_paid = vec![0];
    let mut generator = Harness::generator(citizens);
    let mut paid = HashSet::new();
    for i in 0..payments {
        if i > 0 && i % payments.div_ceil(STEPS) == 0 {
            marks.push(p.finish().await?);
            cards_paid.push(paid.len());
        }
        let m = generator.next_message();
        if let Some(card) = card_of(&m.body) {
            paid.insert(card);
        }
        p.send_sim(&h.subjects, m).await?;
    }
    p.finish().await?;
    // Short of marks only if there were fewer authorizations than steps.
    while marks.len() <= STEPS {
        marks.push(h.last_seq().await?);
        cards_paid.push(paid.len());
    }
    Ok(Stream {
        marks,
        cards_paid,
        cards: (0..citizens).map(cards_of).sum(),
        moved,
        secs: started.elapsed().as_secs_f64(),
    })
}

/// An engine's reading at a point of its catch-up.
#[derive(Clone, Copy, Debug)]
struct Reading {
    /// From its spawn.
    took: Duration,
    /// Its resident memory then, bytes.
    rss: f64,
    /// Payments it had counted then.
    counted: f64,
}

/// Payments the engine counted so far (its partitions' only, on a node).
async fn counted(engine: &Engine) -> Result<f64> {
    let text = engine.metrics().await.context("no /metrics")?;
    Ok(metric_sum(
        &text,
        "cashback_authorizations_total",
        "outcome=\"counted\"",
    ))
}

/// Follows an engine's catch-up from `started` (its spawn), reading it as
/// it passes each of `marks` (the last one also waits for the replay to be
/// over).
async fn follow(engine: &Engine, started: Instant, marks: &[u64]) -> Result<Vec<Reading>> {
    let mut readings = Vec::with_capacity(marks.len());
    for (i, &mark) in marks.iter().enumerate() {
        engine
            .wait_until(mark, i + 1 == marks.len(), CATCH_UP_TIMEOUT)
            .await?;
        let took = started.elapsed();
        let (rss, _) = engine.memory()?;
        readings.push(Reading {
            took,
            rss: rss as f64,
            counted: counted(engine).await?,
        });
    }
    Ok(readings)
}

/// An engine once caught up and settled.
struct Settled {
    /// Readings at each of the stream's marks.
    readings: Vec<Reading>,
    /// Resident memory after settling, bytes.
    rss: f64,
    /// Peak resident memory, bytes.
    peak: f64,
    /// CPU seconds used from spawn to now.
    cpu: f64,
    /// Payments counted.
    counted: f64,
    /// Credits journaled for other nodes' citizens.
    credits_sent: f64,
}

impl Settled {
    /// Spawn to the stream's last pre-published message applied.
    fn catch_up(&self) -> Duration {
        self.readings.last().map_or(Duration::ZERO, |r| r.took)
    }

    /// The reading at the end of the enrollments.
    fn enrolled(&self) -> Reading {
        self.readings[0]
    }
}

/// Reads an engine after it caught up and settled.
async fn settle(engine: &Engine, readings: Vec<Reading>) -> Result<Settled> {
    let (rss, peak) = engine.memory()?;
    let text = engine.metrics().await.context("no /metrics")?;
    Ok(Settled {
        readings,
        rss: rss as f64,
        peak: peak as f64,
        cpu: engine.cpu_seconds()?,
        counted: metric_sum(
            &text,
            "cashback_authorizations_total",
            "outcome=\"counted\"",
        ),
        credits_sent: metric_sum(&text, "cashback_credits_sent_total", ""),
    })
}

/// Waits until every node has applied the whole stream, credits included:
/// the nodes journal credits while they replay, so the stream's end moves
/// until none is left to journal.
async fn apply_tail(h: &Harness, nodes: &[Engine]) -> Result<u64> {
    loop {
        let tail = h.last_seq().await?;
        for node in nodes {
            node.wait_until(tail, true, CATCH_UP_TIMEOUT).await?;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        if h.last_seq().await? == tail {
            return Ok(tail);
        }
    }
}

/// Citizen query latencies by the path each request took.
struct Routed {
    /// Received by the node owning the citizen, answered there.
    owner: Latencies,
    /// Received by another node, forwarded to the owner and relayed.
    forwarded: Latencies,
    /// Requests no single node counted (should be none).
    unclassified: usize,
    /// Requests without an `"ok": true` reply.
    failed: usize,
}

/// Each node's count of public `cashback.query.citizen` requests it
/// received: its endpoint records every request it takes from the public
/// subject, and a request forwarded to it from another node is answered
/// outside the endpoint, so it is not counted there.
async fn received(nodes: &[Engine]) -> Result<Vec<f64>> {
    let mut counts = Vec::with_capacity(nodes.len());
    for node in nodes {
        let text = node.metrics().await.context("no /metrics")?;
        counts.push(metric_sum(
            &text,
            "cashback_query_latency_seconds_count",
            "query=\"citizen\"",
        ));
    }
    Ok(counts)
}

/// A citizen query's latency through a non-owning node next to the owning
/// node, in the same run. The public subject's queue group spreads the
/// requests over the three nodes at random, and a reply does not say who
/// answered; so the requests go one at a time, for random citizens, and
/// after each reply every node's count of requests received on the public
/// endpoint is read: the one node whose count rose received it. When that
/// node owns the citizen (`partition % 3`), it answered alone (its own
/// shards, and the other nodes' counts before the citizen's key for the
/// national position, as every citizen query in a cluster needs); else it
/// forwarded the request to the owner over `cashback.node.<K>.query.citizen`
/// and relayed the reply. Same subject, same client, same moment, same
/// citizens' distribution: the difference is the forward.
async fn route_queries(
    h: &Harness,
    nodes: &[Engine],
    citizens: usize,
    count: usize,
) -> Result<Routed> {
    let subject = h.subjects.query("citizen");
    let partitions = Config::default().partitions;
    let mut rng = StdRng::seed_from_u64(13);
    let ask = |rng: &mut StdRng| {
        let c = rng.gen_range(0..citizens);
        let id = citizen_id(c);
        let owner = partition_of(&id, partitions) % NODES;
        (owner, json!({ "citizen_id": id }).to_string())
    };
    for _ in 0..WARM_UP {
        let (_, body) = ask(&mut rng);
        let _ = h.client.request(subject.clone(), body.into()).await;
    }
    let (mut owner, mut forwarded) = (Vec::new(), Vec::new());
    let (mut unclassified, mut failed) = (0, 0);
    let mut before = received(nodes).await?;
    for _ in 0..count {
        let (owning, body) = ask(&mut rng);
        let t = Instant::now();
        let reply = h.client.request(subject.clone(), body.into()).await;
        let took = t.elapsed();
        let after = received(nodes).await?;
        let rose: Vec<u16> = (0..nodes.len())
            .filter(|&k| after[k] != before[k])
            .map(|k| k as u16)
            .collect();
        before = after;
        if !matches!(&reply, Ok(m) if m.payload.starts_with(b"{\"ok\":true")) {
            failed += 1;
            continue;
        }
        match rose.as_slice() {
            [k] if *k == owning => owner.push(took),
            [_] => forwarded.push(took),
            _ => unclassified += 1,
        }
    }
    Ok(Routed {
        owner: Latencies::new(owner),
        forwarded: Latencies::new(forwarded),
        unclassified,
        failed,
    })
}

/// The programme on N nodes, from this run's figures. A node holds:
/// - in full, whatever N: the empty engine's process and the routing
///   directory at the programme's scale (built in process), and whatever
///   the N = 3 nodes held beyond their share of the single process's
///   state (`beyond`);
/// - its share of the partitions' state: the largest node's share of the
///   256 partitions (`ceil(256 / N) / 256`) of the single process's state
///   outside the directory, scaled to the programme per citizen and per
///   payment (or per payment and per card paid, `split`).
struct Model {
    /// Empty engine, bytes.
    empty: f64,
    /// Directory at the programme's scale, bytes.
    directory: f64,
    /// Most any N = 3 node held beyond its share, bytes (0 if none did).
    beyond: f64,
    /// Per enrolled citizen, outside the directory: the citizen's summary,
    /// identity (id and IBAN strings), id indexes and wallet (its cards),
    /// before any payment.
    per_citizen: f64,
    /// Per counted payment, everything the payments added (the record,
    /// buffer slack, card books, statement index, rank entries): an upper
    /// bound at the programme's ~43 payments per card, as this run has
    /// fewer payments per card to spread the books over.
    per_payment_all: f64,
    /// The payments' growth split into per counted payment and per card
    /// paid (see [`split_costs`]); None when the steps do not separate
    /// them.
    split: Option<(f64, f64)>,
    /// Partitions.
    partitions: u16,
}

impl Model {
    /// The programme's state outside the directory, in all, bytes: with
    /// everything the payments added per payment, or split.
    fn rest(&self, split: bool) -> f64 {
        let citizens = PROGRAMME_CITIZENS as f64;
        let cards = citizens * PROGRAMME_CARDS_PER_CITIZEN as f64;
        citizens * self.per_citizen
            + match (split, self.split) {
                (true, Some((payment, card))) => PROGRAMME_PAYMENTS * payment + cards * card,
                _ => PROGRAMME_PAYMENTS * self.per_payment_all,
            }
    }

    /// The largest node's share of the partitions at `n` nodes.
    fn share(&self, n: u16) -> f64 {
        let p = self.partitions as f64;
        (p / n as f64).ceil() / p
    }

    /// What every node holds whatever N, bytes.
    fn fixed(&self) -> f64 {
        self.empty + self.directory + self.beyond
    }

    /// The largest node at `n` nodes, bytes.
    fn node(&self, n: u16, split: bool) -> f64 {
        self.fixed() + self.share(n) * self.rest(split)
    }

    /// The fewest nodes that each stay under the goal's size, if any does
    /// within `PROJECTED_NODES`.
    fn fewest(&self, split: bool) -> Option<u16> {
        PROJECTED_NODES
            .clone()
            .find(|&n| self.node(n, split) < GOAL_NODE_BYTES)
    }
}

/// One step of the authorizations as the single engine took them.
#[derive(Clone, Copy, Debug)]
struct Step {
    /// Its resident growth over the step, bytes.
    grown: f64,
    /// Payments it counted in the step.
    payments: f64,
    /// Cards paid for the first time in the step.
    new_cards: f64,
}

/// The steps of the authorizations, from the single engine's readings.
fn steps(single: &Settled, stream: &Stream) -> Vec<Step> {
    let r = &single.readings;
    (1..r.len())
        .map(|i| Step {
            grown: r[i].rss - r[i - 1].rss,
            payments: r[i].counted - r[i - 1].counted,
            new_cards: (stream.cards_paid[i] - stream.cards_paid[i - 1]) as f64,
        })
        .collect()
}

/// Splits what the payments cost into per counted payment (x: the record,
/// its buffer's slack) and per card paid for the first time (y: its book,
/// map entries, statement index entry, and its owner's rank entry on a
/// first payment): the least-squares fit, without intercept, of
/// `grown = payments * x + new_cards * y` over the steps. Early steps pay
/// for most cards, late ones mostly for payments, which is what separates
/// the two. None when the fit is singular, or when x comes out below the
/// record every counted payment keeps (`size_of::<PaymentRecord>()`) or y
/// below 0: the steps' growth is then too coarse to separate them (a hash
/// map doubling inside a step is a jump of many MiB).
fn split_costs(steps: &[Step]) -> Option<(f64, f64)> {
    let sum = |f: &dyn Fn(&Step) -> f64| steps.iter().map(f).sum::<f64>();
    let pp = sum(&|s| s.payments * s.payments);
    let pk = sum(&|s| s.payments * s.new_cards);
    let kk = sum(&|s| s.new_cards * s.new_cards);
    let ap = sum(&|s| s.grown * s.payments);
    let ak = sum(&|s| s.grown * s.new_cards);
    let det = pp * kk - pk * pk;
    if det.abs() <= f64::EPSILON * pp * kk {
        return None;
    }
    let x = (ap * kk - ak * pk) / det;
    let y = (ak * pp - ap * pk) / det;
    (x >= std::mem::size_of::<PaymentRecord>() as f64 && y > 0.0).then_some((x, y))
}

/// Runs the benchmark.
pub async fn run(args: &Args) -> Result<Report> {
    let sizes = Sizes::of(args);
    let scaled = args.scale != 1.0;

    eprintln!(
        "cluster: directory in process, {} citizens ({} at the programme's scale)...",
        sizes.citizens, sizes.programme_citizens
    );
    let run_directory = build_directory(sizes.citizens, cards_of)?;
    let programme_directory =
        build_directory(sizes.programme_citizens, |_| PROGRAMME_CARDS_PER_CITIZEN)?;
    eprintln!(
        "cluster: directory {:.0} MiB (run), {:.0} MiB (programme scale, {:.0} s)",
        run_directory.rss() / MIB,
        programme_directory.rss() / MIB,
        programme_directory.secs
    );

    let h = Harness::start().await?;
    let empty = {
        let engine = h.engine()?;
        engine.wait_applied(0).await?;
        tokio::time::sleep(SETTLE).await;
        let (rss, _) = engine.memory()?;
        engine.stop()?;
        rss as f64
    };

    eprintln!(
        "cluster: publishing {} citizens, their cards and moves, {} authorizations...",
        sizes.citizens, sizes.payments
    );
    let stream = publish(&h, sizes.citizens, sizes.payments).await?;
    let last = stream.last();
    eprintln!(
        "cluster: stream holds {last} messages ({:.0} s); raw reference...",
        stream.secs
    );
    let raw = raw_consume(&h.js, last).await?;
    let raw_rate = last as f64 / raw.as_secs_f64();
    let marks = &stream.marks;

    eprintln!("cluster: N = 1...");
    let single = {
        let started = Instant::now();
        let engine = h.engine()?;
        let readings = follow(&engine, started, marks).await?;
        tokio::time::sleep(SETTLE).await;
        let settled = settle(&engine, readings).await?;
        engine.stop()?;
        settled
    };
    eprintln!(
        "cluster: N = 1 caught up in {:.1} s, {:.0} MiB",
        single.catch_up().as_secs_f64(),
        single.rss / MIB
    );

    eprintln!("cluster: N = {NODES}, started together...");
    let started = Instant::now();
    let nodes = (0..NODES)
        .map(|k| h.node(k, NODES))
        .collect::<Result<Vec<_>>>()?;
    let followed = join_all(nodes.iter().map(|n| follow(n, started, marks))).await;
    let tail = apply_tail(&h, &nodes).await?;
    tokio::time::sleep(SETTLE).await;
    let mut cluster = Vec::with_capacity(nodes.len());
    for (node, readings) in nodes.iter().zip(followed) {
        cluster.push(settle(node, readings?).await?);
    }
    for (k, n) in cluster.iter().enumerate() {
        eprintln!(
            "cluster: node {k} caught up in {:.1} s, {:.0} MiB",
            n.catch_up().as_secs_f64(),
            n.rss / MIB
        );
    }
    eprintln!(
        "cluster: {} citizen queries, one at a time...",
        sizes.queries
    );
    let routed = route_queries(&h, &nodes, sizes.citizens, sizes.queries).await?;
    for node in nodes {
        node.stop()?;
    }

    // What each node owns: its share of the citizens (they hash evenly
    // over the partitions, the partitions evenly over the nodes).
    let partitions = Config::default().partitions;
    let mut owned = vec![0usize; NODES as usize];
    for c in 0..sizes.citizens {
        owned[(partition_of(&citizen_id(c), partitions) % NODES) as usize] += 1;
    }
    let citizens = sizes.citizens as f64;
    let fraction = |k: usize| owned[k] as f64 / citizens;

    // The single process's state outside the directory and the empty
    // engine, and each node's.
    let d_run = run_directory.rss();
    let rest = |rss: f64| rss - empty - d_run;
    let rest_single = rest(single.rss);
    let beyond: Vec<f64> = cluster
        .iter()
        .enumerate()
        .map(|(k, n)| rest(n.rss) - fraction(k) * rest_single)
        .collect();
    let steps = steps(&single, &stream);
    let model = Model {
        empty,
        directory: programme_directory.rss() * PROGRAMME_CITIZENS as f64
            / programme_directory.citizens as f64,
        beyond: beyond.iter().copied().fold(0.0, f64::max),
        per_citizen: rest(single.enrolled().rss) / citizens,
        per_payment_all: (single.rss - single.enrolled().rss) / single.counted.max(1.0),
        split: split_costs(&steps),
        partitions,
    };

    Ok(Report {
        title: "Cluster nodes: memory per node, catch-up, forwarded queries, national projection"
            .into(),
        command: args.command(),
        setup: setup(
            args,
            &sizes,
            &stream,
            &run_directory,
            &programme_directory,
            scaled,
        ),
        table: [
            catch_up_table(raw, raw_rate, last, tail, &single, &cluster),
            memory_table(
                &single,
                &cluster,
                &owned,
                citizens,
                empty,
                d_run,
                rest_single,
                &beyond,
            ),
            directory_table(&run_directory, &programme_directory, scaled),
            steps_table(&steps, &stream, model.split),
            projection_table(&model, &single, &stream),
            query_table(&routed, sizes.queries),
        ]
        .join("\n\n"),
    })
}

/// The set-up paragraph.
fn setup(
    args: &Args,
    sizes: &Sizes,
    stream: &Stream,
    run_directory: &DirectoryCost,
    programme_directory: &DirectoryCost,
    scaled: bool,
) -> String {
    let smoke = if scaled {
        format!(
            "**Scaled by {}: a smoke run, not the benchmark's figures; the programme-scale directory was built at {} citizens and \
             scaled up linearly.** ",
            args.scale, programme_directory.citizens
        )
    } else {
        String::new()
    };
    format!(
        "{smoke}The stream holds {} messages: {} simulator citizens' enrollments ({} cards, 1-4 each), {} card moves \
         (every {MOVE_EVERY}th citizen's first card removed and activated for the next citizen {MOVED_DAYS_AGO} days \
         ago: its payments are decided on the node of the card's anchor and credited to the new owner, on another node \
         for about 2 in 3), then {} simulator authorizations (payments, ~2% reversals, duplicates, late batches, ~0.1% \
         malformed) naming {} distinct cards; published in {:.0} s. One embedded nats-server (the nodes share its one \
         stream as they would share a JetStream cluster's). Every engine runs as its own release process on this \
         machine's 2 cores: the N = {NODES} nodes run at the same time, so each had about two thirds of a core. RSS \
         is the process's `VmRSS`, read as the engine passes the end of the enrollments (sequence {}) and each \
         {STEPS}th of the authorizations, and {} s after it applied everything (for N = {NODES}, the credits the nodes \
         journaled included). The directory (what every node holds in full) was built in this benchmark's process \
         through `Directory::apply` from the same enrollments and moves, citizens first, then cards: its cost is the \
         process's resident growth over each part (`Directory::heap_bytes()` beside it), at this run's scale \
         ({:.0} s) and at the programme's ({} citizens, {PROGRAMME_CARDS_PER_CITIZEN} cards each, every \
         {MOVE_EVERY}th citizen's first card moved; {:.0} s).",
        stream.last(),
        sizes.citizens,
        stream.cards,
        stream.moved,
        sizes.payments,
        stream.cards_paid(),
        stream.secs,
        stream.enrolled(),
        SETTLE.as_secs(),
        run_directory.secs,
        programme_directory.citizens,
        programme_directory.secs,
    )
}

/// Catch-up of each engine next to the raw read.
fn catch_up_table(
    raw: Duration,
    raw_rate: f64,
    last: u64,
    tail: u64,
    single: &Settled,
    cluster: &[Settled],
) -> String {
    let row = |what: &str, s: &Settled| {
        let secs = s.catch_up().as_secs_f64();
        let rate = last as f64 / secs;
        format!(
            "| {what} | {secs:.1} s | {rate:.0} | {:.2} | {:.0} s | {:.0} MiB (peak {:.0}) | {:.0} | {:.0} |",
            rate / raw_rate,
            s.cpu,
            s.rss / MIB,
            s.peak / MIB,
            s.counted,
            s.credits_sent,
        )
    };
    let mut rows = vec![
        format!(
            "| raw reference: ordered consumer, borrowed decode, same stream | {:.1} s | {raw_rate:.0} | 1.00 | | | | |",
            raw.as_secs_f64()
        ),
        row("N = 1", single),
    ];
    for (k, n) in cluster.iter().enumerate() {
        rows.push(row(&format!("N = {NODES}, node {k}"), n));
    }
    let slowest = cluster
        .iter()
        .map(Settled::catch_up)
        .max()
        .unwrap_or_default()
        .as_secs_f64();
    rows.push(format!(
        "| N = {NODES}, all nodes | slowest {slowest:.1} s | {:.0} each, {:.0} together | | {:.0} s in all | {:.0} MiB in all | {:.0} in all ({}) | {:.0} in all |",
        last as f64 / slowest,
        NODES as f64 * last as f64 / slowest,
        cluster.iter().map(|n| n.cpu).sum::<f64>(),
        cluster.iter().map(|n| n.rss).sum::<f64>() / MIB,
        cluster.iter().map(|n| n.counted).sum::<f64>(),
        if cluster.iter().map(|n| n.counted).sum::<f64>() == single.counted {
            "= N = 1"
        } else {
            "**differs from N = 1**"
        },
        cluster.iter().map(|n| n.credits_sent).sum::<f64>(),
    ));
    format!(
        "Catch-up: spawn to the last pre-published message ({last}) applied; the nodes journaled credits for each other \
         meanwhile, which end the stream at {tail}.\n\n\
         | engine | catch-up | messages/s | vs raw | CPU time | RSS after catch-up | payments counted | credits journaled |\n\
         |---|---|---|---|---|---|---|---|\n{}",
        rows.join("\n")
    )
}

/// Memory per node, and its parts.
#[allow(clippy::too_many_arguments)]
fn memory_table(
    single: &Settled,
    cluster: &[Settled],
    owned: &[usize],
    citizens: f64,
    empty: f64,
    d_run: f64,
    rest_single: f64,
    beyond: &[f64],
) -> String {
    let mib = |b: f64| format!("{:.0} MiB", b / MIB);
    let columns = |f: &dyn Fn(Option<usize>, &Settled) -> String| -> String {
        std::iter::once(f(None, single))
            .chain(cluster.iter().enumerate().map(|(k, n)| f(Some(k), n)))
            .collect::<Vec<_>>()
            .join(" | ")
    };
    let rest = |n: &Settled| n.rss - empty - d_run;
    let header = std::iter::once("N = 1".to_owned())
        .chain((0..cluster.len()).map(|k| format!("N = {NODES}, node {k}")))
        .collect::<Vec<_>>()
        .join(" | ");
    let rows = [
        format!(
            "| citizens owned | {} |",
            columns(&|k, _| match k {
                None => format!("{citizens:.0} (100%)"),
                Some(k) => format!("{} ({:.1}%)", owned[k], 100.0 * owned[k] as f64 / citizens),
            })
        ),
        format!(
            "| RSS at the end of the enrollments | {} |",
            columns(&|_, n| mib(n.readings[0].rss))
        ),
        format!(
            "| RSS at half the authorizations | {} |",
            columns(&|_, n| mib(n.readings[STEPS / 2].rss))
        ),
        format!(
            "| RSS after catch-up, settled | {} |",
            columns(&|_, n| mib(n.rss))
        ),
        format!(
            "| of which the empty engine (measured once) | {} |",
            columns(&|_, _| mib(empty))
        ),
        format!(
            "| of which the directory, held in full (in-process build, this run's scale) | {} |",
            columns(&|_, _| mib(d_run))
        ),
        format!(
            "| the rest: the partitions' citizens, card books, payments, rank | {} |",
            columns(&|_, n| mib(rest(n)))
        ),
        format!(
            "| the rest against N = 1's rest / {NODES} | {} |",
            columns(&|k, n| match k {
                None => String::new(),
                Some(_) => format!("{:.2}", rest(n) / (rest_single / NODES as f64)),
            })
        ),
        format!(
            "| held beyond the node's share of citizens (rest - share x N = 1's rest) | {} |",
            columns(&|k, _| match k {
                None => String::new(),
                Some(k) => mib(beyond[k]),
            })
        ),
    ];
    format!(
        "Memory per node: the rest is RSS minus the empty engine minus the directory.\n\n\
         | | {header} |\n|---|{}\n{}",
        "---|".repeat(cluster.len() + 1),
        rows.join("\n")
    )
}

/// The directory's bytes per citizen and per card.
fn directory_table(run: &DirectoryCost, programme: &DirectoryCost, scaled: bool) -> String {
    let programme_label = if scaled {
        "programme's shape (scaled-down run)"
    } else {
        "programme's scale"
    };
    format!(
        "The routing directory, which every node holds in full (built in process; RSS growth is what the projection \
         uses; `heap_bytes()` is the directory's own count of its tables' capacity).\n\n\
         | built at | citizens | cards | RSS growth: citizens, per citizen | RSS growth: cards, per card | \
         `heap_bytes()`: citizens, per citizen | `heap_bytes()`: cards, per card | RSS in all | build |\n\
         |---|---|---|---|---|---|---|---|---|\n{}\n{}",
        run.row("this run's scale"),
        programme.row(programme_label),
    )
}

/// The single engine's payments, step by step, and the split fitted to them.
fn steps_table(steps: &[Step], stream: &Stream, split: Option<(f64, f64)>) -> String {
    let rows: Vec<String> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let fitted = split.map_or_else(String::new, |(x, y)| {
                format!("{:.0} MiB", (s.payments * x + s.new_cards * y) / MIB)
            });
            format!(
                "| {} | {} | {:.0} MiB | {:.0} | {:.0} | {fitted} |",
                i + 1,
                stream.marks[i + 1],
                s.grown / MIB,
                s.payments,
                s.new_cards,
            )
        })
        .collect();
    let fit = match split {
        Some((x, y)) => format!(
            "Least-squares fit (no intercept) of growth = payments x X + new cards x Y over the steps: X = {x:.1} B \
             per counted payment, Y = {y:.0} B per card paid for the first time."
        ),
        None => format!(
            "The fit of growth = payments x X + new cards x Y over the steps gave no usable split (X below the \
             {}-byte record every counted payment keeps, or Y below 0): the steps' growth is too coarse here.",
            std::mem::size_of::<PaymentRecord>()
        ),
    };
    format!(
        "The payments' memory, N = 1, in {STEPS} steps of the authorizations (RSS read as the engine passed each \
         step's last sequence; new cards: distinct cards the step's authorizations name for the first time).\n\n\
         | step | up to sequence | RSS growth | payments counted | new cards paid | fitted growth |\n\
         |---|---|---|---|---|---|\n{}\n\n{fit}",
        rows.join("\n")
    )
}

/// The projection onto nodes of 24 GiB.
fn projection_table(model: &Model, single: &Settled, stream: &Stream) -> String {
    let gib = |b: f64| format!("{:.1} GiB", b / GIB);
    let mib = |b: f64| format!("{:.0} MiB", b / MIB);
    let fits = |b: f64| if b < GOAL_NODE_BYTES { "yes" } else { "no" };
    let rows: Vec<String> = PROJECTED_NODES
        .map(|n| {
            let all = model.node(n, false);
            let split = model.split.map_or_else(
                || "n/a | n/a".to_owned(),
                |_| {
                    let s = model.node(n, true);
                    format!("{} | {}", gib(s), fits(s))
                },
            );
            format!(
                "| {n} | {:.1}% | {split} | {} | {} |",
                100.0 * model.share(n),
                gib(all),
                fits(all),
            )
        })
        .collect();
    let split_text = match model.split {
        Some((payment, card)) => format!(
            "**split** (the best estimate): {payment:.1} B per counted payment and {card:.0} B per card paid (fitted \
             over the steps above; the programme's 16.8M cards are all taken as paid)"
        ),
        None => "**split**: not available from this run (see the steps above)".to_owned(),
    };
    let fewest = |split: bool| {
        model.fewest(split).map_or_else(
            || format!("more than {}", PROJECTED_NODES.end()),
            |n| n.to_string(),
        )
    };
    let met = |split: bool| model.fewest(split).is_some_and(|n| n <= GOAL_NODES);
    let best = model.split.is_some();
    let in_the_way = if met(best) {
        String::new()
    } else {
        format!(
            " What stands in the way: every node holds {} whatever N (the directory alone {}), and the partitions' \
             state is {} in all ({} of it per payment).",
            gib(model.fixed()),
            gib(model.directory),
            gib(model.rest(best)),
            gib(PROGRAMME_PAYMENTS
                * model
                    .split
                    .map_or(model.per_payment_all, |(payment, _)| payment)),
        )
    };
    let paid_per_card =
        (single.counted - single.enrolled().counted) / stream.cards_paid().max(1) as f64;
    format!(
        "Projection of the real programme ({PROGRAMME_CITIZENS} citizens, {PROGRAMME_CARDS_PER_CITIZEN} cards each, \
         {:.0}M payments) onto nodes of {:.0} GiB. Every node holds in full, whatever N: the empty engine ({}), the \
         directory at the programme's scale ({}: per citizen the 128-bit hash of the id, T&C time, partition, \
         withdrawal; per card its anchor partition and activation windows) and the most any N = {NODES} node held \
         beyond its share ({}): {} in all. Each node also holds the largest node's share of the {} partitions \
         (`ceil({} / N) / {}`) of the rest, which scales with citizens, {:.0} B each (summary, id and IBAN strings, \
         indexes, wallet with its cards: N = 1's RSS at the end of the enrollments minus the empty engine and the \
         directory), and with payments and cards. Payments, two ways from N = 1: **all per payment** (an upper \
         bound): {:.1} B per counted payment, all the growth from the end of the enrollments to the settled end divided \
         by the payments counted: the {}-byte record (with its de-duplication key) and its buffer's slack, and also the \
         card books, statement index and rank entries, which this run spreads over {:.1} payments per paid card and \
         the programme over {:.1}; and {split_text}.\n\n\
         | N | largest node's share of the partitions | per node (split) | under 18 GiB | per node (all per payment) | \
         under 18 GiB |\n\
         |---|---|---|---|---|---|\n{}\n\n\
         Fewest nodes each under 18 GiB: {} (split), {} (all per payment). Goal (at most {GOAL_NODES} nodes, each \
         under 18 GiB): {} (split), {} (all per payment).{in_the_way}",
        PROGRAMME_PAYMENTS / 1e6,
        NODE_MEMORY / GIB,
        mib(model.empty),
        gib(model.directory),
        mib(model.beyond),
        gib(model.fixed()),
        model.partitions,
        model.partitions,
        model.partitions,
        model.per_citizen,
        model.per_payment_all,
        std::mem::size_of::<PaymentRecord>(),
        paid_per_card,
        PROGRAMME_PAYMENTS / (PROGRAMME_CITIZENS * PROGRAMME_CARDS_PER_CITIZEN) as f64,
        rows.join("\n"),
        if best { fewest(true) } else { "n/a".into() },
        fewest(false),
        if best { verdict(met(true)) } else { "n/a" },
        verdict(met(false)),
    )
}

/// Citizen queries by path.
fn query_table(routed: &Routed, count: usize) -> String {
    format!(
        "Citizen queries through the {NODES}-node cluster, one at a time, `cashback.query.citizen` for random citizens, \
         each classified by the node that received it (its public endpoint's request count rose).\n\n\
         | path | requests | latency p50 / p99 |\n|---|---|---|\n\
         | received by the owning node, answered there | {} | {} |\n\
         | received by a non-owning node, forwarded to the owner | {} | {} |\n\
         | not classified (no single node counted it) / failed | {} / {} of {count} | |",
        routed.owner.len(),
        routed.owner.p50_p99(),
        routed.forwarded.len(),
        routed.forwarded.p50_p99(),
        routed.unclassified,
        routed.failed,
    )
}
