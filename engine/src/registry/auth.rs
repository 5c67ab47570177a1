//! Registry credentials and `WWW-Authenticate` challenges.
//!
//! Credentials are looked up the way podman and docker do, first match wins:
//! `$REGISTRY_AUTH_FILE` (podman's `auth.json`), then `$DOCKER_CONFIG/config.json` or
//! `~/.docker/config.json`. In a file: `credHelpers[HOST]` (run `docker-credential-NAME get`),
//! then `auths[HOST]` (`auth` = base64 `user:password`, or `username`/`password`), then
//! `credsStore`. Docker Hub's entry is keyed `https://index.docker.io/v1/` by docker.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde_json::Value;

/// A user name and password (or token) for Basic auth and token requests.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a secret, not even in a debug dump.
        write!(
            f,
            "Credentials {{ username: {:?}, password: <redacted> }}",
            self.username
        )
    }
}

impl Credentials {
    /// The `Authorization` header value for Basic auth.
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// Where credentials come from: the environment variables that name auth files, and HOME.
#[derive(Debug, Clone, Default)]
pub struct AuthSources {
    pub registry_auth_file: Option<PathBuf>,
    pub docker_config: Option<PathBuf>,
    pub home: Option<PathBuf>,
}

impl AuthSources {
    /// From this process's environment.
    pub fn from_env() -> AuthSources {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        AuthSources {
            registry_auth_file: var("REGISTRY_AUTH_FILE"),
            docker_config: var("DOCKER_CONFIG"),
            home: var("HOME"),
        }
    }

    fn files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        if let Some(f) = &self.registry_auth_file {
            out.push(f.clone());
        }
        match (&self.docker_config, &self.home) {
            (Some(d), _) => out.push(d.join("config.json")),
            (None, Some(h)) => out.push(h.join(".docker").join("config.json")),
            (None, None) => {}
        }
        out
    }

    /// Credentials for `registry` (as written in references: `docker.io`, `host:port`), or
    /// `None` for anonymous access. A file that exists but cannot be parsed is an error: a
    /// silent fallback to anonymous would turn a typo into a confusing 401.
    pub fn lookup(&self, registry: &str) -> Result<Option<Credentials>, AuthError> {
        for file in self.files() {
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(AuthError::Read { file, source }),
            };
            let json: Value = match serde_json::from_str(&text) {
                Ok(v) => v,
                Err(source) => return Err(AuthError::Json { file, source }),
            };
            let found = lookup_in(&json, registry).map_err(|e| AuthError::In {
                file: file.clone(),
                source: Box::new(e),
            })?;
            if let Some(c) = found {
                return Ok(Some(c));
            }
        }
        Ok(None)
    }
}

/// The keys an auth file may use for `registry`.
fn key_matches(key: &str, registry: &str) -> bool {
    let k = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let k = k.split('/').next().unwrap_or(k);
    let hub = |h: &str| matches!(h, "docker.io" | "index.docker.io" | "registry-1.docker.io");
    k == registry || (hub(k) && hub(registry))
}

/// Why credentials could not be read: the auth file, an entry in it, or a credential helper.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("reading `{}`: {source}", file.display())]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("`{}` is not valid JSON: {source}", file.display())]
    Json {
        file: PathBuf,
        source: serde_json::Error,
    },
    /// An entry of `file` (what is wrong with it in `source`).
    #[error("`{}`: {source}", file.display())]
    In {
        file: PathBuf,
        source: Box<AuthError>,
    },
    #[error("auths.{key}.auth is not base64: {source}")]
    NotBase64 {
        key: String,
        source: base64::DecodeError,
    },
    #[error("auths.{key}.auth is not UTF-8 `user:password`")]
    NotUtf8 { key: String },
    #[error("auths.{key}.auth is not `user:password`")]
    NotUserPassword { key: String },
    #[error("credential helper name `{name}` is not a plain name")]
    HelperName { name: String },
    #[error("running `{program}`: {source}")]
    HelperRun {
        program: String,
        source: std::io::Error,
    },
    #[error("`{program} get` failed: {output}")]
    HelperFailed { program: String, output: String },
    #[error("`{program} get` printed invalid JSON: {source}")]
    HelperJson {
        program: String,
        source: serde_json::Error,
    },
}

fn lookup_in(json: &Value, registry: &str) -> Result<Option<Credentials>, AuthError> {
    if let Some(helpers) = json.get("credHelpers").and_then(Value::as_object) {
        for (k, helper) in helpers {
            if key_matches(k, registry) {
                if let Some(h) = helper.as_str() {
                    return run_helper(h, registry);
                }
            }
        }
    }
    if let Some(auths) = json.get("auths").and_then(Value::as_object) {
        // Exact keys first, then URL-shaped ones (`https://host/v1/`).
        let mut entries: Vec<(&String, &Value)> = auths.iter().collect();
        entries.sort_by_key(|(k, _)| k.as_str() != registry);
        for (k, v) in entries {
            if !key_matches(k, registry) {
                continue;
            }
            if let Some(a) = v
                .get("auth")
                .and_then(Value::as_str)
                .filter(|a| !a.is_empty())
            {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(a.trim())
                    .map_err(|source| AuthError::NotBase64 {
                        key: k.clone(),
                        source,
                    })?;
                let raw =
                    String::from_utf8(raw).map_err(|_| AuthError::NotUtf8 { key: k.clone() })?;
                let (u, p) = raw
                    .split_once(':')
                    .ok_or_else(|| AuthError::NotUserPassword { key: k.clone() })?;
                return Ok(Some(Credentials {
                    username: u.to_string(),
                    password: p.to_string(),
                }));
            }
            let u = v.get("username").and_then(Value::as_str);
            let p = v.get("password").and_then(Value::as_str);
            if let (Some(u), Some(p)) = (u, p) {
                return Ok(Some(Credentials {
                    username: u.into(),
                    password: p.into(),
                }));
            }
        }
    }
    if let Some(store) = json.get("credsStore").and_then(Value::as_str) {
        return run_helper(store, registry);
    }
    Ok(None)
}

/// Runs `docker-credential-NAME get` with the server on stdin. A helper that is not installed
/// or has no entry means anonymous access, as in docker.
fn run_helper(name: &str, registry: &str) -> Result<Option<Credentials>, AuthError> {
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err(AuthError::HelperName {
            name: name.to_string(),
        });
    }
    let program = format!("docker-credential-{name}");
    let server = if matches!(registry, "docker.io" | "index.docker.io") {
        "https://index.docker.io/v1/".to_string()
    } else {
        registry.to_string()
    };
    let mut child = match Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(AuthError::HelperRun { program, source }),
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(server.as_bytes());
    }
    let out = match child.wait_with_output() {
        Ok(out) => out,
        Err(source) => return Err(AuthError::HelperRun { program, source }),
    };
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        if msg.to_lowercase().contains("credentials not found") {
            return Ok(None);
        }
        return Err(AuthError::HelperFailed {
            program,
            output: msg.trim().to_string(),
        });
    }
    let v: Value = match serde_json::from_slice(&out.stdout) {
        Ok(v) => v,
        Err(source) => return Err(AuthError::HelperJson { program, source }),
    };
    let u = v.get("Username").and_then(Value::as_str).unwrap_or("");
    let p = v.get("Secret").and_then(Value::as_str).unwrap_or("");
    if p.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credentials {
        username: u.into(),
        password: p.into(),
    }))
}

/// A parsed `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `Bearer realm="…",service="…",scope="…"`
    Bearer(BTreeMap<String, String>),
    /// `Basic realm="…"`
    Basic,
}

/// Parses the first challenge of a `WWW-Authenticate` value (registries send one).
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    // `key=value` or `key="quoted, \"escaped\""`, separated by commas and spaces. The header
    // comes from an untrusted server: malformed input ends the parse, it never panics (a
    // fuzzer found the byte-index version slicing past the end on a trailing `key` without `=`).
    let mut params = BTreeMap::new();
    let mut s = rest;
    loop {
        s = s.trim_start_matches([' ', ',']);
        let Some(eq) = s.find('=') else {
            break;
        };
        let key = s[..eq].trim().to_ascii_lowercase();
        s = &s[eq + 1..];
        let value = if let Some(q) = s.strip_prefix('"') {
            let mut v = String::new();
            let mut end = q.len();
            let mut chars = q.char_indices();
            while let Some((j, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            v.push(n);
                        }
                    }
                    '"' => {
                        end = j + 1;
                        break;
                    }
                    c => v.push(c),
                }
            }
            s = &q[end..];
            v
        } else {
            let end = s.find(',').unwrap_or(s.len());
            let v = s[..end].trim().to_string();
            s = &s[end..];
            v
        };
        if !key.is_empty() {
            params.insert(key, value);
        }
    }
    Some(Challenge::Bearer(params))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_challenges_never_panic() {
        // Found by the registry_response fuzz target (fuzz/): a trailing key without `=`
        // made the old parser slice past the end of the header.
        let crash = b"Bearer r\x01BearerZ\xe8\x00\x00\x00lm=\"http://127.0.0.1:5ealm=\"000/tohttk";
        let _ = parse_challenge(&String::from_utf8_lossy(crash));
        for h in [
            "Bearer realm",
            "Bearer =",
            "Bearer a=\"unterminated",
            "Bearer a=\"x\\",
            "Bearer ,,, ",
            "Bearer é=ü,ß",
        ] {
            let _ = parse_challenge(h);
        }
        let Challenge::Bearer(p) = parse_challenge("Bearer realm=\"a\\\"b\",service=s").unwrap()
        else {
            panic!()
        };
        assert_eq!(p["realm"], "a\"b");
        assert_eq!(p["service"], "s");
    }

    #[test]
    fn parses_bearer_and_basic_challenges() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/debian:pull""#,
        )
        .unwrap();
        let Challenge::Bearer(p) = c else {
            panic!("not bearer")
        };
        assert_eq!(p["realm"], "https://auth.docker.io/token");
        assert_eq!(p["service"], "registry.docker.io");
        assert_eq!(p["scope"], "repository:library/debian:pull");
        // A scope with several actions has a comma inside the quotes.
        let Challenge::Bearer(p) =
            parse_challenge(r#"Bearer realm="r",scope="repository:a:pull,push""#).unwrap()
        else {
            panic!()
        };
        assert_eq!(p["scope"], "repository:a:pull,push");
        assert_eq!(
            parse_challenge(r#"Basic realm="x""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Negotiate"), None);
    }

    #[test]
    fn reads_docker_and_podman_auth_files() {
        let dir = tempfile::tempdir().unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
        let docker = dir.path().join("docker");
        std::fs::create_dir(&docker).unwrap();
        std::fs::write(
            docker.join("config.json"),
            format!(
                r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{b64}"}},"127.0.0.1:5000":{{"username":"bob","password":"pw"}}}}}}"#
            ),
        )
        .unwrap();
        let src = AuthSources {
            registry_auth_file: None,
            docker_config: Some(docker.clone()),
            home: None,
        };
        let c = src.lookup("docker.io").unwrap().unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("alice", "s3cret")
        );
        assert_eq!(c.basic_header(), format!("Basic {b64}"));
        assert_eq!(
            src.lookup("127.0.0.1:5000").unwrap().unwrap().username,
            "bob"
        );
        assert_eq!(src.lookup("ghcr.io").unwrap(), None);
        // $REGISTRY_AUTH_FILE comes first.
        let podman = dir.path().join("auth.json");
        let b64 = base64::engine::general_purpose::STANDARD.encode("carol:x:y");
        std::fs::write(
            &podman,
            format!(r#"{{"auths":{{"127.0.0.1:5000":{{"auth":"{b64}"}}}}}}"#),
        )
        .unwrap();
        let src = AuthSources {
            registry_auth_file: Some(podman),
            ..src
        };
        let c = src.lookup("127.0.0.1:5000").unwrap().unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("carol", "x:y"));
        // Falls through to the docker config for other registries.
        assert_eq!(src.lookup("docker.io").unwrap().unwrap().username, "alice");
        // Broken files are errors, not anonymous access.
        std::fs::write(docker.join("config.json"), "{nope").unwrap();
        assert!(src
            .lookup("ghcr.io")
            .unwrap_err()
            .to_string()
            .contains("not valid JSON"));
        // A credential helper that is not installed means anonymous.
        std::fs::write(
            docker.join("config.json"),
            r#"{"credHelpers":{"ghcr.io":"strata-test-missing-helper"}}"#,
        )
        .unwrap();
        assert_eq!(src.lookup("ghcr.io").unwrap(), None);
    }

    #[test]
    fn credential_helpers_are_run() {
        let dir = tempfile::tempdir().unwrap();
        // A helper on PATH is what docker runs; we call it by absolute name through PATH.
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let helper = bin.join("docker-credential-strata-test");
        std::fs::write(
            &helper,
            "#!/bin/sh\nread server\n[ \"$1\" = get ] || exit 2\necho \"{\\\"Username\\\":\\\"u-$server\\\",\\\"Secret\\\":\\\"p\\\"}\"\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let json: Value = serde_json::from_str(r#"{"credsStore":"strata-test"}"#).unwrap();
        // PATH is process-wide; this test is the only one that needs it changed.
        std::env::set_var("PATH", &path);
        let c = lookup_in(&json, "example.com:5000").unwrap().unwrap();
        assert_eq!(c.username, "u-example.com:5000");
        assert_eq!(c.password, "p");
        let c = lookup_in(&json, "docker.io").unwrap().unwrap();
        assert_eq!(c.username, "u-https://index.docker.io/v1/");
        assert!(format!("{c:?}").contains("redacted"));
    }
}
