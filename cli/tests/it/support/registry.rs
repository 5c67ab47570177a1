//! A real registry for the tests: the CNCF distribution registry (`docker-registry`, installed
//! by .ci/install-deps) on 127.0.0.1, a free port and a temporary root.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A `docker-registry serve` on 127.0.0.1, a free port and a temporary root; killed on drop.
pub struct Registry {
    child: Child,
    pub host: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Registry {
        Registry::start_with(None)
    }

    /// With htpasswd Basic auth for `user`/`password`.
    pub fn start_with(basic: Option<(&str, &str)>) -> Registry {
        let bin = Path::new("/usr/bin/docker-registry");
        assert!(
            bin.is_file(),
            "docker-registry (the CNCF distribution registry) is not installed: run .ci/install-deps"
        );
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let host = format!("127.0.0.1:{port}");
        let mut auth = String::new();
        if let Some((u, p)) = basic {
            let out = Command::new("htpasswd")
                .args(["-Bbn", u, p])
                .output()
                .expect("htpasswd (apache2-utils) is not installed: run .ci/install-deps");
            assert!(out.status.success());
            let file = dir.path().join("htpasswd");
            fs::write(&file, &out.stdout).unwrap();
            auth = format!(
                "auth:\n  htpasswd:\n    realm: strata-test\n    path: {}\n",
                file.display()
            );
        }
        let config = dir.path().join("config.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n{auth}",
                dir.path().join("root").display()
            ),
        )
        .unwrap();
        let log = dir.path().join("registry.log");
        let logf = fs::File::create(&log).unwrap();
        let child = Command::new(bin)
            .arg("serve")
            .arg(&config)
            .stdout(logf.try_clone().unwrap())
            .stderr(logf)
            .spawn()
            .unwrap();
        let r = Registry {
            child,
            host,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut s) = TcpStream::connect(&r.host) {
                let _ = s.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n");
                let mut line = String::new();
                let _ = BufReader::new(s).read_line(&mut line);
                if line.contains(" 200 ") || line.contains(" 401 ") {
                    return r;
                }
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not answer /v2/ within 30 s; its log:\n{}",
                r.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `(method, uri)` of every request the registry logged, in order.
    pub fn requests(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for l in self.log_text().lines() {
            if !l.contains("response completed") {
                continue;
            }
            let field = |k: &str| {
                let at = l.find(&format!("{k}="))? + k.len() + 1;
                let rest = &l[at..];
                let v = if let Some(q) = rest.strip_prefix('"') {
                    &q[..q.find('"')?]
                } else {
                    rest.split(' ').next()?
                };
                Some(v.to_string())
            };
            if let (Some(m), Some(u)) = (field("http.request.method"), field("http.request.uri")) {
                out.push((m, u));
            }
        }
        out
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
