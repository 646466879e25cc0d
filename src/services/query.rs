//! `cashback.query.citizen` (PROTOCOL.md section 3).

use super::error_reply;
use crate::nats::subjects::Subjects;
use actix::Addr;
use anyhow::Result;
use cashback_actors::shard::MAX_QUERIES_IN_FLIGHT;
use cashback_actors::{CitizenShard, Lookup, LookupCitizen};
use cashback_engine::partition::partition_of;
use cashback_engine::period::Periods;
use cashback_engine::query::{citizen_reply, CitizenQuery};
use cashback_engine::time::Timestamp;
use futures::StreamExt;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{watch, Semaphore};

/// What the query service reads.
#[derive(Clone)]
pub struct QueryContext {
    /// The shards, as in the pipeline.
    pub shards: Vec<Addr<CitizenShard>>,
    /// Partitions citizens hash into.
    pub partitions: u16,
    /// Award periods.
    pub periods: Arc<Periods>,
}

/// Serves queries until `shutdown`.
pub async fn serve(
    client: async_nats::Client,
    subjects: Subjects,
    ctx: QueryContext,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let mut requests = client
        .queue_subscribe(subjects.query_citizen(), "cashback-engine".into())
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
        let permit = limit.clone().acquire_owned().await?;
        let (client, ctx) = (client.clone(), ctx.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let body = citizen(&ctx, &msg.payload).await;
            let _ = client.publish(reply, body).await;
            metrics::histogram!("cashback_query_latency_seconds", "query" => "citizen")
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
    let period = match &q.award_period {
        Some(id) => ctx.periods.by_id(id),
        None => ctx.periods.default_for(Timestamp::now().rome_date()),
    };
    let partition = partition_of(&q.citizen_id, ctx.partitions);
    let shard = &ctx.shards[partition as usize % ctx.shards.len()];
    let lookup = shard
        .send(LookupCitizen {
            partition,
            citizen_id: q.citizen_id.clone(),
            period: period.unwrap_or(0),
        })
        .await;
    match lookup {
        Err(_) => error_reply("unavailable", "the engine is restarting; retry"),
        Ok(Lookup::Unknown) => error_reply("unknown_citizen", "no citizen with this citizen_id"),
        Ok(Lookup::Found(facts, _)) if facts.withdrawn => error_reply(
            "citizen_withdrawn",
            "the citizen has withdrawn from the programme",
        ),
        Ok(Lookup::Found(_, standing)) => match period {
            None => error_reply(
                "unknown_award_period",
                &format!("no award period {:?}", q.award_period.unwrap_or_default()),
            ),
            Some(p) => {
                let reply = citizen_reply(&q.citizen_id, ctx.periods.get(p), &standing, None);
                serde_json::to_vec(&reply).expect("reply serializes").into()
            }
        },
    }
}
