//! Which request a message is: one enum for every request-reply subject, so
//! that subject tokens, metrics labels and dispatch are written once.

use crate::nats::subjects::Subjects;
use cashback_engine::enrollment::EnrollKind;
use cashback_engine::item::ExclusionOp;

/// A request-reply subject of PROTOCOL.md sections 2 and 3. Each is one
/// endpoint of a NATS service (see `endpoints`), which tags every request
/// with its kind, so nothing downstream matches subject strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    /// `cashback.enroll.<kind>`: journaled, answered once applied.
    Enroll(EnrollKind),
    /// `cashback.query.citizen`: a citizen's standing in a period.
    Citizen,
    /// `cashback.query.transactions`: a citizen's statement.
    Transactions,
    /// `cashback.query.leaderboard`: a page of the ranking.
    Leaderboard,
    /// `cashback.query.wallet`: a citizen's IBAN and cards.
    Wallet,
    /// `cashback.query.periods`: the configured award periods.
    Periods,
    /// `cashback.query.awards`: a page of a period's payout file.
    Awards,
    /// `cashback.admin.exclude` / `cashback.admin.reinstate` (section 6).
    Admin(ExclusionOp),
}

impl RequestKind {
    /// The last subject token; also the endpoint's name and the metrics
    /// label (`subject` for enrollment, `query` for queries).
    pub fn token(self) -> &'static str {
        match self {
            RequestKind::Enroll(kind) => kind.token(),
            RequestKind::Citizen => "citizen",
            RequestKind::Transactions => "transactions",
            RequestKind::Leaderboard => "leaderboard",
            RequestKind::Wallet => "wallet",
            RequestKind::Periods => "periods",
            RequestKind::Awards => "awards",
            RequestKind::Admin(ExclusionOp::Exclude) => "exclude",
            RequestKind::Admin(ExclusionOp::Reinstate) => "reinstate",
        }
    }

    /// The subject it is requested on.
    pub fn subject(self, subjects: &Subjects) -> String {
        match self {
            RequestKind::Enroll(kind) => subjects.enroll(kind),
            RequestKind::Admin(_) => subjects.admin(self.token()),
            query => subjects.query(query.token()),
        }
    }
}
