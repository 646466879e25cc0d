//! `cashback import FILE...`: publishes RTD acquirer files
//! (`CSTAR.<ABI>.TRNLOG.<YYYYMMDD>.<HHMMSS>.<nnn>.csv`: the fields of
//! PROTOCOL.md section 1 in table order, `;`-separated, no header) to
//! `cashback.auth.<acquirer_code>` with JetStream, in file order, each with
//! its de-duplication key as `Nats-Msg-Id`, so importing a file twice
//! counts nothing twice.

use crate::nats::publisher::AckWindow;
use anyhow::{Context, Result};
use async_nats::jetstream;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The 16 fields of a row, in the order of PROTOCOL section 1.
pub use cashback_engine::authorization::FIELDS;

/// What an import did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Rows published and acknowledged.
    pub published: u64,
    /// Of those, answered by JetStream as duplicates (same `Nats-Msg-Id`
    /// inside its window): they never reach the engine.
    pub duplicates: u64,
    /// Rows reported and skipped.
    pub skipped: u64,
}

/// Turns one row into (subject token, message id, JSON body), or `None` for
/// a row to skip (wrong field count, or an amount that is no base-10 integer).
pub fn row_to_json(line: &str) -> Option<(String, String, String)> {
    let fields: Vec<&str> = line.split(';').collect();
    if fields.len() != FIELDS.len() {
        return None;
    }
    let amount = fields[8];
    let digits = amount.strip_prefix('-').unwrap_or(amount);
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let mut body = String::with_capacity(line.len() + 256);
    body.push('{');
    for (name, value) in FIELDS.iter().zip(&fields) {
        if value.is_empty() {
            continue;
        }
        if body.len() > 1 {
            body.push(',');
        }
        body.push_str(&serde_json::to_string(name).expect("string"));
        body.push(':');
        if *name == "total_amount" {
            body.push_str(value);
        } else {
            body.push_str(&serde_json::to_string(value).expect("string"));
        }
    }
    body.push('}');
    // PROTOCOL section 1: hpan, acquirer_code, acquirer_id,
    // id_trx_acquirer, operation_type, trx_date.
    let msg_id = format!(
        "{}/{}/{}/{}/{}/{}",
        fields[3], fields[0], fields[10], fields[5], fields[1], fields[4]
    );
    Some((fields[0].to_owned(), msg_id, body))
}

/// Imports `files` in order; bad rows go to stderr as `FILE:LINE`. Fails
/// only when a file cannot be read or a publish fails.
pub async fn run(url: &str, prefix: &str, files: &[PathBuf]) -> Result<Summary> {
    let client = crate::config::NatsClientOptions::from_env()?
        .connect(url, async_nats::ConnectOptions::new())
        .await?;
    let mut window = AckWindow::new(jetstream::new(client), 1024);
    let mut summary = Summary::default();
    let started = Instant::now();
    let mut last_progress = Instant::now();
    for path in files {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.strip_suffix('\r').unwrap_or(line);
            let Some((acquirer, msg_id, body)) = row_to_json(line) else {
                eprintln!(
                    "{}:{}: skipped: expected 16 ';'-separated fields with an integer total_amount",
                    path.display(),
                    n + 1
                );
                summary.skipped += 1;
                continue;
            };
            window
                .publish(
                    format!("{prefix}.auth.{acquirer}"),
                    &msg_id,
                    body.into_bytes(),
                )
                .await?;
            if last_progress.elapsed() > Duration::from_secs(1) {
                last_progress = Instant::now();
                eprint!(
                    "\rimport: {} published, {} skipped, {:.0}/s",
                    window.acknowledged + window.in_flight(),
                    summary.skipped,
                    (window.acknowledged + window.in_flight()) as f64
                        / started.elapsed().as_secs_f64()
                );
                let _ = std::io::stderr().flush();
            }
        }
    }
    window.finish().await?;
    summary.published = window.acknowledged;
    summary.duplicates = window.duplicates;
    eprintln!(
        "\rimport: {} rows published ({} already in JetStream's duplicate window), {} skipped, in {:.1} s",
        summary.published,
        summary.duplicates,
        summary.skipped,
        started.elapsed().as_secs_f64()
    );
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows() {
        let hpan = "a".repeat(64);
        let line = format!(
            "32875;00;01;{hpan};2021-03-14T10:22:33+01:00;T1;;;3550;978;A1;M1;TERM;40000000;5411;"
        );
        let (acq, id, body) = row_to_json(&line).unwrap();
        assert_eq!(acq, "32875");
        // PROTOCOL section 1: the card leads the key.
        assert_eq!(
            id,
            format!("{hpan}/32875/A1/T1/00/2021-03-14T10:22:33+01:00")
        );
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["total_amount"], serde_json::json!(3550));
        assert_eq!(v["terminal_id"], serde_json::json!("TERM"));
        assert!(v.get("par").is_none() && v.get("id_trx_issuer").is_none());
        assert!(row_to_json("1;2;3").is_none());
        assert!(row_to_json(&line.replace(";3550;", ";35.50;")).is_none());
        assert!(row_to_json(&line.replace(";3550;", ";;")).is_none());
        let quoted = line.replace(";M1;", ";M\"1;");
        let v: serde_json::Value = serde_json::from_str(&row_to_json(&quoted).unwrap().2).unwrap();
        assert_eq!(v["merchant_id"], serde_json::json!("M\"1"));
    }
}
