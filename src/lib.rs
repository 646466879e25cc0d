//! The `cashback` binary's library: configuration, NATS I/O, the ingest
//! pipeline, the request-reply services, metrics and wiring. The rules live
//! in `cashback-engine`; the actors in `cashback-actors`.
//!
//! One authorization from NATS to the app: [`pipeline`] reads it from the
//! JetStream log and routes it ([`cashback_engine::router`]), a
//! [`cashback_actors::CitizenShard`] applies it ([`cashback_engine::ledger`]),
//! and [`services`] answer the app from the shard's state.

pub mod cluster;
pub mod commands;
pub mod config;
pub mod credits;
pub mod demo;
pub mod metrics;
pub mod nats;
pub mod pipeline;
pub mod progress;
pub mod push;
pub mod reader;
pub mod rejections;
pub mod restore;
pub mod serve;
pub mod services;
pub mod sim;
pub mod snapshots;
pub mod status;
pub mod waiters;
