//! What one node's index answers so that a cluster of nodes, each ranking a
//! share of the citizens, can merge the national ranking exactly (issue 13).
//!
//! Every answer counts this node's entries only, and exactly; the merging is
//! the caller's:
//!
//! * a citizen's national position is 1 + the sum over all nodes of
//!   [`count_before`](RankIndexWith::count_before) its key (its own node
//!   included, where that is its local position - 1);
//! * the summed [`count_histogram`](RankIndexWith::count_histogram)s give
//!   `max_transaction_number` (the highest count) and the count at any
//!   national position, `min_transaction_number` among them;
//! * a leaderboard page is a k-way merge by [`RankKey::rank_cmp`] of the
//!   nodes' [`page_from`](RankIndexWith::page_from) runs, all started from
//!   the same key (the first of the page);
//! * the entry at a national position: the histograms name its count `c` and
//!   its index `j` among all nodes' entries of count `c`; a bisection finds
//!   it, taking candidates from one node with
//!   [`at_in_bucket`](RankIndexWith::at_in_bucket) (within
//!   [`bucket_len`](RankIndexWith::bucket_len)) and placing each among all
//!   nodes with `count_before` minus the entries of higher counts.

use super::search::Probe;
use super::{RankIndexWith, RankKey};

impl<const L: usize, const I: usize> RankIndexWith<L, I> {
    /// How many ranked entries of this index sort strictly before `key` in
    /// the ranking ([`RankKey::rank_cmp`] is `Less`). `key` may belong to no
    /// citizen of this index, and any count is allowed: count 0 (not ranked)
    /// sorts after every entry. For a ranked citizen of this index it is its
    /// [`position`](Self::position) - 1. Costs about what `position` costs: a
    /// Fenwick prefix and one root-to-leaf walk of the key's count.
    pub fn count_before(&self, key: &RankKey) -> u64 {
        let count = key.count as usize;
        if count > self.fenwick.cap() {
            // Above every count ever ranked here: nobody is ahead.
            return 0;
        }
        let within =
            self.forest
                .lower_bound(&self.buckets[count], &Probe::foreign(key), &self.table);
        self.above(count) + within
    }

    /// Ranked citizens per count, `(count, citizens)` for every count that
    /// has some, highest count first: summed over the nodes, the national
    /// distribution of counts. O(highest count ever ranked here), a few
    /// thousand steps at most.
    pub fn count_histogram(&self) -> Vec<(u32, u64)> {
        self.buckets
            .iter()
            .enumerate()
            .rev()
            .filter(|(_, bucket)| bucket.len > 0)
            .map(|(count, bucket)| (count as u32, bucket.len as u64))
            .collect()
    }

    /// Up to `limit` entries `(citizen, key)` in ranking order, starting at
    /// the first that does not sort strictly before `key` (`key`'s own entry
    /// when it is a ranked citizen of this index), i.e. the entries from
    /// position [`count_before`](Self::count_before)`(key) + 1` on.
    pub fn page_from(&self, key: &RankKey, limit: usize) -> Vec<(u32, &RankKey)> {
        self.entries_from(self.count_before(key), limit, |citizen, key| (citizen, key))
    }

    /// Ranked citizens with this count (0 for count 0: never ranked).
    pub fn bucket_len(&self, count: u32) -> u64 {
        self.buckets
            .get(count as usize)
            .map_or(0, |bucket| bucket.len as u64)
    }

    /// The entry at 0-based `index` in ranking order among the citizens with
    /// this count; `None` from [`bucket_len`](Self::bucket_len) on. One walk
    /// of that count's tree.
    pub fn at_in_bucket(&self, count: u32, index: u64) -> Option<(u32, &RankKey)> {
        if index >= self.bucket_len(count) {
            return None;
        }
        Some(self.entry(count as usize, index))
    }
}
