//! The analyst's SQL through the real binary: the shell on stdin, -c and -f,
//! output formats, views, functions, the worked analyst queries, the memory
//! limit and the Flight SQL server. Expected results are computed here from
//! the sample's raw gateway logs, not from the lake.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::OnceLock;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type};
use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use common::*;

/// One request of the sample's gateway logs, as the generator wrote it.
#[derive(Debug, Clone)]
struct Event {
    ts: DateTime<Utc>,
    request_id: String,
    credential: String,
    tool: Option<String>,
    status: Option<u64>,
    error_code: Option<String>,
    cost: Option<f64>,
    source_ip: Option<String>,
}

struct Lake {
    lake: PathBuf,
    data: PathBuf,
    events: Vec<Event>,
}

/// Two ISO weeks of sample traffic (Monday 2026-11-02 to Sunday 2026-11-15),
/// ingested and detected once for every test here; the tests only read it.
fn lake() -> &'static Lake {
    static LAKE: OnceLock<Lake> = OnceLock::new();
    LAKE.get_or_init(|| {
        // A static is never dropped, so the lake outlives the run; earlier runs' lakes are removed here.
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
        for e in std::fs::read_dir(tmp).into_iter().flatten().flatten() {
            let stale = e
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > std::time::Duration::from_secs(3600)));
            if stale && e.file_name().to_string_lossy().starts_with("credtrail-sql-") {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        let work = tempfile::Builder::new().prefix("credtrail-sql-").tempdir_in(tmp).unwrap().keep();
        let data = work.join("sample");
        let out = credtrail()
            .args(["sample", "--days", "14", "--credentials", "24", "--rate-scale", "0.3", "--seed", "3"])
            .args(["--start", "2026-11-02", "--out"])
            .arg(&data)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let lake = work.join("lake");
        let (code, summary) = ingest(&lake, &[&data.join("logs")], &[]);
        assert_eq!(code, 0, "{summary}");
        let out = credtrail()
            .args(["detect", "--lake"])
            .arg(&lake)
            .arg("--inventory")
            .arg(data.join("inventory.csv"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let events = raw_events(&data.join("logs"));
        assert_eq!(events.len() as u64, summary["ingested"].as_u64().unwrap());
        Lake { lake, data, events }
    })
}

fn raw_events(dir: &Path) -> Vec<Event> {
    let mut out = Vec::new();
    for p in walk(dir) {
        for line in std::fs::read_to_string(&p).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let s = |k: &str| v[k].as_str().map(str::to_string);
            out.push(Event {
                ts: DateTime::parse_from_rfc3339(v["ts"].as_str().unwrap()).unwrap().with_timezone(&Utc),
                request_id: s("request_id").unwrap(),
                credential: s("credential_id").unwrap(),
                tool: s("tool"),
                status: v["status"].as_u64(),
                error_code: s("error_code"),
                cost: v["cost_usd"].as_f64(),
                source_ip: s("source_ip"),
            });
        }
    }
    out
}

/// `credtrail sql --lake LAKE ARGS`, with `stdin` piped in.
fn sql(args: &[&str], stdin: &str) -> Output {
    let mut cmd = credtrail();
    cmd.arg("sql").arg("--lake").arg(&lake().lake).args(args).write_stdin(stdin.as_bytes().to_vec());
    cmd.output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "exit {:?}\nstderr: {}", out.status.code(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// JSON-lines output as objects.
fn json_rows(out: &Output) -> Vec<serde_json::Map<String, serde_json::Value>> {
    ok(out).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn time(v: &serde_json::Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap().with_timezone(&Utc)
}

fn analyst(name: &str) -> String {
    format!("{}/queries/analyst/{name}.sql", env!("CARGO_MANIFEST_DIR"))
}

fn monday(t: DateTime<Utc>) -> NaiveDate {
    let d = t.date_naive();
    d - Duration::days(d.weekday().num_days_from_monday() as i64)
}

fn count_by<K: Ord>(events: &[Event], key: impl Fn(&Event) -> K) -> BTreeMap<K, i64> {
    let mut m = BTreeMap::new();
    for e in events {
        *m.entry(key(e)).or_insert(0) += 1;
    }
    m
}

#[test]
fn the_shell_on_stdin_reports_a_bad_statement_and_answers_the_next() {
    let l = lake();
    let out = sql(
        &["--format", "csv"],
        "SELECT count(*) AS n FROM events;\nSELECT nope FROM events;\nSELECT count(DISTINCT credential_id)\n  AS c FROM events;\n",
    );
    // A statement failed, so the exit status says so; but every other statement ran.
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    let creds: BTreeSet<&str> = l.events.iter().map(|e| e.credential.as_str()).collect();
    assert_eq!(text, format!("n\n{}\nc\n{}\n", l.events.len(), creds.len()));
    let err = stderr(&out);
    assert!(err.contains("error: Schema error: No field named nope"), "{err}");
    assert!(err.contains("1 statement(s) failed"), "{err}");
}

#[test]
fn backslash_commands_list_tables_columns_and_views() {
    let l = lake();
    let out = sql(&[], "\\dt\n\\d\n\\d events\n\\q\nSELECT 1;\n");
    let text = ok(&out);
    for table in ["events", "alerts", "quarantine", "secret_exposures", "detector_secret_exposure"] {
        assert!(text.lines().any(|line| line.starts_with(table)), "{table} missing from:\n{text}");
    }
    // (Columns are aligned to the longest name, so compare words.)
    let kind_of = |name: &str| text.lines().find(|l| l.starts_with(name)).and_then(|l| l.split_whitespace().nth(1));
    assert_eq!(kind_of("detector_defense_evasion "), Some("view"), "{text}");
    // \d shows columns; \d NAME one per line.
    assert!(text.contains("ts timestamp(ms, UTC), request_id string, credential_id string"), "{text}");
    assert!(text.contains("\n  credential_id  string  not null\n"), "{text}");
    // Without an inventory the scope detector's view cannot exist: a note, not an error.
    assert!(text.contains("note: detector_out_of_scope is not available: it reads the credentials table"), "{text}");
    assert!(!text.contains("Int64(1)"), "\\q stops the shell");

    let inv = l.data.join("inventory.csv");
    let out = sql(&["--inventory", inv.to_str().unwrap()], "\\dt\n");
    let text = ok(&out);
    for (name, _) in credtrail::detect::detector_queries() {
        assert!(text.contains(&format!("detector_{name}  ")), "detector_{name} missing from:\n{text}");
    }
    assert!(text.contains("credentials "), "{text}");
    assert!(!text.contains("note:"), "{text}");
}

#[test]
fn a_script_runs_every_statement_and_stops_at_the_first_error() {
    let l = lake();
    let work = tempfile::tempdir().unwrap();
    let script = work.path().join("report.sql");
    write(
        &script,
        "-- a report\nCREATE VIEW busy AS\n  SELECT credential_id, count(*) AS n FROM events GROUP BY 1;\n\
         SELECT count(*) AS creds FROM busy;\nSELECT max(n) AS most FROM busy;\n",
    );
    let text = ok(&sql(&["--format", "csv", "-f", script.to_str().unwrap()], ""));
    let per = count_by(&l.events, |e| e.credential.clone());
    assert_eq!(text, format!("creds\n{}\nmost\n{}\n", per.len(), per.values().max().unwrap()));

    // -c takes several statements too.
    let text = ok(&sql(&["--format", "csv", "-c", "SELECT 1 AS a; SELECT 2 AS b"], ""));
    assert_eq!(text, "a\n1\nb\n2\n");

    write(&script, "SELECT 1 AS a;\n\nSELEC 2;\nSELECT 3 AS c;\n");
    let out = sql(&["--format", "csv", "-f", script.to_str().unwrap()], "");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "a\n1\n", "stops at the error");
    let err = stderr(&out);
    assert!(err.contains("report.sql: statement at line 3: SQL error"), "{err}");
}

#[test]
fn every_output_format_carries_the_same_result() {
    let l = lake();
    let query = "SELECT credential_id, count(*) AS n, sum(cost_usd) AS cost FROM events GROUP BY 1 ORDER BY 1";
    let want = count_by(&l.events, |e| e.credential.clone());
    // sum() of nothing but nulls is null: a credential that only made tool calls has no cost.
    let mut cost: BTreeMap<String, Option<f64>> = BTreeMap::new();
    for e in &l.events {
        let c = cost.entry(e.credential.clone()).or_default();
        if let Some(x) = e.cost {
            *c = Some(c.unwrap_or(0.0) + x);
        }
    }

    let csv_text = ok(&sql(&["--format", "csv", "-c", query], ""));
    let mut r = csv::Reader::from_reader(csv_text.as_bytes());
    let got: Vec<(String, i64, Option<f64>)> = r.deserialize().map(|x| x.unwrap()).collect();
    assert_eq!(got.iter().map(|(c, n, _)| (c.clone(), *n)).collect::<BTreeMap<_, _>>(), want);
    for (c, _, x) in &got {
        match (x, cost[c]) {
            (Some(x), Some(y)) => assert!((x - y).abs() < 1e-6, "{c}: {x} vs {y}"),
            (x, y) => assert_eq!(*x, y, "{c}"),
        }
    }

    let rows = json_rows(&sql(&["--format", "json", "-c", query], ""));
    let got: BTreeMap<String, i64> =
        rows.iter().map(|r| (r["credential_id"].as_str().unwrap().to_string(), r["n"].as_i64().unwrap())).collect();
    assert_eq!(got, want);

    let table = ok(&sql(&["--format", "table", "-c", query], ""));
    assert!(table.starts_with("+-"), "{table}");
    let (cred, n) = want.iter().next().unwrap();
    assert!(table.lines().any(|line| line.contains(cred.as_str()) && line.contains(&format!("| {n} "))), "{table}");

    // Parquet: written whole under its final name, read back with the parquet crate.
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("per-credential.parquet");
    let out = sql(&["--format", "parquet", "--output", file.to_str().unwrap(), "-c", query], "");
    assert_eq!(ok(&out), "");
    let batches = read_parquet(&file);
    let mut got = BTreeMap::new();
    for b in &batches {
        let c = arrow::compute::cast(b.column(0), &DataType::Utf8).unwrap();
        let n = b.column(1).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            got.insert(c.as_string::<i32>().value(i).to_string(), n.value(i));
        }
    }
    assert_eq!(got, want);
    let names: Vec<String> =
        std::fs::read_dir(work.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    assert_eq!(names, vec!["per-credential.parquet".to_string()], "no temporary file is left behind");

    let out = sql(&["--format", "parquet", "-c", query], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--format parquet needs --output FILE"));
}

#[test]
fn detector_views_and_functions() {
    let l = lake();
    let inv = l.data.join("inventory.csv");
    // The scope detector's view holds exactly the evidence its alerts were made of.
    let rows = json_rows(&sql(
        &["--format", "json", "--inventory", inv.to_str().unwrap()],
        "SELECT (SELECT count(*) FROM detector_out_of_scope) AS view_rows, \
         (SELECT sum(evidence_count) FROM alerts WHERE detector = 'out_of_scope') AS evidence;",
    ));
    assert!(rows[0]["view_rows"].as_i64().unwrap() > 0);
    assert_eq!(rows[0]["view_rows"].as_i64(), rows[0]["evidence"].as_i64(), "{rows:?}");

    // ip_in_cidr against std's own parsing of the raw addresses.
    let in_net = |ip: &str, a: u8, b: Option<u8>| {
        ip.parse::<std::net::Ipv4Addr>().is_ok_and(|x| x.octets()[0] == a && b.is_none_or(|b| x.octets()[1] == b))
    };
    let ips: Vec<&str> = l.events.iter().filter_map(|e| e.source_ip.as_deref()).collect();
    let ten = ips.iter().filter(|ip| in_net(ip, 10, None)).count();
    let first = ips.iter().find(|ip| in_net(ip, 10, None)).unwrap();
    let second = first.split('.').nth(1).unwrap().parse::<u8>().unwrap();
    let sixteen = ips.iter().filter(|ip| in_net(ip, 10, Some(second))).count();
    assert!(ten > sixteen && sixteen > 0);
    let q = format!(
        "SELECT count(*) FILTER (WHERE ip_in_cidr(source_ip, '10.0.0.0/8')) AS ten, \
         count(*) FILTER (WHERE ip_in_cidr(source_ip, '10.{second}.0.0/16')) AS sixteen, \
         count(*) FILTER (WHERE ip_in_cidr(source_ip, 'not a network')) AS junk, \
         robust_z(10, 4, 2) AS z, robust_z(3, 3, 0) AS flat FROM events"
    );
    let rows = json_rows(&sql(&["--format", "json", "-c", &q], ""));
    assert_eq!(rows[0]["ten"].as_u64(), Some(ten as u64));
    assert_eq!(rows[0]["sixteen"].as_u64(), Some(sixteen as u64));
    assert_eq!(rows[0]["junk"].as_u64(), Some(0));
    assert!((rows[0]["z"].as_f64().unwrap() - 6.0 / (2.0 * 1.4826)).abs() < 1e-12);
    assert!(rows[0]["flat"].is_null());
    // scope_allows is there too.
    let rows = json_rows(&sql(&["--format", "json", "-c", "SELECT scope_allows(['gpt-4o*'], 'gpt-4o-mini') AS y"], ""));
    assert_eq!(rows[0]["y"], true);
}

/// (credential, status, error code) → failures.
type ErrorCount = ((String, Option<u64>, Option<String>), i64);

#[test]
fn top_errors_matches_the_logs() {
    let l = lake();
    let rows = json_rows(&sql(&["--format", "json", "-f", &analyst("top_errors")], ""));
    let failed: Vec<Event> =
        l.events.iter().filter(|e| e.status.is_some_and(|s| s >= 400) || e.error_code.is_some()).cloned().collect();
    let counts = count_by(&failed, |e| (e.credential.clone(), e.status, e.error_code.clone()));
    let mut want: Vec<ErrorCount> = counts.into_iter().collect();
    // errors DESC, then credential, status, error code (nulls last), as the query orders.
    want.sort_by(|(ka, a), (kb, b)| {
        b.cmp(a).then(ka.0.cmp(&kb.0)).then(ka.1.cmp(&kb.1)).then(match (&ka.2, &kb.2) {
            (None, None) => std::cmp::Ordering::Equal,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(_), None) => std::cmp::Ordering::Less,
            (Some(x), Some(y)) => x.cmp(y),
        })
    });
    want.truncate(20);
    let got: Vec<ErrorCount> = rows
        .iter()
        .map(|r| {
            let key = (
                r["credential_id"].as_str().unwrap().to_string(),
                r["status"].as_u64(),
                r["error_code"].as_str().map(str::to_string),
            );
            (key, r["errors"].as_i64().unwrap())
        })
        .collect();
    assert_eq!(got, want);
    // The labelled retry storms (a revoked or guessed key hammered) top the list.
    let labels = csv_rows(&l.data.join("labels.csv"));
    let storms: BTreeSet<&str> =
        labels.iter().filter(|x| x["kind"] == "retry_storm").map(|x| x["credential_id"].as_str()).collect();
    let top: BTreeSet<&str> = rows[..storms.len()].iter().map(|r| r["credential_id"].as_str().unwrap()).collect();
    assert!(!storms.is_empty());
    assert_eq!(top, storms);
}

#[test]
fn cost_doubled_matches_the_logs_and_finds_the_billing_spike() {
    let l = lake();
    let rows = json_rows(&sql(&["--format", "json", "-f", &analyst("cost_doubled")], ""));
    let mut weekly: BTreeMap<(String, NaiveDate), f64> = BTreeMap::new();
    for e in &l.events {
        *weekly.entry((e.credential.clone(), monday(e.ts))).or_default() += e.cost.unwrap_or(0.0);
    }
    let want: BTreeSet<(String, NaiveDate)> = weekly
        .iter()
        .filter(|((c, w), cost)| {
            weekly.get(&(c.clone(), *w - Duration::days(7))).is_some_and(|prev| *prev > 0.0 && **cost >= 2.0 * prev)
        })
        .map(|(k, _)| k.clone())
        .collect();
    let got: BTreeSet<(String, NaiveDate)> = rows
        .iter()
        .map(|r| (r["credential_id"].as_str().unwrap().to_string(), time(&r["week"]).date_naive()))
        .collect();
    assert_eq!(got, want);
    for r in &rows {
        let key = (r["credential_id"].as_str().unwrap().to_string(), time(&r["week"]).date_naive());
        assert!((r["cost"].as_f64().unwrap() - weekly[&key]).abs() < 1e-6);
    }
    // The billing spike labelled in the second week is among them.
    let labels = csv_rows(&l.data.join("labels.csv"));
    let spike = labels
        .iter()
        .find(|x| x["kind"] == "billing_spike" && x["start"].as_str() >= "2026-11-09")
        .expect("the sample has a billing spike in its second week");
    assert!(got.iter().any(|(c, _)| c == &spike["credential_id"]), "{got:?} lacks {spike:?}");
}

#[test]
fn first_used_tools_matches_the_logs() {
    let l = lake();
    let rows = json_rows(&sql(&["--format", "json", "-f", &analyst("first_used_tools")], ""));
    let week = monday(l.events.iter().map(|e| e.ts).max().unwrap());
    let mut first_tool: BTreeMap<(String, String), DateTime<Utc>> = BTreeMap::new();
    let mut first_seen: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
    for e in &l.events {
        let f = first_seen.entry(e.credential.clone()).or_insert(e.ts);
        *f = (*f).min(e.ts);
        if let Some(t) = &e.tool {
            let f = first_tool.entry((e.credential.clone(), t.clone())).or_insert(e.ts);
            *f = (*f).min(e.ts);
        }
    }
    let want: BTreeMap<(String, String), DateTime<Utc>> = first_tool
        .into_iter()
        .filter(|((c, _), t)| t.date_naive() >= week && first_seen[c].date_naive() < week)
        .collect();
    let got: BTreeMap<(String, String), DateTime<Utc>> = rows
        .iter()
        .map(|r| {
            let key = (r["credential_id"].as_str().unwrap().to_string(), r["tool"].as_str().unwrap().to_string());
            (key, time(&r["first_used"]))
        })
        .collect();
    assert_eq!(got, want);
    // Tool chaining into shell execution, labelled in the second week, is a first use.
    let labels = csv_rows(&l.data.join("labels.csv"));
    let chain = labels.iter().find(|x| x["kind"] == "tool_chaining" && x["start"].as_str() >= "2026-11-09").unwrap();
    assert!(got.contains_key(&(chain["credential_id"].clone(), "shell.exec".to_string())), "{got:?}");
}

#[test]
fn credential_timeline_is_the_hour_around_a_moment() {
    let l = lake();
    let labels = csv_rows(&l.data.join("labels.csv"));
    let label = labels.iter().find(|x| x["kind"] == "out_of_scope").unwrap();
    let (cred, at) = (label["credential_id"].as_str(), label["start"].as_str());
    let args = ["--format", "json", "--param", &format!("credential={cred}"), "--param", &format!("at={at}")];
    let rows = json_rows(&sql(&[&args[..], &["-f", &analyst("credential_timeline")]].concat(), ""));
    let at = DateTime::parse_from_rfc3339(at).unwrap().with_timezone(&Utc);
    let mut want: Vec<(DateTime<Utc>, String)> = l
        .events
        .iter()
        .filter(|e| e.credential == cred && (e.ts - at).abs() <= Duration::minutes(30))
        .map(|e| (e.ts, e.request_id.clone()))
        .collect();
    want.sort();
    let got: Vec<(DateTime<Utc>, String)> =
        rows.iter().map(|r| (time(&r["ts"]), r["request_id"].as_str().unwrap().to_string())).collect();
    assert!(want.len() > 1);
    assert_eq!(got, want);

    // credential_activity: the same credential's whole day.
    let day = at.date_naive().to_string();
    let args = ["--format", "json", "--param", &format!("credential={cred}"), "--param", &format!("date={day}")];
    let rows = json_rows(&sql(&[&args[..], &["-f", &analyst("credential_activity")]].concat(), ""));
    let n = l.events.iter().filter(|e| e.credential == cred && e.ts.date_naive() == at.date_naive()).count();
    assert_eq!(rows.len(), n);

    // A parameter left out is named.
    let out = sql(&["-f", &analyst("credential_timeline"), "--param", "credential=x"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("{at} has no value: pass --param at=VALUE"), "{}", stderr(&out));
}

#[test]
fn errors_are_clean_and_memory_is_bounded() {
    // A careless query past the memory limit fails with DataFusion's message, not by exhausting the machine:
    // a join's build side (every column of every event) cannot spill.
    let out = sql(
        &[
            "--memory-limit",
            "256KiB",
            "-c",
            "SELECT a.*, b.ts AS other FROM events a JOIN events b ON a.session_id = b.session_id LIMIT 1",
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("Resources exhausted"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let out = sql(&["--memory-limit", "lots", "-c", "SELECT 1"], "");
    assert_eq!(out.status.code(), Some(2));

    let out = sql(&["-c", "SELEC 1"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("SQL error: ParserError"), "{}", stderr(&out));

    // No writing the lake from SQL: it is written through ingest's commit protocol only.
    let out = sql(&["-c", "INSERT INTO events SELECT * FROM events LIMIT 1"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("DML not supported"), "{}", stderr(&out));

    let missing = lake().lake.with_file_name("no-such-lake");
    let out = credtrail().args(["sql", "-c", "SELECT 1", "--lake"]).arg(&missing).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not a credtrail lake"), "{}", stderr(&out));
}

fn csv_rows(path: &Path) -> Vec<std::collections::HashMap<String, String>> {
    csv::Reader::from_path(path).unwrap().deserialize().map(|r| r.unwrap()).collect()
}

/// A `credtrail serve` process, stopped when dropped.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn serve_refuses_a_non_loopback_address() {
    let out = credtrail().args(["serve", "--listen", "0.0.0.0:0", "--lake"]).arg(&lake().lake).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("is not a loopback address"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flight_sql_round_trip() {
    use arrow_flight::sql::CommandGetTables;
    use arrow_flight::sql::client::FlightSqlServiceClient;
    use futures::TryStreamExt;

    let l = lake();
    let inv = l.data.join("inventory.csv");
    let (server, url) = start_server(&[std::ffi::OsStr::new("--inventory"), inv.as_os_str()], &[]);
    let mut client = connect(&url).await;

    async fn fetch(
        client: &mut FlightSqlServiceClient<tonic::transport::Channel>,
        info: arrow_flight::FlightInfo,
    ) -> Vec<RecordBatch> {
        let mut out = Vec::new();
        for ep in info.endpoint {
            let stream = client.do_get(ep.ticket.unwrap()).await.unwrap();
            out.extend(stream.try_collect::<Vec<_>>().await.unwrap());
        }
        out
    }
    fn pairs(batches: &[RecordBatch]) -> BTreeMap<String, i64> {
        let mut m = BTreeMap::new();
        for b in batches {
            let c = arrow::compute::cast(b.column(0), &DataType::Utf8).unwrap();
            for i in 0..b.num_rows() {
                m.insert(c.as_string::<i32>().value(i).to_string(), b.column(1).as_primitive::<Int64Type>().value(i));
            }
        }
        m
    }

    let query = "SELECT credential_id, count(*) AS n FROM events GROUP BY 1 ORDER BY 1";
    let want = count_by(&l.events, |e| e.credential.clone());
    let info = client.execute(query.to_string(), None).await.unwrap();
    let schema = info.clone().try_decode_schema().unwrap();
    assert_eq!(schema.field(0).data_type(), &DataType::Utf8, "dictionaries travel as plain strings");
    assert_eq!(pairs(&fetch(&mut client, info).await), want);

    // Prepared statements, as JDBC and ADBC drivers use.
    let mut prepared = client.prepare(query.to_string(), None).await.unwrap();
    assert_eq!(prepared.dataset_schema().unwrap().field(1).name(), "n");
    let info = prepared.execute().await.unwrap();
    assert_eq!(pairs(&fetch(&mut client, info).await), want);
    prepared.close().await.unwrap();

    // The catalogue: the lake's tables and the detector views.
    let cmd = CommandGetTables {
        catalog: None,
        db_schema_filter_pattern: None,
        table_name_filter_pattern: None,
        table_types: vec![],
        include_schema: false,
    };
    let info = client.get_tables(cmd).await.unwrap();
    let mut tables = BTreeMap::new();
    for b in fetch(&mut client, info).await {
        let name = b.column_by_name("table_name").unwrap().as_string::<i32>().clone();
        let kind = b.column_by_name("table_type").unwrap().as_string::<i32>().clone();
        for i in 0..b.num_rows() {
            tables.insert(name.value(i).to_string(), kind.value(i).to_string());
        }
    }
    for t in ["events", "alerts", "credentials", "quarantine", "secret_exposures"] {
        assert_eq!(tables.get(t).map(String::as_str), Some("TABLE"), "{tables:?}");
    }
    assert_eq!(tables.get("detector_out_of_scope").map(String::as_str), Some("VIEW"), "{tables:?}");

    // A bad query is the client's error, with DataFusion's message; the server goes on.
    let err = client.execute("SELECT nope FROM events".to_string(), None).await.unwrap_err();
    assert!(err.to_string().contains("No field named nope"), "{err}");
    let err = client.execute("CREATE VIEW x AS SELECT 1".to_string(), None).await.unwrap_err();
    assert!(err.to_string().contains("DDL not supported"), "{err}");
    let info = client.execute("SELECT count(*) AS n FROM alerts".to_string(), None).await.unwrap();
    assert_eq!(fetch(&mut client, info).await.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
    drop(server);
}

#[test]
fn the_real_shape_panther_records_answer_through_the_shell_and_views() {
    let work = tempfile::tempdir().unwrap();
    let lake = work.path().join("lake");
    ingest(&lake, &[&fixture("panther/cloudtrail.json.gz")], &[]);
    // Alerts and baselines exist once detect has run over it.
    let out = credtrail().args(["detect", "--output", "jsonl", "--lake"]).arg(&lake).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let script = "SELECT count(*) AS n FROM events;\n\
                  SELECT count(*) AS n FROM quarantine;\n\
                  SELECT count(*) AS n FROM detector_defense_evasion WHERE value LIKE 'bedrock:%Guardrail';\n\
                  SELECT count(*) AS n FROM alerts WHERE credential_id = 'arn:aws:iam::123123123123:role/aws-reserved/sso.amazonaws.com/us-west-2/DevAdmin';\n";
    let out = credtrail().args(["sql", "--format", "json", "--lake"]).arg(&lake).write_stdin(script).output().unwrap();
    let counts: Vec<i64> = ok(&out)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["n"].as_i64())
        .collect();
    // 223 ingested and 16 quarantined (the ingest rule), the two guardrail
    // changes, and the alerts detect wrote for the key that made them.
    assert_eq!(counts[..3], [223, 16, 2], "{counts:?}");
    assert!(counts[3] >= 2, "{counts:?}");
}

/// A query that keeps a core busy for minutes with little memory: every ordered pair of the sample's events.
const HEAVY: &str = "SELECT count(*) AS n FROM events a, events b WHERE a.request_id < b.request_id";

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

/// Starts `credtrail serve --listen 127.0.0.1:0` on the test lake with `args` and `env`
/// (no token from the environment otherwise); returns it and the URL it printed.
fn start_server<S: AsRef<std::ffi::OsStr>>(args: &[S], env: &[(&str, &str)]) -> (Server, String) {
    start_server_on(&lake().lake, args, env)
}

/// [`start_server`] on the lake at `lake`.
fn start_server_on<S: AsRef<std::ffi::OsStr>>(lake: &Path, args: &[S], env: &[(&str, &str)]) -> (Server, String) {
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin!("credtrail"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--lake"])
        .arg(lake)
        .args(args)
        .env("RUST_LOG", "error")
        .env_remove(credtrail::flight::TOKEN_ENV)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut server = Server(cmd.spawn().unwrap());
    let mut first = String::new();
    std::io::BufReader::new(server.0.stdout.take().unwrap()).read_line(&mut first).unwrap();
    let url = first.split_whitespace().find(|w| w.contains("://")).expect(&first).to_string();
    (server, url)
}

type Client = arrow_flight::sql::client::FlightSqlServiceClient<tonic::transport::Channel>;

async fn connect(url: &str) -> Client {
    let addr = url.split("://").nth(1).unwrap();
    let channel = tonic::transport::Endpoint::new(format!("http://{addr}")).unwrap().connect().await.unwrap();
    Client::new(channel)
}

/// Rows of a query's result, or the first error on the way.
async fn count_rows(client: &mut Client, query: &str) -> Result<usize, arrow_flight::error::FlightError> {
    use futures::TryStreamExt;
    let info = client.execute(query.to_string(), None).await?;
    let mut n = 0;
    for ep in info.endpoint {
        let batches: Vec<RecordBatch> = client.do_get(ep.ticket.unwrap()).await?.try_collect().await?;
        n += batches.iter().map(|b| b.num_rows()).sum::<usize>();
    }
    Ok(n)
}

fn code(e: &arrow_flight::error::FlightError) -> Option<tonic::Code> {
    match e {
        arrow_flight::error::FlightError::Tonic(s) => Some(s.code()),
        _ => None,
    }
}

/// CPU seconds the process has used (user + system), from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces): utime and stime are the 12th and 13th.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = rest.split(' ').skip(11).take(2).map(|x| x.parse().unwrap()).collect();
    (f[0] + f[1]) as f64 / 100.0
}

/// Waits until the server's CPU use over a second is near zero (no query left
/// running). A stopped query's threads end when the operator's current poll
/// returns: for the join below, one batch against the whole other side.
async fn settles(pid: u32) -> bool {
    for _ in 0..90 {
        let before = cpu_seconds(pid);
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        if cpu_seconds(pid) - before < 0.2 {
            return true;
        }
    }
    false
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_stops_queries_at_their_deadline_and_when_clients_leave() {
    use std::time::{Duration, Instant};
    let (server, url) = start_server(&["--query-timeout", "1s"], &[]);
    let pid = server.0.id();

    let heavy = tokio::spawn({
        let url = url.clone();
        async move {
            let mut c = connect(&url).await;
            let start = Instant::now();
            (count_rows(&mut c, HEAVY).await, start.elapsed())
        }
    });
    // While it runs, another client connects and is answered.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = Instant::now();
    let mut other = connect(&url).await;
    assert_eq!(count_rows(&mut other, "SELECT 1").await.unwrap(), 1);
    assert!(start.elapsed() < Duration::from_secs(10), "{:?}", start.elapsed());

    let (result, took) = heavy.await.unwrap();
    let e = result.unwrap_err();
    assert_eq!(code(&e), Some(tonic::Code::DeadlineExceeded), "{e}");
    assert!(e.to_string().contains("--query-timeout"), "{e}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(settles(pid).await, "the query stopped at its deadline");

    // A client that goes away takes its query with it.
    let (server, url) = start_server::<&str>(&[], &[]);
    let pid = server.0.id();
    let mut c = connect(&url).await;
    let info = c.execute(HEAVY.to_string(), None).await.unwrap();
    let stream = c.do_get(info.endpoint[0].ticket.clone().unwrap()).await.unwrap();
    let before = cpu_seconds(pid);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(cpu_seconds(pid) - before > 0.1, "the query is running");
    drop(stream);
    drop(c);
    assert!(settles(pid).await, "the query stopped when its client left");
    // And the server still answers.
    assert_eq!(count_rows(&mut connect(&url).await, "SELECT 1").await.unwrap(), 1);
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_serve_promptly_during_a_heavy_query() {
    use std::time::{Duration, Instant};
    let (mut server, url) = start_server::<&str>(&[], &[]);
    let heavy = tokio::spawn(async move { count_rows(&mut connect(&url).await, HEAVY).await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let start = Instant::now();
    let kill = std::process::Command::new("kill").args(["-TERM", &server.0.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let status = loop {
        if let Some(s) = server.0.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(8), "still running {:?} after SIGTERM", start.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
    assert!(heavy.await.unwrap().is_err(), "the client learns its query did not finish");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_tokens_admits_only_their_holders() {
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("tokens");
    write(&file, &format!("# analysts\n{TOKEN}\n"));
    let env_token = "ffffffffffffffffffffffffffffffff";
    let (_server, url) = start_server(
        &[std::ffi::OsStr::new("--tokens-file"), file.as_os_str()],
        &[(credtrail::flight::TOKEN_ENV, env_token)],
    );

    let mut c = connect(&url).await;
    let e = count_rows(&mut c, "SELECT 1").await.unwrap_err();
    assert_eq!(code(&e), Some(tonic::Code::Unauthenticated), "{e}");
    assert!(e.to_string().contains("needs a token"), "{e}");
    c.set_token("0123456789abcdef0123456789abcdeX".into());
    let e = count_rows(&mut c, "SELECT 1").await.unwrap_err();
    assert_eq!(code(&e), Some(tonic::Code::Unauthenticated), "{e}");
    assert!(!e.to_string().contains(TOKEN), "{e}");
    c.set_token(TOKEN.into());
    assert_eq!(count_rows(&mut c, "SELECT 1").await.unwrap(), 1);
    c.set_token(env_token.into());
    assert_eq!(count_rows(&mut c, "SELECT 1").await.unwrap(), 1);

    // The handshake ADBC and JDBC drivers make: basic auth in, the bearer out.
    let mut c = connect(&url).await;
    assert!(c.handshake("analyst", "not-the-token-at-all").await.is_err());
    assert!(count_rows(&mut c, "SELECT 1").await.is_err());
    c.handshake("analyst", TOKEN).await.unwrap();
    assert_eq!(c.token().map(String::as_str), Some(TOKEN));
    assert_eq!(count_rows(&mut c, "SELECT 1").await.unwrap(), 1);
}

/// A CA and a certificate it signed for localhost and 127.0.0.1, made with the openssl CLI:
/// (the CA's PEM, the certificate's file, its key's file).
fn test_certificates(dir: &Path) -> (Vec<u8>, PathBuf, PathBuf) {
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl").args(args).current_dir(dir).output().unwrap();
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    openssl(&[&["req", "-x509", "-days", "1", "-subj", "/CN=credtrail test CA", "-keyout", "ca.key", "-out", "ca.pem"][..], &ec].concat());
    openssl(&[&["req", "-subj", "/CN=localhost", "-keyout", "server.key", "-out", "server.csr"][..], &ec].concat());
    write(&dir.join("ext.cnf"), "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n");
    openssl(&[
        "x509",
        "-req",
        "-days",
        "1",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-extfile",
        "ext.cnf",
        "-out",
        "server.pem",
    ]);
    (std::fs::read(dir.join("ca.pem")).unwrap(), dir.join("server.pem"), dir.join("server.key"))
}

/// `serve --allow-remote` over TLS with [`test_certificates`] made in `dir`
/// and [`TOKEN`]: the CA's PEM, the server, and its URL.
fn start_tls_server(dir: &Path) -> (Vec<u8>, Server, String) {
    let (ca, cert, key) = test_certificates(dir);
    let args = [
        std::ffi::OsStr::new("--allow-remote"),
        "--tls-cert".as_ref(),
        cert.as_os_str(),
        "--tls-key".as_ref(),
        key.as_os_str(),
    ];
    let (server, url) = start_server(&args, &[(credtrail::flight::TOKEN_ENV, TOKEN)]);
    (ca, server, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_remote_needs_tokens_and_tls_and_serves_over_tls() {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
    let serve = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = credtrail();
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--lake"]).arg(&lake().lake).args(args);
        cmd.env_remove(credtrail::flight::TOKEN_ENV).envs(env.iter().copied());
        cmd.output().unwrap()
    };
    let out = serve(&["--allow-remote"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("--allow-remote needs authentication: give tokens with --tokens-file"),
        "{}",
        stderr(&out)
    );
    let out = serve(&["--allow-remote"], &[(credtrail::flight::TOKEN_ENV, TOKEN)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--tls-cert FILE --tls-key FILE, or --insecure"), "{}", stderr(&out));
    let out = serve(&["--insecure"], &[]);
    assert_eq!(out.status.code(), Some(2), "--insecure only goes with --allow-remote");
    let out = serve(&["--tls-cert", "cert.pem"], &[]);
    assert_eq!(out.status.code(), Some(2), "a certificate needs its key");
    let out = serve(
        &["--allow-remote", "--tls-cert", "nope.pem", "--tls-key", "nope.key"],
        &[(credtrail::flight::TOKEN_ENV, TOKEN)],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("reading --tls-cert nope.pem"), "{}", stderr(&out));
    let out = serve(&["--query-timeout", "0"], &[]);
    assert_eq!(out.status.code(), Some(2));

    // --insecure serves, with a warning.
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin!("credtrail"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--allow-remote", "--insecure", "--lake"])
        .arg(&lake().lake)
        .env("RUST_LOG", "error")
        .env(credtrail::flight::TOKEN_ENV, TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut server = Server(cmd.spawn().unwrap());
    let mut first = String::new();
    std::io::BufReader::new(server.0.stdout.take().unwrap()).read_line(&mut first).unwrap();
    assert!(first.contains("grpc://127.0.0.1:"), "{first}");
    let mut warning = String::new();
    std::io::BufReader::new(server.0.stderr.take().unwrap()).read_line(&mut warning).unwrap();
    assert!(warning.contains("warning: --insecure"), "{warning}");
    drop(server);

    // TLS with a certificate of a CA the client trusts.
    let work = tempfile::tempdir().unwrap();
    let (ca, _server, url) = start_tls_server(work.path());
    let port = url.rsplit(':').next().unwrap().to_string();
    assert!(url.starts_with("grpc+tls://"), "{url}");
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca)).domain_name("localhost");
    let channel =
        Endpoint::new(format!("https://127.0.0.1:{port}")).unwrap().tls_config(tls).unwrap().connect().await.unwrap();
    let mut c = Client::new(channel);
    c.handshake("analyst", TOKEN).await.unwrap();
    let inv = count_rows(&mut c, "SELECT count(*) FROM events").await.unwrap();
    assert_eq!(inv, 1);
    // Plain gRPC gets nowhere.
    let mut plain = connect(&url).await;
    plain.set_token(TOKEN.into());
    assert!(count_rows(&mut plain, "SELECT 1").await.is_err());
}

#[test]
fn sql_reads_and_writes_files_only_with_allow_files() {
    let work = tempfile::tempdir().unwrap();
    let secret = work.path().join("secret.csv");
    write(&secret, "user,hash\nroot,x\n");
    let copy = work.path().join("copy.csv");
    let create = format!("CREATE EXTERNAL TABLE s STORED AS CSV LOCATION '{}'", secret.display());
    let write_out = format!("COPY (SELECT 1 AS a) TO '{}' STORED AS CSV", copy.display());
    for q in [&create, &write_out] {
        let out = sql(&["-c", q], "");
        assert_eq!(out.status.code(), Some(1), "{q}");
        assert!(stderr(&out).contains("start it with --allow-files"), "{}", stderr(&out));
    }
    assert!(!copy.exists());
    // Views, tables in memory and settings need no flag.
    let text = ok(&sql(
        &[
            "--format",
            "csv",
            "-c",
            "SET datafusion.execution.batch_size = 512; CREATE VIEW v AS SELECT 2 AS b; \
           CREATE TABLE m AS SELECT b FROM v; SELECT b FROM m",
        ],
        "",
    ));
    assert_eq!(text, "b\n2\n");

    let text = ok(&sql(
        &["--allow-files", "--format", "csv", "-c", &format!("{create}; SELECT user FROM s; {write_out}")],
        "",
    ));
    assert!(text.contains("user\nroot\n"), "{text}");
    assert_eq!(std::fs::read_to_string(&copy).unwrap(), "a\n1\n");
    // Still no writing the lake.
    let out = sql(&["--allow-files", "-c", "INSERT INTO events SELECT * FROM events LIMIT 1"], "");
    assert!(stderr(&out).contains("DML not supported"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_reads_files_only_with_allow_files() {
    let work = tempfile::tempdir().unwrap();
    let secret = work.path().join("secret.csv");
    write(&secret, "user,hash\nroot,x\n");
    let create = format!("CREATE EXTERNAL TABLE IF NOT EXISTS s STORED AS CSV LOCATION '{}'", secret.display());
    let (_server, url) = start_server::<&str>(&[], &[]);
    let e = count_rows(&mut connect(&url).await, &create).await.unwrap_err();
    assert_eq!(code(&e), Some(tonic::Code::InvalidArgument), "{e}");
    assert!(e.to_string().contains("--allow-files"), "{e}");

    let (_server, url) = start_server(&["--allow-files"], &[]);
    let mut c = connect(&url).await;
    count_rows(&mut c, &create).await.unwrap();
    assert_eq!(count_rows(&mut c, "SELECT * FROM s").await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_at_most_max_queries_at_once() {
    use std::time::Duration;
    let (_server, url) = start_server(&["--max-queries", "1"], &[]);
    let mut a = connect(&url).await;
    let info = a.execute(HEAVY.to_string(), None).await.unwrap();
    let stream = a.do_get(info.endpoint[0].ticket.clone().unwrap()).await.unwrap();
    let mut b = connect(&url).await;
    let e = count_rows(&mut b, "SELECT 1").await.unwrap_err();
    assert_eq!(code(&e), Some(tonic::Code::ResourceExhausted), "{e}");
    assert!(e.to_string().contains("--max-queries"), "{e}");
    // The slot comes back once its client leaves.
    drop(stream);
    drop(a);
    let mut answered = false;
    for _ in 0..100 {
        if count_rows(&mut b, "SELECT 1").await.is_ok() {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(answered, "the slot of a client that left was given back");
}

/// At a terminal, Ctrl-C cancels the running query and the shell goes on to
/// the next statement. The keystrokes go through a real pseudo-terminal
/// (util-linux `script`), whose line discipline turns ^C into SIGINT.
#[cfg(target_os = "linux")]
#[test]
fn ctrl_c_at_the_terminal_cancels_the_query_not_the_shell() {
    use std::io::{Read, Write};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};
    let quote = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', r"'\''"));
    // `exec`: the shell is the terminal's foreground process, as when typed.
    let command = format!(
        "exec {} sql --lake {}",
        quote(Path::new(assert_cmd::cargo::cargo_bin!("credtrail"))),
        quote(&lake().lake)
    );
    let mut term = std::process::Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .env("TERM", "dumb")
        .env("HOME", tempfile::tempdir().unwrap().keep())
        .env("RUST_LOG", "error")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let screen = Arc::new(Mutex::new(String::new()));
    let mut stdout = term.stdout.take().unwrap();
    std::thread::spawn({
        let screen = screen.clone();
        move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stdout.read(&mut buf) {
                screen.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }
    });
    // Waits until the screen shows `text` after position `from`; returns where it ends.
    let shows = |text: &str, from: usize| -> usize {
        let start = Instant::now();
        loop {
            if let Some(at) = screen.lock().unwrap()[from..].find(text) {
                return from + at + text.len();
            }
            assert!(start.elapsed() < Duration::from_secs(120), "no {text:?} on:\n{}", screen.lock().unwrap());
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let mut keys = term.stdin.take().unwrap();
    let mut at = shows("credtrail> ", 0);
    keys.write_all(format!("{HEAVY};\r").as_bytes()).unwrap();
    at = shows(";", at);
    // The statement is running (it takes minutes); Ctrl-C stops it.
    std::thread::sleep(Duration::from_secs(2));
    let pressed = Instant::now();
    keys.write_all(b"\x03").unwrap();
    at = shows("error: cancelled", at);
    // The signal is seen when a runtime worker next parks; the join keeps them
    // busy, so on a loaded machine that can take a while (as for `serve`).
    assert!(pressed.elapsed() < Duration::from_secs(90), "{:?}", pressed.elapsed());
    at = shows("credtrail> ", at);
    // The same shell answers the next statement.
    keys.write_all(b"SELECT 41 + 1 AS answer;\r").unwrap();
    at = shows("42", at);
    shows("credtrail> ", at);
    keys.write_all(b"\\q\r").unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = term.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "the shell did not quit:\n{}", screen.lock().unwrap());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}\n{}", screen.lock().unwrap());
}

/// `tests/adbc_client.py`: Apache Arrow's ADBC Flight SQL driver (Go, under
/// Python's DB-API) querying `uri`, with basic auth's password `token` and
/// trusting the CA in `ca`. Needs the driver installed (`.ci/run` does).
fn adbc(uri: &str, query: &str, token: Option<&str>, ca: Option<&Path>) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/adbc_client.py");
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(script).arg(uri).arg(query);
    if let Some(t) = token {
        cmd.args(["--token", t]);
    }
    if let Some(ca) = ca {
        cmd.arg("--ca").arg(ca);
    }
    let out = cmd.output().expect("python3 runs");
    assert!(
        !stderr(&out).contains("ModuleNotFoundError"),
        "the ADBC Flight SQL driver is missing: `python3 -m pip install adbc-driver-flightsql adbc-driver-manager \
         pyarrow` (.ci/run pins the versions)\n{}",
        stderr(&out)
    );
    out
}

/// A real Flight SQL client, as an analyst's notebook connects: the right
/// token reads what `credtrail sql` reads; a wrong or missing token is
/// refused; over TLS on loopback it trusts the server through its CA, and a
/// plain-text or untrusting client gets nothing.
#[test]
fn an_adbc_client_needs_the_token_and_reads_what_the_shell_reads_over_tls() {
    let query = "SELECT credential_id, count(*) AS n, sum(tokens_in) AS tokens_in, min(request_id) AS first_request \
                 FROM events GROUP BY credential_id ORDER BY credential_id";
    let expected = json_rows(&sql(&["--format", "json", "-c", query], ""));
    assert!(expected.len() > 5, "{expected:?}");
    let rows =
        |out: &Output| -> Vec<serde_json::Map<String, serde_json::Value>> { serde_json::from_str(&ok(out)).unwrap() };

    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("tokens");
    write(&file, &format!("{TOKEN}\n"));
    let (_server, url) = start_server(&[std::ffi::OsStr::new("--tokens-file"), file.as_os_str()], &[]);
    assert!(url.starts_with("grpc://"), "{url}");
    assert_eq!(rows(&adbc(&url, query, Some(TOKEN), None)), expected);
    for (token, why) in
        [(Some("0123456789abcdef0123456789abcdeX"), "not one this server accepts"), (None, "needs a token")]
    {
        let out = adbc(&url, query, token, None);
        assert_eq!(out.status.code(), Some(1), "{token:?}: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "{token:?}");
        let e = stderr(&out);
        assert!(e.contains("UNAUTHENTICATED") && e.contains(why), "{token:?}: {e}");
        assert!(!e.contains(TOKEN), "{e}");
    }

    let (_, _tls_server, url) = start_tls_server(work.path());
    assert!(url.starts_with("grpc+tls://127.0.0.1:"), "{url}");
    let ca = work.path().join("ca.pem");
    assert_eq!(rows(&adbc(&url, query, Some(TOKEN), Some(&ca))), expected);
    let plain = url.replace("grpc+tls://", "grpc://");
    for (uri, ca) in [(plain.as_str(), None), (url.as_str(), None)] {
        let out = adbc(uri, query, Some(TOKEN), ca);
        assert_eq!(out.status.code(), Some(1), "{uri} without the CA: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "{uri}");
    }
}

/// Parquet from another writer that carries page CRCs (pyarrow's
/// `write_page_checksum`) is checked as it is read: a flipped byte in a
/// page fails the query. The same flip in a file without CRCs reads back as
/// a changed value, which is what the check is for.
#[test]
fn a_flipped_byte_in_a_page_with_a_crc_fails_the_query() {
    let work = tempfile::tempdir().unwrap();
    let values: Vec<i64> = (0..1000).map(|i| i * 1_000_003).collect();
    let write_with = |name: &str, crc: bool| -> PathBuf {
        let path = work.path().join(name);
        let py = format!(
            "import sys, pyarrow as pa, pyarrow.parquet as pq\n\
             t = pa.table({{'v': pa.array([i * 1000003 for i in range(1000)], pa.int64())}})\n\
             pq.write_table(t, sys.argv[1], compression='NONE', use_dictionary=False, write_page_checksum={})\n",
            if crc { "True" } else { "False" }
        );
        let out = std::process::Command::new("python3").args(["-c", &py]).arg(&path).output().unwrap();
        assert!(out.status.success(), "pyarrow (.ci/run installs it): {}", stderr(&out));
        // Flip the lowest bit of value 500, stored once, in the data page (PLAIN, uncompressed).
        let mut bytes = std::fs::read(&path).unwrap();
        let needle = values[500].to_le_bytes();
        let at = bytes.windows(8).position(|w| w == needle).expect("value 500 in the page");
        bytes[at] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let sum_of = |path: &Path| {
        let q = format!(
            "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION '{}'; SELECT sum(v) AS s FROM t",
            path.display()
        );
        sql(&["--allow-files", "--format", "csv", "-c", &q], "")
    };
    let intact: i64 = values.iter().sum();
    let plain = sum_of(&write_with("plain.parquet", false));
    let changed: i64 = ok(&plain).lines().nth(1).unwrap().parse().unwrap();
    assert_eq!((changed - intact).abs(), 1, "without a CRC the flip is a silently changed value");

    let crc = write_with("crc.parquet", true);
    let out = sum_of(&crc);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&changed.to_string()), "no changed value is shown");
    let err = stderr(&out);
    assert!(err.contains("CRC checksum mismatch"), "{err}");
    // The error names the file and what to do.
    assert!(err.contains(&format!("{}: ", crc.display())) && err.contains("credtrail lake check"), "{err}");
}

/// A long-lived session lists the lake at every query: `serve` answers over
/// events ingested after it started, and over a day whose files `lake
/// compact` replaced since its last query, without an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_sees_every_commit_made_since_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let log = |k: usize| {
        let path = dir.path().join(format!("log{k}.jsonl"));
        let text: String = (10 * k..10 * (k + 1)).map(|i| gateway_line(i, "key_serve", "") + "\n").collect();
        write(&path, &text);
        path
    };
    ingest(&lake, &[&log(0)], &[]);
    let (_server, url) = start_server_on(&lake, &[] as &[&str], &[]);
    let mut client = connect(&url).await;
    let query = "SELECT request_id FROM events";
    assert_eq!(count_rows(&mut client, query).await.unwrap(), 10);
    ingest(&lake, &[&log(1)], &[]);
    assert_eq!(count_rows(&mut client, query).await.unwrap(), 20);
    let out = credtrail().args(["lake", "compact", "--lake"]).arg(&lake).output().unwrap();
    assert!(ok(&out).starts_with("merged 2 small event file(s)"), "{}", ok(&out));
    assert_eq!(count_rows(&mut client, query).await.unwrap(), 20);
}
