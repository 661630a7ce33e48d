//! cgroup v2 device control: linux.resources.devices -> an eBPF program of type
//! BPF_PROG_TYPE_CGROUP_DEVICE (pure code generation; `devices_attach` loads it).
//!
//! Semantics are v1's devices.allow/deny applied in order, decided per access bit:
//! for each requested bit (mknod, read, write), the last rule that covers the device
//! and that bit decides; a bit no rule covers is allowed (a fresh v1 cgroup allows
//! all). The request is allowed only if every requested bit is.
//!
//! The program reads `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }`
//! (access_type = access << 16 | type) and returns 1 (allow) or 0 (deny).

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use super::util::invalid;
use super::ResourceError;

/// One eBPF instruction, laid out as the kernel's `struct bpf_insn`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BpfInsn {
    pub code: u8,
    /// dst register in the low nibble, src in the high nibble.
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

pub const ACC_MKNOD: u32 = 1;
pub const ACC_READ: u32 = 2;
pub const ACC_WRITE: u32 = 4;
pub const DEV_BLOCK: u32 = 1;
pub const DEV_CHAR: u32 = 2;

/// A validated rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRule {
    pub allow: bool,
    /// None: any type ("a").
    pub typ: Option<u32>,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    /// ACC_* bits.
    pub access: u32,
}

/// Validates the spec's rules (in order) into [`DeviceRule`]s.
pub fn rules(devs: &[LinuxDeviceCgroup]) -> Result<Vec<DeviceRule>, ResourceError> {
    devs.iter()
        .enumerate()
        .map(|(i, d)| {
            let field = format!("devices[{i}]");
            let typ = match d.typ().unwrap_or_default() {
                LinuxDeviceType::A => None,
                LinuxDeviceType::B => Some(DEV_BLOCK),
                LinuxDeviceType::C | LinuxDeviceType::U => Some(DEV_CHAR),
                LinuxDeviceType::P => {
                    return Err(invalid(
                        &format!("{field}.type"),
                        "p",
                        "the device cgroup knows a, b and c",
                    ))
                }
            };
            let num = |n: Option<i64>, what: &str| match n {
                None | Some(-1) => Ok(None),
                Some(v) if (0..=i64::from(u32::MAX)).contains(&v) => Ok(Some(v as u32)),
                Some(v) => Err(invalid(
                    &format!("{field}.{what}"),
                    v,
                    "must be >= 0 (or -1 / absent for any)",
                )),
            };
            let access_str = d.access().clone().unwrap_or_else(|| "rwm".into());
            let mut access = 0;
            for c in access_str.chars() {
                let bit = match c {
                    'm' => ACC_MKNOD,
                    'r' => ACC_READ,
                    'w' => ACC_WRITE,
                    _ => 0,
                };
                if bit == 0 || access & bit != 0 {
                    return Err(invalid(
                        &format!("{field}.access"),
                        &access_str,
                        "must be letters from r, w, m, each once",
                    ));
                }
                access |= bit;
            }
            if access == 0 {
                return Err(invalid(
                    &format!("{field}.access"),
                    &access_str,
                    "must not be empty",
                ));
            }
            let (major, minor) = if typ.is_none() {
                (None, None)
            } else {
                (num(d.major(), "major")?, num(d.minor(), "minor")?)
            };
            Ok(DeviceRule {
                allow: d.allow(),
                typ,
                major,
                minor,
                access,
            })
        })
        .collect()
}

// eBPF opcodes used.
const LDX_MEM_W: u8 = 0x61; // dst = *(u32 *)(src + off)
const ALU32_AND_K: u8 = 0x54; // dst &= imm
const ALU32_RSH_K: u8 = 0x74; // dst >>= imm
const ALU64_MOV_K: u8 = 0xb7; // dst = imm
const JMP_JA: u8 = 0x05; // goto +off
const JMP_JNE_K: u8 = 0x55; // if dst != imm goto +off
const JMP_JSET_K: u8 = 0x45; // if dst & imm goto +off
const JMP_EXIT: u8 = 0x95;

const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2; // device type
const R3: u8 = 3; // requested access
const R4: u8 = 4; // major
const R5: u8 = 5; // minor

fn ins(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> BpfInsn {
    BpfInsn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

/// A forward jump to be patched once its label's position is known.
struct Asm {
    out: Vec<BpfInsn>,
    fixups: Vec<(usize, usize)>,
    labels: Vec<Option<usize>>,
}

impl Asm {
    fn label(&mut self) -> usize {
        self.labels.push(None);
        self.labels.len() - 1
    }
    fn bind(&mut self, l: usize) {
        self.labels[l] = Some(self.out.len());
    }
    fn jump(&mut self, code: u8, dst: u8, imm: i32, to: usize) {
        self.fixups.push((self.out.len(), to));
        self.out.push(ins(code, dst, 0, 0, imm));
    }
    fn finish(mut self) -> Result<Vec<BpfInsn>, ResourceError> {
        for (at, l) in self.fixups {
            let target = self.labels[l].unwrap_or(self.out.len());
            let off = i16::try_from(target as i64 - at as i64 - 1).map_err(|_| {
                invalid(
                    "devices",
                    self.out.len(),
                    "too many device rules for one eBPF program",
                )
            })?;
            self.out[at].off = off;
        }
        Ok(self.out)
    }
}

/// The eBPF program enforcing `rules` (see the module docs for the semantics).
pub fn program(rules: &[DeviceRule]) -> Result<Vec<BpfInsn>, ResourceError> {
    let mut a = Asm {
        out: Vec::new(),
        fixups: Vec::new(),
        labels: Vec::new(),
    };
    a.out.push(ins(LDX_MEM_W, R2, R1, 0, 0));
    a.out.push(ins(ALU32_AND_K, R2, 0, 0, 0xffff));
    a.out.push(ins(LDX_MEM_W, R3, R1, 0, 0));
    a.out.push(ins(ALU32_RSH_K, R3, 0, 0, 16));
    a.out.push(ins(LDX_MEM_W, R4, R1, 4, 0));
    a.out.push(ins(LDX_MEM_W, R5, R1, 8, 0));
    for bit in [ACC_MKNOD, ACC_READ, ACC_WRITE] {
        let next_bit = a.label();
        let check = a.label();
        // Bit not requested: nothing to decide.
        a.jump(JMP_JSET_K, R3, bit as i32, check);
        a.jump(JMP_JA, 0, 0, next_bit);
        a.bind(check);
        for r in rules.iter().rev().filter(|r| r.access & bit != 0) {
            let next_rule = a.label();
            if let Some(t) = r.typ {
                a.jump(JMP_JNE_K, R2, t as i32, next_rule);
            }
            if let Some(m) = r.major {
                a.jump(JMP_JNE_K, R4, m as i32, next_rule);
            }
            if let Some(m) = r.minor {
                a.jump(JMP_JNE_K, R5, m as i32, next_rule);
            }
            if r.allow {
                a.jump(JMP_JA, 0, 0, next_bit);
            } else {
                a.out.push(ins(ALU64_MOV_K, R0, 0, 0, 0));
                a.out.push(ins(JMP_EXIT, 0, 0, 0, 0));
            }
            a.bind(next_rule);
        }
        // No rule covers this bit: allowed.
        a.bind(next_bit);
    }
    a.out.push(ins(ALU64_MOV_K, R0, 0, 0, 1));
    a.out.push(ins(JMP_EXIT, 0, 0, 0, 0));
    a.finish()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Interprets the subset of eBPF `program` emits.
    pub(crate) fn run(prog: &[BpfInsn], typ: u32, access: u32, major: u32, minor: u32) -> u64 {
        let ctx = [access << 16 | typ, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = prog[pc];
            let (dst, src) = (usize::from(i.regs & 0xf), usize::from(i.regs >> 4));
            pc += 1;
            let jump = |cond: bool, pc: &mut usize| {
                if cond {
                    *pc = (*pc as i64 + i64::from(i.off)) as usize;
                }
            };
            match i.code {
                LDX_MEM_W => {
                    assert_eq!(src, 1);
                    r[dst] = u64::from(ctx[i.off as usize / 4]);
                }
                ALU32_AND_K => r[dst] = u64::from((r[dst] as u32) & i.imm as u32),
                ALU32_RSH_K => r[dst] = u64::from((r[dst] as u32) >> i.imm),
                ALU64_MOV_K => r[dst] = i.imm as i64 as u64,
                JMP_JA => jump(true, &mut pc),
                JMP_JNE_K => jump(r[dst] != i.imm as i64 as u64, &mut pc),
                JMP_JSET_K => jump(r[dst] & (i.imm as i64 as u64) != 0, &mut pc),
                JMP_EXIT => return r[0],
                c => panic!("opcode {c:#x}"),
            }
        }
    }

    fn rules_of(json: &str) -> Vec<DeviceRule> {
        rules(&serde_json::from_str::<Vec<LinuxDeviceCgroup>>(json).unwrap()).unwrap()
    }

    const RW: u32 = ACC_READ | ACC_WRITE;

    #[test]
    fn deny_all_then_allow_listed() {
        let p = program(&rules_of(
            r#"[{"allow":false,"access":"rwm"},
                {"allow":true,"type":"c","major":1,"minor":3,"access":"rwm"},
                {"allow":true,"type":"c","major":136,"access":"rw"}]"#,
        ))
        .unwrap();
        assert_eq!(run(&p, DEV_CHAR, RW, 1, 3), 1); // /dev/null
        assert_eq!(run(&p, DEV_CHAR, ACC_MKNOD, 1, 3), 1);
        assert_eq!(run(&p, DEV_CHAR, RW, 1, 5), 0); // /dev/zero not listed
        assert_eq!(run(&p, DEV_BLOCK, ACC_READ, 1, 3), 0); // block 1:3 is another device
        assert_eq!(run(&p, DEV_CHAR, RW, 136, 7), 1); // any pts
        assert_eq!(run(&p, DEV_CHAR, ACC_MKNOD, 136, 7), 0); // but no mknod
    }

    #[test]
    fn later_rules_win_per_bit() {
        let p = program(&rules_of(
            r#"[{"allow":true,"type":"c","major":1,"minor":3,"access":"rwm"},
                {"allow":false,"type":"c","major":1,"minor":3,"access":"w"}]"#,
        ))
        .unwrap();
        assert_eq!(run(&p, DEV_CHAR, ACC_READ, 1, 3), 1);
        assert_eq!(run(&p, DEV_CHAR, ACC_WRITE, 1, 3), 0);
        assert_eq!(run(&p, DEV_CHAR, RW, 1, 3), 0);
        // Nothing covers other devices: allowed, as in a fresh v1 cgroup.
        assert_eq!(run(&p, DEV_CHAR, RW, 4, 1), 1);
        let p = program(&rules_of(
            r#"[{"allow":false,"type":"b","access":"rwm"},
                {"allow":true,"type":"b","major":8,"minor":0,"access":"r"}]"#,
        ))
        .unwrap();
        assert_eq!(run(&p, DEV_BLOCK, ACC_READ, 8, 0), 1);
        assert_eq!(run(&p, DEV_BLOCK, RW, 8, 0), 0);
        assert_eq!(run(&p, DEV_BLOCK, ACC_READ, 8, 1), 0);
    }

    #[test]
    fn invalid_rules_named() {
        let bad = |json: &str, what: &str| {
            let v: Vec<LinuxDeviceCgroup> = serde_json::from_str(json).unwrap();
            let e = rules(&v).unwrap_err().to_string();
            assert!(e.contains(what), "{e}");
        };
        bad(
            r#"[{"allow":true,"type":"c","major":-2,"access":"r"}]"#,
            "devices[0].major",
        );
        bad(r#"[{"allow":true,"access":"rwq"}]"#, "devices[0].access");
        bad(
            r#"[{"allow":true,"type":"p","access":"r"}]"#,
            "devices[0].type",
        );
    }
}
