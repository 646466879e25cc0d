//! Live counters shared by the pipeline, the status line, `/health` and the
//! metrics. Atomics: written by one task, read by others.

use cashback_engine::period::PeriodIdx;
use cashback_engine::reason::Reason;
use rust_decimal::Decimal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

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
    /// Accrued cashback (uncapped, after reversals) of all citizens, indexed
    /// by period: the sum of the shards' reported changes, exact.
    accrued: Mutex<Vec<Decimal>>,
}

impl Progress {
    /// Counts one rejection.
    pub fn reject(&self, reason: Reason) {
        let i = Reason::ALL.iter().position(|r| *r == reason).unwrap_or(0);
        self.rejected[i].fetch_add(1, Relaxed);
        metrics::counter!("cashback_rejections_total", "reason" => reason.as_str()).increment(1);
        metrics::counter!("cashback_authorizations_total", "outcome" => "rejected").increment(1);
    }

    /// Adds the accrued-cashback changes of one shard report.
    pub fn accrue(&self, changes: &[(PeriodIdx, Decimal)]) {
        if changes.is_empty() {
            return;
        }
        let mut accrued = self.accrued.lock().unwrap_or_else(|e| e.into_inner());
        for (period, delta) in changes {
            let i = *period as usize;
            if accrued.len() <= i {
                accrued.resize(i + 1, Decimal::ZERO);
            }
            accrued[i] += delta;
        }
    }

    /// Accrued cashback per period so far (index: period), in euros.
    pub fn accrued(&self) -> Vec<Decimal> {
        self.accrued
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
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
