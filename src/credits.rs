//! Credits for citizens of other cluster nodes (PROTOCOL.md section 8).
//!
//! A payment on a card whose payments live in this node's partition, for a
//! citizen of another node's partition (the card moved owner), is decided
//! here and credited there. The node journals such credits in the one log
//! (`cashback.journal.credit`), and the citizen's node applies them when it
//! reads them there. Exactly once: every credit carries an id that grows
//! with the log (`CreditId`), and the receiving partition takes only ids
//! above the last one it took from that sender; re-sends after a crash and
//! a replica's copies are ignored (counted in
//! `cashback_credits_repeated_total`).
//!
//! Order matters for that rule: one publisher task publishes batches one at
//! a time, each only after the previous one is acknowledged, and retries a
//! batch until it is (a batch is never skipped: a later one would then be
//! stored before it and the receiver would drop the earlier credits as
//! repeats). And nothing is lost in a crash: a snapshot is taken only when
//! every credit decided before its position is acknowledged, so a restart
//! from it decides the unpublished ones again and publishes them.

use crate::nats::publisher::publish_until_stored;
use crate::nats::subjects::Subjects;
use async_nats::jetstream;
use cashback_engine::item::Credit;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// The pipeline's end of the publisher.
pub struct Outbox {
    /// Batches to publish, in decision order.
    tx: mpsc::UnboundedSender<Vec<Credit>>,
    /// Batches handed to the publisher.
    sent: u64,
    /// Batches the stream acknowledged.
    acked: Arc<AtomicU64>,
}

impl Outbox {
    /// Starts the publisher task.
    pub fn start(js: jetstream::Context, subjects: Subjects, node: u16) -> Outbox {
        let (tx, rx) = mpsc::unbounded_channel();
        let acked = Arc::new(AtomicU64::new(0));
        tokio::spawn(publish(js, subjects, node, rx, acked.clone()));
        Outbox { tx, sent: 0, acked }
    }

    /// Queues credits for other nodes (in decision order).
    pub fn send(&mut self, credits: Vec<Credit>) {
        if credits.is_empty() {
            return;
        }
        metrics::counter!("cashback_credits_sent_total").increment(credits.len() as u64);
        if self.tx.send(credits).is_ok() {
            self.sent += 1;
        }
    }

    /// Whether every credit queued so far is in the log.
    pub fn flushed(&self) -> bool {
        self.acked.load(Relaxed) >= self.sent
    }

    /// Waits until every credit queued so far is in the log, at most
    /// `limit`; false if it did not happen.
    pub async fn flush(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while !self.flushed() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }
}

/// Publishes batches one at a time, each retried until acknowledged.
async fn publish(
    js: jetstream::Context,
    subjects: Subjects,
    node: u16,
    mut rx: mpsc::UnboundedReceiver<Vec<Credit>>,
    acked: Arc<AtomicU64>,
) {
    let subject = subjects.journal_credit();
    while let Some(batch) = rx.recv().await {
        let body: bytes::Bytes = serde_json::to_vec(&batch)
            .expect("credits always serialize")
            .into();
        let id = message_id(node, &body);
        publish_until_stored(&js, &subject, &id, body, "credits for other nodes").await;
        acked.fetch_add(1, Relaxed);
    }
}

/// A batch's `Nats-Msg-Id`: the node and a hash of the whole body, so that
/// JetStream's duplicate window drops only a byte-identical re-send (after a
/// lost acknowledgement); a batch that overlaps an earlier one is stored, and
/// the receiver skips the credits it already took. An id made of the batch's
/// first and last credit named two different batches alike: a restart or a
/// replica batches the same credits otherwise (flights end elsewhere; a batch
/// lists shard by shard), and the second batch, holding credits the first
/// lacked, was dropped as a duplicate and its credits lost.
pub fn message_id(node: u16, body: &[u8]) -> String {
    format!("credit/{node}/{:032x}", xxhash_rust::xxh3::xxh3_128(body))
}
