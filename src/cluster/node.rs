//! This node's answers to the other nodes (`cashback.node.<K>.<op>`, queue
//! group per node so that one replica answers): its ranking's counts and
//! runs, a citizen's statement lines and standing from its partitions, its
//! progress, and the public requests forwarded to it because it owns their
//! citizen.

use super::peers::{local_lines, local_lookup};
use super::wire::{
    AtAsk, BeforeAnswer, BeforeAsk, HistogramAsk, Key, LinesAsk, LookupAsk, PageAsk, ProgressAnswer,
};
use crate::services::dispatch::answer_here;
use crate::services::protocol::error_body;
use crate::services::request::RequestKind;
use crate::services::ServiceContext;
use anyhow::Result;
use bytes::Bytes;
use cashback_actors::ranking::{AtInBucket, CountBefore, Histogram, PageFrom};
use cashback_engine::refusal::{ErrorCode, Refusal};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use tokio::sync::{watch, Semaphore};

/// Questions answered at once: each holds an actor request at most.
const CONCURRENCY: usize = 256;

/// Answers the other nodes until `shutdown`.
pub async fn serve(
    ctx: ServiceContext,
    client: async_nats::Client,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let ownership = ctx.query.ownership;
    let subjects = ctx.enrollment.subjects.clone();
    let mut asks = client
        .queue_subscribe(
            subjects.node_filter(ownership.node),
            format!("cashback-node-{}", ownership.node),
        )
        .await?;
    let prefix = subjects.node(ownership.node, "");
    let limit = Arc::new(Semaphore::new(CONCURRENCY));
    loop {
        let msg = tokio::select! {
            _ = shutdown.changed() => break,
            m = asks.next() => match m { Some(m) => m, None => break },
        };
        let Some(reply) = msg.reply.clone() else {
            continue;
        };
        let Some(op) = msg.subject.strip_prefix(prefix.as_str()).map(str::to_owned) else {
            continue;
        };
        let permit = tokio::select! {
            _ = shutdown.changed() => break,
            p = limit.clone().acquire_owned() => p?,
        };
        let (client, ctx) = (client.clone(), ctx.clone());
        tokio::spawn(async move {
            let body = answer(&ctx, &op, &msg.payload).await;
            let _ = client.publish(reply, body).await;
            drop(permit);
        });
    }
    Ok(())
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Refusal> {
    serde_json::from_slice(body).map_err(|e| Refusal::new(ErrorCode::BadRequest, e.to_string()))
}

fn json<T: Serialize>(value: &T) -> Bytes {
    serde_json::to_vec(value).expect("answers serialize").into()
}

fn restarting() -> Refusal {
    Refusal::new(ErrorCode::Unavailable, "this node is restarting")
}

/// One answer.
async fn answer(ctx: &ServiceContext, op: &str, body: &[u8]) -> Bytes {
    let q = &ctx.query;
    let answered: Result<Bytes, Refusal> = async {
        match op {
            "before" => {
                let ask: BeforeAsk = parse(body)?;
                let b = q
                    .ranking
                    .send(CountBefore {
                        period: ask.period,
                        keys: ask.keys.into_iter().map(Into::into).collect(),
                    })
                    .await
                    .map_err(|_| restarting())?;
                Ok(json(&BeforeAnswer {
                    before: b.before,
                    len: b.len,
                    max: b.max,
                }))
            }
            "histogram" => {
                let ask: HistogramAsk = parse(body)?;
                let h = q
                    .ranking
                    .send(Histogram(ask.period))
                    .await
                    .map_err(|_| restarting())?;
                Ok(json(&h))
            }
            "page" => {
                let ask: PageAsk = parse(body)?;
                let run = q
                    .ranking
                    .send(PageFrom {
                        period: ask.period,
                        from: ask.from.map(Into::into),
                        limit: ask.limit,
                    })
                    .await
                    .map_err(|_| restarting())?;
                let run: Vec<(u32, Key)> = run.iter().map(|(c, k)| (*c, Key::from(k))).collect();
                Ok(json(&run))
            }
            "at" => {
                let ask: AtAsk = parse(body)?;
                let key = q
                    .ranking
                    .send(AtInBucket {
                        period: ask.period,
                        count: ask.count,
                        index: ask.index,
                    })
                    .await
                    .map_err(|_| restarting())?;
                Ok(json(&key.as_ref().map(Key::from)))
            }
            "lines" => {
                let ask: LinesAsk = parse(body)?;
                Ok(json(
                    &local_lines(&q.shards, ask.citizen, ask.period).await?,
                ))
            }
            "lookup" => {
                let ask: LookupAsk = parse(body)?;
                Ok(json(
                    &local_lookup(&q.shards, q.ownership, ask.period, &ask.citizens).await?,
                ))
            }
            "progress" => Ok(json(&ProgressAnswer {
                replayed: q.progress.replayed.load(Relaxed),
                lag: q.progress.lag(),
            })),
            forwarded => {
                let kind = match forwarded.strip_prefix("query.") {
                    Some("citizen") => RequestKind::Citizen,
                    Some("transactions") => RequestKind::Transactions,
                    Some("wallet") => RequestKind::Wallet,
                    _ => {
                        return Err(Refusal::new(
                            ErrorCode::BadRequest,
                            format!("no such question: {forwarded}"),
                        ))
                    }
                };
                // The reply as the requester gets it, refusal or not.
                Ok(answer_here(ctx, kind, body)
                    .await
                    .unwrap_or_else(|r| error_body(&r)))
            }
        }
    }
    .await;
    answered.unwrap_or_else(|r| error_body(&r))
}
