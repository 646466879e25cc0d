//! `cashback.query.citizen` (PROTOCOL.md section 3): a citizen's standing
//! and rank in a period.

use super::context::{rank_key, unknown_period, QueryContext};
use super::protocol::{parse, CitizenQuery, CitizenReply};
use cashback_engine::refusal::Refusal;

/// Answers one citizen query; checks run in the order of PROTOCOL.md:
/// bad_request, unknown_citizen, citizen_withdrawn, unknown_award_period.
pub async fn citizen(ctx: &QueryContext, body: &[u8]) -> Result<CitizenReply, Refusal> {
    let q: CitizenQuery = parse(body, "{\"citizen_id\": string, \"award_period\"?: string}")?;
    let period = ctx.period(q.award_period.as_deref());
    let (facts, standing) = ctx.citizen(&q.citizen_id, period).await?;
    let period = period.ok_or_else(|| unknown_period(q.award_period.as_deref()))?;
    let rank = ctx
        .rank_fields(period, &[(facts.idx, rank_key(&facts, &standing))])
        .await?
        .pop()
        .unwrap_or_default();
    Ok(CitizenReply::new(
        &q.citizen_id,
        ctx.periods.get(period),
        &standing,
        Some(&rank),
    ))
}
