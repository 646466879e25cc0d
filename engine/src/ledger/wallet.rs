//! The cards of the citizens of one partition, as their wallet shows them
//! (PROTOCOL.md, `cashback.query.wallet`): every card a citizen ever
//! enrolled and that citizen's activation windows of it. Kept in the
//! citizen's partition, beside the IBAN, so that a wallet query is answered
//! by one partition like a citizen query (the routing directory, which
//! every cluster node holds in full, keeps only what routing needs).

use crate::authorization::Hpan;
use crate::directory::CitizenIdx;
use crate::fasthash::FastMap;
use crate::item::WalletChange;
use crate::time::Timestamp;
use smallvec::SmallVec;

/// One activation window, as enrolled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WalletWindow {
    /// `activated_at`.
    pub from: Timestamp,
    /// `deactivated_at`; `None` while the window is open.
    pub until: Option<Timestamp>,
}

/// One card of a wallet.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WalletCard {
    /// The card.
    pub hpan: Hpan,
    /// This citizen's windows of it, in enrollment order.
    pub windows: SmallVec<[WalletWindow; 1]>,
}

impl WalletCard {
    /// Whether one of its windows is open: at most one is (the directory
    /// opens a window only when none of the card's is), and it is the
    /// latest enrolled, but not always the latest by `activated_at`, which
    /// is how [`Wallets::of`] orders them: an activation relayed late, older
    /// than the card's previous window, sorts the open window first.
    pub fn active(&self) -> bool {
        self.windows.iter().any(|w| w.until.is_none())
    }
}

/// The wallets of a partition's citizens.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Wallets {
    /// Cards by citizen, in enrollment order.
    cards: FastMap<CitizenIdx, Vec<WalletCard>>,
}

impl Wallets {
    /// Applies one change (the directory has decided it; this only records).
    pub fn apply(&mut self, change: &WalletChange) {
        match *change {
            WalletChange::Opened {
                citizen,
                hpan,
                from,
            } => {
                let cards = self.cards.entry(citizen).or_default();
                let window = WalletWindow { from, until: None };
                match cards.iter_mut().find(|c| c.hpan == hpan) {
                    Some(card) => card.windows.push(window),
                    None => cards.push(WalletCard {
                        hpan,
                        windows: smallvec::smallvec![window],
                    }),
                }
            }
            WalletChange::Closed {
                citizen,
                hpan,
                until,
            } => {
                let open = self
                    .cards
                    .get_mut(&citizen)
                    .and_then(|cards| cards.iter_mut().find(|c| c.hpan == hpan))
                    .and_then(|card| card.windows.iter_mut().rev().find(|w| w.until.is_none()));
                if let Some(w) = open {
                    w.until = Some(until);
                }
            }
        }
    }

    /// The wallet of `citizen`: every card, ordered by its first
    /// `activated_at` then `hpan`, each with its windows oldest first.
    pub fn of(&self, citizen: CitizenIdx) -> Vec<WalletCard> {
        let mut cards = self.cards.get(&citizen).cloned().unwrap_or_default();
        for card in &mut cards {
            card.windows.sort_by_key(|w| w.from);
        }
        cards.sort_by(|a, b| {
            let first = |c: &WalletCard| c.windows.first().map(|w| w.from);
            first(a)
                .cmp(&first(b))
                .then_with(|| a.hpan.0.cmp(&b.hpan.0))
        });
        cards
    }

    /// Cards held, over all citizens (for the state benchmark).
    pub fn card_count(&self) -> usize {
        self.cards.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        Timestamp::parse_rfc3339(s).unwrap()
    }

    #[test]
    fn windows_open_close_and_reopen() {
        let mut w = Wallets::default();
        let (a, b) = (Hpan([2; 32]), Hpan([1; 32]));
        w.apply(&WalletChange::Opened {
            citizen: 7,
            hpan: a,
            from: ts("2021-01-02T00:00:00Z"),
        });
        w.apply(&WalletChange::Opened {
            citizen: 7,
            hpan: b,
            from: ts("2021-01-02T00:00:00Z"),
        });
        w.apply(&WalletChange::Closed {
            citizen: 7,
            hpan: a,
            until: ts("2021-02-01T00:00:00Z"),
        });
        w.apply(&WalletChange::Opened {
            citizen: 7,
            hpan: a,
            from: ts("2021-03-01T00:00:00Z"),
        });
        let cards = w.of(7);
        // Same first activation: by hpan.
        assert_eq!(cards[0].hpan, b);
        assert_eq!(cards[1].hpan, a);
        assert_eq!(cards[1].windows.len(), 2);
        assert_eq!(cards[1].windows[0].until, Some(ts("2021-02-01T00:00:00Z")));
        assert!(cards[1].active());
        assert!(w.of(8).is_empty());
    }

    #[test]
    fn a_window_opened_backdated_keeps_the_card_active() {
        let mut w = Wallets::default();
        let a = Hpan([3; 32]);
        let open = |from| WalletChange::Opened {
            citizen: 7,
            hpan: a,
            from: ts(from),
        };
        w.apply(&open("2021-02-01T00:00:00Z"));
        w.apply(&WalletChange::Closed {
            citizen: 7,
            hpan: a,
            until: ts("2021-03-01T00:00:00Z"),
        });
        w.apply(&open("2021-01-01T00:00:00Z"));
        let cards = w.of(7);
        // Oldest first: the open window sorts before the closed one.
        assert_eq!(cards[0].windows[0].until, None);
        assert!(cards[0].windows[1].until.is_some());
        assert!(cards[0].active());
    }
}
