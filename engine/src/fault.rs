//! Fault injection for tests: panics at named points of the engine's
//! decisions, for chosen stream sequences, a chosen number of times.
//!
//! Why a registry and not a field on the items: a test hook must not live in
//! the production types (issue 12). The engine calls [`point`] where a
//! decision could fail; with no plan installed (always, outside tests) that
//! is one relaxed atomic load. A test (or `serve` under
//! `CASHBACK_FAULTS`, see the README) installs a plan; the supervised
//! shard or pipeline then sees a real panic at that exact step and must
//! leave the state as if the message had been applied once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Where a decision can be made to fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Point {
    /// Deciding whether a payment counts (duplicates, slots, the record).
    Payment,
    /// Deciding a reversal: matching, its checks, its effect.
    Reversal,
    /// Deciding the release of parked reversals by a payment, one per
    /// reversal tried.
    Release,
    /// Deciding a credit from another partition.
    Credit,
    /// Deciding an enrollment against the directory.
    Enrollment,
    /// Deciding an operator's exclusion or reinstatement.
    Exclusion,
}

impl Point {
    /// The name used in `CASHBACK_FAULTS`.
    pub fn name(self) -> &'static str {
        match self {
            Point::Payment => "payment",
            Point::Reversal => "reversal",
            Point::Release => "release",
            Point::Credit => "credit",
            Point::Enrollment => "enrollment",
            Point::Exclusion => "exclusion",
        }
    }

    /// Every point, for parsing.
    pub const ALL: [Point; 6] = [
        Point::Payment,
        Point::Reversal,
        Point::Release,
        Point::Credit,
        Point::Enrollment,
        Point::Exclusion,
    ];
}

/// One planned fault: panic at `point` while deciding the message `seq`,
/// `times` times (then let it through).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// Where.
    pub point: Point,
    /// The stream sequence of the message being decided.
    pub seq: u64,
    /// How many more times to panic.
    pub times: u32,
}

/// Whether any plan is installed: the fast path's only cost.
static ARMED: AtomicBool = AtomicBool::new(false);
/// The plan.
static PLAN: Mutex<Vec<Fault>> = Mutex::new(Vec::new());

/// Adds faults to the plan (process-wide).
pub fn install(faults: impl IntoIterator<Item = Fault>) {
    let mut plan = PLAN.lock().unwrap_or_else(|e| e.into_inner());
    plan.extend(faults);
    ARMED.store(!plan.is_empty(), Ordering::Release);
}

/// Empties the plan.
pub fn clear() {
    PLAN.lock().unwrap_or_else(|e| e.into_inner()).clear();
    ARMED.store(false, Ordering::Release);
}

/// Parses `point@seq[xN]` items separated by commas, e.g.
/// `payment@57,release@90x2` (`xN`: panic N times; default once;
/// `x*`: always).
pub fn parse(text: &str) -> Result<Vec<Fault>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| {
            let (name, rest) = item
                .split_once('@')
                .ok_or_else(|| format!("fault {item:?}: expected point@seq"))?;
            let point = Point::ALL
                .into_iter()
                .find(|p| p.name() == name)
                .ok_or_else(|| format!("fault {item:?}: unknown point {name:?}"))?;
            let (seq, times) = match rest.split_once('x') {
                Some((seq, "*")) => (seq, u32::MAX),
                Some((seq, n)) => (
                    seq,
                    n.parse()
                        .map_err(|_| format!("fault {item:?}: bad count {n:?}"))?,
                ),
                None => (rest, 1),
            };
            let seq = seq
                .parse()
                .map_err(|_| format!("fault {item:?}: bad sequence {seq:?}"))?;
            Ok(Fault { point, seq, times })
        })
        .collect()
}

/// Panics if the plan says so for this point and message.
#[inline]
pub fn point(point: Point, seq: u64) {
    if !ARMED.load(Ordering::Relaxed) {
        return;
    }
    let hit = {
        let mut plan = PLAN.lock().unwrap_or_else(|e| e.into_inner());
        match plan
            .iter_mut()
            .find(|f| f.point == point && f.seq == seq && f.times > 0)
        {
            Some(f) => {
                if f.times != u32::MAX {
                    f.times -= 1;
                }
                true
            }
            None => false,
        }
    };
    if hit {
        panic!("injected fault at {} of seq {seq}", point.name());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_parse() {
        assert_eq!(
            parse("payment@57, release@90x2,credit@3x*").unwrap(),
            vec![
                Fault {
                    point: Point::Payment,
                    seq: 57,
                    times: 1
                },
                Fault {
                    point: Point::Release,
                    seq: 90,
                    times: 2
                },
                Fault {
                    point: Point::Credit,
                    seq: 3,
                    times: u32::MAX
                },
            ]
        );
        assert!(parse("nowhere@1").is_err());
        assert!(parse("payment").is_err());
        assert!(parse("payment@x").is_err());
    }
}
