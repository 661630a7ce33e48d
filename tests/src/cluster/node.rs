//! One `berthd` of a test cluster and the API calls the tests make on it.

use std::collections::BTreeMap;
use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::process::Child;
use std::time::Duration;

use serde_json::{json, Value};

use super::http::{self, HttpError, Response};
use super::CALL_TIMEOUT;

/// One `berthd` (running or not).
pub struct Node {
    pub name: String,
    pub cluster_id: String,
    pub addr: SocketAddrV4,
    pub data_dir: PathBuf,
    pub socket: PathBuf,
    pub log: PathBuf,
    /// Command-line arguments after the binary (kept for restarts).
    pub args: Vec<String>,
    pub(super) child: Option<Child>,
}

impl Node {
    /// The daemon's pid, if it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// True while the process we started has not been reaped.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// One API call on this node's socket.
    pub fn call(
        &self,
        method: &str,
        target: &str,
        body: Option<&Value>,
    ) -> Result<Response, HttpError> {
        http::unix_request(&self.socket, method, target, body, CALL_TIMEOUT)
    }

    /// GET that must answer 2xx with JSON; the error says what the node said instead.
    pub fn get_json(&self, target: &str) -> Result<Value, String> {
        match self.call("GET", target, None) {
            Ok(r) if r.ok() => Ok(r.json()),
            Ok(r) => Err(format!(
                "{}: GET {target} -> {} {}",
                self.name,
                r.status,
                r.text()
            )),
            Err(e) => Err(format!("{}: {e}", self.name)),
        }
    }

    /// PUT /v1/keys/KEY with a call timeout of `timeout`; Ok(revision) only when acknowledged.
    pub fn put_with_timeout(
        &self,
        key: &str,
        value: &str,
        timeout: Duration,
    ) -> Result<u64, String> {
        let target = format!("/v1/keys/{}", key.trim_start_matches('/'));
        let body = json!({ "value": value });
        match http::unix_request(&self.socket, "PUT", &target, Some(&body), timeout) {
            Ok(r) if r.ok() => r.json()["revision"]
                .as_u64()
                .ok_or_else(|| format!("{}: PUT {key}: no revision in {}", self.name, r.text())),
            Ok(r) => Err(format!(
                "{}: PUT {key} -> {} {}",
                self.name,
                r.status,
                r.text()
            )),
            Err(e) => Err(format!("{}: {e}", self.name)),
        }
    }

    /// PUT with the default call timeout.
    pub fn put(&self, key: &str, value: &str) -> Result<u64, String> {
        self.put_with_timeout(key, value, CALL_TIMEOUT)
    }

    /// GET /v1/keys/KEY: Ok(Some(kv)), Ok(None) on 404.
    pub fn get_key(&self, key: &str) -> Result<Option<Value>, String> {
        let target = format!("/v1/keys/{}", key.trim_start_matches('/'));
        match self.call("GET", &target, None) {
            Ok(r) if r.ok() => Ok(Some(r.json())),
            Ok(r) if r.status == 404 => Ok(None),
            Ok(r) => Err(format!(
                "{}: GET {key} -> {} {}",
                self.name,
                r.status,
                r.text()
            )),
            Err(e) => Err(format!("{}: {e}", self.name)),
        }
    }

    /// Every key under `prefix` as key -> (value, mod_revision, create_revision, version).
    pub fn range(&self, prefix: &str) -> Result<BTreeMap<String, KeyState>, String> {
        let target = format!("/v1/keys/{}?prefix=true", prefix.trim_start_matches('/'));
        let v = self.get_json(&target)?;
        let kvs = v["kvs"]
            .as_array()
            .ok_or_else(|| format!("{}: range {prefix}: no kvs in {v}", self.name))?;
        Ok(kvs
            .iter()
            .map(|kv| {
                // Keys are compared with a leading slash whichever way the daemon spells them.
                let key = kv["key"].as_str().unwrap_or_default();
                let key = if key.starts_with('/') {
                    key.to_string()
                } else {
                    format!("/{key}")
                };
                (key, KeyState::from_json(kv))
            })
            .collect())
    }

    /// The leader this node reports (`/v1/leader`), if any.
    pub fn leader(&self) -> Result<Option<String>, String> {
        let v = self.get_json("/v1/leader")?;
        Ok(v["leader"].as_str().map(str::to_string))
    }

    /// `/v1/machines` as name -> (state, leader flag).
    pub fn machines(&self) -> Result<BTreeMap<String, Value>, String> {
        let v = self.get_json("/v1/machines")?;
        let list = v
            .as_array()
            .ok_or_else(|| format!("{}: /v1/machines is not a list: {v}", self.name))?;
        Ok(list
            .iter()
            .map(|m| {
                (
                    m["name"].as_str().unwrap_or_default().to_string(),
                    m.clone(),
                )
            })
            .collect())
    }

    /// `/v1/services/NAME` as a list of instances.
    pub fn service(&self, name: &str) -> Result<Vec<Value>, String> {
        let v = self.get_json(&format!("/v1/services/{name}"))?;
        v.as_array()
            .cloned()
            .ok_or_else(|| format!("{}: /v1/services/{name} is not a list: {v}", self.name))
    }
}

/// What a node reports about one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyState {
    pub value: String,
    pub mod_revision: u64,
    pub create_revision: u64,
    pub version: u64,
}

impl KeyState {
    fn from_json(kv: &Value) -> KeyState {
        KeyState {
            value: kv["value"].as_str().unwrap_or_default().to_string(),
            mod_revision: kv["mod_revision"].as_u64().unwrap_or_default(),
            create_revision: kv["create_revision"].as_u64().unwrap_or_default(),
            version: kv["version"].as_u64().unwrap_or_default(),
        }
    }
}
