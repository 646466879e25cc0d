//! `cashback.enroll.*` (PROTOCOL.md section 2).
//!
//! A request that passes the stateless checks is journaled in the stream
//! (durable once JetStream acknowledges it), then answered with the outcome
//! of applying that journal entry in log order: the reply is truthful and a
//! replay decides the same way.

use super::{error_reply, ok_reply};
use crate::nats::subjects::Subjects;
use crate::waiters::{Waiters, REPLY_TOKEN_HEADER};
use anyhow::Result;
use async_nats::jetstream;
use async_nats::HeaderMap;
use cashback_engine::enrollment::{parse_request, EnrollKind};
use futures::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Semaphore};

/// Requests handled at once; beyond it the subscription buffers.
const CONCURRENCY: usize = 4096;

/// How long a request waits for its journal entry to be applied.
const APPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves enrollment requests until `shutdown`.
pub async fn serve(
    client: async_nats::Client,
    js: jetstream::Context,
    subjects: Subjects,
    waiters: Arc<Waiters>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let mut requests = client
        .queue_subscribe(subjects.enroll_filter(), "cashback-engine".into())
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
        let Some(kind) = subjects.enroll_kind(&msg.subject) else {
            continue;
        };
        let permit = limit.clone().acquire_owned().await?;
        let (client, js, subjects, waiters) = (
            client.clone(),
            js.clone(),
            subjects.clone(),
            waiters.clone(),
        );
        tokio::spawn(async move {
            let started = Instant::now();
            let (body, outcome) = handle(kind, &msg.payload, &js, &subjects, &waiters).await;
            let _ = client.publish(reply, body).await;
            metrics::counter!("cashback_enrollment_requests_total",
                "subject" => kind.token(), "outcome" => outcome)
            .increment(1);
            metrics::histogram!("cashback_enrollment_latency_seconds", "subject" => kind.token())
                .record(started.elapsed().as_secs_f64());
            drop(permit);
        });
    }
    Ok(())
}

/// Handles one request: the reply body and its outcome code for metrics.
async fn handle(
    kind: EnrollKind,
    payload: &[u8],
    js: &jetstream::Context,
    subjects: &Subjects,
    waiters: &Waiters,
) -> (bytes::Bytes, &'static str) {
    let cmd = match parse_request(kind, payload) {
        Ok(cmd) => cmd,
        Err(e) => return (error_reply(e.code, &e.message), e.code),
    };
    let (token, outcome) = waiters.register();
    let mut headers = HeaderMap::new();
    headers.insert(REPLY_TOKEN_HEADER, token.as_str());
    let ack = match js
        .publish_with_headers(subjects.journal(), headers, cmd.to_journal().into())
        .await
    {
        Ok(ack) => ack.await,
        Err(e) => Err(async_nats::jetstream::context::PublishError::with_source(
            async_nats::jetstream::context::PublishErrorKind::Other,
            e,
        )),
    };
    if let Err(e) = ack {
        waiters.forget(&token);
        tracing::warn!(error = %e, "enrollment journal publish failed");
        return (
            error_reply(
                "unavailable",
                "the journal could not be written; nothing changed, retry",
            ),
            "unavailable",
        );
    }
    match tokio::time::timeout(APPLY_TIMEOUT, outcome).await {
        Ok(Ok(Ok(()))) => (ok_reply(), "ok"),
        Ok(Ok(Err(e))) => (error_reply(e.code, &e.message), e.code),
        _ => {
            waiters.forget(&token);
            (
                error_reply(
                    "unavailable",
                    "the request is journaled but not applied yet; retry (requests are idempotent)",
                ),
                "unavailable",
            )
        }
    }
}
