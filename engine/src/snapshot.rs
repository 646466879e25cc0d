//! Snapshots of the engine's state: the router and every partition's
//! ledger, taken together at one stream position with nothing in flight.
//! Restart = load the newest snapshot + replay the stream after its
//! position, which makes exactly the decisions a full replay would.
//!
//! The encoding is bincode (compact, fast, deterministic for these types).
//! What can be derived (indexes, the ranking) is rebuilt on load rather than
//! stored; configuration is checked by fingerprint, so a snapshot is never
//! applied under different periods or partitions.

use crate::ledger::Ledger;
use crate::period::Periods;
use crate::router::Router;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Bumped whenever the encoding of any state changes. 2: packed 32-byte
/// payment records, card numbers, owner runs, interned acquirers, spills.
/// 3: 64-byte citizen summaries (`summary::Citizens`).
pub const FORMAT: u32 = 3;

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

/// Fingerprint of the configuration that state depends on: periods (ids,
/// dates, rules), partitions and reversal parking.
pub fn fingerprint(periods: &Periods, partitions: u16, park_days: u32) -> u64 {
    let text = format!("{:?}|{partitions}|{park_days}", periods.all());
    xxhash_rust::xxh3::xxh3_64(text.as_bytes())
}

/// Encodes a ledger (run by its shard, on the shard's thread).
pub fn encode_ledger(ledger: &Ledger) -> Vec<u8> {
    bincode::serialize(ledger).expect("ledgers always encode")
}

/// Decodes a ledger and makes it whole.
pub fn decode_ledger(bytes: &[u8], periods: Arc<Periods>) -> Result<Ledger, String> {
    let mut ledger: Ledger = bincode::deserialize(bytes).map_err(|e| e.to_string())?;
    ledger.restore(periods);
    Ok(ledger)
}

/// Encodes the router. Call only with nothing in flight.
pub fn encode_router(router: &Router) -> Vec<u8> {
    assert!(!router.has_in_flight(), "snapshots need a settled router");
    bincode::serialize(router).expect("the router always encodes")
}

/// Decodes the router and makes it whole.
pub fn decode_router(bytes: &[u8], periods: Arc<Periods>) -> Result<Router, String> {
    let mut router: Router = bincode::deserialize(bytes).map_err(|e| e.to_string())?;
    router.restore(periods);
    Ok(router)
}

impl Snapshot {
    /// The bytes to store.
    pub fn to_bytes(&self) -> Vec<u8> {
        bincode::serialize(self).expect("snapshots always encode")
    }

    /// Reads stored bytes; refuses another format or another configuration.
    pub fn from_bytes(bytes: &[u8], fingerprint: u64) -> Result<Snapshot, String> {
        let snap: Snapshot = bincode::deserialize(bytes).map_err(|e| e.to_string())?;
        if snap.header.format != FORMAT {
            return Err(format!(
                "format {} (this build reads {FORMAT})",
                snap.header.format
            ));
        }
        if snap.header.fingerprint != fingerprint {
            return Err(
                "taken under another configuration (periods, partitions or parking)".into(),
            );
        }
        Ok(snap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::LocalEngine;
    use crate::router::Position;

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
        let fp = fingerprint(&periods, 8, 30);
        let snap = Snapshot {
            header: Header {
                format: FORMAT,
                seq: 4,
                fingerprint: fp,
                taken_at: Timestamp::now(),
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
        b.router = decode_router(&loaded.router, periods.clone()).unwrap();
        for (p, bytes) in &loaded.ledgers {
            b.ledgers[*p as usize] = decode_ledger(bytes, periods.clone()).unwrap();
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
}
