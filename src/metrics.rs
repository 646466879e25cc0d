//! Prometheus metrics at `/metrics` and a health check at `/health`
//! (PROTOCOL.md section 6), on one small HTTP listener.
//!
//! The exporter is built without its own HTTP listener (which would bring a
//! TLS stack and panics on a taken port); this listener reports a taken port
//! as an ordinary error at start. Histograms get explicit buckets (otherwise
//! the exporter renders summaries) and the upkeep task runs (otherwise
//! histogram memory grows).
//!
//! Where each series comes from:
//! - emitted where it happens: authorizations and rejections (pipeline,
//!   `Progress::reject`), apply latency and per-shard batches (pipeline),
//!   operators' exclusions as decided (pipeline), enrollment, query and
//!   operator requests (services), pushes (`push`);
//! - refreshed at every scrape from [`Progress`]: lag, positions, health;
//! - polled every second by [`start_collecting`] from the actors: ranked participants
//!   and cut-off per period (the ranking aggregator), shard sizes and
//!   restarts (the shards), and cashback accrued per period (`Progress`,
//!   seeded from the standings when a snapshot is restored);
//! - snapshots: written by `snapshots` and `restore`.
//!
//! Every series a dashboard queries exists from the first scrape after the
//! engine reports ready: those not yet emitted are registered at zero (at
//! install, or by the first round of [`start_collecting`] for the per-shard
//! and per-period ones), so that no panel says "No data" on a fresh engine.
//!
//! No label carries an IBAN, an hpan or a citizen id: the labels are
//! `outcome`, `reason`, `subject`, `query`, `op`, `kind`, `shard`
//! (0..shards-1), `period` (a configured award period id) and `version`.

use crate::progress::Progress;
use actix::Addr;
use anyhow::{Context, Result};
use cashback_actors::ranking::{PageOf, RankingAggregator};
use cashback_actors::{CitizenShard, ShardStats};
use cashback_engine::period::Periods;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use rust_decimal::prelude::ToPrimitive;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Latency buckets, seconds: 100 µs to 30 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// Snapshot write buckets, seconds: 10 ms to 10 min (a large state takes a while).
const SNAPSHOT_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// The `op` label values of the operators' series: the last token of the
/// `cashback.admin.*` subjects.
const ADMIN_OPS: [&str; 2] = ["exclude", "reinstate"];

/// The `outcome` label values of `cashback_exclusions_total` that every
/// decision can take (the pipeline's `answer_operator`): registered at zero
/// so that an operator's panel shows them before the first request.
const EXCLUSION_OUTCOMES: [&str; 4] = ["applied", "unchanged", "unknown_payment", "period_closed"];

/// How often [`start_collecting`] polls the actors.
const COLLECT_EVERY: Duration = Duration::from_secs(1);

/// How long [`start_collecting`] waits for one actor's answer before skipping it.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// The process-wide recorder handle (a process has one global recorder).
static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the recorder once and returns its handle. In a cluster every
/// series carries the node's index (`node`), so that dashboards and alerts
/// tell nodes apart whatever the scrape labels; a single process has none.
pub fn install(ownership: cashback_engine::partition::Ownership) -> Result<PrometheusHandle> {
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let mut builder = PrometheusBuilder::new();
    if ownership.nodes > 1 {
        builder = builder.add_global_label("node", ownership.node.to_string());
    }
    let recorder = builder
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
        .context("histogram buckets")?
        .set_buckets_for_metric(
            Matcher::Full("cashback_snapshot_duration_seconds".into()),
            SNAPSHOT_BUCKETS,
        )
        .context("histogram buckets")?
        .set_buckets_for_metric(
            Matcher::Full("cashback_snapshot_pause_seconds".into()),
            SNAPSHOT_BUCKETS,
        )
        .context("histogram buckets")?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).context("a metrics recorder is already installed")?;
    let _ = HANDLE.set(handle.clone());
    describe();
    Ok(handle)
}

/// Help texts, and zeros for every labelled series an operator expects.
fn describe() {
    use cashback_engine::reason::Reason;
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "cashback_authorizations_read_total",
        "Authorizations read from the log (each message once)"
    );
    describe_counter!(
        "cashback_authorizations_total",
        "Authorizations by final outcome, each once: counted, reversal_applied, rejected (a parked reversal is counted when it is applied or expires)"
    );
    describe_counter!(
        "cashback_reversals_parked_total",
        "Reversals that matched no payment on arrival and were parked to wait for it"
    );
    describe_counter!(
        "cashback_rejections_total",
        "Authorizations rejected (published on cashback.rejected.<reason>), by reason"
    );
    describe_histogram!(
        "cashback_apply_latency_seconds",
        Unit::Seconds,
        "From an authorization's JetStream receive time to its batch applied by the shards (during a replay: the age of the replayed messages)"
    );
    describe_gauge!(
        "cashback_stream_lag_messages",
        "Messages in the stream (authorizations and enrollment journal) not yet applied"
    );
    describe_gauge!(
        "cashback_stream_last_sequence",
        "Last sequence in the JetStream stream, as last seen"
    );
    describe_gauge!(
        "cashback_applied_sequence",
        "Highest stream sequence whose effects are applied"
    );
    describe_gauge!(
        "cashback_nats_connected",
        "1 while the engine's NATS connection is up"
    );
    describe_gauge!(
        "cashback_log_replayed",
        "1 once the log found at start has been replayed"
    );
    describe_gauge!(
        "cashback_healthy",
        "1 when /health answers 200 (connected, replayed, lag within health_max_lag)"
    );
    describe_gauge!(
        "cashback_enrolled_citizens",
        "Citizens in the directory (withdrawn ones included)"
    );
    describe_gauge!(
        "cashback_shard_batches_in_flight",
        "Batches sent to a citizen shard and not yet answered (its mailbox's work; at most 4)"
    );
    describe_counter!(
        "cashback_shard_items_applied_total",
        "Work items a citizen shard applied: payments, reversals, credits, citizen updates, ticks"
    );
    describe_gauge!(
        "cashback_shard_citizens",
        "Citizens held by a citizen shard"
    );
    describe_gauge!(
        "cashback_shard_parked_reversals",
        "Reversals waiting for their payment in a citizen shard"
    );
    describe_counter!(
        "cashback_shard_restarts_total",
        "Restarts of a citizen shard by its supervisor after a panic"
    );
    describe_counter!(
        "cashback_shard_items_set_aside_total",
        "Items a citizen shard set aside as internal_error after repeated panics"
    );
    describe_counter!(
        "cashback_enrollment_requests_total",
        "Enrollment requests by subject (citizen, card, card_remove, citizen_remove) and outcome (ok or the error code)"
    );
    describe_histogram!(
        "cashback_enrollment_latency_seconds",
        Unit::Seconds,
        "Enrollment request to reply (journaled and applied), by subject"
    );
    describe_histogram!(
        "cashback_query_latency_seconds",
        Unit::Seconds,
        "Query request to reply, by query (citizen, leaderboard, awards)"
    );
    describe_counter!(
        "cashback_exclusions_total",
        "Operators' exclusions and reinstatements decided in log order, by op (exclude, reinstate) and outcome: applied, unchanged (already so), or the error code (unknown_payment, period_closed; unavailable when the engine set the request aside)"
    );
    describe_counter!(
        "cashback_pushes_total",
        "Live pushes published, by kind (position, leaderboard)"
    );
    describe_gauge!(
        "cashback_ranked_participants",
        "Citizens ranked in an award period (at least one payment counting, not withdrawn)"
    );
    describe_gauge!(
        "cashback_ranking_cutoff_transactions",
        "Transaction count at position supercashback_winners of an award period (or at the last position when fewer are ranked): the Supercashback cut-off"
    );
    describe_gauge!(
        "cashback_ranking_top_transactions",
        "Transaction count at position 1 of an award period"
    );
    describe_gauge!(
        "cashback_supercashback_winners",
        "Configured supercashback_winners of an award period"
    );
    describe_gauge!(
        "cashback_accrued_euros",
        "Cashback accrued in an award period: sum over citizens (withdrawn ones included) of the payments' scores after reversals, before the per-citizen max_cashback and min_transactions"
    );
    describe_histogram!(
        "cashback_snapshot_duration_seconds",
        Unit::Seconds,
        "Time to write one snapshot to the JetStream object store (serialize and upload), after the shards encoded their ledgers"
    );
    describe_histogram!(
        "cashback_snapshot_pause_seconds",
        Unit::Seconds,
        "Time intake stands still for one snapshot: settling what is in flight and the shards and router encoding their state"
    );
    describe_gauge!(
        "cashback_snapshot_bytes",
        "Size of the newest snapshot (written or restored); 0 before there is one"
    );
    describe_gauge!(
        "cashback_snapshot_last_seq",
        "Stream sequence the newest snapshot (written or restored) holds everything up to; 0 before there is one"
    );
    describe_gauge!(
        "cashback_snapshot_timestamp_seconds",
        "Unix time the newest snapshot (written or restored) was taken; before there is one, the time the engine started (a restart would rebuild everything since)"
    );
    describe_gauge!(
        "cashback_restore_seconds",
        Unit::Seconds,
        "Start-up from a snapshot, from opening it: phase=download (last byte in), decode (router and ledgers decoded, overlapping the download), ranking (rebuild after the decode)"
    );
    describe_gauge!(
        "cashback_build_info",
        "Always 1; the version label is the engine's version"
    );
    describe_counter!(
        "cashback_invariant_violations_total",
        "Broken invariants the engine met and survived (a count below zero, a stray credit); never expected: each is logged as an error"
    );
    describe_counter!(
        "cashback_credits_sent_total",
        "Credits this cluster node decided for citizens of other nodes' partitions, journaled in the log"
    );
    describe_counter!(
        "cashback_credits_repeated_total",
        "Credits received again (a re-send after a crash, a replica's copy) and ignored: each is taken once"
    );
    describe_counter!(
        "cashback_pushes_owed_paid_total",
        "Position pushes owed after a replay (citizens whose state the replay changed), sent once it was done"
    );
    describe_gauge!(
        "cashback_resident_memory_bytes",
        Unit::Bytes,
        "Resident memory of the engine process (per node in a cluster)"
    );
    describe_histogram!(
        "cashback_admin_latency_seconds",
        Unit::Seconds,
        "Time to answer an operator's exclusion or reinstatement, journal and decision included"
    );
    for name in [
        "cashback_invariant_violations_total",
        "cashback_credits_sent_total",
        "cashback_credits_repeated_total",
        "cashback_pushes_owed_paid_total",
    ] {
        metrics::counter!(name).absolute(0);
    }
    for r in Reason::ALL {
        metrics::counter!("cashback_rejections_total", "reason" => r.as_str()).absolute(0);
    }
    for outcome in ["counted", "reversal_applied", "rejected"] {
        metrics::counter!("cashback_authorizations_total", "outcome" => outcome).absolute(0);
    }
    metrics::counter!("cashback_authorizations_read_total").absolute(0);
    metrics::counter!("cashback_reversals_parked_total").absolute(0);
    for kind in ["position", "leaderboard"] {
        metrics::counter!("cashback_pushes_total", "kind" => kind).absolute(0);
    }
    // Every series a dashboard queries exists from the first scrape, or its
    // panel says "No data" until the first event. A histogram registered
    // without observations renders its buckets, count and sum at zero.
    let _ = metrics::histogram!("cashback_apply_latency_seconds");
    for (_, subject) in cashback_engine::enrollment::EnrollKind::ALL {
        metrics::counter!("cashback_enrollment_requests_total",
            "subject" => subject, "outcome" => "ok")
        .absolute(0);
        let _ = metrics::histogram!("cashback_enrollment_latency_seconds", "subject" => subject);
    }
    for query in crate::services::endpoints::QUERY.endpoints {
        let _ = metrics::histogram!("cashback_query_latency_seconds", "query" => query.token());
    }
    for op in ADMIN_OPS {
        for outcome in EXCLUSION_OUTCOMES {
            metrics::counter!("cashback_exclusions_total", "op" => op, "outcome" => outcome)
                .absolute(0);
        }
        let _ = metrics::histogram!("cashback_admin_latency_seconds", "op" => op);
    }
    let _ = metrics::histogram!("cashback_snapshot_duration_seconds");
    let _ = metrics::histogram!("cashback_snapshot_pause_seconds");
    // No snapshot written yet; a restored one sets these to its own.
    metrics::gauge!("cashback_snapshot_bytes").set(0.0);
    metrics::gauge!("cashback_snapshot_last_seq").set(0.0);
    // Until a snapshot is restored or written, the state a restart would
    // rebuild is everything since this start: the age is the uptime.
    metrics::gauge!("cashback_snapshot_timestamp_seconds").set(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64()),
    );
    metrics::gauge!("cashback_stream_lag_messages").set(0.0);
    metrics::gauge!("cashback_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

/// Per-shard bookkeeping when a flush sends `batches` ((shard, items) pairs).
pub fn batches_sent(batches: &[(usize, usize)]) {
    for (shard, _) in batches {
        metrics::gauge!("cashback_shard_batches_in_flight", "shard" => shard.to_string())
            .increment(1.0);
    }
}

/// Per-shard bookkeeping when the shards answered the `batches` of a flush.
pub fn batches_applied(batches: &[(usize, usize)]) {
    for (shard, items) in batches {
        let label = shard.to_string();
        metrics::gauge!("cashback_shard_batches_in_flight", "shard" => label.clone())
            .decrement(1.0);
        metrics::counter!("cashback_shard_items_applied_total", "shard" => label)
            .increment(*items as u64);
    }
}

/// Binds `listen` now (so a taken port is a clear error at start) and serves
/// `/metrics` and `/health` in the background.
pub async fn serve(
    listen: &str,
    handle: PrometheusHandle,
    progress: Arc<Progress>,
    max_lag: u64,
) -> Result<std::net::SocketAddr> {
    let listener = TcpListener::bind(listen).await.with_context(|| {
        format!("cannot listen on {listen} for /metrics (port taken? set metrics_listen or CASHBACK_METRICS_LISTEN)")
    })?;
    let addr = listener.local_addr()?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    tokio::spawn(async move {
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                continue;
            };
            let (handle, progress) = (handle.clone(), progress.clone());
            tokio::spawn(async move {
                let _ = respond(conn, &handle, &progress, max_lag).await;
            });
        }
    });
    Ok(addr)
}

/// Whether the engine is connected, has replayed the log, and keeps up.
pub fn healthy(progress: &Progress, max_lag: u64) -> bool {
    progress.connected.load(Relaxed) && progress.replayed.load(Relaxed) && progress.lag() <= max_lag
}

/// Sets the gauges that mirror [`Progress`], so a scrape sees them current.
fn refresh(progress: &Progress, max_lag: u64) {
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    metrics::gauge!("cashback_stream_lag_messages").set(progress.lag() as f64);
    metrics::gauge!("cashback_stream_last_sequence")
        .set(progress.stream_last_seq.load(Relaxed) as f64);
    metrics::gauge!("cashback_applied_sequence").set(progress.applied_seq.load(Relaxed) as f64);
    metrics::gauge!("cashback_nats_connected").set(flag(progress.connected.load(Relaxed)));
    metrics::gauge!("cashback_log_replayed").set(flag(progress.replayed.load(Relaxed)));
    metrics::gauge!("cashback_healthy").set(flag(healthy(progress, max_lag)));
    metrics::gauge!("cashback_enrolled_citizens").set(progress.citizens.load(Relaxed) as f64);
    // From the pipeline's own counter at each scrape: no registry lookup
    // per message on the hot path.
    metrics::counter!("cashback_authorizations_read_total")
        .absolute(progress.authorizations.load(Relaxed));
    metrics::gauge!("cashback_resident_memory_bytes").set(resident_bytes() as f64);
}

/// The process's resident memory, from /proc (0 where there is none): what
/// sizes a node (README, "Running a cluster").
pub fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// Polls the actors for the series only they know (the ranking per period,
/// each shard's size and restarts) and publishes the cashback accrued per
/// period: once now, so that the engine is not reported ready before every
/// series the dashboards query exists, then every second in the returned
/// task until `shutdown`.
pub async fn start_collecting(
    progress: Arc<Progress>,
    shards: Vec<Addr<CitizenShard>>,
    ranking: Addr<RankingAggregator>,
    periods: Arc<Periods>,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    for p in periods.all() {
        metrics::gauge!("cashback_supercashback_winners", "period" => p.id.clone())
            .set(p.supercashback_winners as f64);
    }
    // The pipeline's per-shard series, which it emits only when it sends a
    // batch: adding zero registers them without touching a value the
    // pipeline may already have set.
    for i in 0..shards.len() {
        let label = i.to_string();
        metrics::counter!("cashback_shard_items_applied_total", "shard" => label.clone())
            .increment(0);
        metrics::gauge!("cashback_shard_batches_in_flight", "shard" => label).increment(0.0);
    }
    poll(&progress, &shards, &ranking, &periods).await;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(COLLECT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate: that round was just polled.
        tick.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => {}
            }
            poll(&progress, &shards, &ranking, &periods).await;
        }
    })
}

/// One round of [`start_collecting`].
async fn poll(
    progress: &Progress,
    shards: &[Addr<CitizenShard>],
    ranking: &Addr<RankingAggregator>,
    periods: &Periods,
) {
    let accrued = progress.accrued();
    for (idx, p) in periods.all().iter().enumerate() {
        let euros = accrued.get(idx).copied().unwrap_or_default();
        metrics::gauge!("cashback_accrued_euros", "period" => p.id.clone())
            .set(euros.to_f64().unwrap_or(0.0));
        // One request at a time, with no entries: the totals only.
        let ask = ranking.send(PageOf {
            period: idx as u16,
            offset: 0,
            limit: 0,
        });
        let Ok(Ok(page)) = tokio::time::timeout(ASK_TIMEOUT, ask).await else {
            continue;
        };
        let label = p.id.clone();
        metrics::gauge!("cashback_ranked_participants", "period" => label.clone())
            .set(page.total_participants as f64);
        metrics::gauge!("cashback_ranking_cutoff_transactions", "period" => label.clone())
            .set(page.min_transaction_number as f64);
        metrics::gauge!("cashback_ranking_top_transactions", "period" => label)
            .set(page.max_transaction_number as f64);
    }
    // One request at a time: a shard's mailbox is sized for the pipeline's
    // batches and the queries; this adds at most one message to it.
    for (i, shard) in shards.iter().enumerate() {
        let Ok(Ok(stats)) = tokio::time::timeout(ASK_TIMEOUT, shard.send(ShardStats)).await else {
            continue;
        };
        let label = i.to_string();
        metrics::gauge!("cashback_shard_citizens", "shard" => label.clone())
            .set(stats.citizens as f64);
        metrics::gauge!("cashback_shard_parked_reversals", "shard" => label.clone())
            .set(stats.parked as f64);
        metrics::counter!("cashback_shard_restarts_total", "shard" => label.clone())
            .absolute(stats.restarts);
        metrics::counter!("cashback_shard_items_set_aside_total", "shard" => label)
            .absolute(stats.set_aside);
    }
}

async fn respond(
    mut conn: TcpStream,
    handle: &PrometheusHandle,
    progress: &Progress,
    max_lag: u64,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    // Read the request head; bodies are not expected.
    while len < buf.len() {
        let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf[len..]))
            .await
            .map_err(|_| std::io::ErrorKind::TimedOut)??;
        if n == 0 {
            break;
        }
        len += n;
        if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let head = String::from_utf8_lossy(&buf[..len]);
    let path = head.split_whitespace().nth(1).unwrap_or("/");
    let (status, ctype, body) = match path.split('?').next().unwrap_or("/") {
        "/metrics" => {
            refresh(progress, max_lag);
            (
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                handle.render(),
            )
        }
        "/health" => {
            let body = format!(
                "{{\"connected\":{},\"replayed\":{},\"lag\":{},\"applied_seq\":{}}}\n",
                progress.connected.load(Relaxed),
                progress.replayed.load(Relaxed),
                progress.lag(),
                progress.applied_seq.load(Relaxed)
            );
            if healthy(progress, max_lag) {
                ("200 OK", "application/json", body)
            } else {
                ("503 Service Unavailable", "application/json", body)
            }
        }
        _ => (
            "404 Not Found",
            "text/plain",
            "see /metrics and /health\n".into(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(response.as_bytes()).await?;
    conn.shutdown().await
}
