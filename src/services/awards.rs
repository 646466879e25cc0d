//! `cashback.query.awards`: the payout rows of a period, page by page, in
//! ranking order, for `cashback awards` (period close).
//!
//! Every ranked citizen (at least one payment that counts) gets a row; the
//! others have nothing payable. The reply says whether the period is closed
//! (no longer accepts data), so that the client can refuse a final file for
//! an open period.

use super::error_reply;
use super::query::{QueryContext, MAX_PAGE};
use cashback_actors::ranking::PageOf;
use cashback_actors::{Lookup, LookupMany};
use cashback_engine::money::money_string;
use cashback_engine::query::payable;
use cashback_engine::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Request.
#[derive(Deserialize)]
struct AwardsQuery {
    award_period: String,
    #[serde(default)]
    offset: u64,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    MAX_PAGE
}

/// One payout row: the columns of the CSV file.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct AwardRow {
    pub citizen_id: String,
    pub iban: String,
    pub transaction_count: u32,
    pub cashback_payable: String,
    pub ranking: u64,
    pub supercashback: bool,
    pub prize: String,
}

/// Reply.
#[derive(Serialize, Deserialize, Debug)]
pub struct AwardsReply {
    pub ok: bool,
    pub award_period: String,
    /// Whether the period no longer accepts data (its file is final).
    pub closed: bool,
    /// Ranked citizens: the number of rows in the whole file.
    pub total: u64,
    pub rows: Vec<AwardRow>,
}

/// Whether the period's file is final: the period stopped accepting data
/// more than a second ago (the stream position below is at most half a
/// second old, so it includes everything received before the close), the
/// log found at start is replayed, and nothing received is left to apply.
fn closed_and_applied(ctx: &QueryContext, period: cashback_engine::period::PeriodIdx) -> bool {
    use std::sync::atomic::Ordering::Relaxed;
    !ctx.periods
        .accepts_data(period, Timestamp::now().plus_secs(-1))
        && ctx.progress.replayed.load(Relaxed)
        && ctx.progress.lag() == 0
}

/// Answers one page: bad_request, unknown_award_period, unavailable.
pub async fn awards(ctx: &QueryContext, body: &[u8]) -> bytes::Bytes {
    let q: AwardsQuery = match serde_json::from_slice(body) {
        Ok(q) => q,
        Err(e) => {
            return error_reply(
                "bad_request",
                &format!("expected {{\"award_period\", \"offset\"?, \"limit\"?}}: {e}"),
            )
        }
    };
    if q.limit > MAX_PAGE {
        return error_reply("bad_request", &format!("limit must be at most {MAX_PAGE}"));
    }
    let Some(period) = ctx.periods.by_id(&q.award_period) else {
        return error_reply(
            "unknown_award_period",
            &format!("no award period {:?}", q.award_period),
        );
    };
    let unavailable = || error_reply("unavailable", "the engine is restarting; retry");
    let Ok(page) = ctx
        .ranking
        .send(PageOf {
            period,
            offset: q.offset,
            limit: q.limit,
        })
        .await
    else {
        return unavailable();
    };
    // One lookup per shard for the whole page.
    let mut by_shard: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, e) in page.entries.iter().enumerate() {
        let (partition, _) = ctx.shard_of(&e.citizen_id);
        by_shard
            .entry(partition as usize % ctx.shards.len())
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
        let Ok(answers) = ctx.shards[shard].send(LookupMany { citizens }).await else {
            return unavailable();
        };
        for (i, answer) in indexes.into_iter().zip(answers) {
            found[i] = Some(answer);
        }
    }
    let p = ctx.periods.get(period);
    // Every ranked citizen is known to its shard; a miss means the ranking
    // moved under the page (a withdrawal), and a page with a hole would
    // shift every later row.
    if found.iter().any(|l| !matches!(l, Some(Lookup::Found(..)))) {
        return error_reply(
            "unavailable",
            "the ranking changed while the page was read; retry",
        );
    }
    let rows = page
        .entries
        .iter()
        .zip(found)
        .filter_map(|(e, lookup)| match lookup {
            Some(Lookup::Found(facts, standing)) => {
                let winner = e.ranking <= p.supercashback_winners as u64
                    && standing.count >= p.min_transactions;
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
    let reply = AwardsReply {
        ok: true,
        award_period: p.id.clone(),
        closed: closed_and_applied(ctx, period),
        total: page.total_participants,
        rows,
    };
    serde_json::to_vec(&reply).expect("reply serializes").into()
}
