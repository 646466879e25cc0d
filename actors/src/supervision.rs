//! Supervision of citizen shards.
//!
//! actix does not restart an actor whose handler panicked: the panic unwinds
//! through the arbiter and the mailbox closes, so every later `send` fails and
//! the pipeline would stall. A shard therefore *decides* each item under
//! `catch_unwind`: the ledger decides with `&self` into a `Decision` and only
//! then commits it (`cashback_engine::ledger::decision`), so a panic leaves
//! the state exactly as it was, by construction. The shard retries the item,
//! and an item that fails `MAX_ATTEMPTS` times is set aside as
//! `internal_error` so that it cannot stall its shard (time still passes for
//! it: the expiries it would have triggered happen). After any panic the
//! shard calls `ctx.stop()`: started with `actix::Supervisor`, it is
//! restarted on the same address and mailbox (no message lost), and
//! `Supervised::restarting` rebuilds every derived index from the primary
//! state before the next message.

use cashback_engine::item::{Item, LateRejection, Report};
use cashback_engine::ledger::Ledger;
use cashback_engine::reason::{Reason, Rejection};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Tries of one item before it is set aside.
pub const MAX_ATTEMPTS: u8 = 2;

/// How applying one item ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    /// At the first try.
    Cleanly,
    /// After `n` panics, then success.
    Recovered(u8),
    /// Panicked every time and was set aside as `internal_error`.
    SetAside,
}

/// Applies `item` to `ledger`: decides it (retrying after a panic), then
/// commits the decision. An item whose decision panics `MAX_ATTEMPTS` times
/// is set aside.
pub fn apply_supervised(ledger: &mut Ledger, item: &Item, report: &mut Report) -> Applied {
    let mut attempt = 0;
    loop {
        match catch_unwind(AssertUnwindSafe(|| ledger.decide(item))) {
            Ok(decision) => {
                ledger.commit(decision, report);
                return match attempt {
                    0 => Applied::Cleanly,
                    n => Applied::Recovered(n),
                };
            }
            Err(panic) => {
                attempt += 1;
                let why = panic_text(&panic);
                tracing::error!(partition = ledger.partition(), attempt, %why, "deciding a shard item panicked");
                if attempt >= MAX_ATTEMPTS {
                    set_aside(ledger, item, &why, attempt, report);
                    return Applied::SetAside;
                }
            }
        }
    }
}

/// Runs a step of the sequential router (an enrollment's decision, say)
/// that may panic, retrying it like a shard item: the router decides before
/// it commits too, so a retry cannot apply anything twice. `Err` (with the
/// panic's text) after `MAX_ATTEMPTS` panics: the caller sets the message
/// aside.
pub fn retrying<T>(what: &str, mut step: impl FnMut() -> T) -> Result<T, String> {
    let mut attempt = 0;
    loop {
        match catch_unwind(AssertUnwindSafe(&mut step)) {
            Ok(out) => return Ok(out),
            Err(panic) => {
                attempt += 1;
                let why = panic_text(&panic);
                tracing::error!(attempt, %why, "{what} panicked");
                if attempt >= MAX_ATTEMPTS {
                    return Err(why);
                }
            }
        }
    }
}

/// What remains of an item that cannot be decided: time passes, and its
/// message is rejected `internal_error` (an operator's request is answered
/// `unavailable`).
fn set_aside(ledger: &mut Ledger, item: &Item, why: &str, attempts: u8, report: &mut Report) {
    if let Some(now) = item.now() {
        if let Ok(tick) = catch_unwind(AssertUnwindSafe(|| ledger.decide_tick(now))) {
            ledger.commit(tick, report);
        }
    }
    match item {
        Item::Exclusion(e) => report.exclusions.push((
            e.seq,
            e.op,
            Err(cashback_engine::refusal::ErrorCode::Unavailable),
        )),
        Item::Credit(c) => {
            report.credits_set_aside += 1;
            report.invariant_violations.push(format!(
                "a credit from partition {} (seq {}) for citizen {} was set aside after {attempts} failures ({why}): \
                 the citizen's totals miss it; snapshots are withheld until a restart replays it",
                c.id.source, c.id.seq, c.citizen
            ))
        }
        _ => {
            if let Some(seq) = item.message_seq() {
                report.rejections.push(LateRejection {
                    seq,
                    rejection: Rejection::new(
                        Reason::InternalError,
                        format!("the engine failed {attempts} times on this message ({why}); it was set aside"),
                    ),
                    origin: item.origin().cloned(),
                });
            }
        }
    }
}

/// The message of a panic payload.
fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}
