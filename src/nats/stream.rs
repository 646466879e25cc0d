//! The JetStream stream that is the engine's log: authorizations and the
//! enrollment journal, in one total order.

use crate::config::Config;
use crate::nats::retry::retry;
use crate::nats::subjects::Subjects;
use anyhow::{Context, Result};
use async_nats::jetstream::{self, stream};
use std::time::Duration;

/// Creates the stream, or adopts an existing one (adding our subjects to it if
/// they are missing). Idempotent: every `serve` calls it before answering
/// anything. Retried through a cluster's leader elections.
pub async fn ensure_stream(
    js: &jetstream::Context,
    config: &Config,
    subjects: &Subjects,
) -> Result<stream::Stream> {
    let step = format!("create or open stream {}", config.stream_name);
    retry(&step, || ensure_stream_once(js, config, subjects)).await
}

async fn ensure_stream_once(
    js: &jetstream::Context,
    config: &Config,
    subjects: &Subjects,
) -> Result<stream::Stream> {
    let wanted = vec![subjects.auth_filter(), subjects.journal_filter()];
    let desired = stream::Config {
        name: config.stream_name.clone(),
        subjects: wanted.clone(),
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::Old,
        max_age: Duration::from_secs(config.stream_max_age_days as u64 * 86_400),
        duplicate_window: Duration::from_secs(config.duplicate_window_secs),
        num_replicas: config.stream_replicas,
        ..Default::default()
    };
    let mut stream = js
        .get_or_create_stream(desired)
        .await
        .with_context(|| format!("cannot create or open stream {}", config.stream_name))?;
    let info = stream
        .info()
        .await
        .context("cannot read stream info")?
        .clone();
    warn_on_other_replicas(
        &config.stream_name,
        info.config.num_replicas,
        config.stream_replicas,
    );
    let missing: Vec<String> = wanted
        .into_iter()
        .filter(|s| !info.config.subjects.contains(s))
        .collect();
    if !missing.is_empty() {
        let mut updated = info.config.clone();
        updated.subjects.extend(missing);
        js.update_stream(updated)
            .await
            .context("cannot add the engine's subjects to the existing stream")?;
        stream = js.get_stream(&config.stream_name).await?;
    }
    Ok(stream)
}

/// Creates (or adopts) the stream that keeps the rejections
/// (`<stream>_REJECTED`, subjects `cashback.rejected.>`), so that each is
/// stored, acknowledged, before the engine counts it published (see
/// `rejections`), and an operator who was away can read the last
/// `rejected_max_age_days` of them. Retried through leader elections.
pub async fn ensure_rejected_stream(
    js: &jetstream::Context,
    config: &Config,
    subjects: &Subjects,
) -> Result<stream::Stream> {
    let name = format!("{}_REJECTED", config.stream_name);
    let step = format!("create or open stream {name}");
    retry(&step, || async {
        let stream = js
            .get_or_create_stream(stream::Config {
                name: name.clone(),
                subjects: vec![subjects.rejected_filter()],
                storage: stream::StorageType::File,
                retention: stream::RetentionPolicy::Limits,
                discard: stream::DiscardPolicy::Old,
                max_age: Duration::from_secs(config.rejected_max_age_days as u64 * 86_400),
                duplicate_window: Duration::from_secs(config.duplicate_window_secs),
                num_replicas: config.stream_replicas,
                ..Default::default()
            })
            .await
            .with_context(|| format!("cannot create or open stream {name}"))?;
        warn_on_other_replicas(
            &name,
            stream.cached_info().config.num_replicas,
            config.stream_replicas,
        );
        Ok(stream)
    })
    .await
}

/// An existing stream (the log, or the snapshots' bucket) is adopted with
/// the replicas it has: changing them is a cluster operation for the
/// operator (`nats stream edit`), not a side effect of starting an engine.
/// A difference from the configuration is worth a warning, though.
pub fn warn_on_other_replicas(stream: &str, has: usize, configured: usize) {
    // JetStream reports an unreplicated stream as 1 (or 0 from old servers).
    if has.max(1) != configured.max(1) {
        tracing::warn!(
            stream,
            replicas = has.max(1),
            stream_replicas = configured,
            "adopting an existing stream with another replica count than configured; \
             change it with the nats CLI if it should be {configured}"
        );
    }
}
