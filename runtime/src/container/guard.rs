//! The undo list of `create` and `exec`: what they made so far is undone when the guard
//! is dropped, unless it was disarmed once everything succeeded. So no early return can
//! leave a child unreaped, the signal mask changed, or a cgroup, state directory or pid
//! file behind.

use std::path::PathBuf;

use crate::cgroups::{self, CgroupHandle};
use crate::sys;

/// What to undo, in the order [`Drop`] undoes it.
#[derive(Default)]
pub struct Guard {
    /// Processes we started: SIGKILLed and reaped.
    children: Vec<i32>,
    /// A cgroup we made: whatever runs in it is killed, then it is removed, with the
    /// directories we created for it.
    cgroup: Option<(CgroupHandle, Vec<PathBuf>)>,
    /// A state directory we made: removed.
    dir: Option<PathBuf>,
    /// Files we wrote (a pid file): removed.
    files: Vec<PathBuf>,
    /// The signal mask from before we blocked every signal: restored.
    sigmask: Option<libc::sigset_t>,
}

impl Guard {
    pub fn new() -> Guard {
        Guard::default()
    }

    /// A child to kill and reap on failure.
    pub fn child(&mut self, pid: i32) {
        self.children.push(pid);
    }

    /// `pid` has been reaped by the caller: nothing to undo for it.
    pub fn reaped(&mut self, pid: i32) {
        self.children.retain(|p| *p != pid);
    }

    /// The cgroup, once its directories exist (`created`: the ones this call made).
    pub fn cgroup(&mut self, handle: CgroupHandle, created: Vec<PathBuf>) {
        self.cgroup = Some((handle, created));
    }

    /// More directories of that cgroup, made later.
    pub fn cgroup_dirs(&mut self, more: Vec<PathBuf>) {
        if let Some((_, dirs)) = &mut self.cgroup {
            dirs.extend(more);
        }
    }

    pub fn dir(&mut self, path: PathBuf) {
        self.dir = Some(path);
    }

    pub fn file(&mut self, path: PathBuf) {
        self.files.push(path);
    }

    /// The signal mask to restore.
    pub fn sigmask(&mut self, old: libc::sigset_t) {
        self.sigmask = Some(old);
    }

    /// Everything succeeded: undo nothing, and leave the signal mask to the caller.
    pub fn disarm(&mut self) {
        // Field by field: assigning a new guard would drop, and so run, this one.
        self.children.clear();
        self.cgroup = None;
        self.dir = None;
        self.files.clear();
        self.sigmask = None;
    }

    /// Everything succeeded and the children are the caller's (reaped by it); the
    /// signal mask is still restored on drop.
    pub fn keep_children(&mut self) {
        self.children.clear();
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        for pid in self.children.drain(..) {
            let _ = sys::kill(pid, libc::SIGKILL);
            let _ = sys::wait(pid);
        }
        if let Some((cg, dirs)) = self.cgroup.take() {
            // Other processes may have joined meanwhile (none should); kill them too.
            if let Ok(pids) = cgroups::membership::pids(&cg) {
                for p in pids {
                    let _ = sys::kill(p, libc::SIGKILL);
                }
            }
            let _ = cgroups::membership::remove(&cg);
            cgroups::membership::remove_dirs(&dirs);
        }
        if let Some(d) = self.dir.take() {
            let _ = std::fs::remove_dir_all(d);
        }
        for f in self.files.drain(..) {
            let _ = std::fs::remove_file(f);
        }
        if let Some(mask) = self.sigmask.take() {
            let _ = sys::set_sigmask(&mask);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocked(sig: i32) -> bool {
        // SAFETY: sigset_t is plain data; sigprocmask with a null new set only reads.
        unsafe {
            let mut cur: libc::sigset_t = std::mem::zeroed();
            libc::sigprocmask(libc::SIG_BLOCK, std::ptr::null(), &mut cur);
            libc::sigismember(&cur, sig) == 1
        }
    }

    /// Dropped armed: the child is killed and reaped, the file removed, the mask
    /// restored. Disarmed: nothing is touched.
    #[test]
    fn undoes_on_drop_unless_disarmed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pid");
        std::fs::write(&file, "1").unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("1000")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let old = sys::block_all_signals().unwrap();
        assert!(blocked(libc::SIGUSR1));
        {
            let mut g = Guard::new();
            g.child(pid);
            g.file(file.clone());
            g.sigmask(old);
        }
        assert!(!blocked(libc::SIGUSR1), "the mask is restored");
        assert!(!file.exists(), "the file is removed");
        // Reaped by the guard: nothing left to wait for.
        assert!(child.try_wait().is_err() || !sys::is_child(pid));

        std::fs::write(&file, "1").unwrap();
        {
            let mut g = Guard::new();
            g.file(file.clone());
            g.disarm();
        }
        assert!(file.exists(), "a disarmed guard leaves everything");
    }
}
