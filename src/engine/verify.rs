//! Queries read only files that match their commit records. Every session
//! reads local files through [`VerifiedStore`]: before the first read of a
//! committed file it hashes the whole file and compares size and hash with
//! what the commit recorded ([`crate::lake::check`]), so flipped bytes become
//! an error naming the file instead of silently changed values. A file passes
//! once per process, not per session: `run` opens several sessions over the
//! same files, and hashing each file once is enough. Files without a record
//! (commits from before records carried checks) are read as they are.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, LazyLock, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::object_store::path::Path;
use datafusion::object_store::{
    self, CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};
use futures::StreamExt;
use futures::stream::BoxStream;

use crate::lake::FileCheck;
use crate::lake::check::Hasher;

/// An object store that checks committed files before it serves their bytes.
#[derive(Debug)]
pub struct VerifiedStore {
    inner: Arc<dyn ObjectStore>,
    /// File name → (lake-relative path, record); run ids make names unique in a lake.
    expected: HashMap<String, (String, FileCheck)>,
}

/// Files already verified in this process, as (location, recorded hash).
static VERIFIED: LazyLock<Mutex<HashSet<(String, String)>>> = LazyLock::new(Mutex::default);

impl VerifiedStore {
    /// Serves `inner`, holding the files of `checks` (lake-relative path → record) to their records.
    pub fn new(inner: Arc<dyn ObjectStore>, checks: BTreeMap<String, FileCheck>) -> Self {
        let expected =
            checks.into_iter().filter_map(|(rel, c)| Some((rel.rsplit('/').next()?.to_string(), (rel, c)))).collect();
        VerifiedStore { inner, expected }
    }

    async fn verify(&self, location: &Path) -> object_store::Result<()> {
        let Some((rel, want)) = location.filename().and_then(|n| self.expected.get(n)) else {
            return Ok(());
        };
        let key = (location.to_string(), want.xxh3.clone());
        if !location.as_ref().ends_with(rel.as_str()) || VERIFIED.lock().expect("verified set lock").contains(&key) {
            return Ok(());
        }
        let mut stream = self.inner.get_opts(location, GetOptions::default()).await?.into_stream();
        let (mut h, mut bytes) = (Hasher::default(), 0u64);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            bytes += chunk.len() as u64;
            h.update(&chunk);
        }
        let xxh3 = h.hex();
        if bytes != want.bytes || xxh3 != want.xxh3 {
            let path = std::path::Path::new("/").join(location.as_ref());
            return Err(object_store::Error::Generic {
                store: "lake",
                source: format!(
                    "{}: damaged: {bytes} bytes with xxh3 {xxh3}, but its commit recorded {} bytes with xxh3 {}; \
                     run `credtrail lake check`, then restore the file or re-ingest its sources",
                    path.display(),
                    want.bytes,
                    want.xxh3
                )
                .into(),
            });
        }
        VERIFIED.lock().expect("verified set lock").insert(key);
        Ok(())
    }
}

impl fmt::Display for VerifiedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Verified({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for VerifiedStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        self.verify(location).await?;
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> object_store::Result<Vec<Bytes>> {
        self.verify(location).await?;
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> object_store::Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}
