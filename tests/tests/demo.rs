//! The README's first command, `scripts/demo`, in its CI mode: the whole cluster story with
//! each step asserted by the script (a leader, the unit placed by its constraint, its page
//! fetched from a host that does not run it, its move after its host is killed, its journal)
//! and nothing left behind afterwards. Uses the workspace's built binaries.

use std::process::Command;

#[test]
fn the_cluster_demo_runs_end_to_end_and_leaves_nothing_behind() {
    berth_tests::require_root();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf();
    let bin = berth_tests::workspace_bin("berthd");
    let out = Command::new(root.join("scripts/demo"))
        .arg("--ci")
        .env("BERTH_BIN_DIR", bin.parent().expect("bin dir").as_os_str())
        .output()
        .expect("run scripts/demo --ci");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "scripts/demo --ci failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("hello from a Berth unit"), "{stdout}");
    assert!(stdout.contains("ms after the kill"), "{stdout}");
    assert!(stdout.contains("nothing left behind"), "{stdout}");
}
