//! Client commands of the `cashback` binary: they talk to a running engine
//! (or to JetStream) over NATS.

pub mod awards;
pub mod engine_health;
pub mod exclude;
pub mod import;
pub mod simulate;

/// The NATS URL when none is given: the embedded server's default address.
pub const DEFAULT_URL: &str = "nats://127.0.0.1:4222";
