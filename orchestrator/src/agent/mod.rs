//! The agent: runs the units scheduled to this machine through `berth`, with no helper
//! process per container.
//!
//! Pure parts: [`instance`] (one unit's container as a state machine), [`reconcile`] (what
//! should run here, from the registry). The IO parts perform their effects.

pub mod berth;
pub mod instance;
pub mod journal;
pub mod reconcile;
pub mod sys;

/// Text from a container, an image or a unit made safe for a terminal or a log line: control
/// characters escaped, cut at `max` characters.
pub fn printable(s: &str, max: usize) -> String {
    let mut out = String::new();
    for (n, c) in s.chars().enumerate() {
        if n >= max {
            out.push_str("...");
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}
mod adopt;
pub mod exec;
pub mod launch;
mod logs;
pub mod net;
mod netrun;
pub mod pull;
mod report;
pub mod runner;
pub mod watchdog;
pub mod work;

pub use runner::{Agent, AgentConfig, AgentError, Out, TOKEN_BASE};
pub mod config;
