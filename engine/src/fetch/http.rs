//! `ADD <url>`: one GET, the body streamed into a temporary file and hashed (sha256) as it is
//! written. Redirects are followed here (at most `MAX_REDIRECTS`), by the registry client's
//! rule: to `https` anywhere, to plain `http` only on loopback and `--insecure-registry`
//! hosts. The body is taken as sent (`Accept-Encoding: identity`), never decoded.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use strata_cache::Digest;

use super::{limits, FetchError, FetchOptions};
use crate::registry::client::{
    redirect_location, resolve_location, scheme_and_authority, without_query, MAX_REDIRECTS,
};

/// A downloaded file: where it is (removed with its directory), its sha256 and size.
#[derive(Debug)]
pub struct Downloaded {
    pub path: PathBuf,
    pub digest: Digest,
    pub size: u64,
}

fn agent() -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .user_agent(concat!("strata/", env!("CARGO_PKG_VERSION")))
        .accept_encoding("identity")
        .max_redirects(0)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(120)))
        .timeout_per_read(Some(Duration::from_secs(120)))
        .build();
    ureq::Agent::new_with_config(config)
}

/// Whether `url` may be fetched: `https`, or `http` to a host plain HTTP is allowed to.
fn check_scheme(shown: &str, url: &str, opts: &FetchOptions) -> Result<(), FetchError> {
    match scheme_and_authority(url) {
        Some(("https", _)) => Ok(()),
        Some((_, authority)) if opts.plain_http_allowed(authority) => Ok(()),
        Some((_, authority)) => Err(FetchError::PlainHttp {
            url: shown.to_string(),
            host: authority.to_string(),
        }),
        None => Err(FetchError::Unreachable {
            url: shown.to_string(),
            message: "not an http(s) URL with a host".into(),
        }),
    }
}

/// Downloads `url` into a new file in `dir`. Nothing is left behind on error.
pub fn download(url: &str, opts: &FetchOptions, dir: &Path) -> Result<Downloaded, FetchError> {
    download_limited(url, opts, dir, limits::MAX_DOWNLOAD_BYTES)
}

pub(crate) fn download_limited(
    url: &str,
    opts: &FetchOptions,
    dir: &Path,
    limit: u64,
) -> Result<Downloaded, FetchError> {
    let shown = without_query(url).to_string();
    let unreachable = |message: String| FetchError::Unreachable {
        url: shown.clone(),
        message,
    };
    check_scheme(&shown, url, opts)?;
    let agent = agent();
    let mut current = url.to_string();
    let mut resp = None;
    for _ in 0..=MAX_REDIRECTS {
        let r = agent
            .get(&current)
            .call()
            .map_err(|e| unreachable(e.to_string()))?;
        match redirect_location(&r) {
            Some(loc) => {
                current = resolve_location(&current, &loc)
                    .map_err(|why| unreachable(format!("redirected to `{loc}`: {why}")))?;
                check_scheme(&shown, &current, opts)?;
            }
            None => {
                resp = Some(r);
                break;
            }
        }
    }
    let Some(resp) = resp else {
        return Err(unreachable(format!(
            "more than {MAX_REDIRECTS} redirects in a row"
        )));
    };
    let status = resp.status().as_u16();
    if !(200..300).contains(&status) {
        return Err(FetchError::Status { url: shown, status });
    }
    let io = |path: &Path, source| FetchError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = tempfile::Builder::new()
        .prefix("download-")
        .tempfile_in(dir)
        .map_err(|e| io(dir, e))?;
    let mut body = resp.into_body().into_reader().take(limit + 1);
    let mut h = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = body
            .read(&mut buf)
            .map_err(|e| unreachable(format!("the download broke off: {e}")))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        if size > limit {
            return Err(FetchError::TooLarge { url: shown, limit });
        }
        h.update(&buf[..n]);
        tmp.write_all(&buf[..n]).map_err(|e| io(tmp.path(), e))?;
    }
    tmp.flush().map_err(|e| io(tmp.path(), e))?;
    let (_, path) = tmp.keep().map_err(|e| io(dir, e.error))?;
    Ok(Downloaded {
        path,
        digest: Digest::from_bytes(h.finalize().into()),
        size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// Serves `body` with `status` to every connection until the listener is dropped.
    fn serve(status: &'static str, body: Vec<u8>) -> (String, std::thread::JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            // One request is enough for each test.
            if let Ok((mut s, _)) = l.accept() {
                let mut req = [0u8; 4096];
                let _ = s.read(&mut req);
                let _ = write!(
                    s,
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(&body);
            }
        });
        (format!("http://{addr}/dir/file.bin"), t)
    }

    #[test]
    fn downloads_hash_and_limit_and_report_status() {
        let dir = tempfile::tempdir().unwrap();
        let opts = FetchOptions::default();
        let (url, t) = serve("200 OK", b"hello".to_vec());
        let d = download(&url, &opts, dir.path()).unwrap();
        t.join().unwrap();
        assert_eq!(d.digest, Digest::of(b"hello"));
        assert_eq!(std::fs::read(&d.path).unwrap(), b"hello");

        let (url, t) = serve("404 Not Found", Vec::new());
        let e = download(&url, &opts, dir.path()).unwrap_err();
        t.join().unwrap();
        assert!(matches!(e, FetchError::Status { status: 404, .. }), "{e}");

        let (url, t) = serve("200 OK", vec![7u8; 100]);
        let e = download_limited(&url, &opts, dir.path(), 10).unwrap_err();
        t.join().unwrap();
        assert!(matches!(e, FetchError::TooLarge { .. }), "{e}");
        // Only the first download was kept.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

        let e = download("http://example.invalid/x", &opts, dir.path()).unwrap_err();
        assert!(matches!(e, FetchError::PlainHttp { .. }), "{e}");
        assert!(e.to_string().contains("--insecure-registry"), "{e}");
    }
}
