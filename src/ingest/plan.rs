//! Planning a run: the inputs (directories walked for logs, object-store
//! prefixes listed the same way), their fingerprints, and for each whether to
//! skip it (already in the lake), resume it (it grew since) or ingest it whole.
//!
//! A file and an object follow one rule: its record is its name (canonical
//! path, or `s3://bucket/key`), size and modification time (the object's
//! Last-Modified) and an xxh3-128 of its bytes as stored (compressed or not).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

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
        })
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
    Fail(String),
    /// Ingest, with the file's fingerprint, after the lines already taken if resuming.
    Ingest(String, Option<Resume>),
}

/// Decides each input against what the lake's commits record. Skips what an
/// earlier run took: same path, size and mtime without reading it, otherwise
/// the same bytes under any name. A file whose beginning is exactly what an
/// earlier run took resumes after it.
pub(super) fn plan(inputs: Vec<Input>, commits: &[Commit]) -> Vec<(Input, Plan)> {
    let sources = commits.iter().flat_map(|c| &c.sources);
    let known_paths: HashSet<(&str, u64, i128)> =
        sources.clone().map(|s| (s.path.as_str(), s.size, s.mtime_ns)).collect();
    let known_prints: HashSet<&str> = sources.clone().map(|s| s.fingerprint.as_str()).collect();
    // Later commits overwrite earlier ones: the newest record of a path wins.
    let latest: HashMap<&str, &SourceRecord> = sources.map(|s| (s.path.as_str(), s)).collect();

    inputs
        .into_par_iter()
        .map(|i| {
            if known_paths.contains(&(i.display.as_str(), i.size, i.mtime_ns)) {
                return (i, Plan::Skip);
            }
            let prev = latest.get(i.display.as_str()).filter(|p| p.lines.is_some() && p.size < i.size);
            let plan = match fingerprint(&i, prev.map(|p| p.size)) {
                Err(e) => Plan::Fail(format!("cannot read: {e}")),
                Ok((fp, _)) if known_prints.contains(fp.as_str()) => Plan::Skip,
                Ok((fp, Some(prefix))) if prev.is_some_and(|p| p.fingerprint == prefix) => {
                    Plan::Ingest(fp, prev.and_then(|p| p.lines).map(|lines| Resume { lines }))
                }
                Ok((fp, _)) => Plan::Ingest(fp, None),
            };
            (i, plan)
        })
        .collect()
}
