//! `[X-Fleet]`: where a unit may be placed, with fleet's keys, meanings and validity rules
//! (fleet's `job/job.go`, `api/units.go` `ValidateOptions`, Documentation/unit-files-and-
//! scheduling.md).
//!
//! | key (deprecated alias) | meaning |
//! |---|---|
//! | `MachineID` (`X-ConditionMachineID`) | only the machine with this id (berthd's node name) |
//! | `MachineOf` (`X-ConditionMachineOf`) | the machine running each named unit (repeatable: all of them) |
//! | `MachineMetadata` (`X-ConditionMachineMetadata`) | machines with this metadata: `k=v`, several per value; the same key given twice is an OR, different keys an AND |
//! | `Conflicts` (`X-Conflicts`) | never on a machine with a unit matching one of these globs (either unit's globs keep them apart) |
//! | `Global` | on every machine that satisfies `MachineMetadata` and `Conflicts` |
//! | `Replaces` | units matching these globs leave a machine this unit is placed on |
//!
//! Values are split into words with systemd's quoting (fleet's `"a=b" "c=d"` form works, and so
//! does `a=b c=d`), then `%n %N %p %i %%` are expanded in each word; `%m`/`%H` are refused here.
//! Repeated keys add values; an empty assignment clears the key (systemd's rule); for
//! `MachineID` and `Global` the last assignment wins. Unlike fleet, a malformed
//! `MachineMetadata` pair is an error instead of being skipped silently. `X-ConditionMachineBootID`
//! is refused (fleet kept it only to refuse to start such units).
//!
//! Validity rules (fleet's, plus the self-references fleet let through), checked per unit:
//! `MachineID` excludes `MachineOf`, `Conflicts`, `Global` and `Replaces`; `Global` excludes
//! `MachineOf` and `Replaces` (so it goes only with `MachineMetadata` and `Conflicts`);
//! `Conflicts` excludes `Replaces`; no `MachineOf` unit may match a `Conflicts` or `Replaces`
//! glob; a unit may not be `MachineOf` itself, nor name itself literally in `Conflicts` or
//! `Replaces` (a glob that also matches the unit's own name, like `Conflicts=web@*.service` in
//! `web@.service`, is the usual way to keep siblings apart and is fine: a unit never conflicts
//! with itself). As in fleet, `MachineID` may go with `MachineMetadata` (both must hold).
//! Across a set of units, [`check_set`] refuses circular `Replaces` and circular `MachineOf`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::error::UnitError;
use super::name::UnitName;
use super::parse::Ctx;
use super::syntax::Entry;
use super::{values, Unit};

/// A glob over unit names, with Go's `path.Match` syntax as fleet used it: `*`, `?`, `[abc]`,
/// `[a-z]`, `[^a]` (or `[!a]`), and `\` escaping the next character.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitGlob {
    text: String,
    pattern: glob::Pattern,
    literal: bool,
}

impl UnitGlob {
    /// Parses a glob.
    pub fn parse(text: &str) -> Result<UnitGlob, String> {
        let mut converted = String::with_capacity(text.len());
        let mut chars = text.chars();
        let mut in_class = false;
        while let Some(c) = chars.next() {
            match c {
                '\\' if in_class => return Err("'\\' inside [...] is not supported".into()),
                '\\' => match chars.next() {
                    Some(n @ ('*' | '?' | '[' | ']')) => {
                        converted.push('[');
                        converted.push(n);
                        converted.push(']');
                    }
                    Some(n) => converted.push(n),
                    None => return Err("trailing '\\'".into()),
                },
                '[' if !in_class => {
                    in_class = true;
                    converted.push('[');
                    if chars.as_str().starts_with('^') {
                        chars.next();
                        converted.push('!');
                    }
                }
                ']' if in_class => {
                    in_class = false;
                    converted.push(']');
                }
                _ => converted.push(c),
            }
        }
        let pattern =
            glob::Pattern::new(&converted).map_err(|e| format!("invalid glob: {}", e.msg))?;
        Ok(UnitGlob {
            literal: !text.contains(['*', '?', '[', '\\']),
            text: text.to_string(),
            pattern,
        })
    }

    /// True when `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        if self.literal {
            self.text == name
        } else {
            self.pattern.matches(name)
        }
    }

    /// The glob as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True when the glob has no wildcard: it matches only the name it spells.
    pub fn is_literal(&self) -> bool {
        self.literal
    }
}

/// Metadata a machine must have: for each key the accepted values (any one of them); every key
/// must be satisfied.
pub type MetadataRequirement = BTreeMap<String, BTreeSet<String>>;

/// The parsed `[X-Fleet]` section.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FleetOptions {
    /// `MachineID=`: the only machine allowed.
    pub machine_id: Option<String>,
    /// `MachineOf=`: units whose machine this unit must share (all of them).
    pub machine_of: Vec<UnitName>,
    /// `MachineMetadata=`: OR within a key, AND across keys.
    pub machine_metadata: MetadataRequirement,
    /// `Conflicts=`: globs of units that must not share a machine with this one.
    pub conflicts: Vec<UnitGlob>,
    /// `Global=`: run on every eligible machine instead of being placed.
    pub global: bool,
    /// `Replaces=`: globs of units that move away from the machine this unit is placed on.
    pub replaces: Vec<UnitGlob>,
    /// The line of the last assignment of each canonical key, for errors.
    lines: BTreeMap<&'static str, usize>,
}

impl FleetOptions {
    /// True when `metadata` satisfies `MachineMetadata` (always, when none is required).
    pub fn metadata_matches(&self, metadata: &BTreeMap<String, String>) -> bool {
        self.machine_metadata
            .iter()
            .all(|(k, vals)| metadata.get(k).is_some_and(|v| vals.contains(v)))
    }

    /// True when this unit's `Conflicts` globs match `other` (one direction only; fleet keeps
    /// two units apart when either one's globs match the other).
    pub fn conflicts_with(&self, other: &str) -> bool {
        self.conflicts.iter().any(|g| g.matches(other))
    }

    /// True when this unit's `Replaces` globs match `other`.
    pub fn replaces_unit(&self, other: &str) -> bool {
        self.replaces.iter().any(|g| g.matches(other))
    }

    /// The line of `key`'s last assignment.
    pub fn line_of(&self, key: &str) -> Option<usize> {
        self.lines.get(key).copied()
    }
}

const KNOWN: &str = "MachineID, MachineOf, MachineMetadata, Conflicts, Global, Replaces";

fn canonical(key: &str) -> Option<&'static str> {
    Some(match key {
        "MachineID" | "X-ConditionMachineID" => "MachineID",
        "MachineOf" | "X-ConditionMachineOf" => "MachineOf",
        "MachineMetadata" | "X-ConditionMachineMetadata" => "MachineMetadata",
        "Conflicts" | "X-Conflicts" => "Conflicts",
        "Global" => "Global",
        "Replaces" => "Replaces",
        _ => return None,
    })
}

/// Reads the `[X-Fleet]` entries.
pub(crate) fn parse(ctx: &Ctx<'_>, entries: &[&Entry]) -> Result<FleetOptions, UnitError> {
    let mut f = FleetOptions::default();
    for e in entries {
        if e.key == "X-ConditionMachineBootID" {
            return Err(ctx.err(
                e,
                None,
                "not supported (fleet deprecated it); use MachineID=",
            ));
        }
        let key = canonical(&e.key).ok_or_else(|| ctx.unknown_key(e, KNOWN))?;
        f.lines.insert(key, e.line);
        let words = ctx.words(e)?;
        if words.is_empty() {
            reset(&mut f, key);
            continue;
        }
        let single = || match words.as_slice() {
            [w] => Ok(w.clone()),
            _ => Err(ctx.err(e, Some(&e.value), "takes a single value")),
        };
        match key {
            "MachineID" => f.machine_id = Some(single()?),
            "Global" => {
                let v = single()?;
                f.global = values::parse_bool(&v).map_err(|r| ctx.err(e, Some(&v), r))?;
            }
            "MachineOf" => {
                for w in &words {
                    let n = UnitName::parse(w).map_err(|r| ctx.err(e, Some(w), r.reason))?;
                    if n.is_template() {
                        return Err(ctx.err(
                            e,
                            Some(w),
                            "a template is never placed; name an instance",
                        ));
                    }
                    f.machine_of.push(n);
                }
            }
            "MachineMetadata" => {
                for w in &words {
                    let (k, v) = w
                        .split_once('=')
                        .filter(|(k, v)| !k.is_empty() && !v.is_empty())
                        .ok_or_else(|| ctx.err(e, Some(w), "want key=value with both non-empty"))?;
                    f.machine_metadata
                        .entry(k.to_string())
                        .or_default()
                        .insert(v.to_string());
                }
            }
            _ => {
                for w in &words {
                    let g = UnitGlob::parse(w).map_err(|r| ctx.err(e, Some(w), r))?;
                    if key == "Conflicts" {
                        f.conflicts.push(g);
                    } else {
                        f.replaces.push(g);
                    }
                }
            }
        }
    }
    Ok(f)
}

fn reset(f: &mut FleetOptions, key: &str) {
    match key {
        "MachineID" => f.machine_id = None,
        "Global" => f.global = false,
        "MachineOf" => f.machine_of.clear(),
        "MachineMetadata" => f.machine_metadata.clear(),
        "Conflicts" => f.conflicts.clear(),
        _ => f.replaces.clear(),
    }
}

fn rule_error(ctx: &Ctx<'_>, f: &FleetOptions, key: &str, reason: String) -> UnitError {
    UnitError::file(ctx.error_name, reason)
        .at_line(f.line_of(key))
        .at_key("X-Fleet", Some(key))
}

/// fleet's per-unit validity rules (see the module doc).
pub(crate) fn check_self(ctx: &Ctx<'_>, unit: &Unit, name: &UnitName) -> Result<(), UnitError> {
    let f = &unit.fleet;
    let has = [
        ("MachineID", f.machine_id.is_some()),
        ("MachineOf", !f.machine_of.is_empty()),
        ("Conflicts", !f.conflicts.is_empty()),
        ("Global", f.global),
        ("Replaces", !f.replaces.is_empty()),
    ];
    let on = |k: &str| has.iter().any(|(n, v)| *n == k && *v);
    let exclusive = [
        ("MachineID", "MachineOf"),
        ("MachineID", "Conflicts"),
        ("MachineID", "Global"),
        ("MachineID", "Replaces"),
        ("Global", "MachineOf"),
        ("Global", "Replaces"),
        ("Conflicts", "Replaces"),
    ];
    for (a, b) in exclusive {
        if on(a) && on(b) {
            let later = if f.line_of(a) > f.line_of(b) { a } else { b };
            return Err(rule_error(
                ctx,
                f,
                later,
                format!("{a}= cannot be used with {b}="),
            ));
        }
    }
    for peer in &f.machine_of {
        if peer == name {
            return Err(rule_error(
                ctx,
                f,
                "MachineOf",
                "a unit cannot be MachineOf itself".into(),
            ));
        }
        for (key, globs) in [("Conflicts", &f.conflicts), ("Replaces", &f.replaces)] {
            if let Some(g) = globs.iter().find(|g| g.matches(peer.as_str())) {
                return Err(rule_error(
                    ctx,
                    f,
                    key,
                    format!(
                        "unresolvable: MachineOf={peer} matches {key}={}",
                        g.as_str().escape_debug()
                    ),
                ));
            }
        }
    }
    for (key, globs) in [("Conflicts", &f.conflicts), ("Replaces", &f.replaces)] {
        if globs
            .iter()
            .any(|g| g.is_literal() && g.as_str() == name.as_str())
        {
            return Err(rule_error(
                ctx,
                f,
                key,
                format!("a unit cannot name itself in {key}="),
            ));
        }
    }
    Ok(())
}

/// Checks rules that span several units: no circular `Replaces` (A replaces B replaces A, also
/// through globs and longer chains) and no circular `MachineOf` (neither could ever be placed).
/// Templates are skipped (they are never placed). The error names the first unit of the cycle
/// (in name order) and the whole cycle.
pub fn check_set(units: &[&Unit]) -> Result<(), UnitError> {
    let mut sorted: Vec<&Unit> = units
        .iter()
        .copied()
        .filter(|u| !u.name.is_template())
        .collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let index: HashMap<&str, usize> = sorted
        .iter()
        .enumerate()
        .map(|(i, u)| (u.name.as_str(), i))
        .collect();
    let edges_of = |globs: &[UnitGlob], me: usize| -> Vec<usize> {
        let mut out = BTreeSet::new();
        for g in globs {
            if g.is_literal() {
                out.extend(index.get(g.as_str()).copied());
            } else {
                out.extend((0..sorted.len()).filter(|&j| g.matches(sorted[j].name.as_str())));
            }
        }
        out.remove(&me);
        out.into_iter().collect()
    };
    let replaces: Vec<Vec<usize>> = (0..sorted.len())
        .map(|i| edges_of(&sorted[i].fleet.replaces, i))
        .collect();
    let peers: Vec<Vec<usize>> = sorted
        .iter()
        .map(|u| {
            u.fleet
                .machine_of
                .iter()
                .filter_map(|p| index.get(p.as_str()).copied())
                .collect()
        })
        .collect();
    for (key, graph) in [("Replaces", &replaces), ("MachineOf", &peers)] {
        if let Some(cycle) = find_cycle(graph) {
            let u = sorted[cycle[0]];
            let path: Vec<&str> = cycle
                .iter()
                .chain(std::iter::once(&cycle[0]))
                .map(|&i| sorted[i].name.as_str())
                .collect();
            return Err(UnitError::file(
                u.name.as_str(),
                format!("circular {key}: {}", path.join(" -> ")),
            )
            .at_line(u.fleet.line_of(key))
            .at_key("X-Fleet", Some(key)));
        }
    }
    Ok(())
}

/// A cycle in `graph` (node indexes in order, starting at its smallest member), if any.
fn find_cycle(graph: &[Vec<usize>]) -> Option<Vec<usize>> {
    // 0 = unvisited, 1 = on the current path, 2 = done.
    let mut state = vec![0u8; graph.len()];
    for start in 0..graph.len() {
        if state[start] != 0 {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        state[start] = 1;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(&to) = graph[node].get(*next) {
                *next += 1;
                match state[to] {
                    0 => {
                        state[to] = 1;
                        stack.push((to, 0));
                    }
                    1 => {
                        let pos = stack.iter().position(|&(n, _)| n == to).unwrap_or(0);
                        let mut cycle: Vec<usize> = stack[pos..].iter().map(|&(n, _)| n).collect();
                        let min = cycle
                            .iter()
                            .enumerate()
                            .min_by_key(|(_, &n)| n)
                            .map_or(0, |(i, _)| i);
                        cycle.rotate_left(min);
                        return Some(cycle);
                    }
                    _ => {}
                }
            } else {
                state[node] = 2;
                stack.pop();
            }
        }
    }
    None
}
