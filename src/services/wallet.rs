//! `cashback.query.wallet` (PROTOCOL.md section 3): a citizen's IBAN and
//! every card they ever enrolled, with its activation windows; the app's
//! wallet section, which failed on launch day.

use super::context::QueryContext;
use super::protocol::{parse, WalletQuery, WalletReply};
use cashback_engine::refusal::{ErrorCode, Refusal};

/// Answers one wallet query: bad_request, unknown_citizen,
/// citizen_withdrawn.
pub async fn wallet(_ctx: &QueryContext, body: &[u8]) -> Result<WalletReply, Refusal> {
    let _q: WalletQuery = parse(body, "{\"citizen_id\": string}")?;
    // TODO(lead): read the citizen's cards and windows from engine state.
    Err(Refusal::new(ErrorCode::Unavailable, "not implemented yet"))
}
