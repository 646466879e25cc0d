//! `cashback.admin.exclude` and `cashback.admin.reinstate` (PROTOCOL.md
//! section 6, RULES.md "Operator exclusions"): an operator excludes a
//! counted payment, or takes the exclusion back.
//!
//! A request that passes the stateless checks is journaled in the stream
//! with this node's reply inbox in a header, and answered with what the
//! payment's partition decided when it applied the entry in log order. In
//! a cluster that partition may be another node's: that node answers into
//! the inbox (`pipeline`), and this one relays it. So the reply is the
//! truth at that point of the log, whichever node took the request.

use super::context::AdminContext;
use crate::waiters::REPLY_SUBJECT_HEADER;
use async_nats::HeaderMap;
use cashback_engine::admin::{parse_request, JournalEntry};
use cashback_engine::item::{ExclusionOp, ExclusionOutcome};
use cashback_engine::refusal::{ErrorCode, Refusal};
use futures::StreamExt;
use std::time::Duration;

/// How long a request waits for its journal entry to be decided.
const APPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// What the deciding node sends into the requesting node's inbox: the
/// outcome, as the protocol's reply.
pub fn outcome_reply(outcome: ExclusionOutcome) -> bytes::Bytes {
    let refusal = match outcome {
        Ok(_) => return super::protocol::ok_body(),
        Err(ErrorCode::UnknownPayment) => Refusal::new(
            ErrorCode::UnknownPayment,
            "no payment of that card with that key counted",
        ),
        Err(ErrorCode::PeriodClosed) => Refusal::new(
            ErrorCode::PeriodClosed,
            "the payment's award period no longer accepts data",
        ),
        Err(code) => Refusal::new(
            code,
            "the engine could not decide this request; nothing changed, retry",
        ),
    };
    super::protocol::error_body(&refusal)
}

/// Handles one request: `Ok` once the exclusion (or reinstatement) is
/// journaled and decided.
pub async fn admin(ctx: &AdminContext, op: ExclusionOp, payload: &[u8]) -> Result<(), Refusal> {
    let command = parse_request(payload)?;
    let unavailable = |what: &str| Refusal::new(ErrorCode::Unavailable, what);
    let inbox = ctx.client.new_inbox();
    let mut answer = ctx
        .client
        .subscribe(inbox.clone())
        .await
        .map_err(|_| unavailable("NATS is unavailable; nothing changed, retry"))?;
    let mut headers = HeaderMap::new();
    headers.insert(REPLY_SUBJECT_HEADER, inbox.as_str());
    let entry = JournalEntry { op, command };
    let stored = match ctx
        .js
        .publish_with_headers(
            ctx.subjects.journal_admin(),
            headers,
            entry.to_journal().into(),
        )
        .await
    {
        Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = stored {
        tracing::warn!(error = %e, "admin journal publish failed");
        return Err(unavailable(
            "the journal could not be written; nothing changed, retry",
        ));
    }
    let decided = match tokio::time::timeout(APPLY_TIMEOUT, answer.next()).await {
        Ok(Some(m)) => m.payload,
        _ => {
            return Err(unavailable(
                "the request is journaled but not decided yet; retry (requests are idempotent)",
            ))
        }
    };
    super::protocol::parse_outcome(&decided)
}
