//! berth-orchestrator: the `berthd` cluster daemon and the `berthctl` client.
//!
//! Protocol cores are IO-free and tested with scenarios: [`registry`] (the replicated state
//! machine), [`raft`] (raft-rs driving, log storage), [`membership`] (foca SWIM identity and
//! packet framing), [`unit`](mod@unit) (fleet-style unit files), [`schedule`] (placement decisions). [`daemon`] is the one mio event loop that feeds them bytes and time.

pub mod agent;
pub mod api;
pub mod client;
pub mod config;
pub mod daemon;
pub mod dns;
pub mod fence;
pub mod keyspace;
pub mod membership;
pub mod net;
pub mod network;
pub mod private_files;
pub mod raft;
pub mod registry;
pub mod schedule;
pub mod tls;
pub mod unit;
