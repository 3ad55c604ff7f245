//! The Parquet lake on disk, and the one commit protocol every writer uses.
//!
//! Layout under the lake root:
//!
//! ```text
//! events/date=YYYY-MM-DD/part-<run>-<n>.parquet   canonical events, sorted by credential, ts
//! alerts/date=YYYY-MM-DD/part-<run>-<n>.parquet   detector alerts (a rerun replaces a day's)
//! secret_exposures/part-<run>.parquet             secrets found (and redacted) at ingest
//! quarantine/<run>.jsonl                          records that could not be ingested
//! _ingest/commits/<run>.json                      one commit record per run
//! _ingest/lock                                    held while a run writes
//! ```
//!
//! A run stages every file as `<final>.tmp`, fsyncs it, then writes its commit
//! record atomically (the commit point), then renames the staged files into
//! place. On open, staged files named by a commit are rolled forward and any
//! others are deleted, so a crash at any moment leaves either the whole run or
//! none of it, and never a half-written Parquet file under a final name.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::{concat_batches, take_record_batch};
use arrow::datatypes::{SchemaRef, TimestampMillisecondType};
use arrow::row::{RowConverter, SortField};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use serde::{Deserialize, Serialize};

use crate::schema::col;
use crate::time::DAY_MS;

pub const EVENTS: &str = "events";
pub const ALERTS: &str = "alerts";
pub const QUARANTINE: &str = "quarantine";
pub const SECRET_EXPOSURES: &str = "secret_exposures";
const INGEST: &str = "_ingest";
const COMMITS: &str = "_ingest/commits";
const STAGED: &str = "tmp";

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
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> LakeError + '_ {
    move |source| LakeError::Io { path: path.to_path_buf(), source }
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
    /// same bytes followed by more (the log grew) resumes after them.
    #[serde(default)]
    pub lines: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Commit {
    pub run_id: String,
    pub committed_at: String,
    /// Lake-relative paths of the files this run added.
    pub files: Vec<String>,
    /// Lake-relative paths of files this run replaced (removed at commit).
    #[serde(default)]
    pub replaces: Vec<String>,
    pub sources: Vec<SourceRecord>,
}

/// A lake directory. Opening it takes no lock; [`Lake::begin`] does.
#[derive(Debug, Clone)]
pub struct Lake {
    root: PathBuf,
}

impl Lake {
    /// Opens (creating if needed) the lake at `root`.
    pub fn open(root: &Path) -> Result<Lake, LakeError> {
        for d in [EVENTS, ALERTS, QUARANTINE, SECRET_EXPOSURES, COMMITS] {
            let p = root.join(d);
            fs::create_dir_all(&p).map_err(io_err(&p))?;
        }
        Ok(Lake { root: root.to_path_buf() })
    }

    /// Opens an existing lake without creating anything (for readers).
    pub fn existing(root: &Path) -> Result<Lake, LakeError> {
        let events = root.join(EVENTS);
        if !events.is_dir() {
            return Err(LakeError::Io {
                path: root.to_path_buf(),
                source: io::Error::new(
                    io::ErrorKind::NotFound,
                    "not a credtrail lake (no events/ directory); create one with `credtrail ingest`",
                ),
            });
        }
        Ok(Lake { root: root.to_path_buf() })
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
                let text = fs::read_to_string(&p).map_err(io_err(&p))?;
                let c: Commit =
                    serde_json::from_str(&text).map_err(|source| LakeError::BadCommit { path: p.clone(), source })?;
                out.push(c);
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
        let commit = Commit {
            run_id: self.run_id.clone(),
            committed_at: crate::time::format_ms(chrono::Utc::now().timestamp_millis()),
            files,
            replaces: self.replaces.into_inner().expect("replace list lock"),
            sources,
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

fn sync_dir(dir: &Path) {
    // Best effort: makes renames durable on filesystems that need it.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Writer settings for every Parquet file of the lake: zstd, statistics on
/// every page so credential and time filters skip most of a file, and a bloom
/// filter for the request-id lookups that evidence links make.
pub fn writer_properties(bloom_columns: &[&str]) -> WriterProperties {
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).expect("zstd level 3 is valid")))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(128 * 1024))
        .set_created_by(format!("credtrail {}", env!("CARGO_PKG_VERSION")));
    for c in bloom_columns {
        b = b.set_column_bloom_filter_enabled((*c).into(), true);
    }
    b.build()
}

/// Writes `batches` as one staged Parquet file at the reserved `rel`.
pub fn write_parquet_staged(
    lake: &Lake,
    rel: &str,
    schema: SchemaRef,
    batches: &[RecordBatch],
    props: WriterProperties,
) -> Result<u64, LakeError> {
    let path = staged_path(lake, rel);
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    let file = File::create(&path).map_err(io_err(&path))?;
    let pq = |source| LakeError::Parquet { path: path.clone(), source };
    let mut w = ArrowWriter::try_new(BufWriter::with_capacity(1 << 20, file), schema, Some(props)).map_err(pq)?;
    let mut rows = 0;
    for b in batches {
        rows += b.num_rows() as u64;
        w.write(b).map_err(pq)?;
    }
    let buf = w.into_inner().map_err(pq)?;
    let file = buf.into_inner().map_err(|e| LakeError::Io { path: path.clone(), source: e.into_error() })?;
    file.sync_all().map_err(io_err(&path))?;
    Ok(rows)
}

/// Writes JSON lines as one staged file at the reserved `rel`.
pub fn write_jsonl_staged<T: Serialize>(lake: &Lake, rel: &str, rows: &[T]) -> Result<(), LakeError> {
    let path = staged_path(lake, rel);
    let file = File::create(&path).map_err(io_err(&path))?;
    let mut w = BufWriter::new(file);
    for r in rows {
        serde_json::to_writer(&mut w, r).map_err(|e| LakeError::Io { path: path.clone(), source: e.into() })?;
        w.write_all(b"\n").map_err(io_err(&path))?;
    }
    let file = w.into_inner().map_err(|e| LakeError::Io { path: path.clone(), source: e.into_error() })?;
    file.sync_all().map_err(io_err(&path))
}

/// Concatenates event batches and sorts them by (credential_id, ts), the
/// order that makes per-credential scans read contiguous row groups.
pub fn sort_events(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<RecordBatch, LakeError> {
    let arrow = |what: &str| {
        let what = what.to_string();
        move |source| LakeError::Arrow { what, source }
    };
    let all = concat_batches(schema, batches).map_err(arrow("concatenating event batches"))?;
    let keys =
        [col::CREDENTIAL_ID, col::TS].map(|c| all.column_by_name(c).expect("event batch has sort columns").clone());
    let conv = RowConverter::new(keys.iter().map(|k| SortField::new(k.data_type().clone())).collect())
        .map_err(arrow("sorting events"))?;
    let rows = conv.convert_columns(&keys).map_err(arrow("sorting events"))?;
    let mut idx: Vec<u32> = (0..all.num_rows() as u32).collect();
    idx.sort_unstable_by(|&a, &b| rows.row(a as usize).cmp(&rows.row(b as usize)));
    let indices = arrow::array::UInt32Array::from(idx);
    take_record_batch(&all, &indices).map_err(arrow("sorting events"))
}

/// Splits a batch of events by UTC day of `ts`, the lake's partition key.
pub fn split_by_day(batch: &RecordBatch) -> Result<Vec<(String, RecordBatch)>, LakeError> {
    let ts = batch.column_by_name(col::TS).expect("event batch has ts").as_primitive::<TimestampMillisecondType>();
    if ts.is_empty() {
        return Ok(Vec::new());
    }
    let day_no = |i: usize| ts.value(i).div_euclid(DAY_MS);
    let first = day_no(0);
    if (0..ts.len()).all(|i| day_no(i) == first) {
        return Ok(vec![(crate::time::day_of(ts.value(0)), batch.clone())]);
    }
    let mut groups: HashMap<i64, Vec<u32>> = HashMap::new();
    for i in 0..ts.len() {
        groups.entry(day_no(i)).or_default().push(i as u32);
    }
    let mut out: Vec<(String, RecordBatch)> = Vec::with_capacity(groups.len());
    for (day, idx) in groups {
        let indices = arrow::array::UInt32Array::from(idx);
        let part = take_record_batch(batch, &indices)
            .map_err(|source| LakeError::Arrow { what: "partitioning events by day".into(), source })?;
        out.push((crate::time::day_of(day * DAY_MS), part));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// The hive partition directory of a day.
pub fn events_partition(day: &str) -> String {
    format!("{EVENTS}/{}={day}", col::DATE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Event, EventBuilder, Lineage, event_schema};

    fn batch(ids: &[(&str, i64)]) -> RecordBatch {
        let mut b = EventBuilder::new();
        for (i, (id, ts)) in ids.iter().enumerate() {
            let e = Event { ts_ms: *ts, credential_id: (*id).into(), ..Default::default() };
            b.append(&e, Lineage { source: "gateway", source_file: "f" }, i as u64 + 1);
        }
        b.finish()
    }

    #[test]
    fn sorts_by_credential_then_time() {
        let s = event_schema();
        let b1 = batch(&[("b", 5), ("a", 9)]);
        let b2 = batch(&[("a", 1), ("b", 2)]);
        let sorted = sort_events(&s, &[b1, b2]).unwrap();
        let ts = sorted.column_by_name(col::TS).unwrap().as_primitive::<TimestampMillisecondType>();
        assert_eq!(ts.values().to_vec(), vec![1, 9, 2, 5]);
    }

    #[test]
    fn splits_across_midnight() {
        let day = DAY_MS;
        let b = batch(&[("a", day - 1), ("a", day), ("b", day + 5), ("c", 3)]);
        let parts = split_by_day(&b).unwrap();
        assert_eq!(
            parts.iter().map(|(d, b)| (d.as_str(), b.num_rows())).collect::<Vec<_>>(),
            vec![("1970-01-01", 2), ("1970-01-02", 2)]
        );
    }

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
}
