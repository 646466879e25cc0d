//! The whole engine in one thread: decoder, router and every partition's
//! ledger, applied message by message. It is the reference the actor
//! pipeline must agree with, the harness of the rule tests, and the subject
//! of the pure-engine benchmark.

use crate::authorization::{Authorization, Decoder};
use crate::enrollment::{EnrollCommand, EnrollError};
use crate::item::{Item, LateRejection, Origin, Report};
use crate::ledger::{Ledger, Standing};
use crate::period::Periods;
use crate::reason::Rejection;
use crate::router::{Position, Routed, Router};
use bytes::Bytes;
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
}

impl LocalEngine {
    /// An empty engine.
    pub fn new(partitions: u16, periods: Arc<Periods>, park_days: u32) -> LocalEngine {
        LocalEngine {
            decoder: Decoder::default(),
            router: Router::new(partitions, periods.clone(), park_days),
            ledgers: (0..partitions)
                .map(|p| Ledger::new(p, periods.clone(), park_days))
                .collect(),
            rejections: Vec::new(),
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
    /// the message kept if it is a reversal that must wait: what a caller
    /// that builds a large state needs without writing JSON only for the
    /// engine to parse it again (the restart benchmark). The decisions are
    /// those of [`authorization`](Self::authorization) after decoding.
    pub fn decoded(&mut self, at: Position, auth: &Authorization, origin: impl Fn() -> Origin) {
        self.advance(at);
        self.route(at, auth, origin);
    }

    fn route(&mut self, at: Position, auth: &Authorization, origin: impl Fn() -> Origin) {
        let mut routed = self.router.route(at, auth, &origin);
        if let Routed::Wait = routed {
            // Asked at the engine-wide parking bound: a local engine has
            // always settled everything, so route it again at once.
            routed = self.router.route(at, auth, &origin);
        }
        match routed {
            Routed::Reject(r) => self.rejections.push((at.seq, r)),
            Routed::Forward(p, item) => self.deliver(vec![(p, item)]),
            Routed::ParkedHere => {}
            Routed::Wait => unreachable!("nothing is ever in flight in a local engine"),
        }
    }

    /// Applies one enrollment journal entry.
    pub fn enroll(&mut self, at: Position, cmd: &EnrollCommand) -> Result<(), EnrollError> {
        self.advance(at);
        let (result, items) = self.router.enroll(cmd);
        self.deliver(items);
        result
    }

    /// The standing of `citizen_id` in the period named `period`.
    pub fn standing(&self, citizen_id: &str, period: &str) -> Option<Standing> {
        let idx = self.router.directory().find(citizen_id)?;
        let partition = self.router.directory().citizen(idx).partition;
        let p = self.ledgers.first().map(|l| l.periods().by_id(period))??;
        self.ledgers[partition as usize]
            .citizen_by_id(citizen_id, p)
            .map(|(_, standing)| standing)
    }

    fn advance(&mut self, at: Position) {
        let (expired, ticks) = self.router.advance(at.broker_time);
        self.late(expired);
        self.deliver(ticks);
    }

    fn late(&mut self, rejections: Vec<LateRejection>) {
        self.rejections
            .extend(rejections.into_iter().map(|l| (l.seq, l.rejection)));
    }

    fn deliver(&mut self, mut items: Vec<(u16, Item)>) {
        while !items.is_empty() {
            let mut next = Vec::new();
            for (p, item) in items {
                let mut report = Report::default();
                self.ledgers[p as usize].apply(&item, 0, &mut report);
                next.extend(self.router.settle(&report));
                self.late(std::mem::take(&mut report.rejections));
            }
            items = next;
        }
    }
}
