//! credtrail on a Ballista cluster: a scheduler and executors as separate
//! `credtrail cluster …` processes on loopback (and Ballista's in-process
//! standalone mode), compared with local runs on copies of one lake: a
//! directory, or the same sample ingested into a lake on moto's S3 server
//! (tests/common/s3.rs), which every process reaches with the same AWS
//! environment.

use crate::common::*;

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A process stopped when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    fn term(&mut self) -> Option<std::process::ExitStatus> {
        let pid = self.0.id().to_string();
        std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        wait_for(&mut self.0, Duration::from_secs(30))
    }
}

fn wait_for(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Environment for a process (AWS_* for an S3 lake), as `S3Server::env` gives it.
type Env<'a> = &'a [(&'static str, String)];

fn spawn(args: &[&str], env: Env) -> Proc {
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin!("credtrail"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    Proc(child)
}

/// Waits until something listens on `port`.
fn listening(port: u16) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(60), "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A scheduler and `executors` executors on loopback.
struct Cluster {
    scheduler: Proc,
    executors: Vec<Proc>,
    url: String,
}

/// An executor is declared dead after this long without a heartbeat.
const EXECUTOR_TIMEOUT: &str = "6s";

fn start_cluster(executors: usize) -> Cluster {
    start_cluster_with(executors, &[])
}

/// [`start_cluster`], every process with `env`.
fn start_cluster_with(executors: usize, env: Env) -> Cluster {
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let scheduler = spawn(&["cluster", "scheduler", "--bind", &bind, "--executor-timeout", EXECUTOR_TIMEOUT], env);
    listening(port);
    let executors = (0..executors)
        .map(|_| {
            let (flight, grpc) = (free_port(), free_port());
            let e = spawn(
                &[
                    "cluster",
                    "executor",
                    "--scheduler",
                    &bind,
                    "--bind",
                    &format!("127.0.0.1:{flight}"),
                    "--grpc-port",
                    &grpc.to_string(),
                    "--concurrent-tasks",
                    "2",
                    "--heartbeat",
                    "1s",
                ],
                env,
            );
            listening(flight);
            e
        })
        .collect();
    // Registration follows the executor's start by a heartbeat.
    std::thread::sleep(Duration::from_secs(2));
    Cluster { scheduler, executors, url: format!("df://{bind}") }
}

/// A small sample (a week, a dozen credentials, its injected anomalies)
/// ingested once: (lake, inventory).
fn base_lake() -> &'static (PathBuf, PathBuf) {
    static LAKE: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    LAKE.get_or_init(|| {
        let work = tempfile::Builder::new().prefix("credtrail-cluster-").tempdir().unwrap().keep();
        let data = work.join("sample");
        generate_sample(
            &data,
            7,
            &["--days", "8", "--credentials", "12", "--rate-scale", "0.2", "--start", "2026-11-02"],
        );
        let lake = work.join("lake");
        let (code, summary) = ingest(&lake, &[&data.join("logs")], &[]);
        assert_eq!(code, 0, "{summary}");
        (lake, data.join("inventory.csv"))
    })
}

/// A fresh copy of the base lake under `dir`: each run writes its own baselines and alerts.
fn lake_copy(dir: &Path, name: &str) -> PathBuf {
    let to = dir.join(name);
    let ok = std::process::Command::new("cp").arg("-a").arg(&base_lake().0).arg(&to).status().unwrap();
    assert!(ok.success());
    to
}

fn run(args: &[&str], lake: &Path, cluster: Option<&str>) -> Output {
    run_with(&[], args, lake, cluster)
}

/// [`run`] with `env`; `lake` may be an s3:// URL.
fn run_with(env: Env, args: &[&str], lake: &Path, cluster: Option<&str>) -> Output {
    let mut cmd = credtrail();
    cmd.envs(env.iter().map(|(k, v)| (k, v))).args(args).arg("--lake").arg(lake);
    if let Some(c) = cluster {
        cmd.args(["--cluster", c]);
    }
    cmd.timeout(Duration::from_secs(600)).output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The alerts `detect --output jsonl` printed, one JSON object each, sorted.
fn alerts(out: &Output) -> Vec<serde_json::Value> {
    let mut v: Vec<serde_json::Value> = ok(out).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    v.sort_by_key(|a| a.to_string());
    v
}

/// `baseline` then `detect` on `lake`, locally or on `cluster`: the baseline summary and the alerts.
fn baseline_and_detect(lake: &Path, cluster: Option<&str>) -> (serde_json::Value, Vec<serde_json::Value>) {
    baseline_and_detect_with(&[], lake, cluster)
}

fn baseline_and_detect_with(
    env: Env,
    lake: &Path,
    cluster: Option<&str>,
) -> (serde_json::Value, Vec<serde_json::Value>) {
    let inv = base_lake().1.to_str().unwrap();
    let baseline = run_with(env, &["baseline", "--json"], lake, cluster);
    let summary: serde_json::Value = serde_json::from_str(&ok(&baseline)).unwrap();
    let detected = run_with(env, &["detect", "--output", "jsonl", "--inventory", inv], lake, cluster);
    (summary, alerts(&detected))
}

/// The baseline summary without the written files' names, which carry each
/// run's id: everything else must match between runs on the same events.
fn learned(mut summary: serde_json::Value) -> serde_json::Value {
    summary.as_object_mut().unwrap().remove("files");
    summary
}

/// Queries whose answers must not depend on where they run: the lake's
/// tables, credtrail's functions, and the inventory (an in-memory table).
const QUERIES: &str = "SELECT credential_id, count(*) AS n, round(sum(cost_usd), 6) AS cost FROM events GROUP BY 1 ORDER BY 1;
SELECT ip_network(source_ip) AS net, count(DISTINCT credential_id) AS creds FROM events GROUP BY 1 ORDER BY 1;
SELECT c.credential_id, count(e.request_id) AS n FROM credentials c LEFT JOIN events e USING (credential_id) GROUP BY 1 ORDER BY 1;
SELECT detector, alert_id, severity FROM alerts ORDER BY alert_id;";

fn sql(lake: &Path, cluster: Option<&str>, script: &str) -> String {
    sql_with(&[], lake, cluster, script)
}

fn sql_with(env: Env, lake: &Path, cluster: Option<&str>, script: &str) -> String {
    let inv = base_lake().1.to_str().unwrap();
    ok(&run_with(env, &["sql", "--format", "json", "--inventory", inv, "-c", script], lake, cluster))
}

#[test]
fn baseline_detect_sql_and_flight_on_a_cluster_match_a_local_run() {
    let dir = tempfile::tempdir().unwrap();
    let (local, remote) = (lake_copy(dir.path(), "local"), lake_copy(dir.path(), "remote"));
    let mut cluster = start_cluster(2);
    let url = cluster.url.clone();

    let (want_summary, want_alerts) = baseline_and_detect(&local, None);
    let (got_summary, got_alerts) = baseline_and_detect(&remote, Some(&url));
    assert!(!want_alerts.is_empty(), "the sample's anomalies alert");
    assert_eq!(got_alerts, want_alerts, "alerts, ids included");
    assert_eq!(learned(got_summary), learned(want_summary));

    let want = sql(&local, None, QUERIES);
    assert!(want.lines().count() > 20, "{want}");
    assert_eq!(sql(&remote, Some(&url), QUERIES), want);

    // The queries did go to the cluster: the plan is Ballista's stages, shuffled by credential.
    let plan = sql(&remote, Some(&url), "EXPLAIN SELECT credential_id, count(*) AS n FROM events GROUP BY 1");
    assert!(
        plan.contains("distributed_plan") && plan.contains("ShuffleWriterExec: partitioning=Hash([credential_id"),
        "{plan}"
    );

    // Flight SQL through `serve --cluster`: the same rows as the local shell.
    let (server, addr) = serve(&[], &remote, &url);
    let rows = flight_rows(&addr, FLIGHT_QUERY);
    let want: Vec<String> = sql(&local, None, FLIGHT_QUERY).lines().map(str::to_string).collect();
    assert_eq!(rows, want);
    drop(server);

    // SIGTERM stops the cluster's processes cleanly.
    for e in &mut cluster.executors {
        assert!(e.term().is_some(), "executor stops on SIGTERM");
    }
    let status = cluster.scheduler.term().expect("scheduler stops on SIGTERM");
    assert!(status.success(), "{status:?}");
}

/// What the Flight SQL checks ask.
const FLIGHT_QUERY: &str = "SELECT credential_id, count(*) AS n FROM events GROUP BY 1 ORDER BY 1";

/// `credtrail serve --cluster cluster --lake lake` with `env`, and the address it serves Flight SQL on.
fn serve(env: Env, lake: &Path, cluster: &str) -> (Proc, String) {
    let mut server = std::process::Command::new(assert_cmd::cargo::cargo_bin!("credtrail"));
    server
        .args(["serve", "--listen", "127.0.0.1:0", "--cluster", cluster, "--lake"])
        .arg(lake)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut server = Proc(server.spawn().unwrap());
    let mut first = [0u8; 200];
    let n = server.0.stdout.as_mut().unwrap().read(&mut first).unwrap();
    let line = String::from_utf8_lossy(&first[..n]).to_string();
    let addr = line.split("grpc://").nth(1).and_then(|r| r.split_whitespace().next()).expect(&line).to_string();
    (server, addr)
}

/// The rows of `query` over Flight SQL at `addr`, as the shell's JSON lines.
fn flight_rows(addr: &str, query: &str) -> Vec<String> {
    use arrow_flight::sql::client::FlightSqlServiceClient;
    use futures::TryStreamExt;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let channel = tonic::transport::Endpoint::new(format!("http://{addr}")).unwrap().connect().await.unwrap();
        let mut client = FlightSqlServiceClient::new(channel);
        let info = client.execute(query.to_string(), None).await.unwrap();
        let mut batches = Vec::new();
        for ep in info.endpoint {
            let stream = client.do_get(ep.ticket.unwrap()).await.unwrap();
            batches.extend(stream.try_collect::<Vec<_>>().await.unwrap());
        }
        let mut w = arrow::json::LineDelimitedWriter::new(Vec::new());
        for b in &batches {
            w.write(b).unwrap();
        }
        w.finish().unwrap();
        String::from_utf8(w.into_inner()).unwrap().lines().map(str::to_string).collect()
    })
}

#[test]
fn detect_in_standalone_mode_matches_a_local_run() {
    let dir = tempfile::tempdir().unwrap();
    let (local, inproc) = (lake_copy(dir.path(), "local"), lake_copy(dir.path(), "standalone"));
    let (_, want) = baseline_and_detect(&local, None);
    let (_, got) = baseline_and_detect(&inproc, Some("standalone"));
    assert!(!want.is_empty());
    assert_eq!(got, want);
}

/// Every ordered pair of events: long enough to kill an executor during it.
const HEAVY: &str = "SELECT count(*) AS n FROM events a, events b WHERE a.request_id < b.request_id";

#[test]
fn an_executor_killed_mid_query_fails_the_query_or_it_completes_whole() {
    let dir = tempfile::tempdir().unwrap();
    let lake = lake_copy(dir.path(), "lake");
    let events = events(&lake).len() as u64;
    let mut cluster = start_cluster(2);
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin!("credtrail"));
    cmd.args(["sql", "--format", "json", "--cluster", &cluster.url, "-c", HEAVY, "--lake"])
        .arg(&lake)
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut query = Proc(cmd.spawn().unwrap());
    std::thread::sleep(Duration::from_secs(3));
    let started = query.0.try_wait().unwrap().is_none();
    cluster.executors[0].0.kill().unwrap();
    let status = wait_for(&mut query.0, Duration::from_secs(300)).expect("the query ends, one way or the other");
    let (mut out, mut err) = (String::new(), String::new());
    query.0.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    query.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    eprintln!("after an executor was killed: {status}, {out:?}, {err:?}");
    if status.success() {
        // Retried on the other executor: the whole answer, not a part of it.
        assert_eq!(out.trim(), format!("{{\"n\":{}}}", events * (events - 1) / 2), "{err}");
    } else {
        assert!(started, "the query ran when the executor died");
        assert!(out.trim().is_empty(), "no rows from a failed query: {out}");
        assert!(err.starts_with("error: "), "{err}");
    }
}

#[test]
fn an_unreachable_scheduler_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let lake = lake_copy(dir.path(), "lake");
    let url = format!("df://127.0.0.1:{}", free_port());
    for args in [&["baseline"][..], &["detect"], &["sql", "-c", "SELECT 1"]] {
        let out = run(args, &lake, Some(&url));
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("cannot reach the Ballista scheduler at df://127.0.0.1"), "{err}");
    }
    let out = credtrail().args(["detect", "--cluster", "10.0.0.1:50050", "--lake"]).arg(&lake).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "a malformed address is a usage error");
}

#[test]
fn an_s3_lake_on_a_cluster_gives_the_alerts_and_rows_of_a_local_lake() {
    let s3 = crate::common::s3::S3Server::start();
    s3.create_bucket("credtrail-cluster");
    let env = s3.env();
    let dir = tempfile::tempdir().unwrap();
    let local = lake_copy(dir.path(), "local");
    // The base lake's sample, ingested again straight into the bucket.
    let logs = base_lake().1.with_file_name("logs");
    let remote = Path::new("s3://credtrail-cluster/lake");
    let ingested = run_with(&env, &["ingest", "--no-progress", logs.to_str().unwrap()], remote, None);
    ok(&ingested);
    let cluster = start_cluster_with(2, &env);
    let url = cluster.url.clone();

    let (want_summary, want_alerts) = baseline_and_detect(&local, None);
    let (got_summary, got_alerts) = baseline_and_detect_with(&env, remote, Some(&url));
    assert!(!want_alerts.is_empty(), "the sample's anomalies alert");
    assert_eq!(got_alerts, want_alerts, "alerts, ids included");
    assert_eq!(learned(got_summary), learned(want_summary));

    let want = sql(&local, None, QUERIES);
    assert_eq!(sql_with(&env, remote, Some(&url), QUERIES), want);
    // Planned by the cluster, which listed the bucket's event files.
    let plan = sql_with(&env, remote, Some(&url), "EXPLAIN SELECT credential_id, count(*) FROM events GROUP BY 1");
    assert!(plan.contains("distributed_plan") && plan.contains("lake/events/date="), "{plan}");

    let (server, addr) = serve(&env, remote, &url);
    let want: Vec<String> = sql(&local, None, FLIGHT_QUERY).lines().map(str::to_string).collect();
    assert_eq!(flight_rows(&addr, FLIGHT_QUERY), want);
    drop(server);
}
