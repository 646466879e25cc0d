//! Hostile input against the engine's pure core:
//! - floods of reversals that match nothing stay within the parking bounds
//!   (per card, and the engine-wide bound's share per partition and for
//!   cards nobody enrolled), decided in log order, and survive a snapshot;
//! - property tests feed about 215,000 random and mutated authorization
//!   and enrollment payloads (in about 3 s) through the decoder and the enrollment
//!   validator: none panics, and every refused one carries a reason.

use cashback_engine::authorization::{Decoder, Operation};
use cashback_engine::enrollment::{parse_request, EnrollCommand, EnrollKind};
use cashback_engine::local::LocalEngine;
use cashback_engine::parking::ParkingLimits;
use cashback_engine::partition::partition_of;
use cashback_engine::period::{AwardPeriod, Periods};
use cashback_engine::reason::Reason;
use cashback_engine::router::Position;
use cashback_engine::settings::Settings;
use cashback_engine::snapshot::{decode_ledger, decode_router, encode_ledger, encode_router};
use cashback_engine::time::Timestamp;
use proptest::prelude::*;
use serde_json::{json, Value};
use std::sync::Arc;

const IBAN: &str = "IT60X0542811101000000123456";

fn ts(s: &str) -> Timestamp {
    Timestamp::parse_rfc3339(s).unwrap()
}

fn periods() -> Arc<Periods> {
    let (start, end) = ("2021-01-01".parse().unwrap(), "2021-06-30".parse().unwrap());
    Arc::new(Periods::new(vec![AwardPeriod::with_2021_rules("2021H1", start, end)]).unwrap())
}

fn card(n: u32) -> String {
    format!("{n:064x}")
}

/// A valid authorization (payment "00" or reversal "01").
fn authorization(hpan: &str, id: &str, op: &str, cents: u64) -> Value {
    json!({
        "acquirer_code": "32875", "operation_type": op, "circuit_type": "01",
        "hpan": hpan, "trx_date": "2021-03-14T10:22:33+01:00", "id_trx_acquirer": id,
        "id_trx_issuer": "AUTH01", "correlation_id": null, "total_amount": cents,
        "currency": "978", "acquirer_id": "4567", "merchant_id": "M1",
        "terminal_id": "T1", "bin": "40000000", "mcc": "5411", "par": null
    })
}

/// A log fed one message at a time into a `LocalEngine`.
struct Log {
    /// The reference engine, one message at a time.
    engine: LocalEngine,
    /// The last stream sequence handed out: arrival order.
    seq: u64,
}

impl Log {
    fn new(limits: ParkingLimits) -> Log {
        Log {
            engine: LocalEngine::with_limits(16, periods(), 30, limits),
            seq: 0,
        }
    }

    fn at(&mut self) -> Position {
        self.seq += 1;
        // One second apart, well inside the parking time and the grace.
        Position {
            seq: self.seq,
            broker_time: ts("2021-03-20T00:00:00Z").plus_secs(self.seq as i64),
        }
    }

    fn enroll(&mut self, citizen: &str, hpan: &str) {
        let at = self.at();
        let cmd = EnrollCommand::Citizen {
            citizen_id: citizen.into(),
            iban: IBAN.into(),
            tc_accepted_at: "2021-01-01T00:00:00Z".into(),
        };
        self.engine.enroll(at, &cmd).unwrap();
        let at = self.at();
        let cmd = EnrollCommand::Card {
            citizen_id: citizen.into(),
            hpan: hpan.into(),
            activated_at: "2021-01-01T00:00:00Z".into(),
        };
        self.engine.enroll(at, &cmd).unwrap();
    }

    /// Sends one authorization; returns the rejections it caused.
    fn send(&mut self, v: &Value) -> Vec<Reason> {
        let before = self.engine.rejections.len();
        let at = self.at();
        self.engine
            .authorization(at, "cashback.auth.32875", v.to_string().as_bytes());
        self.engine.rejections[before..]
            .iter()
            .map(|(_, r)| r.reason)
            .collect()
    }

    /// Reversals waiting in every ledger.
    fn parked_in_ledgers(&self) -> usize {
        self.engine.ledgers.iter().map(|l| l.parked_count()).sum()
    }

    /// Reversals waiting anywhere: in ledgers, and for cards nobody enrolled.
    fn waiting(&self) -> usize {
        self.parked_in_ledgers() + self.engine.router.orphan_count()
    }
}

/// `n` citizen ids that all hash into one partition (of 16).
fn same_partition(n: usize) -> Vec<String> {
    let home = partition_of("c0", 16);
    (0..)
        .map(|i| format!("c{i}"))
        .filter(|id| partition_of(id, 16) == home)
        .take(n)
        .collect()
}

#[test]
fn a_flood_of_unmatched_reversals_for_one_citizen_stays_within_the_cap() {
    let limits = ParkingLimits {
        per_card: 40,
        per_partition: 1_000,
    };
    let mut log = Log::new(limits);
    log.enroll("c1", &card(1));
    let mut parked = 0;
    let mut refused = 0;
    for i in 0..20_000u32 {
        let r = log.send(&authorization(
            &card(1),
            &format!("r{i}"),
            "01",
            100 + i as u64,
        ));
        match r.as_slice() {
            [] => parked += 1,
            [Reason::UnmatchedReversal] => refused += 1,
            other => panic!("reversal {i}: {other:?}"),
        }
    }
    // The first 40 wait; every later one is refused at once, in log order.
    assert_eq!((parked, refused), (40, 19_960));
    assert_eq!(log.parked_in_ledgers(), 40);
    assert_eq!(log.waiting(), 40);
    // Memory stays bounded: refused reversals leave no key behind (the
    // waiting ones are the card's only reversal keys).
    let book = |log: &Log| {
        let l = log.engine.ledger_of("c1").unwrap();
        let b = l.card(&cashback_engine::authorization::Hpan::parse(&card(1)).unwrap());
        b.map(|b| {
            (
                b.parked_len(),
                b.reversals.as_ref().map_or(0, |r| r.applied_keys.len()),
            )
        })
    };
    assert_eq!(book(&log), Some((40, 0)));

    // A payment that one waiting reversal matches releases it, which makes
    // room for exactly one more.
    assert_eq!(log.send(&authorization(&card(1), "p", "00", 105)), vec![]);
    assert_eq!(log.parked_in_ledgers(), 39);
    assert_eq!(log.send(&authorization(&card(1), "again", "01", 7)), vec![]);
    assert_eq!(
        log.send(&authorization(&card(1), "one-too-many", "01", 8)),
        vec![Reason::UnmatchedReversal]
    );
    assert_eq!(log.parked_in_ledgers(), 40);
}

#[test]
fn the_engine_wide_cap_holds_per_partition_and_for_cards_nobody_enrolled() {
    let limits = ParkingLimits {
        per_card: 10,
        per_partition: 25,
    };
    let mut log = Log::new(limits);
    // Five citizens of one partition, a card each.
    let citizens = same_partition(5);
    for (c, id) in citizens.iter().enumerate() {
        log.enroll(id, &card(c as u32));
    }
    let mut parked = 0;
    // 5 enrolled cards of one partition and 20 never enrolled, 10
    // reversals each: 250 tries for 25 places in the partition and 25 for
    // the cards nobody enrolled.
    for c in 0..25u32 {
        for i in 0..10u32 {
            if log
                .send(&authorization(
                    &card(c),
                    &format!("r{c}-{i}"),
                    "01",
                    1 + i as u64,
                ))
                .is_empty()
            {
                parked += 1;
            }
        }
    }
    assert_eq!(parked, 50);
    assert_eq!(log.waiting(), 50);
    assert_eq!(log.parked_in_ledgers(), 25);
    assert_eq!(log.engine.router.orphan_count(), 25);
    // A per-card overflow of an orphan card is refused too.
    let mut log = Log::new(limits);
    let refused: usize = (0..30u32)
        .map(|i| {
            log.send(&authorization(&card(99), &format!("o{i}"), "01", 1))
                .len()
        })
        .sum();
    assert_eq!(refused, 20);
}

#[test]
fn parking_bounds_are_decided_alike_after_a_snapshot() {
    let limits = ParkingLimits {
        per_card: 5,
        per_partition: 6,
    };
    let mut log = Log::new(limits);
    log.enroll("c1", &card(1));
    log.enroll("c2", &card(2));
    for i in 0..8u32 {
        log.send(&authorization(
            &card(1),
            &format!("a{i}"),
            "01",
            10 + i as u64,
        ));
        log.send(&authorization(
            &card(3),
            &format!("b{i}"),
            "01",
            10 + i as u64,
        ));
    }
    // Snapshot, restore into a second engine (limits are configuration,
    // part of the settings a snapshot is loaded under).
    let settings = Settings {
        periods: periods(),
        partitions: 16,
        park_days: 30,
        limits,
        max_authorization_bytes: 16384,
    };
    let mut restored = Log::new(limits);
    restored.seq = log.seq;
    restored.engine.router = decode_router(&encode_router(&log.engine.router), &settings).unwrap();
    restored.engine.ledgers = log
        .engine
        .ledgers
        .iter()
        .map(|l| decode_ledger(&encode_ledger(l), &settings).unwrap())
        .collect();
    assert_eq!(restored.waiting(), 10);
    // The same continuation decides the same way in both.
    let tail: Vec<Value> = (0..6u32)
        .flat_map(|i| {
            [
                authorization(&card(2), &format!("c{i}"), "01", 20 + i as u64),
                authorization(&card(1), "p", "00", 10),
                authorization(&card(4), &format!("d{i}"), "01", 1),
            ]
        })
        .collect();
    let a: Vec<Vec<Reason>> = tail.iter().map(|v| log.send(v)).collect();
    let b: Vec<Vec<Reason>> = tail.iter().map(|v| restored.send(v)).collect();
    assert_eq!(a, b);
    assert!(a.iter().flatten().any(|r| *r == Reason::UnmatchedReversal));
    assert_eq!(log.waiting(), restored.waiting());
    // Each partition, and the cards nobody enrolled, within the share.
    assert!(log.engine.ledgers.iter().all(|l| l.parked_count() <= 6));
    assert!(log.engine.router.orphan_count() <= 6);
}

// ---------------------------------------------------------------------------
// Property tests: random and mutated payloads
// ---------------------------------------------------------------------------

fn received() -> Timestamp {
    ts("2021-03-20T00:00:00Z")
}

/// Decodes `bytes` on the subject of acquirer 32875 and checks the outcome
/// is well-formed: refusals carry a reason and a message, acceptances obey
/// the protocol's shapes.
fn check_authorization(bytes: &[u8]) {
    let d = Decoder::default();
    match d.decode_on("32875", bytes, received()) {
        Ok(a) => {
            assert_eq!(&*a.acquirer_code, "32875");
            assert!(a.total_amount >= 1 && a.total_amount <= i64::MAX as u64);
            assert!(a.circuit_type <= 10);
            assert!(matches!(a.operation_type, 0..=3));
            assert_eq!(a.operation == Operation::Reversal, a.operation_type == 1);
            assert!(a.trx_date <= received().plus_secs(300));
        }
        Err(r) => {
            assert!(Reason::ALL.contains(&r.reason));
            assert!(!r.message.is_empty(), "{r:?}");
            assert!(
                r.message.len() < 1024,
                "unbounded message: {}",
                r.message.len()
            );
        }
    }
    // Without the subject check, it is accepted at least as often.
    if d.decode_on("32875", bytes, received()).is_ok() {
        assert!(d.decode(bytes, received()).is_ok());
    }
}

/// The codes each enrollment subject may answer statelessly.
fn check_enrollment(kind: EnrollKind, bytes: &[u8]) {
    match parse_request(kind, bytes) {
        Ok(cmd) => {
            // What is journaled reads back the same.
            assert_eq!(EnrollCommand::from_journal(&cmd.to_journal()), Ok(cmd));
        }
        Err(e) => {
            let allowed: &[&str] = match kind {
                EnrollKind::Citizen => &["bad_request", "invalid_citizen_id", "invalid_iban"],
                EnrollKind::Card => &["bad_request", "invalid_hpan"],
                _ => &["bad_request"],
            };
            assert!(allowed.contains(&e.code.as_str()), "{kind:?}: {e:?}");
            assert!(!e.message.is_empty());
        }
    }
}

fn enrollment_samples() -> Vec<(EnrollKind, Vec<u8>)> {
    let t = "2021-01-01T09:00:00+01:00";
    let h = card(7);
    vec![
        (
            EnrollKind::Citizen,
            json!({"citizen_id": "c42", "iban": IBAN, "tc_accepted_at": t}),
        ),
        (
            EnrollKind::Card,
            json!({"citizen_id": "c42", "hpan": h, "activated_at": t}),
        ),
        (
            EnrollKind::CardRemove,
            json!({"citizen_id": "c42", "hpan": h, "deactivated_at": t}),
        ),
        (
            EnrollKind::CitizenRemove,
            json!({"citizen_id": "c42", "cancelled_at": t}),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_string().into_bytes()))
    .collect()
}

/// One cheap edit of a byte string.
#[derive(Clone, Debug)]
enum Edit {
    /// Overwrite the byte at (position mod length).
    Set(usize, u8),
    /// Insert a byte.
    Insert(usize, u8),
    /// Remove a byte.
    Remove(usize),
    /// Cut everything from the position on.
    Truncate(usize),
    /// Copy a slice of itself to another place (repeats keys and values).
    Splice(usize, usize, usize),
}

/// Bytes that matter to JSON and to the fields' shapes.
fn interesting_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        3 => any::<u8>(),
        2 => prop::sample::select(b"{}[]\",:\\ 0123456789-+.eEabcdefTZnultrs\x00\xff\xc3".to_vec()),
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (any::<usize>(), interesting_byte()).prop_map(|(p, b)| Edit::Set(p, b)),
        2 => (any::<usize>(), interesting_byte()).prop_map(|(p, b)| Edit::Insert(p, b)),
        2 => any::<usize>().prop_map(Edit::Remove),
        1 => any::<usize>().prop_map(Edit::Truncate),
        1 => (any::<usize>(), any::<usize>(), 0usize..40).prop_map(|(a, b, n)| Edit::Splice(a, b, n)),
    ]
}

fn apply(bytes: &mut Vec<u8>, edit: &Edit) {
    let n = bytes.len().max(1);
    match *edit {
        Edit::Set(p, b) if !bytes.is_empty() => bytes[p % n] = b,
        Edit::Insert(p, b) => bytes.insert(p % (bytes.len() + 1), b),
        Edit::Remove(p) if !bytes.is_empty() => {
            bytes.remove(p % n);
        }
        Edit::Truncate(p) => bytes.truncate(p % (bytes.len() + 1)),
        Edit::Splice(from, to, len) if !bytes.is_empty() => {
            let from = from % n;
            let piece: Vec<u8> = bytes[from..(from + len).min(bytes.len())].to_vec();
            let to = to % (bytes.len() + 1);
            bytes.splice(to..to, piece);
        }
        _ => {}
    }
}

/// Any JSON value, with strings around the protocol's length limits.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        "[0-9]{0,9}".prop_map(Value::String),
        "[0-9a-f]{63,65}".prop_map(Value::String),
        "\\PC{0,30}".prop_map(Value::String),
        (0usize..300, prop::sample::select(vec!['x', 'é', '€', '\u{1F600}']))
            .prop_map(|(n, c)| Value::String(std::iter::repeat_n(c, n).collect())),
        "20[0-9]{2}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,10})?(Z|[+-][0-9]{2}:[0-9]{2})"
            .prop_map(Value::String),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

use cashback_engine::authorization::FIELDS as AUTH_FIELDS;

/// Payloads per case of the byte-mutation tests: each case decodes the
/// sample after every one of its edits.
const EDITS_PER_CASE: usize = 32;

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, failure_persistence: None, ..ProptestConfig::default() })]

    /// 2,000 cases x (1 + 32 cumulative edits) of valid payments and
    /// reversals: 66,000 payloads.
    #[test]
    fn mutated_authorizations_never_panic(
        reversal in any::<bool>(),
        edits in prop::collection::vec(edit(), EDITS_PER_CASE),
    ) {
        let op = if reversal { "01" } else { "00" };
        let mut bytes = authorization(&card(1), "123456789", op, 3550).to_string().into_bytes();
        check_authorization(&bytes);
        for e in &edits {
            apply(&mut bytes, e);
            check_authorization(&bytes);
        }
    }

    /// 2,000 cases x 4 subjects x (1 + 8 cumulative edits): 72,000
    /// enrollment payloads.
    #[test]
    fn mutated_enrollments_never_panic(
        edits in prop::collection::vec(edit(), 8),
    ) {
        for (kind, sample) in enrollment_samples() {
            let mut bytes = sample;
            check_enrollment(kind, &bytes);
            for e in &edits {
                apply(&mut bytes, e);
                check_enrollment(kind, &bytes);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3_000, failure_persistence: None, ..ProptestConfig::default() })]

    /// 3,000 valid payments with up to three fields replaced by any JSON
    /// value (or removed), plus an unknown field: wrong types, lengths at
    /// and past the limits, odd times.
    #[test]
    fn authorizations_with_any_field_values_never_panic(
        changes in prop::collection::vec((0usize..16, prop::option::of(json_value())), 1..4),
        extra in json_value(),
    ) {
        let mut v = authorization(&card(1), "123456789", "00", 3550);
        for (field, value) in &changes {
            let name = AUTH_FIELDS[*field];
            match value {
                Some(value) => v[name] = value.clone(),
                None => { v.as_object_mut().unwrap().remove(name); }
            }
        }
        v["unknown"] = extra;
        check_authorization(v.to_string().as_bytes());
    }

    /// 3,000 x 4 x 2 enrollment requests with any values in their fields.
    #[test]
    fn enrollments_with_any_field_values_never_panic(
        a in json_value(), b in json_value(), c in json_value(), which in 0usize..3,
    ) {
        for (kind, sample) in enrollment_samples() {
            let mut v: Value = serde_json::from_slice(&sample).unwrap();
            let names: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            let name = &names[which % names.len()];
            v[name] = a.clone();
            v["extra"] = b.clone();
            check_enrollment(kind, v.to_string().as_bytes());
            check_enrollment(kind, c.to_string().as_bytes());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10_000, failure_persistence: None, ..ProptestConfig::default() })]

    /// 10,000 random byte strings through both decoders (50,000 payloads).
    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(interesting_byte(), 0..256)) {
        check_authorization(&bytes);
        for (kind, _) in EnrollKind::ALL {
            check_enrollment(kind, &bytes);
        }
    }
}

#[test]
fn oversize_bodies_are_refused_unparsed() {
    let d = Decoder::default();
    let mut v = authorization(&card(1), "1", "00", 1);
    v["padding"] = json!("x".repeat(d.max_payload_bytes));
    let r = d
        .decode_on("32875", v.to_string().as_bytes(), received())
        .unwrap_err();
    assert_eq!(r.reason, Reason::InvalidField);
    let big = vec![b'['; 10 * 1024 * 1024];
    assert_eq!(
        d.decode_on("32875", &big, received()).unwrap_err().reason,
        Reason::Malformed
    );
    let mut req = json!({"citizen_id": "c1", "cancelled_at": "2021-01-01T00:00:00Z"});
    req["padding"] = json!("x".repeat(5000));
    assert_eq!(
        parse_request(EnrollKind::CitizenRemove, req.to_string().as_bytes())
            .unwrap_err()
            .code
            .as_str(),
        "bad_request"
    );
}
