//! Start-up from a snapshot: decode the router and the ledgers, hand each
//! shard its partitions, and rebuild the ranking from the shards' standings
//! (the ranking is derived state, so it is not stored).
//!
//! The snapshot is decoded as it downloads, part by part: at the real
//! programme's scale it is several GB, and buffering it whole before
//! decoding both serialized the download with the decode and held the
//! encoded copy next to the decoded state (the restart benchmark measured
//! it; BENCHMARKS.md). The router decodes on its own thread while the
//! ledgers decode on one thread per core, as their bytes arrive.

use crate::nats::retry::{retry, transient};
use crate::snapshots::SnapshotStore;
use actix::Addr;
use anyhow::Result;
use async_nats::jetstream::object_store::Object;
use bytes::{Bytes, BytesMut};
use cashback_actors::ranking::{ApplyStandings, RankingAggregator};
use cashback_actors::{AllStandings, CitizenShard};
use cashback_engine::item::StandingChange;
use cashback_engine::ledger::Ledger;
use cashback_engine::partition::Ownership;
use cashback_engine::router::Router;
use cashback_engine::settings::Settings;
use cashback_engine::snapshot::{decode_ledger, decode_router, read_parts, Header, Part};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

/// Bytes read from the object store at a time.
const CHUNK: usize = 1 << 20;
/// Chunks downloaded ahead of the decoder: enough to keep the download
/// going while a large part is handed over, little next to the state.
const CHUNKS_AHEAD: usize = 64;

/// What a start begins from.
pub struct Restored {
    /// The router, or `None` for an empty start.
    pub router: Option<Router>,
    /// Ledgers per shard (partition `p` goes to shard
    /// `Ownership::shard_of(p, shards)`).
    pub shard_ledgers: Vec<HashMap<u16, Ledger>>,
    /// The last sequence the state holds (0: none).
    pub seq: u64,
}

/// Loads the newest usable snapshot, or an empty start. A snapshot that
/// does not decode (another format or configuration, a corrupt object), or
/// that is gone, is reported and skipped for the next older one. One that
/// cannot be read for now (a cluster electing the bucket's leader) is
/// retried, and the start fails rather than falling back to an older state
/// or a full replay when it stays unreadable.
pub async fn load(
    store: &SnapshotStore,
    settings: &Arc<Settings>,
    ownership: Ownership,
    shards: usize,
) -> Result<Restored> {
    for seq in retry("list the snapshots", || store.list()).await? {
        let started = Instant::now();
        let step = format!("read snapshot {seq}");
        let loaded = retry(&step, || async {
            let object = store.get(seq).await?;
            load_object(object, settings.clone(), ownership, shards).await
        })
        .await;
        match loaded {
            Ok(Ok((header, restored, size))) => {
                let secs = started.elapsed().as_secs_f64();
                tracing::info!(seq = header.seq, secs, "restored snapshot");
                metrics::gauge!("cashback_restore_seconds", "phase" => "decode").set(secs);
                metrics::gauge!("cashback_snapshot_last_seq").set(header.seq as f64);
                metrics::gauge!("cashback_snapshot_timestamp_seconds")
                    .set(header.taken_at.unix_nanos() as f64 / 1e9);
                metrics::gauge!("cashback_snapshot_bytes").set(size as f64);
                return Ok(restored);
            }
            Ok(Err(e)) => {
                tracing::warn!(seq, error = %e, "snapshot not usable; trying an older one")
            }
            Err(e) if transient(&e) => return Err(e),
            Err(e) => {
                tracing::warn!(seq, error = %format!("{e:#}"), "snapshot not readable; trying an older one")
            }
        }
    }
    tracing::info!("no snapshot: replaying the log from its start");
    Ok(Restored {
        router: None,
        shard_ledgers: (0..shards).map(|_| HashMap::new()).collect(),
        seq: 0,
    })
}

/// Downloads `object` on this task while a blocking thread decodes it.
/// The outer error is the download's (worth another attempt when
/// transient); the inner one the decoder's (this snapshot is unusable).
/// The third value is the object's size.
async fn load_object(
    mut object: Object,
    settings: Arc<Settings>,
    ownership: Ownership,
    shards: usize,
) -> Result<Result<(Header, Restored, usize), String>> {
    let started = Instant::now();
    let size = object.info.size;
    let (tx, rx) = mpsc::channel(CHUNKS_AHEAD);
    let decoding = tokio::task::spawn_blocking(move || {
        decode(ChunkReader::new(rx), settings, ownership, shards)
    });
    let mut read_error = None;
    loop {
        let mut chunk = BytesMut::with_capacity(CHUNK);
        let read = object.read_buf(&mut chunk).await;
        let done = matches!(read, Ok(0) | Err(_));
        let read = match read {
            // The decoder gets the error too, so that it never takes what
            // came before it for a whole snapshot.
            Err(e) => {
                let copy = std::io::Error::new(e.kind(), e.to_string());
                read_error = Some(e);
                Err(copy)
            }
            Ok(n) => Ok(n),
        };
        // A closed channel means the decoder gave up; its error says why.
        if !matches!(read, Ok(0)) && tx.send(read.map(|_| chunk.freeze())).await.is_err() {
            break;
        }
        if done {
            break;
        }
    }
    metrics::gauge!("cashback_restore_seconds", "phase" => "download")
        .set(started.elapsed().as_secs_f64());
    drop(tx);
    let decoded = decoding.await?;
    if let Some(e) = read_error {
        return Err(anyhow::Error::new(e).context("cannot read the snapshot"));
    }
    Ok(decoded.and_then(|(header, router, shard_ledgers)| {
        if (header.node, header.nodes) != (ownership.node, ownership.nodes) {
            return Err(format!(
                "taken by node {} of {}, not this node ({} of {})",
                header.node, header.nodes, ownership.node, ownership.nodes
            ));
        }
        let seq = header.seq;
        Ok((
            header,
            Restored {
                router: Some(router),
                shard_ledgers,
                seq,
            },
            size,
        ))
    }))
}

/// The decoded state: header, router, ledgers per shard.
type Decoded = (Header, Router, Vec<HashMap<u16, Ledger>>);

/// Reads the parts from `reader` and decodes them: the router on a thread
/// of its own (it is one part, and the largest), the ledgers on one thread
/// per core, each as soon as its bytes are in.
fn decode(
    reader: ChunkReader,
    settings: Arc<Settings>,
    ownership: Ownership,
    shards: usize,
) -> Result<Decoded, String> {
    let fingerprint = settings.fingerprint();
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    // Bounded, so that a slow decode holds back the download instead of
    // the encoded parts piling up in memory.
    let (work_tx, work_rx) = std::sync::mpsc::sync_channel::<(u16, Vec<u8>)>(workers);
    let work_rx = Mutex::new(work_rx);
    std::thread::scope(|scope| {
        let ledger_workers: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut decoded = Vec::new();
                    let mut failed = None;
                    // Keeps receiving after a failure so that the reader,
                    // blocked on a full queue, always gets through to the end.
                    while let Ok((p, bytes)) = {
                        let job = work_rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        job
                    } {
                        if failed.is_none() {
                            match decode_ledger(&bytes, &settings) {
                                Ok(l) => decoded.push((p, l)),
                                Err(e) => failed = Some(format!("partition {p}: {e}")),
                            }
                        }
                    }
                    failed.map_or(Ok(decoded), Err)
                })
            })
            .collect();
        let mut router = None;
        let header = read_parts(reader, fingerprint, |part| match part {
            Part::Router(bytes) => {
                let settings = settings.clone();
                router = Some(scope.spawn(move || decode_router(&bytes, &settings)));
                Ok(())
            }
            Part::Ledger(p, bytes) => work_tx
                .send((p, bytes))
                .map_err(|_| "the ledger decoders stopped".to_string()),
        });
        drop(work_tx);
        let mut shard_ledgers: Vec<HashMap<u16, Ledger>> =
            (0..shards).map(|_| HashMap::new()).collect();
        let mut first_error = header.as_ref().err().cloned();
        for worker in ledger_workers {
            match worker
                .join()
                .map_err(|_| "a ledger decoder panicked".to_string())
            {
                Ok(Ok(ledgers)) => {
                    for (p, l) in ledgers {
                        shard_ledgers[ownership.shard_of(p, shards)].insert(p, l);
                    }
                }
                Ok(Err(e)) | Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        let router = match router.map(|r| r.join()) {
            Some(Ok(Ok(r))) => Some(r),
            Some(Ok(Err(e))) => {
                first_error.get_or_insert(format!("router: {e}"));
                None
            }
            Some(Err(_)) => {
                first_error.get_or_insert("the router decoder panicked".into());
                None
            }
            None => None,
        };
        match (first_error, header, router) {
            (None, Ok(header), Some(router)) => Ok((header, router, shard_ledgers)),
            (Some(e), _, _) => Err(e),
            _ => Err("a snapshot without a router".into()),
        }
    })
}

/// The downloaded chunks as a blocking `Read`, for the decoding thread.
struct ChunkReader {
    /// Chunks from the download, in order; closed at the end.
    rx: mpsc::Receiver<std::io::Result<Bytes>>,
    /// What is left of the current chunk.
    current: Bytes,
}

impl ChunkReader {
    fn new(rx: mpsc::Receiver<std::io::Result<Bytes>>) -> ChunkReader {
        ChunkReader {
            rx,
            current: Bytes::new(),
        }
    }
}

impl std::io::Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.current = chunk?,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Feeds every shard's standings to the ranking, and their cashback to the
/// accrued-cashback totals of `progress`.
pub async fn rebuild_ranking(
    shards: &[Addr<CitizenShard>],
    ranking: &Addr<RankingAggregator>,
    progress: &crate::progress::Progress,
) -> Result<()> {
    let started = Instant::now();
    // Every shard collects (and sorts) its standings at once, each on its
    // own thread.
    let asked: Vec<_> = shards.iter().map(|s| s.send(AllStandings)).collect();
    let mut standings = Vec::new();
    for answer in asked {
        standings.extend(answer.await?);
    }
    let accrued: Vec<_> = standings
        .iter()
        .map(|s| (s.period, s.standing.cashback))
        .collect();
    progress.accrue(&accrued);
    drop(accrued);
    // The shards' runs are each sorted already: a stable sort merges them
    // in linear time. Inserting in ranking order is what makes the rebuild
    // fast (see `StandingChange::rank_hint`).
    standings.sort_by_key(StandingChange::rank_hint);
    if !standings.is_empty() {
        ranking.send(ApplyStandings(standings)).await?;
    }
    metrics::gauge!("cashback_restore_seconds", "phase" => "ranking")
        .set(started.elapsed().as_secs_f64());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cashback_engine::local::LocalEngine;
    use cashback_engine::parking::ParkingLimits;
    use cashback_engine::period::{AwardPeriod, Periods};
    use cashback_engine::router::Position;
    use cashback_engine::snapshot::{encode_ledger, encode_router, Snapshot, FORMAT};
    use cashback_engine::time::Timestamp;

    fn settings_with(max_authorization_bytes: usize) -> Arc<Settings> {
        let (start, end) = ("2021-01-01".parse().unwrap(), "2021-06-30".parse().unwrap());
        Arc::new(Settings {
            periods: Arc::new(
                Periods::new(vec![AwardPeriod::with_2021_rules("P", start, end)]).unwrap(),
            ),
            partitions: 4,
            park_days: 30,
            limits: ParkingLimits::new(100, 200_000, 4),
            max_authorization_bytes,
        })
    }

    /// A small engine's snapshot bytes.
    fn stored(settings: &Settings) -> Vec<u8> {
        let mut e = LocalEngine::new(4, settings.periods.clone(), 30);
        let at = Position {
            seq: 1,
            broker_time: Timestamp::parse_rfc3339("2021-03-10T00:00:00Z").unwrap(),
        };
        let cmd = cashback_engine::enrollment::EnrollCommand::from_journal(
            br#"{"op":"citizen","citizen_id":"c","iban":"IT60X0542811101000000123456","tc_accepted_at":"2021-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        e.enroll(at, &cmd).unwrap();
        let snap = Snapshot {
            header: Header {
                format: FORMAT,
                seq: 1,
                fingerprint: settings.fingerprint(),
                taken_at: Timestamp::now(),
                node: 0,
                nodes: 1,
            },
            router: encode_router(&e.router),
            ledgers: e
                .ledgers
                .iter()
                .map(|l| (l.partition(), encode_ledger(l)))
                .collect(),
        };
        snap.to_bytes()
    }

    /// `bytes` in chunks of `chunk`, then the end, as the download sends them.
    fn reader(bytes: &[u8], chunk: usize) -> ChunkReader {
        let (tx, rx) = mpsc::channel(bytes.len() / chunk + 2);
        for c in bytes.chunks(chunk) {
            tx.try_send(Ok(Bytes::copy_from_slice(c))).unwrap();
        }
        ChunkReader::new(rx)
    }

    #[test]
    fn a_streamed_snapshot_decodes_whole_and_a_cut_or_foreign_one_is_refused() {
        let settings = settings_with(16384);
        let bytes = stored(&settings);
        let alone = Ownership::ALONE;
        let (header, router, shards) =
            decode(reader(&bytes, 7), settings.clone(), alone, 2).unwrap();
        assert_eq!(header.seq, 1);
        assert!(router.directory().find("c").is_some());
        assert_eq!(shards.iter().map(HashMap::len).sum::<usize>(), 4);
        assert!(shards[0].keys().all(|p| p % 2 == 0));
        let cut = &bytes[..bytes.len() - 1];
        assert!(decode(reader(cut, 7), settings.clone(), alone, 2).is_err());
        // Any setting that decides (here the authorization size limit)
        // makes it foreign.
        assert!(decode(reader(&bytes, 7), settings_with(8192), alone, 2).is_err());
        // Undecodable ledgers, more than the decoders' queue holds: an
        // error, and the reader is never left blocked on a full queue.
        let snap = cashback_engine::snapshot::Snapshot::from_bytes(&bytes, settings.fingerprint())
            .unwrap();
        let broken = Snapshot {
            ledgers: (0..64).map(|p| (p, vec![0xFF; 3])).collect(),
            ..snap
        };
        let err = decode(reader(&broken.to_bytes(), 7), settings, alone, 2).unwrap_err();
        assert!(err.contains("partition"), "{err}");
    }
}
