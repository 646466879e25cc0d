//! Throughput, latency and memory of the Supercashback rank index at the scale
//! of the real programme (8.4M ranked citizens, 2021H1 count distribution).
//!
//! `cargo run --release -p cashback-engine --example rank_bench -- [N]`
//!
//! One line per figure. Latencies are timed call by call with `Instant`, whose
//! own cost (printed first) is included in them; the "mean" figures time a
//! whole batch and divide.
//!
//! Then, in the same run, the usual leaderboard for comparison: a Redis sorted
//! set (Debian `redis-server`, started here on a free loopback port and killed
//! at the end) loaded with the same citizens and given updates of the same
//! shape, pipelined as `redis-benchmark -P 256` would; without `redis-server`
//! on the PATH that part is skipped with a loud line.

use cashback_engine::rank::bench::{self, Rng};
use cashback_engine::rank::RankIndex;
use cashback_engine::time::Timestamp;
use std::hint::black_box;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Updates per measured workload: enough to spread over the whole index.
const UPDATES: usize = 4_000_000;

/// Updates per `update_many` call: what a shard might take from one fetch.
const BATCH: usize = 256;

/// Individually timed samples per latency figure.
const SAMPLES: usize = 1_000_000;

/// Individually timed leaderboard pages.
const PAGES: usize = 100_000;

/// Commands per pipelined round trip to Redis, as `redis-benchmark -P 256`.
const PIPELINE: usize = 256;

/// Redis updates per workload shape: half the index's, a stated subset.
/// Redis moves an existing member at about 65k/s at 8.4M here, so the full
/// 4M of each shape alone would take two minutes, more than the ~3 minutes
/// the whole Redis part may take; the rate is per update and the set's size
/// barely changes, so the subset does not favour either side.
const REDIS_UPDATES: usize = UPDATES / 2;

/// Individually timed (unpipelined) Redis queries: each is a loopback round
/// trip of some 30 us, so fewer than the index's samples keep the run short.
const REDIS_SAMPLES: usize = 100_000;

/// The index's figures that the Redis comparison lines need.
#[derive(Default)]
struct IndexFigures {
    /// Updates per second, wall time: payments by `update()`, payments by
    /// `update_many()`, reversals by `update()`, reversals by `update_many()`.
    payment_single: f64,
    payment_many: f64,
    reversal_single: f64,
    reversal_many: f64,
    /// `position()` timed singly, and its mean in a batch, in ns.
    position_p50: u64,
    position_p99: u64,
    position_mean: f64,
    /// `bytes_used()` per ranked citizen right after the build (all N
    /// ranked), the state that the Redis load reproduces.
    bytes_per_ranked: f64,
}

/// What the engine's ledger knows without asking the index; workloads are
/// prepared from it in advance so only index (or Redis) calls are timed. The
/// Redis side replays the same generators from the same start, so its
/// payments are the first ones of the index's first workload, update for
/// update.
struct Ledger {
    counts: Vec<u32>,
    lasts: Vec<Timestamp>,
    /// The clock of the newest payment, 1 ms further at each one.
    now_nanos: i128,
}

impl Ledger {
    fn new(counts: Vec<u32>, lasts: Vec<Timestamp>) -> Self {
        Ledger {
            counts,
            lasts,
            now_nanos: bench::NOW_SECS as i128 * 1_000_000_000,
        }
    }

    /// `k` payments: a random citizen's count + 1 at the newest `last_trx`.
    fn payments(&mut self, rng: &mut Rng, k: usize) -> Vec<(u32, u32, Timestamp)> {
        let n = self.counts.len() as u64;
        (0..k)
            .map(|_| {
                let c = rng.below(n) as usize;
                self.now_nanos += 1_000_000;
                self.counts[c] += 1;
                self.lasts[c] = Timestamp::from_unix_nanos(self.now_nanos);
                (c as u32, self.counts[c], self.lasts[c])
            })
            .collect()
    }

    /// `k` reversals: count - 1, last_trx unchanged, so the citizen lands at
    /// its old time somewhere inside the lower bucket (a count of 1 drops out).
    fn reversals(&mut self, rng: &mut Rng, k: usize) -> Vec<(u32, u32, Timestamp)> {
        let n = self.counts.len() as u64;
        (0..k)
            .map(|_| {
                let c = rng.below(n) as usize;
                self.counts[c] = self.counts[c].saturating_sub(1);
                (c as u32, self.counts[c], self.lasts[c])
            })
            .collect()
    }

    /// Citizens with a count above 0.
    fn ranked(&self) -> u64 {
        self.counts.iter().filter(|&&c| c > 0).count() as u64
    }
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.replace('_', "").parse().expect("N: number of citizens"))
        .unwrap_or(8_400_000);
    assert!(n > 0 && n < u32::MAX as usize);

    let t = Instant::now();
    let keys = bench::synthetic(n, 42);
    let mut counts: Vec<u32> = keys.iter().map(|k| k.count).collect();
    counts.sort_unstable();
    let nth_from_top = |k: usize| counts[n - k.min(n)];
    println!(
        "synthetic data: {n} citizens in {:.1} s; count median {}, 100,000th {}, max {}",
        t.elapsed().as_secs_f64(),
        counts[n / 2],
        nth_from_top(100_000),
        counts[n - 1]
    );
    drop(counts);

    let t = Instant::now();
    let mut index = RankIndex::new();
    for (citizen, key) in keys.iter().enumerate() {
        index.set(citizen as u32, key.clone());
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "build by set(): {:.2} M citizens/s ({secs:.1} s)",
        n as f64 / secs / 1e6
    );
    drop(keys);
    println!(
        "memory after build: {:.1} bytes/citizen ({:.0} MiB; id strings shared with the engine, not counted)",
        index.bytes_used() as f64 / n as f64,
        index.bytes_used() as f64 / (1 << 20) as f64
    );

    let mut figures = IndexFigures {
        bytes_per_ranked: index.bytes_used() as f64 / index.len() as f64,
        ..IndexFigures::default()
    };

    let mut rng = Rng::new(7);
    let mut ledger = Ledger::new(
        (0..n as u32)
            .map(|c| index.get(c).map_or(0, |k| k.count))
            .collect(),
        (0..n as u32)
            .map(|c| index.get(c).map_or(Timestamp::default(), |k| k.last_trx))
            .collect(),
    );
    let work = ledger.payments(&mut rng, UPDATES);
    let secs = timed(|| {
        for &(citizen, count, last) in &work {
            index.update(citizen, count, last);
        }
    });
    figures.payment_single = report(
        "payment updates (count+1, newest last_trx), update() one by one",
        secs,
    );
    let work = ledger.payments(&mut rng, UPDATES);
    let secs = timed(|| {
        for batch in work.chunks(BATCH) {
            index.update_many(batch);
        }
    });
    figures.payment_many = report(
        &format!("payment updates (count+1, newest last_trx), update_many() batches of {BATCH}"),
        secs,
    );

    let work = ledger.reversals(&mut rng, UPDATES);
    let secs = timed(|| {
        for &(citizen, count, last) in &work {
            index.update(citizen, count, last);
        }
    });
    figures.reversal_single = report(
        "reversal updates (count-1, same last_trx), update() one by one",
        secs,
    );
    let work = ledger.reversals(&mut rng, UPDATES);
    let secs = timed(|| {
        for batch in work.chunks(BATCH) {
            index.update_many(batch);
        }
    });
    figures.reversal_many = report(
        &format!("reversal updates (count-1, same last_trx), update_many() batches of {BATCH}"),
        secs,
    );
    drop(work);
    for _ in 0..1_000 {
        let c = rng.below(n as u64) as u32;
        assert_eq!(
            index.get(c).map(|k| (k.count, k.last_trx)),
            Some((ledger.counts[c as usize], ledger.lasts[c as usize]))
        );
    }
    assert_eq!(index.len(), ledger.ranked());
    drop(ledger);
    println!("ranked now: {}", index.len());

    // Instant's own cost, included in every individually timed figure.
    let mut overhead = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let t = Instant::now();
        overhead.push(t.elapsed().as_nanos() as u64);
    }
    let (p50, p99) = percentiles(&mut overhead);
    println!("timer overhead (Instant::now + elapsed): p50 {p50} ns, p99 {p99} ns");

    let citizens: Vec<u32> = (0..SAMPLES).map(|_| rng.below(n as u64) as u32).collect();
    let mut lat = Vec::with_capacity(SAMPLES);
    for &citizen in &citizens {
        let t = Instant::now();
        black_box(index.position(black_box(citizen)));
        lat.push(t.elapsed().as_nanos() as u64);
    }
    let (p50, p99) = percentiles(&mut lat);
    let t = Instant::now();
    for &citizen in &citizens {
        black_box(index.position(black_box(citizen)));
    }
    let mean = t.elapsed().as_nanos() as f64 / SAMPLES as f64;
    println!(
        "position(citizen): p50 {p50} ns, p99 {p99} ns (timed singly); mean {mean:.0} ns in a batch"
    );
    figures.position_p50 = p50;
    figures.position_p99 = p99;
    figures.position_mean = mean;

    // What a cluster asks every node about a citizen of another node: keys
    // of another population of the same shape (another seed).
    let foreign = bench::synthetic(SAMPLES, 7);
    let mut lat = Vec::with_capacity(SAMPLES);
    for key in &foreign {
        let t = Instant::now();
        black_box(index.count_before(black_box(key)));
        lat.push(t.elapsed().as_nanos() as u64);
    }
    let (p50, p99) = percentiles(&mut lat);
    println!("count_before(key of another node): p50 {p50} ns, p99 {p99} ns");
    drop(foreign);

    let len = index.len();
    let positions: Vec<u64> = (0..SAMPLES).map(|_| 1 + rng.below(len)).collect();
    let mut lat = Vec::with_capacity(SAMPLES);
    for &position in &positions {
        let t = Instant::now();
        black_box(index.at(black_box(position)));
        lat.push(t.elapsed().as_nanos() as u64);
    }
    let (p50, p99) = percentiles(&mut lat);
    println!("at(position): p50 {p50} ns, p99 {p99} ns");

    let t = Instant::now();
    for &position in &positions {
        black_box(index.min_transaction_number(black_box(position)));
    }
    let mean = t.elapsed().as_nanos() as f64 / SAMPLES as f64;
    println!("min_transaction_number(K) (count at position K): mean {mean:.0} ns");

    let offsets: Vec<u64> = (0..PAGES).map(|_| rng.below(len - 100.min(len))).collect();
    let mut lat = Vec::with_capacity(PAGES);
    for &offset in &offsets {
        let t = Instant::now();
        black_box(index.page(black_box(offset), 100));
        lat.push(t.elapsed().as_nanos() as u64);
    }
    let (p50, p99) = percentiles(&mut lat);
    println!(
        "page(random offset, 100): p50 {:.1} us, p99 {:.1} us",
        p50 as f64 / 1e3,
        p99 as f64 / 1e3
    );

    let t = Instant::now();
    index.check_invariants();
    println!("check_invariants: ok in {:.1} s", t.elapsed().as_secs_f64());
    println!(
        "memory: {:.1} bytes/citizen ({:.0} MiB for {n}; id strings shared with the engine, not counted)",
        index.bytes_used() as f64 / n as f64,
        index.bytes_used() as f64 / (1 << 20) as f64
    );
    // The Redis server needs about 1 GiB at 8.4M: give it the index's memory.
    drop(index);

    match redis_side(n, &figures) {
        Ok(()) => {}
        Err(RedisSkip::NotInstalled) => println!(
            "!!!!! REDIS SIDE SKIPPED: `redis-server` not found on the PATH \
             (Debian: apt-get install redis-server); no comparison figures !!!!!"
        ),
        Err(RedisSkip::Failed(e)) => {
            println!("!!!!! REDIS SIDE FAILED, comparison incomplete: {e} !!!!!")
        }
    }
}

/// Nanoseconds this thread has spent on a CPU (Linux schedstat), to tell
/// the index's own speed from time lost waiting for a core while other work
/// shares the machine.
fn on_cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Wall and on-CPU time of `f`, in seconds.
fn timed(f: impl FnOnce()) -> (f64, Option<f64>) {
    let cpu = on_cpu_ns();
    let t = Instant::now();
    f();
    let wall = t.elapsed().as_secs_f64();
    let cpu = cpu.zip(on_cpu_ns()).map(|(a, b)| (b - a) as f64 / 1e9);
    (wall, cpu)
}

/// One throughput line for `UPDATES` operations; returns operations per
/// second of wall time.
fn report(what: &str, secs: (f64, Option<f64>)) -> f64 {
    report_n(what, UPDATES, secs, "")
}

/// One throughput line for `ops` operations, `cpu` being the on-CPU time of
/// whoever does the work (this thread for the index, the server's main
/// thread for Redis); returns operations per second of wall time.
fn report_n(what: &str, ops: usize, (wall, cpu): (f64, Option<f64>), whose: &str) -> f64 {
    let rate = |secs: f64| ops as f64 / secs / 1e6;
    // Two decimals as ever; a third below 1 M/s, where Redis lives.
    let dp = if rate(wall) < 1.0 { 3 } else { 2 };
    match cpu {
        Some(cpu) => println!(
            "{what}: {:.dp$} M/s ({:.0} ns each); {whose}on-CPU {:.dp$} M/s ({:.0}% of wall time on CPU)",
            rate(wall),
            wall * 1e9 / ops as f64,
            rate(cpu),
            cpu / wall * 100.0
        ),
        None => println!(
            "{what}: {:.dp$} M/s ({:.0} ns each)",
            rate(wall),
            wall * 1e9 / ops as f64
        ),
    }
    ops as f64 / wall
}

/// The 50th and 99th percentiles, in the samples' unit.
fn percentiles(samples: &mut [u64]) -> (u64, u64) {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    (at(0.50), at(0.99))
}

/// Why the Redis comparison is missing.
enum RedisSkip {
    /// No `redis-server` to start: not an error of the index.
    NotInstalled,
    /// Redis started (or tried to) and something went wrong.
    Failed(String),
}

impl From<io::Error> for RedisSkip {
    fn from(e: io::Error) -> Self {
        RedisSkip::Failed(e.to_string())
    }
}

/// The Redis side: the same N citizens, the same shapes of update, position
/// queries pipelined and one by one, and memory from `INFO memory`; then the
/// comparison lines.
fn redis_side(n: usize, index: &IndexFigures) -> Result<(), RedisSkip> {
    let started = Instant::now();
    let server = RedisServer::start()?;
    let mut redis = server.connect()?;
    let version = redis.info_field("server", "redis_version")?;
    println!(
        "redis: redis-server {version} pid {} on 127.0.0.1:{}, no persistence, one connection, pipeline depth {PIPELINE}",
        server.child.id(),
        server.port
    );
    let used_before = redis.used_memory()?;

    let t = Instant::now();
    let keys = bench::synthetic(n, 42);
    let mut ledger = Ledger::new(
        keys.iter().map(|k| k.count).collect(),
        keys.iter().map(|k| k.last_trx).collect(),
    );
    drop(keys);
    let load: Vec<(u32, u32, Timestamp)> = (0..n)
        .map(|c| (c as u32, ledger.counts[c], ledger.lasts[c]))
        .collect();
    println!(
        "redis: same synthetic data regenerated in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let secs = server.timed(|| redis.zadd_all(&load))?;
    report_n(
        &format!("redis load: ZADD of {n} new members, pipelined {PIPELINE}"),
        n,
        secs,
        "redis-server ",
    );
    drop(load);
    assert_eq!(redis.command_int(&[b"ZCARD", KEY])?, n as i64);
    let used_loaded = redis.used_memory()?;
    let redis_bytes = (used_loaded - used_before) as f64 / n as f64;
    println!(
        "redis memory after load: {redis_bytes:.1} bytes/member ({:.0} MiB; INFO used_memory after - before; \
         members are decimal citizen indices)",
        (used_loaded - used_before) as f64 / (1 << 20) as f64
    );

    // One workload of each shape, REDIS_UPDATES long: the payments are the
    // start of the index's first payment workload (same ledger start, same
    // seed); the reversals follow them and so differ from the index's, which
    // followed two payment workloads, in citizens only.
    let mut rng = Rng::new(7);
    let work = ledger.payments(&mut rng, REDIS_UPDATES);
    let secs = server.timed(|| redis.zadd_all(&work))?;
    let payment_rate = report_n(
        &format!("redis payment updates (count+1, newest last_trx), ZADD pipelined {PIPELINE}"),
        REDIS_UPDATES,
        secs,
        "redis-server ",
    );
    let work = ledger.reversals(&mut rng, REDIS_UPDATES);
    let secs = server.timed(|| redis.zadd_all(&work))?;
    let reversal_rate = report_n(
        &format!(
            "redis reversal updates (count-1, same last_trx), ZADD (ZREM at count 0) pipelined {PIPELINE}"
        ),
        REDIS_UPDATES,
        secs,
        "redis-server ",
    );
    drop(work);
    for _ in 0..1_000 {
        let c = rng.below(n as u64) as usize;
        let expected =
            (ledger.counts[c] > 0).then(|| redis_score(ledger.counts[c], ledger.lasts[c]));
        let got = match redis.command(&[b"ZSCORE", KEY, c.to_string().as_bytes()])? {
            Reply::Nil => None,
            Reply::Bulk(s) => Some(
                String::from_utf8_lossy(&s)
                    .parse::<f64>()
                    .map_err(|e| RedisSkip::Failed(format!("ZSCORE {c}: {e}")))?
                    as u64,
            ),
            other => return Err(RedisSkip::Failed(format!("ZSCORE {c}: {other:?}"))),
        };
        assert_eq!(got, expected, "Redis score of citizen {c}");
    }
    let ranked = ledger.ranked();
    assert_eq!(redis.command_int(&[b"ZCARD", KEY])?, ranked as i64);
    let used_updated = redis.used_memory()?;
    println!(
        "redis ranked now: {ranked}; {:.1} bytes/member",
        (used_updated - used_before) as f64 / ranked as f64
    );

    // Position queries for random citizens, ranked or not, as the index's.
    let citizens: Vec<u32> = (0..SAMPLES).map(|_| rng.below(n as u64) as u32).collect();
    let secs = server.timed(|| redis.zrevrank_all(&citizens))?;
    let rank_rate = report_n(
        &format!("redis ZREVRANK (position), pipelined {PIPELINE}"),
        SAMPLES,
        secs,
        "redis-server ",
    );
    let mut lat = Vec::with_capacity(REDIS_SAMPLES);
    for &citizen in &citizens[..REDIS_SAMPLES] {
        let t = Instant::now();
        redis.zrevrank_all(&[citizen])?;
        lat.push(t.elapsed().as_nanos() as u64);
    }
    let (p50, p99) = percentiles(&mut lat);
    println!(
        "redis ZREVRANK unpipelined (one round trip each, loopback included): p50 {:.1} us, p99 {:.1} us",
        p50 as f64 / 1e3,
        p99 as f64 / 1e3
    );
    drop(redis);
    drop(server);
    println!(
        "redis part: {:.0} s, server killed",
        started.elapsed().as_secs_f64()
    );

    let single = index.payment_single / payment_rate;
    let many = index.payment_many / payment_rate;
    let rev_single = index.reversal_single / reversal_rate;
    let rev_many = index.reversal_many / reversal_rate;
    let worst = single.min(many).min(rev_single).min(rev_many);
    println!(
        "vs Redis, updates/s: payments {single:.1}x (update()) {many:.1}x (update_many()), \
         reversals {rev_single:.1}x / {rev_many:.1}x, of pipelined ZADD; \
         goal >= 10x: {} (worst {worst:.1}x)",
        if worst >= 10.0 { "met" } else { "MISSED" }
    );
    println!(
        "vs Redis, position: p50 {} ns / p99 {} ns vs ZREVRANK unpipelined {:.1} us / {:.1} us; \
         batch {:.2} M/s vs pipelined {:.3} M/s ({:.0}x)",
        index.position_p50,
        index.position_p99,
        p50 as f64 / 1e3,
        p99 as f64 / 1e3,
        1e3 / index.position_mean,
        rank_rate / 1e6,
        1e9 / index.position_mean / rank_rate
    );
    println!(
        "vs Redis, memory: {:.1} bytes per ranked citizen (index, id strings not counted) vs {redis_bytes:.1} \
         (Redis, member strings counted); index/Redis {:.2}",
        index.bytes_per_ranked,
        index.bytes_per_ranked / redis_bytes
    );
    Ok(())
}

/// The sorted set's key.
const KEY: &[u8] = b"rank";

/// The best a sorted set can do with the RULES.md order: one f64 score,
/// descending for ZREVRANK. Count in the high bits, then `last_trx` as
/// milliseconds since the period start, inverted so the earlier ranks higher;
/// count < 2^13 and ms < 2^40 stay within the 53 bits a f64 holds exactly
/// (written as an integer, so Redis parses it without rounding). A f64 cannot
/// hold the full tie-break chain: `last_trx` below the millisecond,
/// `tc_accepted_at` and `citizen_id` would need some 100 more bits, so ties
/// on the packed score fall to Redis's own order (member bytes, descending),
/// not the rules'. The index keeps the whole chain.
fn redis_score(count: u32, last: Timestamp) -> u64 {
    const MS_BITS: u32 = 40;
    let ms = last.unix_nanos() / 1_000_000 - bench::PERIOD_START_SECS as i128 * 1_000;
    assert!(count < 1 << 13 && (0..1i128 << MS_BITS).contains(&ms));
    (count as u64) << MS_BITS | ((1u64 << MS_BITS) - 1 - ms as u64)
}

/// A `redis-server` child on a loopback port; killed when dropped, so an
/// early return or a panic does not leave it behind.
struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    fn start() -> Result<Self, RedisSkip> {
        // A port the kernel just found free; the tiny race until Redis binds
        // it shows up as a failed start, not as a wrong server.
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(std::env::temp_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => RedisSkip::NotInstalled,
                _ => RedisSkip::Failed(format!("starting redis-server: {e}")),
            })?;
        Ok(RedisServer { child, port })
    }

    /// A connection once the server answers PING (it starts in milliseconds).
    fn connect(&self) -> Result<Redis, RedisSkip> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(stream) = TcpStream::connect(("127.0.0.1", self.port)) {
                let mut redis = Redis::new(stream)?;
                if let Ok(Reply::Simple(_)) = redis.command(&[b"PING"]) {
                    return Ok(redis);
                }
            }
            if Instant::now() > deadline {
                return Err(RedisSkip::Failed(format!(
                    "redis-server on port {} did not answer within 10 s",
                    self.port
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Nanoseconds the server's main thread, which runs every command, has
    /// spent on a CPU: tells Redis's own speed from time lost to the client
    /// and whatever else shares the two cores.
    fn on_cpu_ns(&self) -> Option<u64> {
        let pid = self.child.id();
        let text = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/schedstat")).ok()?;
        text.split_whitespace().next()?.parse().ok()
    }

    /// Wall time of `f`, and the server's on-CPU time meanwhile, in seconds.
    fn timed(&self, f: impl FnOnce() -> io::Result<()>) -> Result<(f64, Option<f64>), RedisSkip> {
        let cpu = self.on_cpu_ns();
        let t = Instant::now();
        f()?;
        let wall = t.elapsed().as_secs_f64();
        let cpu = cpu.zip(self.on_cpu_ns()).map(|(a, b)| (b - a) as f64 / 1e9);
        Ok((wall, cpu))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One RESP2 reply, as far as this benchmark reads them; the contents of
/// some are only ever shown in error messages.
#[derive(Debug)]
#[allow(dead_code)]
enum Reply {
    Simple(Vec<u8>),
    Int(i64),
    Bulk(Vec<u8>),
    Nil,
    Array(Vec<Reply>),
}

/// One connection speaking RESP2: commands are queued in `out` and sent in
/// one write, the replies are read back in order.
struct Redis {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    out: Vec<u8>,
    line: Vec<u8>,
}

impl Redis {
    fn new(stream: TcpStream) -> io::Result<Self> {
        // Unpipelined latency must not wait for Nagle.
        stream.set_nodelay(true)?;
        Ok(Redis {
            reader: BufReader::with_capacity(1 << 16, stream.try_clone()?),
            writer: stream,
            out: Vec::with_capacity(1 << 16),
            line: Vec::new(),
        })
    }

    /// Queues one command (an array of bulk strings).
    fn push(&mut self, args: &[&[u8]]) {
        let out = &mut self.out;
        let _ = write!(out, "*{}\r\n", args.len());
        for arg in args {
            let _ = write!(out, "${}\r\n", arg.len());
            out.extend_from_slice(arg);
            out.extend_from_slice(b"\r\n");
        }
    }

    /// Sends what is queued.
    fn send(&mut self) -> io::Result<()> {
        self.writer.write_all(&self.out)?;
        self.out.clear();
        Ok(())
    }

    fn command(&mut self, args: &[&[u8]]) -> io::Result<Reply> {
        self.push(args);
        self.send()?;
        self.reply()
    }

    fn command_int(&mut self, args: &[&[u8]]) -> io::Result<i64> {
        match self.command(args)? {
            Reply::Int(i) => Ok(i),
            other => Err(bad(format!("expected an integer, got {other:?}"))),
        }
    }

    /// One field of `INFO section`.
    fn info_field(&mut self, section: &str, field: &str) -> io::Result<String> {
        let Reply::Bulk(text) = self.command(&[b"INFO", section.as_bytes()])? else {
            return Err(bad(format!("INFO {section}: not a bulk string")));
        };
        let text = String::from_utf8_lossy(&text);
        text.lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .map(|v| v.trim().to_string())
            .ok_or_else(|| bad(format!("INFO {section}: no {field}")))
    }

    /// `used_memory` (bytes the allocator holds for data) from `INFO memory`.
    fn used_memory(&mut self) -> io::Result<i64> {
        let v = self.info_field("memory", "used_memory")?;
        v.parse().map_err(|e| bad(format!("used_memory {v}: {e}")))
    }

    /// The ledger's `(citizen, count, last_trx)` updates as ZADD (ZREM at
    /// count 0, where the index drops the citizen), `PIPELINE` per round trip.
    fn zadd_all(&mut self, updates: &[(u32, u32, Timestamp)]) -> io::Result<()> {
        for batch in updates.chunks(PIPELINE) {
            for &(citizen, count, last) in batch {
                let member = citizen.to_string();
                if count == 0 {
                    self.push(&[b"ZREM", KEY, member.as_bytes()]);
                } else {
                    let score = redis_score(count, last).to_string();
                    self.push(&[b"ZADD", KEY, score.as_bytes(), member.as_bytes()]);
                }
            }
            self.send()?;
            for _ in batch {
                match self.reply()? {
                    Reply::Int(_) => {}
                    other => return Err(bad(format!("ZADD/ZREM: {other:?}"))),
                }
            }
        }
        Ok(())
    }

    /// ZREVRANK (0-based position, nil if unranked) for each citizen,
    /// `PIPELINE` per round trip; the answers are read and dropped.
    fn zrevrank_all(&mut self, citizens: &[u32]) -> io::Result<()> {
        for batch in citizens.chunks(PIPELINE) {
            for &citizen in batch {
                self.push(&[b"ZREVRANK", KEY, citizen.to_string().as_bytes()]);
            }
            self.send()?;
            for _ in batch {
                match self.reply()? {
                    Reply::Int(_) | Reply::Nil => {}
                    other => return Err(bad(format!("ZREVRANK: {other:?}"))),
                }
            }
        }
        Ok(())
    }

    /// Reads one reply; a Redis error reply is an `Err`.
    fn reply(&mut self) -> io::Result<Reply> {
        self.line.clear();
        self.reader.read_until(b'\n', &mut self.line)?;
        if self.line.len() < 3 || !self.line.ends_with(b"\r\n") {
            return Err(bad("truncated reply".into()));
        }
        let body = &self.line[1..self.line.len() - 2];
        let int = || -> io::Result<i64> {
            std::str::from_utf8(body)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad(format!("bad number {:?}", String::from_utf8_lossy(body))))
        };
        match self.line[0] {
            b'+' => Ok(Reply::Simple(body.to_vec())),
            b'-' => Err(bad(format!("redis: {}", String::from_utf8_lossy(body)))),
            b':' => Ok(Reply::Int(int()?)),
            b'$' => match int()? {
                len if len < 0 => Ok(Reply::Nil),
                len => {
                    let mut buf = vec![0; len as usize + 2];
                    self.reader.read_exact(&mut buf)?;
                    if !buf.ends_with(b"\r\n") {
                        return Err(bad("bulk string without CRLF".into()));
                    }
                    buf.truncate(len as usize);
                    Ok(Reply::Bulk(buf))
                }
            },
            b'*' => match int()? {
                len if len < 0 => Ok(Reply::Nil),
                len => (0..len)
                    .map(|_| self.reply())
                    .collect::<io::Result<_>>()
                    .map(Reply::Array),
            },
            other => Err(bad(format!("unknown reply type {:?}", other as char))),
        }
    }
}

/// A protocol or reply error.
fn bad(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}
