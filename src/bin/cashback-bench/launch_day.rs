//! Launch day (issue 14): the load that broke the IO app on the Cashback's
//! first day, when its wallet section answered "Non è stato possibile
//! caricare i tuoi metodi di pagamento" at 6,000-8,000 requests/s. One
//! app-back-end connection sends, open loop, a mix of 40% wallet
//! (`cashback.query.wallet`), 30% citizen query, 20% new card
//! (`cashback.enroll.card`, a fresh hpan of an existing citizen) and 10%
//! statement (`cashback.query.transactions`, first page), while the payment
//! networks publish 2,000 authorizations/s (JetStream) to the same engine.
//! Goal: 20,000 requests/s with every kind's p99 <= 50 ms and 0 errors.
//!
//! - Open loop: request i is due at start + i / rate and is sent then,
//!   whatever the replies so far (as many in flight as it takes), and its
//!   latency runs from when it was due, not from when it could be sent: a
//!   stall delays every request due during it, and they all count
//!   (no coordinated omission). A request with no reply within
//!   [`REQUEST_TIMEOUT`] is a timeout, counted with its 10 s.
//! - Reference: the same schedule and bodies sent to an echo responder (on
//!   its own connection to the same server, same payments flowing), just
//!   before each measured engine phase: what NATS request-reply and the load
//!   generator alone cost at that rate on this machine.
//! - Ramp: after the measured phases, short steps of increasing rate find
//!   where the first kind's p99 passes 50 ms; the echo at that rate shows
//!   whether the engine or the machine gave out.
//! - Each phase reports the CPU the engine, nats-server and the machine
//!   used and the load average: the machine's 2 cores run the engine,
//!   nats-server and this load generator together.

use crate::common::{
    bucket_quantile, echo_responder, labeled_histogram_buckets, pregenerate, prepublish,
    scale_counts, scale_seconds, verdict, Engine, Harness, Options, Outcome, PacedLoad, Report,
    RequestLoad, BENCH_COMMAND,
};
use crate::cpu::{CpuMeter, CpuUse};
use anyhow::Result;
use async_nats::Subject;
use cashback::sim::{citizen_id, Generator};
use cashback_engine::enrollment::EnrollKind;
use cashback_engine::time::Timestamp;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Issue 14's goal: app requests per second.
const GOAL_PER_SEC: usize = 20_000;
/// Issue 14's goal: every kind's p99, ms.
const GOAL_P99_MS: f64 = 50.0;
/// A phase that sent less than this share of its rate on schedule did not
/// offer that rate (the load generator could not keep up): it cannot meet
/// the goal.
const MIN_SENT_SHARE: f64 = 0.95;
/// How long the app back end waits for a reply; a later one is a timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Warm-up (JIT-free, but connections, caches and the engine's first
/// queries): at the first measured rate, not reported.
const WARM_UP: Duration = Duration::from_secs(3);
/// The echo responder's subject.
const ECHO: &str = "bench.echo";

/// Options of `launch-day`.
#[derive(clap::Parser, Clone, Debug)]
pub struct Args {
    /// Enrolled citizens (the simulator's, 1-4 cards each): those the app
    /// asks about and enrolls new cards for.
    #[arg(long, default_value_t = 50_000)]
    pub citizens: usize,
    /// The simulator's authorizations published before the run, so that
    /// citizens have counts, rankings and statements.
    #[arg(long, default_value_t = 1_000_000)]
    pub payments: usize,
    /// App requests per second of the measured phases, in turn.
    #[arg(long, value_delimiter = ',', default_value = "8000,20000")]
    pub rates: Vec<usize>,
    /// Seconds of each measured phase.
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// Authorizations per second published during every phase.
    #[arg(long, default_value_t = 2000)]
    pub payment_rate: usize,
    /// Requests per second added at each ramp step (the first step too).
    #[arg(long, default_value_t = 2500)]
    pub ramp_step: usize,
    /// Seconds of each ramp step.
    #[arg(long, default_value_t = 10)]
    pub ramp_seconds: u64,
    /// Highest rate the ramp tries.
    #[arg(long, default_value_t = 40_000)]
    pub ramp_max: usize,
}

impl Options for Args {
    fn scale(&mut self, factor: f64) {
        scale_counts(factor, [&mut self.citizens, &mut self.payments]);
        scale_seconds(factor, &mut self.seconds);
        scale_seconds(factor, &mut self.ramp_seconds);
    }

    fn command(&self) -> String {
        let rates: Vec<String> = self.rates.iter().map(usize::to_string).collect();
        format!(
            "{BENCH_COMMAND} launch-day --citizens {} --payments {} --rates {} --seconds {} \
             --payment-rate {} --ramp-step {} --ramp-seconds {} --ramp-max {}",
            self.citizens,
            self.payments,
            rates.join(","),
            self.seconds,
            self.payment_rate,
            self.ramp_step,
            self.ramp_seconds,
            self.ramp_max
        )
    }
}

/// A kind of app request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// `cashback.query.wallet`.
    Wallet,
    /// `cashback.query.citizen`.
    Citizen,
    /// `cashback.enroll.card`, a card never enrolled before.
    Card,
    /// `cashback.query.transactions`, first page.
    Statement,
}

impl Kind {
    /// Every kind, in the tables' order.
    const ALL: [Kind; 4] = [Kind::Wallet, Kind::Citizen, Kind::Card, Kind::Statement];

    /// The engine's own histogram of its processing time (request taken
    /// to reply sent) and the series' labels.
    fn engine_series(self) -> (&'static str, &'static str) {
        match self {
            Kind::Wallet => ("cashback_query_latency_seconds", "query=\"wallet\""),
            Kind::Citizen => ("cashback_query_latency_seconds", "query=\"citizen\""),
            Kind::Card => ("cashback_enrollment_latency_seconds", "subject=\"card\""),
            Kind::Statement => ("cashback_query_latency_seconds", "query=\"transactions\""),
        }
    }

    /// Its name in the tables.
    fn name(self) -> &'static str {
        match self {
            Kind::Wallet => "wallet",
            Kind::Citizen => "citizen query",
            Kind::Card => "new card",
            Kind::Statement => "statement",
        }
    }
}

/// The mix in the order requests go out, repeated: 4 wallet, 3 citizen, 2
/// new card, 1 statement in every 10, interleaved so that any stretch of the
/// schedule has the mix.
const MIX: [Kind; 10] = [
    Kind::Wallet,
    Kind::Citizen,
    Kind::Card,
    Kind::Wallet,
    Kind::Statement,
    Kind::Citizen,
    Kind::Wallet,
    Kind::Card,
    Kind::Citizen,
    Kind::Wallet,
];

/// One request of the schedule.
struct Request {
    /// Its kind.
    kind: Kind,
    /// Its body.
    body: bytes::Bytes,
}

/// The app back end's requests: citizens picked uniformly (every citizen
/// opens the app, not only the big spenders), and a card never enrolled
/// before for every new card, across the whole run.
struct App {
    /// Picks citizens; seeded, so that every run sends the same requests.
    rng: StdRng,
    /// Citizens `sim-0` to `sim-{citizens-1}` exist.
    citizens: usize,
    /// New cards made so far: numbers the next one.
    new_cards: u64,
    /// `activated_at` of new cards: now, as the app sends it.
    activated_at: String,
}

impl App {
    fn new(citizens: usize) -> App {
        App {
            rng: StdRng::seed_from_u64(14),
            citizens,
            new_cards: 0,
            activated_at: Timestamp::now().to_rome_rfc3339(),
        }
    }

    /// The next `n` requests of the mix, built before a phase so that
    /// building them takes no CPU from it.
    fn requests(&mut self, n: usize) -> Vec<Request> {
        (0..n)
            .map(|i| {
                let kind = MIX[i % MIX.len()];
                let citizen = citizen_id(self.rng.gen_range(0..self.citizens));
                let body = match kind {
                    Kind::Wallet | Kind::Citizen => json!({"citizen_id": citizen}),
                    Kind::Statement => json!({"citizen_id": citizen, "offset": 0, "limit": 100}),
                    Kind::Card => {
                        self.new_cards += 1;
                        // "1a0d" and a counter: no simulator hpan (a hash)
                        // takes this shape.
                        json!({"citizen_id": citizen,
                               "hpan": format!("1a0d{:060x}", self.new_cards),
                               "activated_at": self.activated_at})
                    }
                };
                Request {
                    kind,
                    body: body.to_string().into(),
                }
            })
            .collect()
    }
}

/// Where a phase sends its requests.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    /// The engine, each kind to its subject.
    Engine,
    /// The echo responder, every kind to [`ECHO`].
    Echo,
}

/// What one phase measured.
struct Phase {
    /// Requests per second due.
    rate: usize,
    /// Where they went.
    target: Target,
    /// Requests per second actually sent, first due to last sent.
    sent_rate: f64,
    /// Per kind: latencies from when due, and outcomes.
    kinds: BTreeMap<Kind, RequestLoad>,
    /// Per kind, the engine's own p99 over the phase, ms: the upper bound
    /// of its histogram's bucket (engine phases only). What the engine
    /// spent, as against what the client waited.
    engine_p99: BTreeMap<Kind, f64>,
    /// Authorizations per second published during the phase.
    payments: f64,
    /// How long the engine took, after the phase, to apply every
    /// authorization published during it: near zero when it kept up.
    caught_up_after: Duration,
    /// CPU over the phase.
    cpu: CpuUse,
}

impl Phase {
    /// The kind with the highest p99, and that p99 (ms).
    fn worst_p99(&self) -> (Kind, f64) {
        self.kinds
            .iter()
            .map(|(k, l)| (*k, l.latencies.ms(0.99)))
            .fold((Kind::Wallet, f64::NAN), |worst, (k, p)| {
                if worst.1.is_nan() || p > worst.1 || p.is_nan() {
                    (k, p)
                } else {
                    worst
                }
            })
    }

    /// Requests that timed out, and `"ok": false` replies.
    fn errors(&self) -> (usize, usize) {
        let timeouts = self.kinds.values().map(|l| l.no_reply).sum();
        let refused = self
            .kinds
            .values()
            .map(|l| l.errors.values().sum::<usize>())
            .sum();
        (timeouts, refused)
    }

    /// "0", or "timeouts 12, ok:false 3 (new card: unavailable=3)".
    fn errors_text(&self) -> String {
        let (timeouts, refused) = self.errors();
        if timeouts + refused == 0 {
            return "0".into();
        }
        let codes: Vec<String> = self
            .kinds
            .iter()
            .flat_map(|(k, l)| {
                l.errors
                    .iter()
                    .map(move |(code, n)| format!("{}: {code}={n}", k.name()))
            })
            .collect();
        let codes = if codes.is_empty() {
            String::new()
        } else {
            format!(" ({})", codes.join(", "))
        };
        format!("timeouts {timeouts}, ok:false {refused}{codes}")
    }

    /// Whether every kind's p99 is within the goal, with no error, at the
    /// rate really offered.
    fn met(&self) -> bool {
        let (timeouts, refused) = self.errors();
        self.kinds
            .values()
            .all(|l| l.latencies.ms(0.99) <= GOAL_P99_MS)
            && timeouts + refused == 0
            && self.sent_rate >= self.rate as f64 * MIN_SENT_SHARE
    }

    /// "p50 / p99 ms" of a kind, and the engine's own p99 bound.
    fn kind_text(&self, kind: Kind) -> String {
        let Some(l) = self.kinds.get(&kind) else {
            return "-".into();
        };
        match self.engine_p99.get(&kind) {
            Some(bound) => format!("{} (engine <= {bound} ms)", l.latencies.p50_p99()),
            None => l.latencies.p50_p99(),
        }
    }

    /// The row of the measured phases' table.
    fn row(&self) -> String {
        let kinds: Vec<String> = Kind::ALL.iter().map(|k| self.kind_text(*k)).collect();
        format!(
            "| {} | {} | {:.0} | {} | {} | {:.0} (applied {} ms after) | {} | {} |",
            self.rate,
            match self.target {
                Target::Engine => "engine",
                Target::Echo => "echo (reference)",
            },
            self.sent_rate,
            kinds.join(" | "),
            self.errors_text(),
            self.payments,
            self.caught_up_after.as_millis(),
            self.cpu.text(),
            match self.target {
                Target::Engine => verdict(self.met()),
                Target::Echo => "",
            }
        )
    }

    /// The row of the ramp's table.
    fn ramp_row(&self) -> String {
        let p99: Vec<String> = Kind::ALL
            .iter()
            .map(|k| {
                let Some(l) = self.kinds.get(k) else {
                    return "-".into();
                };
                match self.engine_p99.get(k) {
                    Some(bound) => format!("{:.1} (<= {bound})", l.latencies.ms(0.99)),
                    None => format!("{:.1}", l.latencies.ms(0.99)),
                }
            })
            .collect();
        let (kind, worst) = self.worst_p99();
        format!(
            "| {} | {} | {:.0} | {} | {} | {} | {} |",
            self.rate,
            match self.target {
                Target::Engine => "engine",
                Target::Echo => "echo (reference)",
            },
            self.sent_rate,
            p99.join(" / "),
            self.errors_text(),
            self.cpu.text(),
            if worst <= GOAL_P99_MS {
                "yes".to_owned()
            } else {
                format!("**no** ({})", kind.name())
            }
        )
    }
}

/// Everything a phase needs.
struct Run<'a> {
    /// Server, stream, subjects.
    h: &'a Harness,
    /// The engine under test.
    engine: &'a Engine,
    /// The app back end's one connection.
    app: async_nats::Client,
    /// Its requests.
    requests: App,
    /// The payment networks' authorizations.
    payments: Generator,
    /// Authorizations per second.
    payment_rate: f64,
    /// Each kind's engine subject.
    subjects: BTreeMap<Kind, Subject>,
}

impl Run<'_> {
    /// One phase: `rate` app requests/s to `target` for `duration`, while
    /// authorizations are published at the payment rate; then waits until
    /// the engine has applied them.
    async fn phase(&mut self, target: Target, rate: usize, duration: Duration) -> Result<Phase> {
        let requests = self
            .requests
            .requests((rate as f64 * duration.as_secs_f64()) as usize);
        let messages = pregenerate(
            &mut self.payments,
            PacedLoad::messages_needed(self.payment_rate, duration),
        );
        eprintln!(
            "launch-day: {} s at {rate}/s to the {}...",
            duration.as_secs(),
            if target == Target::Engine {
                "engine"
            } else {
                "echo responder"
            }
        );
        let meter = CpuMeter::start(self.engine.pid(), self.h.server.pid());
        let (subjects, publisher, payment_rate) = (
            self.h.subjects.clone(),
            self.h.publisher(),
            self.payment_rate,
        );
        let payments = tokio::spawn(async move {
            let mut load = PacedLoad::start(publisher, messages, payment_rate, duration);
            while load.step(&subjects).await? {}
            let achieved = load.achieved_rate();
            let acked = load.publisher.finish().await?;
            Ok::<_, anyhow::Error>((achieved, acked))
        });
        let echo = Subject::from(ECHO);
        let subject = |kind: Kind| match target {
            Target::Engine => self.subjects[&kind].clone(),
            Target::Echo => echo.clone(),
        };
        let scrape_before = self.engine.metrics().await.unwrap_or_default();
        let (sent_rate, kinds) = open_loop(&self.app, requests, rate as f64, subject).await;
        let scrape_after = self.engine.metrics().await.unwrap_or_default();
        let (payments, acked) = payments.await??;
        let engine_p99 = match target {
            Target::Echo => BTreeMap::new(),
            Target::Engine => Kind::ALL
                .iter()
                .map(|&k| {
                    let (name, labels) = k.engine_series();
                    let before = labeled_histogram_buckets(&scrape_before, name, labels);
                    let after = labeled_histogram_buckets(&scrape_after, name, labels);
                    (k, bucket_quantile(&before, &after, 0.99).0 * 1e3)
                })
                .collect(),
        };
        let cpu = meter.read();
        let t = Instant::now();
        self.engine.wait_applied(acked).await?;
        Ok(Phase {
            rate,
            target,
            sent_rate,
            kinds,
            engine_p99,
            payments,
            caught_up_after: t.elapsed(),
            cpu,
        })
    }
}

/// Sends `requests` on schedule, `rate` per second from now, each to
/// `subject(kind)`, whatever the replies; returns the rate they were
/// really sent at and, per kind, the latencies from when each was due.
async fn open_loop(
    client: &async_nats::Client,
    requests: Vec<Request>,
    rate: f64,
    subject: impl Fn(Kind) -> Subject,
) -> (f64, BTreeMap<Kind, RequestLoad>) {
    let count = requests.len();
    let start = Instant::now();
    let mut in_flight = Vec::with_capacity(count);
    for (i, r) in requests.into_iter().enumerate() {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        // Never early; late when the sender itself was held up, and then
        // the lateness is part of the latency.
        tokio::time::sleep_until(due.into()).await;
        let (client, subject) = (client.clone(), subject(r.kind));
        in_flight.push(tokio::spawn(async move {
            let outcome = Outcome::of(client.request(subject, r.body).await);
            (r.kind, due.elapsed(), outcome)
        }));
    }
    let sent_rate = count as f64 / start.elapsed().as_secs_f64();
    let mut by_kind: BTreeMap<Kind, Vec<(Duration, Outcome)>> = BTreeMap::new();
    for task in in_flight {
        if let Ok((kind, latency, outcome)) = task.await {
            by_kind.entry(kind).or_default().push((latency, outcome));
        }
    }
    let seconds = count as f64 / rate;
    let kinds = by_kind
        .into_iter()
        .map(|(k, outcomes)| {
            let n = outcomes.len() as f64;
            (k, RequestLoad::tally(n / seconds, outcomes))
        })
        .collect();
    (sent_rate, kinds)
}

/// Runs the benchmark.
pub async fn run(args: &Args) -> Result<Report> {
    let h = Harness::start().await?;
    eprintln!(
        "launch-day: pre-publishing {} citizens and {} authorizations...",
        args.citizens, args.payments
    );
    let mut payments = Harness::generator(args.citizens);
    let last = prepublish(&h, &mut payments, args.citizens, args.payments).await?;
    let engine = h.engine()?;
    engine.wait_applied(last).await?;

    // The echo responder on its own connection, as the engine has its own.
    let echo_client = async_nats::connect(h.server.url()).await?;
    let echo = echo_responder(&echo_client, ECHO).await?;
    let app = async_nats::ConnectOptions::new()
        .request_timeout(Some(REQUEST_TIMEOUT))
        .connect(h.server.url())
        .await?;
    let subjects = BTreeMap::from([
        (Kind::Wallet, h.subjects.query("wallet").into()),
        (Kind::Citizen, h.subjects.query("citizen").into()),
        (Kind::Card, h.subjects.enroll(EnrollKind::Card).into()),
        (Kind::Statement, h.subjects.query("transactions").into()),
    ]);
    let mut run = Run {
        h: &h,
        engine: &engine,
        app,
        requests: App::new(args.citizens),
        payments,
        payment_rate: args.payment_rate as f64,
        subjects,
    };

    let first_rate = args.rates.first().copied().unwrap_or(GOAL_PER_SEC);
    eprintln!("launch-day: warm-up...");
    run.phase(Target::Echo, first_rate, WARM_UP).await?;
    run.phase(Target::Engine, first_rate, WARM_UP).await?;

    let load_before = crate::cpu::load_average();
    let measured = Duration::from_secs(args.seconds);
    let mut phases = Vec::new();
    for &rate in &args.rates {
        phases.push(run.phase(Target::Echo, rate, measured).await?);
        phases.push(run.phase(Target::Engine, rate, measured).await?);
    }

    let step = Duration::from_secs(args.ramp_seconds);
    let mut ramp = Vec::new();
    let mut passed = None;
    for rate in (args.ramp_step..=args.ramp_max).step_by(args.ramp_step.max(1)) {
        let phase = run.phase(Target::Engine, rate, step).await?;
        let over = phase.worst_p99().1 > GOAL_P99_MS;
        ramp.push(phase);
        if over {
            passed = Some(rate);
            ramp.push(run.phase(Target::Echo, rate, step).await?);
            break;
        }
    }
    echo.abort();
    let load_after = crate::cpu::load_average();
    let new_cards = run.requests.new_cards;
    engine.stop()?;

    Ok(Report {
        title: "Launch day: the app's requests under payments".into(),
        command: args.command(),
        setup: setup_text(args, new_cards, load_before, load_after),
        table: tables(args, &phases, &ramp, passed),
    })
}

/// The set-up paragraph.
fn setup_text(args: &Args, new_cards: u64, load_before: f64, load_after: f64) -> String {
    format!(
        "{} simulator citizens (1-4 cards each) and {} of their authorizations pre-published. One app-back-end \
         connection sends, open loop (each request at its due time whatever the replies; latency from the due time; \
         no reply in {} s is a timeout), 40% `cashback.query.wallet`, 30% `cashback.query.citizen`, 20% \
         `cashback.enroll.card` (a never-enrolled hpan for a random existing citizen; {new_cards} over the run) and \
         10% `cashback.query.transactions` (first page of 100), citizens picked uniformly; meanwhile {} authorizations/s \
         (the simulator's mix) are published with JetStream to the same engine. Before each engine phase the same \
         schedule goes to an echo responder on its own connection to the same server, with the payments flowing: \
         the reference. A warm-up of {} s on each first. \"engine <= X ms\": the engine's own p99 of the kind over \
         the phase (its `cashback_query_latency_seconds` or `cashback_enrollment_latency_seconds`, request taken to \
         reply sent; the bound of the bucket), so that the rest of the client's p99 is transport and waiting to be \
         taken. CPU is in cores over the phase: the engine process, the \
         nats-server process, this load generator, and the rest of the machine (other sessions); load is the 1-minute load average at the phase's \
         end ({load_before:.1} before the measured phases, {load_after:.1} after the ramp).",
        args.citizens,
        args.payments,
        REQUEST_TIMEOUT.as_secs(),
        args.payment_rate,
        WARM_UP.as_secs(),
    )
}

/// The measured phases' table, the goal's verdict, and the ramp.
fn tables(args: &Args, phases: &[Phase], ramp: &[Phase], passed: Option<usize>) -> String {
    let kinds: Vec<String> = Kind::ALL
        .iter()
        .map(|k| format!("{} p50 / p99", k.name()))
        .collect();
    let rows: Vec<String> = phases.iter().map(Phase::row).collect();
    let goal = match phases
        .iter()
        .find(|p| p.target == Target::Engine && p.rate == GOAL_PER_SEC)
    {
        Some(p) if p.met() => format!(
            "**Goal ({GOAL_PER_SEC} requests/s, every kind's p99 <= {GOAL_P99_MS} ms, 0 errors): met.**"
        ),
        Some(p) => {
            let (kind, worst) = p.worst_p99();
            let (timeouts, refused) = p.errors();
            format!(
                "**Goal ({GOAL_PER_SEC} requests/s, every kind's p99 <= {GOAL_P99_MS} ms, 0 errors): missed**: \
                 worst p99 {worst:.1} ms ({}), {timeouts} timeouts, {refused} ok:false, {:.0} requests/s sent.",
                kind.name(),
                p.sent_rate
            )
        }
        None => format!("Goal ({GOAL_PER_SEC} requests/s): not measured (`--rates` without it)."),
    };
    let ramp_rows: Vec<String> = ramp.iter().map(Phase::ramp_row).collect();
    let passed = match passed {
        Some(rate) if rate > args.ramp_step => format!(
            "The first p99 over {GOAL_P99_MS} ms came at **{rate} requests/s** (at {}/s every kind's p99 was within it).",
            rate - args.ramp_step
        ),
        Some(rate) => format!(
            "A p99 passed {GOAL_P99_MS} ms already at the ramp's first step, **{rate} requests/s**."
        ),
        None => format!(
            "Every kind's p99 stayed within {GOAL_P99_MS} ms up to {} requests/s, the ramp's end.",
            args.ramp_max
        ),
    };
    format!(
        "| requests/s due | answered by | sent/s | {} | errors | payments/s | CPU (cores) | goal: p99 <= {GOAL_P99_MS} ms each, 0 errors |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n{}\n\n{goal}\n\n\
         Ramp, {} s steps of {}/s until a kind's p99 passes {GOAL_P99_MS} ms (then the echo at that rate):\n\n\
         | requests/s due | answered by | sent/s | p99 ms (engine's own p99 <= bucket): wallet / citizen / new card / statement | errors | CPU (cores) | p99 <= {GOAL_P99_MS} ms |\n\
         |---|---|---|---|---|---|---|\n{}\n\n{passed}",
        kinds.join(" | "),
        rows.join("\n"),
        args.ramp_seconds,
        args.ramp_step,
        ramp_rows.join("\n"),
    )
}
