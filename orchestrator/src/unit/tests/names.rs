//! Unit names, templates, instances and specifiers.

use super::*;

#[test]
fn plain_template_and_instance_names() {
    let n = UnitName::parse("web.service").expect("valid");
    assert_eq!(
        (n.prefix(), n.stem(), n.suffix(), n.instance()),
        ("web", "web", "service", None)
    );
    assert!(!n.is_template() && !n.is_instance());
    let t = UnitName::parse("web@.service").expect("valid");
    assert!(t.is_template());
    assert_eq!((t.prefix(), t.instance()), ("web", None));
    let i = t.instantiate("a:b_c.d-1").expect("instance");
    assert_eq!(i.as_str(), "web@a:b_c.d-1.service");
    assert_eq!(
        (i.prefix(), i.stem(), i.instance()),
        ("web", "web@a:b_c.d-1", Some("a:b_c.d-1"))
    );
    assert_eq!(i.template(), Some(t.clone()));
    assert!(n.instantiate("1").is_err());
    assert!(t.instantiate("").is_err());
    assert!(t.instantiate("a/b").is_err());
    assert_eq!(i.to_string(), "web@a:b_c.d-1.service");
    assert_eq!(
        serde_json::to_string(&i).expect("json"),
        "\"web@a:b_c.d-1.service\""
    );
}

#[test]
fn invalid_names() {
    let long = format!("{}.service", "a".repeat(247));
    assert!(UnitName::parse(&long).is_ok(), "255 bytes is the limit");
    for (name, reason) in [
        ("", "empty"),
        ("web", "no suffix (want name.service)"),
        (
            "web.socket",
            "unit type \"socket\" is not supported: berth runs .service units only",
        ),
        ("web.serv", "unknown unit type \"serv\" (want .service)"),
        (".service", "empty prefix before the suffix or '@'"),
        ("@x.service", "empty prefix before the suffix or '@'"),
        ("a@b@c.service", "more than one '@'"),
        (
            "we b.service",
            "character ' ' not allowed (only A-Z a-z 0-9 : _ . - \\ and one @)",
        ),
        (
            "a/b.service",
            "character '/' not allowed (only A-Z a-z 0-9 : _ . - \\ and one @)",
        ),
        (
            &format!("{}.service", "a".repeat(248)),
            "longer than 255 bytes",
        ),
    ] {
        let e = UnitName::parse(name).expect_err(name);
        assert_eq!(e.reason, reason, "{name}");
    }
    assert_eq!(
        refused("bad name.service", &svc("")),
        "bad name.service: character ' ' not allowed (only A-Z a-z 0-9 : _ . - \\ and one @)"
    );
}

#[test]
fn specifiers_in_every_section() {
    let text = "[Unit]\nDescription=%n %N %p %i 100%%\n[Service]\nMemoryMax=1G\n[Container]\nImage=reg.example/%p:%i\nExec=--name %N --host %H --machine %m\nEnvironment=UNIT=%n\n[X-Fleet]\nConflicts=%p@*.service\nMachineOf=db@%i.service\n";
    let u = ok("web@7.service", text);
    assert_eq!(
        u.description.as_deref(),
        Some("web@7.service web@7 web 7 100%")
    );
    let c = u.container.as_ref().expect("container");
    assert_eq!(c.image, "reg.example/web:7");
    // The machine is not known at submit time: %m and %H stay.
    assert_eq!(
        c.exec.as_deref().expect("exec"),
        ["--name", "web@7", "--host", "%H", "--machine", "%m"]
    );
    assert_eq!(c.environment, [("UNIT".into(), "web@7.service".into())]);
    assert_eq!(u.fleet.conflicts[0].as_str(), "web@*.service");
    assert_eq!(u.fleet.machine_of[0].as_str(), "db@7.service");
    let m = MachineContext {
        machine_id: "n3".into(),
        hostname: "host3".into(),
    };
    let on = u.for_machine(&m).expect("for machine");
    assert_eq!(
        on.container.expect("container").exec.expect("exec"),
        ["--name", "web@7", "--host", "host3", "--machine", "n3"]
    );
}

#[test]
fn unknown_specifier_names_line_and_key() {
    assert_eq!(
        refused("a.service", "[Service]\nExecStart=/bin/echo %u\n"),
        "a.service:2: [Service] ExecStart: \"%u\": unknown specifier %u (known: %n %N %p %i %m %H %%)"
    );
    assert_eq!(
        refused("a.service", &svc("WorkingDirectory=/x%")),
        "a.service:3: [Service] WorkingDirectory: \"/x%\": '%' at the end of the value (write %% for a literal %)"
    );
    assert_eq!(
        refused("a.service", &svc("[X-Fleet]\nMachineOf=%m.service")),
        "a.service:4: [X-Fleet] MachineOf: \"%m.service\": %m is not known in [X-Fleet]: placement is decided before a machine is chosen"
    );
}

#[test]
fn plain_unit_has_empty_instance() {
    let u = ok("a.service", "[Service]\nExecStart=/bin/echo [%i]\n");
    assert_eq!(
        u.service.exec_start.expect("exec").argv,
        ["/bin/echo", "[]"]
    );
}

#[test]
fn templates_instances_and_hashes() {
    let text =
        "[Container]\nImage=busybox\nPublishPort=80%i:80\n[X-Fleet]\nConflicts=web@*.service\n";
    let t = ok("web@.service", text);
    assert!(t.name.is_template());
    assert_eq!(t.hash.len(), 64);
    let i = t
        .for_instance(&UnitName::parse("web@1.service").expect("name"))
        .expect("instance");
    assert_eq!(i.name.as_str(), "web@1.service");
    assert_eq!(
        (i.text.as_str(), i.hash.as_str()),
        (t.text.as_str(), t.hash.as_str())
    );
    assert_eq!(i.container.expect("c").publish_ports[0].host_port, 801);
    // An instance the template cannot make is refused under the instance's name.
    let e = t
        .for_instance(&UnitName::parse("web@x.service").expect("name"))
        .expect_err("bad port");
    assert_eq!(
        e.to_string(),
        "web@x.service:3: [Container] PublishPort: \"80x:80\": host port is not a number"
    );
    // Not its template.
    let other = UnitName::parse("db@1.service").expect("name");
    assert!(t.for_instance(&other).is_err());
    let plain = ok("web.service", text);
    assert!(plain
        .for_instance(&UnitName::parse("web@1.service").expect("name"))
        .is_err());
    // A template whose text is wrong is refused under the template's own name.
    assert_eq!(
        refused("web@.service", "[Container]\nImage=busybox\nVolume=%i\n"),
        "web@.service:3: [Container] Volume: \"1\": anonymous volumes are not supported: want HOST-DIR:CONTAINER-DIR[:OPTIONS]"
    );
}

#[test]
fn hash_is_sha256_of_the_text() {
    let u = ok("a.service", "[Service]\nExecStart=/bin/true\n");
    // sha256sum of the same bytes.
    let want = "d4fded2cad024081ba5944d682e2edad1ba9832d97c2111bb07d1d323d735330";
    assert_eq!(u.hash, want);
    assert_ne!(
        ok("a.service", "[Service]\nExecStart=/bin/false\n").hash,
        want
    );
}
