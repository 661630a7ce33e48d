//! A real OCI registry for pull and push tests: Debian's `docker-registry` (the CNCF
//! distribution registry) started by the test on a free loopback port with its own storage
//! and TLS, basic, token or client-certificate auth as asked, stopped on drop. Its access log
//! (one line per request, with status and bytes sent) is kept for assertions.

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
    /// Require bearer tokens from a token server (`auth: token:`).
    pub token: Option<TokenAuth>,
    /// With TLS: require client certificates signed by the CA in this PEM file (mTLS).
    pub client_ca: Option<PathBuf>,
    /// Keep the registry's storage, config and log under this directory (benches put it on
    /// tmpfs) rather than in `$TMPDIR`.
    pub parent_dir: Option<PathBuf>,
}

/// The registry side of the token flow: where clients get tokens, and what the registry
/// checks in them.
pub struct TokenAuth {
    pub realm: String,
    pub service: String,
    pub issuer: String,
    /// PEM of the CA whose certificates may sign tokens.
    pub root_cert_bundle: PathBuf,
}

/// One line of the registry's access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub method: String,
    pub path: String,
    pub status: u16,
    /// Bytes of the response body sent.
    pub bytes: u64,
}

/// Parses a combined-log-format line: `... "METHOD PATH HTTP/1.1" STATUS BYTES ...`.
fn parse_access(line: &str) -> Option<Access> {
    let (_, rest) = line.split_once('"')?;
    let (request, rest) = rest.split_once('"')?;
    let mut req = request.split_whitespace();
    let method = req.next()?.to_string();
    let path = req.next()?.to_string();
    let mut nums = rest.split_whitespace();
    let status = nums.next()?.parse().ok()?;
    let bytes = nums.next()?.parse().unwrap_or(0);
    Some(Access {
        method,
        path,
        status,
        bytes,
    })
}

/// A CA and a client certificate signed by it in `dir`, for mTLS: returns the paths of
/// the CA's PEM, the client certificate and its key.
pub fn make_client_certs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).expect("client cert dir");
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "client-ca.key",
            "-out",
            "client-ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=berth test client CA",
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
            "client.key",
            "-out",
            "client.csr",
            "-subj",
            "/CN=berth test client",
        ],
        dir,
    );
    std::fs::write(
        dir.join("client-ext.cnf"),
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    )
    .expect("write ext");
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "client.csr",
            "-CA",
            "client-ca.crt",
            "-CAkey",
            "client-ca.key",
            "-CAcreateserial",
            "-out",
            "client.cert",
            "-days",
            "2",
            "-extfile",
            "client-ext.cnf",
        ],
        dir,
    );
    (
        dir.join("client-ca.crt"),
        dir.join("client.cert"),
        dir.join("client.key"),
    )
}

/// Runs openssl in `dir`; it must succeed.
pub fn openssl(args: &[&str], dir: &Path) {
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
        let mut dir = tempfile::Builder::new();
        dir.prefix("berth-reg-");
        let dir = match &setup.parent_dir {
            Some(parent) => dir.tempdir_in(parent),
            None => dir.tempdir(),
        }
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
            if let Some(ca) = &setup.client_ca {
                yml.push_str(&format!("    clientcas:\n      - {}\n", ca.display()));
            }
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
        if let Some(t) = &setup.token {
            yml.push_str(&format!(
                "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                t.realm,
                t.service,
                t.issuer,
                t.root_cert_bundle.display()
            ));
        }
        std::fs::write(&config, yml).expect("write registry config");
        let log = std::fs::File::create(dir.path().join("access.log")).expect("access log");
        let child = Command::new(bin)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log)
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

    /// The requests the registry answered so far, in order.
    pub fn access(&self) -> Vec<Access> {
        let text = std::fs::read_to_string(self._dir.path().join("access.log")).unwrap_or_default();
        text.lines().filter_map(parse_access).collect()
    }

    /// The tags of `repo` by the registry's own listing (`GET /v2/<repo>/tags/list` on a
    /// plain-HTTP registry): None when the repository is unknown.
    pub fn tags(&self, repo: &str) -> Option<Vec<String>> {
        let mut s = TcpStream::connect(&self.addr).expect("connect to the registry");
        s.write_all(
            format!(
                "GET /v2/{repo}/tags/list HTTP/1.0\r\nHost: {}\r\n\r\n",
                self.addr
            )
            .as_bytes(),
        )
        .expect("ask for tags");
        let mut resp = String::new();
        s.read_to_string(&mut resp).expect("read tags");
        let (head, body) = resp.split_once("\r\n\r\n").expect("an HTTP answer");
        if head.starts_with("HTTP/1.0 404") || head.starts_with("HTTP/1.1 404") {
            return None;
        }
        assert!(head.contains(" 200 "), "tags/list: {head}");
        let v: serde_json::Value = serde_json::from_str(body).expect("tags JSON");
        Some(
            v["tags"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|t| t.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
        )
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
