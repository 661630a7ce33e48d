//! Maps API requests to typed routes (pure: method, path, query and JSON body in; a [`Route`]
//! or a 4xx out).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::http::{err, HttpError, Request};
use crate::registry::{validate_key, MAX_VALUE_LEN};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Health,
    Leader,
    Cluster,
    AddVoter {
        name: String,
    },
    RemoveMember {
        name: String,
    },
    RemoveVoter {
        name: String,
    },
    Machines,
    GetKey {
        key: String,
    },
    Range {
        prefix: String,
    },
    Put {
        key: String,
        value: String,
        lease: u64,
        prev_revision: Option<u64>,
    },
    Delete {
        key: String,
        prefix: bool,
    },
    LeaseGrant {
        ttl_s: u64,
    },
    KeepAlive {
        id: u64,
    },
    Revoke {
        id: u64,
    },
    Watch {
        prefix: String,
        from_revision: u64,
    },
    RegisterService(Service),
    Services,
    LookupService {
        name: String,
    },
    Metrics,
    /// The gossip key ring's fingerprints (never the keys).
    GossipKeys,
    /// Install, use or remove a gossip key on this node.
    GossipKey {
        op: KeyOp,
        key: String,
    },
    /// fleetctl's verbs: /v1/units, /v1/unit-states (see `unit_routes`).
    Units(super::unit_routes::UnitRoute),
}

/// A gossip key ring operation (serf's `keys install|use|remove`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyOp {
    Install,
    Use,
    Remove,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyBody {
    op: KeyOp,
    key: String,
}

/// A service endpoint as stored under /services/<name>/<machine>/<instance>.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub name: String,
    #[serde(default)]
    pub machine: String,
    #[serde(default)]
    pub instance: String,
    pub ip: String,
    pub port: u16,
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    /// Where the instance is reached on the cluster network (a unit's container on a CNI
    /// network): its own address and the container port, routed from every machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_port: Option<u16>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutBody {
    value: String,
    #[serde(default)]
    lease: Option<u64>,
    #[serde(default)]
    prev_revision: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaseBody {
    ttl: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VoterBody {
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceBody {
    name: String,
    ip: String,
    port: u16,
    #[serde(default)]
    meta: BTreeMap<String, String>,
    #[serde(default)]
    instance: Option<String>,
}

fn body<'a, T: Deserialize<'a>>(req: &'a Request) -> Result<T, HttpError> {
    serde_json::from_slice(&req.body).map_err(|e| err(400, format!("invalid JSON body: {e}")))
}

fn flag(req: &Request, name: &str) -> Result<bool, HttpError> {
    match req.query(name) {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") | Some("") => Ok(true),
        Some(v) => Err(err(
            400,
            format!("query parameter {name}={v:?} must be true or false"),
        )),
    }
}

fn number(what: &str, s: &str) -> Result<u64, HttpError> {
    s.parse()
        .map_err(|_| err(400, format!("{what} {s:?} is not a number")))
}

/// A path segment used inside keys (service name, machine, instance).
pub fn validate_segment(what: &str, s: &str) -> Result<(), HttpError> {
    if s.is_empty() || s.len() > 253 || s.contains('/') || s.contains('\0') {
        return Err(err(
            400,
            format!("invalid {what} {s:?}: must be 1..253 bytes without '/'"),
        ));
    }
    Ok(())
}

fn key_of(rest: &str) -> Result<String, HttpError> {
    let key = format!("/{rest}");
    validate_key(&key).map_err(|e| err(400, e.to_string()))?;
    Ok(key)
}

/// Routes a parsed request.
pub fn route(req: &Request) -> Result<Route, HttpError> {
    let m = req.method.as_str();
    let p = req.path.as_str();
    let not_allowed = || err(405, format!("method {m} not allowed on {p}"));
    if let Some(r) = super::unit_routes::route(req) {
        return r.map(Route::Units);
    }
    if let Some(rest) = p.strip_prefix("/v1/keys/") {
        let key = key_of(rest)?;
        return match m {
            "GET" if flag(req, "prefix")? => Ok(Route::Range { prefix: key }),
            "GET" => Ok(Route::GetKey { key }),
            "PUT" => {
                let b: PutBody = body(req)?;
                if b.value.len() > MAX_VALUE_LEN {
                    return Err(err(413, format!("value exceeds {MAX_VALUE_LEN} bytes")));
                }
                Ok(Route::Put {
                    key,
                    value: b.value,
                    lease: b.lease.unwrap_or(0),
                    prev_revision: b.prev_revision,
                })
            }
            "DELETE" => Ok(Route::Delete {
                key,
                prefix: flag(req, "prefix")?,
            }),
            _ => Err(not_allowed()),
        };
    }
    if let Some(rest) = p.strip_prefix("/v1/leases/") {
        let (id, action) = rest.split_once('/').unwrap_or((rest, ""));
        let id = number("lease id", id)?;
        return match (m, action) {
            ("POST", "keepalive") => Ok(Route::KeepAlive { id }),
            ("DELETE", "") => Ok(Route::Revoke { id }),
            _ => Err(not_allowed()),
        };
    }
    if let Some(name) = p.strip_prefix("/v1/cluster/members/") {
        return match m {
            "DELETE" => Ok(Route::RemoveMember {
                name: name.to_string(),
            }),
            _ => Err(not_allowed()),
        };
    }
    if let Some(name) = p.strip_prefix("/v1/cluster/voters/") {
        return match m {
            "DELETE" => Ok(Route::RemoveVoter {
                name: name.to_string(),
            }),
            _ => Err(not_allowed()),
        };
    }
    if let Some(name) = p.strip_prefix("/v1/services/") {
        validate_segment("service name", name)?;
        return match m {
            "GET" => Ok(Route::LookupService {
                name: name.to_string(),
            }),
            _ => Err(not_allowed()),
        };
    }
    match (m, p) {
        ("GET", "/v1/health") => Ok(Route::Health),
        ("GET", "/v1/leader") => Ok(Route::Leader),
        ("GET", "/v1/cluster") => Ok(Route::Cluster),
        ("GET", "/v1/machines") => Ok(Route::Machines),
        ("GET", "/metrics") => Ok(Route::Metrics),
        ("GET", "/v1/gossip/keys") => Ok(Route::GossipKeys),
        ("POST", "/v1/gossip/keys") => {
            let b: KeyBody = body(req)?;
            Ok(Route::GossipKey {
                op: b.op,
                key: b.key,
            })
        }
        ("GET", "/v1/services") => Ok(Route::Services),
        ("POST", "/v1/cluster/voters") => {
            let b: VoterBody = body(req)?;
            Ok(Route::AddVoter { name: b.name })
        }
        ("POST", "/v1/leases") => {
            let b: LeaseBody = body(req)?;
            if b.ttl == 0 || b.ttl > 86_400 {
                return Err(err(400, format!("ttl {} must be 1..=86400 seconds", b.ttl)));
            }
            Ok(Route::LeaseGrant { ttl_s: b.ttl })
        }
        ("GET", "/v1/watch") => {
            let prefix = req.query("prefix").unwrap_or("/").to_string();
            if !prefix.starts_with('/') {
                return Err(err(
                    400,
                    format!("watch prefix {prefix:?} must start with '/'"),
                ));
            }
            let from_revision = match req.query("from_revision") {
                Some(s) => number("from_revision", s)?,
                None => 0,
            };
            Ok(Route::Watch {
                prefix,
                from_revision,
            })
        }
        ("POST", "/v1/services") => {
            let b: ServiceBody = body(req)?;
            validate_segment("service name", &b.name)?;
            b.ip.parse::<std::net::IpAddr>()
                .map_err(|_| err(400, format!("invalid ip {:?}", b.ip)))?;
            if b.port == 0 {
                return Err(err(400, "port must be 1..=65535"));
            }
            let instance = b.instance.unwrap_or_else(|| format!("{}:{}", b.ip, b.port));
            validate_segment("instance", &instance)?;
            Ok(Route::RegisterService(Service {
                name: b.name,
                machine: String::new(),
                instance,
                ip: b.ip,
                port: b.port,
                meta: b.meta,
                container_ip: None,
                container_port: None,
            }))
        }
        (
            _,
            "/v1/health" | "/v1/leader" | "/v1/cluster" | "/v1/machines" | "/metrics"
            | "/v1/services" | "/v1/cluster/voters" | "/v1/leases" | "/v1/watch"
            | "/v1/gossip/keys",
        ) => Err(not_allowed()),
        _ => Err(err(404, format!("no such endpoint {m} {p}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::api::http::test_request as req;

    #[test]
    fn key_routes() {
        assert_eq!(
            route(&req("GET", "/v1/keys/a/b", &[], "")),
            Ok(Route::GetKey { key: "/a/b".into() })
        );
        assert_eq!(
            route(&req("GET", "/v1/keys/a/", &[("prefix", "true")], "")),
            Ok(Route::Range {
                prefix: "/a/".into()
            })
        );
        assert_eq!(
            route(&req(
                "PUT",
                "/v1/keys/a",
                &[],
                r#"{"value":"v","prev_revision":3}"#
            )),
            Ok(Route::Put {
                key: "/a".into(),
                value: "v".into(),
                lease: 0,
                prev_revision: Some(3)
            })
        );
        assert_eq!(
            route(&req("DELETE", "/v1/keys/a", &[("prefix", "1")], "")),
            Ok(Route::Delete {
                key: "/a".into(),
                prefix: true
            })
        );
    }

    #[test]
    fn bad_requests_name_the_problem() {
        let e = route(&req("PUT", "/v1/keys/a", &[], "{")).expect_err("bad json");
        assert_eq!(e.status, 400);
        assert!(e.message.contains("JSON"));
        let e = route(&req("PUT", "/v1/keys/a", &[], r#"{"valu":"v"}"#)).expect_err("field");
        assert!(e.message.contains("valu"), "{}", e.message);
        assert_eq!(
            route(&req("GET", "/nope", &[], "")).map_err(|e| e.status),
            Err(404)
        );
        assert_eq!(
            route(&req("POST", "/v1/health", &[], "")).map_err(|e| e.status),
            Err(405)
        );
        assert_eq!(
            route(&req("POST", "/v1/leases", &[], r#"{"ttl":0}"#)).map_err(|e| e.status),
            Err(400)
        );
        let e = route(&req(
            "POST",
            "/v1/services",
            &[],
            r#"{"name":"web","ip":"nope","port":80}"#,
        ))
        .expect_err("bad ip");
        assert!(e.message.contains("nope"));
        assert_eq!(
            route(&req("GET", "/v1/watch", &[("from_revision", "x")], "")).map_err(|e| e.status),
            Err(400)
        );
        assert_eq!(
            route(&req("GET", "/v1/keys/a", &[("prefix", "maybe")], "")).map_err(|e| e.status),
            Err(400)
        );
    }

    #[test]
    fn service_registration_defaults_instance() {
        let r = route(&req(
            "POST",
            "/v1/services",
            &[],
            r#"{"name":"web","ip":"10.0.0.5","port":8080,"meta":{"v":"1"}}"#,
        ))
        .expect("valid");
        let Route::RegisterService(s) = r else {
            panic!("wrong route {r:?}")
        };
        assert_eq!(s.instance, "10.0.0.5:8080");
        assert_eq!(s.meta["v"], "1");
    }

    #[test]
    fn lease_and_voter_routes() {
        assert_eq!(
            route(&req("POST", "/v1/leases/7/keepalive", &[], "")),
            Ok(Route::KeepAlive { id: 7 })
        );
        assert_eq!(
            route(&req("DELETE", "/v1/leases/7", &[], "")),
            Ok(Route::Revoke { id: 7 })
        );
        assert_eq!(
            route(&req("POST", "/v1/cluster/voters", &[], r#"{"name":"n4"}"#)),
            Ok(Route::AddVoter { name: "n4".into() })
        );
        assert_eq!(
            route(&req("DELETE", "/v1/cluster/voters/n4", &[], "")),
            Ok(Route::RemoveVoter { name: "n4".into() })
        );
        assert_eq!(
            route(&req("DELETE", "/v1/cluster/members/n4", &[], "")),
            Ok(Route::RemoveMember { name: "n4".into() })
        );
        assert_eq!(
            route(&req(
                "GET",
                "/v1/watch",
                &[("prefix", "/s/"), ("from_revision", "5")],
                ""
            )),
            Ok(Route::Watch {
                prefix: "/s/".into(),
                from_revision: 5
            })
        );
    }
}
