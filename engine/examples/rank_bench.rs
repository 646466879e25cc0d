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

    // Payments: count + 1 with the newest last_trx, as the engine does.
    let citizens: Vec<u32> = (0..UPDATES).map(|_| rng.below(n as u64) as u32).collect();
    let t = Instant::now();
    for &citizen in &citizens {
        now_nanos += 1_000_000;
        let count = index.get(citizen).map_or(0, |k| k.count) + 1;
        index.update(citizen, count, Timestamp::from_unix_nanos(now_nanos));
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "payment updates (count+1, newest last_trx, update()): {:.2} M/s ({:.0} ns each)",
        UPDATES as f64 / secs / 1e6,
        secs * 1e9 / UPDATES as f64
    );

    // The same through set() with a whole key, as a caller without update()
    // would: includes cloning the key's Arc<str>.
    let citizens: Vec<u32> = (0..UPDATES).map(|_| rng.below(n as u64) as u32).collect();
    let t = Instant::now();
    for &citizen in &citizens {
        now_nanos += 1_000_000;
        let mut key = index.get(citizen).expect("every citizen is known").clone();
        key.count += 1;
        key.last_trx = Timestamp::from_unix_nanos(now_nanos);
        index.set(citizen, key);
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "payment updates (count+1, newest last_trx, set() with cloned key): {:.2} M/s ({:.0} ns each)",
        UPDATES as f64 / secs / 1e6,
        secs * 1e9 / UPDATES as f64
    );

    // Reversals: count - 1, last_trx unchanged, so the citizen lands at its
    // old time somewhere inside the lower bucket (a count of 1 drops out).
    let citizens: Vec<u32> = (0..UPDATES).map(|_| rng.below(n as u64) as u32).collect();
    let t = Instant::now();
    for &citizen in &citizens {
        let key = index.get(citizen).expect("every citizen is known");
        let (count, last) = (key.count.saturating_sub(1), key.last_trx);
        index.update(citizen, count, last);
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "reversal updates (count-1, same last_trx, update()): {:.2} M/s ({:.0} ns each)",
        UPDATES as f64 / secs / 1e6,
        secs * 1e9 / UPDATES as f64
    );
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

/// The 50th and 99th percentiles, in the samples' unit.
fn percentiles(samples: &mut [u64]) -> (u64, u64) {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    (at(0.50), at(0.99))
}
