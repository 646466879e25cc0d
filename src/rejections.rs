//! Publishing rejections to `cashback.rejected.<reason>` (PROTOCOL.md section 5).
//!
//! At least once, never lost: each rejection is published with JetStream
//! into a stream of its own (`<stream>_REJECTED`), with `Nats-Msg-Id`
//! `rejected/<seq>`, and retried until the stream has it. Why not a plain
//! core publish: a rejection written to a connection whose server dies is
//! gone, and the engine, which did not crash, never decides it again
//! (measured: the cluster test lost one when a nats-server was killed). Core
//! subscribers of `cashback.rejected.>` receive them as before; the stream
//! also keeps them (7 days by default) for an operator who was away, and
//! its duplicate window drops most of the repeats a restart or a replica
//! sends. A snapshot waits until every rejection decided before it is
//! stored, since a restart from it does not decide them again.

use crate::nats::publisher::publish_until_stored;
use crate::nats::subjects::Subjects;
use crate::progress::Progress;
use async_nats::jetstream;
use bytes::Bytes;
use cashback_engine::reason::Rejection;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use serde::Serialize;
use serde_json::value::RawValue;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Rejections being stored at once.
const IN_FLIGHT: usize = 256;

/// The rejection payload.
#[derive(Serialize)]
struct Body<'a> {
    reason: &'static str,
    message: &'a str,
    subject: &'a str,
    seq: u64,
    /// The original JSON when it was JSON, else the bytes as a (lossy) string.
    payload: Payload<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Payload<'a> {
    Json(&'a RawValue),
    Text(String),
}

/// One rejection to store: subject, body, the rejected message's sequence.
type Outgoing = (String, Bytes, u64);

/// Publishes rejections and counts them.
#[derive(Clone)]
pub struct RejectionPublisher {
    /// Subject builder.
    subjects: Subjects,
    /// Counters.
    progress: Arc<Progress>,
    /// To the storing task.
    tx: mpsc::UnboundedSender<Outgoing>,
    /// Rejections handed to the storing task.
    sent: Arc<AtomicU64>,
    /// Rejections the stream acknowledged.
    stored: Arc<AtomicU64>,
}

impl RejectionPublisher {
    /// A publisher through `js`; starts its storing task.
    pub fn new(js: jetstream::Context, subjects: Subjects, progress: Arc<Progress>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let stored = Arc::new(AtomicU64::new(0));
        tokio::spawn(store(js, rx, stored.clone()));
        RejectionPublisher {
            subjects,
            progress,
            tx,
            sent: Default::default(),
            stored,
        }
    }

    /// Publishes and counts one rejection of message `seq`.
    pub async fn publish(&self, seq: u64, subject: &str, payload: &[u8], rejection: &Rejection) {
        self.progress.reject(rejection.reason);
        let text = std::str::from_utf8(payload).ok();
        let raw = text.and_then(|t| serde_json::from_str::<&RawValue>(t).ok());
        let body = Body {
            reason: rejection.reason.as_str(),
            message: &rejection.message,
            subject,
            seq,
            payload: match raw {
                Some(raw) => Payload::Json(raw),
                None => Payload::Text(String::from_utf8_lossy(payload).into_owned()),
            },
        };
        let bytes = Bytes::from(serde_json::to_vec(&body).expect("rejection serializes"));
        let to = self.subjects.rejected(rejection.reason.as_str());
        if self.tx.send((to, bytes, seq)).is_ok() {
            self.sent.fetch_add(1, Relaxed);
        }
    }

    /// Waits until every rejection published so far is stored, at most
    /// `limit`; false if that did not happen.
    pub async fn flush(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while self.stored.load(Relaxed) < self.sent.load(Relaxed) {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }
}

/// Stores rejections, up to [`IN_FLIGHT`] at once, each retried until
/// acknowledged (order does not matter: consumers key them by `seq`).
async fn store(
    js: jetstream::Context,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    stored: Arc<AtomicU64>,
) {
    let mut in_flight = FuturesUnordered::new();
    loop {
        tokio::select! {
            next = rx.recv(), if in_flight.len() < IN_FLIGHT => match next {
                Some(out) => in_flight.push(store_one(js.clone(), out)),
                None if in_flight.is_empty() => return,
                None => {
                    while in_flight.next().await.is_some() {
                        stored.fetch_add(1, Relaxed);
                    }
                    return;
                }
            },
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {
                stored.fetch_add(1, Relaxed);
            }
        }
    }
}

/// Stores one rejection, retrying until the stream has it.
async fn store_one(js: jetstream::Context, (subject, body, seq): Outgoing) {
    let id = format!("rejected/{seq}");
    publish_until_stored(&js, &subject, &id, body, "a rejection").await;
}
