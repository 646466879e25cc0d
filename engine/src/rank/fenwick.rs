//! Citizens per count value, summed in O(log max count).

/// Citizens per count value as a Fenwick tree: "how many have a count <= c"
/// and "which count holds the q-th citizen from the bottom" in O(log max count).
pub(super) struct Fenwick {
    /// 1-based implicit tree; `tree.len() - 1` is a power of two, the largest
    /// count it covers.
    tree: Vec<u64>,
}

impl Fenwick {
    /// The largest count covered.
    pub(super) fn cap(&self) -> usize {
        self.tree.len() - 1
    }

    #[inline]
    pub(super) fn inc(&mut self, mut i: usize) {
        let cap = self.cap();
        while i <= cap {
            self.tree[i] += 1;
            i += i & i.wrapping_neg();
        }
    }

    #[inline]
    pub(super) fn dec(&mut self, mut i: usize) {
        let cap = self.cap();
        while i <= cap {
            self.tree[i] -= 1;
            i += i & i.wrapping_neg();
        }
    }

    /// Citizens with a count in `1..=i`.
    #[inline]
    pub(super) fn prefix(&self, mut i: usize) -> u64 {
        let mut sum = 0;
        while i > 0 {
            sum += self.tree[i];
            i &= i - 1;
        }
        sum
    }

    /// The smallest count `c` with `prefix(c) >= q`, for `1 <= q <= total`.
    #[inline]
    pub(super) fn lower_bound(&self, mut q: u64) -> usize {
        let cap = self.cap();
        let mut pos = 0;
        let mut step = cap;
        while step > 0 {
            let next = pos + step;
            if next <= cap && self.tree[next] < q {
                pos = next;
                q -= self.tree[next];
            }
            step >>= 1;
        }
        pos + 1
    }

    /// A tree over `lens` (index = count; `lens.len() - 1` a power of two).
    pub(super) fn build(lens: impl Iterator<Item = u64>, cap: usize) -> Fenwick {
        let mut tree = vec![0u64; cap + 1];
        for (i, len) in lens.enumerate().take(cap + 1) {
            tree[i] = len;
        }
        tree[0] = 0;
        for i in 1..=cap {
            let j = i + (i & i.wrapping_neg());
            if j <= cap {
                tree[j] += tree[i];
            }
        }
        Fenwick { tree }
    }

    /// Heap bytes held.
    pub(super) fn bytes(&self) -> usize {
        self.tree.capacity() * std::mem::size_of::<u64>()
    }
}
