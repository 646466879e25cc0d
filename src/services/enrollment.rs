//! `cashback.enroll.*` (PROTOCOL.md section 2).
//!
//! A request that passes the stateless checks is journaled in the stream
//! (durable once JetStream acknowledges it), then answered with the outcome
//! of applying that journal entry in log order: the reply is truthful and a
//! replay decides the same way.

use super::context::EnrollmentContext;
use crate::waiters::REPLY_TOKEN_HEADER;
use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::HeaderMap;
use cashback_engine::enrollment::{parse_request, EnrollKind};
use cashback_engine::refusal::{ErrorCode, Refusal};
use std::time::Duration;

/// How long a request waits for its journal entry to be applied.
const APPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Handles one request: `Ok` once the change is durable and applied.
pub async fn enroll(
    ctx: &EnrollmentContext,
    kind: EnrollKind,
    payload: &[u8],
) -> Result<(), Refusal> {
    let cmd = parse_request(kind, payload)?;
    let (token, outcome) = ctx.waiters.register();
    let mut headers = HeaderMap::new();
    headers.insert(REPLY_TOKEN_HEADER, token.as_str());
    let ack = match ctx
        .js
        .publish_with_headers(ctx.subjects.journal(), headers, cmd.to_journal().into())
        .await
    {
        Ok(ack) => ack.await,
        Err(e) => Err(PublishError::with_source(PublishErrorKind::Other, e)),
    };
    if let Err(e) = ack {
        ctx.waiters.forget(&token);
        tracing::warn!(error = %e, "enrollment journal publish failed");
        return Err(Refusal::new(
            ErrorCode::Unavailable,
            "the journal could not be written; nothing changed, retry",
        ));
    }
    match tokio::time::timeout(APPLY_TIMEOUT, outcome).await {
        Ok(Ok(outcome)) => outcome,
        _ => {
            ctx.waiters.forget(&token);
            Err(Refusal::new(
                ErrorCode::Unavailable,
                "the request is journaled but not applied yet; retry (requests are idempotent)",
            ))
        }
    }
}
