//! Chain logic against a recording fake runner (no root, no plugins).

use std::cell::RefCell;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::*;
use crate::error::PluginError;

/// Each ADD appends an interface named after the plugin to `prevResult`'s list, so the
/// threading of results is visible in the final one.
struct Fake {
    calls: RefCell<Vec<(Command, String, Value)>>,
    fail: HashSet<(&'static str, &'static str)>,
    /// Records directory, to check that ADD's record exists when a plugin runs.
    records: PathBuf,
    record_seen: RefCell<Vec<bool>>,
}

impl Fake {
    fn new(records: &Path) -> Self {
        Fake {
            calls: RefCell::new(vec![]),
            fail: HashSet::new(),
            records: records.to_path_buf(),
            record_seen: RefCell::new(vec![]),
        }
    }
    fn failing(mut self, cmd: &'static str, plugin: &'static str) -> Self {
        self.fail.insert((cmd, plugin));
        self
    }
    fn calls(&self) -> Vec<String> {
        self.calls
            .borrow()
            .iter()
            .map(|(c, p, _)| format!("{} {p}", c.as_str()))
            .collect()
    }
}

impl PluginRunner for &Fake {
    fn run(&self, inv: &Invocation) -> Result<Vec<u8>, Error> {
        let stdin: Value = serde_json::from_slice(&inv.stdin).unwrap();
        self.calls
            .borrow_mut()
            .push((inv.command, inv.plugin.clone(), stdin.clone()));
        if inv.command == Command::Add {
            let rec = self.records.join("net1/c1@eth0.json");
            self.record_seen.borrow_mut().push(rec.is_file());
        }
        if self
            .fail
            .contains(&(inv.command.as_str(), inv.plugin.as_str()))
        {
            return Err(Error::Plugin {
                plugin: inv.plugin.clone(),
                command: inv.command.as_str(),
                network: inv.network.clone(),
                error: Box::new(PluginError {
                    code: 11,
                    msg: format!("{} refused", inv.plugin),
                    details: String::new(),
                }),
                stderr: String::new(),
            });
        }
        match inv.command {
            Command::Add => {
                let mut ifs = stdin
                    .get("prevResult")
                    .and_then(|p| p["interfaces"].as_array().cloned())
                    .unwrap_or_default();
                ifs.push(json!({"name": inv.plugin, "sandbox": "/run/netns/c1"}));
                let mut ip = json!({"address": "10.88.0.2/24", "interface": 0});
                if stdin["cniVersion"] != "1.0.0" {
                    ip["version"] = json!("4");
                }
                let out =
                    json!({"cniVersion": stdin["cniVersion"], "interfaces": ifs, "ips": [ip]});
                Ok(out.to_string().into_bytes())
            }
            Command::Version => {
                Ok(br#"{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}"#.to_vec())
            }
            _ => Ok(vec![]),
        }
    }
}

fn net(version: &str) -> NetworkConfigList {
    let doc = format!(
        r#"{{"cniVersion":"{version}","name":"net1","plugins":[
            {{"type":"bridge"}},{{"type":"portmap","capabilities":{{"portMappings":true}}}},{{"type":"loopback"}}]}}"#
    );
    NetworkConfigList::from_conflist(doc.as_bytes(), None).unwrap()
}

fn att() -> Attachment {
    Attachment {
        container_id: "c1".into(),
        netns: "/run/netns/c1".into(),
        ifname: "eth0".into(),
        args: vec![],
        runtime_config: Default::default(),
    }
}

fn key() -> AttachmentKey {
    AttachmentKey {
        network: "net1".into(),
        container_id: "c1".into(),
        ifname: "eth0".into(),
    }
}

fn invoker<'a>(fake: &'a Fake, dir: &Path) -> Invoker<&'a Fake> {
    Invoker::with_runner(fake, vec!["/usr/lib/cni".into()], dir.to_path_buf())
}

#[test]
fn add_threads_prev_result_and_records_before_running() {
    let d = tempfile::tempdir().unwrap();
    let fake = Fake::new(d.path());
    let inv = invoker(&fake, d.path());
    let result = inv.add(&net("1.0.0"), &att()).unwrap();
    assert_eq!(fake.calls(), ["ADD bridge", "ADD portmap", "ADD loopback"]);
    let names: Vec<&str> = result.interfaces.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["bridge", "portmap", "loopback"]);
    let calls = fake.calls.borrow();
    assert!(calls[0].2.get("prevResult").is_none());
    assert_eq!(calls[1].2["prevResult"]["interfaces"][0]["name"], "bridge");
    assert_eq!(calls[2].2["prevResult"]["interfaces"][1]["name"], "portmap");
    assert_eq!(*fake.record_seen.borrow(), [true, true, true]);
    let rec = inv.records().read(&key()).unwrap().unwrap();
    assert!(rec.complete);
    assert_eq!(rec.result.as_ref(), Some(&result.raw));
    assert_eq!(inv.attachments().unwrap().len(), 1);
}

#[test]
fn add_twice_is_refused_and_runs_nothing() {
    let d = tempfile::tempdir().unwrap();
    let fake = Fake::new(d.path());
    let inv = invoker(&fake, d.path());
    inv.add(&net("1.0.0"), &att()).unwrap();
    let e = inv.add(&net("1.0.0"), &att()).unwrap_err().to_string();
    assert!(e.contains("already has eth0 on network net1"), "{e}");
    assert_eq!(fake.calls().len(), 3);
}

#[test]
fn del_runs_in_reverse_with_the_cached_result_and_forgets() {
    let d = tempfile::tempdir().unwrap();
    let fake = Fake::new(d.path());
    let inv = invoker(&fake, d.path());
    let result = inv.add(&net("1.0.0"), &att()).unwrap();
    fake.calls.borrow_mut().clear();
    assert!(inv.del(&key()).unwrap());
    assert_eq!(fake.calls(), ["DEL loopback", "DEL portmap", "DEL bridge"]);
    for (_, _, stdin) in fake.calls.borrow().iter() {
        assert_eq!(stdin["prevResult"], result.raw);
    }
    assert_eq!(inv.records().read(&key()).unwrap(), None);
    assert!(!inv.del(&key()).unwrap(), "second DEL finds nothing");
}

#[test]
fn del_of_a_031_network_passes_no_prev_result() {
    let d = tempfile::tempdir().unwrap();
    let fake = Fake::new(d.path());
    let inv = invoker(&fake, d.path());
    inv.add(&net("0.3.1"), &att()).unwrap();
    assert!(inv.del(&key()).unwrap());
    let calls = fake.calls.borrow();
    assert!(calls[3..]
        .iter()
        .all(|(_, _, s)| s.get("prevResult").is_none()));
}

#[test]
fn failed_add_dels_the_whole_chain_and_leaves_no_record() {
    let d = tempfile::tempdir().unwrap();
    let fake = Fake::new(d.path()).failing("ADD", "portmap");
    let inv = invoker(&fake, d.path());
    let e = inv.add(&net("1.0.0"), &att()).unwrap_err();
    assert!(
        e.to_string()
            .contains("ADD portmap (network net1): portmap refused (code 11, try again later)"),
        "{e}"
    );
    assert_eq!(
        fake.calls(),
        [
            "ADD bridge",
            "ADD portmap",
            "DEL loopback",
            "DEL portmap",
            "DEL bridge"
        ]
    );
    // the DELs got bridge's result, the last one obtained
    assert_eq!(
        fake.calls.borrow()[2].2["prevResult"]["interfaces"][0]["name"],
        "bridge"
    );
    assert!(inv.attachments().unwrap().is_empty());
}

#[test]
fn failed_add_whose_undo_fails_keeps_the_record_for_cleanup() {
    let d = tempfile::tempdir().unwrap();
    let fake = Fake::new(d.path())
        .failing("ADD", "loopback")
        .failing("DEL", "portmap");
    let inv = invoker(&fake, d.path());
    let e = inv.add(&net("1.0.0"), &att()).unwrap_err();
    assert!(matches!(e, Error::Rollback { .. }), "{e:?}");
    assert!(
        e.to_string().contains("undoing it with DEL failed too"),
        "{e}"
    );
    // every plugin still got its DEL
    assert_eq!(
        &fake.calls()[3..],
        ["DEL loopback", "DEL portmap", "DEL bridge"]
    );
    let rec = inv.records().read(&key()).unwrap().unwrap();
    assert!(!rec.complete);
}

#[test]
fn bad_result_is_an_error_and_is_undone() {
    struct Garbage;
    impl PluginRunner for Garbage {
        fn run(&self, inv: &Invocation) -> Result<Vec<u8>, Error> {
            Ok(match inv.command {
                Command::Add => br#"{"cniVersion":"0.4.0"}"#.to_vec(),
                _ => vec![],
            })
        }
    }
    let d = tempfile::tempdir().unwrap();
    let inv = Invoker::with_runner(Garbage, vec![], d.path().to_path_buf());
    let e = inv.add(&net("1.0.0"), &att()).unwrap_err().to_string();
    assert!(
        e.contains(
            "ADD bridge (network net1): bad result: cniVersion \"0.4.0\", expected \"1.0.0\""
        ),
        "{e}"
    );
    assert!(inv.attachments().unwrap().is_empty());
}

#[test]
fn cleanup_dels_dead_and_incomplete_attachments_and_keeps_live_ones() {
    let d = tempfile::tempdir().unwrap();
    let fake = Fake::new(d.path());
    let inv = invoker(&fake, d.path());
    let mut live = att();
    live.container_id = "live".into();
    inv.add(&net("1.0.0"), &live).unwrap();
    let mut dead = att();
    dead.container_id = "dead".into();
    inv.add(&net("1.0.0"), &dead).unwrap();
    // a crash in the middle of an ADD: record written, never completed
    let mut crashed = att();
    crashed.container_id = "crashed".into();
    inv.records()
        .write(
            &Record {
                network: "net1".into(),
                attachment: crashed,
                config: net("1.0.0").to_json(),
                result: None,
                complete: false,
            },
            true,
        )
        .unwrap();
    fake.calls.borrow_mut().clear();
    let report = inv
        .cleanup_leftovers(|r| r.attachment.container_id != "dead")
        .unwrap();
    let ids = |v: &[AttachmentKey]| v.iter().map(|k| k.container_id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&report.removed), ["crashed", "dead"]);
    assert_eq!(ids(&report.kept), ["live"]);
    assert!(report.failed.is_empty() && report.unreadable.is_empty());
    assert_eq!(fake.calls().len(), 6, "three DELs per removed attachment");
    let left: Vec<String> = inv
        .attachments()
        .unwrap()
        .iter()
        .map(|r| r.attachment.container_id.clone())
        .collect();
    assert_eq!(left, ["live"]);
}

#[test]
fn cleanup_keeps_records_whose_del_fails() {
    let d = tempfile::tempdir().unwrap();
    let ok = Fake::new(d.path());
    invoker(&ok, d.path()).add(&net("1.0.0"), &att()).unwrap();
    let failing = Fake::new(d.path()).failing("DEL", "bridge");
    let inv = invoker(&failing, d.path());
    let report = inv.cleanup_leftovers(|_| false).unwrap();
    assert_eq!(report.failed.len(), 1);
    assert!(report.failed[0].1.to_string().contains("DEL bridge"));
    assert_eq!(inv.attachments().unwrap().len(), 1);
}

#[test]
fn del_uses_the_recorded_config_not_the_current_one() {
    let d = tempfile::tempdir().unwrap();
    let fake = Fake::new(d.path());
    let inv = invoker(&fake, d.path());
    inv.add(&net("1.0.0"), &att()).unwrap();
    fake.calls.borrow_mut().clear();
    inv.del(&key()).unwrap();
    assert_eq!(fake.calls(), ["DEL loopback", "DEL portmap", "DEL bridge"]);
}

#[test]
fn check_needs_a_completed_attachment_and_a_recent_version() {
    let d = tempfile::tempdir().unwrap();
    let fake = Fake::new(d.path());
    let inv = invoker(&fake, d.path());
    assert!(matches!(inv.check(&key()), Err(Error::NotAttached { .. })));
    inv.add(&net("1.0.0"), &att()).unwrap();
    fake.calls.borrow_mut().clear();
    inv.check(&key()).unwrap();
    assert_eq!(
        fake.calls(),
        ["CHECK bridge", "CHECK portmap", "CHECK loopback"]
    );
    inv.del(&key()).unwrap();
    inv.add(&net("0.3.1"), &att()).unwrap();
    assert!(matches!(
        inv.check(&key()),
        Err(Error::CheckUnsupported { .. })
    ));
}

#[test]
fn version_parses_supported_versions() {
    let d = tempfile::tempdir().unwrap();
    let fake = Fake::new(d.path());
    let v = invoker(&fake, d.path()).version("bridge").unwrap();
    assert_eq!(v.supported_versions, ["0.4.0", "1.0.0"]);
    let calls = fake.calls.borrow();
    assert_eq!(calls[0].0, Command::Version);
}

#[test]
fn invalid_attachment_runs_nothing_and_records_nothing() {
    let d = tempfile::tempdir().unwrap();
    let fake = Fake::new(d.path());
    let inv = invoker(&fake, d.path());
    let mut bad = att();
    bad.container_id = "../../etc".into();
    assert!(matches!(
        inv.add(&net("1.0.0"), &bad),
        Err(Error::Attachment {
            field: "container_id",
            ..
        })
    ));
    assert!(fake.calls().is_empty());
    assert!(inv.attachments().unwrap().is_empty());
}

#[test]
fn the_real_invoker_can_be_shared_between_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Invoker>();
}
