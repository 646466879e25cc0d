//! The citizen shard actor: one per configured shard, each owning the
//! partitions `p` with `p % shards == index` (of the partitions its node
//! owns).

use crate::supervision::{apply_supervised, Applied};
use actix::prelude::*;
use cashback_engine::directory::CitizenIdx;
use cashback_engine::item::{Item, Report, StandingChange};
use cashback_engine::ledger::wallet::WalletCard;
use cashback_engine::ledger::{CitizenFacts, Ledger, Standing, StatementLine};
use cashback_engine::period::PeriodIdx;
use cashback_engine::settings::Settings;
use cashback_engine::time::Timestamp;
use std::collections::HashMap;
use std::sync::Arc;

/// Batches of one shard that the pipeline may have outstanding at once. The
/// pipeline waits for the oldest batch before sending more: this is the
/// backpressure that keeps the router from running ahead of a slow shard.
pub const MAX_BATCHES_IN_FLIGHT: usize = 4;

/// Queries one shard may have outstanding at once (callers hold a semaphore).
pub const MAX_QUERIES_IN_FLIGHT: usize = 256;

/// The mailbox is larger than everything that may be outstanding, so that
/// `send` never finds it full. That matters: actix holds a message that finds
/// the mailbox full until its request is polled again, and a later batch
/// could then overtake it; batches must arrive in log order.
pub const MAILBOX_CAPACITY: usize = 2 * (MAX_BATCHES_IN_FLIGHT + MAX_QUERIES_IN_FLIGHT);

/// Items for this shard's partitions, in log order, then the engine's clock.
#[derive(Message)]
#[rtype(result = "Report")]
pub struct ShardBatch {
    /// (partition, item) pairs.
    pub items: Vec<(u16, Item)>,
    /// The engine's clock after these items: every ledger of the shard
    /// expires what waited until then, so that a parked reversal is
    /// rejected as soon as any message passes its deadline, whatever its
    /// partition (RULES.md), not only when its own card is touched.
    pub now: Option<Timestamp>,
}

/// Ask for a citizen's standing in a period.
#[derive(Message)]
#[rtype(result = "Lookup")]
pub struct LookupCitizen {
    /// The citizen's partition (one of this shard's).
    pub partition: u16,
    /// The citizen.
    pub citizen_id: String,
    /// The period.
    pub period: PeriodIdx,
}

/// Ask for many citizens at once, by number (one mailbox slot for a whole
/// page, so pages never crowd the mailbox).
#[derive(Message)]
#[rtype(result = "Vec<Lookup>")]
pub struct LookupMany {
    /// (partition, citizen number, period), answered in this order.
    pub citizens: Vec<(u16, CitizenIdx, PeriodIdx)>,
}

/// Ask for a citizen's wallet.
#[derive(Message)]
#[rtype(result = "Option<(CitizenFacts, Vec<WalletCard>)>")]
pub struct WalletOf {
    /// The citizen's partition (one of this shard's).
    pub partition: u16,
    /// The citizen.
    pub citizen_id: String,
}

/// The statement lines of a citizen held in this shard's partitions (a
/// citizen's payments live with their cards, which may be anchored in a
/// partition of another shard after a card changed owner).
#[derive(Message)]
#[rtype(result = "Vec<StatementLine>")]
pub struct StatementOf {
    /// The citizen's number.
    pub citizen: CitizenIdx,
    /// The period.
    pub period: PeriodIdx,
}

/// Encode every ledger for a snapshot (on the shard's own thread).
#[derive(Message)]
#[rtype(result = "Vec<(u16, Vec<u8>)>")]
pub struct TakeSnapshot;

/// Every citizen's standing in every period (to rebuild the ranking after a
/// snapshot is loaded).
#[derive(Message)]
#[rtype(result = "Vec<StandingChange>")]
pub struct AllStandings;

/// Answer to `LookupCitizen`.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// No such citizen.
    Unknown,
    /// The citizen and their totals.
    Found(CitizenFacts, Standing),
}

/// Ask for the shard's counters.
#[derive(Message)]
#[rtype(result = "Stats")]
pub struct ShardStats;

/// A shard's counters, for metrics.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Citizens held.
    pub citizens: usize,
    /// Reversals waiting for their payment.
    pub parked: usize,
    /// Times the shard was restarted after a panic.
    pub restarts: u64,
    /// Items set aside as `internal_error`.
    pub set_aside: u64,
}

/// The actor.
pub struct CitizenShard {
    /// Position among the shards.
    index: usize,
    /// Ledgers of the partitions this shard owns, created on first use.
    ledgers: HashMap<u16, Ledger>,
    /// For new ledgers.
    settings: Arc<Settings>,
    /// Set when an item panicked in the current batch: stop after it so the
    /// supervisor restarts the shard.
    failed: bool,
    /// Restarts so far.
    restarts: u64,
    /// Items set aside so far.
    set_aside: u64,
}

impl CitizenShard {
    /// A shard with no state yet.
    pub fn new(index: usize, settings: Arc<Settings>) -> CitizenShard {
        CitizenShard::restored(index, settings, HashMap::new())
    }

    /// A shard that starts from ledgers loaded from a snapshot.
    pub fn restored(
        index: usize,
        settings: Arc<Settings>,
        ledgers: HashMap<u16, Ledger>,
    ) -> CitizenShard {
        CitizenShard {
            index,
            ledgers,
            settings,
            failed: false,
            restarts: 0,
            set_aside: 0,
        }
    }

    fn ledger(&mut self, partition: u16) -> &mut Ledger {
        let s = &self.settings;
        self.ledgers
            .entry(partition)
            .or_insert_with(|| Ledger::new(partition, s.periods.clone(), s.park_days, s.limits))
    }

    fn supervise(&mut self, partition: u16, item: &Item, report: &mut Report) {
        match apply_supervised(self.ledger(partition), item, report) {
            Applied::Cleanly => {}
            Applied::Recovered(_) => self.failed = true,
            Applied::SetAside => {
                self.failed = true;
                self.set_aside += 1;
            }
        }
    }
}

impl Actor for CitizenShard {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
    }
}

impl Supervised for CitizenShard {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        self.restarts += 1;
        self.failed = false;
        for ledger in self.ledgers.values_mut() {
            ledger.rebuild_indexes();
        }
        tracing::warn!(
            shard = self.index,
            restarts = self.restarts,
            "citizen shard restarted"
        );
    }
}

impl Handler<ShardBatch> for CitizenShard {
    type Result = MessageResult<ShardBatch>;

    fn handle(&mut self, batch: ShardBatch, ctx: &mut Self::Context) -> Self::Result {
        let mut report = Report::default();
        for (partition, item) in &batch.items {
            self.supervise(*partition, item, &mut report);
        }
        if let Some(now) = batch.now {
            let due: Vec<u16> = self
                .ledgers
                .iter()
                .filter(|(_, l)| l.needs_tick(now))
                .map(|(p, _)| *p)
                .collect();
            for partition in due {
                self.supervise(partition, &Item::Tick(now), &mut report);
            }
        }
        let changed = std::mem::take(&mut report.changed);
        let mut by_partition: std::collections::BTreeMap<u16, Vec<_>> = Default::default();
        for (partition, citizen, period) in changed {
            by_partition
                .entry(partition)
                .or_default()
                .push((citizen, period));
        }
        for (partition, changed) in by_partition {
            if let Some(ledger) = self.ledgers.get(&partition) {
                ledger.standing_changes(changed, &mut report.standings);
            }
        }
        if self.failed {
            ctx.stop();
        }
        MessageResult(report)
    }
}

impl Handler<LookupCitizen> for CitizenShard {
    type Result = MessageResult<LookupCitizen>;

    fn handle(&mut self, q: LookupCitizen, _: &mut Self::Context) -> Self::Result {
        let found = self
            .ledgers
            .get(&q.partition)
            .and_then(|l| l.citizen_by_id(&q.citizen_id, q.period))
            .map(|(facts, standing)| Lookup::Found(facts, standing));
        MessageResult(found.unwrap_or(Lookup::Unknown))
    }
}

impl Handler<LookupMany> for CitizenShard {
    type Result = MessageResult<LookupMany>;

    fn handle(&mut self, q: LookupMany, _: &mut Self::Context) -> Self::Result {
        MessageResult(
            q.citizens
                .into_iter()
                .map(|(partition, idx, period)| {
                    self.ledgers
                        .get(&partition)
                        .and_then(|l| l.citizen(idx, period))
                        .map_or(Lookup::Unknown, |(facts, standing)| {
                            Lookup::Found(facts, standing)
                        })
                })
                .collect(),
        )
    }
}

impl Handler<WalletOf> for CitizenShard {
    type Result = MessageResult<WalletOf>;

    fn handle(&mut self, q: WalletOf, _: &mut Self::Context) -> Self::Result {
        MessageResult(
            self.ledgers
                .get(&q.partition)
                .and_then(|l| l.wallet_by_id(&q.citizen_id)),
        )
    }
}

impl Handler<StatementOf> for CitizenShard {
    type Result = MessageResult<StatementOf>;

    fn handle(&mut self, q: StatementOf, _: &mut Self::Context) -> Self::Result {
        let mut lines = Vec::new();
        for ledger in self.ledgers.values() {
            ledger.statement_lines(q.citizen, q.period, &mut lines);
        }
        MessageResult(lines)
    }
}

impl Handler<TakeSnapshot> for CitizenShard {
    type Result = MessageResult<TakeSnapshot>;

    fn handle(&mut self, _: TakeSnapshot, _: &mut Self::Context) -> Self::Result {
        MessageResult(
            self.ledgers
                .values()
                .map(|l| (l.partition(), cashback_engine::snapshot::encode_ledger(l)))
                .collect(),
        )
    }
}

impl Handler<AllStandings> for CitizenShard {
    type Result = MessageResult<AllStandings>;

    fn handle(&mut self, _: AllStandings, _: &mut Self::Context) -> Self::Result {
        let mut out = Vec::new();
        for ledger in self.ledgers.values() {
            ledger.all_standings(&mut out);
        }
        // In ranking order, sorted here on the shard's own thread, so that
        // a restart's ranking rebuild (restore.rs) only merges the shards'
        // runs and inserts along the index's right edges.
        out.sort_by_key(StandingChange::rank_hint);
        MessageResult(out)
    }
}

impl Handler<ShardStats> for CitizenShard {
    type Result = MessageResult<ShardStats>;

    fn handle(&mut self, _: ShardStats, _: &mut Self::Context) -> Self::Result {
        MessageResult(Stats {
            citizens: self.ledgers.values().map(Ledger::citizen_count).sum(),
            parked: self.ledgers.values().map(Ledger::parked_count).sum(),
            restarts: self.restarts,
            set_aside: self.set_aside,
        })
    }
}
