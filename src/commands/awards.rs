//! `cashback awards --period ID --out FILE.csv [--provisional]`: the payout
//! file of a period, fetched from the running engine page by page.

use crate::services::protocol::{AwardsReply, MAX_PAGE};
use anyhow::{bail, Context, Result};
use serde_json::json;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

/// The CSV header; one row per ranked citizen, in ranking order.
pub const HEADER: &str =
    "citizen_id,iban,transaction_count,cashback_payable,ranking,supercashback,prize";

/// Writes the payout file; refuses while the period accepts data unless
/// `provisional`. Returns the number of rows.
pub async fn run(
    url: &str,
    prefix: &str,
    period: &str,
    out: &Path,
    provisional: bool,
) -> Result<u64> {
    let client = crate::config::NatsClientOptions::from_env()?
        .connect(url, async_nats::ConnectOptions::new())
        .await?;
    let subject = format!("{prefix}.query.awards");
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(out).with_context(|| format!("cannot create {}", out.display()))?,
    );
    writeln!(file, "{HEADER}")?;
    let mut offset = 0u64;
    let mut first_total = None;
    loop {
        let body = json!({"award_period": period, "offset": offset, "limit": MAX_PAGE});
        let reply = tokio::time::timeout(
            Duration::from_secs(30),
            client.request(subject.clone(), body.to_string().into()),
        )
        .await
        .context("the engine did not answer in 30 s")?
        .context("awards request failed (is the engine running?)")?;
        let value: serde_json::Value = serde_json::from_slice(&reply.payload)?;
        if value["ok"] != json!(true) {
            bail!("the engine refused: {}", value["error"]);
        }
        let page: AwardsReply = serde_json::from_value(value)?;
        // Pages are positions in a live ranking: if it changed between two
        // pages (a withdrawal), rows would be missed or repeated.
        let total = *first_total.get_or_insert(page.total);
        if page.total != total {
            drop(file);
            let _ = std::fs::remove_file(out);
            bail!(
                "the ranking of {period} changed while the file was written \
                 ({total} then {} ranked); run the command again",
                page.total
            );
        }
        if offset == 0 && !page.closed && !provisional {
            drop(file);
            let _ = std::fs::remove_file(out);
            bail!(
                "award period {period} still accepts data, or the engine has not applied \
                 everything received yet; its file would not be final \
                 (use --provisional for a provisional file)"
            );
        }
        for r in &page.rows {
            writeln!(
                file,
                "{},{},{},{},{},{},{}",
                r.citizen_id,
                r.iban,
                r.transaction_count,
                r.cashback_payable,
                r.ranking,
                r.supercashback,
                r.prize
            )?;
        }
        offset += page.rows.len() as u64;
        if page.rows.is_empty() || offset >= page.total {
            break;
        }
    }
    file.flush()?;
    Ok(offset)
}
