//! Hot paths of ingest: parsing a gateway line, mapping a CloudTrail record,
//! redaction's scan of a clean record, and a whole file into a lake.
//! Run with `cargo bench --bench ingest`.

use std::hint::black_box;
use std::io::Write;

use credtrail::ingest::{self, cloudtrail, gateway};
use credtrail::secrets;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const LINE: &str = r#"{"ts":"2026-11-02T14:03:07.123Z","request_id":"req_8f3a9c2d1e4b5a60","credential_id":"key_7QF2M9KD3XPA","principal":"agent:support-triage","session_id":"sess_41c9","source_ip":"10.20.30.41","user_agent":"triage-bot/1.4 (+python-httpx)","provider":"openai","model":"gpt-4o-mini","action":"tool_call","tool":"github.get_file","resource":"github://acme/payments/README.md","status":200,"error_code":null,"latency_ms":512,"tokens_in":1834,"tokens_out":212,"cost_usd":0.00041}"#;

const CLOUDTRAIL: &str = r#"{"eventVersion":"1.08","userIdentity":{"type":"AssumedRole","principalId":"AROAEXAMPLE:agent","arn":"arn:aws:sts::123456789012:assumed-role/agent-role/agent","accountId":"123456789012","accessKeyId":"ASIAEXAMPLEKEY000001","sessionContext":{"sessionIssuer":{"type":"Role","arn":"arn:aws:iam::123456789012:role/agent-role","accountId":"123456789012","userName":"agent-role"}}},"eventTime":"2026-11-02T14:03:07Z","eventSource":"bedrock.amazonaws.com","eventName":"InvokeModel","awsRegion":"us-east-1","sourceIPAddress":"198.51.100.7","userAgent":"Boto3/1.34.0","requestParameters":{"modelId":"anthropic.claude-3-haiku-20240307-v1:0"},"responseElements":null,"requestID":"0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0","eventID":"1a2b3c4d-5e6f-7081-92a3-b4c5d6e7f809","readOnly":true,"eventType":"AwsApiCall","managementEvent":false,"recipientAccountId":"123456789012"}"#;

fn micro(c: &mut Criterion) {
    let mut g = c.benchmark_group("record");
    g.throughput(Throughput::Bytes(LINE.len() as u64));
    g.bench_function("gateway_parse", |b| b.iter(|| gateway::parse(black_box(LINE)).unwrap().ts_ms));
    g.bench_function("redact_scan_clean", |b| b.iter(|| secrets::redact(black_box(LINE)).exposures.len()));
    g.throughput(Throughput::Bytes(CLOUDTRAIL.len() as u64));
    g.bench_function("cloudtrail_parse_and_map", |b| {
        b.iter(|| {
            let v: serde_json::Value = serde_json::from_str(black_box(CLOUDTRAIL)).unwrap();
            cloudtrail::map_record(&v).unwrap().ts_ms
        })
    });
    g.finish();
}

fn whole_file(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("gateway.jsonl");
    let n = 100_000;
    let mut f = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
    for i in 0..n {
        let line = LINE
            .replace("req_8f3a9c2d1e4b5a60", &format!("req_{i:016x}"))
            .replace("key_7QF2M9KD3XPA", &format!("key_{:012}", i % 200));
        writeln!(f, "{line}").unwrap();
    }
    drop(f);
    let bytes = std::fs::metadata(&input).unwrap().len();
    let mut g = c.benchmark_group("file");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function("ingest_100k_gateway_lines", |b| {
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

criterion_group!(benches, micro, whole_file);
criterion_main!(benches);
