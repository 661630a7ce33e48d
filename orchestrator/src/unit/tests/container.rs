//! `[Container]` keys.

use std::net::IpAddr;
use std::time::Duration;

use super::*;

fn container(body: &str) -> ContainerOptions {
    ok("web.service", &ctr(body)).container.expect("container")
}

fn refused_ctr(body: &str) -> String {
    refused("web.service", &ctr(body))
}

#[test]
fn every_key() {
    let c = container(
        "Exec=serve --port 80\nEnvironment=A=1 B=2\nEnvironmentFile=/etc/web.env\nUser=app:staff\nWorkingDir=/srv\nVolume=/data:/var/lib/data:ro,rbind,rshared,nosuid\nVolume=/logs:/logs\nPublishPort=8080:80\nPublishPort=127.0.0.1:53:5353/udp\nPublishPort=[::1]:443:8443/tcp\nNetwork=none\nReadOnly=yes\nAddCapability=net_admin CAP_SYS_TIME\nDropCapability=all\nHealthCmd=curl -f http://localhost/\nHealthInterval=10s\nX-ServiceName=frontend\nX-Other=ignored",
    );
    assert_eq!(c.image, "docker.io/library/busybox:1");
    assert_eq!(c.exec.as_deref().expect("exec"), ["serve", "--port", "80"]);
    assert_eq!(
        c.environment,
        [("A".into(), "1".into()), ("B".into(), "2".into())]
    );
    assert_eq!(c.environment_files, ["/etc/web.env"]);
    assert_eq!(
        (c.user.as_deref(), c.working_dir.as_deref()),
        (Some("app:staff"), Some("/srv"))
    );
    assert_eq!(
        c.volumes,
        [
            Volume {
                source: "/data".into(),
                destination: "/var/lib/data".into(),
                read_only: true,
                recursive: true,
                propagation: Some("rshared".into()),
                flags: vec!["nosuid".into()],
            },
            Volume {
                source: "/logs".into(),
                destination: "/logs".into(),
                read_only: false,
                recursive: true,
                propagation: None,
                flags: vec![],
            }
        ]
    );
    let ip = |s: &str| Some(s.parse::<IpAddr>().expect("ip"));
    assert_eq!(
        c.publish_ports,
        [
            PublishPort {
                ip: None,
                host_port: 8080,
                container_port: 80,
                protocol: Protocol::Tcp
            },
            PublishPort {
                ip: ip("127.0.0.1"),
                host_port: 53,
                container_port: 5353,
                protocol: Protocol::Udp
            },
            PublishPort {
                ip: ip("::1"),
                host_port: 443,
                container_port: 8443,
                protocol: Protocol::Tcp
            },
        ]
    );
    assert_eq!(c.network, Some(Network::None));
    assert!(c.read_only);
    assert_eq!(
        c.add_capabilities,
        [
            CapabilityName::One(caps::Capability::CAP_NET_ADMIN),
            CapabilityName::One(caps::Capability::CAP_SYS_TIME)
        ]
    );
    assert_eq!(c.drop_capabilities, [CapabilityName::All]);
    assert_eq!(
        c.health,
        Some(HealthCheck {
            command: vec![
                "/bin/sh".into(),
                "-c".into(),
                "curl -f http://localhost/".into()
            ],
            interval: Duration::from_secs(10),
        })
    );
    assert_eq!(c.service_name.as_deref(), Some("frontend"));
    let u = ok("web@2.service", &ctr("X-ServiceName=frontend"));
    assert_eq!(u.service_name(), "frontend");
    assert_eq!(ok("web@2.service", &ctr("")).service_name(), "web");
    assert_eq!(ok("web@2.service", &svc("")).service_name(), "web");
}

#[test]
fn health_forms() {
    let c = container("HealthCmd=[\"/bin/check\", \"-q\"]");
    let h = c.health.expect("health");
    assert_eq!(h.command, ["/bin/check", "-q"]);
    assert_eq!(h.interval, Duration::from_secs(30));
    assert_eq!(container("HealthCmd=none").health, None);
    assert!(refused_ctr("HealthCmd=[1, 2]").contains("not a JSON array of strings"));
    assert!(refused_ctr("HealthCmd=[]").ends_with("empty command"));
    assert!(refused_ctr("HealthCmd=true\nHealthInterval=0").ends_with("must be more than 0"));
}

#[test]
fn image_is_required_and_validated() {
    assert_eq!(
        refused("web.service", "[Container]\nExec=x\n"),
        "web.service: [Container] Image: required"
    );
    let e = refused("web.service", "[Container]\nImage=Bad Image\n");
    assert!(
        e.starts_with("web.service:2: [Container] Image: \"Bad Image\": "),
        "{e}"
    );
}

#[test]
fn volume_errors() {
    for (v, reason) in [
        (
            "/data",
            "anonymous volumes are not supported: want HOST-DIR:CONTAINER-DIR[:OPTIONS]",
        ),
        (
            "data:/data",
            "named volumes are not supported: the source must be an absolute host path",
        ),
        ("/data:data", "the container path must be an absolute path"),
        ("/data:/a/../b", "the container path must not contain '..'"),
        (
            "/a:/b:ro:x",
            "too many ':' (want HOST-DIR:CONTAINER-DIR[:OPTIONS])",
        ),
        ("/a:/b:ro,rw", "ro/rw given twice"),
        ("/a:/b:bind,rbind", "bind/rbind given twice"),
        ("/a:/b:shared,slave", "more than one propagation option"),
        ("/a:/b:Z", "volume option \"Z\" is not supported"),
        ("/a:/b:fast", "unknown volume option \"fast\""),
    ] {
        assert_eq!(
            refused_ctr(&format!("Volume={v}")),
            format!("web.service:3: [Container] Volume: \"{v}\": {reason}")
        );
    }
    let v = &container("Volume=/a:/b:bind").volumes[0];
    assert!(!v.recursive && !v.read_only);
}

#[test]
fn publish_port_errors() {
    for (v, reason) in [
        ("80:abc", "container port is not a number"),
        ("x:80", "host port is not a number"),
        (
            "80",
            "want [IP:]HOST:CONTAINER: the host port is required (it is registered)",
        ),
        (
            ":80",
            "host port is missing (random host ports are not supported: the port is registered)",
        ),
        ("0:80", "host port must be 1-65535"),
        ("80:70000", "container port must be 1-65535"),
        ("8000-8001:80", "port ranges are not supported"),
        ("80:80/sctp", "unknown protocol \"sctp\" (want tcp or udp)"),
        ("1.2.3:80:80", "\"1.2.3\" is not an IP address"),
        (
            "::1:80:80",
            "want [IP:]HOST:CONTAINER (write an IPv6 address as [addr])",
        ),
        ("[::1:80:80", "unclosed '[' around the IPv6 address"),
    ] {
        assert_eq!(
            refused_ctr(&format!("PublishPort={v}")),
            format!("web.service:3: [Container] PublishPort: \"{v}\": {reason}")
        );
    }
}

#[test]
fn host_network_needs_equal_ports() {
    assert_eq!(
        refused_ctr("PublishPort=8080:8080\nPublishPort=8081:80\nNetwork=host"),
        "web.service:4: [Container] PublishPort: \"8081:80\": with Network=host the container port is the host port: they must be equal"
    );
    let c = container("PublishPort=8080:8080\nNetwork=host");
    assert_eq!(c.network, Some(Network::Host));
    assert_eq!(
        container("Network=cluster-net").network,
        Some(Network::Named("cluster-net".into()))
    );
    assert_eq!(container("").network, None);
    assert!(refused_ctr("Network=bad/name")
        .ends_with("want host, none or a network name ([A-Za-z0-9][A-Za-z0-9_.-]*)"));
}

#[test]
fn other_errors() {
    for (line, reason) in [
        ("AddCapability=CAP_FLY", "unknown capability (want a name like CAP_NET_ADMIN, or ALL)"),
        ("ReadOnly=maybe", "not a boolean (want yes/no, true/false, on/off, 1/0)"),
        ("WorkingDir=srv", "want an absolute path"),
        ("EnvironmentFile=web.env", "want an absolute path"),
        ("User=app:st aff", "not a group name or gid"),
        ("X-ServiceName=a/b", "want [A-Za-z0-9][A-Za-z0-9._-]*, at most 253 bytes"),
        ("Entrypoint=/x", "unknown key in [Container] (known: Image, Exec, Environment, EnvironmentFile, User, WorkingDir, Volume, PublishPort, Network, ReadOnly, AddCapability, DropCapability, HealthCmd, HealthInterval, X-ServiceName)"),
    ] {
        let e = refused_ctr(line);
        assert!(e.starts_with("web.service:3: [Container] "), "{e}");
        assert!(e.ends_with(reason), "{line}: {e}");
    }
}
