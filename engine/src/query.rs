//! Query requests and replies (PROTOCOL.md section 3), as plain data.

use crate::enrollment::EnrollError;
use crate::ledger::Standing;
use crate::money::money_string;
use crate::period::{AwardPeriod, PeriodIdx, Periods};
use crate::time::Timestamp;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// `cashback.query.citizen` request.
#[derive(Clone, Debug, Deserialize)]
pub struct CitizenQuery {
    /// Who.
    pub citizen_id: String,
    /// Which period; default: see `Periods::default_for`.
    #[serde(default)]
    pub award_period: Option<String>,
}

/// Where a citizen stands in the ranking of a period (filled in by the
/// ranking; `None` until it exists).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RankFields {
    /// 1-based position; `None` while the count is 0.
    pub ranking: Option<u64>,
    /// Ranked citizens in the period.
    pub total_participants: u64,
    /// Count at position 1.
    pub max_transaction_number: u32,
    /// Count at position `supercashback_winners` (or the last).
    pub min_transaction_number: u32,
}

/// `cashback.query.citizen` reply, field for field.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CitizenReply {
    pub ok: bool,
    pub citizen_id: String,
    pub award_period: String,
    pub transaction_count: u32,
    pub cashback: String,
    pub cashback_payable: String,
    pub min_transactions: u32,
    pub threshold_reached: bool,
    pub ranking: Option<u64>,
    pub total_participants: Option<u64>,
    pub max_transaction_number: Option<u32>,
    pub min_transaction_number: Option<u32>,
    pub supercashback: Option<bool>,
    pub last_trx_date: Option<String>,
}

/// What is payable at the end of the period: the cashback capped at
/// `max_cashback`, and only from `min_transactions` payments on.
pub fn payable(standing: &Standing, period: &AwardPeriod) -> Decimal {
    if standing.count >= period.min_transactions {
        standing.cashback.min(period.max_cashback)
    } else {
        Decimal::ZERO
    }
}

/// Builds the reply for a citizen's standing in a period.
pub fn citizen_reply(
    citizen_id: &str,
    period: &AwardPeriod,
    standing: &Standing,
    rank: Option<&RankFields>,
) -> CitizenReply {
    let threshold = standing.count >= period.min_transactions;
    CitizenReply {
        ok: true,
        citizen_id: citizen_id.to_owned(),
        award_period: period.id.clone(),
        transaction_count: standing.count,
        cashback: money_string(standing.cashback),
        cashback_payable: money_string(payable(standing, period)),
        min_transactions: period.min_transactions,
        threshold_reached: threshold,
        ranking: rank.and_then(|r| r.ranking),
        total_participants: rank.map(|r| r.total_participants),
        max_transaction_number: rank.map(|r| r.max_transaction_number),
        min_transaction_number: rank.map(|r| r.min_transaction_number),
        supercashback: rank.map(|r| {
            threshold
                && r.ranking
                    .is_some_and(|pos| pos <= period.supercashback_winners as u64)
        }),
        last_trx_date: standing.last_trx.map(Timestamp::to_rome_rfc3339),
    }
}

/// Parses a citizen query and resolves its period.
pub fn parse_citizen_query(
    body: &[u8],
    periods: &Periods,
    today: chrono::NaiveDate,
) -> Result<(CitizenQuery, PeriodIdx), EnrollError> {
    let q: CitizenQuery = serde_json::from_slice(body).map_err(|e| {
        EnrollError::new(
            "bad_request",
            format!("expected {{\"citizen_id\": string, \"award_period\"?: string}}: {e}"),
        )
    })?;
    let idx = match &q.award_period {
        Some(id) => periods.by_id(id).ok_or_else(|| {
            EnrollError::new("unknown_award_period", format!("no award period {id:?}"))
        })?,
        None => periods.default_for(today).ok_or_else(|| {
            EnrollError::new("unknown_award_period", "no award period configured")
        })?,
    };
    Ok((q, idx))
}
