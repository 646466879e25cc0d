//! The log reader: reads the stream in order and does every stateless step
//! (JetStream metadata, decoding, validation) on the I/O runtime, handing
//! batches of entries to the pipeline through a bounded channel. Decoding is
//! the largest per-message cost after NATS itself; done here, it runs in
//! parallel with routing instead of in front of it.

use crate::nats::subjects::Subjects;
use anyhow::{Context, Result};
use async_nats::jetstream::{self, consumer, stream::Stream as JsStream};
use bytes::Bytes;
use cashback_engine::admin::JournalEntry;
use cashback_engine::authorization::{Authorization, Decoder};
use cashback_engine::enrollment::{EnrollCommand, EnrollError};
use cashback_engine::item::Credit;
use cashback_engine::reason::Rejection;
use cashback_engine::router::Position;
use cashback_engine::time::Timestamp;
use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc;

use crate::waiters::{REPLY_SUBJECT_HEADER, REPLY_TOKEN_HEADER};

/// Entries per batch handed over.
const BATCH: usize = 512;

/// Batches buffered between reader and pipeline: the reader waits beyond it.
const BUFFERED_BATCHES: usize = 8;

/// One message of the log, decoded.
pub enum Entry {
    /// An authorization.
    Auth {
        /// Where in the log.
        at: Position,
        /// Its subject, for rejections.
        subject: async_nats::Subject,
        /// Its bytes, for rejections and parked reversals.
        payload: Bytes,
        /// The decoded message, or why it is refused.
        decoded: Result<Authorization, Rejection>,
    },
    /// An enrollment journal entry.
    Journal {
        /// Where in the log.
        at: Position,
        /// The waiting request's token, if any.
        token: Option<String>,
        /// The command, or why it cannot be read.
        command: Result<EnrollCommand, EnrollError>,
    },
    /// An operator's exclusion or reinstatement, journaled.
    Admin {
        /// Where in the log.
        at: Position,
        /// Where the node that decides it sends the answer (the inbox of
        /// the node that took the request).
        reply: Option<String>,
        /// The request, or why it cannot be read.
        entry: Result<JournalEntry, EnrollError>,
    },
    /// Credits a cluster node decided for citizens of other nodes.
    Credits {
        /// Where in the log.
        at: Position,
        /// The credits, or why they cannot be read.
        credits: Result<Vec<Credit>, String>,
    },
    /// Anything else in the stream: only its position matters.
    Other {
        /// Where in the log.
        at: Position,
    },
}

impl Entry {
    /// Where in the log.
    pub fn position(&self) -> Position {
        match self {
            Entry::Auth { at, .. }
            | Entry::Journal { at, .. }
            | Entry::Admin { at, .. }
            | Entry::Credits { at, .. }
            | Entry::Other { at } => *at,
        }
    }
}

/// Starts reading `stream` at sequence `from`; returns the receiving end.
/// The reader stops (and the channel closes) on a stream error, which the
/// pipeline reports.
pub async fn start(
    stream: &JsStream,
    decoder: Decoder,
    subjects: Subjects,
    from: u64,
) -> Result<mpsc::Receiver<Result<Vec<Entry>>>> {
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: from.max(1),
            },
            ..Default::default()
        })
        .await
        .context("cannot create the ordered consumer")?;
    let mut messages = consumer
        .messages()
        .await
        .context("cannot read the stream")?;
    let (tx, rx) = mpsc::channel(BUFFERED_BATCHES);
    let mut next = from.max(1);
    tokio::spawn(async move {
        loop {
            let batch = async {
                let mut batch = Vec::with_capacity(BATCH);
                while batch.is_empty() {
                    match messages.next().await {
                        Some(Ok(m)) => {
                            batch.extend(in_order(entry(m, &decoder, &subjects)?, &mut next)?)
                        }
                        // The ordered consumer reports trouble (a broker
                        // restart, missed heartbeats) and then recreates
                        // itself from the last sequence it delivered.
                        Some(Err(e)) => tracing::warn!(error = %e, "stream consumer: recovering"),
                        None => anyhow::bail!("the stream consumer ended"),
                    }
                }
                while batch.len() < BATCH {
                    match messages.next().now_or_never() {
                        Some(Some(Ok(m))) => {
                            batch.extend(in_order(entry(m, &decoder, &subjects)?, &mut next)?)
                        }
                        Some(Some(Err(e))) => {
                            tracing::warn!(error = %e, "stream consumer: recovering");
                            break;
                        }
                        Some(None) => anyhow::bail!("the stream consumer ended"),
                        None => break,
                    }
                }
                Ok(batch)
            }
            .await;
            let failed = batch.is_err();
            if tx.send(batch).await.is_err() || failed {
                return;
            }
        }
    });
    Ok(rx)
}

/// Passes `entry` if it is the message after the last one read, skips one
/// already read, and stops at a hole.
///
/// Already read: the ordered consumer, recreated (a broker restart, missed
/// heartbeats) before it delivered anything, starts again from the stream's
/// first message rather than from where it was asked to (async-nats 0.51),
/// and the state holds everything up to `next`.
///
/// A hole: the stream (limits retention, read whole) numbers its messages
/// without gaps, so a jump means messages this process never read were
/// removed: purged up to snapshots a slower process does not have (a replica
/// that fell more than two snapshot intervals behind its node's snapshots,
/// or was cut off from NATS that long; the consumer then resumes at the
/// first message left), or deleted. Going on would silently diverge from
/// the other processes; stopping makes the engine exit with this error.
fn in_order(entry: Entry, next: &mut u64) -> Result<Option<Entry>> {
    let seq = entry.position().seq;
    if seq < *next {
        return Ok(None);
    }
    if seq > *next {
        anyhow::bail!(
            "the stream jumps from sequence {} to {seq}: messages this process has not read are gone. \
             If the stream was purged past this process (it fell behind the snapshots its node keeps, \
             or was cut off from NATS that long), restart it: it loads the newest snapshot. If they \
             were deleted from the middle of the stream (by hand, or by a per-subject limit or a \
             message TTL on the stream), the engine cannot know what they held: restore them",
            *next
        );
    }
    *next = seq + 1;
    Ok(Some(entry))
}

fn entry(msg: jetstream::Message, decoder: &Decoder, subjects: &Subjects) -> Result<Entry> {
    // The metadata borrows the message: read it before taking it apart.
    let at = {
        let info = msg
            .info()
            .map_err(|e| anyhow::anyhow!("bad JetStream metadata: {e}"))?;
        Position {
            seq: info.stream_sequence,
            broker_time: Timestamp::from_unix_nanos(info.published.unix_timestamp_nanos()),
        }
    };
    let msg = msg.split().0;
    let header = |name: &str| {
        msg.headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_owned())
    };
    Ok(if let Some(acquirer) = subjects.auth_token(&msg.subject) {
        Entry::Auth {
            at,
            decoded: decoder.decode_on(acquirer, &msg.payload, at.broker_time),
            subject: msg.subject,
            payload: msg.payload,
        }
    } else if *msg.subject == *subjects.journal() {
        Entry::Journal {
            at,
            token: header(REPLY_TOKEN_HEADER),
            command: EnrollCommand::from_journal(&msg.payload),
        }
    } else if *msg.subject == *subjects.journal_admin() {
        Entry::Admin {
            at,
            reply: header(REPLY_SUBJECT_HEADER),
            entry: JournalEntry::from_journal(&msg.payload),
        }
    } else if *msg.subject == *subjects.journal_credit() {
        Entry::Credits {
            at,
            credits: serde_json::from_slice(&msg.payload).map_err(|e| e.to_string()),
        }
    } else {
        Entry::Other { at }
    })
}
