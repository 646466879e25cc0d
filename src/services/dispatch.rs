//! The one place a request meets its handler.

use super::context::{QueryContext, ServiceContext};
use super::protocol::{ok_body, parse_outcome, to_body};
use super::request::RequestKind;
use super::{admin, awards, citizen, enrollment, leaderboard, periods, statement, wallet};
use bytes::Bytes;
use cashback_engine::partition::partition_of;
use cashback_engine::refusal::Refusal;

/// Answers one request: the body of its success reply, or why it was
/// refused (the caller sends the protocol's error reply). In a cluster, a
/// request about one citizen is answered by the node that owns the citizen
/// (PROTOCOL.md section 8): forwarded there, and its reply relayed.
pub async fn answer(
    ctx: &ServiceContext,
    kind: RequestKind,
    body: &[u8],
) -> Result<Bytes, Refusal> {
    if let Some(node) = owner_elsewhere(&ctx.query, kind, body) {
        let reply = ctx.query.peers.forward(node, kind.token(), body).await?;
        return relay(reply);
    }
    answer_here(ctx, kind, body).await
}

/// The node owning the citizen of a request about one citizen, when it is
/// another node.
fn owner_elsewhere(q: &QueryContext, kind: RequestKind, body: &[u8]) -> Option<u16> {
    if !q.peers.clustered()
        || !matches!(
            kind,
            RequestKind::Citizen | RequestKind::Transactions | RequestKind::Wallet
        )
    {
        return None;
    }
    #[derive(serde::Deserialize)]
    struct About {
        citizen_id: String,
    }
    // A request that does not parse is refused here, as anywhere.
    let about: About = serde_json::from_slice(body).ok()?;
    let partition = partition_of(&about.citizen_id, q.partitions);
    let owner = q.ownership.owner(partition);
    (owner != q.ownership.node).then_some(owner)
}

/// Another node's reply, as this node's answer (a refusal stays a refusal,
/// so that it is counted as the endpoint's error here too).
fn relay(reply: Bytes) -> Result<Bytes, Refusal> {
    match parse_outcome(&reply) {
        Err(refusal) => Err(refusal),
        Ok(()) => Ok(reply),
    }
}

/// Answers one request on this node.
pub async fn answer_here(
    ctx: &ServiceContext,
    kind: RequestKind,
    body: &[u8],
) -> Result<Bytes, Refusal> {
    let q = &ctx.query;
    match kind {
        RequestKind::Enroll(kind) => enrollment::enroll(&ctx.enrollment, kind, body)
            .await
            .map(|()| ok_body()),
        RequestKind::Citizen => citizen::citizen(q, body).await.map(|r| to_body(&r)),
        RequestKind::Transactions => statement::transactions(q, body).await.map(|r| to_body(&r)),
        RequestKind::Leaderboard => leaderboard::leaderboard(q, body).await.map(|r| to_body(&r)),
        RequestKind::Wallet => wallet::wallet(q, body).await.map(|r| to_body(&r)),
        RequestKind::Periods => periods::periods(q, body).await.map(|r| to_body(&r)),
        RequestKind::Awards => awards::awards(q, body).await.map(|r| to_body(&r)),
        RequestKind::Admin(op) => admin::admin(&ctx.admin, op, body).await.map(|()| ok_body()),
    }
}
