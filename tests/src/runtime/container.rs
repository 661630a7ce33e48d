//! The container guard: runs the verbs on one container and force-deletes it on drop.

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use super::{assert_no_leftovers, wait_for, Bundle, Outcome, Running, Runtime, COMMAND_TIMEOUT};

/// A container made from a bundle. Drop force-deletes it (ignoring errors) and then
/// the bundle removes its directory.
pub struct Container {
    pub rt: Runtime,
    pub bundle: Bundle,
    pub id: String,
}

impl Container {
    /// Writes the bundle's config and takes ownership of it.
    pub fn new(rt: &Runtime, bundle: Bundle) -> Container {
        bundle.write();
        Container {
            rt: rt.clone(),
            id: bundle.id.clone(),
            bundle,
        }
    }

    /// Rewrites config.json after further edits to `self.bundle.config`.
    pub fn rewrite(&self) {
        self.bundle.write();
    }

    /// File receiving the container's (and the creating command's) stdout.
    pub fn stdout_path(&self) -> PathBuf {
        self.bundle.path().join("container.stdout")
    }

    pub fn stderr_path(&self) -> PathBuf {
        self.bundle.path().join("container.stderr")
    }

    /// Starts a verb whose stdio the container inherits (create, run).
    pub fn spawn(&self, args: &[&str]) -> Running {
        Running::spawn(
            &mut self.rt.command(args),
            Some(&self.stdout_path()),
            Some(&self.stderr_path()),
        )
    }

    /// `create --bundle B <id>` (the container's stdio goes to the container files).
    pub fn create(&self) -> Outcome {
        self.spawn(&["create", "--bundle", self.bundle.path_str(), &self.id])
            .wait(COMMAND_TIMEOUT)
    }

    /// `run --bundle B <id>` in the foreground, to completion.
    pub fn run(&self) -> Outcome {
        self.spawn(&["run", "--bundle", self.bundle.path_str(), &self.id])
            .wait(COMMAND_TIMEOUT)
    }

    /// Runs another verb on this container: `<verb> <extra...> <id> <after...>`.
    pub fn verb(&self, verb: &str, extra: &[&str], after: &[&str]) -> Outcome {
        let mut args = vec![verb];
        args.extend_from_slice(extra);
        args.push(&self.id);
        args.extend_from_slice(after);
        self.rt.run(&args)
    }

    pub fn start(&self) -> Outcome {
        self.verb("start", &[], &[])
    }

    pub fn kill(&self, signal: &str) -> Outcome {
        self.verb("kill", &[], &[signal])
    }

    pub fn delete(&self, force: bool) -> Outcome {
        self.verb("delete", if force { &["--force"] } else { &[] }, &[])
    }

    pub fn state(&self) -> Value {
        self.rt.state(&self.id)
    }

    pub fn wait_status(&self, want: &str) -> Value {
        self.rt.wait_status(&self.id, want)
    }

    /// The host pid from `state`.
    pub fn pid(&self) -> i32 {
        let state = self.state();
        let pid = state["pid"]
            .as_i64()
            .unwrap_or_else(|| panic!("state has no pid: {state}"));
        i32::try_from(pid).expect("pid fits i32")
    }

    /// create + start, panicking on failure.
    pub fn create_and_start(&self) {
        self.create().ok();
        self.start().ok();
    }

    /// What the container has printed so far on stdout.
    pub fn stdout(&self) -> String {
        fs::read_to_string(self.stdout_path()).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(self.stderr_path()).unwrap_or_default()
    }

    /// Waits until the container's stdout contains `text`; returns all of stdout.
    pub fn wait_stdout(&self, text: &str) -> String {
        wait_for(&format!("{text:?} on the stdout of {}", self.id), || {
            let out = self.stdout();
            out.contains(text).then_some(out)
        })
    }

    /// Creates, starts, waits for the container to stop, deletes it and returns its
    /// stdout; panics (with stderr) on any failure.
    pub fn output(&self) -> String {
        self.create_and_start();
        self.wait_status("stopped");
        self.delete(false).ok();
        self.stdout()
    }

    pub fn cgroup_dir(&self, controller: &str) -> PathBuf {
        self.bundle.cgroup_dir(controller)
    }

    /// Leftovers after the container is gone.
    #[track_caller]
    pub fn assert_no_leftovers(&self) {
        assert_no_leftovers(&self.rt, &self.id, &self.bundle);
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // Never panic here: this also runs while a failed test unwinds.
        if self.rt.root.join(&self.id).exists() {
            let mut cmd = self.rt.command(&["delete", "--force", &self.id]);
            if let Err(e) =
                Running::spawn(&mut cmd, None, None).try_wait_for(Duration::from_secs(30))
            {
                eprintln!("cleanup of container {}: {e}", self.id);
            }
        }
    }
}
