//! Network configurations: `.conf` (one plugin) and `.conflist` (a chain), parsed and
//! validated into a [`NetworkConfigList`], and loaded from a directory as libcni does
//! (`*.conf`, `*.json` single configs, `*.conflist` chains; files in name order).
//!
//! The plugin objects are kept as JSON objects: the runtime must hand each plugin its own
//! keys unchanged (plus `name`, `cniVersion`, `prevResult`, `runtimeConfig`), so only the
//! keys the runtime itself reads are interpreted here.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{clean, Error};

/// The config (and result) versions this invoker speaks. 0.1.0/0.2.0 used another result
/// format (`ip4`/`ip6`) and are refused by name.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0"];

/// A network: one plugin chain with its name and version.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfigList {
    pub cni_version: String,
    pub name: String,
    /// `disableCheck`: CHECK is a no-op for this network.
    pub disable_check: bool,
    /// The chain, in ADD order. Each has a valid `type`.
    pub plugins: Vec<PluginConf>,
    /// Where it was loaded from, if from a file.
    pub source: Option<PathBuf>,
}

/// One plugin's configuration object, as written in the config.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConf {
    /// The plugin's `type`: the binary's file name.
    pub plugin_type: String,
    /// The whole object, as given.
    pub raw: Map<String, Value>,
}

impl PluginConf {
    /// Whether the plugin declares the capability (`"capabilities": {"portMappings": true}`).
    pub fn has_capability(&self, cap: &str) -> bool {
        self.raw
            .get("capabilities")
            .and_then(|c| c.get(cap))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }
}

impl NetworkConfigList {
    /// Parses a `.conflist` document.
    pub fn from_conflist(bytes: &[u8], source: Option<&Path>) -> Result<Self, Error> {
        let bad = |reason: String| Error::Config {
            path: source.map(Path::to_path_buf),
            reason,
        };
        let doc = parse_object(bytes).map_err(bad)?;
        let cni_version = version_of(&doc).map_err(bad)?;
        let name = string_field(&doc, "name").map_err(bad)?;
        check_name("name", &name).map_err(bad)?;
        let disable_check = match doc.get("disableCheck") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => return Err(bad(format!("disableCheck must be a boolean, not {other}"))),
        };
        let plugins = match doc.get("plugins") {
            Some(Value::Array(items)) if !items.is_empty() => items,
            Some(Value::Array(_)) => return Err(bad("plugins is empty".into())),
            Some(_) => return Err(bad("plugins must be an array of objects".into())),
            None => {
                return Err(bad(
                    "no plugins array (a single plugin belongs in a .conf)".into()
                ))
            }
        };
        let mut chain = Vec::with_capacity(plugins.len());
        for (i, p) in plugins.iter().enumerate() {
            let obj = p
                .as_object()
                .ok_or_else(|| bad(format!("plugins[{i}] is not an object")))?;
            chain.push(plugin_conf(obj).map_err(|r| bad(format!("plugins[{i}]: {r}")))?);
        }
        Ok(NetworkConfigList {
            cni_version,
            name,
            disable_check,
            plugins: chain,
            source: source.map(Path::to_path_buf),
        })
    }

    /// Parses a single-plugin `.conf` document into a chain of one, as libcni does.
    pub fn from_conf(bytes: &[u8], source: Option<&Path>) -> Result<Self, Error> {
        let bad = |reason: String| Error::Config {
            path: source.map(Path::to_path_buf),
            reason,
        };
        let doc = parse_object(bytes).map_err(bad)?;
        let cni_version = version_of(&doc).map_err(bad)?;
        let name = string_field(&doc, "name").map_err(bad)?;
        check_name("name", &name).map_err(bad)?;
        if doc.contains_key("plugins") {
            return Err(bad(
                "has a plugins array: a chain belongs in a .conflist".into()
            ));
        }
        let plugin = plugin_conf(&doc).map_err(bad)?;
        Ok(NetworkConfigList {
            cni_version,
            name,
            disable_check: false,
            plugins: vec![plugin],
            source: source.map(Path::to_path_buf),
        })
    }

    /// Parses a file by its extension (`.conflist`; `.conf` or `.json`).
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let bytes = read_bounded(path)?;
        match path.extension().and_then(|e| e.to_str()) {
            Some("conflist") => Self::from_conflist(&bytes, Some(path)),
            Some("conf") | Some("json") => Self::from_conf(&bytes, Some(path)),
            _ => Err(Error::Config {
                path: Some(path.to_path_buf()),
                reason: "not a .conf, .json or .conflist file".into(),
            }),
        }
    }

    /// The list as a `.conflist` JSON document (what attachment records store, so that DEL
    /// uses the config ADD used even if the file changed since).
    pub fn to_json(&self) -> Value {
        let plugins: Vec<Value> = self
            .plugins
            .iter()
            .map(|p| Value::Object(p.raw.clone()))
            .collect();
        let mut doc = Map::new();
        doc.insert("cniVersion".into(), Value::String(self.cni_version.clone()));
        doc.insert("name".into(), Value::String(self.name.clone()));
        if self.disable_check {
            doc.insert("disableCheck".into(), Value::Bool(true));
        }
        doc.insert("plugins".into(), Value::Array(plugins));
        Value::Object(doc)
    }
}

/// Config files are small; anything bigger is refused rather than read into memory.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

fn read_bounded(path: &Path) -> Result<Vec<u8>, Error> {
    let io = |step: &'static str, e: std::io::Error| Error::Config {
        path: Some(path.to_path_buf()),
        reason: format!("{step}: {e}"),
    };
    let meta = std::fs::metadata(path).map_err(|e| io("stat", e))?;
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(Error::Config {
            path: Some(path.to_path_buf()),
            reason: format!(
                "{} bytes, more than the {MAX_CONFIG_BYTES} allowed",
                meta.len()
            ),
        });
    }
    std::fs::read(path).map_err(|e| io("read", e))
}

fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, String> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err("not a JSON object".into()),
        Err(e) => Err(format!("invalid JSON: {e}")),
    }
}

fn string_field(doc: &Map<String, Value>, key: &str) -> Result<String, String> {
    match doc.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(format!(
            "{key} must be a string, not {}",
            clean(&other.to_string(), 80)
        )),
        None => Err(format!("no {key}")),
    }
}

fn version_of(doc: &Map<String, Value>) -> Result<String, String> {
    let v = string_field(doc, "cniVersion")?;
    if SUPPORTED_VERSIONS.contains(&v.as_str()) {
        Ok(v)
    } else {
        Err(format!(
            "cniVersion {:?} is not supported (supported: {})",
            clean(&v, 40),
            SUPPORTED_VERSIONS.join(", ")
        ))
    }
}

fn plugin_conf(obj: &Map<String, Value>) -> Result<PluginConf, String> {
    let plugin_type = string_field(obj, "type")?;
    check_plugin_type(&plugin_type)?;
    if let Some(caps) = obj.get("capabilities") {
        if !caps.is_object() {
            return Err("capabilities must be an object".into());
        }
    }
    Ok(PluginConf {
        plugin_type,
        raw: obj.clone(),
    })
}

/// A plugin type names a file in the plugin directories: no path separators, no `..`.
fn check_plugin_type(t: &str) -> Result<(), String> {
    let ok = !t.is_empty()
        && t.len() <= 255
        && t != "."
        && t != ".."
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!("type {:?} is not a plugin file name", clean(t, 80)))
    }
}

/// Network names and container ids: the spec's `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`, bounded.
pub(crate) fn check_name(what: &str, s: &str) -> Result<(), String> {
    let mut chars = s.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if first_ok && s.len() <= 253 && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) {
        Ok(())
    } else {
        Err(format!(
            "{what} {:?} must start with a letter or digit and hold only letters, digits, '_', '.', '-' (at most 253)",
            clean(s, 80)
        ))
    }
}

/// The networks found in a directory, and the files that could not be used.
#[derive(Debug, Default)]
pub struct ConfigDir {
    pub networks: Vec<NetworkConfigList>,
    /// `path: reason` for each unusable file.
    pub errors: Vec<String>,
}

/// Loads every `*.conf`, `*.json` and `*.conflist` in `dir`, in file-name order. A network
/// name defined twice keeps the first file (libcni's order) and reports the later one.
pub fn load_dir(dir: &Path) -> Result<ConfigDir, Error> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::Config {
        path: Some(dir.to_path_buf()),
        reason: format!("read directory: {e}"),
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("conf" | "json" | "conflist")
            )
        })
        .collect();
    files.sort();
    let mut out = ConfigDir::default();
    for f in files {
        match NetworkConfigList::from_file(&f) {
            Ok(net) => match out.networks.iter().find(|n| n.name == net.name) {
                Some(first) => out.errors.push(format!(
                    "{}: network {:?} already defined by {}",
                    f.display(),
                    net.name,
                    source_display(first)
                )),
                None => out.networks.push(net),
            },
            Err(e) => out.errors.push(e.to_string()),
        }
    }
    Ok(out)
}

fn source_display(n: &NetworkConfigList) -> String {
    n.source
        .as_ref()
        .map_or("(inline)".into(), |p| p.display().to_string())
}

/// Finds the network `name` in `dir`. When it is absent the error lists the unusable files,
/// since a typo in one of them is the usual cause.
pub fn find_network(dir: &Path, name: &str) -> Result<NetworkConfigList, Error> {
    let loaded = load_dir(dir)?;
    loaded
        .networks
        .into_iter()
        .find(|n| n.name == name)
        .ok_or(Error::NetworkNotFound {
            network: clean(name, 80),
            dir: dir.to_path_buf(),
            bad_files: loaded.errors,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BRIDGE: &str = r#"{
      "cniVersion": "1.0.0", "name": "berth",
      "plugins": [
        {"type": "bridge", "bridge": "berth0", "ipam": {"type": "host-local", "subnet": "10.88.1.0/24"}},
        {"type": "portmap", "capabilities": {"portMappings": true}},
        {"type": "loopback"}
      ]}"#;

    #[test]
    fn conflist_parses_chain_in_order() {
        let n = NetworkConfigList::from_conflist(BRIDGE.as_bytes(), None).unwrap();
        assert_eq!(n.name, "berth");
        assert_eq!(n.cni_version, "1.0.0");
        let types: Vec<&str> = n.plugins.iter().map(|p| p.plugin_type.as_str()).collect();
        assert_eq!(types, ["bridge", "portmap", "loopback"]);
        assert!(n.plugins[1].has_capability("portMappings"));
        assert!(!n.plugins[0].has_capability("portMappings"));
        assert_eq!(n.plugins[0].raw["bridge"], "berth0");
        // round trip through the stored form
        let again =
            NetworkConfigList::from_conflist(n.to_json().to_string().as_bytes(), None).unwrap();
        assert_eq!(again, n);
    }

    #[test]
    fn conf_becomes_a_chain_of_one() {
        let n = NetworkConfigList::from_conf(
            br#"{"cniVersion":"0.4.0","name":"lo","type":"loopback"}"#,
            None,
        )
        .unwrap();
        assert_eq!(n.plugins.len(), 1);
        assert_eq!(n.plugins[0].plugin_type, "loopback");
        assert_eq!(n.plugins[0].raw["name"], "lo");
    }

    fn err(doc: &str) -> String {
        NetworkConfigList::from_conflist(doc.as_bytes(), Some(Path::new("/etc/cni/x.conflist")))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn malformed_conflists_say_what_is_wrong() {
        assert!(err("{").contains("invalid JSON"), "{}", err("{"));
        assert!(err("[]").contains("not a JSON object"));
        assert!(err(r#"{"name":"a","plugins":[{"type":"x"}]}"#).contains("no cniVersion"));
        assert!(
            err(r#"{"cniVersion":"0.2.0","name":"a","plugins":[{"type":"x"}]}"#)
                .contains("cniVersion \"0.2.0\" is not supported")
        );
        assert!(err(r#"{"cniVersion":"1.0.0","plugins":[{"type":"x"}]}"#).contains("no name"));
        assert!(
            err(r#"{"cniVersion":"1.0.0","name":"-a","plugins":[{"type":"x"}]}"#)
                .contains("must start with a letter")
        );
        assert!(
            err(r#"{"cniVersion":"1.0.0","name":"a","plugins":[]}"#).contains("plugins is empty")
        );
        assert!(err(r#"{"cniVersion":"1.0.0","name":"a"}"#).contains("no plugins array"));
        assert!(
            err(r#"{"cniVersion":"1.0.0","name":"a","plugins":[{"typ":"x"}]}"#)
                .contains("plugins[0]: no type")
        );
        let e = err(
            r#"{"cniVersion":"1.0.0","name":"a","plugins":[{"type":"x"},{"type":"../../bin/sh"}]}"#,
        );
        assert!(
            e.contains("plugins[1]: type \"../../bin/sh\" is not a plugin file name"),
            "{e}"
        );
        assert!(e.starts_with("network config /etc/cni/x.conflist:"), "{e}");
        assert!(err(
            r#"{"cniVersion":"1.0.0","name":"a","plugins":[{"type":"x","capabilities":[1]}]}"#
        )
        .contains("capabilities must be an object"));
        assert!(err(
            r#"{"cniVersion":"1.0.0","name":"a","disableCheck":"yes","plugins":[{"type":"x"}]}"#
        )
        .contains("disableCheck must be a boolean"));
    }

    #[test]
    fn load_dir_orders_files_reports_bad_and_duplicate_ones() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("10-berth.conflist"), BRIDGE).unwrap();
        std::fs::write(
            dir.path().join("20-dup.conf"),
            r#"{"cniVersion":"1.0.0","name":"berth","type":"ptp"}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("30-broken.conflist"), "{nope").unwrap();
        std::fs::write(
            dir.path().join("40-lo.json"),
            r#"{"cniVersion":"1.0.0","name":"lo","type":"loopback"}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("README"), "not a config").unwrap();
        let loaded = load_dir(dir.path()).unwrap();
        let names: Vec<&str> = loaded.networks.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["berth", "lo"]);
        assert_eq!(loaded.networks[0].plugins[0].plugin_type, "bridge");
        assert_eq!(loaded.errors.len(), 2, "{:?}", loaded.errors);
        assert!(loaded.errors[0].contains("20-dup.conf: network \"berth\" already defined by"));
        assert!(
            loaded.errors[1].contains("30-broken.conflist")
                && loaded.errors[1].contains("invalid JSON")
        );

        let found = find_network(dir.path(), "lo").unwrap();
        assert_eq!(
            found.source.as_deref(),
            Some(dir.path().join("40-lo.json").as_path())
        );
        let missing = find_network(dir.path(), "other").unwrap_err().to_string();
        assert!(
            missing.contains("no CNI network named \"other\""),
            "{missing}"
        );
        assert!(missing.contains("30-broken.conflist"), "{missing}");
    }
}
