//! OCI seccomp profile -> a plan: for every action, which syscalls (by number) and under
//! which argument conditions it applies. Pure; no BPF yet.
//!
//! Semantics follow libseccomp as runc drives it:
//! - a syscall name unknown on the architecture is skipped;
//! - an entry whose action (and errno) equals the default action is a no-op and skipped;
//! - each entry with N args is one rule whose N conditions are ANDed, except when two of
//!   its args name the same index: then (as runc does, since libseccomp refuses two
//!   comparisons on one argument) every arg becomes a rule of its own and they are ORed;
//! - several rules for one syscall and action are ORed; an entry without args matches
//!   the syscall unconditionally and makes its other rules for that action redundant;
//! - ERRNO and TRACE without errnoRet return EPERM; defaultErrnoRet sets the default's.

use std::collections::BTreeMap;

use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};

use super::arch::SyscallArch;
use super::SeccompError;

/// What the kernel does when a rule matches (the OCI actions Berth supports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    KillProcess,
    KillThread,
    Trap,
    Errno(u32),
    Trace(u32),
    Log,
    Allow,
}

/// A comparison of one syscall argument (64-bit, as libseccomp compares on 64-bit ABIs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    Ne,
    Lt,
    Le,
    Eq,
    Ge,
    Gt,
    /// `(arg & mask) == value`
    MaskedEq {
        mask: u64,
    },
}

/// One argument condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cond {
    pub index: u8,
    pub op: Op,
    pub value: u64,
}

/// When a syscall matches for one action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// Whatever the arguments.
    Always,
    /// When any of these rules matches; a rule matches when all its conditions hold.
    AnyOf(Vec<Vec<Cond>>),
}

/// The seccomp flags Berth passes to seccomp(2) (bit values of SECCOMP_FILTER_FLAG_*).
pub const FLAG_TSYNC: u32 = 1;
pub const FLAG_LOG: u32 = 2;
pub const FLAG_SPEC_ALLOW: u32 = 4;

/// A validated, translated profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeccompPlan {
    pub arch: SyscallArch,
    pub default_action: Action,
    /// Bitwise OR of the FLAG_* values.
    pub flags: u32,
    /// action -> syscall number -> when it applies. Never holds `default_action`.
    pub rules: BTreeMap<Action, BTreeMap<u32, Match>>,
    /// Syscall names the profile gives that `arch` does not have (skipped).
    pub skipped: Vec<String>,
}

const EPERM: u32 = 1;

fn action(a: LinuxSeccompAction, errno: Option<u32>, field: &str) -> Result<Action, SeccompError> {
    Ok(match a {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            Action::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => Action::KillProcess,
        LinuxSeccompAction::ScmpActTrap => Action::Trap,
        LinuxSeccompAction::ScmpActErrno => Action::Errno(errno.unwrap_or(EPERM)),
        LinuxSeccompAction::ScmpActTrace => Action::Trace(errno.unwrap_or(EPERM)),
        LinuxSeccompAction::ScmpActLog => Action::Log,
        LinuxSeccompAction::ScmpActAllow => Action::Allow,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(SeccompError::Unsupported {
                what: format!("{field} SCMP_ACT_NOTIFY (seccomp user notification)"),
            })
        }
    })
}

fn cond(arg: &LinuxSeccompArg, field: &str) -> Result<Cond, SeccompError> {
    let index = u8::try_from(arg.index())
        .ok()
        .filter(|i| *i <= 5)
        .ok_or_else(|| SeccompError::Invalid {
            field: format!("{field}.index"),
            value: arg.index().to_string(),
            reason: "a syscall has arguments 0 to 5",
        })?;
    let (op, value) = match arg.op() {
        LinuxSeccompOperator::ScmpCmpNe => (Op::Ne, arg.value()),
        LinuxSeccompOperator::ScmpCmpLt => (Op::Lt, arg.value()),
        LinuxSeccompOperator::ScmpCmpLe => (Op::Le, arg.value()),
        LinuxSeccompOperator::ScmpCmpEq => (Op::Eq, arg.value()),
        LinuxSeccompOperator::ScmpCmpGe => (Op::Ge, arg.value()),
        LinuxSeccompOperator::ScmpCmpGt => (Op::Gt, arg.value()),
        // OCI (like libseccomp): value is the mask, valueTwo the datum compared with.
        LinuxSeccompOperator::ScmpCmpMaskedEq => (
            Op::MaskedEq { mask: arg.value() },
            arg.value_two().unwrap_or(0),
        ),
    };
    Ok(Cond { index, op, value })
}

/// The ABIs a profile is translated for: the host's native one always (libseccomp adds
/// it too), then each one `architectures` lists that the host's kernel runs and Berth
/// has a table for. Others listed are for other machines and ignored.
pub fn abis(profile: &LinuxSeccomp) -> Vec<SyscallArch> {
    let host = SyscallArch::host_abis();
    let mut out: Vec<SyscallArch> = host.first().copied().into_iter().collect();
    for a in profile.architectures().iter().flatten() {
        if let Some(abi) = SyscallArch::from_oci(a) {
            if host.contains(&abi) && !out.contains(&abi) {
                out.push(abi);
            }
        }
    }
    out
}

/// Translates the profile for every ABI of [`abis`].
pub fn plan_all(profile: &LinuxSeccomp) -> Result<Vec<SeccompPlan>, SeccompError> {
    let abis = abis(profile);
    if abis.is_empty() {
        return Err(SeccompError::Unsupported {
            what: format!(
                "seccomp on architecture {} (no syscall table)",
                std::env::consts::ARCH
            ),
        });
    }
    abis.into_iter().map(|a| plan(profile, a)).collect()
}

/// Translates the profile for `arch`. Errors name the offending field and value.
pub fn plan(profile: &LinuxSeccomp, arch: SyscallArch) -> Result<SeccompPlan, SeccompError> {
    if let Some(p) = profile.listener_path() {
        return Err(SeccompError::Unsupported {
            what: format!(
                "linux.seccomp.listenerPath {} (seccomp user notification)",
                p.display()
            ),
        });
    }
    let default_action = action(
        profile.default_action(),
        profile.default_errno_ret(),
        "linux.seccomp.defaultAction",
    )?;
    let mut flags = 0;
    for f in profile.flags().iter().flatten() {
        flags |= match f {
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => FLAG_TSYNC,
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => FLAG_SPEC_ALLOW,
        };
    }
    let mut rules: BTreeMap<Action, BTreeMap<u32, Match>> = BTreeMap::new();
    let mut skipped = Vec::new();
    for (i, entry) in profile.syscalls().iter().flatten().enumerate() {
        let field = format!("linux.seccomp.syscalls[{i}]");
        let act = action(
            entry.action(),
            entry.errno_ret(),
            &format!("{field}.action"),
        )?;
        let mut conds = Vec::new();
        for (j, a) in entry.args().iter().flatten().enumerate() {
            conds.push(cond(a, &format!("{field}.args[{j}]"))?);
        }
        if entry.names().is_empty() {
            return Err(SeccompError::Invalid {
                field: format!("{field}.names"),
                value: "[]".into(),
                reason: "an entry must name at least one syscall",
            });
        }
        if act == default_action {
            continue;
        }
        let mut indexes: Vec<u8> = conds.iter().map(|c| c.index).collect();
        indexes.sort_unstable();
        let repeated = indexes.windows(2).any(|w| w[0] == w[1]);
        let new_rules: Vec<Vec<Cond>> = if repeated {
            conds.iter().map(|c| vec![*c]).collect()
        } else {
            vec![conds]
        };
        for name in entry.names() {
            let Some(nr) = arch.syscall_nr(name) else {
                if !skipped.contains(name) {
                    skipped.push(name.clone());
                }
                continue;
            };
            let per_action = rules.entry(act).or_default();
            let m = per_action.entry(nr).or_insert(Match::AnyOf(Vec::new()));
            if let Match::AnyOf(existing) = m {
                if new_rules.iter().any(Vec::is_empty) {
                    *m = Match::Always;
                } else {
                    for r in &new_rules {
                        if !existing.contains(r) {
                            existing.push(r.clone());
                        }
                    }
                }
            }
        }
    }
    Ok(SeccompPlan {
        arch,
        default_action,
        flags,
        rules,
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(json: &str) -> LinuxSeccomp {
        serde_json::from_str(json).unwrap()
    }

    const X: SyscallArch = SyscallArch::X86_64;

    #[test]
    fn every_operator_translates() {
        let ops = [
            ("SCMP_CMP_NE", Op::Ne),
            ("SCMP_CMP_LT", Op::Lt),
            ("SCMP_CMP_LE", Op::Le),
            ("SCMP_CMP_EQ", Op::Eq),
            ("SCMP_CMP_GE", Op::Ge),
            ("SCMP_CMP_GT", Op::Gt),
        ];
        for (name, op) in ops {
            let p = plan(
                &profile(&format!(
                    r#"{{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{{"names":["mkdir"],
                    "action":"SCMP_ACT_ERRNO","errnoRet":13,
                    "args":[{{"index":1,"value":448,"op":"{name}"}}]}}]}}"#
                )),
                X,
            )
            .unwrap();
            let want = Match::AnyOf(vec![vec![Cond {
                index: 1,
                op,
                value: 448,
            }]]);
            assert_eq!(p.rules[&Action::Errno(13)][&83], want, "{name}");
        }
        let p = plan(
            &profile(
                r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["clone"],
                "action":"SCMP_ACT_ALLOW",
                "args":[{"index":0,"value":2114060288,"valueTwo":0,"op":"SCMP_CMP_MASKED_EQ"}]}]}"#,
            ),
            X,
        )
        .unwrap();
        assert_eq!(
            p.rules[&Action::Allow][&56],
            Match::AnyOf(vec![vec![Cond {
                index: 0,
                op: Op::MaskedEq { mask: 2114060288 },
                value: 0
            }]])
        );
        assert_eq!(p.default_action, Action::Errno(1));
    }

    #[test]
    fn args_are_anded_and_entries_ored() {
        let p = plan(
            &profile(
                r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":38,"syscalls":[
                {"names":["personality"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":0,"op":"SCMP_CMP_EQ"}]},
                {"names":["personality"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":8,"op":"SCMP_CMP_EQ"}]},
                {"names":["socket"],"action":"SCMP_ACT_ALLOW","args":[
                  {"index":0,"value":1,"op":"SCMP_CMP_EQ"},{"index":1,"value":2,"op":"SCMP_CMP_EQ"}]}]}"#,
            ),
            X,
        )
        .unwrap();
        assert_eq!(p.default_action, Action::Errno(38));
        let allow = &p.rules[&Action::Allow];
        let eq = |index, value| Cond {
            index,
            op: Op::Eq,
            value,
        };
        assert_eq!(
            allow[&135],
            Match::AnyOf(vec![vec![eq(0, 0)], vec![eq(0, 8)]])
        );
        assert_eq!(allow[&41], Match::AnyOf(vec![vec![eq(0, 1), eq(1, 2)]]));
    }

    #[test]
    fn repeated_index_splits_into_ored_rules() {
        let p = plan(
            &profile(
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["kill"],
                "action":"SCMP_ACT_ERRNO","args":[
                  {"index":1,"value":9,"op":"SCMP_CMP_EQ"},{"index":1,"value":15,"op":"SCMP_CMP_EQ"}]}]}"#,
            ),
            X,
        )
        .unwrap();
        let eq = |value| Cond {
            index: 1,
            op: Op::Eq,
            value,
        };
        assert_eq!(
            p.rules[&Action::Errno(1)][&62],
            Match::AnyOf(vec![vec![eq(9)], vec![eq(15)]])
        );
    }

    #[test]
    fn unconditional_entry_wins() {
        let p = plan(
            &profile(
                r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[
                {"names":["read"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":3,"op":"SCMP_CMP_EQ"}]},
                {"names":["read"],"action":"SCMP_ACT_ALLOW"},
                {"names":["read"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":4,"op":"SCMP_CMP_EQ"}]}]}"#,
            ),
            X,
        )
        .unwrap();
        assert_eq!(p.rules[&Action::Allow][&0], Match::Always);
    }

    #[test]
    fn unknown_syscall_skipped_and_default_duplicates_dropped() {
        let p = plan(
            &profile(
                r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[
                {"names":["chown32","read","no_such_call"],"action":"SCMP_ACT_ALLOW"},
                {"names":["write"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]}"#,
            ),
            X,
        )
        .unwrap();
        assert_eq!(
            p.skipped,
            vec!["chown32".to_string(), "no_such_call".to_string()]
        );
        assert_eq!(p.rules.len(), 1);
        assert_eq!(
            p.rules[&Action::Allow].keys().copied().collect::<Vec<_>>(),
            vec![0]
        );
    }

    #[test]
    fn actions_and_flags() {
        let p = plan(
            &profile(
                r#"{"defaultAction":"SCMP_ACT_KILL","flags":["SECCOMP_FILTER_FLAG_LOG","SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
                "syscalls":[
                {"names":["read"],"action":"SCMP_ACT_TRAP"},
                {"names":["write"],"action":"SCMP_ACT_TRACE"},
                {"names":["open"],"action":"SCMP_ACT_LOG"},
                {"names":["close"],"action":"SCMP_ACT_KILL_PROCESS"},
                {"names":["exit"],"action":"SCMP_ACT_KILL_THREAD"}]}"#,
            ),
            X,
        )
        .unwrap();
        assert_eq!(p.default_action, Action::KillThread);
        assert_eq!(p.flags, FLAG_LOG | FLAG_SPEC_ALLOW);
        let keys: Vec<Action> = p.rules.keys().copied().collect();
        assert_eq!(
            keys,
            vec![
                Action::KillProcess,
                Action::Trap,
                Action::Trace(1),
                Action::Log
            ]
        );
    }

    #[test]
    fn notify_and_listener_refused_with_names() {
        let e = plan(
            &profile(
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
                {"names":["mkdir"],"action":"SCMP_ACT_NOTIFY"}]}"#,
            ),
            X,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("syscalls[0].action") && e.contains("SCMP_ACT_NOTIFY"),
            "{e}"
        );
        let e = plan(
            &profile(r#"{"defaultAction":"SCMP_ACT_ALLOW","listenerPath":"/run/x.sock"}"#),
            X,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("listenerPath") && e.contains("/run/x.sock"),
            "{e}"
        );
        let e = plan(&profile(r#"{"defaultAction":"SCMP_ACT_NOTIFY"}"#), X)
            .unwrap_err()
            .to_string();
        assert!(e.contains("defaultAction"), "{e}");
    }

    #[test]
    fn bad_arg_index_and_empty_names() {
        let e = plan(
            &profile(
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
                {"names":["mkdir"],"action":"SCMP_ACT_ERRNO","args":[{"index":6,"value":0,"op":"SCMP_CMP_EQ"}]}]}"#,
            ),
            X,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("syscalls[0].args[0].index") && e.contains('6'),
            "{e}"
        );
        let e = plan(
            &profile(
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":[],"action":"SCMP_ACT_ERRNO"}]}"#,
            ),
            X,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("syscalls[0].names"), "{e}");
    }

    #[test]
    fn unknown_flag_and_action_rejected_when_parsed() {
        let r: Result<LinuxSeccomp, _> = serde_json::from_str(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","flags":["SECCOMP_FILTER_FLAG_BOGUS"]}"#,
        );
        assert!(r
            .unwrap_err()
            .to_string()
            .contains("SECCOMP_FILTER_FLAG_BOGUS"));
        let r: Result<LinuxSeccomp, _> =
            serde_json::from_str(r#"{"defaultAction":"SCMP_ACT_NOPE"}"#);
        assert!(r.unwrap_err().to_string().contains("SCMP_ACT_NOPE"));
    }
}
