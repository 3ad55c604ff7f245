//! Detection quality on generated data with seeds the detectors were not
//! tuned on (1–5 were used while building them): the targets of the design.

use crate::common;

use common::*;

fn run_and_eval(seed: u64) -> serde_json::Value {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("sample");
    generate_sample(&data, seed, &["--days", "7", "--credentials", "100", "--rate-scale", "0.5"]);
    let lake = work.path().join("lake");
    let out = credtrail()
        .arg("run")
        .arg(data.join("logs"))
        .arg("--inventory")
        .arg(data.join("inventory.csv"))
        .args(["--no-progress", "--lake"])
        .arg(&lake)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    eval_json(&lake, &data.join("labels.csv"))
}

#[test]
fn every_kind_reaches_the_recall_and_precision_targets_on_unseen_seeds() {
    let mut totals: std::collections::BTreeMap<String, [usize; 4]> = Default::default();
    for seed in [101, 102] {
        let r = run_and_eval(seed);
        for k in r["kinds"].as_array().unwrap() {
            let t = totals.entry(k["kind"].as_str().unwrap().to_string()).or_default();
            for (i, f) in ["labels", "detected", "alerts", "true_alerts"].iter().enumerate() {
                t[i] += k[f].as_u64().unwrap() as usize;
            }
        }
        // Hard negatives (429 bursts, busy days, background errors) never raise
        // billing or storm alerts.
        let false_alerts = r["false_alerts"].as_array().unwrap();
        assert!(
            !false_alerts.iter().any(|f| f[1] == "billing_spike" || f[1] == "retry_storm"),
            "seed {seed}: {false_alerts:?}"
        );
    }
    assert_eq!(totals.len(), 4);
    for (kind, [labels, detected, alerts, true_alerts]) in totals {
        assert!(labels >= 4, "{kind}: {labels} labels");
        let recall = detected as f64 / labels as f64;
        let precision = true_alerts as f64 / alerts.max(1) as f64;
        assert!(recall >= 0.95, "{kind}: recall {recall} ({detected}/{labels})");
        assert!(precision >= 0.90, "{kind}: precision {precision} ({true_alerts}/{alerts})");
    }
}

#[test]
fn eval_fails_a_script_when_quality_is_below_the_bar() {
    let work = tempfile::tempdir().unwrap();
    let lake = work.path().join("lake");
    let log = work.path().join("gw.jsonl");
    write(&log, &(gateway_line(1, "key_a", "") + "\n"));
    ingest(&lake, &[&log], &[]);
    let labels = work.path().join("labels.csv");
    write(
        &labels,
        "id,kind,credential_id,start,end,description\nL1,retry_storm,key_a,2026-11-02T00:00:00Z,2026-11-02T00:10:00Z,storm\n",
    );
    let out = credtrail()
        .args(["eval", "--min-recall", "0.95", "--lake"])
        .arg(&lake)
        .arg("--labels")
        .arg(&labels)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("missed: L1 retry_storm key_a"), "{text}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("retry_storm"));
}
