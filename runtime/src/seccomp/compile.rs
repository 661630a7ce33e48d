//! [`SeccompPlan`]s, one per ABI, -> one classic-BPF program (what a process gets
//! installed: one filter, whatever the profile's actions and architectures).
//!
//! Written here rather than through a crate: seccompiler builds a filter for one
//! architecture with one match and one mismatch action, libseccomp is a C library the
//! static build would have to link. The program:
//!
//! ```text
//!  ld arch
//!  x86_64 -> ld nr; nr has the x32 bit -> x32 section (killed when x32 is not named)
//!                   else native section
//!  i386   -> ld nr; i386 section (killed when x86 is not named)
//!  other  -> KILL_PROCESS
//!  section: for each syscall a rule names: jeq nr -> its block; then the default action
//!  block:   the rules of each action, strongest action first (KILL_PROCESS, KILL_THREAD,
//!           TRAP, ERRNO, TRACE, LOG, ALLOW: what the kernel would keep of several
//!           filters), each rule an AND of 64-bit argument comparisons; the first rule
//!           that holds returns its action; none: the default action.
//! ```
//! Identical blocks are emitted once. Arguments are compared as 64-bit values (high
//! word, then low word); an i386 program's arguments have a zero high word.

use std::collections::{BTreeMap, HashMap};

use super::arch::{SyscallArch, AUDIT_ARCH_I386, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT};
use super::plan::{Action, Cond, Match, Op, SeccompPlan};
use super::SeccompError;

/// One classic-BPF instruction, laid out as the kernel's `struct sock_filter`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// The compiled profile: the one program to install and the seccomp(2) flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledFilter {
    pub flags: u32,
    pub program: Vec<Insn>,
}

/// BPF_MAXINSNS: the kernel refuses longer programs.
pub const MAX_INSNS: usize = 4096;

const LD_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JGT: u16 = (libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K) as u16;
const JGE: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
const AND: u16 = (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16;
const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
/// Offsets in struct seccomp_data.
const NR: u32 = 0;
const ARCH: u32 = 4;
const ARGS: u32 = 16;

fn ins(code: u16, jt: u8, jf: u8, k: u32) -> Insn {
    Insn { code, jt, jf, k }
}

/// The return value of an action.
pub fn ret_value(a: Action) -> u32 {
    match a {
        Action::KillProcess => libc::SECCOMP_RET_KILL_PROCESS,
        Action::KillThread => libc::SECCOMP_RET_KILL_THREAD,
        Action::Trap => libc::SECCOMP_RET_TRAP,
        Action::Errno(e) => libc::SECCOMP_RET_ERRNO | (e & 0xffff),
        Action::Trace(e) => libc::SECCOMP_RET_TRACE | (e & 0xffff),
        Action::Log => libc::SECCOMP_RET_LOG,
        Action::Allow => libc::SECCOMP_RET_ALLOW,
    }
}

/// Where a jump in a comparison goes: the next instruction, the next comparison of the
/// rule, or the next rule.
#[derive(Clone, Copy)]
enum To {
    On,
    Next,
    Fail,
}

/// One comparison of a 64-bit argument: (instruction, where it goes when true, when
/// false) for jumps; loads and ALU ops ignore the targets.
fn comparison(c: &Cond) -> Vec<(Insn, To, To)> {
    let hi_off = ARGS + 8 * u32::from(c.index) + 4;
    let lo_off = ARGS + 8 * u32::from(c.index);
    let (hi, lo) = ((c.value >> 32) as u32, c.value as u32);
    let ld = |off| (ins(LD_ABS, 0, 0, off), To::On, To::On);
    let j = |code, k, t, f| (ins(code, 0, 0, k), t, f);
    match c.op {
        Op::Eq => vec![
            ld(hi_off),
            j(JEQ, hi, To::On, To::Fail),
            ld(lo_off),
            j(JEQ, lo, To::Next, To::Fail),
        ],
        Op::Ne => vec![
            ld(hi_off),
            j(JEQ, hi, To::On, To::Next),
            ld(lo_off),
            j(JEQ, lo, To::Fail, To::Next),
        ],
        Op::Gt => vec![
            ld(hi_off),
            j(JGT, hi, To::Next, To::On),
            j(JEQ, hi, To::On, To::Fail),
            ld(lo_off),
            j(JGT, lo, To::Next, To::Fail),
        ],
        Op::Ge => vec![
            ld(hi_off),
            j(JGT, hi, To::Next, To::On),
            j(JEQ, hi, To::On, To::Fail),
            ld(lo_off),
            j(JGE, lo, To::Next, To::Fail),
        ],
        Op::Lt => vec![
            ld(hi_off),
            j(JGT, hi, To::Fail, To::On),
            j(JEQ, hi, To::On, To::Next),
            ld(lo_off),
            j(JGE, lo, To::Fail, To::Next),
        ],
        Op::Le => vec![
            ld(hi_off),
            j(JGT, hi, To::Fail, To::On),
            j(JEQ, hi, To::On, To::Next),
            ld(lo_off),
            j(JGT, lo, To::Fail, To::Next),
        ],
        Op::MaskedEq { mask } => vec![
            ld(hi_off),
            (ins(AND, 0, 0, (mask >> 32) as u32), To::On, To::On),
            j(JEQ, hi, To::On, To::Fail),
            ld(lo_off),
            (ins(AND, 0, 0, mask as u32), To::On, To::On),
            j(JEQ, lo, To::Next, To::Fail),
        ],
    }
}

/// One rule (its comparisons ANDed), ending in `ret action`; a failed comparison jumps
/// past that return, to whatever follows.
fn rule(conds: &[Cond], action: Action) -> Result<Vec<Insn>, SeccompError> {
    let parts: Vec<Vec<(Insn, To, To)>> = conds.iter().map(comparison).collect();
    let total: usize = parts.iter().map(Vec::len).sum::<usize>() + 1;
    let mut out = Vec::with_capacity(total);
    for part in &parts {
        let end = out.len() + part.len();
        for (insn, t, f) in part {
            let here = out.len();
            let off = |to: &To| -> Result<u8, SeccompError> {
                let target = match to {
                    To::On => here + 1,
                    To::Next => end,
                    To::Fail => total,
                };
                u8::try_from(target - here - 1).map_err(|_| SeccompError::Compile {
                    what: "argument conditions".into(),
                    reason: "a rule with that many conditions does not fit a BPF jump".into(),
                })
            };
            let mut i = *insn;
            if i.code & 0x07 == libc::BPF_JMP as u16 {
                i.jt = off(t)?;
                i.jf = off(f)?;
            }
            out.push(i);
        }
    }
    out.push(ins(RET, 0, 0, ret_value(action)));
    Ok(out)
}

/// The block of one syscall: its rules, strongest action first, then the default.
fn block(entries: &[(Action, &Match)], default: Action) -> Result<Vec<Insn>, SeccompError> {
    let mut out = Vec::new();
    for (action, m) in entries {
        match m {
            Match::Always => {
                out.push(ins(RET, 0, 0, ret_value(*action)));
                return Ok(out);
            }
            Match::AnyOf(rules) => {
                for r in rules {
                    out.extend(rule(r, *action)?);
                }
            }
        }
    }
    out.push(ins(RET, 0, 0, ret_value(default)));
    Ok(out)
}

/// An assembler item: an instruction, a long jump to a label, or a label.
enum Item {
    I(Insn),
    Ja(usize),
    Label(usize),
}

#[derive(Default)]
struct Asm {
    items: Vec<Item>,
    labels: usize,
    /// Blocks by content: each is emitted once, after all sections.
    blocks: HashMap<Vec<Insn>, usize>,
    block_order: Vec<Vec<Insn>>,
}

impl Asm {
    fn label(&mut self) -> usize {
        self.labels += 1;
        self.labels - 1
    }

    fn block_label(&mut self, code: Vec<Insn>) -> usize {
        if let Some(l) = self.blocks.get(&code) {
            return *l;
        }
        let l = self.label();
        self.blocks.insert(code.clone(), l);
        self.block_order.push(code);
        l
    }

    /// One ABI's section: dispatch on the number in A, then the default action.
    fn section(&mut self, plan: &SeccompPlan) -> Result<(), SeccompError> {
        let mut per_nr: BTreeMap<u32, Vec<(Action, &Match)>> = BTreeMap::new();
        for (action, rules) in &plan.rules {
            for (nr, m) in rules {
                per_nr.entry(*nr).or_default().push((*action, m));
            }
        }
        for (nr, mut entries) in per_nr {
            entries.sort_by_key(|(a, _)| *a);
            let l = self.block_label(block(&entries, plan.default_action)?);
            self.items.push(Item::I(ins(JEQ, 0, 1, nr)));
            self.items.push(Item::Ja(l));
        }
        self.items
            .push(Item::I(ins(RET, 0, 0, ret_value(plan.default_action))));
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<Insn>, SeccompError> {
        for code in std::mem::take(&mut self.block_order) {
            let l = self.blocks[&code];
            self.items.push(Item::Label(l));
            self.items.extend(code.into_iter().map(Item::I));
        }
        let mut at = vec![0usize; self.labels];
        let mut pc = 0;
        for item in &self.items {
            match item {
                Item::Label(l) => at[*l] = pc,
                _ => pc += 1,
            }
        }
        if pc > MAX_INSNS {
            return Err(SeccompError::Compile {
                what: "the filter".into(),
                reason: format!("{pc} BPF instructions, more than the kernel's {MAX_INSNS}"),
            });
        }
        let mut out = Vec::with_capacity(pc);
        for item in self.items {
            match item {
                Item::I(i) => out.push(i),
                Item::Ja(l) => {
                    // Every jump goes forward: sections come before the blocks.
                    let k =
                        at[l]
                            .checked_sub(out.len() + 1)
                            .ok_or_else(|| SeccompError::Compile {
                                what: "the filter".into(),
                                reason: "a jump backwards (a bug in the assembler)".into(),
                            })?;
                    out.push(ins(JA, 0, 0, k as u32));
                }
                Item::Label(_) => {}
            }
        }
        Ok(out)
    }
}

/// Compiles the plans (one per ABI, all of one profile) into one program (see the
/// module docs for its shape).
pub fn compile(plans: &[SeccompPlan]) -> Result<CompiledFilter, SeccompError> {
    let find = |a: SyscallArch| plans.iter().find(|p| p.arch == a);
    let flags = plans.first().map_or(0, |p| p.flags);
    let mut asm = Asm::default();
    let (native, i386, x32) = (asm.label(), asm.label(), asm.label());
    let kill = ins(RET, 0, 0, libc::SECCOMP_RET_KILL_PROCESS);
    asm.items.push(Item::I(ins(LD_ABS, 0, 0, ARCH)));
    let natives = find(SyscallArch::X86_64).is_some();
    if natives {
        asm.items.push(Item::I(ins(JEQ, 0, 1, AUDIT_ARCH_X86_64)));
        asm.items.push(Item::Ja(native));
    }
    if find(SyscallArch::X86).is_some() {
        asm.items.push(Item::I(ins(JEQ, 0, 1, AUDIT_ARCH_I386)));
        asm.items.push(Item::Ja(i386));
    }
    // An ABI the profile does not name.
    asm.items.push(Item::I(kill));
    if let Some(p) = find(SyscallArch::X86_64) {
        asm.items.push(Item::Label(native));
        asm.items.push(Item::I(ins(LD_ABS, 0, 0, NR)));
        asm.items.push(Item::I(ins(JGE, 0, 1, X32_SYSCALL_BIT)));
        asm.items.push(if find(SyscallArch::X32).is_some() {
            Item::Ja(x32)
        } else {
            Item::I(kill)
        });
        asm.section(p)?;
    }
    if let Some(p) = find(SyscallArch::X32) {
        asm.items.push(Item::Label(x32));
        asm.section(p)?;
    }
    if let Some(p) = find(SyscallArch::X86) {
        asm.items.push(Item::Label(i386));
        asm.items.push(Item::I(ins(LD_ABS, 0, 0, NR)));
        asm.section(p)?;
    }
    Ok(CompiledFilter {
        flags,
        program: asm.finish()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seccomp::eval::{verdict, SeccompData};
    use crate::seccomp::plan::{plan, plan_all};

    const ALLOW: u32 = 0x7fff_0000;
    const KILL_PROCESS: u32 = 0x8000_0000;

    fn errno(e: u32) -> u32 {
        0x0005_0000 | e
    }

    fn profile(json: &str) -> oci_spec::runtime::LinuxSeccomp {
        serde_json::from_str(json).unwrap()
    }

    /// What the kernel returns for `name` through `abi` (by name, so the ABI's own
    /// number is used), or for a raw number with `raw`.
    fn ask(f: &CompiledFilter, abi: SyscallArch, name: &str, args: [u64; 6]) -> u32 {
        let nr = abi
            .syscall_nr(name)
            .unwrap_or_else(|| panic!("{name} on {abi:?}"));
        raw(f, abi.audit_arch(), nr, args)
    }

    fn raw(f: &CompiledFilter, arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let d = SeccompData {
            nr,
            arch,
            instruction_pointer: 0,
            args,
        };
        verdict(f, &d).unwrap()
    }

    fn compiled(json: &str) -> CompiledFilter {
        compile(&plan_all(&profile(json)).unwrap()).unwrap()
    }

    /// One filter for the three ABIs a profile lists: each ABI's numbers (x86's read is
    /// 3, x32's carry bit 30) reach the profile's actions.
    #[test]
    fn every_listed_abi_gets_the_profiles_actions() {
        let f = compiled(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":38,
            "architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86","SCMP_ARCH_X32"],
            "syscalls":[
              {"names":["read","write","chown32","rt_sigaction"],"action":"SCMP_ACT_ALLOW"},
              {"names":["mkdir"],"action":"SCMP_ACT_ERRNO","errnoRet":13},
              {"names":["kill"],"action":"SCMP_ACT_KILL_PROCESS"}]}"#,
        );
        for abi in [SyscallArch::X86_64, SyscallArch::X86, SyscallArch::X32] {
            assert_eq!(ask(&f, abi, "read", [0; 6]), ALLOW, "{abi:?} read");
            assert_eq!(ask(&f, abi, "write", [0; 6]), ALLOW, "{abi:?} write");
            assert_eq!(ask(&f, abi, "rt_sigaction", [0; 6]), ALLOW, "{abi:?}");
            assert_eq!(ask(&f, abi, "mkdir", [0; 6]), errno(13), "{abi:?} mkdir");
            assert_eq!(ask(&f, abi, "kill", [0; 6]), KILL_PROCESS, "{abi:?} kill");
            assert_eq!(ask(&f, abi, "getpid", [0; 6]), errno(38), "{abi:?} default");
        }
        assert_eq!(ask(&f, SyscallArch::X86, "chown32", [0; 6]), ALLOW);
        // i386's number 3 is read there, but close on x86_64.
        assert_eq!(raw(&f, AUDIT_ARCH_X86_64, 3, [0; 6]), errno(38));
        // An audit arch of no listed ABI is killed.
        assert_eq!(raw(&f, 0xc000_00b7, 63, [0; 6]), KILL_PROCESS);
    }

    /// Without x86 and x32 in `architectures` (or with none), only the native ABI is
    /// translated, and calls through the others are killed.
    #[test]
    fn unlisted_abis_are_killed() {
        for archs in [r#","architectures":["SCMP_ARCH_X86_64"]"#, ""] {
            let f = compiled(&format!(
                r#"{{"defaultAction":"SCMP_ACT_ALLOW"{archs},"syscalls":[{{"names":["mkdir"],"action":"SCMP_ACT_ERRNO"}}]}}"#
            ));
            assert_eq!(ask(&f, SyscallArch::X86_64, "read", [0; 6]), ALLOW);
            assert_eq!(ask(&f, SyscallArch::X86_64, "mkdir", [0; 6]), errno(1));
            assert_eq!(ask(&f, SyscallArch::X86, "read", [0; 6]), KILL_PROCESS);
            assert_eq!(ask(&f, SyscallArch::X32, "read", [0; 6]), KILL_PROCESS);
        }
    }

    /// Two actions on one syscall: the stronger one wins when its rule holds (what the
    /// kernel keeps of several filters), else the weaker; then the default.
    #[test]
    fn stronger_action_first() {
        let f = compiled(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[
            {"names":["kill"],"action":"SCMP_ACT_ALLOW"},
            {"names":["kill"],"action":"SCMP_ACT_KILL_PROCESS","args":[{"index":1,"value":9,"op":"SCMP_CMP_EQ"}]},
            {"names":["kill"],"action":"SCMP_ACT_ERRNO","errnoRet":13,"args":[{"index":1,"value":15,"op":"SCMP_CMP_EQ"}]}]}"#,
        );
        let x = SyscallArch::X86_64;
        assert_eq!(ask(&f, x, "kill", [1, 9, 0, 0, 0, 0]), KILL_PROCESS);
        assert_eq!(ask(&f, x, "kill", [1, 15, 0, 0, 0, 0]), errno(13));
        assert_eq!(ask(&f, x, "kill", [1, 2, 0, 0, 0, 0]), ALLOW);
        assert_eq!(ask(&f, x, "read", [0; 6]), errno(1));
    }

    #[test]
    fn operators_compare_64_bits() {
        let cases: [(&str, u64, u64, bool); 16] = [
            ("SCMP_CMP_NE", 5, 5, false),
            ("SCMP_CMP_NE", 5, 6, true),
            ("SCMP_CMP_NE", 5, (1 << 32) | 5, true),
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
            ("SCMP_CMP_LE", 1 << 33, (1 << 33) + 1, false),
        ];
        for (op, value, arg, hit) in cases {
            let f = compiled(&format!(
                r#"{{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{{"names":["mkdir"],
                "action":"SCMP_ACT_ERRNO","errnoRet":13,"args":[{{"index":1,"value":{value},"op":"{op}"}}]}}]}}"#
            ));
            let got = ask(&f, SyscallArch::X86_64, "mkdir", [0, arg, 0, 0, 0, 0]);
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
        let x = SyscallArch::X86_64;
        assert_eq!(ask(&f, x, "clone", [0x11, 0, 0, 0, 0, 0]), ALLOW);
        assert_eq!(
            ask(&f, x, "clone", [0x1000_0000 | 0x11, 0, 0, 0, 0, 0]),
            errno(1)
        );
    }

    /// Docker's default profile for all three ABIs fits one program well under the
    /// kernel's limit, and shares blocks (most syscalls are plain ALLOW).
    #[test]
    fn docker_profile_is_one_program() {
        let p = profile(include_str!("testdata/docker-default.json"));
        let plans = plan_all(&p).unwrap();
        let f = compile(&plans).unwrap();
        assert!(
            f.program.len() < MAX_INSNS / 2,
            "{} instructions",
            f.program.len()
        );
        let single = compile(&[plan(&p, SyscallArch::X86_64).unwrap()]).unwrap();
        assert!(single.program.len() < f.program.len());
    }
}
