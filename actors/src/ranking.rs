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

/// How many of this node's ranked citizens sort before each key (a
/// cluster's national position is the sum over nodes; see
/// `cashback_engine::rank` "cluster"), with the node's count of ranked
/// citizens and its highest count.
#[derive(Message)]
#[rtype(result = "Before")]
pub struct CountBefore {
    /// Which period.
    pub period: PeriodIdx,
    /// The keys, in any order; answered in this order.
    pub keys: Vec<RankKey>,
}

/// Answer to [`CountBefore`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Before {
    /// Per key, ranked citizens here that sort strictly before it.
    pub before: Vec<u64>,
    /// Ranked citizens here.
    pub len: u64,
    /// The highest count here (0: none ranked).
    pub max: u32,
}

/// This node's distribution of counts in a period: `(count, citizens)`,
/// highest count first.
#[derive(Message)]
#[rtype(result = "Vec<(u32, u64)>")]
pub struct Histogram(pub PeriodIdx);

/// Up to `limit` of this node's ranked citizens in ranking order, from the
/// first that does not sort before `from` (from the top when `None`).
#[derive(Message)]
#[rtype(result = "Vec<(CitizenIdx, RankKey)>")]
pub struct PageFrom {
    /// Which period.
    pub period: PeriodIdx,
    /// Where to start.
    pub from: Option<RankKey>,
    /// How many at most.
    pub limit: usize,
}

/// The `index`-th (0-based) of this node's ranked citizens with `count`
/// payments, in ranking order.
#[derive(Message)]
#[rtype(result = "Option<RankKey>")]
pub struct AtInBucket {
    /// Which period.
    pub period: PeriodIdx,
    /// The count.
    pub count: u32,
    /// The place among this node's citizens with that count.
    pub index: u64,
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

impl Handler<CountBefore> for RankingAggregator {
    type Result = MessageResult<CountBefore>;

    fn handle(&mut self, q: CountBefore, _: &mut Self::Context) -> Self::Result {
        let Some(index) = self.indexes.get(q.period as usize) else {
            return MessageResult(Before {
                before: vec![0; q.keys.len()],
                ..Before::default()
            });
        };
        MessageResult(Before {
            before: q.keys.iter().map(|k| index.count_before(k)).collect(),
            len: index.len(),
            max: index.max_transaction_number(),
        })
    }
}

impl Handler<Histogram> for RankingAggregator {
    type Result = MessageResult<Histogram>;

    fn handle(&mut self, q: Histogram, _: &mut Self::Context) -> Self::Result {
        MessageResult(
            self.indexes
                .get(q.0 as usize)
                .map(RankIndex::count_histogram)
                .unwrap_or_default(),
        )
    }
}

impl Handler<PageFrom> for RankingAggregator {
    type Result = MessageResult<PageFrom>;

    fn handle(&mut self, q: PageFrom, _: &mut Self::Context) -> Self::Result {
        let Some(index) = self.indexes.get(q.period as usize) else {
            return MessageResult(Vec::new());
        };
        let page = match &q.from {
            Some(from) => index.page_from(from, q.limit),
            None => index
                .page(0, q.limit)
                .into_iter()
                .map(|(_, c, k)| (c, k))
                .collect(),
        };
        MessageResult(page.into_iter().map(|(c, k)| (c, k.clone())).collect())
    }
}

impl Handler<AtInBucket> for RankingAggregator {
    type Result = MessageResult<AtInBucket>;

    fn handle(&mut self, q: AtInBucket, _: &mut Self::Context) -> Self::Result {
        MessageResult(
            self.indexes
                .get(q.period as usize)
                .and_then(|i| i.at_in_bucket(q.count, q.index))
                .map(|(_, k)| k.clone()),
        )
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
