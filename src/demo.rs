//! Built-in demo traffic for `serve --demo`: a few thousand citizens enroll,
//! then payments, reversals, duplicates and some garbage flow at about 2,000
//! authorizations a second, so that a new user sees every part move. (The
//! full payment-network simulator is `cashback simulate`.)

use crate::config::Config;
use anyhow::{Context, Result};
use async_nats::jetstream;
use async_nats::HeaderMap;
use cashback_engine::enrollment::make_iban;
use cashback_engine::period::{AwardPeriod, Periods};
use cashback_engine::time::Timestamp;
use chrono::Datelike;
use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::time::Duration;
use tokio::sync::watch;

/// Demo citizens.
const CITIZENS: usize = 3_000;

/// Authorizations per second.
const RATE: usize = 2_000;

/// Adds a period for the current semester when no configured period contains
/// today: the shipped periods closed in 2022, and a demo where everything is
/// `period_closed` shows nothing.
pub fn ensure_current_period(config: &mut Config) {
    let today = Timestamp::now().rome_date();
    let Ok(periods) = config.periods() else {
        return;
    };
    if periods.containing_date(today).is_some() {
        return;
    }
    let (start, end, half) = if today.month() <= 6 {
        ((1, 1), (6, 30), 1)
    } else {
        ((7, 1), (12, 31), 2)
    };
    let date = |(m, d)| chrono::NaiveDate::from_ymd_opt(today.year(), m, d).expect("valid date");
    let mut period = config
        .periods
        .last()
        .cloned()
        .unwrap_or_else(|| AwardPeriod {
            id: String::new(),
            start: today,
            end: today,
            grace_days: 10,
            min_transactions: 50,
            cashback_rate: "0.10".parse().expect("decimal"),
            max_cashback_per_transaction: "15.00".parse().expect("decimal"),
            max_cashback: "150.00".parse().expect("decimal"),
            supercashback_winners: 100_000,
            supercashback_prize: "1500.00".parse().expect("decimal"),
        });
    period.id = format!("DEMO{}H{half}", today.year());
    period.start = date(start);
    period.end = date(end);
    config.periods.push(period);
    if config.periods().is_err() {
        config.periods.pop();
    }
}

fn citizen_id(i: usize) -> String {
    format!("demo-{i:05}")
}

fn hpan(citizen: usize, card: usize) -> String {
    let x = xxhash_rust_like(citizen as u64 * 8 + card as u64);
    format!("{x:016x}{:016x}{:016x}{:016x}", x ^ 1, x ^ 2, x ^ 3)
}

/// A cheap deterministic scramble (splitmix64), enough for demo card numbers.
fn xxhash_rust_like(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Enrolls the demo citizens, then publishes until `shutdown`.
pub async fn run(
    url: &str,
    prefix: &str,
    periods: &Periods,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let client = async_nats::connect(url).await.context("demo: connect")?;
    let js = jetstream::new(client.clone());
    let today = Timestamp::now().rome_date();
    let period = periods
        .containing_date(today)
        .map(|p| periods.get(p).clone())
        .context("demo: no period contains today")?;
    let since = Timestamp::rome_midnight(period.start);
    let since_text = since.to_rome_rfc3339();

    println!("demo: enrolling {CITIZENS} citizens with 1-2 cards each");
    let requests = (0..CITIZENS).flat_map(|i| {
        let mut list = vec![(
            format!("{prefix}.enroll.citizen"),
            json!({"citizen_id": citizen_id(i),
                   "iban": make_iban("IT", &format!("X0542811101{:012}", i)),
                   "tc_accepted_at": since_text}),
        )];
        for card in 0..(1 + i % 2) {
            list.push((
                format!("{prefix}.enroll.card"),
                json!({"citizen_id": citizen_id(i), "hpan": hpan(i, card),
                       "activated_at": since_text}),
            ));
        }
        list
    });
    // Citizens before their cards: enroll in order, a window at a time.
    let mut failures = 0;
    let mut stream = futures::stream::iter(
        requests
            .collect::<Vec<_>>()
            .chunks(256)
            .map(|c| c.to_vec())
            .collect::<Vec<_>>(),
    );
    while let Some(chunk) = stream.next().await {
        let (citizens, cards): (Vec<_>, Vec<_>) = chunk
            .into_iter()
            .partition(|(s, _)| s.ends_with(".citizen"));
        for group in [citizens, cards] {
            let replies = futures::future::join_all(group.into_iter().map(|(subject, body)| {
                let client = client.clone();
                async move { client.request(subject, body.to_string().into()).await }
            }))
            .await;
            failures += replies
                .iter()
                .filter(|r| {
                    !r.as_ref()
                        .is_ok_and(|m| m.payload.starts_with(br#"{"ok":true"#))
                })
                .count();
        }
        if *shutdown.borrow() {
            return Ok(());
        }
    }
    println!("demo: enrolled ({failures} failed); publishing about {RATE} authorizations/s");

    let mut rng = StdRng::seed_from_u64(rand::random());
    let mut recent: Vec<serde_json::Value> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut n: u64 = rng.gen();
    loop {
        tokio::select! {
            _ = shutdown.changed() => return Ok(()),
            _ = tick.tick() => {}
        }
        let mut acks = Vec::with_capacity(RATE / 10);
        for _ in 0..RATE / 10 {
            n += 1;
            let roll: f64 = rng.gen();
            let body: Vec<u8> = if roll < 0.003 {
                b"this is not json".to_vec()
            } else if roll < 0.008 && !recent.is_empty() {
                // A re-send with a fresh message id: the engine's own dedup.
                recent[rng.gen_range(0..recent.len())]
                    .to_string()
                    .into_bytes()
            } else if roll < 0.02 && !recent.is_empty() {
                let mut reversal = recent[rng.gen_range(0..recent.len())].clone();
                reversal["operation_type"] = json!("01");
                reversal.to_string().into_bytes()
            } else {
                // Skewed: some citizens pay far more often than others.
                let c = ((rng.gen::<f64>().powi(3)) * CITIZENS as f64) as usize;
                let card = if c % 2 == 1 { rng.gen_range(0..2) } else { 0 };
                let unknown = roll > 0.995;
                let trx = Timestamp::now().plus_secs(-rng.gen_range(0..600));
                let payment = json!({
                    "acquirer_code": "32875", "operation_type": "00", "circuit_type": "01",
                    "hpan": if unknown { "f".repeat(64) } else { hpan(c, card) },
                    "trx_date": trx.to_rome_rfc3339(),
                    "id_trx_acquirer": format!("demo-{n}"),
                    "total_amount": rng.gen_range(200..8000),
                    "currency": "978", "acquirer_id": "A1", "merchant_id": format!("M{}", n % 500),
                    "terminal_id": "T1", "bin": "40000000", "mcc": "5411"
                });
                if recent.len() < 2000 {
                    recent.push(payment.clone());
                } else {
                    let slot = rng.gen_range(0..recent.len());
                    recent[slot] = payment.clone();
                }
                payment.to_string().into_bytes()
            };
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", format!("demo-msg-{n}").as_str());
            match js
                .publish_with_headers(format!("{prefix}.auth.32875"), headers, body.into())
                .await
            {
                Ok(ack) => acks.push(ack),
                Err(e) => tracing::warn!(error = %e, "demo publish failed"),
            }
        }
        for ack in acks {
            if let Err(e) = ack.await {
                tracing::warn!(error = %e, "demo publish not acknowledged");
            }
        }
    }
}
