//! The exact Supercashback ranking of one award period.
//!
//! RULES.md ("Supercashback ranking") orders the ranked citizens by
//! `transaction_count` descending, then `last_trx_date`, `tc_accepted_at` and
//! `citizen_id` ascending. The production system recomputed that order in a
//! nightly batch; this engine keeps it exact after every message, so the index
//! must take far more updates per second than the stream delivers and answer
//! a position in about a microsecond. At 8.4M ranked citizens it measures
//! 0.6-1.1 M updates/s and ~0.7 us per position (BENCHMARKS.md), about ten
//! times a Redis sorted set, which also cannot express the tie-break chain
//! in one float score.
//!
//! The design exploits that counts are small integers (the 2021 leader had
//! about 1,500 payments in a semester):
//!
//! * "how many citizens have a larger count" is a prefix sum over one counter
//!   per count value: a Fenwick tree of a few KiB that stays in cache;
//! * only citizens with the same count need a finer order. They live in one
//!   counted B+tree per count value (a "bucket"): inner nodes store the size of
//!   every subtree, so a rank or a select is one root-to-leaf walk, and a
//!   bucket of 100k+ citizens costs no O(n) shifting;
//! * a leaf entry is only a 64-bit time key and the citizen index (12 bytes);
//!   the rest of the key is read from the per-citizen table only when two
//!   entries tie on that time, which keeps leaves dense and searches short;
//! * most updates move a citizen from count c to the end of count c+1 (newest
//!   `last_trx`). A node that overflows at the right edge of its tree keeps
//!   all its entries and starts a new node, so that pattern leaves full nodes
//!   behind instead of half-empty ones; nothing else relies on it.
//!
//! The files, bottom up: `storage` (huge-page pools, the one module of the
//! crate allowed raw memory), `table` (every citizen's key), `fenwick`
//! (citizens per count), `node` and `search` (a bucket tree's nodes, and
//! where a key falls among them), `forest` (insert, remove, rank, select),
//! this file (the index and its public API), `cluster` (the exact answers a
//! cluster of nodes merges into the national ranking) and `check` (the
//! structural invariants, for tests).

use std::cmp::Ordering;
use std::sync::Arc;

use crate::time::Timestamp;

#[cfg(feature = "bench-data")]
pub mod bench;
mod check;
mod cluster;
mod fenwick;
mod forest;
mod node;
mod search;
mod storage;
mod table;
#[cfg(test)]
mod tests;

use fenwick::Fenwick;
use forest::Forest;
use node::{Bucket, Sep, EMPTY_BUCKET, NIL};
use search::Probe;
use table::Table;

/// Everything that places one citizen in the ranking, in the words of RULES.md.
///
/// Kept per citizen so that an update can find and remove the old position
/// before inserting the new one, and so that ties can be broken exactly.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RankKey {
    /// `transaction_count` in the period: the primary order (descending);
    /// 0 means "known but not ranked".
    pub count: u32,
    /// `last_trx_date`: among equal counts, whoever got there first wins.
    pub last_trx: Timestamp,
    /// `tc_accepted_at`: the next tie-break.
    pub tc_accepted_at: Timestamp,
    /// The public citizen id, the last tie-break (byte-wise); shared with the
    /// rest of the engine so the index adds no copy of the string.
    pub citizen_id: Arc<str>,
}

impl RankKey {
    /// The RULES.md order: `Less` means `self` ranks better (a smaller position).
    pub fn rank_cmp(&self, other: &RankKey) -> Ordering {
        other
            .count
            .cmp(&self.count)
            .then_with(|| self.last_trx.cmp(&other.last_trx))
            .then_with(|| self.tc_accepted_at.cmp(&other.tc_accepted_at))
            .then_with(|| self.citizen_id.as_bytes().cmp(other.citizen_id.as_bytes()))
    }
}

/// The ranking with the node capacities the benchmark chose: 64-entry leaves
/// (776 bytes, a short binary search, cheap shifts) and 64-way inner nodes
/// (two or three levels for a bucket of 100k citizens).
pub type RankIndex = RankIndexWith<64, 64>;

/// The exact ranking of one period; `L` entries per leaf, `I` children per
/// inner node (generic so tests can use tiny nodes and reach deep trees).
pub struct RankIndexWith<const L: usize, const I: usize> {
    /// Every known citizen's current key (count 0: known, not ranked), read
    /// to remove an old entry and to break ties exactly.
    table: Table,
    /// One tree per count value.
    forest: Forest<L, I>,
    /// Index = count; entry 0 is never used (count 0 is not ranked).
    buckets: Vec<Bucket>,
    /// Bucket sizes, for "how many rank above count c".
    fenwick: Fenwick,
    /// Citizens ranked.
    len: u64,
}

impl<const L: usize, const I: usize> Default for RankIndexWith<L, I> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const L: usize, const I: usize> RankIndexWith<L, I> {
    /// Rejects capacities the rebalancing arithmetic does not support.
    const CAPACITY_CHECK: () = assert!(
        L >= 4 && I >= 4 && L <= 1 << 16 && I <= 1 << 16,
        "node capacities must be between 4 and 65536"
    );

    /// Counts covered before the first growth; small so that an index per
    /// period costs little, doubling on demand (a few times up to ~1,500).
    const INITIAL_MAX_COUNT: usize = 16;

    pub fn new() -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::CAPACITY_CHECK;
        let cap = Self::INITIAL_MAX_COUNT;
        RankIndexWith {
            table: Table::new(),
            forest: Forest::new(),
            buckets: vec![EMPTY_BUCKET; cap + 1],
            fenwick: Fenwick::build(std::iter::empty(), cap),
            len: 0,
        }
    }

    /// Number of citizens ranked (`total_participants`).
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The key last set for `citizen` (count 0 when known but not ranked).
    pub fn get(&self, citizen: u32) -> Option<&RankKey> {
        self.table.get(citizen)
    }

    /// Sets `citizen`'s key (a dense index assigned by the engine); count 0
    /// takes the citizen out of the ranking but keeps the key for
    /// [`update`](Self::update).
    pub fn set(&mut self, citizen: u32, key: RankKey) {
        let slot = self.table.slot_mut(citizen);
        if slot.as_ref() == Some(&key) {
            return;
        }
        let was_ranked = slot.as_ref().is_some_and(|k| k.count > 0);
        if was_ranked {
            self.unlink(citizen);
        }
        let count = key.count;
        *self.table.slot_mut(citizen) = Some(key);
        if count > 0 {
            self.link(citizen);
        }
    }

    /// The hot path of a payment (count + 1, new `last_trx`) or a reversal
    /// (count - 1, same `last_trx`): changes only those two fields, with no
    /// `Arc` traffic. Returns `false`, changing nothing, for an unknown
    /// citizen (never [`set`](Self::set), or [`remove`](Self::remove)d).
    pub fn update(&mut self, citizen: u32, count: u32, last_trx: Timestamp) -> bool {
        let Some(old) = self.table.get(citizen) else {
            return false;
        };
        if old.count == count && old.last_trx == last_trx {
            return true;
        }
        if old.count > 0 {
            self.unlink(citizen);
        }
        let key = self
            .table
            .slot_mut(citizen)
            .as_mut()
            .expect("checked above");
        key.count = count;
        key.last_trx = last_trx;
        if count > 0 {
            self.link(citizen);
        }
        true
    }

    /// [`update`](Self::update) for each element in order, with the same
    /// result; returns how many citizens were known. Faster than one call per
    /// element: while one update runs, the memory of the next ones (their
    /// table slots, then the leaves they leave and join) is already being
    /// loaded, so the cache misses of several updates overlap instead of
    /// queueing (a dependent random read costs 250-500 ns on this kind of
    /// machine, more than the rest of an update).
    pub fn update_many(&mut self, updates: &[(u32, u32, Timestamp)]) -> usize {
        // How far ahead to start loading: the table slot first (needed to
        // find the leaves), the leaves a few updates later. Measured on
        // this kind of machine; larger distances evict what is still needed.
        const TABLE_AHEAD: usize = 8;
        const TREE_AHEAD: usize = 4;
        let mut known = 0;
        for (i, &(citizen, count, last_trx)) in updates.iter().enumerate() {
            if let Some(&(ahead, _, _)) = updates.get(i + TABLE_AHEAD) {
                self.table.prefetch(ahead);
            }
            if let Some(&(ahead, count, last_trx)) = updates.get(i + TREE_AHEAD) {
                self.prefetch_update(ahead, count, last_trx);
            }
            known += self.update(citizen, count, last_trx) as usize;
        }
        known
    }

    /// Starts loading what `update(citizen, count, last_trx)` will touch.
    fn prefetch_update(&self, citizen: u32, count: u32, last_trx: Timestamp) {
        let Some(old) = self.table.get(citizen) else {
            return;
        };
        if let Some(bucket) = self
            .buckets
            .get(old.count as usize)
            .filter(|_| old.count > 0)
        {
            self.forest
                .prefetch_leaf(bucket, &Probe::new(citizen, old), true);
        }
        if let Some(bucket) = self.buckets.get(count as usize).filter(|_| count > 0) {
            self.forest
                .prefetch_leaf(bucket, &Probe::with_time(citizen, old, last_trx), false);
        }
    }

    /// Forgets `citizen` (withdrawal): out of the ranking, key dropped.
    pub fn remove(&mut self, citizen: u32) {
        let ranked = match self.table.get(citizen) {
            None => return,
            Some(key) => key.count > 0,
        };
        if ranked {
            self.unlink(citizen);
        }
        *self.table.slot_mut(citizen) = None;
    }

    /// Puts the table's key of `citizen` (count > 0) into its bucket.
    fn link(&mut self, citizen: u32) {
        let count = self.table.key(citizen).count as usize;
        if count > self.fenwick.cap() {
            self.grow(count);
        }
        let key = self.table.key(citizen);
        let probe = Probe::new(citizen, key);
        self.forest
            .insert(&mut self.buckets[count], &probe, &self.table);
        self.fenwick.inc(count);
        self.len += 1;
    }

    /// Takes the table's key of `citizen` (count > 0) out of its bucket.
    fn unlink(&mut self, citizen: u32) {
        let key = self.table.key(citizen);
        let count = key.count as usize;
        let probe = Probe::new(citizen, key);
        self.forest
            .remove(&mut self.buckets[count], &probe, &self.table);
        self.fenwick.dec(count);
        self.len -= 1;
    }

    /// Covers counts up to at least `count`, doubling so growth is amortized.
    fn grow(&mut self, count: usize) {
        let cap = count.next_power_of_two().max(2 * self.fenwick.cap());
        self.buckets.resize(cap + 1, EMPTY_BUCKET);
        self.fenwick = Fenwick::build(self.buckets.iter().map(|b| b.len as u64), cap);
    }

    /// Citizens ranked above every citizen of `count`.
    #[inline]
    fn above(&self, count: usize) -> u64 {
        self.len - self.fenwick.prefix(count)
    }

    /// The count holding `position` and the 0-based index there, for
    /// `1 <= position <= len`.
    #[inline]
    fn locate(&self, position: u64) -> (usize, u64) {
        let q = self.len - position + 1;
        let count = self.fenwick.lower_bound(q);
        (count, self.fenwick.prefix(count) - q)
    }

    /// `citizen`'s 1-based position (`ranking`), `None` when not ranked.
    pub fn position(&self, citizen: u32) -> Option<u64> {
        let key = self.table.get(citizen)?;
        if key.count == 0 {
            return None;
        }
        let count = key.count as usize;
        let probe = Probe::new(citizen, key);
        let within = self.forest.rank(&self.buckets[count], &probe);
        Some(self.above(count) + within + 1)
    }

    /// The citizen at a 1-based position.
    pub fn at(&self, position: u64) -> Option<(u32, &RankKey)> {
        if position == 0 || position > self.len {
            return None;
        }
        let (count, idx) = self.locate(position);
        Some(self.entry(count, idx))
    }

    /// The entry at 0-based `idx` of bucket `count`, which must hold it.
    #[inline]
    fn entry(&self, count: usize, idx: u64) -> (u32, &RankKey) {
        let (leaf, slot) = self.forest.select(&self.buckets[count], idx);
        let citizen = self.forest.leaves.get(leaf).cits[slot];
        (citizen, self.table.key(citizen))
    }

    /// A leaderboard page: `(position, citizen, key)` for positions
    /// `offset + 1 ..= offset + limit` (fewer at the end).
    pub fn page(&self, offset: u64, limit: usize) -> Vec<(u64, u32, &RankKey)> {
        let mut position = offset;
        self.entries_from(offset, limit, |citizen, key| {
            position += 1;
            (position, citizen, key)
        })
    }

    /// Up to `limit` entries in ranking order from the 0-based `offset`, as
    /// `entry(citizen, key)` makes them: one leaf chain after another, from
    /// the highest count down, with no walk from a root but the first.
    fn entries_from<'s, T>(
        &'s self,
        offset: u64,
        limit: usize,
        mut entry: impl FnMut(u32, &'s RankKey) -> T,
    ) -> Vec<T> {
        let mut out = Vec::new();
        if offset >= self.len || limit == 0 {
            return out;
        }
        out.reserve(limit.min((self.len - offset) as usize));
        let (mut count, idx) = self.locate(offset + 1);
        let (mut leaf, mut slot) = self.forest.select(&self.buckets[count], idx);
        loop {
            let l = self.forest.leaves.get(leaf);
            for &citizen in &l.cits[slot..l.len as usize] {
                out.push(entry(citizen, self.table.key(citizen)));
                if out.len() == limit {
                    return out;
                }
            }
            leaf = l.next;
            slot = 0;
            if leaf == NIL {
                let below = self.fenwick.prefix(count - 1);
                if below == 0 {
                    return out;
                }
                count = self.fenwick.lower_bound(below);
                leaf = self.forest.select(&self.buckets[count], 0).0;
            }
        }
    }

    /// The count at a 1-based position.
    pub fn count_at(&self, position: u64) -> Option<u32> {
        if position == 0 || position > self.len {
            return None;
        }
        Some(self.locate(position).0 as u32)
    }

    /// RULES.md `max_transaction_number`: the count at position 1, 0 when
    /// nobody is ranked.
    pub fn max_transaction_number(&self) -> u32 {
        self.count_at(1).unwrap_or(0)
    }

    /// RULES.md `min_transaction_number`: the count at position `winners`, or
    /// at the last position when fewer are ranked; 0 when nobody is ranked or
    /// the period has no Supercashback (`winners == 0`).
    pub fn min_transaction_number(&self, winners: u64) -> u32 {
        if winners == 0 {
            return 0;
        }
        self.count_at(winners.min(self.len)).unwrap_or(0)
    }

    /// Approximate heap bytes held by the index, allocated capacity included.
    /// Citizen id strings are not counted: they are shared with the engine
    /// (separators hold a few extra references, never copies).
    pub fn bytes_used(&self) -> usize {
        let mut seps = 0;
        for id in 0..self.forest.inners.slots() as u32 {
            seps += self.forest.inners.get(id).seps.capacity();
        }
        std::mem::size_of::<Self>()
            + self.table.bytes()
            + self.forest.leaves.bytes()
            + self.forest.inners.bytes()
            + seps * std::mem::size_of::<Sep>()
            + self.buckets.capacity() * std::mem::size_of::<Bucket>()
            + self.fenwick.bytes()
    }
}
