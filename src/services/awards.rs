//! `cashback.query.awards`: the payout rows of a period, page by page, in
//! ranking order, for `cashback awards` (period close).
//!
//! Every ranked citizen (at least one payment that counts) gets a row; the
//! others have nothing payable. The reply says whether the period is closed
//! (no longer accepts data), so that the client can refuse a final file for
//! an open period.

use super::context::{unknown_period, QueryContext};
use super::protocol::{check_limit, parse, AwardRow, AwardsQuery, AwardsReply};
use cashback_engine::ledger::Standing;
use cashback_engine::money::money_string;
use cashback_engine::partition::partition_of;
use cashback_engine::period::PeriodIdx;
use cashback_engine::query::{payable, wins_supercashback};
use cashback_engine::refusal::{ErrorCode, Refusal};
use cashback_engine::time::Timestamp;

/// Whether the period's file is final: the period stopped accepting data
/// more than a second ago (the stream position below is at most half a
/// second old, so it includes everything received before the close), the
/// log found at start is replayed, and nothing received is left to apply.
/// In a cluster, every node must have applied everything.
async fn closed_and_applied(ctx: &QueryContext, period: PeriodIdx) -> bool {
    !ctx.periods
        .accepts_data(period, Timestamp::now().plus_secs(-1))
        && ctx.peers.all_caught_up().await
}

/// Answers one page: bad_request, unknown_award_period, unavailable.
pub async fn awards(ctx: &QueryContext, body: &[u8]) -> Result<AwardsReply, Refusal> {
    let q: AwardsQuery = parse(body, "{\"award_period\", \"offset\"?, \"limit\"?}")?;
    check_limit(q.limit)?;
    let period = ctx
        .periods
        .by_id(&q.award_period)
        .ok_or_else(|| unknown_period(Some(&q.award_period)))?;
    let page = ctx.page(period, q.offset, q.limit).await?;
    let p = ctx.periods.get(period);
    let citizens: Vec<_> = page
        .entries
        .iter()
        .map(|e| (partition_of(&e.citizen_id, ctx.partitions), e.citizen))
        .collect();
    let found = ctx.peers.lookup(period, &citizens).await?;
    // Every ranked citizen is known to their partition; a miss means the
    // ranking moved under the page (a withdrawal), and a page with a hole
    // would shift every later row.
    if found.iter().any(Option::is_none) {
        return Err(Refusal::new(
            ErrorCode::Unavailable,
            "the ranking changed while the page was read; retry",
        ));
    }
    let rows = page
        .entries
        .iter()
        .zip(found)
        .filter_map(|(e, found)| {
            let found = found?;
            let standing = Standing {
                count: found.count,
                cashback: found.cashback,
                last_trx: Some(e.last_trx),
            };
            let winner = wins_supercashback(&standing, p, Some(e.ranking));
            Some(AwardRow {
                citizen_id: e.citizen_id.to_string(),
                iban: found.iban.to_string(),
                transaction_count: standing.count,
                cashback_payable: money_string(payable(&standing, p)),
                ranking: e.ranking,
                supercashback: winner,
                prize: money_string(if winner {
                    p.supercashback_prize
                } else {
                    Default::default()
                }),
            })
        })
        .collect();
    Ok(AwardsReply {
        ok: true,
        award_period: p.id.clone(),
        closed: closed_and_applied(ctx, period).await,
        total: page.total_participants,
        rows,
    })
}
