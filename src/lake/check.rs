//! Integrity of the lake's data files. Every commit records, for each file it
//! adds, its size, row count and an xxh3-128 of its bytes ([`FileCheck`]).
//! [`check`] holds every data file to its record and decodes every page of
//! every Parquet file; the engine verifies the same record before a query
//! reads a file (see `crate::engine`).
//!
//! The parquet crate this build uses does not write page CRCs, so the
//! whole-file hash is what turns flipped bytes into an error. A watcher's
//! micro-batches keep their checks in the one folded record that stands for
//! them (see [`super::Txn::commit_folded`]); files committed before records
//! carried checks (or by a watcher of a build that dropped its records) are
//! only decoded.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};

use super::{ALERTS, Commit, EVENTS, Lake, LakeError, QUARANTINE, SECRET_EXPOSURES, committed_files, io_err};

/// The directories holding data files (the tables the engine reads).
const DATA_DIRS: &[&str] = &[EVENTS, ALERTS, SECRET_EXPOSURES, QUARANTINE, "models"];

/// What a commit recorded about one file it added.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileCheck {
    pub bytes: u64,
    /// Rows of a Parquet file, lines of a JSON-lines file.
    pub rows: u64,
    /// xxh3-128 of the file's bytes, hex.
    pub xxh3: String,
}

impl FileCheck {
    /// Measures the file at `path` (a staged file about to be committed).
    pub fn measure(path: &Path) -> Result<FileCheck, LakeError> {
        let (bytes, xxh3, lines) = hash_file(path).map_err(io_err(path))?;
        let rows = if is_parquet(path) { parquet_rows(path)? } else { lines };
        Ok(FileCheck { bytes, rows, xxh3 })
    }
}

/// A streaming xxh3-128 of some bytes, for files read in pieces.
#[derive(Default)]
pub struct Hasher(xxhash_rust::xxh3::Xxh3);

impl Hasher {
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The hash as a [`FileCheck`] records it.
    pub fn hex(&self) -> String {
        format!("{:032x}", self.0.digest128())
    }
}

/// Size, xxh3-128 and newline count of a file, in one read.
fn hash_file(path: &Path) -> io::Result<(u64, String, u64)> {
    let mut f = File::open(path)?;
    let mut h = Hasher::default();
    let (mut bytes, mut lines) = (0u64, 0u64);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok((bytes, h.hex(), lines));
        }
        h.update(&buf[..n]);
        bytes += n as u64;
        lines += memchr::memchr_iter(b'\n', &buf[..n]).count() as u64;
    }
}

fn is_parquet(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "parquet") || path.to_string_lossy().ends_with(".parquet.tmp")
}

/// The row count a Parquet file's footer declares.
pub(super) fn parquet_rows(path: &Path) -> Result<u64, LakeError> {
    let f = File::open(path).map_err(io_err(path))?;
    let b = ParquetRecordBatchReaderBuilder::try_new(f)
        .map_err(|source| LakeError::Parquet { path: path.to_path_buf(), source })?;
    Ok(b.metadata().file_metadata().num_rows().max(0) as u64)
}

/// Decodes every page of a Parquet file; the rows it holds.
fn decode_all(path: &Path) -> Result<u64, String> {
    let f = File::open(path).map_err(|e| e.to_string())?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(f).and_then(|b| b.build()).map_err(|e| e.to_string())?;
    let mut rows = 0;
    for batch in reader {
        rows += batch.map_err(|e| e.to_string())?.num_rows() as u64;
    }
    Ok(rows)
}

/// One file that failed its check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadFile {
    pub path: PathBuf,
    pub reason: String,
}

/// What [`check`] found.
#[derive(Debug, Default)]
pub struct CheckReport {
    /// Files examined: every data file, and every other file a commit recorded.
    pub files: usize,
    /// Of those, files held to a commit record (the rest were only decoded).
    pub recorded: usize,
    pub bad: Vec<BadFile>,
}

impl Lake {
    /// The recorded check of every committed data file still in place
    /// (lake-relative path → check); files a later run replaced are left out.
    pub fn file_checks(&self) -> Result<BTreeMap<String, FileCheck>, LakeError> {
        Ok(checks_of(&self.commits()?))
    }
}

/// The records of the files `commits` left live: added and not replaced since.
pub fn checks_of(commits: &[Commit]) -> BTreeMap<String, FileCheck> {
    let mut out: BTreeMap<String, FileCheck> = commits.iter().flat_map(|c| c.checks.clone()).collect();
    for rel in commits.iter().flat_map(|c| &c.replaces) {
        out.remove(rel);
    }
    out
}

/// Verifies every data file of `lake` (and every other file a commit
/// recorded) against its commit record and decodes every page of every
/// Parquet file. An object-store lake's objects are each downloaded once.
pub fn check(lake: &Lake) -> Result<CheckReport, LakeError> {
    let mut expected = lake.file_checks()?;
    let mut report = CheckReport::default();
    let mut rels = BTreeSet::new();
    for d in DATA_DIRS {
        rels.extend(committed_files(lake, d, "parquet")?);
        rels.extend(committed_files(lake, d, "jsonl")?);
    }
    // Recorded files outside the tables too (a watcher's checkpoint), and those gone.
    rels.extend(expected.keys().cloned());
    let mut missing = Vec::new();
    for rel in rels {
        let record = expected.remove(&rel);
        let reason = match lake.storage.fetch(&rel)? {
            Some(file) => problem(file.path(), is_parquet(Path::new(&rel)), record.as_ref()),
            // Listed, then replaced by a run since: no longer the lake's.
            None if record.is_none() => continue,
            None => {
                missing.push(rel);
                continue;
            }
        };
        report.files += 1;
        report.recorded += usize::from(record.is_some());
        if let Some(reason) = reason {
            report.bad.push(BadFile { path: lake.path(&rel), reason });
        }
    }
    if !missing.is_empty() {
        // A run (a watcher, every moment) may have replaced them since the records were read.
        let now = lake.file_checks()?;
        for rel in missing.into_iter().filter(|rel| now.contains_key(rel)) {
            report.files += 1;
            report.recorded += 1;
            report.bad.push(BadFile { path: lake.path(&rel), reason: "missing: a commit record names it".into() });
        }
    }
    report.bad.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(report)
}

/// Whether the file at `path` still has the size and hash its commit
/// recorded: its line count if so, else why not.
pub(super) fn verify(path: &Path, want: &FileCheck) -> Result<u64, String> {
    let (bytes, xxh3, lines) = hash_file(path).map_err(|e| format!("unreadable: {e}"))?;
    if bytes != want.bytes {
        return Err(format!("{bytes} bytes, its commit recorded {}", want.bytes));
    }
    if xxh3 != want.xxh3 {
        return Err(format!("content changed since commit (xxh3 {xxh3}, recorded {})", want.xxh3));
    }
    Ok(lines)
}

/// Why the file at `path` (a Parquet file if `parquet`) fails its check, if it does.
fn problem(path: &Path, parquet: bool, record: Option<&FileCheck>) -> Option<String> {
    // Rows counted from the content: decoded for Parquet, lines for JSON lines.
    let mut counted = None;
    if let Some(want) = record {
        match verify(path, want) {
            Ok(lines) => counted = Some(lines),
            Err(reason) => return Some(reason),
        }
    }
    if parquet {
        match decode_all(path) {
            Ok(n) => counted = Some(n),
            Err(e) => return Some(format!("a page does not decode: {e}")),
        }
    }
    match (record, counted) {
        (Some(want), Some(got)) if got != want.rows => Some(format!("{got} rows, its commit recorded {}", want.rows)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lake::write::tests::batch;
    use crate::lake::{events_partition, write_parquet_staged, writer_properties};
    use crate::schema::event_schema;

    /// A lake with one committed events file; its path.
    fn lake_with_file(dir: &Path) -> (Lake, PathBuf) {
        let lake = Lake::open(dir, super::super::Open::Write).unwrap();
        let txn = lake.begin().unwrap();
        let rel = txn.reserve(&events_partition("1970-01-01"), "parquet");
        let rows: Vec<(&str, i64)> = (0..200).map(|i| (if i % 2 == 0 { "a" } else { "b" }, i)).collect();
        write_parquet_staged(&lake, &rel, event_schema(), &[batch(&rows)], writer_properties()).unwrap();
        let c = txn.commit(vec![]).unwrap();
        assert_eq!(c.checks[&rel].rows, 200);
        (lake.clone(), lake.path(&rel))
    }

    #[test]
    fn a_clean_lake_checks_clean_and_a_changed_byte_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let (lake, path) = lake_with_file(dir.path());
        let r = check(&lake).unwrap();
        assert_eq!((r.files, r.recorded, r.bad.len()), (1, 1, 0), "{:?}", r.bad);

        let mut bytes = std::fs::read(&path).unwrap();
        bytes[8] ^= 0x40;
        std::fs::write(&path, bytes).unwrap();
        let r = check(&lake).unwrap();
        assert_eq!(r.bad.len(), 1);
        assert_eq!(r.bad[0].path, path);
        assert!(r.bad[0].reason.contains("content changed"), "{}", r.bad[0].reason);

        std::fs::remove_file(&path).unwrap();
        let r = check(&lake).unwrap();
        assert!(r.bad[0].reason.starts_with("missing"), "{:?}", r.bad);
    }

    #[test]
    fn commits_without_checks_still_load_and_their_files_are_decoded() {
        let dir = tempfile::tempdir().unwrap();
        let (lake, path) = lake_with_file(dir.path());
        let commits = lake.path(super::super::COMMITS);
        for e in std::fs::read_dir(&commits).unwrap() {
            let p = e.unwrap().path();
            let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
            v.as_object_mut().unwrap().remove("checks");
            std::fs::write(&p, v.to_string()).unwrap();
        }
        let r = check(&lake).unwrap();
        assert_eq!((r.files, r.recorded, r.bad.len()), (1, 0, 0));
        // Cutting the file short breaks its footer: found by decoding alone.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 9]).unwrap();
        let r = check(&lake).unwrap();
        assert!(r.bad[0].reason.contains("does not decode"), "{:?}", r.bad);
    }
}
