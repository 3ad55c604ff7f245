//! `credtrail run` on the bundled sample, compared with committed snapshots
//! (`tests/snapshots/`): the table a person reads and the JSON lines a tool
//! reads, every alert field and id included. It guards refactors of the
//! pipeline: any change in what `run` prints fails here.
//!
//! After an intended change, rewrite the snapshots with
//! `CREDTRAIL_BLESS=1 cargo test --locked --test integration run_snapshot`
//! and review the diff.

use std::path::{Path, PathBuf};

use regex::Regex;

use crate::common::credtrail;

/// Copies `sample-data/` to a fresh directory, so the run's lake is new and
/// the checkout is never written to.
fn sample_copy(to: &Path) {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-data");
    for entry in walkdir::WalkDir::new(&from) {
        let entry = entry.unwrap();
        let dest = to.join(entry.path().strip_prefix(&from).unwrap());
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
        } else {
            std::fs::copy(entry.path(), &dest).unwrap();
        }
    }
}

fn run(dir: &Path, output: &str) -> String {
    let out = credtrail()
        .current_dir(dir)
        .env_remove("COLUMNS")
        .args(["run", "logs", "--inventory", "inventory.csv", "--lake", "lake", "--no-progress", "-o", output])
        .output()
        .expect("credtrail runs");
    assert!(out.status.success(), "run -o {output} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("output is UTF-8")
}

/// Blanks what differs between runs on the same input: the ingest's speed.
fn normalise(text: &str) -> String {
    let timing = Regex::new(r"in [0-9.]+s \([0-9]+ events/s\)").unwrap();
    timing.replace_all(text, "in <secs> (<rate> events/s)").into_owned()
}

fn snapshot_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots").join(name)
}

/// Compares `actual` with the snapshot `name`, or rewrites it when
/// `CREDTRAIL_BLESS=1`.
fn check_snapshot(name: &str, actual: &str) {
    let path = snapshot_path(name);
    if std::env::var_os("CREDTRAIL_BLESS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (create it with CREDTRAIL_BLESS=1)", path.display()));
    if expected != actual {
        let first = expected.lines().zip(actual.lines()).position(|(e, a)| e != a);
        let line = first.unwrap_or_else(|| expected.lines().count().min(actual.lines().count()));
        panic!(
            "`credtrail run` output differs from {} at line {}:\n  expected: {:?}\n  actual:   {:?}\n\
             (if the change is intended: CREDTRAIL_BLESS=1 and review the diff)",
            path.display(),
            line + 1,
            expected.lines().nth(line),
            actual.lines().nth(line),
        );
    }
}

#[test]
fn run_on_the_sample_matches_the_snapshots() {
    let work = tempfile::tempdir().unwrap();
    sample_copy(work.path());
    // The table first (it ingests into the new lake), then JSON lines over
    // the same lake: that run finds every file already ingested.
    let table = normalise(&run(work.path(), "table"));
    let jsonl = normalise(&run(work.path(), "jsonl"));
    for text in [&table, &jsonl] {
        assert!(!text.contains(&*work.path().to_string_lossy()), "a temporary path leaked into the output");
    }
    // Every alert line is a whole alert with its id: the snapshot holds them all.
    let alerts: Vec<serde_json::Value> =
        jsonl.lines().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(!alerts.is_empty(), "the sample yields alerts");
    assert!(alerts.iter().all(|a| a["alert_id"].as_str().is_some_and(|id| !id.is_empty())));
    check_snapshot("run_table.txt", &table);
    check_snapshot("run_jsonl.jsonl", &jsonl);
}
