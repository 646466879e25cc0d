//! The Cashback and Supercashback rules and state, as plain Rust.
//!
//! Nothing here knows about actors or NATS: the binary feeds messages in and
//! carries results out. Follow an authorization through:
//! [`authorization`] (decode and validate) -> [`router`] (de-duplicate,
//! decide payments, pick the partition) -> [`ledger`] (count, cashback,
//! reversal matching) -> [`query`] (what the app sees).

// The engine is plain safe Rust: the rank index's huge-page storage is the
// one place that needs raw memory, and it opts out alone (`rank::storage`),
// so raw memory anywhere else is a compile error, argued for or not at all.
#![deny(unsafe_code)]

pub mod admin;
pub mod authorization;
pub mod directory;
pub mod enrollment;
pub mod fasthash;
pub mod fault;
pub mod item;
pub mod ledger;
pub mod local;
pub mod money;
pub mod parking;
pub mod partition;
pub mod period;
pub mod query;
pub mod rank;
pub mod reason;
pub mod refusal;
pub mod router;
pub mod settings;
pub mod snapshot;
pub mod standing;
pub mod summary;
pub mod time;

pub use rust_decimal::Decimal;
