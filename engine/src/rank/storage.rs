//! The index's memory: chunked pools of fixed slots, backed by huge pages,
//! with a prefetch hint. This is the only `unsafe` code of the engine crate
//! (`lib.rs` denies it everywhere else): raw allocation, slot writes and
//! reads, `madvise`, the prefetch intrinsic. Everything here is reached
//! through a small safe API (push, get, get_mut, prefetch) whose bounds
//! checks uphold the invariants the `SAFETY:` comments rely on.

// The crate denies `unsafe_code` (lib.rs); this module alone is allowed it.
#![allow(unsafe_code)]

use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::ptr::NonNull;

/// Bytes per storage chunk: one 2 MiB huge page.
const CHUNK_BYTES: usize = 2 << 20;

/// Append-only storage of `T` in 2 MiB-aligned chunks, addressed by index.
///
/// Why not a `Vec`: growing to millions of citizens would copy the whole
/// array (a pause of hundreds of milliseconds in a live engine) and hold twice
/// its size meanwhile. Why 2 MiB-aligned chunks advised as huge pages: every
/// update and query lands on random citizens, so most accesses miss the TLB;
/// on this kind of virtual machine a dependent random read costs ~490 ns with
/// 4 KiB pages and ~230 ns with 2 MiB pages. Slots are written once when
/// pushed and read only below `len`.
pub(super) struct Pool<T> {
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

    pub(super) fn new() -> Self {
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

    /// Slots pushed so far (all initialized).
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Stores `value` in the next slot and returns its index.
    pub(super) fn push(&mut self, value: T) -> usize {
        let i = self.len;
        if i / Self::PER_CHUNK == self.chunks.len() {
            let layout = Self::layout();
            // SAFETY: the layout has a non-zero size: `PER_CHUNK > 0` slots
            // (asserted at compile time) of a type that is not zero-sized
            // (for one, computing `PER_CHUNK` divides by zero: no build).
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

    /// Slot `i`; panics at or beyond `len`.
    #[inline]
    pub(super) fn get(&self, i: usize) -> &T {
        assert!(i < self.len, "pool index out of range");
        // SAFETY: slots below `len` are initialized and inside their chunk.
        unsafe {
            &*self.chunks[i / Self::PER_CHUNK]
                .as_ptr()
                .add(i % Self::PER_CHUNK)
        }
    }

    /// Slot `i`, writable; panics at or beyond `len`.
    #[inline]
    pub(super) fn get_mut(&mut self, i: usize) -> &mut T {
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
    /// correctness; an index out of range is ignored).
    #[inline]
    pub(super) fn prefetch(&self, i: usize, bytes: usize) {
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

    /// Heap bytes held, whole chunks included.
    pub(super) fn bytes(&self) -> usize {
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
pub(super) struct Arena<T> {
    /// The nodes, live or free.
    pool: Pool<T>,
    /// Released slots, reused first so memory follows the live node count.
    free: Vec<u32>,
}

impl<T> Arena<T> {
    pub(super) fn new() -> Self {
        Arena {
            pool: Pool::new(),
            free: Vec::new(),
        }
    }

    /// Stores `value` in a free slot (or a new one) and returns its id.
    pub(super) fn alloc(&mut self, value: T) -> u32 {
        if let Some(id) = self.free.pop() {
            *self.pool.get_mut(id as usize) = value;
            return id;
        }
        self.pool.push(value) as u32
    }

    /// Makes `id` reusable; its value stays until then (the caller drops
    /// what it must, e.g. an inner node's separators, before releasing).
    pub(super) fn release(&mut self, id: u32) {
        self.free.push(id);
    }

    #[inline]
    pub(super) fn get(&self, id: u32) -> &T {
        self.pool.get(id as usize)
    }

    #[inline]
    pub(super) fn get_mut(&mut self, id: u32) -> &mut T {
        self.pool.get_mut(id as usize)
    }

    /// [`Pool::prefetch`] of node `id`.
    #[inline]
    pub(super) fn prefetch(&self, id: u32, bytes: usize) {
        self.pool.prefetch(id as usize, bytes);
    }

    /// Slots ever allocated, live or free: ids below this are valid to read.
    pub(super) fn slots(&self) -> usize {
        self.pool.len()
    }

    /// Heap bytes held.
    pub(super) fn bytes(&self) -> usize {
        self.pool.bytes() + self.free.capacity() * 4
    }
}
