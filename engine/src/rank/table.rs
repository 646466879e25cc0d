//! The per-citizen table of keys: what the trees' compact entries point to.

use super::storage::Pool;
use super::RankKey;

/// The current key of every citizen the index knows, by citizen index
/// (dense: the engine numbers citizens as they enroll).
pub(super) struct Table {
    /// One slot per citizen index below `len`.
    slots: Pool<Option<RankKey>>,
}

impl Table {
    pub(super) fn new() -> Self {
        Table { slots: Pool::new() }
    }

    /// Citizen indices the table reaches (known or not): `0..len()`.
    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    #[inline]
    pub(super) fn get(&self, citizen: u32) -> Option<&RankKey> {
        if (citizen as usize) < self.slots.len() {
            self.slots.get(citizen as usize).as_ref()
        } else {
            None
        }
    }

    /// The citizen's slot, growing the table to reach it.
    #[inline]
    pub(super) fn slot_mut(&mut self, citizen: u32) -> &mut Option<RankKey> {
        while self.slots.len() <= citizen as usize {
            self.slots.push(None);
        }
        self.slots.get_mut(citizen as usize)
    }

    #[inline]
    pub(super) fn prefetch(&self, citizen: u32) {
        self.slots
            .prefetch(citizen as usize, std::mem::size_of::<Option<RankKey>>());
    }

    /// The key of a citizen that is in a tree (a broken promise is a bug).
    #[inline]
    pub(super) fn key(&self, citizen: u32) -> &RankKey {
        self.get(citizen)
            .expect("rank index: a tree entry has no key in the table")
    }

    pub(super) fn bytes(&self) -> usize {
        self.slots.bytes()
    }
}
