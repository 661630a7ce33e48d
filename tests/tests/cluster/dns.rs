//! berthd's DNS on a configured address (`--dns-listen`): each node answers
//! `<service>.service.berth.` from its own replica there (A and SRV), NXDOMAIN for a
//! service nobody registered, REFUSED outside its zone, and nothing on the default address
//! (the advertised IP, port 53) it replaces.

use std::process::{Command, Stdio};

use super::*;

/// `dig ARGS` inside node `k`'s namespace: (stdout, whether dig got an answer).
fn dig(c: &Cluster, k: usize, args: &[&str]) -> (String, bool) {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &c.net.slot(k).netns,
            "dig",
            "+time=1",
            "+tries=1",
        ])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("dig (apt-get install bind9-dnsutils)");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.success(),
    )
}

#[test]
fn dns_answers_on_the_configured_address_from_each_replica() {
    let mut c = Cluster::empty();
    c.extra_args = vec!["--dns-listen".into(), "127.0.0.1:5353".into()];
    c.start_voters("dns", 3);
    c.wait_for_agreed_leader(&c.all());
    let body = serde_json::json!({"name": "api", "ip": "10.1.2.3", "port": 8080});
    // Registered under the node's lease (503 until the node has one).
    wait_until("the registration", PATIENCE, || {
        let r = c
            .node(0)
            .call("POST", "/v1/services", Some(&body))
            .map_err(|e| e.to_string())?;
        r.ok()
            .then_some(())
            .ok_or(format!("{} {}", r.status, r.text()))
    });
    let at = ["@127.0.0.1", "-p", "5353"];
    for k in c.all() {
        let a = wait_until("the A record on every node", PATIENCE, || {
            let (out, _) = dig(
                &c,
                k,
                &[&at[..], &["+short", "api.service.berth", "A"]].concat(),
            );
            if out.trim() == "10.1.2.3" {
                Ok(out)
            } else {
                Err(format!("n{k}: {out:?}"))
            }
        });
        assert_eq!(a.trim(), "10.1.2.3");
    }
    let (srv, _) = dig(
        &c,
        2,
        &[&at[..], &["+short", "api.service.berth", "SRV"]].concat(),
    );
    assert!(srv.contains(" 8080 "), "{srv}");
    let (none, _) = dig(&c, 1, &[&at[..], &["nobody.service.berth", "A"]].concat());
    assert!(none.contains("status: NXDOMAIN"), "{none}");
    let (other, _) = dig(&c, 1, &[&at[..], &["example.com", "A"]].concat());
    assert!(other.contains("status: REFUSED"), "{other}");
    // The default address (the node's advertised IP, port 53) is not served.
    let ip = format!("@{}", c.net.slot(1).ip);
    let (out, answered) = dig(&c, 1, &[ip.as_str(), "api.service.berth", "A"]);
    assert!(!answered, "answered on the default address: {out}");
}
