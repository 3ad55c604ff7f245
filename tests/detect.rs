//! Batch detection through the real binary, scored against the sample's labels.

use crate::common;

use std::collections::BTreeSet;

use common::*;

struct Setup {
    _work: tempfile::TempDir,
    data: std::path::PathBuf,
    lake: std::path::PathBuf,
}

fn setup(seed: u64) -> Setup {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("sample");
    generate_sample(&data, seed, &["--days", "6", "--credentials", "40", "--rate-scale", "0.3"]);
    let lake = work.path().join("lake");
    let (code, _) = ingest(&lake, &[&data.join("logs")], &[]);
    assert_eq!(code, 0);
    Setup { _work: work, data, lake }
}

fn detect(s: &Setup, extra: &[&str]) -> Vec<serde_json::Value> {
    let out = credtrail()
        .args(["detect", "--from", "2026-11-02", "--to", "2026-11-07", "--output", "jsonl", "--lake"])
        .arg(&s.lake)
        .arg("--inventory")
        .arg(s.data.join("inventory.csv"))
        .args(extra)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Alerts of the inventory-scope query (not first-seen findings of the same family).
fn scope_alerts(alerts: &[serde_json::Value]) -> Vec<serde_json::Value> {
    alerts
        .iter()
        .filter(|a| a["detector"] == "out_of_scope" && !a["finding"].as_str().unwrap().starts_with("first_seen_"))
        .cloned()
        .collect()
}

fn ms(s: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
}

#[test]
fn out_of_scope_alerts_match_the_labels_exactly() {
    for seed in [21, 22] {
        let s = setup(seed);
        let alerts = scope_alerts(&detect(&s, &[]));
        let labels: Vec<std::collections::HashMap<String, String>> =
            csv::Reader::from_path(s.data.join("labels.csv")).unwrap().deserialize().map(|r| r.unwrap()).collect();
        let wanted: Vec<_> = labels.iter().filter(|l| l["kind"] == "out_of_scope").collect();
        assert!(wanted.len() >= 2);
        // Recall: every labelled out-of-scope anomaly raises an alert on its credential inside its window.
        for l in &wanted {
            let hit = alerts.iter().any(|a| {
                a["credential_id"] == l["credential_id"].as_str()
                    && a["window_start_ms"].as_i64().unwrap() <= ms(&l["end"])
                    && a["window_end_ms"].as_i64().unwrap() >= ms(&l["start"])
            });
            assert!(hit, "seed {seed}: missed {l:?}\nalerts: {alerts:?}");
        }
        // Precision: nothing else alerts (normal traffic stays in scope).
        let labelled: BTreeSet<&str> = wanted.iter().map(|l| l["credential_id"].as_str()).collect();
        for a in &alerts {
            assert!(labelled.contains(a["credential_id"].as_str().unwrap()), "seed {seed}: false alert {a}");
            // Explainable: what was seen, against what, with the requests.
            assert!(!a["explanation"].as_str().unwrap().is_empty());
            assert!(!a["baseline"].as_str().unwrap().is_empty());
            assert!(a["evidence_count"].as_u64().unwrap() >= 1);
            assert_eq!(a["evidence"].as_array().unwrap().len() as u64, a["evidence_count"].as_u64().unwrap().min(50));
        }
    }
}

#[test]
fn rerunning_detect_replaces_alerts_with_the_same_ids() {
    let s = setup(23);
    let ids = |v: Vec<serde_json::Value>| -> BTreeSet<String> {
        v.iter().map(|a| a["alert_id"].as_str().unwrap().to_string()).collect()
    };
    let first = ids(detect(&s, &[]));
    let second = ids(detect(&s, &[]));
    assert!(!first.is_empty());
    assert_eq!(first, second);
    let stored = rows_of(&s.lake.join("alerts"));
    assert_eq!(stored.len(), first.len(), "a rerun replaces, it does not add");
    let out = credtrail()
        .args(["sql", "--format", "csv", "--lake"])
        .arg(&s.lake)
        .args(["-c", "SELECT count(DISTINCT alert_id) AS n FROM alerts"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().nth(1), Some(first.len().to_string().as_str()));
}

#[test]
fn a_query_file_overrides_the_built_in_detector() {
    let s = setup(24);
    let dir = s.lake.parent().unwrap().join("my-queries");
    // The analyst's version: only expired-key use, nothing else.
    let builtin = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/queries/out_of_scope.sql")).unwrap();
    let mine = builtin.replace("WHERE finding IS NOT NULL", "WHERE finding = 'expired_credential'");
    assert_ne!(mine, builtin);
    write(&dir.join("out_of_scope.sql"), &mine);
    let all = scope_alerts(&detect(&s, &[]));
    let only = scope_alerts(&detect(&s, &["--queries", dir.to_str().unwrap()]));
    assert!(all.len() > only.len(), "{all:?}");
    assert!(!only.is_empty());
    assert!(only.iter().all(|a| a["finding"] == "expired_credential"));

    // A query file that is no built-in is a detector of its own.
    write(
        &dir.join("upstream_errors.sql"),
        "SELECT credential_id, principal, ts, request_id, source_ip, 'upstream_error' AS finding, \
         CAST(status AS VARCHAR) AS value, NULL AS allowed FROM events \
         WHERE date BETWEEN '{from}' AND '{to}' AND status >= 500",
    );
    let mine: Vec<serde_json::Value> = detect(&s, &["--queries", dir.to_str().unwrap()])
        .into_iter()
        .filter(|a| a["detector"] == "upstream_errors")
        .collect();
    let expected = sql_rows(
        &s.lake,
        "SELECT count(*) AS n FROM events WHERE status >= 500 AND date BETWEEN '2026-11-02' AND '2026-11-07'",
    );
    let n: u64 = mine.iter().map(|a| a["evidence_count"].as_u64().unwrap()).sum();
    assert!(n > 0);
    assert_eq!(n, expected[0]["n"].as_u64().unwrap());

    // Tool categories without any dangerous chain: sessions are flagged only
    // as unusual (a tool the agent never used), never as a chain.
    let chains = |v: &[serde_json::Value]| -> Vec<String> {
        v.iter()
            .filter(|a| a["detector"] == "tool_chaining")
            .map(|a| a["finding"].as_str().unwrap().to_string())
            .collect()
    };
    let builtin = chains(&detect(&s, &[]));
    assert!(builtin.iter().any(|f| f != "unusual_tool"), "{builtin:?}");
    let cats = dir.join("categories.toml");
    write(&cats, "chains = []\n[categories]\nread = [\"*.get*\"]\n");
    let plain = chains(&detect(&s, &["--tool-categories", cats.to_str().unwrap()]));
    assert!(!plain.is_empty() && plain.len() <= builtin.len(), "{plain:?} vs {builtin:?}");
    assert!(plain.iter().all(|f| f == "unusual_tool"), "{plain:?}");
}

#[test]
fn without_an_inventory_the_scope_detector_says_it_was_skipped() {
    let s = setup(25);
    let out = credtrail().args(["detect", "--date", "2026-11-05", "--lake"]).arg(&s.lake).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("skipped out_of_scope: needs a credential inventory"), "{text}");
}

fn panther_lake() -> (tempfile::TempDir, std::path::PathBuf) {
    let work = tempfile::tempdir().unwrap();
    let lake = work.path().join("lake");
    ingest(&lake, &[&fixture("panther/cloudtrail.json.gz")], &[]);
    (work, lake)
}

#[test]
fn guardrail_tampering_in_real_records_alerts_on_the_key_that_did_it() {
    let (_w, lake) = panther_lake();
    let out = credtrail().args(["detect", "--output", "jsonl", "--lake"]).arg(&lake).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let alerts: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    // The panther-analysis rule AWS.Bedrock.GuardrailUpdateDelete fires on records 0 and 1
    // (UpdateGuardrail, DeleteGuardrail) and not on record 2 (ListGuardrails).
    let labels: Vec<serde_json::Value> = std::fs::read_to_string(fixture("panther/cloudtrail.labels.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let guardrail: Vec<&serde_json::Value> =
        labels.iter().filter(|l| l["rule"] == "AWS.Bedrock.GuardrailUpdateDelete").collect();
    let records = {
        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut flate2::read::GzDecoder::new(std::fs::File::open(fixture("panther/cloudtrail.json.gz")).unwrap()),
            &mut text,
        )
        .unwrap();
        serde_json::from_str::<serde_json::Value>(&text).unwrap()["Records"].as_array().unwrap().clone()
    };
    let evidence: BTreeSet<String> = alerts
        .iter()
        .filter(|a| a["detector"] == "defense_evasion")
        .flat_map(|a| a["evidence"].as_array().unwrap().iter().map(|e| e.as_str().unwrap().to_string()))
        .collect();
    for l in guardrail {
        let r = &records[l["index"].as_u64().unwrap() as usize];
        // request_id is AWS's requestID (what Bedrock's invocation log shares), else the eventID.
        let id = r.get("requestID").unwrap_or(&r["eventID"]).as_str().unwrap().to_string();
        assert_eq!(evidence.contains(&id), l["panther_expected"] == true, "{} ({})", l["test"], r["eventName"]);
    }
    let update = alerts.iter().find(|a| a["observed"].as_str().unwrap().contains("bedrock:UpdateGuardrail")).unwrap();
    // The temporary key is baselined on its role; the key is the session.
    assert_eq!(
        update["credential_id"],
        "arn:aws:iam::123123123123:role/aws-reserved/sso.amazonaws.com/us-west-2/DevAdmin"
    );
    assert_eq!(update["severity"], "high");
    assert!(update["mitre_attack"].as_str().unwrap().starts_with("T1562"));
}

#[test]
fn a_secret_found_at_ingest_becomes_a_critical_alert() {
    let work = tempfile::tempdir().unwrap();
    let log = work.path().join("gw.jsonl");
    let secret = "sk-proj-Zx8PqR2mN4vB6cD8eF0gH2jK4lM6nP8qR0sT2uV4";
    let text: String = (0..3)
        .map(|i| gateway_line(i, "key_leaky", &format!(r#","headers":{{"authorization":"Bearer {secret}"}}"#)) + "\n")
        .collect();
    write(&log, &text);
    let lake = work.path().join("lake");
    ingest(&lake, &[&log], &[]);
    let out = credtrail()
        .args(["detect", "--date", "2026-11-02", "--output", "jsonl", "--lake"])
        .arg(&lake)
        .output()
        .unwrap();
    let alerts: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let a = &alerts[0];
    assert_eq!((a["detector"].as_str(), a["severity"].as_str()), (Some("secret_exposure"), Some("critical")));
    assert_eq!(a["credential_id"], "key_leaky");
    assert_eq!(a["evidence_count"], 3);
    assert!(a["explanation"].as_str().unwrap().contains("headers.authorization"));
    assert!(!a.to_string().contains(&secret[8..]));
}

fn sql_rows(lake: &std::path::Path, q: &str) -> Vec<serde_json::Value> {
    let out = credtrail().args(["sql", "--format", "json", "--lake"]).arg(lake).args(["-c", q]).output().unwrap();
    assert!(out.status.success(), "{q}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn labels_of(s: &Setup) -> Vec<std::collections::HashMap<String, String>> {
    csv::Reader::from_path(s.data.join("labels.csv")).unwrap().deserialize().map(|r| r.unwrap()).collect()
}

#[test]
fn baseline_learns_each_credentials_history_and_is_queryable() {
    let s = setup(26);
    let run = || {
        let out = credtrail()
            .args(["baseline", "--until", "2026-11-04", "--days", "3", "--json", "--lake"])
            .arg(&s.lake)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let summary = run();
    assert_eq!(summary["history_from"], "2026-11-02");
    // Independently: per credential, its requests in the window, from the events themselves.
    let mut counts: std::collections::BTreeMap<String, u64> = Default::default();
    for e in events(&s.lake) {
        let ts = e["ts"].as_str().unwrap();
        if &ts[..10] <= "2026-11-04" {
            *counts.entry(e["credential_id"].as_str().unwrap().to_string()).or_default() += 1;
        }
    }
    let sessions: std::collections::BTreeMap<String, u64> = sql_rows(
        &s.lake,
        "SELECT principal, count(DISTINCT session_id) AS n FROM events WHERE date <= '2026-11-04' \
         AND session_id IS NOT NULL AND tool IS NOT NULL GROUP BY 1",
    )
    .iter()
    .map(|r| (r["principal"].as_str().unwrap().to_string(), r["n"].as_u64().unwrap()))
    .collect();
    assert_eq!(summary["credentials"].as_u64().unwrap() as usize, counts.len());
    let rows = sql_rows(
        &s.lake,
        "SELECT credential_id, requests, days_seen, cold_start, requests_per_hour_median AS med, \
         requests_per_hour_p99 AS p99, error_rate FROM baseline_credentials WHERE until = '2026-11-04'",
    );
    assert_eq!(rows.len(), counts.len());
    let mut cold = 0;
    for r in &rows {
        let id = r["credential_id"].as_str().unwrap();
        assert_eq!(r["requests"].as_u64().unwrap(), counts[id], "{id}");
        assert!(r["med"].as_f64().unwrap() <= r["p99"].as_f64().unwrap());
        let expect_cold = r["days_seen"].as_u64().unwrap() < 2 || r["requests"].as_u64().unwrap() < 10;
        assert_eq!(r["cold_start"].as_bool().unwrap(), expect_cold, "{r}");
        cold += expect_cold as usize;
    }
    assert_eq!(summary["cold_start"].as_u64().unwrap() as usize, cold);
    // The Markov model: one session start per session of the principal.
    let starts = sql_rows(
        &s.lake,
        "SELECT principal, sum(count) AS n FROM baseline_transitions WHERE until = '2026-11-04' AND from_tool = '^' \
         GROUP BY principal",
    );
    assert!(!starts.is_empty());
    for r in &starts {
        assert_eq!(r["n"].as_u64().unwrap(), sessions[r["principal"].as_str().unwrap()], "{r}");
    }
    // Learned scope: every source network a credential used is known.
    let nets = sql_rows(
        &s.lake,
        "SELECT count(*) AS n FROM baseline_scope WHERE until = '2026-11-04' AND dimension = 'network'",
    );
    assert!(nets[0]["n"].as_u64().unwrap() >= counts.len() as u64);
    // A rerun replaces the version instead of adding to it.
    run();
    let again = sql_rows(&s.lake, "SELECT count(*) AS n FROM baseline_credentials WHERE until = '2026-11-04'");
    assert_eq!(again[0]["n"].as_u64().unwrap() as usize, counts.len());

    // Logs that arrive late for a day of its history make detect relearn it.
    let late = s.lake.parent().unwrap().join("late.jsonl");
    write(&late, &(0..12).map(|i| gateway_line(i, "key_late", "") + "\n").collect::<String>());
    ingest(&s.lake, &[&late], &[]);
    let out = credtrail().args(["detect", "--date", "2026-11-05", "--lake"]).arg(&s.lake).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let relearned = sql_rows(
        &s.lake,
        "SELECT count(*) AS n FROM baseline_credentials WHERE until = '2026-11-04' AND credential_id = 'key_late'",
    );
    assert_eq!(relearned[0]["n"], 1);
}

#[test]
fn suppressions_silence_known_good_alerts_until_they_expire() {
    let s = setup(27);
    let labels = labels_of(&s);
    let storm = labels.iter().find(|l| l["kind"] == "retry_storm").unwrap();
    let spike = labels.iter().find(|l| l["kind"] == "billing_spike").unwrap();
    let before = detect(&s, &[]);
    let on = |alerts: &[serde_json::Value], l: &std::collections::HashMap<String, String>| {
        alerts
            .iter()
            .filter(|a| a["credential_id"] == l["credential_id"].as_str() && a["detector"] == l["kind"].as_str())
            .count()
    };
    assert!(on(&before, storm) >= 1 && on(&before, spike) >= 1);
    let rules = s.lake.parent().unwrap().join("suppress.toml");
    write(
        &rules,
        &format!(
            "[[suppress]]\ncredential = \"{}\"\ndetector = \"retry_storm\"\nreason = \"load test\"\nexpires = \"2027-01-01\"\n\n\
             [[suppress]]\ncredential = \"{}\"\ndetector = \"billing_spike\"\nreason = \"old migration\"\nexpires = \"2026-11-01\"\n",
            storm["credential_id"], spike["credential_id"]
        ),
    );
    let after = detect(&s, &["--suppress", rules.to_str().unwrap()]);
    assert_eq!(on(&after, storm), 0, "the storm is silenced");
    assert_eq!(on(&after, spike), on(&before, spike), "an expired rule no longer applies");
    assert_eq!(after.len(), before.len() - on(&before, storm));
    // Silenced alerts stay in the lake with the rule that silenced them.
    let kept = sql_rows(&s.lake, "SELECT credential_id, suppressed FROM alerts WHERE suppressed IS NOT NULL");
    assert_eq!(kept.len(), on(&before, storm));
    assert!(kept.iter().all(|r| r["credential_id"] == storm["credential_id"].as_str()
        && r["suppressed"].as_str().unwrap().contains("load test")));
    // A rule that would silence everything is refused.
    write(&rules, "[[suppress]]\nreason = \"all\"\n");
    let out = credtrail().args(["detect", "--lake"]).arg(&s.lake).args(["--suppress"]).arg(&rules).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("would silence everything"));
}

#[test]
fn alerts_explain_themselves_and_export_as_ocsf_findings() {
    let s = setup(28);
    let alerts = detect(&s, &[]);
    let labels = labels_of(&s);
    for kind in ["billing_spike", "retry_storm", "tool_chaining"] {
        let a = alerts.iter().find(|a| a["detector"] == kind).unwrap_or_else(|| panic!("no {kind} alert: {alerts:?}"));
        assert!(!a["baseline"].as_str().unwrap().is_empty() && !a["observed"].as_str().unwrap().is_empty());
        assert!(a["incident_id"].as_str().unwrap().starts_with("inc-"), "{a}");
        assert!(!a["evidence"].as_array().unwrap().is_empty());
    }
    // The LLMjacking signature: new model and new network on the spike, first-seen values folded in.
    let spike = labels.iter().find(|l| l["kind"] == "billing_spike").unwrap();
    let a = alerts
        .iter()
        .find(|a| a["detector"] == "billing_spike" && a["credential_id"] == spike["credential_id"].as_str())
        .unwrap();
    assert_eq!((a["finding"].as_str(), a["severity"].as_str()), (Some("llmjacking"), Some("critical")), "{a}");
    assert!(a["explanation"].as_str().unwrap().contains("never used"), "{a}");
    assert!(a["observed"].as_str().unwrap().contains("first-seen"), "{a}");
    assert!(
        !alerts
            .iter()
            .any(|x| x["credential_id"] == a["credential_id"]
                && x["finding"].as_str().unwrap().starts_with("first_seen_"))
    );
    // Evidence ids are real requests of that credential.
    let ids: BTreeSet<String> = events(&s.lake)
        .iter()
        .filter(|e| e["credential_id"] == a["credential_id"])
        .map(|e| e["request_id"].as_str().unwrap().to_string())
        .collect();
    assert!(a["evidence"].as_array().unwrap().iter().all(|e| ids.contains(e.as_str().unwrap())));

    let out = credtrail()
        .args(["detect", "--from", "2026-11-02", "--to", "2026-11-07", "--output", "ocsf", "--lake"])
        .arg(&s.lake)
        .arg("--inventory")
        .arg(s.data.join("inventory.csv"))
        .output()
        .unwrap();
    let findings: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(findings.len(), alerts.len());
    for (f, a) in findings.iter().zip(&alerts) {
        assert_eq!(
            (f["class_uid"].as_u64(), f["type_uid"].as_u64(), f["category_uid"].as_u64()),
            (Some(2004), Some(200401), Some(2))
        );
        assert_eq!(f["finding_info"]["uid"], a["alert_id"]);
        assert!((1..=5).contains(&f["severity_id"].as_u64().unwrap()));
        assert_eq!(f["actor"]["user"]["uid"], a["credential_id"]);
        let related: Vec<&str> = f["finding_info"]["related_events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["uid"].as_str().unwrap())
            .collect();
        let evidence: Vec<&str> = a["evidence"].as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect();
        assert_eq!(related, evidence);
    }
}

/// A gateway line at (day, hour, minute), the day 1-based in November 2026.
fn scope_line(
    (day, hour, minute): (u32, u32, u32),
    key: &str,
    action: &str,
    model: &str,
    tool: &str,
    res: &str,
) -> String {
    let opt = |v: &str| if v.is_empty() { "null".to_string() } else { format!("{v:?}") };
    format!(
        r#"{{"ts":"2026-11-{day:02}T{hour:02}:{minute:02}:00.000Z","request_id":"r-{key}-{day}-{hour}-{minute}","credential_id":"{key}","principal":"agent:{key}","session_id":"s-{key}-{day}","source_ip":"198.51.100.7","user_agent":"bot/1.0","provider":"openai","model":{},"action":"{action}","tool":{},"resource":{},"status":200,"error_code":null,"latency_ms":300,"tokens_in":100,"tokens_out":50,"cost_usd":0.001}}"#,
        opt(model),
        opt(tool),
        opt(res)
    )
}

/// Scope as the user wrote it: resources are prefixes (`=` pins one), a
/// model invocation is judged by action and model only, standing
/// out-of-scope use is one governance finding rather than a daily high
/// alert, and a first-seen model the inventory allows does not alert.
#[test]
fn scope_is_read_as_written_and_standing_mismatches_are_governance() {
    let work = tempfile::tempdir().unwrap();
    let (gw, ct, lake) = (work.path().join("gw"), work.path().join("ct"), work.path().join("lake"));
    let mut lines = Vec::new();
    for day in 1..=8 {
        for hour in 8..20 {
            let l = |key, action, model, tool, res| scope_line((day, hour, 5), key, action, model, tool, res);
            // Standing use of a bucket the inventory does not list, next to an allowed one.
            let legacy = format!("s3://legacy/exports/part-{hour}.csv");
            lines.push(scope_line((day, hour, 5), "key_std", "read", "", "s3.get", &legacy));
            lines.push(scope_line((day, hour, 7), "key_std", "read", "", "s3.get", "s3://team/ok.csv"));
            lines.push(l("key_mail", "tool_call", "", "mail.send", "mailto:team@acme.com"));
            lines.push(l("key_pin", "tool_call", "", "mail.send", "mailto:ops@acme.com"));
            // A model rollout on the last day: allowed explicitly, or by an empty list.
            let model = if day == 8 { "gpt-4.1" } else { "gpt-4o" };
            for m in [5, 20] {
                lines.push(scope_line((day, hour, m), "key_roll", "inference", model, "", ""));
                lines.push(scope_line((day, hour, m), "key_free", "inference", model, "", ""));
            }
        }
    }
    // New out-of-scope values on the last day.
    lines.push(scope_line((8, 21, 0), "key_std", "read", "", "s3.get", "s3://payroll/2026/salaries.csv"));
    lines.push(scope_line((8, 21, 0), "key_pin", "tool_call", "", "mail.send", "mailto:ops@acme.com.attacker.io"));
    write(&gw.join("gateway.jsonl"), &(lines.join("\n") + "\n"));
    // Bedrock through CloudTrail: an allowed model, and one that is not.
    let invoke = |i: u32, key: &str, model: &str| {
        serde_json::json!({
            "eventVersion": "1.09", "eventID": format!("ev-{key}-{i}"), "requestID": format!("rq-{key}-{i}"),
            "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::111122223333:user/app", "accountId": "111122223333", "accessKeyId": key},
            "eventTime": format!("2026-11-08T10:{i:02}:00Z"), "eventSource": "bedrock.amazonaws.com", "eventName": "InvokeModel",
            "awsRegion": "us-east-1", "sourceIPAddress": "10.1.2.3", "userAgent": "Boto3/1.34", "recipientAccountId": "111122223333",
            "requestParameters": {"modelId": model},
            "resources": [{"ARN": format!("arn:aws:bedrock:us-east-1::foundation-model/{model}")}],
        })
    };
    let haiku = "anthropic.claude-3-haiku-20240307-v1:0";
    let records: Vec<_> = (0..5)
        .map(|i| invoke(i, "AKIAEXAMPLEINFER01", haiku))
        .chain((0..5).map(|i| invoke(i, "AKIAEXAMPLEINFER02", "meta.llama3-70b-instruct-v1:0")))
        .collect();
    std::fs::create_dir_all(&ct).unwrap();
    gzip(
        &ct.join("111122223333_CloudTrail_us-east-1_20261108T1000Z_x.json.gz"),
        &serde_json::json!({ "Records": records }).to_string(),
    );
    for dir in [&gw, &ct] {
        assert_eq!(ingest(&lake, &[dir.as_path()], &[]).0, 0);
    }
    let inv = work.path().join("inventory.csv");
    let bedrock = "inference,anthropic.claude-3-haiku*,s3:GetObject,s3://team/,";
    write(
        &inv,
        &format!(
            "credential_id,owner,principal,kind,created_at,expires_at,allowed_actions,allowed_models,allowed_tools,allowed_resources,allowed_regions\n\
             key_std,o@x,,api_key,,,read,,s3.*,s3://team/,\n\
             key_mail,o@x,,api_key,,,tool_call,,mail.*,mailto:,\n\
             key_pin,o@x,,api_key,,,tool_call,,mail.*,=mailto:ops@acme.com,\n\
             key_roll,o@x,,api_key,,,inference,gpt-4o;gpt-4.1,,,\n\
             key_free,o@x,,api_key,,,inference,,,,\n\
             AKIAEXAMPLEINFER01,o@x,,aws_access_key,,,{bedrock}\n\
             AKIAEXAMPLEINFER02,o@x,,aws_access_key,,,{bedrock}\n"
        ),
    );
    let detect = |range: &[&str]| detect_range(&lake, &inv, range);
    let alerts = detect(&["--date", "2026-11-08"]);
    let of = |key: &str, finding: &str| -> Vec<&serde_json::Value> {
        alerts.iter().filter(|a| a["credential_id"] == key && a["finding"] == finding).collect()
    };
    let text = |a: &serde_json::Value| a.to_string();
    // A prefix allows the longer value; a pin does not.
    assert!(alerts.iter().all(|a| a["credential_id"] != "key_mail"), "{alerts:#?}");
    let pinned = of("key_pin", "resource_outside_scope");
    assert_eq!(pinned.len(), 1, "{alerts:#?}");
    assert!(text(pinned[0]).contains("attacker.io"));
    // Inference is judged by action and model, not by tools or resources.
    assert!(alerts.iter().all(|a| a["credential_id"] != "AKIAEXAMPLEINFER01"), "{alerts:#?}");
    let llama = of("AKIAEXAMPLEINFER02", "model_outside_scope");
    assert_eq!(llama.len(), 1, "{alerts:#?}");
    assert_ne!(llama[0]["severity"], "low");
    assert!(
        of("AKIAEXAMPLEINFER02", "tool_outside_scope").is_empty()
            && of("AKIAEXAMPLEINFER02", "resource_outside_scope").is_empty()
    );
    // Standing use is one governance finding; a new value still alerts high.
    let mismatch = of("key_std", "inventory_mismatch");
    assert_eq!(mismatch.len(), 1, "{alerts:#?}");
    assert_eq!((&mismatch[0]["detector"], &mismatch[0]["severity"]), (&"governance".into(), &"low".into()));
    assert!(
        text(mismatch[0]).contains("s3://legacy/exports/")
            && text(mismatch[0]).contains("fix the inventory or the caller")
    );
    assert_eq!(mismatch[0]["evidence_count"], 12);
    let new = of("key_std", "resource_outside_scope");
    assert_eq!(new.len(), 1, "{alerts:#?}");
    assert_eq!(new[0]["severity"], "high");
    assert!(text(new[0]).contains("s3://payroll/") && !text(new[0]).contains("legacy"));
    // A first-seen model the inventory lists is on record, suppressed; one it does not list alerts.
    assert!(of("key_roll", "first_seen_model").is_empty(), "{alerts:#?}");
    assert_eq!(of("key_free", "first_seen_model").len(), 1, "{alerts:#?}");
    let kept = sql_rows(
        &lake,
        "SELECT suppressed FROM alerts WHERE credential_id = 'key_roll' AND finding = 'first_seen_model'",
    );
    assert_eq!(kept.len(), 1);
    assert!(kept[0]["suppressed"].as_str().unwrap().contains("gpt-4.1"));

    // Over several days the mismatch is still one finding, with every day's requests.
    let week = detect(&["--from", "2026-11-04", "--to", "2026-11-08"]);
    let std: Vec<_> = week.iter().filter(|a| a["credential_id"] == "key_std").collect();
    let mismatches: Vec<_> = std.iter().filter(|a| a["finding"] == "inventory_mismatch").collect();
    assert_eq!(mismatches.len(), 1, "{std:#?}");
    assert_eq!(mismatches[0]["evidence_count"], 5 * 12);
    assert_eq!(mismatches[0]["alert_id"], mismatch[0]["alert_id"], "the same finding every day");
    assert!(std.iter().all(|a| a["detector"] == "governance" || !a.to_string().contains("legacy")), "{std:#?}");

    // `inventory check --lake` reports it too.
    let out = credtrail().args(["inventory", "check", "--json", "--lake"]).arg(&lake).arg(&inv).output().unwrap();
    let findings = String::from_utf8_lossy(&out.stdout);
    let found: Vec<serde_json::Value> = findings.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let std: Vec<_> = found.iter().filter(|f| f["kind"] == "inventory_mismatch").collect();
    assert_eq!(std.len(), 1, "{findings}");
    assert_eq!(std[0]["credential_id"], "key_std");
    assert!(std[0]["detail"].as_str().unwrap().contains("s3://legacy/exports/"), "{findings}");
}

/// `detect --output jsonl` over `range` of a lake, with an inventory.
/// The alerts of `detect --date DAY` on a lake with no inventory.
fn detect_without_inventory(lake: &std::path::Path, day: &str) -> Vec<serde_json::Value> {
    let out = credtrail().args(["detect", "--date", day, "--output", "jsonl", "--lake"]).arg(lake).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn detect_range(lake: &std::path::Path, inv: &std::path::Path, range: &[&str]) -> Vec<serde_json::Value> {
    let out = credtrail()
        .arg("detect")
        .args(range)
        .args(["--output", "jsonl", "--lake"])
        .arg(lake)
        .arg("--inventory")
        .arg(inv)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// A model rolled out to a whole team at once is one fleet finding listing
/// its credentials; the members stay in the lake, marked, and two
/// credentials trying another model are each their own alert.
#[test]
fn a_change_across_the_fleet_is_one_finding() {
    let work = tempfile::tempdir().unwrap();
    let (gw, lake) = (work.path().join("gw"), work.path().join("lake"));
    let team: Vec<String> = (0..6).map(|i| format!("key_team{i}")).collect();
    let pair = ["key_pair0", "key_pair1"];
    let mut lines = Vec::new();
    for day in 1..=8 {
        for hour in 8..20 {
            for key in team.iter().map(String::as_str).chain(pair) {
                let model = match (day, key.starts_with("key_team")) {
                    (8, true) => "gpt-4.1",
                    (8, false) => "o3",
                    _ => "gpt-4o",
                };
                for m in [5, 20] {
                    lines.push(scope_line((day, hour, m), key, "inference", model, "", ""));
                }
            }
        }
    }
    write(&gw.join("gateway.jsonl"), &(lines.join("\n") + "\n"));
    assert_eq!(ingest(&lake, &[gw.as_path()], &[]).0, 0);
    let inv = work.path().join("inventory.csv");
    let rows: String =
        team.iter().map(String::as_str).chain(pair).map(|k| format!("{k},o@x,,api_key,,,inference,,,,\n")).collect();
    write(
        &inv,
        &format!(
            "credential_id,owner,principal,kind,created_at,expires_at,allowed_actions,allowed_models,allowed_tools,allowed_resources,allowed_regions\n{rows}"
        ),
    );
    let alerts = detect_range(&lake, &inv, &["--date", "2026-11-08"]);
    let new_model = |a: &&serde_json::Value| a["finding"].as_str().unwrap().ends_with("first_seen_model");
    let shown: Vec<&serde_json::Value> =
        alerts.iter().filter(|a| a["suppressed"].is_null()).filter(new_model).collect();
    let fleet: Vec<_> = shown.iter().filter(|a| a["finding"] == "fleet_first_seen_model").collect();
    assert_eq!(fleet.len(), 1, "{shown:#?}");
    let f = fleet[0];
    assert_eq!((&f["credential_id"], &f["subject"]), (&"fleet".into(), &"gpt-4.1".into()));
    let observed = f["observed"].as_str().unwrap();
    assert!(
        observed.starts_with("6 credentials: ") && team.iter().all(|k| observed.contains(k.as_str())),
        "{observed}"
    );
    let alone: BTreeSet<&str> =
        shown.iter().filter(|a| a["subject"] == "o3").map(|a| a["credential_id"].as_str().unwrap()).collect();
    assert_eq!(alone, pair.into_iter().collect(), "{shown:#?}");

    let members = sql_rows(
        &lake,
        "SELECT credential_id, suppressed FROM alerts WHERE finding = 'first_seen_model' AND subject = 'gpt-4.1'",
    );
    assert_eq!(members.len(), 6, "{members:#?}");
    let reason = format!("part of fleet finding {}", f["alert_id"].as_str().unwrap());
    assert!(members.iter().all(|m| m["suppressed"] == reason.as_str()), "{members:#?}");
}

/// A key with no history of its own is judged against its peers (same
/// role, no inventory): their everyday read → send does not alert, a step
/// none of them makes does, and the alert says it compared against peers.
#[test]
fn thin_history_agents_are_judged_against_their_peers() {
    let work = tempfile::tempdir().unwrap();
    let (gw, lake) = (work.path().join("gw"), work.path().join("lake"));
    let mut lines = Vec::new();
    let session = |day: u32, key: &str, steps: &[(&str, &str)]| -> Vec<String> {
        let step = |(i, (tool, res)): (usize, &(&str, &str))| {
            scope_line((day, 9 + i as u32 / 60, i as u32 % 60), key, "tool_call", "", tool, res)
        };
        steps.iter().enumerate().map(step).collect()
    };
    let everyday = [("web.search", ""), ("email.send", "mailto:customer@example.com")];
    for day in 1..=7 {
        for key in ["support-1", "support-2", "support-3"] {
            lines.extend(session(day, key, &everyday));
        }
    }
    // Day 8: two new keys of the same role; one does the team's work, one reads a database and mails it out.
    lines.extend(session(8, "support-4", &everyday));
    lines.extend(session(
        8,
        "support-5",
        &[("db.query", "db://crm/customers"), ("email.send", "mailto:x@example.net")],
    ));
    write(&gw.join("gateway.jsonl"), &(lines.join("\n") + "\n"));
    assert_eq!(ingest(&lake, &[gw.as_path()], &[]).0, 0);
    let alerts = detect_without_inventory(&lake, "2026-11-08");
    let chains: Vec<_> = alerts.iter().filter(|a| a["detector"] == "tool_chaining").collect();
    assert!(chains.iter().all(|a| a["credential_id"] != "support-4"), "{chains:#?}");
    let exfil: Vec<_> = chains.iter().filter(|a| a["credential_id"] == "support-5").collect();
    assert_eq!(exfil.len(), 1, "{chains:#?}");
    assert_eq!(exfil[0]["finding"], "exfiltration");
    let baseline = exfil[0]["baseline"].as_str().unwrap();
    assert!(baseline.starts_with("peers: 3 principals of role agent:support"), "{baseline}");
}

/// The crafted week of [`common::issue18_week`] in a lake, with an inventory of its keys.
fn issue18_lake(work: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (gw, lake, inv) = (work.join("gw"), work.join("lake"), work.join("inventory.csv"));
    let (history, today) = common::issue18_week();
    write(&gw.join("gateway.jsonl"), &(history.into_iter().chain(today).collect::<Vec<_>>().join("\n") + "\n"));
    assert_eq!(ingest(&lake, &[gw.as_path()], &[]).0, 0);
    issue18_inventory(&inv);
    (lake, inv)
}

/// Retry storms paced under the per-minute bar (key guessing at six a
/// minute, a slow 429 loop) alert from their 10-minute window against the
/// key's own failure rate; twelve 429s scattered over an hour do not.
#[test]
fn a_storm_paced_under_the_minute_bar_alerts_and_scattered_429s_do_not() {
    let work = tempfile::tempdir().unwrap();
    let (lake, inv) = issue18_lake(work.path());
    let alerts = detect_range(&lake, &inv, &["--date", "2026-11-08"]);
    let storms: Vec<&serde_json::Value> = alerts.iter().filter(|a| a["detector"] == "retry_storm").collect();
    let of = |key: &str| storms.iter().filter(|a| a["credential_id"] == key).copied().collect::<Vec<_>>();
    let guess = of("key_guess");
    assert_eq!(guess.len(), 1, "{storms:#?}");
    assert_eq!((guess[0]["finding"].as_str(), guess[0]["evidence_count"].as_u64()), (Some("auth_failures"), Some(50)));
    let explanation = guess[0]["explanation"].as_str().unwrap();
    assert!(explanation.contains("within 10 minutes") && explanation.contains("its own usual"), "{explanation}");
    assert!(guess[0]["baseline"].as_str().unwrap().starts_with("10-minute window vs its own usual"), "{}", guess[0]);
    let slow = of("key_loop");
    assert_eq!(slow.len(), 1, "{storms:#?}");
    assert_eq!((slow[0]["finding"].as_str(), slow[0]["evidence_count"].as_u64()), (Some("throttling"), Some(76)));
    assert!(of("key_calm").is_empty(), "{storms:#?}");
    assert_eq!(storms.len(), 2, "{storms:#?}");
}

/// About 4× a key's usual hour, spent partly from a network it never used,
/// is a billing spike naming both facts; the same hour from its usual
/// network, or a usual hour from a new one, is not.
#[test]
fn a_moderate_spend_from_a_new_network_is_a_billing_spike() {
    let work = tempfile::tempdir().unwrap();
    let (lake, inv) = issue18_lake(work.path());
    let alerts = detect_range(&lake, &inv, &["--date", "2026-11-08"]);
    let spikes: Vec<&serde_json::Value> = alerts.iter().filter(|a| a["detector"] == "billing_spike").collect();
    assert_eq!(spikes.len(), 1, "{spikes:#?}");
    let a = spikes[0];
    assert_eq!((a["credential_id"].as_str(), a["finding"].as_str()), (Some("key_jack"), Some("new_network_spend")));
    let explanation = a["explanation"].as_str().unwrap();
    assert!(explanation.contains("a network it never used (198.18.7.0/24)"), "{explanation}");
    assert!(explanation.contains("× its usual hour"), "{explanation}");
    assert!(a["evidence"].as_array().unwrap().len() >= 26, "{a}");
}

/// Two requests an hour, 08:00 to 20:00, on days 1 to 8, per key: its two
/// `history` values on days 1 to 7 and its two `today` values on day 8.
fn a_week_of_two_values_an_hour(
    keys: &[(&str, [&str; 2], [&str; 2])],
    line: impl Fn(u32, u32, u32, &str, &str) -> String,
) -> Vec<String> {
    let mut lines = Vec::new();
    for day in 1..=8 {
        for hour in 8..20 {
            for (key, history, today) in keys {
                let values = if day < 8 { history } else { today };
                lines.extend([5, 35].into_iter().zip(values).map(|(m, v)| line(day, hour, m, key, v)));
            }
        }
    }
    lines
}

/// A model new to one key but everyday for its peers (same kind and owner
/// in the inventory, which allows it) is no first-seen news: it stays on
/// record, suppressed as "peers already use it". A model no peer uses, and
/// the same model on a key of another owner, still alert.
#[test]
fn a_model_its_peers_already_use_is_not_first_seen_news() {
    let work = tempfile::tempdir().unwrap();
    let (gw, lake, inv) = (work.path().join("gw"), work.path().join("lake"), work.path().join("inventory.csv"));
    let lines = a_week_of_two_values_an_hour(
        &[
            ("key_t1", ["gpt-4o", "gpt-4.1"], ["gpt-4o", "gpt-4.1"]),
            ("key_t2", ["gpt-4.1", "gpt-4o"], ["gpt-4.1", "gpt-4o"]),
            ("key_t3", ["gpt-4o", "gpt-4o"], ["gpt-4.1", "o3-mini"]),
            ("key_o1", ["gpt-4o", "gpt-4o"], ["gpt-4.1", "gpt-4o"]),
        ],
        |day, hour, m, key, model| scope_line((day, hour, m), key, "inference", model, "", ""),
    );
    write(&gw.join("gateway.jsonl"), &(lines.join("\n") + "\n"));
    assert_eq!(ingest(&lake, &[gw.as_path()], &[]).0, 0);
    let team = [("key_t1", "team@x"), ("key_t2", "team@x"), ("key_t3", "team@x"), ("key_o1", "other@x")];
    api_key_inventory(&inv, &team);
    let alerts = detect_range(&lake, &inv, &["--date", "2026-11-08"]);
    let shown: BTreeSet<(&str, &str)> = alerts
        .iter()
        .filter(|a| a["finding"] == "first_seen_model")
        .map(|a| (a["credential_id"].as_str().unwrap(), a["subject"].as_str().unwrap()))
        .collect();
    // A model no peer uses, and another owner's key, still alert; the team's model on a team key does not.
    assert_eq!(shown, [("key_o1", "gpt-4.1"), ("key_t3", "o3-mini")].into_iter().collect(), "{alerts:#?}");
    let kept = sql_rows(
        &lake,
        "SELECT suppressed FROM alerts WHERE finding = 'first_seen_model' AND credential_id = 'key_t3' AND subject = 'gpt-4.1'",
    );
    assert_eq!(kept.len(), 1, "kept on record: {kept:#?}");
    let reason = kept[0]["suppressed"].as_str().unwrap_or_default();
    assert!(reason.starts_with("peers already use it"), "{reason}");
    assert!(reason.contains("2 of 2 credentials of kind api_key owned by team@x"), "{reason}");
}

/// The same holds for every dimension and without an inventory, where a
/// credential's peers are its principal's role (`agent:support-3` →
/// `agent:support`): a tool its peers use every day is no news for a
/// support key; the same tool on a key of another role, and a tool no peer
/// uses, alert.
#[test]
fn a_tool_its_peers_already_use_is_not_first_seen_news_without_an_inventory() {
    let work = tempfile::tempdir().unwrap();
    let (gw, lake) = (work.path().join("gw"), work.path().join("lake"));
    let lines = a_week_of_two_values_an_hour(
        &[
            ("support-1", ["kb.search", "ticket.reply"], ["kb.search", "ticket.reply"]),
            ("support-2", ["ticket.reply", "kb.search"], ["ticket.reply", "kb.search"]),
            ("support-3", ["kb.search", "kb.search"], ["ticket.reply", "shell.exec"]),
            ("billing-1", ["kb.search", "kb.search"], ["ticket.reply", "kb.search"]),
        ],
        |day, hour, m, key, tool| scope_line((day, hour, m), key, "tool_call", "", tool, ""),
    );
    write(&gw.join("gateway.jsonl"), &(lines.join("\n") + "\n"));
    assert_eq!(ingest(&lake, &[gw.as_path()], &[]).0, 0);
    let alerts = detect_without_inventory(&lake, "2026-11-08");
    let shown: BTreeSet<(&str, &str)> = alerts
        .iter()
        .filter(|a| a["finding"] == "first_seen_tool")
        .map(|a| (a["credential_id"].as_str().unwrap(), a["subject"].as_str().unwrap()))
        .collect();
    assert_eq!(
        shown,
        [("billing-1", "ticket.reply"), ("support-3", "shell.exec")].into_iter().collect(),
        "{alerts:#?}"
    );
    let kept = sql_rows(
        &lake,
        "SELECT suppressed FROM alerts WHERE finding = 'first_seen_tool' AND credential_id = 'support-3' AND subject = 'ticket.reply'",
    );
    assert_eq!(kept.len(), 1, "kept on record: {kept:#?}");
    let reason = kept[0]["suppressed"].as_str().unwrap_or_default();
    assert!(
        reason.contains("tool ticket.reply is used by 2 of 2 credentials of role agent:support (support-1, support-2)"),
        "{reason}"
    );
}

/// A key with too little history of its own (new today, or a few requests a
/// week) is judged by its peer group: what a learned peer already does is
/// not news, a tool the whole team never used is. A thin key of a role with
/// no learned peers is not judged (nothing to judge it by). And a thin
/// principal's own routine, a step its few sessions all make, is not a chain
/// to alert on because no peer makes it.
#[test]
fn a_thin_key_is_judged_by_its_peers_first_seen_values() {
    let work = tempfile::tempdir().unwrap();
    let (gw, lake) = (work.path().join("gw"), work.path().join("lake"));
    let mut lines = a_week_of_two_values_an_hour(
        &[
            ("support-1", ["kb.search", "ticket.reply"], ["kb.search", "ticket.reply"]),
            ("support-2", ["ticket.reply", "kb.search"], ["ticket.reply", "kb.search"]),
            ("support-3", ["kb.search", "ticket.reply"], ["ticket.reply", "kb.search"]),
            ("billing-1", ["invoice.read", "web.fetch"], ["invoice.read", "web.fetch"]),
        ],
        |day, hour, m, key, tool| scope_line((day, hour, m), key, "tool_call", "", tool, ""),
    );
    let tool = |day, hour, key, tool| scope_line((day, hour, 50), key, "tool_call", "", tool, "");
    // One request a day: never out of cold start.
    lines.extend((1..=7).map(|day| tool(day, 10, "support-8", "kb.search")));
    lines.extend([tool(8, 10, "support-8", "ticket.reply"), tool(8, 11, "support-8", "web.fetch")]);
    // New today.
    lines.extend([tool(8, 9, "support-9", "kb.search"), tool(8, 12, "support-9", "shell.exec")]);
    lines.extend([tool(8, 9, "lone-1", "kb.search"), tool(8, 12, "lone-1", "shell.exec")]);
    write(&gw.join("gateway.jsonl"), &(lines.join("\n") + "\n"));
    assert_eq!(ingest(&lake, &[gw.as_path()], &[]).0, 0);
    let alerts = detect_without_inventory(&lake, "2026-11-08");
    let of = |key: &str| alerts.iter().filter(|a| a["credential_id"] == key).collect::<Vec<_>>();
    let first_seen: BTreeSet<(&str, &str)> = alerts
        .iter()
        .filter(|a| a["finding"] == "first_seen_tool")
        .map(|a| (a["credential_id"].as_str().unwrap(), a["subject"].as_str().unwrap()))
        .collect();
    assert_eq!(first_seen, [("support-8", "web.fetch")].into_iter().collect(), "{alerts:#?}");
    let baseline = of("support-8")[0]["baseline"].as_str().unwrap();
    assert!(
        baseline.contains(
            "of its peers (3 learned credentials of role agent:support, its own history too thin): kb.search, ticket.reply"
        ),
        "{baseline}"
    );
    // The new key's new tool joins the chain it ends; the lone key's chain has no peer-level news.
    let news =
        |key: &str| of(key).iter().any(|a| a["observed"].as_str().unwrap().contains("first-seen tool shell.exec"));
    assert!(news("support-9") && !of("lone-1").is_empty() && !news("lone-1"), "{alerts:#?}");
    // Its own few sessions a day make this step every time: routine, though no peer does it.
    assert!(of("billing-1").is_empty(), "{alerts:#?}");
}

/// Learns baseline `until` over `days` days, from the per-day partials or (`rescan`) one scan of the window.
fn learn_baseline(lake: &std::path::Path, until: &str, days: u32, rescan: bool) {
    let mut cmd = credtrail();
    cmd.args(["baseline", "--until", until, "--days", &days.to_string(), "--lake"]).arg(lake);
    if rescan {
        cmd.arg("--rescan");
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Every value of baseline version `until`, table by table, rows in key order.
fn model_values(lake: &std::path::Path, until: &str) -> Vec<(&'static str, Vec<serde_json::Value>)> {
    ["baseline_credentials", "baseline_profile", "baseline_scope", "baseline_transitions"]
        .into_iter()
        .map(|t| (t, sql_rows(lake, &format!("SELECT * FROM {t} WHERE until = '{until}' ORDER BY 1, 2, 3, 4"))))
        .collect()
}

/// Learns `until` both ways and asserts every model value agrees: exactly,
/// but for floating-point sums added in another order (relative 1e-9, the
/// tolerance the baseline module documents). Returns the merged transitions.
fn assert_partials_match_a_rescan(lake: &std::path::Path, until: &str, days: u32) -> Vec<serde_json::Value> {
    learn_baseline(lake, until, days, true);
    let exact = model_values(lake, until);
    learn_baseline(lake, until, days, false);
    let merged = model_values(lake, until);
    for ((table, want), (_, got)) in exact.iter().zip(&merged) {
        assert!(!want.is_empty() || *table == "baseline_profile", "{table} until={until} is empty");
        assert_eq!(want.len(), got.len(), "{table} until={until}: row count");
        for (w, g) in want.iter().zip(got) {
            let (w, g) = (w.as_object().unwrap(), g.as_object().unwrap());
            assert_eq!(w.keys().collect::<Vec<_>>(), g.keys().collect::<Vec<_>>(), "{table}");
            for (k, wv) in w {
                let gv = &g[k];
                match (wv.as_f64(), gv.as_f64()) {
                    (Some(a), Some(b)) => {
                        assert!(
                            (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-3),
                            "{table}.{k}: {a} vs {b} in {w:?}"
                        )
                    }
                    _ => assert_eq!(wv, gv, "{table}.{k} in {w:?}"),
                }
            }
        }
    }
    merged.into_iter().find(|(t, _)| *t == "baseline_transitions").unwrap().1
}

#[test]
fn baselines_merged_from_per_day_partials_match_one_scan_of_the_window() {
    let s = setup(26);
    for until in ["2026-11-04", "2026-11-07"] {
        assert_partials_match_a_rescan(&s.lake, until, 28);
    }
    // One partial per day of events, each naming the event files it covers.
    let sources = sql_rows(&s.lake, "SELECT date, count(*) AS files FROM daily_sources GROUP BY 1 ORDER BY 1");
    let days = sql_rows(&s.lake, "SELECT DISTINCT date FROM events ORDER BY 1");
    assert_eq!(
        sources.iter().map(|r| &r["date"]).collect::<Vec<_>>(),
        days.iter().map(|r| &r["date"]).collect::<Vec<_>>()
    );
}

/// A gateway tool call of `session` on `day` (November 2026) at `hh:mm`.
fn session_line(day: u32, hhmm: (u32, u32), key: &str, session: &str, tool: &str) -> String {
    let (h, m) = hhmm;
    format!(
        r#"{{"ts":"2026-11-{day:02}T{h:02}:{m:02}:00.000Z","request_id":"r-{session}-{day}-{h}-{m}","credential_id":"{key}","principal":"agent:{key}","session_id":"{session}","source_ip":"198.51.100.7","user_agent":"bot/1.0","provider":"openai","model":"gpt-4o","action":"tool_call","tool":"{tool}","resource":null,"status":200,"error_code":null,"latency_ms":300,"tokens_in":100,"tokens_out":50,"cost_usd":0.001}}"#
    )
}

#[test]
fn a_session_across_midnight_is_stitched_and_a_late_day_recomputes_only_itself() {
    let work = tempfile::tempdir().unwrap();
    let lake = work.path().join("lake");
    let mut lines = Vec::new();
    for day in 2..=4 {
        for (i, tool) in ["search", "read", "summarise"].iter().enumerate() {
            lines.push(session_line(day, (9, i as u32), "k1", &format!("s-{day}"), tool));
        }
    }
    // One session runs from day 2 over midnight into day 3, another skips day 3.
    lines.push(session_line(2, (23, 58), "k1", "night", "search"));
    lines.push(session_line(2, (23, 59), "k1", "night", "read"));
    lines.push(session_line(3, (0, 1), "k1", "night", "write"));
    lines.push(session_line(3, (0, 2), "k1", "night", "summarise"));
    lines.push(session_line(2, (12, 0), "k1", "long", "read"));
    lines.push(session_line(4, (12, 0), "k1", "long", "write"));
    let first = work.path().join("first.jsonl");
    std::fs::write(&first, lines.join("\n") + "\n").unwrap();
    assert_eq!(ingest(&lake, &[&first], &[]).0, 0);

    let transitions = assert_partials_match_a_rescan(&lake, "2026-11-04", 3);
    let count = |t: &[serde_json::Value], from: &str, to: &str| {
        t.iter().find(|r| r["from_tool"] == from && r["to_tool"] == to).map_or(0, |r| r["count"].as_u64().unwrap())
    };
    assert_eq!(count(&transitions, "read", "write"), 2, "night's and long's steps across days");
    assert_eq!(count(&transitions, "^", "search"), 4, "three day sessions and night start once");

    let sources_of = |day: &str| parquet_files(&lake.join(format!("models/daily/sources/date={day}")));
    let before: Vec<_> = ["2026-11-02", "2026-11-03", "2026-11-04"].map(sources_of).into();
    // Late events for day 3: only its partials are recomputed.
    let late = work.path().join("late.jsonl");
    std::fs::write(&late, session_line(3, (15, 0), "k1", "late", "write") + "\n").unwrap();
    assert_eq!(ingest(&lake, &[&late], &[]).0, 0);
    let transitions = assert_partials_match_a_rescan(&lake, "2026-11-04", 3);
    let after: Vec<_> = ["2026-11-02", "2026-11-03", "2026-11-04"].map(sources_of).into();
    assert_eq!((&before[0], &before[2]), (&after[0], &after[2]), "days 2 and 4 are kept");
    assert_ne!(before[1], after[1], "day 3 is recomputed");
    assert_eq!(count(&transitions, "^", "write"), 1, "the late session");
    let covered = sql_rows(&lake, "SELECT file FROM daily_sources WHERE date = '2026-11-03'");
    assert_eq!(covered.len(), 2, "both of day 3's event files: {covered:?}");
    // A window reaching before any representable date is refused, not a panic.
    let out = credtrail().args(["baseline", "--days", "4000000000", "--lake"]).arg(&lake).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("--days 4000000000 reaches before") && !err.contains("panicked"), "{err}");
}

/// A lake of three teams (inventory owners) learned over Nov 1–7, and on
/// Nov 8 a new key in each, with no history of its own:
/// - `batch@x` spends 2M tokens in one hour a night: `new_batch` does the same;
/// - `team@x` spends ~7k tokens an hour: `new_light` spends ~30× that in one hour;
/// - `flaky@x` keys hit 25 throttles in a minute three times a day:
///   `new_flaky` does the same, `new_storm` fails 60 times a minute for five minutes.
fn thin_keys_and_their_peers(work: &std::path::Path) -> Vec<serde_json::Value> {
    let (gw, lake, inv) = (work.join("gw"), work.join("lake"), work.join("inventory.csv"));
    let mut lines = Vec::new();
    let mut line = |day, t, key: &str, status, tokens| {
        let n = lines.len();
        lines.push(common::request_line(n, day, t, key, status, "10.20.0.7", "gpt-4o-mini", tokens));
    };
    let mut day_of = |day: u32, key: &str, team: &str| {
        for hour in 8..20u32 {
            for i in 0..12u32 {
                let tokens = if team == "batch" { 9_900 } else { 500 + (i * 37 + day) % 100 };
                if team != "batch" || i < 2 {
                    line(day, (hour, i * 5, 1), key, 200, tokens);
                }
            }
            if team == "flaky" && [9, 13, 17].contains(&hour) {
                (0..25).for_each(|s| line(day, (hour, 30, s), key, 429, 0));
            }
        }
        if team == "batch" {
            (0..20).for_each(|i| line(day, (2, i, 0), key, 200, 99_900));
        }
    };
    for day in 1..=7 {
        for team in ["batch", "team", "flaky"] {
            for k in 1..=3 {
                day_of(day, &format!("{team}_{k}"), team);
            }
        }
    }
    day_of(8, "new_batch", "batch");
    day_of(8, "new_light", "team");
    day_of(8, "new_flaky", "flaky");
    day_of(8, "new_storm", "team");
    for i in 0..100u32 {
        line(8, (14, 10 + i / 10, i % 10), "new_light", 200, 2_000);
    }
    for i in 0..300u32 {
        line(8, (10, i / 60, i % 60), "new_storm", 429, 0);
    }
    lines.sort_by(|a, b| a[7..31].cmp(&b[7..31]));
    write(&gw.join("gateway.jsonl"), &(lines.join("\n") + "\n"));
    assert_eq!(ingest(&lake, &[gw.as_path()], &[]).0, 0);
    let mut keys: Vec<(String, &str)> = Vec::new();
    for (team, owner) in [("batch", "batch@x"), ("team", "team@x"), ("flaky", "flaky@x")] {
        keys.extend((1..=3).map(|k| (format!("{team}_{k}"), owner)));
    }
    keys.extend([("new_batch".into(), "batch@x"), ("new_light".into(), "team@x")]);
    keys.extend([("new_flaky".into(), "flaky@x"), ("new_storm".into(), "flaky@x")]);
    api_key_inventory(&inv, &keys.iter().map(|(k, o)| (k.as_str(), *o)).collect::<Vec<_>>());
    detect_range(&lake, &inv, &["--date", "2026-11-08"])
}

/// A key with no history of its own is judged by its peers' usual hours
/// (same kind and owner): a night batch like theirs is quiet though it
/// passes the cold-start floor, and ~30× their busiest hour alerts though
/// it is far under that floor, saying it compared against peers.
#[test]
fn a_thin_key_spends_against_its_peers_usual_hours() {
    let work = tempfile::tempdir().unwrap();
    let alerts = thin_keys_and_their_peers(work.path());
    let spikes: Vec<&serde_json::Value> = alerts.iter().filter(|a| a["detector"] == "billing_spike").collect();
    let keys: BTreeSet<&str> = spikes.iter().map(|a| a["credential_id"].as_str().unwrap()).collect();
    assert_eq!(keys, ["new_light"].into_iter().collect(), "{spikes:#?}");
    let a = spikes[0];
    let (explanation, baseline) = (a["explanation"].as_str().unwrap(), a["baseline"].as_str().unwrap());
    assert!(
        explanation.contains("busiest normal hour of peers (3 credentials of kind api_key owned by team@x)"),
        "{a}"
    );
    assert!(baseline.contains("judged by peers (3 credentials of kind api_key owned by team@x)"), "{baseline}");
    assert!(a["evidence_count"].as_u64().unwrap() >= 100, "{a}");
}

/// The same for failures: throttling bursts as ordinary as its peers' are
/// quiet for a new key, and a storm ten times theirs alerts, against them.
#[test]
fn a_thin_key_fails_against_its_peers_usual_failures() {
    let work = tempfile::tempdir().unwrap();
    let alerts = thin_keys_and_their_peers(work.path());
    let storms: Vec<&serde_json::Value> = alerts.iter().filter(|a| a["detector"] == "retry_storm").collect();
    let keys: Vec<&str> = storms.iter().map(|a| a["credential_id"].as_str().unwrap()).collect();
    assert_eq!(keys, ["new_storm"], "{storms:#?}");
    let a = storms[0];
    assert_eq!((a["finding"].as_str(), a["evidence_count"].as_u64()), (Some("throttling"), Some(300)));
    let explanation = a["explanation"].as_str().unwrap();
    assert!(explanation.contains("of peers (3 credentials of kind api_key owned by flaky@x)"), "{explanation}");
}

/// A fleet finding and what its member credentials did in its window are
/// one incident: a team's new model, and one member's spend spike while
/// it tried that model, are read together; the members stay on record in
/// the same incident.
#[test]
fn a_fleet_finding_and_its_members_own_alerts_are_one_incident() {
    let work = tempfile::tempdir().unwrap();
    let (gw, lake, inv) = (work.path().join("gw"), work.path().join("lake"), work.path().join("inventory.csv"));
    let team: Vec<String> = (0..6).map(|i| format!("key_team{i}")).collect();
    // Day 8: the team moves to gpt-4.1; key_team3 only tries it in the first hour.
    let mut lines = team_week(&team, |day, key, hour| match (day, key, hour) {
        (8, "key_team3", 8) => "gpt-4.1",
        (8, "key_team3", _) => "gpt-4o",
        (8, ..) => "gpt-4.1",
        _ => "gpt-4o",
    });
    for i in 0..40 {
        lines.push(common::request_line(lines.len(), 8, (12, i, 30), "key_team3", 200, "10.20.0.7", "gpt-4o", 5_000));
    }
    lines.sort_by(|a, b| a[7..31].cmp(&b[7..31]));
    write(&gw.join("gateway.jsonl"), &(lines.join("\n") + "\n"));
    assert_eq!(ingest(&lake, &[gw.as_path()], &[]).0, 0);
    api_key_inventory(&inv, &team.iter().map(|k| (k.as_str(), "o@x")).collect::<Vec<_>>());
    let alerts = detect_range(&lake, &inv, &["--date", "2026-11-08"]);
    let shown: Vec<&serde_json::Value> = alerts.iter().filter(|a| a["suppressed"].is_null()).collect();
    let fleet: Vec<_> = shown.iter().filter(|a| a["finding"] == "fleet_first_seen_model").collect();
    assert_eq!(fleet.len(), 1, "{shown:#?}");
    let incident = &fleet[0]["incident_id"];
    assert!(incident.is_string() && fleet[0]["observed"].as_str().unwrap().starts_with("6 credentials"), "{fleet:#?}");
    let spike: Vec<_> = shown.iter().filter(|a| a["detector"] == "billing_spike").collect();
    assert_eq!(spike.len(), 1, "{shown:#?}");
    assert_eq!(spike[0]["credential_id"], "key_team3");
    assert_eq!(&spike[0]["incident_id"], incident, "the member's spike joins the fleet finding: {shown:#?}");
    let members = sql_rows(&lake, "SELECT incident_id FROM alerts WHERE finding = 'first_seen_model'");
    assert_eq!(members.len(), 6, "{members:#?}");
    assert!(members.iter().all(|m| &m["incident_id"] == incident), "{members:#?}");
}

/// A rule's `events` condition spares the days none of whose events meets
/// it, and only those: the same query without one alerts on both days, and
/// with one it still reads every event of a day that has a match; one that
/// needs history is spared while nothing is learned. A condition naming no
/// column fails the run with the rule named.
#[test]
fn a_rule_s_events_condition_skips_only_the_days_without_such_events() {
    let work = tempfile::tempdir().unwrap();
    let (gw, lake, dir) = (work.path().join("gw"), work.path().join("lake"), work.path().join("queries"));
    let ok = |n, day, h| request_line(n, day, (h, 0, 0), "key_a", 200, "10.0.0.1", "gpt-4o", 100);
    let lines =
        [ok(1, 2, 9), ok(2, 2, 10), ok(3, 3, 9), request_line(4, 3, (10, 0, 0), "key_a", 503, "10.0.0.1", "gpt-4o", 0)];
    write(&gw.join("gateway.jsonl"), &(lines.join("\n") + "\n"));
    assert_eq!(ingest(&lake, &[gw.as_path()], &[]).0, 0);
    let every_event = "SELECT credential_id, principal, ts, request_id, source_ip, 'seen' AS finding, \
                       CAST(status AS VARCHAR) AS value, NULL AS allowed FROM events WHERE date BETWEEN '{from}' AND '{to}'";
    let rule = |name: &str, events: &str| format!("---\n--- family = \"{name}\"\n{events}---\n{every_event}");
    write(&dir.join("plain.sql"), &rule("plain", ""));
    write(&dir.join("gated.sql"), &rule("gated", "--- events = \"status >= 500\"\n"));
    // Two days of one key: no baseline has learned it yet.
    write(&dir.join("learned.sql"), &rule("learned", "--- needs_history = true\n"));
    let out = credtrail()
        .args(["detect", "--from", "2026-11-02", "--to", "2026-11-03", "--output", "jsonl", "--queries"])
        .arg(&dir)
        .arg("--lake")
        .arg(&lake)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let alerts: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let evidence = |detector: &str| -> BTreeSet<String> {
        alerts
            .iter()
            .filter(|a| a["detector"] == detector)
            .flat_map(|a| a["evidence"].as_array().unwrap().iter().map(|e| e.as_str().unwrap().to_string()))
            .collect()
    };
    let ids = |ns: &[usize]| ns.iter().map(|n| format!("r{n:07}-key_a")).collect::<BTreeSet<_>>();
    assert_eq!(evidence("plain"), ids(&[1, 2, 3, 4]), "{alerts:#?}");
    assert_eq!(evidence("gated"), ids(&[3, 4]), "{alerts:#?}");
    assert_eq!(evidence("learned"), ids(&[]), "{alerts:#?}");
    std::fs::remove_file(dir.join("learned.sql")).unwrap();

    write(&dir.join("gated.sql"), &rule("gated", "--- events = \"no_such_column > 1\"\n"));
    let out = credtrail()
        .args(["detect", "--date", "2026-11-03", "--queries"])
        .arg(&dir)
        .arg("--lake")
        .arg(&lake)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("query gated (its rule's `events` condition)") && err.contains("no_such_column"), "{err}");
}

/// The built-in rules' `events` conditions and `needs_history` only spare
/// work: with them taken out (every detector planned on every day), detection over real
/// records (Stratus detonations, panther's LLM-platform logs, LiteLLM) and a
/// crafted gateway week finds exactly the same alerts, while with them in
/// some days leave detectors idle.
#[test]
fn what_the_built_in_rules_say_of_their_inputs_changes_no_alert() {
    let work = tempfile::tempdir().unwrap();
    let (lake, inv) = issue18_lake(work.path());
    let real = ["stratus", "litellm", "panther/anthropic-activity.jsonl.gz", "panther/bedrock-invocation.jsonl.gz"]
        .map(fixture);
    ingest(&lake, &real.iter().map(|p| p.as_path()).collect::<Vec<_>>(), &[]);
    let dir = work.path().join("ungated");
    let mut stripped = Vec::new();
    for f in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/queries")).unwrap().flatten() {
        let text = std::fs::read_to_string(f.path()).unwrap_or_default();
        let spares = |l: &str| l.starts_with("--- events =") || l.starts_with("--- needs_history =");
        if text.lines().any(spares) {
            let kept: Vec<&str> = text.lines().filter(|l| !spares(l)).collect();
            write(&dir.join(f.file_name()), &kept.join("\n"));
            stripped.push(f.file_name().to_string_lossy().into_owned());
        }
    }
    assert!(stripped.len() >= 6 && stripped.contains(&"first_seen.sql".to_string()), "{stripped:?}");
    let run = |extra: &[&str]| {
        let out = credtrail()
            .args(["detect", "--output", "jsonl", "--lake"])
            .arg(&lake)
            .arg("--inventory")
            .arg(&inv)
            .args(extra)
            .env("RUST_LOG", "credtrail=debug")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (gated, log) = run(&[]);
    let (ungated, _) = run(&["--queries", dir.to_str().unwrap()]);
    assert_eq!(gated, ungated);
    let fired: BTreeSet<String> = gated
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["detector"].as_str().unwrap().to_string())
        .collect();
    assert!(fired.contains("retry_storm") && fired.contains("billing_spike"), "{fired:?}");
    assert!(gated.contains("\"finding\":\"first_seen_"), "{gated}");
    let idle =
        log.lines().filter(|l| l.contains("detectors without events to read") && l.contains("retry_storm")).count();
    assert!(idle >= 5, "{log}");
}
