//! Compaction: a day's small event files merged into fewer, larger ones.
//!
//! Every run writes its own files, so a lake fed in small steps holds many:
//! a watcher commits one file per day per micro-batch (17,280 a day at the
//! default 5 s), an hourly `ingest` one per run. Every query then opens
//! and verifies each of them, and a watcher's folded commit record carries
//! a check for each. Compaction reads a day's small files, writes their
//! rows again as the lake's writer writes any day (sorted by credential and
//! time, up to its file size) and replaces them in the same transaction,
//! so a crash leaves the old files or the new ones. Readers list a table's
//! directory, so one listing during the commit's renames (microseconds on a
//! disk, the copy window on object storage; see the lake's module) may see
//! both; a query that listed a file the commit then removed runs again
//! (`engine::collect`).
//!
//! Which files merge is a [`Policy`]. Runs that write a day merge its small
//! files by size tier ([`Policy::Tiered`], as log-structured stores do): a
//! tier's files merge once there are [`FAN_IN`] of them, so a day keeps a
//! few dozen files at most and each event is written again only a few times
//! (at most one more than log₈ of [`SMALL_ROWS`] over the rows per commit:
//! 4 times at 100 rows a commit, 2 at 5,000). `credtrail lake compact`
//! merges all of them ([`Policy::All`]).
//!
//! A file is merged only if it still matches its commit record (a damaged
//! file copied into a new one would pass every later check) and has the
//! event schema of this build; any other is left as it is, with a warning.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;

use arrow::array::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::Serialize;

use super::check::{self, FileCheck};
use super::{EVENTS, Lake, LakeError, LakeWriter, Txn, committed_files, events_partition};
use crate::schema::event_schema;

/// Files with fewer rows than this are small: worth merging. Larger ones
/// cost a reader little beside their rows.
pub const SMALL_ROWS: u64 = 64 * 1024;
/// Small files of one size tier (a power of `FAN_IN` rows) merged at once.
pub const FAN_IN: usize = 8;
/// Rows per batch when reading a file back.
const READ_BATCH: usize = 64 * 1024;

/// Which of a day's small files a compaction merges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// The small files of each size tier that holds [`FAN_IN`] or more.
    Tiered,
    /// Every small file, when there are two or more.
    All,
}

/// What a compaction did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Compacted {
    /// Days whose files were merged.
    pub days: Vec<String>,
    /// Files merged (replaced).
    pub merged: usize,
    /// Files written in their place.
    pub written: usize,
    /// Rows written again.
    pub rows: u64,
    /// Files left as they were: damaged, or of another schema.
    pub skipped: Vec<String>,
}

/// The files of `files` (lake-relative path, rows) that `policy` merges.
pub fn plan(files: &[(String, u64)], policy: Policy) -> Vec<String> {
    let small = files.iter().filter(|(_, rows)| *rows < SMALL_ROWS);
    match policy {
        Policy::All => {
            let all: Vec<String> = small.map(|(rel, _)| rel.clone()).collect();
            if all.len() >= 2 { all } else { Vec::new() }
        }
        Policy::Tiered => {
            let mut tiers: BTreeMap<u32, Vec<String>> = BTreeMap::new();
            for (rel, rows) in small {
                tiers.entry(rows.max(&1).ilog(FAN_IN as u64)).or_default().push(rel.clone());
            }
            tiers.into_values().filter(|t| t.len() >= FAN_IN).flatten().collect()
        }
    }
}

/// Merges the small event files of each of `days` that `policy` picks,
/// inside `txn`: the merged files are staged, and the files they replace
/// removed, when `txn` commits. Files `txn` itself added are not among them
/// (they are not committed yet).
pub fn compact(txn: &Txn, days: &[String], policy: Policy) -> Result<Compacted, LakeError> {
    let lake = txn.lake();
    let mut out = Compacted::default();
    for day in days {
        let files = committed_files(lake, &events_partition(day), "parquet")?;
        let checks = checks_of(txn, &files);
        let check = |rel: &str| checks.get(rel).copied();
        let sized = files
            .into_iter()
            .map(|rel| {
                let rows = match check(&rel) {
                    Some(c) => c.rows,
                    // Committed before records carried checks: the footer says.
                    None => match lake.storage.fetch(&rel)? {
                        Some(f) => check::parquet_rows(f.path())?,
                        None => u64::MAX,
                    },
                };
                Ok((rel, rows))
            })
            .collect::<Result<Vec<_>, LakeError>>()?;
        let mut merge = Vec::new();
        for rel in plan(&sized, policy) {
            match read_events(txn, &rel, check(&rel))? {
                Ok(batches) => merge.push((rel, batches)),
                Err(reason) => {
                    tracing::warn!(file = %lake.path(&rel).display(), %reason, "not compacted; see `credtrail lake check`");
                    out.skipped.push(rel);
                }
            }
        }
        if merge.len() < 2 {
            continue;
        }
        let staged_before = txn.staged_count();
        let w = LakeWriter::new(txn);
        for (_, batches) in &merge {
            for b in batches {
                out.rows += b.num_rows() as u64;
                w.push(b, &[], &[])?;
            }
        }
        w.finish()?;
        let written = txn.staged_count() - staged_before;
        tracing::debug!(day, files = merge.len(), into = written, "merging small event files");
        out.written += written;
        out.merged += merge.len();
        out.days.push(day.clone());
        txn.replace(merge.into_iter().map(|(rel, _)| rel));
    }
    Ok(out)
}

/// Each of `files`' check, from the last record that added it (recovery at
/// `begin` removed any a later commit replaced). One walk of the run's
/// records, newest first, that stops once every file is found: this runs at
/// every micro-batch, and a lake of a year of hourly runs holds thousands.
fn checks_of<'a>(txn: &'a Txn, files: &[String]) -> HashMap<&'a str, &'a FileCheck> {
    let mut missing: HashSet<&str> = files.iter().map(String::as_str).collect();
    let mut found = HashMap::new();
    for c in txn.commits().iter().rev() {
        if missing.is_empty() {
            break;
        }
        for (rel, check) in &c.checks {
            if missing.remove(rel.as_str()) {
                found.insert(rel.as_str(), check);
            }
        }
    }
    found
}

/// The days of the lake's events, those in `range` (first and last day,
/// `YYYY-MM-DD`) if given; sorted.
pub fn days(lake: &Lake, range: Option<(String, String)>) -> Result<Vec<String>, LakeError> {
    let mut days: Vec<String> = lake
        .subdirs(EVENTS)?
        .into_iter()
        .filter_map(|d| d.strip_prefix("date=").map(str::to_string))
        .filter(|d| range.as_ref().is_none_or(|(from, to)| from <= d && d <= to))
        .collect();
    days.sort();
    Ok(days)
}

/// The rows of committed event file `rel`, or why it is not merged.
fn read_events(
    txn: &Txn,
    rel: &str,
    record: Option<&FileCheck>,
) -> Result<Result<Vec<RecordBatch>, String>, LakeError> {
    let lake = txn.lake();
    let Some(file) = lake.storage.fetch(rel)? else { return Ok(Err("gone from the lake".into())) };
    let path = file.path();
    if let Some(want) = record
        && let Err(reason) = check::verify(path, want)
    {
        return Ok(Err(reason));
    }
    let read = || -> Result<Result<Vec<RecordBatch>, String>, parquet::errors::ParquetError> {
        let b = ParquetRecordBatchReaderBuilder::try_new(File::open(path)?)?.with_batch_size(READ_BATCH);
        if b.schema().fields() != event_schema().fields() {
            return Ok(Err("written with another event schema".into()));
        }
        Ok(b.build()?.collect::<Result<Vec<_>, _>>().map_err(|e| format!("a page does not decode: {e}")))
    };
    Ok(read().unwrap_or_else(|e| Err(format!("not readable as Parquet: {e}"))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lake::write::tests::batch;
    use crate::lake::{Open, check::check};
    use arrow::array::AsArray;
    use arrow::datatypes::{DataType, TimestampMillisecondType};

    const DAY: &str = "1970-01-01";

    /// Commits each batch as a watcher's micro-batch: one small file each.
    fn micro_batches(lake: &Lake, batches: &[RecordBatch]) {
        for b in batches {
            let txn = lake.begin().unwrap();
            let w = LakeWriter::new(&txn);
            w.push(b, &[], &[]).unwrap();
            w.finish().unwrap();
            txn.commit_folded().unwrap();
        }
    }

    fn day_files(lake: &Lake) -> Vec<String> {
        committed_files(lake, &events_partition(DAY), "parquet").unwrap()
    }

    /// (credential, ts) of every row of a lake file, in file order.
    fn rows_of(lake: &Lake, rel: &str) -> Vec<(String, i64)> {
        let f = File::open(lake.path(rel)).unwrap();
        ParquetRecordBatchReaderBuilder::try_new(f)
            .unwrap()
            .build()
            .unwrap()
            .flat_map(|b| rows_of_batch(&b.unwrap()))
            .collect()
    }

    fn rows_of_batch(b: &RecordBatch) -> Vec<(String, i64)> {
        let cred = arrow::compute::cast(b.column_by_name("credential_id").unwrap(), &DataType::Utf8).unwrap();
        let ts = b.column_by_name("ts").unwrap().as_primitive::<TimestampMillisecondType>().clone();
        cred.as_string::<i32>().iter().zip(ts.values()).map(|(c, t)| (c.unwrap().to_string(), *t)).collect()
    }

    #[test]
    fn a_days_small_files_become_one_sorted_file_with_every_row_and_its_check() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path(), Open::Write).unwrap();
        // Credentials interleaved across nine micro-batches, times out of order between them.
        let batches: Vec<RecordBatch> =
            (0..9).map(|i| batch(&[("b", 1_000 - i), ("a", 500 + i), ("c", 10 * i)])).collect();
        micro_batches(&lake, &batches);
        let before = day_files(&lake);
        assert_eq!(before.len(), 9);
        let mut want: Vec<(String, i64)> = before.iter().flat_map(|rel| rows_of(&lake, rel)).collect();
        want.sort();
        // One file is damaged after its commit: merging it would launder it.
        let damaged = before[4].clone();
        let mut bytes = std::fs::read(lake.path(&damaged)).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(lake.path(&damaged), &bytes).unwrap();
        let damaged_rows = rows_of_batch(&batches[4]);

        let txn = lake.begin().unwrap();
        let done = compact(&txn, &[DAY.to_string()], Policy::All).unwrap();
        txn.commit_folded().unwrap();
        assert_eq!((done.merged, done.written, done.rows), (8, 1, 24));
        assert_eq!(done.skipped, vec![damaged.clone()]);
        let after = day_files(&lake);
        assert_eq!(after.len(), 2);
        assert!(after.contains(&damaged));
        let merged = after.iter().find(|r| **r != damaged).unwrap();
        let rows = rows_of(&lake, merged);
        let mut sorted = rows.clone();
        sorted.sort();
        assert_eq!(rows, sorted, "the merged file is in (credential, ts) order");
        let mut all: Vec<(String, i64)> = rows.into_iter().chain(damaged_rows).collect();
        all.sort();
        assert_eq!(all, want, "every row once");
        // The folded record dropped the merged files' checks and holds the new one's.
        let checks: Vec<String> = lake.file_checks().unwrap().into_keys().collect();
        assert_eq!(checks.len(), 2);
        assert!(checks.contains(merged));
        let report = check(&lake).unwrap();
        assert_eq!(report.bad.len(), 1, "{:?}", report.bad);
        assert!(report.bad[0].path.ends_with(&damaged));
    }

    #[test]
    fn a_compaction_not_committed_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path(), Open::Write).unwrap();
        micro_batches(&lake, &(0..8).map(|i| batch(&[("a", i)])).collect::<Vec<_>>());
        let before = day_files(&lake);
        {
            let txn = lake.begin().unwrap();
            let done = compact(&txn, &[DAY.to_string()], Policy::Tiered).unwrap();
            assert_eq!((done.merged, done.written), (8, 1));
            // Dropped: a crash before the commit point.
        }
        drop(lake.begin().unwrap());
        assert_eq!(day_files(&lake), before);
        assert!(check(&lake).unwrap().bad.is_empty());
    }

    fn files(rows: &[u64]) -> Vec<(String, u64)> {
        rows.iter().enumerate().map(|(i, r)| (format!("f{i}"), *r)).collect()
    }

    #[test]
    fn a_tier_merges_once_it_holds_fan_in_files() {
        // Seven files of one tier (8..63 rows) wait; an eighth merges them all.
        assert!(plan(&files(&[10; 7]), Policy::Tiered).is_empty());
        assert_eq!(plan(&files(&[10, 20, 30, 40, 50, 60, 63, 8]), Policy::Tiered).len(), 8);
        // Eight files spread over tiers merge nothing; large files never merge.
        assert!(plan(&files(&[1, 10, 100, 1_000, 10_000, 9, 90, 900]), Policy::Tiered).is_empty());
        assert!(plan(&files(&[SMALL_ROWS; 20]), Policy::Tiered).is_empty());
        // Only the full tier's files are picked.
        let mut mixed = files(&[500; 8]);
        mixed.push(("big".into(), 40_000));
        mixed.push(("tiny".into(), 3));
        let picked = plan(&mixed, Policy::Tiered);
        assert_eq!(picked.len(), 8);
        assert!(!picked.contains(&"big".to_string()) && !picked.contains(&"tiny".to_string()));
        // An empty file is in the lowest tier, not a panic.
        assert_eq!(plan(&files(&[0; 8]), Policy::Tiered).len(), 8);
    }

    #[test]
    fn all_merges_every_small_file_once_there_are_two() {
        assert!(plan(&files(&[10]), Policy::All).is_empty());
        assert!(plan(&files(&[10, SMALL_ROWS]), Policy::All).is_empty());
        assert_eq!(plan(&files(&[10, 20_000, SMALL_ROWS, 3]), Policy::All), vec!["f0", "f1", "f3"]);
    }

    #[test]
    fn each_event_is_rewritten_a_few_times_however_small_the_commits() {
        // Commits of 100 rows, tiered, over a busy day: files stay few and
        // each row is written again at most 1 + log8(SMALL_ROWS / 100) times.
        let (mut live, mut written, mut most) = (Vec::<(String, u64)>::new(), 0u64, 0);
        for n in 0..20_000 {
            live.push((format!("c{n}"), 100));
            written += 100;
            let merged = plan(&live, Policy::Tiered);
            if !merged.is_empty() {
                let rows: u64 = live.iter().filter(|(r, _)| merged.contains(r)).map(|(_, k)| k).sum();
                live.retain(|(r, _)| !merged.contains(r));
                live.push((format!("m{n}"), rows));
                written += rows;
            }
            most = most.max(live.len());
        }
        assert!(most < 40, "{most} files at once");
        let rewrites = written as f64 / 2_000_000.0 - 1.0;
        let bound = 1.0 + (SMALL_ROWS as f64 / 100.0).log(FAN_IN as f64);
        assert!(rewrites >= 2.0 && rewrites <= bound, "each row written again {rewrites:.2} times (bound {bound:.2})");
    }
}
