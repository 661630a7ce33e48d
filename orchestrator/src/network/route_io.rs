//! Applying host-gw routes to the kernel, through iproute2's `ip` command.
//!
//! Why `ip` and not netlink from Rust: `rtnetlink` needs an async runtime (berthd has
//! none by design), and the synchronous `netlink-packet-route` + `netlink-sys` pair would
//! bring a few thousand lines of dependencies whose API changes between minor versions, for
//! three operations (list, replace, delete) done only when the membership changes. `ip`
//! (iproute2, on every host and already a test dependency) is the reference client of the
//! same netlink calls, reports the kernel's errors in words, and prints JSON (`-j`) that
//! is parsed here with serde. Each call is a short child process: run them off the event
//! loop (a worker thread), like the CNI plugins.
//!
//! Only routes carrying [`ROUTE_PROTOCOL`] are listed, replaced or deleted.

use std::net::Ipv4Addr;
use std::process::Command;

use ipnet::Ipv4Net;
use serde::Deserialize;

use super::routes::{diff_routes, HostRoute, RouteDiff, ROUTE_PROTOCOL};

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("{command}: {reason}")]
    Command { command: String, reason: String },
    #[error("{command}: unexpected output: {reason}")]
    Output { command: String, reason: String },
}

/// The main routing table of one network namespace (the host's by default).
#[derive(Debug, Clone)]
pub struct RouteTable {
    /// `ip -n NAME` (a namespace under /run/netns); `None`: the caller's namespace.
    pub netns: Option<String>,
    pub protocol: u8,
}

impl Default for RouteTable {
    fn default() -> Self {
        RouteTable {
            netns: None,
            protocol: ROUTE_PROTOCOL,
        }
    }
}

impl RouteTable {
    /// The routes of this table that carry our protocol number.
    pub fn list(&self) -> Result<Vec<HostRoute>, RouteError> {
        let proto = self.protocol.to_string();
        let out = self.ip(&[
            "-4", "-j", "route", "show", "table", "main", "proto", &proto,
        ])?;
        parse_routes(&out).map_err(|reason| RouteError::Output {
            command: self.describe(&["route", "show"]),
            reason,
        })
    }

    /// Removes, then adds (`ip route replace`, so an add is idempotent). Every change is
    /// tried; the errors of those that failed are returned.
    pub fn apply(&self, diff: &RouteDiff) -> Result<(), Vec<RouteError>> {
        let proto = self.protocol.to_string();
        let mut errors = Vec::new();
        for r in &diff.remove {
            let (dst, via) = (r.dst.to_string(), r.via.to_string());
            match self.ip(&["route", "del", &dst, "via", &via, "proto", &proto]) {
                Ok(_) => {}
                // already gone (the link went down, or someone removed it)
                Err(RouteError::Command { reason, .. }) if reason.contains("No such process") => {}
                Err(e) => errors.push(e),
            }
        }
        for r in &diff.add {
            let (dst, via) = (r.dst.to_string(), r.via.to_string());
            if let Err(e) = self.ip(&["route", "replace", &dst, "via", &via, "proto", &proto]) {
                errors.push(e);
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Brings the table to `desired`; returns what was changed (or tried).
    pub fn sync(&self, desired: &[HostRoute]) -> Result<RouteDiff, Vec<RouteError>> {
        let current = self.list().map_err(|e| vec![e])?;
        let diff = diff_routes(&current, desired);
        self.apply(&diff)?;
        Ok(diff)
    }

    fn describe(&self, args: &[&str]) -> String {
        match &self.netns {
            Some(ns) => format!("ip -n {ns} {}", args.join(" ")),
            None => format!("ip {}", args.join(" ")),
        }
    }

    fn ip(&self, args: &[&str]) -> Result<Vec<u8>, RouteError> {
        let mut cmd = Command::new("ip");
        if let Some(ns) = &self.netns {
            cmd.args(["-n", ns]);
        }
        let out = cmd.args(args).output().map_err(|e| RouteError::Command {
            command: self.describe(args),
            reason: format!("cannot run ip (install iproute2): {e}"),
        })?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            let text = String::from_utf8_lossy(&out.stderr);
            Err(RouteError::Command {
                command: self.describe(args),
                reason: format!("{}: {}", out.status, berth_cni::error::clean(&text, 512)),
            })
        }
    }
}

#[derive(Deserialize)]
struct IpRoute {
    dst: String,
    #[serde(default)]
    gateway: Option<String>,
}

/// Parses `ip -j route show` output; routes without a gateway (not host-gw's) are skipped.
pub fn parse_routes(json: &[u8]) -> Result<Vec<HostRoute>, String> {
    if json.iter().all(u8::is_ascii_whitespace) {
        return Ok(vec![]);
    }
    let routes: Vec<IpRoute> = serde_json::from_slice(json).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for r in routes {
        let Some(gw) = r.gateway else { continue };
        // `ip` prints a host route without its /32
        let dst: Ipv4Net = match r.dst.parse() {
            Ok(n) => n,
            Err(_) => match r.dst.parse::<Ipv4Addr>() {
                Ok(a) => Ipv4Net::from(a),
                Err(_) => {
                    return Err(format!(
                        "route dst {:?}",
                        berth_cni::error::clean(&r.dst, 60)
                    ))
                }
            },
        };
        let via: Ipv4Addr = gw
            .parse()
            .map_err(|_| format!("route gateway {:?}", berth_cni::error::clean(&gw, 60)))?;
        out.push(HostRoute { dst, via });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ip_json_output() {
        let json = br#"[{"dst":"10.88.2.0/24","gateway":"192.168.5.2","dev":"eth0","protocol":"152","flags":[]},
                        {"dst":"10.88.9.9","gateway":"192.168.5.9","dev":"eth0","flags":[]},
                        {"dst":"10.1.0.0/16","dev":"eth1","scope":"link","flags":[]}]"#;
        let r = parse_routes(json).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].dst.to_string(), "10.88.2.0/24");
        assert_eq!(r[0].via.to_string(), "192.168.5.2");
        assert_eq!(r[1].dst.to_string(), "10.88.9.9/32");
        assert!(parse_routes(b"\n").unwrap().is_empty());
        assert!(parse_routes(b"[]").unwrap().is_empty());
        assert!(parse_routes(br#"[{"dst":"default","gateway":"1.2.3.4"}]"#)
            .unwrap_err()
            .contains("default"));
        assert!(parse_routes(b"{").is_err());
    }
}
