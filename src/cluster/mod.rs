//! A cluster of engine nodes seen from outside as one engine (PROTOCOL.md
//! section 8).
//!
//! Every node reads the one log and keeps the state of the partitions it
//! owns (`pipeline`); what a request needs from other nodes it asks them
//! over NATS request-reply, on subjects of their own:
//! `cashback.node.<K>.<op>`, each answered by one process of node K (a
//! queue group per node, so that any replica of K may answer).
//!
//! - [`wire`]: what nodes ask each other, and answer.
//! - [`peers`]: asking every node (this one through its actors, the others
//!   over NATS) and merging: a citizen's national position is the sum over
//!   nodes of the citizens that sort before them; a leaderboard page is a
//!   merge of the nodes' ordered runs, started at a key found by bisection.
//! - [`node`]: answering the other nodes' questions from this node's state.
//!
//! With one node (the default, and a single process) nothing is asked over
//! NATS: the same questions go to the local actors.

pub mod node;
pub mod peers;
pub mod wire;

pub use peers::Peers;
