//! The other commands through the real binary: sample → ingest → inventory.

use crate::common;

use common::*;

fn sample(out: &std::path::Path, seed: u64) {
    generate_sample(out, seed, &["--days", "5", "--credentials", "24", "--rate-scale", "0.3", "--gzip"]);
}

fn csv_rows(path: &std::path::Path) -> Vec<std::collections::HashMap<String, String>> {
    csv::Reader::from_path(path).unwrap().deserialize().map(|r| r.unwrap()).collect()
}

#[test]
fn generated_sample_ingests_cleanly_and_governance_sees_the_expired_key() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("sample");
    sample(&data, 11);
    let lines: usize = std::fs::read_dir(data.join("logs"))
        .unwrap()
        .map(|e| {
            let mut s = String::new();
            std::io::Read::read_to_string(
                &mut flate2::read::GzDecoder::new(std::fs::File::open(e.unwrap().path()).unwrap()),
                &mut s,
            )
            .unwrap();
            s.lines().count()
        })
        .sum();
    let lake = work.path().join("lake");
    let (code, s) = ingest(&lake, &[&data.join("logs")], &[]);
    assert_eq!(code, 0, "{s}");
    assert_eq!(s["ingested"].as_u64().unwrap() as usize, lines);
    assert_eq!(s["files"], 5);

    let out = credtrail()
        .args(["inventory", "check", "--json", "--now", "2026-11-07"])
        .arg(data.join("inventory.csv"))
        .arg("--lake")
        .arg(&lake)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let findings: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let of = |kind: &str| -> Vec<String> {
        findings
            .iter()
            .filter(|f| f["kind"] == kind)
            .map(|f| f["credential_id"].as_str().unwrap().to_string())
            .collect()
    };
    // The labelled use-after-expiry is found by governance too, and nothing else is.
    let labels = csv_rows(&data.join("labels.csv"));
    let expired_use: Vec<String> = labels
        .iter()
        .filter(|l| l["description"].contains("after its expiry"))
        .map(|l| l["credential_id"].clone())
        .collect();
    assert_eq!(expired_use.len(), 1);
    assert_eq!(of("expired_but_used"), expired_use);
    // Keys that expired before the sample are reported, and never appear in the lake.
    let inventory = csv_rows(&data.join("inventory.csv"));
    let before: Vec<String> = inventory
        .iter()
        .filter(|c| !c["expires_at"].is_empty() && c["expires_at"].as_str() < "2026-11-02")
        .map(|c| c["credential_id"].clone())
        .collect();
    assert!(!before.is_empty());
    let mut expired = of("expired");
    expired.sort();
    let mut want = before.clone();
    want.sort();
    assert_eq!(expired, want);
    assert!(of("unknown").is_empty(), "the sample only uses inventoried keys");
    let ownerless: Vec<String> =
        inventory.iter().filter(|c| c["owner"].is_empty()).map(|c| c["credential_id"].clone()).collect();
    assert_eq!(of("ownerless").len(), ownerless.len());
}

#[test]
fn a_bad_inventory_is_reported_line_by_line() {
    let work = tempfile::tempdir().unwrap();
    let inv = work.path().join("inv.csv");
    write(
        &inv,
        "credential_id,owner,principal,kind,created_at,expires_at,allowed_actions\n\
         key_a,a@x,p,api_key,2026-01-01,,inference\n\
         key_b,a@x,p,api_key,someday,,inference\n\
         key_a,a@x,p,api_key,2026-01-01,,fly\n",
    );
    let out = credtrail().args(["inventory", "check"]).arg(&inv).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let inv_s = inv.display().to_string();
    for needle in [
        format!("{inv_s}:3: created_at: \"someday\" is not a date"),
        format!("{inv_s}:4: credential_id: \"key_a\" is listed twice (first at line 2)"),
        format!("{inv_s}:4: allowed_actions: 'fly' is not an action"),
    ] {
        assert!(err.contains(&needle), "missing {needle:?} in:\n{err}");
    }
}

#[test]
fn run_is_the_batch_job_and_reruns_safely() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("sample");
    sample(&data, 12);
    let lake = work.path().join("lake");
    let run = || {
        credtrail()
            .arg("run")
            .arg(data.join("logs"))
            .arg("--inventory")
            .arg(data.join("inventory.csv"))
            .arg("--lake")
            .arg(&lake)
            .output()
            .unwrap()
    };
    let first = run();
    assert_eq!(first.status.code(), Some(0), "{}", String::from_utf8_lossy(&first.stderr));
    let text = String::from_utf8_lossy(&first.stdout);
    assert!(text.contains("from 5 file(s)") && text.contains("incident(s)"), "{text}");
    assert!(text.contains("after it expired"), "the labelled expired-key use is reported: {text}");
    let rows = events(&lake).len();
    let second = run();
    let text = String::from_utf8_lossy(&second.stdout);
    assert!(text.contains("(5 already ingested"), "{text}");
    assert_eq!(events(&lake).len(), rows);
}

#[test]
fn sample_is_deterministic_per_seed() {
    let work = tempfile::tempdir().unwrap();
    let (a, b) = (work.path().join("a"), work.path().join("b"));
    sample(&a, 5);
    sample(&b, 5);
    for name in ["inventory.csv", "labels.csv", "logs/gateway-2026-11-06.jsonl.gz"] {
        assert_eq!(std::fs::read(a.join(name)).unwrap(), std::fs::read(b.join(name)).unwrap(), "{name}");
    }
}

#[test]
fn absurd_or_zero_durations_are_usage_errors_not_panics() {
    let work = tempfile::tempdir().unwrap();
    for (flag, value, why) in [
        ("--flush-interval", "99999999999999999999s", "invalid value"),
        ("--flush-interval", "25h", "at most 24h"),
        ("--poll-interval", "0s", "at least 1ms"),
        ("--progress-every", "0", "at least 1ms"),
    ] {
        let err = refused(work.path(), &["watch", "-f", "none.log", flag, value], 2, why);
        assert!(err.contains(flag), "{flag} {value}: {err}");
    }
}

#[test]
fn watch_stops_promptly_on_sigterm_despite_a_long_poll_interval() {
    use std::time::{Duration, Instant};
    let work = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (0..40).map(|i| gateway_line(i, "key_term", "")).collect();
    write(&work.path().join("app.log"), &(lines.join("\n") + "\n"));
    let lake = work.path().join("lake");
    let (mut child, stderr) = spawn_watch(work.path(), &["--poll-interval", "30s", "--flush-interval", "100ms"]);
    let log = || std::fs::read_to_string(&stderr).unwrap_or_default();
    let started = Instant::now();
    while !lake.join("events").exists() || events(&lake).len() < lines.len() {
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("the first commit never came:\n{}", log());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // The reader is now waiting out its 30 s poll; SIGTERM must not wait with it.
    terminate_promptly(&mut child, &stderr);
    assert_eq!(events(&lake).len(), lines.len(), "every event once");
    assert!(log().contains(&format!("watch stopped: {} lines, {} events", lines.len(), lines.len())), "{}", log());
}

#[test]
fn a_directory_that_is_not_a_lake_is_refused_untouched() {
    let work = tempfile::tempdir().unwrap();
    let log = work.path().join("app.log");
    write(&log, &(gateway_line(1, "key_a", "") + "\n"));
    let home = work.path().join("home");
    write(&home.join("notes.txt"), "mine\n");
    write(&home.join("photos/a.jpg"), "jpg\n");
    for args in [vec!["ingest", log.to_str().unwrap()], vec!["detect"]] {
        let out = credtrail().args(&args).arg("--lake").arg(&home).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(&home.display().to_string()) && err.contains("not a credtrail lake"), "{err}");
        assert!(err.contains("found 2 other entries"), "{err}");
    }
    let mut left: Vec<String> =
        std::fs::read_dir(&home).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    left.sort();
    assert_eq!(left, ["notes.txt", "photos"], "nothing was added to the directory");

    // A lake, even one holding only what an older credtrail wrote, is still a lake.
    let lake = work.path().join("lake");
    assert_eq!(ingest(&lake, &[&log], &[]).0, 0);
    std::fs::remove_dir_all(lake.join("alerts")).unwrap();
    std::fs::remove_dir_all(lake.join("secret_exposures")).unwrap();
    write(&work.path().join("app2.log"), &(gateway_line(2, "key_a", "") + "\n"));
    assert_eq!(ingest(&lake, &[&work.path().join("app2.log")], &[]).0, 0);
    assert_eq!(events(&lake).len(), 2);
}

#[test]
fn the_lakes_own_files_are_not_ingested_again() {
    let work = tempfile::tempdir().unwrap();
    let log = work.path().join("app.log");
    write(&log, &(gateway_line(1, "key_a", "") + "\nnot json\n"));
    let lake = work.path().join("lake");
    assert_eq!(ingest(&lake, &[&log], &[]).0, 3);
    assert_eq!(quarantine(&lake).len(), 1);
    for input in [lake.join("quarantine"), lake.clone()] {
        let out = credtrail().arg("ingest").arg(&input).arg("--lake").arg(&lake).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(&input.display().to_string()) && err.contains("inside the lake"), "{err}");
    }
    assert_eq!(quarantine(&lake).len(), 1, "the quarantine was not copied into itself");
    assert_eq!(events(&lake).len(), 1);
}

#[test]
fn logs_on_a_non_terminal_stderr_carry_no_colour_codes() {
    let work = tempfile::tempdir().unwrap();
    write(&work.path().join("app.log"), &(gateway_line(1, "key_a", "") + "\n"));
    let (mut child, stderr) = spawn_watch(work.path(), &[]);
    let log = || std::fs::read_to_string(&stderr).unwrap_or_default();
    let started = std::time::Instant::now();
    while !log().contains("recognised") {
        assert!(started.elapsed().as_secs() < 60, "the file was never read:\n{}", log());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    terminate_promptly(&mut child, &stderr);
    assert!(log().contains("INFO"), "{}", log());
    assert!(!log().contains("\x1b["), "ANSI escapes on a captured stderr: {:?}", log());
}

#[test]
fn sigterm_commits_events_still_pending_under_long_intervals() {
    use std::time::{Duration, Instant};
    let work = tempfile::tempdir().unwrap();
    let log_file = work.path().join("app.log");
    let lines: Vec<String> = (0..50).map(|i| gateway_line(i, "key_pending", "")).collect();
    write(&log_file, &(lines[..25].join("\n") + "\n"));
    let lake = work.path().join("lake");
    let args =
        ["--poll-interval", "1s", "--flush-interval", "1h", "--flush-events", "1000000", "--progress-every", "100ms"];
    let (mut child, stderr) = spawn_watch(work.path(), &args);
    let log = || std::fs::read_to_string(&stderr).unwrap_or_default();
    let wait = |what: &str, cond: &dyn Fn() -> bool| {
        let started = Instant::now();
        while !cond() {
            assert!(started.elapsed() < Duration::from_secs(60), "timed out waiting for {what}:\n{}", log());
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    // The first lines open the day, which commits them at once.
    wait("the first commit", &|| events(&lake).len() == 25);
    // The rest of the day is read, then waits for a flush an hour away.
    std::io::Write::write_all(
        &mut std::fs::OpenOptions::new().append(true).open(&log_file).unwrap(),
        (lines[25..].join("\n") + "\n").as_bytes(),
    )
    .unwrap();
    wait("the appended lines to be read", &|| log().contains("events=50"));
    assert_eq!(events(&lake).len(), 25, "nothing more is committed before a flush is due");
    terminate_promptly(&mut child, &stderr);
    assert_eq!(events(&lake).len(), lines.len(), "the pending events were committed on the way out");
}

#[test]
fn absurd_sample_sizes_are_refused_not_panics_or_endless_runs() {
    let work = tempfile::tempdir().unwrap();
    for (flag, value, why) in [
        ("--rate-scale", "1e308", "--rate-scale must be a positive number up to"),
        ("--credentials", "4294967295", "--credentials must be from 10 to"),
        ("--days", "4294967295", "--days must be from 1 to"),
        ("--days", "0", "--days must be from 1 to"),
    ] {
        refused(work.path(), &["sample", "--out", "s", flag, value], 1, why);
    }
}

/// `credtrail watch -f app.log --from-beginning --lake lake` in `dir` with
/// `args`; its log (at info) goes to the file returned.
fn spawn_watch(dir: &std::path::Path, args: &[&str]) -> (std::process::Child, std::path::PathBuf) {
    let stderr = dir.join("watch.err");
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("credtrail"))
        .current_dir(dir)
        .args(["watch", "-f", "app.log", "--from-beginning", "--lake", "lake"])
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    (child, stderr)
}

/// SIGTERM, then a clean exit well before the 30 s or longer poll these
/// watchers wait out (and with room for a loaded machine).
fn terminate_promptly(child: &mut std::process::Child, stderr: &std::path::Path) {
    use std::time::{Duration, Instant};
    let log = || std::fs::read_to_string(stderr).unwrap_or_default();
    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let sent = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if sent.elapsed() > Duration::from_secs(25) {
            let _ = child.kill();
            panic!("watch still running 25 s after SIGTERM:\n{}", log());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(sent.elapsed() < Duration::from_secs(15), "took {:?} to stop", sent.elapsed());
    assert_eq!(status.code(), Some(0), "{}", log());
}

/// Runs `args` in `dir`, which must fail promptly with `code` (no panic) and
/// say `why`; returns its stderr.
fn refused(dir: &std::path::Path, args: &[&str], code: i32, why: &str) -> String {
    let out = credtrail().current_dir(dir).args(args).timeout(std::time::Duration::from_secs(30)).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
    assert!(err.contains(why) && !err.contains("panicked"), "{args:?}: {err}");
    err
}

/// The S3 test server (tests/common/s3.rs) starts, takes a bucket and
/// round-trips an object through object_store, the client the lake uses.
#[test]
fn s3_test_server_round_trips_an_object() {
    use object_store::{ObjectStore, ObjectStoreExt, PutPayload, path::Path as ObjectPath};
    let server = common::s3::S3Server::start();
    server.create_bucket("credtrail-smoke");
    let store = server.store("credtrail-smoke");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let path = ObjectPath::from("a/b.txt");
        store.put(&path, PutPayload::from_static(b"hello")).await.unwrap();
        let got = store.get(&path).await.unwrap().bytes().await.unwrap();
        assert_eq!(&got[..], b"hello");
        // Conditional create: the lake's commit protocol depends on it.
        let again = store.put_opts(&path, PutPayload::from_static(b"x"), object_store::PutMode::Create.into()).await;
        assert!(matches!(again, Err(object_store::Error::AlreadyExists { .. })), "{again:?}");
    });
}
