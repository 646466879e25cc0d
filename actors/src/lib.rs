//! The actors of the engine: thin, supervised shells around the plain-Rust
//! state of `cashback-engine`.
//!
//! - [`shard::CitizenShard`]: owns a set of partitions' ledgers and applies
//!   batches of items to them, one batch at a time, in the order received.
//! - [`ranking::RankingAggregator`]: the exact ranking of every period, fed
//!   with the standings the shards report.
//! - [`supervision`]: how a shard survives a panic without losing or
//!   double-counting anything.

pub mod ranking;
pub mod shard;
pub mod supervision;

pub use shard::{
    AllStandings, CitizenShard, Lookup, LookupCitizen, LookupMany, ShardBatch, ShardStats,
    StatementOf, Stats, TakeSnapshot, WalletOf,
};
