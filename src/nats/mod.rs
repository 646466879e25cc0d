//! NATS I/O: subjects, the embedded server, the stream, publishing.

pub mod embedded;
pub mod publisher;
pub mod stream;
pub mod subjects;
