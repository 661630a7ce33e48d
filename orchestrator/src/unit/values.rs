//! Scalar values as systemd reads them: booleans, time spans, sizes, percentages, signals;
//! and capability names. Each parser returns a message naming what is wrong; the caller adds
//! the unit, line and key.

use std::str::FromStr;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

/// systemd's booleans: `1 yes y true t on` / `0 no n false f off`, any case.
pub(crate) fn parse_bool(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "1" | "yes" | "y" | "true" | "t" | "on" => Ok(true),
        "0" | "no" | "n" | "false" | "f" | "off" => Ok(false),
        _ => Err("not a boolean (want yes/no, true/false, on/off, 1/0)".into()),
    }
}

/// Microseconds per unit, systemd's table (`time-util.c`), a month being 30.44 days and a
/// year 365.25 days.
const TIME_UNITS: &[(&[&str], u64)] = &[
    (&["usec", "us", "µs", "μs"], 1),
    (&["nsec", "ns"], 0),
    (&["msec", "ms"], 1_000),
    (&["seconds", "second", "sec", "s"], 1_000_000),
    (&["minutes", "minute", "min", "m"], 60_000_000),
    (&["hours", "hour", "hr", "h"], 3_600_000_000),
    (&["days", "day", "d"], 86_400_000_000),
    (&["weeks", "week", "w"], 604_800_000_000),
    (&["months", "month", "M"], 2_629_800_000_000),
    (&["years", "year", "y"], 31_557_600_000_000),
];

/// Splits `s` into (number, unit) components: `1h 30min`, `1h30min`, `2.5s`, `90`.
fn components(s: &str) -> Result<Vec<(&str, &str)>, String> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err("empty".into());
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(format!("expected a number at {:?}", short(rest)));
        }
        let (num, after) = rest.split_at(num_len);
        let after = after.trim_start();
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.' || c.is_whitespace())
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        out.push((num, unit));
        rest = next.trim_start();
    }
    Ok(out)
}

fn short(s: &str) -> String {
    super::name::truncate(s, 40)
}

/// `num * mult`, where `num` may have a fraction (`2.5`); `None` on overflow or a bad number.
fn scaled(num: &str, mult: u64) -> Option<u64> {
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.is_empty() && frac.is_empty() || frac.contains('.') {
        return None;
    }
    let int_v: u64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut v = int_v.checked_mul(mult)?;
    let mut div = 1u64;
    for d in frac.chars().take(18) {
        div = div.checked_mul(10)?;
        let digit = u64::from(d.to_digit(10)?);
        v = v.checked_add(digit.checked_mul(mult)? / div)?;
    }
    Some(v)
}

/// A systemd time span (`5s`, `1min 30s`, `1h30m`, `100ms`, `2.5h`; no unit = seconds).
/// `infinity` is handled by the caller where a key allows it.
pub(crate) fn parse_timespan(s: &str) -> Result<Duration, String> {
    let mut total: u64 = 0;
    for (num, unit) in components(s)? {
        let mult = if unit.is_empty() {
            1_000_000
        } else {
            TIME_UNITS
                .iter()
                .find(|(names, _)| names.contains(&unit))
                .map(|(_, m)| *m)
                .ok_or_else(|| {
                    format!(
                        "unknown time unit {:?} (want us, ms, s, min, h, d, w, M, y)",
                        short(unit)
                    )
                })?
        };
        let v = if mult == 0 {
            scaled(num, 1).map(|ns| ns / 1000)
        } else {
            scaled(num, mult)
        };
        let v = v.ok_or_else(|| format!("invalid number {:?}", short(num)))?;
        total = total
            .checked_add(v)
            .ok_or_else(|| "time span too large".to_string())?;
    }
    Ok(Duration::from_micros(total))
}

/// A time span that may also be `infinity` (`None`).
pub(crate) fn parse_timespan_or_infinity(s: &str) -> Result<Option<Duration>, String> {
    if s == "infinity" {
        return Ok(None);
    }
    parse_timespan(s).map(Some)
}

/// A byte size as systemd's `parse_size` reads it with base 1024: a number with an optional
/// fraction and one of the suffixes `B K M G T P E` (uppercase, as systemd), components summed
/// (`1G 512M`).
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let mut total: u64 = 0;
    for (num, unit) in components(s)? {
        let shift = match unit {
            "" | "B" => 0,
            "K" => 10,
            "M" => 20,
            "G" => 30,
            "T" => 40,
            "P" => 50,
            "E" => 60,
            _ => {
                return Err(format!(
                    "unknown size suffix {:?} (want K, M, G, T, P or E; uppercase, base 1024)",
                    short(unit)
                ))
            }
        };
        let v =
            scaled(num, 1u64 << shift).ok_or_else(|| format!("invalid number {:?}", short(num)))?;
        total = total
            .checked_add(v)
            .ok_or_else(|| "size too large".to_string())?;
    }
    Ok(total)
}

/// A percentage with up to two decimals (`50%`, `12.5%`), in hundredths of a percent.
pub(crate) fn parse_percent(s: &str) -> Result<u64, String> {
    let num = s
        .strip_suffix('%')
        .ok_or_else(|| "not a percentage (want N%)".to_string())?;
    if num.split_once('.').is_some_and(|(_, f)| f.len() > 2) {
        return Err("at most two decimals in a percentage".into());
    }
    scaled(num.trim(), 100).ok_or_else(|| format!("invalid percentage {:?}", short(s)))
}

/// A limit that is a number, a share of the machine, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    /// An absolute value (bytes for memory, a count for tasks).
    Value(u64),
    /// Hundredths of a percent of the machine's total (memory, or the kernel's pid limit).
    Percent(u64),
    /// `infinity`: no limit.
    Infinity,
}

impl Limit {
    /// The absolute value for a machine whose total is `total` (`None` for `infinity`).
    pub fn resolve(self, total: u64) -> Option<u64> {
        match self {
            Limit::Value(v) => Some(v),
            Limit::Percent(p) => Some((u128::from(total) * u128::from(p) / 10_000) as u64),
            Limit::Infinity => None,
        }
    }
}

/// `MemoryMax=`: a size, a percentage of physical memory, or `infinity`; not 0.
pub(crate) fn parse_memory_limit(s: &str) -> Result<Limit, String> {
    let l = parse_limit(s, parse_size)?;
    if l == Limit::Value(0) || l == Limit::Percent(0) {
        return Err("must be more than 0".into());
    }
    Ok(l)
}

/// `TasksMax=`: a count, a percentage of the kernel's limit, or `infinity`; not 0.
pub(crate) fn parse_tasks_limit(s: &str) -> Result<Limit, String> {
    let l = parse_limit(s, |v| {
        v.parse::<u64>()
            .map_err(|_| "not a number, a percentage or infinity".to_string())
    })?;
    if l == Limit::Value(0) || l == Limit::Percent(0) {
        return Err("must be more than 0".into());
    }
    Ok(l)
}

fn parse_limit(s: &str, value: impl Fn(&str) -> Result<u64, String>) -> Result<Limit, String> {
    if s == "infinity" {
        Ok(Limit::Infinity)
    } else if s.ends_with('%') {
        let p = parse_percent(s)?;
        if p > 10_000 {
            return Err("more than 100%".into());
        }
        Ok(Limit::Percent(p))
    } else {
        value(s).map(Limit::Value)
    }
}

/// `CPUQuota=`: a percentage of one CPU (may exceed 100%), more than 0.
pub(crate) fn parse_cpu_quota(s: &str) -> Result<u64, String> {
    let p = parse_percent(s)?;
    if p == 0 {
        return Err("must be more than 0%".into());
    }
    Ok(p)
}

/// A signal by name (`SIGTERM`, `TERM`) or number (1-31).
pub(crate) fn parse_signal(s: &str) -> Result<Signal, String> {
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| format!("unknown signal number {n}"));
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&name)
        .map_err(|_| "unknown signal (want a name like SIGTERM or a number)".into())
}

/// A capability in a unit: one by name, or all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CapabilityName {
    /// `ALL` (podman's `--cap-add=all` / `--cap-drop=all`).
    All,
    /// One capability.
    One(caps::Capability),
}

/// A capability name as podman accepts it: any case, with or without `CAP_`, or `all`.
pub(crate) fn parse_capability(s: &str) -> Result<CapabilityName, String> {
    let upper = s.to_ascii_uppercase();
    if upper == "ALL" {
        return Ok(CapabilityName::All);
    }
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    caps::Capability::from_str(&full)
        .map(CapabilityName::One)
        .map_err(|_| "unknown capability (want a name like CAP_NET_ADMIN, or ALL)".into())
}
