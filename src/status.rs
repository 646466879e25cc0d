//! The one-line status printed every second by `serve --status`, so a new
//! user sees the engine work.

use crate::progress::Progress;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Prints the status line every second until `shutdown`.
pub async fn run(progress: Arc<Progress>, mut shutdown: watch::Receiver<bool>) {
    let mut last = (Instant::now(), progress.authorizations.load(Relaxed));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
        }
        let now = (Instant::now(), progress.authorizations.load(Relaxed));
        let rate = (now.1 - last.1) as f64 / now.0.duration_since(last.0).as_secs_f64();
        last = now;
        let rejected: u64 = progress.rejections().iter().map(|(_, n)| n).sum();
        let reasons: Vec<String> = progress
            .rejections()
            .iter()
            .map(|(r, n)| format!("{r}={n}"))
            .collect();
        println!(
            "{:>8.0} auth/s | applied seq {} lag {} | citizens {} | counted {} | reversals {} applied {} parked | rejected {}{}",
            rate,
            progress.applied_seq.load(Relaxed),
            progress.lag(),
            progress.citizens.load(Relaxed),
            progress.counted.load(Relaxed),
            progress.reversals_applied.load(Relaxed),
            progress.reversals_parked.load(Relaxed),
            rejected,
            if reasons.is_empty() { String::new() } else { format!(" ({})", reasons.join(" ")) },
        );
    }
}
