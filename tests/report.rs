//! `credtrail report` rendered by a real headless Chromium: the page's DOM
//! after load, the requests the page made (from Chromium's net log), and a
//! screenshot under `target/`. Chromium is required: `.ci/run` installs it.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

/// The Chromium binary: `$CHROMIUM`, else the first of the usual names on PATH.
fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"] {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "the report tests render the page in headless Chromium, which is not installed: \
         `apt-get install -y chromium` (Debian/Ubuntu), or set CHROMIUM=/path/to/chrome"
    );
}

/// Runs headless Chromium on `page` with `args`; returns the net log's path.
fn browse(page: &Path, work: &Path, args: &[String]) -> (Vec<u8>, PathBuf) {
    let profile = tempfile::tempdir().unwrap();
    let netlog = work.join(format!("netlog-{}.json", args.len()));
    // The background-networking flags keep the browser's own traffic to a
    // minimum; what is left is told apart from the page's by its initiator.
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--log-net-log={}", netlog.display()))
        .args(args)
        .arg(format!("file://{}", page.canonicalize().unwrap().display()))
        .output()
        .expect("chromium runs");
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    (out.stdout, netlog)
}

/// The page's DOM after load, and every request the page itself started.
fn render(page: &Path, work: &Path) -> (String, Vec<String>) {
    let (dom, netlog) = browse(page, work, &["--dump-dom".to_string()]);
    (String::from_utf8(dom).unwrap(), page_requests(&netlog))
}

/// Requests in a net log that a page started: the browser's own (updates,
/// time sync) have no origin as initiator; a page's carry its origin
/// (`null` for a file).
fn page_requests(netlog: &Path) -> Vec<String> {
    let log: serde_json::Value = serde_json::from_slice(&std::fs::read(netlog).unwrap()).unwrap();
    let start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"].as_u64().unwrap();
    log["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"].as_u64() == Some(start))
        .filter(|e| e["params"]["initiator"].as_str().is_some_and(|i| i != "not an origin"))
        .map(|e| e["params"]["url"].as_str().unwrap_or("?").to_string())
        .collect()
}

fn screenshot(page: &Path, work: &Path, name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"), PathBuf::from);
    std::fs::create_dir_all(&target).unwrap();
    let shot = target.join(name);
    let args = [format!("--screenshot={}", shot.display()), "--window-size=1280,2000".to_string()];
    browse(page, work, &args);
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000, "a screenshot of the page was saved");
    shot
}

/// The section of `dom` that starts at `<section class="incident" id="ID"`.
fn section<'a>(dom: &'a str, id: &str) -> &'a str {
    let open = format!("<section class=\"incident\" id=\"{id}\"");
    let at = dom.find(&open).unwrap_or_else(|| panic!("no section for incident {id}"));
    let rest = &dom[at..];
    &rest[..rest.find("</section>").unwrap()]
}

#[test]
fn the_sample_report_draws_every_incident_and_loads_nothing() {
    let work = tempfile::tempdir().unwrap();
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-data");
    let page = work.path().join("report.html");
    let out = credtrail()
        .current_dir(work.path())
        .arg("run")
        .arg(sample.join("logs"))
        .arg("--inventory")
        .arg(sample.join("inventory.csv"))
        .args(["--lake", "lake", "--no-progress", "-o", "jsonl", "--report"])
        .arg(&page)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("report: {}", page.display())), "run names the report: {stderr}");
    // Alert lines follow the ingest summary.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let alerts: Vec<serde_json::Value> =
        stdout.lines().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).unwrap()).collect();
    let mut incidents: Vec<&str> = alerts.iter().filter_map(|a| a["incident_id"].as_str()).collect();
    incidents.sort();
    incidents.dedup();
    assert!(!incidents.is_empty(), "the sample has incidents");

    let (dom, requests) = render(&page, work.path());
    assert!(requests.is_empty(), "the page loaded external resources: {requests:?}");
    assert_eq!(dom.matches("<section class=\"incident\"").count(), incidents.len(), "one section per incident");
    for id in &incidents {
        let s = section(&dom, id);
        assert!(s.contains("<svg"), "incident {id} has a chart");
        assert!(s.contains("class=\"explanation\""), "incident {id} is explained");
        assert!(s.contains("[[suppress]]"), "incident {id} has a suppression rule");
    }
    for a in alerts.iter().filter(|a| a["detector"] == "billing_spike") {
        let s = section(&dom, a["incident_id"].as_str().unwrap());
        assert!(s.contains("baseline p99") && s.contains("seasonal band"), "billing charts show the baseline");
        assert!(s.contains("attack.mitre.org/techniques/T1496"), "billing links its technique");
    }
    assert!(dom.contains("Content-Security-Policy"));
    screenshot(&page, work.path(), "report-sample.png");
}

#[test]
fn hostile_log_values_show_as_text_and_never_run() {
    let work = tempfile::tempdir().unwrap();
    let planted = "<script>document.title='pwned'</script>";
    // A retry storm whose user agent, tool and resource each carry a script.
    let lines: Vec<String> = (0..300)
        .map(|i| {
            serde_json::json!({
                "ts": format!("2026-11-02T10:{:02}:{:02}.{:03}Z", i / 120, i % 60, i),
                "request_id": format!("req_{i:06}"),
                "credential_id": "key_HOSTILE",
                "principal": "agent:x",
                "source_ip": "203.0.113.9",
                "user_agent": format!("ua {planted}"),
                "provider": "openai",
                "model": "gpt-4o",
                "action": "tool_call",
                "tool": format!("tool {planted}"),
                "resource": format!("res {planted}"),
                "status": 401,
                "error_code": "invalid_api_key",
                "latency_ms": 5,
                "tokens_in": 0,
                "tokens_out": 0,
                "cost_usd": 0.0
            })
            .to_string()
        })
        .collect();
    let logs = work.path().join("gw.jsonl");
    write(&logs, &(lines.join("\n") + "\n"));
    let lake = work.path().join("lake");
    assert_eq!(ingest(&lake, &[&logs], &[]).0, 0);
    let detect = credtrail().arg("detect").arg("--lake").arg(&lake).output().unwrap();
    assert!(detect.status.success(), "{}", String::from_utf8_lossy(&detect.stderr));
    let page = work.path().join("hostile.html");
    let out =
        credtrail().arg("report").arg("--lake").arg(&lake).args(["--date", "2026-11-02", "-o"]).arg(&page).output();
    let out = out.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("report: "), "report names its file");

    let (dom, requests) = render(&page, work.path());
    assert!(requests.is_empty(), "{requests:?}");
    assert!(dom.contains("<title>credtrail report 2026-11-02</title>"), "no planted script ran");
    assert!(!dom.contains("pwned</title>") && !dom.to_lowercase().contains("<script"), "no script element");
    for field in ["ua", "tool", "res"] {
        let shown = format!("{field} &lt;script&gt;document.title='pwned'&lt;/script&gt;");
        assert!(dom.contains(&shown), "{field} is shown as text");
    }
    screenshot(&page, work.path(), "report-hostile.png");
}

#[test]
fn bad_ranges_and_lakes_are_clear_errors() {
    let work = tempfile::tempdir().unwrap();
    let page = work.path().join("r.html");
    let report = |args: &[&str]| credtrail().arg("report").args(args).arg("-o").arg(&page).output().unwrap();
    let missing = work.path().join("no-lake");
    let out = report(&["--lake", missing.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-lake"), "the error names the lake");

    let logs = work.path().join("gw.jsonl");
    write(&logs, &(gateway_line(1, "key_A", "") + "\n"));
    let lake = work.path().join("lake");
    assert_eq!(ingest(&lake, &[&logs], &[]).0, 0);
    let lake = lake.to_str().unwrap();
    let out = report(&["--lake", lake, "--date", "2026-13-01"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a date"), "{out:?}");
    let out = report(&["--lake", lake, "--from", "2026-11-05", "--to", "2026-11-01"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("is after"), "{out:?}");
    assert!(!page.exists(), "a failed report writes no file");
    // A lake never detected on is a report with no incidents, not an error.
    let out = report(&["--lake", lake]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("0 incident(s)") && !html.contains("<section class=\"incident\""));
}

/// A model rolled out to a whole team is one fleet finding (on credential
/// `fleet`, with its members' detector); the overview's "Fleet findings"
/// lists it with the team's credentials.
#[test]
fn the_overview_lists_fleet_findings_with_their_credentials() {
    let work = tempfile::tempdir().unwrap();
    let (gw, lake, inv) = (work.path().join("gw"), work.path().join("lake"), work.path().join("inventory.csv"));
    let team: Vec<String> = (0..6).map(|i| format!("key_team{i}")).collect();
    let lines = team_week(&team, |day, _, _| if day == 8 { "gpt-4.1" } else { "gpt-4o" });
    write(&gw.join("gateway.jsonl"), &(lines.join("\n") + "\n"));
    assert_eq!(ingest(&lake, &[gw.as_path()], &[]).0, 0);
    api_key_inventory(&inv, &team.iter().map(|k| (k.as_str(), "o@x")).collect::<Vec<_>>());
    let detect = credtrail()
        .args(["detect", "--date", "2026-11-08", "--lake"])
        .arg(&lake)
        .arg("--inventory")
        .arg(&inv)
        .output()
        .unwrap();
    assert!(detect.status.success(), "{}", String::from_utf8_lossy(&detect.stderr));
    let page = work.path().join("fleet.html");
    let out =
        credtrail().arg("report").arg("--lake").arg(&lake).args(["--date", "2026-11-08", "-o"]).arg(&page).output();
    let out = out.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let (dom, requests) = render(&page, work.path());
    assert!(requests.is_empty(), "{requests:?}");
    assert!(dom.contains("<h3>Fleet findings: 1</h3>"), "one fleet finding in the overview");
    let table = &dom[dom.find("<table id=\"fleet\"").expect("a fleet findings table")..];
    let table = &table[..table.find("</table>").unwrap()];
    assert!(table.contains("fleet_first_seen_model"), "{table}");
    for key in &team {
        assert!(table.contains(key.as_str()), "the fleet finding lists {key}: {table}");
    }
}
