//! Every subject of the wire protocol, under one configurable prefix.

use cashback_engine::enrollment::EnrollKind;

/// Builds subjects from the prefix (default `cashback`).
#[derive(Clone, Debug)]
pub struct Subjects {
    /// First token(s) of every subject.
    prefix: String,
}

impl Subjects {
    /// Subjects under `prefix`.
    pub fn new(prefix: &str) -> Subjects {
        Subjects {
            prefix: prefix.to_owned(),
        }
    }

    /// `cashback.auth.>`: what payment networks publish to (JetStream).
    pub fn auth_filter(&self) -> String {
        format!("{}.auth.>", self.prefix)
    }

    /// `cashback.auth.<acquirer_code>`.
    pub fn auth(&self, acquirer_code: &str) -> String {
        format!("{}.auth.{acquirer_code}", self.prefix)
    }

    /// `cashback.journal.>`: the enrollment journal, in the same stream as the
    /// authorizations so that both form one ordered log.
    pub fn journal_filter(&self) -> String {
        format!("{}.journal.>", self.prefix)
    }

    /// `cashback.journal.enroll`: where the engine journals enrollments.
    pub fn journal(&self) -> String {
        format!("{}.journal.enroll", self.prefix)
    }

    /// `cashback.journal.admin`: where the engine journals operators'
    /// exclusions and reinstatements.
    pub fn journal_admin(&self) -> String {
        format!("{}.journal.admin", self.prefix)
    }

    /// `cashback.journal.credit`: where a cluster node journals the credits
    /// it decided for citizens of other nodes' partitions (PROTOCOL.md
    /// section 8: what nodes pass each other is itself in the log).
    pub fn journal_credit(&self) -> String {
        format!("{}.journal.credit", self.prefix)
    }

    /// `cashback.node.<node>.<op>`: what cluster nodes ask node `node`.
    pub fn node(&self, node: u16, op: &str) -> String {
        format!("{}.node.{node}.{op}", self.prefix)
    }

    /// `cashback.node.<node>.>`: everything node `node` answers.
    pub fn node_filter(&self, node: u16) -> String {
        format!("{}.node.{node}.>", self.prefix)
    }

    /// `cashback.admin.<op>`: operators' requests.
    pub fn admin(&self, op: &str) -> String {
        format!("{}.admin.{op}", self.prefix)
    }

    /// Whether `subject` is an authorization.
    pub fn is_auth(&self, subject: &str) -> bool {
        subject
            .strip_prefix(self.prefix.as_str())
            .is_some_and(|rest| rest.starts_with(".auth."))
    }

    /// The acquirer token of an authorization subject (what follows
    /// `cashback.auth.`), which must equal the body's `acquirer_code`.
    pub fn auth_token<'s>(&self, subject: &'s str) -> Option<&'s str> {
        subject
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(".auth.")
    }

    /// Whether `subject` is the enrollment journal.
    pub fn is_journal(&self, subject: &str) -> bool {
        subject
            .strip_prefix(self.prefix.as_str())
            .is_some_and(|rest| rest.starts_with(".journal."))
    }

    /// `cashback.enroll.<kind>`.
    pub fn enroll(&self, kind: EnrollKind) -> String {
        format!("{}.enroll.{}", self.prefix, kind.token())
    }

    /// `cashback.query.<name>`.
    pub fn query(&self, name: &str) -> String {
        format!("{}.query.{name}", self.prefix)
    }

    /// `cashback.position.<citizen_id>`: a citizen's live standing.
    pub fn position(&self, citizen_id: &str) -> String {
        format!("{}.position.{citizen_id}", self.prefix)
    }

    /// `cashback.leaderboard.<award_period>`: the live top of a period.
    pub fn leaderboard(&self, period: &str) -> String {
        format!("{}.leaderboard.{period}", self.prefix)
    }

    /// `cashback.rejected.<reason>`.
    pub fn rejected(&self, reason: &str) -> String {
        format!("{}.rejected.{reason}", self.prefix)
    }

    /// `cashback.rejected.>`.
    pub fn rejected_filter(&self) -> String {
        format!("{}.rejected.>", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects() {
        let s = Subjects::new("cashback");
        assert!(s.is_auth("cashback.auth.32875"));
        assert!(!s.is_auth("cashbackx.auth.1"));
        assert_eq!(s.auth_token("cashback.auth.32875"), Some("32875"));
        assert_eq!(s.auth_token("cashbackx.auth.1"), None);
        assert!(s.is_journal(&s.journal()));
        assert_eq!(s.enroll(EnrollKind::Citizen), "cashback.enroll.citizen");
    }
}
