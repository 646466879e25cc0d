//! The index's structural invariants, verified from scratch (O(n); tests
//! and benchmarks call it, the engine does not).

use std::cmp::Ordering;

use super::node::{time_key, Sep, NIL};
use super::search::{tie_cmp, Probe};
use super::{RankIndexWith, RankKey};

impl<const L: usize, const I: usize> RankIndexWith<L, I> {
    /// Verifies every structural invariant, panicking on the first broken one:
    /// subtree counts, boundaries, order inside leaves, node fill, leaf links,
    /// bucket sizes, the Fenwick sums and the table. O(n); for tests.
    pub fn check_invariants(&self) {
        let ranked = (0..self.table.len() as u32)
            .filter(|&c| self.table.get(c).is_some_and(|k| k.count > 0))
            .count() as u64;
        assert_eq!(ranked, self.len, "len vs table");
        let mut total = 0u64;
        for (count, bucket) in self.buckets.iter().enumerate() {
            assert_eq!(
                self.fenwick.prefix(count) - self.fenwick.prefix(count.saturating_sub(1)),
                if count == 0 { 0 } else { bucket.len as u64 },
                "fenwick vs bucket {count}"
            );
            if bucket.root == NIL {
                assert_eq!(bucket.len, 0, "empty bucket {count} with a length");
                continue;
            }
            assert!(count > 0, "bucket 0 is never used");
            let mut leaves = Vec::new();
            let size = self.check_node(
                count as u32,
                bucket.root,
                bucket.height,
                true,
                true,
                None,
                None,
                &mut leaves,
            );
            assert_eq!(size, bucket.len as u64, "bucket {count} length");
            for pair in leaves.windows(2) {
                assert_eq!(self.forest.leaves.get(pair[0]).next, pair[1], "leaf links");
            }
            assert_eq!(
                self.forest.leaves.get(*leaves.last().unwrap()).next,
                NIL,
                "last leaf link"
            );
            total += size;
        }
        assert_eq!(total, self.len, "sum of buckets");
        assert_eq!(
            self.fenwick.prefix(self.fenwick.cap()),
            self.len,
            "fenwick total"
        );
    }

    /// Checks the subtree at `node`; returns its entry count. `low`/`high`
    /// are the boundaries it must respect.
    #[allow(clippy::too_many_arguments)]
    fn check_node(
        &self,
        count: u32,
        node: u32,
        height: u32,
        root: bool,
        rightmost: bool,
        low: Option<&Sep>,
        high: Option<&Sep>,
        leaves: &mut Vec<u32>,
    ) -> u64 {
        let in_range = |citizen: u32, key: &RankKey| {
            let probe = Probe::new(citizen, key);
            if let Some(low) = low {
                assert!(
                    probe.cmp_sep(low) != Ordering::Less,
                    "entry below its boundary"
                );
            }
            if let Some(high) = high {
                assert!(
                    probe.cmp_sep(high) == Ordering::Less,
                    "entry above its boundary"
                );
            }
        };
        if height == 0 {
            let leaf = self.forest.leaves.get(node);
            let n = leaf.len as usize;
            assert!(n >= 1, "empty leaf");
            if !root && !rightmost {
                assert!(n >= L / 2, "leaf under half full");
            }
            for j in 0..n {
                let citizen = leaf.cits[j];
                let key = self.table.key(citizen);
                assert_eq!(key.count, count, "citizen {citizen} in the wrong bucket");
                assert_eq!(leaf.sks[j], time_key(key.last_trx), "stale time key");
                in_range(citizen, key);
                if j > 0 {
                    let prev = leaf.cits[j - 1];
                    assert_eq!(
                        tie_cmp(self.table.key(prev), prev, key, citizen),
                        Ordering::Less,
                        "leaf out of order"
                    );
                }
            }
            leaves.push(node);
            return n as u64;
        }
        let inner = self.forest.inners.get(node);
        let n = inner.len as usize;
        assert!(n >= 2, "inner node with one child");
        if !root && !rightmost {
            assert!(n >= I / 2, "inner node under half full");
        }
        assert_eq!(inner.seps.len(), n - 1, "separator count");
        for (sk, sep) in inner.sks.iter().zip(&inner.seps) {
            assert_eq!(*sk, sep.sk, "inline separator key");
        }
        for j in 1..inner.seps.len() {
            let s = &inner.seps[j];
            let key = RankKey {
                count,
                last_trx: s.last_trx,
                tc_accepted_at: s.tc,
                citizen_id: s.id.clone(),
            };
            assert_eq!(
                Probe::new(s.citizen, &key).cmp_sep(&inner.seps[j - 1]),
                Ordering::Greater,
                "separators out of order"
            );
        }
        let mut total = 0;
        for j in 0..n {
            let lo = if j == 0 {
                low
            } else {
                Some(&inner.seps[j - 1])
            };
            let hi = if j + 1 == n {
                high
            } else {
                Some(&inner.seps[j])
            };
            let size = self.check_node(
                count,
                inner.children[j],
                height - 1,
                false,
                rightmost && j + 1 == n,
                lo,
                hi,
                leaves,
            );
            assert_eq!(size, inner.counts[j] as u64, "subtree count");
            total += size;
        }
        total
    }
}
