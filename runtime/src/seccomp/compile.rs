//! A [`SeccompPlan`] -> BPF programs, through seccompiler.
//!
//! seccompiler builds a filter with one match action and one mismatch action; an OCI
//! profile has many actions. The kernel runs every installed filter and keeps the
//! action of highest precedence (KILL_PROCESS > KILL_THREAD > TRAP > ERRNO > TRACE >
//! LOG > ALLOW), so a profile becomes several filters:
//! - the *default* filter (absent when the default is ALLOW): every syscall that some
//!   rule names, under that rule's conditions, is ALLOWed; all else gets the default;
//! - one filter per other non-ALLOW action: its rules match that action, all else ALLOW;
//! - on x86_64 a guard filter killing x32-ABI calls (numbers with bit 30 set), which
//!   would otherwise slip past rules written for the native numbers.
//!
//! A syscall named by a rule thus gets the rule's action (which takes precedence over
//! the ALLOW of the default filter); an unnamed one gets the default. When one call
//! matches rules of two different actions, the stronger wins (libseccomp refuses such
//! profiles; runc would fail on them). Calls through a non-native ABI (i386 int 0x80)
//! fail the filters' architecture check and kill the process.

use std::collections::BTreeMap;

use seccompiler::{
    sock_filter, BpfProgram, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

use super::arch::SyscallArch;
use super::plan::{Action, Cond, Match, Op, SeccompPlan};
use super::SeccompError;

/// The compiled profile: the programs to install, in order, and the seccomp(2) flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledFilter {
    pub flags: u32,
    pub programs: Vec<BpfProgram>,
}

fn condition(c: &Cond) -> Result<SeccompCondition, SeccompError> {
    let op = match c.op {
        Op::Ne => SeccompCmpOp::Ne,
        Op::Lt => SeccompCmpOp::Lt,
        Op::Le => SeccompCmpOp::Le,
        Op::Eq => SeccompCmpOp::Eq,
        Op::Ge => SeccompCmpOp::Ge,
        Op::Gt => SeccompCmpOp::Gt,
        Op::MaskedEq { mask } => SeccompCmpOp::MaskedEq(mask),
    };
    SeccompCondition::new(c.index, SeccompCmpArgLen::Qword, op, c.value).map_err(|e| {
        SeccompError::Compile {
            what: format!("argument {} condition", c.index),
            reason: e.to_string(),
        }
    })
}

fn rules_of(m: &Match) -> Result<Vec<SeccompRule>, SeccompError> {
    match m {
        Match::Always => Ok(Vec::new()),
        Match::AnyOf(rules) => rules
            .iter()
            .map(|conds| {
                let cs = conds.iter().map(condition).collect::<Result<Vec<_>, _>>()?;
                SeccompRule::new(cs).map_err(|e| SeccompError::Compile {
                    what: "rule".into(),
                    reason: e.to_string(),
                })
            })
            .collect(),
    }
}

fn build(
    rules: &BTreeMap<u32, Match>,
    matched: Action,
    otherwise: Action,
    arch: SyscallArch,
) -> Result<BpfProgram, SeccompError> {
    let mut map = BTreeMap::new();
    for (nr, m) in rules {
        map.insert(i64::from(*nr), rules_of(m)?);
    }
    let filter = SeccompFilter::new(
        map,
        otherwise.to_seccompiler(),
        matched.to_seccompiler(),
        arch.target(),
    )
    .map_err(|e| SeccompError::Compile {
        what: format!("filter for {matched:?}"),
        reason: e.to_string(),
    })?;
    BpfProgram::try_from(filter).map_err(|e| SeccompError::Compile {
        what: format!("filter for {matched:?}"),
        reason: e.to_string(),
    })
}

/// Merges the per-syscall matches of several actions (for the default filter).
fn union(into: &mut BTreeMap<u32, Match>, from: &BTreeMap<u32, Match>) {
    for (nr, m) in from {
        let slot = into.entry(*nr).or_insert(Match::AnyOf(Vec::new()));
        match (slot as &mut Match, m) {
            (Match::Always, _) => {}
            (s, Match::Always) => *s = Match::Always,
            (Match::AnyOf(a), Match::AnyOf(b)) => {
                for r in b {
                    if !a.contains(r) {
                        a.push(r.clone());
                    }
                }
            }
        }
    }
}

const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;

/// x86_64 only: kill the process on x32-ABI syscalls (nr >= 0x40000000).
fn x32_guard() -> BpfProgram {
    let ld_w_abs = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    let jeq = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    let jge = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
    let ret = (libc::BPF_RET | libc::BPF_K) as u16;
    let ins = |code, jt, jf, k| sock_filter { code, jt, jf, k };
    vec![
        // seccomp_data.arch is at offset 4, .nr at offset 0.
        ins(ld_w_abs, 0, 0, 4),
        ins(jeq, 0, 3, AUDIT_ARCH_X86_64),
        ins(ld_w_abs, 0, 0, 0),
        ins(jge, 0, 1, X32_SYSCALL_BIT),
        ins(ret, 0, 0, libc::SECCOMP_RET_KILL_PROCESS),
        ins(ret, 0, 0, libc::SECCOMP_RET_ALLOW),
    ]
}

/// Compiles the plan into the filters to install (see the module docs for the scheme).
pub fn compile(plan: &SeccompPlan) -> Result<CompiledFilter, SeccompError> {
    let mut programs = Vec::new();
    if plan.arch == SyscallArch::X86_64 {
        programs.push(x32_guard());
    }
    if plan.default_action != Action::Allow {
        let mut all = BTreeMap::new();
        for rules in plan.rules.values() {
            union(&mut all, rules);
        }
        programs.push(build(&all, Action::Allow, plan.default_action, plan.arch)?);
    }
    for (act, rules) in &plan.rules {
        if *act == Action::Allow || *act == plan.default_action {
            continue;
        }
        programs.push(build(rules, *act, Action::Allow, plan.arch)?);
    }
    Ok(CompiledFilter {
        flags: plan.flags,
        programs,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::seccomp::plan::plan;

    /// A tiny classic-BPF interpreter for seccomp programs, enough to evaluate what
    /// the kernel would return for a syscall: proves the translation, not just its shape.
    pub(crate) fn run(prog: &[sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let mut data = Vec::new();
        data.extend_from_slice(&nr.to_ne_bytes());
        data.extend_from_slice(&arch.to_ne_bytes());
        data.extend_from_slice(&0u64.to_ne_bytes());
        for a in args {
            data.extend_from_slice(&a.to_ne_bytes());
        }
        let (mut acc, mut pc) = (0u32, 0usize);
        loop {
            let i = &prog[pc];
            let class = u32::from(i.code) & 0x07;
            let op = u32::from(i.code) & 0xf0;
            match class {
                0x00 => {
                    let k = i.k as usize;
                    acc = u32::from_ne_bytes(data[k..k + 4].try_into().unwrap());
                }
                0x04 => {
                    acc = match op {
                        0x50 => acc & i.k,
                        0x40 => acc | i.k,
                        0x00 => acc.wrapping_add(i.k),
                        0x10 => acc.wrapping_sub(i.k),
                        _ => panic!("alu op {op:#x}"),
                    }
                }
                0x05 => {
                    let taken = match op {
                        0x00 => {
                            pc += 1 + i.k as usize;
                            continue;
                        }
                        0x10 => acc == i.k,
                        0x20 => acc > i.k,
                        0x30 => acc >= i.k,
                        0x40 => acc & i.k != 0,
                        _ => panic!("jmp op {op:#x}"),
                    };
                    pc += 1 + usize::from(if taken { i.jt } else { i.jf });
                    continue;
                }
                0x06 => return i.k,
                _ => panic!("class {class:#x}"),
            }
            pc += 1;
        }
    }

    /// What the kernel returns with all programs installed: the highest-precedence result.
    pub(crate) fn eval(f: &CompiledFilter, nr: u32, args: [u64; 6]) -> u32 {
        let prec = |r: u32| match r & 0xffff_0000 {
            0x8000_0000 => 0,
            0x0000_0000 => 1,
            0x0003_0000 => 2,
            0x0005_0000 => 3,
            0x7ff0_0000 => 5,
            0x7ffc_0000 => 6,
            0x7fff_0000 => 7,
            _ => 4,
        };
        f.programs
            .iter()
            .map(|p| run(p, AUDIT_ARCH_X86_64, nr, args))
            .min_by_key(|r| prec(*r))
            .unwrap()
    }

    fn compiled(json: &str) -> CompiledFilter {
        let p: oci_spec::runtime::LinuxSeccomp = serde_json::from_str(json).unwrap();
        compile(&plan(&p, SyscallArch::X86_64).unwrap()).unwrap()
    }

    const ALLOW: u32 = 0x7fff_0000;
    fn errno(e: u32) -> u32 {
        0x0005_0000 | e
    }

    #[test]
    fn operators_behave_in_bpf() {
        let cases: [(&str, u64, u64, bool); 14] = [
            ("SCMP_CMP_NE", 5, 5, false),
            ("SCMP_CMP_NE", 5, 6, true),
            ("SCMP_CMP_LT", 5, 4, true),
            ("SCMP_CMP_LT", 5, 5, false),
            ("SCMP_CMP_LE", 5, 5, true),
            ("SCMP_CMP_LE", 5, 6, false),
            ("SCMP_CMP_EQ", 1 << 40, 1 << 40, true),
            ("SCMP_CMP_EQ", 1 << 40, 0, false),
            ("SCMP_CMP_GE", 5, 5, true),
            ("SCMP_CMP_GE", 5, 4, false),
            ("SCMP_CMP_GT", 5, 6, true),
            ("SCMP_CMP_GT", 5, 5, false),
            ("SCMP_CMP_GT", 5, 1 << 33, true),
            ("SCMP_CMP_LT", 1 << 33, 5, true),
        ];
        for (op, value, arg, hit) in cases {
            let f = compiled(&format!(
                r#"{{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{{"names":["mkdir"],
                "action":"SCMP_ACT_ERRNO","errnoRet":13,"args":[{{"index":1,"value":{value},"op":"{op}"}}]}}]}}"#
            ));
            let got = eval(&f, 83, [0, arg, 0, 0, 0, 0]);
            assert_eq!(
                got,
                if hit { errno(13) } else { ALLOW },
                "{op} {value} vs {arg}"
            );
        }
        let f = compiled(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["clone"],"action":"SCMP_ACT_ALLOW",
            "args":[{"index":0,"value":2114060288,"valueTwo":0,"op":"SCMP_CMP_MASKED_EQ"}]}]}"#,
        );
        assert_eq!(eval(&f, 56, [0x11, 0, 0, 0, 0, 0]), ALLOW);
        assert_eq!(eval(&f, 56, [0x1000_0000 | 0x11, 0, 0, 0, 0, 0]), errno(1));
    }

    #[test]
    fn several_actions_and_default() {
        let f = compiled(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":38,"syscalls":[
            {"names":["read","write"],"action":"SCMP_ACT_ALLOW"},
            {"names":["mkdir"],"action":"SCMP_ACT_ERRNO","errnoRet":1},
            {"names":["kill"],"action":"SCMP_ACT_KILL_PROCESS","args":[{"index":1,"value":9,"op":"SCMP_CMP_EQ"}]},
            {"names":["kill"],"action":"SCMP_ACT_ALLOW"}]}"#,
        );
        assert_eq!(eval(&f, 0, [0; 6]), ALLOW);
        assert_eq!(eval(&f, 1, [0; 6]), ALLOW);
        assert_eq!(eval(&f, 83, [0; 6]), errno(1));
        assert_eq!(eval(&f, 2, [0; 6]), errno(38));
        assert_eq!(
            eval(&f, 62, [1, 9, 0, 0, 0, 0]),
            libc::SECCOMP_RET_KILL_PROCESS
        );
        assert_eq!(eval(&f, 62, [1, 15, 0, 0, 0, 0]), ALLOW);
        // x32 ABI numbers never reach the native rules.
        assert_eq!(
            eval(&f, 0x4000_0000, [0; 6]),
            libc::SECCOMP_RET_KILL_PROCESS
        );
    }

    #[test]
    fn default_allow_profile_blocks_listed_calls() {
        let f = compiled(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":30}]}"#,
        );
        assert_eq!(eval(&f, 83, [0; 6]), errno(30));
        assert_eq!(eval(&f, 258, [0; 6]), errno(30));
        assert_eq!(eval(&f, 0, [0; 6]), ALLOW);
        assert_eq!(
            eval(&f, 0x4000_0000 | 83, [0; 6]),
            libc::SECCOMP_RET_KILL_PROCESS
        );
        // Wrong architecture: seccompiler's own check kills.
        assert_eq!(
            run(&f.programs[1], 0x4000_0003, 83, [0; 6]),
            libc::SECCOMP_RET_KILL_PROCESS
        );
    }
}
