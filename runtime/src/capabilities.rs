//! Linux capabilities: process.capabilities -> a plan of the five sets -> applied by
//! init around its uid change (through the `caps` crate).
//!
//! Names follow runc: the kernel's upper-case `CAP_*` spelling exactly. config.json
//! goes through oci-spec's parser (which also accepts `sys_admin` and `SYS_ADMIN`);
//! names given as strings (`exec --cap`) must be canonical. Unknown names are errors
//! naming them (runc only warns and drops them).
//!
//! # Order for init (the caller must follow it)
//! 1. [`drop_bounding`] while still uid 0 with CAP_SETPCAP: the bounding set shrinks
//!    to the plan's.
//! 2. [`keep_caps`]: PR_SET_KEEPCAPS, so the permitted set survives setuid away from 0.
//! 3. setgroups / setgid / setuid (the caller's code).
//! 4. [`apply_after_setuid`]: clears KEEPCAPS, sets inheritable, effective, permitted
//!    (in the only order the kernel accepts from both a root and a non-root start),
//!    then the ambient set.
//! 5. (no_new_privs, seccomp, execve follow.)
//!
//! A process without a uid change runs the same steps (2 and 4 are then harmless).

use std::str::FromStr;

use caps::{CapSet, Capability, CapsHashSet};
use oci_spec::runtime::LinuxCapabilities;

/// Errors of the capabilities layer.
#[derive(Debug, thiserror::Error)]
pub enum CapsError {
    #[error("unknown capability {name:?}{hint}")]
    Unknown { name: String, hint: String },
    #[error("process.capabilities: {cap} is in the {set} set but not in {need}; the kernel refuses that")]
    Inconsistent {
        cap: String,
        set: &'static str,
        need: &'static str,
    },
    #[error("{step}: {reason}")]
    Apply { step: String, reason: String },
}

/// A set of capabilities as the kernel's bit mask (bit n = capability number n).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CapMask(pub u64);

impl CapMask {
    pub fn contains(self, c: Capability) -> bool {
        self.0 & c.bitmask() != 0
    }
    fn insert(&mut self, c: Capability) {
        self.0 |= c.bitmask();
    }
    /// The capabilities in the mask, by number.
    pub fn caps(self) -> Vec<Capability> {
        all_known()
            .into_iter()
            .filter(|c| self.contains(*c))
            .collect()
    }
    /// Names, by capability number.
    pub fn names(self) -> Vec<String> {
        self.caps().iter().map(ToString::to_string).collect()
    }
    fn to_set(self) -> CapsHashSet {
        self.caps().into_iter().collect()
    }
}

/// The five capability sets of a process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CapsPlan {
    pub bounding: CapMask,
    pub effective: CapMask,
    pub permitted: CapMask,
    pub inheritable: CapMask,
    pub ambient: CapMask,
}

/// Every capability Berth knows, by number (also the `features` list).
pub fn all_known() -> Vec<Capability> {
    let mut v: Vec<Capability> = caps::all().into_iter().collect();
    v.sort_by_key(|c| c.index());
    v
}

/// Names of every known capability, by number, for features.json.
pub fn all_known_names() -> Vec<String> {
    all_known().iter().map(ToString::to_string).collect()
}

/// Parses one canonical capability name ("CAP_SYS_ADMIN").
pub fn parse_name(name: &str) -> Result<Capability, CapsError> {
    Capability::from_str(name).map_err(|_| {
        let canonical = caps::to_canonical(name);
        let hint = if canonical != name && Capability::from_str(&canonical).is_ok() {
            format!(" (did you mean {canonical}?)")
        } else {
            String::new()
        };
        CapsError::Unknown {
            name: name.to_string(),
            hint,
        }
    })
}

fn mask_of<S: AsRef<str>>(names: &[S]) -> Result<CapMask, CapsError> {
    let mut m = CapMask::default();
    for n in names {
        m.insert(parse_name(n.as_ref())?);
    }
    Ok(m)
}

impl CapsPlan {
    /// The plan from process.capabilities (absent sets are empty, as runc does).
    pub fn from_spec(c: &LinuxCapabilities) -> Result<CapsPlan, CapsError> {
        // oci-spec's Capability serialises to the canonical "CAP_*" name.
        let names =
            |s: &Option<oci_spec::runtime::Capabilities>| -> Result<Vec<String>, CapsError> {
                s.iter()
                    .flatten()
                    .map(|c| {
                        serde_json::to_value(c)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_string))
                            .ok_or_else(|| CapsError::Unknown {
                                name: format!("{c:?}"),
                                hint: String::new(),
                            })
                    })
                    .collect()
            };
        CapsPlan::from_names(
            &names(c.bounding())?,
            &names(c.effective())?,
            &names(c.permitted())?,
            &names(c.inheritable())?,
            &names(c.ambient())?,
        )
    }

    /// The plan from lists of names (bounding, effective, permitted, inheritable, ambient).
    pub fn from_names<S: AsRef<str>>(
        bounding: &[S],
        effective: &[S],
        permitted: &[S],
        inheritable: &[S],
        ambient: &[S],
    ) -> Result<CapsPlan, CapsError> {
        let mut plan = CapsPlan {
            bounding: mask_of(bounding)?,
            effective: mask_of(effective)?,
            permitted: mask_of(permitted)?,
            inheritable: mask_of(inheritable)?,
            ambient: mask_of(ambient)?,
        };
        // The kernel cannot raise an ambient capability that is not both permitted
        // and inheritable; runc warns and skips those (and `runc spec` itself asks for
        // such ambient caps), so they are dropped here rather than refused.
        plan.ambient = CapMask(plan.ambient.0 & plan.permitted.0 & plan.inheritable.0);
        plan.validate()?;
        Ok(plan)
    }

    /// `exec --cap`, as runc does it: adds `names` to the bounding, effective and
    /// permitted sets, and, when the process already has inheritable capabilities, to
    /// the inheritable and ambient sets too (so a non-root process keeps them across
    /// execve; ambient capabilities need the inheritable bit).
    pub fn add_exec_caps<S: AsRef<str>>(&mut self, names: &[S]) -> Result<(), CapsError> {
        let m = mask_of(names)?;
        let with_ambient = self.inheritable.0 != 0;
        for set in [&mut self.bounding, &mut self.effective, &mut self.permitted] {
            set.0 |= m.0;
        }
        if with_ambient {
            self.inheritable.0 |= m.0;
            self.ambient.0 |= m.0;
        }
        Ok(())
    }

    /// The same as [`CapsPlan::add_exec_caps`] (the name `cli/exec.rs` calls; the
    /// sets it changes are those of `add_exec_caps`, not every set).
    pub fn add_everywhere<S: AsRef<str>>(&mut self, names: &[S]) -> Result<(), CapsError> {
        self.add_exec_caps(names)
    }

    /// The kernel's rules, checked before any process exists: effective within
    /// permitted, ambient within permitted and inheritable.
    pub fn validate(&self) -> Result<(), CapsError> {
        let check =
            |sub: CapMask, sup: CapMask, set, need| match CapMask(sub.0 & !sup.0).caps().first() {
                Some(c) => Err(CapsError::Inconsistent {
                    cap: c.to_string(),
                    set,
                    need,
                }),
                None => Ok(()),
            };
        check(self.effective, self.permitted, "effective", "permitted")?;
        check(self.ambient, self.permitted, "ambient", "permitted")?;
        check(self.ambient, self.inheritable, "ambient", "inheritable")?;
        Ok(())
    }
}

fn apply_err(step: impl Into<String>) -> impl FnOnce(caps::errors::CapsError) -> CapsError {
    let step = step.into();
    move |e| CapsError::Apply {
        step,
        reason: e.to_string(),
    }
}

/// Step 1: drops from the bounding set every capability the kernel supports that the
/// plan does not keep. Needs CAP_SETPCAP (i.e. before the uid change).
pub fn drop_bounding(plan: &CapsPlan) -> Result<(), CapsError> {
    // PR_CAPBSET_DROP for every number not kept, up to the first the kernel does not
    // know (EINVAL): one call per dropped capability, no probing round before.
    for index in 0..64u32 {
        if plan.bounding.0 & (1u64 << index) != 0 {
            continue;
        }
        match crate::sys::capbset_drop(index) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => break,
            Err(e) => {
                return Err(CapsError::Apply {
                    step: format!("dropping capability {index} from the bounding set"),
                    reason: e.to_string(),
                })
            }
        }
    }
    Ok(())
}

/// Step 2: keep the permitted set across setuid (PR_SET_KEEPCAPS).
pub fn keep_caps() -> Result<(), CapsError> {
    caps::securebits::set_keepcaps(true).map_err(apply_err("setting PR_SET_KEEPCAPS"))
}

/// Step 4: after setuid: clears KEEPCAPS, sets inheritable, effective and permitted,
/// then raises the ambient set.
pub fn apply_after_setuid(plan: &CapsPlan) -> Result<(), CapsError> {
    caps::securebits::set_keepcaps(false).map_err(apply_err("clearing PR_SET_KEEPCAPS"))?;
    // Inheritable first, while permitted is still whole; then effective (a subset of
    // the still-whole permitted); permitted last, once effective fits inside it.
    caps::set(None, CapSet::Inheritable, &plan.inheritable.to_set())
        .map_err(apply_err("setting the inheritable set"))?;
    caps::set(None, CapSet::Effective, &plan.effective.to_set())
        .map_err(apply_err("setting the effective set"))?;
    caps::set(None, CapSet::Permitted, &plan.permitted.to_set())
        .map_err(apply_err("setting the permitted set"))?;
    caps::clear(None, CapSet::Ambient).map_err(apply_err("clearing the ambient set"))?;
    for c in plan.ambient.caps() {
        caps::raise(None, CapSet::Ambient, c)
            .map_err(apply_err(format!("raising {c} in the ambient set")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bit(c: Capability) -> u64 {
        c.bitmask()
    }

    #[test]
    fn plan_from_spec() {
        let spec: LinuxCapabilities = serde_json::from_str(
            r#"{"bounding":["CAP_CHOWN","CAP_KILL","CAP_NET_BIND_SERVICE"],
                "effective":["CAP_CHOWN","CAP_KILL"],
                "permitted":["CAP_CHOWN","CAP_KILL","CAP_NET_BIND_SERVICE"],
                "inheritable":["CAP_NET_BIND_SERVICE"],
                "ambient":["CAP_NET_BIND_SERVICE"]}"#,
        )
        .unwrap();
        let p = CapsPlan::from_spec(&spec).unwrap();
        let chown = bit(Capability::CAP_CHOWN);
        let kill = bit(Capability::CAP_KILL);
        let nbs = bit(Capability::CAP_NET_BIND_SERVICE);
        assert_eq!(p.bounding, CapMask(chown | kill | nbs));
        assert_eq!(p.effective, CapMask(chown | kill));
        assert_eq!(p.permitted, CapMask(chown | kill | nbs));
        assert_eq!(p.inheritable, CapMask(nbs));
        assert_eq!(p.ambient, CapMask(nbs));
        assert_eq!(p.effective.names(), vec!["CAP_CHOWN", "CAP_KILL"]);
        // Absent sets are empty.
        let p = CapsPlan::from_spec(&serde_json::from_str(r#"{}"#).unwrap()).unwrap();
        assert_eq!(p, CapsPlan::default());
    }

    #[test]
    fn names_are_canonical_and_unknown_is_named() {
        assert_eq!(
            parse_name("CAP_SYS_ADMIN").unwrap(),
            Capability::CAP_SYS_ADMIN
        );
        let e = parse_name("cap_sys_admin").unwrap_err().to_string();
        assert!(
            e.contains("\"cap_sys_admin\"") && e.contains("CAP_SYS_ADMIN"),
            "{e}"
        );
        let e = parse_name("CAP_NOPE").unwrap_err().to_string();
        assert_eq!(e, "unknown capability \"CAP_NOPE\"");
        let e = CapsPlan::from_names(&["CAP_CHOWN"], &[], &[], &[], &["CAP_BOGUS"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("CAP_BOGUS"), "{e}");
    }

    #[test]
    fn inconsistent_sets_refused() {
        let e = CapsPlan::from_names(&["CAP_KILL"], &["CAP_KILL"], &[], &[], &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("CAP_KILL") && e.contains("effective") && e.contains("permitted"),
            "{e}"
        );
    }

    #[test]
    fn ambient_outside_inheritable_dropped_like_runc() {
        // `runc spec` asks for ambient caps that are not inheritable; runc skips them.
        let p =
            CapsPlan::from_names(&["CAP_KILL"], &[], &["CAP_KILL"], &[], &["CAP_KILL"]).unwrap();
        assert_eq!(p.ambient, CapMask(0));
        let p = CapsPlan::from_names(
            &["CAP_KILL"],
            &[],
            &["CAP_KILL"],
            &["CAP_KILL"],
            &["CAP_KILL"],
        )
        .unwrap();
        assert_eq!(p.ambient, CapMask(bit(Capability::CAP_KILL)));
    }

    #[test]
    fn exec_cap_like_runc() {
        let raw = CapMask(bit(Capability::CAP_NET_RAW));
        let mut p = CapsPlan::from_names::<&str>(&[], &[], &[], &[], &[]).unwrap();
        p.add_exec_caps(&["CAP_NET_RAW"]).unwrap();
        let none = CapMask::default();
        assert_eq!(
            p,
            CapsPlan {
                bounding: raw,
                effective: raw,
                permitted: raw,
                inheritable: none,
                ambient: none
            }
        );
        let kill = bit(Capability::CAP_KILL);
        let mut p =
            CapsPlan::from_names(&["CAP_KILL"], &[], &["CAP_KILL"], &["CAP_KILL"], &[]).unwrap();
        p.add_exec_caps(&["CAP_NET_RAW"]).unwrap();
        assert_eq!(p.inheritable, CapMask(kill | raw.0));
        assert_eq!(p.ambient, raw);
        p.validate().unwrap();
        assert!(p
            .add_exec_caps(&["NET_RAW"])
            .unwrap_err()
            .to_string()
            .contains("CAP_NET_RAW"));
    }

    #[test]
    fn all_known_is_ordered_and_parses_back() {
        let names = all_known_names();
        assert_eq!(names[0], "CAP_CHOWN");
        assert!(names.contains(&"CAP_CHECKPOINT_RESTORE".to_string()));
        for (i, n) in names.iter().enumerate() {
            assert_eq!(usize::from(parse_name(n).unwrap().index()), i, "{n}");
        }
    }

    /// Reads CapBnd/CapEff/CapPrm/CapInh/CapAmb of the calling thread.
    fn thread_status() -> String {
        let s = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        s.lines()
            .filter(|l| l.starts_with("Cap") || l.starts_with("Uid:"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Runs the apply sequence (with a uid change to 65534) in a fresh process (setuid
    /// is process-wide) and checks the kernel's view of its capability sets.
    #[test]
    fn apply_sequence_in_child_process() {
        if std::env::var_os("BERTH_CAPS_CHILD").is_some() {
            let p = CapsPlan::from_names(
                &["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                &["CAP_CHOWN", "CAP_NET_BIND_SERVICE"],
                &["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                &["CAP_NET_BIND_SERVICE"],
                &["CAP_NET_BIND_SERVICE"],
            )
            .unwrap();
            drop_bounding(&p).unwrap();
            keep_caps().unwrap();
            // Only this thread: raw setresuid (glibc's setuid would change every thread).
            // SAFETY: plain syscall with integer arguments.
            let r = unsafe { libc::syscall(libc::SYS_setresuid, 65534, 65534, 65534) };
            assert_eq!(r, 0, "setresuid: {}", std::io::Error::last_os_error());
            apply_after_setuid(&p).unwrap();
            println!("STATUS-BEGIN\n{}\nSTATUS-END", thread_status());
            return;
        }
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            panic!("apply_sequence_in_child_process needs root (run the tests as root)");
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "capabilities::tests::apply_sequence_in_child_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("BERTH_CAPS_CHILD", "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "child failed: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let status = text
            .split("STATUS-BEGIN\n")
            .nth(1)
            .and_then(|s| s.split("\nSTATUS-END").next())
            .unwrap_or_else(|| panic!("no status in {text}"));
        let field = |name: &str| -> u64 {
            let line = status.lines().find(|l| l.starts_with(name)).unwrap();
            u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
        };
        let chown = bit(Capability::CAP_CHOWN);
        let kill = bit(Capability::CAP_KILL);
        let nbs = bit(Capability::CAP_NET_BIND_SERVICE);
        assert!(status.contains("Uid:\t65534\t65534\t65534"), "{status}");
        assert_eq!(field("CapBnd:"), chown | kill | nbs, "{status}");
        assert_eq!(field("CapEff:"), chown | nbs, "{status}");
        assert_eq!(field("CapPrm:"), chown | kill | nbs, "{status}");
        assert_eq!(field("CapInh:"), nbs, "{status}");
        assert_eq!(field("CapAmb:"), nbs, "{status}");
    }
}
