//! The /v1/units routes (pure: request in, [`UnitRoute`] or a 4xx out).
//!
//! ```text
//! POST   /v1/units                     {"name","text"}        submit
//! GET    /v1/units                                            every unit file with its state
//! GET    /v1/units/NAME                                       one unit: text, state, placement
//! PUT    /v1/units/NAME/desired        {"desired": "inactive"|"loaded"|"launched"}
//! PUT    /v1/units                     {"names": [...], "desired": ...}   many at once, atomically
//! DELETE /v1/units/NAME                                       destroy
//! GET    /v1/unit-states                                      every unit instance on every machine
//! GET    /v1/units/NAME/journal?lines=N&follow=true&machine=M
//! POST   /v1/units/NAME/exec           {"cmd": [...], "timeout_s"?}   run in its container
//! ```

use serde::Deserialize;

use super::http::{err, HttpError, Request};
use crate::keyspace::Desired;
use crate::unit::{UnitName, MAX_UNIT_SIZE};

/// Most journal lines one request may ask for.
pub const MAX_JOURNAL_LINES: usize = 100_000;
/// The default and the longest time an exec may run, seconds.
pub const EXEC_TIMEOUT_DEFAULT: u64 = 60;
pub const EXEC_TIMEOUT_MAX: u64 = 600;
/// Most arguments and bytes of arguments of an exec.
const EXEC_MAX_ARGS: usize = 1024;
const EXEC_MAX_BYTES: usize = 128 << 10;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitRoute {
    Submit {
        name: String,
        text: String,
    },
    List,
    Get {
        name: String,
    },
    SetDesiredMany {
        names: Vec<String>,
        desired: Desired,
    },
    SetDesired {
        name: String,
        desired: Desired,
    },
    Destroy {
        name: String,
    },
    States,
    Journal {
        name: String,
        lines: usize,
        follow: bool,
        machine: Option<String>,
    },
    /// Run a command in the unit's container, wherever it runs.
    Exec {
        name: String,
        cmd: Vec<String>,
        timeout_s: u64,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitBody {
    name: String,
    text: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DesiredBody {
    desired: Desired,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecBody {
    cmd: Vec<String>,
    #[serde(default)]
    timeout_s: Option<u64>,
}

fn exec_route(name: String, b: ExecBody) -> Result<UnitRoute, HttpError> {
    if b.cmd.first().is_none_or(String::is_empty) {
        return Err(err(400, "cmd must name a program"));
    }
    let bytes: usize = b.cmd.iter().map(String::len).sum();
    if b.cmd.len() > EXEC_MAX_ARGS || bytes > EXEC_MAX_BYTES {
        return Err(err(
            413,
            format!("cmd is longer than {EXEC_MAX_ARGS} arguments or {EXEC_MAX_BYTES} bytes"),
        ));
    }
    if b.cmd.iter().any(|a| a.contains('\0')) {
        return Err(err(400, "cmd arguments cannot hold NUL bytes"));
    }
    let timeout_s = b.timeout_s.unwrap_or(EXEC_TIMEOUT_DEFAULT);
    if !(1..=EXEC_TIMEOUT_MAX).contains(&timeout_s) {
        return Err(err(
            400,
            format!("timeout_s must be 1 to {EXEC_TIMEOUT_MAX}"),
        ));
    }
    Ok(UnitRoute::Exec {
        name,
        cmd: b.cmd,
        timeout_s,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DesiredManyBody {
    names: Vec<String>,
    desired: Desired,
}

/// Most units one desired-state request may change (one registry transaction).
pub const MAX_UNITS_PER_CHANGE: usize = 4_000;

fn body<'a, T: Deserialize<'a>>(req: &'a Request) -> Result<T, HttpError> {
    serde_json::from_slice(&req.body).map_err(|e| err(400, format!("invalid JSON body: {e}")))
}

fn unit_name(s: &str) -> Result<String, HttpError> {
    UnitName::parse(s)
        .map(|n| n.as_str().to_string())
        .map_err(|e| err(400, format!("invalid unit name: {e}")))
}

/// The route of a units request, or None when the path is not a units path.
pub fn route(req: &Request) -> Option<Result<UnitRoute, HttpError>> {
    let m = req.method.as_str();
    let p = req.path.as_str();
    let not_allowed = || err(405, format!("method {m} not allowed on {p}"));
    if p == "/v1/unit-states" {
        return Some(match m {
            "GET" => Ok(UnitRoute::States),
            _ => Err(not_allowed()),
        });
    }
    if p == "/v1/units" {
        return Some(match m {
            "GET" => Ok(UnitRoute::List),
            "PUT" => body::<DesiredManyBody>(req).and_then(|b| {
                if b.names.is_empty() || b.names.len() > MAX_UNITS_PER_CHANGE {
                    return Err(err(
                        400,
                        format!(
                            "{} unit names: give 1 to {MAX_UNITS_PER_CHANGE} per request",
                            b.names.len()
                        ),
                    ));
                }
                let names = b
                    .names
                    .iter()
                    .map(|n| unit_name(n))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(UnitRoute::SetDesiredMany {
                    names,
                    desired: b.desired,
                })
            }),
            "POST" => body::<SubmitBody>(req).and_then(|b| {
                if b.text.len() > MAX_UNIT_SIZE {
                    return Err(err(
                        413,
                        format!("unit file {} exceeds {MAX_UNIT_SIZE} bytes", b.name),
                    ));
                }
                Ok(UnitRoute::Submit {
                    name: unit_name(&b.name)?,
                    text: b.text,
                })
            }),
            _ => Err(not_allowed()),
        });
    }
    let rest = p.strip_prefix("/v1/units/")?;
    let (name, action) = rest.split_once('/').unwrap_or((rest, ""));
    Some(unit_name(name).and_then(|name| match (m, action) {
        ("GET", "") => Ok(UnitRoute::Get { name }),
        ("DELETE", "") => Ok(UnitRoute::Destroy { name }),
        ("PUT", "desired") => body::<DesiredBody>(req).map(|b| UnitRoute::SetDesired {
            name,
            desired: b.desired,
        }),
        ("POST", "exec") => body::<ExecBody>(req).and_then(|b| exec_route(name, b)),
        ("GET", "journal") => {
            let lines = match req.query("lines") {
                None => 10,
                Some(s) => s
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n <= MAX_JOURNAL_LINES)
                    .ok_or_else(|| {
                        err(
                            400,
                            format!("lines={s:?} must be a number up to {MAX_JOURNAL_LINES}"),
                        )
                    })?,
            };
            let follow = matches!(req.query("follow"), Some("true" | "1" | ""));
            let machine = req.query("machine").map(str::to_string);
            Ok(UnitRoute::Journal {
                name,
                lines,
                follow,
                machine,
            })
        }
        _ => Err(not_allowed()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::api::http::test_request as req;

    #[test]
    fn exec_routes_check_the_command_and_timeout() {
        let exec = |body: &str| route(&req("POST", "/v1/units/a.service/exec", &[], body));
        assert_eq!(
            exec(r#"{"cmd":["ls","-l"]}"#),
            Some(Ok(UnitRoute::Exec {
                name: "a.service".into(),
                cmd: vec!["ls".into(), "-l".into()],
                timeout_s: EXEC_TIMEOUT_DEFAULT
            }))
        );
        let code = |body: &str| exec(body).and_then(Result::err).map(|e| e.status);
        assert_eq!(code(r#"{"cmd":[]}"#), Some(400));
        assert_eq!(code(r#"{"cmd":[""]}"#), Some(400));
        assert_eq!(code(r#"{"cmd":["a\u0000b"]}"#), Some(400));
        assert_eq!(code(r#"{"cmd":["ls"],"timeout_s":0}"#), Some(400));
        assert_eq!(code(r#"{"cmd":["ls"],"timeout_s":601}"#), Some(400));
        assert_eq!(code(r#"{"cmd":["ls"],"user":"x"}"#), Some(400));
        let long = format!(r#"{{"cmd":["{}"]}}"#, "x".repeat(200_000));
        assert_eq!(code(&long), Some(413));
        assert_eq!(
            route(&req("GET", "/v1/units/a.service/exec", &[], ""))
                .and_then(Result::err)
                .map(|e| e.status),
            Some(405)
        );
    }

    #[test]
    fn unit_routes() {
        assert_eq!(route(&req("GET", "/v1/keys/a", &[], "")), None);
        assert_eq!(
            route(&req(
                "POST",
                "/v1/units",
                &[],
                r#"{"name":"web@.service","text":"[Service]\nExecStart=/bin/true\n"}"#
            )),
            Some(Ok(UnitRoute::Submit {
                name: "web@.service".into(),
                text: "[Service]\nExecStart=/bin/true\n".into()
            }))
        );
        assert_eq!(
            route(&req(
                "PUT",
                "/v1/units/web@1.service/desired",
                &[],
                r#"{"desired":"launched"}"#
            )),
            Some(Ok(UnitRoute::SetDesired {
                name: "web@1.service".into(),
                desired: Desired::Launched
            }))
        );
        assert_eq!(
            route(&req(
                "GET",
                "/v1/units/a.service/journal",
                &[("lines", "5"), ("follow", "true")],
                ""
            )),
            Some(Ok(UnitRoute::Journal {
                name: "a.service".into(),
                lines: 5,
                follow: true,
                machine: None
            }))
        );
    }

    #[test]
    fn bad_unit_requests_name_the_problem() {
        let e = |r: Option<Result<UnitRoute, HttpError>>| match r {
            Some(Err(e)) => (e.status, e.message),
            other => panic!("expected an error, got {other:?}"),
        };
        let (s, m) = e(route(&req("GET", "/v1/units/bad name", &[], "")));
        assert_eq!(s, 400);
        assert!(m.contains("invalid unit name"), "{m}");
        let (s, _) = e(route(&req(
            "PUT",
            "/v1/units/a.service/desired",
            &[],
            r#"{"desired":"running"}"#,
        )));
        assert_eq!(s, 400);
        let (s, _) = e(route(&req("POST", "/v1/unit-states", &[], "")));
        assert_eq!(s, 405);
        let (s, m) = e(route(&req(
            "GET",
            "/v1/units/a.service/journal",
            &[("lines", "-1")],
            "",
        )));
        assert_eq!(s, 400);
        assert!(m.contains("lines"), "{m}");
    }
}
