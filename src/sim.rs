//! The payment-network simulator's generator: deterministic from a seed,
//! with no I/O, so that the same seed yields the same messages and the
//! simulator knows exactly what every citizen should end up with.
//!
//! Calibration (RULES.md, "Scale of the real programme"): payments per
//! citizen follow a log-normal with median 90 per semester and the
//! 100,000th of 8.4M citizens near 700, i.e. mu = ln 90 and
//! sigma = (ln 700 - ln 90) / z(1 - 100000/8.4M) = 2.05 / 2.26 = 0.907.
//! Amounts are log-normal around 35 EUR.
//!
//! Split bursts (RULES.md, "Split payments"): about 1% of messages are
//! micro-payments of one card at one shop a few minutes apart, 3 to 8 in a
//! row, the 2021 way of climbing the ranking. Under a period's
//! `max_payments_per_merchant_day` the ones beyond it are rejected
//! `merchant_daily_limit`. The generator knows exactly which: every other
//! payment is at a shop of its own, a burst's shop is its own too, and a
//! burst goes out in one piece before anything else, so the payments that
//! take a shop's slots on a Rome day are the burst's own, in its order.

use cashback_engine::money::score;
use cashback_engine::time::Timestamp;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};

/// Median payments per citizen per semester.
pub const MEDIAN_PAYMENTS: f64 = 90.0;
/// Spread of the log-normal (see the module doc).
pub const SIGMA: f64 = 0.907;

/// One message to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    /// Subject token after `cashback.auth.`.
    pub acquirer: String,
    /// `Nats-Msg-Id`.
    pub msg_id: String,
    /// Body bytes (JSON, or garbage for the malformed share).
    pub body: Vec<u8>,
}

/// What the simulator expects for one citizen.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expected {
    /// Payments that count.
    pub count: u32,
    /// Exact cashback.
    pub cashback: Decimal,
}

/// Payments in a split burst: at least 3, so that a limit of 2 or 3 shows.
const BURST: std::ops::RangeInclusive<usize> = 3..=8;

/// A payment the simulator may still reverse.
#[derive(Clone, Debug)]
struct Sent {
    citizen: usize,
    body: Value,
    balance: u64,
    correlation: Option<String>,
}

/// The generator.
pub struct Generator {
    /// Randomness, from the seed.
    rng: StdRng,
    /// Citizens.
    citizens: usize,
    /// Cumulative activity weights (heavy-tailed), for picking payers.
    cumulative: Vec<f64>,
    /// Payments that may be reversed or re-sent.
    recent: Vec<Sent>,
    /// Messages held back to be delivered late (a late acquirer batch), or
    /// payments whose reversal was sent first.
    held: VecDeque<Outgoing>,
    /// The rest of the current split burst: sent before anything else, so
    /// that nothing (a re-send, a reversal) comes between its payments.
    burst: VecDeque<Outgoing>,
    /// Messages generated so far (ids).
    n: u64,
    /// "Now" for trx dates, fixed at creation so a seed is reproducible
    /// within a run; tests pass it explicitly.
    now: Timestamp,
    /// Expected totals, per citizen.
    expected: BTreeMap<usize, Expected>,
    /// The oldest a payment may be, in seconds before `now`: late batches
    /// reach back up to two days, but never before the period's start (a
    /// payment outside the period would not count as the generator expects).
    max_age_secs: i64,
    /// Cashback rate and per-payment cap of the target period.
    rate: Decimal,
    cap: Decimal,
    /// The target period's `max_payments_per_merchant_day` (0: no limit),
    /// which decides how many payments of a burst count.
    limit: u16,
}

/// The citizen's id.
pub fn citizen_id(i: usize) -> String {
    format!("sim-{i}")
}

/// How many cards citizen `i` has: 1 to 4.
pub fn cards_of(i: usize) -> usize {
    1 + (splitmix(i as u64) % 4) as usize
}

/// A card's hpan.
pub fn hpan(citizen: usize, card: usize) -> String {
    let x = splitmix(((citizen as u64) << 3) | card as u64);
    format!(
        "{x:016x}{:016x}{:016x}{:016x}",
        splitmix(x),
        splitmix(x ^ 1),
        splitmix(x ^ 2)
    )
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A standard normal sample (Box-Muller).
fn normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

impl Generator {
    /// A generator for `citizens` citizens, with the period's rate and cap.
    /// A generator for `citizens` citizens, with the period's rate and cap;
    /// no trx date is before `earliest` (the period's start).
    pub fn new(
        citizens: usize,
        seed: u64,
        now: Timestamp,
        earliest: Timestamp,
        rate: Decimal,
        cap: Decimal,
    ) -> Generator {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut total = 0.0;
        let cumulative = (0..citizens)
            .map(|_| {
                total += (MEDIAN_PAYMENTS.ln() + SIGMA * normal(&mut rng)).exp();
                total
            })
            .collect();
        Generator {
            rng,
            citizens,
            cumulative,
            recent: Vec::new(),
            held: VecDeque::new(),
            burst: VecDeque::new(),
            n: 0,
            now,
            max_age_secs: (now.unix_secs() - earliest.unix_secs()).clamp(1, 172_800),
            expected: BTreeMap::new(),
            rate,
            cap,
            limit: 0,
        }
    }

    /// The same generator for a period with this `max_payments_per_merchant_day`
    /// (0: no limit): the payments of a split burst beyond it are expected
    /// not to count.
    pub fn with_merchant_day_limit(mut self, limit: u16) -> Generator {
        self.limit = limit;
        self
    }

    /// Citizens the generator pays: `sim-0` to `sim-{citizens-1}`.
    pub fn citizens(&self) -> usize {
        self.citizens
    }

    /// What each citizen should show once everything generated so far is
    /// applied (messages still held back included: `drain` releases them).
    pub fn expected(&self) -> &BTreeMap<usize, Expected> {
        &self.expected
    }

    fn pick_citizen(&mut self) -> usize {
        let x = self.rng.gen::<f64>() * self.cumulative.last().copied().unwrap_or(0.0);
        self.cumulative
            .partition_point(|c| *c < x)
            .min(self.citizens - 1)
    }

    /// The message for `body`, with its de-duplication key as `Nats-Msg-Id`
    /// (PROTOCOL section 1), so that a re-send inside JetStream's window is
    /// dropped by JetStream and a later one reaches the engine's own check.
    fn out(&mut self, body: &Value) -> Outgoing {
        self.n += 1;
        let field = |name: &str| body[name].as_str().unwrap_or_default();
        Outgoing {
            acquirer: field("acquirer_code").to_owned(),
            msg_id: format!(
                "{}/{}/{}/{}/{}/{}",
                field("hpan"),
                field("acquirer_code"),
                field("acquirer_id"),
                field("id_trx_acquirer"),
                field("operation_type"),
                field("trx_date")
            ),
            body: body.to_string().into_bytes(),
        }
    }

    fn credit(&mut self, citizen: usize, count: i32, delta: Decimal) {
        let e = self.expected.entry(citizen).or_default();
        e.count = (e.count as i32 + count) as u32;
        e.cashback += delta;
    }

    /// Keeps a payment that counted, to reverse or re-send later.
    fn remember(&mut self, sent: Sent) {
        if self.recent.len() < 10_000 {
            self.recent.push(sent);
        } else {
            let i = self.rng.gen_range(0..self.recent.len());
            self.recent[i] = sent;
        }
    }

    /// The next message to publish.
    pub fn next_message(&mut self) -> Outgoing {
        if let Some(m) = self.burst.pop_front() {
            return m;
        }
        // Late batches and payments whose reversal went first come back.
        if !self.held.is_empty() && self.rng.gen_bool(0.02) {
            return self.held.pop_front().expect("non-empty");
        }
        let roll: f64 = self.rng.gen();
        if roll < 0.001 {
            self.n += 1;
            return Outgoing {
                acquirer: "32875".into(),
                msg_id: format!("sim-{}", self.n),
                body: b"{\"truncated\": tr".to_vec(),
            };
        }
        if roll < 0.006 && !self.recent.is_empty() {
            // A duplicate: the same payment again. Most come back within
            // JetStream's window with the same Nats-Msg-Id and are dropped
            // there; a fifth arrive as after the window (a fresh message
            // id), so that only the engine's own key check stops them.
            let i = self.rng.gen_range(0..self.recent.len());
            let body = self.recent[i].body.clone();
            let mut msg = self.out(&body);
            if self.rng.gen_bool(0.2) {
                msg.msg_id.push_str(&format!("/resent-{}", self.n));
            }
            return msg;
        }
        if roll < 0.026 && !self.recent.is_empty() {
            return self.reversal();
        }
        if roll < 0.028 {
            return self.split_burst();
        }
        let citizen = self.pick_citizen();
        let card = self.rng.gen_range(0..cards_of(citizen));
        // Around 35 EUR, log-normal; at least 1 cent.
        let cents = ((3500f64.ln() + 0.6 * normal(&mut self.rng)).exp() as u64).max(1);
        // A late batch: an acquirer delivers yesterday's payments hours late.
        let late = self.rng.gen_bool(0.01);
        let age = if late {
            self.rng.gen_range(86_400..172_800)
        } else {
            self.rng.gen_range(0..3600)
        }
        .min(self.max_age_secs - 1);
        // A reversal that arrives before its payment (full amount, by
        // correlation id): the payment is held back and sent later.
        let early = !late && self.rng.gen_bool(0.004);
        let correlation = (early || self.rng.gen_bool(0.3)).then(|| format!("c{}", self.n));
        let operation = ["00", "02", "03"][self.rng.gen_range(0..3)];
        let mut body = json!({
            "acquirer_code": "32875", "operation_type": operation,
            "circuit_type": format!("{:02}", self.rng.gen_range(0..11)),
            "hpan": hpan(citizen, card),
            "trx_date": self.now.plus_secs(-age).to_rome_rfc3339(),
            "id_trx_acquirer": format!("t{}", self.n), "total_amount": cents,
            "currency": "978", "acquirer_id": "A1", "merchant_id": format!("M{}", self.n),
            "terminal_id": "T1", "bin": "40000000", "mcc": "5411"
        });
        if let Some(c) = &correlation {
            body["correlation_id"] = json!(c);
        }
        self.credit(citizen, 1, score(cents, self.rate, self.cap));
        let sent = Sent {
            citizen,
            body: body.clone(),
            balance: cents,
            correlation,
        };
        if !early {
            // (An early one is reversed in full already: never reversed or
            // re-sent again.)
            self.remember(sent);
        }
        let msg = self.out(&body);
        if late {
            self.held.push_back(msg);
            return self.next_message();
        }
        if early {
            self.held.push_back(msg);
            let mut r = body;
            r["operation_type"] = json!("01");
            r["id_trx_acquirer"] = json!(format!("e{}", self.n));
            self.credit(citizen, -1, -score(cents, self.rate, self.cap));
            return self.out(&r);
        }
        msg
    }

    /// A split burst: several micro-payments of one card at one shop (its
    /// own `merchant_id`), minutes apart within the last hour; the first
    /// goes out now, the rest before anything else. Those beyond the limit
    /// on their Rome day are expected to be rejected, and are neither
    /// reversed nor re-sent later (a rejected key would be judged afresh).
    /// Amounts differ within the burst and carry no correlation id, so a
    /// total reversal of one of them matches that one only.
    fn split_burst(&mut self) -> Outgoing {
        let citizen = self.pick_citizen();
        let card = self.rng.gen_range(0..cards_of(citizen));
        let payments = self.rng.gen_range(BURST);
        let step = self.rng.gen_range(30..300);
        let first_age = self
            .rng
            .gen_range(payments as i64 * step..3600)
            .min(self.max_age_secs - 1);
        let shop = format!("S{}", self.n);
        let mut taken: BTreeMap<chrono::NaiveDate, u16> = BTreeMap::new();
        let mut amounts = Vec::with_capacity(payments);
        for k in 0..payments {
            let mut cents = self.rng.gen_range(100..500u64);
            while amounts.contains(&cents) {
                cents += 1;
            }
            amounts.push(cents);
            let trx = self.now.plus_secs(-(first_age - k as i64 * step).max(0));
            let operation = ["00", "02", "03"][self.rng.gen_range(0..3)];
            let body = json!({
                "acquirer_code": "32875", "operation_type": operation,
                "circuit_type": format!("{:02}", self.rng.gen_range(0..11)),
                "hpan": hpan(citizen, card), "trx_date": trx.to_rome_rfc3339(),
                "id_trx_acquirer": format!("s{}", self.n), "total_amount": cents,
                "currency": "978", "acquirer_id": "A1", "merchant_id": shop,
                "terminal_id": "T1", "bin": "40000000", "mcc": "5411"
            });
            let slots = taken.entry(trx.rome_date()).or_default();
            if self.limit == 0 || *slots < self.limit {
                *slots += 1;
                self.credit(citizen, 1, score(cents, self.rate, self.cap));
                self.remember(Sent {
                    citizen,
                    body: body.clone(),
                    balance: cents,
                    correlation: None,
                });
            }
            let msg = self.out(&body);
            self.burst.push_back(msg);
        }
        self.burst.pop_front().expect("a burst has payments")
    }

    /// A reversal of a recent payment: total without correlation id, or
    /// partial with one; sometimes of a payment not sent yet (held back),
    /// so that the reversal arrives first.
    fn reversal(&mut self) -> Outgoing {
        let i = self.rng.gen_range(0..self.recent.len());
        let sent = self.recent.swap_remove(i);
        let (amount, body) = match &sent.correlation {
            Some(_) if sent.balance > 1 => {
                let amount = self.rng.gen_range(1..sent.balance);
                (amount, sent.body.clone())
            }
            _ => {
                let mut b = sent.body.clone();
                b.as_object_mut().map(|o| o.remove("correlation_id"));
                (sent.balance, b)
            }
        };
        let mut r = body;
        r["operation_type"] = json!("01");
        r["id_trx_acquirer"] = json!(format!("r{}", self.n));
        r["total_amount"] = json!(amount);
        let before = score(sent.balance, self.rate, self.cap);
        let after = score(sent.balance - amount, self.rate, self.cap);
        self.credit(
            sent.citizen,
            if amount == sent.balance { -1 } else { 0 },
            after - before,
        );
        let msg = self.out(&r);
        if sent.correlation.is_some() && amount < sent.balance {
            let mut rest = sent.clone();
            rest.balance -= amount;
            // Only correlation-matched reversals may follow a partial one.
            self.recent.push(rest);
        }
        msg
    }

    /// Messages still held back (the rest of a burst, late ones), to
    /// publish at the end.
    pub fn drain(&mut self) -> Vec<Outgoing> {
        self.burst.drain(..).chain(self.held.drain(..)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gen(seed: u64) -> Generator {
        let now = Timestamp::parse_rfc3339("2026-11-22T12:00:00Z").unwrap();
        Generator::new(
            1000,
            seed,
            now,
            now.plus_secs(-30 * 86_400),
            "0.10".parse().unwrap(),
            "15.00".parse().unwrap(),
        )
    }

    #[test]
    fn the_same_seed_gives_the_same_messages() {
        let (mut a, mut b, mut c) = (gen(1), gen(1), gen(2));
        let xs: Vec<_> = (0..5000).map(|_| a.next_message()).collect();
        let ys: Vec<_> = (0..5000).map(|_| b.next_message()).collect();
        let zs: Vec<_> = (0..5000).map(|_| c.next_message()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
        assert_eq!(a.expected(), b.expected());
    }

    /// Feeds `messages` messages of a generator for a period with `limit`
    /// into the reference engine (citizens enrolled as `simulate` does) and
    /// checks every citizen's count and cashback against the generator's
    /// expectation; returns the `merchant_daily_limit` rejections.
    fn engine_agrees(limit: u16, messages: usize) -> usize {
        use cashback_engine::enrollment::{make_iban, parse_request, EnrollKind};
        use cashback_engine::local::LocalEngine;
        use cashback_engine::period::{AwardPeriod, Periods};
        use cashback_engine::reason::Reason;
        use cashback_engine::router::Position;
        use std::sync::Arc;

        let now = Timestamp::parse_rfc3339("2026-11-22T12:00:00Z").unwrap();
        let start = now.plus_secs(-30 * 86_400);
        let mut period = AwardPeriod::with_2021_rules("P", start.rome_date(), now.rome_date());
        period.max_payments_per_merchant_day = limit;
        let since = Timestamp::rome_midnight(period.start);
        let mut g = Generator::new(
            200,
            5,
            now,
            since,
            period.cashback_rate,
            period.max_cashback_per_transaction,
        )
        .with_merchant_day_limit(limit);
        let mut local = LocalEngine::new(16, Arc::new(Periods::new(vec![period]).unwrap()), 30);
        let mut seq = 0;
        let at = |seq: &mut u64, ms: i64| {
            *seq += 1;
            Position {
                seq: *seq,
                broker_time: Timestamp::from_unix_nanos(now.unix_nanos() + ms as i128 * 1_000_000),
            }
        };
        let since = since.to_rome_rfc3339();
        for i in 0..g.citizens() {
            let id = citizen_id(i);
            let mut requests = vec![(
                EnrollKind::Citizen,
                json!({"citizen_id": id, "iban": make_iban("IT", &format!("X0542811101{i:012}")),
                       "tc_accepted_at": since}),
            )];
            for card in 0..cards_of(i) {
                requests.push((
                    EnrollKind::Card,
                    json!({"citizen_id": id, "hpan": hpan(i, card), "activated_at": since}),
                ));
            }
            for (kind, body) in requests {
                let cmd = parse_request(kind, body.to_string().as_bytes()).unwrap();
                local.enroll(at(&mut seq, 0), &cmd).unwrap();
            }
        }
        let mut sent: Vec<Outgoing> = (0..messages).map(|_| g.next_message()).collect();
        sent.extend(g.drain());
        for (i, m) in sent.iter().enumerate() {
            let subject = format!("cashback.auth.{}", m.acquirer);
            local.authorization(at(&mut seq, i as i64), &subject, &m.body);
        }
        assert_eq!(local.invariant_violations, Vec::<String>::new());
        for i in 0..g.citizens() {
            let want = g.expected().get(&i).cloned().unwrap_or_default();
            let got = local.standing(&citizen_id(i), "P").unwrap_or_default();
            assert_eq!(
                (got.count, got.cashback),
                (want.count, want.cashback),
                "citizen {i}"
            );
        }
        local
            .rejections
            .iter()
            .filter(|(_, r)| r.reason == Reason::MerchantDailyLimit)
            .count()
    }

    #[test]
    fn the_engine_counts_what_the_generator_expects_with_and_without_a_limit() {
        assert_eq!(engine_agrees(0, 30_000), 0);
        let limited = engine_agrees(3, 30_000);
        // About 60 bursts of 3 to 8: most of them go over 3.
        assert!(limited > 50, "only {limited} payments over the limit");
        assert!(engine_agrees(1, 30_000) > limited);
    }

    #[test]
    fn the_mix_is_as_documented() {
        let mut g = gen(3);
        let msgs: Vec<_> = (0..100_000).map(|_| g.next_message()).collect();
        let share =
            |f: &dyn Fn(&Outgoing) -> bool| msgs.iter().filter(|m| f(m)).count() as f64 / 1e5;
        let reversal = share(&|m| {
            m.body
                .windows(21)
                .any(|w| w == b"\"operation_type\":\"01\"")
        });
        let malformed = share(&|m| m.body.starts_with(b"{\"truncated"));
        assert!((0.012..0.03).contains(&reversal), "reversals {reversal}");
        assert!(
            (0.0005..0.002).contains(&malformed),
            "malformed {malformed}"
        );
        // Heavy tail: the busiest citizen pays far more than the median one.
        let mut counts: Vec<u32> = g.expected().values().map(|e| e.count).collect();
        counts.sort_unstable();
        let median = counts[counts.len() / 2] as f64;
        assert!(
            *counts.last().unwrap() as f64 > 5.0 * median,
            "{median} vs {:?}",
            counts.last()
        );
    }
}
