//! `cashback serve`: wires NATS, the shards, the pipeline and the services,
//! and shuts them down in order.

use crate::config::Config;
use crate::nats::embedded::NatsServer;
use crate::nats::events::ConnectionEvents;
use crate::nats::retry::retry;
use crate::nats::stream::ensure_stream;
use crate::nats::subjects::Subjects;
use crate::pipeline::{Pipeline, Wiring};
use crate::progress::Progress;
use crate::rejections::RejectionPublisher;
use crate::services::{AdminContext, EnrollmentContext, QueryContext, ServiceContext};
use crate::waiters::Waiters;
use actix::Actor;
use actix::{Arbiter, Supervisor};
use anyhow::{Context, Result};
use async_nats::jetstream;
use cashback_actors::ranking::RankingAggregator;
use cashback_actors::CitizenShard;
use cashback_engine::authorization::Decoder;
use cashback_engine::partition::Ownership;
use cashback_engine::router::Router;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Options of `serve` beyond the configuration file.
#[derive(Clone, Debug, Default)]
pub struct ServeOptions {
    /// Print a status line every second.
    pub status: bool,
    /// Also run the built-in demo traffic.
    pub demo: bool,
}

/// Runs the engine until SIGTERM or Ctrl-C.
pub fn run(config: Config, options: ServeOptions) -> Result<()> {
    // The System's own thread runs the ingest loop; two tokio workers run
    // the NATS client's socket and protocol work and the request handlers
    // beside it, and each shard has its own arbiter thread. Two, not one:
    // at the launch-day load (20,000 app requests/s) one worker was the
    // bottleneck (the engine stuck at 0.9 core, wallet p99 177 ms); with two,
    // p99 20-28 ms on the same 2-core machine (BENCHMARKS.md).
    let system = actix::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cashback-io")
            .enable_all()
            .build()
            .expect("tokio runtime")
    });
    let result = system.block_on(serve(config, options));
    actix::System::current().stop();
    result
}

async fn serve(config: Config, options: ServeOptions) -> Result<()> {
    let periods = Arc::new(config.periods()?);
    let progress = Arc::new(Progress::default());
    let handle = crate::metrics::install(cashback_engine::partition::Ownership {
        node: config.node,
        nodes: config.nodes,
    })?;
    let metrics_addr = crate::metrics::serve(
        &config.metrics_listen,
        handle,
        progress.clone(),
        config.health_max_lag,
    )
    .await?;
    tracing::info!(%metrics_addr, "serving /metrics and /health");

    // With no URL, run our own nats-server, stopped when `embedded` drops.
    let mut embedded = None;
    let url = if config.nats_url.is_empty() {
        let bin = NatsServer::locate(&config.nats_server_bin)?;
        let server = NatsServer::start(
            &bin,
            config.embedded_nats_port,
            &config.data_dir.join("nats"),
        )?;
        let url = server.url().to_owned();
        println!(
            "embedded nats-server {} at {url} (store {}; open on loopback only)",
            bin.display(),
            config.data_dir.join("nats").display()
        );
        embedded = Some(server);
        url
    } else {
        config.nats_url.clone()
    };

    let events = ConnectionEvents::new(progress.clone());
    // Credentials, inbox prefix and TLS from the configuration; `url` loses
    // any `user:password@`, so printing it below leaks nothing. It may list
    // several servers of a cluster.
    let (url, connect_options) = config
        .nats_client()
        .apply(&url, async_nats::ConnectOptions::new())?;
    let client = events
        .install(connect_options)
        .name("cashback-engine")
        .retry_on_initial_connect()
        .connect(crate::config::server_addrs(&url)?)
        .await
        .with_context(|| format!("cannot connect to NATS at {url}"))?;
    progress.connected.store(true, Relaxed);
    let js = jetstream::new(client.clone());
    let subjects = Subjects::new(&config.subject_prefix);
    let stream = ensure_stream(&js, &config, &subjects).await?;
    crate::nats::stream::ensure_rejected_stream(&js, &config, &subjects).await?;

    let mut arbiters = Vec::new();
    let ranking_arbiter = Arbiter::new();
    let ranking = {
        let periods = periods.clone();
        RankingAggregator::start_in_arbiter(&ranking_arbiter.handle(), move |_| {
            RankingAggregator::new(periods)
        })
    };
    arbiters.push(ranking_arbiter);
    let (push_tx, push_rx) = tokio::sync::mpsc::channel(64);

    // Start from the newest usable snapshot, if any.
    let settings = config.settings()?;
    let ownership = Ownership {
        node: config.node,
        nodes: config.nodes,
    };
    let fingerprint = settings.fingerprint();
    let snapshot_store = crate::snapshots::SnapshotStore::open(&js, &config).await?;
    let restored =
        crate::restore::load(&snapshot_store, &settings, ownership, config.shards).await?;
    refuse_a_gap(&stream, restored.seq).await?;
    let mut shard_ledgers = restored.shard_ledgers;
    let shards: Vec<_> = (0..config.shards)
        .map(|i| {
            let arbiter = Arbiter::new();
            let settings = settings.clone();
            let ledgers = std::mem::take(&mut shard_ledgers[i]);
            let addr = Supervisor::start_in_arbiter(&arbiter.handle(), move |_| {
                CitizenShard::restored(i, settings, ledgers)
            });
            arbiters.push(arbiter);
            addr
        })
        .collect();
    crate::restore::rebuild_ranking(&shards, &ranking, &progress).await?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopping = events.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested");
        stopping.stopping();
        let _ = stop_tx.send(true);
    });

    let waiters = Arc::new(Waiters::default());
    let decoder = Decoder {
        max_payload_bytes: config.max_authorization_bytes,
    };
    install_faults_for_tests()?;
    let router = restored.router.unwrap_or_else(|| {
        Router::new(
            config.partitions,
            settings.periods.clone(),
            settings.park_days,
            settings.limits,
        )
    });
    let mut pipeline = Pipeline::new(
        decoder,
        router,
        ownership,
        config.batch_size,
        Wiring {
            shards: shards.clone(),
            ranking: ranking.clone(),
            pushes: push_tx,
            subjects: subjects.clone(),
            client: client.clone(),
            stream: stream.clone(),
            rejections: RejectionPublisher::new(js.clone(), subjects.clone(), progress.clone()),
            waiters: waiters.clone(),
            progress: progress.clone(),
        },
    )
    .resume_after(restored.seq);
    if ownership.nodes > 1 {
        pipeline = pipeline.with_outbox(crate::credits::Outbox::start(
            js.clone(),
            subjects.clone(),
            ownership.node,
        ));
    }
    if config.snapshot_interval_secs > 0 {
        pipeline = pipeline.with_snapshots(crate::snapshots::Snapshotter {
            store: snapshot_store,
            every: Duration::from_secs(config.snapshot_interval_secs),
            fingerprint,
            purge: config.purge_after_snapshot,
            last_seq: restored.seq,
            upload: None,
        });
    }

    let query_ctx = QueryContext {
        shards: shards.clone(),
        ranking: ranking.clone(),
        partitions: config.partitions,
        ownership,
        periods: periods.clone(),
        progress: progress.clone(),
        peers: crate::cluster::Peers::new(
            client.clone(),
            subjects.clone(),
            ownership,
            ranking.clone(),
            shards.clone(),
            progress.clone(),
        ),
    };
    let services_ctx = ServiceContext {
        query: query_ctx.clone(),
        enrollment: EnrollmentContext {
            js: js.clone(),
            subjects: subjects.clone(),
            waiters,
        },
        admin: AdminContext {
            client: client.clone(),
            js: js.clone(),
            subjects: subjects.clone(),
        },
    };
    let mut services = tokio::task::JoinSet::new();
    if ownership.nodes > 1 {
        services.spawn(crate::cluster::node::serve(
            services_ctx.clone(),
            client.clone(),
            stop_rx.clone(),
        ));
    }
    for spec in crate::services::SERVICES {
        services.spawn(crate::services::serve(
            client.clone(),
            subjects.clone(),
            spec,
            services_ctx.clone(),
            stop_rx.clone(),
        ));
    }
    tokio::spawn(crate::push::run(
        client.clone(),
        subjects.clone(),
        query_ctx,
        push_rx,
        Duration::from_millis(config.push_interval_ms),
        Duration::from_millis(config.leaderboard_interval_ms),
        stop_rx.clone(),
    ));
    tokio::spawn(watch_lag(stream.clone(), progress.clone(), stop_rx.clone()));
    crate::metrics::start_collecting(
        progress.clone(),
        shards.clone(),
        ranking.clone(),
        periods.clone(),
        stop_rx.clone(),
    )
    .await;
    if options.status {
        tokio::spawn(crate::status::run(progress.clone(), stop_rx.clone()));
    }
    if options.demo {
        let (url, periods, prefix) = (url.clone(), periods.clone(), config.subject_prefix.clone());
        let stream_name = config.stream_name.clone();
        let stop = stop_rx.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::demo::run(&url, &prefix, &stream_name, &periods, stop).await {
                tracing::error!(error = %e, "demo traffic stopped");
            }
        });
    }
    println!("cashback engine serving on {url} (stream {}, {} shards, metrics http://{metrics_addr}/metrics)",
        config.stream_name, config.shards);

    let outcome = pipeline.run(stop_rx).await;
    // Bounded, like the final snapshot: with the broker gone, the services'
    // subscriptions and the flush would wait for it forever.
    let services_done = async {
        while let Some(done) = services.join_next().await {
            if let Ok(Err(e)) = done {
                tracing::warn!(error = %e, "service ended with an error");
            }
        }
        let _ = client.flush().await;
    };
    if tokio::time::timeout(Duration::from_secs(10), services_done)
        .await
        .is_err()
    {
        tracing::warn!("request-reply services did not stop within 10 s (is NATS reachable?)");
    }
    // Closed before an embedded nats-server stops: a client that finds its
    // server gone tries to reconnect and reports every failure.
    if !events.close(&client, Duration::from_secs(5)).await {
        tracing::info!("the NATS connection did not close within 5 s");
    }
    for arbiter in arbiters {
        arbiter.stop();
    }
    drop(embedded);
    outcome
}

/// Installs the fault plan of `CASHBACK_FAULTS` (tests only; see
/// `cashback_engine::fault`): e.g. `payment@57` makes deciding the message of
/// sequence 57 panic once, `payment@57x*` every time.
fn install_faults_for_tests() -> Result<()> {
    let Ok(plan) = std::env::var("CASHBACK_FAULTS") else {
        return Ok(());
    };
    let faults = cashback_engine::fault::parse(&plan).map_err(|e| anyhow::anyhow!(e))?;
    tracing::warn!(%plan, "fault injection is ON (CASHBACK_FAULTS): test use only");
    cashback_engine::fault::install(faults);
    Ok(())
}

/// Keeps `stream_last_seq` (hence lag) current.
async fn watch_lag(
    mut stream: async_nats::jetstream::stream::Stream,
    progress: Arc<Progress>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
        }
        if let Ok(info) = stream.info().await {
            progress
                .stream_last_seq
                .fetch_max(info.state.last_sequence, Relaxed);
            metrics::gauge!("cashback_stream_lag_messages").set(progress.lag() as f64);
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Refuses to start from a state that does not reach the stream's first
/// message: the messages in between were purged (after a snapshot this
/// engine can no longer read: another snapshot format or configuration), so
/// replaying what is left would silently lose their effects. Better no
/// engine than a wrong one; the operator restores a usable snapshot or the
/// configuration it was taken under.
async fn refuse_a_gap(stream: &jetstream::stream::Stream, state_seq: u64) -> Result<()> {
    let first = retry("read the stream's state", || async {
        Ok(stream.get_info().await?)
    })
    .await?
    .state
    .first_sequence;
    if first > state_seq + 1 {
        anyhow::bail!(
            "the stream starts at sequence {first}, but the state this engine can load ends at {state_seq} \
             ({}): messages {}..={} were purged and would be lost. Start the build and configuration that \
             wrote the newest snapshot (see the warnings above for why it was not used), or restore a snapshot. \
             A node of a cluster of another size has no snapshot of its own: changing the number of nodes needs \
             the whole log (README, \"Running a cluster\", changing N)",
            if state_seq == 0 { "no usable snapshot" } else { "the newest usable snapshot" },
            state_seq + 1,
            first - 1
        );
    }
    Ok(())
}
