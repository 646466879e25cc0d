//! The whole engine in one thread: decoder, router and every partition's
//! ledger, applied message by message. It is the reference the actor
//! pipeline and a cluster of nodes must agree with, the harness of the rule
//! tests, and the subject of the pure-engine benchmark.

use crate::admin::ExclusionCommand;
use crate::authorization::{Authorization, Decoder};
use crate::enrollment::{EnrollCommand, EnrollError};
use crate::item::{ExclusionOp, ExclusionOutcome, Item, Origin, Report};
use crate::ledger::{Ledger, Standing};
use crate::parking::ParkingLimits;
use crate::period::Periods;
use crate::reason::Rejection;
use crate::refusal::ErrorCode;
use crate::router::{Position, Routed, Router};
use crate::time::Timestamp;
use bytes::Bytes;
use std::collections::BTreeSet;
use std::sync::Arc;

/// The single-threaded engine.
pub struct LocalEngine {
    /// Validates payloads.
    pub decoder: Decoder,
    /// Decides and routes.
    pub router: Router,
    /// One ledger per partition.
    pub ledgers: Vec<Ledger>,
    /// Every rejection so far: (seq, rejection), in decision order.
    pub rejections: Vec<(u64, Rejection)>,
    /// Every operator's request so far: (journal seq, op, outcome).
    pub exclusions: Vec<(u64, ExclusionOp, ExclusionOutcome)>,
    /// Broken invariants met (none expected).
    pub invariant_violations: Vec<String>,
    /// The next parked-reversal deadline of each partition that has one,
    /// so that expiry happens at the first message past it, whatever its
    /// partition (RULES.md), without asking every partition each time.
    deadlines: BTreeSet<(Timestamp, u16)>,
}

impl LocalEngine {
    /// An empty engine with the default parking bounds.
    pub fn new(partitions: u16, periods: Arc<Periods>, park_days: u32) -> LocalEngine {
        LocalEngine::with_limits(
            partitions,
            periods,
            park_days,
            ParkingLimits::new(
                ParkingLimits::DEFAULT_PER_CARD,
                ParkingLimits::DEFAULT_TOTAL,
                partitions,
            ),
        )
    }

    /// An empty engine with these parking bounds.
    pub fn with_limits(
        partitions: u16,
        periods: Arc<Periods>,
        park_days: u32,
        limits: ParkingLimits,
    ) -> LocalEngine {
        LocalEngine {
            decoder: Decoder::default(),
            router: Router::new(partitions, periods.clone(), park_days, limits),
            ledgers: (0..partitions)
                .map(|p| Ledger::new(p, periods.clone(), park_days, limits))
                .collect(),
            rejections: Vec::new(),
            exclusions: Vec::new(),
            invariant_violations: Vec::new(),
            deadlines: BTreeSet::new(),
        }
    }

    /// Applies one authorization message.
    pub fn authorization(&mut self, at: Position, subject: &str, payload: &[u8]) {
        self.advance(at);
        let token = subject.rsplit_once(".auth.").map_or(subject, |(_, t)| t);
        let auth = match self.decoder.decode_on(token, payload, at.broker_time) {
            Ok(a) => a,
            Err(r) => return self.rejections.push((at.seq, r)),
        };
        let origin = || Origin {
            subject: subject.into(),
            payload: Bytes::copy_from_slice(payload),
        };
        self.route(at, &auth, origin);
    }

    /// Applies one authorization that is already decoded, with `origin` for
    /// the message should a partition reject it or keep it waiting: what a
    /// caller that builds a large state needs without writing JSON only for
    /// the engine to parse it again (the restart benchmark). The decisions
    /// are those of [`authorization`](Self::authorization) after decoding.
    pub fn decoded(&mut self, at: Position, auth: &Authorization, origin: impl Fn() -> Origin) {
        self.advance(at);
        self.route(at, auth, origin);
    }

    fn route(&mut self, at: Position, auth: &Authorization, origin: impl Fn() -> Origin) {
        match self.router.route(at, auth, |_| origin()) {
            Routed::Reject { rejection, .. } => self.rejections.push((at.seq, rejection)),
            Routed::Forward(p, item) => self.deliver(vec![(p, item)]),
            Routed::ParkedHere => {}
        }
    }

    /// Applies one enrollment journal entry.
    pub fn enroll(&mut self, at: Position, cmd: &EnrollCommand) -> Result<(), EnrollError> {
        self.advance(at);
        let (result, items) = self.router.enroll(at, cmd);
        self.deliver(items);
        result
    }

    /// Applies one operator's exclusion or reinstatement journal entry.
    pub fn exclusion(
        &mut self,
        at: Position,
        op: ExclusionOp,
        cmd: &ExclusionCommand,
    ) -> ExclusionOutcome {
        self.advance(at);
        match self.router.exclusion(at, op, cmd) {
            Err(_) => self
                .exclusions
                .push((at.seq, op, Err(ErrorCode::UnknownPayment))),
            // The partition reports the outcome (into `exclusions`).
            Ok((p, item)) => self.deliver(vec![(p, item)]),
        }
        self.exclusions
            .last()
            .filter(|(seq, _, _)| *seq == at.seq)
            .map_or(Err(ErrorCode::UnknownPayment), |(_, _, o)| *o)
    }

    /// The standing of `citizen_id` in the period named `period`.
    pub fn standing(&self, citizen_id: &str, period: &str) -> Option<Standing> {
        let idx = self.router.directory().find(citizen_id)?;
        let partition = self.router.directory().citizen(idx).partition;
        let p = self.router.periods().by_id(period)?;
        self.ledgers[partition as usize]
            .citizen_by_id(citizen_id, p)
            .map(|(_, standing)| standing)
    }

    /// The ledger of the partition holding `citizen_id`, if enrolled.
    pub fn ledger_of(&self, citizen_id: &str) -> Option<&Ledger> {
        let idx = self.router.directory().find(citizen_id)?;
        let partition = self.router.directory().citizen(idx).partition;
        Some(&self.ledgers[partition as usize])
    }

    fn advance(&mut self, at: Position) {
        let expired = self.router.advance(at.broker_time);
        self.rejections
            .extend(expired.into_iter().map(|(_, l)| (l.seq, l.rejection)));
        let now = self.router.now();
        let due: Vec<u16> = self
            .deadlines
            .iter()
            .take_while(|(d, _)| *d <= now)
            .map(|(_, p)| *p)
            .collect();
        self.deliver(due.into_iter().map(|p| (p, Item::Tick(now))).collect());
    }

    fn deliver(&mut self, mut items: Vec<(u16, Item)>) {
        while !items.is_empty() {
            let mut next = Vec::new();
            for (p, item) in items {
                let ledger = &mut self.ledgers[p as usize];
                if let Some(d) = ledger.next_deadline() {
                    self.deadlines.remove(&(d, p));
                }
                let mut report = Report::default();
                ledger.apply(&item, &mut report);
                if let Some(d) = ledger.next_deadline() {
                    self.deadlines.insert((d, p));
                }
                next.extend(self.router.deliver(&report.credits));
                self.rejections
                    .extend(report.rejections.into_iter().map(|l| (l.seq, l.rejection)));
                self.exclusions.extend(report.exclusions);
                self.invariant_violations
                    .extend(report.invariant_violations);
            }
            items = next;
        }
    }
}
