//! Snapshots of the engine's state: the router and every partition's
//! ledger, taken together at one stream position with nothing in flight.
//! Restart = load the newest snapshot + replay the stream after its
//! position, which makes exactly the decisions a full replay would.
//!
//! The encoding is bincode (compact, fast, deterministic for these types).
//! What can be derived (indexes, the ranking) is rebuilt on load rather than
//! stored; configuration is checked by fingerprint ([`Settings`]), so a
//! snapshot is never applied under settings that would decide differently.

use crate::ledger::Ledger;
use crate::router::Router;
use crate::settings::Settings;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::io::Read;

/// Bumped whenever the encoding of any state changes. 2: packed 32-byte
/// payment records, card numbers, owner runs, interned acquirers, spills.
/// 3: 64-byte citizen summaries (`summary::Citizens`). 4: de-duplication
/// keys in the cards' books (40-byte records), lean directory, wallets,
/// split-payment slots, exclusions, credit ids, the node in the header.
pub const FORMAT: u32 = 4;

/// What a snapshot says about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// `FORMAT` at the time it was written.
    pub format: u32,
    /// The last stream sequence whose effects it contains.
    pub seq: u64,
    /// Fingerprint of what must not change between writing and loading.
    pub fingerprint: u64,
    /// When it was taken (wall clock; for operators only).
    pub taken_at: Timestamp,
    /// The cluster node that took it (0 of 1 for a single process): it
    /// holds the ledgers of that node's partitions only.
    pub node: u16,
    /// How many nodes the cluster had.
    pub nodes: u16,
}

/// A whole snapshot: the router, and each partition's ledger, encoded.
#[derive(Debug, Serialize, Deserialize)]
pub struct Snapshot {
    /// About it.
    pub header: Header,
    /// `encode_router` output.
    pub router: Vec<u8>,
    /// (partition, `encode_ledger` output), every partition that has state.
    pub ledgers: Vec<(u16, Vec<u8>)>,
}

/// Encodes a ledger (run by its shard, on the shard's thread).
pub fn encode_ledger(ledger: &Ledger) -> Vec<u8> {
    bincode::serialize(ledger).expect("ledgers always encode")
}

/// Decodes a ledger and makes it whole.
pub fn decode_ledger(bytes: &[u8], settings: &Settings) -> Result<Ledger, String> {
    let mut ledger: Ledger = bincode::deserialize(bytes).map_err(|e| e.to_string())?;
    ledger.restore(
        settings.periods.clone(),
        settings.park_days,
        settings.limits,
    );
    Ok(ledger)
}

/// Encodes the router.
pub fn encode_router(router: &Router) -> Vec<u8> {
    bincode::serialize(router).expect("the router always encodes")
}

/// Decodes the router and makes it whole.
pub fn decode_router(bytes: &[u8], settings: &Settings) -> Result<Router, String> {
    let mut router: Router = bincode::deserialize(bytes).map_err(|e| e.to_string())?;
    router.restore(
        settings.periods.clone(),
        settings.park_days,
        settings.limits,
    );
    Ok(router)
}

impl Snapshot {
    /// The bytes to store.
    pub fn to_bytes(&self) -> Vec<u8> {
        bincode::serialize(self).expect("snapshots always encode")
    }

    /// The same bytes as [`to_bytes`](Self::to_bytes), as segments to send
    /// one after the other: the header and length prefixes, and the parts
    /// themselves, moved rather than copied. Why: at the real programme's
    /// scale `to_bytes` copied 5 GB (6.6 s, and a second copy of the
    /// snapshot in memory) only for the upload to read it once.
    pub fn into_segments(self) -> Vec<bytes::Bytes> {
        let mut segments = Vec::with_capacity(2 * self.ledgers.len() + 3);
        let mut prefix = bincode::serialize(&self.header).expect("headers always encode");
        prefix.extend_from_slice(&(self.router.len() as u64).to_le_bytes());
        segments.push(prefix.into());
        segments.push(self.router.into());
        let mut prefix = (self.ledgers.len() as u64).to_le_bytes().to_vec();
        for (partition, bytes) in self.ledgers {
            prefix.extend_from_slice(&partition.to_le_bytes());
            prefix.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            segments.push(std::mem::take(&mut prefix).into());
            segments.push(bytes.into());
        }
        if !prefix.is_empty() {
            segments.push(prefix.into());
        }
        segments
    }

    /// Reads stored bytes; refuses another format or another configuration.
    pub fn from_bytes(bytes: &[u8], fingerprint: u64) -> Result<Snapshot, String> {
        let snap: Snapshot = bincode::deserialize(bytes).map_err(|e| e.to_string())?;
        snap.header.check(fingerprint)?;
        Ok(snap)
    }
}

impl Header {
    /// Refuses another format or another configuration.
    fn check(&self, fingerprint: u64) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!(
                "format {} (this build reads {FORMAT})",
                self.format
            ));
        }
        if self.fingerprint != fingerprint {
            return Err(
                "taken under other settings (periods and their rules, partitions, parking, \
                 authorization size)"
                    .into(),
            );
        }
        Ok(())
    }
}

/// One part of a snapshot, handed over by [`read_parts`] as soon as its
/// bytes are in.
#[derive(Debug, PartialEq, Eq)]
pub enum Part {
    /// `encode_router` output.
    Router(Vec<u8>),
    /// A partition and its `encode_ledger` output.
    Ledger(u16, Vec<u8>),
}

/// Reads what [`Snapshot::to_bytes`] wrote, from a stream, one part at a
/// time: why not `from_bytes`: a snapshot of the real programme is several
/// GB, and holding all of it (plus bincode's copy of every part) next to
/// the decoded state would double the memory a restart needs; part by part,
/// each can be decoded while the next is still arriving. The header is
/// checked before any part is read. The layout is `to_bytes`'s (bincode's
/// fixed-width, little-endian encoding of `Snapshot`), read field by field,
/// so FORMAT does not change; a test holds the two together.
pub fn read_parts<R: Read>(
    mut reader: R,
    fingerprint: u64,
    mut part: impl FnMut(Part) -> Result<(), String>,
) -> Result<Header, String> {
    let header: Header = bincode::deserialize_from(&mut reader).map_err(|e| e.to_string())?;
    header.check(fingerprint)?;
    let router = read_blob(&mut reader)?;
    part(Part::Router(router))?;
    let ledgers = read_u64(&mut reader)?;
    for _ in 0..ledgers {
        let mut p = [0u8; 2];
        reader.read_exact(&mut p).map_err(|e| e.to_string())?;
        let bytes = read_blob(&mut reader)?;
        part(Part::Ledger(u16::from_le_bytes(p), bytes))?;
    }
    Ok(header)
}

fn read_u64(reader: &mut impl Read) -> Result<u64, String> {
    let mut n = [0u8; 8];
    reader.read_exact(&mut n).map_err(|e| e.to_string())?;
    Ok(u64::from_le_bytes(n))
}

/// A length-prefixed byte string. The buffer grows as bytes arrive rather
/// than trusting the length up front, so a corrupt length cannot make it
/// allocate more than the stream holds.
fn read_blob(reader: &mut impl Read) -> Result<Vec<u8>, String> {
    let len = read_u64(reader)?;
    let mut bytes = Vec::with_capacity(len.min(64 << 20) as usize);
    Read::take(&mut *reader, len)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 != len {
        return Err(format!(
            "truncated: a part of {len} bytes ends after {}",
            bytes.len()
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::LocalEngine;
    use crate::parking::ParkingLimits;
    use crate::period::Periods;
    use crate::router::Position;
    use std::sync::Arc;

    #[test]
    fn a_snapshot_round_trip_keeps_every_decision() {
        let periods = Arc::new(
            Periods::new(vec![crate::period::tests::period(
                "P",
                "2021-01-01",
                "2021-06-30",
            )])
            .unwrap(),
        );
        let mut a = LocalEngine::new(8, periods.clone(), 30);
        let at = |seq| Position {
            seq,
            broker_time: Timestamp::parse_rfc3339("2021-03-10T00:00:00Z").unwrap(),
        };
        let cmd = |s: &str| crate::enrollment::EnrollCommand::from_journal(s.as_bytes()).unwrap();
        a.enroll(at(1), &cmd(r#"{"op":"citizen","citizen_id":"c","iban":"IT60X0542811101000000123456","tc_accepted_at":"2021-01-01T00:00:00Z"}"#)).unwrap();
        a.enroll(at(2), &cmd(&format!(r#"{{"op":"card","citizen_id":"c","hpan":"{}","activated_at":"2021-01-01T00:00:00Z"}}"#, "a".repeat(64)))).unwrap();
        let pay = |id: &str, amount: u64, op: &str, corr: &str| {
            format!(
                r#"{{"acquirer_code":"1","operation_type":"{op}","circuit_type":"01","hpan":"{}","trx_date":"2021-03-01T10:00:00Z","id_trx_acquirer":"{id}","total_amount":{amount},"currency":"978","acquirer_id":"A","merchant_id":"M","terminal_id":"T","bin":"123456","mcc":"5411","correlation_id":"{corr}"}}"#,
                "a".repeat(64)
            )
        };
        a.authorization(
            at(3),
            "cashback.auth.1",
            pay("p1", 1000, "00", "K1").as_bytes(),
        );
        a.authorization(
            at(4),
            "cashback.auth.1",
            pay("r2", 500, "01", "K2").as_bytes(),
        ); // parked
           // Snapshot a, restore into b.
        let settings = Settings {
            periods: periods.clone(),
            partitions: 8,
            park_days: 30,
            limits: ParkingLimits::new(100, 200_000, 8),
            max_authorization_bytes: 16384,
        };
        let fp = settings.fingerprint();
        let snap = Snapshot {
            header: Header {
                format: FORMAT,
                seq: 4,
                fingerprint: fp,
                taken_at: Timestamp::now(),
                node: 0,
                nodes: 1,
            },
            router: encode_router(&a.router),
            ledgers: a
                .ledgers
                .iter()
                .map(|l| (l.partition(), encode_ledger(l)))
                .collect(),
        };
        let loaded = Snapshot::from_bytes(&snap.to_bytes(), fp).unwrap();
        assert!(Snapshot::from_bytes(&snap.to_bytes(), fp ^ 1).is_err());
        let mut b = LocalEngine::new(8, periods.clone(), 30);
        b.router = decode_router(&loaded.router, &settings).unwrap();
        for (p, bytes) in &loaded.ledgers {
            b.ledgers[*p as usize] = decode_ledger(bytes, &settings).unwrap();
        }
        // The same messages now decide the same way in both.
        for e in [&mut a, &mut b] {
            e.authorization(
                at(5),
                "cashback.auth.1",
                pay("p1", 1000, "00", "K1").as_bytes(),
            ); // duplicate
            e.authorization(
                at(6),
                "cashback.auth.1",
                pay("p2", 800, "00", "K2").as_bytes(),
            ); // releases r2
            e.authorization(
                at(7),
                "cashback.auth.1",
                pay("r2", 500, "01", "K2").as_bytes(),
            ); // duplicate
        }
        assert_eq!(a.rejections, b.rejections);
        assert_eq!(a.standing("c", "P"), b.standing("c", "P"));
        assert_eq!(b.standing("c", "P").unwrap().count, 2);
        assert_eq!(b.standing("c", "P").unwrap().cashback.to_string(), "1.30");
    }

    #[test]
    fn read_parts_reads_what_to_bytes_writes() {
        let header = |fingerprint| Header {
            format: FORMAT,
            seq: 9,
            fingerprint,
            taken_at: Timestamp::now(),
            node: 1,
            nodes: 3,
        };
        let snap = Snapshot {
            header: header(7),
            router: vec![1, 2, 3],
            ledgers: vec![(0, vec![]), (5, vec![4; 300]), (65535, vec![9])],
        };
        let bytes = snap.to_bytes();
        let no_ledgers = Snapshot {
            header: header(7),
            router: vec![5],
            ledgers: vec![],
        };
        for s in [&snap, &no_ledgers] {
            let copy = Snapshot {
                header: s.header.clone(),
                router: s.router.clone(),
                ledgers: s.ledgers.clone(),
            };
            assert_eq!(copy.into_segments().concat(), s.to_bytes());
        }
        let mut parts = Vec::new();
        let read = read_parts(bytes.as_slice(), 7, |p| {
            parts.push(p);
            Ok(())
        })
        .unwrap();
        assert_eq!(read, snap.header);
        let mut expected = vec![Part::Router(snap.router.clone())];
        expected.extend(
            snap.ledgers
                .iter()
                .map(|(p, b)| Part::Ledger(*p, b.clone())),
        );
        assert_eq!(parts, expected);
        // Another configuration is refused before any part is read.
        let refused = read_parts(bytes.as_slice(), 8, |_| panic!("no part"));
        assert!(refused.unwrap_err().contains("other settings"));
        // A cut anywhere is an error, never a shorter snapshot.
        for cut in [10, bytes.len() - 1] {
            assert!(read_parts(&bytes[..cut], 7, |_| Ok(())).is_err());
        }
        // The sink's refusal stops the read.
        assert_eq!(
            read_parts(bytes.as_slice(), 7, |_| Err("stop".into())).unwrap_err(),
            "stop"
        );
    }
}
