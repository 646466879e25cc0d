//! The ingest pipeline: reads the log (authorizations and enrollment journal)
//! in stream order from JetStream, decodes, routes, and hands batches to the
//! citizen shards; then publishes what the shards report.
//!
//! One authorization's path: `reader` (JetStream ordered consumer, decode)
//! -> `on_authorization` (`Router::route`) -> `pending` batch of its shard
//! -> `flush` (`Addr::send`) -> `CitizenShard` applies it -> `complete`
//! (rejections published, counters, enrollment replies).
//!
//! The log is read with an ordered consumer from the first sequence: the
//! engine's state is a deterministic function of the log, so a restart
//! rebuilds it by replay. No per-message acks: progress is the stream
//! position, which is what makes consuming cheap.

use crate::nats::subjects::Subjects;
use crate::progress::Progress;
use crate::reader::Entry;
use crate::rejections::RejectionPublisher;
use crate::waiters::{EnrollOutcome, Waiters};
use actix::{Addr, MailboxError};
use anyhow::{Context, Result};
use async_nats::jetstream::stream::Stream as JsStream;
use bytes::Bytes;
use cashback_actors::ranking::{ApplyStandings, RankingAggregator};
use cashback_actors::{CitizenShard, ShardBatch};
use cashback_engine::authorization::{Authorization, Decoder};
use cashback_engine::enrollment::{EnrollCommand, EnrollError};
use cashback_engine::item::{Item, LateRejection, Origin, Report, StandingChange};
use cashback_engine::reason::Rejection;
use cashback_engine::router::{Position, Routed, Router};
use cashback_engine::time::Timestamp;
use futures::future::{join_all, JoinAll};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

/// Shard replies of one flush.
type Replies = JoinAll<actix::dev::Request<CitizenShard, ShardBatch>>;

/// One flush on its way through the shards.
struct Flight {
    /// Every shard's report, in shard order.
    replies: Pin<Box<Replies>>,
    /// Enrollment replies to send once the flight is applied.
    enrollments: Vec<(String, EnrollOutcome)>,
    /// The last stream sequence included.
    last_seq: u64,
    /// Broker time of the messages, for the apply-latency histogram.
    broker_times: Vec<Timestamp>,
    /// (shard, items) of each batch sent, for the per-shard metrics.
    batches: Vec<(usize, usize)>,
}

/// Everything the pipeline needs.
pub struct Pipeline {
    /// Validates authorizations.
    decoder: Decoder,
    /// Decides and routes.
    router: Router,
    /// The shard actors; partition `p` belongs to shard `p % shards.len()`.
    shards: Vec<Addr<CitizenShard>>,
    /// The exact ranking, fed with every changed standing.
    ranking: Addr<RankingAggregator>,
    /// Changed standings for the position pushes.
    pushes: mpsc::Sender<Vec<StandingChange>>,
    /// Largest batch per flush.
    batch_size: usize,
    /// Subject names.
    subjects: Subjects,
    /// The log.
    stream: JsStream,
    /// Rejection output.
    rejections: RejectionPublisher,
    /// Enrollment replies.
    waiters: Arc<Waiters>,
    /// Shared counters.
    progress: Arc<Progress>,
    /// Items waiting for the next flush, per shard.
    pending: Vec<Vec<(u16, Item)>>,
    /// Items in `pending`.
    pending_items: usize,
    /// Enrollment outcomes waiting for the next flush.
    pending_enrollments: Vec<(String, EnrollOutcome)>,
    /// Broker times of the authorizations in `pending` (a sample: one per message).
    pending_times: Vec<Timestamp>,
    /// Last sequence read.
    last_seq: u64,
    /// Last sequence included in a flight: a flight is due whenever reading
    /// moved past it, even if every message since was rejected on the spot
    /// (their position must still become "applied").
    flushed_seq: u64,
    /// Flushes in flight, oldest first.
    flights: VecDeque<Flight>,
    /// Periodic snapshots, when enabled.
    snapshots: Option<crate::snapshots::Snapshotter>,
}

/// How a batch of shard work ended, when it failed.
fn mailbox_failure(e: MailboxError) -> anyhow::Error {
    anyhow::anyhow!("a citizen shard is gone ({e}); restart the engine to replay the log")
}

/// How long a graceful shutdown waits for its final snapshot to be stored.
const FINAL_SNAPSHOT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

impl Pipeline {
    /// A pipeline over an empty state.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        decoder: Decoder,
        router: Router,
        shards: Vec<Addr<CitizenShard>>,
        ranking: Addr<RankingAggregator>,
        pushes: mpsc::Sender<Vec<StandingChange>>,
        batch_size: usize,
        subjects: Subjects,
        stream: JsStream,
        rejections: RejectionPublisher,
        waiters: Arc<Waiters>,
        progress: Arc<Progress>,
    ) -> Pipeline {
        let n = shards.len();
        // A router restored from a snapshot already knows its citizens.
        progress
            .citizens
            .store(router.directory().citizen_count() as u64, Relaxed);
        Pipeline {
            decoder,
            router,
            shards,
            ranking,
            pushes,
            batch_size,
            subjects,
            stream,
            rejections,
            waiters,
            progress,
            pending: (0..n).map(|_| Vec::new()).collect(),
            pending_items: 0,
            pending_enrollments: Vec::new(),
            pending_times: Vec::new(),
            last_seq: 0,
            flushed_seq: 0,
            flights: VecDeque::new(),
            snapshots: None,
        }
    }

    /// Continues after a snapshot that holds everything up to `seq`.
    pub fn resume_after(mut self, seq: u64) -> Pipeline {
        self.last_seq = seq;
        self.flushed_seq = seq;
        self.progress.applied_seq.store(seq, Relaxed);
        self
    }

    /// Takes snapshots as configured.
    pub fn with_snapshots(mut self, snapshots: crate::snapshots::Snapshotter) -> Pipeline {
        self.snapshots = Some(snapshots);
        self
    }

    /// Settles everything, then snapshots the router and every ledger at the
    /// current position (`wait`: until stored, as at shutdown).
    async fn snapshot(&mut self, wait: bool) -> Result<()> {
        let due = self
            .snapshots
            .as_ref()
            .is_some_and(|s| s.last_seq < self.last_seq);
        if !due {
            return Ok(());
        }
        let paused = std::time::Instant::now();
        self.flush();
        self.settle_all().await?;
        // Every shard encodes on its own thread at once, and the router
        // here meanwhile: intake waits for the slowest, not for the sum.
        let asked: Vec<_> = self
            .shards
            .iter()
            .map(|shard| shard.send(cashback_actors::TakeSnapshot))
            .collect();
        let router = cashback_engine::snapshot::encode_router(&self.router);
        let mut ledgers = Vec::new();
        for part in futures::future::join_all(asked).await {
            ledgers.append(&mut part.map_err(mailbox_failure)?);
        }
        metrics::histogram!("cashback_snapshot_pause_seconds")
            .record(paused.elapsed().as_secs_f64());
        let snapshotter = self.snapshots.as_mut().expect("checked above");
        let snapshot = cashback_engine::snapshot::Snapshot {
            header: cashback_engine::snapshot::Header {
                format: cashback_engine::snapshot::FORMAT,
                seq: self.last_seq,
                fingerprint: snapshotter.fingerprint,
                taken_at: Timestamp::now(),
            },
            router,
            ledgers,
        };
        snapshotter.store(snapshot, self.stream.clone(), wait).await
    }

    /// Runs until `shutdown` turns true, then drains what is in flight.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Result<()> {
        let mut entries = crate::reader::start(
            &self.stream,
            self.decoder,
            self.subjects.clone(),
            self.last_seq + 1,
        )
        .await?;
        let replay_until = self.stream.info().await?.state.last_sequence;
        self.progress.stream_last_seq.store(replay_until, Relaxed);
        if replay_until <= self.last_seq {
            self.progress.replayed.store(true, Relaxed);
        }
        tracing::info!(from = self.last_seq + 1, replay_until, "replaying the log");
        let every = self
            .snapshots
            .as_ref()
            .map_or(std::time::Duration::from_secs(3600), |s| s.every);
        let mut snapshot_tick =
            tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            if *shutdown.borrow() {
                break;
            }
            let oldest = self.flights.front_mut().map(|f| &mut f.replies);
            tokio::select! {
                biased;
                _ = shutdown.changed() => {}
                _ = snapshot_tick.tick(), if self.snapshots.is_some() => {
                    self.snapshot(false).await?;
                }
                reports = maybe(oldest) => {
                    let flight = self.flights.pop_front().expect("awaited a flight");
                    self.complete(flight, reports).await?;
                    // Credits for other partitions must not wait for traffic.
                    self.flush();
                }
                batch = entries.recv() => {
                    let batch = batch.context("the log reader stopped")??;
                    self.on_entries(batch).await?;
                    // Take whatever else is already decoded, up to a batch.
                    while self.pending_items < self.batch_size {
                        match entries.try_recv() {
                            Ok(batch) => self.on_entries(batch?).await?,
                            Err(_) => break,
                        }
                    }
                    self.flush();
                    while self.flights.len() >= cashback_actors::shard::MAX_BATCHES_IN_FLIGHT {
                        self.complete_oldest().await?;
                    }
                    if self.last_seq >= replay_until {
                        self.progress.replayed.store(true, Relaxed);
                    }
                }
            }
        }
        tracing::info!("stopping intake; draining work in flight");
        self.flush();
        self.settle_all().await?;
        // Bounded: with the broker gone, storing would wait for it forever.
        // Nothing is lost without this snapshot (the log is durable); the
        // next start just replays from the previous one.
        match tokio::time::timeout(FINAL_SNAPSHOT_TIMEOUT, self.snapshot(true)).await {
            Ok(stored) => stored,
            Err(_) => anyhow::bail!(
                "the shutdown snapshot was not stored within {} s (is NATS reachable?); \
                 the next start replays the log from the previous snapshot",
                FINAL_SNAPSHOT_TIMEOUT.as_secs()
            ),
        }
    }

    async fn on_entries(&mut self, batch: Vec<Entry>) -> Result<()> {
        for entry in batch {
            self.on_entry(entry).await?;
        }
        Ok(())
    }

    /// Handles one message of the log.
    async fn on_entry(&mut self, entry: Entry) -> Result<()> {
        let at = entry.position();
        self.last_seq = at.seq;
        let (expired, ticks) = self.router.advance(at.broker_time);
        for late in expired {
            self.publish_late(late).await;
        }
        for (partition, tick) in ticks {
            self.push(partition, tick);
        }
        match entry {
            Entry::Auth {
                at,
                subject,
                payload,
                decoded,
            } => self.on_authorization(at, &subject, &payload, decoded).await,
            Entry::Journal { token, command, .. } => {
                self.on_journal(token, command);
                Ok(())
            }
            Entry::Other { .. } => Ok(()),
        }
    }

    async fn on_authorization(
        &mut self,
        at: Position,
        subject: &str,
        payload: &Bytes,
        decoded: Result<Authorization, Rejection>,
    ) -> Result<()> {
        self.progress.authorizations.fetch_add(1, Relaxed);
        let auth = match decoded {
            Ok(a) => a,
            Err(rejection) => {
                self.rejections
                    .publish(at.seq, subject, payload, &rejection)
                    .await;
                return Ok(());
            }
        };
        loop {
            // A copy, not a clone: the received bytes may share one large
            // read buffer with other messages, which a reversal kept for
            // weeks would pin in memory.
            let origin = || Origin {
                subject: subject.into(),
                payload: Bytes::copy_from_slice(payload),
            };
            match self.router.route(at, &auth, origin) {
                Routed::Reject(rejection) => {
                    self.rejections
                        .publish(at.seq, subject, payload, &rejection)
                        .await;
                }
                Routed::Forward(partition, item) => {
                    self.pending_times.push(at.broker_time);
                    self.push(partition, item);
                }
                Routed::ParkedHere => {
                    self.progress.reversals_parked.fetch_add(1, Relaxed);
                    metrics::counter!("cashback_reversals_parked_total").increment(1);
                }
                Routed::Wait => {
                    // A re-send of a reversal still being judged: let every
                    // shard finish, then decide it against the settled state.
                    self.flush();
                    self.settle_all().await?;
                    continue;
                }
            }
            return Ok(());
        }
    }

    fn on_journal(&mut self, token: Option<String>, command: Result<EnrollCommand, EnrollError>) {
        let outcome = match command {
            Ok(cmd) => {
                let (outcome, items) = self.router.enroll(&cmd);
                for (partition, item) in items {
                    self.push(partition, item);
                }
                self.progress.enrollments.fetch_add(1, Relaxed);
                self.progress
                    .citizens
                    .store(self.router.directory().citizen_count() as u64, Relaxed);
                outcome
            }
            Err(e) => {
                // The detail may quote the entry (a citizen id, an IBAN):
                // debug level only; the code says enough at error level.
                tracing::error!(
                    code = e.code.as_str(),
                    "unreadable enrollment journal entry skipped"
                );
                tracing::debug!(error = %e.message, "unreadable enrollment journal entry");
                Err(e)
            }
        };
        if let Some(token) = token {
            self.pending_enrollments.push((token, outcome));
        }
    }

    fn push(&mut self, partition: u16, item: Item) {
        let shard = partition as usize % self.shards.len();
        self.pending[shard].push((partition, item));
        self.pending_items += 1;
    }

    /// Sends every pending batch to its shard as one flight.
    fn flush(&mut self) {
        if self.pending_items == 0
            && self.pending_enrollments.is_empty()
            && self.last_seq <= self.flushed_seq
        {
            return;
        }
        self.flushed_seq = self.last_seq;
        let mut batches = Vec::new();
        let requests = self
            .pending
            .iter_mut()
            .enumerate()
            .filter(|(_, items)| !items.is_empty())
            .map(|(i, items)| {
                let items = std::mem::replace(items, Vec::with_capacity(items.len()));
                batches.push((i, items.len()));
                self.shards[i].send(ShardBatch { items })
            })
            .collect::<Vec<_>>();
        crate::metrics::batches_sent(&batches);
        self.pending_items = 0;
        self.flights.push_back(Flight {
            replies: Box::pin(join_all(requests)),
            enrollments: std::mem::take(&mut self.pending_enrollments),
            last_seq: self.last_seq,
            broker_times: std::mem::take(&mut self.pending_times),
            batches,
        });
    }

    async fn complete_oldest(&mut self) -> Result<()> {
        if let Some(mut flight) = self.flights.pop_front() {
            let reports = (&mut flight.replies).await;
            self.complete(flight, reports).await?;
        }
        Ok(())
    }

    /// Waits for every flight, including the ones that settling creates
    /// (credits for other partitions), until nothing is in flight.
    async fn settle_all(&mut self) -> Result<()> {
        loop {
            while !self.flights.is_empty() {
                self.complete_oldest().await?;
            }
            if self.pending_items == 0 && self.pending_enrollments.is_empty() {
                return Ok(());
            }
            self.flush();
        }
    }

    async fn complete(
        &mut self,
        flight: Flight,
        reports: Vec<Result<Report, MailboxError>>,
    ) -> Result<()> {
        let applied_at = Timestamp::now();
        let mut standings = Vec::new();
        for report in reports {
            let mut report = report.map_err(mailbox_failure)?;
            self.progress.accrue(&report.cashback);
            standings.append(&mut report.standings);
            for (partition, item) in self.router.settle(&report) {
                self.push(partition, item);
            }
            self.progress.counted.fetch_add(report.payments, Relaxed);
            self.progress
                .reversals_applied
                .fetch_add(report.reversals_applied, Relaxed);
            self.progress
                .reversals_parked
                .fetch_add(report.reversals_parked, Relaxed);
            metrics::counter!("cashback_authorizations_total", "outcome" => "counted")
                .increment(report.payments);
            metrics::counter!("cashback_authorizations_total", "outcome" => "reversal_applied")
                .increment(report.reversals_applied);
            metrics::counter!("cashback_reversals_parked_total").increment(report.reversals_parked);
            for late in report.rejections {
                self.publish_late(late).await;
            }
        }
        if !standings.is_empty() {
            self.ranking
                .send(ApplyStandings(standings.clone()))
                .await
                .map_err(mailbox_failure)?;
            // The pusher coalesces, so it keeps up; if it ever lags, waiting
            // here is the backpressure.
            let _ = self.pushes.send(standings).await;
        }
        crate::metrics::batches_applied(&flight.batches);
        for (token, outcome) in flight.enrollments {
            self.waiters.complete(&token, outcome);
        }
        let histogram = metrics::histogram!("cashback_apply_latency_seconds");
        for t in &flight.broker_times {
            let secs = (applied_at.unix_nanos() - t.unix_nanos()) as f64 / 1e9;
            histogram.record(secs.max(0.0));
        }
        if self.pending_items == 0 {
            // Otherwise the flight's credits are still to apply; the flight
            // that carries them records the position.
            self.progress
                .applied_seq
                .fetch_max(flight.last_seq, Relaxed);
        }
        Ok(())
    }

    /// Publishes a rejection decided after routing. Without an origin (a
    /// payment set aside after repeated panics) the original message is read
    /// back from the stream by its sequence.
    async fn publish_late(&self, late: LateRejection) {
        let (subject, payload): (String, Bytes) = match late.origin {
            Some(o) => (o.subject.to_string(), o.payload),
            None => match self.stream.get_raw_message(late.seq).await {
                Ok(m) => (m.subject.to_string(), m.payload),
                Err(e) => {
                    tracing::warn!(seq = late.seq, error = %e, "cannot read back a rejected message");
                    (String::new(), Bytes::new())
                }
            },
        };
        self.rejections
            .publish(late.seq, &subject, &payload, &late.rejection)
            .await;
    }
}

/// Awaits the future when there is one; pends forever otherwise (a disabled
/// `select!` branch).
async fn maybe<F: Future + Unpin>(f: Option<&mut F>) -> F::Output {
    match f {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}
