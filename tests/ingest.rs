//! End-to-end ingest through the real binary: real files in, real Parquet out.

use crate::common;

use std::collections::BTreeSet;
use std::io::Read;

use common::*;

fn labels(name: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(fixture(&format!("panther/{name}.labels.jsonl")))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn panther_cloudtrail_ingests_223_and_quarantines_16_with_reasons() {
    let lake = tempfile::tempdir().unwrap();
    let file = fixture("panther/cloudtrail.json.gz");
    let (code, s) = ingest(lake.path(), &[&file], &[]);
    assert_eq!(code, 3, "quarantined records make the exit status 3: {s}");
    assert_eq!(s["read"], 239);
    assert_eq!(s["ingested"], 223);
    assert_eq!(s["quarantined"], 16);
    assert_eq!(s["per_file"][0]["format"], "cloudtrail");

    // Exactly the records the labels call not ingestable are quarantined, with a reason.
    let expected: BTreeSet<u64> = labels("cloudtrail")
        .iter()
        .filter(|l| l["ingestable"] == false)
        .map(|l| l["index"].as_u64().unwrap())
        .collect();
    let q = quarantine(lake.path());
    let got: BTreeSet<u64> = q.iter().map(|e| e["record"].as_u64().unwrap()).collect();
    assert_eq!(got, expected);
    for e in &q {
        let reason = e["reason"].as_str().unwrap();
        assert!(reason.contains("eventTime") || reason.contains("eventName"), "{reason}");
        assert!(e["source_file"].as_str().unwrap().ends_with("cloudtrail.json.gz"));
        assert!(e["raw"].as_str().unwrap().starts_with('{'));
    }

    let rows = events(lake.path());
    assert_eq!(rows.len(), 223);
    // The ingested ones are the labelled-ingestable indices, in the events' lineage.
    let ingested: BTreeSet<u64> = rows.iter().map(|r| r["source_record"].as_u64().unwrap()).collect();
    let all: BTreeSet<u64> = (0..239).collect();
    assert_eq!(ingested, all.difference(&expected).copied().collect());
    for r in &rows {
        assert_eq!(r["source"], "cloudtrail");
        assert!(r["credential_id"].as_str().is_some_and(|c| !c.is_empty()));
        assert!(r["action"].is_string());
    }
    // Hive partitions by day, zstd-compressed Parquet.
    let files = parquet_files(&lake.path().join("events"));
    assert!(!files.is_empty());
    for f in &files {
        let dir = f.parent().unwrap().file_name().unwrap().to_str().unwrap();
        assert!(dir.starts_with("date=") && dir.len() == "date=YYYY-MM-DD".len(), "{dir}");
        let meta = parquet::file::reader::SerializedFileReader::new(std::fs::File::open(f).unwrap()).unwrap();
        use parquet::file::reader::FileReader;
        let col = meta.metadata().row_group(0).column(0);
        assert_eq!(col.compression(), parquet::basic::Compression::ZSTD(Default::default()));
    }
}

#[test]
fn every_panther_sample_ingests_with_its_format_detected() {
    let lake = tempfile::tempdir().unwrap();
    let dir = fixture("panther");
    let (_, s) = ingest(lake.path(), &[&dir], &[]);
    let per_file = s["per_file"].as_array().unwrap();
    let by_name = |n: &str| per_file.iter().find(|f| f["path"].as_str().unwrap().ends_with(n)).unwrap().clone();
    // The labels files are JSON lines too but of no known log format: they are
    // quarantined, not mistaken for events.
    for (name, format, records) in [
        ("bedrock-invocation.jsonl.gz", "bedrock-invocation", 8),
        ("openai-audit.jsonl.gz", "openai-audit", 33),
        ("anthropic-activity.jsonl.gz", "anthropic-activity", 38),
    ] {
        let f = by_name(name);
        assert_eq!(f["format"], format, "{f}");
        assert_eq!(f["read"], records, "{f}");
        assert_eq!(f["ingested"], records, "{f}");
        assert_eq!(f["quarantined"], 0, "{f}");
    }
    let rows = events(lake.path());
    let sources: BTreeSet<&str> = rows.iter().map(|r| r["source"].as_str().unwrap()).collect();
    assert_eq!(
        sources,
        ["anthropic-activity", "bedrock-invocation", "cloudtrail", "openai-audit"].into_iter().collect()
    );
    // Bedrock rows carry the model and token counts from the invocation log.
    let bedrock: Vec<_> = rows.iter().filter(|r| r["source"] == "bedrock-invocation").collect();
    assert!(bedrock.iter().all(|r| r["model"].as_str().unwrap().starts_with("anthropic.")));
    assert!(bedrock.iter().all(|r| { r["principal"].as_str().unwrap().starts_with("arn:aws:sts::") }));
}

#[test]
fn reingest_is_a_no_op() {
    let lake = tempfile::tempdir().unwrap();
    let dir = fixture("panther");
    let (_, first) = ingest(lake.path(), &[&dir], &[]);
    let files_before = parquet_files(lake.path());
    let (code, second) = ingest(lake.path(), &[&dir], &[]);
    assert_eq!(code, 0, "{second}");
    assert_eq!(second["skipped_files"], first["files"]);
    assert_eq!(second["ingested"], 0);
    assert_eq!(second["read"], 0);
    assert_eq!(parquet_files(lake.path()), files_before);
    assert_eq!(events(lake.path()).len() as u64, first["ingested"].as_u64().unwrap());

    // The same bytes under another name are recognised too.
    let copy_dir = tempfile::tempdir().unwrap();
    let copy = copy_dir.path().join("renamed.gz");
    std::fs::copy(fixture("panther/cloudtrail.json.gz"), &copy).unwrap();
    let (_, third) = ingest(lake.path(), &[&copy], &[]);
    assert_eq!(third["skipped_files"], 1);
    assert_eq!(third["ingested"], 0);
}

#[test]
fn gzip_truncation_garbage_and_secrets_lose_nothing_and_leak_nothing() {
    let work = tempfile::tempdir().unwrap();
    let lake = work.path().join("lake");
    let input = work.path().join("in");

    // 1) plain file with garbage lines among good ones.
    let mut plain = String::new();
    for i in 0..50 {
        plain.push_str(&gateway_line(i, "key_plain", ""));
        plain.push('\n');
        if i % 10 == 3 {
            plain.push_str("this is not json {\n");
        }
    }
    plain.push_str(&gateway_line(50, "key_plain", "").replace("\"inference\"", "\"teleport\""));
    plain.push('\n');
    write(&input.join("plain.jsonl"), &plain);

    // 2) a gzip file, and a truncated copy of a different gzip file.
    let gz_text: String = (0..400).map(|i| gateway_line(1000 + i, "key_gz", "") + "\n").collect();
    gzip(&input.join("good.jsonl.gz"), &gz_text);
    let trunc_text: String = (0..4000).map(|i| gateway_line(5000 + i, "key_trunc", "") + "\n").collect();
    let full = work.path().join("full.jsonl.gz");
    gzip(&full, &trunc_text);
    let bytes = std::fs::read(&full).unwrap();
    std::fs::write(input.join("truncated.jsonl.gz"), &bytes[..bytes.len() * 2 / 3]).unwrap();

    // 3) secrets in a stored field and in an unstored one.
    let openai = "sk-proj-Zx8PqR2mN4vB6cD8eF0gH2jK4lM6nP8qR0sT2uV4";
    let aws = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKE";
    let mut secret = String::new();
    secret.push_str(
        &gateway_line(9000, "key_leaky", "")
            .replace("triage-bot/1.2", &format!("curl -H 'Authorization: Bearer {openai}'")),
    );
    secret.push('\n');
    secret.push_str(&gateway_line(
        9001,
        "key_leaky",
        &format!(r#","debug":{{"env":{{"AWS_SECRET_ACCESS_KEY":"{aws}"}}}}"#),
    ));
    secret.push('\n');
    secret.push_str(&format!("garbage with {openai} inside\n"));
    write(&input.join("secrets.jsonl"), &secret);

    let (code, s) = ingest(&lake, &[&input], &[]);
    assert_eq!(code, 3);
    let files = s["per_file"].as_array().unwrap();
    let file = |n: &str| files.iter().find(|f| f["path"].as_str().unwrap().ends_with(n)).unwrap().clone();

    let p = file("plain.jsonl");
    assert_eq!((p["read"].as_u64(), p["ingested"].as_u64(), p["quarantined"].as_u64()), (Some(56), Some(50), Some(6)));
    let g = file("good.jsonl.gz");
    assert_eq!((g["ingested"].as_u64(), g["quarantined"].as_u64()), (Some(400), Some(0)));
    let t = file("truncated.jsonl.gz");
    assert_eq!(t["status"], "partial", "{t}");
    assert!(t["error"].as_str().unwrap().len() > 5);
    let t_ing = t["ingested"].as_u64().unwrap();
    assert!(t_ing > 100 && t_ing < 4000, "{t}");
    assert_eq!(t["read"].as_u64().unwrap(), t_ing + t["quarantined"].as_u64().unwrap());

    // ingested + quarantined = read, overall and per file.
    assert_eq!(s["read"].as_u64().unwrap(), s["ingested"].as_u64().unwrap() + s["quarantined"].as_u64().unwrap());
    let rows = events(&lake);
    assert_eq!(rows.len() as u64, s["ingested"].as_u64().unwrap());
    // The truncated file's events are the first ones, contiguous, none lost before the cut.
    let trunc_ids: BTreeSet<String> = rows
        .iter()
        .filter(|r| r["credential_id"] == "key_trunc")
        .map(|r| r["request_id"].as_str().unwrap().to_string())
        .collect();
    let expect: BTreeSet<String> = (5000..5000 + t_ing as usize).map(|i| format!("req_{i:06}")).collect();
    assert_eq!(trunc_ids, expect);

    // Quarantine says where and why, for each bad line.
    let q = quarantine(&lake);
    let plain_q: Vec<_> = q.iter().filter(|e| e["source_file"].as_str().unwrap().ends_with("plain.jsonl")).collect();
    assert_eq!(plain_q.len(), 6);
    assert!(plain_q.iter().any(|e| e["reason"].as_str().unwrap().contains("action")));
    assert!(plain_q.iter().filter(|e| e["raw"] == "this is not json {").count() == 5);
    let line_of_first_garbage = 5; // lines 1-4 good, then garbage
    assert!(plain_q.iter().any(|e| e["record"] == line_of_first_garbage));

    // Secrets: redacted everywhere, reported once per occurrence.
    assert_eq!(s["redacted"], 3, "{s}");
    for f in walk(&lake) {
        let mut bytes = Vec::new();
        std::fs::File::open(&f).unwrap().read_to_end(&mut bytes).unwrap();
        for needle in [openai, aws, &openai[8..30], &aws[..30]] {
            assert!(!contains(&bytes, needle.as_bytes()), "{} holds a secret", f.display());
        }
    }
    let exposures = rows_of(&lake.join("secret_exposures"));
    assert_eq!(exposures.len(), 3);
    let ua = exposures.iter().find(|e| e["field"] == "user_agent").expect("user_agent exposure");
    assert_eq!(ua["credential_id"], "key_leaky");
    assert_eq!(ua["request_id"], "req_009000");
    assert_eq!(ua["kind"], "openai_api_key");
    let env = exposures.iter().find(|e| e["field"] == "debug.env.AWS_SECRET_ACCESS_KEY").expect("aws exposure");
    assert_eq!(env["kind"], "aws_secret_access_key");
    assert_eq!(env["request_id"], "req_009001");
    let garbage = exposures
        .iter()
        .find(|e| e.get("credential_id").is_none_or(|c| c.is_null()))
        .expect("exposure in a quarantined line");
    assert_eq!(garbage["fingerprint"], ua["fingerprint"], "same key, same fingerprint");
    let leaky = rows.iter().find(|r| r["request_id"] == "req_009000").unwrap();
    assert!(leaky["user_agent"].as_str().unwrap().contains("[REDACTED:openai_api_key:"));
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_crashed_run_leaves_no_partial_file_and_is_cleaned_up() {
    let lake = tempfile::tempdir().unwrap();
    let (_, s) = ingest(lake.path(), &[&fixture("panther/bedrock-invocation.jsonl.gz")], &[]);
    assert_eq!(s["ingested"], 8);
    // What a run killed mid-write leaves: a staged file that no commit names.
    let staged = lake.path().join("events/date=2025-05-15/part-crashed-00001.parquet.tmp");
    std::fs::write(&staged, b"PAR1 half a file").unwrap();
    // Queries never see it (not a .parquet name), and the next run removes it.
    assert_eq!(events(lake.path()).len(), 8);
    let (_, s2) = ingest(lake.path(), &[&fixture("panther/openai-audit.jsonl.gz")], &[]);
    assert_eq!(s2["ingested"], 33);
    assert!(!staged.exists());
    assert_eq!(events(lake.path()).len(), 41);
}

#[test]
fn user_mapping_ingests_a_new_source_without_code_changes() {
    let work = tempfile::tempdir().unwrap();
    let mapping = work.path().join("acme.toml");
    write(
        &mapping,
        r#"
name = "acme-proxy"
[match]
has = ["when", "key.id"]
[fields]
ts = { path = "when", time = "epoch_ms" }
request_id = "rid"
credential_id = "key.id"
principal = "key.owner"
provider = { value = "internal" }
action = { path = "verb", map = { "GET" = "read", "POST" = "write" }, default = "tool_call" }
tool = { path = "route", template = "acme:{}" }
status = "code"
"#,
    );
    let log = work.path().join("acme.log");
    write(
        &log,
        "{\"when\":1762041600000,\"rid\":\"r1\",\"key\":{\"id\":\"ak_1\",\"owner\":\"svc:etl\"},\"verb\":\"GET\",\"route\":\"/files\",\"code\":200}\n\
         {\"when\":1762041660000,\"rid\":\"r2\",\"key\":{\"id\":\"ak_1\",\"owner\":\"svc:etl\"},\"verb\":\"DELETE\",\"route\":\"/files\",\"code\":403}\n",
    );
    let lake = work.path().join("lake");
    // Without the mapping the format is unknown and everything is quarantined, with advice.
    let (code, s) = ingest(&lake, &[&log], &[]);
    assert_eq!((code, s["quarantined"].as_u64()), (3, Some(2)));
    assert!(quarantine(&lake)[0]["reason"].as_str().unwrap().contains("--mapping"));
    let lake2 = work.path().join("lake2");
    let (code, s) = ingest(&lake2, &[&log], &["--mapping", mapping.to_str().unwrap()]);
    assert_eq!(code, 0, "{s}");
    assert_eq!(s["ingested"], 2);
    let rows = events(&lake2);
    let r2 = rows.iter().find(|r| r["request_id"] == "r2").unwrap();
    assert_eq!(r2["action"], "tool_call");
    assert_eq!(r2["tool"], "acme:/files");
    assert_eq!(r2["status"], 403);
    assert_eq!(r2["source"], "acme-proxy");
    assert_eq!(r2["ts"], "2025-11-02T00:01:00Z");
}

#[test]
fn missing_input_is_a_clear_error() {
    let lake = tempfile::tempdir().unwrap();
    let out = credtrail().args(["ingest", "no/such/dir", "--lake"]).arg(lake.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no/such/dir") && err.contains("no such file"), "{err}");
}

#[test]
fn sql_sees_the_lake_with_date_partitions() {
    let lake = tempfile::tempdir().unwrap();
    ingest(lake.path(), &[&fixture("panther/cloudtrail.json.gz")], &[]);
    let out = credtrail()
        .args(["sql", "--format", "csv", "--lake"])
        .arg(lake.path())
        .args(["-c", "SELECT count(*) AS n, count(DISTINCT date) AS days FROM events"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let row: Vec<&str> = text.lines().nth(1).unwrap().split(',').collect();
    assert_eq!(row[0], "223");
    let days = parquet_files(&lake.path().join("events"))
        .iter()
        .map(|p| p.parent().unwrap().to_path_buf())
        .collect::<BTreeSet<_>>()
        .len();
    assert_eq!(row[1], days.to_string());
    let out = credtrail()
        .args(["sql", "--format", "csv", "--lake"])
        .arg(lake.path())
        .args(["-c", "SELECT count(*) FROM quarantine"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().nth(1), Some("16"));
}

#[test]
fn a_grown_log_resumes_after_what_was_ingested() {
    let work = tempfile::tempdir().unwrap();
    let lake = work.path().join("lake");
    let log = work.path().join("gateway.log");
    let lines = |r: std::ops::Range<usize>| r.map(|i| gateway_line(i, "key_grow", "") + "\n").collect::<String>();
    write(&log, &lines(0..100));
    let (_, s1) = ingest(&lake, &[&log], &[]);
    assert_eq!(s1["ingested"], 100);

    // The gateway appends; the nightly job runs again.
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    std::io::Write::write_all(&mut f, lines(100..150).as_bytes()).unwrap();
    drop(f);
    let (code, s2) = ingest(&lake, &[&log], &[]);
    assert_eq!(code, 0, "{s2}");
    assert_eq!(s2["ingested"], 50);
    assert_eq!(s2["per_file"][0]["resumed_after_line"], 100);
    let rows = events(&lake);
    let ids: BTreeSet<&str> = rows.iter().map(|r| r["request_id"].as_str().unwrap()).collect();
    assert_eq!((rows.len(), ids.len()), (150, 150), "no event twice, none lost");
    let line_101 = rows.iter().find(|r| r["request_id"] == "req_000100").unwrap();
    assert_eq!(line_101["source_record"], 101);

    // A file replaced by different content under the same name is read whole.
    write(&log, &lines(500..510));
    let (_, s3) = ingest(&lake, &[&log], &[]);
    assert_eq!(s3["ingested"], 10);
    assert!(s3["per_file"][0]["resumed_after_line"].is_null());
}

#[test]
fn a_truncated_download_completed_later_is_finished_not_duplicated() {
    let work = tempfile::tempdir().unwrap();
    let lake = work.path().join("lake");
    let full = work.path().join("full.gz");
    gzip(&full, &(0..3000).map(|i| gateway_line(i, "key_dl", "") + "\n").collect::<String>());
    let bytes = std::fs::read(&full).unwrap();
    let target = work.path().join("in/day.jsonl.gz");
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::write(&target, &bytes[..bytes.len() / 2]).unwrap();
    let (_, s1) = ingest(&lake, &[&target], &[]);
    assert_eq!(s1["per_file"][0]["status"], "partial");
    let first = s1["ingested"].as_u64().unwrap();
    assert!(first > 0 && first < 3000);

    std::fs::write(&target, &bytes).unwrap();
    let (_, s2) = ingest(&lake, &[&target], &[]);
    assert_eq!(s2["per_file"][0]["status"], "ingested", "{s2}");
    assert_eq!(first + s2["ingested"].as_u64().unwrap(), 3000);
    let ids: BTreeSet<String> = events(&lake).iter().map(|r| r["request_id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids.len(), 3000);
}

#[test]
fn a_user_mapping_wins_over_built_in_detection() {
    // A proxy log that happens to use CloudTrail's `eventName` key.
    let work = tempfile::tempdir().unwrap();
    let mapping = work.path().join("proxy.toml");
    write(
        &mapping,
        "name = \"proxy\"\n[match]\nhas = [\"eventName\", \"proxyKey\"]\n[fields]\nts = \"at\"\ncredential_id = \"proxyKey\"\naction = { value = \"tool_call\" }\ntool = \"eventName\"\n",
    );
    let log = work.path().join("proxy.jsonl");
    write(&log, "{\"at\":\"2026-11-02T10:00:00Z\",\"eventName\":\"files.read\",\"proxyKey\":\"pk_1\"}\n");
    let lake = work.path().join("lake");
    let (code, s) = ingest(&lake, &[&log], &["--mapping", mapping.to_str().unwrap()]);
    assert_eq!(code, 0, "{s}");
    assert_eq!(s["per_file"][0]["format"], "proxy");
    assert_eq!(events(&lake)[0]["credential_id"], "pk_1");
    // Without it, CloudTrail claims the file and the records lack a parseable eventTime.
    let (code, s) = ingest(&work.path().join("lake2"), &[&log], &[]);
    assert_eq!((code, s["per_file"][0]["format"].as_str()), (3, Some("cloudtrail")));
}

/// The panther CloudTrail records, re-laid out as other CloudTrail shapes.
fn panther_records() -> Vec<serde_json::Value> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(fixture("panther/cloudtrail.json.gz")).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    doc["Records"].as_array().unwrap().clone()
}

#[test]
fn the_cloudtrail_rule_holds_in_every_layout() {
    let records = panther_records();
    let work = tempfile::tempdir().unwrap();
    // JSON lines, gzip; a pretty-printed delivery file; delivery files concatenated one per line.
    let lines: String = records.iter().map(|r| serde_json::to_string(r).unwrap() + "\n").collect();
    std::fs::create_dir_all(work.path().join("a")).unwrap();
    gzip(&work.path().join("a/trail.jsonl.gz"), &lines);
    let pretty = serde_json::to_string_pretty(&serde_json::json!({ "Records": records })).unwrap();
    write(&work.path().join("b/delivery.json"), &pretty);
    let mut concat = String::new();
    for chunk in records.chunks(50) {
        concat.push_str(&serde_json::to_string(&serde_json::json!({ "Records": chunk })).unwrap());
        concat.push('\n');
    }
    write(&work.path().join("c/hourly.json"), &concat);
    for dir in ["a", "b", "c"] {
        let lake = work.path().join(format!("lake-{dir}"));
        let (code, s) = ingest(&lake, &[&work.path().join(dir)], &[]);
        assert_eq!(code, 3);
        let f = &s["per_file"][0];
        assert_eq!(f["format"], "cloudtrail", "{dir}: {s}");
        assert_eq!(
            (f["read"].as_u64(), f["ingested"].as_u64(), f["quarantined"].as_u64()),
            (Some(239), Some(223), Some(16)),
            "{dir}"
        );
        assert_eq!(f["status"], "ingested", "{dir}: {f}");
    }
}

#[test]
fn a_damaged_delivery_file_keeps_the_records_before_the_damage() {
    let records = panther_records();
    let work = tempfile::tempdir().unwrap();
    let text = serde_json::to_string(&serde_json::json!({ "Records": &records[..40] })).unwrap();
    // Cut in the middle of record 30.
    let cut = text.find(&serde_json::to_string(&records[30]).unwrap()).unwrap() + 40;
    let file = work.path().join("cut.json.gz");
    gzip(&file, &text[..cut]);
    let (code, s) = ingest(&work.path().join("lake"), &[&file], &[]);
    assert_eq!(code, 3);
    let f = &s["per_file"][0];
    assert_eq!(f["status"], "partial");
    assert!(f["error"].as_str().unwrap().contains("record 30"), "{f}");
    assert_eq!(f["read"].as_u64().unwrap(), 31, "30 records and the damaged rest");
    assert_eq!(f["ingested"].as_u64().unwrap() + f["quarantined"].as_u64().unwrap(), 31);
}

#[test]
fn ingesting_a_tree_that_holds_the_lake_skips_the_lake() {
    let work = tempfile::tempdir().unwrap();
    write(&work.path().join("logs/a.jsonl"), &(gateway_line(1, "key_x", "") + "\nnot json\n"));
    let lake = work.path().join("lake");
    let (_, first) = ingest(&lake, &[work.path()], &[]);
    assert_eq!((first["read"].as_u64(), first["quarantined"].as_u64()), (Some(2), Some(1)));
    // The lake now holds a quarantine .jsonl; a second pass must not read it as input.
    let (code, second) = ingest(&lake, &[work.path()], &[]);
    assert_eq!(code, 0, "{second}");
    assert_eq!(second["files"], 1);
}

#[test]
fn kill_9_mid_ingest_then_rerun_gives_every_event_exactly_once() {
    let work = tempfile::tempdir().unwrap();
    let input = work.path().join("in");
    // Enough data that the run is still writing when it is killed.
    for f in 0..4 {
        let text: String =
            (0..30_000).map(|i| gateway_line(f * 100_000 + i, &format!("key_{}", i % 97), "") + "\n").collect();
        write(&input.join(format!("day{f}.jsonl")), &text);
    }
    let lake = work.path().join("lake");
    let bin = assert_cmd::cargo::cargo_bin("credtrail");
    let mut child = std::process::Command::new(&bin)
        .arg("ingest")
        .arg(&input)
        .arg("--lake")
        .arg(&lake)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it as soon as it has staged a file (or whenever it gets there).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        if walk(&lake).iter().any(|p| p.to_string_lossy().ends_with(".tmp")) {
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().ok(); // SIGKILL
    child.wait().unwrap();
    // Whatever moment it died at, readers never see a partial Parquet file.
    for p in parquet_files(&lake) {
        read_parquet(&p);
    }
    let (code, _) = ingest(&lake, &[&input], &[]);
    assert_eq!(code, 0);
    assert!(!walk(&lake).iter().any(|p| p.to_string_lossy().ends_with(".tmp")));
    let rows = events(&lake);
    let ids: BTreeSet<&str> = rows.iter().map(|r| r["request_id"].as_str().unwrap()).collect();
    assert_eq!(rows.len(), 120_000);
    assert_eq!(ids.len(), 120_000);
}

#[test]
fn lake_check_names_a_damaged_file_and_queries_refuse_to_read_it() {
    let work = tempfile::tempdir().unwrap();
    let lake = work.path().join("lake");
    ingest(&lake, &[&fixture("panther/cloudtrail.json.gz")], &[]);
    let check = || credtrail().args(["lake", "check", "--lake"]).arg(&lake).output().unwrap();
    let query = || {
        credtrail()
            .args(["sql", "--lake"])
            .arg(&lake)
            .args(["-c", "SELECT count(DISTINCT credential_id) AS n FROM events"])
            .output()
            .unwrap()
    };
    let out = check();
    assert!(out.status.success() && out.stdout.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(query().status.success());

    // Flip one bit in the middle of the credential column's pages.
    let victim = parquet_files(&lake.join("events")).remove(0);
    let f = std::fs::File::open(&victim).unwrap();
    let meta = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f).unwrap().metadata().clone();
    let chunk = meta.row_group(0).columns().iter().find(|c| c.column_path().string() == "credential_id").unwrap();
    let (start, len) = chunk.byte_range();
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[(start + len / 2) as usize] ^= 0x01;
    std::fs::write(&victim, bytes).unwrap();

    let out = check();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.starts_with(&format!("{}: ", victim.display())), "{stdout}");
    let out = query();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let name = victim.file_name().unwrap().to_string_lossy();
    assert!(!out.status.success() && stderr.contains(&*name) && stderr.contains("damaged"), "{stderr}");
}

/// A CloudTrail record (one JSON line) of `event` by `key`, with extra
/// top-level fields written as JSON text.
fn trail_line(i: usize, key: &str, event: &str, extra: &str) -> String {
    format!(
        r#"{{"eventVersion":"1.08","eventTime":"2026-11-02T10:{:02}:00Z","eventSource":"secretsmanager.amazonaws.com","eventName":"{event}","awsRegion":"us-east-1","sourceIPAddress":"198.51.100.7","userAgent":"aws-cli/2.15","userIdentity":{{"type":"IAMUser","arn":"arn:aws:iam::111122223333:user/ci","accountId":"111122223333","accessKeyId":"{key}"}},"requestID":"r-{i}","eventID":"e-{i}","recipientAccountId":"111122223333"{extra}}}"#,
        i % 60
    )
}

#[test]
fn escaped_nested_multiline_and_file_name_secrets_never_reach_the_lake() {
    let work = tempfile::tempdir().unwrap();
    let lake = work.path().join("lake");
    let input = work.path().join("in");
    let aws = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKE";
    let openai = "sk-proj-Zx8PqR2mN4vB6cD8eF0gH2jK4lM6nP8qR0sT2uV4";
    let in_name = "sk-proj-FiLeNaMe0123456789abcdefghij";
    let pem_body = [
        "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun",
        "VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK",
        "q3Zt8W3M",
    ];
    let token = format!("IQoJb3JpZ2luX2VjE{}", "Ab1/x".repeat(30));

    let mut gw = String::new();
    for i in 0..20 {
        gw += &(gateway_line(i, "key_ok", "") + "\n");
    }
    // `\/` inside an AWS secret key, `\u002d` inside an OpenAI key.
    let escaped_aws = format!("aws_secret_access_key={}", aws.replace('/', r"\/"));
    gw += &(gateway_line(20, "key_leaky", "").replace("triage-bot/1.2", &escaped_aws) + "\n");
    let escaped_openai = openai.replace('-', r"\u002d");
    gw += &(gateway_line(21, "key_leaky", &format!(r#","note":"{escaped_openai}""#)) + "\n");
    // A private key pasted over several lines.
    gw += "-----BEGIN RSA PRIVATE KEY-----\n";
    for l in pem_body {
        gw += &format!("{l}\n");
    }
    gw += "-----END RSA PRIVATE KEY-----\n";
    gw += &(gateway_line(22, "key_ok", "") + "\n");
    write(&input.join(format!("gateway-{in_name}.jsonl")), &gw);

    // CloudTrail: a secret stored with PutSecretValue (a JSON document in a
    // string), and AWS issuing a session token (escaped, so only the decoded
    // value shows it) — redacted, but AWS's own record is no leak.
    let secret_string = format!(r#"{{\"user\":\"app\",\"aws_secret_access_key\":\"{aws}\"}}"#);
    let mut ct = trail_line(
        1,
        "AKIAEXAMPLEKEY000001",
        "PutSecretValue",
        &format!(r#","requestParameters":{{"secretId":"prod/db","secretString":"{secret_string}"}}"#),
    ) + "\n";
    ct += &(trail_line(
        2,
        "AKIAEXAMPLEKEY000001",
        "AssumeRole",
        &format!(
            r#","requestParameters":{{"roleArn":"arn:aws:iam::111122223333:role/r"}},"responseElements":{{"credentials":{{"accessKeyId":"ASIAEXAMPLE000000001","sessionToken":"{}"}}}}"#,
            token.replace('/', r"\/")
        ),
    ) + "\n");
    write(&input.join("trail.jsonl"), &ct);

    let (code, s) = ingest(&lake, &[&input], &[]);
    assert_eq!(code, 3, "the key's lines are quarantined: {s}");
    assert_eq!(s["ingested"], 25, "{s}");
    assert_eq!(s["quarantined"], 5, "{s}");

    // Neither in any file's bytes nor in any value read back (Parquet pages are compressed).
    let needles = [
        &aws[..13],
        &aws[14..21],
        &openai[8..30],
        &in_name[8..],
        pem_body[0],
        &pem_body[1][..20],
        pem_body[2],
        &token[..20],
    ];
    let values = serde_json::to_string(&(events(&lake), rows_of(&lake.join("secret_exposures")))).unwrap();
    for f in walk(&lake) {
        let mut bytes = Vec::new();
        std::fs::File::open(&f).unwrap().read_to_end(&mut bytes).unwrap();
        for needle in needles {
            assert!(!contains(&bytes, needle.as_bytes()), "{} holds {needle}", f.display());
            assert!(!values.contains(needle), "a stored value holds {needle}");
        }
    }
    // The file name is stored redacted, the same way everywhere.
    let rows = events(&lake);
    let gw_file = rows.iter().find(|r| r["credential_id"] == "key_ok").unwrap()["source_file"].as_str().unwrap();
    assert!(gw_file.contains("gateway-[REDACTED:openai_api_key:") && gw_file.ends_with(".jsonl"), "{gw_file}");
    let q = quarantine(&lake);
    assert_eq!(q.len(), 5);
    for e in &q {
        assert_eq!(e["source_file"], gw_file);
        assert!(e["reason"].as_str().unwrap().contains("PEM private key"), "{e}");
        assert!(e["raw"].as_str().unwrap().starts_with("[REDACTED:private_key:"), "{e}");
    }
    // Each leak found once, with its field; the issued session token is not one.
    let exposures = rows_of(&lake.join("secret_exposures"));
    let mut found: Vec<(String, String)> = exposures
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_string(),
                e.get("field").and_then(|f| f.as_str()).unwrap_or("-").to_string(),
            )
        })
        .collect();
    found.sort();
    let expect = [
        ("aws_secret_access_key", "requestParameters.secretString"),
        ("aws_secret_access_key", "user_agent"),
        ("openai_api_key", "note"),
        ("private_key", "-"),
    ];
    assert_eq!(found, expect.map(|(k, f)| (k.to_string(), f.to_string())));
    assert!(
        exposures
            .iter()
            .filter(|e| e.get("field").is_none_or(|f| f != "requestParameters.secretString"))
            .all(|e| e["source_file"] == gw_file)
    );
    let put = rows.iter().find(|r| r["request_id"] == "r-1").unwrap();
    assert!(put["detail"].as_str().unwrap().contains(r#"\"user\":\"app\""#), "{put:?}");
    assert!(put["detail"].as_str().unwrap().contains("[REDACTED:aws_secret_access_key:"), "{put:?}");

    // The fingerprint is still the file's bytes: a rerun skips every file.
    let (code, again) = ingest(&lake, &[&input], &[]);
    assert_eq!((code, again["skipped_files"].as_u64()), (0, Some(2)), "{again}");
}

/// Rewrites every `ts` of an events Parquet file to `ms`, as an older
/// credtrail (which had no time window) could have stored a poisoned line.
fn retime_parquet(from: &std::path::Path, to: &std::path::Path, ms: i64) {
    use arrow::array::{Array, ArrayRef, RecordBatch, TimestampMillisecondArray};
    let batches: Vec<RecordBatch> = read_parquet(from)
        .into_iter()
        .map(|b| {
            let ts: ArrayRef =
                std::sync::Arc::new(TimestampMillisecondArray::from(vec![ms; b.num_rows()]).with_timezone("UTC"));
            let i = b.schema().index_of("ts").unwrap();
            let mut cols = b.columns().to_vec();
            assert_eq!(cols[i].data_type(), ts.data_type());
            cols[i] = ts;
            RecordBatch::try_new(b.schema(), cols).unwrap()
        })
        .collect();
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(to).unwrap(), batches[0].schema(), None).unwrap();
    for b in &batches {
        w.write(b).unwrap();
    }
    w.close().unwrap();
}

#[test]
fn poisoned_times_and_token_counts_are_quarantined_and_detection_still_runs() {
    let work = tempfile::tempdir().unwrap();
    let logs = work.path().join("logs");
    let lake = work.path().join("lake");
    let sample = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-data/logs");
    std::fs::create_dir_all(&logs).unwrap();
    for e in std::fs::read_dir(&sample).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), logs.join(e.file_name())).unwrap();
    }
    let line = |i| gateway_line(i, "key_neighbour", "");
    let poisoned = [
        (line(100).replace("2026-11-02T00:01:40.000Z", "9999-12-31T23:59:59Z"), "outside the accepted window"),
        (line(101).replace("2026-11-02T00:01:41.000Z", "0000-01-01T00:00:00Z"), "outside the accepted window"),
        (line(102).replace("\"tokens_in\":202", "\"tokens_in\":9223372036854775807"), "tokens_in 9223372036854775807"),
        (line(103).replace("\"cost_usd\":0.0031", "\"cost_usd\":1e300"), "cost_usd"),
    ];
    let mut text = String::new();
    for (i, (bad, _)) in poisoned.iter().enumerate() {
        text += &(line(i) + "\n");
        text += &(bad.clone() + "\n");
    }
    write(&logs.join("poison.jsonl"), &text);

    let out =
        credtrail().args(["run", "--no-progress", "-o", "jsonl", "--lake"]).arg(&lake).arg(&logs).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "quarantined records, no failure: {stderr}");
    let alerts = |stdout: &[u8]| String::from_utf8_lossy(stdout).lines().filter(|l| l.starts_with('{')).count();
    assert!(alerts(&out.stdout) > 0, "incidents are printed: {stderr}");

    let q = quarantine(&lake);
    assert_eq!(q.len(), poisoned.len(), "{q:?}");
    for (bad, reason) in &poisoned {
        let id = &bad[bad.find("req_").unwrap()..][..10];
        let e =
            q.iter().find(|e| e["raw"].as_str().unwrap().contains(id)).unwrap_or_else(|| panic!("{id} quarantined"));
        assert!(e["reason"].as_str().unwrap().contains(reason), "{e}");
        assert!(e["source_file"].as_str().unwrap().ends_with("poison.jsonl"));
    }
    let neighbours = events(&lake).into_iter().filter(|r| r["credential_id"] == "key_neighbour").count();
    assert_eq!(neighbours, poisoned.len(), "the good lines around them are ingested");

    // The window is a flag, checked before anything runs.
    let (code, s) = ingest(&lake, &[&logs.join("poison.jsonl")], &["--ts-window", "2026-11-02T00:00:02Z..2030-01-01"]);
    assert_eq!(code, 0, "already ingested: {s}");
    let bad = credtrail()
        .args(["ingest", "--ts-window", "2100-01-01..2000-01-01", "--lake"])
        .arg(&lake)
        .arg(&logs)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("FROM must be before UNTIL"));

    // A lake an older version filled with a year-9999 event still detects.
    let some = parquet_files(&lake.join("events")).remove(0);
    retime_parquet(&some, &lake.join("events/date=9999-12-31/part-legacy-00001.parquet"), 253_402_300_799_000);
    let out = credtrail().args(["detect", "--output", "jsonl", "--lake"]).arg(&lake).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(alerts(&out.stdout) > 0);
}

fn append(path: &std::path::Path, text: &str) {
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
}

/// ingested + quarantined + pending = read, per file and in total, and nothing unaccounted.
fn assert_balanced(s: &serde_json::Value) {
    let n = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"));
    for f in s["per_file"].as_array().unwrap().iter().chain([s]) {
        assert_eq!(n(f, "ingested") + n(f, "quarantined") + n(f, "pending"), n(f, "read"), "{f}");
    }
    assert_eq!(s["unaccounted"], 0, "{s}");
}

#[test]
fn a_half_written_last_line_is_ingested_once_the_writer_completes_it() {
    let work = tempfile::tempdir().unwrap();
    let lake = work.path().join("lake");
    let log = work.path().join("gateway.log");
    let line = |i: usize| gateway_line(i, "key_half", "");
    // 109 whole lines, and the writer is halfway through the 110th.
    let mut text: String = (0..109).map(|i| line(i) + "\n").collect();
    let l110 = line(109);
    let (first_half, second_half) = l110.split_at(l110.len() / 2);
    text.push_str(first_half);
    write(&log, &text);
    let (code, s1) = ingest(&lake, &[&log], &[]);
    assert_eq!(code, 0, "an incomplete last line is no problem yet: {s1}");
    let f = &s1["per_file"][0];
    assert_eq!((f["read"].as_u64(), f["ingested"].as_u64(), f["pending"].as_u64()), (Some(110), Some(109), Some(1)));
    assert_eq!(s1["pending"], 1);
    assert_balanced(&s1);
    assert!(quarantine(&lake).is_empty(), "the fragment is not quarantined");

    // The writer finishes line 110 and writes 111.
    append(&log, &format!("{second_half}\n{}\n", line(110)));
    let (code, s2) = ingest(&lake, &[&log], &[]);
    assert_eq!(code, 0, "{s2}");
    assert_eq!(s2["per_file"][0]["resumed_after_line"], 109);
    assert_eq!((s2["ingested"].as_u64(), s2["pending"].as_u64()), (Some(2), Some(0)), "{s2}");
    assert_balanced(&s2);

    // A last line that is already a whole record is taken without its newline...
    append(&log, &line(111));
    let (_, s3) = ingest(&lake, &[&log], &[]);
    assert_eq!((s3["ingested"].as_u64(), s3["pending"].as_u64()), (Some(1), Some(0)), "{s3}");
    // ...and not again when the newline and more lines follow.
    append(&log, &format!("\n{}\n", line(112)));
    let (_, s4) = ingest(&lake, &[&log], &[]);
    assert_eq!(s4["per_file"][0]["resumed_after_line"], 112);
    assert_eq!(s4["ingested"], 1, "{s4}");

    let rows = events(&lake);
    let mut ids: Vec<&str> = rows.iter().map(|r| r["request_id"].as_str().unwrap()).collect();
    ids.sort();
    let expect: Vec<String> = (0..113).map(|i| format!("req_{i:06}")).collect();
    assert_eq!(ids, expect, "every event in the lake exactly once");
    assert!(quarantine(&lake).is_empty());
}

#[test]
fn a_json_lines_file_whose_first_line_starts_with_a_bracket_is_read_as_lines() {
    let work = tempfile::tempdir().unwrap();
    let body: String = (0..846).map(|i| gateway_line(i, "key_bracket", "") + "\n").collect();
    for (name, first) in [("garbage.jsonl", "[not json at all"), ("array.jsonl", "[1, 2]")] {
        let file = work.path().join(name);
        write(&file, &format!("{first}\n{body}"));
        let lake = work.path().join(format!("lake-{name}"));
        let (code, s) = ingest(&lake, &[&file], &[]);
        assert_eq!(code, 3, "{s}");
        assert_eq!(
            (s["read"].as_u64(), s["ingested"].as_u64(), s["quarantined"].as_u64()),
            (Some(847), Some(846), Some(1))
        );
        assert_balanced(&s);
        assert_eq!(events(&lake).len(), 846);
        let q = quarantine(&lake);
        assert_eq!(q.len(), 1, "{q:?}");
        assert_eq!((q[0]["record"].as_u64(), q[0]["raw"].as_str()), (Some(1), Some(first)));
    }
}

#[test]
fn mixed_input_accounts_for_every_line() {
    let work = tempfile::tempdir().unwrap();
    let input = work.path().join("in");
    let mut mixed = String::from("[ starts like an array\n");
    for i in 0..300 {
        mixed.push_str(&gateway_line(i, "key_mixed", ""));
        mixed.push('\n');
        match i % 50 {
            7 => mixed.push_str("not json\n\n"),
            9 => mixed.push_str(&(gateway_line(i, "key_mixed", "").replace("\"inference\"", "\"teleport\"") + "\n")),
            _ => {}
        }
    }
    mixed.push_str("{\"ts\":\"2026-11-02T");
    write(&input.join("mixed.jsonl"), &mixed);
    write(&input.join("tail.jsonl"), &(gateway_line(900, "key_tail", "") + "\ngarbage\n{\"half"));
    let lines_in = |t: &str| t.lines().filter(|l| !l.trim().is_empty()).count() as u64;
    let lake = work.path().join("lake");
    let (code, s) = ingest(&lake, &[&input], &[]);
    assert_eq!(code, 3, "{s}");
    assert_balanced(&s);
    let files = s["per_file"].as_array().unwrap();
    let file = |n: &str| files.iter().find(|f| f["path"].as_str().unwrap().ends_with(n)).unwrap().clone();
    assert_eq!(file("mixed.jsonl")["read"].as_u64(), Some(lines_in(&mixed)));
    assert_eq!(file("mixed.jsonl")["ingested"], 300);
    assert_eq!(file("tail.jsonl")["read"], 3);
    assert_eq!(s["pending"], 2);
    assert_eq!(events(&lake).len() as u64, s["ingested"].as_u64().unwrap());
    assert_eq!(quarantine(&lake).len() as u64, s["quarantined"].as_u64().unwrap());
}

#[test]
fn raw_truncated_says_whether_anything_was_cut() {
    let work = tempfile::tempdir().unwrap();
    let input = work.path().join("in");
    let big = gateway_line(1, "key_big", &format!(",\"pad\":\"{}\"", "x".repeat(100 << 10)))
        .replace("\"inference\"", "\"teleport\"");
    let huge = format!("{{\"pad\":\"{}\"}}", "y".repeat(17 << 20));
    let text = format!(
        "{}\nshort garbage\n{big}\n{huge}\n{}\n",
        gateway_line(0, "key_big", ""),
        gateway_line(2, "key_big", "")
    );
    write(&input.join("sizes.jsonl"), &text);
    let lake = work.path().join("lake");
    let (code, s) = ingest(&lake, &[&input], &[]);
    assert_eq!(code, 3);
    assert_eq!((s["ingested"].as_u64(), s["quarantined"].as_u64()), (Some(2), Some(3)), "{s}");
    let q = quarantine(&lake);
    let by_line = |n: u64| q.iter().find(|e| e["record"] == n).unwrap_or_else(|| panic!("line {n}: {q:?}"));
    let short = by_line(2);
    assert_eq!((short["raw"].as_str(), short["raw_truncated"].as_bool()), (Some("short garbage"), Some(false)));
    assert_eq!(short["raw_bytes"], 13);
    let cut = by_line(3);
    assert_eq!(cut["raw_truncated"], true);
    assert_eq!(cut["raw_bytes"].as_u64(), Some(big.len() as u64));
    let kept = cut["raw"].as_str().unwrap();
    assert!(kept.len() == 64 << 10 && big.starts_with(kept));
    let long = by_line(4);
    assert_eq!(long["raw_truncated"], true);
    assert_eq!(long["raw_bytes"].as_u64(), Some(huge.len() as u64));
    assert!(long["raw"].as_str().unwrap().len() < huge.len());

    // SQL reads the new column, and a quarantine file from before it as nulls.
    write(
        &lake.join("quarantine/part-old-00001.jsonl"),
        "{\"run_id\":\"old\",\"source_file\":\"f\",\"record\":1,\"format\":null,\"reason\":\"r\",\"raw\":\"x\",\"raw_truncated\":false}\n",
    );
    let out = credtrail()
        .args(["sql", "--format", "json", "--lake"])
        .arg(&lake)
        .arg("-c")
        .arg("SELECT count(*) AS n, count(raw_bytes) AS known, sum(CAST(raw_truncated AS INT)) AS cut FROM quarantine")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let row: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert_eq!((row["n"].as_i64(), row["known"].as_i64(), row["cut"].as_i64()), (Some(4), Some(3), Some(2)), "{row}");
}

#[cfg(unix)]
#[test]
fn bad_directory_entries_are_reported_and_the_rest_ingested() {
    use std::os::unix::fs::{PermissionsExt, symlink};
    let work = tempfile::tempdir().unwrap();
    let input = work.path().join("in");
    write(&input.join("a/good.jsonl"), &(0..20).map(|i| gateway_line(i, "key_walk", "") + "\n").collect::<String>());
    write(&input.join("z/more.jsonl"), &(gateway_line(20, "key_walk", "") + "\n"));
    symlink(input.join("nowhere.jsonl"), input.join("a/dangling.jsonl")).unwrap();
    symlink(&input, input.join("a/loop")).unwrap();
    let locked = input.join("locked");
    write(&locked.join("hidden.jsonl"), &(gateway_line(30, "key_walk", "") + "\n"));
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    // Root reads a mode-000 directory all the same: then there is nothing to skip.
    let unreadable = std::fs::read_dir(&locked).is_err();

    let lake = work.path().join("lake");
    let out = credtrail().arg("ingest").arg(&input).arg("--lake").arg(&lake).arg("--json").output().unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    assert_eq!(out.status.code(), Some(3), "partial: some entries skipped: {s}\n{stderr}");
    assert_eq!(s["ingested"], if unreadable { 21 } else { 22 }, "{s}");
    let skipped = s["skipped_entries"].as_array().unwrap();
    let reason = |name: &str| {
        let e = skipped
            .iter()
            .find(|e| e["path"].as_str().unwrap().ends_with(name))
            .unwrap_or_else(|| panic!("{name}: {s}"));
        e["reason"].as_str().unwrap().to_string()
    };
    assert!(reason("dangling.jsonl").contains("dangling symlink"), "{s}");
    let lp = reason("a/loop");
    assert_eq!(lp.matches("loop").count(), 1, "{lp}");
    assert!(lp.contains(input.to_str().unwrap()), "{lp}");
    if unreadable {
        assert!(reason("locked").contains("ermission denied"), "{s}");
    }
    assert_eq!(skipped.len(), if unreadable { 3 } else { 2 }, "{s}");
    for e in skipped {
        let path = e["path"].as_str().unwrap();
        assert!(stderr.lines().any(|l| l.starts_with("warning:") && l.contains(path)), "{stderr}");
    }
}
