//! `credtrail watch` as a real process: it follows real files while they are
//! appended to, rotated and truncated, is killed with SIGKILL and restarted,
//! and must leave every line in the lake exactly once — and raise, live, the
//! alerts batch `detect` raises over the same day.

use crate::common;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{credtrail, events, gateway_line, generate_sample, quarantine};
use serde_json::Value;

/// A running `credtrail watch`, its stdout collected line by line.
struct Watch {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: PathBuf,
}

impl Watch {
    fn start(dir: &Path, args: &[&str]) -> Watch {
        Watch::spawn(dir, args, Stdio::null())
    }

    /// [`Watch::start`] with a pipe to the watcher's stdin in `child.stdin`.
    fn start_piped(dir: &Path, args: &[&str]) -> Watch {
        Watch::spawn(dir, args, Stdio::piped())
    }

    fn spawn(dir: &Path, args: &[&str], stdin: Stdio) -> Watch {
        let stderr = dir.join(format!("watch-{}.err", Instant::now().elapsed().as_nanos()));
        let mut child = Command::new(assert_cmd::cargo::cargo_bin("credtrail"))
            .current_dir(dir)
            .arg("watch")
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("credtrail watch starts");
        let out = child.stdout.take().unwrap();
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let sink = stdout.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Watch { child, stdout, stderr }
    }

    fn alerts(&self) -> Vec<Value> {
        self.stdout.lock().unwrap().iter().map(|l| serde_json::from_str(l).expect("stdout is JSON lines")).collect()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// SIGTERM, then waits for a clean exit.
    fn stop(mut self) -> Vec<Value> {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "watch exited with {status}: {}", self.log());
        // The stdout reader sees EOF once the process is gone.
        std::thread::sleep(Duration::from_millis(100));
        self.alerts()
    }

    /// SIGKILL: no chance to flush anything.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

/// A failed test must not leave a watcher running.
impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (up to a minute) for `cond`; panics with `what` and the watcher's log.
fn wait_for(w: &Watch, what: &str, mut cond: impl FnMut() -> bool) {
    let started = Instant::now();
    while !cond() {
        assert!(started.elapsed() < Duration::from_secs(60), "timed out waiting for {what}\n{}", w.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn request_ids(lake: &Path) -> Vec<String> {
    events(lake).iter().map(|e| e["request_id"].as_str().unwrap_or("").to_string()).collect()
}

fn append(path: &Path, lines: impl IntoIterator<Item = String>) {
    let mut f = OpenOptions::new().create(true).append(true).open(path).unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
}

/// Batch `detect`'s alerts (governance aside) over `inputs` ingested into a fresh lake.
fn batch_alerts(lake: &Path, inputs: &[&Path], from: &str, to: &str, inventory: &Path) -> Vec<Value> {
    common::ingest(lake, inputs, &[]);
    let out = credtrail()
        .args(["detect", "--from", from, "--to", to, "-o", "jsonl", "--lake"])
        .arg(lake)
        .arg("--inventory")
        .arg(inventory)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|a| a["detector"] != "governance")
        .collect()
}

fn lines(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| gateway_line(i, "key_watch", "")).collect()
}

#[test]
fn follows_rotation_truncation_and_kill_without_loss_or_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let log = logs.join("app.log");
    // Already there at the first start: skipped (the watch starts at the end).
    append(&log, lines(0..5));
    let args = ["-f", "logs/*.log", "--lake", "lake", "--flush-interval", "200ms", "--poll-interval", "20ms"];
    let lake = dir.path().join("lake");
    let w = Watch::start(dir.path(), &args);
    let count = || request_ids(&lake).len();
    wait_for(&w, "the watcher to follow the file", || w.log().contains("following"));

    append(&log, lines(5..105));
    wait_for(&w, "the first 100 lines", || count() == 100);

    // Rotation by rename into a name the glob also matches; the writer
    // finishes its old handle while a new file takes the old name.
    std::fs::rename(&log, logs.join("app-1.log")).unwrap();
    append(&log, lines(105..155));
    append(&logs.join("app-1.log"), lines(155..165));
    wait_for(&w, "lines of both the rotated and the new file", || count() == 160);

    // Copy-truncate: the copy (same first line) is recognised and not read again.
    std::fs::copy(&log, logs.join("app-copy.log")).unwrap();
    OpenOptions::new().write(true).truncate(true).open(&log).unwrap();
    append(&log, lines(165..185));
    wait_for(&w, "lines written after the truncation", || count() == 180);

    // Half a line waits for its end; garbage and a huge line go to quarantine without stalling.
    let half = gateway_line(185, "key_watch", "");
    let (head, tail) = half.split_at(40);
    OpenOptions::new().append(true).open(&log).unwrap().write_all(head.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(count(), 180, "an incomplete line is not read");
    let huge = format!("{{\"ts\":\"{}\"}}", "x".repeat(17 << 20));
    append(&log, [tail.to_string(), "not json at all".to_string(), huge]);
    append(&log, lines(186..190));
    wait_for(&w, "the lines after the garbage", || count() == 185);
    wait_for(&w, "quarantine records", || quarantine(&lake).len() == 2);

    // SIGKILL in the middle of a stream of appends, then restart from the checkpoint.
    let writer = {
        let log = log.clone();
        std::thread::spawn(move || {
            for k in 0..20 {
                append(&log, lines(190 + k * 20..210 + k * 20));
                std::thread::sleep(Duration::from_millis(30));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(250));
    w.kill();
    writer.join().unwrap();
    let w = Watch::start(dir.path(), &args);
    wait_for(&w, "every line after the restart", || count() == 585);
    let stopped = w.stop();
    assert!(stopped.is_empty(), "no alerts expected: {stopped:?}");

    let ids = request_ids(&lake);
    let distinct: HashSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "an event was committed twice");
    let expected: HashSet<String> = (5..590).map(|i| format!("req_{i:06}")).collect();
    let got: HashSet<String> = ids.iter().cloned().collect();
    assert_eq!(got, expected, "missing: {:?}", expected.difference(&got).take(5).collect::<Vec<_>>());

    let q = quarantine(&lake);
    let reasons: Vec<&str> = q.iter().map(|r| r["reason"].as_str().unwrap()).collect();
    assert!(reasons.iter().any(|r| r.starts_with("not JSON")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("longer than")), "{reasons:?}");
    assert!(q.iter().all(|r| r["source_file"].as_str().unwrap().ends_with("app.log")));
    // Micro-batch commits leave one folded record behind; no staged file survives.
    let leftovers: Vec<PathBuf> =
        common::walk(&lake).into_iter().filter(|p| p.extension().is_some_and(|e| e == "tmp")).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(std::fs::read_dir(lake.join("_ingest/commits")).unwrap().count() <= 1);
}

#[test]
fn live_alerts_match_batch_detect_and_reach_every_sink() {
    let dir = tempfile::tempdir().unwrap();
    let sample = dir.path().join("sample");
    generate_sample(&sample, 7, &["--days", "4", "--credentials", "30"]);
    let logs = sample.join("logs");
    let history: Vec<PathBuf> = ["02", "03"].iter().map(|d| logs.join(format!("gateway-2026-11-{d}.jsonl"))).collect();
    // Two days streamed: the second starts mid-stream, with a baseline learned from the first.
    let replay: Vec<PathBuf> = ["04", "05"].iter().map(|d| logs.join(format!("gateway-2026-11-{d}.jsonl"))).collect();
    let inventory = sample.join("inventory.csv");

    // Batch: the whole week ingested, the last day detected.
    let all: Vec<&Path> = history.iter().chain(&replay).map(PathBuf::as_path).collect();
    let batch: BTreeSet<String> = batch_alerts(&dir.path().join("batch"), &all, "2026-11-04", "2026-11-05", &inventory)
        .iter()
        .map(|a| a["alert_id"].as_str().unwrap().to_string())
        .collect();
    assert!(batch.len() >= 6, "the sample's last day holds its anomalies: {batch:?}");

    // Stream: the history ingested, the last day replayed through watch.
    let lake = dir.path().join("live");
    common::ingest(&lake, &history.iter().map(PathBuf::as_path).collect::<Vec<_>>(), &[]);
    let text: String = replay.iter().map(|p| std::fs::read_to_string(p).unwrap()).collect();
    common::write(&dir.path().join("gateway.log"), &text);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let metrics = format!("127.0.0.1:{port}");
    let (hook_url, posted) = webhook_receiver();
    let inv = inventory.display().to_string();
    let w = Watch::start(
        dir.path(),
        &[
            "-f",
            "gateway.log",
            "--lake",
            "live",
            "--from-beginning",
            "--inventory",
            &inv,
            "--alerts",
            "alerts.jsonl",
            "--on-alert",
            "cat >> hook.jsonl",
            "--metrics",
            &metrics,
            "--webhook",
            &hook_url,
        ],
    );
    let count = |p: &Path| std::fs::read_to_string(p).unwrap().lines().count();
    let lines = text.lines().count();
    let total = lines + history.iter().map(|p| count(p)).sum::<usize>();
    wait_for(&w, "every line committed", || request_ids(&lake).len() == total);
    wait_for(&w, "the alerts", || w.alerts().len() >= batch.len());
    // Each event judged by a pass exactly once: none left behind the commits, none twice.
    let judged = format!("credtrail_watch_judged_events_total {lines}\n");
    wait_for(&w, "every event judged", || http_get(&metrics, "/metrics").contains(&judged));
    let scrape = http_get(&metrics, "/metrics");
    assert!(scrape.contains(&format!("credtrail_watch_events_total {lines}")), "{scrape}");
    assert!(scrape.contains("credtrail_watch_alerts_total{"), "{scrape}");
    let streamed = w.stop();

    let ids =
        |v: &[Value]| -> BTreeSet<String> { v.iter().map(|a| a["alert_id"].as_str().unwrap().to_string()).collect() };
    assert_eq!(ids(&streamed), batch, "watch and detect disagree");
    assert_eq!(streamed.len(), batch.len(), "an alert was emitted twice");
    for a in &streamed {
        assert!(a["evidence_count"].as_u64().unwrap() > 0 && !a["baseline"].as_str().unwrap().is_empty(), "{a}");
    }
    let read = |name: &str| -> Vec<Value> {
        std::fs::read_to_string(dir.path().join(name))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    assert_eq!(ids(&read("alerts.jsonl")), batch, "the alerts file");
    assert_eq!(ids(&read("hook.jsonl")), batch, "the --on-alert command");
    let posted = posted.lock().unwrap().clone();
    assert_eq!(ids(&posted), batch, "the webhook");
    assert!(posted.iter().all(|p| p["text"].as_str().unwrap().starts_with("[credtrail ")), "chat tools show `text`");
    // The lake's alerts table holds the same alerts for analysts.
    let stored: BTreeSet<String> =
        common::rows_of(&lake.join("alerts")).iter().map(|r| r["alert_id"].as_str().unwrap().to_string()).collect();
    assert_eq!(stored, batch);

    // A restart with nothing new re-emits nothing.
    let w = Watch::start(dir.path(), &["-f", "gateway.log", "--lake", "live", "--inventory", &inv]);
    wait_for(&w, "the restart", || w.log().contains("following"));
    std::thread::sleep(Duration::from_millis(500));
    assert!(w.stop().is_empty());
    assert_eq!(request_ids(&lake).len(), total);
}

#[test]
fn reads_stdin_as_it_arrives_and_to_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = Watch::start_piped(dir.path(), &["-f", "-", "--lake", "lake", "--flush-interval", "200ms"]);
    let mut stdin = w.child.stdin.take().unwrap();
    let lake = dir.path().join("lake");
    // A quiet pipe: its lines are committed while it stays open, not when more arrive.
    stdin.write_all((lines(0..5).join("\n") + "\n").as_bytes()).unwrap();
    stdin.flush().unwrap();
    wait_for(&w, "a quiet pipe's lines in the lake", || request_ids(&lake).len() == 5);
    // A burst of many pipe reads is parsed in large chunks; line numbers still count every line.
    let burst = lines(5..4005).join("\n") + "\n{broken\n" + &lines(4005..4010).join("\n") + "\n";
    stdin.write_all(burst.as_bytes()).unwrap();
    drop(stdin);
    let status = w.child.wait().unwrap();
    assert!(status.success(), "watch exited with {status}: {}", w.log());
    assert_eq!(request_ids(&lake).len(), 4010);
    let q = quarantine(&lake);
    assert_eq!(q.len(), 1);
    assert_eq!(q[0]["record"], 4006);
    assert_eq!(q[0]["source_file"], "<stdin>");
}

/// A webhook endpoint on loopback: answers 200 to every POST and keeps the JSON bodies.
fn webhook_receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let keep = bodies.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            // One or more requests per connection (keep-alive).
            loop {
                let mut length = None;
                let mut line = String::new();
                let mut any = false;
                while reader.read_line(&mut line).unwrap_or(0) > 0 {
                    any = true;
                    if line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse::<usize>().ok();
                    }
                    line.clear();
                }
                if !any {
                    break;
                }
                let mut body = vec![0u8; length.unwrap_or(0)];
                reader.read_exact(&mut body).unwrap();
                keep.lock().unwrap().push(serde_json::from_slice(&body).unwrap());
                conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").unwrap();
            }
        }
    });
    (url, bodies)
}

/// A plain HTTP/1.1 GET (the metrics endpoint is loopback-only, no TLS).
fn http_get(addr: &str, path: &str) -> String {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    body
}

/// A 30-credential gateway sample of 2026-11-02..05 in `dir`: the logs of
/// its history, of its last day, and its inventory.
fn gateway_days(dir: &Path) -> ([PathBuf; 3], PathBuf, PathBuf) {
    let sample = dir.join("sample");
    generate_sample(&sample, 5, &["--days", "4", "--credentials", "30"]);
    let log = |d: &str| sample.join("logs").join(format!("gateway-2026-11-{d}.jsonl"));
    ([log("02"), log("03"), log("04")], log("05"), sample.join("inventory.csv"))
}

/// The live engine fed a day in small pieces, a pass after each (so per-event
/// rows pile up, windows fill minute by minute and gates open mid-day), ends
/// with exactly the alerts batch `detect` finds in the whole day: the same
/// ids, windows, evidence, explanations and incidents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_passes_end_with_the_batch_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let (history, today, inventory) = gateway_days(dir.path());
    let all: Vec<&Path> = history.iter().map(PathBuf::as_path).chain([today.as_path()]).collect();
    let batch = batch_alerts(&dir.path().join("batch"), &all, "2026-11-05", "2026-11-05", &inventory);
    let history: Vec<&Path> = history.iter().map(PathBuf::as_path).collect();
    let text = std::fs::read_to_string(&today).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let families = ["billing_spike", "retry_storm", "tool_chaining", "out_of_scope"];
    let held = replay_matches(&dir.path().join("live"), &history, &lines, &inventory, &batch, &families).await;
    assert!(held < lines.len() / 2, "the live day let go of events: {held} held of {}", lines.len());
}

/// The same where credentials use what their history lacks: `watch` hands
/// first_seen only the events with a new value (its rule's `live_events`),
/// and its alerts, and the values joining other alerts, are the batch's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_seen_values_judged_from_new_events_alone_are_the_batch_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let (history, today, inventory) = gateway_days(dir.path());
    // Six credentials each use something new twice, after the first third of the day.
    let mut records: Vec<Value> =
        std::fs::read_to_string(&today).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let mut order: Vec<String> = Vec::new();
    for r in &records {
        let c = r["credential_id"].as_str().unwrap().to_string();
        if !order.contains(&c) {
            order.push(c);
        }
    }
    let changes = [
        ("resource", "s3://never-seen-bucket/dump/x.csv"),
        ("source_ip", "203.0.113.77"),
        ("tool", "shell:exec"),
        ("model", "gpt-unheard-of"),
        ("action", "admin"),
        ("resource", "github://stranger/repo/x"),
    ];
    let mut left: HashMap<&str, ((&str, &str), u32)> =
        order[3..9].iter().map(String::as_str).zip(changes.into_iter().map(|c| (c, 2))).collect();
    let third = records.len() / 3;
    for r in &mut records[third..] {
        let c = r["credential_id"].as_str().unwrap().to_string();
        if let Some(((field, value), n)) = left.get_mut(c.as_str()).filter(|(_, n)| *n > 0) {
            r[*field] = Value::from(*value);
            *n -= 1;
        }
    }
    let lines: Vec<String> = records.iter().map(Value::to_string).collect();
    std::fs::write(&today, lines.join("\n") + "\n").unwrap();

    let all: Vec<&Path> = history.iter().map(PathBuf::as_path).chain([today.as_path()]).collect();
    let batch = batch_alerts(&dir.path().join("batch"), &all, "2026-11-05", "2026-11-05", &inventory);
    // Their family is out_of_scope; the finding says what was new.
    let new = batch.iter().filter(|a| a["finding"].as_str().unwrap().starts_with("first_seen_")).count();
    assert!(new >= 3, "first_seen alerts of their own: {new}");
    let history: Vec<&Path> = history.iter().map(PathBuf::as_path).collect();
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    replay_matches(&dir.path().join("live"), &history, &lines, &inventory, &batch, &["out_of_scope"]).await;
}

/// A value new to a credential's own history but known to its other
/// caller's credentials is no first_seen finding. `watch` hands first_seen
/// only the events with a new value, plus each caller's first event: the
/// query learns from that event that the second principal called, and
/// takes that principal's credentials' history as known, as batch `detect` does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_known_to_another_caller_of_the_key_is_not_new_live_or_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (history, today, inventory) = gateway_days(dir.path());
    let read = |p: &Path| -> Vec<Value> {
        std::fs::read_to_string(p).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    let past: Vec<Value> = history.iter().flat_map(|p| read(p)).collect();
    let text = |r: &Value, f: &str| r[f].as_str().map(str::to_string);
    // Ordered maps: the same key, principal and tool in every run.
    let mut tools: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut keys: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut principal_of: BTreeMap<String, String> = BTreeMap::new();
    for r in &past {
        let (c, p) = (text(r, "credential_id").unwrap(), text(r, "principal").unwrap());
        tools.entry(c.clone()).or_default().extend(text(r, "tool"));
        keys.entry(p.clone()).or_default().insert(c.clone());
        principal_of.insert(c, p);
    }
    let mut records = read(&today);
    // A key that called tools, and another principal of several keys with a tool it never called.
    let third = records.len() / 3;
    let (at, key) = records[third..]
        .iter()
        .enumerate()
        .find_map(|(i, r)| {
            let c = text(r, "credential_id")?;
            (!tools.get(&c)?.is_empty()).then_some((third + i, c))
        })
        .expect("a key with tool calls in its history");
    let (other, tool) = keys
        .iter()
        .filter(|(p, ks)| ks.len() >= 2 && **p != principal_of[&key])
        .find_map(|(p, ks)| {
            let theirs = ks.iter().flat_map(|k| &tools[k]).find(|t| !tools[&key].contains(*t))?;
            Some((p.clone(), theirs.clone()))
        })
        .expect("another principal's keys use a tool this key never did");
    // The other principal calls with the key (its usual values), then the key's own principal uses that tool.
    let mut theirs = records[at].clone();
    theirs["principal"] = Value::from(other.as_str());
    theirs["request_id"] = Value::from("req_other_caller");
    let mut new_tool = records[at].clone();
    new_tool["tool"] = Value::from(tool.as_str());
    new_tool["request_id"] = Value::from("req_their_tool");
    records.splice(at + 1..at + 1, [theirs, new_tool]);
    let lines: Vec<String> = records.iter().map(Value::to_string).collect();
    std::fs::write(&today, lines.join("\n") + "\n").unwrap();

    let all: Vec<&Path> = history.iter().map(PathBuf::as_path).chain([today.as_path()]).collect();
    let batch = batch_alerts(&dir.path().join("batch"), &all, "2026-11-05", "2026-11-05", &inventory);
    // The inventory may still call the tool out of the key's scope; what is
    // new to the key's identity would be a first_seen finding or join one.
    let new: Vec<&Value> = batch
        .iter()
        .filter(|a| a["credential_id"] == key.as_str())
        .filter(|a| a["finding"].as_str().unwrap().starts_with("first_seen_") || a.to_string().contains("first-seen"))
        .collect();
    assert!(new.is_empty(), "batch detect knows {tool} from {other}'s keys, so {key} using it is not new: {new:#?}");
    let history: Vec<&Path> = history.iter().map(PathBuf::as_path).collect();
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    // The two calls are judged in one pass: replay_matches feeds pieces of lines.len() / 12.
    let size = lines.len().div_ceil(12).min(400);
    assert_eq!((at + 1) / size, (at + 2) / size, "the other caller and the tool arrive together");
    replay_matches(&dir.path().join("live"), &history, &lines, &inventory, &batch, &[]).await;
}

/// The same for a CloudTrail week, its last day streamed one record per
/// line (as CloudTrail Lake exports and EventBridge deliver them): session
/// keys, LLMjacking recon and defence evasion, and Bedrock calls whose
/// credentials `watch` judges together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_cloudtrail_passes_end_with_the_batch_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let sample = dir.path().join("sample");
    generate_sample(
        &sample,
        5,
        &["--format", "cloudtrail", "--days", "4", "--credentials", "30", "--rate-scale", "0.4"],
    );
    let inventory = sample.join("inventory.csv");
    let mut files = common::walk(&sample.join("AWSLogs"));
    files.sort();
    let (today, history): (Vec<&PathBuf>, Vec<&PathBuf>) =
        files.iter().partition(|p| p.to_string_lossy().contains("/2026/11/05/"));
    assert!(!today.is_empty() && !history.is_empty(), "the sample spans 2026-11-02..05");

    let all: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let batch = batch_alerts(&dir.path().join("batch"), &all, "2026-11-05", "2026-11-05", &inventory);
    let mut records: Vec<Value> = Vec::new();
    for f in &today {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(std::fs::File::open(f).unwrap()), &mut text)
            .unwrap();
        let doc: Value = serde_json::from_str(&text).unwrap();
        records.extend(doc["Records"].as_array().unwrap().iter().cloned());
    }
    records.sort_by(|a, b| a["eventTime"].as_str().cmp(&b["eventTime"].as_str()));
    let lines: Vec<String> = records.iter().map(Value::to_string).collect();
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let history: Vec<&Path> = history.iter().map(|p| p.as_path()).collect();
    // No memory bound is checked: nearly every call here is a Bedrock one, and once
    // one Bedrock key may spike, all of them are judged (and held) together.
    let families = ["billing_spike", "retry_storm", "tool_chaining", "out_of_scope", "defense_evasion"];
    replay_matches(&dir.path().join("live"), &history, &lines, &inventory, &batch, &families).await;
}

/// Ingests `history` into `lake`, feeds `lines` (one day) to the live engine
/// in pieces as `watch` would, and checks the day ends with the `batch`
/// alerts, field for field; `families` are detectors the day must hold.
/// Returns the events the live day still holds.
async fn replay_matches(
    lake: &Path,
    history: &[&Path],
    lines: &[&str],
    inventory: &Path,
    batch: &[Value],
    families: &[&str],
) -> usize {
    use credtrail::detect::Engine;
    use credtrail::ingest::LineParser;
    use credtrail::ingest::source::Chunk;
    use credtrail::stream::live::Live;

    let found: BTreeSet<&str> = batch.iter().map(|a| a["detector"].as_str().unwrap()).collect();
    for f in families {
        assert!(found.contains(f), "the sample's last day has a {f} alert: {found:?}");
    }
    common::ingest(lake, history, &[]);
    let engine = Engine::new(None, Some(inventory), None, None).unwrap();
    let mut live = Live::new(lake.to_path_buf(), engine, None, 28, HashSet::new());
    // Each piece is committed to the lake as `watch` does; every third
    // commit lets the live day drop what no gated query needs, so gates
    // opening later read their credential's day back from the lake.
    let commit = |events: &arrow::array::RecordBatch, exposures: &[credtrail::secrets::ExposureRow]| {
        let lake = credtrail::lake::Lake::open(lake, credtrail::lake::Open::Write).unwrap();
        let txn = lake.begin().unwrap();
        let w = credtrail::ingest::LakeWriter::new(&txn);
        w.push(events, &[], exposures).unwrap();
        w.finish().unwrap();
        txn.commit(Vec::new()).unwrap();
    };
    let parser = LineParser::new(&[], None, None).unwrap();
    let format = parser.detect(lines.join("\n").as_bytes());
    assert!(format.is_some(), "the lines' format is recognised");
    // At least a dozen pieces, whatever the day's size.
    let size = lines.len().div_ceil(12).min(400);
    let mut passes = 0;
    for (k, piece) in lines.chunks(size).enumerate() {
        let chunk = Chunk { bytes: format!("{}\n", piece.join("\n")).into_bytes(), first_line: (k * size + 1) as u64 };
        let p = parser.parse(format, "replayed.log", "test", &chunk);
        assert!(p.quarantine.is_empty(), "every line parses: {:?}", p.quarantine.first().map(|q| &q.reason));
        commit(&p.events, &p.exposures);
        live.add(&[(p.events, p.exposures)], false).await.unwrap();
        live.pass().await.unwrap();
        if k % 3 == 2 {
            live.committed().unwrap();
        }
        passes += 1;
    }
    assert!(passes >= 10, "the day came in {passes} pieces");

    let streamed: Vec<Value> =
        live.take_dirty().iter().flat_map(|d| &d.alerts).map(|a| serde_json::to_value(a).unwrap()).collect();
    let by_id = |v: &[Value]| -> std::collections::BTreeMap<String, Value> {
        v.iter().map(|a| (a["alert_id"].as_str().unwrap().to_string(), a.clone())).collect()
    };
    let (streamed, batch) = (by_id(&streamed), by_id(batch));
    assert_eq!(streamed.keys().collect::<Vec<_>>(), batch.keys().collect::<Vec<_>>(), "watch and detect disagree");
    for (id, a) in &batch {
        for (field, want) in a.as_object().unwrap() {
            let got = &streamed[id][field];
            if field == "score" {
                // Scores are floats from statrs: equal to within rounding.
                let (g, w) = (got.as_f64().unwrap(), want.as_f64().unwrap());
                assert!((g - w).abs() <= 1e-9 * w.abs().max(1.0), "alert {id}: score {g} against {w}");
            } else {
                assert_eq!(got, want, "alert {id}, field {field}");
            }
        }
    }
    live.rows()
}

/// Truncates `path` and writes `lines` into it at once, as a writer that
/// copy-truncates and refills it before the watcher's next poll.
fn truncate_and_refill(path: &Path, lines: Vec<String>) {
    let mut f = OpenOptions::new().write(true).open(path).unwrap();
    f.set_len(0).unwrap();
    f.write_all((lines.join("\n") + "\n").as_bytes()).unwrap();
}

fn assert_exactly(lake: &Path, range: std::ops::Range<usize>) {
    let ids = request_ids(lake);
    let distinct: HashSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "an event was committed twice");
    let expected: HashSet<String> = range.map(|i| format!("req_{i:06}")).collect();
    let got: HashSet<String> = ids.iter().cloned().collect();
    assert_eq!(got, expected, "missing: {:?}", expected.difference(&got).take(5).collect::<Vec<_>>());
}

#[test]
fn a_truncation_refilled_past_the_old_size_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, lines(0..600));
    let lake = dir.path().join("lake");
    let args = ["-f", "app.log", "--from-beginning", "--lake", "lake", "--flush-interval", "100ms"];
    let slow = [&args[..], &["--poll-interval", "500ms"]].concat();
    let w = Watch::start(dir.path(), &slow);
    let count = || request_ids(&lake).len();
    wait_for(&w, "the first 600 lines", || count() == 600);

    // Refilled past its old size before the next poll: the file never looks shorter.
    truncate_and_refill(&log, lines(600..1500));
    wait_for(&w, "the refilled lines", || count() >= 1500);
    std::thread::sleep(Duration::from_millis(1200));
    assert_exactly(&lake, 0..1500);

    // Again, and killed before or after it noticed: the restart neither loses nor repeats.
    truncate_and_refill(&log, lines(1500..2400));
    std::thread::sleep(Duration::from_millis(300));
    w.kill();
    let w = Watch::start(dir.path(), &slow);
    wait_for(&w, "the lines refilled around the kill", || count() >= 2400);
    w.stop();
    assert_exactly(&lake, 0..2400);

    // Once more while no watcher runs.
    truncate_and_refill(&log, lines(2400..3300));
    let w = Watch::start(dir.path(), &slow);
    wait_for(&w, "the lines refilled while stopped", || count() >= 3300);
    w.stop();
    assert_exactly(&lake, 0..3300);
}

/// Storms paced under the per-minute bar and a moderate spend from a new
/// network (the crafted week of issue 18): the live engine, whose gates open
/// on fixed windows, ends the day with exactly batch `detect`'s alerts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_storms_and_new_network_spend_alert_live_as_in_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (history, today) = common::issue18_week();
    let (old, new, inventory) =
        (dir.path().join("history.jsonl"), dir.path().join("today.jsonl"), dir.path().join("inv.csv"));
    common::write(&old, &(history.join("\n") + "\n"));
    common::write(&new, &(today.join("\n") + "\n"));
    common::issue18_inventory(&inventory);
    let batch = batch_alerts(&dir.path().join("batch"), &[&old, &new], "2026-11-08", "2026-11-08", &inventory);
    let storms = batch.iter().filter(|a| a["detector"] == "retry_storm").count();
    assert_eq!(storms, 2, "{batch:#?}");
    let lines: Vec<&str> = today.iter().map(String::as_str).collect();
    replay_matches(&dir.path().join("live"), &[&old], &lines, &inventory, &batch, &["retry_storm", "billing_spike"])
        .await;
}

/// A followed file whose name holds a secret: nothing under the lake holds
/// it (events, quarantine, commits, the checkpoint), and a restart still
/// resumes where the last one stopped, the file known by its fingerprint.
#[test]
fn a_secret_in_a_followed_file_name_never_reaches_the_lake_and_resume_still_works() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "sk-proj-FiLeNaMe0123456789abcdefghij";
    let name = format!("gw-{secret}.log");
    let log = dir.path().join(&name);
    append(&log, lines(0..50));
    append(&log, ["not a record".to_string()]);
    let lake = dir.path().join("lake");
    let args = ["-f", &name, "--from-beginning", "--lake", "lake", "--flush-interval", "100ms"];
    let w = Watch::start(dir.path(), &args);
    wait_for(&w, "the first 50 lines", || request_ids(&lake).len() == 50 && quarantine(&lake).len() == 1);
    w.stop();
    append(&log, lines(50..80));
    let w = Watch::start(dir.path(), &args);
    wait_for(&w, "the lines appended while stopped", || request_ids(&lake).len() >= 80);
    w.stop();
    assert_exactly(&lake, 0..80);

    let needle = &secret[8..];
    let values = serde_json::to_string(&(events(&lake), quarantine(&lake))).unwrap();
    assert!(!values.contains(needle), "a stored value holds the secret");
    let mut checkpoints = 0;
    for f in common::walk(&lake) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(!bytes.windows(needle.len()).any(|w| w == needle.as_bytes()), "{} holds the secret", f.display());
        if f.starts_with(lake.join("_stream")) && f.extension().is_some_and(|x| x == "json") {
            checkpoints += 1;
            assert!(String::from_utf8_lossy(&bytes).contains("gw-[REDACTED:openai_api_key:"), "{}", f.display());
        }
    }
    assert!(checkpoints >= 1, "a checkpoint was committed");
}

/// A private key whose header arrives in one poll and a short body line
/// (too short to look like key material on its own) in the next: the key
/// state carries over between polls, so every line of it is redacted.
#[test]
fn a_private_key_split_over_two_polls_is_redacted_whole() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, lines(0..10));
    append(&log, ["-----BEGIN RSA PRIVATE KEY-----".to_string()]);
    let lake = dir.path().join("lake");
    let args = ["-f", "app.log", "--from-beginning", "--lake", "lake", "--flush-interval", "100ms"];
    let w = Watch::start(dir.path(), &args);
    wait_for(&w, "the lines and the key's header", || request_ids(&lake).len() == 10 && quarantine(&lake).len() == 1);
    let body = "q3Zt8W3Mx9Lk2";
    append(&log, [body.to_string(), "-----END RSA PRIVATE KEY-----".to_string()]);
    append(&log, lines(10..12));
    wait_for(&w, "the lines after the key", || request_ids(&lake).len() >= 12);
    w.stop();
    assert_exactly(&lake, 0..12);

    let q = quarantine(&lake);
    assert_eq!(q.len(), 3, "{q:?}");
    for e in &q {
        assert!(e["raw"].as_str().unwrap().starts_with("[REDACTED:private_key:"), "{e}");
    }
    for f in common::walk(&lake) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(!bytes.windows(body.len()).any(|w| w == body.as_bytes()), "{} holds the key", f.display());
    }
}

/// Every file a watcher's micro-batches wrote keeps the check its commit
/// recorded, though one record stands for all those commits: a flipped byte
/// in the first micro-batch's file is named by `lake check` and refused by
/// a query.
#[test]
fn a_flipped_byte_in_a_micro_batch_file_is_named_by_lake_check_and_queries() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    let lake = dir.path().join("lake");
    let args = ["-f", "app.log", "--from-beginning", "--lake", "lake", "--flush-interval", "100ms"];
    append(&log, lines(0..40));
    let check = || credtrail().args(["lake", "check", "--lake"]).arg(&lake).output().unwrap();
    let w = Watch::start(dir.path(), &args);
    for upto in [40, 80, 120] {
        wait_for(&w, "a micro-batch", || request_ids(&lake).len() == upto);
        append(&log, lines(upto..upto + 40));
        // While the watcher commits (and replaces its checkpoint): nothing is reported.
        let out = check();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    }
    wait_for(&w, "the last micro-batch", || request_ids(&lake).len() == 160);
    w.stop();
    let files = common::parquet_files(&lake.join("events"));
    assert!(files.len() >= 4, "one file per micro-batch: {files:?}");
    let commits = std::fs::read_dir(lake.join("_ingest/commits")).unwrap().count();
    assert_eq!(commits, 1, "one record stands for every micro-batch");

    let out = check();
    let summary = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success() && out.stdout.is_empty(), "{summary}{}", String::from_utf8_lossy(&out.stdout));
    // Every data file, and the watcher's checkpoint, against its record.
    let n = files.len() + common::walk(&lake.join("quarantine")).len() + 1;
    assert!(summary.contains(&format!("checked {n} file(s), {n} against their commit records")), "{summary}");

    // A byte of the footer's writer name: the file still decodes, only its hash tells.
    let victim = files.iter().min().unwrap().clone();
    let mut bytes = std::fs::read(&victim).unwrap();
    let at = bytes.windows(10).rposition(|w| w == b"credtrail ").expect("the writer's name in the footer");
    bytes[at] ^= 0x01;
    std::fs::write(&victim, bytes).unwrap();

    let out = check();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.starts_with(&format!("{}: content changed", victim.display())), "{stdout}");
    let out = credtrail()
        .args(["sql", "--lake"])
        .arg(&lake)
        .args(["-c", "SELECT count(DISTINCT request_id) AS n FROM events"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let name = victim.file_name().unwrap().to_string_lossy();
    assert!(!out.status.success() && stderr.contains(&*name) && stderr.contains("damaged"), "{stderr}");
}

/// A watcher writes a file per micro-batch. The day's small files are
/// merged as they pile up (by size tier, in the micro-batch's own commit),
/// and `lake compact` merges the rest: every line stays in the lake exactly
/// once, and every file keeps its check.
#[test]
fn a_watchers_small_files_are_merged_as_they_pile_up_and_by_lake_compact() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    let lake = dir.path().join("lake");
    // Each round in one write, so that a poll takes it whole: a micro-batch each.
    let round = |k: usize| {
        let text: String = lines(10 * k..10 * (k + 1)).into_iter().map(|l| l + "\n").collect();
        OpenOptions::new().create(true).append(true).open(&log).unwrap().write_all(text.as_bytes()).unwrap();
    };
    round(0);
    let args = ["-f", "app.log", "--from-beginning", "--lake", "lake", "--flush-interval", "100ms"];
    let w = Watch::start(dir.path(), &args);
    for k in 1..12 {
        wait_for(&w, "a micro-batch", || request_ids(&lake).len() == 10 * k);
        round(k);
    }
    wait_for(&w, "the last micro-batch", || request_ids(&lake).len() == 120);
    let stderr = w.stderr.clone();
    w.stop();
    let log_text = std::fs::read_to_string(stderr).unwrap();
    let commits: usize = log_text
        .split(", ")
        .find_map(|p| p.strip_suffix(" commits\n").or_else(|| p.strip_suffix(" commits")))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the summary counts commits: {log_text}"));
    assert_exactly(&lake, 0..120);
    let files = common::parquet_files(&lake.join("events"));
    assert!(commits >= 12 && files.len() < commits, "{} files after {commits} commits", files.len());
    let check = || credtrail().args(["lake", "check", "--lake"]).arg(&lake).output().unwrap();
    assert!(check().status.success(), "{}", String::from_utf8_lossy(&check().stdout));

    let compact = || credtrail().args(["lake", "compact", "--lake"]).arg(&lake).output().unwrap();
    let out = compact();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let want =
        format!("merged {} small event file(s) of 1 day(s) (2026-11-02 to 2026-11-02) into 1, 120 rows", files.len());
    assert!(stdout.starts_with(&want), "{stdout}");
    assert_eq!(common::parquet_files(&lake.join("events")).len(), 1);
    assert_exactly(&lake, 0..120);
    let out = check();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&compact().stdout).starts_with("nothing to compact"));

    let out = credtrail().args(["lake", "compact", "--date", "2026-11-31", "--lake"]).arg(&lake).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("\"2026-11-31\" is not a date (YYYY-MM-DD)"), "{stderr}");
}
