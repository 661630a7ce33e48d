//! `[Unit]` and `[Service]` keys.

use std::time::Duration;

use nix::sys::signal::Signal;

use super::*;

#[test]
fn defaults_are_systemds() {
    let s = ok("a.service", &svc("")).service;
    assert_eq!(s.restart, RestartPolicy::No);
    assert_eq!(s.restart_sec, Duration::from_millis(100));
    assert_eq!(s.timeout_stop, Some(Duration::from_secs(90)));
    assert_eq!(s.timeout_start, Some(Duration::from_secs(90)));
    assert_eq!(s.kill_signal, Signal::SIGTERM);
    assert_eq!((s.memory_max, s.cpu_quota, s.tasks_max), (None, None, None));
}

#[test]
fn every_key() {
    let s = ok(
        "a.service",
        &svc("Type=simple\nRestart=on-failure\nRestartSec=1min 30s\nTimeoutStartSec=infinity\nTimeoutStopSec=2.5s\nKillSignal=INT\nMemoryMax=1G 512M\nCPUQuota=150%\nTasksMax=64\nEnvironment=A=1\nEnvironmentFile=-/etc/environment\nEnvironmentFile=/etc/x\nUser=core\nWorkingDirectory=/srv"),
    )
    .service;
    assert_eq!(s.restart, RestartPolicy::OnFailure);
    assert_eq!(s.restart_sec, Duration::from_secs(90));
    assert_eq!(s.timeout_start, None);
    assert_eq!(s.timeout_stop, Some(Duration::from_millis(2500)));
    assert_eq!(s.kill_signal, Signal::SIGINT);
    assert_eq!(s.memory_max, Some(Limit::Value(1536 << 20)));
    assert_eq!(s.cpu_quota, Some(15_000));
    assert_eq!(s.tasks_max, Some(Limit::Value(64)));
    assert_eq!(
        s.environment_files,
        [
            EnvFileRef {
                path: "/etc/environment".into(),
                optional: true
            },
            EnvFileRef {
                path: "/etc/x".into(),
                optional: false
            }
        ]
    );
    assert_eq!(
        (s.user.as_deref(), s.working_directory.as_deref()),
        (Some("core"), Some("/srv"))
    );
}

#[test]
fn time_spans_as_systemd() {
    for (v, us) in [
        ("5", 5_000_000u64),
        ("100ms", 100_000),
        ("1h30min", 5_400_000_000),
        ("1 h 30 m", 5_400_000_000),
        ("2d", 172_800_000_000),
        ("1w", 604_800_000_000),
        ("1.5s", 1_500_000),
        ("10us", 10),
        ("1500ns", 1),
        ("1M", 2_629_800_000_000),
        ("1y", 31_557_600_000_000),
        ("3 seconds", 3_000_000),
    ] {
        let s = ok("a.service", &svc(&format!("RestartSec={v}"))).service;
        assert_eq!(s.restart_sec, Duration::from_micros(us), "{v}");
    }
    for (v, reason) in [
        (
            "5x",
            "unknown time unit \"x\" (want us, ms, s, min, h, d, w, M, y)",
        ),
        ("s", "expected a number at \"s\""),
        ("1..5s", "invalid number \"1..5\""),
        ("infinity", "expected a number at \"infinity\""),
    ] {
        let e = refused("a.service", &svc(&format!("RestartSec={v}")));
        assert_eq!(
            e,
            format!("a.service:3: [Service] RestartSec: \"{v}\": {reason}")
        );
    }
    assert_eq!(
        ok("a.service", &svc("TimeoutStopSec=infinity"))
            .service
            .timeout_stop,
        None
    );
}

#[test]
fn sizes_percentages_and_limits() {
    for (v, want) in [
        ("1024", Limit::Value(1024)),
        ("512K", Limit::Value(512 << 10)),
        ("1.5G", Limit::Value(3 << 29)),
        ("2T", Limit::Value(2 << 40)),
        ("50%", Limit::Percent(5000)),
        ("12.5%", Limit::Percent(1250)),
        ("infinity", Limit::Infinity),
    ] {
        assert_eq!(
            ok("a.service", &svc(&format!("MemoryMax={v}")))
                .service
                .memory_max,
            Some(want),
            "{v}"
        );
    }
    for (v, reason) in [
        (
            "512m",
            "unknown size suffix \"m\" (want K, M, G, T, P or E; uppercase, base 1024)",
        ),
        ("0", "must be more than 0"),
        ("-1G", "expected a number at \"-1G\""),
        ("101%", "more than 100%"),
        ("1.234%", "at most two decimals in a percentage"),
        ("99999999999E", "invalid number \"99999999999\""),
    ] {
        assert_eq!(
            refused("a.service", &svc(&format!("MemoryMax={v}"))),
            format!("a.service:3: [Service] MemoryMax: \"{v}\": {reason}")
        );
    }
    assert_eq!(Limit::Percent(5000).resolve(1000), Some(500));
    assert_eq!(Limit::Infinity.resolve(1000), None);
    assert_eq!(
        ok("a.service", &svc("TasksMax=10%")).service.tasks_max,
        Some(Limit::Percent(1000))
    );
    assert_eq!(
        ok("a.service", &svc("TasksMax=infinity")).service.tasks_max,
        Some(Limit::Infinity)
    );
    assert!(refused("a.service", &svc("TasksMax=0")).ends_with("must be more than 0"));
    assert!(refused("a.service", &svc("TasksMax=lots"))
        .ends_with("not a number, a percentage or infinity"));
    assert_eq!(
        ok("a.service", &svc("CPUQuota=20%")).service.cpu_quota,
        Some(2000)
    );
    assert!(refused("a.service", &svc("CPUQuota=0%")).ends_with("must be more than 0%"));
    assert!(refused("a.service", &svc("CPUQuota=20")).ends_with("not a percentage (want N%)"));
}

#[test]
fn restart_signal_type_user_dir_errors() {
    for (line, reason) in [
        ("Restart=on-abort", "want no, on-failure or always"),
        (
            "KillSignal=SIGFOO",
            "unknown signal (want a name like SIGTERM or a number)",
        ),
        ("KillSignal=99", "unknown signal number 99"),
        ("Type=forking", "only simple and exec are supported"),
        ("User=a b", "not a user name or uid"),
        ("WorkingDirectory=srv", "want an absolute path"),
        (
            "EnvironmentFile=etc/env",
            "want an absolute path (with an optional '-' prefix)",
        ),
    ] {
        let e = refused("a.service", &svc(line));
        assert!(e.starts_with("a.service:3: [Service] "), "{e}");
        assert!(e.ends_with(reason), "{line}: {e}");
    }
    assert_eq!(
        ok("a.service", &svc("KillSignal=9")).service.kill_signal,
        Signal::SIGKILL
    );
    assert_eq!(
        ok("a.service", &svc("KillSignal=sighup"))
            .service
            .kill_signal,
        Signal::SIGHUP
    );
}

#[test]
fn exec_start_prefixes_and_repeats() {
    let e = ok("a.service", "[Service]\nExecStart=-:/bin/echo $HOME\n")
        .service
        .exec_start
        .expect("exec");
    assert!(e.ignore_failure && !e.substitute_env);
    assert_eq!(e.argv, ["/bin/echo", "$HOME"]);
    for (v, reason) in [
        ("@/bin/echo argv0", "the @ prefix is not supported"),
        ("+/bin/echo", "the + prefix is not supported"),
        ("!!/bin/echo", "the ! prefix is not supported"),
        (
            "/bin/echo a ; /bin/echo b",
            "';' separates commands, and a service runs one (write \\; for a literal ';')",
        ),
        ("-", "no command"),
        ("\"\" x", "empty program name"),
    ] {
        let e = refused("a.service", &format!("[Service]\nExecStart={v}\n"));
        assert!(e.ends_with(reason), "{v}: {e}");
    }
    assert_eq!(
        refused("a.service", "[Service]\nExecStart=/bin/a\nExecStart=/bin/b\n"),
        "a.service:3: [Service] ExecStart: given twice: a service runs one command (an empty ExecStart= clears the previous one)"
    );
    let replaced = ok(
        "a.service",
        "[Service]\nExecStart=/bin/a\nExecStart=\nExecStart=/bin/b\n",
    );
    assert_eq!(replaced.service.exec_start.expect("exec").argv, ["/bin/b"]);
    assert_eq!(
        refused("a.service", "[Service]\nExecStart=/bin/a\nExecStop=/bin/b\n"),
        "a.service:3: [Service] ExecStop: not supported: berth runs one process per unit (ExecStart=)"
    );
}

#[test]
fn empty_assignment_resets_to_default() {
    let s = ok(
        "a.service",
        &svc("Restart=always\nRestart=\nMemoryMax=1G\nMemoryMax="),
    )
    .service;
    assert_eq!((s.restart, s.memory_max), (RestartPolicy::No, None));
}

#[test]
fn unknown_keys_and_ignored_unit_keys() {
    assert_eq!(
        refused("a.service", &svc("Restrat=always")),
        "a.service:3: [Service] Restrat: unknown key in [Service] (known: ExecStart, Type, Restart, RestartSec, TimeoutStartSec, TimeoutStopSec, KillSignal, MemoryMax, CPUQuota, TasksMax, Environment, EnvironmentFile, User, WorkingDirectory)"
    );
    assert!(refused(
        "a.service",
        "[Unit]\nStopWhenUnneeded=yes\n[Service]\nExecStart=/bin/true\n"
    )
    .starts_with("a.service:2: [Unit] StopWhenUnneeded: unknown key in [Unit]"));
    let u = ok(
        "a.service",
        "[Unit]\nDescription=d\nAfter=docker.service\nRequires=docker.service\nBindsTo=x.service\nX-Note=1\n[Service]\nExecStart=/bin/true\n",
    );
    let keys: Vec<&str> = u.ignored.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(keys, ["After", "Requires", "BindsTo", "X-Note"]);
}

#[test]
fn process_keys_are_refused_next_to_container() {
    for (key, instead) in [
        ("ExecStart=/bin/true", "Exec"),
        ("Environment=A=1", "Environment"),
        ("EnvironmentFile=/e", "EnvironmentFile"),
        ("User=u", "User"),
        ("WorkingDirectory=/w", "WorkingDir"),
    ] {
        let e = refused(
            "a.service",
            &format!("[Service]\n{key}\n[Container]\nImage=busybox\n"),
        );
        assert!(
            e.ends_with(&format!(
                "not used with [Container]; write [Container] {instead}= instead"
            )),
            "{e}"
        );
    }
    let u = ok(
        "a.service",
        "[Service]\nRestart=always\nMemoryMax=64M\n[Container]\nImage=busybox\n",
    );
    assert_eq!(u.service.restart, RestartPolicy::Always);
}

#[test]
fn a_container_unit_stops_after_podmans_10_s_unless_it_says_otherwise() {
    let c = ok("a.service", "[Container]\nImage=x\n").service;
    assert_eq!(c.timeout_stop, Some(Duration::from_secs(10)));
    let c = ok(
        "a.service",
        "[Container]\nImage=x\n[Service]\nTimeoutStopSec=3s\n",
    )
    .service;
    assert_eq!(c.timeout_stop, Some(Duration::from_secs(3)));
}
