//! DNS for the cluster (issue 14, like consul's): `<service>.service.berth.` A and SRV
//! records and `<machine>.node.berth.` A records, answered by every node from a snapshot
//! of its local replica.
//!
//! - [`snapshot`]: the services and machines answered from (built by the daemon).
//! - [`responder`]: the pure responder, bytes in and bytes out, on the `simple-dns` crate.
//! - [`udp`]: one datagram in, one answer out, over a socket the daemon owns.
//! - [`tcp`]: the two-byte length framing for DNS over TCP (after a TC answer).
//!
//! No socket is bound and nothing is registered with an event loop here.

pub mod responder;
pub mod snapshot;
pub mod tcp;
pub mod udp;

pub use responder::{Responder, Transport, EDNS_UDP_SIZE, MAX_ANSWERS};
pub use snapshot::{Endpoint, Snapshot};
pub use tcp::{answer_frame, split_frame};
pub use udp::{serve_one, DatagramSocket, Served, RECV_BUFFER};
