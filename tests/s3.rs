//! A lake on S3-compatible object storage, against moto's real server
//! (tests/common/s3.rs): readers see the same rows as on a local lake,
//! writers (ingest, run, watch) give the same lake and alerts as on a local
//! one, concurrent and killed writers lose and double nothing, and failures
//! of the store or the URL give one line naming the URL, never a credential.

use crate::common;

use std::io::Write as _;
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
    let out = run(&l.server, &["lake", "check", "--lake", &lake], "error");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.starts_with(&format!("{lake}/{rel}: content changed")), "{stdout}");
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

/// `SELECT … FROM events`: rows and distinct request ids, as CSV.
const COUNT: &str = "SELECT count(*) AS n, count(DISTINCT request_id) AS ids FROM events";

/// The keys under `prefix` in the bucket.
fn keys(server: &S3Server, prefix: &str) -> Vec<String> {
    use futures::TryStreamExt;
    use object_store::ObjectStore;
    let store = server.store(BUCKET);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let prefix = ObjectPath::from(prefix);
    let listed: Vec<_> = rt.block_on(store.list(Some(&prefix)).try_collect()).unwrap();
    listed.into_iter().map(|m| m.location.to_string()).collect()
}

/// A server with an empty bucket, and the URL of a lake to be in it.
fn empty_lake() -> (S3Server, String) {
    let server = S3Server::start();
    server.create_bucket(BUCKET);
    (server, format!("s3://{BUCKET}/lake"))
}

/// Starts credtrail with the server's environment and `env`, its output piped.
fn spawn(server: &S3Server, args: &[&str], env: &[(&str, &str)]) -> std::process::Child {
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("credtrail"));
    cmd.envs(server.env()).env("RUST_LOG", "error").envs(env.iter().copied()).args(args);
    cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap()
}

/// `credtrail ingest … --json` with the server's environment.
fn ingest_into(server: &S3Server, lake: &str, inputs: &[&Path]) -> serde_json::Value {
    let mut args = vec!["ingest", "--json", "--no-progress", "--lake", lake];
    args.extend(inputs.iter().map(|p| p.to_str().unwrap()));
    let out = run(server, &args, "error");
    assert!(out.status.success(), "{lake}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Gateway log `name` in `dir` with requests `range` (ids req_<i>).
fn gateway_log(dir: &Path, name: &str, range: std::ops::Range<usize>) -> std::path::PathBuf {
    let path = dir.join(name);
    write(&path, &range.map(|i| format!("{}\n", gateway_line(i, &format!("cred-{}", i % 7), ""))).collect::<String>());
    path
}

#[test]
fn run_on_an_s3_lake_gives_the_lake_and_alerts_of_a_local_lake() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("sample");
    generate_sample(&data, 21, &["--days", "3", "--credentials", "12", "--rate-scale", "0.2"]);
    let (logs, inventory) = (data.join("logs"), data.join("inventory.csv"));
    let server = S3Server::start();
    server.create_bucket(BUCKET);
    let remote = format!("s3://{BUCKET}/lake");
    let local = work.path().join("lake");
    for lake in [local.to_str().unwrap(), remote.as_str()] {
        let args = [
            "run",
            logs.to_str().unwrap(),
            "--inventory",
            inventory.to_str().unwrap(),
            "--no-progress",
            "--lake",
            lake,
        ];
        let out = run(&server, &args, "error");
        assert!(out.status.success(), "{lake}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let statements = "SELECT * FROM alerts ORDER BY alert_id; \
                      SELECT count(*) AS n, count(DISTINCT credential_id) AS creds FROM events; \
                      SELECT * FROM events ORDER BY credential_id, ts, request_id, source_file, source_record LIMIT 50; \
                      SELECT * FROM baseline_credentials ORDER BY credential_id, until";
    let here = sql(&server, local.to_str().unwrap(), statements);
    let alerts = sql(&server, local.to_str().unwrap(), "SELECT count(*) AS n FROM alerts");
    assert!(alerts.lines().nth(1).and_then(|n| n.parse::<u64>().ok()).is_some_and(|n| n > 0), "{alerts}");
    assert_eq!(sql(&server, &remote, statements), here);
    // Nothing staged is left; the lease was released for the next writer.
    assert!(keys(&server, "lake/_ingest/staged").is_empty());
    let store = server.store(BUCKET);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let lease = rt.block_on(async { store.get(&ObjectPath::from("lake/_ingest/lock")).await?.bytes().await }).unwrap();
    let lease: serde_json::Value = serde_json::from_slice(&lease).unwrap();
    assert_eq!(lease["released"], true, "{lease}");
    // A rerun takes nothing twice: resume reads the S3 lake's commit records.
    let again = ingest_into(&server, &remote, &[&logs]);
    assert_eq!((again["ingested"].as_u64(), again["run_id"].as_str()), (Some(0), None), "{again}");
    // Every object as its commit recorded it.
    let out = run(&server, &["lake", "check", "--lake", &remote], "error");
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && out.stdout.is_empty(), "{summary}{}", String::from_utf8_lossy(&out.stdout));
    let files = parquet_files(&local).len() + walk(&local.join("quarantine")).len();
    assert!(summary.contains(&format!("checked {files} file(s), {files} against their commit records")), "{summary}");
}

#[test]
fn concurrent_ingests_into_one_s3_lake_take_every_event_once() {
    let work = tempfile::tempdir().unwrap();
    let a = gateway_log(work.path(), "a.jsonl", 0..3000);
    let b = gateway_log(work.path(), "b.jsonl", 3000..6000);
    let c = gateway_log(work.path(), "c.jsonl", 6000..9000);
    let (server, lake) = empty_lake();
    // Overlapping inputs: b is in both.
    let writers: Vec<_> = [[&a, &b], [&b, &c]]
        .into_iter()
        .map(|inputs| {
            let [x, y] = inputs.map(|p| p.to_str().unwrap());
            spawn(&server, &["ingest", "--json", "--no-progress", "--lake", &lake, x, y], &[])
        })
        .collect();
    let mut ingested = 0;
    for w in writers {
        let out = w.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        ingested += summary["ingested"].as_u64().unwrap();
    }
    assert_eq!(ingested, 9000, "b was taken by one writer only");
    let local = work.path().join("lake");
    assert_eq!(ingest(&local, &[&a, &b, &c], &[]).0, 0);
    let here = sql(&server, local.to_str().unwrap(), COUNT);
    assert_eq!(here, "n,ids\n9000,9000\n");
    assert_eq!(sql(&server, &lake, COUNT), here);
}

#[test]
fn an_ingest_killed_after_its_commit_record_is_rolled_forward_by_the_next() {
    let work = tempfile::tempdir().unwrap();
    let a = gateway_log(work.path(), "a.jsonl", 0..2000);
    let b = gateway_log(work.path(), "b.jsonl", 2000..4000);
    let c = gateway_log(work.path(), "c.jsonl", 4000..5000);
    let (server, lake) = empty_lake();
    ingest_into(&server, &lake, &[&a]);
    let records = keys(&server, "lake/_ingest/commits").len();
    // A debug build waits after writing the commit record when told to: killed
    // there, the run is committed but none of its files is in place.
    let args = ["ingest", "--no-progress", "--lake", &lake, b.to_str().unwrap()];
    let mut child = spawn(&server, &args, &[("CREDTRAIL_TEST_STALL_AFTER_COMMIT_MS", "120000")]);
    let started = Instant::now();
    while keys(&server, "lake/_ingest/commits").len() == records {
        assert!(started.elapsed() < Duration::from_secs(120), "the commit record appears");
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!keys(&server, "lake/_ingest/staged").is_empty(), "killed before its files were in place");
    assert_eq!(sql(&server, &lake, COUNT), "n,ids\n2000,2000\n", "nothing of b is visible");
    // What a run killed before its commit point leaves: staged objects, no record.
    let store = server.store(BUCKET);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let orphan = "lake/_ingest/staged/20990101T000000Z-000000000-1";
    for rel in ["_pending", "events/date=2026-11-02/part-20990101T000000Z-000000000-1-00001.parquet"] {
        rt.block_on(store.put(&ObjectPath::from(format!("{orphan}/{rel}")), PutPayload::from("partial"))).unwrap();
    }

    // The next writer waits out the dead one's lease, then repairs the lake.
    let started = Instant::now();
    let out = run(
        &server,
        &["ingest", "--json", "--no-progress", "--lake", &lake, c.to_str().unwrap(), b.to_str().unwrap()],
        "warn",
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("another writer") && log.contains("30 s"), "says what it waits for: {log}");
    assert!(started.elapsed() >= Duration::from_secs(20), "the dead writer's lease was honoured");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["ingested"].as_u64(), Some(1000), "b was committed by the killed run: {summary}");
    assert!(keys(&server, "lake/_ingest/staged").is_empty(), "rolled forward and cleaned up");
    let local = work.path().join("lake");
    assert_eq!(ingest(&local, &[&a, &b, &c], &[]).0, 0);
    let statements = format!("{COUNT}; SELECT * FROM events ORDER BY request_id LIMIT 20");
    let here = sql(&server, local.to_str().unwrap(), &statements);
    assert!(here.starts_with("n,ids\n5000,5000\n"), "{here}");
    assert_eq!(sql(&server, &lake, &statements), here);
}

#[test]
fn a_store_killed_mid_commit_fails_the_ingest_in_one_line() {
    let work = tempfile::tempdir().unwrap();
    let a = gateway_log(work.path(), "a.jsonl", 0..500);
    let (mut server, lake) = empty_lake();
    let secret = server.env().into_iter().find(|(k, _)| *k == "AWS_SECRET_ACCESS_KEY").unwrap().1;
    // A writer pointed at a bucket that does not exist stops before reading anything.
    let missing = "s3://no-such-bucket/lake";
    let out = run(&server, &["ingest", "--no-progress", "--lake", missing, a.to_str().unwrap()], "error");
    one_line_failure(&out, &[missing]);
    let args = ["ingest", "--no-progress", "--lake", &lake, a.to_str().unwrap()];
    let child = spawn(&server, &args, &[("CREDTRAIL_TEST_STALL_AFTER_COMMIT_MS", "1500")]);
    let started = Instant::now();
    while keys(&server, "lake/_ingest/commits").is_empty() {
        assert!(started.elapsed() < Duration::from_secs(60), "the commit record appears");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Between the commit point and the copies: the store goes away.
    server.kill();
    let out = child.wait_with_output().unwrap();
    let err = one_line_failure(&out, &[&lake]);
    assert!(!err.contains(&secret), "{err}");
    assert!(started.elapsed() < Duration::from_secs(120), "gave up in {:?}", started.elapsed());
}

#[test]
fn watch_on_an_s3_lake_commits_each_line_once_across_a_kill_and_restart() {
    let work = tempfile::tempdir().unwrap();
    let log = gateway_log(work.path(), "gw.jsonl", 0..1500);
    let (server, lake) = empty_lake();
    let watch = || {
        let args = ["watch", "--from-beginning", "--flush-interval", "200ms", "--lake", &lake, "--follow"];
        spawn(&server, &[&args[..], &[log.to_str().unwrap()]].concat(), &[])
    };
    let rows = || {
        let out = run(&server, &["sql", "--format", "csv", "--lake", &lake, "-c", COUNT], "error");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let wait_for = |want: &str| {
        let started = Instant::now();
        while rows() != want {
            assert!(started.elapsed() < Duration::from_secs(90), "{want:?} never came: {}", rows());
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    let mut first = watch();
    wait_for("n,ids\n1500,1500\n");
    // SIGKILL: no chance to flush or to release anything.
    first.kill().unwrap();
    first.wait().unwrap();
    let more: String = (1500..2500).map(|i| format!("{}\n", gateway_line(i, "cred-b", ""))).collect();
    std::fs::OpenOptions::new().append(true).open(&log).unwrap().write_all(more.as_bytes()).unwrap();
    let second = watch();
    wait_for("n,ids\n2500,2500\n");
    let pid = second.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let out = second.wait_with_output().unwrap();
    assert!(out.status.success(), "watch stops cleanly");
    assert_eq!(rows(), "n,ids\n2500,2500\n", "nothing twice after the restart");
    // The watcher's state is in the lake: its checkpoint, one file.
    assert_eq!(keys(&server, "lake/_stream/watch").iter().filter(|k| k.ends_with(".json")).count(), 1);
    assert!(keys(&server, "lake/_ingest/staged").is_empty());
}

#[test]
fn a_wrong_secret_or_an_unknown_key_gives_one_line_and_no_secret() {
    let server = S3Server::start_with_auth(BUCKET);
    let work = tempfile::tempdir().unwrap();
    let a = gateway_log(work.path(), "a.jsonl", 0..200);
    let lake = format!("s3://{BUCKET}/lake");
    // With the key moto issued, the lake is written and read.
    ingest_into(&server, &lake, &[&a]);
    assert_eq!(sql(&server, &lake, COUNT), "n,ids\n200,200\n");
    let secret = server.env().into_iter().find(|(k, _)| *k == "AWS_SECRET_ACCESS_KEY").unwrap().1;
    let wrong = "not-the-secret-0f3c9a";
    let fresh = format!("s3://{BUCKET}/fresh");
    let input = a.to_str().unwrap();
    for (args, key_id, code) in [
        (vec!["sql", "--lake", lake.as_str(), "-c", COUNT], None, "SignatureDoesNotMatch"),
        (vec!["ingest", "--no-progress", "--lake", lake.as_str(), input], None, "SignatureDoesNotMatch"),
        (vec!["ingest", "--no-progress", "--lake", fresh.as_str(), input], None, "SignatureDoesNotMatch"),
        (vec!["sql", "--lake", lake.as_str(), "-c", COUNT], Some("AKIAUNKNOWN000000000"), "InvalidAccessKeyId"),
    ] {
        let mut cmd = credtrail();
        cmd.envs(server.env()).env("AWS_SECRET_ACCESS_KEY", wrong).args(&args).timeout(Duration::from_secs(120));
        if let Some(id) = key_id {
            cmd.env("AWS_ACCESS_KEY_ID", id);
        }
        let out = cmd.output().unwrap();
        let err = one_line_failure(&out, &[args[args.iter().position(|a| *a == "--lake").unwrap() + 1], code]);
        assert!(err.contains("credentials in the environment"), "says what to check: {err}");
        let all = format!("{}{err}", String::from_utf8_lossy(&out.stdout));
        assert!(!all.contains(wrong) && !all.contains(&secret), "{args:?} printed a secret: {all}");
    }
    // The refused ingest changed nothing.
    assert_eq!(sql(&server, &lake, COUNT), "n,ids\n200,200\n");
    assert!(keys(&server, "fresh").is_empty());
}

/// The usual AWS configuration includes a named profile: with no key in the environment,
/// `AWS_PROFILE` picks the keys from `~/.aws/credentials` and the region and endpoint from
/// `~/.aws/config`, and moto (checking every signature) accepts them; the same profile with a
/// wrong secret is refused in one line that prints neither secret.
#[test]
fn a_named_profile_of_the_aws_files_reaches_the_lake() {
    let server = S3Server::start_with_auth(BUCKET);
    let work = tempfile::tempdir().unwrap();
    let a = gateway_log(work.path(), "a.jsonl", 0..50);
    let lake = format!("s3://{BUCKET}/lake");
    ingest_into(&server, &lake, &[&a]);
    let env: std::collections::HashMap<&str, String> = server.env().into_iter().collect();
    let home = work.path().join("home");
    std::fs::create_dir_all(home.join(".aws")).unwrap();
    let config =
        format!("[profile audit]\nregion = {}\nendpoint_url = {}\n", env["AWS_REGION"], env["AWS_ENDPOINT_URL"]);
    std::fs::write(home.join(".aws/config"), config).unwrap();
    let query = |secret: &str| {
        let credentials =
            format!("[audit]\naws_access_key_id = {}\naws_secret_access_key = {secret}\n", env["AWS_ACCESS_KEY_ID"]);
        std::fs::write(home.join(".aws/credentials"), credentials).unwrap();
        let mut cmd = credtrail();
        for var in
            ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION"]
        {
            cmd.env_remove(var);
        }
        cmd.env("HOME", &home).env("AWS_PROFILE", "audit").env("AWS_ALLOW_HTTP", "true");
        cmd.args(["sql", "--format", "csv", "--lake", &lake, "-c", COUNT]).timeout(Duration::from_secs(120));
        cmd.output().unwrap()
    };
    let out = query(&env["AWS_SECRET_ACCESS_KEY"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "n,ids\n50,50\n");
    let wrong = "not-the-profile-secret-77";
    let out = query(wrong);
    let err = one_line_failure(&out, &[&lake, "SignatureDoesNotMatch"]);
    let all = format!("{}{err}", String::from_utf8_lossy(&out.stdout));
    assert!(!all.contains(wrong) && !all.contains(&env["AWS_SECRET_ACCESS_KEY"]), "{all}");
}

/// Small files merge on object storage as on disk: by size tier as ingests
/// write a day, then all of them by `lake compact`; every row once, and
/// every object as its commit recorded it.
#[test]
fn small_files_of_an_s3_lake_merge_as_ingests_write_and_by_lake_compact() {
    let work = tempfile::tempdir().unwrap();
    let (server, lake) = empty_lake();
    for k in 0..9 {
        let log = gateway_log(work.path(), &format!("{k}.jsonl"), 10 * k..10 * (k + 1));
        ingest_into(&server, &lake, &[&log]);
    }
    let events = || keys(&server, "lake/events").into_iter().filter(|k| k.ends_with(".parquet")).count();
    // The ninth ingest merged the eight files before it (ten rows each, one tier): that one and its own.
    assert_eq!(events(), 2);
    let out = run(&server, &["lake", "compact", "--lake", &lake], "error");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.starts_with("merged 2 small event file(s) of 1 day(s)"), "{stdout}");
    assert_eq!(events(), 1);
    assert_eq!(sql(&server, &lake, COUNT), "n,ids\n90,90\n");
    let out = run(&server, &["lake", "check", "--lake", &lake], "error");
    assert!(out.status.success() && out.stdout.is_empty(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(keys(&server, "lake/_ingest/staged").is_empty());
}
