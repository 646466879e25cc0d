//! A cheap hasher for keys that are already uniformly distributed (SHA-256
//! card hashes, 128-bit de-duplication hashes) or small integers. SipHash,
//! the std default, showed up as a top cost on the hot path; these keys come
//! from trusted hashing or from the engine itself, so DoS-resistant hashing
//! buys nothing here.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// Folds the key's bytes into 64 bits, then mixes so that every bit of the
/// result depends on every input bit (hashbrown uses the top bits too).
#[derive(Default, Clone, Copy)]
pub struct FoldHasher(u64);

impl Hasher for FoldHasher {
    fn finish(&self) -> u64 {
        // One round of the splitmix64 finaliser.
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(b);
        }
    }

    fn write_u32(&mut self, v: u32) {
        self.0 = self.0.rotate_left(5) ^ v as u64;
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = self.0.rotate_left(5) ^ v;
    }

    fn write_u128(&mut self, v: u128) {
        self.0 = self.0.rotate_left(5) ^ (v as u64) ^ ((v >> 64) as u64);
    }

    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }
}

/// The hasher's builder.
pub type FastBuild = BuildHasherDefault<FoldHasher>;

/// A `HashMap` with the fast hasher.
pub type FastMap<K, V> = HashMap<K, V, FastBuild>;

/// A `HashSet` with the fast hasher.
pub type FastSet<K> = HashSet<K, FastBuild>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{BuildHasher, Hash};

    #[test]
    fn small_integers_spread_over_the_top_bits() {
        let b = FastBuild::default();
        let tops: FastSet<u64> = (0u32..1000).map(|i| b.hash_one(i) >> 57).collect();
        assert!(tops.len() > 100, "top 7 bits must vary: {}", tops.len());
        let mut h = FoldHasher::default();
        [7u8; 32].hash(&mut h);
        assert_ne!(h.finish(), 0);
    }
}
