//! Where a lake or an input lives: a local path (or `file://` URL), or an
//! object-store URL such as `s3://bucket/prefix`, opened through the
//! `object_store` crate DataFusion reads with.
//!
//! S3 takes the usual AWS configuration from the environment:
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
//! `AWS_REGION`, `AWS_ENDPOINT_URL` (an S3-compatible store) and
//! `AWS_ALLOW_HTTP=true` (a plain-http endpoint on loopback), and from a
//! named profile of the AWS shared files ([`Profile`]) for what the
//! environment leaves unset. Nothing here prints or logs a credential:
//! errors name the URL and what to do.
//!
//! Reading and writing objects from synchronous code (ingest's rayon
//! workers, the lake's commits, called from async commands too) goes through
//! [`block_on`]: one small runtime of this module's own, so waiting works
//! from any thread, inside another runtime or not (a `Handle::block_on`
//! would panic inside main's runtime, where the lake's sync calls also run).
//! A store task that fails to finish is an error of the caller, not a panic.
//! [`ObjectReader`] streams an object's body as `std::io::Read`, never the
//! whole object.

use std::fmt;
use std::future::Future;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, mpsc};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, ObjectMeta, ObjectStore};
use url::Url;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{url}: not a URL credtrail can open ({reason}); use a local path, file:// or s3://bucket/prefix")]
    BadUrl { url: String, reason: String },
    #[error("{url}: the {scheme}:// scheme is not supported; use a local path, file:// or s3://bucket/prefix")]
    Unsupported { url: String, scheme: String },
    #[error("{url}: {source}; check AWS_REGION, AWS_ENDPOINT_URL and the credentials in the environment")]
    Config { url: String, source: object_store::Error },
    #[error(
        "{url}: credentials in a URL are refused (they would be recorded with what is read); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY instead"
    )]
    Userinfo { url: String },
    #[error("{url}: {message}; check the URL, AWS_ENDPOINT_URL and the credentials in the environment")]
    Request { url: String, message: String },
    #[error("{url}: no objects under this prefix")]
    Empty { url: String },
    #[error("object-store I/O could not run: {0}")]
    Runtime(String),
}

/// An object-store location: the store and the prefix inside it.
#[derive(Clone)]
pub struct Remote {
    /// The URL as given, for messages and for registering with DataFusion.
    pub url: Url,
    pub store: Arc<dyn ObjectStore>,
    /// The key prefix under the bucket (empty for the bucket's root).
    pub prefix: ObjectPath,
}

impl fmt::Debug for Remote {
    // The store's own Debug may show its configuration, credentials included.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Remote").field("url", &self.url.as_str()).finish_non_exhaustive()
    }
}

/// Where a lake or an input is.
#[derive(Debug, Clone)]
pub enum Location {
    Local(PathBuf),
    Remote(Remote),
}

impl Location {
    /// Reads a command-line location: `s3://…` is remote, `file://…` and
    /// anything without a scheme is a local path.
    pub fn parse(text: &str) -> Result<Location, StoreError> {
        let Some((scheme, _)) = text.split_once("://") else {
            return Ok(Location::Local(PathBuf::from(text)));
        };
        // `scheme://user:secret@host/…`: refused before anything echoes it.
        let authority = text[scheme.len() + 3..].split('/').next().unwrap_or("");
        if let Some((_, host)) = authority.rsplit_once('@') {
            let rest = &text[scheme.len() + 3 + authority.len()..];
            return Err(StoreError::Userinfo { url: format!("{scheme}://…@{host}{rest}") });
        }
        let bad = |reason: String| StoreError::BadUrl { url: text.to_string(), reason };
        let url = Url::parse(text).map_err(|e| bad(e.to_string()))?;
        match scheme {
            "file" => url.to_file_path().map(Location::Local).map_err(|()| bad("not an absolute file path".into())),
            "s3" | "s3a" => {
                let bucket = url.host_str().filter(|b| !b.is_empty()).ok_or_else(|| bad("no bucket".into()))?;
                let store = Profile::from_env(|k| std::env::var(k).ok())
                    .apply(AmazonS3Builder::from_env())
                    .with_bucket_name(bucket)
                    .build()
                    .map_err(|source| StoreError::Config { url: text.to_string(), source })?;
                let prefix = ObjectPath::parse(url.path().trim_matches('/')).map_err(|e| bad(e.to_string()))?;
                Ok(Location::Remote(Remote { url, store: Arc::new(store), prefix }))
            }
            other => Err(StoreError::Unsupported { url: text.to_string(), scheme: other.to_string() }),
        }
    }
}

/// What a named profile of the AWS shared files gives, read as the AWS CLI
/// reads them: static keys from `~/.aws/credentials` (`[name]`), region and
/// endpoint from `~/.aws/config` (`[profile name]`, or `[default]`), the
/// files moved by `AWS_SHARED_CREDENTIALS_FILE` and `AWS_CONFIG_FILE`. The
/// profile is `AWS_PROFILE`, else `default`; the environment's own values win,
/// as they do for the CLI. SSO and `credential_process` profiles hold no keys
/// here: export theirs (`aws configure export-credentials --format env`).
#[derive(Debug, Default, PartialEq)]
pub struct Profile {
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    session_token: Option<String>,
    region: Option<String>,
    endpoint: Option<String>,
}

impl Profile {
    /// The profile `env` names, with every value the environment already sets left out.
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Profile {
        let home = env("HOME").map(PathBuf::from);
        let file =
            |var: &str, default: &str| env(var).map(PathBuf::from).or_else(|| Some(home.as_ref()?.join(default)));
        let name = env("AWS_PROFILE").unwrap_or_else(|| "default".to_string());
        let read = |path: Option<PathBuf>, section: &str| {
            path.and_then(|p| std::fs::read_to_string(p).ok()).map(|t| ini_section(&t, section)).unwrap_or_default()
        };
        let credentials = read(file("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials"), &name);
        let config_section = if name == "default" { name.clone() } else { format!("profile {name}") };
        let config = read(file("AWS_CONFIG_FILE", ".aws/config"), &config_section);
        // A profile's keys go together: half from the environment, half from a file, signs nothing.
        let keys_from_file = env("AWS_ACCESS_KEY_ID").is_none() && env("AWS_SECRET_ACCESS_KEY").is_none();
        let unset = |var: &str| env(var).is_none();
        let get = |map: &Vec<(String, String)>, key: &str| map.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        Profile {
            access_key_id: get(&credentials, "aws_access_key_id").filter(|_| keys_from_file),
            secret_access_key: get(&credentials, "aws_secret_access_key").filter(|_| keys_from_file),
            session_token: get(&credentials, "aws_session_token").filter(|_| keys_from_file),
            region: get(&config, "region").filter(|_| unset("AWS_REGION") && unset("AWS_DEFAULT_REGION")),
            endpoint: get(&config, "endpoint_url").filter(|_| unset("AWS_ENDPOINT_URL") && unset("AWS_ENDPOINT")),
        }
    }

    fn apply(self, mut b: AmazonS3Builder) -> AmazonS3Builder {
        if let Some(v) = self.access_key_id {
            b = b.with_access_key_id(v);
        }
        if let Some(v) = self.secret_access_key {
            b = b.with_secret_access_key(v);
        }
        if let Some(v) = self.session_token {
            b = b.with_token(v);
        }
        if let Some(v) = self.region {
            b = b.with_region(v);
        }
        if let Some(v) = self.endpoint {
            b = b.with_endpoint(v);
        }
        b
    }
}

/// The `key = value` lines of section `[name]` of an INI text (the AWS
/// files' format: `#`/`;` comments; indented lines belong to a nested
/// setting such as `s3 =` and are skipped).
fn ini_section(text: &str, name: &str) -> Vec<(String, String)> {
    let mut inside = false;
    let mut out = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
            continue;
        }
        if let Some(section) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            inside = section.trim() == name;
        } else if inside
            && !line.starts_with(char::is_whitespace)
            && let Some((k, v)) = t.split_once('=')
        {
            out.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    out
}

impl Remote {
    /// The URL of an object in this store, as records name it.
    pub fn object_url(&self, key: &ObjectPath) -> String {
        format!("{}://{}/{key}", self.url.scheme(), self.url.host_str().unwrap_or(""))
    }

    /// The objects under the prefix (walked like a directory tree), sorted by
    /// key; or, when the prefix is one object's key, that object.
    pub fn list(&self) -> Result<Vec<ObjectMeta>, StoreError> {
        let (store, prefix) = (Arc::clone(&self.store), self.prefix.clone());
        let prefix = (!prefix.as_ref().is_empty()).then_some(prefix);
        let listed = block_on(async move {
            let mut found = Vec::new();
            let mut objects = store.list(prefix.as_ref());
            while let Some(meta) = objects.next().await {
                found.push(meta?);
            }
            if found.is_empty()
                && let Some(key) = prefix
            {
                match object_store::ObjectStoreExt::head(&*store, &key).await {
                    Ok(meta) => found.push(meta),
                    Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(found)
        })?;
        let mut found = listed.map_err(|e| self.request_error(&e))?;
        if found.is_empty() {
            return Err(StoreError::Empty { url: self.url.to_string() });
        }
        found.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(found)
    }

    /// Streams the object `meta` describes. With its ETag, only that version
    /// is read: an object replaced since it was listed fails, and is retried
    /// by a later run, rather than read under the old one's record.
    pub fn reader(&self, meta: &ObjectMeta) -> io::Result<ObjectReader> {
        let store = Arc::clone(&self.store);
        let (key, if_match) = (meta.location.clone(), meta.e_tag.clone());
        let got = block_on(async move { store.get_opts(&key, GetOptions { if_match, ..GetOptions::default() }).await })
            .map_err(io::Error::other)?;
        let stream = got.map_err(|e| io::Error::other(one_line(&e)))?.into_stream();
        Ok(ObjectReader { stream, buf: Bytes::new() })
    }

    /// One line naming the URL: what went wrong, never the configuration.
    pub fn request_error(&self, e: &object_store::Error) -> StoreError {
        StoreError::Request { url: self.url.to_string(), message: one_line(e) }
    }
}

/// An error and its causes on one line (the client's errors span several);
/// for an S3 error response, just its code and message.
pub fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    let tag = |text: &str, name: &str| {
        let start = text.find(&format!("<{name}>"))? + name.len() + 2;
        let len = text[start..].find(&format!("</{name}>"))?;
        Some(text[start..start + len].to_string())
    };
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let c_text = c.to_string();
        if !text.contains(&c_text) {
            text = format!("{text}: {c_text}");
        }
        cause = c.source();
    }
    if let (Some(code), Some(message)) = (tag(&text, "Code"), tag(&text, "Message")) {
        return format!("{code}: {message}");
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// An object's body as it arrives, read through `std::io::Read`.
pub struct ObjectReader {
    stream: BoxStream<'static, object_store::Result<Bytes>>,
    buf: Bytes,
}

impl Read for ObjectReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.buf.is_empty() {
            let mut stream = std::mem::replace(&mut self.stream, futures::stream::empty().boxed());
            let (next, stream) = block_on(async move { (stream.next().await, stream) }).map_err(io::Error::other)?;
            self.stream = stream;
            match next {
                None => return Ok(0),
                Some(Ok(bytes)) => self.buf = bytes,
                Some(Err(e)) => return Err(io::Error::other(one_line(&e))),
            }
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf.split_to(n));
        Ok(n)
    }
}

/// Runs `f` to completion on this module's runtime and waits for it here.
/// A task that panics (or a runtime that cannot start) is an error.
pub fn block_on<T: Send + 'static>(f: impl Future<Output = T> + Send + 'static) -> Result<T, StoreError> {
    static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    let rt = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("credtrail-store")
            .enable_all()
            .build()
            .map_err(|e| format!("starting its runtime: {e}"))
    });
    let rt = rt.as_ref().map_err(|e| StoreError::Runtime(e.clone()))?;
    let (tx, rx) = mpsc::sync_channel(1);
    rt.spawn(async move {
        let _ = tx.send(f.await);
    });
    // The sender is dropped unsent only when the task panicked.
    rx.recv().map_err(|_| StoreError::Runtime("an object-store task panicked".into()))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn a_profile_fills_what_the_environment_leaves_unset() {
        let dir = tempfile::tempdir().unwrap();
        let aws = dir.path().join(".aws");
        std::fs::create_dir(&aws).unwrap();
        std::fs::write(
            aws.join("credentials"),
            "[default]\naws_access_key_id = AKIADEFAULT\naws_secret_access_key = d\n\n\
             [ci]\n# the CI user\naws_access_key_id=AKIACI\naws_secret_access_key = s3cr3t\naws_session_token = t\n",
        )
        .unwrap();
        std::fs::write(
            aws.join("config"),
            "[default]\nregion = us-east-1\n[profile ci]\nregion = eu-west-1\ns3 =\n  addressing_style = path\n\
             endpoint_url = http://127.0.0.1:9000\n",
        )
        .unwrap();
        let home = dir.path().to_string_lossy().into_owned();
        let env = |vars: &'static [(&'static str, &'static str)]| {
            let home = home.clone();
            move |k: &str| {
                if k == "HOME" {
                    return Some(home.clone());
                }
                vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
            }
        };
        let ci = Profile::from_env(env(&[("AWS_PROFILE", "ci")]));
        let some = |s: &str| Some(s.to_string());
        assert_eq!(
            ci,
            Profile {
                access_key_id: some("AKIACI"),
                secret_access_key: some("s3cr3t"),
                session_token: some("t"),
                region: some("eu-west-1"),
                endpoint: some("http://127.0.0.1:9000"),
            }
        );
        assert_eq!(Profile::from_env(env(&[])).access_key_id, some("AKIADEFAULT"));
        // The environment's own keys and region win, whole.
        let envkeys =
            Profile::from_env(env(&[("AWS_PROFILE", "ci"), ("AWS_ACCESS_KEY_ID", "AKIAENV"), ("AWS_REGION", "x")]));
        assert_eq!((envkeys.access_key_id, envkeys.secret_access_key, envkeys.region), (None, None, None));
        assert_eq!(Profile::from_env(env(&[("AWS_PROFILE", "missing")])), Profile::default());
        assert_eq!(Profile::from_env(|_| None), Profile::default());
    }

    #[test]
    fn plain_paths_and_file_urls_are_local() {
        assert!(matches!(Location::parse("lake").unwrap(), Location::Local(p) if p == Path::new("lake")));
        assert!(
            matches!(Location::parse("file:///tmp/lake").unwrap(), Location::Local(p) if p == Path::new("/tmp/lake"))
        );
    }

    #[test]
    fn s3_urls_give_bucket_and_prefix() {
        let Location::Remote(r) = Location::parse("s3://org-trail/AWSLogs/123/").unwrap() else { panic!("remote") };
        assert_eq!(r.prefix.as_ref(), "AWSLogs/123");
        assert_eq!(r.url.host_str(), Some("org-trail"));
    }

    #[test]
    fn unknown_schemes_and_bucketless_urls_are_refused_by_name() {
        let e = Location::parse("ftp://host/x").unwrap_err().to_string();
        assert!(e.contains("ftp://") && e.contains("s3://bucket/prefix"), "{e}");
        assert!(Location::parse("s3:///prefix").is_err());
    }

    #[test]
    fn a_panicking_store_task_is_an_error_not_a_panic_of_the_caller() {
        assert_eq!(block_on(async { 7 }).unwrap(), 7);
        let e = block_on(async { panic!("boom") }).unwrap_err().to_string();
        assert!(e.contains("panicked"), "{e}");
        // The runtime survives it.
        assert_eq!(block_on(async { 8 }).unwrap(), 8);
    }

    #[test]
    fn credentials_in_a_url_are_refused_without_echoing_them() {
        for text in ["s3://AKIAEXAMPLE:hunter2@bucket/logs/", "s3://hunter2@bucket", "s3://a:hunter2@bucket/x@y"] {
            let e = Location::parse(text).unwrap_err().to_string();
            assert!(!e.contains("hunter2") && e.contains("bucket") && e.contains("AWS_SECRET_ACCESS_KEY"), "{e}");
        }
    }
}
