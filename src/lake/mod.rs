//! The Parquet lake (a directory, or a prefix on object storage), and the
//! one commit protocol every writer uses.
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
//! _ingest/lock                                       held while a run writes (a lease object on S3)
//! _ingest/staged/<run>/…                             object-store lakes: a run's files before they are in place
//! ```
//!
//! A run stages every file as `<final>.tmp`, fsyncs it, then writes its commit
//! record atomically (the commit point), then renames the staged files into
//! place. On open, staged files named by a commit are rolled forward and any
//! others are deleted, so a crash at any moment leaves either the whole run or
//! none of it, and never a half-written Parquet file under a final name.
//! A commit records each file's size, rows and hash; [`check`] verifies them.
//! A watcher commits all day long, so its micro-batches are folded
//! ([`Txn::commit_folded`]): each one's record also carries the checks of
//! the files every earlier folded record added and still in the lake, and
//! replaces those records. The lake keeps one folded record, not thousands,
//! and every file it holds keeps its check. Runs that write a day also
//! merge its small files ([`compact`]), so neither the files nor the checks
//! a folded record carries grow with the number of commits.
//!
//! A lake may also live on object storage (`--lake s3://bucket/prefix`, see
//! [`crate::store`]) with the same layout under the prefix, and every
//! command reads and writes it the same way. [`Lake::open`] is the one
//! opener (to write, or to read an existing lake) of either kind;
//! `storage` holds the few operations that differ (list, read, lock,
//! commit, recover), so no caller asks which kind it has. There is no rename
//! on S3, so there the protocol is ([`remote`], [`lease`]):
//!
//! - a run still writes its files locally, into a private scratch directory
//!   ([`staged_path`] points there), so every writer is unchanged;
//! - at commit each file is uploaded to `_ingest/staged/<run>/<rel>`,
//!   outside every table directory, so no reader lists it;
//! - the commit record is created with `PutMode::Create` (If-None-Match):
//!   the commit point, as the atomic write of the record is locally;
//! - then each staged object is copied (server-side) to its final key, the
//!   files the run replaces are deleted, and the staged objects are deleted.
//!   A reader listing during this copy window may see some of the run's
//!   files and not others, as a local reader may during the renames;
//! - `_ingest/lock` is a lease object instead of a file lock: created with
//!   If-None-Match, renewed with If-Match while the run lives, taken over by
//!   another writer only once it has gone unrenewed for 30 s;
//! - recovery, at [`Lake::begin`] under the lease, finishes the runs left
//!   under `_ingest/staged/` that have a commit record and deletes the rest.
//!
//! A watcher's delivery log is a file appended as alerts are delivered: on
//! an object-store lake it is kept in the scratch directory and the lines of
//! each micro-batch are committed with the next one as
//! `_stream/<name>/delivered/part-<run>-<n>.jsonl` (see `crate::stream`).
//! [`check`] reads either kind, downloading each object once.

pub mod check;
pub mod compact;
pub mod lease;
pub mod remote;
mod storage;
pub mod write;

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::store::{Location, Remote};
use storage::{Lock, Storage};

pub use check::FileCheck;
pub use write::{
    LakeWriter, QuarantineEntry, event_writer_properties, events_partition, sort_events, split_by_day,
    write_jsonl_staged, write_parquet_staged, writer_properties,
};

pub const EVENTS: &str = "events";
pub const ALERTS: &str = "alerts";
pub const QUARANTINE: &str = "quarantine";
pub const SECRET_EXPOSURES: &str = "secret_exposures";
const INGEST: &str = "_ingest";
/// The commit records, one `<run>.json` per run: what has changed in the lake since a listing of it.
pub const COMMITS: &str = "_ingest/commits";
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
    #[error("{url}: this run lost the lake's write lease ({why}); nothing of it was committed: run it again")]
    LeaseLost { url: String, why: String },
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
    /// A folded record also holds those its predecessors carried.
    #[serde(default)]
    pub checks: std::collections::BTreeMap<String, FileCheck>,
    /// A folded record ([`Txn::commit_folded`]): it stands for every earlier
    /// folded record, which it replaced. Read by older builds as a plain
    /// record, which means the same to them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub folded: bool,
}

/// How [`Lake::open`] opens a lake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Open {
    /// To write: creates an empty lake where there is none.
    Write,
    /// An existing lake (events/ present), created nowhere.
    Read,
}

/// A lake: a directory, or a prefix on object storage. Opening it takes no
/// lock; [`Lake::begin`] does.
#[derive(Debug, Clone)]
pub struct Lake {
    /// The directory; for an object-store lake, its URL (for messages only).
    root: PathBuf,
    storage: Storage,
}

impl Lake {
    /// Opens the lake at `root`: a path, `file://` or object-store URL.
    pub fn open(root: &Path, mode: Open) -> Result<Lake, LakeError> {
        match Location::parse(&root.to_string_lossy())? {
            Location::Local(root) => {
                match mode {
                    Open::Write => {
                        refuse_foreign(&root)?;
                        for d in [EVENTS, ALERTS, QUARANTINE, SECRET_EXPOSURES, COMMITS] {
                            let p = root.join(d);
                            fs::create_dir_all(&p).map_err(io_err(&p))?;
                        }
                    }
                    Open::Read if !root.join(EVENTS).is_dir() => {
                        refuse_foreign(&root)?;
                        return Err(LakeError::NoLake { path: root });
                    }
                    Open::Read => {}
                }
                Ok(Lake { storage: Storage::Dir(root.clone()), root })
            }
            Location::Remote(r) => {
                let root = PathBuf::from(r.url.as_str());
                Ok(Lake { root, storage: Storage::Objects(remote::Objects::open(r, mode == Open::Write)?) })
            }
        }
    }

    /// The object store and prefix of an object-store lake; `None` for a directory.
    pub fn remote(&self) -> Option<&Remote> {
        match &self.storage {
            Storage::Objects(o) => Some(&o.remote),
            Storage::Dir(_) => None,
        }
    }

    /// The URL DataFusion lists table directory `dir` at.
    pub fn table_url(&self, dir: &str) -> String {
        match self.remote() {
            Some(r) => remote::url_of(r, dir),
            None => format!("{}/", self.path(dir).display()),
        }
    }

    /// The names of the entries directly under lake directory `dir` (none if it is missing).
    pub fn subdirs(&self, dir: &str) -> Result<Vec<String>, LakeError> {
        self.storage.subdirs(dir)
    }

    /// The bytes of lake file `rel`, `None` if there is none.
    pub fn read(&self, rel: &str) -> Result<Option<Vec<u8>>, LakeError> {
        self.storage.read(rel)
    }

    /// Files (lake-relative) under `dir`, at any depth, named `*.ext`, with
    /// their last modification; sorted.
    pub fn list(&self, dir: &str, ext: &str) -> Result<Vec<(String, SystemTime)>, LakeError> {
        self.storage.list(dir, ext)
    }

    /// Where a file the lake keeps outside commits (a watcher's delivery log)
    /// lives on this machine: in place in a directory lake, in the scratch
    /// directory of an object-store lake (its lines are committed from there).
    pub fn local_path(&self, rel: &str) -> PathBuf {
        self.storage.local(rel)
    }

    /// The directory or URL given.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path of `rel`: on disk, or its URL (for messages) on object storage.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Every committed run, oldest first.
    pub fn commits(&self) -> Result<Vec<Commit>, LakeError> {
        let mut out = Vec::new();
        // A record gone between listing and reading was folded into a newer
        // one, which the listing may have missed: list again (a few times at
        // most, for a watcher committing every moment).
        for _ in 0..3 {
            out.clear();
            let mut folded_meanwhile = false;
            for (rel, _) in self.storage.list(COMMITS, "json")? {
                match self.storage.read(&rel)? {
                    Some(text) => out.push(parse_commit(&self.path(&rel), &text)?),
                    None => folded_meanwhile = true,
                }
            }
            if !folded_meanwhile {
                break;
            }
        }
        out.sort_by(|a, b| a.run_id.cmp(&b.run_id));
        Ok(out)
    }

    /// Starts a run: takes the lake's write lock (waiting for another run to
    /// finish), then repairs whatever a crashed run left behind.
    pub fn begin(&self) -> Result<Txn, LakeError> {
        let lock = self.storage.lock()?;
        let prior = self.commits()?;
        self.storage.recover(&prior)?;
        Ok(Txn {
            lake: self.clone(),
            prior,
            run_id: new_run_id(),
            staged: Mutex::new(Vec::new()),
            replaces: Mutex::new(Vec::new()),
            seq: AtomicU64::new(0),
            lock,
        })
    }
}

/// A run's unit of atomicity. Dropping it without [`Txn::commit`] leaves only
/// staged files, which the next [`Lake::begin`] removes.
pub struct Txn {
    lake: Lake,
    /// The commit records as the run began (under its lock, so still current at commit).
    prior: Vec<Commit>,
    run_id: String,
    staged: Mutex<Vec<String>>,
    replaces: Mutex<Vec<String>>,
    seq: AtomicU64,
    lock: Lock,
}

impl Txn {
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    pub fn lake(&self) -> &Lake {
        &self.lake
    }

    /// The lake's commit records as this run began, oldest first: read once,
    /// under the run's lock, so still current (a lake of a year of hourly
    /// runs holds thousands, and reading them again costs as much).
    pub fn commits(&self) -> &[Commit] {
        &self.prior
    }

    /// Reserves a new lake-relative path for a file this run will add.
    /// Safe to call from many writer threads at once.
    pub fn reserve(&self, dir: &str, ext: &str) -> String {
        let n = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let rel = format!("{dir}/part-{}-{n:05}.{ext}", self.run_id);
        self.staged.lock().expect("staged list lock").push(rel.clone());
        rel
    }

    /// How many files this run has reserved so far.
    fn staged_count(&self) -> usize {
        self.staged.lock().expect("staged list lock").len()
    }

    /// Marks committed files (lake-relative) to be removed when this run
    /// commits: how a rerun replaces its earlier output instead of adding to it.
    pub fn replace(&self, rels: impl IntoIterator<Item = String>) {
        self.replaces.lock().expect("replace list lock").extend(rels);
    }

    /// Commits every file staged under a reserved path. Nothing is visible
    /// under its final name before this returns.
    pub fn commit(self, sources: Vec<SourceRecord>) -> Result<Commit, LakeError> {
        self.commit_as(sources, false)
    }

    /// Commits like [`Txn::commit`] a run that takes no input files (a
    /// watcher's micro-batch), folding the earlier folded records into its
    /// own: a watcher commits thousands of times a day, and the lake keeps
    /// one record for all of them instead, with the check of every file they
    /// added that is still in place.
    pub fn commit_folded(self) -> Result<Commit, LakeError> {
        self.commit_as(Vec::new(), true)
    }

    fn commit_as(self, sources: Vec<SourceRecord>, folded: bool) -> Result<Commit, LakeError> {
        let storage = &self.lake.storage;
        let files: Vec<String> = self
            .staged
            .into_inner()
            .expect("staged list lock")
            .into_iter()
            .filter(|rel| storage.staged(rel).exists())
            .collect();
        let checks = files
            .iter()
            .map(|rel| Ok((rel.clone(), FileCheck::measure(&storage.staged(rel))?)))
            .collect::<Result<_, LakeError>>()?;
        let mut commit = Commit {
            version: COMMIT_VERSION,
            run_id: self.run_id.clone(),
            committed_at: crate::time::format_ms(chrono::Utc::now().timestamp_millis()),
            files,
            replaces: self.replaces.into_inner().expect("replace list lock"),
            sources,
            checks,
            folded,
        };
        let superseded = if folded { fold(&mut commit, &self.prior) } else { Vec::new() };
        let record = serde_json::to_vec_pretty(&commit).expect("commit serializes");
        storage.commit(&commit, record, &self.lock)?;
        // After the commit point: a crash before this leaves records the new one repeats, which is harmless.
        storage.remove(&superseded)?;
        Ok(commit)
    }
}

/// Folds the earlier folded records among `prior` into `c`, which then
/// stands for them: the lake's file checks (see [`check::checks_of`]) are the
/// same with `c` alone as with them and `c`. Returns their record paths.
fn fold(c: &mut Commit, prior: &[Commit]) -> Vec<String> {
    let (folded, kept): (Vec<&Commit>, Vec<&Commit>) = prior.iter().partition(|p| p.folded);
    let replaced: std::collections::HashSet<&String> =
        prior.iter().flat_map(|p| &p.replaces).chain(&c.replaces).collect();
    let named_by_kept: std::collections::HashSet<&String> = kept.iter().flat_map(|p| p.checks.keys()).collect();
    let mut carried = std::collections::BTreeMap::new();
    let mut still_replaced = Vec::new();
    for p in &folded {
        carried.extend(p.checks.iter().filter(|(rel, _)| !replaced.contains(rel)).map(|(r, k)| (r.clone(), k.clone())));
        // A kept record still names a file a folded one removed: that removal must outlive the folded record.
        still_replaced.extend(p.replaces.iter().filter(|r| named_by_kept.contains(r) && !c.replaces.contains(r)));
    }
    still_replaced.sort();
    still_replaced.dedup();
    c.replaces.extend(still_replaced.into_iter().cloned());
    c.checks.extend(carried);
    folded.iter().map(|p| format!("{COMMITS}/{}.json", p.run_id)).collect()
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

/// Committed files (lake-relative) under `dir` with extension `ext`, sorted.
pub fn committed_files(lake: &Lake, dir: &str, ext: &str) -> Result<Vec<String>, LakeError> {
    Ok(lake.list(dir, ext)?.into_iter().map(|(rel, _)| rel).collect())
}

/// The path a run writes reserved lake-relative path `rel` to until it
/// commits (its directory created).
pub fn staged_path(lake: &Lake, rel: &str) -> Result<PathBuf, LakeError> {
    let path = lake.storage.staged(rel);
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    Ok(path)
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
        let lake = Lake::open(dir.path(), Open::Write).unwrap();
        let b = batch(&[("a", 1)]);
        let rel;
        {
            let txn = lake.begin().unwrap();
            rel = txn.reserve(&events_partition("1970-01-01"), "parquet");
            write_parquet_staged(&lake, &rel, event_schema(), std::slice::from_ref(&b), writer_properties()).unwrap();
            // Dropped without commit: a crash.
        }
        assert!(staged_path(&lake, &rel).unwrap().exists());
        let txn = lake.begin().unwrap();
        assert!(!staged_path(&lake, &rel).unwrap().exists(), "recovery removes uncommitted files");
        drop(txn);

        let txn = lake.begin().unwrap();
        let rel2 = txn.reserve(&events_partition("1970-01-01"), "parquet");
        write_parquet_staged(&lake, &rel2, event_schema(), &[b], writer_properties()).unwrap();
        let c = txn.commit(vec![]).unwrap();
        assert_eq!(c.files, vec![rel2.clone()]);
        assert!(lake.path(&rel2).exists());
        assert_eq!(lake.commits().unwrap().len(), 1);

        // A crash between the commit record and the rename is rolled forward.
        fs::rename(lake.path(&rel2), staged_path(&lake, &rel2).unwrap()).unwrap();
        drop(lake.begin().unwrap());
        assert!(lake.path(&rel2).exists());
    }

    #[test]
    fn commit_records_before_versions_load_and_newer_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path(), Open::Write).unwrap();
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

    #[test]
    fn folded_commits_keep_one_record_and_every_live_files_check() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path(), Open::Write).unwrap();
        let add = |txn: &Txn, dir: &str| {
            let rel = txn.reserve(dir, "parquet");
            write_parquet_staged(&lake, &rel, event_schema(), &[batch(&[("a", 1)])], writer_properties()).unwrap();
            rel
        };
        // A kept run (ingest) adds an events file and an alerts file.
        let txn = lake.begin().unwrap();
        let (events, alerts) = (add(&txn, &events_partition("1970-01-01")), add(&txn, ALERTS));
        txn.commit(vec![]).unwrap();
        // Folded runs (a watcher's) replace that alerts file, then each other's.
        let txn = lake.begin().unwrap();
        let first = add(&txn, ALERTS);
        txn.replace([alerts.clone()]);
        txn.commit_folded().unwrap();
        let txn = lake.begin().unwrap();
        let (second, batch_file) = (add(&txn, ALERTS), add(&txn, &events_partition("1970-01-01")));
        txn.replace([first.clone()]);
        txn.commit_folded().unwrap();
        let txn = lake.begin().unwrap();
        let last = add(&txn, &events_partition("1970-01-02"));
        txn.commit_folded().unwrap();

        let commits = lake.commits().unwrap();
        assert_eq!(commits.iter().map(|c| c.folded).collect::<Vec<_>>(), vec![false, true]);
        // The kept record still names the replaced alerts file: the folded one keeps its removal.
        assert!(commits[1].replaces.contains(&alerts), "{:?}", commits[1].replaces);
        let live: Vec<String> = lake.file_checks().unwrap().into_keys().collect();
        let mut want = vec![events, second, batch_file, last];
        want.sort();
        assert_eq!(live, want);
        let r = check::check(&lake).unwrap();
        assert_eq!((r.files, r.recorded, r.bad.len()), (4, 4, 0), "{:?}", r.bad);
    }
}
