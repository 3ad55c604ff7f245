//! Batch detection through the real binary, scored against the sample's labels.

mod common;

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
    let out = credtrail()
        .args(["sample", "--days", "6", "--credentials", "40", "--rate-scale", "0.3", "--seed"])
        .arg(seed.to_string())
        .arg("--out")
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success());
    let lake = work.path().join("lake");
    let (code, _) = ingest(&lake, &[&data.join("logs")], &[]);
    assert_eq!(code, 0);
    Setup { _work: work, data, lake }
}

fn detect(s: &Setup, extra: &[&str]) -> Vec<serde_json::Value> {
    let out = credtrail()
        .args(["detect", "--from", "2026-11-02", "--to", "2026-11-07", "--json-alerts", "--lake"])
        .arg(&s.lake)
        .arg("--inventory")
        .arg(s.data.join("inventory.csv"))
        .args(extra)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn ms(s: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
}

#[test]
fn out_of_scope_alerts_match_the_labels_exactly() {
    for seed in [21, 22] {
        let s = setup(seed);
        let alerts = detect(&s, &[]);
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
    let first: BTreeSet<String> = detect(&s, &[]).iter().map(|a| a["alert_id"].as_str().unwrap().to_string()).collect();
    let second: BTreeSet<String> =
        detect(&s, &[]).iter().map(|a| a["alert_id"].as_str().unwrap().to_string()).collect();
    assert!(!first.is_empty());
    assert_eq!(first, second);
    let stored = rows_of(&s.lake.join("alerts"));
    assert_eq!(stored.len(), first.len(), "a rerun replaces, it does not add");
    let out = credtrail()
        .args(["sql", "--format", "csv", "--lake"])
        .arg(&s.lake)
        .args(["-c", "SELECT count(DISTINCT alert_id) AS n FROM alerts WHERE detector = 'out_of_scope'"])
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
    let all = detect(&s, &[]);
    let only = detect(&s, &["--queries", dir.to_str().unwrap()]);
    assert!(all.len() > only.len(), "{all:?}");
    assert!(!only.is_empty());
    assert!(only.iter().all(|a| a["finding"] == "expired_credential"));
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
    let out = credtrail().args(["detect", "--json-alerts", "--lake"]).arg(&lake).output().unwrap();
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
        let id = r["eventID"].as_str().unwrap().to_string();
        assert_eq!(evidence.contains(&id), l["panther_expected"] == true, "{} ({})", l["test"], r["eventName"]);
    }
    let update = alerts.iter().find(|a| a["observed"].as_str().unwrap().contains("bedrock:UpdateGuardrail")).unwrap();
    assert_eq!(update["credential_id"], "ASIAQWERQWERQWERQWER");
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
    let out =
        credtrail().args(["detect", "--date", "2026-11-02", "--json-alerts", "--lake"]).arg(&lake).output().unwrap();
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
