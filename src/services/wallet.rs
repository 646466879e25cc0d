//! `cashback.query.wallet` (PROTOCOL.md section 3): a citizen's IBAN and
//! every card they ever enrolled, with its activation windows; the app's
//! wallet section, which failed on launch day. Answered by the citizen's
//! partition alone (it keeps the wallet beside the IBAN), at the cost of a
//! citizen query.

use super::context::{restarting, QueryContext};
use super::protocol::{parse, WalletCard, WalletQuery, WalletReply, WalletWindow};
use cashback_actors::WalletOf;
use cashback_engine::partition::partition_of;
use cashback_engine::refusal::{ErrorCode, Refusal};

/// Answers one wallet query: bad_request, unknown_citizen,
/// citizen_withdrawn.
pub async fn wallet(ctx: &QueryContext, body: &[u8]) -> Result<WalletReply, Refusal> {
    let q: WalletQuery = parse(body, "{\"citizen_id\": string}")?;
    let partition = partition_of(&q.citizen_id, ctx.partitions);
    let found = ctx
        .shard_holding(partition)
        .send(WalletOf {
            partition,
            citizen_id: q.citizen_id.clone(),
        })
        .await
        .map_err(|_| restarting())?;
    let Some((facts, cards)) = found else {
        return Err(Refusal::new(
            ErrorCode::UnknownCitizen,
            "no citizen with this citizen_id",
        ));
    };
    if facts.withdrawn {
        return Err(Refusal::new(
            ErrorCode::CitizenWithdrawn,
            "the citizen has withdrawn from the programme",
        ));
    }
    Ok(WalletReply {
        ok: true,
        citizen_id: q.citizen_id,
        iban: facts.iban.to_string(),
        tc_accepted_at: facts.tc_accepted_at.to_rome_rfc3339(),
        cards: cards
            .into_iter()
            .map(|c| WalletCard {
                active: c.active(),
                hpan: c.hpan.to_hex(),
                windows: c
                    .windows
                    .iter()
                    .map(|w| WalletWindow {
                        activated_at: w.from.to_rome_rfc3339(),
                        deactivated_at: w.until.map(|u| u.to_rome_rfc3339()),
                    })
                    .collect(),
            })
            .collect(),
    })
}
