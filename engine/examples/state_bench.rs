//! Memory and snapshot cost of the engine's partition state at the scale of
//! the real programme: N citizens (default 8,400,000) and M retained payments
//! (default 50,000,000), heavy-tailed per citizen with the 2021H1 shape.
//!
//! `cargo run --release -p cashback-engine --example state_bench -- [N [M]]`
//! (`-- 1000000` for a quick run; M defaults to N * 50/8.4).
//!
//! The state is built through the ledgers' own API (`Ledger::apply` with the
//! items the router would send: citizens, then their payments; no NATS, no
//! router), in 256 partitions as configured by default. Heap use is measured
//! with a counting global allocator (bytes requested, live), before and
//! after; the payment buffers' share is computed from their capacities.
//! Then every ledger is encoded with `snapshot::encode_ledger` (bincode),
//! the state dropped, and decoded again with `snapshot::decode_ledger`
//! (which rebuilds the derived indexes), timed, single-threaded.
//!
//! Not included: the router (directory of citizens and cards) and the rank
//! index, which have their own figures. The de-duplication keys are in the
//! payment records.

use cashback_engine::authorization::Hpan;
use cashback_engine::item::{Credit, Fate, Item, Origin, PaymentItem, Report};
use cashback_engine::ledger::{CitizenFacts, Ledger, LedgerSizes};
use cashback_engine::parking::ParkingLimits;
use cashback_engine::partition::{partition_of, DEFAULT_PARTITIONS};
use cashback_engine::period::{AwardPeriod, Periods};
use cashback_engine::rank::bench::{self, Rng};
use cashback_engine::settings::Settings;
use cashback_engine::snapshot;
use cashback_engine::time::Timestamp;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

/// Counts live heap bytes (as requested; the allocator's own rounding and
/// fragmentation are not included, RSS is printed next to it for that).
struct Counting;

/// Live bytes.
static LIVE: AtomicUsize = AtomicUsize::new(0);
/// Highest `LIVE` seen.
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Relaxed) + layout.size();
            PEAK.fetch_max(now, Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size(), Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            if new_size >= layout.size() {
                let now =
                    LIVE.fetch_add(new_size - layout.size(), Relaxed) + new_size - layout.size();
                PEAK.fetch_max(now, Relaxed);
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> usize {
    LIVE.load(Relaxed)
}

/// Resident set size, from /proc (0 where there is none).
fn rss() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn gib(bytes: usize) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

fn period() -> Arc<Periods> {
    let (start, end) = ("2021-01-01".parse().unwrap(), "2021-06-30".parse().unwrap());
    Arc::new(Periods::new(vec![AwardPeriod::with_2021_rules("2021H1", start, end)]).unwrap())
}

/// A card number's hash (distinct for distinct numbers).
fn hpan(n: u64) -> Hpan {
    let mut h = [0u8; 32];
    for (i, chunk) in h.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&bench::mix(n.wrapping_mul(4).wrapping_add(i as u64)).to_le_bytes());
    }
    Hpan(h)
}

/// Acquirer codes: a few big acquirers take most payments, as in Italy.
const ACQUIRERS: [&str; 12] = [
    "32875", "03069", "02008", "05034", "03104", "36081", "01030", "03062", "05696", "08000",
    "33500", "36772",
];

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.replace('_', "").parse().expect("N and M are integers"))
        .collect();
    let citizens = args.first().copied().unwrap_or(8_400_000) as usize;
    let payments_goal = args
        .get(1)
        .copied()
        .unwrap_or((citizens as u64 * 50_000_000) / 8_400_000) as usize;
    let partitions = DEFAULT_PARTITIONS;
    let periods = period();
    let acquirers: Vec<Arc<str>> = ACQUIRERS.iter().map(|a| (*a).into()).collect();

    // Payment counts: the 2021H1 shape (log-normal, median 90, long tail)
    // scaled to M in total, rounded stochastically.
    let mut rng = Rng::new(2021);
    let shape: Vec<f32> = (0..citizens)
        .map(|_| bench::count(&mut rng) as f32)
        .collect();
    let scale = payments_goal as f64 / shape.iter().map(|x| *x as f64).sum::<f64>();
    let counts: Vec<u32> = shape
        .iter()
        .map(|x| (*x as f64 * scale + rng.unit()).floor() as u32)
        .collect();
    drop(shape);
    let total_payments: u64 = counts.iter().map(|c| *c as u64).sum();
    let max_count = counts.iter().max().copied().unwrap_or(0);

    let start = Instant::now();
    let base = live();
    let base_rss = rss();
    let mut ledgers: Vec<Ledger> = (0..partitions)
        .map(|p| Ledger::new(p, periods.clone(), 30, ParkingLimits::default()))
        .collect();
    let broker = Timestamp::from_unix_nanos(bench::NOW_SECS as i128 * 1_000_000_000);
    let mut home = Vec::with_capacity(citizens);
    // The id and IBAN strings' heap (Arc header + text), to show the
    // summary's share apart from what any representation must store.
    let mut string_bytes = 0usize;
    for idx in 0..citizens as u32 {
        let id = format!("{:016x}", bench::mix(idx as u64));
        let p = partition_of(&id, partitions);
        home.push(p);
        let iban = format!("IT60X0542811101{:012}", idx);
        string_bytes += 2 * 16 + id.len() + iban.len();
        let facts = CitizenFacts {
            idx,
            id: id.into(),
            iban: iban.into(),
            tc_accepted_at: Timestamp::from_unix_nanos(
                (bench::PERIOD_START_SECS - 20 * 86_400) as i128 * 1_000_000_000,
            ),
            withdrawn: false,
        };
        ledgers[p as usize].apply(&Item::Citizen(facts), &mut Report::default());
    }
    let after_citizens = live();
    let citizens_secs = start.elapsed().as_secs_f64();

    let start = Instant::now();
    let mut seq = 0u64;
    let mut cards = 0u64;
    let mut report = Report::default();
    let mut credits: Vec<Credit> = Vec::new();
    let origin = Origin {
        subject: "cashback.auth.bench".into(),
        payload: Default::default(),
    };
    for (idx, &count) in counts.iter().enumerate() {
        if count == 0 {
            continue;
        }
        // One card for most, two or three for the heavy users.
        let n_cards = 1 + (count > 20) as u64 + (count > 200) as u64;
        let first_card = cards;
        cards += n_cards;
        let p = home[idx] as usize;
        for _ in 0..count {
            seq += 1;
            let card = first_card + rng.below(n_cards);
            let trx = bench::PERIOD_START_SECS + rng.below(150 * 86_400) as i64;
            let cents = (1000.0 * (0.9 * rng.normal()).exp()).clamp(1.0, 500_000.0) as u64;
            let item = Item::Payment(PaymentItem {
                seq,
                key: seq,
                broker_time: broker,
                now: broker,
                hpan: hpan(card),
                fate: Fate::Counts {
                    citizen: idx as u32,
                    period: 0,
                },
                trx_date: Timestamp::from_unix_nanos(trx as i128 * 1_000_000_000),
                amount: cents,
                acquirer: acquirers[(rng.below(64) as usize).min(rng.below(12) as usize)].clone(),
                circuit_type: rng.below(11) as u8,
                operation_type: [0, 2, 3][rng.below(3) as usize],
                terminal_key: rng.next_u64(),
                correlation_key: (rng.below(10) < 7).then(|| rng.next_u64()),
                merchant_key: rng.below(1000),
                withdrawn: Default::default(),
                origin: origin.clone(),
            });
            ledgers[p].apply(&item, &mut report);
            credits.append(&mut report.credits);
            report = Report::default();
        }
    }
    // Cards are anchored at their first owner's partition, so no credit
    // crosses partitions here; apply any anyway.
    for c in credits {
        let p = home[c.citizen as usize] as usize;
        ledgers[p].apply(&Item::Credit(c), &mut Report::default());
    }
    let after_payments = live();
    let payments_secs = start.elapsed().as_secs_f64();
    let state_rss = rss();
    let sizes = ledgers
        .iter()
        .map(Ledger::sizes)
        .fold(LedgerSizes::default(), |a, s| LedgerSizes {
            cards: a.cards + s.cards,
            payments: a.payments + s.payments,
            payment_buffer_bytes: a.payment_buffer_bytes + s.payment_buffer_bytes,
            owner_runs: a.owner_runs + s.owner_runs,
            spilled: a.spilled + s.spilled,
            acquirers: a.acquirers.max(s.acquirers),
            slots: a.slots + s.slots,
            wallet_cards: a.wallet_cards + s.wallet_cards,
        });
    assert_eq!(sizes.payments as u64, total_payments);

    // Snapshot: encode every ledger, drop the state, decode.
    let start = Instant::now();
    let encoded: Vec<Vec<u8>> = ledgers.iter().map(snapshot::encode_ledger).collect();
    let encode_secs = start.elapsed().as_secs_f64();
    let snapshot_bytes: usize = encoded.iter().map(Vec::len).sum();
    let peak_before_decode = PEAK.load(Relaxed);
    drop(ledgers);
    let before_decode = live();
    let start = Instant::now();
    let settings = Settings {
        periods: periods.clone(),
        partitions,
        park_days: 30,
        limits: ParkingLimits::default(),
        max_authorization_bytes: 16384,
    };
    let restored: Vec<Ledger> = encoded
        .iter()
        .map(|b| snapshot::decode_ledger(b, &settings).expect("decodes"))
        .collect();
    let decode_secs = start.elapsed().as_secs_f64();
    let restored_bytes = live() - before_decode;
    let restored_payments: usize = restored.iter().map(|l| l.sizes().payments).sum();
    let restored_buffers: usize = restored
        .iter()
        .map(|l| l.sizes().payment_buffer_bytes)
        .sum();
    assert_eq!(restored_payments, sizes.payments);

    let n = citizens as f64;
    let m = sizes.payments as f64;
    let citizen_bytes = after_citizens - base;
    let payment_bytes = after_payments - after_citizens;
    println!(
        "## Engine state at {citizens} citizens, {} retained payments\n",
        sizes.payments
    );
    println!(
        "{} partitions; payments per citizen heavy-tailed (2021H1 shape scaled to the total, max {max_count}); \
         {} cards ({} owner runs), {} acquirer codes, {} spilled payments. \
         Built in {citizens_secs:.1} s (citizens) + {payments_secs:.1} s (payments).\n",
        partitions, sizes.cards, sizes.owner_runs, sizes.acquirers, sizes.spilled
    );
    println!("| figure | value |");
    println!("| --- | --- |");
    println!(
        "| `size_of::<PaymentRecord>()` | {} B |",
        std::mem::size_of::<cashback_engine::ledger::record::PaymentRecord>()
    );
    println!(
        "| payment buffers (capacity incl.) per payment, live | {:.1} B |",
        sizes.payment_buffer_bytes as f64 / m
    );
    println!(
        "| payment buffers per payment, after restore | {:.1} B |",
        restored_buffers as f64 / m
    );
    println!("| heap added by the payments phase, per payment (buffers + card books + card map + statement index) | {:.1} B |", payment_bytes as f64 / m);
    println!(
        "| of which per card (book + map entry + index), per card | {:.1} B |",
        (payment_bytes - sizes.payment_buffer_bytes) as f64 / sizes.cards as f64
    );
    println!(
        "| `size_of::<CitizenSummary>()` (counts, cashback, last payment, T&C time, 2 periods) | {} B |",
        std::mem::size_of::<cashback_engine::summary::CitizenSummary>()
    );
    println!(
        "| heap per citizen (summary, identity, id and IBAN strings, indexes), before payments | {:.1} B |",
        citizen_bytes as f64 / n
    );
    println!(
        "| of which the id and IBAN strings ({:.0} characters per citizen here) | {:.1} B |",
        (string_bytes as f64 / n) - 32.0,
        string_bytes as f64 / n
    );
    println!(
        "| whole ledger heap, live | {} |",
        gib(after_payments - base)
    );
    println!(
        "| whole ledger heap, after restore | {} |",
        gib(restored_bytes)
    );
    println!(
        "| RSS growth while building (allocator overhead included) | {} |",
        gib(state_rss.saturating_sub(base_rss))
    );
    println!("| snapshot encode (bincode, {partitions} ledgers, 1 thread) | {encode_secs:.2} s |");
    println!(
        "| snapshot size | {} ({:.1} B per payment overall) |",
        gib(snapshot_bytes),
        snapshot_bytes as f64 / m
    );
    println!("| snapshot decode + index rebuild (1 thread) | {decode_secs:.2} s |");
    println!(
        "| peak heap (state + encoded snapshot) | {} |",
        gib(peak_before_decode.max(PEAK.load(Relaxed)))
    );
    drop(restored);
}
