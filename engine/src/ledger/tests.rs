//! Unit tests of the ledger: the packed records through the rules, owners
//! and statements, decide-then-commit.

use super::*;
use crate::item::{Origin, Report};
use crate::refusal::ErrorCode;

fn ts(s: &str) -> Timestamp {
    Timestamp::parse_rfc3339(s).unwrap()
}

const HPAN: Hpan = Hpan([7; 32]);

fn ledger() -> Ledger {
    let periods = Periods::new(vec![
        crate::period::tests::period("A", "2021-01-01", "2021-06-30"),
        crate::period::tests::period("B", "2021-07-01", "2021-12-31"),
    ])
    .unwrap();
    let mut l = Ledger::new(0, Arc::new(periods), 30, ParkingLimits::default());
    for (idx, id) in [(0, "c0"), (1, "c1")] {
        l.apply(
            &Item::Citizen(CitizenFacts {
                idx,
                id: id.into(),
                iban: "IT60X0542811101000000123456".into(),
                tc_accepted_at: ts("2020-01-01T00:00:00Z"),
                withdrawn: false,
            }),
            &mut Report::default(),
        );
    }
    l
}

/// The terminal key of the payment with sequence `seq`: payments three
/// apart share a terminal.
fn terminal(seq: u64) -> u64 {
    0xdead_beef_0000_0000 | (seq % 3)
}

fn origin() -> Origin {
    Origin {
        subject: "s".into(),
        payload: Default::default(),
    }
}

fn payment(seq: u64, citizen: CitizenIdx, trx: &str, cents: u64, corr: Option<u64>) -> Item {
    let trx_date = ts(trx);
    Item::Payment(PaymentItem {
        seq,
        key: seq,
        broker_time: ts("2021-07-05T00:00:00Z"),
        now: ts("2021-07-05T00:00:00Z"),
        hpan: HPAN,
        fate: Fate::Counts {
            citizen,
            period: if trx_date < ts("2021-06-30T22:00:00Z") {
                0
            } else {
                1
            },
        },
        trx_date,
        amount: cents,
        acquirer: if seq.is_multiple_of(2) { "32875" } else { "99" }.into(),
        circuit_type: 10,
        operation_type: 3,
        terminal_key: terminal(seq),
        correlation_key: corr,
        merchant_key: 1,
        withdrawn: Default::default(),
        origin: origin(),
    })
}

fn reversal(seq: u64, cents: u64, corr: Option<u64>, terminal: u64) -> Item {
    Item::Reversal(ReversalItem {
        reversal: Reversal {
            seq,
            broker_time: ts("2021-07-05T00:00:00Z"),
            key: 1000 + seq,
            amount: cents,
            terminal_key: terminal,
            correlation_key: corr,
            origin: origin(),
        },
        now: ts("2021-07-05T00:00:00Z"),
        hpan: HPAN,
        withdrawn: Default::default(),
    })
}

fn run(l: &mut Ledger, item: Item) -> Report {
    let mut report = Report::default();
    l.apply(&item, &mut report);
    report
}

fn lines(l: &Ledger, citizen: CitizenIdx, period: PeriodIdx) -> Vec<(u64, u64, u64)> {
    let mut out = Vec::new();
    l.statement_lines(citizen, period, &mut out);
    out.sort_by_key(|s| s.seq);
    out.iter().map(|s| (s.seq, s.amount, s.balance)).collect()
}

#[test]
fn records_unpack_to_exactly_what_was_recorded() {
    let mut l = ledger();
    let seq = record::SEQ_LIMIT - 1;
    run(
        &mut l,
        payment(
            seq,
            0,
            "2021-03-01T10:00:00.123456789+01:00",
            4_294_967_294,
            Some(5),
        ),
    );
    let p = &l.payments_of(&HPAN)[0];
    assert_eq!(
        *p,
        Payment {
            seq,
            trx_date: ts("2021-03-01T10:00:00.123456789+01:00"),
            amount: 4_294_967_294,
            balance: 4_294_967_294,
            citizen: 0,
            period: 0,
            acquirer: "99".into(),
            circuit_type: 10,
            operation_type: 3,
            excluded: false,
        }
    );
    assert_eq!(l.payment_count(), (1, 0), "fits: not spilled");
}

#[test]
fn huge_amounts_spill_exactly_and_reverse_partially() {
    let mut l = ledger();
    let big = 1u64 << 40; // 10,995,116,277.76 EUR
    run(&mut l, payment(1, 0, "2021-03-01T10:00:00Z", big, Some(42)));
    run(
        &mut l,
        payment(2, 0, "2021-03-02T10:00:00Z", 1_000, Some(43)),
    );
    assert_eq!(l.payment_count(), (2, 1));
    let cashback = |l: &Ledger| l.citizen(0, 0).unwrap().1.cashback.to_string();
    assert_eq!(cashback(&l), "16.00"); // 15.00 (capped) + 1.00
    let r = run(&mut l, reversal(3, big - 100, Some(42), 0));
    assert_eq!(r.reversals_applied, 1);
    assert_eq!(lines(&l, 0, 0), vec![(1, big, 100), (2, 1_000, 1_000)]);
    assert_eq!(cashback(&l), "1.10"); // 0.10 + 1.00
    let r = run(&mut l, reversal(4, 101, Some(42), 0));
    assert_eq!(
        r.rejections[0].rejection.reason,
        Reason::ReversalExceedsOriginal
    );
    // A total reversal without correlation id matches on the balance.
    let r = run(&mut l, reversal(5, 100, None, terminal(1)));
    assert_eq!(r.reversals_applied, 1);
    assert_eq!(lines(&l, 0, 0), vec![(1, big, 0), (2, 1_000, 1_000)]);
    assert_eq!(l.citizen(0, 0).unwrap().1.count, 1);
    // And it all survives a snapshot.
    let bytes = crate::snapshot::encode_ledger(&l);
    let settings = crate::settings::Settings {
        periods: l.periods.clone(),
        partitions: 1,
        park_days: 30,
        limits: ParkingLimits::default(),
        max_authorization_bytes: 16384,
    };
    let back = crate::snapshot::decode_ledger(&bytes, &settings).unwrap();
    assert_eq!(lines(&back, 0, 0), lines(&l, 0, 0));
    assert_eq!(back.payments_of(&HPAN), l.payments_of(&HPAN));
    assert_eq!(back.payment_count(), (2, 1));
}

#[test]
fn a_card_that_changes_hands_keeps_each_payment_with_its_citizen() {
    let mut l = ledger();
    run(&mut l, payment(1, 0, "2021-03-01T10:00:00Z", 500, Some(1)));
    run(&mut l, payment(2, 1, "2021-05-01T10:00:00Z", 600, Some(2)));
    run(&mut l, payment(3, 0, "2021-03-02T10:00:00Z", 700, Some(3)));
    run(&mut l, payment(4, 1, "2021-05-02T10:00:00Z", 800, Some(4)));
    run(&mut l, payment(5, 1, "2021-07-02T10:00:00Z", 900, Some(5)));
    assert_eq!(l.card(&HPAN).unwrap().owners.len(), 4);
    assert_eq!(lines(&l, 0, 0), vec![(1, 500, 500), (3, 700, 700)]);
    assert_eq!(lines(&l, 1, 0), vec![(2, 600, 600), (4, 800, 800)]);
    assert_eq!(lines(&l, 1, 1), vec![(5, 900, 900)]);
    let r = run(&mut l, reversal(6, 700, Some(3), 0));
    assert_eq!(r.reversals_applied, 1);
    assert_eq!(l.citizen(0, 0).unwrap().1.count, 1);
    assert_eq!(l.citizen(1, 0).unwrap().1.count, 2);
    let before = (lines(&l, 0, 0), lines(&l, 1, 0), lines(&l, 1, 1));
    l.rebuild_indexes();
    assert_eq!(before, (lines(&l, 0, 0), lines(&l, 1, 0), lines(&l, 1, 1)));
}

#[test]
fn values_that_do_not_pack_spill_and_still_decide_the_same() {
    let mut l = ledger();
    let terminal = terminal(9);
    let mut odd = payment(9, 0, "2021-03-01T10:00:00Z", 300, None);
    if let Item::Payment(p) = &mut odd {
        p.fate = Fate::Counts {
            citizen: 0,
            period: 1,
        };
    }
    run(&mut l, odd);
    let mut late = payment(record::SEQ_LIMIT + 7, 0, "2021-03-01T10:00:00Z", 300, None);
    if let Item::Payment(p) = &mut late {
        p.terminal_key = terminal;
    }
    run(&mut l, late);
    assert_eq!(l.payment_count(), (2, 2));
    assert_eq!(lines(&l, 0, 0), vec![(record::SEQ_LIMIT + 7, 300, 300)]);
    assert_eq!(lines(&l, 0, 1), vec![(9, 300, 300)]);
    let r = run(&mut l, reversal(record::SEQ_LIMIT + 8, 300, None, terminal));
    assert_eq!(r.reversals_applied, 1);
    assert_eq!(lines(&l, 0, 0), vec![(record::SEQ_LIMIT + 7, 300, 300)]);
    assert_eq!(lines(&l, 0, 1), vec![(9, 300, 0)]);
}

/// The chain of parked reversals a payment releases is decided as one:
/// the second reversal sees the balance the first one left.
#[test]
fn a_release_chain_is_decided_against_its_own_earlier_steps() {
    let mut l = ledger();
    // Two reversals of 6.00 with the same correlation id wait; the payment
    // of 10.00 takes the first, and the second would exceed what is left.
    let r1 = run(&mut l, reversal(1, 600, Some(77), 0));
    let r2 = run(&mut l, reversal(2, 600, Some(77), 0));
    assert_eq!(r1.reversals_parked + r2.reversals_parked, 2);
    let decision = l.decide(&payment(3, 0, "2021-03-01T10:00:00Z", 1000, Some(77)));
    // Deciding wrote nothing.
    assert_eq!(l.payment_count(), (0, 0));
    assert_eq!(l.parked_count(), 2);
    let mut report = Report::default();
    l.commit(decision, &mut report);
    assert_eq!(report.payments, 1);
    assert_eq!(report.reversals_applied, 1);
    assert_eq!(report.rejections.len(), 1);
    assert_eq!(report.rejections[0].seq, 2);
    assert_eq!(
        report.rejections[0].rejection.reason,
        Reason::ReversalExceedsOriginal
    );
    assert_eq!(lines(&l, 0, 0), vec![(3, 1000, 400)]);
    assert_eq!(l.parked_count(), 0);
    let s = l.citizen(0, 0).unwrap().1;
    assert_eq!((s.count, s.cashback.to_string()), (1, "0.40".into()));
}

#[test]
fn keys_are_kept_with_the_card_and_forgotten_when_rejected() {
    let mut l = ledger();
    run(&mut l, payment(1, 0, "2021-03-01T10:00:00Z", 1000, None));
    let again = run(&mut l, payment(1, 0, "2021-03-01T10:00:00Z", 1000, None));
    assert_eq!(again.rejections[0].rejection.reason, Reason::Duplicate);
    // A rejected payment leaves no key behind.
    let mut refused = payment(2, 0, "2021-03-01T10:00:00Z", 1000, None);
    if let Item::Payment(p) = &mut refused {
        p.fate = Fate::Rejected(Rejection::new(Reason::CardNotActive, "x"));
    }
    let r = run(&mut l, refused);
    assert_eq!(r.rejections[0].rejection.reason, Reason::CardNotActive);
    let r = run(&mut l, payment(2, 0, "2021-03-01T10:00:00Z", 1000, None));
    assert_eq!(r.payments, 1);
    // A duplicate is found before the router's verdict.
    let mut dup = payment(2, 0, "2021-03-01T10:00:00Z", 1000, None);
    if let Item::Payment(p) = &mut dup {
        p.fate = Fate::Rejected(Rejection::new(Reason::PeriodClosed, "x"));
    }
    assert_eq!(
        run(&mut l, dup).rejections[0].rejection.reason,
        Reason::Duplicate
    );
}

#[test]
fn the_split_payment_limit_counts_slots_per_shop_and_day() {
    let periods = Periods::new(vec![AwardPeriodBuilder::limited(2)]).unwrap();
    let mut l = Ledger::new(0, Arc::new(periods), 30, ParkingLimits::default());
    l.apply(
        &Item::Citizen(CitizenFacts {
            idx: 0,
            id: "c0".into(),
            iban: "IT60X0542811101000000123456".into(),
            tc_accepted_at: ts("2020-01-01T00:00:00Z"),
            withdrawn: false,
        }),
        &mut Report::default(),
    );
    let pay = |seq, merchant, trx: &str| {
        let mut p = payment(seq, 0, trx, 1000, None);
        if let Item::Payment(p) = &mut p {
            p.merchant_key = merchant;
            p.fate = Fate::Counts {
                citizen: 0,
                period: 0,
            };
        }
        p
    };
    let verdict = |l: &mut Ledger, item| {
        let r = run(l, item);
        r.rejections
            .first()
            .map_or("ok", |x| x.rejection.reason.as_str())
    };
    assert_eq!(
        verdict(&mut l, pay(1, 1, "2021-03-01T09:00:00+01:00")),
        "ok"
    );
    assert_eq!(
        verdict(&mut l, pay(2, 1, "2021-03-01T23:59:00+01:00")),
        "ok"
    );
    assert_eq!(
        verdict(&mut l, pay(3, 1, "2021-03-01T12:00:00+01:00")),
        "merchant_daily_limit"
    );
    // Another shop, and the next Rome day, have their own slots.
    assert_eq!(
        verdict(&mut l, pay(4, 2, "2021-03-01T12:00:00+01:00")),
        "ok"
    );
    assert_eq!(verdict(&mut l, pay(5, 1, "2021-03-01T23:00:00Z")), "ok");
    // A reversal gives no slot back.
    let rev = reversal(6, 1000, None, terminal(1));
    assert_eq!(run(&mut l, rev).reversals_applied, 1);
    assert_eq!(
        verdict(&mut l, pay(7, 1, "2021-03-01T10:00:00+01:00")),
        "merchant_daily_limit"
    );
    assert_eq!(l.sizes().slots, 3);
    // Once the period no longer accepts data, its slots go.
    l.apply(
        &Item::Tick(ts("2022-01-01T00:00:00Z")),
        &mut Report::default(),
    );
    assert_eq!(l.sizes().slots, 0);
}

/// A tiny builder for periods with a split-payment limit.
struct AwardPeriodBuilder;

impl AwardPeriodBuilder {
    fn limited(limit: u16) -> crate::period::AwardPeriod {
        let mut p = crate::period::tests::period("A", "2021-01-01", "2021-06-30");
        p.max_payments_per_merchant_day = limit;
        p
    }
}

#[test]
fn an_excluded_payment_stops_counting_and_reinstating_restores_it() {
    let mut l = ledger();
    run(&mut l, payment(1, 0, "2021-03-01T10:00:00Z", 1000, Some(9)));
    run(&mut l, payment(2, 0, "2021-03-02T10:00:00Z", 2000, None));
    let exclusion = |seq, op, key| {
        Item::Exclusion(ExclusionItem {
            seq,
            broker_time: ts("2021-07-05T00:00:00Z"),
            now: ts("2021-07-05T00:00:00Z"),
            op,
            hpan: HPAN,
            key,
            reason: "audit".into(),
        })
    };
    let standing = |l: &Ledger| {
        let s = l.citizen(0, 0).unwrap().1;
        (s.count, s.cashback.to_string())
    };
    assert_eq!(standing(&l), (2, "3.00".into()));
    let r = run(&mut l, exclusion(3, ExclusionOp::Exclude, 1));
    assert_eq!(r.exclusions, vec![(3, ExclusionOp::Exclude, Ok(true))]);
    assert_eq!(standing(&l), (1, "2.00".into()));
    // Idempotent.
    let r = run(&mut l, exclusion(4, ExclusionOp::Exclude, 1));
    assert_eq!(r.exclusions, vec![(4, ExclusionOp::Exclude, Ok(false))]);
    assert_eq!(standing(&l), (1, "2.00".into()));
    // A reversal of the excluded payment lowers its balance only.
    let r = run(&mut l, reversal(5, 400, Some(9), 0));
    assert_eq!(r.reversals_applied, 1);
    assert_eq!(standing(&l), (1, "2.00".into()));
    let mut out = Vec::new();
    l.statement_lines(0, 0, &mut out);
    let excluded = out.iter().find(|s| s.seq == 1).unwrap();
    assert!(excluded.excluded);
    assert_eq!(
        (excluded.balance, excluded.cashback.to_string()),
        (600, "0".into())
    );
    // Reinstating restores the effect of its current balance.
    let r = run(&mut l, exclusion(6, ExclusionOp::Reinstate, 1));
    assert_eq!(r.exclusions, vec![(6, ExclusionOp::Reinstate, Ok(true))]);
    assert_eq!(standing(&l), (2, "2.60".into()));
    // Unknown keys, and a closed period.
    let r = run(&mut l, exclusion(7, ExclusionOp::Exclude, 999));
    assert_eq!(
        r.exclusions,
        vec![(7, ExclusionOp::Exclude, Err(ErrorCode::UnknownPayment))]
    );
    let mut late = exclusion(8, ExclusionOp::Exclude, 2);
    if let Item::Exclusion(e) = &mut late {
        e.broker_time = ts("2021-08-01T00:00:00Z");
        e.now = e.broker_time; // the router's clock is never behind a message
    }
    assert_eq!(
        run(&mut l, late).exclusions,
        vec![(8, ExclusionOp::Exclude, Err(ErrorCode::PeriodClosed))]
    );
    assert_eq!(l.audit().len(), 2);
}

#[test]
fn a_credit_is_taken_once_per_sender_in_order() {
    let mut l = ledger();
    let credit = |seq, index, source| {
        Item::Credit(Credit {
            id: CreditId { seq, index, source },
            citizen: 1,
            period: 0,
            count: 1,
            cashback: Decimal::new(150, 2),
            trx_date: Some(ts("2021-03-01T10:00:00Z")),
        })
    };
    run(&mut l, credit(10, 0, 5));
    run(&mut l, credit(10, 1, 5));
    let again = run(&mut l, credit(10, 0, 5));
    assert_eq!(again.credits_repeated, 1);
    run(&mut l, credit(3, 0, 6)); // another sender, its own order
    assert_eq!(l.citizen(1, 0).unwrap().1.count, 3);
    // A credit for a citizen held elsewhere is a broken invariant, reported.
    let mut stray = credit(11, 0, 5);
    if let Item::Credit(c) = &mut stray {
        c.citizen = 42;
    }
    assert_eq!(run(&mut l, stray).invariant_violations.len(), 1);
}
