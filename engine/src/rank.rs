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

use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::cmp::Ordering;
use std::ptr::NonNull;
use std::sync::Arc;

use crate::time::Timestamp;

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

/// The order among citizens of equal count. The citizen index breaks a tie
/// only if two indices were given the same id (the engine never does that);
/// it is there so the order stays total whatever the caller does.
fn tie_cmp(a: &RankKey, a_cit: u32, b: &RankKey, b_cit: u32) -> Ordering {
    a.last_trx
        .cmp(&b.last_trx)
        .then_with(|| a.tc_accepted_at.cmp(&b.tc_accepted_at))
        .then_with(|| a.citizen_id.as_bytes().cmp(b.citizen_id.as_bytes()))
        .then_with(|| a_cit.cmp(&b_cit))
}

/// `last_trx` squeezed into 64 bits with the order preserved (not strictly:
/// instants outside 1677..2262 clamp to the ends), so searches compare plain
/// integers and fall back to the full key only when two of these are equal.
fn time_key(t: Timestamp) -> u64 {
    let nanos = t.unix_nanos().clamp(i64::MIN as i128, i64::MAX as i128) as i64;
    (nanos as u64) ^ (1 << 63)
}

/// "No node": an empty bucket's root, the last leaf's successor.
const NIL: u32 = u32::MAX;

/// Deepest possible tree walk. Non-root nodes hold at least half their
/// capacity (one node per level on the right edge excepted), capacities are at
/// least 4, and a bucket holds fewer than 2^32 citizens.
const MAX_DEPTH: usize = 40;

// ---------------------------------------------------------------------------
// Storage
// ---------------------------------------------------------------------------

/// Bytes per storage chunk: one 2 MiB huge page.
const CHUNK_BYTES: usize = 2 << 20;

/// Append-only storage of `T` in 2 MiB-aligned chunks, addressed by index.
///
/// Why not a `Vec`: growing to millions of citizens would copy the whole
/// array (a pause of hundreds of milliseconds in a live engine) and hold twice
/// its size meanwhile. Why 2 MiB-aligned chunks advised as huge pages: every
/// update and query lands on random citizens, so most accesses miss the TLB;
/// on this kind of virtual machine a dependent random read costs ~490 ns with
/// 4 KiB pages and ~230 ns with 2 MiB pages. This is the only `unsafe` code
/// of the index: slots are written once when pushed and read only below `len`.
struct Pool<T> {
    /// Start of each chunk, `PER_CHUNK` slots each.
    chunks: Vec<NonNull<T>>,
    /// Initialized slots, all in chunks `0..=(len - 1) / PER_CHUNK`.
    len: usize,
}

// SAFETY: a `Pool<T>` owns its `T`s like a `Vec<T>` does; the raw chunk
// pointers are never shared outside it.
unsafe impl<T: Send> Send for Pool<T> {}
// SAFETY: as above, `&Pool<T>` only hands out `&T`.
unsafe impl<T: Sync> Sync for Pool<T> {}

impl<T> Pool<T> {
    /// Slots per chunk.
    const PER_CHUNK: usize = {
        let per = CHUNK_BYTES / std::mem::size_of::<T>();
        assert!(per > 0, "pool slots must be smaller than a chunk");
        per
    };

    fn new() -> Self {
        Pool {
            chunks: Vec::new(),
            len: 0,
        }
    }

    fn layout() -> Layout {
        Layout::from_size_align(
            Self::PER_CHUNK * std::mem::size_of::<T>(),
            CHUNK_BYTES.max(std::mem::align_of::<T>()),
        )
        .expect("chunk layout")
    }

    fn len(&self) -> usize {
        self.len
    }

    fn push(&mut self, value: T) -> usize {
        let i = self.len;
        if i / Self::PER_CHUNK == self.chunks.len() {
            let layout = Self::layout();
            // SAFETY: the layout has a non-zero size.
            let raw = unsafe { alloc(layout) } as *mut T;
            let chunk = NonNull::new(raw).unwrap_or_else(|| handle_alloc_error(layout));
            advise_huge_pages(chunk.as_ptr() as *mut u8, layout.size());
            self.chunks.push(chunk);
        }
        // SAFETY: slot `i` lies inside its chunk (`i % PER_CHUNK < PER_CHUNK`)
        // and is not initialized yet (`i == len`).
        unsafe {
            self.chunks[i / Self::PER_CHUNK]
                .as_ptr()
                .add(i % Self::PER_CHUNK)
                .write(value)
        };
        self.len += 1;
        i
    }

    #[inline]
    fn get(&self, i: usize) -> &T {
        assert!(i < self.len, "pool index out of range");
        // SAFETY: slots below `len` are initialized and inside their chunk.
        unsafe {
            &*self.chunks[i / Self::PER_CHUNK]
                .as_ptr()
                .add(i % Self::PER_CHUNK)
        }
    }

    #[inline]
    fn get_mut(&mut self, i: usize) -> &mut T {
        assert!(i < self.len, "pool index out of range");
        // SAFETY: as in `get`, and `&mut self` makes the borrow unique.
        unsafe {
            &mut *self.chunks[i / Self::PER_CHUNK]
                .as_ptr()
                .add(i % Self::PER_CHUNK)
        }
    }

    /// Hints the CPU to start loading the cache lines of the first `bytes`
    /// of slot `i`, so a later access does not wait (no effect on
    /// correctness).
    #[inline]
    fn prefetch(&self, i: usize, bytes: usize) {
        if i < self.len {
            let ptr = self.chunks[i / Self::PER_CHUNK]
                .as_ptr()
                .wrapping_add(i % Self::PER_CHUNK) as *const u8;
            let mut offset = 0;
            while offset < bytes {
                prefetch_read(ptr.wrapping_add(offset));
                offset += 64;
            }
        }
    }

    fn bytes(&self) -> usize {
        self.chunks.capacity() * std::mem::size_of::<NonNull<T>>()
            + self.chunks.len() * Self::layout().size()
    }
}

impl<T> Drop for Pool<T> {
    fn drop(&mut self) {
        for i in 0..self.len {
            // SAFETY: slots below `len` are initialized and dropped once here.
            unsafe {
                self.chunks[i / Self::PER_CHUNK]
                    .as_ptr()
                    .add(i % Self::PER_CHUNK)
                    .drop_in_place()
            };
        }
        let layout = Self::layout();
        for chunk in &self.chunks {
            // SAFETY: every chunk came from `alloc` with this layout.
            unsafe { dealloc(chunk.as_ptr() as *mut u8, layout) };
        }
    }
}

/// Asks Linux to back `len` bytes at `ptr` with transparent huge pages, which
/// this kind of machine grants only on request (`enabled = madvise`).
#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
fn advise_huge_pages(ptr: *mut u8, len: usize) {
    extern "C" {
        fn madvise(addr: *mut std::ffi::c_void, len: usize, advice: i32) -> i32;
    }
    /// `MADV_HUGEPAGE` on these architectures.
    const MADV_HUGEPAGE: i32 = 14;
    // SAFETY: the range is memory this pool just allocated and owns; the call
    // changes only how the kernel backs it, and a failure changes nothing.
    unsafe {
        madvise(ptr as *mut std::ffi::c_void, len, MADV_HUGEPAGE);
    }
}

#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
fn advise_huge_pages(_ptr: *mut u8, _len: usize) {}

/// Starts loading the cache line at `ptr` without waiting for it.
#[inline]
fn prefetch_read(ptr: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch(ptr as *const i8, std::arch::x86_64::_MM_HINT_T0)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = ptr;
}

/// A pool of tree nodes addressed by `u32` (half a pointer) with slot reuse.
struct Arena<T> {
    /// The nodes, live or free.
    pool: Pool<T>,
    /// Released slots, reused first so memory follows the live node count.
    free: Vec<u32>,
}

impl<T> Arena<T> {
    fn new() -> Self {
        Arena {
            pool: Pool::new(),
            free: Vec::new(),
        }
    }

    fn alloc(&mut self, value: T) -> u32 {
        if let Some(id) = self.free.pop() {
            *self.pool.get_mut(id as usize) = value;
            return id;
        }
        self.pool.push(value) as u32
    }

    fn release(&mut self, id: u32) {
        self.free.push(id);
    }

    #[inline]
    fn get(&self, id: u32) -> &T {
        self.pool.get(id as usize)
    }

    #[inline]
    fn get_mut(&mut self, id: u32) -> &mut T {
        self.pool.get_mut(id as usize)
    }

    fn bytes(&self) -> usize {
        self.pool.bytes() + self.free.capacity() * 4
    }
}

/// The current key of every citizen the index knows, by citizen index
/// (dense: the engine numbers citizens as they enroll).
struct Table {
    /// One slot per citizen index below `len`.
    slots: Pool<Option<RankKey>>,
}

impl Table {
    #[inline]
    fn get(&self, citizen: u32) -> Option<&RankKey> {
        if (citizen as usize) < self.slots.len() {
            self.slots.get(citizen as usize).as_ref()
        } else {
            None
        }
    }

    /// The citizen's slot, growing the table to reach it.
    #[inline]
    fn slot_mut(&mut self, citizen: u32) -> &mut Option<RankKey> {
        while self.slots.len() <= citizen as usize {
            self.slots.push(None);
        }
        self.slots.get_mut(citizen as usize)
    }

    #[inline]
    fn prefetch(&self, citizen: u32) {
        self.slots
            .prefetch(citizen as usize, std::mem::size_of::<Option<RankKey>>());
    }

    /// The key of a citizen that is in a tree (a broken promise is a bug).
    #[inline]
    fn key(&self, citizen: u32) -> &RankKey {
        self.get(citizen)
            .expect("rank index: a tree entry has no key in the table")
    }

    fn bytes(&self) -> usize {
        self.slots.bytes()
    }
}

/// A bottom node of a bucket's tree: citizens of one count, in rank order.
///
/// Struct-of-arrays so a search scans contiguous integers and an entry costs
/// 12 bytes, not 16. `repr(C)` in this order so the header and the citizen
/// indices share the first cache lines: removing a known citizen or finding
/// its position scans only those (~4 lines), never the time keys.
#[repr(C)]
struct Leaf<const L: usize> {
    /// Entries in use.
    len: u32,
    /// The next leaf of the same bucket (or `NIL`), so a leaderboard page
    /// reads on without walking the tree again.
    next: u32,
    /// Each entry's citizen index, for the answer and for exact tie-breaks.
    cits: [u32; L],
    /// [`time_key`] of each entry's `last_trx`.
    sks: [u64; L],
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
struct Sep {
    /// [`time_key`] of `last_trx`, compared first.
    sk: u64,
    /// Final tie-break (see [`tie_cmp`]).
    citizen: u32,
    /// Exact `last_trx`, for when `sk` ties.
    last_trx: Timestamp,
    /// `tc_accepted_at`, for when `last_trx` ties.
    tc: Timestamp,
    /// `citizen_id`, for when both instants tie.
    id: Arc<str>,
}

impl Sep {
    fn of(citizen: u32, key: &RankKey) -> Sep {
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
struct Inner<const I: usize> {
    /// Children in use.
    len: u32,
    /// Entries under each child: what makes rank and select one walk.
    counts: [u32; I],
    /// Node ids of the children (leaves at height 1, inner nodes above).
    children: [u32; I],
    /// `sks[j] == seps[j].sk`: inline so a search scans one contiguous array
    /// (its cache lines load in parallel) and touches `seps` only on a tie.
    sks: [u64; I],
    /// `seps[j]` is a lower bound of child `j + 1` and above everything in
    /// child `j`; a `Vec` because `Sep` owns an `Arc` and inner nodes are few.
    seps: Vec<Sep>,
}

impl<const I: usize> Inner<I> {
    /// Copies the separators' time keys inline after any change to `seps`
    /// (splits and merges only, so the O(I) copy is cheap enough and leaves
    /// no way to forget one).
    fn sync_sks(&mut self) {
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
struct Bucket {
    /// Root node (a leaf when `height` is 0), or `NIL` when empty.
    root: u32,
    /// Inner levels above the leaves.
    height: u32,
    /// Citizens with this count, so a page can skip the tree's totals.
    len: u32,
}

const EMPTY_BUCKET: Bucket = Bucket {
    root: NIL,
    height: 0,
    len: 0,
};

/// Citizens per count value as a Fenwick tree: "how many have a count <= c"
/// and "which count holds the q-th citizen from the bottom" in O(log max count).
struct Fenwick {
    /// 1-based implicit tree; `tree.len() - 1` is a power of two, the largest
    /// count it covers.
    tree: Vec<u64>,
}

impl Fenwick {
    fn cap(&self) -> usize {
        self.tree.len() - 1
    }

    #[inline]
    fn inc(&mut self, mut i: usize) {
        let cap = self.cap();
        while i <= cap {
            self.tree[i] += 1;
            i += i & i.wrapping_neg();
        }
    }

    #[inline]
    fn dec(&mut self, mut i: usize) {
        let cap = self.cap();
        while i <= cap {
            self.tree[i] -= 1;
            i += i & i.wrapping_neg();
        }
    }

    /// Citizens with a count in `1..=i`.
    #[inline]
    fn prefix(&self, mut i: usize) -> u64 {
        let mut sum = 0;
        while i > 0 {
            sum += self.tree[i];
            i &= i - 1;
        }
        sum
    }

    /// The smallest count `c` with `prefix(c) >= q`, for `1 <= q <= total`.
    #[inline]
    fn lower_bound(&self, mut q: u64) -> usize {
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
    fn build(lens: impl Iterator<Item = u64>, cap: usize) -> Fenwick {
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
}

// ---------------------------------------------------------------------------
// Searching
// ---------------------------------------------------------------------------

/// A citizen's within-count key, ready to compare against entries and
/// boundaries. Fields rather than a `&RankKey` so a key that is not stored
/// yet (the prefetcher's next key) needs no `Arc` clone.
struct Probe<'a> {
    /// [`time_key`] of `last_trx`.
    sk: u64,
    /// Who; an entry with the same index is this very citizen.
    citizen: u32,
    /// Exact `last_trx`, for ties on `sk`.
    last_trx: Timestamp,
    /// `tc_accepted_at`, for ties on `last_trx`.
    tc: Timestamp,
    /// `citizen_id`, for ties on both instants.
    id: &'a str,
}

impl<'a> Probe<'a> {
    #[inline]
    fn new(citizen: u32, key: &'a RankKey) -> Self {
        Self::with_time(citizen, key, key.last_trx)
    }

    /// `key` with `last_trx` replaced.
    #[inline]
    fn with_time(citizen: u32, key: &'a RankKey, last_trx: Timestamp) -> Self {
        Probe {
            sk: time_key(last_trx),
            citizen,
            last_trx,
            tc: key.tc_accepted_at,
            id: &key.citizen_id,
        }
    }

    /// Against a leaf entry known to tie on `sk`.
    #[inline]
    fn cmp_tied_entry(&self, citizen: u32, table: &Table) -> Ordering {
        if citizen == self.citizen {
            return Ordering::Equal;
        }
        let other = table.key(citizen);
        self.cmp_rest(
            other.last_trx,
            other.tc_accepted_at,
            &other.citizen_id,
            citizen,
        )
    }

    #[inline]
    fn cmp_sep(&self, sep: &Sep) -> Ordering {
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
fn count_below(sks: &[u64], sk: u64) -> usize {
    sks.iter().map(|&s| (s < sk) as usize).sum()
}

/// Entries of `leaf` ordered before `probe`.
#[inline]
fn leaf_lower_bound<const L: usize>(leaf: &Leaf<L>, probe: &Probe, table: &Table) -> usize {
    let n = leaf.len as usize;
    let sks = &leaf.sks[..n];
    // Most arrivals are a payment with the newest time: after the last entry.
    if n == 0 || sks[n - 1] < probe.sk {
        return n;
    }
    let lo = count_below(sks, probe.sk);
    if lo == n || sks[lo] != probe.sk {
        return lo;
    }
    let hi = lo + sks[lo..].partition_point(|&s| s == probe.sk);
    lo + leaf.cits[lo..hi].partition_point(|&c| probe.cmp_tied_entry(c, table) == Ordering::Greater)
}

/// Where `citizen` sits in `leaf`, which must hold it (a broken promise is a
/// corrupted index: better a panic than a wrong ranking).
#[inline]
fn leaf_slot_of<const L: usize>(leaf: &Leaf<L>, citizen: u32) -> usize {
    leaf.cits[..leaf.len as usize]
        .iter()
        .position(|&c| c == citizen)
        .unwrap_or_else(|| panic!("rank index: citizen {citizen} not where its key says"))
}

/// The child of `inner` whose range holds `probe`.
#[inline]
fn child_for<const I: usize>(inner: &Inner<I>, probe: &Probe) -> usize {
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
struct Forest<const L: usize, const I: usize> {
    /// Leaf pool.
    leaves: Arena<Leaf<L>>,
    /// Inner node pool.
    inners: Arena<Inner<I>>,
}

impl<const L: usize, const I: usize> Forest<L, I> {
    /// Entries of bucket `b` ordered before `probe`.
    /// Entries of bucket `b` before `probe`, whose citizen must be in `b`.
    /// The key leads to the leaf; inside it the citizen index is enough.
    fn rank(&self, b: &Bucket, probe: &Probe) -> u64 {
        let mut node = b.root;
        let mut rank = 0u64;
        for _ in 0..b.height {
            let inner = self.inners.get(node);
            let i = child_for(inner, probe);
            rank += inner.counts[..i].iter().map(|&c| c as u64).sum::<u64>();
            node = inner.children[i];
        }
        rank + leaf_slot_of(self.leaves.get(node), probe.citizen) as u64
    }

    /// Walks to the leaf where `probe` is or would go and starts loading it
    /// (inner nodes are read on the way; they are few and mostly cached):
    /// only the header and citizen indices when `probe` is to be removed.
    fn prefetch_leaf(&self, b: &Bucket, probe: &Probe, removal: bool) {
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
        self.leaves.pool.prefetch(node as usize, bytes);
    }

    /// The leaf and slot of the entry with 0-based index `idx` in bucket `b`.
    fn select(&self, b: &Bucket, mut idx: u64) -> (u32, usize) {
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

    fn insert(&mut self, b: &mut Bucket, probe: &Probe, table: &Table) {
        b.len += 1;
        if b.root == NIL {
            let mut leaf = Leaf::default();
            leaf.len = 1;
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
        let mut inner = Inner::default();
        inner.len = 2;
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
        let mut r = Inner::default();
        r.len = (n + 1 - keep) as u32;
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
    fn remove(&mut self, b: &mut Bucket, probe: &Probe, table: &Table) {
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

// ---------------------------------------------------------------------------
// The index
// ---------------------------------------------------------------------------

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
            table: Table { slots: Pool::new() },
            forest: Forest {
                leaves: Arena::new(),
                inners: Arena::new(),
            },
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
        let (leaf, slot) = self.forest.select(&self.buckets[count], idx);
        let citizen = self.forest.leaves.get(leaf).cits[slot];
        Some((citizen, self.table.key(citizen)))
    }

    /// A leaderboard page: `(position, citizen, key)` for positions
    /// `offset + 1 ..= offset + limit` (fewer at the end).
    pub fn page(&self, offset: u64, limit: usize) -> Vec<(u64, u32, &RankKey)> {
        let mut out = Vec::new();
        if offset >= self.len || limit == 0 {
            return out;
        }
        out.reserve(limit.min((self.len - offset) as usize));
        let mut position = offset + 1;
        let (mut count, idx) = self.locate(position);
        let (mut leaf, mut slot) = self.forest.select(&self.buckets[count], idx);
        loop {
            let l = self.forest.leaves.get(leaf);
            for &citizen in &l.cits[slot..l.len as usize] {
                out.push((position, citizen, self.table.key(citizen)));
                if out.len() == limit {
                    return out;
                }
                position += 1;
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
        for id in 0..self.forest.inners.pool.len() as u32 {
            seps += self.forest.inners.get(id).seps.capacity();
        }
        std::mem::size_of::<Self>()
            + self.table.bytes()
            + self.forest.leaves.bytes()
            + self.forest.inners.bytes()
            + seps * std::mem::size_of::<Sep>()
            + self.buckets.capacity() * std::mem::size_of::<Bucket>()
            + self.fenwick.tree.capacity() * 8
    }

    /// Verifies every structural invariant, panicking on the first broken one:
    /// subtree counts, boundaries, order inside leaves, node fill, leaf links,
    /// bucket sizes, the Fenwick sums and the table. O(n); for tests.
    pub fn check_invariants(&self) {
        let ranked = (0..self.table.slots.len() as u32)
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

// ---------------------------------------------------------------------------
// Benchmark data
// ---------------------------------------------------------------------------

/// Synthetic data for the benchmark (`examples/rank_bench.rs`): plain code, no
/// external generator, deterministic for a seed.
pub mod bench {
    use super::RankKey;
    use crate::time::Timestamp;
    use std::sync::Arc;

    /// SplitMix64: tiny, fast, good enough for workloads, and its mixing step
    /// is a bijection, which gives unique citizen ids for free.
    pub struct Rng {
        /// The generator state.
        state: u64,
    }

    /// SplitMix64's output function: a bijection on `u64`.
    pub fn mix(mut z: u64) -> u64 {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    impl Rng {
        pub fn new(seed: u64) -> Self {
            Rng { state: seed }
        }

        pub fn next_u64(&mut self) -> u64 {
            self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            mix(self.state)
        }

        /// Uniform in `0..n` (n > 0), multiply-shift, no modulo bias to speak of.
        pub fn below(&mut self, n: u64) -> u64 {
            ((self.next_u64() as u128 * n as u128) >> 64) as u64
        }

        /// Uniform in `(0, 1)`.
        pub fn unit(&mut self) -> f64 {
            ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        }

        /// Standard normal (Box-Muller).
        pub fn normal(&mut self) -> f64 {
            let (u, v) = (self.unit(), self.unit());
            (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
        }
    }

    /// 2021-01-01T00:00:00Z, the start of the 2021H1 period.
    pub const PERIOD_START_SECS: i64 = 1_609_459_200;

    /// "Now" in the synthetic period: 150 days in, when most payments are done.
    pub const NOW_SECS: i64 = PERIOD_START_SECS + 150 * 86_400;

    /// One payment count from the 2021H1 shape: log-normal with median 90 and
    /// ~1.2% above 700 (the 100,000th of 8.4M needed ~700), with the tail
    /// above 700 compressed so the maximum of 8.4M draws is about 1,500.
    pub fn count(rng: &mut Rng) -> u32 {
        const MEDIAN: f64 = 90.0;
        const SIGMA: f64 = 0.907;
        const KNEE: f64 = 700.0;
        const TAIL_SIGMA: f64 = 0.25;
        let z = rng.normal();
        let z_knee = (KNEE / MEDIAN).ln() / SIGMA;
        let x = if z <= z_knee {
            MEDIAN * (SIGMA * z).exp()
        } else {
            KNEE * (TAIL_SIGMA * (z - z_knee)).exp()
        };
        x.round().clamp(1.0, 5_000.0) as u32
    }

    /// `n` ranked citizens (citizen index = position in the vector): counts as
    /// [`count`], `last_trx` in the 20 days before [`NOW_SECS`] at whole
    /// seconds (so equal instants happen, as with real `trx_date`s),
    /// `tc_accepted_at` in December 2020, ids 16 hex digits in an order
    /// unrelated to the index.
    pub fn synthetic(n: usize, seed: u64) -> Vec<RankKey> {
        let mut rng = Rng::new(seed);
        (0..n)
            .map(|i| {
                let count = count(&mut rng);
                let last = NOW_SECS - rng.below(20 * 86_400) as i64;
                let tc = PERIOD_START_SECS - 31 * 86_400 + rng.below(30 * 86_400) as i64;
                RankKey {
                    count,
                    last_trx: Timestamp::from_unix_nanos(last as i128 * 1_000_000_000),
                    tc_accepted_at: Timestamp::from_unix_nanos(tc as i128 * 1_000_000_000),
                    citizen_id: Arc::from(format!("{:016X}", mix(i as u64 ^ seed))),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(secs: i64) -> Timestamp {
        Timestamp::from_unix_nanos(secs as i128 * 1_000_000_000)
    }

    fn key(count: u32, last: i64, tc: i64, id: &str) -> RankKey {
        RankKey {
            count,
            last_trx: ts(last),
            tc_accepted_at: ts(tc),
            citizen_id: Arc::from(id),
        }
    }

    #[test]
    fn empty_index_answers_nothing() {
        let idx = RankIndex::new();
        idx.check_invariants();
        assert_eq!(idx.len(), 0);
        assert!(idx.is_empty());
        assert_eq!(idx.position(0), None);
        assert_eq!(idx.position(123_456), None);
        assert!(idx.at(0).is_none());
        assert!(idx.at(1).is_none());
        assert!(idx.page(0, 10).is_empty());
        assert_eq!(idx.count_at(1), None);
        assert_eq!(idx.max_transaction_number(), 0);
        assert_eq!(idx.min_transaction_number(100_000), 0);
        assert_eq!(idx.min_transaction_number(0), 0);
    }

    #[test]
    fn single_citizen() {
        let mut idx = RankIndex::new();
        idx.set(7, key(3, 10, 1, "A"));
        idx.check_invariants();
        assert_eq!(idx.len(), 1);
        assert_eq!(idx.position(7), Some(1));
        assert_eq!(idx.position(6), None);
        assert_eq!(idx.at(1).map(|(c, k)| (c, k.count)), Some((7, 3)));
        assert!(idx.at(2).is_none());
        assert_eq!(idx.count_at(1), Some(3));
        assert_eq!(idx.max_transaction_number(), 3);
        assert_eq!(idx.min_transaction_number(1), 3);
        let page = idx.page(0, 100);
        assert_eq!(page.len(), 1);
        assert_eq!((page[0].0, page[0].1), (1, 7));
        assert!(idx.page(1, 100).is_empty());
    }

    #[test]
    fn setting_the_same_key_changes_nothing() {
        let mut idx = RankIndex::new();
        idx.set(1, key(5, 10, 1, "B"));
        idx.set(2, key(5, 10, 1, "A"));
        idx.set(1, key(5, 10, 1, "B"));
        assert!(idx.update(2, 5, ts(10)));
        idx.check_invariants();
        assert_eq!(idx.len(), 2);
        assert_eq!(idx.position(2), Some(1), "id A before B on a full tie");
        assert_eq!(idx.position(1), Some(2));
    }

    #[test]
    fn count_zero_leaves_the_ranking_and_withdrawal_forgets() {
        let mut idx = RankIndex::new();
        idx.set(1, key(2, 10, 1, "A"));
        idx.set(2, key(1, 10, 1, "B"));
        assert!(idx.update(1, 0, ts(10)));
        idx.check_invariants();
        assert_eq!(idx.len(), 1);
        assert_eq!(idx.position(1), None);
        assert_eq!(idx.get(1).map(|k| k.count), Some(0), "known, not ranked");
        assert_eq!(idx.position(2), Some(1));
        assert!(idx.update(1, 1, ts(5)), "a known citizen comes back");
        assert_eq!(idx.position(1), Some(1), "earlier last_trx wins");
        idx.set(2, key(0, 10, 1, "B"));
        assert_eq!(idx.len(), 1);
        idx.remove(1);
        idx.check_invariants();
        assert_eq!(idx.len(), 0);
        assert!(idx.get(1).is_none());
        assert!(!idx.update(1, 3, ts(5)), "withdrawn: unknown");
        idx.remove(1);
        idx.remove(99);
        idx.check_invariants();
    }

    #[test]
    fn k_beyond_len_uses_the_last_position() {
        let mut idx = RankIndex::new();
        idx.set(0, key(9, 10, 1, "A"));
        idx.set(1, key(4, 10, 1, "B"));
        idx.set(2, key(4, 11, 1, "C"));
        assert_eq!(idx.count_at(3), Some(4));
        assert_eq!(idx.count_at(4), None);
        assert_eq!(idx.min_transaction_number(100_000), 4);
        assert_eq!(idx.min_transaction_number(1), 9);
        assert_eq!(idx.min_transaction_number(0), 0);
        assert_eq!(idx.max_transaction_number(), 9);
        let page: Vec<u32> = idx.page(1, 100).iter().map(|e| e.1).collect();
        assert_eq!(page, vec![1, 2]);
    }

    #[test]
    fn counts_beyond_the_initial_capacity_grow_the_index() {
        let mut idx = RankIndex::new();
        idx.set(0, key(3, 10, 1, "A"));
        idx.set(1, key(1_000_000, 10, 1, "B"));
        idx.set(2, key(17, 10, 1, "C"));
        idx.check_invariants();
        assert_eq!(idx.position(1), Some(1));
        assert_eq!(idx.position(2), Some(2));
        assert_eq!(idx.position(0), Some(3));
        assert_eq!(idx.max_transaction_number(), 1_000_000);
        let page: Vec<u32> = idx.page(0, 10).iter().map(|e| e.1).collect();
        assert_eq!(page, vec![1, 2, 0]);
    }

    #[test]
    fn tie_breaks_follow_the_rules() {
        let mut idx = RankIndex::new();
        idx.set(0, key(5, 20, 1, "A")); // later last_trx
        idx.set(1, key(5, 10, 2, "B")); // later tc
        idx.set(2, key(5, 10, 1, "D"));
        idx.set(3, key(5, 10, 1, "C")); // smaller id
        idx.set(4, key(6, 99, 9, "Z")); // higher count
        let order: Vec<u32> = idx.page(0, 10).iter().map(|e| e.1).collect();
        assert_eq!(order, vec![4, 3, 2, 1, 0]);
        for (i, c) in order.iter().enumerate() {
            assert_eq!(idx.position(*c), Some(i as u64 + 1));
        }
    }

    #[test]
    fn deep_trees_with_tiny_nodes() {
        let mut idx = RankIndexWith::<4, 4>::new();
        let mut rng = bench::Rng::new(1);
        for c in 0..2_000u32 {
            let k = key(
                1 + rng.below(3) as u32,
                rng.below(50) as i64,
                0,
                &format!("{}", c),
            );
            idx.set(c, k);
        }
        idx.check_invariants();
        for c in (0..2_000u32).step_by(3) {
            idx.remove(c);
        }
        idx.check_invariants();
        let page = idx.page(0, 5_000);
        assert_eq!(page.len() as u64, idx.len());
        for w in page.windows(2) {
            assert_eq!(w[0].2.rank_cmp(w[1].2), Ordering::Less);
        }
        for (p, c, _) in page {
            assert_eq!(idx.position(c), Some(p));
        }
    }

    #[test]
    fn synthetic_data_has_the_2021_shape() {
        let keys = bench::synthetic(200_000, 3);
        let mut counts: Vec<u32> = keys.iter().map(|k| k.count).collect();
        counts.sort_unstable();
        let median = counts[counts.len() / 2];
        assert!((80..=100).contains(&median), "median {median}");
        // The 100,000th of 8.4M is the top 1.19%.
        let top = counts[counts.len() - counts.len() * 119 / 10_000];
        assert!((600..=800).contains(&top), "top 1.19% at {top}");
        assert!(*counts.last().unwrap() <= 1_600);
    }
}
