//! `cashback.query.transactions`: a citizen's statement (PROTOCOL.md
//! section 3): every payment that counted for the citizen in the period,
//! newest `trx_date` first, then latest arrival first, with its current
//! balance, cashback score and status.

use super::context::{unknown_period, QueryContext};
use super::protocol::{
    check_limit, parse, PaymentStatus, StatementEntry, StatementQuery, StatementReply,
};
use cashback_engine::money::money_string;
use cashback_engine::refusal::Refusal;

/// Answers one statement query; errors as for the citizen query, plus
/// bad_request for a limit above 1000.
pub async fn transactions(ctx: &QueryContext, body: &[u8]) -> Result<StatementReply, Refusal> {
    let q: StatementQuery = parse(
        body,
        "{\"citizen_id\", \"award_period\"?, \"offset\"?, \"limit\"?}",
    )?;
    check_limit(q.limit)?;
    let period = ctx.period(q.award_period.as_deref());
    let (facts, _) = ctx.citizen(&q.citizen_id, period).await?;
    let period = period.ok_or_else(|| unknown_period(q.award_period.as_deref()))?;
    // A citizen's payments live with their cards, which may be anchored in
    // any shard of any node: ask them all.
    let mut lines = ctx.peers.lines(facts.idx, period).await?;
    lines.sort_by(|a, b| b.trx_date.cmp(&a.trx_date).then(b.seq.cmp(&a.seq)));
    let total = lines.len();
    let entries = lines
        .into_iter()
        .skip(q.offset)
        .take(q.limit)
        .map(|l| StatementEntry {
            trx_date: l.trx_date.to_rome_rfc3339(),
            acquirer_code: l.acquirer.to_string(),
            circuit_type: format!("{:02}", l.circuit_type),
            operation_type: format!("{:02}", l.operation_type),
            total_amount: l.amount,
            balance: l.balance,
            cashback: money_string(l.cashback),
            status: PaymentStatus::of(l.amount, l.balance, l.excluded),
        })
        .collect();
    Ok(StatementReply {
        ok: true,
        citizen_id: q.citizen_id,
        award_period: ctx.periods.get(period).id.clone(),
        total,
        entries,
    })
}
