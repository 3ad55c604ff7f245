//! Helpers shared by the integration tests: run the real binary, read back
//! what it wrote with the Parquet reader.
#![allow(dead_code)]

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use assert_cmd::Command;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

pub mod s3;

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

/// Runs `credtrail eval --json` on a lake against a labels file and returns its report.
pub fn eval_json(lake: &Path, labels: &Path) -> serde_json::Value {
    let out = credtrail().args(["eval", "--json", "--lake"]).arg(lake).arg("--labels").arg(labels).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
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
    // Read while a watcher runs, a file listed may be merged away before it
    // is opened: then list again, as the engine runs a query again.
    'list: loop {
        let mut readers = Vec::new();
        for p in parquet_files(dir) {
            match File::open(&p) {
                Ok(f) => readers.push(ParquetRecordBatchReaderBuilder::try_new(f).unwrap().build().unwrap()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue 'list,
                Err(e) => panic!("{}: {e}", p.display()),
            }
        }
        let mut rows = Vec::new();
        for b in readers.into_iter().flatten() {
            let mut w = arrow::json::ArrayWriter::new(Vec::new());
            w.write(&b.unwrap()).unwrap();
            w.finish().unwrap();
            let v: Vec<serde_json::Map<String, serde_json::Value>> =
                serde_json::from_slice(&w.into_inner()).unwrap_or_default();
            rows.extend(v);
        }
        return rows;
    }
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

/// One gateway request on `day` of November 2026 at `(hour, minute, second)`:
/// `n` keeps request ids apart; a failed status carries its error code.
#[allow(clippy::too_many_arguments)]
pub fn request_line(
    n: usize,
    day: u32,
    (h, m, s): (u32, u32, u32),
    key: &str,
    status: u16,
    ip: &str,
    model: &str,
    tokens: u32,
) -> String {
    let code = match status {
        401 => "\"invalid_api_key\"",
        403 => "\"forbidden\"",
        429 => "\"rate_limited\"",
        _ => "null",
    };
    let out = if status < 400 { 100 } else { 0 };
    format!(
        r#"{{"ts":"2026-11-{day:02}T{h:02}:{m:02}:{s:02}.000Z","request_id":"r{n:07}-{key}","credential_id":"{key}","principal":"app:{key}","session_id":null,"source_ip":"{ip}","user_agent":"client/2.0","provider":"openai","model":"{model}","action":"inference","tool":null,"resource":null,"status":{status},"error_code":{code},"latency_ms":300,"tokens_in":{tokens},"tokens_out":{out},"cost_usd":0.001}}"#
    )
}

/// A crafted gateway week: seven ordinary days (Nov 1–7, 2026) of six keys,
/// then Nov 8, sorted by time, with what issue 18 found detectors miss and
/// their benign look-alikes:
/// - `key_guess`: 50 × 403 in 8 minutes, never 20 in one minute;
/// - `key_loop`: 76 × 429 in 11 minutes;
/// - `key_calm`: twelve 429s scattered over an hour (quiet);
/// - `key_jack`: its usual hour plus 26 requests from a network it never
///   used, about 4× its usual hour's tokens;
/// - `key_busy`: the same 4× hour from its usual network (quiet);
/// - `key_moved`: a usual hour from a new network (no spend alert).
///
/// Every key works 08:00–19:59, 12 requests an hour of ~500 tokens, from 10.20.0.0/24.
pub fn issue18_week() -> (Vec<String>, Vec<String>) {
    let keys = ["key_guess", "key_loop", "key_calm", "key_jack", "key_busy", "key_moved"];
    let mut n = 0;
    let mut line = |day, t, key: &str, status, ip: &str, tokens| {
        n += 1;
        request_line(n, day, t, key, status, ip, "gpt-4o-mini", tokens)
    };
    let (mut history, mut today) = (Vec::new(), Vec::new());
    for day in 1..=8u32 {
        let out = if day < 8 { &mut history } else { &mut today };
        for (k, key) in keys.iter().enumerate() {
            for hour in 8..20u32 {
                let ip = if *key == "key_moved" && day == 8 && hour == 11 { "198.18.40.9" } else { "10.20.0.7" };
                for i in 0..12u32 {
                    let tokens = 400 + (i * 37 + day * 11 + k as u32 * 5 + hour) % 200;
                    out.push(line(day, (hour, i * 5, 7 + k as u32), key, 200, ip, tokens));
                }
            }
        }
    }
    for i in 0..50u32 {
        today.push(line(8, (10, i * 96 / 600, (i * 96 / 10) % 60), "key_guess", 403, "10.20.0.7", 0));
    }
    for i in 0..76u32 {
        today.push(line(8, (14, i * 87 / 600, (i * 87 / 10) % 60), "key_loop", 429, "10.20.0.7", 0));
    }
    for i in 0..12u32 {
        today.push(line(8, (15, i * 5 + 2, 30), "key_calm", 429, "10.20.0.7", 0));
    }
    for i in 0..26u32 {
        today.push(line(8, (11, i * 2 + 1, 40), "key_jack", 200, "198.18.7.21", 650));
        today.push(line(8, (11, i * 2 + 1, 40), "key_busy", 200, "10.20.0.7", 650));
    }
    today.sort_by(|a, b| a[7..31].cmp(&b[7..31]));
    (history, today)
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

/// An inventory of [`issue18_week`]'s keys: one owner's.
pub fn issue18_inventory(path: &Path) {
    let keys = ["key_guess", "key_loop", "key_calm", "key_jack", "key_busy", "key_moved"];
    api_key_inventory(path, &keys.map(|k| (k, "o@x")));
}

/// Each of `team`'s keys at work over November 1–8, 2026: two requests an
/// hour from 08:00 to 19:59 from 10.20.0.0/24, in time order, with the
/// model `model(day, key, hour)` names.
pub fn team_week(team: &[String], model: impl Fn(u32, &str, u32) -> &'static str) -> Vec<String> {
    let mut lines = Vec::new();
    for day in 1..=8 {
        for hour in 8..20 {
            for key in team {
                for m in [5, 20] {
                    let model = model(day, key, hour);
                    lines.push(request_line(lines.len(), day, (hour, m, 0), key, 200, "10.20.0.7", model, 500));
                }
            }
        }
    }
    lines
}
