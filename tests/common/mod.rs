//! Helpers shared by the integration tests: run the real binary, read back
//! what it wrote with the Parquet reader.
#![allow(dead_code)]

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use assert_cmd::Command;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel)
}

pub fn credtrail() -> Command {
    let mut c = Command::cargo_bin("credtrail").expect("binary is built");
    c.env("RUST_LOG", "error");
    c
}

/// Runs `credtrail sample --seed SEED --out OUT` with the given options.
pub fn generate_sample(out: &Path, seed: u64, options: &[&str]) {
    let run = credtrail()
        .arg("sample")
        .args(options)
        .arg("--seed")
        .arg(seed.to_string())
        .arg("--out")
        .arg(out)
        .output()
        .expect("credtrail runs");
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
}

/// Runs `credtrail ingest ... --json` and returns (exit code, summary).
pub fn ingest(lake: &Path, inputs: &[&Path], extra: &[&str]) -> (i32, serde_json::Value) {
    let mut cmd = credtrail();
    cmd.arg("ingest").args(inputs).arg("--lake").arg(lake).arg("--json").args(extra);
    let out = cmd.output().expect("credtrail runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("summary is JSON ({e}): {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr))
    });
    (out.status.code().expect("exited"), summary)
}

/// Every Parquet file under `dir`, recursively, sorted.
pub fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = walk(dir).into_iter().filter(|p| p.extension().is_some_and(|e| e == "parquet")).collect();
    v.sort();
    v
}

pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

pub fn read_parquet(path: &Path) -> Vec<RecordBatch> {
    let f = File::open(path).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(f).unwrap().build().unwrap();
    reader.map(|b| b.unwrap()).collect()
}

/// All rows of the lake's events, as JSON objects (column → value), in file order.
pub fn events(lake: &Path) -> Vec<serde_json::Map<String, serde_json::Value>> {
    rows_of(&lake.join("events"))
}

pub fn rows_of(dir: &Path) -> Vec<serde_json::Map<String, serde_json::Value>> {
    let mut rows = Vec::new();
    for p in parquet_files(dir) {
        for b in read_parquet(&p) {
            let mut w = arrow::json::ArrayWriter::new(Vec::new());
            w.write(&b).unwrap();
            w.finish().unwrap();
            let v: Vec<serde_json::Map<String, serde_json::Value>> =
                serde_json::from_slice(&w.into_inner()).unwrap_or_default();
            rows.extend(v);
        }
    }
    rows
}

pub fn quarantine(lake: &Path) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for p in walk(&lake.join("quarantine")) {
        if p.extension().is_some_and(|e| e == "jsonl") {
            for line in std::fs::read_to_string(&p).unwrap().lines() {
                out.push(serde_json::from_str(line).unwrap());
            }
        }
    }
    out
}

pub fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

pub fn gzip(path: &Path, text: &str) {
    let f = File::create(path).unwrap();
    let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::default());
    gz.write_all(text.as_bytes()).unwrap();
    gz.finish().unwrap();
}

/// A gateway line with the canonical fields.
pub fn gateway_line(i: usize, credential: &str, extra: &str) -> String {
    format!(
        r#"{{"ts":"2026-11-02T{:02}:{:02}:{:02}.000Z","request_id":"req_{i:06}","credential_id":"{credential}","principal":"agent:triage","session_id":"s{}","source_ip":"203.0.113.{}","user_agent":"triage-bot/1.2","provider":"openai","model":"gpt-4o","action":"inference","tool":null,"resource":null,"status":200,"error_code":null,"latency_ms":420,"tokens_in":{},"tokens_out":80,"cost_usd":0.0031{extra}}}"#,
        (i / 3600) % 24,
        (i / 60) % 60,
        i % 60,
        i / 10,
        i % 250,
        100 + i
    )
}

/// An inventory of inference-only API keys, `(credential, owner)`, any model.
pub fn api_key_inventory(path: &Path, keys: &[(&str, &str)]) {
    let rows: String = keys.iter().map(|(k, owner)| format!("{k},{owner},,api_key,,,inference,,,,\n")).collect();
    write(
        path,
        &format!(
            "credential_id,owner,principal,kind,created_at,expires_at,allowed_actions,allowed_models,allowed_tools,allowed_resources,allowed_regions\n{rows}"
        ),
    );
}
