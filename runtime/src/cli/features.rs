//! `berth features`: the runtime-spec features JSON, generated from the tables the
//! code itself uses (namespaces, capabilities, mount options, seccomp, hooks, cgroups).

use serde_json::json;

use super::GlobalOpts;

pub fn features_json() -> serde_json::Value {
    let namespaces: Vec<&str> = crate::spec::NAMESPACES
        .iter()
        .map(|(_, n, _, _)| *n)
        .collect();
    let mount_options: Vec<&str> = crate::spec::mount_options::MOUNT_OPTIONS
        .iter()
        .map(|(n, _)| *n)
        .collect();
    let actions: Vec<serde_json::Value> = crate::seccomp::SUPPORTED_ACTIONS
        .iter()
        .map(|a| serde_json::to_value(a).unwrap_or_default())
        .collect();
    let archs: Vec<serde_json::Value> = crate::seccomp::supported_archs()
        .iter()
        .map(|a| serde_json::to_value(a).unwrap_or_default())
        .collect();
    let layout = crate::cgroups::detect().ok();
    let (v1, v2) = match &layout {
        Some(crate::cgroups::Layout::V1 { .. }) => (true, false),
        Some(crate::cgroups::Layout::Hybrid { .. }) => (true, true),
        Some(crate::cgroups::Layout::V2 { .. }) => (false, true),
        None => (false, false),
    };
    json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.2.0",
        "hooks": crate::hooks::supported_hooks(),
        "mountOptions": mount_options,
        "linux": {
            "namespaces": namespaces,
            "capabilities": crate::capabilities::all_known_names(),
            "cgroup": {"v1": v1, "v2": v2, "systemd": false, "systemdUser": false, "rdma": false},
            "seccomp": {
                "enabled": true,
                "actions": actions,
                "operators": crate::seccomp::SUPPORTED_OPERATORS,
                "archs": archs,
                "knownFlags": crate::seccomp::SUPPORTED_FLAGS,
                "supportedFlags": crate::seccomp::SUPPORTED_FLAGS
            },
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false},
            "intelRdt": {"enabled": false},
            "mountExtensions": {"idmap": {"enabled": true}}
        },
        "annotations": {
            "org.opencontainers.runc.checkpoint.enabled": "false",
            "io.github.berth.version": env!("CARGO_PKG_VERSION")
        }
    })
}

pub fn run(_g: &GlobalOpts) -> anyhow::Result<i32> {
    println!("{}", serde_json::to_string_pretty(&features_json())?);
    Ok(0)
}
