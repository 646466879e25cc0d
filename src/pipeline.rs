//! The ingest pipeline: reads the log (authorizations and journals) in
//! stream order from JetStream, decodes, routes, and hands batches to the
//! citizen shards; then publishes what the shards report.
//!
//! One authorization's path: `reader` (JetStream ordered consumer, decode)
//! -> `on_authorization` (`Router::route`) -> `pending` batch of its shard
//! -> `flush` (`Addr::send`) -> `CitizenShard` decides and commits it ->
//! `complete` (rejections published, counters, enrollment replies, standings
//! to the ranking and the pushes).
//!
//! The log is read with an ordered consumer from the first sequence: the
//! engine's state is a deterministic function of the log, so a restart
//! rebuilds it by replay. No per-message acks: progress is the stream
//! position, which is what makes consuming cheap.
//!
//! In a cluster (PROTOCOL.md section 8) every node reads the whole log and
//! runs the same router; it keeps, and sends to its shards, only what
//! belongs to the partitions it owns, publishes only the rejections of those
//! partitions, and journals the credits its partitions decide for citizens
//! of other nodes (`credits`).

use crate::credits::Outbox;
use crate::nats::subjects::Subjects;
use crate::progress::Progress;
use crate::push::PushCmd;
use crate::reader::Entry;
use crate::rejections::RejectionPublisher;
use crate::waiters::{EnrollOutcome, Waiters};
use actix::{Addr, MailboxError};
use anyhow::{Context, Result};
use async_nats::jetstream::stream::Stream as JsStream;
use bytes::Bytes;
use cashback_actors::ranking::{ApplyStandings, RankingAggregator};
use cashback_actors::supervision::retrying;
use cashback_actors::{CitizenShard, ShardBatch};
use cashback_engine::admin::JournalEntry;
use cashback_engine::authorization::{Authorization, Decoder};
use cashback_engine::enrollment::{EnrollCommand, EnrollError};
use cashback_engine::item::{
    Credit, ExclusionOp, ExclusionOutcome, Item, LateRejection, Origin, Report,
};
use cashback_engine::partition::{self, Ownership};
use cashback_engine::reason::Rejection;
use cashback_engine::router::{Position, Routed, Router};
use cashback_engine::time::Timestamp;
use futures::future::{join_all, JoinAll};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
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
    /// Which partitions this node keeps.
    ownership: Ownership,
    /// The shard actors; owned partition `p` belongs to shard
    /// `ownership.shard_of(p, shards.len())`.
    shards: Vec<Addr<CitizenShard>>,
    /// The exact ranking, fed with every changed standing.
    ranking: Addr<RankingAggregator>,
    /// Changed standings for the position pushes.
    pushes: mpsc::Sender<PushCmd>,
    /// Largest batch per flush.
    batch_size: usize,
    /// Subject names.
    subjects: Subjects,
    /// Where answers to operators go.
    client: async_nats::Client,
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
    /// Where to answer the operators' requests decided by this node's
    /// partitions, by journal sequence, until the shard reports.
    admin_replies: HashMap<u64, String>,
    /// Credits for other nodes' partitions (a cluster only).
    outbox: Option<Outbox>,
    /// A credit was set aside (its decision kept failing): snapshots are
    /// withheld, since one taken past it would drop it for good, while a
    /// restart from the last one replays it.
    snapshots_withheld: bool,
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
const FINAL_SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a snapshot waits for what was decided before it and is still
/// on its way (position pushes, rejections, a cluster's credits) before it
/// gives up until the next one: a snapshot must not hold decisions whose
/// output a restart from it would not send again.
const HELD_BACK_TIMEOUT: Duration = Duration::from_secs(30);

/// What the pipeline is built from, besides its state.
pub struct Wiring {
    /// The shard actors.
    pub shards: Vec<Addr<CitizenShard>>,
    /// The ranking.
    pub ranking: Addr<RankingAggregator>,
    /// Changed standings for the pushes.
    pub pushes: mpsc::Sender<PushCmd>,
    /// Subject names.
    pub subjects: Subjects,
    /// The NATS connection.
    pub client: async_nats::Client,
    /// The log.
    pub stream: JsStream,
    /// Rejection output.
    pub rejections: RejectionPublisher,
    /// Enrollment replies.
    pub waiters: Arc<Waiters>,
    /// Shared counters.
    pub progress: Arc<Progress>,
}

impl Pipeline {
    /// A pipeline over `router`'s state (empty, or restored).
    pub fn new(
        decoder: Decoder,
        router: Router,
        ownership: Ownership,
        batch_size: usize,
        wiring: Wiring,
    ) -> Pipeline {
        let n = wiring.shards.len();
        // A router restored from a snapshot already knows its citizens.
        wiring
            .progress
            .citizens
            .store(router.directory().citizen_count() as u64, Relaxed);
        Pipeline {
            decoder,
            router,
            ownership,
            shards: wiring.shards,
            ranking: wiring.ranking,
            pushes: wiring.pushes,
            batch_size,
            subjects: wiring.subjects,
            client: wiring.client,
            stream: wiring.stream,
            rejections: wiring.rejections,
            waiters: wiring.waiters,
            progress: wiring.progress,
            pending: (0..n).map(|_| Vec::new()).collect(),
            pending_items: 0,
            pending_enrollments: Vec::new(),
            pending_times: Vec::new(),
            admin_replies: HashMap::new(),
            outbox: None,
            snapshots_withheld: false,
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

    /// Journals credits for other nodes through `outbox` (a cluster).
    pub fn with_outbox(mut self, outbox: Outbox) -> Pipeline {
        self.outbox = Some(outbox);
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
        // Only now: settling completes the flights in progress, which is
        // where a credit set aside is reported.
        if self.snapshots_withheld {
            tracing::error!(
                "snapshot withheld: a credit was set aside (see the error above); restart the engine to replay it"
            );
            return Ok(());
        }
        // Changes before the snapshot's position are never replayed: their
        // pushes must be out before it is taken.
        let (done, pushed) = tokio::sync::oneshot::channel();
        if self.pushes.send(PushCmd::Flush(done)).await.is_ok()
            && tokio::time::timeout(HELD_BACK_TIMEOUT, pushed)
                .await
                .is_err()
        {
            tracing::warn!("position pushes are not out yet; snapshot postponed");
            return Ok(());
        }
        // Likewise the rejections decided before it: stored, or postponed.
        if !self.rejections.flush(HELD_BACK_TIMEOUT).await {
            tracing::warn!("rejections are not stored yet; snapshot postponed");
            return Ok(());
        }
        if let Some(outbox) = &self.outbox {
            if !outbox.flush(HELD_BACK_TIMEOUT).await {
                tracing::warn!(
                    "credits for other nodes are not journaled yet; snapshot postponed \
                     (a snapshot must not hold credits that a restart would not send again)"
                );
                return Ok(());
            }
        }
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
                node: self.ownership.node,
                nodes: self.ownership.nodes,
            },
            router,
            ledgers,
        };
        snapshotter.store(snapshot, self.stream.clone(), wait).await
    }

    /// Runs until `shutdown` turns true (or its sender is gone), then
    /// drains what is in flight.
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
            .map_or(Duration::from_secs(3600), |s| s.every);
        let mut snapshot_tick =
            tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            if *shutdown.borrow() {
                break;
            }
            let oldest = self.flights.front_mut().map(|f| &mut f.replies);
            tokio::select! {
                biased;
                changed = shutdown.changed() => {
                    // A dropped sender means nobody can ask any more: stop,
                    // rather than wake up on the closed channel forever.
                    if changed.is_err() {
                        break;
                    }
                }
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
        for (partition, late) in self.router.advance(at.broker_time) {
            if self.ownership.owns(partition) {
                self.publish_late(late).await;
            }
        }
        match entry {
            Entry::Auth {
                at,
                subject,
                payload,
                decoded,
            } => self.on_authorization(at, &subject, &payload, decoded).await,
            Entry::Journal { at, token, command } => {
                self.on_journal(at, token, command);
                Ok(())
            }
            Entry::Admin { at, reply, entry } => {
                self.on_admin(at, reply, entry).await;
                Ok(())
            }
            Entry::Credits { at, credits } => {
                self.on_credits(at, credits);
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
                let partition = partition::of_message(at.seq, self.router.partitions());
                if self.ownership.owns(partition) {
                    self.rejections
                        .publish(at.seq, subject, payload, &rejection)
                        .await;
                }
                return Ok(());
            }
        };
        // For a message kept beyond the batch (a reversal may wait for
        // weeks) a copy, not a clone: the received bytes may share one large
        // read buffer with other messages, which it would pin in memory.
        let origin = |kept: bool| Origin {
            subject: subject.into(),
            payload: if kept {
                Bytes::copy_from_slice(payload)
            } else {
                payload.clone()
            },
        };
        match self.router.route(at, &auth, origin) {
            Routed::Reject {
                partition,
                rejection,
            } => {
                if self.ownership.owns(partition) {
                    self.rejections
                        .publish(at.seq, subject, payload, &rejection)
                        .await;
                }
            }
            Routed::Forward(partition, item) => {
                if self.ownership.owns(partition) {
                    self.pending_times.push(at.broker_time);
                    self.push(partition, item);
                }
            }
            Routed::ParkedHere => {
                if self.ownership.owns(self.router.card_partition(&auth.hpan)) {
                    self.progress.reversals_parked.fetch_add(1, Relaxed);
                    metrics::counter!("cashback_reversals_parked_total").increment(1);
                }
            }
        }
        Ok(())
    }

    fn on_journal(
        &mut self,
        at: Position,
        token: Option<String>,
        command: Result<EnrollCommand, EnrollError>,
    ) {
        let outcome = match command {
            Ok(cmd) => match retrying("an enrollment", || self.router.enroll(at, &cmd)) {
                Ok((outcome, items)) => {
                    for (partition, item) in items {
                        if self.ownership.owns(partition) {
                            self.push(partition, item);
                        }
                    }
                    self.progress.enrollments.fetch_add(1, Relaxed);
                    self.progress
                        .citizens
                        .store(self.router.directory().citizen_count() as u64, Relaxed);
                    outcome
                }
                Err(why) => {
                    // Deterministic (a replay fails alike), so skipping it
                    // keeps every node and replay in agreement.
                    tracing::error!(seq = at.seq, %why, "an enrollment failed repeatedly and was set aside");
                    Err(EnrollError::new(
                        cashback_engine::refusal::ErrorCode::Unavailable,
                        "the engine failed on this request; it was set aside",
                    ))
                }
            },
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

    /// An operator's exclusion or reinstatement: the payment's partition
    /// decides it; the node owning that partition answers.
    async fn on_admin(
        &mut self,
        at: Position,
        reply: Option<String>,
        entry: Result<JournalEntry, EnrollError>,
    ) {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(
                    code = e.code.as_str(),
                    "unreadable admin journal entry skipped"
                );
                return;
            }
        };
        match self.router.exclusion(at, entry.op, &entry.command) {
            Ok((partition, item)) => {
                if self.ownership.owns(partition) {
                    if let Some(reply) = reply {
                        self.admin_replies.insert(at.seq, reply);
                    }
                    self.push(partition, item);
                }
            }
            Err(partition) => {
                if self.ownership.owns(partition) {
                    self.answer_operator(
                        at.seq,
                        entry.op,
                        Err(cashback_engine::refusal::ErrorCode::UnknownPayment),
                        reply,
                    )
                    .await;
                }
            }
        }
    }

    /// Sends an operator the outcome of their request, and counts it.
    async fn answer_operator(
        &self,
        seq: u64,
        op: ExclusionOp,
        outcome: ExclusionOutcome,
        reply: Option<String>,
    ) {
        let op_name = match op {
            ExclusionOp::Exclude => "exclude",
            ExclusionOp::Reinstate => "reinstate",
        };
        let label = match outcome {
            Ok(true) => "applied",
            Ok(false) => "unchanged",
            Err(code) => code.as_str(),
        };
        metrics::counter!("cashback_exclusions_total", "op" => op_name, "outcome" => label)
            .increment(1);
        let Some(reply) = reply else { return };
        let body = crate::services::admin::outcome_reply(outcome);
        if let Err(e) = self.client.publish(reply, body).await {
            tracing::warn!(seq, error = %e, "cannot answer an operator's request");
        }
    }

    /// Credits journaled by another node: each to its citizen's partition,
    /// when this node owns it.
    fn on_credits(&mut self, at: Position, credits: Result<Vec<Credit>, String>) {
        let credits = match credits {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(seq = at.seq, error = %e, "unreadable credit journal entry skipped");
                return;
            }
        };
        for (partition, item) in self.router.deliver(&credits) {
            if self.ownership.owns(partition) {
                self.push(partition, item);
            }
        }
    }

    fn push(&mut self, partition: u16, item: Item) {
        let shard = self.ownership.shard_of(partition, self.shards.len());
        self.pending[shard].push((partition, item));
        self.pending_items += 1;
    }

    /// Sends every pending batch to its shard as one flight; every shard
    /// gets the engine's clock, so that parked reversals expire on time
    /// whatever partition the traffic is for.
    fn flush(&mut self) {
        if self.pending_items == 0
            && self.pending_enrollments.is_empty()
            && self.last_seq <= self.flushed_seq
        {
            return;
        }
        self.flushed_seq = self.last_seq;
        let now = Some(self.router.now());
        let mut batches = Vec::new();
        let requests = self
            .pending
            .iter_mut()
            .enumerate()
            .map(|(i, items)| {
                let items = std::mem::replace(items, Vec::with_capacity(items.len()));
                if !items.is_empty() {
                    batches.push((i, items.len()));
                }
                self.shards[i].send(ShardBatch { items, now })
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
        let mut remote = Vec::new();
        for report in reports {
            let mut report = report.map_err(mailbox_failure)?;
            self.progress.accrue(&report.cashback);
            standings.append(&mut report.standings);
            for (partition, item) in self.router.deliver(&report.credits) {
                if self.ownership.owns(partition) {
                    self.push(partition, item);
                } else if let Item::Credit(c) = item {
                    remote.push(c);
                }
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
            metrics::counter!("cashback_credits_repeated_total").increment(report.credits_repeated);
            self.snapshots_withheld |= report.credits_set_aside > 0;
            for what in &report.invariant_violations {
                tracing::error!(%what, "BROKEN INVARIANT (survived; please report)");
                metrics::counter!("cashback_invariant_violations_total").increment(1);
            }
            for late in report.rejections {
                self.publish_late(late).await;
            }
            for (seq, op, outcome) in report.exclusions {
                let reply = self.admin_replies.remove(&seq);
                self.answer_operator(seq, op, outcome, reply).await;
            }
        }
        if !remote.is_empty() {
            match self.outbox.as_mut() {
                Some(outbox) => outbox.send(remote),
                None => {
                    tracing::error!(
                        credits = remote.len(),
                        "BROKEN INVARIANT: credits for partitions no node of this configuration owns"
                    );
                    metrics::counter!("cashback_invariant_violations_total").increment(1);
                }
            }
        }
        if !standings.is_empty() {
            self.ranking
                .send(ApplyStandings(standings.clone()))
                .await
                .map_err(mailbox_failure)?;
            // The pusher coalesces, so it keeps up; if it ever lags, waiting
            // here is the backpressure.
            let _ = self.pushes.send(PushCmd::Changes(standings)).await;
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

    /// Publishes a rejection decided after routing. Without an origin (an
    /// item set aside after repeated panics) the original message is read
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
