//! The data the DNS responder answers from: a snapshot of the registry's services and
//! machines, built by the daemon from its local replica whenever they change.

use std::collections::HashMap;
use std::net::IpAddr;

/// One instance of a service: where it is reachable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub port: u16,
    pub machine: String,
    pub instance: String,
}

/// Services and machines by lowercase name (DNS names are case-insensitive).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    services: HashMap<String, Vec<Endpoint>>,
    machines: HashMap<String, IpAddr>,
    /// The SOA serial (the registry revision the snapshot was taken at, truncated).
    pub serial: u32,
}

impl Snapshot {
    pub fn new(serial: u32) -> Self {
        Snapshot {
            serial,
            ..Default::default()
        }
    }

    /// Adds an instance of `service` (kept in insertion order; the responder rotates them).
    pub fn add_endpoint(&mut self, service: &str, ep: Endpoint) {
        self.services
            .entry(service.to_ascii_lowercase())
            .or_default()
            .push(ep);
    }

    pub fn add_machine(&mut self, machine: &str, ip: IpAddr) {
        self.machines.insert(machine.to_ascii_lowercase(), ip);
    }

    /// The instances of a service (lowercase name); `None` when it has none.
    pub fn service(&self, name: &str) -> Option<&[Endpoint]> {
        self.services
            .get(name)
            .map(Vec::as_slice)
            .filter(|v| !v.is_empty())
    }

    pub fn machine(&self, name: &str) -> Option<IpAddr> {
        self.machines.get(name).copied()
    }
}
