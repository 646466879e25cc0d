//! `cashback.query.leaderboard` (PROTOCOL.md section 3): a page of a
//! period's ranking.

use super::context::{unknown_period, QueryContext};
use super::protocol::{check_limit, parse, LeaderboardQuery, LeaderboardReply};
use cashback_engine::refusal::Refusal;

/// Answers one leaderboard query: bad_request, unknown_award_period.
pub async fn leaderboard(ctx: &QueryContext, body: &[u8]) -> Result<LeaderboardReply, Refusal> {
    let q: LeaderboardQuery = parse(body, "{\"award_period\"?, \"offset\"?, \"limit\"?}")?;
    check_limit(q.limit)?;
    let period = ctx
        .period(q.award_period.as_deref())
        .ok_or_else(|| unknown_period(q.award_period.as_deref()))?;
    let page = ctx.page(period, q.offset, q.limit).await?;
    Ok(LeaderboardReply::from_page(
        &ctx.periods.get(period).id,
        page,
    ))
}
