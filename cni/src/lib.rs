//! berth-cni: a CNI 1.0 invoker, used by `berthd`'s agent and by `berth image run`.
//!
//! It runs the standard plugins (Debian's `containernetworking-plugins`: bridge,
//! host-local, portmap, loopback, firewall, tuning) the way libcni does, and keeps a record
//! of every attachment on disk so that every ADD gets a DEL, also after a crash.
//!
//! - [`config`]: `.conf`/`.conflist` parsing and validation, loading from a directory.
//! - [`result`]: ADD results, parsed and validated (0.3.0 to 1.0.0).
//! - [`plan`]: the `CNI_*` environment and each plugin's stdin (pure).
//! - [`exec`]: running one plugin binary with a timeout; errors carry its message.
//! - [`record`]: the attachment records.
//! - [`invoker`]: ADD/DEL/CHECK/VERSION over a chain, and [`Invoker::cleanup_leftovers`].
//! - [`netns`]: named network namespaces (a bind-mounted file), made without forking.
//!
//! Not implemented: CNI 1.1's GC and STATUS commands, and result conversion between
//! versions (plugins are asked for the network's own `cniVersion` and must answer in it).
//! This crate does not depend on the orchestrator or the image code.

pub mod config;
pub mod error;
pub mod exec;
pub mod invoker;
pub mod netns;
pub mod plan;
pub mod record;
pub mod result;

pub use config::{find_network, load_dir, NetworkConfigList, PluginConf};
pub use error::{Error, FailedOutput, PluginError};
pub use exec::{Invocation, PluginRunner, ProcessRunner};
pub use invoker::{CleanupReport, Invoker, InvokerConfig};
pub use plan::{Attachment, Command, PortMapping, RuntimeConfig};
pub use record::{AttachmentKey, Record, RecordStore};
pub use result::{CniResult, Dns, Interface, IpConfig, Route, VersionInfo};
