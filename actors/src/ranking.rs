//! The ranking aggregator: one exact `RankIndex` per award period, fed with
//! the standings the shards report, answering positions, leaderboard pages
//! and award rows. A thin shell around `cashback_engine::rank`.

use actix::prelude::*;
use cashback_engine::directory::CitizenIdx;
use cashback_engine::item::StandingChange;
use cashback_engine::period::{PeriodIdx, Periods};
use cashback_engine::query::RankFields;
use cashback_engine::rank::{RankIndex, RankKey};
use cashback_engine::time::Timestamp;
use std::sync::Arc;

/// New standings, in the order the shards reported them.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ApplyStandings(pub Vec<StandingChange>);

/// Ranking fields of some citizens.
#[derive(Message)]
#[rtype(result = "Vec<RankFields>")]
pub struct RanksOf(pub Vec<(PeriodIdx, CitizenIdx)>);

/// A page of the leaderboard.
#[derive(Message)]
#[rtype(result = "Page")]
pub struct PageOf {
    /// Which period.
    pub period: PeriodIdx,
    /// Positions skipped.
    pub offset: u64,
    /// Entries wanted.
    pub limit: usize,
}

/// One ranked citizen on a page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageEntry {
    /// 1-based position.
    pub ranking: u64,
    /// The citizen's number (for joining with shard state).
    pub citizen: CitizenIdx,
    /// Public id.
    pub citizen_id: Arc<str>,
    /// Payments that count.
    pub transaction_count: u32,
    /// Latest payment date.
    pub last_trx: Timestamp,
}

/// A leaderboard page with the period's totals.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Page {
    /// Ranked citizens.
    pub total_participants: u64,
    /// Count at position 1.
    pub max_transaction_number: u32,
    /// Count at position `supercashback_winners` (or the last).
    pub min_transaction_number: u32,
    /// The entries.
    pub entries: Vec<PageEntry>,
}

/// The actor.
pub struct RankingAggregator {
    /// For `supercashback_winners`.
    periods: Arc<Periods>,
    /// One index per period, in period order.
    indexes: Vec<RankIndex>,
}

impl RankingAggregator {
    /// Empty rankings for every period.
    pub fn new(periods: Arc<Periods>) -> RankingAggregator {
        let indexes = periods.all().iter().map(|_| RankIndex::new()).collect();
        RankingAggregator { periods, indexes }
    }

    fn fields(&self, period: PeriodIdx, citizen: CitizenIdx) -> RankFields {
        let index = &self.indexes[period as usize];
        let winners = self.periods.get(period).supercashback_winners as u64;
        RankFields {
            ranking: index.position(citizen),
            total_participants: index.len(),
            max_transaction_number: index.max_transaction_number(),
            min_transaction_number: index.min_transaction_number(winners),
        }
    }
}

impl Actor for RankingAggregator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(crate::shard::MAILBOX_CAPACITY);
    }
}

impl Handler<ApplyStandings> for RankingAggregator {
    type Result = ();

    fn handle(&mut self, msg: ApplyStandings, _: &mut Self::Context) {
        for change in msg.0 {
            let Some(index) = self.indexes.get_mut(change.period as usize) else {
                continue;
            };
            if change.withdrawn {
                index.remove(change.citizen);
                continue;
            }
            let last_trx = change.standing.last_trx.unwrap_or_default();
            if !index.update(change.citizen, change.standing.count, last_trx) {
                index.set(
                    change.citizen,
                    RankKey {
                        count: change.standing.count,
                        last_trx,
                        tc_accepted_at: change.tc_accepted_at,
                        citizen_id: change.id,
                    },
                );
            }
        }
    }
}

impl Handler<RanksOf> for RankingAggregator {
    type Result = MessageResult<RanksOf>;

    fn handle(&mut self, msg: RanksOf, _: &mut Self::Context) -> Self::Result {
        MessageResult(msg.0.into_iter().map(|(p, c)| self.fields(p, c)).collect())
    }
}

impl Handler<PageOf> for RankingAggregator {
    type Result = MessageResult<PageOf>;

    fn handle(&mut self, q: PageOf, _: &mut Self::Context) -> Self::Result {
        let Some(index) = self.indexes.get(q.period as usize) else {
            return MessageResult(Page::default());
        };
        let winners = self.periods.get(q.period).supercashback_winners as u64;
        MessageResult(Page {
            total_participants: index.len(),
            max_transaction_number: index.max_transaction_number(),
            min_transaction_number: index.min_transaction_number(winners),
            entries: index
                .page(q.offset, q.limit)
                .into_iter()
                .map(|(ranking, citizen, key)| PageEntry {
                    ranking,
                    citizen,
                    citizen_id: key.citizen_id.clone(),
                    transaction_count: key.count,
                    last_trx: key.last_trx,
                })
                .collect(),
        })
    }
}
