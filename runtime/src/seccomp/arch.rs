//! The syscall ABIs Berth can translate seccomp profiles for, and their syscall tables.
//!
//! An x86_64 kernel runs three ABIs, all of which a container's programs may use: the
//! native one, i386 (`int 0x80`, a 32-bit program) and x32 (native instructions with
//! 32-bit pointers: the native audit arch with bit 30 set in the syscall number).
//! Podman's and Docker's default profiles list all three.

use oci_spec::runtime::Arch;

use super::{table_x32, table_x86, table_x86_64};

/// __X32_SYSCALL_BIT: set in the number of every x32 syscall.
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// AUDIT_ARCH_X86_64, seccomp_data.arch of native and x32 syscalls.
pub const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// AUDIT_ARCH_I386, seccomp_data.arch of i386 syscalls.
pub const AUDIT_ARCH_I386: u32 = 0x4000_0003;

/// An ABI with a syscall-name table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SyscallArch {
    X86_64,
    X86,
    X32,
}

impl SyscallArch {
    /// The host's native ABI, if Berth has a syscall table for it.
    pub fn host() -> Option<SyscallArch> {
        if cfg!(target_arch = "x86_64") {
            Some(SyscallArch::X86_64)
        } else {
            None
        }
    }

    /// Every ABI the host's kernel runs that Berth can filter, native first.
    pub fn host_abis() -> Vec<SyscallArch> {
        match SyscallArch::host() {
            Some(SyscallArch::X86_64) => {
                vec![SyscallArch::X86_64, SyscallArch::X86, SyscallArch::X32]
            }
            Some(other) => vec![other],
            None => Vec::new(),
        }
    }

    /// The ABI named by an OCI architecture, if Berth has it.
    pub fn from_oci(a: &Arch) -> Option<SyscallArch> {
        match a {
            Arch::ScmpArchX86_64 => Some(SyscallArch::X86_64),
            Arch::ScmpArchX86 => Some(SyscallArch::X86),
            Arch::ScmpArchX32 => Some(SyscallArch::X32),
            _ => None,
        }
    }

    /// The OCI name of the ABI (as in `architectures` and features.json).
    pub fn oci(self) -> Arch {
        match self {
            SyscallArch::X86_64 => Arch::ScmpArchX86_64,
            SyscallArch::X86 => Arch::ScmpArchX86,
            SyscallArch::X32 => Arch::ScmpArchX32,
        }
    }

    /// A short stable name, used in cache keys and messages.
    pub fn name(self) -> &'static str {
        match self {
            SyscallArch::X86_64 => "x86_64",
            SyscallArch::X86 => "x86",
            SyscallArch::X32 => "x32",
        }
    }

    /// seccomp_data.arch for a syscall through this ABI.
    pub fn audit_arch(self) -> u32 {
        match self {
            SyscallArch::X86_64 | SyscallArch::X32 => AUDIT_ARCH_X86_64,
            SyscallArch::X86 => AUDIT_ARCH_I386,
        }
    }

    fn table(self) -> &'static [(&'static str, u32)] {
        match self {
            SyscallArch::X86_64 => table_x86_64::X86_64,
            SyscallArch::X86 => table_x86::X86,
            SyscallArch::X32 => table_x32::X32,
        }
    }

    /// The syscall number of `name` on this ABI as seccomp_data.nr carries it (x32's
    /// with its bit), `None` when the ABI has no such syscall (e.g. `chown32` on x86_64).
    pub fn syscall_nr(self, name: &str) -> Option<u32> {
        let t = self.table();
        let nr = t
            .binary_search_by(|(n, _)| n.as_bytes().cmp(name.as_bytes()))
            .ok()
            .map(|i| t[i].1)?;
        Some(match self {
            SyscallArch::X32 => nr | X32_SYSCALL_BIT,
            _ => nr,
        })
    }

    /// The number of entries in the table (part of the cache key: a new table means new BPF).
    pub fn table_len(self) -> usize {
        self.table().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_sorted_and_unique() {
        for t in [table_x86_64::X86_64, table_x86::X86, table_x32::X32] {
            for w in t.windows(2) {
                assert!(
                    w[0].0.as_bytes() < w[1].0.as_bytes(),
                    "{} >= {}",
                    w[0].0,
                    w[1].0
                );
            }
        }
    }

    #[test]
    fn known_numbers() {
        let a = SyscallArch::X86_64;
        assert_eq!(a.syscall_nr("read"), Some(0));
        assert_eq!(a.syscall_nr("mkdir"), Some(83));
        assert_eq!(a.syscall_nr("_sysctl"), Some(156));
        assert_eq!(a.syscall_nr("clone3"), Some(435));
        assert_eq!(a.syscall_nr("mseal"), Some(462));
        assert_eq!(a.syscall_nr("chown32"), None);
        assert_eq!(a.syscall_nr(""), None);
        let x86 = SyscallArch::X86;
        assert_eq!(x86.syscall_nr("read"), Some(3));
        assert_eq!(x86.syscall_nr("socketcall"), Some(102));
        assert_eq!(x86.syscall_nr("chown32"), Some(212));
        assert_eq!(x86.syscall_nr("mseal"), Some(462));
        assert_eq!(x86.syscall_nr("map_shadow_stack"), None);
        let x32 = SyscallArch::X32;
        assert_eq!(x32.syscall_nr("read"), Some(X32_SYSCALL_BIT));
        assert_eq!(x32.syscall_nr("rt_sigaction"), Some(X32_SYSCALL_BIT | 512));
        assert_eq!(x32.syscall_nr("execveat"), Some(X32_SYSCALL_BIT | 545));
        assert_eq!(x32.syscall_nr("mseal"), Some(X32_SYSCALL_BIT | 462));
        assert_eq!(x32.syscall_nr("map_shadow_stack"), None);
    }
}
