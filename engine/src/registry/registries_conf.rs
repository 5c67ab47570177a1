//! `registries.conf` as podman and buildah read it (containers-registries.conf(5), version 2):
//! which registry a reference is pulled from, through which mirrors, over plain HTTP or not,
//! and which names are blocked. This is what air-gapped CI uses to send `FROM debian:12` to a
//! mirror inside the network.
//!
//! What strata reads of it: `[[registry]]` tables (`prefix`, `location`, `insecure`, `blocked`,
//! `mirror-by-digest-only`) and their `[[registry.mirror]]` tables (`location`, `insecure`,
//! `pull-from-mirror`). Everything else (`unqualified-search-registries`, `short-name-mode`,
//! `[aliases]`, `credential-helpers`) is accepted and ignored: strata names images by Docker's
//! rules (an unqualified name is on `docker.io`), so it never searches or asks for a short name.
//!
//! Files, as podman finds them: `--registries-conf FILE` or `$CONTAINERS_REGISTRIES_CONF`
//! (that file alone), else `$XDG_CONFIG_HOME/containers/registries.conf` (default
//! `~/.config/…`) if it exists, else `/etc/containers/registries.conf`; then the drop-ins
//! `registries.conf.d/*.conf` beside it, by name. A `[[registry]]` of a later file replaces one
//! with the same prefix.
//!
//! Resolution: the entry with the longest matching prefix decides. Its mirrors are tried in
//! order, then its location. A mirror only ever changes *where* bytes come from: every manifest
//! and blob is verified against its digest, and what `strata.lock` pins is the digest, so the
//! lock file is the same whichever mirror served the image.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::reference::Reference;

/// The parsed configuration: the `[[registry]]` entries of every file read, later files first
/// replaced by prefix.
#[derive(Debug, Clone, Default)]
pub struct RegistriesConf {
    entries: Vec<Entry>,
    /// The files read, in order (for messages).
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    /// As written, or the location when `prefix` is not set.
    prefix: String,
    location: String,
    insecure: bool,
    blocked: bool,
    mirrors: Vec<Mirror>,
    /// The file that defined it.
    file: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Mirror {
    location: String,
    insecure: bool,
    pull: PullFrom,
}

/// `pull-from-mirror`: which references a mirror may serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum PullFrom {
    All,
    DigestOnly,
    TagOnly,
}

/// One place to try for a reference: the rewritten reference and whether it is a mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub reference: Reference,
    pub mirror: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfError {
    #[error("`{}`{}: {reason}\nhint: see containers-registries.conf(5); strata reads `[[registry]]` tables with `prefix`, `location`, `insecure`, `blocked` and `[[registry.mirror]]` tables", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Invalid {
        file: PathBuf,
        line: Option<usize>,
        reason: String,
    },
    #[error("reading `{}`: {err}", file.display())]
    Io {
        file: PathBuf,
        #[source]
        err: std::io::Error,
    },
}

/// Pulling `reference` is forbidden by a `blocked = true` entry.
#[derive(Debug, Clone, thiserror::Error)]
#[error("pulling `{reference}` is blocked by `{}` (`[[registry]]` with prefix `{prefix}`)\nhint: use an image from a registry that is not blocked, or ask whoever manages that file", file.display())]
pub struct Blocked {
    pub reference: String,
    pub prefix: String,
    pub file: PathBuf,
}

// The file's shape, for serde. Unknown keys and tables are ignored on purpose (see the module
// docs); the version-1 tables are recognised so they can be reported rather than ignored.
#[derive(Deserialize)]
struct FileV2 {
    #[serde(default)]
    registry: Vec<RegistryTable>,
    #[serde(default)]
    registries: Option<toml::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RegistryTable {
    prefix: Option<String>,
    location: Option<String>,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    blocked: bool,
    #[serde(default)]
    mirror_by_digest_only: bool,
    #[serde(default)]
    mirror: Vec<MirrorTable>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct MirrorTable {
    location: String,
    #[serde(default)]
    insecure: bool,
    pull_from_mirror: Option<PullFrom>,
}

impl RegistriesConf {
    /// The configuration podman would use: `explicit` (the flag), else
    /// `$CONTAINERS_REGISTRIES_CONF`, each alone; else the user's or the system's file and its
    /// drop-ins. No file at all is an empty configuration.
    pub fn discover(explicit: Option<&Path>) -> Result<RegistriesConf, ConfError> {
        if let Some(p) = explicit {
            return RegistriesConf::from_files(&[p.to_path_buf()]);
        }
        if let Some(p) = std::env::var_os("CONTAINERS_REGISTRIES_CONF").filter(|v| !v.is_empty()) {
            return RegistriesConf::from_files(&[PathBuf::from(p)]);
        }
        let user_dir = std::env::var_os("XDG_CONFIG_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .filter(|v| !v.is_empty())
                    .map(|h| PathBuf::from(h).join(".config"))
            })
            .map(|d| d.join("containers"));
        let system_dir = PathBuf::from("/etc/containers");
        let dir = match user_dir {
            Some(d) if d.join("registries.conf").is_file() => d,
            _ => system_dir.clone(),
        };
        let mut files = Vec::new();
        if dir.join("registries.conf").is_file() {
            files.push(dir.join("registries.conf"));
        }
        // Drop-ins: the system's, then the user's (podman reads both), each sorted by name.
        let mut dropin_dirs = vec![system_dir.join("registries.conf.d")];
        if dir != system_dir {
            dropin_dirs.push(dir.join("registries.conf.d"));
        }
        for d in dropin_dirs {
            let Ok(rd) = fs::read_dir(&d) else { continue };
            let mut names: Vec<PathBuf> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "conf") && p.is_file())
                .collect();
            names.sort();
            files.extend(names);
        }
        RegistriesConf::from_files(&files)
    }

    /// Reads these files in order; a later `[[registry]]` replaces an earlier one with the
    /// same prefix.
    pub fn from_files(files: &[PathBuf]) -> Result<RegistriesConf, ConfError> {
        let mut conf = RegistriesConf::default();
        for f in files {
            let text = fs::read_to_string(f).map_err(|err| ConfError::Io {
                file: f.clone(),
                err,
            })?;
            conf.add(f, &text)?;
        }
        Ok(conf)
    }

    /// Parses one file's text (named `file` in messages) and merges its entries.
    pub fn add(&mut self, file: &Path, text: &str) -> Result<(), ConfError> {
        let invalid = |line: Option<usize>, reason: String| ConfError::Invalid {
            file: file.to_path_buf(),
            line,
            reason,
        };
        let parsed: FileV2 = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            invalid(line, e.message().to_string())
        })?;
        if parsed.registries.is_some() {
            return Err(invalid(
                None,
                "the version 1 format (`[registries.search]`, `[registries.insecure]`, `[registries.block]`) is not supported; write `[[registry]]` tables (version 2)".into(),
            ));
        }
        for t in parsed.registry {
            let location = t.location.unwrap_or_default();
            let prefix = match t.prefix {
                Some(p) if !p.is_empty() => p,
                _ if !location.is_empty() => location.clone(),
                _ => {
                    return Err(invalid(
                        None,
                        "a `[[registry]]` needs a `prefix` or a `location`".into(),
                    ))
                }
            };
            let wildcard = prefix.starts_with("*.");
            if wildcard && prefix[2..].contains(['*', '/']) {
                return Err(invalid(
                    None,
                    format!("prefix `{prefix}`: a wildcard prefix is `*.` followed by a host name"),
                ));
            }
            if wildcard && !location.is_empty() {
                return Err(invalid(
                    None,
                    format!("prefix `{prefix}`: a wildcard prefix cannot have a `location`"),
                ));
            }
            if prefix.contains("://") || location.contains("://") {
                return Err(invalid(
                    None,
                    format!("prefix `{prefix}`: names are written without a scheme (`host[:port][/path]`); plain HTTP is `insecure = true`"),
                ));
            }
            let mirrors = t
                .mirror
                .into_iter()
                .map(|m| Mirror {
                    location: m.location,
                    insecure: m.insecure,
                    pull: match (m.pull_from_mirror, t.mirror_by_digest_only) {
                        (Some(p), _) => p,
                        (None, true) => PullFrom::DigestOnly,
                        (None, false) => PullFrom::All,
                    },
                })
                .collect::<Vec<_>>();
            if mirrors
                .iter()
                .any(|m| m.location.is_empty() || m.location.contains("://"))
            {
                return Err(invalid(
                    None,
                    format!("prefix `{prefix}`: a `[[registry.mirror]]` needs a `location` (`host[:port][/path]`, no scheme)"),
                ));
            }
            let entry = Entry {
                prefix,
                location,
                insecure: t.insecure,
                blocked: t.blocked,
                mirrors,
                file: file.to_path_buf(),
            };
            self.entries.retain(|e| e.prefix != entry.prefix);
            self.entries.push(entry);
        }
        self.files.push(file.to_path_buf());
        Ok(())
    }

    /// Whether any entry says anything (an empty configuration changes nothing).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Hosts that these entries reach over plain HTTP (`insecure = true`), for the client.
    pub fn insecure_hosts(&self) -> Vec<String> {
        let mut out = Vec::new();
        for e in &self.entries {
            if e.insecure && !e.prefix.starts_with("*.") {
                out.push(host_of(if e.location.is_empty() {
                    &e.prefix
                } else {
                    &e.location
                }));
            }
            for m in e.mirrors.iter().filter(|m| m.insecure) {
                out.push(host_of(&m.location));
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// Where to pull `r` from, in order: the mirrors of the best-matching entry that may serve
    /// this kind of reference, then its location (or `r` itself when nothing matches).
    pub fn endpoints(&self, r: &Reference) -> Result<Vec<Endpoint>, Blocked> {
        let full = r.to_string();
        let Some(e) = self
            .entries
            .iter()
            .filter_map(|e| matching_len(&full, &r.registry, &e.prefix).map(|n| (n, e)))
            .max_by_key(|(n, _)| *n)
            .map(|(_, e)| e)
        else {
            return Ok(vec![Endpoint {
                reference: r.clone(),
                mirror: false,
            }]);
        };
        if e.blocked {
            return Err(Blocked {
                reference: full,
                prefix: e.prefix.clone(),
                file: e.file.clone(),
            });
        }
        let wildcard = e.prefix.starts_with("*.");
        let rest = if wildcard {
            ""
        } else {
            &full[e.prefix.len()..]
        };
        let by_digest = r.digest.is_some();
        let mut out = Vec::new();
        for m in &e.mirrors {
            let allowed = match m.pull {
                PullFrom::All => true,
                PullFrom::DigestOnly => by_digest,
                PullFrom::TagOnly => !by_digest,
            };
            if !allowed || wildcard {
                continue;
            }
            // A location that does not make a valid reference is skipped, not fatal: the
            // next mirror or the location may still serve.
            if let Ok(reference) = Reference::parse(&format!("{}{rest}", m.location)) {
                out.push(Endpoint {
                    reference,
                    mirror: true,
                });
            }
        }
        let primary = if wildcard || e.location.is_empty() {
            r.clone()
        } else {
            Reference::parse(&format!("{}{rest}", e.location)).unwrap_or_else(|_| r.clone())
        };
        out.push(Endpoint {
            reference: primary,
            mirror: false,
        });
        Ok(out)
    }
}

/// How much of `full` (`registry/repository[:tag][@digest]`) `prefix` matches: whole path
/// components only; a prefix that is only a host never matches another port of that host.
fn matching_len(full: &str, registry: &str, prefix: &str) -> Option<usize> {
    if let Some(domain) = prefix.strip_prefix("*.") {
        let host = registry.split(':').next().unwrap_or(registry);
        return host
            .strip_suffix(domain)
            .filter(|h| h.ends_with('.') && h.len() > 1)
            .map(|_| prefix.len());
    }
    let tail = full.strip_prefix(prefix)?;
    match tail.bytes().next() {
        None | Some(b'/') | Some(b'@') => Some(prefix.len()),
        // `host` must not match `host:5000`; `host/repo` does match `host/repo:tag`.
        Some(b':') if prefix.contains('/') => Some(prefix.len()),
        _ => None,
    }
}

fn host_of(location: &str) -> String {
    location.split('/').next().unwrap_or(location).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(text: &str) -> RegistriesConf {
        let mut c = RegistriesConf::default();
        c.add(Path::new("/etc/containers/registries.conf"), text)
            .unwrap();
        c
    }

    fn names(c: &RegistriesConf, r: &str) -> Vec<String> {
        c.endpoints(&Reference::parse(r).unwrap())
            .unwrap()
            .into_iter()
            .map(|e| format!("{}{}", if e.mirror { "m:" } else { "" }, e.reference))
            .collect()
    }

    #[test]
    fn no_entry_means_the_reference_itself() {
        let c = conf(
            "unqualified-search-registries = [\"docker.io\"]\n[aliases]\n\"x\" = \"quay.io/x/y\"\n",
        );
        assert!(c.is_empty());
        assert_eq!(names(&c, "debian:12"), ["docker.io/library/debian:12"]);
    }

    #[test]
    fn mirrors_come_first_then_the_location_and_rewrite_the_prefix() {
        let c = conf(
            r#"
[[registry]]
prefix = "docker.io"
location = "docker.io"
[[registry.mirror]]
location = "127.0.0.1:5001/hub"
[[registry.mirror]]
location = "mirror.example.com"
"#,
        );
        assert_eq!(
            names(&c, "debian:12"),
            [
                "m:127.0.0.1:5001/hub/library/debian:12",
                "m:mirror.example.com/library/debian:12",
                "docker.io/library/debian:12"
            ]
        );
        // Another registry is untouched.
        assert_eq!(names(&c, "ghcr.io/a/b:1"), ["ghcr.io/a/b:1"]);
    }

    #[test]
    fn the_longest_prefix_wins_and_matches_whole_components() {
        let c = conf(
            r#"
[[registry]]
prefix = "example.com"
location = "a.example.net"
[[registry]]
prefix = "example.com/team/app"
location = "b.example.net/app"
"#,
        );
        assert_eq!(names(&c, "example.com/team/app:1"), ["b.example.net/app:1"]);
        assert_eq!(
            names(&c, "example.com/team/application:1"),
            ["a.example.net/team/application:1"]
        );
        // `example.com` is not `example.com:5000`, nor `example.community`.
        assert_eq!(names(&c, "example.com:5000/x:1"), ["example.com:5000/x:1"]);
        assert_eq!(
            names(&c, "example.community/x:1"),
            ["example.community/x:1"]
        );
    }

    #[test]
    fn digest_only_mirrors_serve_only_references_by_digest() {
        let c = conf(
            r#"
[[registry]]
prefix = "quay.io"
mirror-by-digest-only = true
[[registry.mirror]]
location = "m1.local"
[[registry.mirror]]
location = "m2.local"
pull-from-mirror = "tag-only"
"#,
        );
        assert_eq!(
            names(&c, "quay.io/a/b:1"),
            ["m:m2.local/a/b:1", "quay.io/a/b:1"]
        );
        let d = format!("quay.io/a/b@sha256:{}", "a".repeat(64));
        let got = names(&c, &d);
        assert_eq!(got.len(), 2);
        assert!(got[0].starts_with("m:m1.local/a/b@sha256:"), "{got:?}");
    }

    #[test]
    fn blocked_names_the_file_and_prefix() {
        let c = conf("[[registry]]\nprefix = \"docker.io/library\"\nblocked = true\n");
        let e = c
            .endpoints(&Reference::parse("debian:12").unwrap())
            .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("docker.io/library/debian:12"), "{msg}");
        assert!(msg.contains("prefix `docker.io/library`"), "{msg}");
        assert!(msg.contains("/etc/containers/registries.conf"), "{msg}");
        // Other namespaces of the same registry are not.
        assert!(c.endpoints(&Reference::parse("a/b:1").unwrap()).is_ok());
    }

    #[test]
    fn wildcard_prefixes_match_subdomains_only() {
        let c = conf("[[registry]]\nprefix = \"*.example.com\"\nblocked = true\n");
        assert!(c
            .endpoints(&Reference::parse("r.example.com/a:1").unwrap())
            .is_err());
        assert!(c
            .endpoints(&Reference::parse("example.com/a:1").unwrap())
            .is_ok());
        assert!(c
            .endpoints(&Reference::parse("badexample.com/a:1").unwrap())
            .is_ok());
    }

    #[test]
    fn insecure_hosts_of_locations_and_mirrors() {
        let c = conf(
            r#"
[[registry]]
prefix = "docker.io"
[[registry.mirror]]
location = "10.0.0.5:5000/hub"
insecure = true
[[registry]]
location = "lan.example:5000"
insecure = true
"#,
        );
        assert_eq!(c.insecure_hosts(), ["10.0.0.5:5000", "lan.example:5000"]);
    }

    #[test]
    fn a_later_file_replaces_an_entry_with_the_same_prefix() {
        let mut c = conf("[[registry]]\nprefix = \"docker.io\"\nblocked = true\n");
        c.add(
            Path::new("/etc/containers/registries.conf.d/50-mirror.conf"),
            "[[registry]]\nprefix = \"docker.io\"\n[[registry.mirror]]\nlocation = \"m.local\"\n",
        )
        .unwrap();
        assert_eq!(
            names(&c, "debian:12"),
            ["m:m.local/library/debian:12", "docker.io/library/debian:12"]
        );
    }

    #[test]
    fn malformed_files_name_the_line_and_give_a_hint() {
        let mut c = RegistriesConf::default();
        let e = c
            .add(
                Path::new("/x/registries.conf"),
                "# comment\n[[registry]]\nprefix = \"docker.io\"\ninsecure = \"yes\"\n",
            )
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("`/x/registries.conf`:4: "), "{e}");
        assert!(e.contains("hint: "), "{e}");
        for bad in [
            "[[registry]]\ninsecure = true\n",
            "[[registry]]\nprefix = \"*.a.com\"\nlocation = \"b.com\"\n",
            "[[registry]]\nlocation = \"https://b.com\"\n",
            "[registries.search]\nregistries = [\"docker.io\"]\n",
            "[[registry]]\nprefix = \"a.com\"\n[[registry.mirror]]\ninsecure = true\n",
        ] {
            assert!(
                RegistriesConf::default().add(Path::new("/x"), bad).is_err(),
                "{bad}"
            );
        }
    }
}
