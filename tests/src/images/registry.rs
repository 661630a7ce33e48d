//! A real OCI registry for pull tests: Debian's `docker-registry` (the CNCF distribution
//! registry) started by the test on a free loopback port with its own storage, stopped on
//! drop.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running registry.
pub struct Registry {
    child: Child,
    /// `127.0.0.1:PORT`
    pub addr: String,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

/// Whether `GET /v2/` on `addr` gets an HTTP answer.
fn answers(addr: &str) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(
        &addr.parse().expect("socket address"),
        Duration::from_millis(200),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /v2/ HTTP/1.0\r\nHost: x\r\n\r\n")
        .is_err()
    {
        return false;
    }
    // A TLS listener answers a plain request with an HTTP 400 or an alert: any answer will do.
    let mut buf = [0u8; 1];
    s.read_exact(&mut buf).is_ok()
}

/// TLS and auth settings of a test registry.
#[derive(Default)]
pub struct Setup {
    /// Serve TLS with a certificate for 127.0.0.1 from a CA made for the test; the CA's
    /// PEM is written to `certs_dir/<addr>/ca.crt` (the certs.d layout).
    pub tls_certs_dir: Option<PathBuf>,
    /// Require HTTP basic auth for this user and password (htpasswd, bcrypt).
    pub basic: Option<(String, String)>,
}

fn openssl(args: &[&str], dir: &Path) {
    let status = Command::new(crate::require_program("openssl", "openssl"))
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run openssl");
    assert!(status.success(), "openssl {args:?} failed");
}

/// A CA and a server certificate for 127.0.0.1 signed by it, in `dir`.
fn make_certs(dir: &Path) {
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=berth test CA",
        ],
        dir,
    );
    openssl(
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "srv.key",
            "-out",
            "srv.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
        dir,
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write ext");
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "srv.crt",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
        dir,
    );
}

impl Registry {
    /// Starts a plain-HTTP registry on loopback.
    pub fn start_plain() -> Registry {
        Self::start(Setup::default())
    }

    /// Starts a registry on loopback with `setup`.
    pub fn start(setup: Setup) -> Registry {
        let bin = crate::require_program("docker-registry", "docker-registry");
        let dir = tempfile::Builder::new()
            .prefix("berth-reg-")
            .tempdir()
            .expect("registry dir");
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        let mut yml = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        if let Some(certs_dir) = &setup.tls_certs_dir {
            make_certs(dir.path());
            yml.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                dir.path().join("srv.crt").display(),
                dir.path().join("srv.key").display()
            ));
            let host_dir = certs_dir.join(&addr);
            std::fs::create_dir_all(&host_dir).expect("certs.d host dir");
            std::fs::copy(dir.path().join("ca.crt"), host_dir.join("ca.crt")).expect("copy CA");
        }
        if let Some((user, pass)) = &setup.basic {
            let out = Command::new(crate::require_program("htpasswd", "apache2-utils"))
                .args(["-Bbn", user, pass])
                .output()
                .expect("run htpasswd");
            assert!(out.status.success(), "htpasswd failed");
            std::fs::write(dir.path().join("htpasswd"), &out.stdout).expect("write htpasswd");
            yml.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                dir.path().join("htpasswd").display()
            ));
        }
        std::fs::write(&config, yml).expect("write registry config");
        let child = Command::new(bin)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry");
        let reg = Registry {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !answers(&reg.addr) {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not answer on {} in 60 s",
                reg.addr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        reg
    }

    /// Pushes the OCI layout `layout` (tag `tag`) to `REGISTRY/repo` with skopeo.
    pub fn push_layout(&self, layout: &Path, tag: &str, repo: &str, scratch: &Path) {
        self.push_layout_as(layout, tag, repo, scratch, None);
    }

    /// [`Registry::push_layout`] with `user:password` credentials.
    pub fn push_layout_as(
        &self,
        layout: &Path,
        tag: &str,
        repo: &str,
        scratch: &Path,
        creds: Option<&str>,
    ) {
        crate::require_program("skopeo", "skopeo");
        let src = format!("oci:{}:{tag}", layout.display());
        let dst = format!("docker://{}/{repo}", self.addr);
        let mut args = vec!["copy", "--dest-tls-verify=false", "--quiet"];
        let flag;
        if let Some(c) = creds {
            flag = format!("--dest-creds={c}");
            args.push(&flag);
        }
        args.extend([src.as_str(), dst.as_str()]);
        super::run_tool("skopeo", &args, scratch);
    }

    /// The registry's storage directory.
    pub fn data(&self) -> PathBuf {
        self._dir.path().join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
