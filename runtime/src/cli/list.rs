//! `berth list`: a table like runc's, `--format json`, or `--quiet`.

use super::GlobalOpts;
use crate::container::state::SpecState;
use crate::container::ContainerDir;

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// table or json.
    #[arg(long, short = 'f', default_value = "table")]
    pub format: String,
    /// Print only the ids.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

pub fn run(g: &GlobalOpts, a: ListArgs) -> anyhow::Result<i32> {
    if a.format != "table" && a.format != "json" {
        anyhow::bail!(
            "invalid format option {:?}: expected table or json",
            a.format
        );
    }
    let mut states: Vec<SpecState> = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&g.root) {
        let mut ids: Vec<String> = entries
            .flatten()
            .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .collect();
        ids.sort();
        for id in ids {
            // Skip half-made or vanished containers, as runc does.
            let Ok(dir) = ContainerDir::open(&g.root, &id) else {
                continue;
            };
            let Ok(state) = dir.load() else { continue };
            states.push(state.spec_state(state.status(&dir.path)));
        }
    }
    if a.quiet {
        for s in &states {
            println!("{}", s.id);
        }
        return Ok(0);
    }
    if a.format == "json" {
        if states.is_empty() {
            println!("null");
        } else {
            println!("{}", serde_json::to_string(&states)?);
        }
        return Ok(0);
    }
    let owner = if nix::unistd::geteuid().is_root() {
        "root".to_string()
    } else {
        nix::unistd::geteuid().to_string()
    };
    let mut rows = vec![vec![
        "ID".to_string(),
        "PID".into(),
        "STATUS".into(),
        "BUNDLE".into(),
        "CREATED".into(),
        "OWNER".into(),
    ]];
    for s in &states {
        rows.push(vec![
            s.id.clone(),
            s.pid.to_string(),
            s.status.to_string(),
            s.bundle.display().to_string(),
            s.created.clone(),
            owner.clone(),
        ]);
    }
    print!("{}", tabulate(&rows));
    Ok(0)
}

/// Go's tabwriter(minwidth 12, padding 3) as runc uses it: every cell but the last of
/// a row is padded to its column's width.
pub fn tabulate(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; cols];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i + 1 < r.len() {
                widths[i] = widths[i].max((c.chars().count() + 3).max(12));
            }
        }
    }
    let mut out = String::new();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i + 1 < r.len() {
                out.push_str(&format!("{c:<w$}", w = widths[i]));
            } else {
                out.push_str(c);
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn table_like_runc() {
        let rows = vec![
            vec!["ID".to_string(), "PID".into(), "OWNER".into()],
            vec!["c1".to_string(), "123".into(), "root".into()],
        ];
        assert_eq!(
            super::tabulate(&rows),
            "ID          PID         OWNER\nc1          123         root\n"
        );
    }
}
