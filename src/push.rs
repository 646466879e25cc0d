//! Live pushes to the app (PROTOCOL.md section 4).
//!
//! - `cashback.position.<citizen_id>`: the citizen query reply, after the
//!   citizen's own payment or reversal. The first change after a quiet
//!   interval is pushed at once; later changes within the interval are
//!   coalesced into one push at its end, always of the latest state.
//! - `cashback.leaderboard.<award_period>`: the first leaderboard page
//!   (offset 0, limit 100), every leaderboard interval while it changes.
//!
//! The latest state of every citizen is pushed, crash or not (at least
//! once, never stale):
//! - Changes replayed after a restart are not pushed as they are replayed
//!   (a burst of history); the latest state of each citizen they changed is
//!   kept as *owed* and pushed once the replay is done, paced
//!   (`OWED_PER_SECOND`) and coalesced with live changes. Why owed at all:
//!   a change applied but not yet pushed when the engine died is replayed
//!   after the restart, and without this its citizen's last push would stay
//!   stale until their next payment.
//! - Before a snapshot the pipeline has the pusher publish everything it
//!   holds back ([`PushCmd::Flush`]): changes before a snapshot's position
//!   are never replayed, so none may be waiting then.
//!
//! A withdrawal drops the citizen's coalesced, unpushed and owed state.

use crate::nats::subjects::Subjects;
use crate::progress::Progress;
use crate::services::protocol::{CitizenReply, LeaderboardReply};
use crate::services::QueryContext;
use cashback_engine::directory::CitizenIdx;
use cashback_engine::fasthash::{FastMap, FastSet};
use cashback_engine::item::StandingChange;
use cashback_engine::period::PeriodIdx;
use cashback_engine::rank::RankKey;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// A citizen in a period: what a position push is about.
type Key = (CitizenIdx, PeriodIdx);

/// Owed pushes sent per second after a replay: fast enough to settle a
/// replay of minutes within seconds, slow enough not to be the burst that
/// broke the real app on launch day.
const OWED_PER_SECOND: usize = 5_000;

/// What the pipeline tells the pusher, in log order.
#[derive(Debug)]
pub enum PushCmd {
    /// Standings changed by a batch.
    Changes(Vec<StandingChange>),
    /// Publish everything held back now (owed and coalesced), flush the
    /// connection, then answer: a snapshot follows.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// The pusher's state.
struct Pusher {
    /// Where to publish.
    client: async_nats::Client,
    /// Subject names.
    subjects: Subjects,
    /// Ranking and periods.
    ctx: QueryContext,
    /// Minimum time between two position pushes of one citizen.
    interval: Duration,
    /// When each recently pushed citizen was last pushed; entries older than
    /// the interval are dropped, so this holds only the last interval's
    /// active citizens.
    last_sent: FastMap<Key, Instant>,
    /// The latest unpushed state of citizens pushed less than an interval ago.
    pending: FastMap<Key, StandingChange>,
    /// The latest state of citizens changed by a replay, to push once the
    /// replay is done.
    owed: FastMap<Key, StandingChange>,
    /// Periods whose ranking changed since the last leaderboard push.
    dirty: FastSet<PeriodIdx>,
    /// The last leaderboard published per period, to publish only changes.
    last_board: FastMap<PeriodIdx, LeaderboardReply>,
    /// Whether the log found at start has been replayed. Changes replayed
    /// after a restart are history: pushing them would send every citizen
    /// active since the last snapshot a burst of stale positions at once,
    /// the thundering herd that broke the real app on launch day.
    progress: Arc<Progress>,
}

/// Runs until `shutdown` or until the pipeline drops its sender.
pub async fn run(
    client: async_nats::Client,
    subjects: Subjects,
    ctx: QueryContext,
    mut commands: mpsc::Receiver<PushCmd>,
    interval: Duration,
    leaderboard_interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut p = Pusher {
        progress: ctx.progress.clone(),
        client,
        subjects,
        ctx,
        interval,
        last_sent: FastMap::default(),
        pending: FastMap::default(),
        owed: FastMap::default(),
        dirty: FastSet::default(),
        last_board: FastMap::default(),
    };
    // Coalesced pushes go out within a tenth of the interval of their due time.
    let mut tick = tokio::time::interval((interval / 10).max(Duration::from_millis(10)));
    // Owed pushes go out in small steps, whatever the push interval.
    let owed_every = Duration::from_millis(100);
    let owed_per_tick = (OWED_PER_SECOND as f64 * owed_every.as_secs_f64()).ceil() as usize;
    let mut owed_tick = tokio::time::interval(owed_every);
    let mut board_tick = tokio::time::interval(leaderboard_interval);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            cmd = commands.recv() => match cmd {
                Some(PushCmd::Changes(batch)) => p.on_changes(batch).await,
                Some(PushCmd::Flush(done)) => {
                    p.flush_all().await;
                    let _ = done.send(());
                }
                None => return,
            },
            _ = tick.tick() => p.flush_due().await,
            _ = owed_tick.tick() => p.pay_owed(owed_per_tick).await,
            _ = board_tick.tick() => p.push_boards().await,
        }
    }
}

impl Pusher {
    async fn on_changes(&mut self, batch: Vec<StandingChange>) {
        let now = Instant::now();
        let mut send_now = Vec::new();
        let live = self.progress.replayed.load(Relaxed);
        for change in batch {
            self.dirty.insert(change.period);
            let key = (change.citizen, change.period);
            if change.withdrawn {
                // A withdrawn citizen is no longer ranked: a coalesced state
                // from before the withdrawal must not go out after it.
                self.pending.remove(&key);
                self.owed.remove(&key);
                continue;
            }
            if !live {
                self.owed.insert(key, change);
                continue;
            }
            // A live change supersedes what a replay left owed.
            self.owed.remove(&key);
            if let Some(slot) = self.pending.get_mut(&key) {
                *slot = change;
            } else if self
                .last_sent
                .get(&key)
                .is_some_and(|t| now.duration_since(*t) < self.interval)
            {
                self.pending.insert(key, change);
            } else {
                self.last_sent.insert(key, now);
                send_now.push(change);
            }
        }
        self.publish(send_now).await;
    }

    /// Once the replay is done, moves up to `n` owed states into the
    /// ordinary path: pushed now, or coalesced if pushed within the
    /// interval.
    async fn pay_owed(&mut self, n: usize) {
        if self.owed.is_empty() || !self.progress.replayed.load(Relaxed) {
            return;
        }
        let keys: Vec<Key> = self.owed.keys().take(n).copied().collect();
        let batch = keys
            .iter()
            .filter_map(|k| self.owed.remove(k))
            .collect::<Vec<_>>();
        metrics::counter!("cashback_pushes_owed_paid_total").increment(batch.len() as u64);
        self.on_changes(batch).await;
    }

    /// Publishes every state held back, owed or coalesced, whatever its
    /// interval, and makes sure the connection sent them.
    async fn flush_all(&mut self) {
        let mut batch: Vec<StandingChange> = self.owed.drain().map(|(_, c)| c).collect();
        batch.extend(self.pending.drain().map(|(_, c)| c));
        let now = Instant::now();
        for c in &batch {
            self.last_sent.insert((c.citizen, c.period), now);
        }
        self.publish(batch).await;
        // Bounded: without a server the flush would wait for a reconnect.
        match tokio::time::timeout(Duration::from_secs(5), self.client.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot flush position pushes"),
            Err(_) => tracing::warn!("position pushes not flushed within 5 s"),
        }
    }

    /// Publishes the coalesced states whose interval has ended.
    async fn flush_due(&mut self) {
        let now = Instant::now();
        let interval = self.interval;
        let due: Vec<Key> = self
            .pending
            .keys()
            .filter(|k| {
                self.last_sent
                    .get(k)
                    .is_none_or(|t| now.duration_since(*t) >= interval)
            })
            .copied()
            .collect();
        let mut batch = Vec::with_capacity(due.len());
        for key in due {
            if let Some(change) = self.pending.remove(&key) {
                self.last_sent.insert(key, now);
                batch.push(change);
            }
        }
        self.publish(batch).await;
        let pending = &self.pending;
        self.last_sent
            .retain(|k, t| pending.contains_key(k) || now.duration_since(*t) < interval);
    }

    /// Publishes the states of `batch` with their positions: one question
    /// per period for the whole batch (in a cluster, one per node and
    /// period: the cross-node work of a push round is batched).
    async fn publish(&mut self, batch: Vec<StandingChange>) {
        if batch.is_empty() {
            return;
        }
        let mut by_period: std::collections::BTreeMap<PeriodIdx, Vec<&StandingChange>> =
            Default::default();
        for change in &batch {
            by_period.entry(change.period).or_default().push(change);
        }
        for (period, changes) in by_period {
            let keys: Vec<_> = changes
                .iter()
                .map(|c| {
                    let key = RankKey {
                        count: c.standing.count,
                        last_trx: c.standing.last_trx.unwrap_or_default(),
                        tc_accepted_at: c.tc_accepted_at,
                        citizen_id: c.id.clone(),
                    };
                    (c.citizen, key)
                })
                .collect();
            let ranks = match self.ctx.rank_fields(period, &keys).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e.message, "positions not pushed: no ranking");
                    continue;
                }
            };
            let rules = self.ctx.periods.get(period);
            for (change, rank) in changes.into_iter().zip(ranks) {
                let reply = CitizenReply::new(&change.id, rules, &change.standing, Some(&rank));
                let body = serde_json::to_vec(&reply).expect("reply serializes");
                if self
                    .client
                    .publish(self.subjects.position(&change.id), body.into())
                    .await
                    .is_ok()
                {
                    metrics::counter!("cashback_pushes_total", "kind" => "position").increment(1);
                }
            }
        }
    }

    /// Publishes each changed period's top page. In a cluster every node
    /// sees only its own citizens change, so node 0 alone publishes, every
    /// period each interval, when the page differs from the last one sent.
    async fn push_boards(&mut self) {
        let periods: Vec<PeriodIdx> = if self.ctx.peers.clustered() {
            if self.ctx.ownership.node != 0 {
                self.dirty.clear();
                return;
            }
            (0..self.ctx.periods.all().len() as PeriodIdx).collect()
        } else {
            std::mem::take(&mut self.dirty).into_iter().collect()
        };
        for period in periods {
            let Ok(page) = self.ctx.page(period, 0, 100).await else {
                return;
            };
            if page.total_participants == 0 && !self.last_board.contains_key(&period) {
                continue;
            }
            let id = &self.ctx.periods.get(period).id;
            let reply = LeaderboardReply::from_page(id, page);
            if self.last_board.get(&period) == Some(&reply) {
                continue;
            }
            let body = serde_json::to_vec(&reply).expect("reply serializes");
            if self
                .client
                .publish(self.subjects.leaderboard(id), body.into())
                .await
                .is_ok()
            {
                metrics::counter!("cashback_pushes_total", "kind" => "leaderboard").increment(1);
            }
            self.last_board.insert(period, reply);
        }
    }
}
