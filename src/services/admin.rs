//! `cashback.admin.exclude` and `cashback.admin.reinstate` (PROTOCOL.md
//! section 6, RULES.md "Operator exclusions"): an operator excludes a
//! counted payment, or takes the exclusion back.
//!
//! A request that passes the stateless checks is journaled in the stream
//! with this node's reply inbox in a header, and answered with what the
//! payment's partition decided when it applied the entry in log order. In
//! a cluster that partition may be another node's: that node answers into
//! the inbox, and this one relays it. So the reply is the truth at that
//! point of the log, whichever node took the request.

use super::{error_reply, ok_reply};
use crate::nats::subjects::Subjects;
use crate::waiters::REPLY_SUBJECT_HEADER;
use anyhow::Result;
use async_nats::jetstream;
use async_nats::HeaderMap;
use cashback_engine::admin::{parse_request, JournalEntry};
use cashback_engine::item::{ExclusionOp, ExclusionOutcome};
use futures::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Semaphore};

/// Requests handled at once (the bulk `cashback exclude` keeps a window of
/// requests in flight).
const CONCURRENCY: usize = 1024;

/// How long a request waits for its journal entry to be decided.
const APPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// The reply to an operator for a decided request.
pub fn outcome_reply(outcome: ExclusionOutcome) -> bytes::Bytes {
    match outcome {
        Ok(_) => ok_reply(),
        Err("unknown_payment") => error_reply(
            "unknown_payment",
            "no payment of that card with that key counted",
        ),
        Err("period_closed") => error_reply(
            "period_closed",
            "the payment's award period no longer accepts data",
        ),
        Err(code) => error_reply(
            code,
            "the engine could not decide this request; nothing changed, retry",
        ),
    }
}

/// Serves operators' requests until `shutdown`.
pub async fn serve(
    client: async_nats::Client,
    js: jetstream::Context,
    subjects: Subjects,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let mut requests = client
        .queue_subscribe(subjects.admin("*"), "cashback-engine".into())
        .await?;
    let limit = Arc::new(Semaphore::new(CONCURRENCY));
    loop {
        let msg = tokio::select! {
            _ = shutdown.changed() => break,
            m = requests.next() => match m { Some(m) => m, None => break },
        };
        let Some(reply) = msg.reply.clone() else {
            continue;
        };
        let op = match msg.subject.rsplit('.').next() {
            Some("exclude") => ExclusionOp::Exclude,
            Some("reinstate") => ExclusionOp::Reinstate,
            _ => continue,
        };
        let permit = tokio::select! {
            _ = shutdown.changed() => break,
            p = limit.clone().acquire_owned() => p?,
        };
        let (client, js, subjects) = (client.clone(), js.clone(), subjects.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let body = handle(op, &msg.payload, &client, &js, &subjects).await;
            let _ = client.publish(reply, body).await;
            metrics::histogram!("cashback_admin_latency_seconds")
                .record(started.elapsed().as_secs_f64());
            drop(permit);
        });
    }
    Ok(())
}

async fn handle(
    op: ExclusionOp,
    payload: &[u8],
    client: &async_nats::Client,
    js: &jetstream::Context,
    subjects: &Subjects,
) -> bytes::Bytes {
    let command = match parse_request(payload) {
        Ok(c) => c,
        Err(e) => return error_reply(e.code, &e.message),
    };
    let inbox = client.new_inbox();
    let mut answer = match client.subscribe(inbox.clone()).await {
        Ok(s) => s,
        Err(_) => return error_reply("unavailable", "NATS is unavailable; nothing changed, retry"),
    };
    let mut headers = HeaderMap::new();
    headers.insert(REPLY_SUBJECT_HEADER, inbox.as_str());
    let entry = JournalEntry { op, command };
    let stored = match js
        .publish_with_headers(subjects.journal_admin(), headers, entry.to_journal().into())
        .await
    {
        Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = stored {
        tracing::warn!(error = %e, "admin journal publish failed");
        return error_reply(
            "unavailable",
            "the journal could not be written; nothing changed, retry",
        );
    }
    match tokio::time::timeout(APPLY_TIMEOUT, answer.next()).await {
        Ok(Some(m)) => m.payload,
        _ => error_reply(
            "unavailable",
            "the request is journaled but not decided yet; retry (requests are idempotent)",
        ),
    }
}
