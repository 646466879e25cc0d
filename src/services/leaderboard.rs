//! `cashback.query.leaderboard` (PROTOCOL.md section 3): a page of a
//! period's ranking.

use super::context::{restarting, unknown_period, QueryContext};
use super::protocol::{check_limit, parse, LeaderboardQuery, LeaderboardReply};
use cashback_actors::ranking::PageOf;
use cashback_engine::refusal::Refusal;

/// Answers one leaderboard query: bad_request, unknown_award_period.
pub async fn leaderboard(ctx: &QueryContext, body: &[u8]) -> Result<LeaderboardReply, Refusal> {
    let q: LeaderboardQuery = parse(body, "{\"award_period\"?, \"offset\"?, \"limit\"?}")?;
    check_limit(q.limit)?;
    let period = ctx
        .period(q.award_period.as_deref())
        .ok_or_else(|| unknown_period(q.award_period.as_deref()))?;
    let page = ctx
        .ranking
        .send(PageOf {
            period,
            offset: q.offset,
            limit: q.limit,
        })
        .await
        .map_err(|_| restarting())?;
    Ok(LeaderboardReply::from_page(
        &ctx.periods.get(period).id,
        page,
    ))
}
