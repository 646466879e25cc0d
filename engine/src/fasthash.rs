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

/// Most elements reserved up front when decoding: the length comes from
/// the snapshot, so a corrupt one must not make the decoder allocate
/// without bound (beyond it the set grows as usual).
const MAX_PRESIZE: usize = 1 << 28;

/// Deserializes a [`FastSet`] with its whole length reserved first. Why:
/// serde's own impl reserves at most 1 MiB of elements, so the 50M
/// de-duplication keys of a full snapshot went through ten rehashes, each
/// moving every key to a random place in a table of up to a GiB.
pub fn presized_set<'de, D, T>(d: D) -> Result<FastSet<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de> + Eq + std::hash::Hash,
{
    /// The visitor; holds only the element type.
    struct Seq<T>(std::marker::PhantomData<T>);
    impl<'de, T: serde::Deserialize<'de> + Eq + std::hash::Hash> serde::de::Visitor<'de> for Seq<T> {
        type Value = FastSet<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a set")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<FastSet<T>, A::Error> {
            let len = seq.size_hint().unwrap_or(0).min(MAX_PRESIZE);
            let mut set = FastSet::with_capacity_and_hasher(len, FastBuild::default());
            while let Some(x) = seq.next_element()? {
                set.insert(x);
            }
            Ok(set)
        }
    }
    d.deserialize_seq(Seq(std::marker::PhantomData))
}

/// [`presized_set`] for a [`FastMap`] (the directory's cards).
pub fn presized_map<'de, D, K, V>(d: D) -> Result<FastMap<K, V>, D::Error>
where
    D: serde::Deserializer<'de>,
    K: serde::Deserialize<'de> + Eq + std::hash::Hash,
    V: serde::Deserialize<'de>,
{
    /// The visitor; holds only the key and value types.
    struct Map<K, V>(std::marker::PhantomData<(K, V)>);
    impl<'de, K, V> serde::de::Visitor<'de> for Map<K, V>
    where
        K: serde::Deserialize<'de> + Eq + std::hash::Hash,
        V: serde::Deserialize<'de>,
    {
        type Value = FastMap<K, V>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a map")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<FastMap<K, V>, A::Error> {
            let len = map.size_hint().unwrap_or(0).min(MAX_PRESIZE);
            let mut out = FastMap::with_capacity_and_hasher(len, FastBuild::default());
            while let Some((k, v)) = map.next_entry()? {
                out.insert(k, v);
            }
            Ok(out)
        }
    }
    d.deserialize_map(Map(std::marker::PhantomData))
}

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

    /// The presized decoders read exactly what serde's own impls wrote.
    #[test]
    fn presized_decoders_read_the_standard_encoding() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct Both {
            #[serde(deserialize_with = "presized_set")]
            set: FastSet<u128>,
            #[serde(deserialize_with = "presized_map")]
            map: FastMap<u64, String>,
        }
        let both = Both {
            set: (0..1000u128).map(|i| i << 70 | i).collect(),
            map: (0..100u64).map(|i| (i, i.to_string())).collect(),
        };
        let bytes = bincode::serialize(&both).unwrap();
        assert_eq!(bincode::deserialize::<Both>(&bytes).unwrap(), both);
    }
}
