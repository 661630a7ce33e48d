//! fleet-era units: `ExecStart=` on the machine's own root, read-only.

use serde_json::{json, Value};

use berth_images::bundle::{self, UserDb};

use super::container::all_caps;
use super::{env_files, merged_env, OciContext, OciError};
use crate::unit::{EnvFileFormat, Unit};

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub(super) fn config(unit: &Unit, users: &UserDb, ctx: &OciContext<'_>) -> Result<Value, OciError> {
    let s = &unit.service;
    let bundle_err = |source| OciError::Bundle {
        unit: unit.name.to_string(),
        source,
    };
    let user_spec = s.user.clone().unwrap_or_default();
    let user = bundle::resolve_user(&user_spec, users).map_err(bundle_err)?;
    let paths: Vec<&str> = s
        .environment_files
        .iter()
        .map(|f| f.path.as_str())
        .collect();
    // systemd: variables from EnvironmentFile= override those of Environment=.
    let mut vars = s.environment.clone();
    vars.extend(env_files(
        unit,
        &paths,
        ctx.env_files,
        EnvFileFormat::Systemd,
    )?);
    let mut identity = vec![("HOME".to_string(), user.home.clone())];
    if let Some(name) = &s.user {
        let login = users
            .users
            .iter()
            .find(|u| u.uid == user.uid)
            .map_or(name.clone(), |u| u.name.clone());
        identity.push(("USER".into(), login.clone()));
        identity.push(("LOGNAME".into(), login));
    }
    identity.extend(vars);
    let env = merged_env(&[DEFAULT_PATH.to_string()], &identity);
    let args = match &s.exec_start {
        Some(cmd) if cmd.substitute_env => substitute(&cmd.argv, &env),
        Some(cmd) => cmd.argv.clone(),
        None => Vec::new(),
    };
    let caps: Vec<String> = if user.uid == 0 {
        all_caps()
    } else {
        Vec::new()
    };
    let mut user_json = json!({"uid": user.uid, "gid": user.gid});
    if !user.additional_gids.is_empty() {
        user_json["additionalGids"] = json!(user.additional_gids);
    }
    let mut mounts = bundle::base_mounts();
    mounts.push(bundle::sysfs_mount());
    mounts.push(
        json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                       "options": ["rw", "nosuid", "nodev", "mode=1777"]}),
    );
    Ok(json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": user_json,
            "args": args,
            "env": env,
            "cwd": s.working_directory.clone().unwrap_or_else(|| "/".into()),
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 524288, "soft": 1024}],
            "noNewPrivileges": false,
        },
        "root": {"path": "/", "readonly": true},
        "hostname": ctx.hostname,
        "mounts": mounts,
        "annotations": {},
        "linux": {
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
            "maskedPaths": bundle::MASKED_PATHS,
            "readonlyPaths": bundle::READONLY_PATHS,
        },
    }))
}

fn lookup<'e>(env: &'e [String], name: &str) -> Option<&'e str> {
    env.iter()
        .rev()
        .find_map(|e| e.strip_prefix(name).and_then(|r| r.strip_prefix('=')))
}

/// systemd's `$NAME` / `${NAME}` substitution in a command line (see the module doc).
pub(super) fn substitute(argv: &[String], env: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(argv.len());
    for word in argv {
        if let Some(name) = word
            .strip_prefix('$')
            .filter(|n| super::super::words::valid_env_name(n))
        {
            out.extend(
                lookup(env, name)
                    .unwrap_or("")
                    .split_whitespace()
                    .map(str::to_string),
            );
            continue;
        }
        out.push(substitute_braces(word, env));
    }
    out
}

fn substitute_braces(word: &str, env: &[String]) -> String {
    let mut out = String::with_capacity(word.len());
    let mut rest = word;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some((name, tail)) = after.strip_prefix('{').and_then(|b| b.split_once('}')) {
            if super::super::words::valid_env_name(name) {
                out.push_str(lookup(env, name).unwrap_or(""));
            } else {
                out.push_str("${");
                out.push_str(name);
                out.push('}');
            }
            rest = tail;
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}
