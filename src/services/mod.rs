//! Request-reply services over core NATS: enrollment and queries. Requests
//! are idempotent and the requester retries on timeout, so core subscriptions
//! are fit here (unlike for authorizations, which go through JetStream).
//!
//! A request goes: [`endpoints`] (a NATS service endpoint per subject, with
//! the concurrency bound and metrics) -> [`dispatch`] (its handler, by
//! [`request::RequestKind`]) -> one handler module per request, reading
//! [`context`] -> a reply of [`protocol`].

pub mod admin;
pub mod awards;
pub mod citizen;
pub mod context;
pub mod dispatch;
pub mod endpoints;
pub mod enrollment;
pub mod leaderboard;
pub mod periods;
pub mod protocol;
pub mod request;
pub mod statement;
pub mod wallet;

pub use context::{AdminContext, EnrollmentContext, QueryContext, ServiceContext};
pub use endpoints::{serve, SERVICES};
