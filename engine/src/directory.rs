//! Who is enrolled, as routing needs it: citizens' T&C time, withdrawal and
//! partition, and the activation windows of every card (RULES.md,
//! "Participants and cards"). Changed only by journal entries, applied in
//! log order; read for every authorization.
//!
//! The directory is the one part of the state that every cluster node holds
//! in full (PROTOCOL.md section 8), so it keeps only what routing needs:
//! a citizen is a 128-bit hash of their id and 24 bytes; a card its windows
//! of 32 bytes each. IBANs, ids and wallets live with the citizen's
//! partition.

use crate::authorization::Hpan;
use crate::enrollment::{EnrollCommand, EnrollError};
use crate::fasthash::FastMap;
use crate::fault::{self, Point};
use crate::partition::partition_of;
use crate::refusal::ErrorCode;
use crate::time::Timestamp;
use smallvec::SmallVec;

/// A citizen's number, assigned in log order (so identical on every replay);
/// compact where citizens are referenced millions of times.
pub type CitizenIdx = u32;

/// What routing needs of a citizen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CitizenRecord {
    /// The first acceptance of the T&C; re-enrolling never moves it.
    pub tc_accepted_at: Timestamp,
    /// The partition the citizen's state lives in.
    pub partition: u16,
    /// Withdrawal is final and takes effect when processed.
    pub withdrawn: bool,
}

/// One span of time during which a card belonged to a citizen: 32 bytes,
/// every instant exact to the nanosecond.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CardWindow {
    /// Seconds of the first instant the card counts (inclusive).
    from_secs: i64,
    /// Seconds of the first instant it no longer counts; `i64::MAX` while open.
    until_secs: i64,
    /// The owner during the window.
    pub citizen: CitizenIdx,
    /// Nanoseconds of `from`.
    from_nanos: u32,
    /// Nanoseconds of `until`; `u32::MAX` while open.
    until_nanos: u32,
}

impl CardWindow {
    /// An open window of `citizen` from `from`.
    pub fn open(citizen: CitizenIdx, from: Timestamp) -> CardWindow {
        let (from_secs, from_nanos) = from.parts();
        CardWindow {
            from_secs,
            until_secs: i64::MAX,
            citizen,
            from_nanos,
            until_nanos: u32::MAX,
        }
    }

    /// First instant the card counts.
    pub fn from(&self) -> Timestamp {
        Timestamp::from_parts(self.from_secs, self.from_nanos)
    }

    /// First instant it no longer counts; `None` while open.
    pub fn until(&self) -> Option<Timestamp> {
        (self.until_nanos != u32::MAX)
            .then(|| Timestamp::from_parts(self.until_secs, self.until_nanos))
    }

    /// Closes the window at `until`.
    fn close(&mut self, until: Timestamp) {
        (self.until_secs, self.until_nanos) = until.parts();
    }

    /// Whether `at` falls in the window.
    pub fn contains(&self, at: Timestamp) -> bool {
        self.from() <= at && self.until().is_none_or(|u| at < u)
    }
}

/// A card's history.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CardRecord {
    /// The partition holding the card's payments and parked reversals: that of
    /// its first owner, forever, so that a reversal finds every earlier payment
    /// of the card in one place whoever owned it (RULES.md, "Reversals").
    pub anchor: u16,
    /// Windows in enrollment order; at most one is open.
    pub windows: SmallVec<[CardWindow; 1]>,
}

/// Who a card belonged to at an instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// Never enrolled by anyone.
    NotEnrolled,
    /// Enrolled, but no window contains the instant.
    NotActive,
    /// The window's owner.
    Citizen(CitizenIdx),
}

/// What an enrollment changes in the directory, decided and not yet
/// written (see [`Directory::decide`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Nothing (an idempotent repeat).
    Unchanged,
    /// A new citizen.
    NewCitizen {
        /// The hash of their id.
        key: u128,
        /// Their record.
        record: CitizenRecord,
    },
    /// An existing citizen enrolled again (a new IBAN, perhaps: the
    /// citizen's partition keeps it).
    Reenrolled(CitizenIdx),
    /// A citizen withdrew.
    Withdrawn(CitizenIdx),
    /// A card enrolled for the first time ever.
    NewCard {
        /// The card.
        hpan: Hpan,
        /// Its anchor partition.
        anchor: u16,
        /// Its first window.
        window: CardWindow,
    },
    /// A known card's new window.
    Opened {
        /// The card.
        hpan: Hpan,
        /// The window.
        window: CardWindow,
    },
    /// A card's open window closed.
    Closed {
        /// The card.
        hpan: Hpan,
        /// The window's place among the card's windows.
        index: usize,
        /// `deactivated_at`.
        until: Timestamp,
    },
}

/// What applying an enrollment changed, for the router to pass on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnrollEffect {
    /// Nothing observable (an idempotent repeat).
    Unchanged,
    /// The citizen was created or changed (IBAN, withdrawal).
    Citizen(CitizenIdx),
    /// A window of the card opened; `first` when the card was never
    /// enrolled before.
    Opened {
        /// The card.
        hpan: Hpan,
        /// The owner.
        citizen: CitizenIdx,
        /// `activated_at`.
        from: Timestamp,
        /// Whether this is the card's first enrollment ever.
        first: bool,
    },
    /// The citizen's window of the card closed.
    Closed {
        /// The card.
        hpan: Hpan,
        /// The owner.
        citizen: CitizenIdx,
        /// `deactivated_at`.
        until: Timestamp,
    },
}

/// Citizens and cards.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Directory {
    /// Number of partitions citizens are spread over.
    partitions: u16,
    /// xxh3-128 of citizen_id -> number. A hash, not the id: 16 bytes
    /// instead of up to 64 plus a pointer on every node; a collision
    /// among 10^7 ids has a probability near 10^-25.
    #[serde(deserialize_with = "crate::fasthash::presized_map")]
    ids: FastMap<u128, CitizenIdx>,
    /// By number.
    citizens: Vec<CitizenRecord>,
    /// By card.
    #[serde(deserialize_with = "crate::fasthash::presized_map")]
    cards: FastMap<Hpan, CardRecord>,
    /// Citizens who withdrew: while none has, no card needs checking for
    /// withdrawn owners (the common case, on the hot path).
    withdrawn: usize,
}

/// The directory's key of a citizen id.
pub fn citizen_key(citizen_id: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(citizen_id.as_bytes())
}

impl Directory {
    /// An empty directory over `partitions` partitions.
    pub fn new(partitions: u16) -> Directory {
        Directory {
            partitions,
            ids: FastMap::default(),
            citizens: Vec::new(),
            cards: FastMap::default(),
            withdrawn: 0,
        }
    }

    /// Number of partitions citizens are spread over.
    pub fn partitions(&self) -> u16 {
        self.partitions
    }

    /// The citizen numbered `idx`.
    pub fn citizen(&self, idx: CitizenIdx) -> &CitizenRecord {
        &self.citizens[idx as usize]
    }

    /// The citizen with this id.
    pub fn find(&self, id: &str) -> Option<CitizenIdx> {
        self.ids.get(&citizen_key(id)).copied()
    }

    /// How many citizens ever enrolled.
    pub fn citizen_count(&self) -> usize {
        self.citizens.len()
    }

    /// How many citizens withdrew.
    pub fn withdrawn_count(&self) -> usize {
        self.withdrawn
    }

    /// How many cards ever enrolled.
    pub fn card_count(&self) -> usize {
        self.cards.len()
    }

    /// A card's history.
    pub fn card(&self, hpan: &Hpan) -> Option<&CardRecord> {
        self.cards.get(hpan)
    }

    /// Heap bytes held, capacity included (for the cluster benchmark's
    /// per-citizen and per-card figures): the id map, the citizens, the
    /// card map and windows that did not fit inline.
    pub fn heap_bytes(&self) -> (usize, usize) {
        // A hash map allocates a power of two of slots, of which it fills
        // at most 7/8 (its `capacity`), each a (key, value) pair and one
        // control byte.
        fn map<K, V>(capacity: usize) -> usize {
            let slots = if capacity == 0 {
                0
            } else {
                (capacity * 8).div_ceil(7).next_power_of_two()
            };
            slots * (std::mem::size_of::<(K, V)>() + 1)
        }
        let citizens = map::<u128, CitizenIdx>(self.ids.capacity())
            + self.citizens.capacity() * std::mem::size_of::<CitizenRecord>();
        let cards = map::<Hpan, CardRecord>(self.cards.capacity())
            + self
                .cards
                .values()
                .filter(|c| c.windows.spilled())
                .map(|c| c.windows.capacity() * std::mem::size_of::<CardWindow>())
                .sum::<usize>();
        (citizens, cards)
    }

    /// Who owned `hpan` at `at`. When windows of different owners overlap
    /// (a backdated activation), the earlier enrollment keeps the instant.
    pub fn owner_at(&self, hpan: &Hpan, at: Timestamp) -> Owner {
        match self.cards.get(hpan) {
            None => Owner::NotEnrolled,
            Some(card) => card
                .windows
                .iter()
                .find(|w| w.contains(at))
                .map_or(Owner::NotActive, |w| Owner::Citizen(w.citizen)),
        }
    }

    /// Applies one journaled enrollment, deciding its reply (PROTOCOL.md
    /// section 2, checks in the listed order).
    pub fn apply(&mut self, seq: u64, cmd: &EnrollCommand) -> Result<EnrollEffect, EnrollError> {
        let change = self.decide(seq, cmd)?;
        Ok(self.commit(change))
    }

    /// Decides one enrollment, changing nothing (decide, then commit: a
    /// panic while deciding leaves the directory as it was).
    pub fn decide(&self, seq: u64, cmd: &EnrollCommand) -> Result<Change, EnrollError> {
        fault::point(Point::Enrollment, seq);
        let parse = |s: &str| Timestamp::parse_rfc3339(s).unwrap_or_default();
        match cmd {
            EnrollCommand::Citizen {
                citizen_id,
                tc_accepted_at,
                ..
            } => match self.find(citizen_id) {
                Some(idx) if self.citizens[idx as usize].withdrawn => Err(EnrollError::new(
                    ErrorCode::CitizenWithdrawn,
                    "the citizen has withdrawn from the programme; withdrawal is final",
                )),
                Some(idx) => Ok(Change::Reenrolled(idx)),
                None => Ok(Change::NewCitizen {
                    key: citizen_key(citizen_id),
                    record: CitizenRecord {
                        tc_accepted_at: parse(tc_accepted_at),
                        partition: partition_of(citizen_id, self.partitions),
                        withdrawn: false,
                    },
                }),
            },
            EnrollCommand::Card {
                citizen_id,
                hpan,
                activated_at,
            } => {
                let idx = self.known(citizen_id)?;
                let hpan = Hpan::parse(hpan).ok_or_else(|| {
                    EnrollError::new(
                        ErrorCode::InvalidHpan,
                        "hpan must be 64 lower-case hex characters",
                    )
                })?;
                let window = CardWindow::open(idx, parse(activated_at));
                match self.cards.get(&hpan) {
                    None => Ok(Change::NewCard {
                        hpan,
                        anchor: self.citizens[idx as usize].partition,
                        window,
                    }),
                    Some(card) => match card.windows.iter().find(|w| w.until().is_none()) {
                        Some(open) if open.citizen == idx => Ok(Change::Unchanged),
                        Some(_) => Err(EnrollError::new(
                            ErrorCode::CardOwnedByOtherCitizen,
                            "the card is active for another citizen, who must remove it first",
                        )),
                        None => Ok(Change::Opened { hpan, window }),
                    },
                }
            }
            EnrollCommand::CardRemove {
                citizen_id,
                hpan,
                deactivated_at,
            } => {
                let idx = self.known(citizen_id)?;
                let unknown =
                    || EnrollError::new(ErrorCode::UnknownCard, "the citizen never had this card");
                let hpan = Hpan::parse(hpan).ok_or_else(unknown)?;
                let card = self.cards.get(&hpan).ok_or_else(unknown)?;
                if !card.windows.iter().any(|w| w.citizen == idx) {
                    return Err(unknown());
                }
                Ok(
                    match card
                        .windows
                        .iter()
                        .position(|w| w.citizen == idx && w.until().is_none())
                    {
                        Some(index) => Change::Closed {
                            hpan,
                            index,
                            until: parse(deactivated_at),
                        },
                        None => Change::Unchanged,
                    },
                )
            }
            EnrollCommand::CitizenRemove { citizen_id, .. } => {
                let idx = self.known(citizen_id)?;
                Ok(if self.citizens[idx as usize].withdrawn {
                    Change::Unchanged
                } else {
                    Change::Withdrawn(idx)
                })
            }
        }
    }

    /// Writes a decided change.
    pub fn commit(&mut self, change: Change) -> EnrollEffect {
        match change {
            Change::Unchanged => EnrollEffect::Unchanged,
            Change::NewCitizen { key, record } => {
                let idx = self.citizens.len() as CitizenIdx;
                self.citizens.push(record);
                self.ids.insert(key, idx);
                EnrollEffect::Citizen(idx)
            }
            Change::Reenrolled(idx) => EnrollEffect::Citizen(idx),
            Change::Withdrawn(idx) => {
                self.citizens[idx as usize].withdrawn = true;
                self.withdrawn += 1;
                EnrollEffect::Citizen(idx)
            }
            Change::NewCard {
                hpan,
                anchor,
                window,
            } => {
                self.cards.insert(
                    hpan,
                    CardRecord {
                        anchor,
                        windows: smallvec::smallvec![window],
                    },
                );
                EnrollEffect::Opened {
                    hpan,
                    citizen: window.citizen,
                    from: window.from(),
                    first: true,
                }
            }
            Change::Opened { hpan, window } => {
                if let Some(card) = self.cards.get_mut(&hpan) {
                    card.windows.push(window);
                }
                EnrollEffect::Opened {
                    hpan,
                    citizen: window.citizen,
                    from: window.from(),
                    first: false,
                }
            }
            Change::Closed { hpan, index, until } => {
                let mut citizen = 0;
                if let Some(w) = self
                    .cards
                    .get_mut(&hpan)
                    .and_then(|c| c.windows.get_mut(index))
                {
                    w.close(until);
                    citizen = w.citizen;
                }
                EnrollEffect::Closed {
                    hpan,
                    citizen,
                    until,
                }
            }
        }
    }

    fn known(&self, citizen_id: &str) -> Result<CitizenIdx, EnrollError> {
        self.find(citizen_id).ok_or_else(|| {
            EnrollError::new(ErrorCode::UnknownCitizen, "no citizen with this citizen_id")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IBAN: &str = "IT60X0542811101000000123456";

    fn citizen(id: &str) -> EnrollCommand {
        EnrollCommand::Citizen {
            citizen_id: id.into(),
            iban: IBAN.into(),
            tc_accepted_at: "2021-01-01T00:00:00Z".into(),
        }
    }

    fn card(id: &str, hpan: &str, at: &str) -> EnrollCommand {
        EnrollCommand::Card {
            citizen_id: id.into(),
            hpan: hpan.into(),
            activated_at: at.into(),
        }
    }

    fn remove(id: &str, hpan: &str, at: &str) -> EnrollCommand {
        EnrollCommand::CardRemove {
            citizen_id: id.into(),
            hpan: hpan.into(),
            deactivated_at: at.into(),
        }
    }

    fn ts(s: &str) -> Timestamp {
        Timestamp::parse_rfc3339(s).unwrap()
    }

    fn code(r: Result<EnrollEffect, EnrollError>) -> &'static str {
        r.map(|_| "ok").unwrap_or_else(|e| e.code.as_str())
    }

    #[test]
    fn records_stay_lean() {
        assert_eq!(std::mem::size_of::<CardWindow>(), 32);
        assert_eq!(std::mem::size_of::<CitizenRecord>(), 24);
        let w = CardWindow::open(3, ts("2021-01-01T00:00:00.5Z"));
        assert_eq!(w.from(), ts("2021-01-01T00:00:00.5Z"));
        assert_eq!(w.until(), None);
    }

    #[test]
    fn card_windows_and_moves() {
        let h = "c".repeat(64);
        let hp = Hpan::parse(&h).unwrap();
        let mut d = Directory::new(256);
        assert_eq!(
            code(d.apply(1, &card("a", &h, "2021-01-01T00:00:00Z"))),
            "unknown_citizen"
        );
        d.apply(1, &citizen("a")).unwrap();
        d.apply(1, &citizen("b")).unwrap();
        assert_eq!(
            d.apply(1, &card("a", &h, "2021-01-10T00:00:00Z")),
            Ok(EnrollEffect::Opened {
                hpan: hp,
                citizen: 0,
                from: ts("2021-01-10T00:00:00Z"),
                first: true
            })
        );
        assert_eq!(
            d.apply(1, &card("a", &h, "2021-01-11T00:00:00Z")),
            Ok(EnrollEffect::Unchanged)
        );
        assert_eq!(
            code(d.apply(1, &card("b", &h, "2021-01-12T00:00:00Z"))),
            "card_owned_by_other_citizen"
        );
        assert_eq!(
            code(d.apply(1, &remove("b", &h, "2021-01-12T00:00:00Z"))),
            "unknown_card"
        );
        // One second before activation: not active.
        assert_eq!(
            d.owner_at(&hp, ts("2021-01-09T23:59:59Z")),
            Owner::NotActive
        );
        assert_eq!(
            d.owner_at(&hp, ts("2021-01-10T00:00:00Z")),
            Owner::Citizen(0)
        );
        d.apply(1, &remove("a", &h, "2021-02-01T00:00:00Z"))
            .unwrap();
        assert_eq!(
            d.apply(1, &remove("a", &h, "2021-02-05T00:00:00Z")),
            Ok(EnrollEffect::Unchanged)
        );
        assert_eq!(
            d.owner_at(&hp, ts("2021-02-01T00:00:00Z")),
            Owner::NotActive
        );
        d.apply(1, &card("b", &h, "2021-03-01T00:00:00Z")).unwrap();
        assert_eq!(
            d.owner_at(&hp, ts("2021-01-20T00:00:00Z")),
            Owner::Citizen(0)
        );
        assert_eq!(
            d.owner_at(&hp, ts("2021-03-02T00:00:00Z")),
            Owner::Citizen(1)
        );
        assert_eq!(d.card(&hp).unwrap().anchor, d.citizen(0).partition);
        assert_eq!(
            d.owner_at(&Hpan([0; 32]), ts("2021-03-02T00:00:00Z")),
            Owner::NotEnrolled
        );
        assert_eq!(
            code(d.apply(1, &remove("a", "zz", "2021-02-05T00:00:00Z"))),
            "unknown_card"
        );
    }

    #[test]
    fn reenrolling_keeps_the_first_tc_and_withdrawal_is_final() {
        let mut d = Directory::new(256);
        d.apply(1, &citizen("a")).unwrap();
        let other = EnrollCommand::Citizen {
            citizen_id: "a".into(),
            iban: "DE89370400440532013000".into(),
            tc_accepted_at: "2022-01-01T00:00:00Z".into(),
        };
        assert_eq!(d.apply(1, &other), Ok(EnrollEffect::Citizen(0)));
        assert_eq!(d.citizen(0).tc_accepted_at, ts("2021-01-01T00:00:00Z"));
        let bye = EnrollCommand::CitizenRemove {
            citizen_id: "a".into(),
            cancelled_at: "2021-05-01T00:00:00Z".into(),
        };
        assert_eq!(d.apply(1, &bye), Ok(EnrollEffect::Citizen(0)));
        assert_eq!(d.apply(1, &bye), Ok(EnrollEffect::Unchanged));
        assert_eq!(code(d.apply(1, &citizen("a"))), "citizen_withdrawn");
        let nobody = EnrollCommand::CitizenRemove {
            citizen_id: "zz".into(),
            cancelled_at: "2021-05-01T00:00:00Z".into(),
        };
        assert_eq!(code(d.apply(1, &nobody)), "unknown_citizen");
    }
}
