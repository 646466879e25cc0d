//! What the app sees of a standing, as rules: what is payable and who wins
//! the Supercashback (RULES.md). The wire shapes of the replies live with
//! the services (`cashback::services::protocol`); the rules stay here so that
//! the query, the pushes and the payout file decide them the same way.

use crate::ledger::Standing;
use crate::period::AwardPeriod;
use rust_decimal::Decimal;

/// Where a citizen stands in the ranking of a period (filled in by the
/// ranking; `None` until it exists).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RankFields {
    /// 1-based position; `None` while the count is 0.
    pub ranking: Option<u64>,
    /// Ranked citizens in the period.
    pub total_participants: u64,
    /// Count at position 1.
    pub max_transaction_number: u32,
    /// Count at position `supercashback_winners` (or the last).
    pub min_transaction_number: u32,
}

/// What is payable at the end of the period: the cashback capped at
/// `max_cashback`, and only from `min_transactions` payments on.
pub fn payable(standing: &Standing, period: &AwardPeriod) -> Decimal {
    if threshold_reached(standing, period) {
        standing.cashback.min(period.max_cashback)
    } else {
        Decimal::ZERO
    }
}

/// Whether the citizen made the payments needed for any cashback and for
/// the Supercashback.
pub fn threshold_reached(standing: &Standing, period: &AwardPeriod) -> bool {
    standing.count >= period.min_transactions
}

/// Whether a citizen at `ranking` wins the Supercashback: within the first
/// `supercashback_winners` positions and past the threshold (a top position
/// below the threshold wins nothing, and nobody moves up to replace it).
pub fn wins_supercashback(standing: &Standing, period: &AwardPeriod, ranking: Option<u64>) -> bool {
    threshold_reached(standing, period)
        && ranking.is_some_and(|pos| pos <= period.supercashback_winners as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::period::tests::period;
    use std::str::FromStr;

    fn standing(count: u32, cashback: &str) -> Standing {
        Standing {
            count,
            cashback: Decimal::from_str(cashback).unwrap(),
            ..Standing::default()
        }
    }

    #[test]
    fn payable_and_winners_need_the_threshold() {
        // 2021 rules: 50 payments, 150.00 cap, 100,000 winners.
        let p = period("P", "2021-01-01", "2021-06-30");
        assert_eq!(payable(&standing(49, "30"), &p), Decimal::ZERO);
        assert_eq!(payable(&standing(50, "30"), &p), Decimal::from(30));
        assert_eq!(payable(&standing(80, "170"), &p), Decimal::from(150));
        assert!(!wins_supercashback(&standing(49, "1"), &p, Some(1)));
        assert!(wins_supercashback(&standing(50, "1"), &p, Some(100_000)));
        assert!(!wins_supercashback(&standing(50, "1"), &p, Some(100_001)));
        assert!(!wins_supercashback(&standing(50, "1"), &p, None));
    }
}
