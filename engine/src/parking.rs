//! Bounds on reversals waiting for their payment (README, "Limits"), so that
//! a flood of reversals that match nothing cannot make the engine grow
//! without limit. Beyond a bound a reversal that would wait is rejected
//! `unmatched_reversal` at once.
//!
//! Both bounds are decided where the reversal waits, in log order: per card
//! in the card's partition, and the engine-wide bound as an equal share per
//! partition. Why a share and not one engine-wide count: the card's
//! partition decides alone, with no round trip to a central counter, so a
//! replay, a replica and every cluster size decide exactly alike.

/// The bounds, as configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParkingLimits {
    /// Most reversals waiting on one card. A reversal waits on its card, not
    /// yet on a citizen: it reaches a citizen only through the payment it
    /// matches, so the card is the unit a flood "for one citizen" fills.
    pub per_card: usize,
    /// Most reversals waiting in one partition (and among the reversals for
    /// cards nobody enrolled yet, which wait outside any partition): the
    /// engine-wide bound divided evenly.
    pub per_partition: usize,
}

impl ParkingLimits {
    /// 100 per card: a card with that many refunds ahead of their payments is
    /// not a real card.
    pub const DEFAULT_PER_CARD: usize = 100;
    /// 200,000 in all: about 60 MB of typical reversals, at most 3.3 GB at
    /// the 16 KiB message limit.
    pub const DEFAULT_TOTAL: usize = 200_000;

    /// The bounds for `total` reversals in all, shared by `partitions`.
    pub fn new(per_card: usize, total: usize, partitions: u16) -> ParkingLimits {
        ParkingLimits {
            per_card,
            per_partition: total.div_ceil(partitions.max(1) as usize),
        }
    }
}

impl Default for ParkingLimits {
    fn default() -> ParkingLimits {
        ParkingLimits::new(
            Self::DEFAULT_PER_CARD,
            Self::DEFAULT_TOTAL,
            crate::partition::DEFAULT_PARTITIONS,
        )
    }
}
