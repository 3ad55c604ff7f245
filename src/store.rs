//! Where a lake or an input lives: a local path (or `file://` URL), or an
//! object-store URL such as `s3://bucket/prefix`, opened through the
//! `object_store` crate DataFusion reads with.
//!
//! S3 takes the usual AWS configuration from the environment:
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
//! `AWS_REGION`, `AWS_ENDPOINT_URL` (an S3-compatible store) and
//! `AWS_ALLOW_HTTP=true` (a plain-http endpoint on loopback). Nothing here
//! prints or logs a credential: errors name the URL and what to do.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use url::Url;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{url}: not a URL credtrail can open ({reason}); use a local path, file:// or s3://bucket/prefix")]
    BadUrl { url: String, reason: String },
    #[error("{url}: the {scheme}:// scheme is not supported; use a local path, file:// or s3://bucket/prefix")]
    Unsupported { url: String, scheme: String },
    #[error("{url}: {source}; check AWS_REGION, AWS_ENDPOINT_URL and the credentials in the environment")]
    Config { url: String, source: object_store::Error },
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
        let bad = |reason: String| StoreError::BadUrl { url: text.to_string(), reason };
        let url = Url::parse(text).map_err(|e| bad(e.to_string()))?;
        match scheme {
            "file" => url.to_file_path().map(Location::Local).map_err(|()| bad("not an absolute file path".into())),
            "s3" | "s3a" => {
                let bucket = url.host_str().filter(|b| !b.is_empty()).ok_or_else(|| bad("no bucket".into()))?;
                let store = AmazonS3Builder::from_env()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_and_file_urls_are_local() {
        assert!(matches!(Location::parse("lake").unwrap(), Location::Local(p) if p == PathBuf::from("lake")));
        assert!(matches!(Location::parse("file:///tmp/lake").unwrap(), Location::Local(p) if p == PathBuf::from("/tmp/lake")));
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
}
