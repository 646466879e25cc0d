//! Start-up from a snapshot: decode the router and the ledgers, hand each
//! shard its partitions, and rebuild the ranking from the shards' standings
//! (the ranking is derived state, so it is not stored).

use crate::snapshots::SnapshotStore;
use actix::Addr;
use anyhow::{anyhow, Result};
use cashback_actors::ranking::{ApplyStandings, RankingAggregator};
use cashback_actors::{AllStandings, CitizenShard};
use cashback_engine::ledger::Ledger;
use cashback_engine::period::Periods;
use cashback_engine::router::Router;
use cashback_engine::snapshot::{decode_ledger, decode_router};
use std::collections::HashMap;
use std::sync::Arc;

/// What a start begins from.
pub struct Restored {
    /// The router, or `None` for an empty start.
    pub router: Option<Router>,
    /// Ledgers per shard (partition `p` goes to shard `p % shards`).
    pub shard_ledgers: Vec<HashMap<u16, Ledger>>,
    /// The last sequence the state holds (0: none).
    pub seq: u64,
}

/// Loads the newest usable snapshot, or an empty start.
pub async fn load(
    store: &SnapshotStore,
    fingerprint: u64,
    periods: &Arc<Periods>,
    shards: usize,
) -> Result<Restored> {
    let mut shard_ledgers: Vec<HashMap<u16, Ledger>> =
        (0..shards).map(|_| HashMap::new()).collect();
    let Some(snapshot) = store.latest(fingerprint).await? else {
        tracing::info!("no snapshot: replaying the log from its start");
        return Ok(Restored {
            router: None,
            shard_ledgers,
            seq: 0,
        });
    };
    let started = std::time::Instant::now();
    let router = decode_router(&snapshot.router, periods.clone()).map_err(|e| anyhow!(e))?;
    for (partition, bytes) in &snapshot.ledgers {
        let ledger = decode_ledger(bytes, periods.clone()).map_err(|e| anyhow!(e))?;
        shard_ledgers[*partition as usize % shards].insert(*partition, ledger);
    }
    tracing::info!(
        seq = snapshot.header.seq,
        secs = started.elapsed().as_secs_f64(),
        "restored snapshot"
    );
    metrics::gauge!("cashback_snapshot_last_seq").set(snapshot.header.seq as f64);
    metrics::gauge!("cashback_snapshot_timestamp_seconds")
        .set(snapshot.header.taken_at.unix_nanos() as f64 / 1e9);
    Ok(Restored {
        router: Some(router),
        shard_ledgers,
        seq: snapshot.header.seq,
    })
}

/// Feeds every shard's standings to the ranking, and their cashback to the
/// accrued-cashback totals of `progress`.
pub async fn rebuild_ranking(
    shards: &[Addr<CitizenShard>],
    ranking: &Addr<RankingAggregator>,
    progress: &crate::progress::Progress,
) -> Result<()> {
    for shard in shards {
        let standings = shard.send(AllStandings).await?;
        let accrued: Vec<_> = standings
            .iter()
            .map(|s| (s.period, s.standing.cashback))
            .collect();
        progress.accrue(&accrued);
        if !standings.is_empty() {
            ranking.send(ApplyStandings(standings)).await?;
        }
    }
    Ok(())
}
