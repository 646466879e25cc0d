//! NATS I/O: subjects, the embedded server, the stream, publishing, the
//! connection's events, and start-up retries through cluster elections.

pub mod embedded;
pub mod events;
pub mod publisher;
pub mod retry;
pub mod stream;
pub mod subjects;
