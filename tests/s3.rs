//! A lake on S3-compatible object storage, against moto's real server
//! (tests/common/s3.rs): readers see the same rows as on a local lake,
//! writers refuse it with one line, and failures of the store or the URL
//! give one line naming the URL, never a credential.

use crate::common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::s3::S3Server;
use common::*;
use object_store::{ObjectStoreExt, PutPayload, path::Path as ObjectPath};

const BUCKET: &str = "credtrail-lake";

/// A local lake with events and alerts, the same lake copied to
/// `s3://BUCKET/lake`, and the server holding it.
struct Lakes {
    _work: tempfile::TempDir,
    local: std::path::PathBuf,
    server: S3Server,
}

fn lakes() -> Lakes {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("sample");
    generate_sample(&data, 21, &["--days", "3", "--credentials", "12", "--rate-scale", "0.2"]);
    let local = work.path().join("lake");
    let (code, _) = ingest(&local, &[&data.join("logs")], &[]);
    assert_eq!(code, 0);
    let out = credtrail().args(["detect", "--lake"]).arg(&local).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let server = S3Server::start();
    server.create_bucket(BUCKET);
    upload(&server, &local, "lake");
    Lakes { _work: work, local, server }
}

/// Copies every file under `dir` to `prefix/<relative path>` in the bucket.
fn upload(server: &S3Server, dir: &Path, prefix: &str) {
    let store = server.store(BUCKET);
    let rt = tokio::runtime::Runtime::new().unwrap();
    for file in walk(dir) {
        let rel = file.strip_prefix(dir).unwrap().to_string_lossy().replace('\\', "/");
        let key = ObjectPath::from(format!("{prefix}/{rel}"));
        rt.block_on(store.put(&key, PutPayload::from(std::fs::read(&file).unwrap()))).unwrap();
    }
}

/// Runs credtrail with the server's environment (and `RUST_LOG` as given).
fn run(server: &S3Server, args: &[&str], log: &str) -> std::process::Output {
    let mut cmd = credtrail();
    cmd.envs(server.env()).env("RUST_LOG", log).args(args).timeout(Duration::from_secs(120));
    cmd.output().unwrap()
}

fn sql(server: &S3Server, lake: &str, statements: &str) -> String {
    let out = run(server, &["sql", "--format", "csv", "--lake", lake, "-c", statements], "error");
    assert!(out.status.success(), "{lake}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Asserts a failure: exit 1 and one line on stderr containing every one of `names`.
fn one_line_failure(out: &std::process::Output, names: &[&str]) -> String {
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(!err.contains("panicked"), "{err}");
    for n in names {
        assert!(err.contains(n), "{n:?} in {err}");
    }
    err
}

#[test]
fn sql_on_an_s3_lake_gives_the_rows_of_the_same_local_lake() {
    let l = lakes();
    let statements = "SELECT count(*) AS n, count(DISTINCT credential_id) AS creds FROM events; \
                      SELECT * FROM alerts ORDER BY alert_id; \
                      SELECT * FROM events ORDER BY credential_id, ts, request_id, source_file, source_record LIMIT 50";
    let local = sql(&l.server, l.local.to_str().unwrap(), statements);
    let remote = sql(&l.server, &format!("s3://{BUCKET}/lake"), statements);
    assert!(local.lines().count() > 50, "the lake has rows: {local}");
    assert!(local.contains("alert_id"), "{local}");
    assert_eq!(remote, local);
    // A file:// URL is the same local lake.
    assert_eq!(sql(&l.server, &format!("file://{}", l.local.display()), statements), local);
}

#[test]
fn a_damaged_object_in_an_s3_lake_is_refused_by_name() {
    let l = lakes();
    let store = l.server.store(BUCKET);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let rel = parquet_files(&l.local.join("events"))[0].strip_prefix(&l.local).unwrap().to_string_lossy().into_owned();
    let key = ObjectPath::from(format!("lake/{rel}"));
    let mut bytes = rt.block_on(async { store.get(&key).await.unwrap().bytes().await.unwrap() }).to_vec();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    rt.block_on(store.put(&key, PutPayload::from(bytes))).unwrap();
    let lake = format!("s3://{BUCKET}/lake");
    let out = run(&l.server, &["sql", "--lake", &lake, "-c", "SELECT count(*) FROM events"], "error");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("damaged") && err.contains(rel.rsplit('/').next().unwrap()), "{err}");
}

#[test]
fn writers_refuse_an_s3_lake_with_one_line() {
    let server = S3Server::start();
    server.create_bucket(BUCKET);
    let work = tempfile::tempdir().unwrap();
    let log = work.path().join("a.jsonl");
    write(&log, &format!("{}\n", gateway_line(0, "cred-a", "")));
    let lake = format!("s3://{BUCKET}/lake");
    let out = run(&server, &["ingest", log.to_str().unwrap(), "--lake", &lake], "error");
    one_line_failure(&out, &[&lake, "not supported on an object-store lake yet"]);
    let out = run(&server, &["lake", "check", "--lake", &lake], "error");
    one_line_failure(&out, &[&lake, "not supported on an object-store lake yet"]);
}

#[test]
fn a_missing_bucket_an_empty_prefix_and_a_dead_endpoint_each_give_one_line() {
    let mut server = S3Server::start();
    server.create_bucket(BUCKET);
    let missing = "s3://no-such-bucket/lake";
    let out = run(&server, &["sql", "--lake", missing, "-c", "SELECT 1"], "error");
    one_line_failure(&out, &[missing]);
    let empty = format!("s3://{BUCKET}/nothing-here");
    let out = run(&server, &["sql", "--lake", &empty, "-c", "SELECT 1"], "error");
    one_line_failure(&out, &[&empty, "not a credtrail lake"]);
    server.kill();
    let lake = format!("s3://{BUCKET}/lake");
    let started = Instant::now();
    let out = run(&server, &["sql", "--lake", &lake, "-c", "SELECT 1"], "error");
    one_line_failure(&out, &[&lake]);
    assert!(started.elapsed() < Duration::from_secs(60), "gave up in {:?}", started.elapsed());
}

#[test]
fn the_secret_key_is_never_printed_even_at_debug() {
    let l = lakes();
    let secret = l.server.env().into_iter().find(|(k, _)| *k == "AWS_SECRET_ACCESS_KEY").unwrap().1;
    let lake = format!("s3://{BUCKET}/lake");
    for (args, log) in [
        (vec!["sql", "--lake", lake.as_str(), "-c", "SELECT count(*) FROM alerts"], "debug"),
        (vec!["sql", "--lake", "s3://no-such-bucket/x", "-c", "SELECT 1"], "trace"),
        (vec!["detect", "--lake", lake.as_str()], "debug"),
    ] {
        let out = run(&l.server, &args, log);
        let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!all.contains(&secret), "{args:?} printed the secret key");
        assert!(!all.is_empty(), "{args:?} logged something at {log}");
    }
}

#[test]
fn report_on_an_s3_lake_is_the_report_of_the_same_local_lake() {
    let l = lakes();
    let lake = format!("s3://{BUCKET}/lake");
    let mut pages = Vec::new();
    for (from, name) in [(lake.as_str(), "remote.html"), (l.local.to_str().unwrap(), "local.html")] {
        let page = l.local.parent().unwrap().join(name);
        let out = run(&l.server, &["report", "--lake", from, "-o", page.to_str().unwrap()], "error");
        assert!(out.status.success(), "{from}: {}", String::from_utf8_lossy(&out.stderr));
        pages.push(std::fs::read_to_string(&page).unwrap().replace(from, "LAKE"));
    }
    // The baselines detect learned are found on both (listed, not read from disk).
    assert!(pages[1].contains("baseline until="), "the local lake has a baseline");
    assert_eq!(pages[0], pages[1]);
}
