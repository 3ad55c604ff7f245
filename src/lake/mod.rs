//! The Parquet lake on disk, and the one commit protocol every writer uses.
//! This module holds the layout, commits and recovery; [`write`] holds the
//! writers that stage a run's files.
//!
//! Layout under the lake root:
//!
//! ```text
//! events/date=YYYY-MM-DD/part-<run>-<n>.parquet      canonical events, sorted by credential, ts
//! alerts/date=YYYY-MM-DD/part-<run>-<n>.parquet      detector alerts (a rerun replaces a day's)
//! secret_exposures/part-<run>-<n>.parquet            secrets found (and redacted) at ingest
//! quarantine/part-<run>-<n>.jsonl                    records that could not be ingested
//! models/<table>/until=YYYY-MM-DD/part-<run>-<n>.parquet   baselines (see crate::baseline)
//! _stream/<name>/part-<run>-<n>.json                 a watcher's checkpoint (see crate::stream)
//! _stream/<name>/delivered.jsonl                     alerts a watcher's sinks delivered
//! _ingest/commits/<run>.json                         one commit record per run
//! _ingest/lock                                       held while a run writes
//! ```
//!
//! A run stages every file as `<final>.tmp`, fsyncs it, then writes its commit
//! record atomically (the commit point), then renames the staged files into
//! place. On open, staged files named by a commit are rolled forward and any
//! others are deleted, so a crash at any moment leaves either the whole run or
//! none of it, and never a half-written Parquet file under a final name.
//! A watcher forgets its commit records once done (they take no input files).
//! A commit records each file's size, rows and hash; [`check`] verifies them.
//!
//! A lake may also live on object storage (`--lake s3://bucket/prefix`, see
//! [`crate::store`]) with the same layout under the prefix. [`Lake::connect`]
//! opens either kind for reading, and [`remote`] lists an object-store lake's
//! commit records. There is no rename on S3, so the protocol above cannot
//! write there: [`Lake::open`] (every writer) refuses an object-store lake
//! with one line instead, and readers (sql, serve, report, eval) read it.

pub mod check;
pub mod remote;
pub mod write;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::store::{Location, Remote};

pub use check::FileCheck;
pub use write::{
    LakeWriter, QuarantineEntry, events_partition, sort_events, split_by_day, write_jsonl_staged, write_parquet_staged,
    writer_properties,
};

pub const EVENTS: &str = "events";
pub const ALERTS: &str = "alerts";
pub const QUARANTINE: &str = "quarantine";
pub const SECRET_EXPOSURES: &str = "secret_exposures";
const INGEST: &str = "_ingest";
const COMMITS: &str = "_ingest/commits";
const STAGED: &str = "tmp";
/// Top-level entries only a lake has: a directory holding any of them is a
/// lake (whatever version made it), and one holding none but other files is not.
const LAYOUT: &[&str] = &[EVENTS, ALERTS, QUARANTINE, SECRET_EXPOSURES, INGEST, "models", "_stream"];

#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: writing Parquet: {source}")]
    Parquet { path: PathBuf, source: parquet::errors::ParquetError },
    #[error("arranging rows for {what}: {source}")]
    Arrow { what: String, source: arrow::error::ArrowError },
    #[error("{path}: commit record is not valid: {source}")]
    BadCommit { path: PathBuf, source: serde_json::Error },
    #[error(
        "{path}: written by a newer credtrail (format version {found}, this one reads up to {known}); upgrade credtrail"
    )]
    NewerVersion { path: PathBuf, found: u32, known: u32 },
    #[error(
        "{path}: not a credtrail lake (found {entries} other entries and none of events/, _ingest/); pass an empty or new directory, or an existing lake"
    )]
    NotALake { path: PathBuf, entries: usize },
    #[error("{path}: not a credtrail lake (no events/ directory); create one with `credtrail ingest`")]
    NoLake { path: PathBuf },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("{url}: {message}; check that the bucket exists, AWS_ENDPOINT_URL and the credentials in the environment")]
    Remote { url: String, message: String },
    #[error(
        "{url}: {what} is not supported on an object-store lake yet; read it with sql, serve, report or eval, or use a local lake directory"
    )]
    RemoteUnsupported { url: String, what: &'static str },
    #[error(
        "{path}: inside the lake {lake}; the lake's own files are not inputs (its quarantine holds records already rejected): pass the original logs"
    )]
    InsideLake { path: PathBuf, lake: PathBuf },
}

/// The version of a versioned lake record written before records carried one.
pub fn version_1() -> u32 {
    1
}

/// Refuses a record a newer credtrail wrote in a format this one does not know.
pub fn check_version(path: &Path, found: u32, known: u32) -> Result<(), LakeError> {
    if found > known { Err(LakeError::NewerVersion { path: path.to_path_buf(), found, known }) } else { Ok(()) }
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> LakeError + '_ {
    move |source| LakeError::Io { path: path.to_path_buf(), source }
}

/// Refuses a directory that holds entries but none a lake has: a mistyped
/// `--lake` must not turn someone's directory into a lake.
fn refuse_foreign(root: &Path) -> Result<(), LakeError> {
    let names: Vec<_> = match fs::read_dir(root) {
        Ok(rd) => rd.map(|e| e.map(|e| e.file_name())).collect::<Result<_, _>>().map_err(io_err(root))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(LakeError::Io { path: root.to_path_buf(), source: e }),
    };
    // Hidden entries (.DS_Store, .git) and a fresh filesystem's lost+found
    // say nothing about what the directory is.
    let others = names.iter().filter(|n| !n.to_string_lossy().starts_with('.') && *n != "lost+found").count();
    if others > 0 && !names.iter().any(|n| LAYOUT.iter().any(|l| n == *l)) {
        return Err(LakeError::NotALake { path: root.to_path_buf(), entries: others });
    }
    Ok(())
}

/// Refuses `path` as an input when it lies in the lake at `root`: reading
/// the lake's own files back (its quarantine, say) would only copy them again.
pub fn refuse_inside(root: &Path, path: &Path) -> Result<(), LakeError> {
    let (Ok(lake), Ok(p)) = (root.canonicalize(), path.canonicalize()) else { return Ok(()) };
    if p.starts_with(&lake) {
        return Err(LakeError::InsideLake { path: path.to_path_buf(), lake: root.to_path_buf() });
    }
    Ok(())
}

/// What a run recorded about one input file, so a rerun can skip it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SourceRecord {
    pub path: String,
    pub size: u64,
    pub mtime_ns: i128,
    /// xxh3-128 of the file's bytes, hex.
    pub fingerprint: String,
    pub read: u64,
    pub ingested: u64,
    pub quarantined: u64,
    /// Lines consumed, for JSON-lines files: a later run that finds these
    /// same bytes followed by more (the log grew) resumes after them. A last
    /// line left pending (no newline, not yet whole) is not among them.
    #[serde(default)]
    pub lines: Option<u64>,
}

/// The format version of the commit records this build writes.
pub const COMMIT_VERSION: u32 = 2;

/// The record of one committed run, `_ingest/commits/<run>.json`.
///
/// `version` is [`COMMIT_VERSION`] when written; records from before it
/// existed read as 1. Bump it when older builds could misread a record (a
/// field removed, renamed or changing meaning); a new field with a serde
/// default needs no bump. A reader refuses a version newer than it knows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Commit {
    #[serde(default = "version_1")]
    pub version: u32,
    pub run_id: String,
    pub committed_at: String,
    /// Lake-relative paths of the files this run added.
    pub files: Vec<String>,
    /// Lake-relative paths of files this run replaced (removed at commit).
    #[serde(default)]
    pub replaces: Vec<String>,
    pub sources: Vec<SourceRecord>,
    /// Size, rows and hash of each added file; empty in records from before checks.
    #[serde(default)]
    pub checks: std::collections::BTreeMap<String, FileCheck>,
}

/// A lake directory (or, for readers, an object-store prefix). Opening it
/// takes no lock; [`Lake::begin`] does.
#[derive(Debug, Clone)]
pub struct Lake {
    /// The directory; for an object-store lake, its URL (for messages only).
    root: PathBuf,
    remote: Option<Remote>,
}

/// Where `root` (a path, `file://` or object-store URL) is: a local
/// directory, or `Err` naming what `what` cannot do on an object-store lake.
fn local_root(root: &Path, what: &'static str) -> Result<PathBuf, LakeError> {
    match Location::parse(&root.to_string_lossy())? {
        Location::Local(p) => Ok(p),
        Location::Remote(r) => Err(LakeError::RemoteUnsupported { url: r.url.to_string(), what }),
    }
}

impl Lake {
    /// Opens (creating if needed) the lake at `root`.
    pub fn open(root: &Path) -> Result<Lake, LakeError> {
        let root = &local_root(root, "writing (ingest, baseline, detect, run, watch)")?;
        refuse_foreign(root)?;
        for d in [EVENTS, ALERTS, QUARANTINE, SECRET_EXPOSURES, COMMITS] {
            let p = root.join(d);
            fs::create_dir_all(&p).map_err(io_err(&p))?;
        }
        Ok(Lake { root: root.to_path_buf(), remote: None })
    }

    /// Opens an existing lake without creating anything (for readers).
    pub fn existing(root: &Path) -> Result<Lake, LakeError> {
        let root = &local_root(root, "this command")?;
        let events = root.join(EVENTS);
        if !events.is_dir() {
            refuse_foreign(root)?;
            return Err(LakeError::NoLake { path: root.to_path_buf() });
        }
        Ok(Lake { root: root.to_path_buf(), remote: None })
    }

    /// Opens an existing lake for reading, local or on object storage.
    pub async fn connect(root: &Path) -> Result<Lake, LakeError> {
        match Location::parse(&root.to_string_lossy())? {
            Location::Local(p) => Lake::existing(&p),
            Location::Remote(r) => {
                remote::require_lake(&r).await?;
                Ok(Lake { root: PathBuf::from(r.url.as_str()), remote: Some(r) })
            }
        }
    }

    /// The object store and prefix of an object-store lake; `None` for a directory.
    pub fn remote(&self) -> Option<&Remote> {
        self.remote.as_ref()
    }

    /// The URL DataFusion lists table directory `dir` at.
    pub fn table_url(&self, dir: &str) -> String {
        match &self.remote {
            Some(r) => remote::url_of(r, dir),
            None => format!("{}/", self.path(dir).display()),
        }
    }

    /// The names of the entries directly under lake directory `dir` (none if it is missing).
    pub async fn subdirs(&self, dir: &str) -> Result<Vec<String>, LakeError> {
        if let Some(r) = &self.remote {
            return remote::subdirs(r, dir).await;
        }
        let path = self.path(dir);
        let entries = match fs::read_dir(&path) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(LakeError::Io { path, source: e }),
        };
        Ok(entries.flatten().filter_map(|e| e.file_name().to_str().map(str::to_string)).collect())
    }

    /// What the commits recorded about each live file, from either kind of lake.
    pub async fn checks(&self) -> Result<std::collections::BTreeMap<String, FileCheck>, LakeError> {
        match &self.remote {
            Some(r) => Ok(check::checks_of(&remote::commits(r).await?)),
            None => self.file_checks(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Every committed run, oldest first.
    pub fn commits(&self) -> Result<Vec<Commit>, LakeError> {
        let dir = self.root.join(COMMITS);
        let mut out = Vec::new();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => {
                return Err(LakeError::Io { path: dir, source: e });
            }
        };
        for entry in entries {
            let entry = entry.map_err(io_err(&dir))?;
            let p = entry.path();
            if p.extension().is_some_and(|e| e == "json") {
                let text = fs::read(&p).map_err(io_err(&p))?;
                out.push(parse_commit(&p, &text)?);
            }
        }
        out.sort_by(|a, b| a.run_id.cmp(&b.run_id));
        Ok(out)
    }

    /// Starts a run: takes the lake's write lock (waiting for another run to
    /// finish), then repairs whatever a crashed run left behind.
    pub fn begin(&self) -> Result<Txn, LakeError> {
        let lock_path = self.root.join(INGEST).join("lock");
        let lock =
            OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).map_err(io_err(&lock_path))?;
        lock.lock().map_err(io_err(&lock_path))?;
        self.recover()?;
        Ok(Txn {
            lake: self.clone(),
            run_id: new_run_id(),
            staged: Mutex::new(Vec::new()),
            replaces: Mutex::new(Vec::new()),
            seq: AtomicU64::new(0),
            _lock: lock,
        })
    }

    /// Rolls committed staged files forward and deletes uncommitted ones.
    fn recover(&self) -> Result<(), LakeError> {
        let commits = self.commits()?;
        for rel in commits.iter().flat_map(|c| &c.replaces) {
            remove_if_present(&self.root.join(rel))?;
        }
        let committed: std::collections::HashSet<String> = commits.into_iter().flat_map(|c| c.files).collect();
        for entry in walkdir::WalkDir::new(&self.root).into_iter().filter_map(Result::ok) {
            let p = entry.path();
            let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Some(final_name) = name.strip_suffix(&format!(".{STAGED}")) else {
                continue;
            };
            let final_path = p.with_file_name(final_name);
            let rel = final_path.strip_prefix(&self.root).unwrap_or(&final_path).to_string_lossy().replace('\\', "/");
            if committed.contains(&rel) {
                tracing::warn!(file = %rel, "completing a file of a run that crashed after its commit");
                fs::rename(p, &final_path).map_err(io_err(p))?;
            } else {
                tracing::warn!(file = %p.display(), "removing a staged file of a run that did not commit");
                fs::remove_file(p).map_err(io_err(p))?;
            }
        }
        Ok(())
    }
}

impl Lake {
    /// Drops the record of a finished commit that took no input files (a
    /// watcher's micro-batch): its files are in place and nothing is left for
    /// recovery to do with it, and a watcher commits thousands a day.
    pub fn forget(&self, c: &Commit) -> Result<(), LakeError> {
        if c.sources.is_empty() {
            remove_if_present(&self.root.join(COMMITS).join(format!("{}.json", c.run_id)))?;
        }
        Ok(())
    }
}

/// A run's unit of atomicity. Dropping it without [`Txn::commit`] leaves only
/// staged files, which the next [`Lake::begin`] removes.
pub struct Txn {
    lake: Lake,
    run_id: String,
    staged: Mutex<Vec<String>>,
    replaces: Mutex<Vec<String>>,
    seq: AtomicU64,
    _lock: File,
}

impl Txn {
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    pub fn lake(&self) -> &Lake {
        &self.lake
    }

    /// Reserves a new lake-relative path for a file this run will add.
    /// Safe to call from many writer threads at once.
    pub fn reserve(&self, dir: &str, ext: &str) -> String {
        let n = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let rel = format!("{dir}/part-{}-{n:05}.{ext}", self.run_id);
        self.staged.lock().expect("staged list lock").push(rel.clone());
        rel
    }

    /// Marks committed files (lake-relative) to be removed when this run
    /// commits: how a rerun replaces its earlier output instead of adding to it.
    pub fn replace(&self, rels: impl IntoIterator<Item = String>) {
        self.replaces.lock().expect("replace list lock").extend(rels);
    }

    /// Commits every file staged under a reserved path. Nothing is visible
    /// under its final name before this returns.
    pub fn commit(self, sources: Vec<SourceRecord>) -> Result<Commit, LakeError> {
        let root = self.lake.root.clone();
        let files: Vec<String> = self
            .staged
            .into_inner()
            .expect("staged list lock")
            .into_iter()
            .filter(|rel| root.join(format!("{rel}.{STAGED}")).exists())
            .collect();
        let checks = files
            .iter()
            .map(|rel| Ok((rel.clone(), FileCheck::measure(&root.join(format!("{rel}.{STAGED}")))?)))
            .collect::<Result<_, LakeError>>()?;
        let commit = Commit {
            version: COMMIT_VERSION,
            run_id: self.run_id.clone(),
            committed_at: crate::time::format_ms(chrono::Utc::now().timestamp_millis()),
            files,
            replaces: self.replaces.into_inner().expect("replace list lock"),
            sources,
            checks,
        };
        let path = root.join(COMMITS).join(format!("{}.json", self.run_id));
        let text = serde_json::to_vec_pretty(&commit).expect("commit serializes");
        write_atomic(&path, &text)?;
        for rel in &commit.files {
            let fin = root.join(rel);
            fs::rename(root.join(format!("{rel}.{STAGED}")), &fin).map_err(io_err(&fin))?;
        }
        for rel in &commit.replaces {
            remove_if_present(&root.join(rel))?;
        }
        sync_dir(&root.join(COMMITS));
        Ok(commit)
    }
}

/// Reads one commit record, refusing a version newer than this build knows.
fn parse_commit(path: &Path, text: &[u8]) -> Result<Commit, LakeError> {
    let c: Commit =
        serde_json::from_slice(text).map_err(|source| LakeError::BadCommit { path: path.to_path_buf(), source })?;
    check_version(path, c.version, COMMIT_VERSION)?;
    Ok(c)
}

fn remove_if_present(path: &Path) -> Result<(), LakeError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(LakeError::Io { path: path.to_path_buf(), source: e }),
        _ => Ok(()),
    }
}

/// Committed files (lake-relative) under `dir` with extension `ext`.
pub fn committed_files(lake: &Lake, dir: &str, ext: &str) -> Vec<String> {
    let mut out: Vec<String> = walkdir::WalkDir::new(lake.root.join(dir))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file() && e.path().extension().is_some_and(|x| x == ext))
        .filter_map(|e| e.path().strip_prefix(&lake.root).ok().map(|p| p.to_string_lossy().replace('\\', "/")))
        .collect();
    out.sort();
    out
}

/// The staged path of a reserved lake-relative path.
pub fn staged_path(lake: &Lake, rel: &str) -> PathBuf {
    lake.root.join(format!("{rel}.{STAGED}"))
}

fn new_run_id() -> String {
    // Sortable by time; the pid and nanos keep two runs in one second apart.
    let now = chrono::Utc::now();
    format!("{}-{:09}-{}", now.format("%Y%m%dT%H%M%SZ"), now.timestamp_subsec_nanos(), std::process::id())
}

/// Writes `bytes` to `path` so that a reader sees the old file or the whole new one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), LakeError> {
    let tmp = path.with_extension(format!("{}.{STAGED}", path.extension().and_then(|e| e.to_str()).unwrap_or("")));
    {
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
    }
    fs::rename(&tmp, path).map_err(io_err(path))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir);
    }
    Ok(())
}

pub(crate) fn sync_dir(dir: &Path) {
    // Best effort: makes renames durable on filesystems that need it.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::write::tests::batch;
    use super::*;
    use crate::schema::event_schema;

    #[test]
    fn uncommitted_run_leaves_nothing_and_committed_run_is_completed() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path()).unwrap();
        let b = batch(&[("a", 1)]);
        let rel;
        {
            let txn = lake.begin().unwrap();
            rel = txn.reserve(&events_partition("1970-01-01"), "parquet");
            write_parquet_staged(&lake, &rel, event_schema(), std::slice::from_ref(&b), writer_properties(&[]))
                .unwrap();
            // Dropped without commit: a crash.
        }
        assert!(staged_path(&lake, &rel).exists());
        let txn = lake.begin().unwrap();
        assert!(!staged_path(&lake, &rel).exists(), "recovery removes uncommitted files");
        drop(txn);

        let txn = lake.begin().unwrap();
        let rel2 = txn.reserve(&events_partition("1970-01-01"), "parquet");
        write_parquet_staged(&lake, &rel2, event_schema(), &[b], writer_properties(&[])).unwrap();
        let c = txn.commit(vec![]).unwrap();
        assert_eq!(c.files, vec![rel2.clone()]);
        assert!(lake.path(&rel2).exists());
        assert_eq!(lake.commits().unwrap().len(), 1);

        // A crash between the commit record and the rename is rolled forward.
        fs::rename(lake.path(&rel2), staged_path(&lake, &rel2)).unwrap();
        drop(lake.begin().unwrap());
        assert!(lake.path(&rel2).exists());
    }

    #[test]
    fn commit_records_before_versions_load_and_newer_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path()).unwrap();
        let written = lake.begin().unwrap().commit(vec![]).unwrap();
        assert_eq!(written.version, COMMIT_VERSION);
        let old = r#"{"run_id":"20250101T000000Z-000000000-1","committed_at":"2025-01-01T00:00:00Z","files":[],"sources":[]}"#;
        fs::write(lake.path(COMMITS).join("20250101T000000Z-000000000-1.json"), old).unwrap();
        let commits = lake.commits().unwrap();
        assert_eq!(commits.iter().map(|c| c.version).collect::<Vec<_>>(), vec![1, COMMIT_VERSION]);

        let future = old.replacen('{', &format!("{{\"version\":{},", COMMIT_VERSION + 1), 1);
        let path = lake.path(COMMITS).join("20990101T000000Z-000000000-1.json");
        fs::write(&path, future).unwrap();
        let err = lake.commits().unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()) && err.contains("upgrade credtrail"), "{err}");
    }
}
