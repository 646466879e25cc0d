//! `cashback.query.citizen` and `cashback.query.leaderboard` (PROTOCOL.md
//! section 3), and `cashback.query.awards` (see `awards`).

use super::error_reply;
use crate::nats::subjects::Subjects;
use actix::Addr;
use anyhow::Result;
use cashback_actors::ranking::{Page, PageOf, RankingAggregator, RanksOf};
use cashback_actors::shard::MAX_QUERIES_IN_FLIGHT;
use cashback_actors::{CitizenShard, Lookup, LookupCitizen};
use cashback_engine::partition::partition_of;
use cashback_engine::period::{PeriodIdx, Periods};
use cashback_engine::query::{citizen_reply, CitizenQuery};
use cashback_engine::time::Timestamp;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{watch, Semaphore};

/// Largest `limit` of a page query.
pub const MAX_PAGE: usize = 1000;

/// What the query services read.
#[derive(Clone)]
pub struct QueryContext {
    /// The shards, as in the pipeline.
    pub shards: Vec<Addr<CitizenShard>>,
    /// The ranking.
    pub ranking: Addr<RankingAggregator>,
    /// Partitions citizens hash into.
    pub partitions: u16,
    /// Award periods.
    pub periods: Arc<Periods>,
    /// How far the engine has applied the log: a payout file is final only
    /// once everything the broker received before the close is applied.
    pub progress: Arc<crate::progress::Progress>,
}

impl QueryContext {
    /// The shard holding `citizen_id`, and its partition.
    pub fn shard_of(&self, citizen_id: &str) -> (u16, &Addr<CitizenShard>) {
        let partition = partition_of(citizen_id, self.partitions);
        (
            partition,
            &self.shards[partition as usize % self.shards.len()],
        )
    }

    /// The period named in a request, or the default one.
    pub fn period(&self, id: Option<&str>) -> Option<PeriodIdx> {
        match id {
            Some(id) => self.periods.by_id(id),
            None => self.periods.default_for(Timestamp::now().rome_date()),
        }
    }
}

/// Serves queries until `shutdown`.
pub async fn serve(
    client: async_nats::Client,
    subjects: Subjects,
    ctx: QueryContext,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let mut requests = client
        .queue_subscribe(subjects.query("*"), "cashback-engine".into())
        .await?;
    // Every shard may take MAX_QUERIES_IN_FLIGHT; this bound keeps the
    // shards' mailboxes from ever filling (see `shard::MAILBOX_CAPACITY`).
    let limit = Arc::new(Semaphore::new(MAX_QUERIES_IN_FLIGHT));
    loop {
        let msg = tokio::select! {
            _ = shutdown.changed() => break,
            m = requests.next() => match m { Some(m) => m, None => break },
        };
        let Some(reply) = msg.reply.clone() else {
            continue;
        };
        let kind = match msg.subject.rsplit('.').next() {
            Some("citizen") => "citizen",
            Some("leaderboard") => "leaderboard",
            Some("awards") => "awards",
            Some("transactions") => "transactions",
            _ => continue,
        };
        let permit = limit.clone().acquire_owned().await?;
        let (client, ctx) = (client.clone(), ctx.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let body = match kind {
                "citizen" => citizen(&ctx, &msg.payload).await,
                "leaderboard" => leaderboard(&ctx, &msg.payload).await,
                "transactions" => super::statement::transactions(&ctx, &msg.payload).await,
                _ => super::awards::awards(&ctx, &msg.payload).await,
            };
            let _ = client.publish(reply, body).await;
            metrics::histogram!("cashback_query_latency_seconds", "query" => kind)
                .record(started.elapsed().as_secs_f64());
            drop(permit);
        });
    }
    Ok(())
}

/// Answers one citizen query; checks run in the order of PROTOCOL.md:
/// bad_request, unknown_citizen, citizen_withdrawn, unknown_award_period.
pub async fn citizen(ctx: &QueryContext, body: &[u8]) -> bytes::Bytes {
    let q: CitizenQuery = match serde_json::from_slice(body) {
        Ok(q) => q,
        Err(e) => {
            return error_reply(
                "bad_request",
                &format!("expected {{\"citizen_id\": string, \"award_period\"?: string}}: {e}"),
            )
        }
    };
    let period = ctx.period(q.award_period.as_deref());
    let (partition, shard) = ctx.shard_of(&q.citizen_id);
    let lookup = shard
        .send(LookupCitizen {
            partition,
            citizen_id: q.citizen_id.clone(),
            period: period.unwrap_or(0),
        })
        .await;
    let (facts, standing) = match lookup {
        Err(_) => return error_reply("unavailable", "the engine is restarting; retry"),
        Ok(Lookup::Unknown) => {
            return error_reply("unknown_citizen", "no citizen with this citizen_id")
        }
        Ok(Lookup::Found(facts, _)) if facts.withdrawn => {
            return error_reply(
                "citizen_withdrawn",
                "the citizen has withdrawn from the programme",
            )
        }
        Ok(Lookup::Found(facts, standing)) => (facts, standing),
    };
    let Some(period) = period else {
        return error_reply(
            "unknown_award_period",
            &format!("no award period {:?}", q.award_period.unwrap_or_default()),
        );
    };
    let Ok(mut ranks) = ctx.ranking.send(RanksOf(vec![(period, facts.idx)])).await else {
        return error_reply("unavailable", "the engine is restarting; retry");
    };
    let rank = ranks.pop().unwrap_or_default();
    let reply = citizen_reply(
        &q.citizen_id,
        ctx.periods.get(period),
        &standing,
        Some(&rank),
    );
    serde_json::to_vec(&reply).expect("reply serializes").into()
}

/// `cashback.query.leaderboard` request.
#[derive(Deserialize)]
struct LeaderboardQuery {
    #[serde(default)]
    award_period: Option<String>,
    #[serde(default)]
    offset: u64,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    100
}

/// One leaderboard row on the wire.
#[derive(Serialize, Deserialize, Debug, PartialEq, Eq, Clone)]
pub struct LeaderboardEntry {
    pub ranking: u64,
    pub citizen_id: String,
    pub transaction_count: u32,
    pub last_trx_date: String,
}

/// The leaderboard reply on the wire (also the `cashback.leaderboard.<id>` push).
#[derive(Serialize, Deserialize, Debug, PartialEq, Eq, Clone)]
pub struct LeaderboardReply {
    pub ok: bool,
    pub award_period: String,
    pub total_participants: u64,
    pub max_transaction_number: u32,
    pub min_transaction_number: u32,
    pub entries: Vec<LeaderboardEntry>,
}

impl LeaderboardReply {
    /// The wire form of a page.
    pub fn from_page(period: &str, page: Page) -> LeaderboardReply {
        LeaderboardReply {
            ok: true,
            award_period: period.to_owned(),
            total_participants: page.total_participants,
            max_transaction_number: page.max_transaction_number,
            min_transaction_number: page.min_transaction_number,
            entries: page
                .entries
                .into_iter()
                .map(|e| LeaderboardEntry {
                    ranking: e.ranking,
                    citizen_id: e.citizen_id.to_string(),
                    transaction_count: e.transaction_count,
                    last_trx_date: e.last_trx.to_rome_rfc3339(),
                })
                .collect(),
        }
    }
}

/// Answers one leaderboard query: bad_request, unknown_award_period.
pub async fn leaderboard(ctx: &QueryContext, body: &[u8]) -> bytes::Bytes {
    let q: LeaderboardQuery = match serde_json::from_slice(body) {
        Ok(q) => q,
        Err(e) => {
            return error_reply(
                "bad_request",
                &format!("expected {{\"award_period\"?, \"offset\"?, \"limit\"?}}: {e}"),
            )
        }
    };
    if q.limit > MAX_PAGE {
        return error_reply("bad_request", &format!("limit must be at most {MAX_PAGE}"));
    }
    let Some(period) = ctx.period(q.award_period.as_deref()) else {
        return error_reply(
            "unknown_award_period",
            &format!("no award period {:?}", q.award_period.unwrap_or_default()),
        );
    };
    let Ok(page) = ctx
        .ranking
        .send(PageOf {
            period,
            offset: q.offset,
            limit: q.limit,
        })
        .await
    else {
        return error_reply("unavailable", "the engine is restarting; retry");
    };
    let reply = LeaderboardReply::from_page(&ctx.periods.get(period).id, page);
    serde_json::to_vec(&reply).expect("reply serializes").into()
}
