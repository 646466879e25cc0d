//! Table-driven scenario tests of every rule of RULES.md, at its edges,
//! through `LocalEngine` only (the reference the actor pipeline must agree with).
//!
//! Each test builds a small log (enrollments and authorizations, each with its
//! own stream sequence and broker time) and checks, message by message, the
//! verdict ("ok" when it counted, was applied or was parked, else the rejection
//! reason) and the exact standing (count, cashback, last_trx_date).

use cashback_engine::enrollment::EnrollCommand;
use cashback_engine::ledger::Standing;
use cashback_engine::local::LocalEngine;
use cashback_engine::partition::partition_of;
use cashback_engine::period::{AwardPeriod, Periods};
use cashback_engine::query::payable;
use cashback_engine::router::Position;
use cashback_engine::time::Timestamp;
use cashback_engine::Decimal;
use serde_json::{json, Value};
use std::sync::Arc;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

const PARTITIONS: u16 = 256;
const PARK_DAYS: u32 = 30;
const DAY: i64 = 86_400;
const IBAN: &str = "IT60X0542811101000000123456";
const IBAN2: &str = "DE89370400440532013000";
const H1: &str = "2021H1";
const XMAS: &str = "2020XMAS";
/// A broker time after every H1 trx_date used below, inside H1's grace.
const LATE: &str = "2021-07-01T12:00:00Z";

fn ts(s: &str) -> Timestamp {
    Timestamp::parse_rfc3339(s).unwrap_or_else(|| panic!("bad time {s}"))
}

fn dec(s: &str) -> Decimal {
    s.parse().unwrap_or_else(|_| panic!("bad decimal {s}"))
}

/// A card's hpan: 64 lower-case hex characters.
fn card(n: u32) -> String {
    format!("{n:064x}")
}

/// A period with the 2021 rules (10%, 15.00 per payment, 150.00, 50 payments).
fn period(id: &str, start: &str, end: &str) -> AwardPeriod {
    AwardPeriod {
        id: id.into(),
        start: start.parse().unwrap(),
        end: end.parse().unwrap(),
        grace_days: 10,
        min_transactions: 50,
        cashback_rate: dec("0.10"),
        max_cashback_per_transaction: dec("15.00"),
        max_cashback: dec("150.00"),
        supercashback_winners: 100_000,
        supercashback_prize: dec("1500.00"),
        max_payments_per_merchant_day: 0,
    }
}

fn h1() -> AwardPeriod {
    period(H1, "2021-01-01", "2021-06-30")
}

fn xmas() -> AwardPeriod {
    AwardPeriod {
        min_transactions: 10,
        supercashback_winners: 0,
        supercashback_prize: dec("0.00"),
        ..period(XMAS, "2020-12-08", "2020-12-31")
    }
}

fn st(count: u32, cashback: &str, last: Option<&str>) -> Standing {
    Standing {
        count,
        cashback: dec(cashback),
        last_trx: last.map(ts),
    }
}

/// An authorization: acquirer 32875/4567, merchant M1, terminal T1, EUR, MCC 5411.
fn auth(op: &str, hpan: &str, id: &str, trx: &str, cents: u64) -> Value {
    json!({
        "acquirer_code": "32875",
        "operation_type": op,
        "circuit_type": "01",
        "hpan": hpan,
        "trx_date": trx,
        "id_trx_acquirer": id,
        "id_trx_issuer": "AUTH01",
        "correlation_id": null,
        "total_amount": cents,
        "currency": "978",
        "acquirer_id": "4567",
        "merchant_id": "M1",
        "terminal_id": "T1",
        "bin": "40000000",
        "mcc": "5411",
        "par": null
    })
}

/// A payment ("00").
fn pay(hpan: &str, id: &str, trx: &str, cents: u64) -> Value {
    auth("00", hpan, id, trx, cents)
}

/// A reversal ("01").
fn rev(hpan: &str, id: &str, trx: &str, cents: u64) -> Value {
    auth("01", hpan, id, trx, cents)
}

/// Field edits on a payload.
trait Edit {
    fn with(self, field: &str, value: impl Into<Value>) -> Value;
    fn without(self, field: &str) -> Value;
    fn corr(self, correlation_id: &str) -> Value;
}

impl Edit for Value {
    fn with(mut self, field: &str, value: impl Into<Value>) -> Value {
        self[field] = value.into();
        self
    }
    fn without(mut self, field: &str) -> Value {
        self.as_object_mut().unwrap().remove(field);
        self
    }
    fn corr(self, correlation_id: &str) -> Value {
        self.with("correlation_id", correlation_id)
    }
}

fn enroll_citizen(id: &str, iban: &str, tc: &str) -> EnrollCommand {
    EnrollCommand::Citizen {
        citizen_id: id.into(),
        iban: iban.into(),
        tc_accepted_at: tc.into(),
    }
}

fn enroll_card(id: &str, hpan: &str, at: &str) -> EnrollCommand {
    EnrollCommand::Card {
        citizen_id: id.into(),
        hpan: hpan.into(),
        activated_at: at.into(),
    }
}

fn remove_card(id: &str, hpan: &str, at: &str) -> EnrollCommand {
    EnrollCommand::CardRemove {
        citizen_id: id.into(),
        hpan: hpan.into(),
        deactivated_at: at.into(),
    }
}

fn withdraw(id: &str, at: &str) -> EnrollCommand {
    EnrollCommand::CitizenRemove {
        citizen_id: id.into(),
        cancelled_at: at.into(),
    }
}

/// A `LocalEngine` fed one log message at a time, with its own stream
/// sequence and a broker clock set by the test.
struct Sim {
    engine: LocalEngine,
    periods: Arc<Periods>,
    seq: u64,
    clock: Timestamp,
    seen: usize,
}

impl Sim {
    fn new(periods: Vec<AwardPeriod>) -> Sim {
        let periods = Arc::new(Periods::new(periods).expect("valid periods"));
        Sim {
            engine: LocalEngine::new(PARTITIONS, periods.clone(), PARK_DAYS),
            periods,
            seq: 0,
            clock: ts("2020-01-01T00:00:00Z"),
            seen: 0,
        }
    }

    /// `alice` (T&C 2020-01-01) with card 0xA active since 2020-01-01; the
    /// clock is then set to `LATE`.
    fn alice(periods: Vec<AwardPeriod>) -> Sim {
        let mut s = Sim::new(periods);
        s.ok(enroll_citizen("alice", IBAN, "2020-01-01T00:00:00Z"));
        s.ok(enroll_card("alice", &card(0xA), "2020-01-01T00:00:00Z"));
        s.at(LATE);
        s
    }

    /// Sets the broker time of the next messages.
    fn at(&mut self, broker: &str) -> &mut Sim {
        self.clock = ts(broker);
        self
    }

    /// Moves the broker clock by `secs`.
    fn later(&mut self, secs: i64) -> &mut Sim {
        self.clock = self.clock.plus_secs(secs);
        self
    }

    fn position(&mut self) -> Position {
        self.seq += 1;
        Position {
            seq: self.seq,
            broker_time: self.clock,
        }
    }

    /// Applies an enrollment journal entry; the error code on refusal.
    fn enroll(&mut self, cmd: EnrollCommand) -> Result<(), &'static str> {
        let at = self.position();
        self.engine.enroll(at, &cmd).map_err(|e| e.code.as_str())
    }

    /// Applies an enrollment that must succeed.
    fn ok(&mut self, cmd: EnrollCommand) {
        let shown = format!("{cmd:?}");
        assert_eq!(self.enroll(cmd), Ok(()), "{shown}");
    }

    /// Processes raw bytes; returns every rejection this caused, (seq, reason).
    fn send_raw(&mut self, payload: &[u8]) -> Vec<(u64, &'static str)> {
        let at = self.position();
        let subject = serde_json::from_slice::<Value>(payload)
            .ok()
            .and_then(|v| {
                v["acquirer_code"]
                    .as_str()
                    .map(|c| format!("cashback.auth.{c}"))
            })
            .unwrap_or_else(|| "cashback.auth.32875".into());
        self.engine.authorization(at, &subject, payload);
        self.new_rejections()
    }

    /// Processes one authorization; returns every rejection this caused.
    fn send(&mut self, v: &Value) -> Vec<(u64, &'static str)> {
        self.send_raw(v.to_string().as_bytes())
    }

    /// Processes one authorization and returns its own verdict: "ok" (counted,
    /// applied or parked) or its rejection reason. Fails if it made any other
    /// message be rejected.
    fn verdict(&mut self, v: &Value) -> &'static str {
        let got = self.send(v);
        self.own(got, v)
    }

    fn verdict_raw(&mut self, payload: &[u8]) -> &'static str {
        let got = self.send_raw(payload);
        self.own(got, &json!(String::from_utf8_lossy(payload)))
    }

    fn own(&self, got: Vec<(u64, &'static str)>, v: &Value) -> &'static str {
        match got.as_slice() {
            [] => "ok",
            [(seq, reason)] if *seq == self.seq => reason,
            other => panic!(
                "seq {} ({v}) caused unexpected rejections {other:?}",
                self.seq
            ),
        }
    }

    /// Rejections decided since the last call.
    fn new_rejections(&mut self) -> Vec<(u64, &'static str)> {
        let out = self.engine.rejections[self.seen..]
            .iter()
            .map(|(seq, r)| (*seq, r.reason.as_str()))
            .collect();
        self.seen = self.engine.rejections.len();
        out
    }

    fn standing(&self, citizen: &str, period: &str) -> Standing {
        self.engine
            .standing(citizen, period)
            .unwrap_or_else(|| panic!("no standing for {citizen} in {period}"))
    }

    fn payable(&self, citizen: &str, period: &str) -> Decimal {
        let p = self.periods.get(self.periods.by_id(period).unwrap());
        payable(&self.standing(citizen, period), p)
    }
}

/// A citizen id whose partition differs from `of`'s.
fn in_other_partition(of: &str) -> String {
    (0..)
        .map(|i| format!("bob-{i}"))
        .find(|id| partition_of(id, PARTITIONS) != partition_of(of, PARTITIONS))
        .unwrap()
}

// ---------------------------------------------------------------------------
// Cashback per payment, payable amount
// ---------------------------------------------------------------------------

#[test]
fn score_per_payment_is_capped_and_rounded_half_down() {
    let a = card(0xA);
    let rows: &[(u64, &str)] = &[
        (1255, "1.25"),   // 1.255 -> tie toward zero
        (1256, "1.26"),   // 1.256 -> up, never truncated
        (1254, "1.25"),   // 1.254
        (1, "0.00"),      // 0.001
        (5, "0.00"),      // 0.005: tie toward zero
        (6, "0.01"),      // 0.006
        (14995, "14.99"), // 14.995: tie toward zero
        (14999, "15.00"), // 14.999 rounds up to the cap
        (15000, "15.00"), // 150.00 EUR: exactly the cap
        (15001, "15.00"), // 150.01 EUR: capped
        (100_000_000, "15.00"),
        (i64::MAX as u64, "15.00"),
    ];
    let mut all = Sim::alice(vec![h1()]);
    for (i, &(cents, want)) in rows.iter().enumerate() {
        let mut s = Sim::alice(vec![h1()]);
        let trx = "2021-03-14T10:00:00Z";
        assert_eq!(s.verdict(&pay(&a, "p", trx, cents)), "ok", "{cents}");
        assert_eq!(
            s.standing("alice", H1),
            st(1, want, Some(trx)),
            "{cents} cents"
        );
        assert_eq!(all.verdict(&pay(&a, &format!("p{i}"), trx, cents)), "ok");
    }
    // Every payment counts, even one worth 0.00; scores add up exactly.
    assert_eq!(
        all.standing("alice", H1),
        st(12, "93.76", Some("2021-03-14T10:00:00Z"))
    );
}

#[test]
fn payable_needs_min_transactions_and_is_capped_at_max_cashback() {
    let a = card(0xA);
    let small = AwardPeriod {
        min_transactions: 3,
        max_cashback: dec("20.00"),
        ..period("SMALL", "2021-01-01", "2021-06-30")
    };
    let mut s = Sim::alice(vec![small]);
    // (message, verdict, count, cashback, payable)
    let rows: Vec<(Value, &str, u32, &str, &str)> = vec![
        (
            pay(&a, "p1", "2021-03-01T10:00:00Z", 15000),
            "ok",
            1,
            "15.00",
            "0.00",
        ),
        (
            pay(&a, "p2", "2021-03-02T10:00:00Z", 15001),
            "ok",
            2,
            "30.00",
            "0.00",
        ),
        (
            pay(&a, "p3", "2021-03-03T10:00:00Z", 1255),
            "ok",
            3,
            "31.25",
            "20.00",
        ),
        // A total reversal of the 12.55 payment: back under the threshold.
        (
            rev(&a, "r3", "2021-03-04T10:00:00Z", 1255),
            "ok",
            2,
            "30.00",
            "0.00",
        ),
        (
            pay(&a, "p4", "2021-03-05T10:00:00Z", 10),
            "ok",
            3,
            "30.01",
            "20.00",
        ),
    ];
    for (i, (msg, want, count, cashback, payable)) in rows.into_iter().enumerate() {
        assert_eq!(s.verdict(&msg), want, "row {i}");
        let got = s.standing("alice", "SMALL");
        assert_eq!((got.count, got.cashback), (count, dec(cashback)), "row {i}");
        assert_eq!(s.payable("alice", "SMALL"), dec(payable), "row {i}");
    }

    // The 2021 values: 50 payments needed, at most 150.00 payable.
    let mut s = Sim::alice(vec![h1()]);
    for i in 0..49 {
        assert_eq!(
            s.verdict(&pay(&a, &format!("a{i}"), "2021-02-01T10:00:00Z", 1000)),
            "ok"
        );
    }
    assert_eq!(s.standing("alice", H1).count, 49);
    assert_eq!(s.payable("alice", H1), dec("0.00"));
    assert_eq!(
        s.verdict(&pay(&a, "a49", "2021-02-01T10:00:00Z", 1000)),
        "ok"
    );
    assert_eq!(s.payable("alice", H1), dec("50.00"));
    for i in 0..100 {
        assert_eq!(
            s.verdict(&pay(&a, &format!("b{i}"), "2021-02-02T10:00:00Z", 20000)),
            "ok"
        );
    }
    assert_eq!(
        s.standing("alice", H1),
        st(150, "1550.00", Some("2021-02-02T10:00:00Z"))
    );
    assert_eq!(s.payable("alice", H1), dec("150.00"));
}

// ---------------------------------------------------------------------------
// Cards: activation windows, moves, re-enrollment
// ---------------------------------------------------------------------------

#[test]
fn card_activation_window_edges() {
    let a = card(0xA);
    let mut s = Sim::new(vec![h1()]);
    s.ok(enroll_citizen("alice", IBAN, "2020-01-01T00:00:00Z"));
    s.ok(enroll_card("alice", &a, "2021-02-01T10:00:00+01:00")); // 09:00Z
    s.ok(remove_card("alice", &a, "2021-04-01T00:00:00Z"));
    s.at(LATE);
    let rows: &[(&str, &str)] = &[
        ("2021-02-01T08:59:59Z", "card_not_active"), // one second before
        ("2021-02-01T08:59:59.999999999Z", "card_not_active"),
        ("2021-02-01T09:00:00Z", "ok"),      // exactly at activation
        ("2021-02-01T10:00:00+01:00", "ok"), // same instant, other text: other key
        ("2021-03-31T23:59:59.999999999Z", "ok"),
        ("2021-04-01T00:00:00Z", "card_not_active"), // at deactivated_at
        ("2021-04-01T02:00:00+02:00", "card_not_active"), // same instant
        ("2021-05-01T00:00:00Z", "card_not_active"),
    ];
    for (i, &(trx, want)) in rows.iter().enumerate() {
        assert_eq!(
            s.verdict(&pay(&a, &format!("w{i}"), trx, 1000)),
            want,
            "{trx}"
        );
    }
    assert_eq!(
        s.standing("alice", H1),
        st(3, "3.00", Some("2021-03-31T23:59:59.999999999Z"))
    );
    // A card nobody ever enrolled.
    assert_eq!(
        s.verdict(&pay(&card(0xDEAD), "x", "2021-03-01T00:00:00Z", 1000)),
        "card_not_enrolled"
    );
}

#[test]
fn card_moved_to_another_citizen() {
    let a = card(0xA);
    let mut s = Sim::new(vec![h1()]);
    s.ok(enroll_citizen("alice", IBAN, "2020-01-01T00:00:00Z"));
    s.ok(enroll_citizen("bob", IBAN2, "2020-01-01T00:00:00Z"));
    s.ok(enroll_card("alice", &a, "2021-01-01T00:00:00Z"));
    // One card belongs to at most one citizen at a time.
    assert_eq!(
        s.enroll(enroll_card("bob", &a, "2021-03-01T00:00:00Z")),
        Err("card_owned_by_other_citizen")
    );
    assert_eq!(
        s.enroll(remove_card("bob", &a, "2021-03-01T00:00:00Z")),
        Err("unknown_card")
    );
    s.ok(remove_card("alice", &a, "2021-03-01T00:00:00Z"));
    s.ok(enroll_card("bob", &a, "2021-03-01T00:00:00Z"));
    // Removing again changes nothing (idempotent).
    s.ok(remove_card("alice", &a, "2021-05-01T00:00:00Z"));
    s.at(LATE);
    // All processed after the move; each counts for the owner at trx_date.
    let rows: &[(&str, u64, &str, u32, u32)] = &[
        // (trx_date, cents, verdict, alice count, bob count)
        ("2021-02-28T23:59:59Z", 1000, "ok", 1, 0),
        ("2021-03-01T00:00:00Z", 2000, "ok", 1, 1),
        ("2021-01-15T10:00:00Z", 3000, "ok", 2, 1), // late, for the first owner
        ("2021-06-01T10:00:00Z", 4000, "ok", 2, 2),
        ("2020-12-31T23:59:59Z", 1000, "card_not_active", 2, 2),
    ];
    for (i, &(trx, cents, want, na, nb)) in rows.iter().enumerate() {
        assert_eq!(
            s.verdict(&pay(&a, &format!("m{i}"), trx, cents)),
            want,
            "{trx}"
        );
        assert_eq!(s.standing("alice", H1).count, na, "{trx}");
        assert_eq!(s.standing("bob", H1).count, nb, "{trx}");
    }
    assert_eq!(
        s.standing("alice", H1),
        st(2, "4.00", Some("2021-02-28T23:59:59Z"))
    );
    assert_eq!(
        s.standing("bob", H1),
        st(2, "6.00", Some("2021-06-01T10:00:00Z"))
    );
    // A reversal refers to the payment whoever owned the card then.
    assert_eq!(s.verdict(&rev(&a, "r", "2021-06-05T10:00:00Z", 3000)), "ok");
    assert_eq!(
        s.standing("alice", H1),
        st(1, "1.00", Some("2021-02-28T23:59:59Z"))
    );
    assert_eq!(
        s.standing("bob", H1),
        st(2, "6.00", Some("2021-06-01T10:00:00Z"))
    );
}

#[test]
fn reenrolling_a_card_after_removal_opens_a_new_window() {
    let a = card(0xA);
    let mut s = Sim::new(vec![h1()]);
    s.ok(enroll_citizen("alice", IBAN, "2020-01-01T00:00:00Z"));
    s.ok(enroll_card("alice", &a, "2021-01-01T00:00:00Z"));
    // Already active for the same citizen: changes nothing (not backdated).
    s.ok(enroll_card("alice", &a, "2020-06-01T00:00:00Z"));
    s.ok(remove_card("alice", &a, "2021-02-01T00:00:00Z"));
    s.ok(enroll_card("alice", &a, "2021-03-01T00:00:00Z"));
    // Active again: this enrollment changes nothing either.
    s.ok(enroll_card("alice", &a, "2021-02-10T00:00:00Z"));
    s.at(LATE);
    let rows: &[(&str, &str)] = &[
        ("2020-12-31T23:59:59Z", "card_not_active"),
        ("2021-01-01T00:00:00Z", "ok"),
        ("2021-01-31T23:59:59Z", "ok"),
        ("2021-02-01T00:00:00Z", "card_not_active"),
        ("2021-02-15T00:00:00Z", "card_not_active"),
        ("2021-02-28T23:59:59Z", "card_not_active"),
        ("2021-03-01T00:00:00Z", "ok"),
        ("2021-06-30T12:00:00Z", "ok"),
    ];
    for (i, &(trx, want)) in rows.iter().enumerate() {
        assert_eq!(
            s.verdict(&pay(&a, &format!("w{i}"), trx, 1000)),
            want,
            "{trx}"
        );
    }
    assert_eq!(
        s.standing("alice", H1),
        st(4, "4.00", Some("2021-06-30T12:00:00Z"))
    );
}

// ---------------------------------------------------------------------------
// T&C, order of payment checks
// ---------------------------------------------------------------------------

#[test]
fn tc_acceptance_and_reenrolling_keeps_the_first_one() {
    let a = card(0xA);
    let mut s = Sim::new(vec![h1()]);
    s.ok(enroll_citizen("alice", IBAN, "2021-03-01T10:00:00+01:00")); // 09:00Z
    s.ok(enroll_card("alice", &a, "2021-01-01T00:00:00Z"));
    // Re-enrolling changes only the IBAN, never tc_accepted_at.
    s.ok(enroll_citizen("alice", IBAN2, "2021-01-01T00:00:00Z"));
    s.ok(enroll_citizen("alice", IBAN2, "2021-01-01T00:00:00Z"));
    s.at(LATE);
    let rows: &[(&str, &str)] = &[
        ("2021-02-01T00:00:00Z", "tc_not_accepted"),
        ("2021-03-01T08:59:59.999999999Z", "tc_not_accepted"),
        ("2021-03-01T09:00:00Z", "ok"),
        ("2021-03-01T10:00:00+01:00", "ok"), // same instant, other key
    ];
    for (i, &(trx, want)) in rows.iter().enumerate() {
        assert_eq!(
            s.verdict(&pay(&a, &format!("t{i}"), trx, 1000)),
            want,
            "{trx}"
        );
    }
    assert_eq!(
        s.standing("alice", H1),
        st(2, "2.00", Some("2021-03-01T09:00:00Z"))
    );
}

#[test]
fn order_of_payment_checks() {
    let a = card(0xA);
    let mut s = Sim::new(vec![h1()]);
    // T&C from 2021-02-01, card active 2021-01-10 .. (open).
    s.ok(enroll_citizen("alice", IBAN, "2021-02-01T00:00:00Z"));
    s.ok(enroll_card("alice", &a, "2021-01-10T00:00:00Z"));
    s.at("2021-07-20T12:00:00Z"); // H1 is closed
    let rows: Vec<(Value, &str)> = vec![
        // never enrolled beats outside period and closed period
        (
            pay(&card(0xB), "o1", "2021-07-20T10:00:00Z", 1000),
            "card_not_enrolled",
        ),
        // not active beats T&C
        (
            pay(&a, "o2", "2021-01-05T10:00:00Z", 1000),
            "card_not_active",
        ),
        // T&C beats the period checks
        (
            pay(&a, "o3", "2021-01-20T10:00:00Z", 1000),
            "tc_not_accepted",
        ),
        // outside beats closed
        (
            pay(&a, "o4", "2021-07-20T10:00:00Z", 1000),
            "outside_award_period",
        ),
        (pay(&a, "o5", "2021-03-01T10:00:00Z", 1000), "period_closed"),
        // shape checks come first of all
        (
            pay(&card(0xB), "o6", "2021-07-20T10:00:00Z", 1000).with("currency", "840"),
            "unsupported_currency",
        ),
    ];
    for (msg, want) in rows {
        assert_eq!(s.verdict(&msg), want, "{msg}");
    }
    assert_eq!(s.standing("alice", H1), st(0, "0.00", None));
}

// ---------------------------------------------------------------------------
// Withdrawal
// ---------------------------------------------------------------------------

#[test]
fn withdrawal_is_final_and_rejects_later_payments_whatever_trx_date() {
    let a = card(0xA);
    let mut s = Sim::new(vec![h1()]);
    s.ok(enroll_citizen("alice", IBAN, "2021-01-15T00:00:00Z"));
    s.ok(enroll_card("alice", &a, "2020-06-01T00:00:00Z"));
    s.at("2021-03-01T12:00:00Z");
    let p1 = pay(&a, "w1", "2021-03-01T10:00:00Z", 5000).corr("C1");
    assert_eq!(s.verdict(&p1), "ok");
    s.at("2021-03-02T12:00:00Z");
    s.ok(withdraw("alice", "2021-03-02T12:00:00Z"));
    let rows: Vec<(Value, &str)> = vec![
        // trx_date before the withdrawal, processed after it
        (
            pay(&a, "w2", "2021-03-01T11:00:00Z", 1000),
            "citizen_withdrawn",
        ),
        (
            pay(&a, "w3", "2021-03-02T12:01:00Z", 1000),
            "citizen_withdrawn",
        ),
        // an earlier check fails first
        (
            pay(&a, "w4", "2020-05-01T10:00:00Z", 1000),
            "card_not_active",
        ),
        // withdrawn beats T&C and the period checks
        (
            pay(&a, "w5", "2021-01-10T10:00:00Z", 1000),
            "citizen_withdrawn",
        ),
        (
            pay(&a, "w6", "2020-11-01T10:00:00Z", 1000),
            "citizen_withdrawn",
        ),
        (
            pay(&a, "w7", "2021-03-01T10:00:00Z", 1000).with("currency", "840"),
            "unsupported_currency",
        ),
        // the counted payment's key is still remembered
        (p1.clone(), "duplicate"),
        // reversals of a withdrawn citizen's payment
        (
            rev(&a, "x1", "2021-03-02T12:05:00Z", 5000),
            "citizen_withdrawn",
        ),
        (
            rev(&a, "x2", "2021-03-02T12:05:00Z", 9999).corr("C1"),
            "citizen_withdrawn",
        ), // beats exceeds
        (
            rev(&a, "x3", "2021-03-02T12:05:00Z", 500).corr("C1"),
            "citizen_withdrawn",
        ),
        // an unmatched reversal is parked as usual
        (rev(&a, "x4", "2021-03-02T12:05:00Z", 100).corr("C9"), "ok"),
        (
            rev(&a, "x4", "2021-03-02T12:05:00Z", 100).corr("C9"),
            "duplicate",
        ),
    ];
    for (msg, want) in rows {
        assert_eq!(s.verdict(&msg), want, "{msg}");
    }
    let x4_seq = s.seq - 1;
    assert_eq!(
        s.standing("alice", H1),
        st(1, "5.00", Some("2021-03-01T10:00:00Z"))
    );
    // Final: re-enrolling is refused; withdrawing again is idempotent.
    assert_eq!(
        s.enroll(enroll_citizen("alice", IBAN, "2021-01-15T00:00:00Z")),
        Err("citizen_withdrawn")
    );
    s.ok(withdraw("alice", "2021-03-03T00:00:00Z"));
    // citizen_withdrawn is checked before period_closed for reversals; the
    // reversal parked above has waited 30 days by now.
    s.at("2021-08-01T00:00:00Z");
    let r = rev(&a, "x5", "2021-07-31T00:00:00Z", 100).corr("C1");
    assert_eq!(
        s.send(&r),
        vec![(x4_seq, "unmatched_reversal"), (s.seq, "citizen_withdrawn")]
    );
}

#[test]
fn withdrawn_citizens_old_window_is_rejected_after_the_card_moved_on() {
    let a = card(0xA);
    let mut s = Sim::new(vec![h1()]);
    s.ok(enroll_citizen("alice", IBAN, "2020-01-01T00:00:00Z"));
    s.ok(enroll_citizen("bob", IBAN2, "2020-01-01T00:00:00Z"));
    s.ok(enroll_card("alice", &a, "2021-01-01T00:00:00Z"));
    s.at("2021-02-02T00:00:00Z");
    assert_eq!(
        s.verdict(&pay(&a, "p1", "2021-02-01T10:00:00Z", 2000)),
        "ok"
    );
    s.ok(remove_card("alice", &a, "2021-03-01T00:00:00Z"));
    s.ok(enroll_card("bob", &a, "2021-03-01T00:00:00Z"));
    s.ok(withdraw("alice", "2021-03-02T00:00:00Z"));
    s.at(LATE);
    let rows: Vec<(Value, &str)> = vec![
        (
            pay(&a, "p2", "2021-02-15T10:00:00Z", 1000),
            "citizen_withdrawn",
        ),
        (pay(&a, "p3", "2021-03-15T10:00:00Z", 1000), "ok"),
        (
            rev(&a, "r1", "2021-06-01T10:00:00Z", 2000),
            "citizen_withdrawn",
        ),
        (rev(&a, "r2", "2021-06-01T10:00:00Z", 1000), "ok"), // bob's p3
    ];
    for (msg, want) in rows {
        assert_eq!(s.verdict(&msg), want, "{msg}");
    }
    assert_eq!(
        s.standing("alice", H1),
        st(1, "2.00", Some("2021-02-01T10:00:00Z"))
    );
    assert_eq!(
        s.standing("bob", H1),
        st(0, "0.00", Some("2021-03-15T10:00:00Z"))
    );
}

// ---------------------------------------------------------------------------
// Award periods in Europe/Rome, grace
// ---------------------------------------------------------------------------

#[test]
fn rome_dates_decide_the_period_across_dst() {
    let a = card(0xA);
    let mut s = Sim::alice(vec![
        xmas(),
        period("JANFEB", "2021-01-01", "2021-02-28"),
        period("MAR", "2021-03-01", "2021-03-27"),
        // 2021-03-28 (23 hours: CET -> CEST) belongs to no period
        period("SPRING", "2021-03-29", "2021-06-30"),
        period("OCT", "2021-10-01", "2021-10-31"), // ends on the 25-hour day
    ]);
    let ids = [XMAS, "JANFEB", "MAR", "SPRING", "OCT"];
    let out = "outside_award_period";
    let rows: &[(&str, &str)] = &[
        ("2020-12-07T22:59:59Z", out), // Dec 7, 23:59:59 CET
        ("2020-12-07T23:00:00Z", XMAS),
        ("2020-12-31T22:59:59Z", XMAS),
        ("2020-12-31T23:00:00Z", "JANFEB"), // Jan 1, 00:00 CET
        ("2021-02-28T22:59:59Z", "JANFEB"),
        ("2021-02-28T23:00:00Z", "MAR"),
        ("2021-03-27T22:59:59Z", "MAR"),
        ("2021-03-27T23:00:00Z", out), // Mar 28, 00:00 CET
        ("2021-03-28T01:59:59+01:00", out),
        ("2021-03-28T03:00:00+02:00", out), // one second later
        ("2021-03-28T21:59:59Z", out),      // Mar 28, 23:59:59 CEST
        ("2021-03-28T22:00:00Z", "SPRING"), // Mar 29, 00:00 CEST
        ("2021-06-30T21:59:59Z", "SPRING"),
        ("2021-06-30T23:59:59+02:00", "SPRING"),
        ("2021-06-30T22:00:00Z", out), // already July 1 in Rome
        ("2021-06-30T23:30:00+01:00", out),
        ("2021-07-01T00:00:00+02:00", out),
        ("2021-09-30T21:59:59Z", out),
        ("2021-09-30T22:00:00Z", "OCT"),
        ("2021-10-31T02:30:00+02:00", "OCT"), // first 02:30
        ("2021-10-31T02:30:00+01:00", "OCT"), // second 02:30
        ("2021-10-31T22:59:59Z", "OCT"),      // 23:59:59 CET
        ("2021-10-31T23:00:00Z", out),        // Nov 1
    ];
    let mut expected = [0u32; 5];
    for (i, &(trx, want)) in rows.iter().enumerate() {
        s.at(trx).later(60);
        let verdict = s.verdict(&pay(&a, &format!("d{i}"), trx, 1000));
        match ids.iter().position(|id| *id == want) {
            Some(p) => {
                assert_eq!(verdict, "ok", "{trx}");
                expected[p] += 1;
            }
            None => assert_eq!(verdict, want, "{trx}"),
        }
        let counts: Vec<u32> = ids.iter().map(|id| s.standing("alice", id).count).collect();
        assert_eq!(counts, expected, "after {trx}");
    }
    assert_eq!(expected, [2, 2, 2, 3, 4]);
}

#[test]
fn grace_ends_at_the_rome_midnight_ending_end_plus_grace_days() {
    let a = card(0xA);
    let oct = AwardPeriod {
        grace_days: 0,
        ..period("OCT", "2021-10-01", "2021-10-31")
    };
    let mut s = Sim::alice(vec![xmas(), h1(), oct]);
    let rows: &[(&str, &str, &str, &str)] = &[
        // (broker time, id, trx_date, verdict)
        // XMAS: Dec 31 + 10 days -> closes Jan 11 00:00 CET = Jan 10 23:00Z.
        (
            "2021-01-10T22:59:59.999999999Z",
            "g1",
            "2020-12-31T12:00:00Z",
            "ok",
        ),
        (
            "2021-01-10T23:00:00Z",
            "g2",
            "2020-12-31T12:00:00Z",
            "period_closed",
        ),
        (
            "2021-01-10T23:00:00Z",
            "g2",
            "2020-12-31T12:00:00Z",
            "period_closed",
        ), // not duplicate
        ("2021-01-10T23:00:00Z", "g3", "2021-01-10T23:00:00Z", "ok"), // H1
        // H1: Jun 30 + 10 days -> closes Jul 11 00:00 CEST = Jul 10 22:00Z.
        ("2021-07-10T21:59:59Z", "g4", "2021-06-30T21:59:59Z", "ok"),
        (
            "2021-07-10T22:00:00Z",
            "g5",
            "2021-06-30T21:59:59Z",
            "period_closed",
        ),
        (
            "2021-07-10T22:00:00Z",
            "g6",
            "2021-07-10T21:00:00Z",
            "outside_award_period",
        ),
        // OCT, no grace: closes Nov 1 00:00 CET = Oct 31 23:00Z (a 25-hour day).
        ("2021-10-31T22:59:59Z", "g7", "2021-10-31T22:59:00Z", "ok"),
        (
            "2021-10-31T23:00:00Z",
            "g8",
            "2021-10-31T22:59:59Z",
            "period_closed",
        ),
    ];
    for &(broker, id, trx, want) in rows {
        s.at(broker);
        assert_eq!(s.verdict(&pay(&a, id, trx, 1000)), want, "{id} at {broker}");
    }
    assert_eq!(s.standing("alice", XMAS).count, 1);
    assert_eq!(s.standing("alice", H1).count, 2);
    assert_eq!(s.standing("alice", "OCT").count, 1);

    // A grace that ends on the spring-forward day: Mar 18 + 10 = Mar 28,
    // closed at Mar 29 00:00 CEST = Mar 28 22:00Z.
    let mut s = Sim::alice(vec![period("EARLY", "2021-03-01", "2021-03-18")]);
    s.at("2021-03-28T21:59:59Z");
    assert_eq!(
        s.verdict(&pay(&a, "e1", "2021-03-18T12:00:00Z", 1000)),
        "ok"
    );
    s.at("2021-03-28T22:00:00Z");
    assert_eq!(
        s.verdict(&pay(&a, "e2", "2021-03-18T12:00:00Z", 1000)),
        "period_closed"
    );
}

#[test]
fn reversals_respect_the_grace_of_their_payments_period() {
    let a = card(0xA);
    let mut s = Sim::alice(vec![h1(), period("OCT", "2021-10-01", "2021-10-31")]);
    assert_eq!(
        s.verdict(&pay(&a, "p1", "2021-06-30T12:00:00Z", 10000).corr("C1")),
        "ok"
    );
    let rows: &[(&str, &str, u64, &str, &str)] = &[
        // (broker, id, cents, verdict, cashback afterwards)
        ("2021-07-10T21:59:59Z", "r1", 1000, "ok", "9.00"),
        ("2021-07-10T22:00:00Z", "r2", 1000, "period_closed", "9.00"),
        ("2021-07-10T22:00:00Z", "r3", 50000, "period_closed", "9.00"), // beats exceeds
        // its own trx_date in another, open period changes nothing
        ("2021-10-05T12:00:00Z", "r4", 1000, "period_closed", "9.00"),
    ];
    for &(broker, id, cents, want, cashback) in rows {
        s.at(broker);
        let trx = s.clock.plus_secs(-60).to_rome_rfc3339();
        assert_eq!(
            s.verdict(&rev(&a, id, &trx, cents).corr("C1")),
            want,
            "{id}"
        );
        assert_eq!(
            s.standing("alice", H1),
            st(1, cashback, Some("2021-06-30T12:00:00Z"))
        );
    }
    assert_eq!(s.standing("alice", "OCT"), st(0, "0.00", None));
}

#[test]
fn a_period_closed_by_the_logs_clock_stays_closed_when_broker_times_step_back() {
    // A clustered stream's timestamps can step back when its leader moves to a
    // server whose clock is behind. Once a message stamped after the close is
    // in the log, nothing later changes the period, whatever its own stamp:
    // the payout stays final, and replicas that batch differently agree.
    let a = card(0xA);
    let mut s = Sim::alice(vec![h1(), period("OCT", "2021-10-01", "2021-10-31")]);
    s.at("2021-07-10T21:00:00Z");
    assert_eq!(
        s.verdict(&pay(&a, "p1", "2021-06-30T12:00:00Z", 10000).corr("C1")),
        "ok"
    );
    // H1 closes at 2021-07-10T22:00Z; this message is stamped after it.
    s.at("2021-07-10T22:00:01Z");
    assert_eq!(
        s.verdict(&pay(&a, "p2", "2021-06-30T12:00:00Z", 1000)),
        "period_closed"
    );
    // The next ones are stamped two seconds earlier, before the close.
    s.at("2021-07-10T21:59:59Z");
    assert_eq!(
        s.verdict(&pay(&a, "p3", "2021-06-30T12:00:00Z", 1000)),
        "period_closed"
    );
    assert_eq!(
        s.verdict(&rev(&a, "r1", "2021-07-10T21:00:00Z", 1000).corr("C1")),
        "period_closed"
    );
    assert_eq!(
        s.standing("alice", H1),
        st(1, "10.00", Some("2021-06-30T12:00:00Z"))
    );
}

#[test]
fn a_reversal_affects_the_period_of_its_payment() {
    let a = card(0xA);
    let mut s = Sim::alice(vec![xmas(), h1()]);
    s.at("2020-12-20T00:00:00Z");
    assert_eq!(
        s.verdict(&pay(&a, "p1", "2020-12-15T10:00:00Z", 5000).corr("C1")),
        "ok"
    );
    s.at("2021-01-05T10:00:00Z");
    assert_eq!(
        s.verdict(&pay(&a, "p2", "2021-01-04T10:00:00Z", 3000).corr("C2")),
        "ok"
    );
    assert_eq!(
        s.verdict(&rev(&a, "r1", "2021-01-05T09:00:00Z", 2000).corr("C1")),
        "ok"
    );
    assert_eq!(
        s.standing("alice", XMAS),
        st(1, "3.00", Some("2020-12-15T10:00:00Z"))
    );
    assert_eq!(
        s.standing("alice", H1),
        st(1, "3.00", Some("2021-01-04T10:00:00Z"))
    );
    s.at("2021-01-10T23:00:00Z"); // XMAS closed, H1 open
    assert_eq!(
        s.verdict(&rev(&a, "r2", "2021-01-10T22:00:00Z", 1000).corr("C1")),
        "period_closed"
    );
    assert_eq!(
        s.verdict(&rev(&a, "r3", "2021-01-10T22:00:00Z", 1000).corr("C2")),
        "ok"
    );
    assert_eq!(
        s.standing("alice", XMAS),
        st(1, "3.00", Some("2020-12-15T10:00:00Z"))
    );
    assert_eq!(
        s.standing("alice", H1),
        st(1, "2.00", Some("2021-01-04T10:00:00Z"))
    );
}

// ---------------------------------------------------------------------------
// Shape, currency, MCC, operation, trx_date from the future
// ---------------------------------------------------------------------------

#[test]
fn malformed_is_not_a_json_object() {
    let mut s = Sim::alice(vec![h1()]);
    let rows: &[(&[u8], &str)] = &[
        (b"", "malformed"),
        (b"nope", "malformed"),
        (b"[1,2]", "malformed"),
        (b"\"x\"", "malformed"),
        (b"42", "malformed"),
        (b"null", "malformed"),
        (b"{\"a\":", "malformed"),
        (b"\xff\xfe", "malformed"),
        (b"{}", "invalid_field"),
        (
            b"{\"acquirer_code\":\"1\",\"acquirer_code\":\"2\"}",
            "invalid_field",
        ),
    ];
    for &(bytes, want) in rows {
        assert_eq!(
            s.verdict_raw(bytes),
            want,
            "{}",
            String::from_utf8_lossy(bytes)
        );
    }
}

#[test]
fn field_shapes_currency_mcc_and_operation_in_order() {
    let a = card(0xA);
    let mut s = Sim::alice(vec![h1()]);
    let p = |id: &str| pay(&a, id, "2021-03-14T10:00:00Z", 1000);
    let unknown = pay(&card(0xB), "u1", "2021-03-14T10:00:00Z", 1000);
    let rows: Vec<(Value, &str)> = vec![
        (p("f1").without("hpan"), "invalid_field"),
        (p("f2").with("hpan", "A".repeat(64)), "invalid_field"),
        (p("f3").with("hpan", "a".repeat(63)), "invalid_field"),
        (p("f4").with("total_amount", 0), "invalid_field"),
        (p("f5").with("total_amount", -100), "invalid_field"),
        (p("f6").with("total_amount", "1000"), "invalid_field"),
        (p("f7").with("total_amount", 10.5), "invalid_field"),
        (p("f8").with("currency", 978), "invalid_field"),
        (p("f9").with("currency", "EUR"), "invalid_field"),
        (
            p("f10").with("trx_date", "2021-03-14 10:00:00Z"),
            "invalid_field",
        ),
        (
            p("f11").with("trx_date", "2021-03-14T10:00:00"),
            "invalid_field",
        ),
        (
            p("f12").with("trx_date", "2021-02-30T10:00:00Z"),
            "invalid_field",
        ),
        (
            p("f13").with("trx_date", "2021-03-14T10:00:00z"),
            "invalid_field",
        ),
        (p("f14").with("operation_type", "1"), "invalid_field"),
        (p("f15").with("circuit_type", "11"), "invalid_field"),
        (p("f16").with("bin", "12345"), "invalid_field"),
        (p("f17").with("mcc", ""), "invalid_field"),
        (p("f18").with("correlation_id", true), "invalid_field"),
        (p("").with("id_trx_acquirer", ""), "invalid_field"),
        // invalid_field comes before unsupported_operation
        (
            p("f19").with("operation_type", "04").with("bin", "1"),
            "invalid_field",
        ),
        (
            p("o1").with("operation_type", "04"),
            "unsupported_operation",
        ),
        (
            p("o2").with("operation_type", "99").with("currency", "840"),
            "unsupported_operation",
        ),
        (p("c1").with("currency", "840"), "unsupported_currency"),
        (
            p("c2").with("currency", "840").with("mcc", "6011"),
            "unsupported_currency",
        ),
        (p("m1").with("mcc", "6010"), "excluded_mcc"),
        (p("m2").with("mcc", "6011"), "excluded_mcc"),
        (
            rev(&a, "m3", "2021-03-14T10:00:00Z", 1000).with("mcc", "6011"),
            "excluded_mcc",
        ),
        // shape checks come before card checks
        (unknown.clone().with("mcc", "6010"), "excluded_mcc"),
        (unknown, "card_not_enrolled"),
        // payments of every supported type; optional fields absent, null or empty
        (p("k1").with("operation_type", "02"), "ok"),
        (p("k2").with("operation_type", "03"), "ok"),
        (
            p("k3")
                .with("id_trx_issuer", Value::Null)
                .without("par")
                .with("correlation_id", "")
                .with("extra", json!({"nested": [1, 2]})),
            "ok",
        ),
    ];
    for (msg, want) in rows {
        assert_eq!(s.verdict(&msg), want, "{msg}");
    }
    assert_eq!(
        s.standing("alice", H1),
        st(3, "3.00", Some("2021-03-14T10:00:00Z"))
    );
}

#[test]
fn trx_date_more_than_five_minutes_after_broker_time_is_invalid() {
    let a = card(0xA);
    let mut s = Sim::alice(vec![h1()]);
    s.at("2021-03-14T12:00:00Z");
    let rows: Vec<(Value, &str)> = vec![
        (pay(&a, "t1", "2021-03-14T12:05:00Z", 1000), "ok"),
        (
            pay(&a, "t2", "2021-03-14T12:05:00.000000001Z", 1000),
            "invalid_field",
        ),
        (pay(&a, "t3", "2021-03-14T13:05:00+01:00", 1000), "ok"),
        (
            pay(&a, "t4", "2021-03-14T13:05:00.5+01:00", 1000),
            "invalid_field",
        ),
        (pay(&a, "t5", "2021-03-15T00:00:00Z", 1000), "invalid_field"),
        // before unsupported_operation and before the card checks
        (
            pay(&a, "t6", "2021-03-14T12:10:00Z", 1000).with("operation_type", "09"),
            "invalid_field",
        ),
        (
            pay(&card(0xB), "t7", "2021-03-14T12:10:00Z", 1000),
            "invalid_field",
        ),
        (rev(&a, "t8", "2021-03-14T12:10:00Z", 1000), "invalid_field"),
    ];
    for (msg, want) in rows {
        assert_eq!(s.verdict(&msg), want, "{msg}");
    }
    assert_eq!(
        s.standing("alice", H1),
        st(2, "2.00", Some("2021-03-14T12:05:00Z"))
    );
}

// ---------------------------------------------------------------------------
// De-duplication
// ---------------------------------------------------------------------------

#[test]
fn dedup_key_is_card_acquirer_code_acquirer_id_id_operation_and_trx_date_text() {
    let (a, b) = (card(0xA), card(0xB));
    let mut s = Sim::alice(vec![h1()]);
    s.ok(enroll_card("alice", &b, "2020-01-01T00:00:00Z"));
    let p = || pay(&a, "t1", "2021-03-14T10:00:00Z", 1000);
    let rows: Vec<(Value, &str)> = vec![
        (p(), "ok"),
        (p(), "duplicate"),
        // only the key matters...
        (
            p().with("total_amount", 9999).with("merchant_id", "M9"),
            "duplicate",
        ),
        // ...and the card is part of it: the same acquirer key on another
        // card is judged afresh (RULES.md rule 6)
        (
            p().with("hpan", b.as_str())
                .with("total_amount", 9999)
                .with("merchant_id", "M9"),
            "ok",
        ),
        (p().with("operation_type", "02"), "ok"),
        (p().with("operation_type", "03"), "ok"),
        (p().with("id_trx_acquirer", "t2"), "ok"),
        (p().with("acquirer_id", "9999"), "ok"),
        (p().with("acquirer_code", "99999"), "ok"),
        // the same instant written differently is not the same key
        (p().with("trx_date", "2021-03-14T11:00:00+01:00"), "ok"),
        (p().with("trx_date", "2021-03-14T10:00:00.0Z"), "ok"),
        (p().with("trx_date", "2021-03-14T10:00:00.000Z"), "ok"),
        (
            p().with("trx_date", "2021-03-14T11:00:00+01:00"),
            "duplicate",
        ),
        (p().with("operation_type", "02"), "duplicate"),
        // shape checks come before the duplicate check
        (p().with("currency", "840"), "unsupported_currency"),
        (p().with("mcc", "6011"), "excluded_mcc"),
    ];
    for (msg, want) in rows {
        assert_eq!(s.verdict(&msg), want, "{msg}");
    }
    assert_eq!(
        s.standing("alice", H1),
        st(10, "19.00", Some("2021-03-14T10:00:00Z"))
    );
}

#[test]
fn keys_of_rejected_messages_are_not_remembered() {
    let (a, c) = (card(0xA), card(0xC));
    let mut s = Sim::alice(vec![h1()]);
    s.ok(enroll_citizen("bob", IBAN2, "2021-04-01T00:00:00Z"));
    s.ok(enroll_card("bob", &card(0xB), "2020-01-01T00:00:00Z"));
    let k1 = pay(&c, "k1", "2021-03-01T10:00:00Z", 1000);
    assert_eq!(s.verdict(&k1), "card_not_enrolled");
    assert_eq!(s.verdict(&k1), "card_not_enrolled");
    s.ok(enroll_card("alice", &c, "2021-01-01T00:00:00Z"));
    assert_eq!(s.verdict(&k1), "ok"); // judged afresh
    assert_eq!(s.verdict(&k1), "duplicate");

    let k2 = pay(&a, "k2", "2021-03-02T10:00:00Z", 2000);
    assert_eq!(s.verdict(&k2.clone().with("mcc", "6011")), "excluded_mcc");
    assert_eq!(
        s.verdict(&k2.clone().with("total_amount", 0)),
        "invalid_field"
    );
    assert_eq!(s.verdict(&k2), "ok");

    let k3 = pay(&card(0xB), "k3", "2021-03-01T10:00:00Z", 1000);
    assert_eq!(s.verdict(&k3), "tc_not_accepted");
    assert_eq!(s.verdict(&k3), "tc_not_accepted");

    // a reversal rejected for exceeding is judged afresh too
    assert_eq!(
        s.verdict(&pay(&a, "k4", "2021-03-03T10:00:00Z", 1000).corr("C4")),
        "ok"
    );
    let r = rev(&a, "r4", "2021-03-04T10:00:00Z", 1001).corr("C4");
    assert_eq!(s.verdict(&r), "reversal_exceeds_original");
    assert_eq!(s.verdict(&r), "reversal_exceeds_original");
    assert_eq!(s.verdict(&r.clone().with("total_amount", 1000)), "ok");
    assert_eq!(s.verdict(&r.with("total_amount", 1000)), "duplicate");

    assert_eq!(
        s.standing("alice", H1),
        st(2, "3.00", Some("2021-03-03T10:00:00Z"))
    );
    assert_eq!(s.standing("bob", H1), st(0, "0.00", None));
}

#[test]
fn duplicate_is_checked_before_card_citizen_and_period_checks() {
    let a = card(0xA);
    let mut s = Sim::alice(vec![h1()]);
    let k = pay(&a, "k1", "2021-03-01T10:00:00Z", 1000);
    assert_eq!(s.verdict(&k), "ok");
    s.ok(remove_card("alice", &a, "2021-02-01T00:00:00Z"));
    assert_eq!(s.verdict(&k), "duplicate");
    s.ok(withdraw("alice", "2021-07-01T12:00:00Z"));
    assert_eq!(s.verdict(&k), "duplicate");
    s.at("2021-08-01T00:00:00Z");
    assert_eq!(s.verdict(&k), "duplicate");
    assert_eq!(
        s.standing("alice", H1),
        st(1, "1.00", Some("2021-03-01T10:00:00Z"))
    );
}

// ---------------------------------------------------------------------------
// Reversals
// ---------------------------------------------------------------------------

#[test]
fn total_reversal_without_correlation_id_matches_by_terminal_and_balance() {
    let a = card(0xA);
    let mut s = Sim::alice(vec![h1()]);
    let payments = vec![
        // arrival order; the correlation ids are only probes
        pay(&a, "p1", "2021-03-10T10:00:00Z", 5000).corr("C1"),
        pay(&a, "p2", "2021-03-09T10:00:00Z", 5000).corr("C2"), // earlier trx_date
        pay(&a, "p3", "2021-03-08T10:00:00Z", 5000)
            .corr("C3")
            .with("terminal_id", "T2"),
        pay(&a, "p4", "2021-03-07T10:00:00Z", 3000).corr("C4"), // other balance
        pay(&a, "p5", "2021-03-09T10:00:00Z", 5000).corr("C5"), // same trx_date as p2, later
        pay(&a, "p6", "2021-03-06T10:00:00Z", 5000)
            .corr("C6")
            .with("merchant_id", "M2"),
    ];
    for p in &payments {
        assert_eq!(s.verdict(p), "ok");
    }
    assert_eq!(
        s.standing("alice", H1),
        st(6, "28.00", Some("2021-03-10T10:00:00Z"))
    );
    let total = |id: &str| rev(&a, id, "2021-03-20T10:00:00Z", 5000);
    // A 0.10 EUR probe with a correlation id: exceeds iff that payment is at 0.
    let probe = |id: &str, c: &str| rev(&a, id, "2021-03-20T10:00:00Z", 10).corr(c);
    let rows: Vec<(Value, &str, u32, &str)> = vec![
        (total("r1"), "ok", 5, "23.00"), // p2: earliest trx_date, first arrived
        (probe("q1", "C2"), "reversal_exceeds_original", 5, "23.00"),
        (total("r2"), "ok", 4, "18.00"), // p5
        (probe("q2", "C5"), "reversal_exceeds_original", 4, "18.00"),
        (total("r3"), "ok", 3, "13.00"), // p1
        (probe("q3", "C1"), "reversal_exceeds_original", 3, "13.00"),
        // nothing left at T1/M1 with a balance of 50.00: parked, not rejected
        (total("r4"), "ok", 3, "13.00"),
        (probe("q4", "C3"), "ok", 3, "12.99"),
        (probe("q5", "C6"), "ok", 3, "12.98"),
        (probe("q6", "C4"), "ok", 3, "12.97"),
        // a null or empty correlation_id counts as absent
        (
            rev(&a, "r5", "2021-03-20T10:00:00Z", 2990).corr(""),
            "ok",
            2,
            "9.98",
        ), // p4
        (total("r4"), "duplicate", 2, "9.98"),
    ];
    for (i, (msg, want, count, cashback)) in rows.into_iter().enumerate() {
        assert_eq!(s.verdict(&msg), want, "row {i}: {msg}");
        assert_eq!(
            s.standing("alice", H1),
            st(count, cashback, Some("2021-03-10T10:00:00Z")),
            "row {i}"
        );
    }
}

#[test]
fn partial_reversals_with_correlation_id() {
    let a = card(0xA);
    let mut s = Sim::alice(vec![h1()]);
    assert_eq!(
        s.verdict(&pay(&a, "p1", "2021-03-10T10:00:00Z", 20000).corr("C1")),
        "ok"
    );
    assert_eq!(
        s.standing("alice", H1),
        st(1, "15.00", Some("2021-03-10T10:00:00Z"))
    );
    let rows: &[(u64, &str, u32, &str)] = &[
        // (cents reversed, verdict, count, cashback): balance after
        (4000, "ok", 1, "15.00"), // 160.00: still capped, score unchanged
        (2000, "ok", 1, "14.00"), // 140.00
        (5, "ok", 1, "13.99"),    // 139.95: 13.995 -> tie toward zero
        (13994, "ok", 1, "0.00"), // 0.01: counts while the balance is above 0
        (2, "reversal_exceeds_original", 1, "0.00"),
        (1, "ok", 0, "0.00"),                        // 0: no longer counts
        (1, "reversal_exceeds_original", 0, "0.00"), // still matchable at 0
    ];
    for (i, &(cents, want, count, cashback)) in rows.iter().enumerate() {
        let r = rev(&a, &format!("r{i}"), "2021-03-20T10:00:00Z", cents).corr("C1");
        assert_eq!(s.verdict(&r), want, "row {i}");
        assert_eq!(
            s.standing("alice", H1),
            st(count, cashback, Some("2021-03-10T10:00:00Z")),
            "row {i}"
        );
    }
    // A payment reversed to zero still counted once: its key stays remembered.
    let again = pay(&a, "p1", "2021-03-10T10:00:00Z", 20000).corr("C1");
    assert_eq!(s.verdict(&again), "duplicate");

    // score(B') - score(B) with half-down rounding on each side.
    let mut s = Sim::alice(vec![h1()]);
    assert_eq!(
        s.verdict(&pay(&a, "p2", "2021-03-10T10:00:00Z", 1256).corr("C2")),
        "ok"
    );
    let rows: &[(u64, &str)] = &[
        (1, "1.25"),    // 12.55 -> 1.255 -> 1.25
        (1, "1.25"),    // 12.54 -> 1.254
        (3, "1.25"),    // 12.51 -> 1.251
        (6, "1.24"),    // 12.45 -> 1.245 -> tie toward zero
        (1, "1.24"),    // 12.44
        (1241, "0.00"), // 0.03
    ];
    for (i, &(cents, cashback)) in rows.iter().enumerate() {
        let r = rev(&a, &format!("s{i}"), "2021-03-20T10:00:00Z", cents).corr("C2");
        assert_eq!(s.verdict(&r), "ok", "row {i}");
        assert_eq!(s.standing("alice", H1).cashback, dec(cashback), "row {i}");
    }
    assert_eq!(s.standing("alice", H1).count, 1); // balance 0.03 -> 0.00 cashback
}

#[test]
fn correlation_matching_needs_same_card_acquirer_code_and_acquirer_id() {
    let (a, b) = (card(0xA), card(0xB));
    let mut s = Sim::alice(vec![h1()]);
    s.ok(enroll_card("alice", &b, "2020-01-01T00:00:00Z"));
    assert_eq!(
        s.verdict(&pay(&a, "p1", "2021-03-10T10:00:00Z", 5000).corr("C1")),
        "ok"
    );
    let r = |id: &str| rev(&a, id, "2021-03-20T10:00:00Z", 5000).corr("C1");
    let rows: Vec<(Value, &str, u32)> = vec![
        (r("r1").with("acquirer_id", "9999"), "ok", 1), // parked
        (r("r2").with("acquirer_code", "99999"), "ok", 1), // parked
        (r("r3").with("hpan", b.as_str()), "ok", 1),    // parked
        // other merchant and terminal do not matter with a correlation id
        (
            r("r4").with("merchant_id", "M9").with("terminal_id", "T9"),
            "ok",
            0,
        ),
    ];
    for (msg, want, count) in rows {
        assert_eq!(s.verdict(&msg), want, "{msg}");
        assert_eq!(s.standing("alice", H1).count, count, "{msg}");
    }
}

#[test]
fn parked_reversals_are_applied_when_the_payment_arrives_in_arrival_order() {
    let a = card(0xA);
    // (first parked, second parked, which one the payment leaves rejected, cashback)
    for (first, second, rejected_idx, cashback) in
        [(6000u64, 5000u64, 1usize, "4.00"), (5000, 6000, 1, "5.00")]
    {
        let mut s = Sim::alice(vec![h1()]);
        let r1 = rev(&a, "r1", "2021-03-11T10:00:00Z", first).corr("C1");
        let r2 = rev(&a, "r2", "2021-03-11T11:00:00Z", second).corr("C1");
        assert_eq!(s.verdict(&r1), "ok");
        assert_eq!(s.verdict(&r2), "ok");
        assert_eq!(s.verdict(&r1), "duplicate"); // a parked reversal's key is kept
        let seqs = [s.seq - 2, s.seq - 1];
        let got = s.send(&pay(&a, "p1", "2021-03-10T10:00:00Z", 10000).corr("C1"));
        assert_eq!(got, vec![(seqs[rejected_idx], "reversal_exceeds_original")]);
        assert_eq!(
            s.standing("alice", H1),
            st(1, cashback, Some("2021-03-10T10:00:00Z")),
            "{first} then {second}"
        );
    }

    // Two parked total reversals: one payment releases only the first.
    let mut s = Sim::alice(vec![h1()]);
    let r1 = rev(&a, "r1", "2021-03-11T10:00:00Z", 10000);
    let r2 = rev(&a, "r2", "2021-03-11T11:00:00Z", 10000);
    assert_eq!(s.verdict(&r1), "ok");
    assert_eq!(s.verdict(&r2), "ok");
    assert_eq!(
        s.verdict(&pay(&a, "p1", "2021-03-10T10:00:00Z", 10000)),
        "ok"
    );
    assert_eq!(
        s.standing("alice", H1),
        st(0, "0.00", Some("2021-03-10T10:00:00Z"))
    );
    assert_eq!(
        s.verdict(&pay(&a, "p2", "2021-03-10T09:00:00Z", 10000)),
        "ok"
    );
    assert_eq!(
        s.standing("alice", H1),
        st(0, "0.00", Some("2021-03-10T10:00:00Z"))
    );
    assert_eq!(s.verdict(&r1), "duplicate");
    assert_eq!(s.verdict(&r2), "duplicate");
    assert_eq!(
        s.verdict(&pay(&a, "p3", "2021-03-12T10:00:00Z", 10000)),
        "ok"
    );
    assert_eq!(
        s.standing("alice", H1),
        st(1, "10.00", Some("2021-03-12T10:00:00Z"))
    );
}

#[test]
fn parked_reversal_expires_after_park_days_of_broker_time() {
    let a = card(0xA);
    let mut s = Sim::alice(vec![h1()]);
    s.at("2021-03-01T12:00:00Z");
    let r = rev(&a, "r1", "2021-03-01T11:00:00Z", 1000).corr("C1");
    assert_eq!(s.verdict(&r), "ok"); // parked
    let r_seq = s.seq;
    // One second short of 30 days: still waiting (this payment does not match).
    s.later(30 * DAY - 1);
    assert_eq!(s.send(&pay(&a, "x1", "2021-03-20T10:00:00Z", 2000)), vec![]);
    // 30 days after the reversal's own broker time: rejected.
    s.later(1);
    assert_eq!(
        s.send(&pay(&a, "x2", "2021-03-21T10:00:00Z", 3000)),
        vec![(r_seq, "unmatched_reversal")]
    );
    // The payment it was waiting for now counts in full.
    assert_eq!(
        s.verdict(&pay(&a, "p1", "2021-03-01T10:00:00Z", 1000).corr("C1")),
        "ok"
    );
    assert_eq!(
        s.standing("alice", H1),
        st(3, "6.00", Some("2021-03-21T10:00:00Z"))
    );
    // Its key was forgotten: re-sent, it is judged afresh and now applies.
    assert_eq!(s.verdict(&r), "ok");
    assert_eq!(
        s.standing("alice", H1),
        st(2, "5.00", Some("2021-03-21T10:00:00Z"))
    );
}

/// A message that may end a parked reversal's wait.
type Trigger = fn() -> Value;

const SAME_CARD: (&str, Trigger) = ("a payment on the same card", || {
    pay(&card(0xA), "t", "2021-03-20T10:00:00Z", 700)
});
const AWAITED: (&str, Trigger) = ("the very payment it waits for", || {
    pay(&card(0xA), "t", "2021-03-01T10:00:00Z", 1000).corr("C1")
});
const OTHER_PARTITION: (&str, Trigger) = ("a payment of a citizen in another partition", || {
    pay(&card(0xB), "t", "2021-03-20T10:00:00Z", 700)
});
const NOT_ENROLLED: (&str, Trigger) = ("a payment rejected card_not_enrolled", || {
    pay(&card(0xF), "t", "2021-03-20T10:00:00Z", 700)
});
const INVALID: (&str, Trigger) = ("a message rejected invalid_field", || json!({"x": 1}));

/// Parks a reversal (C1, 10.00) at 2021-03-01T12:00Z on card 0xA (enrolled:
/// it waits in the ledger) or on card 0xE (never enrolled: an orphan), then
/// sends `trigger` exactly 30 days later. Returns the reversal's seq, the
/// rejections the trigger caused, and the engine.
fn park_then(orphan: bool, trigger: Trigger) -> (u64, Vec<(u64, &'static str)>, Sim) {
    let bob = in_other_partition("alice");
    let mut s = Sim::alice(vec![h1()]);
    s.ok(enroll_citizen(&bob, IBAN2, "2020-01-01T00:00:00Z"));
    s.ok(enroll_card(&bob, &card(0xB), "2020-01-01T00:00:00Z"));
    s.at("2021-03-01T12:00:00Z");
    let hpan = if orphan { card(0xE) } else { card(0xA) };
    assert_eq!(
        s.verdict(&rev(&hpan, "r1", "2021-03-01T11:00:00Z", 1000).corr("C1")),
        "ok"
    );
    let r_seq = s.seq;
    s.later(30 * DAY);
    let got = s.send(&trigger());
    (r_seq, got, s)
}

/// RULES.md: a parked reversal "still unmatched when a processed message's
/// broker time is `reversal_park_days` after the reversal's own is rejected
/// (`unmatched_reversal`)".
#[test]
fn parked_reversal_expiry_is_triggered_by_a_later_message() {
    let cases: &[(bool, (&str, Trigger))] = &[
        (false, SAME_CARD),
        (true, SAME_CARD),
        (true, OTHER_PARTITION),
        (true, NOT_ENROLLED),
        (true, INVALID),
    ];
    for &(orphan, (name, trigger)) in cases {
        let (r_seq, got, _) = park_then(orphan, trigger);
        assert!(
            got.contains(&(r_seq, "unmatched_reversal")),
            "{name} (orphan: {orphan}) did not expire the parked reversal: {got:?}"
        );
    }
    // When the awaited payment itself comes too late, the reversal is
    // rejected first and the payment counts in full.
    let (r_seq, got, s) = park_then(false, AWAITED.1);
    assert_eq!(got, vec![(r_seq, "unmatched_reversal")]);
    assert_eq!(
        s.standing("alice", H1),
        st(1, "1.00", Some("2021-03-01T10:00:00Z"))
    );
}

/// Same rule, when the later message does not reach the partition holding
/// the card: any processed message's broker time is the clock, whatever its
/// card, partition or fate (the orphan case above behaves so).
#[test]

fn parked_reversal_expiry_is_triggered_by_any_later_message() {
    let mut failures = Vec::new();
    for (name, trigger) in [OTHER_PARTITION, NOT_ENROLLED, INVALID] {
        let (r_seq, got, _) = park_then(false, trigger);
        if !got.contains(&(r_seq, "unmatched_reversal")) {
            failures.push(format!("{name}: got {got:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "not expired after 30 days: {failures:#?}"
    );
}

/// The re-send of a parked reversal that arrives when its wait is over: the
/// parked one is rejected first (the message's broker time is 30 days after
/// it), so its key is forgotten and the re-send is judged afresh (parked
/// again), not `duplicate`.
fn resend_after_expiry(orphan: bool) {
    let mut s = Sim::alice(vec![h1()]);
    s.at("2021-03-01T12:00:00Z");
    let hpan = if orphan { card(0xE) } else { card(0xA) };
    let r = rev(&hpan, "r1", "2021-03-01T11:00:00Z", 1000).corr("C1");
    assert_eq!(s.verdict(&r), "ok");
    let r_seq = s.seq;
    s.later(30 * DAY);
    assert_eq!(s.send(&r), vec![(r_seq, "unmatched_reversal")]);
    assert_eq!(s.verdict(&r), "duplicate"); // it was parked again
}

#[test]
fn resend_of_an_expired_orphan_reversal_is_judged_afresh() {
    resend_after_expiry(true);
}

#[test]

fn resend_of_an_expired_parked_reversal_is_judged_afresh() {
    resend_after_expiry(false);
}

#[test]
fn reversal_for_a_card_never_enrolled_waits_for_enrollment_and_payment() {
    let c = card(0xC);
    let mut s = Sim::alice(vec![h1()]);
    s.at("2021-03-01T12:00:00Z");
    let r = rev(&c, "r1", "2021-03-01T11:00:00Z", 2500).corr("C1");
    assert_eq!(s.verdict(&r), "ok"); // parked, not card_not_enrolled
    assert_eq!(s.verdict(&r), "duplicate");
    // A payment for that card is card_not_enrolled; a rejection changes nothing.
    assert_eq!(
        s.verdict(&pay(&c, "p0", "2021-03-01T10:00:00Z", 2500).corr("C1")),
        "card_not_enrolled"
    );
    s.later(DAY);
    s.ok(enroll_card("alice", &c, "2021-01-01T00:00:00Z"));
    assert_eq!(s.new_rejections(), vec![]);
    s.later(DAY);
    assert_eq!(
        s.verdict(&pay(&c, "p1", "2021-03-01T10:00:00Z", 2500).corr("C1")),
        "ok"
    );
    assert_eq!(
        s.standing("alice", H1),
        st(0, "0.00", Some("2021-03-01T10:00:00Z"))
    );
    assert_eq!(s.verdict(&r), "duplicate");

    // Adopted at enrollment, it still expires 30 days after its own broker time.
    let d = card(0xD);
    let mut s = Sim::alice(vec![h1()]);
    s.at("2021-03-01T12:00:00Z");
    assert_eq!(
        s.verdict(&rev(&d, "r2", "2021-03-01T11:00:00Z", 900).corr("C2")),
        "ok"
    );
    let r_seq = s.seq;
    s.later(DAY);
    s.ok(enroll_card("alice", &d, "2021-01-01T00:00:00Z"));
    s.later(29 * DAY - 1);
    assert_eq!(s.send(&pay(&d, "x1", "2021-03-20T10:00:00Z", 100)), vec![]);
    s.later(1);
    assert_eq!(
        s.send(&pay(&d, "x2", "2021-03-20T10:00:00Z", 100)),
        vec![(r_seq, "unmatched_reversal")]
    );
    assert_eq!(
        s.verdict(&pay(&d, "p2", "2021-03-02T10:00:00Z", 900).corr("C2")),
        "ok"
    );
    assert_eq!(
        s.standing("alice", H1),
        st(3, "1.10", Some("2021-03-20T10:00:00Z"))
    );
}

#[test]
fn parked_reversal_released_by_the_next_owners_payment_credits_that_owner() {
    let a = card(0xA);
    let bob = in_other_partition("alice");
    let mut s = Sim::new(vec![h1()]);
    s.ok(enroll_citizen("alice", IBAN, "2020-01-01T00:00:00Z"));
    s.ok(enroll_citizen(&bob, IBAN2, "2020-01-01T00:00:00Z"));
    s.ok(enroll_card("alice", &a, "2021-01-01T00:00:00Z"));
    s.ok(remove_card("alice", &a, "2021-03-01T00:00:00Z"));
    s.ok(enroll_card(&bob, &a, "2021-03-01T00:00:00Z"));
    s.at(LATE);
    // (message, verdict, alice (count, cashback), bob (count, cashback))
    type Row<'a> = (Value, &'a str, (u32, &'a str), (u32, &'a str));
    let rows: Vec<Row> = vec![
        (
            pay(&a, "p1", "2021-02-01T10:00:00Z", 4000).corr("C1"),
            "ok",
            (1, "4.00"),
            (0, "0.00"),
        ),
        (
            rev(&a, "r2", "2021-04-02T10:00:00Z", 1500).corr("C2"),
            "ok",
            (1, "4.00"),
            (0, "0.00"),
        ),
        (
            pay(&a, "p2", "2021-04-01T10:00:00Z", 6000).corr("C2"),
            "ok",
            (1, "4.00"),
            (1, "4.50"),
        ),
        (
            rev(&a, "r1", "2021-04-02T10:00:00Z", 4000),
            "ok",
            (0, "0.00"),
            (1, "4.50"),
        ),
    ];
    for (msg, want, (na, ca), (nb, cb)) in rows {
        assert_eq!(s.verdict(&msg), want, "{msg}");
        let (sa, sb) = (s.standing("alice", H1), s.standing(&bob, H1));
        assert_eq!((sa.count, sa.cashback), (na, dec(ca)), "alice after {msg}");
        assert_eq!((sb.count, sb.cashback), (nb, dec(cb)), "bob after {msg}");
    }
    assert_eq!(
        s.standing("alice", H1).last_trx,
        Some(ts("2021-02-01T10:00:00Z"))
    );
    assert_eq!(
        s.standing(&bob, H1).last_trx,
        Some(ts("2021-04-01T10:00:00Z"))
    );
}

#[test]
fn reversals_skip_card_window_and_tc_checks() {
    let a = card(0xA);
    let mut s = Sim::new(vec![h1()]);
    s.ok(enroll_citizen("alice", IBAN, "2021-02-01T00:00:00Z"));
    s.ok(enroll_card("alice", &a, "2021-02-01T00:00:00Z"));
    s.at("2021-03-02T00:00:00Z");
    assert_eq!(
        s.verdict(&pay(&a, "p1", "2021-03-01T10:00:00Z", 5000).corr("C1")),
        "ok"
    );
    s.ok(remove_card("alice", &a, "2021-04-01T00:00:00Z"));
    s.at("2021-07-06T00:00:00Z");
    let rows: &[(&str, u64, u32, &str)] = &[
        // (reversal trx_date, cents, count, cashback)
        ("2021-05-01T10:00:00Z", 1000, 1, "4.00"), // after the card was removed
        ("2021-01-15T10:00:00Z", 1000, 1, "3.00"), // before T&C and activation
        ("2021-07-05T10:00:00Z", 1000, 1, "2.00"), // in no period
        ("2021-07-05T11:00:00Z", 2000, 0, "0.00"),
    ];
    for (i, &(trx, cents, count, cashback)) in rows.iter().enumerate() {
        let r = rev(&a, &format!("r{i}"), trx, cents).corr("C1");
        assert_eq!(s.verdict(&r), "ok", "{trx}");
        assert_eq!(
            s.standing("alice", H1),
            st(count, cashback, Some("2021-03-01T10:00:00Z"))
        );
    }
}

#[test]
fn last_trx_date_never_moves_back() {
    let a = card(0xA);
    let mut s = Sim::alice(vec![h1()]);
    let last = Some("2021-03-10T10:00:00Z");
    let rows: Vec<(Value, u32, &str)> = vec![
        (
            pay(&a, "p1", "2021-03-10T10:00:00Z", 1000).corr("C1"),
            1,
            "1.00",
        ),
        (pay(&a, "p2", "2021-03-01T10:00:00Z", 2000), 2, "3.00"), // late, earlier
        (
            rev(&a, "r1", "2021-03-20T10:00:00Z", 500).corr("C1"),
            2,
            "2.50",
        ),
        (rev(&a, "r2", "2021-03-20T11:00:00Z", 2000), 1, "0.50"), // p2
        (
            rev(&a, "r3", "2021-03-20T12:00:00Z", 500).corr("C1"),
            0,
            "0.00",
        ),
        (pay(&a, "p3", "2021-03-05T10:00:00Z", 3000), 1, "3.00"),
    ];
    for (msg, count, cashback) in rows {
        assert_eq!(s.verdict(&msg), "ok", "{msg}");
        assert_eq!(s.standing("alice", H1), st(count, cashback, last), "{msg}");
    }
    // Never set by reversals: a citizen whose only activity is a reversal.
    let mut s = Sim::alice(vec![h1()]);
    assert_eq!(s.verdict(&rev(&a, "r", "2021-03-20T10:00:00Z", 500)), "ok");
    assert_eq!(s.standing("alice", H1), st(0, "0.00", None));
}
