//! Planning a run: the inputs (directories walked for logs, object-store
//! prefixes listed the same way), their fingerprints, and for each whether to
//! skip it (already in the lake), resume it (it grew since) or ingest it whole.
//!
//! A file and an object follow one rule: its record is its name (canonical
//! path, or `s3://bucket/key`), size and modification time (the object's
//! Last-Modified) and an xxh3-128 of its bytes as stored (compressed or not).
//!
//! A file is fingerprinted here and read again to be ingested: the second read
//! comes from the page cache. An object is a request and a download each
//! time, so one small enough to hold ([`HELD_ONE`], within a [`Budget`]) is
//! not read here at all: the ingest fetches it once, and decides it then by
//! the same rules ([`Known::decide`]) from the bytes it holds.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use object_store::ObjectMeta;
use rayon::prelude::*;
use serde::Serialize;

use super::IngestError;
use crate::lake::{Commit, SourceRecord};
use crate::store::Remote;

/// File extensions picked up when walking a directory.
const LOG_EXTENSIONS: &[&str] = &["json", "jsonl", "ndjson", "log", "gz", "txt"];

/// Where an input's bytes are.
pub(super) enum Origin {
    File(PathBuf),
    Object(Remote, ObjectMeta),
    /// An object fetched whole ([`Input::fetch`]), and the room it takes.
    Held {
        bytes: bytes::Bytes,
        _lease: Lease,
    },
}

/// An input found on disk or in an object store.
pub(super) struct Input {
    pub(super) origin: Origin,
    pub(super) display: String,
    pub(super) size: u64,
    pub(super) mtime_ns: i128,
}

impl Input {
    /// Its bytes as stored, streamed.
    pub(super) fn open(&self) -> io::Result<Box<dyn Read + Send>> {
        Ok(match &self.origin {
            Origin::File(path) => Box::new(File::open(path)?),
            Origin::Object(remote, meta) => Box::new(remote.reader(meta)?),
            Origin::Held { bytes, .. } => Box::new(io::Cursor::new(bytes.clone())),
        })
    }

    /// The input with all its bytes in memory, read once; `None` when the
    /// budget has no room for it now.
    pub(super) fn fetch(&self, budget: &Budget) -> Option<io::Result<Input>> {
        let lease = budget.take(self.size)?;
        let mut bytes = Vec::with_capacity(self.size as usize);
        Some(self.open().and_then(|mut r| r.read_to_end(&mut bytes)).map(|_| Input {
            origin: Origin::Held { bytes: bytes.into(), _lease: lease },
            display: self.display.clone(),
            size: self.size,
            mtime_ns: self.mtime_ns,
        }))
    }

    /// The record of an input skipped as a copy ([`Plan::Copy`]): nothing read from it.
    pub(super) fn copy_record(&self, fingerprint: String) -> SourceRecord {
        SourceRecord {
            path: self.display.clone(),
            size: self.size,
            mtime_ns: self.mtime_ns,
            fingerprint,
            read: 0,
            ingested: 0,
            quarantined: 0,
            lines: None,
        }
    }

    /// Whether the ingest fetches this input once instead of the plan reading it.
    fn held(&self) -> bool {
        matches!(self.origin, Origin::Object(..)) && self.size <= HELD_ONE
    }
}

/// The most bytes one object may hold in memory, and all of a run's at a
/// time. CloudTrail's and Bedrock's delivery objects are far smaller; a
/// larger object, or one that finds the budget full, is read twice (once to
/// fingerprint it), as a file is.
const HELD_ONE: u64 = 64 << 20;
const HELD_ALL: u64 = 256 << 20;

/// Room for objects held in memory at once across a run's workers. Taken
/// without waiting: a worker blocked on it could hold up the very ingest
/// that would free it.
pub(super) struct Budget(Arc<AtomicU64>);

impl Budget {
    pub(super) fn new() -> Budget {
        Budget(Arc::new(AtomicU64::new(HELD_ALL)))
    }

    /// `n` bytes of it, or `None` when that much is not free now.
    fn take(&self, n: u64) -> Option<Lease> {
        let free = self.0.fetch_update(Ordering::AcqRel, Ordering::Acquire, |free| free.checked_sub(n));
        free.ok().map(|_| Lease(Arc::clone(&self.0), n))
    }
}

/// Bytes of a [`Budget`], given back when dropped.
pub(super) struct Lease(Arc<AtomicU64>, u64);

impl Drop for Lease {
    fn drop(&mut self) {
        self.0.fetch_add(self.1, Ordering::AcqRel);
    }
}

/// Whether a walked entry is taken as a log: by extension, and never a
/// hidden one, unless it was named itself.
fn is_log(name: &str, explicit: bool) -> bool {
    let ext = name.rsplit_once('.').map_or("", |(_, e)| e);
    explicit || (!name.starts_with('.') && LOG_EXTENSIONS.contains(&ext))
}

/// The objects under `remote`'s prefix taken as logs, by the rules of a
/// directory walk.
pub(super) fn list_objects(remote: &Remote) -> Result<Vec<Input>, IngestError> {
    let objects = remote.list()?;
    let inputs = objects
        .into_iter()
        .filter(|m| is_log(m.location.filename().unwrap_or(""), m.location == remote.prefix))
        .map(|meta| Input {
            display: remote.object_url(&meta.location),
            size: meta.size,
            mtime_ns: meta.last_modified.timestamp_nanos_opt().map_or(0, i128::from),
            origin: Origin::Object(remote.clone(), meta),
        })
        .collect();
    Ok(inputs)
}

/// A directory entry the walk could not take, and why.
#[derive(Debug, Clone, Serialize)]
pub struct SkippedEntry {
    pub path: String,
    pub reason: String,
}

/// The files under `inputs`, never descending into the lake itself (so
/// `ingest . --lake lake` does not ingest its own quarantine), and the
/// entries that could not be read: one bad entry (a dangling symlink, a
/// symlink loop, an unreadable directory) is reported, never fatal to the rest.
pub(super) fn collect_inputs(inputs: &[PathBuf], lake: &Path) -> Result<(Vec<Input>, Vec<SkippedEntry>), IngestError> {
    let mut files = Vec::new();
    let mut skipped = Vec::new();
    let mut seen = HashSet::new();
    let lake = lake.canonicalize().ok();
    for root in inputs {
        if !root.exists() {
            return Err(IngestError::MissingInput(root.clone()));
        }
        let walker = walkdir::WalkDir::new(root)
            .follow_links(true)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| lake.is_none() || e.path().canonicalize().ok() != lake);
        for entry in walker {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    let path = e.path().unwrap_or(root);
                    skipped.push(SkippedEntry { path: path.display().to_string(), reason: walk_error(path, &e) });
                    continue;
                }
            };
            if !entry.file_type().is_file() {
                continue;
            }
            let p = entry.path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if !is_log(name, entry.depth() == 0) {
                continue;
            }
            let found = p.canonicalize().and_then(|c| Ok((c, entry.metadata().map_err(io::Error::from)?)));
            let (canonical, meta) = match found {
                Ok(cm) => cm,
                Err(e) => {
                    skipped.push(SkippedEntry { path: p.display().to_string(), reason: e.to_string() });
                    continue;
                }
            };
            if !seen.insert(canonical.clone()) {
                continue;
            }
            let mtime_ns = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos() as i128);
            files.push(Input {
                display: canonical.to_string_lossy().into_owned(),
                origin: Origin::File(canonical),
                size: meta.len(),
                mtime_ns,
            });
        }
    }
    Ok((files, skipped))
}

/// Why the walk could not take `path`, said once and plainly.
fn walk_error(path: &Path, e: &walkdir::Error) -> String {
    if let Some(ancestor) = e.loop_ancestor() {
        return format!("symlink loop: points back to {}", ancestor.display());
    }
    let dangling = path.symlink_metadata().is_ok_and(|m| m.file_type().is_symlink()) && !path.exists();
    if dangling {
        let target = std::fs::read_link(path).map_or_else(|_| "?".into(), |t| t.display().to_string());
        return format!("dangling symlink: its target {target} does not exist");
    }
    e.io_error().map_or_else(|| e.to_string(), |io| format!("cannot read: {io}"))
}

/// xxh3-128 of an input's bytes, and of its first `prefix` bytes when asked
/// (to recognise a file that grew since it was ingested), in one read.
fn fingerprint(input: &Input, prefix: Option<u64>) -> io::Result<(String, Option<String>)> {
    if let Origin::Held { bytes, .. } = &input.origin {
        let cut = |n: u64| hex128(xxhash_rust::xxh3::xxh3_128(&bytes[..(n as usize).min(bytes.len())]));
        return Ok((cut(bytes.len() as u64), prefix.map(cut)));
    }
    let mut f = input.open()?;
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    let mut prefix_print = None;
    loop {
        let want = match prefix {
            Some(p) if prefix_print.is_none() => (p - done).min(buf.len() as u64) as usize,
            _ => buf.len(),
        };
        if want == 0 {
            prefix_print = Some(hex128(h.digest128()));
            continue;
        }
        let n = f.read(&mut buf[..want])?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        done += n as u64;
    }
    Ok((hex128(h.digest128()), prefix_print))
}

fn hex128(v: u128) -> String {
    format!("{v:032x}")
}

/// Where to pick up a JSON-lines file that grew since an earlier run.
#[derive(Debug, Clone, Copy)]
pub(super) struct Resume {
    pub(super) lines: u64,
}

/// What to do with one input.
pub(super) enum Plan {
    Skip,
    /// The same bytes as a source the lake already holds, under this name:
    /// skipped, and recorded (with the fingerprint) so that a rerun skips it
    /// by name, size and mtime without reading it again.
    Copy(String),
    Fail(String),
    /// Ingest, with the file's fingerprint, after the lines already taken if resuming.
    Ingest(String, Option<Resume>),
    /// An object to fetch once and decide then ([`Known::decide`]).
    Fetch,
}

/// What the lake's commits record of the sources they took.
pub(super) struct Known<'c> {
    paths: HashSet<(&'c str, u64, i128)>,
    prints: HashSet<&'c str>,
    /// The newest record of each path (later commits overwrite earlier ones).
    latest: HashMap<&'c str, &'c SourceRecord>,
}

impl<'c> Known<'c> {
    pub(super) fn new(commits: &'c [Commit]) -> Known<'c> {
        let sources = commits.iter().flat_map(|c| &c.sources);
        Known {
            paths: sources.clone().map(|s| (s.path.as_str(), s.size, s.mtime_ns)).collect(),
            prints: sources.clone().map(|s| s.fingerprint.as_str()).collect(),
            latest: sources.map(|s| (s.path.as_str(), s)).collect(),
        }
    }

    /// Decides an input by reading it: the same bytes as an earlier input
    /// under any name are skipped; a JSON-lines input whose beginning is
    /// exactly what an earlier run took of it resumes after it.
    pub(super) fn decide(&self, i: &Input) -> Plan {
        let prev = self.latest.get(i.display.as_str()).filter(|p| p.lines.is_some() && p.size < i.size);
        match fingerprint(i, prev.map(|p| p.size)) {
            Err(e) => Plan::Fail(format!("cannot read: {e}")),
            Ok((fp, _)) if self.prints.contains(fp.as_str()) => Plan::Copy(fp),
            Ok((fp, Some(prefix))) if prev.is_some_and(|p| p.fingerprint == prefix) => {
                Plan::Ingest(fp, prev.and_then(|p| p.lines).map(|lines| Resume { lines }))
            }
            Ok((fp, _)) => Plan::Ingest(fp, None),
        }
    }
}

/// Decides each input against what the lake's commits record. Skips what an
/// earlier run took: same path, size and mtime without reading it, otherwise
/// by [`Known::decide`]; an object small enough to hold is left to the ingest
/// to fetch and decide ([`Plan::Fetch`]).
pub(super) fn plan(inputs: Vec<Input>, known: &Known<'_>) -> Vec<(Input, Plan)> {
    inputs
        .into_par_iter()
        .map(|i| {
            let plan = if known.paths.contains(&(i.display.as_str(), i.size, i.mtime_ns)) {
                Plan::Skip
            } else if i.held() {
                Plan::Fetch
            } else {
                known.decide(&i)
            };
            (i, plan)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A held object's fingerprints are those of the same bytes read from
    /// a file: the records of both kinds meet (copies, resumes).
    #[test]
    fn held_bytes_fingerprint_as_a_streamed_file_does() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        // Longer than the streaming buffer, so the prefix falls inside a later read.
        let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let file = Input { origin: Origin::File(path), display: "a".into(), size: bytes.len() as u64, mtime_ns: 0 };
        let budget = Budget::new();
        let lease = budget.take(bytes.len() as u64).unwrap();
        let origin = Origin::Held { bytes: bytes.clone().into(), _lease: lease };
        let held = Input { origin, display: "a".into(), size: file.size, mtime_ns: 0 };
        for prefix in [None, Some(0), Some(10), Some(1 << 20), Some(2_500_000), Some(bytes.len() as u64)] {
            assert_eq!(fingerprint(&held, prefix).unwrap(), fingerprint(&file, prefix).unwrap(), "{prefix:?}");
        }
    }

    #[test]
    fn the_budget_lends_what_is_free_and_takes_it_back() {
        let budget = Budget::new();
        let a = budget.take(HELD_ALL - 10).unwrap();
        assert!(budget.take(11).is_none(), "never more than all");
        let b = budget.take(10).unwrap();
        assert!(budget.take(1).is_none());
        drop(a);
        assert!(budget.take(HELD_ALL - 10).is_some(), "a dropped lease frees its room");
        drop(b);
        assert!(budget.take(HELD_ALL).is_some());
    }
}
