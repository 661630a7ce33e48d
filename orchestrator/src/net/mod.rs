//! Peer link framing.

pub mod frame;
