//! `--log FILE --log-format text|json`: containerd and podman read the last JSON line
//! of the log on failure, so errors go there as `{"level":"error","msg":...}` as well
//! as to stderr.

use std::io::Write;

use super::GlobalOpts;

/// Checks the log options: `--log-format` must be text or json.
pub fn init(g: &GlobalOpts) -> Result<(), String> {
    match g.log_format.as_str() {
        "text" | "json" => Ok(()),
        f => Err(format!("--log-format {f:?}: expected text or json")),
    }
}

fn line(g: &GlobalOpts, level: &str, msg: &str) -> String {
    let time = crate::container::state::rfc3339_now();
    if g.log_format == "json" {
        serde_json::json!({"level": level, "msg": msg, "time": time}).to_string()
    } else {
        format!("time=\"{time}\" level={level} msg={msg:?}")
    }
}

/// Logs an error to `--log` (if given) and prints it on stderr.
pub fn fatal(g: &GlobalOpts, msg: &str) {
    if let Some(path) = &g.log {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{}", line(g, "error", msg));
        }
    }
    eprintln!("berth: {msg}");
}

/// Logs a warning the same way.
pub fn warn(g: &GlobalOpts, msg: &str) {
    if let Some(path) = &g.log {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{}", line(g, "warning", msg));
        }
    }
    eprintln!("berth: warning: {msg}");
}

/// Debug lines, only with `--debug`.
pub fn debug(g: &GlobalOpts, msg: &str) {
    if !g.debug {
        return;
    }
    if let Some(path) = &g.log {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{}", line(g, "debug", msg));
            return;
        }
    }
    eprintln!("{}", line(g, "debug", msg));
}
