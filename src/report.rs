//! Everything a person reads: the tables and summary texts the commands
//! print, in one place, so their look is decided once.
//!
//! It sits at the top of the library (beside the shell and Flight SQL, which
//! print query results their own way): it reads the reports of [`ingest`],
//! [`baseline`], [`detect`], [`eval`], [`inventory`], [`sample`],
//! [`stream`] and [`html`] and never feeds back into them. [`AlertOutput`] is both the
//! `--output` value of `detect`/`run` and the printer of a detect report.

use std::fmt::Write as _;
use std::path::Path;

use comfy_table::{ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};

use crate::alert::{self, Alert, Incident};
use crate::baseline::BaselineSummary;
use crate::detect::DetectReport;
use crate::eval::EvalReport;
use crate::eval::techniques::TechniqueReport;
use crate::html;
use crate::ingest::{FileStatus, IngestSummary};
use crate::inventory::Finding;
use crate::lake;
use crate::sample::SampleSummary;
use crate::stream::WatchSummary;
use crate::stream::sinks::AlertFormat;
use crate::time::format_ms;

/// How `detect` and `run` print alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum AlertOutput {
    /// Incidents and governance findings as tables.
    #[default]
    Table,
    /// One alert per line as JSON.
    Jsonl,
    /// One OCSF Detection Finding (class 2004) per line.
    Ocsf,
}

impl AlertOutput {
    /// The report in this format: the tables, or one line per active alert.
    pub fn render(self, r: &DetectReport) -> String {
        let line = match self {
            AlertOutput::Table => return detect_report(r),
            AlertOutput::Jsonl => AlertFormat::Jsonl,
            AlertOutput::Ocsf => AlertFormat::Ocsf,
        };
        r.active().map(|a| line.render(a) + "\n").collect()
    }
}

/// The condensed table every report uses; `width` fixes it (for pipes and
/// files), none lets it follow the terminal.
fn table(header: &[&str], width: Option<u16>) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Dynamic);
    if let Some(w) = width {
        t.set_width(w);
    }
    t.set_header(header);
    t
}

/// The detect report as a person reads it: incidents first, then governance.
pub fn detect_report(r: &DetectReport) -> String {
    let days = if r.from == r.to { r.from.clone() } else { format!("{} to {}", r.from, r.to) };
    let active: Vec<Alert> = r.active().cloned().collect();
    let incidents = alert::incidents(&active);
    let mut governance: Vec<&Alert> = active.iter().filter(|a| a.detector == "governance").collect();
    governance
        .sort_by(|a, b| (b.severity, &a.finding, &a.credential_id).cmp(&(a.severity, &b.finding, &b.credential_id)));
    let suppressed = r.alerts.len() - active.len();
    let mut s = format!(
        "\ndetect {days}: {} alert(s) in {} incident(s), {} governance finding(s)",
        active.len() - governance.len(),
        incidents.len(),
        governance.len()
    );
    if suppressed > 0 {
        s.push_str(&format!(", {suppressed} suppressed"));
    }
    s.push('\n');
    if r.days.is_empty() {
        s.push_str("  no events in this range\n");
    }
    let cold: Vec<&str> = r.baselines.iter().filter(|(_, b)| b.is_none()).map(|(d, _)| d.as_str()).collect();
    let list = |v: &[&str]| match v {
        [] => String::new(),
        [a] => a.to_string(),
        [a, b] => format!("{a} and {b}"),
        [a, .., z] => format!("{} days from {a} to {z}", v.len()),
    };
    if !r.learned.is_empty() {
        let learned: Vec<&str> = r.learned.iter().map(String::as_str).collect();
        s.push_str(&format!("  learned baselines until each of {}\n", list(&learned)));
    }
    if !cold.is_empty() {
        s.push_str(&format!(
            "  {} had no history before it: judged in cold start (no baseline; floors and same-day comparison only)\n",
            list(&cold)
        ));
    }
    for (name, why) in &r.skipped {
        s.push_str(&format!("  skipped {name}: {why}\n"));
    }
    if !incidents.is_empty() {
        s.push_str(&incidents_table(&incidents));
        s.push('\n');
    }
    if !governance.is_empty() {
        let mut t = table(&["governance", "credential", "detail"], Some(160));
        for a in &governance {
            t.add_row([a.finding.as_str(), a.credential_id.as_str(), a.observed.as_str()]);
        }
        s.push_str(&format!("{t}\n"));
    }
    if !active.is_empty() {
        s.push_str(
            "  every alert, its evidence and baseline: credtrail sql -c \"SELECT * FROM alerts\" (or --output jsonl|ocsf)\n",
        );
    }
    s
}

/// Incidents as a table a person can act on: one row per incident, its
/// alerts' explanations in time order.
pub fn incidents_table(incidents: &[Incident<'_>]) -> String {
    let mut t = table(&["severity", "credential", "window (UTC)", "what happened", "evidence"], Some(160));
    for inc in incidents {
        let first = inc.alerts[0];
        let who = match &first.principal {
            Some(p) => format!("{}\n{p}", first.credential_id),
            None => first.credential_id.clone(),
        };
        let window = format!("{} → {}", short_time(inc.start()), short_time(inc.end()));
        let what: Vec<String> = inc.alerts.iter().map(|a| format!("[{}] {}", a.detector, a.explanation)).collect();
        let evidence = inc
            .alerts
            .iter()
            .map(|a| match a.evidence.first() {
                Some(first) if a.evidence_count > 1 => format!("{first} +{} more", a.evidence_count - 1),
                Some(first) => first.clone(),
                None => "-".into(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        t.add_row([inc.severity().as_str(), &who, &window, &what.join("\n"), &evidence]);
    }
    t.to_string()
}

fn short_time(ms: i64) -> String {
    let s = format_ms(ms);
    // 2026-11-06T12:18:17.285Z → 2026-11-06 12:18
    s.get(..16).map_or(s.clone(), |p| p.replace('T', " "))
}

/// Inventory findings as a table for a terminal.
pub fn findings_table(findings: &[Finding]) -> String {
    let mut t = table(&["finding", "credential", "owner", "detail"], Some(160));
    for f in findings {
        t.add_row([f.kind.as_str(), &f.credential_id, f.owner.as_deref().unwrap_or("-"), &f.detail]);
    }
    t.to_string()
}
/// Technique recall on labelled attack records (`eval` with JSON-lines labels).
pub fn technique_table(r: &TechniqueReport) -> String {
    let mut t = table(&["technique", "events", "alerts", "ATT&CK"], None);
    for k in &r.techniques {
        let ids: Vec<&str> = k.mitre.iter().filter_map(|m| m.split(' ').next()).collect();
        t.add_row([k.technique.clone(), k.events.to_string(), k.alerts.len().to_string(), ids.join(", ")]);
    }
    let mut s = t.to_string();
    s.push_str(&format!("\ntechnique recall: {:.3} ({} of {})", r.recall, r.detected, r.techniques.len()));
    let by: Vec<String> = r.unlabelled_by_severity.iter().map(|(k, n)| format!("{k} {n}")).collect();
    s.push_str(&format!(
        "\nalerts holding no labelled event: {}{}",
        r.unlabelled.len(),
        if by.is_empty() { String::new() } else { format!(" ({})", by.join(", ")) }
    ));
    for (id, det, sev, expl) in &r.unlabelled {
        s.push_str(&format!("\nunlabelled alert: {id} [{det}, {sev}] {expl}"));
    }
    s.push('\n');
    s
}

/// Evaluation scores per kind, then what was missed and what was wrong.
pub fn eval_table(r: &EvalReport) -> String {
    let mut t = table(
        &["kind", "labels", "detected", "alerts", "true", "recall", "precision", "F1", "TTD median", "TTD max"],
        None,
    );
    for k in &r.kinds {
        t.add_row([
            k.kind.clone(),
            k.labels.to_string(),
            k.detected.to_string(),
            k.alerts.to_string(),
            k.true_alerts.to_string(),
            format!("{:.3}", k.recall),
            format!("{:.3}", k.precision),
            format!("{:.3}", k.f1),
            duration(k.time_to_detect_median_s),
            duration(k.time_to_detect_max_s),
        ]);
    }
    let mut s = t.to_string();
    if !r.unlabelled.is_empty() {
        let list: Vec<String> = r.unlabelled.iter().map(|(d, n)| format!("{d} {n}")).collect();
        s.push_str(&format!("\nalerts of detectors without labels: {}", list.join(", ")));
    }
    for m in &r.missed {
        s.push_str(&format!("\nmissed: {m}"));
    }
    for (id, det, cred, expl) in &r.false_alerts {
        s.push_str(&format!("\nfalse alert: {id} [{det}] {cred}: {expl}"));
    }
    s.push('\n');
    s
}

fn duration(s: Option<f64>) -> String {
    match s {
        None => "-".into(),
        Some(s) if s < 120.0 => format!("{s:.0} s"),
        Some(s) => format!("{:.1} min", s / 60.0),
    }
}

/// What an ingest run did, and where to look when something needs attention.
pub fn ingest_summary(r: &IngestSummary) -> String {
    let mut s = format!(
        "ingested {} of {} records from {} file(s) ({} already ingested, {} failed) into {}\n\
         quarantined {}, secrets redacted {}, {} in {:.2}s ({:.0} events/s)\n",
        r.ingested,
        r.read,
        r.files,
        r.skipped_files,
        r.failed_files,
        r.lake,
        r.quarantined,
        r.redacted,
        human_bytes(r.bytes),
        r.seconds,
        r.events_per_sec,
    );
    for f in r.per_file.iter().filter(|f| matches!(f.status, FileStatus::Partial | FileStatus::Failed)) {
        s.push_str(&format!("  {}: {}: {}\n", f.status.as_str(), f.path, f.error.as_deref().unwrap_or("")));
    }
    for f in r.per_file.iter().filter(|f| f.pending > 0) {
        s.push_str(&format!("  pending: {}: incomplete last line, read once it is complete\n", f.path));
    }
    for e in &r.skipped_entries {
        s.push_str(&format!("  skipped: {}: {}\n", e.path, e.reason));
    }
    if r.unaccounted > 0 {
        s.push_str(&format!(
            "  {} record(s) read but neither ingested, quarantined nor pending: a bug, please report it\n",
            r.unaccounted
        ));
    }
    if r.quarantined > 0 {
        s.push_str(&format!("  quarantined records: {}/{}/\n", r.lake, lake::QUARANTINE));
    }
    if r.redacted > 0 {
        s.push_str(&format!(
            "  credential secrets were found in the logs and redacted: see {}/{}/\n",
            r.lake,
            lake::SECRET_EXPOSURES
        ));
    }
    s
}

fn human_bytes(n: u64) -> String {
    let n = n as f64;
    match n {
        n if n >= 1e9 => format!("{:.2} GB", n / 1e9),
        n if n >= 1e6 => format!("{:.1} MB", n / 1e6),
        n if n >= 1e3 => format!("{:.1} kB", n / 1e3),
        n => format!("{n} B"),
    }
}

/// What `baseline` learned and where it saved it.
pub fn baseline_summary(s: &BaselineSummary, lake: &Path) -> String {
    format!(
        "baseline until={} (history {} to {}): {} credentials ({} in cold start), {} learned scope values, \
         {} tool transitions of {} principals\n  saved in {}/models/ (tables baseline_credentials, \
         baseline_profile, baseline_scope, baseline_transitions)\n",
        s.until,
        s.history_from,
        s.until,
        s.credentials,
        s.cold_start,
        s.scope_values,
        s.transitions,
        s.principals,
        lake.display()
    )
}

/// What `lake compact` merged.
pub fn compacted(c: &crate::lake::compact::Compacted) -> String {
    let mut out = if c.merged == 0 {
        format!(
            "nothing to compact: no day has two or more small event files (under {} rows)\n",
            crate::lake::compact::SMALL_ROWS
        )
    } else {
        format!(
            "merged {} small event file(s) of {} day(s) ({} to {}) into {}, {} rows\n",
            c.merged,
            c.days.len(),
            c.days.first().map_or("", String::as_str),
            c.days.last().map_or("", String::as_str),
            c.written,
            c.rows
        )
    };
    for rel in &c.skipped {
        out.push_str(&format!("  left as it was (damaged or another schema; see `credtrail lake check`): {rel}\n"));
    }
    out
}

/// What `sample` wrote and where.
pub fn sample_summary(s: &SampleSummary, out: &Path) -> String {
    format!(
        "wrote {} events in {} file(s) for {} credentials with {} labelled anomalies to {}\n  inventory: {}\n  labels:    {}\n",
        s.events,
        s.files.len(),
        s.credentials,
        s.anomalies,
        out.display(),
        s.inventory.display(),
        s.labels.display()
    )
}

/// The line naming the HTML report written to `out`: `report` prints it,
/// and so do `run` and `detect` with `--report`.
pub fn html_written(r: &html::Report, out: &Path) -> String {
    format!("report: {} ({} incident(s) drawn, {} to {})\n", out.display(), r.detailed.len(), r.from, r.to)
}

/// The line a watcher leaves when it stops.
pub fn watch_stopped(s: &WatchSummary) -> String {
    let mut line = format!(
        "watch stopped: {} lines, {} events, {} quarantined, {} secrets redacted, {} alerts, {} commits",
        s.lines, s.events, s.quarantined, s.redacted, s.alerts, s.flushes
    );
    if s.late_events > 0 {
        let _ = write!(line, ", {} events too late to judge live", s.late_events);
    }
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::FindingKind;

    #[test]
    fn incidents_show_window_and_evidence() {
        let mut one = [alert::tests::alert()];
        alert::assign_incidents(&mut one);
        let t = incidents_table(&alert::incidents(&one));
        assert!(t.contains("r1 +2 more") && t.contains("1970-01-01 00:00"), "{t}");
    }

    #[test]
    fn findings_table_lists_each_finding() {
        let f = |kind, id: &str| Finding { kind, credential_id: id.into(), owner: None, detail: "d".into() };
        let t = findings_table(&[f(FindingKind::ExpiredButUsed, "expired_used"), f(FindingKind::Unknown, "shadow")]);
        assert!(t.contains("expired_but_used") && t.contains("shadow") && t.contains(" - "), "{t}");
    }

    #[test]
    fn bytes_read_humanly() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1_500), "1.5 kB");
        assert_eq!(human_bytes(2_500_000_000), "2.50 GB");
    }

    #[test]
    fn late_events_are_mentioned_only_when_there_are_some() {
        let mut s = WatchSummary { events: 4, ..Default::default() };
        assert!(!watch_stopped(&s).contains("too late"));
        s.late_events = 2;
        assert!(watch_stopped(&s).ends_with(", 2 events too late to judge live\n"));
    }
}
