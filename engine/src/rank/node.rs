//! The nodes of a bucket's counted B+tree, as they lie in memory.

use std::sync::Arc;

use super::RankKey;
use crate::time::Timestamp;

/// `last_trx` squeezed into 64 bits with the order preserved (not strictly:
/// instants outside 1677..2262 clamp to the ends), so searches compare plain
/// integers and fall back to the full key only when two of these are equal.
pub(super) fn time_key(t: Timestamp) -> u64 {
    let nanos = t.unix_nanos().clamp(i64::MIN as i128, i64::MAX as i128) as i64;
    (nanos as u64) ^ (1 << 63)
}

/// "No node": an empty bucket's root, the last leaf's successor.
pub(super) const NIL: u32 = u32::MAX;

/// A bottom node of a bucket's tree: citizens of one count, in rank order.
///
/// Struct-of-arrays so a search scans contiguous integers and an entry costs
/// 12 bytes, not 16. `repr(C)` in this order so the header and the citizen
/// indices share the first cache lines: removing a known citizen or finding
/// its position scans only those (~4 lines), never the time keys.
#[repr(C)]
pub(super) struct Leaf<const L: usize> {
    /// Entries in use.
    pub(super) len: u32,
    /// The next leaf of the same bucket (or `NIL`), so a leaderboard page
    /// reads on without walking the tree again.
    pub(super) next: u32,
    /// Each entry's citizen index, for the answer and for exact tie-breaks.
    pub(super) cits: [u32; L],
    /// [`time_key`] of each entry's `last_trx`.
    pub(super) sks: [u64; L],
}

impl<const L: usize> Default for Leaf<L> {
    fn default() -> Self {
        Leaf {
            len: 0,
            next: NIL,
            cits: [0; L],
            sks: [0; L],
        }
    }
}

/// A boundary between two children of an inner node: the within-count key of
/// the first entry of the right child when the boundary was drawn.
///
/// A copy, not a citizen index, because that citizen may later leave the
/// bucket or change its key while the boundary stays valid.
#[derive(Clone, Debug)]
pub(super) struct Sep {
    /// [`time_key`] of `last_trx`, compared first.
    pub(super) sk: u64,
    /// Final tie-break (see [`tie_cmp`]).
    pub(super) citizen: u32,
    /// Exact `last_trx`, for when `sk` ties.
    pub(super) last_trx: Timestamp,
    /// `tc_accepted_at`, for when `last_trx` ties.
    pub(super) tc: Timestamp,
    /// `citizen_id`, for when both instants tie.
    pub(super) id: Arc<str>,
}

impl Sep {
    pub(super) fn of(citizen: u32, key: &RankKey) -> Sep {
        Sep {
            sk: time_key(key.last_trx),
            citizen,
            last_trx: key.last_trx,
            tc: key.tc_accepted_at,
            id: key.citizen_id.clone(),
        }
    }
}

/// A routing node of a bucket's tree.
pub(super) struct Inner<const I: usize> {
    /// Children in use.
    pub(super) len: u32,
    /// Entries under each child: what makes rank and select one walk.
    pub(super) counts: [u32; I],
    /// Node ids of the children (leaves at height 1, inner nodes above).
    pub(super) children: [u32; I],
    /// `sks[j] == seps[j].sk`: inline so a search scans one contiguous array
    /// (its cache lines load in parallel) and touches `seps` only on a tie.
    pub(super) sks: [u64; I],
    /// `seps[j]` is a lower bound of child `j + 1` and above everything in
    /// child `j`; a `Vec` because `Sep` owns an `Arc` and inner nodes are few.
    pub(super) seps: Vec<Sep>,
}

impl<const I: usize> Inner<I> {
    /// Copies the separators' time keys inline after any change to `seps`
    /// (splits and merges only, so the O(I) copy is cheap enough and leaves
    /// no way to forget one).
    pub(super) fn sync_sks(&mut self) {
        for (sk, sep) in self.sks.iter_mut().zip(&self.seps) {
            *sk = sep.sk;
        }
    }
}

impl<const I: usize> Default for Inner<I> {
    fn default() -> Self {
        Inner {
            len: 0,
            counts: [0; I],
            children: [0; I],
            sks: [0; I],
            seps: Vec::new(),
        }
    }
}

/// The tree of one count value.
#[derive(Clone, Copy, Debug)]
pub(super) struct Bucket {
    /// Root node (a leaf when `height` is 0), or `NIL` when empty.
    pub(super) root: u32,
    /// Inner levels above the leaves.
    pub(super) height: u32,
    /// Citizens with this count, so a page can skip the tree's totals.
    pub(super) len: u32,
}

pub(super) const EMPTY_BUCKET: Bucket = Bucket {
    root: NIL,
    height: 0,
    len: 0,
};
