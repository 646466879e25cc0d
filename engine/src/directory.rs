//! Who is enrolled: citizens and the activation windows of their cards
//! (RULES.md, "Participants and cards"). Changed only by journal entries,
//! applied in log order; read for every authorization.

use crate::authorization::Hpan;
use crate::enrollment::{EnrollCommand, EnrollError};
use crate::fasthash::FastMap;
use crate::partition::partition_of;
use crate::refusal::ErrorCode;
use crate::time::Timestamp;
use smallvec::SmallVec;
use std::collections::HashMap;
use std::sync::Arc;

/// A citizen's number, assigned in log order (so identical on every replay);
/// compact where citizens are referenced millions of times.
pub type CitizenIdx = u32;

/// What the engine knows of a citizen.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CitizenRecord {
    /// The opaque id from the app (a hash of the fiscal code).
    pub id: Arc<str>,
    /// Where the refund goes; changed by re-enrolling.
    pub iban: Arc<str>,
    /// The first acceptance of the T&C; re-enrolling never moves it.
    pub tc_accepted_at: Timestamp,
    /// Withdrawal is final and takes effect when processed.
    pub withdrawn: bool,
    /// The partition the citizen's state lives in.
    pub partition: u16,
}

/// One span of time during which a card belonged to a citizen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CardWindow {
    /// The owner during the window.
    pub citizen: CitizenIdx,
    /// First instant the card counts (inclusive).
    pub from: Timestamp,
    /// First instant it no longer counts; `None` while active.
    pub until: Option<Timestamp>,
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

/// What applying an enrollment changed, for the router to pass on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnrollEffect {
    /// Nothing observable (an idempotent repeat).
    Unchanged,
    /// The citizen was created or changed (IBAN, withdrawal).
    Citizen(CitizenIdx),
    /// The card was enrolled for the first time ever.
    FirstCard(Hpan),
    /// The card's windows changed.
    Card,
}

/// Citizens and cards.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Directory {
    /// Number of partitions citizens are spread over.
    partitions: u16,
    /// citizen_id -> number (derived from `citizens`; rebuilt on restore).
    #[serde(skip)]
    ids: HashMap<Arc<str>, CitizenIdx>,
    /// By number.
    citizens: Vec<CitizenRecord>,
    /// By card.
    #[serde(deserialize_with = "crate::fasthash::presized_map")]
    cards: FastMap<Hpan, CardRecord>,
    /// Citizens who withdrew: while none has, no card needs checking for
    /// withdrawn owners (the common case, on the hot path).
    withdrawn: usize,
}

impl Directory {
    /// An empty directory over `partitions` partitions.
    pub fn new(partitions: u16) -> Directory {
        Directory {
            partitions,
            ids: HashMap::new(),
            citizens: Vec::new(),
            cards: FastMap::default(),
            withdrawn: 0,
        }
    }

    /// Number of partitions citizens are spread over.
    pub fn partitions(&self) -> u16 {
        self.partitions
    }

    /// Rebuilds the id index after loading a snapshot.
    pub fn restore(&mut self) {
        self.ids = self
            .citizens
            .iter()
            .enumerate()
            .map(|(i, c)| (c.id.clone(), i as CitizenIdx))
            .collect();
    }

    /// The citizen numbered `idx`.
    pub fn citizen(&self, idx: CitizenIdx) -> &CitizenRecord {
        &self.citizens[idx as usize]
    }

    /// The citizen with this id.
    pub fn find(&self, id: &str) -> Option<CitizenIdx> {
        self.ids.get(id).copied()
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

    /// Who owned `hpan` at `at`. When windows of different owners overlap
    /// (a backdated activation), the earlier enrollment keeps the instant.
    pub fn owner_at(&self, hpan: &Hpan, at: Timestamp) -> Owner {
        match self.cards.get(hpan) {
            None => Owner::NotEnrolled,
            Some(card) => card
                .windows
                .iter()
                .find(|w| w.from <= at && w.until.is_none_or(|u| at < u))
                .map_or(Owner::NotActive, |w| Owner::Citizen(w.citizen)),
        }
    }

    /// Applies one journaled enrollment, deciding its reply (PROTOCOL.md
    /// section 2, checks in the listed order).
    pub fn apply(&mut self, cmd: &EnrollCommand) -> Result<EnrollEffect, EnrollError> {
        let parse = |s: &str| Timestamp::parse_rfc3339(s).unwrap_or_default();
        match cmd {
            EnrollCommand::Citizen {
                citizen_id,
                iban,
                tc_accepted_at,
            } => match self.find(citizen_id) {
                Some(idx) => {
                    let c = &mut self.citizens[idx as usize];
                    if c.withdrawn {
                        return Err(EnrollError::new(
                            ErrorCode::CitizenWithdrawn,
                            "the citizen has withdrawn from the programme; withdrawal is final",
                        ));
                    }
                    if *c.iban == **iban {
                        return Ok(EnrollEffect::Unchanged);
                    }
                    c.iban = iban.as_str().into();
                    Ok(EnrollEffect::Citizen(idx))
                }
                None => {
                    let idx = self.citizens.len() as CitizenIdx;
                    let id: Arc<str> = citizen_id.as_str().into();
                    self.citizens.push(CitizenRecord {
                        id: id.clone(),
                        iban: iban.as_str().into(),
                        tc_accepted_at: parse(tc_accepted_at),
                        withdrawn: false,
                        partition: partition_of(citizen_id, self.partitions),
                    });
                    self.ids.insert(id, idx);
                    Ok(EnrollEffect::Citizen(idx))
                }
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
                let window = CardWindow {
                    citizen: idx,
                    from: parse(activated_at),
                    until: None,
                };
                match self.cards.get_mut(&hpan) {
                    None => {
                        let anchor = self.citizens[idx as usize].partition;
                        let mut windows = SmallVec::new();
                        windows.push(window);
                        self.cards.insert(hpan, CardRecord { anchor, windows });
                        Ok(EnrollEffect::FirstCard(hpan))
                    }
                    Some(card) => match card.windows.iter().find(|w| w.until.is_none()) {
                        Some(open) if open.citizen == idx => Ok(EnrollEffect::Unchanged),
                        Some(_) => Err(EnrollError::new(
                            ErrorCode::CardOwnedByOtherCitizen,
                            "the card is active for another citizen, who must remove it first",
                        )),
                        None => {
                            card.windows.push(window);
                            Ok(EnrollEffect::Card)
                        }
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
                let card = self.cards.get_mut(&hpan).ok_or_else(unknown)?;
                if !card.windows.iter().any(|w| w.citizen == idx) {
                    return Err(unknown());
                }
                match card
                    .windows
                    .iter_mut()
                    .find(|w| w.citizen == idx && w.until.is_none())
                {
                    Some(open) => {
                        open.until = Some(parse(deactivated_at));
                        Ok(EnrollEffect::Card)
                    }
                    None => Ok(EnrollEffect::Unchanged),
                }
            }
            EnrollCommand::CitizenRemove { citizen_id, .. } => {
                let idx = self.known(citizen_id)?;
                let c = &mut self.citizens[idx as usize];
                if c.withdrawn {
                    return Ok(EnrollEffect::Unchanged);
                }
                c.withdrawn = true;
                self.withdrawn += 1;
                Ok(EnrollEffect::Citizen(idx))
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
    fn card_windows_and_moves() {
        let h = "c".repeat(64);
        let hp = Hpan::parse(&h).unwrap();
        let mut d = Directory::new(256);
        assert_eq!(
            code(d.apply(&card("a", &h, "2021-01-01T00:00:00Z"))),
            "unknown_citizen"
        );
        d.apply(&citizen("a")).unwrap();
        d.apply(&citizen("b")).unwrap();
        assert_eq!(
            d.apply(&card("a", &h, "2021-01-10T00:00:00Z")),
            Ok(EnrollEffect::FirstCard(hp))
        );
        assert_eq!(
            d.apply(&card("a", &h, "2021-01-11T00:00:00Z")),
            Ok(EnrollEffect::Unchanged)
        );
        assert_eq!(
            code(d.apply(&card("b", &h, "2021-01-12T00:00:00Z"))),
            "card_owned_by_other_citizen"
        );
        assert_eq!(
            code(d.apply(&remove("b", &h, "2021-01-12T00:00:00Z"))),
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
        d.apply(&remove("a", &h, "2021-02-01T00:00:00Z")).unwrap();
        assert_eq!(
            d.apply(&remove("a", &h, "2021-02-05T00:00:00Z")),
            Ok(EnrollEffect::Unchanged)
        );
        assert_eq!(
            d.owner_at(&hp, ts("2021-02-01T00:00:00Z")),
            Owner::NotActive
        );
        d.apply(&card("b", &h, "2021-03-01T00:00:00Z")).unwrap();
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
            code(d.apply(&remove("a", "zz", "2021-02-05T00:00:00Z"))),
            "unknown_card"
        );
    }

    #[test]
    fn reenrolling_changes_only_the_iban_and_withdrawal_is_final() {
        let mut d = Directory::new(256);
        d.apply(&citizen("a")).unwrap();
        assert_eq!(d.apply(&citizen("a")), Ok(EnrollEffect::Unchanged));
        let other = EnrollCommand::Citizen {
            citizen_id: "a".into(),
            iban: "DE89370400440532013000".into(),
            tc_accepted_at: "2022-01-01T00:00:00Z".into(),
        };
        assert_eq!(d.apply(&other), Ok(EnrollEffect::Citizen(0)));
        assert_eq!(&*d.citizen(0).iban, "DE89370400440532013000");
        assert_eq!(d.citizen(0).tc_accepted_at, ts("2021-01-01T00:00:00Z"));
        let bye = EnrollCommand::CitizenRemove {
            citizen_id: "a".into(),
            cancelled_at: "2021-05-01T00:00:00Z".into(),
        };
        assert_eq!(d.apply(&bye), Ok(EnrollEffect::Citizen(0)));
        assert_eq!(d.apply(&bye), Ok(EnrollEffect::Unchanged));
        assert_eq!(code(d.apply(&citizen("a"))), "citizen_withdrawn");
        let nobody = EnrollCommand::CitizenRemove {
            citizen_id: "zz".into(),
            cancelled_at: "2021-05-01T00:00:00Z".into(),
        };
        assert_eq!(code(d.apply(&nobody)), "unknown_citizen");
    }
}
