//! The wire protocol's request and reply bodies (PROTOCOL.md sections 2 and
//! 3), in one place: the services answer with them, the pusher publishes the
//! citizen and leaderboard replies, and `cashback awards` reads the awards
//! reply. A field renamed here is renamed for every reader at once.

use bytes::Bytes;
use cashback_actors::ranking::Page;
use cashback_engine::ledger::Standing;
use cashback_engine::money::money_string;
use cashback_engine::period::AwardPeriod;
use cashback_engine::query::{payable, threshold_reached, wins_supercashback, RankFields};
use cashback_engine::refusal::{ErrorCode, Refusal};
use cashback_engine::time::Timestamp;
use chrono::NaiveDate;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Largest `limit` of a page query: bounds the reply (a 1,000-line
/// statement is about 250 KB, under the broker's max_payload) and the work
/// one request can ask of the shards.
pub const MAX_PAGE: usize = 1000;

/// `limit` of the statement and leaderboard when the request has none: one
/// screen of the app.
const DEFAULT_PAGE: usize = 100;

/// Serde's default for the statement's and leaderboard's `limit`.
fn default_page() -> usize {
    DEFAULT_PAGE
}

/// Serde's default for the awards' `limit`.
fn max_page() -> usize {
    MAX_PAGE
}

/// Reads a request body; `shape` tells a client that sent something else
/// what was expected. Only a JSON object is a request (PROTOCOL.md): serde
/// would also read a struct from an array of its fields in order, so that
/// `["c42"]` would pass as `{"citizen_id": "c42"}` and `[]` as `{}`.
pub fn parse<T: DeserializeOwned>(body: &[u8], shape: &str) -> Result<T, Refusal> {
    let refuse =
        |why: String| Refusal::new(ErrorCode::BadRequest, format!("expected {shape}: {why}"));
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(refuse("the request must be a JSON object".into()));
    }
    serde_json::from_slice(body).map_err(|e| refuse(e.to_string()))
}

/// Refuses a page `limit` over [`MAX_PAGE`].
pub fn check_limit(limit: usize) -> Result<(), Refusal> {
    if limit > MAX_PAGE {
        return Err(Refusal::new(
            ErrorCode::BadRequest,
            format!("limit must be at most {MAX_PAGE}"),
        ));
    }
    Ok(())
}

/// The bytes of a reply.
pub fn to_body<T: Serialize>(reply: &T) -> Bytes {
    serde_json::to_vec(reply)
        .expect("replies always serialize")
        .into()
}

/// `{"ok": true}`: an enrollment that is durable in the log.
pub fn ok_body() -> Bytes {
    Bytes::from_static(br#"{"ok":true}"#)
}

/// `{"ok": false, "error": {"code", "message"}}`.
#[derive(Serialize, Debug)]
pub struct ErrorReply<'a> {
    /// Always false: clients branch on it first.
    pub ok: bool,
    /// Why.
    pub error: &'a Refusal,
}

/// The bytes of a refusal's reply.
pub fn error_body(refusal: &Refusal) -> Bytes {
    to_body(&ErrorReply {
        ok: false,
        error: refusal,
    })
}

/// Reads back a reply relayed from another node (an operator's request
/// decided where the payment lives): `Ok` for `{"ok": true}`, else its
/// refusal, so that the node that took the request answers and counts it
/// like its own.
pub fn parse_outcome(body: &[u8]) -> Result<(), Refusal> {
    #[derive(Deserialize)]
    struct Error {
        code: String,
        message: String,
    }
    #[derive(Deserialize)]
    struct Reply {
        ok: bool,
        error: Option<Error>,
    }
    let garbled = || Refusal::new(ErrorCode::Unavailable, "an unreadable answer; retry");
    let reply: Reply = serde_json::from_slice(body).map_err(|_| garbled())?;
    if reply.ok {
        return Ok(());
    }
    let error = reply.error.ok_or_else(garbled)?;
    let code = ErrorCode::ALL
        .into_iter()
        .find(|c| c.as_str() == error.code)
        .ok_or_else(garbled)?;
    Err(Refusal::new(code, error.message))
}

/// `cashback.query.citizen` request.
#[derive(Clone, Debug, Deserialize)]
pub struct CitizenQuery {
    /// Who.
    pub citizen_id: String,
    /// Which period; absent: the default (see `Periods::default_for`).
    #[serde(default)]
    pub award_period: Option<String>,
}

/// `cashback.query.citizen` reply, also pushed on
/// `cashback.position.<citizen_id>`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CitizenReply {
    /// Always true (refusals are [`ErrorReply`]).
    pub ok: bool,
    /// Who, as asked.
    pub citizen_id: String,
    /// Which period the figures are for (the default one when not asked).
    pub award_period: String,
    /// Payments that count.
    pub transaction_count: u32,
    /// Sum of the payments' scores, uncapped: what the citizen has earned.
    pub cashback: String,
    /// What would be paid: capped, and zero below the threshold.
    pub cashback_payable: String,
    /// The period's threshold, so the app can show the distance to it.
    pub min_transactions: u32,
    /// Whether the threshold is reached.
    pub threshold_reached: bool,
    /// 1-based position; null while the count is 0 (or the rank is unknown).
    pub ranking: Option<u64>,
    /// Ranked citizens in the period.
    pub total_participants: Option<u64>,
    /// Count at position 1.
    pub max_transaction_number: Option<u32>,
    /// Count at the last winning position: the bar to beat.
    pub min_transaction_number: Option<u32>,
    /// Whether the citizen wins the Supercashback as things stand.
    pub supercashback: Option<bool>,
    /// Latest payment that counted, Rome time; null when none did.
    pub last_trx_date: Option<String>,
}

impl CitizenReply {
    /// The reply for a citizen's standing in a period; `rank` is `None`
    /// when the ranking is not known (its fields are then null).
    pub fn new(
        citizen_id: &str,
        period: &AwardPeriod,
        standing: &Standing,
        rank: Option<&RankFields>,
    ) -> CitizenReply {
        CitizenReply {
            ok: true,
            citizen_id: citizen_id.to_owned(),
            award_period: period.id.clone(),
            transaction_count: standing.count,
            cashback: money_string(standing.cashback),
            cashback_payable: money_string(payable(standing, period)),
            min_transactions: period.min_transactions,
            threshold_reached: threshold_reached(standing, period),
            ranking: rank.and_then(|r| r.ranking),
            total_participants: rank.map(|r| r.total_participants),
            max_transaction_number: rank.map(|r| r.max_transaction_number),
            min_transaction_number: rank.map(|r| r.min_transaction_number),
            supercashback: rank.map(|r| wins_supercashback(standing, period, r.ranking)),
            last_trx_date: standing.last_trx.map(Timestamp::to_rome_rfc3339),
        }
    }
}

/// `cashback.query.transactions` request.
#[derive(Clone, Debug, Deserialize)]
pub struct StatementQuery {
    /// Whose statement.
    pub citizen_id: String,
    /// Which period; absent: the default.
    #[serde(default)]
    pub award_period: Option<String>,
    /// Entries to skip.
    #[serde(default)]
    pub offset: usize,
    /// Entries at most, up to [`MAX_PAGE`].
    #[serde(default = "default_page")]
    pub limit: usize,
}

/// Where a payment stands after reversals.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// An operator excluded it (RULES.md "Operator exclusions"): it does
    /// not count, whatever its balance.
    Excluded,
    /// Nothing reversed: balance = amount.
    Counted,
    /// Some reversed: 0 < balance < amount.
    PartiallyReversed,
    /// All reversed: balance 0 (it no longer counts).
    Reversed,
}

impl PaymentStatus {
    /// The status of a payment of `amount` with `balance` left.
    pub fn of(amount: u64, balance: u64, excluded: bool) -> PaymentStatus {
        if excluded {
            PaymentStatus::Excluded
        } else if balance == amount {
            PaymentStatus::Counted
        } else if balance == 0 {
            PaymentStatus::Reversed
        } else {
            PaymentStatus::PartiallyReversed
        }
    }
}

/// One statement line.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct StatementEntry {
    /// When the card was used, Rome time.
    pub trx_date: String,
    /// Who acquired it.
    pub acquirer_code: String,
    /// Card circuit, two digits as on the wire.
    pub circuit_type: String,
    /// Payment kind, two digits as on the wire.
    pub operation_type: String,
    /// Original amount, cents.
    pub total_amount: u64,
    /// What is left after reversals, cents.
    pub balance: u64,
    /// The payment's current score.
    pub cashback: String,
    /// Derived from amount and balance, so the app need not.
    pub status: PaymentStatus,
}

/// `cashback.query.transactions` reply.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct StatementReply {
    /// Always true.
    pub ok: bool,
    /// Whose statement.
    pub citizen_id: String,
    /// Which period.
    pub award_period: String,
    /// Entries of the whole statement, whatever the page: the app's pager.
    pub total: usize,
    /// The page, newest `trx_date` first, then latest arrival first.
    pub entries: Vec<StatementEntry>,
}

/// `cashback.query.leaderboard` request.
#[derive(Clone, Debug, Deserialize)]
pub struct LeaderboardQuery {
    /// Which period; absent: the default.
    #[serde(default)]
    pub award_period: Option<String>,
    /// Positions to skip.
    #[serde(default)]
    pub offset: u64,
    /// Rows at most, up to [`MAX_PAGE`].
    #[serde(default = "default_page")]
    pub limit: usize,
}

/// One leaderboard row.
#[derive(Serialize, Deserialize, Debug, PartialEq, Eq, Clone)]
pub struct LeaderboardEntry {
    /// 1-based position.
    pub ranking: u64,
    /// Who.
    pub citizen_id: String,
    /// Payments that count.
    pub transaction_count: u32,
    /// Latest payment that counted, Rome time (the first tie-break).
    pub last_trx_date: String,
}

/// `cashback.query.leaderboard` reply, also pushed on
/// `cashback.leaderboard.<award_period>`.
#[derive(Serialize, Deserialize, Debug, PartialEq, Eq, Clone)]
pub struct LeaderboardReply {
    /// Always true.
    pub ok: bool,
    /// Which period.
    pub award_period: String,
    /// Ranked citizens.
    pub total_participants: u64,
    /// Count at position 1.
    pub max_transaction_number: u32,
    /// Count at the last winning position.
    pub min_transaction_number: u32,
    /// The page, in ranking order.
    pub entries: Vec<LeaderboardEntry>,
}

impl LeaderboardReply {
    /// The wire form of a ranking page of `period`.
    pub fn from_page(period: &str, page: Page) -> LeaderboardReply {
        LeaderboardReply {
            ok: true,
            award_period: period.to_owned(),
            total_participants: page.total_participants,
            max_transaction_number: page.max_transaction_number,
            min_transaction_number: page.min_transaction_number,
            entries: page
                .entries
                .into_iter()
                .map(|e| LeaderboardEntry {
                    ranking: e.ranking,
                    citizen_id: e.citizen_id.to_string(),
                    transaction_count: e.transaction_count,
                    last_trx_date: e.last_trx.to_rome_rfc3339(),
                })
                .collect(),
        }
    }
}

/// `cashback.query.awards` request.
#[derive(Clone, Debug, Deserialize)]
pub struct AwardsQuery {
    /// Which period (no default: a payout file is always for a named one).
    pub award_period: String,
    /// Rows to skip.
    #[serde(default)]
    pub offset: u64,
    /// Rows at most; the default is the largest page, for fewer round trips.
    #[serde(default = "max_page")]
    pub limit: usize,
}

/// One payout row: the columns of the CSV file.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct AwardRow {
    /// Who.
    pub citizen_id: String,
    /// Where the money goes.
    pub iban: String,
    /// Payments that count.
    pub transaction_count: u32,
    /// Cashback to pay: capped, zero below the threshold.
    pub cashback_payable: String,
    /// 1-based position.
    pub ranking: u64,
    /// Whether the Supercashback is paid too.
    pub supercashback: bool,
    /// The Supercashback prize, or "0.00".
    pub prize: String,
}

/// `cashback.query.awards` reply.
#[derive(Serialize, Deserialize, Debug)]
pub struct AwardsReply {
    /// Always true.
    pub ok: bool,
    /// Which period.
    pub award_period: String,
    /// Whether the period no longer accepts data (its file is final).
    pub closed: bool,
    /// Ranked citizens: the number of rows in the whole file.
    pub total: u64,
    /// The page, in ranking order.
    pub rows: Vec<AwardRow>,
}

/// `cashback.query.wallet` request.
#[derive(Clone, Debug, Deserialize)]
pub struct WalletQuery {
    /// Whose wallet.
    pub citizen_id: String,
}

/// One activation window of a card, for this citizen.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct WalletWindow {
    /// From when payments count, as enrolled.
    pub activated_at: String,
    /// Until when; null while the window is open.
    pub deactivated_at: Option<String>,
}

/// One card the citizen ever enrolled.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct WalletCard {
    /// The hashed PAN.
    pub hpan: String,
    /// Whether one of its windows is open (the last enrolled; see `WalletCard::active`).
    pub active: bool,
    /// Its windows of this citizen only, oldest first.
    pub windows: Vec<WalletWindow>,
}

/// `cashback.query.wallet` reply: what the app's wallet section shows.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct WalletReply {
    /// Always true.
    pub ok: bool,
    /// Whose wallet.
    pub citizen_id: String,
    /// Where the refund goes.
    pub iban: String,
    /// When the terms and conditions were accepted.
    pub tc_accepted_at: String,
    /// Every card ever enrolled, by first `activated_at`, then `hpan`.
    pub cards: Vec<WalletCard>,
}

/// `cashback.query.periods` request: no fields, but still a JSON object
/// like every request.
#[derive(Clone, Debug, Deserialize)]
pub struct PeriodsQuery {}

/// Where a period is in its life, by today's date in Europe/Rome.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PeriodStatus {
    /// Before `start`.
    Upcoming,
    /// From `start` to `end`.
    Active,
    /// The `grace_days` after `end`: late data still accepted.
    Grace,
    /// After the grace: its payout file can be final.
    Closed,
}

/// One configured period, as RULES.md configures it, and its status.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PeriodInfo {
    /// Public name, used in subjects and queries.
    pub id: String,
    /// First day, Europe/Rome, `YYYY-MM-DD`.
    pub start: NaiveDate,
    /// Last day, inclusive.
    pub end: NaiveDate,
    /// Days after `end` during which late data still counts.
    pub grace_days: u32,
    /// Payments needed for any cashback and the Supercashback.
    pub min_transactions: u32,
    /// Share of each payment paid back, as configured ("0.10").
    pub cashback_rate: String,
    /// Cap on one payment's cashback.
    pub max_cashback_per_transaction: String,
    /// Cap on what is payable for the period.
    pub max_cashback: String,
    /// How many top-ranked citizens win.
    pub supercashback_winners: u32,
    /// The prize.
    pub supercashback_prize: String,
    /// Payments per card, merchant and day that count (0: no limit).
    pub max_payments_per_merchant_day: u16,
    /// Where the period is today.
    pub status: PeriodStatus,
}

impl PeriodInfo {
    /// The wire form of `period` with its `status`.
    pub fn new(period: &AwardPeriod, status: PeriodStatus) -> PeriodInfo {
        PeriodInfo {
            id: period.id.clone(),
            start: period.start,
            end: period.end,
            grace_days: period.grace_days,
            min_transactions: period.min_transactions,
            cashback_rate: period.cashback_rate.to_string(),
            max_cashback_per_transaction: money_string(period.max_cashback_per_transaction),
            max_cashback: money_string(period.max_cashback),
            supercashback_winners: period.supercashback_winners,
            supercashback_prize: money_string(period.supercashback_prize),
            max_payments_per_merchant_day: period.max_payments_per_merchant_day,
            status,
        }
    }
}

/// `cashback.query.periods` reply.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PeriodsReply {
    /// Always true.
    pub ok: bool,
    /// Every configured period, in order of start.
    pub periods: Vec<PeriodInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_error_reply_is_the_protocols() {
        let body = error_body(&Refusal::new(ErrorCode::UnknownCitizen, "no such citizen"));
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
            json!({"ok": false, "error": {"code": "unknown_citizen", "message": "no such citizen"}})
        );
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&ok_body()).unwrap(),
            json!({"ok": true})
        );
    }

    #[test]
    fn payment_status_follows_the_balance() {
        assert_eq!(PaymentStatus::of(500, 500, false), PaymentStatus::Counted);
        assert_eq!(
            PaymentStatus::of(500, 1, false),
            PaymentStatus::PartiallyReversed
        );
        assert_eq!(PaymentStatus::of(500, 0, false), PaymentStatus::Reversed);
        assert_eq!(PaymentStatus::of(500, 1, true), PaymentStatus::Excluded);
        assert_eq!(
            serde_json::to_value(PaymentStatus::PartiallyReversed).unwrap(),
            json!("partially_reversed")
        );
    }

    #[test]
    fn a_period_is_its_configuration_as_strings_and_dates() {
        let p = AwardPeriod::with_2021_rules(
            "2021H1",
            NaiveDate::from_ymd_opt(2021, 1, 1).unwrap(),
            NaiveDate::from_ymd_opt(2021, 6, 30).unwrap(),
        );
        assert_eq!(
            serde_json::to_value(PeriodInfo::new(&p, PeriodStatus::Grace)).unwrap(),
            json!({"id": "2021H1", "start": "2021-01-01", "end": "2021-06-30",
                   "grace_days": 10, "min_transactions": 50, "cashback_rate": "0.10",
                   "max_cashback_per_transaction": "15.00", "max_cashback": "150.00",
                   "supercashback_winners": 100000, "supercashback_prize": "1500.00",
                   "max_payments_per_merchant_day": 0, "status": "grace"})
        );
    }
}
