//! seccomp: OCI profile -> one classic-BPF program -> installed before exec.
//!
//! - [`plan`](plan::plan): pure translation and validation of `linux.seccomp` for one
//!   ABI (names unknown there are skipped, as libseccomp does), for every ABI of the
//!   host the profile names ([`plan_all`](plan::plan_all));
//! - [`compile`](compile::compile): the plans as one BPF program (see its docs);
//! - [`compile_cached`]: both, memoised on disk by a hash of the profile, so a warm
//!   `create` reads a few KiB instead of compiling;
//! - [`install`]: the seccomp(2) calls, for init's last step before execve.
//!
//! Call [`compile_cached`] in the parent (`berth create`/`exec`) before forking and hand
//! the [`CompiledFilter`] to the child, which only calls [`install`].

pub mod arch;
pub mod cache;
pub mod compile;
pub mod eval;
pub mod install;
pub mod plan;
mod table_x32;
mod table_x86;
mod table_x86_64;

pub use arch::SyscallArch;
pub use cache::compile_cached;
pub use compile::{compile, CompiledFilter};
pub use install::install;
pub use plan::{plan, plan_all, Action, SeccompPlan};

use oci_spec::runtime::{Arch, LinuxSeccompAction};

/// Errors of the seccomp layer; each names the field or step and the value.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("unsupported seccomp setting: {what}")]
    Unsupported { what: String },
    #[error("invalid {field} {value:?}: {reason}")]
    Invalid {
        field: String,
        value: String,
        reason: &'static str,
    },
    #[error("compiling seccomp {what}: {reason}")]
    Compile { what: String, reason: String },
    #[error("installing seccomp filter #{index}: {source}")]
    Install {
        index: usize,
        source: std::io::Error,
    },
}

/// The actions Berth translates (for features.json); SCMP_ACT_NOTIFY is refused.
pub const SUPPORTED_ACTIONS: &[LinuxSeccompAction] = &[
    LinuxSeccompAction::ScmpActAllow,
    LinuxSeccompAction::ScmpActErrno,
    LinuxSeccompAction::ScmpActKill,
    LinuxSeccompAction::ScmpActKillThread,
    LinuxSeccompAction::ScmpActKillProcess,
    LinuxSeccompAction::ScmpActLog,
    LinuxSeccompAction::ScmpActTrace,
    LinuxSeccompAction::ScmpActTrap,
];

/// The argument operators Berth translates (all of the runtime-spec's).
pub const SUPPORTED_OPERATORS: &[&str] = &[
    "SCMP_CMP_NE",
    "SCMP_CMP_LT",
    "SCMP_CMP_LE",
    "SCMP_CMP_EQ",
    "SCMP_CMP_GE",
    "SCMP_CMP_GT",
    "SCMP_CMP_MASKED_EQ",
];

/// The seccomp filter flags Berth knows and passes to seccomp(2).
pub const SUPPORTED_FLAGS: &[&str] = &[
    "SECCOMP_FILTER_FLAG_TSYNC",
    "SECCOMP_FILTER_FLAG_LOG",
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
];

/// The architectures whose syscalls Berth filters by name: every ABI the host's kernel
/// runs (on x86_64: x86_64, x86 and x32). A call through an ABI the profile does not
/// list kills the process.
pub fn supported_archs() -> Vec<Arch> {
    SyscallArch::host_abis()
        .into_iter()
        .map(SyscallArch::oci)
        .collect()
}

/// The `linux.seccomp` section of features.json, from the tables above.
pub fn features() -> oci_spec::runtime::Seccomp {
    let mut f = oci_spec::runtime::Seccomp::default();
    f.set_enabled(Some(true));
    f.set_actions(Some(SUPPORTED_ACTIONS.to_vec()));
    f.set_operators(Some(
        SUPPORTED_OPERATORS.iter().map(|s| s.to_string()).collect(),
    ));
    f.set_archs(Some(supported_archs()));
    let flags: Vec<String> = SUPPORTED_FLAGS.iter().map(|s| s.to_string()).collect();
    f.set_known_flags(Some(flags.clone()));
    f.set_supported_flags(Some(flags));
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every operator and action claimed in features is accepted by the translation.
    #[test]
    fn features_tables_agree_with_translation() {
        let arch = SyscallArch::X86_64;
        for op in SUPPORTED_OPERATORS {
            let json = format!(
                r#"{{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{{"names":["read"],"action":"SCMP_ACT_ERRNO","args":[{{"index":0,"value":1,"valueTwo":1,"op":"{op}"}}]}}]}}"#
            );
            let p: oci_spec::runtime::LinuxSeccomp = serde_json::from_str(&json).unwrap();
            compile(&[plan(&p, arch).unwrap()]).unwrap();
        }
        for a in SUPPORTED_ACTIONS {
            let json = serde_json::json!({"defaultAction": "SCMP_ACT_KILL_PROCESS", "syscalls": [{"names": ["read"], "action": a}]});
            let p: oci_spec::runtime::LinuxSeccomp = serde_json::from_value(json).unwrap();
            compile(&[plan(&p, arch).unwrap()]).unwrap();
        }
        for f in SUPPORTED_FLAGS {
            let json = serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "flags": [f]});
            let p: oci_spec::runtime::LinuxSeccomp = serde_json::from_value(json).unwrap();
            assert_ne!(plan(&p, arch).unwrap().flags, 0);
        }
        assert_eq!(
            supported_archs(),
            vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
        );
        let j = serde_json::to_value(features()).unwrap();
        assert_eq!(j["enabled"], true);
        assert_eq!(j["operators"].as_array().unwrap().len(), 7);
        assert!(!j["actions"]
            .as_array()
            .unwrap()
            .contains(&"SCMP_ACT_NOTIFY".into()));
        assert_eq!(j["archs"][0], "SCMP_ARCH_X86_64");
    }
}
