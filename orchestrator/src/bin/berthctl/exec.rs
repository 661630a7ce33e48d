//! `berthctl exec UNIT -- CMD...`: runs a command in a unit's container, wherever it runs
//! (fleetctl ssh UNIT CMD's job), prints its stdout and stderr and exits with its status
//! (128+N when a signal ended it). Output that goes to a terminal has its control
//! characters escaped; piped, it is passed on byte for byte.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::{bail, Context};
use base64::Engine;
use berth_orchestrator::api::http::percent_encode;
use berth_orchestrator::client::Client;
use serde_json::{json, Value};

#[derive(clap::Args)]
pub struct ExecArgs {
    /// The unit whose container runs the command
    pub unit: String,
    /// Seconds before the command is killed (at most 600)
    #[arg(long = "exec-timeout", default_value_t = 60)]
    pub timeout: u64,
    /// The command and its arguments (after `--`)
    #[arg(last = true, required = true)]
    pub cmd: Vec<String>,
}

fn bytes(v: &Value, k: &str) -> anyhow::Result<Vec<u8>> {
    let s = v.get(k).and_then(Value::as_str).unwrap_or("");
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .with_context(|| format!("the answer's {k} is not base64"))
}

/// Bytes for a terminal: control characters other than newline and tab escaped.
fn for_terminal(b: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(b);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out.into_bytes()
}

fn emit(mut w: impl Write, b: &[u8], terminal: bool) -> std::io::Result<()> {
    if terminal {
        w.write_all(&for_terminal(b))?;
    } else {
        w.write_all(b)?;
    }
    w.flush()
}

/// Runs the exec; the process exits with the command's status.
pub fn run(c: Client, a: ExecArgs) -> anyhow::Result<()> {
    // The answer comes when the command ends: wait for its timeout and then some.
    let c = c.with_timeout(Duration::from_secs(a.timeout.saturating_add(20)));
    let body = json!({ "cmd": a.cmd, "timeout_s": a.timeout });
    let path = format!("/v1/units/{}/exec", percent_encode(&a.unit));
    let v = c.json("POST", &path, Some(&body))?;
    emit(
        std::io::stdout(),
        &bytes(&v, "stdout")?,
        std::io::stdout().is_terminal(),
    )?;
    emit(
        std::io::stderr(),
        &bytes(&v, "stderr")?,
        std::io::stderr().is_terminal(),
    )?;
    let machine = v.get("machine").and_then(Value::as_str).unwrap_or("?");
    if v.get("truncated") == Some(&Value::Bool(true)) {
        eprintln!(
            "berthctl: output cut at {} KiB per stream",
            berth_orchestrator::agent::exec::MAX_OUTPUT >> 10
        );
    }
    if let Some(e) = v.get("error").and_then(Value::as_str) {
        bail!("exec on {machine}: {e}");
    }
    let code = match (v.get("exit_code"), v.get("signal")) {
        (Some(c), _) if c.is_i64() => c.as_i64().unwrap_or(1) as i32,
        (_, Some(s)) if s.is_i64() => 128 + s.as_i64().unwrap_or(0) as i32,
        _ => bail!("exec on {machine}: no exit status in the answer"),
    };
    std::process::exit(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_output_is_escaped() {
        assert_eq!(for_terminal(b"a\x1b[31mb\n\tc"), b"a\\u{1b}[31mb\n\tc");
        assert_eq!(for_terminal(&[0xff, b'x']), "\u{fffd}x".as_bytes());
    }
}
