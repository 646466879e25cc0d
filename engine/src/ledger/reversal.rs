//! The reversal rules (RULES.md, "Reversals"): which payment a reversal
//! matches and whether it may apply. Pure judgement over a [`View`] of a
//! card's payments; nothing here changes state.

use super::view::View;
use crate::directory::CitizenIdx;
use crate::item::Reversal;
use crate::period::Periods;
use crate::reason::{Reason, Rejection};
use crate::time::Timestamp;

use super::record::fold_key;

/// What the rules conclude about a reversal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Apply it to the payment at this position: its balance becomes
    /// `balance_after`.
    Apply {
        /// The payment's position in the card's book.
        pos: u32,
        /// Its balance before.
        balance_before: u64,
        /// Its balance after.
        balance_after: u64,
    },
    /// Nothing matches: wait for the payment.
    Park,
    /// Matched, but refused.
    Reject(Rejection),
}

/// Judges reversal `r` against the card's payments as `view` shows them, at
/// `now`, the log's clock (the period of the matched payment must still
/// accept data then; see `Router::payment_fate` on why not the message's own
/// broker time), with `withdrawn` the card's owners who withdrew.
///
/// Matching: with a correlation id, the payment with the same one (partial
/// amounts allowed); without, the payment at the same terminal whose
/// remaining balance equals the amount (a total reversal). Among several,
/// the earliest `trx_date`, then the first to arrive. A payment stays
/// matchable at balance 0, and when an operator excluded it.
pub(super) fn judge(
    view: &View,
    r: &Reversal,
    now: Timestamp,
    withdrawn: &[CitizenIdx],
    periods: &Periods,
) -> Verdict {
    let terminal = fold_key(r.terminal_key);
    let correlation = r.correlation_key.map(fold_key);
    let mut best: Option<((Timestamp, u64), u32)> = None;
    for pos in 0..view.len() {
        let matches = match correlation {
            Some(k) => view.correlation(pos) == k,
            None => view.terminal(pos) == terminal && view.balance(pos) == r.amount,
        };
        if !matches {
            continue;
        }
        // The sequence is compared (not just the position, which is in
        // arrival order too) to keep the rule's words exactly.
        let key = (view.trx_date(pos), view.seq(pos));
        if best.is_none_or(|(k, _)| key < k) {
            best = Some((key, pos));
        }
    }
    let Some((_, pos)) = best else {
        return Verdict::Park;
    };
    if withdrawn.contains(&view.citizen(pos)) {
        return Verdict::Reject(Rejection::new(
            Reason::CitizenWithdrawn,
            "the payment's citizen has withdrawn",
        ));
    }
    let period = view.period(pos);
    if !periods.accepts_data(period, now) {
        return Verdict::Reject(Rejection::new(
            Reason::PeriodClosed,
            format!(
                "award period {} of the payment no longer accepts data",
                periods.get(period).id
            ),
        ));
    }
    let balance = view.balance(pos);
    if r.amount > balance {
        return Verdict::Reject(Rejection::new(
            Reason::ReversalExceedsOriginal,
            format!(
                "reversal of {} cents exceeds the payment's remaining {balance} cents",
                r.amount
            ),
        ));
    }
    Verdict::Apply {
        pos,
        balance_before: balance,
        balance_after: balance - r.amount,
    }
}
