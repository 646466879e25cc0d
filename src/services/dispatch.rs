//! The one place a request meets its handler.

use super::context::ServiceContext;
use super::protocol::{ok_body, to_body};
use super::request::RequestKind;
use super::{admin, awards, citizen, enrollment, leaderboard, periods, statement, wallet};
use bytes::Bytes;
use cashback_engine::refusal::Refusal;

/// Answers one request: the body of its success reply, or why it was
/// refused (the caller sends the protocol's error reply).
pub async fn answer(
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
