//! The cluster network (issue 14), flannel's host-gw design: every machine gets a subnet of
//! the cluster range, runs its containers on a bridge in that subnet (through CNI), and
//! routes every other machine's subnet via that machine's address.
//!
//! - [`subnet`]: allocation of the per-machine subnets (pure; the leader's writes).
//! - [`conflist`]: the node's bridge + host-local + portmap + firewall + loopback config.
//! - [`routes`]: the host routes a node should have and the diff to get there (pure).
//! - [`route_io`]: applying that diff with `ip route` (the only IO here).
//! - [`node`]: which machines get subnets, and a node's own subnet and routes (pure).
//! - [`replan`]: when a node applies its plan again (pure).
//! - [`config`]: berthd's network flags and `[network]` table.
//!
//! No socket or event-loop code: the daemon calls these from its loop (pure parts) and
//! from a worker thread (route changes, CNI).

pub mod apply;
pub mod config;
pub mod conflist;
pub mod node;
pub mod replan;
pub mod route_io;
pub mod routes;
pub mod subnet;

pub use config::{NetworkConfig, CLUSTER_NETWORK};
pub use conflist::{node_conflist, NodeNetwork};
pub use node::{node_plan, subnet_members, NodePlan};
pub use route_io::{RouteError, RouteTable};
pub use routes::{desired_routes, diff_routes, HostRoute, Peer, RouteDiff, ROUTE_PROTOCOL};
pub use subnet::{
    parse_allocations, plan_subnets, Allocated, SubnetConfig, SubnetPlan, SubnetWrite,
    SUBNET_PREFIX,
};
