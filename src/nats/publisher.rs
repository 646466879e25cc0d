//! JetStream publishing: a bounded window of outstanding PubAcks, shared
//! by the client commands (`import`, `simulate`) and the demo traffic; and
//! the engine's own publishing of what it must not lose
//! ([`publish_until_stored`]).
//!
//! "Published" means acknowledged: a message counts only once its PubAck is
//! back. Keeping a window of acks in flight is what makes JetStream fast
//! (MEASURED.md: 150-190 k/s with 4096 in flight) without buffering
//! unboundedly: at `window` outstanding acks the publisher waits for the
//! oldest.

use anyhow::{Context, Result};
use async_nats::jetstream::{self, context::PublishAckFuture};
use async_nats::HeaderMap;
use std::collections::VecDeque;

/// A JetStream publisher that keeps at most `window` PubAcks outstanding.
pub struct AckWindow {
    /// The JetStream context publishes go through.
    js: jetstream::Context,
    /// Acks not awaited yet, oldest first.
    outstanding: VecDeque<PublishAckFuture>,
    /// Most acks in flight before `publish` waits for the oldest.
    window: usize,
    /// Messages acknowledged so far.
    pub acknowledged: u64,
    /// Of those, answered by JetStream as duplicates (same `Nats-Msg-Id`
    /// inside the stream's window): they never reach the engine.
    pub duplicates: u64,
}

impl AckWindow {
    /// A publisher on `js` with at most `window` acks outstanding.
    pub fn new(js: jetstream::Context, window: usize) -> AckWindow {
        AckWindow {
            js,
            outstanding: VecDeque::with_capacity(window),
            window: window.max(1),
            acknowledged: 0,
            duplicates: 0,
        }
    }

    /// Publishes `body` on `subject` with `Nats-Msg-Id: msg_id`; waits for
    /// the oldest ack first when the window is full.
    pub async fn publish(&mut self, subject: String, msg_id: &str, body: Vec<u8>) -> Result<()> {
        if self.outstanding.len() >= self.window {
            self.settle(self.window / 2).await?;
        }
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", msg_id);
        let ack = self
            .js
            .publish_with_headers(subject, headers, body.into())
            .await
            .context("publish failed")?;
        self.outstanding.push_back(ack);
        Ok(())
    }

    /// Messages published whose ack has not been awaited yet.
    pub fn in_flight(&self) -> u64 {
        self.outstanding.len() as u64
    }

    /// Waits for acks until at most `keep` are outstanding.
    pub async fn settle(&mut self, keep: usize) -> Result<()> {
        while self.outstanding.len() > keep {
            let ack = self
                .outstanding
                .pop_front()
                .expect("non-empty")
                .await
                .context("publish not acknowledged")?;
            self.acknowledged += 1;
            if ack.duplicate {
                self.duplicates += 1;
            }
        }
        Ok(())
    }

    /// Waits for every outstanding ack.
    pub async fn finish(&mut self) -> Result<()> {
        self.settle(0).await
    }
}

/// Publishes `body` to `subject` with `Nats-Msg-Id` `id` and retries, with
/// a backoff of 100 ms doubling to 5 s, until JetStream acknowledges it:
/// for what the engine itself must not lose (rejections, credits for other
/// nodes), whatever a server's failure or a leader election. A retry of a
/// message JetStream already stored is dropped by its id inside the
/// duplicate window. `what` names it in the warning of a failed try.
pub async fn publish_until_stored(
    js: &jetstream::Context,
    subject: &str,
    id: &str,
    body: bytes::Bytes,
    what: &str,
) {
    let mut backoff = std::time::Duration::from_millis(100);
    loop {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", id);
        let stored = match js
            .publish_with_headers(subject.to_owned(), headers, body.clone())
            .await
        {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match stored {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(id, error = %e, "{what} not stored yet; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
            }
        }
    }
}
