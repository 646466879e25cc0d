//! Supervision of citizen shards.
//!
//! actix does not restart an actor whose handler panicked: the panic unwinds
//! through the arbiter and the mailbox closes, so every later `send` fails and
//! the pipeline would stall. A shard therefore runs each item under
//! `catch_unwind`. The ledger decides before it commits, so a panicking item
//! leaves the state as it was; the shard then retries it, and an item that
//! fails `MAX_ATTEMPTS` times is set aside as `internal_error` so that it
//! cannot stall its shard. After any panic the shard calls `ctx.stop()`:
//! started with `actix::Supervisor`, it is restarted on the same address and
//! mailbox (no message lost), and `Supervised::restarting` rebuilds every
//! derived index from the primary state before the next message.

use cashback_engine::item::{Item, LateRejection, Report, Settled};
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

/// Applies `item` to `ledger`, retrying after a panic and setting the item
/// aside after `MAX_ATTEMPTS` panics. Report entries of a try that panicked
/// are kept: they describe changes committed before the panic (such as the
/// expiry of parked reversals), which a retry will not repeat.
pub fn apply_supervised(ledger: &mut Ledger, item: &Item, report: &mut Report) -> Applied {
    let mut attempt = 0;
    loop {
        let outcome = catch_unwind(AssertUnwindSafe(|| ledger.apply(item, attempt, report)));
        match outcome {
            Ok(()) if attempt == 0 => return Applied::Cleanly,
            Ok(()) => return Applied::Recovered(attempt),
            Err(panic) => {
                attempt += 1;
                let why = panic_text(&panic);
                tracing::error!(partition = ledger.partition(), attempt, %why, "shard item panicked");
                if attempt >= MAX_ATTEMPTS {
                    if let Some((seq, key)) = item.message() {
                        report.settled.push(Settled::Forget(key));
                        report.rejections.push(LateRejection {
                            seq,
                            rejection: Rejection::new(
                                Reason::InternalError,
                                format!("the engine failed {attempt} times on this message ({why}); it was set aside"),
                            ),
                            origin: None,
                        });
                    }
                    return Applied::SetAside;
                }
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
