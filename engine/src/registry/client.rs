//! A synchronous client of the OCI distribution API: one [`Client`] per build or push, shared
//! by threads; it remembers, per registry, the `Authorization` header that worked.
//!
//! Every request goes through [`Client::send`]: it attaches auth, answers a 401 challenge once
//! (anonymous or credentialed bearer token, or Basic), and retries connection errors, 5xx and
//! 429 with exponential backoff (honouring `Retry-After`) within a bounded number of attempts
//! and a bounded total wait. Bodies it sends are [`Payload`]s that can be replayed on retry.
//!
//! Redirects (a registry sends blob downloads to a CDN) are followed here, not by the HTTP
//! library, as containerd does: to `https` anywhere, to plain `http` only where the registry
//! itself would be reached over it (loopback and `--insecure-registry` hosts), never to another
//! scheme (`file:`); credentials go only to the registry's own host, never to the host a
//! redirect leads to; at most [`MAX_REDIRECTS`] in a row. (Issue 18: the library followed a
//! redirect to plain HTTP on any host, and read `Location: file:///…` as a relative path.)

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use ureq::http::{self, Method, Response};
use ureq::{Body, SendBody};

use super::auth::{parse_challenge, AuthSources, Challenge, Credentials};
use super::error::{RegistryError, Site};
use super::reference::api_host;

/// How hard to try before giving up on a request.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all (1 = no retry).
    pub attempts: u32,
    /// The first backoff; doubled after each failure.
    pub initial: Duration,
    /// No single wait is longer than this (a longer `Retry-After` is cut to it).
    pub max_wait: Duration,
    /// The waits of one request add up to at most this.
    pub max_total: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            initial: Duration::from_millis(500),
            max_wait: Duration::from_secs(10),
            max_total: Duration::from_secs(30),
        }
    }
}

/// How the client reaches registries.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// `HOST[:PORT]` reached over plain HTTP (loopback registries always are).
    pub insecure: Vec<String>,
    pub auth: AuthSources,
    pub retry: RetryPolicy,
}

/// A request body that can be sent again (on retry or after an auth challenge).
#[derive(Debug, Clone)]
pub enum Payload<'a> {
    Empty,
    Bytes(&'a [u8]),
    /// `len` bytes of a file from `offset`.
    File {
        path: PathBuf,
        offset: u64,
        len: u64,
    },
}

impl Payload<'_> {
    fn len(&self) -> u64 {
        match self {
            Payload::Empty => 0,
            Payload::Bytes(b) => b.len() as u64,
            Payload::File { len, .. } => *len,
        }
    }
}

#[derive(Default)]
struct RegistryState {
    /// The `Authorization` value that works, once a challenge has been answered.
    authorization: Option<String>,
    /// Bearer scopes asked for so far: a token must cover every repository in use.
    scopes: BTreeSet<String>,
    /// Looked up once per registry.
    credentials: Option<Option<Credentials>>,
}

pub struct Client {
    agent: ureq::Agent,
    opts: ClientOptions,
    state: Mutex<HashMap<String, RegistryState>>,
}

/// What a call is about: the registry, repository and operation (for auth scope and messages).
#[derive(Debug, Clone)]
pub struct Call<'a> {
    pub registry: &'a str,
    pub repository: &'a str,
    pub op: String,
    /// Bearer scope actions: `pull` or `pull,push`.
    pub actions: &'static str,
}

impl Call<'_> {
    pub fn site(&self) -> Site {
        Site {
            registry: self.registry.to_string(),
            repository: self.repository.to_string(),
            op: self.op.clone(),
        }
    }
}

impl Client {
    pub fn new(opts: ClientOptions) -> Client {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .user_agent(concat!("strata/", env!("CARGO_PKG_VERSION")))
            // Compressed layers must arrive byte for byte: never ask for a content encoding.
            .accept_encoding("identity")
            // Redirects are followed by `send`, which checks where they lead (module docs).
            .max_redirects(0)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            .timeout_per_read(Some(Duration::from_secs(120)))
            .build();
        Client {
            agent: ureq::Agent::new_with_config(config),
            opts,
            state: Mutex::new(HashMap::new()),
        }
    }

    pub fn retry_policy(&self) -> RetryPolicy {
        self.opts.retry
    }

    /// `http` for loopback registries and `--insecure-registry` ones (as Docker does);
    /// `https` for every other.
    pub fn scheme(&self, registry: &str) -> &'static str {
        if self.opts.insecure.iter().any(|h| h == registry) || is_loopback(registry) {
            "http"
        } else {
            "https"
        }
    }

    /// `SCHEME://HOST/v2/REPOSITORY/PATH`.
    pub fn url(&self, registry: &str, repository: &str, path: &str) -> String {
        format!(
            "{}://{}/v2/{repository}/{path}",
            self.scheme(registry),
            api_host(registry)
        )
    }

    /// Resolves a `Location` header (absolute, or relative to the registry).
    pub fn absolute(&self, registry: &str, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else {
            format!(
                "{}://{}{}{location}",
                self.scheme(registry),
                api_host(registry),
                if location.starts_with('/') { "" } else { "/" }
            )
        }
    }

    /// Sends a request with auth and retries, following redirects (module docs). Returns the
    /// response for any status that is not retried (the caller decides what a 404 means); 401
    /// after answering the challenge, and 5xx/429 after the last attempt, are errors here.
    pub fn send(
        &self,
        call: &Call,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        payload: &Payload,
    ) -> Result<Response<Body>, RegistryError> {
        let empty = Payload::Empty;
        let (mut method, mut url, mut payload) = (method, url.to_string(), payload);
        for _ in 0..=MAX_REDIRECTS {
            let resp = self.send_once(call, method.clone(), &url, headers, payload)?;
            let Some(location) = redirect_location(&resp) else {
                return Ok(resp);
            };
            let status = resp.status().as_u16();
            url = self.redirect_target(&call.site(), &url, &location)?;
            // As browsers and Go's client: 303, and 301/302 of a POST, go on as a GET.
            if status == 303 || (matches!(status, 301 | 302) && method == Method::POST) {
                method = Method::GET;
                payload = &empty;
            }
        }
        Err(RegistryError::BadResponse {
            site: call.site(),
            reason: format!("more than {MAX_REDIRECTS} redirects in a row"),
        })
    }

    /// Where a redirect from `from` to `location` leads, if it may be followed (module docs).
    fn redirect_target(
        &self,
        site: &Site,
        from: &str,
        location: &str,
    ) -> Result<String, RegistryError> {
        let refuse = |why: String| RegistryError::BadResponse {
            site: site.clone(),
            reason: format!(
                "the registry redirected to `{}`: {why}",
                without_query(location)
            ),
        };
        let target = resolve_location(from, location).map_err(|e| refuse(e.to_string()))?;
        let Some((scheme, authority)) = scheme_and_authority(&target) else {
            return Err(refuse("not a URL strata can follow".into()));
        };
        if scheme == "http" && !self.plain_http_allowed(authority) {
            return Err(refuse(format!(
                "plain HTTP to `{authority}`, which is neither loopback nor an \
                 --insecure-registry host; only HTTPS redirects are followed"
            )));
        }
        Ok(target)
    }

    /// Whether `authority` (`HOST[:PORT]`) may be reached over plain HTTP.
    fn plain_http_allowed(&self, authority: &str) -> bool {
        self.opts
            .insecure
            .iter()
            .any(|h| h.eq_ignore_ascii_case(authority))
            || is_loopback(authority)
    }

    /// Whether `url` is on the registry's own host, the only one its credentials go to.
    fn on_registry_host(registry: &str, url: &str) -> bool {
        scheme_and_authority(url).is_some_and(|(_, a)| a.eq_ignore_ascii_case(api_host(registry)))
    }

    /// One request (no redirect followed) with auth and retries: [`Client::send`].
    fn send_once(
        &self,
        call: &Call,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        payload: &Payload,
    ) -> Result<Response<Body>, RegistryError> {
        // Another host (a CDN a redirect led to) gets no credentials, and its 401 is not
        // answered with them.
        let own_host = Client::on_registry_host(call.registry, url);
        let policy = self.opts.retry;
        let mut waited = Duration::ZERO;
        let mut attempt = 0u32;
        let mut answered_challenge = false;
        loop {
            attempt += 1;
            let auth = self.authorization(call.registry).filter(|_| own_host);
            let result = self.raw(method.clone(), url, headers, auth.as_deref(), payload);
            let retry_after = match result {
                Err(e) => {
                    if attempt >= policy.attempts || e.is_permanent() {
                        return Err(RegistryError::Network {
                            site: call.site(),
                            reason: e.to_string(),
                            attempts: attempt,
                        });
                    }
                    None
                }
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    if status == 401 && !answered_challenge && own_host {
                        answered_challenge = true;
                        let challenge = header(&resp, "www-authenticate");
                        self.answer_challenge(call, challenge.as_deref())?;
                        attempt -= 1; // not a failure
                        continue;
                    }
                    if status == 429 || (500..600).contains(&status) {
                        if attempt >= policy.attempts {
                            return Err(status_error(call, resp, attempt));
                        }
                        header(&resp, "retry-after").and_then(|v| v.trim().parse::<u64>().ok())
                    } else if status == 401 {
                        return Err(status_error(call, resp, attempt));
                    } else {
                        return Ok(resp);
                    }
                }
            };
            let backoff = policy.initial * 2u32.saturating_pow(attempt - 1);
            let wait = retry_after
                .map(Duration::from_secs)
                .unwrap_or(backoff)
                .min(policy.max_wait);
            // The waits add up to at most `max_total`; past it, the remaining attempts go at once.
            let wait = wait.min(policy.max_total.saturating_sub(waited));
            waited += wait;
            std::thread::sleep(wait);
        }
    }

    /// `send`, then turn every status but `ok` into its error.
    pub fn send_expect(
        &self,
        call: &Call,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        payload: &Payload,
        ok: &[u16],
    ) -> Result<Response<Body>, RegistryError> {
        let resp = self.send(call, method, url, headers, payload)?;
        if ok.contains(&resp.status().as_u16()) {
            Ok(resp)
        } else {
            Err(status_error(call, resp, 1))
        }
    }

    fn raw(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        auth: Option<&str>,
        payload: &Payload,
    ) -> Result<Response<Body>, RawError> {
        let mut b = http::Request::builder().method(method.clone()).uri(url);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        let has_body = !matches!(payload, Payload::Empty)
            || matches!(method, Method::PUT | Method::POST | Method::PATCH);
        if has_body {
            b = b.header("content-length", payload.len().to_string());
        }
        let run = |body: SendBody| -> Result<Response<Body>, RawError> {
            let req = b.body(body).map_err(RawError::Build)?;
            self.agent.run(req).map_err(|e| RawError::Transport {
                permanent: !retryable(&e),
                source: e,
            })
        };
        match payload {
            Payload::Empty => run(SendBody::none()),
            Payload::Bytes(bytes) => {
                let mut r: &[u8] = bytes;
                run(SendBody::from_reader(&mut r))
            }
            Payload::File { path, offset, len } => {
                let mut f = File::open(path).map_err(|source| RawError::File {
                    op: "open",
                    path: path.clone(),
                    source,
                })?;
                f.seek(SeekFrom::Start(*offset))
                    .map_err(|source| RawError::File {
                        op: "seek",
                        path: path.clone(),
                        source,
                    })?;
                let mut r = f.take(*len);
                run(SendBody::from_reader(&mut r))
            }
        }
    }

    fn authorization(&self, registry: &str) -> Option<String> {
        let state = self.state.lock().expect("registry state lock");
        state.get(registry).and_then(|s| s.authorization.clone())
    }

    fn credentials(&self, registry: &str) -> Result<Option<Credentials>, RegistryError> {
        {
            let state = self.state.lock().expect("registry state lock");
            if let Some(Some(c)) = state.get(registry).map(|s| s.credentials.clone()) {
                return Ok(c);
            }
        }
        let found =
            self.opts
                .auth
                .lookup(registry)
                .map_err(|source| RegistryError::Credentials {
                    registry: registry.to_string(),
                    source,
                })?;
        let mut state = self.state.lock().expect("registry state lock");
        state.entry(registry.to_string()).or_default().credentials = Some(found.clone());
        Ok(found)
    }

    /// Answers a 401: Basic with the stored credentials, or a bearer token from the realm
    /// (with Basic credentials if there are any, anonymous otherwise) covering every scope used
    /// on this registry so far.
    fn answer_challenge(&self, call: &Call, header: Option<&str>) -> Result<(), RegistryError> {
        let unauthorized = |detail: &str| RegistryError::Unauthorized {
            site: call.site(),
            detail: detail.to_string(),
        };
        let creds = self.credentials(call.registry)?;
        let challenge = header.and_then(parse_challenge);
        let authorization = match challenge {
            Some(Challenge::Basic) => match &creds {
                Some(c) => c.basic_header(),
                None => {
                    return Err(unauthorized(
                        ": the registry wants Basic auth and no credentials were found",
                    ))
                }
            },
            Some(Challenge::Bearer(params)) => {
                let realm =
                    params
                        .get("realm")
                        .cloned()
                        .ok_or_else(|| RegistryError::BadResponse {
                            site: call.site(),
                            reason: "bearer challenge without a realm".into(),
                        })?;
                let scopes = {
                    let mut state = self.state.lock().expect("registry state lock");
                    let s = state.entry(call.registry.to_string()).or_default();
                    s.scopes
                        .insert(format!("repository:{}:{}", call.repository, call.actions));
                    if let Some(sc) = params.get("scope") {
                        for one in sc.split(' ') {
                            s.scopes.insert(one.to_string());
                        }
                    }
                    s.scopes.clone()
                };
                let token =
                    self.fetch_token(call, &realm, params.get("service"), &scopes, creds.as_ref())?;
                format!("Bearer {token}")
            }
            None => return Err(unauthorized("")),
        };
        let mut state = self.state.lock().expect("registry state lock");
        state
            .entry(call.registry.to_string())
            .or_default()
            .authorization = Some(authorization);
        Ok(())
    }

    fn fetch_token(
        &self,
        call: &Call,
        realm: &str,
        service: Option<&String>,
        scopes: &BTreeSet<String>,
        creds: Option<&Credentials>,
    ) -> Result<String, RegistryError> {
        let mut url = realm.to_string();
        let mut sep = if url.contains('?') { '&' } else { '?' };
        let mut add = |k: &str, v: &str| {
            url.push(sep);
            url.push_str(k);
            url.push('=');
            url.push_str(&percent_encode(v));
            sep = '&';
        };
        if let Some(s) = service {
            add("service", s);
        }
        for s in scopes {
            add("scope", s);
        }
        let site = Site {
            op: format!("{} (token from `{realm}`)", call.op),
            ..call.site()
        };
        // The realm is named by the registry: credentials go there only over HTTPS (or where
        // plain HTTP is allowed), and never on to where it redirects.
        match scheme_and_authority(&url) {
            Some(("https", _)) => {}
            Some(("http", a)) if self.plain_http_allowed(a) => {}
            _ => {
                return Err(RegistryError::BadResponse {
                    site,
                    reason: format!(
                        "the token realm `{realm}` is not an HTTPS URL (plain HTTP is only \
                         for loopback and --insecure-registry hosts)"
                    ),
                })
            }
        }
        let realm_authority = scheme_and_authority(&url).map(|(_, a)| a.to_string());
        let basic = creds.map(Credentials::basic_header);
        let mut redirects = 0;
        let mut resp = loop {
            let mut attempt = 0;
            let on_realm = scheme_and_authority(&url).map(|(_, a)| a) == realm_authority.as_deref();
            let auth = basic.as_deref().filter(|_| on_realm);
            let r = loop {
                attempt += 1;
                match self.raw(Method::GET, &url, &[], auth, &Payload::Empty) {
                    Ok(r) => break r,
                    Err(e) if attempt < self.opts.retry.attempts && !e.is_permanent() => {
                        std::thread::sleep(self.opts.retry.initial * attempt);
                    }
                    Err(reason) => {
                        return Err(RegistryError::Network {
                            site,
                            reason: reason.to_string(),
                            attempts: attempt,
                        })
                    }
                }
            };
            let Some(location) = redirect_location(&r) else {
                break r;
            };
            redirects += 1;
            if redirects > MAX_REDIRECTS {
                return Err(RegistryError::BadResponse {
                    site,
                    reason: format!("more than {MAX_REDIRECTS} redirects in a row"),
                });
            }
            url = self.redirect_target(&site, &url, &location)?;
        };
        match resp.status().as_u16() {
            200 => {}
            401 => {
                return Err(RegistryError::Unauthorized {
                    site,
                    detail: if creds.is_some() {
                        ": the token service refused the credentials".into()
                    } else {
                        ": anonymous access refused".into()
                    },
                })
            }
            _ => return Err(status_error_at(site, resp, 1)),
        }
        let body = resp
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_vec()
            .map_err(|e| RegistryError::BadResponse {
                site: site.clone(),
                reason: format!("reading the token: {e}"),
            })?;
        let v: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| RegistryError::BadResponse {
                site: site.clone(),
                reason: format!("token response is not JSON: {e}"),
            })?;
        v.get("token")
            .or_else(|| v.get("access_token"))
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .ok_or_else(|| RegistryError::BadResponse {
                site,
                reason: "token response has no `token`".into(),
            })
    }
}

/// Redirects followed in a row, at most (Go's HTTP client and browsers stop at 10 too).
pub const MAX_REDIRECTS: usize = 10;

/// The `Location` of a redirect response (301, 302, 303, 307, 308), if it is one.
pub(crate) fn redirect_location(resp: &Response<Body>) -> Option<String> {
    matches!(resp.status().as_u16(), 301 | 302 | 303 | 307 | 308)
        .then(|| header(resp, "location"))
        .flatten()
}

/// `(scheme, authority)` of an absolute `http`/`https` URL, the scheme in lower case.
pub(crate) fn scheme_and_authority(url: &str) -> Option<(&'static str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" => "http",
        "https" => "https",
        _ => return None,
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    // Credentials in the URL (`user:pass@host`) are never followed into.
    (!authority.is_empty() && !authority.contains('@')).then_some((scheme, authority))
}

/// Why a redirect's `Location` is not followed ([`resolve_location`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LocationError {
    #[error("a `{0}:` URL; only http and https redirects are followed")]
    Scheme(String),
    #[error("the request URL is not http(s)")]
    NotHttp,
}

/// `location` resolved against the URL `from` (RFC 3986 references: absolute, scheme-relative
/// `//host/…`, absolute path `/…`, or a path relative to `from`'s directory). A URL of any
/// scheme but `http` and `https` is an error saying which.
pub(crate) fn resolve_location(from: &str, location: &str) -> Result<String, LocationError> {
    let loc = location.trim();
    if let Some((scheme, _)) = loc.split_once(':') {
        let is_scheme = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
        if is_scheme && !scheme.contains('/') {
            return match scheme.to_ascii_lowercase().as_str() {
                "http" | "https" => Ok(loc.to_string()),
                other => Err(LocationError::Scheme(other.to_string())),
            };
        }
    }
    let (scheme, authority) = scheme_and_authority(from).ok_or(LocationError::NotHttp)?;
    if let Some(rest) = loc.strip_prefix("//") {
        return Ok(format!("{scheme}://{rest}"));
    }
    if loc.starts_with('/') {
        return Ok(format!("{scheme}://{authority}{loc}"));
    }
    // Relative to the directory of `from`'s path (query and fragment dropped).
    let after = &from[from.find("://").map_or(0, |i| i + 3) + authority.len()..];
    let path = &after[..after.find(['?', '#']).unwrap_or(after.len())];
    let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
    let dir = if dir.is_empty() { "/" } else { dir };
    Ok(format!("{scheme}://{authority}{dir}{loc}"))
}

/// A URL without its query (which may carry a signature or token) for messages.
pub(crate) fn without_query(url: &str) -> &str {
    &url[..url.find('?').unwrap_or(url.len())]
}

/// Why one request got no response ([`Client::raw`]); the callers retry it unless it is
/// permanent, then report its text as a network error.
#[derive(Debug, thiserror::Error)]
enum RawError {
    #[error("building the request: {0}")]
    Build(#[source] http::Error),
    /// `permanent`: another attempt will not fix it ([`retryable`]).
    #[error("{source}")]
    Transport {
        source: ureq::Error,
        permanent: bool,
    },
    /// Opening or seeking the file of a `Payload::File`.
    #[error("{op} `{}`: {source}", path.display())]
    File {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl RawError {
    fn is_permanent(&self) -> bool {
        matches!(
            self,
            RawError::Transport {
                permanent: true,
                ..
            }
        )
    }
}

/// Connection refused or reset, timeouts, broken bodies: worth another attempt. An unknown
/// host, a bad URL, a certificate or protocol error: not (retrying only delays the message).
fn retryable(e: &ureq::Error) -> bool {
    if let ureq::Error::Io(io) = e {
        // getaddrinfo's EAI_NONAME: the name does not exist (EAI_AGAIN, a DNS hiccup, does
        // not say this and is retried).
        let s = io.to_string();
        if s.contains("Name or service not known") || s.contains("No address associated") {
            return false;
        }
    }
    !matches!(
        e,
        ureq::Error::HostNotFound
            | ureq::Error::BadUri(_)
            | ureq::Error::Tls(_)
            | ureq::Error::Rustls(_)
            | ureq::Error::Pem(_)
            | ureq::Error::Protocol(_)
            | ureq::Error::TooManyRedirects
            | ureq::Error::RedirectFailed
            | ureq::Error::InvalidProxyUrl
    )
}

/// A header's value as text.
pub fn header(resp: &Response<Body>, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

pub(crate) fn status_error(call: &Call, resp: Response<Body>, attempts: u32) -> RegistryError {
    status_error_at(call.site(), resp, attempts)
}

/// The error for an unexpected status, with the registry's own error message when it sent one
/// (`{"errors":[{"code":…,"message":…}]}`).
fn status_error_at(site: Site, mut resp: Response<Body>, attempts: u32) -> RegistryError {
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .with_config()
        .limit(64 * 1024)
        .read_to_vec()
        .unwrap_or_default();
    let detail = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            let errs = v.get("errors")?.as_array()?;
            let msgs: Vec<String> = errs
                .iter()
                .filter_map(|e| {
                    let code = e.get("code").and_then(|c| c.as_str()).unwrap_or("");
                    let msg = e.get("message").and_then(|c| c.as_str()).unwrap_or("");
                    (!code.is_empty() || !msg.is_empty()).then(|| format!("{code}: {msg}"))
                })
                .collect();
            (!msgs.is_empty()).then(|| format!(" — {}", msgs.join("; ")))
        })
        .unwrap_or_default();
    match status {
        401 => RegistryError::Unauthorized { site, detail },
        403 => RegistryError::Denied { site, detail },
        404 => RegistryError::NotFound { site, detail },
        429 => RegistryError::TooManyRequests { site, attempts },
        _ => RegistryError::Status {
            site,
            status,
            detail,
            attempts,
        },
    }
}

/// Loopback hosts are reached over plain HTTP, as Docker does.
pub fn is_loopback(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        registry.split(':').next().unwrap_or("")
    };
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_use_plain_http() {
        let c = Client::new(ClientOptions {
            insecure: vec!["10.0.0.5:5000".into()],
            ..Default::default()
        });
        assert_eq!(c.scheme("127.0.0.1:5000"), "http");
        assert_eq!(c.scheme("127.1.2.3"), "http");
        assert_eq!(c.scheme("localhost:80"), "http");
        assert_eq!(c.scheme("[::1]:5000"), "http");
        assert_eq!(c.scheme("10.0.0.5:5000"), "http");
        assert_eq!(c.scheme("10.0.0.5:5001"), "https");
        assert_eq!(c.scheme("docker.io"), "https");
        assert_eq!(
            c.url("docker.io", "library/debian", "manifests/12"),
            "https://registry-1.docker.io/v2/library/debian/manifests/12"
        );
        assert_eq!(
            c.absolute("127.0.0.1:5000", "/v2/a/blobs/uploads/x?s=1"),
            "http://127.0.0.1:5000/v2/a/blobs/uploads/x?s=1"
        );
        assert_eq!(c.absolute("h", "https://s3/x"), "https://s3/x");
        assert_eq!(
            percent_encode("repository:a/b:pull,push"),
            "repository%3Aa%2Fb%3Apull%2Cpush"
        );
    }

    /// A loopback HTTP server for one test: answers each request with `respond(path)` and
    /// records every request's path and `Authorization` header.
    struct Server {
        addr: String,
        seen: std::sync::Arc<Mutex<Vec<Seen>>>,
    }

    /// A request's path and `Authorization` header.
    type Seen = (String, Option<String>);

    impl Server {
        fn start(ip: &str, respond: impl Fn(&str) -> String + Send + 'static) -> Server {
            use std::io::{BufRead, BufReader, Write};
            let listener = std::net::TcpListener::bind((ip, 0)).unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
            let log = seen.clone();
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    let Ok(mut conn) = conn else { return };
                    let mut r = BufReader::new(conn.try_clone().unwrap());
                    let mut line = String::new();
                    r.read_line(&mut line).unwrap();
                    let path = line.split(' ').nth(1).unwrap_or("").to_string();
                    let mut auth = None;
                    loop {
                        let mut h = String::new();
                        if r.read_line(&mut h).unwrap() == 0 || h == "\r\n" {
                            break;
                        }
                        if let Some((k, v)) = h.split_once(':') {
                            if k.eq_ignore_ascii_case("authorization") {
                                auth = Some(v.trim().to_string());
                            }
                        }
                    }
                    log.lock().unwrap().push((path.clone(), auth));
                    let _ = conn.write_all(respond(&path).as_bytes());
                }
            });
            Server { addr, seen }
        }
    }

    fn redirect(to: &str) -> String {
        format!("HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    }

    fn ok_body(body: &str) -> String {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    }

    fn get(c: &Client, registry: &str, path: &str) -> Result<String, RegistryError> {
        let call = Call {
            registry,
            repository: "r",
            op: "test".into(),
            actions: "pull",
        };
        let url = c.url(registry, "r", path);
        let mut resp = c.send(&call, Method::GET, &url, &[], &Payload::Empty)?;
        Ok(resp.body_mut().read_to_string().unwrap())
    }

    /// Issue 18: redirects were followed to plain HTTP on any host, with the registry's
    /// credentials, and `Location: file:///…` ended in "too many redirects".
    #[test]
    fn redirects_go_to_https_or_allowed_http_hosts_only_and_never_carry_credentials() {
        // Another loopback address: another host, reachable over HTTP (loopback is allowed).
        let cdn = Server::start("127.0.0.2", |_| ok_body("blob"));
        let cdn_addr = cdn.addr.clone();
        let registry = Server::start("127.0.0.1", move |path| match path {
            "/v2/r/blobs/cdn" => redirect(&format!("http://{cdn_addr}/b?sig=1")),
            "/v2/r/blobs/same" => redirect("/v2/r/blobs/here"),
            "/v2/r/blobs/relative" => redirect("here"),
            "/v2/r/blobs/here" => ok_body("here"),
            "/v2/r/blobs/file" => redirect("file:///etc/passwd"),
            "/v2/r/blobs/outside" => redirect("http://192.0.2.1/x?token=secret"),
            "/v2/r/blobs/loop" => redirect("/v2/r/blobs/loop"),
            _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                .to_string(),
        });
        let reg = registry.addr.clone();
        let c = Client::new(ClientOptions::default());
        c.state
            .lock()
            .unwrap()
            .entry(reg.clone())
            .or_default()
            .authorization = Some("Basic c2VjcmV0".into());

        // To another host: followed, without the credentials.
        assert_eq!(get(&c, &reg, "blobs/cdn").unwrap(), "blob");
        assert_eq!(
            cdn.seen.lock().unwrap().as_slice(),
            [("/b?sig=1".to_string(), None)]
        );
        // On the registry's own host: followed, with them.
        assert_eq!(get(&c, &reg, "blobs/same").unwrap(), "here");
        assert_eq!(get(&c, &reg, "blobs/relative").unwrap(), "here");
        let seen = registry.seen.lock().unwrap().clone();
        assert!(seen
            .iter()
            .filter(|(p, _)| p == "/v2/r/blobs/here")
            .all(|(_, a)| a.as_deref() == Some("Basic c2VjcmV0")));
        assert_eq!(
            seen.iter().filter(|(p, _)| p == "/v2/r/blobs/here").count(),
            2
        );

        let e = get(&c, &reg, "blobs/file").unwrap_err().to_string();
        assert!(
            e.contains("file:///etc/passwd") && e.contains("only http and https"),
            "{e}"
        );
        // Plain HTTP to a host that is neither loopback nor insecure: refused before any
        // connection, and the query (a token, a signature) is not printed.
        let e = get(&c, &reg, "blobs/outside").unwrap_err().to_string();
        assert!(e.contains("plain HTTP to `192.0.2.1`"), "{e}");
        assert!(!e.contains("secret"), "{e}");
        let e = get(&c, &reg, "blobs/loop").unwrap_err().to_string();
        assert!(e.contains("more than 10 redirects"), "{e}");
        // Plain HTTP is followed to a host given with --insecure-registry.
        let insecure = Client::new(ClientOptions {
            insecure: vec!["192.0.2.1".into()],
            retry: RetryPolicy {
                attempts: 1,
                ..Default::default()
            },
            ..Default::default()
        });
        let resolved = insecure.redirect_target(
            &Site {
                registry: reg.clone(),
                repository: "r".into(),
                op: "t".into(),
            },
            &format!("http://{reg}/v2/r/blobs/outside"),
            "http://192.0.2.1/x",
        );
        assert_eq!(resolved.unwrap(), "http://192.0.2.1/x");
    }

    #[test]
    fn locations_resolve_like_rfc_3986_references() {
        let from = "https://r.example/v2/a/blobs/x?q=1";
        for (loc, want) in [
            ("https://cdn/x", "https://cdn/x"),
            ("HTTP://h/x", "HTTP://h/x"),
            ("//cdn/y", "https://cdn/y"),
            ("/v2/b", "https://r.example/v2/b"),
            ("y?z=1", "https://r.example/v2/a/blobs/y?z=1"),
        ] {
            assert_eq!(resolve_location(from, loc).unwrap(), want, "{loc}");
        }
        for loc in [
            "file:///etc/passwd",
            "ftp://h/x",
            "data:text/plain,x",
            "javascript:x",
        ] {
            assert!(resolve_location(from, loc).is_err(), "{loc}");
        }
        assert_eq!(scheme_and_authority("https://u:p@h/x"), None);
        assert_eq!(
            scheme_and_authority("HTTPS://h:1/x"),
            Some(("https", "h:1"))
        );
    }
}
