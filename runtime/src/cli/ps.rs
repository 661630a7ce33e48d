//! `berth ps <id>`: `ps -ef` filtered to the container's processes, or `--format json`.

use super::GlobalOpts;
use crate::container::{ContainerDir, Status};

#[derive(Debug, clap::Args)]
pub struct PsArgs {
    /// table or json.
    #[arg(long, short = 'f', default_value = "table")]
    pub format: String,
    /// The container id.
    pub id: String,
    /// Options for ps (default -ef).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_args: Vec<String>,
}

pub fn run(g: &GlobalOpts, a: PsArgs) -> anyhow::Result<i32> {
    crate::container::validate_id(&a.id)?;
    let dir = ContainerDir::open(&g.root, &a.id)?;
    let state = dir.load()?;
    let pids = if state.status(&dir.path) == Status::Stopped {
        Vec::new()
    } else {
        crate::cgroups::membership::pids(&state.cgroup)?
    };
    match a.format.as_str() {
        "json" => {
            println!("{}", serde_json::to_string(&pids)?);
            Ok(0)
        }
        "table" => {
            let args = if a.ps_args.is_empty() {
                vec!["-ef".to_string()]
            } else {
                a.ps_args.clone()
            };
            let out = std::process::Command::new("ps")
                .args(&args)
                .output()
                .map_err(|e| anyhow::anyhow!("running ps {}: {e}", args.join(" ")))?;
            if !out.status.success() {
                anyhow::bail!(
                    "ps {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            let text = String::from_utf8_lossy(&out.stdout);
            let mut lines = text.lines();
            let header = lines.next().unwrap_or_default();
            let pid_col = header
                .split_whitespace()
                .position(|h| h == "PID")
                .ok_or_else(|| anyhow::anyhow!("ps output has no PID column"))?;
            println!("{header}");
            for l in lines {
                let pid: Option<i32> = l
                    .split_whitespace()
                    .nth(pid_col)
                    .and_then(|p| p.parse().ok());
                if pid.is_some_and(|p| pids.contains(&p)) {
                    println!("{l}");
                }
            }
            Ok(0)
        }
        f => anyhow::bail!("invalid format option {f:?}: expected table or json"),
    }
}
