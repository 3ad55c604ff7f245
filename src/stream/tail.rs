//! Following log files the way a log shipper does.
//!
//! Only complete lines are handed on. A file is known by a fingerprint of its
//! first line, not by its name or inode: a file renamed by rotation is the
//! same file (read to its end, never twice), a new file under the old name is
//! a new one (read from its start), and a checkpointed position survives
//! restarts whatever the file is called by then. A file that shrinks under
//! its reader was truncated in place (copy-truncate) and is read again from
//! the start; so is one whose first line changed under its reader (truncated
//! and written past its old size between two polls, it never looked shorter).

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::ingest::source::{Chunk, MAX_LINE_BYTES};

/// Bytes of a first line that make a file's fingerprint; a file whose first
/// line is shorter and not yet complete waits until it is.
const FINGERPRINT_BYTES: usize = 4096;
/// Bytes read from one file per poll, so one busy file cannot starve the others.
const READ_BUDGET: usize = 8 << 20;
/// Bytes read at a time. Shorter than the longest line allowed, so every
/// line that both begins and ends in one read is within the limit.
const READ_CHUNK: usize = 256 << 10;
const _: () = assert!(READ_CHUNK < MAX_LINE_BYTES);
/// How long a rotated or deleted file stays open after its last byte, for a
/// writer that has not yet reopened its log.
const ROTATED_GRACE: Duration = Duration::from_secs(2);
/// Head of an oversized line kept for its quarantine record.
const OVERSIZED_HEAD: usize = 64 << 10;
/// Positions of files no longer present kept in the checkpoint (most recent first).
const KEEP_FINISHED: usize = 256;

/// Where reading of one file stands: everything before `offset` (`line`
/// lines) has been handed on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// xxh3-64 of the file's first line, hex.
    pub fingerprint: String,
    /// The name it had when last read, its secrets redacted: for people, as
    /// identity is the fingerprint, so a secret in a file name never reaches
    /// the checkpoint.
    pub path: String,
    pub offset: u64,
    pub line: u64,
}

/// Where to start in files that are already there at the first start
/// (without a checkpoint). Files that appear later are always read whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    Beginning,
    End,
}

/// New complete lines of one file.
pub struct Lines {
    pub fingerprint: String,
    pub path: String,
    pub chunk: Chunk,
    /// Lines over [`MAX_LINE_BYTES`], skipped: (line number, first bytes).
    pub oversized: Vec<(u64, Vec<u8>)>,
}

struct Tracked {
    path: PathBuf,
    file: File,
    id: (u64, u64),
    fingerprint: String,
    offset: u64,
    line: u64,
    /// Bytes read past `offset`: the start of a line not yet complete.
    partial: Vec<u8>,
    /// Set while skipping the rest of an oversized line.
    discarding: bool,
    /// The path no longer names this file (renamed or deleted) since this instant.
    gone_since: Option<Instant>,
    /// What the file was before it was truncated in place: a copy of it
    /// (copy-truncate's other half) is known by this and read only past it.
    retired: Option<Position>,
}

impl Tracked {
    fn position(&self) -> Position {
        Position {
            fingerprint: self.fingerprint.clone(),
            path: crate::secrets::redact_path(&self.path.display().to_string()).into_owned(),
            offset: self.offset,
            line: self.line,
        }
    }
}

/// Follows the files named by paths and glob patterns.
pub struct Follower {
    patterns: Vec<String>,
    tracked: Vec<Tracked>,
    /// Positions of files not open now: from the checkpoint, and files finished.
    known: HashMap<String, Position>,
    finished_order: Vec<String>,
    start: StartAt,
    scanned_once: bool,
    last_scan: Option<Instant>,
    scan_every: Duration,
}

impl Follower {
    pub fn new(patterns: Vec<String>, checkpoint: Vec<Position>, start: StartAt) -> Follower {
        let finished_order = checkpoint.iter().map(|p| p.fingerprint.clone()).collect();
        Follower {
            patterns,
            tracked: Vec::new(),
            known: checkpoint.into_iter().map(|p| (p.fingerprint.clone(), p)).collect(),
            finished_order,
            start,
            scanned_once: false,
            last_scan: None,
            scan_every: Duration::from_millis(500),
        }
    }

    /// Files open now.
    pub fn files(&self) -> usize {
        self.tracked.len()
    }

    /// Bytes written to the followed files and not yet read.
    pub fn lag_bytes(&self) -> u64 {
        self.tracked
            .iter()
            .filter_map(|t| t.file.metadata().ok().map(|m| m.len().saturating_sub(t.offset + t.partial.len() as u64)))
            .sum()
    }

    /// The position of every file, open or finished, for a checkpoint.
    pub fn positions(&self) -> Vec<Position> {
        let mut out: Vec<Position> =
            self.tracked.iter().filter(|t| !t.fingerprint.is_empty()).map(Tracked::position).collect();
        out.extend(self.finished_order.iter().rev().filter_map(|f| self.known.get(f)).take(KEEP_FINISHED).cloned());
        out
    }

    /// Reads what is new: looks for new, rotated and truncated files when a
    /// scan is due, then reads each open file up to its budget.
    pub fn poll(&mut self) -> Vec<Lines> {
        if self.last_scan.is_none_or(|t| t.elapsed() >= self.scan_every) {
            self.scan();
            self.last_scan = Some(Instant::now());
        }
        let mut out = Vec::new();
        let mut done = Vec::new();
        let mut retired = Vec::new();
        for (i, t) in self.tracked.iter_mut().enumerate() {
            let read = read_new(t);
            retired.extend(t.retired.take());
            match read {
                Ok(Some(lines)) => out.push(lines),
                Ok(None) => {
                    if t.gone_since.is_some_and(|g| g.elapsed() >= ROTATED_GRACE) {
                        if let Some(lines) = finish_partial(t) {
                            out.push(lines);
                        }
                        done.push(i);
                    }
                }
                Err(e) => {
                    tracing::warn!(file = %t.path.display(), error = %e, "cannot read a followed file; will retry");
                }
            }
        }
        for p in retired {
            self.remember(p);
        }
        for i in done.into_iter().rev() {
            let t = self.tracked.remove(i);
            tracing::info!(file = %t.path.display(), offset = t.offset, "finished a rotated or deleted file");
            self.remember(t.position());
        }
        out
    }

    fn remember(&mut self, p: Position) {
        self.finished_order.retain(|f| *f != p.fingerprint);
        self.finished_order.push(p.fingerprint.clone());
        self.known.insert(p.fingerprint.clone(), p);
        if self.finished_order.len() > 4 * KEEP_FINISHED {
            let drop: Vec<String> = self.finished_order.drain(..KEEP_FINISHED).collect();
            for f in drop {
                self.known.remove(&f);
            }
        }
    }

    fn scan(&mut self) {
        let first = !self.scanned_once;
        self.scanned_once = true;
        // Files renamed away or deleted: drained, then closed after a grace period.
        for t in &mut self.tracked {
            let still = std::fs::metadata(&t.path).ok().map(|m| file_id(&m)) == Some(t.id);
            if !still && t.gone_since.is_none() {
                tracing::info!(file = %t.path.display(), "followed file was rotated or removed; reading it to its end");
                t.gone_since = Some(Instant::now());
            }
        }
        for path in self.expand() {
            let Ok(meta) = std::fs::metadata(&path) else { continue };
            if !meta.is_file() {
                continue;
            }
            let id = file_id(&meta);
            if let Some(t) = self.tracked.iter_mut().find(|t| t.id == id) {
                // The same file under a new name (rotation into the glob's reach).
                if t.gone_since.is_some() && t.path != path {
                    t.path = path;
                    t.gone_since = None;
                }
                continue;
            }
            match self.open(&path, &meta, first) {
                Ok(Some(t)) => self.tracked.push(t),
                Ok(None) => {}
                Err(e) => tracing::warn!(file = %path.display(), error = %e, "cannot open a file to follow"),
            }
        }
    }

    fn expand(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for p in &self.patterns {
            match glob::glob(p) {
                Ok(paths) => out.extend(paths.flatten()),
                // Not a valid pattern: a literal path.
                Err(_) => out.push(PathBuf::from(p)),
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// Starts following a file not open now, or returns `None` when it is
    /// not ready (no complete first line) or is a copy of one already open.
    fn open(&mut self, path: &Path, meta: &Metadata, first_scan: bool) -> io::Result<Option<Tracked>> {
        let mut file = File::open(path)?;
        let head = read_head(&file)?;
        if head.starts_with(&[0x1f, 0x8b]) {
            if first_scan {
                tracing::warn!(file = %path.display(), "not following a compressed file; ingest it with `credtrail ingest`");
            }
            return Ok(None);
        }
        let Some(fingerprint) = fingerprint_of(&head) else { return Ok(None) };
        if self.tracked.iter().any(|t| t.fingerprint == fingerprint) {
            return Ok(None);
        }
        let size = meta.len();
        let (offset, line) = match self.known.get(&fingerprint) {
            Some(p) if p.offset <= size => (p.offset, p.line),
            Some(p) => {
                tracing::warn!(
                    file = %path.display(), checkpoint = p.offset, size,
                    "file is shorter than its checkpoint; treating what it holds as read"
                );
                end_of_lines(&mut file, size)?
            }
            None if first_scan && self.start == StartAt::End => end_of_lines(&mut file, size)?,
            None => (0, 0),
        };
        file.seek(SeekFrom::Start(offset))?;
        tracing::info!(file = %path.display(), offset, line, "following");
        Ok(Some(Tracked {
            path: path.to_path_buf(),
            file,
            id: file_id(meta),
            fingerprint,
            offset,
            line,
            partial: Vec::new(),
            discarding: false,
            gone_since: None,
            retired: None,
        }))
    }
}

/// A file's identity: xxh3 of its first line (or of its first
/// [`FINGERPRINT_BYTES`] when that line is longer); `None` until it is there.
fn fingerprint_of(head: &[u8]) -> Option<String> {
    let head = &head[..head.len().min(FINGERPRINT_BYTES)];
    let first = match memchr::memchr(b'\n', head) {
        Some(end) => &head[..end],
        None if head.len() == FINGERPRINT_BYTES => head,
        None => return None,
    };
    Some(format!("{:016x}", xxhash_rust::xxh3::xxh3_64(first)))
}

/// The first [`FINGERPRINT_BYTES`] the file holds now, read without moving its cursor.
fn read_head(file: &File) -> io::Result<Vec<u8>> {
    let mut head = vec![0u8; FINGERPRINT_BYTES];
    let mut n = 0;
    while n < head.len() {
        match file.read_at(&mut head[n..], n as u64)? {
            0 => break,
            k => n += k,
        }
    }
    head.truncate(n);
    Ok(head)
}

/// The fingerprint of what the file holds now.
fn head_fingerprint(file: &File) -> io::Result<Option<String>> {
    Ok(fingerprint_of(&read_head(file)?))
}

fn file_id(m: &Metadata) -> (u64, u64) {
    (m.dev(), m.ino())
}

/// The offset just after the last complete line, and the number of lines before it.
fn end_of_lines(file: &mut File, size: u64) -> io::Result<(u64, u64)> {
    file.seek(SeekFrom::Start(0))?;
    let mut buf = vec![0u8; 1 << 20];
    let (mut pos, mut end, mut lines) = (0u64, 0u64, 0u64);
    while pos < size {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        for i in memchr::memchr_iter(b'\n', &buf[..n]) {
            lines += 1;
            end = pos + i as u64 + 1;
        }
        pos += n as u64;
    }
    Ok((end, lines))
}

/// Reads what is new in one file. `None` when there was nothing new.
fn read_new(t: &mut Tracked) -> io::Result<Option<Lines>> {
    let size = t.file.metadata()?.len();
    let read_to = t.offset + t.partial.len() as u64;
    // A file truncated and written past its old size between two polls does
    // not shrink under its reader: only its first line tells it was rewritten.
    let rewritten =
        size >= read_to && !t.fingerprint.is_empty() && head_fingerprint(&t.file)? != Some(t.fingerprint.clone());
    if size < read_to || rewritten {
        tracing::warn!(
            file = %t.path.display(), size, offset = read_to,
            "followed file was truncated in place (copy-truncate); reading it again from the start"
        );
        t.file.seek(SeekFrom::Start(0))?;
        t.retired = Some(t.position());
        // Known again by its new first line, once that is written.
        t.fingerprint = String::new();
        t.offset = 0;
        t.line = 0;
        t.partial.clear();
        t.discarding = false;
    }
    let start_line = t.line + 1;
    // Lines for the parser; an oversized line stands as an empty line, which
    // parsers skip, so the lines after it keep their numbers. Sized for what
    // the file holds now: grown a line at a time, it was copied over and over.
    let unread = size.saturating_sub(t.offset + t.partial.len() as u64);
    let mut complete: Vec<u8> = Vec::with_capacity(t.partial.len() + (unread as usize).min(READ_BUDGET));
    let mut consumed = 0u64;
    let mut oversized = Vec::new();
    let mut budget = READ_BUDGET;
    let mut buf = vec![0u8; READ_CHUNK];
    while budget > 0 {
        let want = buf.len().min(budget);
        let n = t.file.read(&mut buf[..want])?;
        if n == 0 {
            break;
        }
        budget -= n;
        let mut data = &buf[..n];
        while !data.is_empty() {
            match memchr::memchr(b'\n', data) {
                Some(i) => {
                    let (line, rest) = data.split_at(i + 1);
                    if t.discarding {
                        t.discarding = false;
                        complete.push(b'\n');
                    } else if t.partial.len() + line.len() > MAX_LINE_BYTES + 1 {
                        // Ended before it crossed the limit on a poll boundary: still too long.
                        let lines_before = memchr::memchr_iter(b'\n', &complete).count() as u64;
                        oversized.push((start_line + lines_before, t.partial[..OVERSIZED_HEAD].to_vec()));
                        consumed += t.partial.len() as u64;
                        t.partial.clear();
                        complete.push(b'\n');
                    } else {
                        consumed += t.partial.len() as u64;
                        complete.append(&mut t.partial);
                        complete.extend_from_slice(line);
                    }
                    consumed += line.len() as u64;
                    // The lines after the first begin and end in this read
                    // (so are within the limit): taken at once.
                    let whole = memchr::memrchr(b'\n', rest).map_or(0, |j| j + 1);
                    complete.extend_from_slice(&rest[..whole]);
                    consumed += whole as u64;
                    data = &rest[whole..];
                }
                None => {
                    if t.discarding {
                        consumed += data.len() as u64;
                    } else {
                        t.partial.extend_from_slice(data);
                        if t.partial.len() > MAX_LINE_BYTES {
                            let lines_before = memchr::memchr_iter(b'\n', &complete).count() as u64;
                            oversized.push((start_line + lines_before, t.partial[..OVERSIZED_HEAD].to_vec()));
                            consumed += t.partial.len() as u64;
                            t.partial.clear();
                            t.discarding = true;
                        }
                    }
                    data = &[];
                }
            }
        }
    }
    if t.fingerprint.is_empty() {
        // From the file itself, as the next poll checks it: an oversized
        // first line stands as an empty one in `complete`.
        if let Some(f) = head_fingerprint(&t.file)? {
            t.fingerprint = f;
        }
    }
    if consumed == 0 {
        return Ok(None);
    }
    t.offset += consumed;
    t.line += memchr::memchr_iter(b'\n', &complete).count() as u64;
    Ok(Some(Lines {
        fingerprint: t.fingerprint.clone(),
        path: t.path.display().to_string(),
        chunk: Chunk { bytes: complete, first_line: start_line },
        oversized,
    }))
}

/// A file that will not grow again ends with its last line even without a newline.
fn finish_partial(t: &mut Tracked) -> Option<Lines> {
    if t.partial.is_empty() || t.discarding {
        return None;
    }
    let mut bytes = std::mem::take(&mut t.partial);
    let first_line = t.line + 1;
    t.offset += bytes.len() as u64;
    t.line += 1;
    bytes.push(b'\n');
    Some(Lines {
        fingerprint: t.fingerprint.clone(),
        path: t.path.display().to_string(),
        chunk: Chunk { bytes, first_line },
        oversized: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn append(path: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    fn lines(out: &[Lines]) -> Vec<String> {
        out.iter()
            .flat_map(|l| String::from_utf8_lossy(&l.chunk.bytes).lines().map(str::to_string).collect::<Vec<_>>())
            .collect()
    }

    fn follower(dir: &Path, start: StartAt) -> Follower {
        let mut f = Follower::new(vec![format!("{}/*.log", dir.display())], Vec::new(), start);
        f.scan_every = Duration::ZERO;
        f
    }

    #[test]
    fn waits_for_complete_lines_and_starts_at_the_end_of_existing_files() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("a.log");
        append(&log, "old 1\nold 2\n");
        let mut f = follower(dir.path(), StartAt::End);
        assert!(lines(&f.poll()).is_empty(), "existing lines are skipped when starting at the end");
        append(&log, "new 1\nnew ");
        let out = f.poll();
        assert_eq!(lines(&out), vec!["new 1"]);
        assert_eq!(out[0].chunk.first_line, 3, "line numbers count the skipped lines");
        append(&log, "2\n");
        assert_eq!(lines(&f.poll()), vec!["new 2"]);
        assert_eq!(f.positions()[0].offset, std::fs::metadata(&log).unwrap().len());
    }

    #[test]
    fn follows_rotation_by_rename_without_loss_or_repeats() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("a.log");
        append(&log, "1\n");
        let mut f = follower(dir.path(), StartAt::Beginning);
        assert_eq!(lines(&f.poll()), vec!["1"]);
        append(&log, "2\n");
        // Rotated into a name the glob also matches, then a new file under the old name.
        std::fs::rename(&log, dir.path().join("a.1.log")).unwrap();
        append(&dir.path().join("a.1.log"), "3\n");
        append(&log, "fresh 1\n");
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.extend(lines(&f.poll()));
        }
        seen.sort();
        assert_eq!(seen, vec!["2", "3", "fresh 1"]);
    }

    #[test]
    fn copy_truncate_rereads_from_the_start_and_checkpoints_resume() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("a.log");
        append(&log, "first\nsecond\n");
        let mut f = follower(dir.path(), StartAt::Beginning);
        assert_eq!(lines(&f.poll()).len(), 2);
        std::fs::OpenOptions::new().write(true).truncate(true).open(&log).unwrap();
        append(&log, "x\n");
        assert_eq!(lines(&f.poll()), vec!["x"]);

        // A restart from the checkpoint reads only what came after it.
        let checkpoint = f.positions();
        append(&log, "y\n");
        let mut g = Follower::new(vec![log.display().to_string()], checkpoint, StartAt::Beginning);
        assert_eq!(lines(&g.poll()), vec!["y"]);
    }

    #[test]
    fn lines_across_reads_and_polls_arrive_once_in_order_and_numbered() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("a.log");
        // Past one poll's budget, in lines of every length up to a few hundred
        // bytes: many end across a read's boundary.
        let want: Vec<String> = (0..100_000).map(|i| format!("{i:06} {}", "y".repeat(i * 7 % 301))).collect();
        append(&log, &(want.join("\n") + "\nunfinished"));
        let mut f = follower(dir.path(), StartAt::Beginning);
        let mut got = Vec::new();
        for out in std::iter::from_fn(|| Some(f.poll())).take_while(|o| !o.is_empty()) {
            for l in &out {
                assert_eq!(l.chunk.first_line, got.len() as u64 + 1);
                got.extend(lines(std::slice::from_ref(l)));
            }
        }
        assert!(got == want, "{} lines read of {}", got.len(), want.len());
        let size = std::fs::metadata(&log).unwrap().len();
        assert_eq!(f.positions()[0].offset, size - "unfinished".len() as u64);
    }

    #[test]
    fn oversized_lines_are_skipped_not_buffered() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("a.log");
        let big = "x".repeat(MAX_LINE_BYTES + 10);
        append(&log, &format!("ok 1\n{big}\nok 2\n"));
        let mut f = follower(dir.path(), StartAt::Beginning);
        let mut out = Vec::new();
        for _ in 0..4 {
            out.extend(f.poll());
        }
        let text: Vec<String> = lines(&out).into_iter().filter(|l| !l.is_empty()).collect();
        assert!(text == ["ok 1", "ok 2"], "{:?}", text.iter().map(|l| &l[..l.len().min(20)]).collect::<Vec<_>>());
        let over: Vec<u64> = out.iter().flat_map(|l| l.oversized.iter().map(|o| o.0)).collect();
        assert_eq!(over, vec![2]);
        let last = out.last().unwrap();
        let at = String::from_utf8_lossy(&last.chunk.bytes).lines().position(|l| l == "ok 2").unwrap() as u64;
        assert_eq!(last.chunk.first_line + at, 3, "the oversized line still counts");
        assert_eq!(f.positions()[0].offset, std::fs::metadata(&log).unwrap().len());
    }

    #[test]
    fn a_truncation_refilled_past_the_old_size_is_seen_by_its_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("a.log");
        append(&log, "old 1\nold 2\n");
        let mut f = follower(dir.path(), StartAt::Beginning);
        assert_eq!(lines(&f.poll()), vec!["old 1", "old 2"]);
        // Between two polls: truncated, then written past the old size.
        std::fs::OpenOptions::new().write(true).truncate(true).open(&log).unwrap();
        append(&log, "new 1\nnew 2\nnew 3\n");
        assert_eq!(lines(&f.poll()), vec!["new 1", "new 2", "new 3"]);
        assert!(lines(&f.poll()).is_empty(), "read once");

        // The checkpoint knows the file by its new first line.
        let checkpoint = f.positions();
        append(&log, "new 4\n");
        let mut g = Follower::new(vec![log.display().to_string()], checkpoint, StartAt::Beginning);
        assert_eq!(lines(&g.poll()), vec!["new 4"]);
    }
}
