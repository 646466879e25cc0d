//! Throughput, latency and memory of the Supercashback rank index at the scale
//! of the real programme (8.4M ranked citizens, 2021H1 count distribution).
//!
//! `cargo run --release -p cashback-engine --example rank_bench -- [N]`
//!
//! One line per figure. Latencies are timed call by call with `Instant`, whose
//! own cost (printed first) is included in them; the "mean" figures time a
//! whole batch and divide.

use cashback_engine::rank::bench::{self, Rng};
use cashback_engine::rank::RankIndex;
use cashback_engine::time::Timestamp;
use std::hint::black_box;
use std::time::Instant;

/// Updates per measured workload: enough to spread over the whole index.
const UPDATES: usize = 4_000_000;

/// Updates per `update_many` call: what a shard might take from one fetch.
const BATCH: usize = 256;

/// Individually timed samples per latency figure.
const SAMPLES: usize = 1_000_000;

/// Individually timed leaderboard pages.
const PAGES: usize = 100_000;

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

    let mut rng = Rng::new(7);
    let mut now_nanos = bench::NOW_SECS as i128 * 1_000_000_000;
    // What the engine's ledger knows without asking the index; workloads are
    // prepared from these in advance so only index calls are timed.
    let mut counts: Vec<u32> = (0..n as u32)
        .map(|c| index.get(c).map_or(0, |k| k.count))
        .collect();
    let mut lasts: Vec<Timestamp> = (0..n as u32)
        .map(|c| index.get(c).map_or(Timestamp::default(), |k| k.last_trx))
        .collect();
    let mut payments = |rng: &mut Rng| -> Vec<(u32, u32, Timestamp)> {
        (0..UPDATES)
            .map(|_| {
                let c = rng.below(n as u64) as usize;
                now_nanos += 1_000_000;
                counts[c] += 1;
                lasts[c] = Timestamp::from_unix_nanos(now_nanos);
                (c as u32, counts[c], lasts[c])
            })
            .collect()
    };
    let work = payments(&mut rng);
    let secs = timed(|| {
        for &(citizen, count, last) in &work {
            index.update(citizen, count, last);
        }
    });
    report(
        "payment updates (count+1, newest last_trx), update() one by one",
        secs,
    );
    let work = payments(&mut rng);
    let secs = timed(|| {
        for batch in work.chunks(BATCH) {
            index.update_many(batch);
        }
    });
    report(
        &format!("payment updates (count+1, newest last_trx), update_many() batches of {BATCH}"),
        secs,
    );

    // Reversals: count - 1, last_trx unchanged, so the citizen lands at its
    // old time somewhere inside the lower bucket (a count of 1 drops out).
    let mut reversals = |rng: &mut Rng| -> Vec<(u32, u32, Timestamp)> {
        (0..UPDATES)
            .map(|_| {
                let c = rng.below(n as u64) as usize;
                counts[c] = counts[c].saturating_sub(1);
                (c as u32, counts[c], lasts[c])
            })
            .collect()
    };
    let work = reversals(&mut rng);
    let secs = timed(|| {
        for &(citizen, count, last) in &work {
            index.update(citizen, count, last);
        }
    });
    report(
        "reversal updates (count-1, same last_trx), update() one by one",
        secs,
    );
    let work = reversals(&mut rng);
    let secs = timed(|| {
        for batch in work.chunks(BATCH) {
            index.update_many(batch);
        }
    });
    report(
        &format!("reversal updates (count-1, same last_trx), update_many() batches of {BATCH}"),
        secs,
    );
    drop(work);
    for _ in 0..1_000 {
        let c = rng.below(n as u64) as u32;
        assert_eq!(
            index.get(c).map(|k| (k.count, k.last_trx)),
            Some((counts[c as usize], lasts[c as usize]))
        );
    }
    let ranked = counts.iter().filter(|&&c| c > 0).count() as u64;
    assert_eq!(index.len(), ranked);
    drop((counts, lasts));
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

/// One throughput line for `UPDATES` updates.
fn report(what: &str, (wall, cpu): (f64, Option<f64>)) {
    let rate = |secs: f64| UPDATES as f64 / secs / 1e6;
    match cpu {
        Some(cpu) => println!(
            "{what}: {:.2} M/s ({:.0} ns each); on-CPU {:.2} M/s ({:.0}% of wall time on CPU)",
            rate(wall),
            wall * 1e9 / UPDATES as f64,
            rate(cpu),
            cpu / wall * 100.0
        ),
        None => println!(
            "{what}: {:.2} M/s ({:.0} ns each)",
            rate(wall),
            wall * 1e9 / UPDATES as f64
        ),
    }
}

/// The 50th and 99th percentiles, in the samples' unit.
fn percentiles(samples: &mut [u64]) -> (u64, u64) {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    (at(0.50), at(0.99))
}
