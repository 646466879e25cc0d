//! Synthetic data for the benchmarks (`examples/rank_bench.rs`,
//! `examples/state_bench.rs`, `cashback-bench restart`): plain code, no
//! external generator, deterministic for a seed.
//!
//! Not part of the engine: compiled only with the `bench-data` feature, which
//! the engine's own examples and tests get through its dev-dependency on
//! itself and the `cashback-bench` binary through the root crate.

use super::RankKey;
use crate::time::Timestamp;
use std::sync::Arc;

/// SplitMix64: tiny, fast, good enough for workloads, and its mixing step
/// is a bijection, which gives unique citizen ids for free.
pub struct Rng {
    /// The generator state.
    state: u64,
}

/// SplitMix64's output function: a bijection on `u64`.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.state)
    }

    /// Uniform in `0..n` (n > 0), multiply-shift, no modulo bias to speak of.
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform in `(0, 1)`.
    pub fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.unit(), self.unit());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// 2021-01-01T00:00:00Z, the start of the 2021H1 period.
pub const PERIOD_START_SECS: i64 = 1_609_459_200;

/// "Now" in the synthetic period: 150 days in, when most payments are done.
pub const NOW_SECS: i64 = PERIOD_START_SECS + 150 * 86_400;

/// One payment count from the 2021H1 shape: log-normal with median 90 and
/// ~1.2% above 700 (the 100,000th of 8.4M needed ~700), with the tail
/// above 700 compressed so the maximum of 8.4M draws is about 1,500.
pub fn count(rng: &mut Rng) -> u32 {
    const MEDIAN: f64 = 90.0;
    const SIGMA: f64 = 0.907;
    const KNEE: f64 = 700.0;
    const TAIL_SIGMA: f64 = 0.25;
    let z = rng.normal();
    let z_knee = (KNEE / MEDIAN).ln() / SIGMA;
    let x = if z <= z_knee {
        MEDIAN * (SIGMA * z).exp()
    } else {
        KNEE * (TAIL_SIGMA * (z - z_knee)).exp()
    };
    x.round().clamp(1.0, 5_000.0) as u32
}

/// `n` ranked citizens (citizen index = position in the vector): counts as
/// [`count`], `last_trx` in the 20 days before [`NOW_SECS`] at whole
/// seconds (so equal instants happen, as with real `trx_date`s),
/// `tc_accepted_at` in December 2020, ids 16 hex digits in an order
/// unrelated to the index.
pub fn synthetic(n: usize, seed: u64) -> Vec<RankKey> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|i| {
            let count = count(&mut rng);
            let last = NOW_SECS - rng.below(20 * 86_400) as i64;
            let tc = PERIOD_START_SECS - 31 * 86_400 + rng.below(30 * 86_400) as i64;
            RankKey {
                count,
                last_trx: Timestamp::from_unix_nanos(last as i128 * 1_000_000_000),
                tc_accepted_at: Timestamp::from_unix_nanos(tc as i128 * 1_000_000_000),
                citizen_id: Arc::from(format!("{:016X}", mix(i as u64 ^ seed))),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_data_has_the_2021_shape() {
        let keys = synthetic(200_000, 3);
        let mut counts: Vec<u32> = keys.iter().map(|k| k.count).collect();
        counts.sort_unstable();
        let median = counts[counts.len() / 2];
        assert!((80..=100).contains(&median), "median {median}");
        // The 100,000th of 8.4M is the top 1.19%.
        let top = counts[counts.len() - counts.len() * 119 / 10_000];
        assert!((600..=800).contains(&top), "top 1.19% at {top}");
        assert!(*counts.last().unwrap() <= 1_600);
    }
}
