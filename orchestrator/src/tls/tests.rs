//! Credentials and handshakes over a socket pair: who may talk to whom.

use std::os::unix::net::UnixStream;
use std::path::Path;

use super::creds::{self, Validity};
use super::link::Wire;
use super::*;

fn make(dir: &Path, cluster: &str, nodes: &[&str]) {
    let names: Vec<String> = nodes.iter().map(|s| s.to_string()).collect();
    creds::init(dir, cluster, &names, Validity::default()).expect("init credentials");
}

fn node(dir: &Path, cluster: &str, name: &str) -> PeerTls {
    PeerTls::load(&dir.join("nodes").join(name), name, cluster).expect("load node credentials")
}

/// Runs a handshake from `client` (dialling `server_name`) to `server`; returns the
/// identity each side learnt of the other, or the first side's error.
fn handshake(
    client: &PeerTls,
    server_name: &str,
    server: &PeerTls,
    cluster: &str,
) -> Result<(Identity, Identity), String> {
    let (mut a, mut b) = UnixStream::pair().expect("socket pair");
    a.set_nonblocking(true).expect("nonblocking");
    b.set_nonblocking(true).expect("nonblocking");
    let mut c = Wire::client(&client.client, server_name).map_err(|e| e.to_string())?;
    let mut s = Wire::server(&server.server).map_err(|e| e.to_string())?;
    for _ in 0..50 {
        c.flush(&mut a).map_err(|e| format!("client: {e}"))?;
        s.read(&mut b, |_| true)
            .map_err(|e| format!("server: {e}"))?;
        c.read(&mut a, |_| true)
            .map_err(|e| format!("client: {e}"))?;
        if !c.is_handshaking() && !s.is_handshaking() {
            // The server learns of a bad client certificate only from its Finished.
            s.read(&mut b, |_| true)
                .map_err(|e| format!("server: {e}"))?;
            let who_s = identity(c.peer_certificates().unwrap_or_default(), cluster)
                .map_err(|e| e.to_string())?;
            let who_c = identity(s.peer_certificates().unwrap_or_default(), cluster)
                .map_err(|e| e.to_string())?;
            return Ok((who_c, who_s));
        }
    }
    Err("handshake did not finish".into())
}

#[test]
fn nodes_of_one_ca_authenticate_each_other_by_name() {
    let tmp = tempfile::tempdir().expect("tempdir");
    make(tmp.path(), "prod", &["n1", "n2"]);
    let (n1, n2) = (
        node(tmp.path(), "prod", "n1"),
        node(tmp.path(), "prod", "n2"),
    );
    let (client_seen, server_seen) = handshake(&n1, "n2", &n2, "prod").expect("handshake");
    assert_eq!(
        client_seen,
        Identity {
            name: "n1".into(),
            role: Role::Node
        }
    );
    assert_eq!(
        server_seen,
        Identity {
            name: "n2".into(),
            role: Role::Node
        }
    );
    // n1 dialling "n3" but reaching n2 refuses: the certificate names another node.
    let e = handshake(&n1, "n3", &n2, "prod").expect_err("wrong name");
    assert!(
        e.contains("client") && e.to_lowercase().contains("certificate"),
        "{e}"
    );
}

#[test]
fn another_ca_or_an_expired_certificate_cannot_connect() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (good, evil) = (tmp.path().join("good"), tmp.path().join("evil"));
    make(&good, "prod", &["n1", "n2"]);
    // Same cluster ID and node name, another CA.
    make(&evil, "prod", &["n2"]);
    let n1 = node(&good, "prod", "n1");
    let fake = node(&evil, "prod", "n2");
    // (Both CAs have the same subject, so webpki finds the "issuer" and the signature fails.)
    // A client with another CA's certificate that trusts our CA: our server refuses it.
    let m = config::Material {
        ca: good.join("ca/ca.pem"),
        cert: evil.join("nodes/n2/node.pem"),
        key: evil.join("nodes/n2/node.key"),
    };
    let forger = PeerTls {
        client: config::client_config(&m).expect("client config"),
        server: fake.server.clone(),
    };
    let e = handshake(&forger, "n1", &n1, "prod").expect_err("foreign CA as client");
    assert!(e.contains("server: invalid peer certificate"), "{e}");
    // Our client refuses a server with another CA's certificate.
    let e = handshake(&n1, "n2", &fake, "prod").expect_err("foreign CA as server");
    assert!(e.contains("client: invalid peer certificate"), "{e}");

    let expired = Validity {
        days: 1,
        backdate_days: 3,
    };
    creds::add_node(&good, "prod", "old", expired).expect("issue expired");
    let old = node(&good, "prod", "old");
    let m = config::Material {
        ca: good.join("ca/ca.pem"),
        cert: good.join("nodes/old/node.pem"),
        key: good.join("nodes/old/node.key"),
    };
    let old = PeerTls {
        client: config::client_config(&m).expect("client config"),
        server: old.server,
    };
    let e = handshake(&old, "n1", &n1, "prod").expect_err("expired");
    assert!(
        e.contains("server: invalid peer certificate: certificate expired"),
        "{e}"
    );
}

#[test]
fn identities_need_this_cluster_and_the_right_role() {
    let tmp = tempfile::tempdir().expect("tempdir");
    make(tmp.path(), "prod", &["n1"]);
    let dir =
        creds::add_client(tmp.path(), "prod", "alice", true, Validity::default()).expect("client");
    let pem = std::fs::read(dir.join(creds::CLIENT_CERT)).expect("read");
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .expect("pem");
    assert_eq!(
        identity(&certs, "prod"),
        Ok(Identity {
            name: "alice".into(),
            role: Role::ReadOnly
        })
    );
    assert!(matches!(
        identity(&certs, "other"),
        Err(IdentityError::WrongCluster { .. })
    ));
    // a client certificate is not a node certificate
    let e = PeerTls::load(&dir, "alice", "prod");
    assert!(e.is_err());
}

#[test]
fn credential_files_are_private_and_never_overwritten() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().expect("tempdir");
    make(tmp.path(), "prod", &["n1"]);
    for f in [
        "ca/ca.key",
        "ca/gossip.keys",
        "nodes/n1/node.key",
        "nodes/n1/gossip.keys",
    ] {
        let mode = std::fs::metadata(tmp.path().join(f))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    let e = creds::init(tmp.path(), "prod", &[], Validity::default()).expect_err("again");
    assert!(e.to_string().contains("already exists"), "{e}");
    let e = creds::add_node(tmp.path(), "prod", "n1", Validity::default()).expect_err("again");
    assert!(e.to_string().contains("already exists"), "{e}");
    let e = creds::add_node(tmp.path(), "other", "n9", Validity::default()).expect_err("cluster");
    assert!(e.to_string().contains("not for cluster"), "{e}");
    // a node key readable by others makes loading fail, naming the file
    let key = tmp.path().join("nodes/n1/node.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let e = load(&tmp.path().join("nodes/n1"), tmp.path(), "n1", "prod")
        .err()
        .expect("exposed");
    assert!(e.to_string().contains(&key.display().to_string()), "{e}");
    let e = creds::check_cert_name("node name", "-bad").expect_err("bad name");
    assert!(e.to_string().contains("-bad"), "{e}");
}
