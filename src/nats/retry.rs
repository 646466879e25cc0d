//! Start-up steps that ride out a NATS cluster's elections.
//!
//! On a clustered nats-server, a JetStream request made while a leader is
//! being elected times out, finds no responders or is answered "temporarily
//! unavailable" for 4-9 s (MEASURED.md); an engine restarted while one of
//! three servers was down exited with `cannot list snapshots`. Every start-up
//! step that talks to JetStream therefore goes through [`retry`]: transient
//! errors are retried with a capped exponential backoff, anything else (a
//! permission refused, a stream configured against ours, a bad snapshot
//! name) fails at once, and a step still failing after two minutes fails
//! with its name, so the operator knows where the start stopped.

use anyhow::{Error, Result};
use std::future::Future;
use std::time::{Duration, Instant};

/// How a step is retried: the first pause, the most a pause grows to, and
/// how long to keep going before giving up.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    /// Pause after the first failure; doubled after each further one.
    pub first: Duration,
    /// Longest pause: an election is over in seconds, so waiting longer
    /// than this between attempts only delays the start.
    pub max: Duration,
    /// No further attempt starts after this much time since the first:
    /// long enough for several elections back to back, short enough that a
    /// cluster that lost its quorum is reported rather than waited on.
    pub give_up_after: Duration,
}

impl Backoff {
    /// The engine's start-up: 250 ms doubling to 5 s, for about two minutes.
    pub const START_UP: Backoff = Backoff {
        first: Duration::from_millis(250),
        max: Duration::from_secs(5),
        give_up_after: Duration::from_secs(120),
    };

    /// Runs `attempt` until it succeeds, fails with an error that is not
    /// [`transient`], or the time is up. The error returned names `step`.
    pub async fn retry<T, F, Fut>(self, step: &str, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let started = Instant::now();
        let mut pause = self.first;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let e = match attempt().await {
                Ok(value) => {
                    if attempts > 1 {
                        tracing::info!(step, attempts, "NATS answered; going on");
                    }
                    return Ok(value);
                }
                Err(e) => e,
            };
            if !transient(&e) {
                return Err(e.context(format!("cannot {step}")));
            }
            if started.elapsed() + pause > self.give_up_after {
                return Err(e.context(format!(
                    "cannot {step}: NATS still unavailable after {attempts} attempts in {:.0} s \
                     (is a majority of the cluster's servers up?)",
                    started.elapsed().as_secs_f64()
                )));
            }
            tracing::warn!(
                step,
                error = %format!("{e:#}"),
                retry_in_ms = pause.as_millis() as u64,
                "NATS not ready (a JetStream leader election?); retrying"
            );
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(self.max);
        }
    }
}

/// [`Backoff::START_UP`]'s retry of `attempt`.
pub async fn retry<T, F, Fut>(step: &str, attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    Backoff::START_UP.retry(step, attempt).await
}

/// What the server or the client says while a cluster elects a leader or a
/// server is away, as async-nats and nats-server word it. async-nats has an
/// error type per call, with the JetStream API error inside a variant rather
/// than as a source, so the words are the one thing they share.
const TRANSIENT_WORDS: &[&str] = &[
    // A request that no leader answered in time.
    "timed out",
    // Nobody subscribed to the API subject yet (a server still starting).
    "no responders",
    "jetstream unavailable",
    // 10008, "JetStream system temporarily unavailable": no meta leader.
    "temporarily unavailable",
    "error code 10008",
    // 10009: the server asked is not the leader it thought it was.
    "error code 10009",
    // 10005: placement found no peers (servers of the cluster not yet back).
    "error code 10005",
    // 10118, 10119: a stream or consumer without a leader for now.
    "error code 10118",
    "error code 10119",
    // HTTP-like status of a JetStream API error: service unavailable.
    "(code 503,",
    // The connection went away under the request.
    "disconnected",
    "not connected",
    "connection reset",
    "connection refused",
    "broken pipe",
];

/// Whether `e` is worth another attempt: a timeout, a missing leader, a
/// lost connection. Decided on every error of the chain.
pub fn transient(e: &Error) -> bool {
    use std::io::ErrorKind::*;
    e.chain().any(|cause| {
        let io = cause.downcast_ref::<std::io::Error>().map(|io| io.kind());
        if matches!(
            io,
            Some(
                TimedOut
                    | ConnectionRefused
                    | ConnectionReset
                    | ConnectionAborted
                    | NotConnected
                    | BrokenPipe
                    | UnexpectedEof
                    | Interrupted
            )
        ) {
            return true;
        }
        let text = cause.to_string().to_lowercase();
        TRANSIENT_WORDS.iter().any(|w| text.contains(w))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::{anyhow, Context};
    use async_nats::jetstream::context::{CreateStreamError, CreateStreamErrorKind};
    use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

    fn api_error(code: u16, err_code: u64, description: &str) -> Error {
        let e: async_nats::jetstream::Error = serde_json::from_value(serde_json::json!({
            "code": code, "err_code": err_code, "description": description
        }))
        .unwrap();
        Error::new(CreateStreamError::new(CreateStreamErrorKind::JetStream(e)))
            .context("cannot create or open stream CASHBACK")
    }

    #[test]
    fn elections_and_timeouts_are_transient_and_refusals_are_not() {
        let timed_out = Error::new(CreateStreamError::new(CreateStreamErrorKind::TimedOut));
        assert!(transient(&timed_out.context("cannot list snapshots")));
        assert!(transient(&api_error(
            503,
            10008,
            "JetStream system temporarily unavailable"
        )));
        assert!(transient(&api_error(500, 10118, "stream is offline")));
        assert!(transient(
            &Error::new(std::io::Error::from(std::io::ErrorKind::TimedOut)).context("read")
        ));
        assert!(!transient(&api_error(
            400,
            10058,
            "stream name already in use with a different configuration"
        )));
        assert!(!transient(&api_error(404, 10059, "stream not found")));
        assert!(!transient(
            &Error::new(std::io::Error::from(std::io::ErrorKind::InvalidData)).context("read")
        ));
        assert!(!transient(&anyhow!("Permissions Violation for Publish")));
    }

    /// Pauses short enough for a unit test.
    const FAST: Backoff = Backoff {
        first: Duration::from_millis(1),
        max: Duration::from_millis(4),
        give_up_after: Duration::from_secs(60),
    };

    #[tokio::test]
    async fn transient_errors_are_retried_until_the_step_succeeds() {
        let calls = AtomicU32::new(0);
        let got = FAST
            .retry("list the snapshots", || async {
                match calls.fetch_add(1, Relaxed) {
                    0..=2 => Err(anyhow!("no responders")),
                    n => Ok(n),
                }
            })
            .await
            .unwrap();
        assert_eq!(got, 3);
        assert_eq!(calls.load(Relaxed), 4);
    }

    #[tokio::test]
    async fn a_permanent_error_fails_at_once_naming_the_step() {
        let calls = AtomicU32::new(0);
        let e = FAST
            .retry("open the snapshot store", || async {
                calls.fetch_add(1, Relaxed);
                Err::<(), _>(anyhow!("authorization violation"))
            })
            .await
            .unwrap_err();
        assert_eq!(calls.load(Relaxed), 1);
        assert!(
            format!("{e:#}").starts_with("cannot open the snapshot store: authorization"),
            "{e:#}"
        );
    }

    #[tokio::test]
    async fn a_step_that_stays_unavailable_gives_up_with_its_name() {
        let calls = AtomicU32::new(0);
        let e = Backoff {
            give_up_after: Duration::ZERO,
            ..FAST
        }
        .retry("read the stream's state", || async {
            calls.fetch_add(1, Relaxed);
            Err::<(), _>(anyhow!("timed out")).context("stream info")
        })
        .await
        .unwrap_err();
        assert_eq!(calls.load(Relaxed), 1);
        let text = format!("{e:#}");
        assert!(
            text.contains("cannot read the stream's state: NATS still unavailable"),
            "{text}"
        );
        // Still recognisably transient for a caller that must not fall back.
        assert!(transient(&e));
    }
}
