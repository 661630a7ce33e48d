//! Bundles: a busybox rootfs plus a config.json from `<runtime> spec`, edited as JSON.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::{json, Value};
use tempfile::TempDir;

use super::{mounts_under, open_tempdir, run_command, Runtime, CGROUP_PARENT};

fn busybox_applets() -> &'static (PathBuf, Vec<String>) {
    static APPLETS: OnceLock<(PathBuf, Vec<String>)> = OnceLock::new();
    APPLETS.get_or_init(|| {
        let path = crate::require_program("busybox", "busybox-static");
        let path = fs::canonicalize(&path).expect("resolve busybox");
        let out = run_command(Command::new(&path).arg("--list"));
        out.ok();
        let applets = out
            .stdout
            .lines()
            .map(str::trim)
            .filter(|a| !a.is_empty() && *a != "busybox");
        (path, applets.map(String::from).collect())
    })
}

/// Builds a busybox rootfs at `rootfs`: /bin/busybox plus a symlink per applet, the usual
/// directories, and /etc/passwd and /etc/group with root, a user 1000 and nobody.
pub fn make_busybox_rootfs(rootfs: &Path) {
    let (busybox, applets) = busybox_applets();
    for dir in [
        "bin", "proc", "sys", "dev", "etc", "root", "home", "var", "run", "mnt", "tmp",
    ] {
        fs::create_dir_all(rootfs.join(dir)).expect("mkdir in rootfs");
        fs::set_permissions(rootfs.join(dir), fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    fs::set_permissions(rootfs, fs::Permissions::from_mode(0o755)).expect("chmod rootfs");
    fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777)).expect("chmod tmp");
    fs::copy(busybox, rootfs.join("bin/busybox")).expect("copy busybox");
    fs::set_permissions(
        rootfs.join("bin/busybox"),
        fs::Permissions::from_mode(0o755),
    )
    .expect("chmod busybox");
    for applet in applets {
        symlink("busybox", rootfs.join("bin").join(applet)).expect("applet symlink");
    }
    fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )
    .expect("write passwd");
    fs::write(
        rootfs.join("etc/group"),
        "root:x:0:\nwheel:x:10:\ndialout:x:20:\nuser:x:1000:\nnogroup:x:65534:\n",
    )
    .expect("write group");
}

/// A bundle directory: a busybox rootfs and a config.json being edited as JSON.
pub struct Bundle {
    dir: Option<TempDir>,
    pub id: String,
    pub config: Value,
}

impl Bundle {
    /// Creates the rootfs, runs `<runtime> spec --bundle`, and normalises the config:
    /// terminal off, args `true`, namespaces pid/network/ipc/uts/mount, cgroupsPath
    /// `/berth-test/<id>`.
    pub fn new(rt: &Runtime, id: &str) -> Bundle {
        let dir = open_tempdir("berth-bundle-");
        make_busybox_rootfs(&dir.path().join("rootfs"));
        let bundle_arg = dir.path().to_str().expect("utf-8 temp path");
        rt.run(&["spec", "--bundle", bundle_arg]).ok();
        let text =
            fs::read_to_string(dir.path().join("config.json")).expect("spec wrote config.json");
        let mut config: Value = serde_json::from_str(&text).expect("spec's config.json is JSON");
        config["process"]["terminal"] = json!(false);
        config["process"]["args"] = json!(["true"]);
        config["linux"]["namespaces"] = json!([{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]);
        config["linux"]["cgroupsPath"] = json!(format!("/{CGROUP_PARENT}/{id}"));
        Bundle {
            dir: Some(dir),
            id: id.to_string(),
            config,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir
            .as_ref()
            .expect("bundle dir present until drop")
            .path()
    }

    pub fn path_str(&self) -> &str {
        self.path().to_str().expect("utf-8 bundle path")
    }

    pub fn rootfs(&self) -> PathBuf {
        self.path().join("rootfs")
    }

    /// `process.args`.
    pub fn args(&mut self, args: &[&str]) -> &mut Self {
        self.config["process"]["args"] = json!(args);
        self
    }

    /// `process.args = ["sh", "-c", script]`.
    pub fn sh(&mut self, script: &str) -> &mut Self {
        self.args(&["sh", "-c", script])
    }

    /// Sets the value at a JSON pointer (`/process/user/uid`), creating objects on the way.
    pub fn set(&mut self, pointer: &str, value: Value) -> &mut Self {
        let mut node = &mut self.config;
        for key in pointer.trim_start_matches('/').split('/') {
            if !node.is_object() {
                *node = json!({});
            }
            node = node
                .as_object_mut()
                .expect("object")
                .entry(key.to_string())
                .or_insert(Value::Null);
        }
        *node = value;
        self
    }

    /// Appends `value` to the array at `pointer` (created when absent).
    pub fn push(&mut self, pointer: &str, value: Value) -> &mut Self {
        if self.config.pointer(pointer).is_none_or(|v| !v.is_array()) {
            self.set(pointer, json!([]));
        }
        self.config
            .pointer_mut(pointer)
            .and_then(Value::as_array_mut)
            .expect("array just made")
            .push(value);
        self
    }

    /// Inserts `value` at `index` of the array at `pointer` (which must exist).
    pub fn insert(&mut self, pointer: &str, index: usize, value: Value) -> &mut Self {
        self.config
            .pointer_mut(pointer)
            .and_then(Value::as_array_mut)
            .unwrap_or_else(|| panic!("no array at {pointer}"))
            .insert(index, value);
        self
    }

    /// Replaces the namespace of type `kind` (adding it if absent); `path` joins one.
    pub fn namespace(&mut self, kind: &str, path: Option<&str>) -> &mut Self {
        self.remove_namespace(kind);
        let ns = match path {
            Some(p) => json!({"type": kind, "path": p}),
            None => json!({"type": kind}),
        };
        self.push("/linux/namespaces", ns)
    }

    /// A new user namespace whose uids and gids 0..65536 are the host's from `host_id`.
    pub fn user_namespace(&mut self, host_id: u32) -> &mut Self {
        let map = json!([{"containerID": 0, "hostID": host_id, "size": 65536}]);
        self.namespace("user", None);
        self.set("/linux/uidMappings", map.clone());
        self.set("/linux/gidMappings", map)
    }

    /// The device-rule scenario both cgroup versions are tested with: deny every device
    /// but c 10:200 (runc's defaults and the spec's own nodes stay allowed), and a
    /// script that tries /dev/mem (1:1), the host console (5:1, which runc's current
    /// defaults no longer allow), a second /dev/null (1:3) and c 10:200 in a tmpfs;
    /// [`super::assert_only_listed_devices`] reads its output.
    pub fn only_listed_devices(&mut self) -> &mut Self {
        let caps = ["CAP_MKNOD", "CAP_DAC_OVERRIDE"];
        self.set(
            "/process/capabilities",
            json!({"bounding": caps, "effective": caps, "permitted": caps}),
        );
        self.push(
            "/mounts",
            json!({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs"}),
        );
        self.set(
            "/linux/resources/devices",
            json!([
                {"allow": false, "access": "rwm"},
                {"allow": true, "type": "c", "major": 10, "minor": 200, "access": "rwm"}
            ]),
        );
        self.sh(
            "(mknod /scratch/mem c 1 1 && head -c1 /scratch/mem) 2>&1; echo mem-done; \
             (mknod /scratch/console c 5 1 && : </scratch/console && echo console-open) 2>&1; \
             echo console-done; \
             mknod /scratch/null2 c 1 3 && echo x > /scratch/null2 && echo null2-ok; \
             mknod /scratch/tun c 10 200 && echo tun-ok",
        )
    }

    pub fn remove_namespace(&mut self, kind: &str) -> &mut Self {
        if let Some(list) = self
            .config
            .pointer_mut("/linux/namespaces")
            .and_then(Value::as_array_mut)
        {
            list.retain(|ns| ns["type"] != kind);
        }
        self
    }

    /// The host directory of this container's cgroup for a v1 controller (or `unified`).
    pub fn cgroup_dir(&self, controller: &str) -> PathBuf {
        Path::new("/sys/fs/cgroup")
            .join(controller)
            .join(CGROUP_PARENT)
            .join(&self.id)
    }

    /// Writes config.json.
    pub fn write(&self) {
        let text = serde_json::to_string_pretty(&self.config).expect("serialise config");
        fs::write(self.path().join("config.json"), text).expect("write config.json");
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else { return };
        // Never recurse through a mount that leaked into the host: detach what is left
        // under the bundle, and keep the directory if anything is still mounted there.
        let mounts = mounts_under(dir.path());
        for mountpoint in mounts.iter().rev() {
            let _ = nix::mount::umount2(mountpoint.as_path(), nix::mount::MntFlags::MNT_DETACH);
        }
        if mounts_under(dir.path()).is_empty() {
            drop(dir);
        } else {
            let kept = dir.keep();
            eprintln!("bundle {} still has mounts; left in place", kept.display());
        }
    }
}
