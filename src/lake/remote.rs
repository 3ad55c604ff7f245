//! A lake on object storage: the same layout under the URL's prefix, reached
//! through the [`crate::store::Remote`] client, and the commit protocol that
//! replaces the local one's renames (see the module above for the why).
//!
//! A run's files are written locally, to a private scratch directory, as on
//! a directory lake; at commit each is uploaded (streamed, multipart when
//! large) to `_ingest/staged/<run>/<rel>`, outside every table directory,
//! next to an empty `_ingest/staged/<run>/_pending` marker. The commit
//! record is then created with `PutMode::Create` (If-None-Match): the commit
//! point. After it, each staged object is copied server-side to its final
//! key, the files the run replaces are deleted, and the staged objects
//! (marker last) are deleted. Recovery, under the lease, finds runs by
//! their leftovers under `_ingest/staged/` and finishes those with a record
//! or deletes those without one. Errors name the lake's URL and never the
//! store's configuration (it holds credentials).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use tokio::io::AsyncWriteExt;

use super::{COMMITS, Commit, LAYOUT, LakeError, lease::Lease};
use crate::store::{Remote, block_on, one_line};

/// Where a run's files wait for its commit: `_ingest/staged/<run>/<rel>`.
const STAGED: &str = "_ingest/staged";
/// The object that marks a run's staged objects as not yet finished.
const PENDING: &str = "_pending";
/// Uploads and copies in flight at once.
const PARALLEL: usize = 8;

/// An object-store lake and this process's scratch directory for it.
#[derive(Clone)]
pub struct Objects {
    pub remote: Remote,
    /// Where a run's files are written before they are uploaded; removed
    /// with the last handle on the lake.
    scratch: Arc<tempfile::TempDir>,
}

impl std::fmt::Debug for Objects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Objects").field("remote", &self.remote).finish_non_exhaustive()
    }
}

/// The key of lake-relative path `rel` under the lake's prefix.
fn key(r: &Remote, rel: &str) -> ObjectPath {
    r.prefix.parts().chain(ObjectPath::from(rel).parts()).collect()
}

/// The URL of lake directory `dir`, as DataFusion lists it.
pub fn url_of(r: &Remote, dir: &str) -> String {
    format!("s3://{}/{}/", r.url.host_str().unwrap_or_default(), key(r, dir))
}

impl Objects {
    /// Opens the lake at `remote`: an existing one (`create` false: the
    /// prefix holds the lake's layout, as a writer leaves it), or, to write,
    /// also an empty prefix; never a prefix holding other things.
    pub fn open(remote: Remote, create: bool) -> Result<Objects, LakeError> {
        let scratch = tempfile::Builder::new()
            .prefix("credtrail-lake-")
            .tempdir()
            .map_err(|source| LakeError::Io { path: std::env::temp_dir(), source })?;
        let o = Objects { remote, scratch: Arc::new(scratch) };
        let (store, root) = (o.store(), o.remote.prefix.clone());
        let root = (!root.as_ref().is_empty()).then_some(root);
        // One listing also tells a missing bucket or a dead endpoint, by URL.
        let names = o.run(async move {
            let listed = store.list_with_delimiter(root.as_ref()).await?;
            let names: Vec<String> = listed
                .common_prefixes
                .iter()
                .chain(listed.objects.iter().map(|m| &m.location))
                .filter_map(|p| p.filename().map(str::to_string))
                .collect();
            Ok(names)
        })?;
        let is_lake = names.iter().any(|n| LAYOUT.contains(&n.as_str()));
        if !create && !is_lake {
            return Err(LakeError::NoLake { path: o.url_path() });
        }
        if create && !names.is_empty() && !is_lake {
            return Err(LakeError::NotALake { path: o.url_path(), entries: names.len() });
        }
        Ok(o)
    }

    fn store(&self) -> Arc<dyn ObjectStore> {
        Arc::clone(&self.remote.store)
    }

    fn url_path(&self) -> PathBuf {
        PathBuf::from(self.remote.url.as_str())
    }

    pub fn key(&self, rel: &str) -> ObjectPath {
        key(&self.remote, rel)
    }

    /// The lake-relative path of `key`, if it lies under the lake's prefix.
    fn rel(&self, key: &ObjectPath) -> Option<String> {
        let mut parts = key.parts();
        for p in self.remote.prefix.parts() {
            if parts.next()? != p {
                return None;
            }
        }
        let rel: ObjectPath = parts.collect();
        Some(rel.to_string())
    }

    /// One line naming the lake's URL for a failed request.
    pub fn error(&self, e: &object_store::Error) -> LakeError {
        LakeError::Remote { url: self.remote.url.to_string(), message: one_line(e) }
    }

    /// Runs `f` on the store's runtime, its errors named by the lake's URL.
    pub fn run<T: Send + 'static>(
        &self,
        f: impl Future<Output = object_store::Result<T>> + Send + 'static,
    ) -> Result<T, LakeError> {
        block_on(f)?.map_err(|e| self.error(&e))
    }

    /// Objects under lake directory `dir` (at any depth) whose name ends in
    /// `.ext`: lake-relative path and last modification, sorted by path.
    pub fn list(&self, dir: &str, ext: &str) -> Result<Vec<(String, SystemTime)>, LakeError> {
        let (store, dir_key) = (self.store(), self.key(dir));
        let listed: Vec<_> = self.run(async move { store.list(Some(&dir_key)).try_collect().await })?;
        let mut out: Vec<(String, SystemTime)> = listed
            .into_iter()
            .filter(|m| m.location.extension() == Some(ext))
            .filter_map(|m| Some((self.rel(&m.location)?, m.last_modified.into())))
            .collect();
        out.sort();
        Ok(out)
    }

    /// The bytes of `rel`; `None` when there is no such object.
    pub fn read(&self, rel: &str) -> Result<Option<Vec<u8>>, LakeError> {
        let (store, k) = (self.store(), self.key(rel));
        self.run(async move {
            match store.get(&k).await {
                Ok(got) => Ok(Some(got.bytes().await?.to_vec())),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })
    }

    /// Streams `rel` into a file in the scratch directory (read once, never
    /// whole in memory), removed when the handle drops; `None` when there is
    /// no such object.
    pub fn download(&self, rel: &str) -> Result<Option<tempfile::TempPath>, LakeError> {
        let dir = self.scratch.path();
        let (file, path) = tempfile::NamedTempFile::new_in(dir)
            .map_err(|source| LakeError::Io { path: dir.into(), source })?
            .into_parts();
        let (store, k) = (self.store(), self.key(rel));
        let found = self.run(async move {
            let mut stream = match store.get(&k).await {
                Ok(got) => got.into_stream(),
                Err(object_store::Error::NotFound { .. }) => return Ok(false),
                Err(e) => return Err(e),
            };
            let local =
                |e: std::io::Error| object_store::Error::Generic { store: "scratch directory", source: e.into() };
            let mut file = tokio::fs::File::from_std(file);
            while let Some(chunk) = stream.next().await {
                file.write_all(&chunk?).await.map_err(local)?;
            }
            file.flush().await.map_err(local)?;
            Ok(true)
        })?;
        Ok(found.then_some(path))
    }

    /// The names of the "directories" (common prefixes) directly under lake directory `dir`.
    pub fn subdirs(&self, dir: &str) -> Result<Vec<String>, LakeError> {
        let (store, k) = (self.store(), self.key(dir));
        let listed = self.run(async move { store.list_with_delimiter(Some(&k)).await })?;
        Ok(listed.common_prefixes.iter().filter_map(|p| p.filename().map(str::to_string)).collect())
    }

    /// Deletes `rels` (those missing are no error).
    pub fn remove(&self, rels: &[String]) -> Result<(), LakeError> {
        let keys: Vec<ObjectPath> = rels.iter().map(|r| self.key(r)).collect();
        self.delete(keys)
    }

    fn delete(&self, keys: Vec<ObjectPath>) -> Result<(), LakeError> {
        let store = self.store();
        self.run(each(keys, move |k| {
            let store = Arc::clone(&store);
            async move {
                match store.delete(&k).await {
                    Err(object_store::Error::NotFound { .. }) => Ok(()),
                    r => r,
                }
            }
        }))
    }

    /// Where a run writes `rel` before it commits: in the scratch directory.
    pub fn staged_path(&self, rel: &str) -> PathBuf {
        self.scratch.path().join(rel)
    }

    /// Takes the lake's write lease (waiting for another writer's run).
    pub fn lock(&self) -> Result<Lease, LakeError> {
        Lease::acquire(self.clone(), self.key("_ingest/lock"))
    }

    /// The commit protocol's steps for `commit`, whose record is `record`.
    pub fn commit(&self, commit: &Commit, record: Vec<u8>, lease: &Lease) -> Result<(), LakeError> {
        let staged = |rel: &str| self.key(&format!("{STAGED}/{}/{rel}", commit.run_id));
        let pending = staged(PENDING);
        // The marker first: a crash from here on leaves something recovery finds.
        let store = self.store();
        self.run(async move { store.put(&pending, PutPayload::new()).await })?;
        let uploads: Vec<(PathBuf, ObjectPath)> =
            commit.files.iter().map(|rel| (self.staged_path(rel), staged(rel))).collect();
        self.upload(uploads)?;
        lease.check()?;
        let (store, record_key) = (self.store(), self.key(&format!("{COMMITS}/{}.json", commit.run_id)));
        self.run(async move {
            let opts = PutOptions { mode: PutMode::Create, ..PutOptions::default() };
            store.put_opts(&record_key, PutPayload::from(record), opts).await
        })?;
        stall_after_commit_record();
        self.finish(&commit.run_id, &commit.files, &commit.replaces)?;
        for rel in &commit.files {
            let _ = std::fs::remove_file(self.staged_path(rel));
        }
        Ok(())
    }

    /// Streams local files to their keys, several at once.
    fn upload(&self, files: Vec<(PathBuf, ObjectPath)>) -> Result<(), LakeError> {
        let (store, url) = (self.store(), self.remote.url.to_string());
        let done = block_on(each(files, move |(from, to)| {
            let store = Arc::clone(&store);
            async move {
                let failed = |e: std::io::Error| format!("uploading {}: {}", from.display(), one_line(&e));
                let mut file = tokio::fs::File::open(&from).await.map_err(failed)?;
                let mut w = object_store::buffered::BufWriter::new(store, to);
                match tokio::io::copy(&mut file, &mut w).await {
                    Ok(_) => w.shutdown().await.map_err(failed),
                    Err(e) => {
                        let _ = w.abort().await;
                        Err(failed(e))
                    }
                }
            }
        }))?;
        done.map_err(|message| LakeError::Remote { url, message })
    }

    /// After the commit point: copies the staged objects to their final
    /// keys, deletes what the run replaces, then its staged objects.
    fn finish(&self, run: &str, files: &[String], replaces: &[String]) -> Result<(), LakeError> {
        let staged = |rel: &str| self.key(&format!("{STAGED}/{run}/{rel}"));
        let copies: Vec<(ObjectPath, ObjectPath)> = files.iter().map(|rel| (staged(rel), self.key(rel))).collect();
        let store = self.store();
        self.run(each(copies, move |(from, to)| {
            let store = Arc::clone(&store);
            async move {
                match store.copy(&from, &to).await {
                    // Copied before a crash, and its staged object deleted.
                    Err(object_store::Error::NotFound { .. }) => Ok(()),
                    r => r,
                }
            }
        }))?;
        self.remove(replaces)?;
        self.delete(files.iter().map(|rel| staged(rel)).collect())?;
        self.delete(vec![staged(PENDING)])
    }

    /// Finishes runs that committed and removes what runs that did not left.
    pub fn recover(&self, commits: &[Commit]) -> Result<(), LakeError> {
        let (store, dir) = (self.store(), self.key(STAGED));
        let listed: Vec<_> = self.run(async move { store.list(Some(&dir)).try_collect().await })?;
        let mut runs: BTreeMap<String, Vec<ObjectPath>> = BTreeMap::new();
        for m in listed {
            let Some(rel) = self.rel(&m.location) else { continue };
            if let Some(run) = rel.strip_prefix(&format!("{STAGED}/")).and_then(|r| r.split('/').next()) {
                runs.entry(run.to_string()).or_default().push(m.location);
            }
        }
        let by_run: BTreeMap<&str, &Commit> = commits.iter().map(|c| (c.run_id.as_str(), c)).collect();
        for (run, keys) in runs {
            match by_run.get(run.as_str()) {
                Some(c) => {
                    tracing::warn!(run = %run, "completing a run that crashed after its commit");
                    self.finish(&run, &c.files, &c.replaces)?;
                }
                None => {
                    tracing::warn!(run = %run, "removing the staged objects of a run that did not commit");
                    // The marker last, so a crash here is found again.
                    let (marker, rest): (Vec<_>, Vec<_>) =
                        keys.into_iter().partition(|k| k.filename() == Some(PENDING));
                    self.delete(rest)?;
                    self.delete(marker)?;
                }
            }
        }
        Ok(())
    }
}

/// Runs that crashed after their record are the roll-forward case: a debug
/// build can be told to wait here (`CREDTRAIL_TEST_STALL_AFTER_COMMIT_MS`)
/// so a test kills it at exactly this point. Release builds have no hook.
fn stall_after_commit_record() {
    #[cfg(debug_assertions)]
    if let Some(ms) = std::env::var("CREDTRAIL_TEST_STALL_AFTER_COMMIT_MS").ok().and_then(|v| v.parse().ok()) {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

/// Runs `f` on every item, [`PARALLEL`] at a time; the first error ends it.
async fn each<T, E, Fut>(items: Vec<T>, f: impl FnMut(T) -> Fut) -> Result<(), E>
where
    Fut: Future<Output = Result<(), E>>,
{
    futures::stream::iter(items).map(f).buffer_unordered(PARALLEL).try_collect::<Vec<()>>().await.map(|_| ())
}
