//! Live counters shared by the pipeline, the status line, `/health` and the
//! metrics. Atomics: written by one task, read by others.

use cashback_engine::reason::Reason;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// Counters of the running engine.
#[derive(Debug, Default)]
pub struct Progress {
    /// Highest stream sequence whose effects are applied.
    pub applied_seq: AtomicU64,
    /// Last sequence in the stream at the last check.
    pub stream_last_seq: AtomicU64,
    /// Authorizations read from the stream.
    pub authorizations: AtomicU64,
    /// Payments that counted.
    pub counted: AtomicU64,
    /// Reversals applied to their payment.
    pub reversals_applied: AtomicU64,
    /// Reversals waiting for their payment (parked, cumulative).
    pub reversals_parked: AtomicU64,
    /// Enrollment journal entries applied.
    pub enrollments: AtomicU64,
    /// Citizens ever enrolled.
    pub citizens: AtomicU64,
    /// Rejections by reason, indexed like `Reason::ALL`.
    pub rejected: [AtomicU64; Reason::ALL.len()],
    /// Whether the NATS connection is up.
    pub connected: AtomicBool,
    /// Whether the pipeline has replayed the log up to where it was at start.
    pub replayed: AtomicBool,
}

impl Progress {
    /// Counts one rejection.
    pub fn reject(&self, reason: Reason) {
        let i = Reason::ALL.iter().position(|r| *r == reason).unwrap_or(0);
        self.rejected[i].fetch_add(1, Relaxed);
        metrics::counter!("cashback_rejections_total", "reason" => reason.as_str()).increment(1);
        metrics::counter!("cashback_authorizations_total", "outcome" => "rejected").increment(1);
    }

    /// Messages in the stream not yet applied.
    pub fn lag(&self) -> u64 {
        self.stream_last_seq
            .load(Relaxed)
            .saturating_sub(self.applied_seq.load(Relaxed))
    }

    /// Rejections by reason, non-zero only.
    pub fn rejections(&self) -> Vec<(&'static str, u64)> {
        Reason::ALL
            .iter()
            .zip(&self.rejected)
            .map(|(r, n)| (r.as_str(), n.load(Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}
