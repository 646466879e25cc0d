//! Where a key falls among a tree's entries and boundaries.

use std::cmp::Ordering;

use super::node::{time_key, Inner, Leaf, Sep};
use super::table::Table;
use super::RankKey;
use crate::time::Timestamp;

/// The order among citizens of equal count. The citizen index breaks a tie
/// only if two indices were given the same id (the engine never does that);
/// it is there so the order stays total whatever the caller does.
pub(super) fn tie_cmp(a: &RankKey, a_cit: u32, b: &RankKey, b_cit: u32) -> Ordering {
    a.last_trx
        .cmp(&b.last_trx)
        .then_with(|| a.tc_accepted_at.cmp(&b.tc_accepted_at))
        .then_with(|| a.citizen_id.as_bytes().cmp(b.citizen_id.as_bytes()))
        .then_with(|| a_cit.cmp(&b_cit))
}

/// A citizen's within-count key, ready to compare against entries and
/// boundaries. Fields rather than a `&RankKey` so a key that is not stored
/// yet (the prefetcher's next key) needs no `Arc` clone.
pub(super) struct Probe<'a> {
    /// [`time_key`] of `last_trx`.
    pub(super) sk: u64,
    /// Who; an entry with the same index is this very citizen.
    pub(super) citizen: u32,
    /// Exact `last_trx`, for ties on `sk`.
    pub(super) last_trx: Timestamp,
    /// `tc_accepted_at`, for ties on `last_trx`.
    pub(super) tc: Timestamp,
    /// `citizen_id`, for ties on both instants.
    pub(super) id: &'a str,
}

impl<'a> Probe<'a> {
    #[inline]
    pub(super) fn new(citizen: u32, key: &'a RankKey) -> Self {
        Self::with_time(citizen, key, key.last_trx)
    }

    /// `key` with `last_trx` replaced.
    #[inline]
    pub(super) fn with_time(citizen: u32, key: &'a RankKey, last_trx: Timestamp) -> Self {
        Probe {
            sk: time_key(last_trx),
            citizen,
            last_trx,
            tc: key.tc_accepted_at,
            id: &key.citizen_id,
        }
    }

    /// A key that belongs to no citizen of this index (another node's, in a
    /// cluster). Index 0, the smallest, sorts it before every entry with an
    /// equal key, so a walk stops at the first entry that does not rank
    /// strictly before it. Compare it to entries with
    /// [`cmp_tied_key`](Self::cmp_tied_key) only: its index is nobody, not
    /// this index's citizen 0.
    #[inline]
    pub(super) fn foreign(key: &'a RankKey) -> Self {
        Self::new(0, key)
    }

    /// Against a leaf entry known to tie on `sk`; the probe's own entry
    /// compares equal without reading the table.
    #[inline]
    pub(super) fn cmp_tied_entry(&self, citizen: u32, table: &Table) -> Ordering {
        if citizen == self.citizen {
            return Ordering::Equal;
        }
        self.cmp_tied_key(citizen, table)
    }

    /// Against a leaf entry known to tie on `sk`, by the entry's key in the
    /// table alone (right for any probe, [`foreign`](Self::foreign) ones too).
    #[inline]
    pub(super) fn cmp_tied_key(&self, citizen: u32, table: &Table) -> Ordering {
        let other = table.key(citizen);
        self.cmp_rest(
            other.last_trx,
            other.tc_accepted_at,
            &other.citizen_id,
            citizen,
        )
    }

    #[inline]
    pub(super) fn cmp_sep(&self, sep: &Sep) -> Ordering {
        self.sk
            .cmp(&sep.sk)
            .then_with(|| self.cmp_rest(sep.last_trx, sep.tc, &sep.id, sep.citizen))
    }

    /// The order after `sk` (see [`tie_cmp`]).
    #[inline]
    fn cmp_rest(&self, last_trx: Timestamp, tc: Timestamp, id: &str, citizen: u32) -> Ordering {
        self.last_trx
            .cmp(&last_trx)
            .then_with(|| self.tc.cmp(&tc))
            .then_with(|| self.id.as_bytes().cmp(id.as_bytes()))
            .then_with(|| self.citizen.cmp(&citizen))
    }
}

/// How many of the sorted `sks` are below `sk`. A branch-free scan rather
/// than a binary search: the node's cache lines are all requested at once
/// instead of one dependent miss per halving.
#[inline]
pub(super) fn count_below(sks: &[u64], sk: u64) -> usize {
    sks.iter().map(|&s| (s < sk) as usize).sum()
}

/// Entries of `leaf` ordered before `probe`, for a probe of this index's
/// own citizen (its entry, if present, is found without a table read).
#[inline]
pub(super) fn leaf_lower_bound<const L: usize>(
    leaf: &Leaf<L>,
    probe: &Probe,
    table: &Table,
) -> usize {
    leaf_lower_bound_by(leaf, probe.sk, |c| probe.cmp_tied_entry(c, table))
}

/// Entries of `leaf` ordered before a probe of time key `sk`, with `tied`
/// comparing the probe to the entry of a citizen that ties on `sk`.
#[inline]
pub(super) fn leaf_lower_bound_by<const L: usize>(
    leaf: &Leaf<L>,
    sk: u64,
    tied: impl Fn(u32) -> Ordering,
) -> usize {
    let n = leaf.len as usize;
    let sks = &leaf.sks[..n];
    // Most arrivals are a payment with the newest time: after the last entry.
    if n == 0 || sks[n - 1] < sk {
        return n;
    }
    let lo = count_below(sks, sk);
    if lo == n || sks[lo] != sk {
        return lo;
    }
    let hi = lo + sks[lo..].partition_point(|&s| s == sk);
    lo + leaf.cits[lo..hi].partition_point(|&c| tied(c) == Ordering::Greater)
}

/// Where `citizen` sits in `leaf`, which must hold it (a broken promise is a
/// corrupted index: better a panic than a wrong ranking).
#[inline]
pub(super) fn leaf_slot_of<const L: usize>(leaf: &Leaf<L>, citizen: u32) -> usize {
    leaf.cits[..leaf.len as usize]
        .iter()
        .position(|&c| c == citizen)
        .unwrap_or_else(|| panic!("rank index: citizen {citizen} not where its key says"))
}

/// The child of `inner` whose range holds `probe`.
#[inline]
pub(super) fn child_for<const I: usize>(inner: &Inner<I>, probe: &Probe) -> usize {
    let m = inner.len as usize - 1;
    // As in `leaf_lower_bound`: the last child first.
    if inner.sks[m - 1] < probe.sk {
        return m;
    }
    let mut i = count_below(&inner.sks[..m], probe.sk);
    while i < m && inner.sks[i] == probe.sk && probe.cmp_sep(&inner.seps[i]) != Ordering::Less {
        i += 1;
    }
    i
}
