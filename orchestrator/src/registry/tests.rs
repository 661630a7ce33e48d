//! Scenario tests of the registry state machine.

use super::*;

fn put(key: &str, value: &str) -> Command {
    Command::Put {
        key: key.into(),
        value: value.into(),
        lease: 0,
        prev_revision: None,
    }
}

#[test]
fn put_get_revisions_and_versions() {
    let mut r = Registry::default();
    assert_eq!(r.apply(&put("/a", "1")).0, Outcome::Put { revision: 1 });
    assert_eq!(r.apply(&put("/b", "2")).0, Outcome::Put { revision: 2 });
    assert_eq!(r.apply(&put("/a", "3")).0, Outcome::Put { revision: 3 });
    let a = r.get("/a").expect("a exists");
    assert_eq!(
        (
            a.value.as_str(),
            a.create_revision,
            a.mod_revision,
            a.version
        ),
        ("3", 1, 3, 2)
    );
    assert_eq!(r.revision(), 3);
}

#[test]
fn range_by_prefix_is_ordered_and_exact() {
    let mut r = Registry::default();
    for k in ["/s/b", "/s/a", "/t/a", "/s"] {
        r.apply(&put(k, "x"));
    }
    let keys: Vec<_> = r.range("/s/").iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(keys, vec!["/s/a", "/s/b"]);
    assert_eq!(r.range("/").len(), 4);
}

#[test]
fn delete_single_and_prefix_share_one_revision() {
    let mut r = Registry::default();
    for k in ["/s/a", "/s/b", "/t"] {
        r.apply(&put(k, "x"));
    }
    let (out, events) = r.apply(&Command::Delete {
        key: "/s/".into(),
        prefix: true,
    });
    assert_eq!(
        out,
        Outcome::Deleted {
            revision: 4,
            deleted: 2
        }
    );
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|e| e.mod_revision == 4));
    // deleting nothing does not bump the revision
    let (out, events) = r.apply(&Command::Delete {
        key: "/nope".into(),
        prefix: false,
    });
    assert_eq!(
        out,
        Outcome::Deleted {
            revision: 4,
            deleted: 0
        }
    );
    assert!(events.is_empty());
    assert!(r.get("/t").is_some());
}

#[test]
fn compare_and_swap_on_revision() {
    let mut r = Registry::default();
    let cas = |prev| Command::Put {
        key: "/k".into(),
        value: "v".into(),
        lease: 0,
        prev_revision: Some(prev),
    };
    // 0 = must not exist
    assert_eq!(r.apply(&cas(0)).0, Outcome::Put { revision: 1 });
    assert_eq!(
        r.apply(&cas(0)).0,
        Outcome::Failed {
            error: ApplyError::CasMismatch {
                key: "/k".into(),
                expected: 0,
                actual: 1
            }
        }
    );
    assert_eq!(r.apply(&cas(1)).0, Outcome::Put { revision: 2 });
    assert_eq!(r.revision(), 2, "a failed CAS changes nothing");
}

#[test]
fn keys_vanish_with_their_lease() {
    let mut r = Registry::default();
    let (out, _) = r.apply(&Command::LeaseGrant { ttl_ms: 5000 });
    let Outcome::Lease { id, .. } = out else {
        panic!("grant failed: {out:?}")
    };
    for k in ["/machines/a", "/services/web/a/1"] {
        r.apply(&Command::Put {
            key: k.into(),
            value: "x".into(),
            lease: id,
            prev_revision: None,
        });
    }
    r.apply(&put("/other", "y"));
    // a key moved to no lease is no longer deleted with it
    r.apply(&put("/machines/a", "moved"));
    r.apply(&Command::Put {
        key: "/machines/a".into(),
        value: "back".into(),
        lease: id,
        prev_revision: None,
    });
    r.apply(&put("/machines/a", "detached"));
    let (out, events) = r.apply(&Command::LeaseRevoke { id });
    assert!(
        matches!(out, Outcome::Revoked { deleted: 1, .. }),
        "{out:?}"
    );
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].key, "/services/web/a/1");
    assert!(r.get("/services/web/a/1").is_none());
    assert_eq!(
        r.get("/machines/a").map(|kv| kv.value).as_deref(),
        Some("detached")
    );
    assert!(r.get("/other").is_some());
    // the lease is gone: keep-alive and attaching fail
    assert_eq!(
        r.apply(&Command::LeaseKeepAlive { id }).0,
        Outcome::Failed {
            error: ApplyError::LeaseNotFound { id }
        }
    );
    assert!(matches!(
        r.apply(&Command::Put {
            key: "/x".into(),
            value: "x".into(),
            lease: id,
            prev_revision: None
        })
        .0,
        Outcome::Failed {
            error: ApplyError::LeaseNotFound { .. }
        }
    ));
}

#[test]
fn watch_from_revision_has_no_gaps_or_duplicates() {
    let mut r = Registry::default();
    let mut live = Vec::new();
    for i in 0..10 {
        let (_, ev) = r.apply(&put(&format!("/w/{}", i % 3), &i.to_string()));
        live.extend(ev);
        r.apply(&put("/other", "x"));
    }
    let (_, ev) = r.apply(&Command::Delete {
        key: "/w/".into(),
        prefix: true,
    });
    live.extend(ev);
    let all = r.events_since("/w/", 1).expect("not compacted");
    assert_eq!(all, live);
    // resuming after the 4th event yields exactly the rest
    let resume = all[3].mod_revision + 1;
    let rest = r.events_since("/w/", resume).expect("not compacted");
    assert_eq!(rest, live[4..].to_vec());
    assert!(r.events_since("/w/", 0).expect("ok").is_empty());
}

#[test]
fn watch_from_compacted_revision_is_refused() {
    let mut r = Registry::with_history(4);
    for i in 0..10 {
        r.apply(&put("/k", &i.to_string()));
    }
    assert_eq!(
        r.events_since("/", 2),
        Err(WatchError::Compacted {
            requested: 2,
            oldest: 7
        })
    );
    assert_eq!(r.events_since("/", 7).expect("kept").len(), 4);
}

#[test]
fn invalid_input_is_rejected_without_change() {
    let mut r = Registry::default();
    for key in ["", "nokey", "/a\0b"] {
        assert!(matches!(
            r.apply(&put(key, "v")).0,
            Outcome::Failed {
                error: ApplyError::InvalidKey { .. }
            }
        ));
    }
    assert!(matches!(
        r.apply(&Command::LeaseGrant { ttl_ms: 0 }).0,
        Outcome::Failed {
            error: ApplyError::InvalidTtl { .. }
        }
    ));
    assert_eq!(r.revision(), 0);
}

#[test]
fn snapshot_roundtrip_keeps_everything() {
    let mut r = Registry::default();
    r.apply(&Command::LeaseGrant { ttl_ms: 1000 });
    r.apply(&Command::Put {
        key: "/a".into(),
        value: "1".into(),
        lease: 1,
        prev_revision: None,
    });
    let bytes = serde_json::to_vec(&r).expect("serialise");
    let mut back: Registry = serde_json::from_slice(&bytes).expect("deserialise");
    assert_eq!(back, r);
    // and it keeps applying identically
    assert_eq!(
        back.apply(&Command::LeaseRevoke { id: 1 }),
        r.apply(&Command::LeaseRevoke { id: 1 })
    );
}

#[test]
fn history_is_bounded_by_bytes_too() {
    let mut r = Registry::default();
    let big = "x".repeat(1 << 20);
    for i in 0..40 {
        r.apply(&put(&format!("/big/{i}"), &big));
    }
    let kept = r.events_since("/", r.revision()).expect("latest kept");
    assert_eq!(kept.len(), 1);
    assert!(matches!(
        r.events_since("/", 1),
        Err(WatchError::Compacted { .. })
    ));
    // 16 MiB hold the 15 most recent 1 MiB events (plus keys)
    assert_eq!(r.events_since("/", 26).expect("recent kept").len(), 15);
    assert!(r.events_since("/", 25).is_err());
}

fn txn_put(key: &str, value: &str) -> TxnOp {
    TxnOp::Put {
        key: key.into(),
        value: value.into(),
        lease: 0,
    }
}

#[test]
fn txn_writes_everything_at_one_revision() {
    let mut r = Registry::default();
    r.apply(&put("/gone", "x"));
    let (out, events) = r.apply(&Command::Txn {
        compare: vec![Compare {
            key: "/a".into(),
            mod_revision: 0,
        }],
        ops: vec![
            txn_put("/a", "1"),
            txn_put("/b", "2"),
            TxnOp::Delete {
                key: "/gone".into(),
            },
            TxnOp::Delete {
                key: "/never".into(),
            },
        ],
    });
    assert_eq!(
        out,
        Outcome::Txn {
            revision: 2,
            puts: 2,
            deleted: 1
        }
    );
    assert_eq!(events.len(), 3);
    assert!(events.iter().all(|e| e.mod_revision == 2));
    assert_eq!(r.get("/a").map(|kv| kv.mod_revision), Some(2));
    assert_eq!(r.get("/b").map(|kv| kv.value).as_deref(), Some("2"));
    assert!(r.get("/gone").is_none());
    assert_eq!(r.events_since("/", 2).map(|e| e.len()), Ok(3));
}

#[test]
fn txn_with_a_failed_compare_changes_nothing() {
    let mut r = Registry::default();
    r.apply(&put("/a", "1"));
    let before = r.clone();
    let (out, events) = r.apply(&Command::Txn {
        compare: vec![Compare {
            key: "/a".into(),
            mod_revision: 7,
        }],
        ops: vec![txn_put("/b", "2"), TxnOp::Delete { key: "/a".into() }],
    });
    assert_eq!(
        out,
        Outcome::Failed {
            error: ApplyError::CasMismatch {
                key: "/a".into(),
                expected: 7,
                actual: 1
            }
        }
    );
    assert!(events.is_empty());
    assert_eq!(r, before);
}

#[test]
fn txn_refuses_bad_ops_before_writing_any() {
    let mut r = Registry::default();
    let before = r.clone();
    for ops in [
        vec![txn_put("/a", "1"), txn_put("/a", "2")],
        vec![txn_put("/a", "1"), txn_put("no-slash", "2")],
        vec![
            txn_put("/a", "1"),
            TxnOp::Put {
                key: "/b".into(),
                value: "2".into(),
                lease: 99,
            },
        ],
    ] {
        let (out, _) = r.apply(&Command::Txn {
            compare: vec![],
            ops,
        });
        assert!(matches!(out, Outcome::Failed { .. }), "{out:?}");
        assert_eq!(r, before);
    }
}

#[test]
fn txn_that_changes_nothing_keeps_the_revision_and_heartbeat_is_inert() {
    let mut r = Registry::default();
    r.apply(&put("/a", "1"));
    let (out, events) = r.apply(&Command::Txn {
        compare: vec![],
        ops: vec![TxnOp::Delete { key: "/b".into() }],
    });
    assert_eq!(
        out,
        Outcome::Txn {
            revision: 1,
            puts: 0,
            deleted: 0
        }
    );
    assert!(events.is_empty());
    let before = r.clone();
    let (out, events) = r.apply(&Command::Heartbeat {
        machine: "n1".into(),
    });
    assert_eq!(out, Outcome::Heartbeat);
    assert!(events.is_empty());
    assert_eq!(r, before);
}
