//! Line syntax and quoting.

use super::*;

#[test]
fn continuation_joins_lines_with_a_space_and_skips_comment_lines() {
    let u = ok(
        "a.service",
        "[Service]\nExecStart=/bin/echo one \\\n# a comment inside\n  two\\\n; another\nthree\n",
    );
    let argv = &u.service.exec_start.as_ref().expect("exec").argv;
    assert_eq!(argv, &["/bin/echo", "one", "two", "three"]);
}

#[test]
fn double_backslash_at_end_is_not_a_continuation() {
    let u = ok(
        "a.service",
        "[Service]\nExecStart=/bin/echo a\\\\\nRestart=always\n",
    );
    assert_eq!(
        u.service.exec_start.expect("exec").argv,
        ["/bin/echo", "a\\"]
    );
    assert_eq!(u.service.restart, RestartPolicy::Always);
}

#[test]
fn continued_error_reports_the_first_line() {
    let e = refused(
        "a.service",
        "[Service]\nExecStart=/bin/true\nRestart=\\\nsometimes\n",
    );
    assert_eq!(
        e,
        "a.service:3: [Service] Restart: \"sometimes\": want no, on-failure or always"
    );
}

#[test]
fn comments_blank_lines_crlf_and_whitespace_around_equals() {
    let u = ok(
        "a.service",
        "# c\r\n; c\r\n\r\n[Unit]\r\nDescription =  hello # not a comment  \r\n[Service]\r\n  ExecStart\t= /bin/true\r\n",
    );
    assert_eq!(u.description.as_deref(), Some("hello # not a comment"));
    assert_eq!(u.service.exec_start.expect("exec").argv, ["/bin/true"]);
}

#[test]
fn syntax_errors_name_the_line() {
    assert_eq!(
        refused("a.service", "[Service]\nExecStart=/bin/true\njunk\n"),
        "a.service:3: missing '=' in \"junk\" (want Key=Value)"
    );
    assert_eq!(
        refused("a.service", "Description=x\n[Service]\n"),
        "a.service:1: Description= is outside of any section"
    );
    assert_eq!(
        refused("a.service", "[Service\nExecStart=/bin/true\n"),
        "a.service:1: invalid section header \"[Service\": want [Name] alone on its line"
    );
    assert_eq!(
        refused("a.service", "[Service] # x\n"),
        "a.service:1: invalid section header \"[Service] # x\": want [Name] alone on its line"
    );
    assert_eq!(
        refused("a.service", "[]\n"),
        "a.service:1: invalid section name \"\""
    );
    assert_eq!(
        refused("a.service", "[Service]\n=x\n"),
        "a.service:2: assignment without a key"
    );
    assert!(refused("a.service", ".include /etc/x\n").contains(".include is not supported"));
    assert_eq!(
        refused("a.service", "a\0b"),
        "a.service: contains a NUL byte"
    );
}

#[test]
fn sections_unknown_ignored_and_required() {
    assert_eq!(
        refused("a.service", "[Service]\nExecStart=/bin/true\n[Socket]\nListenStream=80\n"),
        "a.service:3: [Socket] unknown section (berth reads [Unit], [Service], [Container] and [X-Fleet]; [Install] and [X-...] are ignored)"
    );
    let u = ok(
        "a.service",
        "[Service]\nExecStart=/bin/true\nX-Mine=1\n[Install]\nWantedBy=multi-user.target\n[X-Other]\nAnything=1\n",
    );
    let ignored: Vec<_> = u
        .ignored
        .iter()
        .map(|i| (i.line, i.section.as_str(), i.key.as_str()))
        .collect();
    assert_eq!(
        ignored,
        [
            (5, "Install", "WantedBy"),
            (7, "X-Other", "Anything"),
            (3, "Service", "X-Mine")
        ]
    );
    assert_eq!(
        refused("a.service", "[Unit]\nDescription=x\n"),
        "a.service: no [Container] section and no ExecStart= in [Service]: nothing to run"
    );
}

#[test]
fn size_limit() {
    let big = format!(
        "[Service]\nExecStart=/bin/true\n#{}\n",
        "x".repeat(MAX_UNIT_SIZE)
    );
    assert!(refused("a.service", &big).contains("more than the 524288 allowed"));
}

#[test]
fn exec_quoting_as_systemd() {
    let u = ok(
        "a.service",
        r#"[Service]
ExecStart=/bin/sh -c "while true; do echo \"hi there\"; sleep 1; done" 'single $x' a"b c"d "" \x41\101\u00e9\s\; \t end"#,
    );
    assert_eq!(
        u.service.exec_start.expect("exec").argv,
        [
            "/bin/sh",
            "-c",
            "while true; do echo \"hi there\"; sleep 1; done",
            "single $x",
            "ab cd",
            "",
            "AAé ;",
            "\t",
            "end"
        ]
    );
}

#[test]
fn exec_quoting_errors() {
    for (value, reason) in [
        ("/bin/echo \"open", "unbalanced quote \""),
        ("/bin/echo 'open", "unbalanced quote '"),
        ("/bin/echo \\q", "unknown escape \\q"),
        ("/bin/echo \\x0", "invalid \\x escape"),
        ("/bin/echo \\x00", "escape produces a NUL character"),
    ] {
        let e = refused("a.service", &format!("[Service]\nExecStart={value}\n"));
        assert!(e.ends_with(reason), "{value}: {e}");
        assert!(e.starts_with("a.service:2: [Service] ExecStart: "), "{e}");
    }
}

#[test]
fn environment_words_and_assignments() {
    let u = ok(
        "a.service",
        "[Service]\nExecStart=/bin/true\nEnvironment=A=1 \"B=two words\" C=\nEnvironment='D=x=y'\n",
    );
    let env: Vec<(&str, &str)> = u
        .service
        .environment
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        env,
        [("A", "1"), ("B", "two words"), ("C", ""), ("D", "x=y")]
    );
    assert_eq!(
        refused("a.service", "[Service]\nExecStart=/bin/true\nEnvironment=A=1 junk\n"),
        "a.service:3: [Service] Environment: \"junk\": \"junk\" is not an assignment (want NAME=value)"
    );
    assert!(refused("a.service", &svc("Environment=1A=x"))
        .ends_with("invalid variable name \"1A\" (want [A-Za-z_][A-Za-z0-9_]*)"));
    let cleared = ok(
        "a.service",
        &svc("Environment=A=1\nEnvironment=\nEnvironment=B=2"),
    );
    assert_eq!(
        cleared.service.environment,
        [("B".to_string(), "2".to_string())]
    );
}

#[test]
fn env_file_systemd_format() {
    let text = "# c\n; c\n\nA=1\nexport B = \"two \\\"q\\\" $x\"\nC='lit \\n'\nD=un\\ quoted\nE=long\\\nline\n";
    let env = parse_env_file(text, EnvFileFormat::Systemd).expect("parses");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(
        env,
        [
            ("A", "1"),
            ("B", "two \"q\" $x"),
            ("C", "lit \\n"),
            ("D", "un quoted"),
            ("E", "longline")
        ]
    );
    assert_eq!(
        parse_env_file("A=1\nnothing\n", EnvFileFormat::Systemd),
        Err((2, "missing '=' in \"nothing\"".into()))
    );
    assert_eq!(
        parse_env_file("A=\"x\n", EnvFileFormat::Systemd),
        Err((1, "unbalanced quote \"".into()))
    );
    assert_eq!(
        parse_env_file("9=x\n", EnvFileFormat::Systemd),
        Err((1, "invalid variable name \"9\"".into()))
    );
}

#[test]
fn env_file_podman_format_is_literal() {
    let env = parse_env_file("# c\nA=\"quoted\"\n  B=x y \n\nC=\n", EnvFileFormat::Podman)
        .expect("parses");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(env, [("A", "\"quoted\""), ("B", "x y "), ("C", "")]);
    let e = parse_env_file("A=1\nHOME\n", EnvFileFormat::Podman).expect_err("bare name");
    assert_eq!(e.0, 2);
    assert!(e.1.contains("has no '='"), "{}", e.1);
}
