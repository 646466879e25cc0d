//! What the request handlers read and write, handed to every handler by
//! the dispatcher. The handlers depend on this module and never on each
//! other or on the dispatcher, so there is no cycle between them.

use crate::nats::subjects::Subjects;
use crate::progress::Progress;
use crate::waiters::Waiters;
use actix::Addr;
use async_nats::jetstream;
use cashback_actors::ranking::RankingAggregator;
use cashback_actors::ranking::{Page, PageOf, RanksOf};
use cashback_actors::{CitizenShard, Lookup, LookupCitizen};
use cashback_engine::directory::CitizenIdx;
use cashback_engine::ledger::CitizenFacts;
use cashback_engine::ledger::Standing;
use cashback_engine::partition::{partition_of, Ownership};
use cashback_engine::period::{PeriodIdx, Periods};
use cashback_engine::query::RankFields;
use cashback_engine::rank::RankKey;
use cashback_engine::refusal::{ErrorCode, Refusal};
use cashback_engine::time::Timestamp;
use std::sync::Arc;

/// Everything the services need: one value cloned into every request task.
#[derive(Clone)]
pub struct ServiceContext {
    /// For the queries (and the pusher, which shares it).
    pub query: QueryContext,
    /// For the enrollments.
    pub enrollment: EnrollmentContext,
    /// For the operators' requests.
    pub admin: AdminContext,
}

/// What an operator's request needs: the journal to write, and an inbox of
/// this node's for the answer of whichever node decides it.
#[derive(Clone)]
pub struct AdminContext {
    /// For the inbox the answer comes to.
    pub client: async_nats::Client,
    /// Where the journal is published.
    pub js: jetstream::Context,
    /// The journal's subject.
    pub subjects: Subjects,
}

/// What enrollment needs: the journal to write and the waiters the
/// pipeline completes once it applied the entry.
#[derive(Clone)]
pub struct EnrollmentContext {
    /// Where the journal is published (JetStream acknowledges it durable).
    pub js: jetstream::Context,
    /// The journal's subject.
    pub subjects: Subjects,
    /// Requests waiting for their journal entry to be applied.
    pub waiters: Arc<Waiters>,
}

/// What the queries read: the engine's state, through its actors.
#[derive(Clone)]
pub struct QueryContext {
    /// The shards, as in the pipeline.
    pub shards: Vec<Addr<CitizenShard>>,
    /// The ranking.
    pub ranking: Addr<RankingAggregator>,
    /// Partitions citizens hash into.
    pub partitions: u16,
    /// Which partitions this node's shards hold.
    pub ownership: Ownership,
    /// Award periods.
    pub periods: Arc<Periods>,
    /// How far the engine has applied the log: a payout file is final only
    /// once everything the broker received before the close is applied.
    pub progress: Arc<Progress>,
    /// Every node of the cluster (just this one for a single process): the
    /// national ranking and the statement lines of cards anchored anywhere.
    pub peers: crate::cluster::Peers,
}

impl QueryContext {
    /// The shard holding `citizen_id`, and its partition.
    pub fn shard_of(&self, citizen_id: &str) -> (u16, &Addr<CitizenShard>) {
        let partition = partition_of(citizen_id, self.partitions);
        (partition, self.shard_holding(partition))
    }

    /// The shard holding an owned partition.
    pub fn shard_holding(&self, partition: u16) -> &Addr<CitizenShard> {
        &self.shards[self.ownership.shard_of(partition, self.shards.len())]
    }

    /// The period named in a request, or the default one.
    pub fn period(&self, id: Option<&str>) -> Option<PeriodIdx> {
        match id {
            Some(id) => self.periods.by_id(id),
            None => self.periods.default_for(Timestamp::now().rome_date()),
        }
    }

    /// A citizen who has not withdrawn, with their standing in `period`
    /// (period 0 when the period is unknown: the caller refuses that after
    /// the citizen checks, in the order of PROTOCOL.md). Refuses
    /// unknown_citizen, citizen_withdrawn, or unavailable.
    pub async fn citizen(
        &self,
        citizen_id: &str,
        period: Option<PeriodIdx>,
    ) -> Result<(CitizenFacts, Standing), Refusal> {
        let (partition, shard) = self.shard_of(citizen_id);
        let lookup = shard
            .send(LookupCitizen {
                partition,
                citizen_id: citizen_id.to_owned(),
                period: period.unwrap_or(0),
            })
            .await;
        match lookup {
            Err(_) => Err(restarting()),
            Ok(Lookup::Unknown) => Err(Refusal::new(
                ErrorCode::UnknownCitizen,
                "no citizen with this citizen_id",
            )),
            Ok(Lookup::Found(facts, _)) if facts.withdrawn => Err(Refusal::new(
                ErrorCode::CitizenWithdrawn,
                "the citizen has withdrawn from the programme",
            )),
            Ok(Lookup::Found(facts, standing)) => Ok((facts, standing)),
        }
    }
}

impl QueryContext {
    /// A page of a period's ranking: this node's, or the cluster's.
    pub async fn page(
        &self,
        period: PeriodIdx,
        offset: u64,
        limit: usize,
    ) -> Result<Page, Refusal> {
        if self.peers.clustered() {
            let winners = self.periods.get(period).supercashback_winners as u64;
            return self.peers.page(period, offset, limit, winners).await;
        }
        self.ranking
            .send(PageOf {
                period,
                offset,
                limit,
            })
            .await
            .map_err(|_| restarting())
    }

    /// Where citizens stand in a period's national ranking, each given by
    /// number and current ranking key (one question per node for all of
    /// them).
    pub async fn rank_fields(
        &self,
        period: PeriodIdx,
        citizens: &[(CitizenIdx, RankKey)],
    ) -> Result<Vec<RankFields>, Refusal> {
        if self.peers.clustered() {
            let keys: Vec<RankKey> = citizens.iter().map(|(_, k)| k.clone()).collect();
            let winners = self.periods.get(period).supercashback_winners as u64;
            return self.peers.fields(period, &keys, winners).await;
        }
        self.ranking
            .send(RanksOf(
                citizens.iter().map(|(c, _)| (period, *c)).collect(),
            ))
            .await
            .map_err(|_| restarting())
    }
}

/// A citizen's ranking key from their facts and standing.
pub fn rank_key(facts: &CitizenFacts, standing: &Standing) -> RankKey {
    RankKey {
        count: standing.count,
        last_trx: standing.last_trx.unwrap_or_default(),
        tc_accepted_at: facts.tc_accepted_at,
        citizen_id: facts.id.clone(),
    }
}

/// The refusal when an actor did not answer: it is being restarted by its
/// supervisor, and a retry will find it back.
pub fn restarting() -> Refusal {
    Refusal::new(ErrorCode::Unavailable, "the engine is restarting; retry")
}

/// The refusal for a period that is not configured (`None`: the request
/// named none and no period is configured).
pub fn unknown_period(id: Option<&str>) -> Refusal {
    Refusal::new(
        ErrorCode::UnknownAwardPeriod,
        format!("no award period {:?}", id.unwrap_or_default()),
    )
}
