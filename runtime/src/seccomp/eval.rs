//! What a compiled filter returns for one syscall, computed without the kernel.
//!
//! Before starting a container the runtime checks that the syscalls it adds itself
//! after the filter is installed (the exec trampoline's `execveat`, see
//! [`crate::process::exec_path`]) are allowed by the user's own filter; when they are
//! not, it takes the path that does not need them instead of having init killed or
//! refused. Pure logic: a classic-BPF interpreter with the kernel's seccomp checks,
//! tested without root.

use super::compile::Insn as sock_filter;

use super::arch::SyscallArch;
use super::compile::CompiledFilter;

// Instruction classes.
const LD: u16 = 0x00;
const LDX: u16 = 0x01;
const ST: u16 = 0x02;
const STX: u16 = 0x03;
const ALU: u16 = 0x04;
const JMP: u16 = 0x05;
const RET: u16 = 0x06;
const MISC: u16 = 0x07;
// Load size and mode (BPF_W is 0: seccomp only has 32-bit words).
const W: u16 = 0x00;
const IMM: u16 = 0x00;
const ABS: u16 = 0x20;
const MEM: u16 = 0x60;
const LEN: u16 = 0x80;
// ALU operations.
const ADD: u16 = 0x00;
const SUB: u16 = 0x10;
const MUL: u16 = 0x20;
const DIV: u16 = 0x30;
const OR: u16 = 0x40;
const AND: u16 = 0x50;
const LSH: u16 = 0x60;
const RSH: u16 = 0x70;
const NEG: u16 = 0x80;
const MOD: u16 = 0x90;
const XOR: u16 = 0xa0;
// Jumps.
const JA: u16 = 0x00;
const JEQ: u16 = 0x10;
const JGT: u16 = 0x20;
const JGE: u16 = 0x30;
const JSET: u16 = 0x40;
// Operand source: the immediate k or the X register; BPF_RET's A.
const K: u16 = 0x00;
const X: u16 = 0x08;
const A: u16 = 0x10;
// BPF_MISC operations.
const TAX: u16 = 0x00;
const TXA: u16 = 0x80;

use super::compile::MAX_INSNS;
/// BPF_MEMWORDS: the scratch memory.
const MEM_WORDS: usize = 16;
/// sizeof(struct seccomp_data).
const DATA_LEN: u32 = 64;

/// SECCOMP_RET_ACTION_FULL: the action part of a return value.
pub const RET_ACTION_FULL: u32 = 0xffff_0000;
const RET_ALLOW: u32 = 0x7fff_0000;
const RET_LOG: u32 = 0x7ffc_0000;

/// Why a program cannot be evaluated (the kernel would refuse it, or it faults).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    #[error("empty BPF program")]
    Empty,
    #[error("BPF program of {len} instructions (at most {MAX_INSNS})")]
    TooLong { len: usize },
    #[error("instruction {at}: opcode {code:#06x} is not allowed in a seccomp filter")]
    UnknownOpcode { at: usize, code: u16 },
    #[error(
        "instruction {at}: load at offset {offset} outside the 64-byte seccomp_data or unaligned"
    )]
    LoadOutOfRange { at: usize, offset: u32 },
    #[error("instruction {at}: scratch word {slot} out of range (16 words)")]
    ScratchOutOfRange { at: usize, slot: u32 },
    #[error("instruction {at}: scratch word {slot} may be read before it is written")]
    ScratchUnset { at: usize, slot: u32 },
    #[error("instruction {at}: division by zero")]
    DivisionByZero { at: usize },
    #[error("instruction {at}: shift by {amount} (at most 31)")]
    ShiftOutOfRange { at: usize, amount: u32 },
    #[error("instruction {at}: jump past the end of the program")]
    JumpOutOfRange { at: usize },
    #[error("instruction {at}: the last instruction is not a return")]
    NoFinalReturn { at: usize },
    #[error("instruction {at}: execution ran past the end of the program")]
    RanOffEnd { at: usize },
}

/// `struct seccomp_data`, what every filter reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SeccompData {
    pub nr: u32,
    pub arch: u32,
    pub instruction_pointer: u64,
    pub args: [u64; 6],
}

impl SeccompData {
    /// The 64 bytes the kernel hands to the filter, in native byte order.
    pub fn to_bytes(&self) -> [u8; 64] {
        let mut b = [0u8; 64];
        b[0..4].copy_from_slice(&self.nr.to_ne_bytes());
        b[4..8].copy_from_slice(&self.arch.to_ne_bytes());
        b[8..16].copy_from_slice(&self.instruction_pointer.to_ne_bytes());
        for (chunk, a) in b[16..].chunks_exact_mut(8).zip(self.args) {
            chunk.copy_from_slice(&a.to_ne_bytes());
        }
        b
    }
}

#[derive(Debug, Clone, Copy)]
enum Src {
    K(u32),
    X,
}

#[derive(Debug, Clone, Copy)]
enum AluOp {
    Add,
    Sub,
    Mul,
    Div,
    Or,
    And,
    Lsh,
    Rsh,
    Xor,
}

#[derive(Debug, Clone, Copy)]
enum JmpOp {
    Eq,
    Gt,
    Ge,
    Set,
}

/// A decoded, checked instruction.
#[derive(Debug, Clone, Copy)]
enum Insn {
    LdAbs(u32),
    LdImm(u32),
    LdMem(u32),
    LdxImm(u32),
    LdxMem(u32),
    St(u32),
    Stx(u32),
    Alu(AluOp, Src),
    Neg,
    Ja(u32),
    Jmp(JmpOp, Src, u8, u8),
    RetK(u32),
    RetA,
    Tax,
    Txa,
}

impl Insn {
    fn is_ret(self) -> bool {
        matches!(self, Insn::RetK(_) | Insn::RetA)
    }
}

/// Decodes one instruction with the checks of the kernel's bpf_check_classic and
/// seccomp_check_filter, which refuse the whole filter at install time.
fn decode(at: usize, len: usize, i: &sock_filter) -> Result<Insn, EvalError> {
    let k = i.k;
    let unknown = EvalError::UnknownOpcode { at, code: i.code };
    // Classic opcodes fit in 8 bits.
    if i.code > 0xff {
        return Err(unknown);
    }
    let slot = |insn: Insn| {
        if k as usize >= MEM_WORDS {
            Err(EvalError::ScratchOutOfRange { at, slot: k })
        } else {
            Ok(insn)
        }
    };
    // Instructions left after this one: every jump must land on one of them.
    let room = len - at - 1;
    let class = i.code & 0x07;
    match class {
        LD | LDX => {
            let ld = class == LD;
            match i.code & !0x07 {
                m if m == W | ABS && ld => {
                    if k >= DATA_LEN || k % 4 != 0 {
                        Err(EvalError::LoadOutOfRange { at, offset: k })
                    } else {
                        Ok(Insn::LdAbs(k))
                    }
                }
                m if m == W | IMM => Ok(if ld { Insn::LdImm(k) } else { Insn::LdxImm(k) }),
                m if m == W | MEM => slot(if ld { Insn::LdMem(k) } else { Insn::LdxMem(k) }),
                // seccomp rewrites LEN as the constant sizeof(seccomp_data).
                m if m == W | LEN => Ok(if ld {
                    Insn::LdImm(DATA_LEN)
                } else {
                    Insn::LdxImm(DATA_LEN)
                }),
                _ => Err(unknown),
            }
        }
        ST | STX if i.code == class => slot(if class == ST {
            Insn::St(k)
        } else {
            Insn::Stx(k)
        }),
        ALU => {
            let op = i.code & 0xf0;
            let src = match i.code & 0x08 {
                K => Src::K(k),
                _ => Src::X,
            };
            if op == NEG {
                return if i.code == ALU | NEG {
                    Ok(Insn::Neg)
                } else {
                    Err(unknown)
                };
            }
            let op = match op {
                ADD => AluOp::Add,
                SUB => AluOp::Sub,
                MUL => AluOp::Mul,
                DIV => AluOp::Div,
                OR => AluOp::Or,
                AND => AluOp::And,
                LSH => AluOp::Lsh,
                RSH => AluOp::Rsh,
                XOR => AluOp::Xor,
                // Classic BPF has MOD, but seccomp refuses it.
                MOD => return Err(unknown),
                _ => return Err(unknown),
            };
            match (op, src) {
                (AluOp::Div, Src::K(0)) => Err(EvalError::DivisionByZero { at }),
                (AluOp::Lsh | AluOp::Rsh, Src::K(n)) if n >= 32 => {
                    Err(EvalError::ShiftOutOfRange { at, amount: n })
                }
                _ => Ok(Insn::Alu(op, src)),
            }
        }
        JMP => {
            let op = i.code & 0xf0;
            if op == JA {
                if i.code != JMP | JA {
                    return Err(unknown);
                }
                return if (k as usize) < room {
                    Ok(Insn::Ja(k))
                } else {
                    Err(EvalError::JumpOutOfRange { at })
                };
            }
            let op = match op {
                JEQ => JmpOp::Eq,
                JGT => JmpOp::Gt,
                JGE => JmpOp::Ge,
                JSET => JmpOp::Set,
                _ => return Err(unknown),
            };
            let src = if i.code & X == X { Src::X } else { Src::K(k) };
            if usize::from(i.jt) >= room || usize::from(i.jf) >= room {
                return Err(EvalError::JumpOutOfRange { at });
            }
            Ok(Insn::Jmp(op, src, i.jt, i.jf))
        }
        RET => match i.code {
            c if c == RET | K => Ok(Insn::RetK(k)),
            c if c == RET | A => Ok(Insn::RetA),
            _ => Err(unknown),
        },
        MISC => match i.code {
            c if c == MISC | TAX => Ok(Insn::Tax),
            c if c == MISC | TXA => Ok(Insn::Txa),
            _ => Err(unknown),
        },
        _ => Err(unknown),
    }
}

/// The kernel's check_load_and_stores: a scratch word must be written on every path
/// before it is read (one forward pass, jump targets inherit the source's state).
fn check_scratch(prog: &[Insn]) -> Result<(), EvalError> {
    let mut masks = vec![u16::MAX; prog.len()];
    let mut valid: u16 = 0;
    for (pc, insn) in prog.iter().enumerate() {
        valid &= masks.get(pc).copied().unwrap_or(0);
        let mut narrow = |target: usize, valid: u16| {
            if let Some(m) = masks.get_mut(target) {
                *m &= valid;
            }
        };
        match *insn {
            Insn::St(s) | Insn::Stx(s) => valid |= 1 << (s & 15),
            Insn::LdMem(s) | Insn::LdxMem(s) if valid & (1 << (s & 15)) == 0 => {
                return Err(EvalError::ScratchUnset { at: pc, slot: s });
            }
            Insn::Ja(k) => {
                narrow(pc + 1 + k as usize, valid);
                valid = u16::MAX;
            }
            Insn::Jmp(_, _, jt, jf) => {
                narrow(pc + 1 + usize::from(jt), valid);
                narrow(pc + 1 + usize::from(jf), valid);
                valid = u16::MAX;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Decodes and checks a whole program as seccomp(2) would before installing it.
fn check(prog: &[sock_filter]) -> Result<Vec<Insn>, EvalError> {
    if prog.is_empty() {
        return Err(EvalError::Empty);
    }
    if prog.len() > MAX_INSNS {
        return Err(EvalError::TooLong { len: prog.len() });
    }
    let insns = prog
        .iter()
        .enumerate()
        .map(|(at, i)| decode(at, prog.len(), i))
        .collect::<Result<Vec<_>, _>>()?;
    match insns.last() {
        Some(last) if last.is_ret() => {}
        _ => return Err(EvalError::NoFinalReturn { at: prog.len() - 1 }),
    }
    check_scratch(&insns)?;
    Ok(insns)
}

/// Runs one program on `data`: its return value, or why the kernel would not run it.
pub fn run_program(prog: &[sock_filter], data: &SeccompData) -> Result<u32, EvalError> {
    let insns = check(prog)?;
    let bytes = data.to_bytes();
    let (mut a, mut x) = (0u32, 0u32);
    let mut mem = [0u32; MEM_WORDS];
    let mut pc = 0usize;
    loop {
        let at = pc;
        let insn = *insns.get(at).ok_or(EvalError::RanOffEnd { at })?;
        pc += 1;
        let scratch = |s: u32| mem.get(s as usize).copied();
        let out_of_range = |s: u32| EvalError::ScratchOutOfRange { at, slot: s };
        match insn {
            Insn::LdAbs(k) => {
                let k = k as usize;
                a = bytes
                    .get(k..k + 4)
                    .and_then(|w| w.try_into().ok())
                    .map(u32::from_ne_bytes)
                    .ok_or(EvalError::LoadOutOfRange {
                        at,
                        offset: k as u32,
                    })?;
            }
            Insn::LdImm(k) => a = k,
            Insn::LdxImm(k) => x = k,
            Insn::LdMem(s) => a = scratch(s).ok_or(out_of_range(s))?,
            Insn::LdxMem(s) => x = scratch(s).ok_or(out_of_range(s))?,
            Insn::St(s) => *mem.get_mut(s as usize).ok_or(out_of_range(s))? = a,
            Insn::Stx(s) => *mem.get_mut(s as usize).ok_or(out_of_range(s))? = x,
            Insn::Alu(op, src) => {
                let v = match src {
                    Src::K(k) => k,
                    Src::X => x,
                };
                a = match op {
                    AluOp::Add => a.wrapping_add(v),
                    AluOp::Sub => a.wrapping_sub(v),
                    AluOp::Mul => a.wrapping_mul(v),
                    // The kernel returns 0 (kill) on a zero X; callers only need "not allowed".
                    AluOp::Div => a.checked_div(v).ok_or(EvalError::DivisionByZero { at })?,
                    AluOp::Or => a | v,
                    AluOp::And => a & v,
                    // Shift amounts in X are masked to 5 bits, as the kernel's do.
                    AluOp::Lsh => a.wrapping_shl(v),
                    AluOp::Rsh => a.wrapping_shr(v),
                    AluOp::Xor => a ^ v,
                };
            }
            Insn::Neg => a = a.wrapping_neg(),
            Insn::Ja(k) => pc += k as usize,
            Insn::Jmp(op, src, jt, jf) => {
                let v = match src {
                    Src::K(k) => k,
                    Src::X => x,
                };
                let taken = match op {
                    JmpOp::Eq => a == v,
                    JmpOp::Gt => a > v,
                    JmpOp::Ge => a >= v,
                    JmpOp::Set => a & v != 0,
                };
                pc += usize::from(if taken { jt } else { jf });
            }
            Insn::RetK(k) => return Ok(k),
            Insn::RetA => return Ok(a),
            Insn::Tax => x = a,
            Insn::Txa => a = x,
        }
    }
}

/// The return value the kernel acts on with `filter` installed.
pub fn verdict(filter: &CompiledFilter, data: &SeccompData) -> Result<u32, EvalError> {
    run_program(&filter.program, data)
}

/// Whether `syscall` with `args`, made through the ABI `arch`, runs under `filter`
/// (ALLOW or LOG). Unknown names and unevaluable filters count as refused.
pub fn lets_through(
    filter: &CompiledFilter,
    arch: SyscallArch,
    syscall: &str,
    args: [u64; 6],
) -> bool {
    let Some(nr) = arch.syscall_nr(syscall) else {
        return false;
    };
    let data = SeccompData {
        nr,
        arch: arch.audit_arch(),
        instruction_pointer: 0,
        args,
    };
    matches!(
        verdict(filter, &data).map(|r| r & RET_ACTION_FULL),
        Ok(RET_ALLOW | RET_LOG)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seccomp::{compile, plan};

    const KILL_PROCESS: u32 = 0x8000_0000;
    const KILL_THREAD: u32 = 0;
    const ERRNO: u32 = 0x0005_0000;
    const TRACE: u32 = 0x7ff0_0000;
    const X86: SyscallArch = SyscallArch::X86_64;

    fn compiled(json: &str) -> CompiledFilter {
        let p: oci_spec::runtime::LinuxSeccomp = serde_json::from_str(json).unwrap();
        compile(&[plan(&p, X86).unwrap()]).unwrap()
    }

    fn data(nr: u32, args: [u64; 6]) -> SeccompData {
        SeccompData {
            nr,
            arch: X86.audit_arch(),
            instruction_pointer: 0,
            args,
        }
    }

    fn ins(code: u16, jt: u8, jf: u8, k: u32) -> sock_filter {
        sock_filter { code, jt, jf, k }
    }

    fn ret_k(k: u32) -> sock_filter {
        ins(RET | K, 0, 0, k)
    }

    fn run(prog: &[sock_filter]) -> Result<u32, EvalError> {
        run_program(prog, &data(0, [0; 6]))
    }

    #[test]
    fn default_allow_with_errno_rule_blocks_execveat() {
        let f = compiled(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["execveat"],"action":"SCMP_ACT_ERRNO"}]}"#,
        );
        assert!(!lets_through(&f, X86, "execveat", [0; 6]));
        assert!(lets_through(&f, X86, "execve", [0; 6]));
        let nr = X86.syscall_nr("execveat").unwrap();
        assert_eq!(verdict(&f, &data(nr, [0; 6])), Ok(ERRNO | 1));
    }

    #[test]
    fn default_errno_allow_list() {
        let f = compiled(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["execve","read"],"action":"SCMP_ACT_ALLOW"}]}"#,
        );
        assert!(!lets_through(&f, X86, "execveat", [0; 6]));
        assert!(lets_through(&f, X86, "execve", [0; 6]));
        assert!(lets_through(&f, X86, "read", [0; 6]));
        assert!(!lets_through(&f, X86, "write", [0; 6]));
    }

    #[test]
    fn argument_conditions() {
        let f = compiled(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["fcntl"],"action":"SCMP_ACT_ALLOW",
            "args":[{"index":1,"value":2,"op":"SCMP_CMP_EQ"}]}]}"#,
        );
        assert!(lets_through(&f, X86, "fcntl", [3, 2, 1, 0, 0, 0]));
        assert!(!lets_through(&f, X86, "fcntl", [3, 4, 1, 0, 0, 0]));
        // The high half of the 64-bit argument is compared too.
        assert!(!lets_through(
            &f,
            X86,
            "fcntl",
            [3, (1 << 32) | 2, 1, 0, 0, 0]
        ));
    }

    #[test]
    fn log_lets_through_trace_and_kill_do_not() {
        let f = compiled(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
            {"names":["getpid"],"action":"SCMP_ACT_LOG"},
            {"names":["getppid"],"action":"SCMP_ACT_TRACE"},
            {"names":["kill"],"action":"SCMP_ACT_KILL_PROCESS"}]}"#,
        );
        assert!(lets_through(&f, X86, "getpid", [0; 6]));
        assert!(!lets_through(&f, X86, "getppid", [0; 6]));
        assert!(!lets_through(&f, X86, "kill", [0; 6]));
        assert!(lets_through(&f, X86, "read", [0; 6]));
        let nr = X86.syscall_nr("getppid").unwrap();
        let got = verdict(&f, &data(nr, [0; 6])).unwrap();
        assert_eq!(got & RET_ACTION_FULL, TRACE);
    }

    #[test]
    fn unknown_syscall_name_is_refused() {
        let f = compiled(r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#);
        assert!(!lets_through(&f, X86, "chown32", [0; 6]));
        assert!(!lets_through(&f, X86, "", [0; 6]));
        assert!(lets_through(&f, X86, "chown", [0; 6]));
    }

    #[test]
    fn x32_numbers_are_killed() {
        let f = compiled(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_ERRNO"}]}"#,
        );
        let execve = X86.syscall_nr("execve").unwrap();
        assert_eq!(verdict(&f, &data(execve, [0; 6])), Ok(RET_ALLOW));
        assert_eq!(
            verdict(&f, &data(execve | 0x4000_0000, [0; 6])),
            Ok(KILL_PROCESS)
        );
    }

    #[test]
    fn wrong_arch_word_is_killed() {
        let f = compiled(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_ERRNO"}]}"#,
        );
        let mut d = data(X86.syscall_nr("read").unwrap(), [0; 6]);
        d.arch = 0x4000_0003; // AUDIT_ARCH_I386
        let got = verdict(&f, &d).unwrap() & RET_ACTION_FULL;
        assert!(got == KILL_PROCESS || got == KILL_THREAD, "{got:#x}");
    }

    #[test]
    fn allow_default_lets_everything_through() {
        let f = compiled(r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#);
        assert_eq!(verdict(&f, &data(59, [0; 6])), Ok(RET_ALLOW));
        for name in ["execve", "execveat", "kill", "write"] {
            assert!(lets_through(&f, X86, name, [0; 6]), "{name}");
        }
    }

    #[test]
    fn data_image_layout() {
        let d = SeccompData {
            nr: 1,
            arch: 2,
            instruction_pointer: 3,
            args: [4, 5, 6, 7, 8, 0x1122_3344_5566_7788],
        };
        let b = d.to_bytes();
        assert_eq!(b[0..4], 1u32.to_ne_bytes());
        assert_eq!(b[4..8], 2u32.to_ne_bytes());
        assert_eq!(b[8..16], 3u64.to_ne_bytes());
        assert_eq!(b[16..24], 4u64.to_ne_bytes());
        assert_eq!(b[56..64], 0x1122_3344_5566_7788u64.to_ne_bytes());
        // Loads read native words: args[5]'s low half sits at 56 on little-endian.
        let lo = run_program(&[ins(LD | W | ABS, 0, 0, 56), ins(RET | A, 0, 0, 0)], &d);
        let hi = run_program(&[ins(LD | W | ABS, 0, 0, 60), ins(RET | A, 0, 0, 0)], &d);
        if cfg!(target_endian = "little") {
            assert_eq!((lo, hi), (Ok(0x5566_7788), Ok(0x1122_3344)));
        } else {
            assert_eq!((lo, hi), (Ok(0x1122_3344), Ok(0x5566_7788)));
        }
    }

    #[test]
    fn division_by_zero_is_an_error() {
        let e = run(&[ins(ALU | DIV | K, 0, 0, 0), ret_k(0)]).unwrap_err();
        assert_eq!(e, EvalError::DivisionByZero { at: 0 });
        // X is 0 at run time.
        let prog = [
            ins(LD | IMM, 0, 0, 7),
            ins(ALU | DIV | X, 0, 0, 0),
            ins(RET | A, 0, 0, 0),
        ];
        assert_eq!(run(&prog), Err(EvalError::DivisionByZero { at: 1 }));
        assert!(run(&prog)
            .unwrap_err()
            .to_string()
            .contains("instruction 1"));
    }

    #[test]
    fn jumps_past_the_end_are_errors() {
        assert_eq!(
            run(&[ins(JMP | JA, 0, 0, 1), ret_k(0)]),
            Err(EvalError::JumpOutOfRange { at: 0 })
        );
        assert_eq!(
            run(&[ins(JMP | JA, 0, 0, u32::MAX), ret_k(0)]),
            Err(EvalError::JumpOutOfRange { at: 0 })
        );
        assert_eq!(
            run(&[ins(JMP | JEQ | K, 0, 1, 0), ret_k(0)]),
            Err(EvalError::JumpOutOfRange { at: 0 })
        );
        assert_eq!(
            run(&[ret_k(0), ins(JMP | JGT | X, 1, 0, 0), ret_k(0)]),
            Err(EvalError::JumpOutOfRange { at: 1 })
        );
        // Falling off the end: the last instruction must return.
        assert_eq!(
            run(&[ins(LD | IMM, 0, 0, 1)]),
            Err(EvalError::NoFinalReturn { at: 0 })
        );
        assert_eq!(run(&[ins(JMP | JA, 0, 0, 1), ret_k(1), ret_k(2)]), Ok(2));
    }

    #[test]
    fn unknown_opcodes_are_errors() {
        for code in [
            0xffff,
            LD | 0x08 | ABS, // BPF_H load
            LD | 0x10 | ABS, // BPF_B load
            LD | W | 0x40,   // BPF_IND
            ALU | MOD | K,   // refused by seccomp
            ALU | MOD | X,
            ALU | NEG | X,
            RET | X,
            JMP | JA | X,
            JMP | 0x50 | K, // eBPF JNE
            MISC | 0x10,
            ST | 0x20,
            LDX | W | ABS,
        ] {
            let e = run(&[ins(code, 0, 0, 1), ret_k(0)]).unwrap_err();
            assert_eq!(e, EvalError::UnknownOpcode { at: 0, code }, "{code:#x}");
        }
    }

    #[test]
    fn loads_outside_seccomp_data_are_errors() {
        for k in [64, 2, 63, 0xffff_f000, u32::MAX] {
            assert_eq!(
                run(&[ins(LD | W | ABS, 0, 0, k), ins(RET | A, 0, 0, 0)]),
                Err(EvalError::LoadOutOfRange { at: 0, offset: k })
            );
        }
        assert_eq!(
            run(&[ins(LD | W | ABS, 0, 0, 60), ins(RET | A, 0, 0, 0)]),
            Ok(0)
        );
    }

    #[test]
    fn length_limits() {
        assert_eq!(run(&[]), Err(EvalError::Empty));
        assert_eq!(run(&vec![ret_k(7); MAX_INSNS]), Ok(7));
        assert_eq!(
            run(&vec![ret_k(7); MAX_INSNS + 1]),
            Err(EvalError::TooLong { len: MAX_INSNS + 1 })
        );
    }

    #[test]
    fn scratch_memory_round_trip() {
        let prog = [
            ins(LD | IMM, 0, 0, 42),
            ins(ST, 0, 0, 3),
            ins(LDX | IMM, 0, 0, 9),
            ins(STX, 0, 0, 15),
            ins(LD | IMM, 0, 0, 0),
            ins(LDX | W | MEM, 0, 0, 3),
            ins(LD | W | MEM, 0, 0, 15),
            ins(ALU | ADD | X, 0, 0, 0),
            ins(RET | A, 0, 0, 0),
        ];
        assert_eq!(run(&prog), Ok(51));
        assert_eq!(
            run(&[ins(ST, 0, 0, 16), ret_k(0)]),
            Err(EvalError::ScratchOutOfRange { at: 0, slot: 16 })
        );
        assert_eq!(
            run(&[ins(LD | MEM, 0, 0, 2), ins(RET | A, 0, 0, 0)]),
            Err(EvalError::ScratchUnset { at: 0, slot: 2 })
        );
        // Written on one path only: the kernel refuses it.
        let one_path = [
            ins(JMP | JEQ | K, 0, 1, 0),
            ins(ST, 0, 0, 1),
            ins(LD | MEM, 0, 0, 1),
            ins(RET | A, 0, 0, 0),
        ];
        assert_eq!(
            run(&one_path),
            Err(EvalError::ScratchUnset { at: 2, slot: 1 })
        );
        // Written on both paths: fine.
        let both = [
            ins(LD | IMM, 0, 0, 5),
            ins(ST, 0, 0, 1),
            ins(JMP | JEQ | K, 0, 1, 0),
            ins(ST, 0, 0, 1),
            ins(LD | MEM, 0, 0, 1),
            ins(RET | A, 0, 0, 0),
        ];
        assert_eq!(run(&both), Ok(5));
    }

    #[test]
    fn alu_operations() {
        let cases: [(u16, u32, u32, u32); 12] = [
            (ADD, 0xffff_fffe, 3, 1),
            (SUB, 1, 2, u32::MAX),
            (MUL, 0x1_0001, 0x1_0001, 0x0002_0001),
            (DIV, 100, 7, 14),
            (OR, 0xf0, 0x0f, 0xff),
            (AND, 0xf3, 0x3f, 0x33),
            (LSH, 1, 31, 0x8000_0000),
            (RSH, 0x8000_0000, 31, 1),
            (XOR, 0xff, 0x0f, 0xf0),
            (LSH, 3, 0, 3),
            (RSH, 3, 1, 1),
            (DIV, 7, 8, 0),
        ];
        for (op, a, v, want) in cases {
            let with_k = [
                ins(LD | IMM, 0, 0, a),
                ins(ALU | op | K, 0, 0, v),
                ins(RET | A, 0, 0, 0),
            ];
            assert_eq!(run(&with_k), Ok(want), "{op:#x} k {a:#x} {v:#x}");
            let with_x = [
                ins(LD | IMM, 0, 0, a),
                ins(LDX | IMM, 0, 0, v),
                ins(ALU | op | X, 0, 0, 0),
                ins(RET | A, 0, 0, 0),
            ];
            assert_eq!(run(&with_x), Ok(want), "{op:#x} x {a:#x} {v:#x}");
        }
        let neg = [
            ins(LD | IMM, 0, 0, 1),
            ins(ALU | NEG, 0, 0, 0),
            ins(RET | A, 0, 0, 0),
        ];
        assert_eq!(run(&neg), Ok(u32::MAX));
        assert_eq!(
            run(&[ins(ALU | LSH | K, 0, 0, 32), ret_k(0)]),
            Err(EvalError::ShiftOutOfRange { at: 0, amount: 32 })
        );
        // TAX/TXA and LEN.
        let moves = [
            ins(LD | W | LEN, 0, 0, 0),
            ins(MISC | TAX, 0, 0, 0),
            ins(LD | IMM, 0, 0, 1),
            ins(MISC | TXA, 0, 0, 0),
            ins(RET | A, 0, 0, 0),
        ];
        assert_eq!(run(&moves), Ok(64));
        let ldx_len = [
            ins(LDX | W | LEN, 0, 0, 0),
            ins(MISC | TXA, 0, 0, 0),
            ins(RET | A, 0, 0, 0),
        ];
        assert_eq!(run(&ldx_len), Ok(64));
    }

    #[test]
    fn conditional_jumps() {
        // A = 5; jump op against 5 or 6 (K or X): 1 if taken, 2 if not.
        let cases: [(u16, u32, bool); 8] = [
            (JEQ, 5, true),
            (JEQ, 6, false),
            (JGT, 4, true),
            (JGT, 5, false),
            (JGE, 5, true),
            (JGE, 6, false),
            (JSET, 4, true),
            (JSET, 2, false),
        ];
        for (op, v, taken) in cases {
            let want = Ok(if taken { 1 } else { 2 });
            let with_k = [
                ins(LD | IMM, 0, 0, 5),
                ins(JMP | op | K, 0, 1, v),
                ret_k(1),
                ret_k(2),
            ];
            assert_eq!(run(&with_k), want, "{op:#x} k {v}");
            let with_x = [
                ins(LD | IMM, 0, 0, 5),
                ins(LDX | IMM, 0, 0, v),
                ins(JMP | op | X, 0, 1, 0),
                ret_k(1),
                ret_k(2),
            ];
            assert_eq!(run(&with_x), want, "{op:#x} x {v}");
        }
    }
}
