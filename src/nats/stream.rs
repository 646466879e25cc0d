//! The JetStream stream that is the engine's log: authorizations and the
//! enrollment journal, in one total order.

use crate::config::Config;
use crate::nats::subjects::Subjects;
use anyhow::{Context, Result};
use async_nats::jetstream::{self, stream};
use std::time::Duration;

/// Creates the stream, or adopts an existing one (adding our subjects to it if
/// they are missing). Idempotent: every `serve` calls it before answering
/// anything.
pub async fn ensure_stream(
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
