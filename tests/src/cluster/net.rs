//! The test network: one Linux bridge, one network namespace per node, each joined to the
//! bridge by a veth pair, plus the two ways to cut nodes off (link down, nftables drops).
//!
//! ```text
//!   netns btc<id>-0        netns btc<id>-1        netns btc<id>-2
//!   eth0 10.99.S.1         eth0 10.99.S.2         eth0 10.99.S.3
//!     |                      |                      |
//!   vh<id>0 ------------- bb<id> (bridge) ------- vh<id>2      (host namespace)
//! ```
//!
//! Nothing gets an address in the host namespace, so clusters of parallel tests never
//! collide even if their subnets were to match; names carry a per-process, per-cluster id.
//! Everything made here is removed in `Drop`, also when the test panics.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// The nftables table that `partition` installs inside a node's namespace.
const PARTITION_TABLE: &str = "berth_partition";

static NEXT_NET: AtomicU32 = AtomicU32::new(0);

/// A bridge and the namespaces attached to it.
pub struct Net {
    id: String,
    subnet: u8,
    bridge: Option<String>,
    slots: Vec<Slot>,
}

/// One namespace on the bridge.
#[derive(Clone, Debug)]
pub struct Slot {
    /// Network namespace name (`ip netns`).
    pub netns: String,
    /// The host side of the veth pair (the bridge port).
    pub host_veth: String,
    /// The address of `eth0` inside the namespace.
    pub ip: Ipv4Addr,
}

/// Runs `ip`/`nft` style commands and panics with their stderr on failure.
pub fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{program}`: {e}"));
    assert!(
        out.status.success(),
        "`{program} {}` failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Like [`run`] but only reports failure (used on teardown paths, which must go on).
fn run_quiet(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

impl Net {
    /// Creates the bridge (no namespaces yet). Needs root, `ip` (iproute2) and `nft` (nftables).
    pub fn create() -> Net {
        crate::require_root();
        crate::require_program("ip", "iproute2");
        crate::require_program("nft", "nftables");
        let n = NEXT_NET.fetch_add(1, Ordering::Relaxed);
        // 4 hex digits of the pid and 2 of a counter: short enough for 15-byte link names.
        let id = format!("{:04x}{:02x}", std::process::id() & 0xffff, n & 0xff);
        let subnet = u8::try_from((std::process::id().wrapping_add(n * 7)) % 200 + 20)
            .expect("value below 256");
        let mut net = Net {
            id,
            subnet,
            bridge: None,
            slots: Vec::new(),
        };
        let bridge = format!("bb{}", net.id);
        run("ip", &["link", "add", &bridge, "type", "bridge"]);
        net.bridge = Some(bridge.clone());
        run("ip", &["link", "set", &bridge, "up"]);
        net
    }

    /// The short id carried in every name this network makes.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Adds namespace number `slots.len()` with address 10.99.S.(k+1) and returns its index.
    pub fn add_slot(&mut self) -> usize {
        let k = self.slots.len();
        assert!(k < 100, "too many namespaces on one test bridge");
        let netns = format!("btc{}-{k}", self.id);
        let host_veth = format!("vh{}{k}", self.id);
        let peer = format!("vp{}{k}", self.id);
        let ip = Ipv4Addr::new(10, 99, self.subnet, u8::try_from(k + 1).expect("k < 100"));
        run("ip", &["netns", "add", &netns]);
        // Record the slot before anything else can fail, so Drop removes what exists.
        self.slots.push(Slot {
            netns: netns.clone(),
            host_veth: host_veth.clone(),
            ip,
        });
        run(
            "ip",
            &[
                "link", "add", &host_veth, "type", "veth", "peer", "name", &peer,
            ],
        );
        run("ip", &["link", "set", &peer, "netns", &netns]);
        let bridge = self.bridge.clone().expect("bridge exists while Net lives");
        run("ip", &["link", "set", &host_veth, "master", &bridge]);
        run("ip", &["link", "set", &host_veth, "up"]);
        run("ip", &["-n", &netns, "link", "set", &peer, "name", "eth0"]);
        let cidr = format!("{ip}/24");
        run("ip", &["-n", &netns, "addr", "add", &cidr, "dev", "eth0"]);
        run("ip", &["-n", &netns, "link", "set", "eth0", "up"]);
        run("ip", &["-n", &netns, "link", "set", "lo", "up"]);
        k
    }

    /// The namespace `k`.
    pub fn slot(&self, k: usize) -> &Slot {
        &self.slots[k]
    }

    /// Number of namespaces.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when no namespace was added yet.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Cuts namespace `k` off the bridge by setting its bridge port down.
    pub fn link_down(&self, k: usize) {
        run("ip", &["link", "set", &self.slots[k].host_veth, "down"]);
    }

    /// Undoes [`Net::link_down`].
    pub fn link_up(&self, k: usize) {
        run("ip", &["link", "set", &self.slots[k].host_veth, "up"]);
    }

    /// Splits the namespaces into `groups`: inside every listed namespace an nftables table
    /// drops all input from the addresses of every other group. Namespaces not listed in
    /// any group are left alone. Replaces any previous partition of the listed namespaces.
    pub fn partition(&self, groups: &[&[usize]]) {
        for (g, group) in groups.iter().enumerate() {
            let others: Vec<String> = groups
                .iter()
                .enumerate()
                .filter(|(h, _)| *h != g)
                .flat_map(|(_, other)| other.iter().map(|&k| self.slots[k].ip.to_string()))
                .collect();
            for &k in group.iter() {
                self.clear_partition(k);
                if others.is_empty() {
                    continue;
                }
                let rules = partition_ruleset(&others);
                self.nft_stdin(k, &rules);
            }
        }
    }

    /// Removes every partition rule from every namespace.
    pub fn heal(&self) {
        for k in 0..self.slots.len() {
            self.clear_partition(k);
        }
    }

    fn clear_partition(&self, k: usize) {
        let ns = &self.slots[k].netns;
        // Absent table is fine: this namespace was not partitioned.
        run_quiet(
            "ip",
            &[
                "netns",
                "exec",
                ns,
                "nft",
                "delete",
                "table",
                "inet",
                PARTITION_TABLE,
            ],
        );
    }

    fn nft_stdin(&self, k: usize, rules: &str) {
        let ns = &self.slots[k].netns;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, "nft", "-f", "-"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let out = crate::output_with_input(&mut cmd, rules.as_bytes())
            .unwrap_or_else(|e| panic!("cannot run nft -f in {ns}: {e}"));
        assert!(
            out.status.success(),
            "nft -f in {ns} failed: {}\n{rules}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }

    /// Runs `f` on a thread that has entered namespace `k`'s network namespace (sockets it
    /// opens live there), and returns its result.
    pub fn in_netns<T: Send>(&self, k: usize, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/var/run/netns/{}", self.slots[k].netns);
        std::thread::scope(|s| {
            s.spawn(|| {
                enter_netns(&path);
                f()
            })
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }
}

/// Moves the calling thread into the network namespace at `path` (`/var/run/netns/NAME`).
pub fn enter_netns(path: &str) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
        .unwrap_or_else(|e| panic!("setns({path}, CLONE_NEWNET): {e}"));
}

/// The nftables ruleset that drops input from `sources` (pure, so it is unit-tested).
pub fn partition_ruleset(sources: &[String]) -> String {
    format!(
        "table inet {PARTITION_TABLE} {{\n  chain input {{\n    type filter hook input priority -10; policy accept;\n    ip saddr {{ {} }} drop\n  }}\n}}\n",
        sources.join(", ")
    )
}

impl Drop for Net {
    fn drop(&mut self) {
        for slot in &self.slots {
            // Deleting the namespace destroys eth0 and with it the host side of the pair;
            // delete the host side explicitly too in case the peer never moved.
            run_quiet("ip", &["netns", "del", &slot.netns]);
            run_quiet("ip", &["link", "del", &slot.host_veth]);
        }
        if let Some(bridge) = &self.bridge {
            run_quiet("ip", &["link", "del", bridge]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_ruleset_drops_every_source() {
        let rules = partition_ruleset(&["10.99.1.2".into(), "10.99.1.3".into()]);
        assert!(
            rules.contains("ip saddr { 10.99.1.2, 10.99.1.3 } drop"),
            "{rules}"
        );
        assert!(rules.contains("hook input"), "{rules}");
    }
}
