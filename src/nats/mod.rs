//! NATS I/O: subjects, the embedded server, the stream.

pub mod embedded;
pub mod stream;
pub mod subjects;
