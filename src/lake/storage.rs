//! The few operations in which a directory lake and an object-store lake
//! differ; everything else in [`super`] is written once over these.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::lease::Lease;
use super::remote::Objects;
use super::{COMMITS, Commit, INGEST, LakeError, STAGED, io_err, remove_if_present, sync_dir, write_atomic};

#[derive(Debug, Clone)]
pub(super) enum Storage {
    /// A directory: the lake's root.
    Dir(PathBuf),
    Objects(Objects),
}

/// A lake file on this machine ([`Storage::fetch`]); a downloaded copy is removed on drop.
pub(super) enum Fetched {
    InPlace(PathBuf),
    Copy(tempfile::TempPath),
}

impl Fetched {
    pub fn path(&self) -> &Path {
        match self {
            Fetched::InPlace(p) => p,
            Fetched::Copy(t) => t,
        }
    }
}

/// The lake's write lock while a run holds it.
pub(super) enum Lock {
    File(#[allow(dead_code)] File),
    // Boxed: a lease is a few hundred bytes, a file lock a descriptor.
    Lease(Box<Lease>),
}

impl Storage {
    pub fn list(&self, dir: &str, ext: &str) -> Result<Vec<(String, SystemTime)>, LakeError> {
        let root = match self {
            Storage::Objects(o) => return o.list(dir, ext),
            Storage::Dir(root) => root,
        };
        let mut out: Vec<(String, SystemTime)> = walkdir::WalkDir::new(root.join(dir))
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file() && e.path().extension().is_some_and(|x| x == ext))
            .filter_map(|e| {
                let rel = e.path().strip_prefix(root).ok()?.to_string_lossy().replace('\\', "/");
                Some((rel, e.metadata().ok()?.modified().ok()?))
            })
            .collect();
        out.sort();
        Ok(out)
    }

    pub fn read(&self, rel: &str) -> Result<Option<Vec<u8>>, LakeError> {
        match self {
            Storage::Objects(o) => o.read(rel),
            Storage::Dir(root) => {
                let path = root.join(rel);
                match fs::read(&path) {
                    Ok(b) => Ok(Some(b)),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(LakeError::Io { path, source: e }),
                }
            }
        }
    }

    /// `rel` as a file on this machine, to read whole: in place in a
    /// directory, downloaded once from object storage; `None` if it is missing.
    pub fn fetch(&self, rel: &str) -> Result<Option<Fetched>, LakeError> {
        match self {
            Storage::Objects(o) => Ok(o.download(rel)?.map(Fetched::Copy)),
            Storage::Dir(root) => {
                let path = root.join(rel);
                Ok(path.exists().then_some(Fetched::InPlace(path)))
            }
        }
    }

    pub fn subdirs(&self, dir: &str) -> Result<Vec<String>, LakeError> {
        let path = match self {
            Storage::Objects(o) => return o.subdirs(dir),
            Storage::Dir(root) => root.join(dir),
        };
        let entries = match fs::read_dir(&path) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(LakeError::Io { path, source: e }),
        };
        Ok(entries.flatten().filter_map(|e| e.file_name().to_str().map(str::to_string)).collect())
    }

    /// Deletes files (those missing are no error).
    pub fn remove(&self, rels: &[String]) -> Result<(), LakeError> {
        match self {
            Storage::Objects(o) => o.remove(rels),
            Storage::Dir(root) => rels.iter().try_for_each(|rel| remove_if_present(&root.join(rel))),
        }
    }

    /// Where a run writes `rel` until it commits.
    pub fn staged(&self, rel: &str) -> PathBuf {
        match self {
            Storage::Objects(o) => o.staged_path(rel),
            Storage::Dir(root) => root.join(format!("{rel}.{STAGED}")),
        }
    }

    /// Where a file kept outside commits lives on this machine.
    pub fn local(&self, rel: &str) -> PathBuf {
        match self {
            Storage::Objects(o) => o.staged_path(rel),
            Storage::Dir(root) => root.join(rel),
        }
    }

    /// Takes the lake's write lock, waiting for another run to finish.
    pub fn lock(&self) -> Result<Lock, LakeError> {
        let root = match self {
            Storage::Objects(o) => return Ok(Lock::Lease(Box::new(o.lock()?))),
            Storage::Dir(root) => root,
        };
        let path = root.join(INGEST).join("lock");
        let lock = OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(io_err(&path))?;
        lock.lock().map_err(io_err(&path))?;
        Ok(Lock::File(lock))
    }

    /// The commit point and what follows it, for `commit` whose record is `record`.
    pub fn commit(&self, commit: &Commit, record: Vec<u8>, lock: &Lock) -> Result<(), LakeError> {
        let root = match (self, lock) {
            (Storage::Objects(o), Lock::Lease(lease)) => return o.commit(commit, record, lease),
            (Storage::Dir(root), _) => root,
            (Storage::Objects(_), Lock::File(_)) => unreachable!("an object-store lake is locked by its lease"),
        };
        write_atomic(&root.join(COMMITS).join(format!("{}.json", commit.run_id)), &record)?;
        for rel in &commit.files {
            let fin = root.join(rel);
            fs::rename(self.staged(rel), &fin).map_err(io_err(&fin))?;
        }
        for rel in &commit.replaces {
            remove_if_present(&root.join(rel))?;
        }
        sync_dir(&root.join(COMMITS));
        Ok(())
    }

    /// Rolls committed staged files forward and deletes uncommitted ones.
    pub fn recover(&self, commits: &[Commit]) -> Result<(), LakeError> {
        let root = match self {
            Storage::Objects(o) => return o.recover(commits),
            Storage::Dir(root) => root,
        };
        for rel in commits.iter().flat_map(|c| &c.replaces) {
            remove_if_present(&root.join(rel))?;
        }
        let committed: std::collections::HashSet<&String> = commits.iter().flat_map(|c| &c.files).collect();
        for entry in walkdir::WalkDir::new(root).into_iter().filter_map(Result::ok) {
            let p = entry.path();
            let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Some(final_name) = name.strip_suffix(&format!(".{STAGED}")) else {
                continue;
            };
            let final_path = p.with_file_name(final_name);
            let rel = final_path.strip_prefix(root).unwrap_or(&final_path).to_string_lossy().replace('\\', "/");
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
