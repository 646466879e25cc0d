//! Enrollment requests waiting for their journal entry to be applied.
//!
//! The enrollment service journals a request with a reply token in a header,
//! then waits here; the pipeline, when it applies that entry in log order,
//! completes the token with the outcome. Tokens carry a per-process nonce, so
//! entries journaled by an earlier process (replayed after a restart) never
//! match a live waiter.

use cashback_engine::enrollment::EnrollError;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use tokio::sync::oneshot;

/// The header carrying the reply token.
pub const REPLY_TOKEN_HEADER: &str = "Cashback-Reply-Token";

/// The header carrying where the answer to an operator's journaled request
/// goes: the inbox of the node that took the request. Whichever node owns
/// the payment's partition decides it and answers there (in a cluster that
/// may be another node than the one that took it).
pub const REPLY_SUBJECT_HEADER: &str = "Cashback-Reply-To";

/// The outcome of an enrollment.
pub type EnrollOutcome = Result<(), EnrollError>;

/// Pending enrollment replies.
#[derive(Debug)]
pub struct Waiters {
    /// Token -> where to send the outcome.
    pending: Mutex<HashMap<String, oneshot::Sender<EnrollOutcome>>>,
    /// Random per process.
    nonce: u64,
    /// Next token number.
    next: AtomicU64,
}

impl Default for Waiters {
    fn default() -> Waiters {
        Waiters {
            pending: Mutex::new(HashMap::new()),
            nonce: rand::random(),
            next: AtomicU64::new(0),
        }
    }
}

impl Waiters {
    /// A new token and the receiver of its outcome.
    pub fn register(&self) -> (String, oneshot::Receiver<EnrollOutcome>) {
        let token = format!(
            "{:016x}-{}",
            self.nonce,
            self.next.fetch_add(1, Ordering::Relaxed)
        );
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .expect("waiters lock")
            .insert(token.clone(), tx);
        (token, rx)
    }

    /// Delivers the outcome for `token`, if someone still waits for it.
    pub fn complete(&self, token: &str, outcome: EnrollOutcome) {
        if let Some(tx) = self.pending.lock().expect("waiters lock").remove(token) {
            let _ = tx.send(outcome);
        }
    }

    /// Drops a token whose request gave up (timeout, publish failure).
    pub fn forget(&self, token: &str) {
        self.pending.lock().expect("waiters lock").remove(token);
    }
}
