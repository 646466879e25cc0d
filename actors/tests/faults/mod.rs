//! Decide, then commit, under faults: a panic injected at each step of
//! deciding (a payment, a total and a partial reversal, the release of
//! parked reversals, a credit from another partition, an enrollment, an
//! exclusion) makes the real shard actors retry the item, and every citizen
//! ends exactly as `LocalEngine` leaves them with no fault at all: nothing
//! lost, nothing counted twice.
//!
//! The fault plan is process-wide, so every test of this binary that
//! installs one holds [`exclusive`].

use actix::{Addr, Arbiter, Supervisor};
use cashback_actors::supervision::retrying;
use cashback_actors::{CitizenShard, ShardBatch, StatementOf};
use cashback_engine::admin::ExclusionCommand;
use cashback_engine::authorization::Decoder;
use cashback_engine::enrollment::EnrollCommand;
use cashback_engine::fault::{self, Fault, Point};
use cashback_engine::item::{ExclusionOp, ExclusionOutcome, Item, Origin};
use cashback_engine::local::LocalEngine;
use cashback_engine::parking::ParkingLimits;
use cashback_engine::partition::partition_of;
use cashback_engine::period::{AwardPeriod, Periods};
use cashback_engine::router::{Position, Routed, Router};
use cashback_engine::settings::Settings;
use cashback_engine::time::Timestamp;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex, MutexGuard};

/// Serializes the tests that install faults; clears the plan when dropped.
pub struct Exclusive(#[allow(dead_code)] MutexGuard<'static, ()>);

impl Drop for Exclusive {
    fn drop(&mut self) {
        fault::clear();
    }
}

/// Holds the fault plan for the calling test.
pub fn exclusive() -> Exclusive {
    static LOCK: Mutex<()> = Mutex::new(());
    let guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    fault::clear();
    Exclusive(guard)
}

const PARTITIONS: u16 = 8;
const SHARDS: usize = 2;

fn periods() -> Arc<Periods> {
    let (start, end) = ("2021-01-01".parse().unwrap(), "2021-06-30".parse().unwrap());
    Arc::new(Periods::new(vec![AwardPeriod::with_2021_rules("P", start, end)]).unwrap())
}

fn settings() -> Arc<Settings> {
    Arc::new(Settings {
        periods: periods(),
        partitions: PARTITIONS,
        park_days: 30,
        limits: ParkingLimits::new(100, 200_000, PARTITIONS),
        max_authorization_bytes: 16384,
    })
}

/// One message of the log.
#[derive(Clone)]
enum Msg {
    Enroll(EnrollCommand),
    Auth(Value),
    Exclusion(ExclusionOp, ExclusionCommand),
}

fn hpan(c: char) -> String {
    c.to_string().repeat(64)
}

fn auth(op: &str, card: char, id: &str, trx: &str, cents: u64, corr: Option<&str>) -> Msg {
    Msg::Auth(json!({
        "acquirer_code": "32875", "operation_type": op, "circuit_type": "01",
        "hpan": hpan(card), "trx_date": trx, "id_trx_acquirer": id,
        "correlation_id": corr, "total_amount": cents, "currency": "978",
        "acquirer_id": "4567", "merchant_id": "M1", "terminal_id": "T1",
        "bin": "40000000", "mcc": "5411"
    }))
}

fn citizen(id: &str) -> Msg {
    Msg::Enroll(EnrollCommand::Citizen {
        citizen_id: id.into(),
        iban: "IT60X0542811101000000123456".into(),
        tc_accepted_at: "2021-01-01T00:00:00Z".into(),
    })
}

fn card(id: &str, c: char, at: &str) -> Msg {
    Msg::Enroll(EnrollCommand::Card {
        citizen_id: id.into(),
        hpan: hpan(c),
        activated_at: at.into(),
    })
}

fn exclusion(op: ExclusionOp, c: char, id: &str, trx: &str) -> Msg {
    Msg::Exclusion(
        op,
        ExclusionCommand {
            hpan: hpan(c),
            acquirer_code: "32875".into(),
            acquirer_id: "4567".into(),
            id_trx_acquirer: id.into(),
            operation_type: "00".into(),
            trx_date: trx.into(),
            reason: "test".into(),
        },
    )
}

/// Citizens of the scenario: alice, and bob in another partition.
fn people() -> (String, String) {
    let alice = "alice".to_string();
    let bob = (0..)
        .map(|i| format!("bob{i}"))
        .find(|b| partition_of(b, PARTITIONS) != partition_of(&alice, PARTITIONS))
        .unwrap();
    (alice, bob)
}

/// The log, and the sequence of the message each fault point is aimed at.
fn scenario() -> (Vec<Msg>, Vec<(Point, u64)>) {
    let (alice, bob) = people();
    let log = vec![
        citizen(&alice),                                                 // 1
        citizen(&bob),                                                   // 2
        card(&alice, 'a', "2021-01-01T00:00:00Z"),                       // 3
        card(&bob, 'b', "2021-01-01T00:00:00Z"),                         // 4
        auth("00", 'a', "p1", "2021-03-01T10:00:00Z", 1000, Some("K1")), // 5
        auth("01", 'a', "r1", "2021-03-01T11:00:00Z", 400, Some("K1")),  // 6 partial
        auth("00", 'b', "p2", "2021-03-02T10:00:00Z", 2000, None),       // 7
        auth("01", 'b', "r2", "2021-03-02T11:00:00Z", 2000, None),       // 8 total
        auth("01", 'a', "r3", "2021-03-03T09:00:00Z", 300, Some("K3")),  // 9 parks
        auth("01", 'a', "r4", "2021-03-03T09:30:00Z", 300, Some("K3")),  // 10 parks
        auth("00", 'a', "p3", "2021-03-03T08:00:00Z", 500, Some("K3")), // 11 releases r3, r4 exceeds
        Msg::Enroll(EnrollCommand::CardRemove {
            citizen_id: alice.clone(),
            hpan: hpan('a'),
            deactivated_at: "2021-03-10T00:00:00Z".into(),
        }), // 12
        card(&bob, 'a', "2021-03-10T00:00:00Z"),                        // 13
        auth("00", 'a', "p4", "2021-03-15T10:00:00Z", 800, None), // 14 credit to bob's partition
        auth("01", 'a', "r5", "2021-03-15T11:00:00Z", 800, None), // 15 reversed: credit -1
        exclusion(ExclusionOp::Exclude, 'a', "p1", "2021-03-01T10:00:00Z"), // 16
        citizen("carol"),                                         // 17
        card("carol", 'c', "2021-01-01T00:00:00Z"),               // 18
        auth("00", 'c', "p5", "2021-03-16T10:00:00Z", 1500, None), // 19
        exclusion(ExclusionOp::Reinstate, 'a', "p1", "2021-03-01T10:00:00Z"), // 20
        auth("00", 'a', "p1", "2021-03-01T10:00:00Z", 1000, Some("K1")), // 21 duplicate
    ];
    let aims = vec![
        (Point::Payment, 5),
        (Point::Reversal, 6),
        (Point::Reversal, 8),
        (Point::Release, 11),
        (Point::Credit, 14),
        (Point::Credit, 15),
        (Point::Exclusion, 16),
        (Point::Enrollment, 17),
        (Point::Exclusion, 20),
    ];
    (log, aims)
}

fn at(seq: u64) -> Position {
    Position {
        seq,
        broker_time: Timestamp::parse_rfc3339("2021-03-20T00:00:00Z")
            .unwrap()
            .plus_secs(seq as i64),
    }
}

/// A citizen's statement: (seq, balance, excluded) of each line.
type Statement = (String, Vec<(u64, u64, bool)>);

/// What both engines are compared on.
#[derive(Debug, PartialEq)]
struct Outcome {
    /// (citizen, count, cashback, last_trx) of every citizen.
    standings: Vec<(String, u32, String, Option<Timestamp>)>,
    /// (citizen, [(seq, balance, excluded)]) statements.
    statements: Vec<Statement>,
    /// (seq, reason), sorted.
    rejections: Vec<(u64, &'static str)>,
    /// Operators' answers, by journal sequence.
    exclusions: Vec<(u64, ExclusionOutcome)>,
    /// Credits set aside (their decision kept failing).
    credits_set_aside: u64,
}

fn citizens() -> Vec<String> {
    let (alice, bob) = people();
    vec![alice, bob, "carol".into()]
}

/// The reference: every message applied once, no fault.
fn reference(log: &[Msg]) -> Outcome {
    let mut e = LocalEngine::new(PARTITIONS, periods(), 30);
    for (i, msg) in log.iter().enumerate() {
        let at = at(i as u64 + 1);
        match msg {
            Msg::Enroll(cmd) => e.enroll(at, cmd).map_or((), |_| ()),
            Msg::Auth(v) => e.authorization(at, "cashback.auth.32875", v.to_string().as_bytes()),
            Msg::Exclusion(op, cmd) => {
                // Its outcome is read back from `e.exclusions` below.
                let _ = e.exclusion(at, *op, cmd);
            }
        }
    }
    let standings = citizens()
        .into_iter()
        .map(|c| {
            let s = e.standing(&c, "P").unwrap_or_default();
            (c, s.count, s.cashback.to_string(), s.last_trx)
        })
        .collect();
    let statements = citizens()
        .into_iter()
        .map(|c| {
            let idx = e.router.directory().find(&c).unwrap();
            let mut lines = Vec::new();
            for l in &e.ledgers {
                l.statement_lines(idx, 0, &mut lines);
            }
            lines.sort_by_key(|l| l.seq);
            (
                c,
                lines
                    .iter()
                    .map(|l| (l.seq, l.balance, l.excluded))
                    .collect(),
            )
        })
        .collect();
    let mut rejections: Vec<_> = e
        .rejections
        .iter()
        .map(|(s, r)| (*s, r.reason.as_str()))
        .collect();
    rejections.sort();
    Outcome {
        standings,
        statements,
        rejections,
        exclusions: e.exclusions.iter().map(|(s, _, o)| (*s, *o)).collect(),
        credits_set_aside: 0,
    }
}

/// The real shards, fed one message at a time by the router as the
/// pipeline feeds them, with the router's steps retried as the pipeline
/// retries them.
struct Actors {
    router: Router,
    decoder: Decoder,
    shards: Vec<Addr<CitizenShard>>,
    rejections: Vec<(u64, &'static str)>,
    exclusions: Vec<(u64, ExclusionOutcome)>,
    credits_set_aside: u64,
}

impl Actors {
    fn start(arbiter: &Arbiter) -> Actors {
        let s = settings();
        Actors {
            router: Router::new(PARTITIONS, s.periods.clone(), s.park_days, s.limits),
            decoder: Decoder::default(),
            shards: (0..SHARDS)
                .map(|i| {
                    let s = s.clone();
                    Supervisor::start_in_arbiter(&arbiter.handle(), move |_| {
                        CitizenShard::new(i, s)
                    })
                })
                .collect(),
            rejections: Vec::new(),
            exclusions: Vec::new(),
            credits_set_aside: 0,
        }
    }

    async fn deliver(&mut self, mut items: Vec<(u16, Item)>) {
        while !items.is_empty() {
            let mut per_shard: Vec<Vec<(u16, Item)>> = vec![Vec::new(); SHARDS];
            for (p, item) in items.drain(..) {
                per_shard[p as usize % SHARDS].push((p, item));
            }
            for (shard, batch) in per_shard.into_iter().enumerate() {
                if batch.is_empty() {
                    continue;
                }
                let report = self.shards[shard]
                    .send(ShardBatch {
                        items: batch,
                        now: Some(self.router.now()),
                    })
                    .await
                    .expect("the shard is supervised and stays up");
                items.extend(self.router.deliver(&report.credits));
                self.rejections.extend(
                    report
                        .rejections
                        .iter()
                        .map(|l| (l.seq, l.rejection.reason.as_str())),
                );
                self.exclusions
                    .extend(report.exclusions.iter().map(|(s, _, o)| (*s, *o)));
                // A fault breaks an invariant only by setting a credit
                // aside (a later reversal's credit then lowers a count the
                // missing credit never raised).
                self.credits_set_aside += report.credits_set_aside;
                assert!(
                    self.credits_set_aside > 0 || report.invariant_violations.is_empty(),
                    "{:?}",
                    report.invariant_violations
                );
            }
        }
    }

    async fn run(&mut self, log: &[Msg]) {
        for (i, msg) in log.iter().enumerate() {
            let at = at(i as u64 + 1);
            for (_, late) in self.router.advance(at.broker_time) {
                self.rejections
                    .push((late.seq, late.rejection.reason.as_str()));
            }
            match msg {
                Msg::Enroll(cmd) => {
                    let (_, items) = retrying("an enrollment", || self.router.enroll(at, cmd))
                        .expect("a fault injected once is survived");
                    self.deliver(items).await;
                }
                Msg::Auth(v) => {
                    let payload = v.to_string();
                    let auth = self
                        .decoder
                        .decode_on("32875", payload.as_bytes(), at.broker_time)
                        .unwrap();
                    let origin = |_kept: bool| Origin {
                        subject: "cashback.auth.32875".into(),
                        payload: payload.clone().into(),
                    };
                    match self.router.route(at, &auth, origin) {
                        Routed::Reject { rejection, .. } => {
                            self.rejections.push((at.seq, rejection.reason.as_str()))
                        }
                        Routed::Forward(p, item) => self.deliver(vec![(p, item)]).await,
                        Routed::ParkedHere => {}
                    }
                }
                Msg::Exclusion(op, cmd) => match self.router.exclusion(at, *op, cmd) {
                    Err(_) => self.exclusions.push((
                        at.seq,
                        Err(cashback_engine::refusal::ErrorCode::UnknownPayment),
                    )),
                    Ok((p, item)) => self.deliver(vec![(p, item)]).await,
                },
            }
        }
    }

    async fn outcome(&mut self) -> Outcome {
        let mut standings = Vec::new();
        let mut statements = Vec::new();
        for c in citizens() {
            let idx = self.router.directory().find(&c).unwrap();
            let partition = partition_of(&c, PARTITIONS);
            let found = self.shards[partition as usize % SHARDS]
                .send(cashback_actors::LookupCitizen {
                    partition,
                    citizen_id: c.clone(),
                    period: 0,
                })
                .await
                .unwrap();
            let s = match found {
                cashback_actors::Lookup::Found(_, s) => s,
                cashback_actors::Lookup::Unknown => Default::default(),
            };
            standings.push((c.clone(), s.count, s.cashback.to_string(), s.last_trx));
            let mut lines = Vec::new();
            for shard in &self.shards {
                lines.extend(
                    shard
                        .send(StatementOf {
                            citizen: idx,
                            period: 0,
                        })
                        .await
                        .unwrap(),
                );
            }
            lines.sort_by_key(|l| l.seq);
            statements.push((
                c,
                lines
                    .iter()
                    .map(|l| (l.seq, l.balance, l.excluded))
                    .collect(),
            ));
        }
        let mut rejections = self.rejections.clone();
        rejections.sort();
        Outcome {
            standings,
            statements,
            rejections,
            exclusions: self.exclusions.clone(),
            credits_set_aside: self.credits_set_aside,
        }
    }
}

async fn with_fault(point: Point, seq: u64, times: u32) -> Outcome {
    let (log, _) = scenario();
    fault::clear();
    fault::install([Fault { point, seq, times }]);
    let arbiter = Arbiter::new();
    let mut actors = Actors::start(&arbiter);
    actors.run(&log).await;
    let out = actors.outcome().await;
    arbiter.stop();
    out
}

#[actix::test]
async fn the_scenario_means_something() {
    let _plan = exclusive();
    let (log, _) = scenario();
    let want = reference(&log);
    let (alice, bob) = people();
    // alice: p1 (10.00, 6.00 left after r1; excluded then reinstated) and
    // p3 (5.00, r3 took 3.00): 0.60 + 0.20; r4 exceeded; her p4/r5 moved
    // with the card to bob. bob: p2 reversed to 0, p4 reversed to 0.
    assert_eq!(
        want.standings[0],
        (alice, 2, "0.80".into(), want.standings[0].3)
    );
    assert_eq!(want.standings[1].0, bob);
    assert_eq!(
        (want.standings[1].1, want.standings[1].2.as_str()),
        (0, "0.00")
    );
    assert_eq!(
        (want.standings[2].1, want.standings[2].2.as_str()),
        (1, "1.50")
    );
    assert!(want.rejections.contains(&(10, "reversal_exceeds_original")));
    assert!(want.rejections.contains(&(21, "duplicate")));
    assert_eq!(want.exclusions, vec![(16, Ok(true)), (20, Ok(true))]);
    // With no fault, the actors agree.
    let arbiter = Arbiter::new();
    let mut actors = Actors::start(&arbiter);
    actors.run(&log).await;
    assert_eq!(actors.outcome().await, want);
    arbiter.stop();
}

#[actix::test]
async fn a_panic_at_any_step_of_deciding_is_retried_and_counted_once() {
    let _plan = exclusive();
    let (log, aims) = scenario();
    let want = reference(&log);
    for (point, seq) in aims {
        let got = with_fault(point, seq, 1).await;
        assert_eq!(got, want, "fault at {} of seq {seq}", point.name());
    }
}

#[actix::test]
async fn a_message_that_always_fails_is_set_aside_as_if_rejected() {
    let _plan = exclusive();
    let (log, _) = scenario();
    // The payment p5 of carol (seq 19) always fails: set aside, rejected
    // internal_error, and everything else as if it had been rejected.
    let got = with_fault(Point::Payment, 19, u32::MAX).await;
    let mut without = log.clone();
    without[18] = Msg::Auth(json!({"not": "an authorization"}));
    let mut want = reference(&without);
    for r in &mut want.rejections {
        if r.0 == 19 {
            r.1 = "internal_error";
        }
    }
    assert_eq!(got, want);
}

#[actix::test]
async fn a_credit_that_always_fails_is_reported_set_aside() {
    let _plan = exclusive();
    // The credit of seq 14 always fails: the citizen misses it, and the
    // report says so, which is what withholds the pipeline's snapshots (one
    // taken past it would drop it for good; a restart replays it).
    let (log, _) = scenario();
    let want = reference(&log);
    let got = with_fault(Point::Credit, 14, u32::MAX).await;
    fault::clear();
    assert_eq!(got.credits_set_aside, 1);
    assert_ne!(got.standings, want.standings, "the credit is missing");
    assert_eq!(got.rejections, want.rejections);
}
