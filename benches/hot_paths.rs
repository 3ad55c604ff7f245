//! Micro-benchmarks of credtrail's hot paths: parsing a gateway line and a
//! CloudTrail record, redaction's scan, normalising events to Arrow, sorting
//! and writing a day's Parquet, a whole file into a lake, and scoring
//! (baseline statistics, the Markov model, one day's detection).
//!
//!     cargo bench --bench hot_paths               # all of them
//!     cargo bench --bench hot_paths -- record     # one group
//!
//! `cargo test` builds this and runs every benchmark once on small inputs
//! (criterion's test mode), so it keeps compiling without slowing CI; the
//! end-to-end comparison with DuckDB is `benches/compare.sh`.

use std::hint::black_box;
use std::path::{Path, PathBuf};

use credtrail::baseline::{self, Markov, Stats};
use credtrail::detect::{self, DetectOptions};
use credtrail::ingest::{self, cloudtrail, gateway};
use credtrail::schema::{EventBuilder, Lineage, event_schema};
use credtrail::{lake, sample, secrets};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

const LINE: &str = r#"{"ts":"2026-11-02T14:03:07.123Z","request_id":"req_8f3a9c2d1e4b5a60","credential_id":"key_7QF2M9KD3XPA","principal":"agent:support-triage","session_id":"sess_41c9","source_ip":"10.20.30.41","user_agent":"triage-bot/1.4 (+python-httpx)","provider":"openai","model":"gpt-4o-mini","action":"tool_call","tool":"github.get_file","resource":"github://acme/payments/README.md","status":200,"error_code":null,"latency_ms":512,"tokens_in":1834,"tokens_out":212,"cost_usd":0.00041}"#;

const CLOUDTRAIL: &str = r#"{"eventVersion":"1.08","userIdentity":{"type":"AssumedRole","principalId":"AROAEXAMPLE:agent","arn":"arn:aws:sts::123456789012:assumed-role/agent-role/agent","accountId":"123456789012","accessKeyId":"ASIAEXAMPLEKEY000001","sessionContext":{"sessionIssuer":{"type":"Role","arn":"arn:aws:iam::123456789012:role/agent-role","accountId":"123456789012","userName":"agent-role"}}},"eventTime":"2026-11-02T14:03:07Z","eventSource":"bedrock.amazonaws.com","eventName":"InvokeModel","awsRegion":"us-east-1","sourceIPAddress":"198.51.100.7","userAgent":"Boto3/1.34.0","requestParameters":{"modelId":"anthropic.claude-3-haiku-20240307-v1:0"},"responseElements":null,"requestID":"0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0","eventID":"1a2b3c4d-5e6f-7081-92a3-b4c5d6e7f809","readOnly":true,"eventType":"AwsApiCall","managementEvent":false,"recipientAccountId":"123456789012"}"#;

/// Whether criterion measures (`cargo bench`) rather than checks that each
/// benchmark runs once (`cargo test`): inputs are kept small for the check.
fn measuring() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// A generated sample (gateway logs, inventory) in a temporary directory.
struct Sample {
    _dir: tempfile::TempDir,
    root: PathBuf,
    logs: Vec<PathBuf>,
    inventory: PathBuf,
    last_day: String,
}

fn sample(days: u32, credentials: u32, rate_scale: f64) -> Sample {
    let dir = tempfile::tempdir().unwrap();
    let opts = sample::SampleOptions { days, credentials, rate_scale, ..Default::default() };
    let s = sample::generate(&opts, dir.path()).unwrap();
    let last = s.files.last().unwrap().file_name().unwrap().to_str().unwrap();
    let last_day = last.trim_start_matches("gateway-").trim_end_matches(".jsonl").to_string();
    Sample { root: dir.path().to_path_buf(), logs: s.files, inventory: s.inventory, last_day, _dir: dir }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap().lines().map(str::to_string).collect()
}

fn record(c: &mut Criterion) {
    let mut g = c.benchmark_group("record");
    g.throughput(Throughput::Bytes(LINE.len() as u64));
    g.bench_function("gateway_parse", |b| b.iter(|| gateway::parse(black_box(LINE)).unwrap().ts_ms));
    g.bench_function("redact_scan_clean", |b| b.iter(|| secrets::redact(black_box(LINE)).exposures.len()));
    // A secret's prefix inside a word (`sk-` in `risk-`) must not send a clean line to the full pattern set.
    let in_word = LINE.replace("support-triage", "risk-triage");
    g.bench_function("redact_scan_clean_in_word_prefix", |b| {
        b.iter(|| secrets::redact(black_box(&in_word)).exposures.len())
    });
    g.throughput(Throughput::Bytes(CLOUDTRAIL.len() as u64));
    g.bench_function("cloudtrail_parse_and_map", |b| {
        b.iter(|| {
            let v: serde_json::Value = serde_json::from_str(black_box(CLOUDTRAIL)).unwrap();
            cloudtrail::map_record(&v).unwrap().ts_ms
        })
    });
    g.finish();
}

/// Normalising to Arrow and writing a day: parse + append of real sample
/// lines, the (credential, ts) sort, and the zstd Parquet write.
fn arrow(c: &mut Criterion) {
    let s = sample(1, 30, if measuring() { 1.0 } else { 0.1 });
    let lines = lines(&s.logs[0]);
    let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
    let lineage = Lineage { source: "gateway", source_file: "bench.jsonl" };
    let build = || {
        let mut b = EventBuilder::new();
        for (i, l) in lines.iter().enumerate() {
            b.append(&gateway::parse(l).unwrap(), lineage, i as u64 + 1);
        }
        b.finish()
    };
    let batch = build();
    let schema = event_schema();
    let mut g = c.benchmark_group("arrow");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function(format!("parse_and_append_{}_lines", lines.len()), |b| b.iter(|| build().num_rows()));
    g.throughput(Throughput::Elements(batch.num_rows() as u64));
    g.bench_function("sort_events", |b| {
        b.iter(|| lake::sort_events(&schema, std::slice::from_ref(&batch)).unwrap().num_rows())
    });
    let sorted = lake::sort_events(&schema, std::slice::from_ref(&batch)).unwrap();
    g.bench_function("write_parquet_zstd", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().unwrap();
                let lake = lake::Lake::open(dir.path(), lake::Open::Write).unwrap();
                (dir, lake)
            },
            |(_dir, lake)| {
                let props = lake::event_writer_properties();
                lake::write_parquet_staged(
                    &lake,
                    "events/x.parquet",
                    schema.clone(),
                    std::slice::from_ref(&sorted),
                    props,
                )
                .unwrap()
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn whole_file(c: &mut Criterion) {
    let s = sample(1, 30, if measuring() { 1.0 } else { 0.1 });
    let input = s.logs[0].clone();
    let n = lines(&input).len() as u64;
    let mut g = c.benchmark_group("file");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(std::fs::metadata(&input).unwrap().len()));
    g.bench_function(format!("ingest_{n}_gateway_lines"), |b| {
        b.iter(|| {
            let lake = tempfile::tempdir().unwrap();
            let opts = ingest::IngestOptions {
                inputs: vec![input.clone()],
                lake: lake.path().to_path_buf(),
                ..Default::default()
            };
            let s = ingest::ingest(&opts).unwrap();
            assert_eq!(s.ingested, n);
        })
    });
    g.finish();
}

/// Scoring: the statistics of one credential's 28 days of hours, the Markov
/// model's step probability, and learning a baseline and detecting one day
/// of a small lake end to end (DataFusion plans included).
fn scoring(c: &mut Criterion) {
    let hours: Vec<f64> = (0..28 * 24).map(|i| ((i * 7919) % 613) as f64).collect();
    let mut m = Markov::default();
    for (from, to, n) in [("^", "search", 40), ("search", "get_file", 30), ("get_file", "$", 35), ("search", "$", 10)] {
        m.add(from, to, n);
    }
    let mut g = c.benchmark_group("score");
    g.bench_function("stats_of_672_hours", |b| b.iter(|| Stats::of(black_box(&hours)).p99));
    g.bench_function("markov_probability", |b| b.iter(|| m.probability(black_box("search"), black_box("shell.exec"))));

    let s = sample(5, 30, if measuring() { 1.0 } else { 0.2 });
    let lake_dir = s.root.join("lake");
    let opts = ingest::IngestOptions { inputs: s.logs.clone(), lake: lake_dir.clone(), ..Default::default() };
    ingest::ingest(&opts).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let until = {
        let d = credtrail::time::parse_day(&s.last_day).unwrap() - chrono::Days::new(1);
        d.format("%Y-%m-%d").to_string()
    };
    g.sample_size(10);
    g.bench_function("baseline_learn_4_days", |b| {
        let o = baseline::BaselineOptions {
            lake: lake_dir.clone(),
            until: until.clone(),
            days: 28,
            rescan: false,
            engine: Default::default(),
        };
        b.iter(|| rt.block_on(baseline::learn(&o)).unwrap().credentials)
    });
    g.bench_function("detect_one_day", |b| {
        let o = DetectOptions {
            lake: lake_dir.clone(),
            from: s.last_day.clone(),
            to: s.last_day.clone(),
            inventory: Some(s.inventory.clone()),
            queries: None,
            baseline_days: 28,
            suppressions: None,
            max_age_days: 90,
            tool_categories: None,
            api_risk: None,
            engine: Default::default(),
        };
        b.iter(|| rt.block_on(detect::detect(&o)).unwrap().alerts.len())
    });
    g.finish();
}

/// The one line → Arrow path that batch ingest and `watch` share
/// ([`ingest::LineParser`]): secret pre-check, parse, checks and appends to
/// the column builders, over one chunk of real sample lines (ingest's
/// chunk size at most). Its time per element is the parse cost of an event
/// on either path.
fn line_path(c: &mut Criterion) {
    let s = sample(1, 200, if measuring() { 1.0 } else { 0.1 });
    let bytes = std::fs::read(&s.logs[0]).unwrap();
    let cut = bytes[..bytes.len().min(ingest::source::CHUNK_BYTES)].iter().rposition(|&b| b == b'\n').unwrap() + 1;
    let chunk = ingest::source::Chunk { bytes: bytes[..cut].to_vec(), first_line: 1 };
    let n = memchr::memchr_iter(b'\n', &chunk.bytes).count() as u64;
    let parser = ingest::LineParser::new(&[], None, None).unwrap();
    let format = parser.detect(&chunk.bytes);
    let mut g = c.benchmark_group("line_path");
    g.sample_size(10);
    g.throughput(Throughput::Elements(n));
    g.bench_function(format!("gateway_{n}_lines"), |b| {
        b.iter(|| {
            let p = parser.parse(format, "bench.jsonl", "run", black_box(&chunk));
            assert_eq!(p.ingested, n);
            p.events.num_rows()
        })
    });
    g.finish();
}

criterion_group!(benches, record, arrow, whole_file, scoring, line_path);
criterion_main!(benches);
