//! The architectures Berth can translate seccomp profiles for, and their syscall tables.

use oci_spec::runtime::Arch;

use super::table_x86_64;

/// An architecture with a syscall-name table. The BPF program is built for exactly one:
/// the host's native ABI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SyscallArch {
    X86_64,
}

impl SyscallArch {
    /// The host's architecture, if Berth has a syscall table for it.
    pub fn host() -> Option<SyscallArch> {
        if cfg!(target_arch = "x86_64") {
            Some(SyscallArch::X86_64)
        } else {
            None
        }
    }

    /// The OCI name of the architecture (as in `architectures` and features.json).
    pub fn oci(self) -> Arch {
        match self {
            SyscallArch::X86_64 => Arch::ScmpArchX86_64,
        }
    }

    /// A short stable name, used in cache keys and messages.
    pub fn name(self) -> &'static str {
        match self {
            SyscallArch::X86_64 => "x86_64",
        }
    }

    pub(crate) fn target(self) -> seccompiler::TargetArch {
        match self {
            SyscallArch::X86_64 => seccompiler::TargetArch::x86_64,
        }
    }

    fn table(self) -> &'static [(&'static str, u32)] {
        match self {
            SyscallArch::X86_64 => table_x86_64::X86_64,
        }
    }

    /// The syscall number of `name` on this architecture, `None` when the kernel ABI
    /// has no such syscall (e.g. `chown32` on x86_64).
    pub fn syscall_nr(self, name: &str) -> Option<u32> {
        let t = self.table();
        t.binary_search_by(|(n, _)| n.as_bytes().cmp(name.as_bytes()))
            .ok()
            .map(|i| t[i].1)
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
    fn table_is_sorted_and_unique() {
        let t = table_x86_64::X86_64;
        for w in t.windows(2) {
            assert!(
                w[0].0.as_bytes() < w[1].0.as_bytes(),
                "{} >= {}",
                w[0].0,
                w[1].0
            );
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
    }
}
