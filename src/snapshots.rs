//! Where snapshots live: a JetStream Object Store bucket next to the stream.
//!
//! Why there and not on local disk: the snapshot then has the same
//! durability and replication as the log it summarizes (a JetStream cluster
//! replicates both), and a replacement engine on another node finds it
//! without copying files. Objects are named
//! `snapshot-<node>of<nodes>-<seq>`: each node of a cluster keeps its own
//! (replicas of a node may share them: they hold the same state), the
//! newest `KEEP` each. The stream is purged only up to what every node's
//! oldest kept snapshot holds, so that no node is left unable to replay.

use crate::config::Config;
use crate::nats::retry::retry;
use crate::nats::stream::warn_on_other_replicas;
use anyhow::{Context, Result};
use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::{self, object_store, ErrorCode};
use bytes::Bytes;
use cashback_engine::partition::Ownership;
use cashback_engine::snapshot::Snapshot;
use futures::StreamExt;

/// Snapshots kept: the newest, and one before it in case the newest is
/// unreadable.
pub const KEEP: usize = 2;

/// The snapshot bucket, as one node sees it.
#[derive(Clone)]
pub struct SnapshotStore {
    /// The object store.
    store: object_store::ObjectStore,
    /// Whose snapshots this node reads and writes.
    ownership: Ownership,
}

fn name(ownership: Ownership, seq: u64) -> String {
    format!("snapshot-{}of{}-{seq:020}", ownership.node, ownership.nodes)
}

/// The node and sequence of a snapshot's name.
fn parse_name(name: &str) -> Option<(Ownership, u64)> {
    let rest = name.strip_prefix("snapshot-")?;
    let (who, seq) = rest.split_once('-')?;
    let (node, nodes) = who.split_once("of")?;
    Some((
        Ownership {
            node: node.parse().ok()?,
            nodes: nodes.parse().ok()?,
        },
        seq.parse().ok()?,
    ))
}

impl SnapshotStore {
    /// Opens (or creates, with `stream_replicas` replicas) the bucket
    /// `<stream>_SNAPSHOTS`, retrying through a cluster's leader elections.
    /// Only a bucket the server says does not exist is created: any other
    /// failure to open it (a timeout while its leader is elected) must not
    /// be taken for its absence.
    pub async fn open(js: &jetstream::Context, config: &Config) -> Result<SnapshotStore> {
        let bucket = format!("{}_SNAPSHOTS", config.stream_name);
        let step = format!("open the snapshot store {bucket}");
        let mut store = retry(&step, || {
            Self::open_once(js, &bucket, config.stream_replicas)
        })
        .await?;
        store.ownership = Ownership {
            node: config.node,
            nodes: config.nodes,
        };
        Ok(store)
    }

    async fn open_once(
        js: &jetstream::Context,
        bucket: &str,
        replicas: usize,
    ) -> Result<SnapshotStore> {
        // The object store's own stream, which says how it is replicated.
        let stream_name = format!("OBJ_{bucket}");
        let store = match js.get_stream(&stream_name).await {
            Ok(stream) => {
                warn_on_other_replicas(
                    &stream_name,
                    stream.cached_info().config.num_replicas,
                    replicas,
                );
                js.get_object_store(bucket)
                    .await
                    .with_context(|| format!("cannot open object store {bucket}"))?
            }
            Err(e)
                if matches!(e.kind(), GetStreamErrorKind::JetStream(ref j)
                if j.error_code() == ErrorCode::STREAM_NOT_FOUND) =>
            {
                js.create_object_store(object_store::Config {
                    bucket: bucket.to_owned(),
                    description: Some("cashback engine state snapshots".into()),
                    num_replicas: replicas,
                    ..Default::default()
                })
                .await
                .with_context(|| format!("cannot create object store {bucket}"))?
            }
            Err(e) => return Err(e).with_context(|| format!("cannot open object store {bucket}")),
        };
        Ok(SnapshotStore {
            store,
            ownership: Ownership::ALONE,
        })
    }

    /// Sequences of this node's stored snapshots, newest first. An error
    /// while listing fails the whole list: a partial one would make a start
    /// fall back to an older snapshot, or a full replay, without a word.
    pub async fn list(&self) -> Result<Vec<u64>> {
        let mut seqs: Vec<u64> = self
            .list_all()
            .await?
            .into_iter()
            .filter(|(who, _)| *who == self.ownership)
            .map(|(_, seq)| seq)
            .collect();
        seqs.sort_unstable_by(|a, b| b.cmp(a));
        Ok(seqs)
    }

    /// Every node's snapshots in the bucket.
    async fn list_all(&self) -> Result<Vec<(Ownership, u64)>> {
        let mut all = Vec::new();
        let mut list = self.store.list().await.context("cannot list snapshots")?;
        while let Some(info) = list.next().await {
            let info = info.context("cannot list snapshots")?;
            if let Some(found) = parse_name(&info.name) {
                all.push(found);
            }
        }
        Ok(all)
    }

    /// The stream position every node of this cluster size can restart
    /// from: the oldest kept snapshot of the node whose snapshots are the
    /// oldest; 0 while some node has none (nothing may be purged then).
    async fn held_by_all(&self) -> Result<u64> {
        let all = self.list_all().await?;
        let mut keep_from = u64::MAX;
        for node in 0..self.ownership.nodes {
            let mut seqs: Vec<u64> = all
                .iter()
                .filter(|(who, _)| who.node == node && who.nodes == self.ownership.nodes)
                .map(|(_, seq)| *seq)
                .collect();
            seqs.sort_unstable_by(|a, b| b.cmp(a));
            match seqs.iter().take(KEEP).min() {
                Some(oldest) => keep_from = keep_from.min(*oldest),
                None => return Ok(0),
            }
        }
        Ok(keep_from)
    }

    /// The stored snapshot taken at `seq`, to be read as it arrives
    /// (`restore` decodes it part by part; see `snapshot::read_parts`).
    pub async fn get(&self, seq: u64) -> Result<object_store::Object> {
        self.store
            .get(name(self.ownership, seq))
            .await
            .with_context(|| format!("cannot open snapshot {seq}"))
    }

    /// Stores a snapshot and deletes all of this node's but the newest
    /// `KEEP`. Returns the stream position up to which every node of the
    /// cluster has a kept snapshot (what the stream must retain after it).
    pub async fn put(&self, seq: u64, segments: Vec<Bytes>) -> Result<u64> {
        self.store
            .put(
                name(self.ownership, seq).as_str(),
                &mut Segments(segments.into()),
            )
            .await
            .context("cannot store the snapshot")?;
        let seqs = self.list().await?;
        for old in seqs.iter().skip(KEEP) {
            if let Err(e) = self.store.delete(name(self.ownership, *old)).await {
                tracing::warn!(seq = old, error = %e, "cannot delete an old snapshot");
            }
        }
        self.held_by_all().await
    }
}

/// A snapshot's segments read one after the other, for the object store's
/// upload: what `Snapshot::to_bytes` would hold, without the copy.
struct Segments(std::collections::VecDeque<Bytes>);

impl tokio::io::AsyncRead for Segments {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        while let Some(front) = self.0.front_mut() {
            if front.is_empty() {
                self.0.pop_front();
                continue;
            }
            let n = front.len().min(buf.remaining());
            buf.put_slice(&front.split_to(n));
            break;
        }
        std::task::Poll::Ready(Ok(()))
    }
}

/// When and where the pipeline writes snapshots.
pub struct Snapshotter {
    /// Where.
    pub store: SnapshotStore,
    /// How often, at most.
    pub every: std::time::Duration,
    /// The configuration fingerprint written into each snapshot.
    pub fingerprint: u64,
    /// Whether to purge the stream up to the oldest kept snapshot.
    pub purge: bool,
    /// The sequence of the last snapshot taken (none newer is needed before
    /// more messages arrive).
    pub last_seq: u64,
    /// The upload under way, if any: at most one at a time.
    pub upload: Option<tokio::task::JoinHandle<Result<u64>>>,
}

impl Snapshotter {
    /// Stores `snapshot` in the background (or now, with `wait`), then
    /// prunes old snapshots and, if configured, the stream before the
    /// oldest kept one. Skips when an upload is still under way.
    pub async fn store(
        &mut self,
        snapshot: Snapshot,
        stream: async_nats::jetstream::stream::Stream,
        wait: bool,
    ) -> Result<()> {
        if let Some(upload) = &self.upload {
            if !upload.is_finished() && !wait {
                tracing::warn!("previous snapshot still uploading; skipping this one");
                return Ok(());
            }
        }
        if let Some(upload) = self.upload.take() {
            report(upload.await);
        }
        let seq = snapshot.header.seq;
        let taken_at = snapshot.header.taken_at;
        self.last_seq = seq;
        let (store, purge) = (self.store.clone(), self.purge);
        let started = std::time::Instant::now();
        let task = tokio::spawn(async move {
            let segments = snapshot.into_segments();
            let size: usize = segments.iter().map(Bytes::len).sum();
            let keep_from = store.put(seq, segments).await?;
            metrics::histogram!("cashback_snapshot_duration_seconds")
                .record(started.elapsed().as_secs_f64());
            metrics::gauge!("cashback_snapshot_bytes").set(size as f64);
            metrics::gauge!("cashback_snapshot_last_seq").set(seq as f64);
            metrics::gauge!("cashback_snapshot_timestamp_seconds")
                .set(taken_at.unix_nanos() as f64 / 1e9);
            if purge && keep_from > 1 {
                // Messages up to the oldest kept snapshot of every node are
                // in every kept snapshot; no replay needs them again.
                stream
                    .purge()
                    .sequence(keep_from + 1)
                    .await
                    .context("cannot purge the stream")?;
            }
            tracing::info!(
                seq,
                size,
                secs = started.elapsed().as_secs_f64(),
                "snapshot stored"
            );
            Ok(seq)
        });
        if wait {
            report(task.await);
        } else {
            self.upload = Some(task);
        }
        Ok(())
    }
}

fn report(done: Result<Result<u64>, tokio::task::JoinError>) {
    match done {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "snapshot failed"),
        Err(e) => tracing::error!(error = %e, "snapshot task failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_node() {
        let who = Ownership { node: 2, nodes: 3 };
        assert_eq!(parse_name(&name(who, 42)), Some((who, 42)));
        assert_eq!(parse_name("snapshot-00000000000000000042"), None);
        assert_eq!(parse_name("other"), None);
    }
}
