//! The trees of all buckets: insert, remove, rank and select.

use std::cmp::Ordering;

use super::node::{Bucket, Inner, Leaf, Sep, EMPTY_BUCKET, NIL};
use super::search::{child_for, leaf_lower_bound, leaf_lower_bound_by, leaf_slot_of, Probe};
use super::storage::Arena;
use super::table::Table;

/// Deepest possible tree walk. Non-root nodes hold at least half their
/// capacity (one node per level on the right edge excepted), capacities are at
/// least 4, and a bucket holds fewer than 2^32 citizens.
const MAX_DEPTH: usize = 40;

/// One step of a root-to-leaf walk, kept to fix the way back up.
#[derive(Clone, Copy, Default)]
struct Step {
    /// The inner node.
    node: u32,
    /// The child taken.
    child: u32,
    /// Whether this node is the last one of its level, where right-edge
    /// splits keep nodes full.
    rightmost: bool,
}

/// A node split in two, to be hooked into its parent.
struct Carry {
    /// Lower bound of the new right node.
    sep: Sep,
    /// The new right node.
    right: u32,
    /// Entries left in the old node.
    left_count: u32,
    /// Entries in the new node.
    right_count: u32,
}

/// The trees of all buckets, sharing node pools.
pub(super) struct Forest<const L: usize, const I: usize> {
    /// Leaf pool.
    pub(super) leaves: Arena<Leaf<L>>,
    /// Inner node pool.
    pub(super) inners: Arena<Inner<I>>,
}

// The index's hot paths call into this file once per update or query:
// `#[inline]` on those entry points lets the compiler inline them into their
// callers in `mod.rs` across codegen units (release builds use several), as
// it did when everything was one file.
impl<const L: usize, const I: usize> Forest<L, I> {
    pub(super) fn new() -> Self {
        Forest {
            leaves: Arena::new(),
            inners: Arena::new(),
        }
    }

    /// Entries of bucket `b` before `probe`, whose citizen must be in `b`.
    /// The key leads to the leaf; inside it the citizen index is enough.
    #[inline]
    pub(super) fn rank(&self, b: &Bucket, probe: &Probe) -> u64 {
        let (left, leaf) = self.descend(b, probe);
        left + leaf_slot_of(self.leaves.get(leaf), probe.citizen) as u64
    }

    /// Entries of bucket `b` that rank strictly before a
    /// [`foreign`](Probe::foreign) probe, which need not be in `b` (nor in
    /// this index): the walk of [`rank`](Self::rank), then a search of the
    /// leaf by key.
    pub(super) fn lower_bound(&self, b: &Bucket, probe: &Probe, table: &Table) -> u64 {
        if b.root == NIL {
            return 0;
        }
        let (left, leaf) = self.descend(b, probe);
        let tied = |citizen| probe.cmp_tied_key(citizen, table);
        left + leaf_lower_bound_by(self.leaves.get(leaf), probe.sk, tied) as u64
    }

    /// The root-to-leaf walk of `probe` in the non-empty bucket `b`: the
    /// entries in the leaves left of the one reached, and that leaf.
    #[inline]
    fn descend(&self, b: &Bucket, probe: &Probe) -> (u64, u32) {
        let mut node = b.root;
        let mut left = 0u64;
        for _ in 0..b.height {
            let inner = self.inners.get(node);
            let i = child_for(inner, probe);
            left += inner.counts[..i].iter().map(|&c| c as u64).sum::<u64>();
            node = inner.children[i];
        }
        (left, node)
    }

    /// Walks to the leaf where `probe` is or would go and starts loading it
    /// (inner nodes are read on the way; they are few and mostly cached):
    /// only the header and citizen indices when `probe` is to be removed.
    #[inline]
    pub(super) fn prefetch_leaf(&self, b: &Bucket, probe: &Probe, removal: bool) {
        if b.root == NIL {
            return;
        }
        let mut node = b.root;
        for _ in 0..b.height {
            let inner = self.inners.get(node);
            node = inner.children[child_for(inner, probe)];
        }
        let bytes = if removal {
            std::mem::offset_of!(Leaf<L>, sks)
        } else {
            std::mem::size_of::<Leaf<L>>()
        };
        self.leaves.prefetch(node, bytes);
    }

    /// The leaf and slot of the entry with 0-based index `idx` in bucket `b`.
    #[inline]
    pub(super) fn select(&self, b: &Bucket, mut idx: u64) -> (u32, usize) {
        let mut node = b.root;
        for _ in 0..b.height {
            let inner = self.inners.get(node);
            let mut j = 0;
            while j + 1 < inner.len as usize && idx >= inner.counts[j] as u64 {
                idx -= inner.counts[j] as u64;
                j += 1;
            }
            node = inner.children[j];
        }
        (node, idx as usize)
    }

    #[inline]
    pub(super) fn insert(&mut self, b: &mut Bucket, probe: &Probe, table: &Table) {
        b.len += 1;
        if b.root == NIL {
            let mut leaf = Leaf {
                len: 1,
                ..Leaf::default()
            };
            leaf.sks[0] = probe.sk;
            leaf.cits[0] = probe.citizen;
            let id = self.leaves.alloc(leaf);
            b.root = id;
            b.height = 0;
            return;
        }
        let mut path = [Step::default(); MAX_DEPTH];
        let height = b.height as usize;
        let mut node = b.root;
        let mut rightmost = true;
        for step in path.iter_mut().take(height) {
            let inner = self.inners.get_mut(node);
            let i = child_for(inner, probe);
            inner.counts[i] += 1;
            *step = Step {
                node,
                child: i as u32,
                rightmost,
            };
            rightmost &= i + 1 == inner.len as usize;
            node = inner.children[i];
        }
        let leaf = self.leaves.get_mut(node);
        let pos = leaf_lower_bound(leaf, probe, table);
        let n = leaf.len as usize;
        if n < L {
            leaf.sks.copy_within(pos..n, pos + 1);
            leaf.cits.copy_within(pos..n, pos + 1);
            leaf.sks[pos] = probe.sk;
            leaf.cits[pos] = probe.citizen;
            leaf.len += 1;
            return;
        }
        let mut carry = self.split_leaf(node, pos, probe, rightmost && pos == L, table);
        for step in path[..height].iter().rev() {
            match self.hook(step, carry) {
                None => return,
                Some(up) => carry = up,
            }
        }
        let mut inner = Inner {
            len: 2,
            ..Inner::default()
        };
        inner.children[0] = b.root;
        inner.children[1] = carry.right;
        inner.counts[0] = carry.left_count;
        inner.counts[1] = carry.right_count;
        inner.seps.push(carry.sep);
        inner.sync_sks();
        b.root = self.inners.alloc(inner);
        b.height += 1;
    }

    /// Splits the full leaf `node` while inserting `probe` at `pos`. At the
    /// right edge of the tree (`append`) the old leaf stays full and the new
    /// one starts with the probe alone, since more arrivals will follow it.
    fn split_leaf(
        &mut self,
        node: u32,
        pos: usize,
        probe: &Probe,
        append: bool,
        table: &Table,
    ) -> Carry {
        let keep = if append { L } else { L.div_ceil(2) };
        let right = self.leaves.alloc(Leaf::default());
        let left = self.leaves.get_mut(node);
        // Entry j of the virtual L+1 sequence with the probe inserted at pos.
        let virt = |left: &Leaf<L>, j: usize| -> (u64, u32) {
            match j.cmp(&pos) {
                Ordering::Less => (left.sks[j], left.cits[j]),
                Ordering::Equal => (probe.sk, probe.citizen),
                Ordering::Greater => (left.sks[j - 1], left.cits[j - 1]),
            }
        };
        let mut rs = [0u64; L];
        let mut rc = [0u32; L];
        for j in keep..=L {
            (rs[j - keep], rc[j - keep]) = virt(left, j);
        }
        if pos < keep {
            left.sks.copy_within(pos..keep - 1, pos + 1);
            left.cits.copy_within(pos..keep - 1, pos + 1);
            left.sks[pos] = probe.sk;
            left.cits[pos] = probe.citizen;
        }
        left.len = keep as u32;
        let old_next = left.next;
        left.next = right;
        let right_len = L + 1 - keep;
        let r = self.leaves.get_mut(right);
        r.len = right_len as u32;
        r.next = old_next;
        r.sks[..right_len].copy_from_slice(&rs[..right_len]);
        r.cits[..right_len].copy_from_slice(&rc[..right_len]);
        Carry {
            sep: Sep::of(rc[0], table.key(rc[0])),
            right,
            left_count: keep as u32,
            right_count: right_len as u32,
        }
    }

    /// Hooks a split child into its parent; returns the parent's own split
    /// when it was full.
    fn hook(&mut self, step: &Step, carry: Carry) -> Option<Carry> {
        let i = step.child as usize;
        let inner = self.inners.get_mut(step.node);
        let n = inner.len as usize;
        inner.counts[i] = carry.left_count;
        if n < I {
            inner.children.copy_within(i + 1..n, i + 2);
            inner.counts.copy_within(i + 1..n, i + 2);
            inner.children[i + 1] = carry.right;
            inner.counts[i + 1] = carry.right_count;
            inner.seps.insert(i, carry.sep);
            inner.sync_sks();
            inner.len += 1;
            return None;
        }
        let mut children = inner.children[..n].to_vec();
        let mut counts = inner.counts[..n].to_vec();
        children.insert(i + 1, carry.right);
        counts.insert(i + 1, carry.right_count);
        inner.seps.insert(i, carry.sep);
        // At the right edge the new node gets the last old child too: an
        // inner node always keeps two children, so an underfull leaf always
        // has a sibling to merge with.
        let keep = if step.rightmost && i + 1 == n {
            n - 1
        } else {
            (n + 1).div_ceil(2)
        };
        let right_seps = inner.seps.split_off(keep);
        let up = inner.seps.pop().expect("a full node has separators");
        inner.children[..keep].copy_from_slice(&children[..keep]);
        inner.counts[..keep].copy_from_slice(&counts[..keep]);
        inner.len = keep as u32;
        inner.sync_sks();
        let left_count: u32 = counts[..keep].iter().sum();
        let right_count: u32 = counts[keep..].iter().sum();
        let mut r = Inner {
            len: (n + 1 - keep) as u32,
            ..Inner::default()
        };
        r.children[..n + 1 - keep].copy_from_slice(&children[keep..]);
        r.counts[..n + 1 - keep].copy_from_slice(&counts[keep..]);
        r.seps = right_seps;
        r.sync_sks();
        let right = self.inners.alloc(r);
        Some(Carry {
            sep: up,
            right,
            left_count,
            right_count,
        })
    }

    /// Removes the entry of `probe`, which must be in bucket `b`.
    #[inline]
    pub(super) fn remove(&mut self, b: &mut Bucket, probe: &Probe, table: &Table) {
        let mut path = [Step::default(); MAX_DEPTH];
        let height = b.height as usize;
        let mut node = b.root;
        assert!(node != NIL, "rank index: removing from an empty bucket");
        for step in path.iter_mut().take(height) {
            let inner = self.inners.get_mut(node);
            let i = child_for(inner, probe);
            inner.counts[i] -= 1;
            *step = Step {
                node,
                child: i as u32,
                rightmost: false,
            };
            node = inner.children[i];
        }
        let leaf = self.leaves.get_mut(node);
        let pos = leaf_slot_of(leaf, probe.citizen);
        let n = leaf.len as usize;
        leaf.sks.copy_within(pos + 1..n, pos);
        leaf.cits.copy_within(pos + 1..n, pos);
        leaf.len -= 1;
        b.len -= 1;
        let left = leaf.len as usize;
        if height == 0 {
            if left == 0 {
                self.leaves.release(node);
                *b = EMPTY_BUCKET;
            }
            return;
        }
        if left >= L / 2 {
            return;
        }
        let parent = path[height - 1];
        self.rebalance_leaves(parent.node, parent.child as usize, table);
        let mut d = height - 1;
        loop {
            let node = path[d].node;
            let inner = self.inners.get(node);
            if d == 0 {
                if inner.len == 1 {
                    b.root = inner.children[0];
                    b.height -= 1;
                    self.inners.get_mut(node).seps.clear();
                    self.inners.release(node);
                }
                return;
            }
            if inner.len as usize >= I / 2 {
                return;
            }
            let up = path[d - 1];
            self.rebalance_inners(up.node, up.child as usize);
            d -= 1;
        }
    }

    /// Child `ci` of `parent` (a leaf) is under half full: merge it with a
    /// sibling, or even the two out when they do not fit in one leaf.
    fn rebalance_leaves(&mut self, parent: u32, ci: usize, table: &Table) {
        let p = self.inners.get(parent);
        let li = if ci > 0 { ci - 1 } else { 0 };
        let (a, b) = (p.children[li], p.children[li + 1]);
        let rb = self.leaves.get(b);
        let (bn, bs, bc, b_next) = (rb.len as usize, rb.sks, rb.cits, rb.next);
        let ra = self.leaves.get_mut(a);
        let an = ra.len as usize;
        let total = an + bn;
        if total <= L {
            ra.sks[an..total].copy_from_slice(&bs[..bn]);
            ra.cits[an..total].copy_from_slice(&bc[..bn]);
            ra.len = total as u32;
            ra.next = b_next;
            self.leaves.get_mut(b).len = 0;
            self.leaves.release(b);
            let p = self.inners.get_mut(parent);
            let n = p.len as usize;
            p.counts[li] = total as u32;
            p.children.copy_within(li + 2..n, li + 1);
            p.counts.copy_within(li + 2..n, li + 1);
            p.seps.remove(li);
            p.sync_sks();
            p.len -= 1;
            return;
        }
        let keep = total / 2;
        let (mut ns, mut nc) = ([0u64; L], [0u32; L]);
        let right_len = total - keep;
        if an > keep {
            let moved = an - keep;
            ns[..moved].copy_from_slice(&ra.sks[keep..an]);
            nc[..moved].copy_from_slice(&ra.cits[keep..an]);
            ns[moved..right_len].copy_from_slice(&bs[..bn]);
            nc[moved..right_len].copy_from_slice(&bc[..bn]);
        } else {
            let moved = keep - an;
            ra.sks[an..keep].copy_from_slice(&bs[..moved]);
            ra.cits[an..keep].copy_from_slice(&bc[..moved]);
            ns[..right_len].copy_from_slice(&bs[moved..bn]);
            nc[..right_len].copy_from_slice(&bc[moved..bn]);
        }
        ra.len = keep as u32;
        let rb = self.leaves.get_mut(b);
        rb.sks[..right_len].copy_from_slice(&ns[..right_len]);
        rb.cits[..right_len].copy_from_slice(&nc[..right_len]);
        rb.len = right_len as u32;
        let p = self.inners.get_mut(parent);
        p.counts[li] = keep as u32;
        p.counts[li + 1] = right_len as u32;
        p.seps[li] = Sep::of(nc[0], table.key(nc[0]));
        p.sync_sks();
    }

    /// Child `ci` of `parent` (an inner node) is under half full: merge it
    /// with a sibling, or even the two out, moving the boundary through the
    /// parent.
    fn rebalance_inners(&mut self, parent: u32, ci: usize) {
        let li = if ci > 0 { ci - 1 } else { 0 };
        let p = self.inners.get_mut(parent);
        let (a, b) = (p.children[li], p.children[li + 1]);
        let down = p.seps.remove(li);
        let rb = self.inners.get_mut(b);
        let bn = rb.len as usize;
        let (b_children, b_counts) = (rb.children, rb.counts);
        let b_seps = std::mem::take(&mut rb.seps);
        let ra = self.inners.get_mut(a);
        let an = ra.len as usize;
        let total = an + bn;
        if total <= I {
            ra.children[an..total].copy_from_slice(&b_children[..bn]);
            ra.counts[an..total].copy_from_slice(&b_counts[..bn]);
            ra.seps.push(down);
            ra.seps.extend(b_seps);
            ra.sync_sks();
            ra.len = total as u32;
            let sum = ra.counts[..total].iter().sum();
            self.inners.release(b);
            let p = self.inners.get_mut(parent);
            let n = p.len as usize;
            p.counts[li] = sum;
            p.children.copy_within(li + 2..n, li + 1);
            p.counts.copy_within(li + 2..n, li + 1);
            p.sync_sks();
            p.len -= 1;
            return;
        }
        let mut children = ra.children[..an].to_vec();
        let mut counts = ra.counts[..an].to_vec();
        children.extend_from_slice(&b_children[..bn]);
        counts.extend_from_slice(&b_counts[..bn]);
        let mut seps = std::mem::take(&mut ra.seps);
        seps.push(down);
        seps.extend(b_seps);
        let keep = total / 2;
        let right_seps = seps.split_off(keep);
        let up = seps.pop().expect("separators between kept children");
        ra.children[..keep].copy_from_slice(&children[..keep]);
        ra.counts[..keep].copy_from_slice(&counts[..keep]);
        ra.seps = seps;
        ra.sync_sks();
        ra.len = keep as u32;
        let rb = self.inners.get_mut(b);
        rb.children[..total - keep].copy_from_slice(&children[keep..]);
        rb.counts[..total - keep].copy_from_slice(&counts[keep..]);
        rb.seps = right_seps;
        rb.sync_sks();
        rb.len = (total - keep) as u32;
        let p = self.inners.get_mut(parent);
        p.counts[li] = counts[..keep].iter().sum();
        p.counts[li + 1] = counts[keep..].iter().sum();
        p.seps.insert(li, up);
        p.sync_sks();
    }
}
