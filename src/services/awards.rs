//! `cashback.query.awards`: the payout rows of a period, page by page, in
//! ranking order, for `cashback awards` (period close).
//!
//! Every ranked citizen (at least one payment that counts) gets a row; the
//! others have nothing payable. The reply says whether the period is closed
//! (no longer accepts data), so that the client can refuse a final file for
//! an open period.

use super::context::{restarting, unknown_period, QueryContext};
use super::protocol::{check_limit, parse, AwardRow, AwardsQuery, AwardsReply};
use cashback_actors::ranking::PageOf;
use cashback_actors::{Lookup, LookupMany};
use cashback_engine::money::money_string;
use cashback_engine::period::PeriodIdx;
use cashback_engine::query::{payable, wins_supercashback};
use cashback_engine::refusal::{ErrorCode, Refusal};
use cashback_engine::time::Timestamp;
use std::collections::BTreeMap;

/// Whether the period's file is final: the period stopped accepting data
/// more than a second ago (the stream position below is at most half a
/// second old, so it includes everything received before the close), the
/// log found at start is replayed, and nothing received is left to apply.
fn closed_and_applied(ctx: &QueryContext, period: PeriodIdx) -> bool {
    use std::sync::atomic::Ordering::Relaxed;
    !ctx.periods
        .accepts_data(period, Timestamp::now().plus_secs(-1))
        && ctx.progress.replayed.load(Relaxed)
        && ctx.progress.lag() == 0
}

/// Answers one page: bad_request, unknown_award_period, unavailable.
pub async fn awards(ctx: &QueryContext, body: &[u8]) -> Result<AwardsReply, Refusal> {
    let q: AwardsQuery = parse(body, "{\"award_period\", \"offset\"?, \"limit\"?}")?;
    check_limit(q.limit)?;
    let period = ctx
        .periods
        .by_id(&q.award_period)
        .ok_or_else(|| unknown_period(Some(&q.award_period)))?;
    let page = ctx
        .ranking
        .send(PageOf {
            period,
            offset: q.offset,
            limit: q.limit,
        })
        .await
        .map_err(|_| restarting())?;
    // One lookup per shard for the whole page.
    let mut by_shard: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, e) in page.entries.iter().enumerate() {
        let (partition, _) = ctx.shard_of(&e.citizen_id);
        by_shard
            .entry(ctx.ownership.shard_of(partition, ctx.shards.len()))
            .or_default()
            .push(i);
    }
    let mut found: Vec<Option<Lookup>> = vec![None; page.entries.len()];
    for (shard, indexes) in by_shard {
        let citizens = indexes
            .iter()
            .map(|&i| {
                let e = &page.entries[i];
                (ctx.shard_of(&e.citizen_id).0, e.citizen, period)
            })
            .collect();
        let answers = ctx.shards[shard]
            .send(LookupMany { citizens })
            .await
            .map_err(|_| restarting())?;
        for (i, answer) in indexes.into_iter().zip(answers) {
            found[i] = Some(answer);
        }
    }
    let p = ctx.periods.get(period);
    // Every ranked citizen is known to its shard; a miss means the ranking
    // moved under the page (a withdrawal), and a page with a hole would
    // shift every later row.
    if found.iter().any(|l| !matches!(l, Some(Lookup::Found(..)))) {
        return Err(Refusal::new(
            ErrorCode::Unavailable,
            "the ranking changed while the page was read; retry",
        ));
    }
    let rows = page
        .entries
        .iter()
        .zip(found)
        .filter_map(|(e, lookup)| match lookup {
            Some(Lookup::Found(facts, standing)) => {
                let winner = wins_supercashback(&standing, p, Some(e.ranking));
                Some(AwardRow {
                    citizen_id: e.citizen_id.to_string(),
                    iban: facts.iban.to_string(),
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
            }
            _ => None,
        })
        .collect();
    Ok(AwardsReply {
        ok: true,
        award_period: p.id.clone(),
        closed: closed_and_applied(ctx, period),
        total: page.total_participants,
        rows,
    })
}
