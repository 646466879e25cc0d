//! Cashback arithmetic, exact: amounts are integer cents, cashback is a
//! `rust_decimal::Decimal` rounded half-down to cents (RULES.md, "Cashback per
//! payment"). No floating point anywhere.

use rust_decimal::{Decimal, RoundingStrategy};

/// The cashback one payment earns while `balance_cents` of it still counts:
/// `min(balance × rate, cap)`, rounded to cents with ties toward zero
/// (12.55 EUR at 10% gives 1.25, 12.56 EUR gives 1.26).
pub fn score(balance_cents: u64, rate: Decimal, cap: Decimal) -> Decimal {
    // Amounts fit in i64 (the protocol caps them at 2^63-1); Decimal holds 96
    // bits, so multiplying by a rate of a few digits cannot overflow.
    let amount = Decimal::new(balance_cents as i64, 2);
    let raw = amount.checked_mul(rate).unwrap_or(Decimal::MAX);
    raw.min(cap)
        .round_dp_with_strategy(2, RoundingStrategy::MidpointTowardZero)
}

/// Renders money as the protocol wants it: a decimal string with exactly two
/// decimals ("12.50").
pub fn money_string(value: Decimal) -> String {
    let mut v = value.round_dp_with_strategy(2, RoundingStrategy::MidpointTowardZero);
    v.rescale(2);
    v.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn score_edges() {
        let rate = d("0.10");
        let cap = d("15.00");
        for (cents, want) in [
            (1255, "1.25"),   // half-down: 1.255 -> 1.25
            (1256, "1.26"),   // 1.256 -> 1.26
            (1254, "1.25"),   // 1.254 -> 1.25
            (1, "0.00"),      // 0.001 -> 0.00
            (5, "0.00"),      // 0.005 -> tie toward zero
            (6, "0.01"),      // 0.006 -> above the tie
            (15000, "15.00"), // exactly at the cap
            (15001, "15.00"), // 150.01 EUR: capped
            (14999, "15.00"), // 149.99 EUR -> 14.999: above the tie, rounds up
            (14995, "14.99"), // 149.95 EUR -> 14.995: the tie goes toward zero
            (i64::MAX as u64, "15.00"),
        ] {
            assert_eq!(score(cents, rate, cap), d(want), "{cents} cents");
        }
    }

    #[test]
    fn money_strings_have_two_decimals() {
        assert_eq!(money_string(d("0")), "0.00");
        assert_eq!(money_string(d("12.5")), "12.50");
        assert_eq!(money_string(d("150.00")), "150.00");
        assert_eq!(money_string(d("-1.2")), "-1.20");
    }
}
