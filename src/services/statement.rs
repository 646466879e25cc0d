//! `cashback.query.transactions`: a citizen's statement (PROTOCOL.md
//! section 3): every payment that counted for the citizen in the period,
//! newest `trx_date` first, then latest arrival first, with its current
//! balance, cashback score and status.

use super::error_reply;
use super::query::{QueryContext, MAX_PAGE};
use cashback_actors::{Lookup, LookupCitizen, StatementOf};
use cashback_engine::money::money_string;
use serde::{Deserialize, Serialize};

/// Request.
#[derive(Deserialize)]
struct StatementQuery {
    citizen_id: String,
    #[serde(default)]
    award_period: Option<String>,
    #[serde(default)]
    offset: usize,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    100
}

/// One statement line on the wire.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub trx_date: String,
    pub acquirer_code: String,
    pub circuit_type: String,
    pub operation_type: String,
    pub total_amount: u64,
    pub balance: u64,
    pub cashback: String,
    pub status: &'static str,
}

/// The reply.
#[derive(Serialize, Debug)]
struct Reply {
    ok: bool,
    citizen_id: String,
    award_period: String,
    total: usize,
    entries: Vec<Entry>,
}

/// Answers one statement query; errors as for the citizen query, plus
/// bad_request for a limit above 1000.
pub async fn transactions(ctx: &QueryContext, body: &[u8]) -> bytes::Bytes {
    let q: StatementQuery = match serde_json::from_slice(body) {
        Ok(q) => q,
        Err(e) => {
            return error_reply(
                "bad_request",
                &format!(
                    "expected {{\"citizen_id\", \"award_period\"?, \"offset\"?, \"limit\"?}}: {e}"
                ),
            )
        }
    };
    if q.limit > MAX_PAGE {
        return error_reply("bad_request", &format!("limit must be at most {MAX_PAGE}"));
    }
    let unavailable = || error_reply("unavailable", "the engine is restarting; retry");
    let period = ctx.period(q.award_period.as_deref());
    let (partition, shard) = ctx.shard_of(&q.citizen_id);
    let facts = match shard
        .send(LookupCitizen {
            partition,
            citizen_id: q.citizen_id.clone(),
            period: period.unwrap_or(0),
        })
        .await
    {
        Err(_) => return unavailable(),
        Ok(Lookup::Unknown) => {
            return error_reply("unknown_citizen", "no citizen with this citizen_id")
        }
        Ok(Lookup::Found(facts, _)) if facts.withdrawn => {
            return error_reply(
                "citizen_withdrawn",
                "the citizen has withdrawn from the programme",
            )
        }
        Ok(Lookup::Found(facts, _)) => facts,
    };
    let Some(period) = period else {
        return error_reply(
            "unknown_award_period",
            &format!("no award period {:?}", q.award_period.unwrap_or_default()),
        );
    };
    let mut lines = Vec::new();
    for shard in &ctx.shards {
        match shard
            .send(StatementOf {
                citizen: facts.idx,
                period,
            })
            .await
        {
            Ok(mut part) => lines.append(&mut part),
            Err(_) => return unavailable(),
        }
    }
    lines.sort_by(|a, b| b.trx_date.cmp(&a.trx_date).then(b.seq.cmp(&a.seq)));
    let total = lines.len();
    let entries = lines
        .into_iter()
        .skip(q.offset)
        .take(q.limit)
        .map(|l| Entry {
            trx_date: l.trx_date.to_rome_rfc3339(),
            acquirer_code: l.acquirer.to_string(),
            circuit_type: format!("{:02}", l.circuit_type),
            operation_type: format!("{:02}", l.operation_type),
            total_amount: l.amount,
            balance: l.balance,
            cashback: money_string(l.cashback),
            status: if l.balance == l.amount {
                "counted"
            } else if l.balance == 0 {
                "reversed"
            } else {
                "partially_reversed"
            },
        })
        .collect();
    let reply = Reply {
        ok: true,
        citizen_id: q.citizen_id,
        award_period: ctx.periods.get(period).id.clone(),
        total,
        entries,
    };
    serde_json::to_vec(&reply).expect("reply serializes").into()
}
