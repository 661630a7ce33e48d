//! Small things a user meets first: private data files, the default listen address, and
//! answers that say which node gave them.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use berth_tests::cluster::{wait_until, Cluster, PATIENCE};
use serde_json::json;

use crate::put_acked;

#[test]
fn data_dir_is_0700_and_the_database_0600_and_no_other_user_can_read_a_value() {
    let mut c = Cluster::empty();
    // The harness' temp dir is private; open it so only berthd's own modes protect the data.
    std::fs::set_permissions(c.dir(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod the cluster dir");
    c.start_voters("private", 3);
    let leader = c.wait_for_agreed_leader(&c.all());
    put_acked(&c, leader, "/t/secret", "do-not-read-me");
    for k in c.all() {
        let dir = c.node(k).data_dir.join("orchestrator");
        let mode = std::fs::metadata(&dir)
            .unwrap_or_else(|e| panic!("stat {}: {e}", dir.display()))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "{} has mode {mode:o}", dir.display());
        let db = dir.join("raft.redb");
        let meta = std::fs::metadata(&db).unwrap_or_else(|e| panic!("stat {}: {e}", db.display()));
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o600,
            "{} has mode {:o}",
            db.display(),
            meta.mode()
        );
        assert_eq!(meta.uid(), 0, "{} belongs to root", db.display());
        // An unprivileged user cannot open the database (its bytes hold the values).
        let out = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "cat"])
            .arg(&db)
            .output()
            .expect("run setpriv (util-linux)");
        assert!(
            !out.status.success(),
            "nobody read {}: {} bytes",
            db.display(),
            out.stdout.len()
        );
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("do-not-read-me"),
            "the value leaked"
        );
    }
}

#[test]
fn nodes_listening_on_0_0_0_0_without_advertise_start_and_advertise_their_address() {
    let mut c = Cluster::empty();
    c.listen_unspecified = true;
    c.start_voters("defaults", 3);
    let leader = c.wait_for_agreed_leader(&c.all());
    put_acked(&c, leader, "/t/defaults", "ok");
    wait_until(
        "every node lists every machine at its routable address",
        PATIENCE,
        || {
            for k in c.all() {
                let m = c.node(k).machines()?;
                for j in c.all() {
                    let want = c.node(j).addr.to_string();
                    let got = m.get(&c.node(j).name).map(|v| v["addr"].clone());
                    if got != Some(json!(want)) {
                        return Err(format!(
                            "{} lists {} at {got:?}, want {want}",
                            c.node(k).name,
                            c.node(j).name
                        ));
                    }
                }
            }
            Ok(())
        },
    );
}

#[test]
fn leader_answer_names_the_node_that_answered() {
    let c = Cluster::start("whoami", 3, 0);
    let leader = c.wait_for_agreed_leader(&c.all());
    for k in c.all() {
        let v = c.node(k).get_json("/v1/leader").expect("leader");
        assert_eq!(v["name"], json!(c.node(k).name), "{v}");
        assert_eq!(v["leader"], json!(c.node(leader).name), "{v}");
    }
}
