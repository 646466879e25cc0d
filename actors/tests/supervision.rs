//! A shard started under `actix::Supervisor` survives panics in its handler:
//! the item is retried or set aside, the state is kept, the mailbox stays
//! open, and later batches are applied in order.

use actix::{Arbiter, Supervisor};
use cashback_actors::{CitizenShard, Lookup, LookupCitizen, ShardBatch, ShardStats};
use cashback_engine::authorization::Hpan;
use cashback_engine::fault::{self, Fault, Point};
use cashback_engine::item::{Fate, Item, Origin, PaymentItem};
use cashback_engine::ledger::CitizenFacts;
use cashback_engine::parking::ParkingLimits;
use cashback_engine::period::{AwardPeriod, Periods};
use cashback_engine::reason::Reason;
use cashback_engine::settings::Settings;
use cashback_engine::time::Timestamp;
use std::sync::Arc;

mod faults;

fn ts(s: &str) -> Timestamp {
    Timestamp::parse_rfc3339(s).unwrap()
}

fn periods() -> Arc<Periods> {
    Arc::new(
        Periods::new(vec![AwardPeriod {
            id: "P".into(),
            start: "2021-01-01".parse().unwrap(),
            end: "2021-06-30".parse().unwrap(),
            grace_days: 10,
            min_transactions: 1,
            cashback_rate: "0.10".parse().unwrap(),
            max_cashback_per_transaction: "15.00".parse().unwrap(),
            max_cashback: "150.00".parse().unwrap(),
            supercashback_winners: 1,
            supercashback_prize: "1.00".parse().unwrap(),
            max_payments_per_merchant_day: 0,
        }])
        .unwrap(),
    )
}

fn settings() -> Arc<Settings> {
    Arc::new(Settings {
        periods: periods(),
        partitions: 1,
        park_days: 30,
        limits: ParkingLimits::default(),
        max_authorization_bytes: 16384,
    })
}

fn payment(seq: u64, cents: u64) -> (u16, Item) {
    (
        0,
        Item::Payment(PaymentItem {
            seq,
            key: seq,
            broker_time: ts("2021-03-02T00:00:00Z"),
            now: ts("2021-03-02T00:00:00Z"),
            hpan: Hpan([1; 32]),
            fate: Fate::Counts {
                citizen: 0,
                period: 0,
            },
            trx_date: ts("2021-03-01T00:00:00Z"),
            amount: cents,
            acquirer: "32875".into(),
            circuit_type: 1,
            operation_type: 0,
            terminal_key: 1,
            correlation_key: None,
            merchant_key: 1,
            withdrawn: Default::default(),
            origin: Origin {
                subject: "cashback.auth.32875".into(),
                payload: Default::default(),
            },
        }),
    )
}

fn batch(items: Vec<(u16, Item)>) -> ShardBatch {
    ShardBatch { items, now: None }
}

#[actix::test]
async fn panics_neither_lose_state_nor_stall_the_shard() {
    let _plan = faults::exclusive();
    let arbiter = Arbiter::new();
    let s = settings();
    let shard = Supervisor::start_in_arbiter(&arbiter.handle(), move |_| CitizenShard::new(0, s));
    let citizen = Item::Citizen(CitizenFacts {
        idx: 0,
        id: "c".into(),
        iban: "IT60X0542811101000000123456".into(),
        tc_accepted_at: ts("2020-01-01T00:00:00Z"),
        withdrawn: false,
    });
    let r = shard
        .send(batch(vec![(0, citizen), payment(1, 1000)]))
        .await
        .unwrap();
    assert_eq!(r.payments, 1);

    // One panic, then success: counted exactly once.
    fault::install([Fault {
        point: Point::Payment,
        seq: 2,
        times: 1,
    }]);
    let r = shard.send(batch(vec![payment(2, 2000)])).await.unwrap();
    assert_eq!((r.payments, r.rejections.len()), (1, 0));
    // Always panics: set aside as internal_error, and the rest of the batch
    // (and every later batch) goes on. Send two batches back to back so the
    // second waits in the mailbox across the restart.
    fault::install([Fault {
        point: Point::Payment,
        seq: 3,
        times: u32::MAX,
    }]);
    let poisoned = shard.send(batch(vec![payment(3, 4000), payment(4, 8000)]));
    let after = shard.send(batch(vec![payment(5, 16000)]));
    let (poisoned, after) = (poisoned.await.unwrap(), after.await.unwrap());
    assert_eq!(poisoned.payments, 1);
    assert_eq!(poisoned.rejections.len(), 1);
    assert_eq!(poisoned.rejections[0].seq, 3);
    assert_eq!(
        poisoned.rejections[0].rejection.reason,
        Reason::InternalError
    );
    assert_eq!(after.payments, 1);

    let stats = shard.send(ShardStats).await.unwrap();
    assert_eq!(
        stats.restarts, 2,
        "restarted after each batch that panicked"
    );
    assert_eq!(stats.set_aside, 1);
    let Lookup::Found(_, standing) = shard
        .send(LookupCitizen {
            partition: 0,
            citizen_id: "c".into(),
            period: 0,
        })
        .await
        .unwrap()
    else {
        panic!("the citizen survived the restarts")
    };
    // 10.00 + 20.00 + 80.00 + 160.00 EUR at 10%, capped at 15.00 each:
    // 1.00 + 2.00 + 8.00 + 15.00.
    assert_eq!(standing.count, 4);
    assert_eq!(standing.cashback.to_string(), "26.00");
    arbiter.stop();
}
