//! `credtrail ingest s3://bucket/prefix`: inputs read straight from an
//! S3-compatible store (a real moto server on loopback), with the same
//! results, resume rules and bad-input handling as the same files on disk.

use std::path::Path;
use std::process::Output;

use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;
use serde_json::Value;

use crate::common::s3::S3Server;
use crate::common::{credtrail, fixture, gzip, quarantine};

const BUCKET: &str = "org-trail";

/// Runs `credtrail ingest INPUTS --lake LAKE --json` against `server`.
fn ingest(server: &S3Server, lake: &Path, inputs: &[&str], log: &str) -> Output {
    credtrail()
        .envs(server.env())
        .env("RUST_LOG", log)
        .arg("ingest")
        .args(inputs)
        .arg("--lake")
        .arg(lake)
        .arg("--json")
        .output()
        .expect("credtrail runs")
}

fn summary(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("summary is JSON ({e}): {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr)))
}

/// Puts every file under `dir` in the bucket under its path relative to `dir`.
fn upload(server: &S3Server, dir: &Path) {
    let store = server.store(BUCKET);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    for file in crate::common::walk(dir) {
        let key = file.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(&file).unwrap();
        rt.block_on(store.put(&ObjectPath::from(key), bytes.into())).expect("object is put");
    }
}

/// CloudTrail delivery files where AWS puts them, gzipped, and gateway logs.
fn delivery_tree(dir: &Path) {
    let trail = dir.join("AWSLogs/229654561268/CloudTrail/us-east-1/2024/08/01");
    std::fs::create_dir_all(&trail).unwrap();
    for (i, name) in
        ["aws.persistence.iam-create-admin-user.json", "aws.credential-access.secretsmanager-retrieve-secrets.json"]
            .iter()
            .enumerate()
    {
        let text = std::fs::read_to_string(fixture(&format!("stratus/{name}"))).unwrap();
        gzip(&trail.join(format!("229654561268_CloudTrail_us-east-1_20240801T13{i}0Z_x{i}.json.gz")), &text);
    }
    let other = dir.join("AWSLogs/229654561268/CloudTrail/us-west-2/2025/01/21");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::copy(fixture("panther/cloudtrail.json.gz"), other.join("229654561268_CloudTrail_us-west-2_x.json.gz"))
        .unwrap();
    std::fs::create_dir_all(dir.join("gateway")).unwrap();
    std::fs::copy(fixture("litellm/spend_logs.jsonl"), dir.join("gateway/spend_logs.jsonl")).unwrap();
}

/// The lake's events through `credtrail sql`, each with its source file
/// named relative to `root` (a local directory or the bucket's URL), sorted.
fn events(lake: &Path, root: &str) -> Vec<String> {
    let out = credtrail()
        .args(["sql", "--format", "json", "--lake"])
        .arg(lake)
        .args(["-c", "SELECT * FROM events"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut rows: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|mut row| {
            let file = row["source_file"].as_str().unwrap().to_string();
            let rel = file.strip_prefix(root).unwrap_or_else(|| panic!("{file} is under {root}"));
            row["source_file"] = Value::from(rel);
            row.to_string()
        })
        .collect();
    rows.sort();
    rows
}

fn per_file(s: &Value) -> Vec<(String, String, u64)> {
    let files = s["per_file"].as_array().unwrap().iter();
    files
        .map(|f| {
            (f["path"].as_str().unwrap().into(), f["status"].as_str().unwrap().into(), f["ingested"].as_u64().unwrap())
        })
        .collect()
}

#[test]
fn objects_ingest_like_files_and_resume_by_the_same_rules() {
    let server = S3Server::start();
    server.create_bucket(BUCKET);
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    delivery_tree(&data);
    upload(&server, &data);

    // The same tree from the bucket and from disk gives the same events.
    let (s3_lake, local_lake) = (work.path().join("s3-lake"), work.path().join("local-lake"));
    let prefixes = [format!("s3://{BUCKET}/AWSLogs/"), format!("s3://{BUCKET}/gateway")];
    let from_s3 = ingest(&server, &s3_lake, &[&prefixes[0], &prefixes[1]], "error");
    let locals = [data.join("AWSLogs"), data.join("gateway")];
    let local = ingest(&server, &local_lake, &[locals[0].to_str().unwrap(), locals[1].to_str().unwrap()], "error");
    assert_eq!(from_s3.status.code(), local.status.code(), "{}", String::from_utf8_lossy(&from_s3.stderr));
    let (s, l) = (summary(&from_s3), summary(&local));
    assert_eq!(s["files"], 4);
    assert!(s["ingested"].as_u64().unwrap() > 0);
    for key in ["files", "read", "ingested", "quarantined", "redacted", "bytes"] {
        assert_eq!(s[key], l[key], "{key}");
    }
    assert!(per_file(&s).iter().all(|(p, _, _)| p.starts_with("s3://org-trail/")), "{s}");
    let root = format!("{}/", data.canonicalize().unwrap().display());
    assert_eq!(events(&s3_lake, &format!("s3://{BUCKET}/")), events(&local_lake, &root));

    // A rerun reads nothing again.
    let again = summary(&ingest(&server, &s3_lake, &[&prefixes[0], &prefixes[1]], "error"));
    assert_eq!((again["ingested"].as_u64(), again["skipped_files"].as_u64()), (Some(0), Some(4)), "{again}");

    // A new delivery file is the only thing ingested, beside a local file in the same run.
    let extra = work.path().join("extra");
    std::fs::create_dir_all(extra.join("AWSLogs/229654561268/CloudTrail/us-east-1/2024/08/02")).unwrap();
    let text = std::fs::read_to_string(fixture("stratus/aws.exfiltration.ec2-share-ebs-snapshot.json")).unwrap();
    let new_key = "AWSLogs/229654561268/CloudTrail/us-east-1/2024/08/02/229654561268_CloudTrail_us-east-1_new.json.gz";
    gzip(&extra.join(new_key), &text);
    upload(&server, &extra);
    let local_new = work.path().join("more.jsonl");
    std::fs::copy(fixture("stratus/aws.defense-evasion.cloudtrail-event-selectors.json"), &local_new).unwrap();
    let more = summary(&ingest(&server, &s3_lake, &[&prefixes[0], local_new.to_str().unwrap()], "error"));
    let took: Vec<_> = per_file(&more).into_iter().filter(|(_, st, _)| st != "skipped").collect();
    assert_eq!(took.len(), 2, "{more}");
    assert!(
        took.iter().any(|(p, st, n)| *p == format!("s3://{BUCKET}/{new_key}") && st == "ingested" && *n > 0),
        "{more}"
    );
    assert!(took.iter().any(|(p, _, n)| p.ends_with("more.jsonl") && *n > 0), "{more}");

    // An object replaced by a longer version of itself resumes after what was taken, like a grown file.
    let log = data.join("gateway/spend_logs.jsonl");
    let old = std::fs::read_to_string(&log).unwrap();
    let first = old.lines().next().unwrap().replace("chatcmpl-9f1c2a7e-1", "chatcmpl-grown-1");
    std::fs::write(&log, format!("{old}{first}\n")).unwrap();
    std::fs::remove_dir_all(data.join("AWSLogs")).unwrap();
    upload(&server, &data);
    let grown = summary(&ingest(&server, &s3_lake, &[&prefixes[1]], "error"));
    let f = &grown["per_file"][0];
    assert_eq!((f["status"].as_str(), f["ingested"].as_u64()), (Some("ingested"), Some(1)), "{grown}");
    assert_eq!(f["resumed_after_line"].as_u64(), Some(old.lines().count() as u64), "{grown}");
}

/// Each new object is downloaded once: the ingest fetches it and decides it
/// from those bytes (its fingerprint, a copy under another name, a resume),
/// and a rerun downloads nothing. moto's own record of the requests it
/// served is the witness.
#[test]
fn each_new_object_is_downloaded_once_and_a_rerun_downloads_none() {
    let work = tempfile::tempdir().unwrap();
    let requests = work.path().join("requests.jsonl");
    let server = S3Server::start_recording_to(&requests);
    server.create_bucket(BUCKET);
    let data = work.path().join("data");
    delivery_tree(&data);
    // The same delivery object twice, under two keys: one is ingested, the copy skipped.
    let copy = data.join("replica/229654561268_CloudTrail_us-west-2_x.json.gz");
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    std::fs::copy(fixture("panther/cloudtrail.json.gz"), &copy).unwrap();
    upload(&server, &data);
    let keys: Vec<String> =
        crate::common::walk(&data).iter().map(|f| f.strip_prefix(&data).unwrap().to_string_lossy().into()).collect();
    assert_eq!(keys.len(), 5);

    let lake = work.path().join("lake");
    let url = format!("s3://{BUCKET}/");
    server.record();
    let s = summary(&ingest(&server, &lake, &[&url], "error"));
    assert_eq!(
        (s["files"].as_u64(), s["skipped_files"].as_u64(), s["failed_files"].as_u64()),
        (Some(5), Some(1), Some(0))
    );
    assert!(s["ingested"].as_u64().unwrap() > 0, "{s}");
    let copies: Vec<_> = per_file(&s).into_iter().filter(|(p, _, _)| p.ends_with("us-west-2_x.json.gz")).collect();
    assert_eq!(copies.iter().filter(|(_, st, _)| st == "skipped").count(), 1, "{s}");
    let gets = |keys: &[String]| -> Vec<usize> {
        let recorded = S3Server::recorded(&requests);
        keys.iter()
            .map(|k| recorded.iter().filter(|(m, p)| m == "GET" && *p == format!("/{BUCKET}/{k}")).count())
            .collect()
    };
    assert_eq!(gets(&keys), vec![1; keys.len()], "GETs per object of {keys:?}");

    server.record();
    let again = summary(&ingest(&server, &lake, &[&url], "error"));
    assert_eq!((again["ingested"].as_u64(), again["skipped_files"].as_u64()), (Some(0), Some(5)), "{again}");
    assert_eq!(gets(&keys), vec![0; keys.len()], "a rerun downloads nothing");
    assert!(S3Server::recorded(&requests).iter().any(|(m, p)| m == "GET" && p.contains("list-type=2")), "it lists");
}

#[test]
fn a_corrupt_object_is_quarantined_and_the_rest_ingested() {
    let server = S3Server::start();
    server.create_bucket(BUCKET);
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    delivery_tree(&data);
    // gzip's magic, then garbage: as a delivery cut short or damaged in transit.
    let bad = data.join("AWSLogs/229654561268/CloudTrail/us-east-1/2024/08/01/229654561268_CloudTrail_bad.json.gz");
    std::fs::write(&bad, b"\x1f\x8b\x08\x00garbage, not deflate").unwrap();
    upload(&server, &data);

    let lake = work.path().join("lake");
    let out = ingest(&server, &lake, &[&format!("s3://{BUCKET}/AWSLogs")], "error");
    let local = ingest(&server, &work.path().join("local"), &[data.join("AWSLogs").to_str().unwrap()], "error");
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), local.status.code());
    let s = summary(&out);
    let bad_url = format!(
        "s3://{BUCKET}/AWSLogs/229654561268/CloudTrail/us-east-1/2024/08/01/229654561268_CloudTrail_bad.json.gz"
    );
    let files = per_file(&s);
    assert!(files.iter().any(|(p, st, _)| *p == bad_url && st != "ingested"), "{s}");
    assert_eq!(files.iter().filter(|(_, st, n)| st == "ingested" && *n > 0).count(), 3, "{s}");
    let q = quarantine(&lake);
    assert!(
        q.iter().any(|e| e["source_file"] == bad_url.as_str() && !e["reason"].as_str().unwrap().is_empty()),
        "{q:?}"
    );
}

/// Fails with exit 1 and one line on stderr naming `url`; never the secret.
fn assert_one_line_error(out: &Output, url: &str) {
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains(url), "{stderr}");
    for text in [&stdout, &stderr] {
        assert!(!text.contains("credtrail-test-secret"), "the secret key leaked: {text}");
    }
}

#[test]
fn unreachable_stores_missing_buckets_and_empty_prefixes_fail_in_one_line() {
    let mut server = S3Server::start();
    server.create_bucket(BUCKET);
    let work = tempfile::tempdir().unwrap();
    let lake = work.path().join("lake");

    let missing = "s3://no-such-bucket/AWSLogs/";
    assert_one_line_error(&ingest(&server, &lake, &[missing], "debug"), "s3://no-such-bucket/AWSLogs/");
    let empty = format!("s3://{BUCKET}/AWSLogs/none/");
    assert_one_line_error(&ingest(&server, &lake, &[&empty], "debug"), &empty);
    let local_file = fixture("litellm/spend_logs.jsonl");
    server.kill();
    let url = format!("s3://{BUCKET}/AWSLogs/");
    let started = std::time::Instant::now();
    let out = ingest(&server, &lake, &[local_file.to_str().unwrap(), &url], "debug");
    assert_one_line_error(&out, &url);
    assert!(started.elapsed().as_secs() < 60, "gave up after {:?}", started.elapsed());
    // Nothing was committed: the local file is ingested by the next good run.
    assert!(!lake.join("events").exists() || crate::common::events(&lake).is_empty());
}
