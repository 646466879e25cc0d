//! The configuration that decisions depend on, in one value: the award
//! periods (with every rule setting), the partitions, reversal parking and
//! the authorization size limit. Why one value: a snapshot is loaded only
//! under the settings it was taken with (its fingerprint), since replaying
//! the rest of the log under other settings could decide differently from
//! what the snapshot already holds.

use crate::parking::ParkingLimits;
use crate::period::Periods;
use std::sync::Arc;

/// Everything that changes decisions.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Award periods and their rules.
    pub periods: Arc<Periods>,
    /// Partitions citizens hash into.
    pub partitions: u16,
    /// How long a reversal waits for its payment.
    pub park_days: u32,
    /// Bounds on waiting reversals.
    pub limits: ParkingLimits,
    /// Longer authorization bodies are rejected unparsed.
    pub max_authorization_bytes: usize,
}

impl Settings {
    /// A fingerprint of every setting: equal fingerprints, equal decisions.
    /// Deliberately built from the `Debug` text of each value, so that a
    /// setting added to any of these types (a new rule field in a period,
    /// say) is covered without anyone remembering to add it here.
    pub fn fingerprint(&self) -> u64 {
        let text = format!(
            "{:?}|{}|{}|{:?}|{}",
            self.periods.all(),
            self.partitions,
            self.park_days,
            self.limits,
            self.max_authorization_bytes
        );
        xxhash_rust::xxh3::xxh3_64(text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_moves_the_fingerprint() {
        let periods = |limit| {
            let mut p = crate::period::tests::period("P", "2021-01-01", "2021-06-30");
            p.max_payments_per_merchant_day = limit;
            Arc::new(Periods::new(vec![p]).unwrap())
        };
        let base = Settings {
            periods: periods(0),
            partitions: 256,
            park_days: 30,
            limits: ParkingLimits::default(),
            max_authorization_bytes: 16384,
        };
        let variants = [
            Settings {
                periods: periods(3),
                ..base.clone()
            },
            Settings {
                partitions: 128,
                ..base.clone()
            },
            Settings {
                park_days: 31,
                ..base.clone()
            },
            Settings {
                limits: ParkingLimits::new(5, 200_000, 256),
                ..base.clone()
            },
            Settings {
                limits: ParkingLimits::new(100, 1_000, 256),
                ..base.clone()
            },
            Settings {
                max_authorization_bytes: 8192,
                ..base.clone()
            },
        ];
        for v in &variants {
            assert_ne!(v.fingerprint(), base.fingerprint(), "{v:?}");
        }
        assert_eq!(base.clone().fingerprint(), base.fingerprint());
    }
}
