//! The report as one HTML page: an overview, then one `<section
//! class="incident">` per incident. Every value from the lake goes through
//! [`esc`]; the page carries a Content-Security-Policy that forbids scripts
//! and every load but inline styles and `data:` images, so even a missed
//! escape cannot run or fetch anything. No JavaScript, fonts or links to load.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::{AlertPage, Evidence, IncidentPage, MAX_DETAILED, Report};
use crate::alert::{self, Alert, Severity};
use crate::detect::FLEET;
use crate::time::{DAY_MS, day_of, format_ms};

/// What the page may load: nothing but its own inline styles and data images.
pub const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:";

const STYLE: &str = "body{font-family:sans-serif;margin:2em;max-width:1100px;color:#222}\
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 6px;text-align:left;\
font-size:13px;vertical-align:top}pre{background:#f4f4f4;padding:.5em;white-space:pre-wrap}\
.incident{border-top:3px solid #444;margin-top:2em}.sev{font-weight:bold;text-transform:uppercase;padding:0 4px;\
border:1px solid}.sev-critical{color:#a00}.sev-high{color:#c50}.sev-medium{color:#850}.sev-low{color:#555}\
figure{margin:.5em 0}figcaption{font-size:12px;color:#555}.evidence td{font-family:monospace;font-size:12px;\
word-break:break-all}.strip{display:flex;gap:1em;align-items:center;font-size:12px}code{background:#f4f4f4}";

/// HTML-escapes text and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The whole page.
pub fn render(r: &Report) -> String {
    let days = if r.from == r.to { r.from.clone() } else { format!("{} to {}", r.from, r.to) };
    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">\n\
         <title>credtrail report {}</title>\n<style>{STYLE}</style></head>\n<body>\n\
         <h1>credtrail report: {}</h1>\n",
        esc(&days),
        esc(&days)
    );
    overview(&mut s, r);
    for inc in &r.detailed {
        incident(&mut s, inc);
    }
    rest(&mut s, r);
    s.push_str("</body></html>\n");
    s
}

fn severity(s: Severity) -> String {
    format!("<span class=\"sev sev-{0}\">{0}</span>", s.as_str())
}

fn overview(s: &mut String, r: &Report) {
    let active: Vec<Alert> = r.alerts.iter().filter(|a| a.suppressed.is_none()).cloned().collect();
    let incidents = alert::incidents(&active);
    let _ = write!(
        s,
        "<section id=\"overview\">\n<h2>Overview</h2>\n<p>{} incident(s) from {} alert(s); the lake holds events from {} to {}.</p>\n",
        incidents.len(),
        active.len(),
        esc(&r.span.0),
        esc(&r.span.1)
    );
    // Incidents by day and severity.
    let sevs = [Severity::Critical, Severity::High, Severity::Medium, Severity::Low];
    let mut by_day: BTreeMap<String, [usize; 4]> = BTreeMap::new();
    for i in &incidents {
        let row = by_day.entry(day_of(i.start())).or_default();
        row[sevs.iter().position(|x| *x == i.severity()).unwrap_or(3)] += 1;
    }
    s.push_str("<h3>Incidents by day and severity</h3>\n<table id=\"by-day\"><tr><th>day</th>");
    for x in sevs {
        let _ = write!(s, "<th>{}</th>", x.as_str());
    }
    s.push_str("</tr>\n");
    for (day, n) in &by_day {
        let _ = write!(s, "<tr><td>{}</td>", esc(day));
        for v in n {
            let _ = write!(s, "<td>{v}</td>");
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</table>\n");

    // A fleet finding keeps its members' detector; its credential is FLEET.
    let fleet: Vec<&Alert> = active.iter().filter(|a| a.credential_id == FLEET).collect();
    findings(s, "Fleet findings", "fleet", &fleet);
    let mut governance: Vec<&Alert> = active.iter().filter(|a| a.detector == "governance").collect();
    governance
        .sort_by(|a, b| (b.severity, &a.finding, &a.credential_id).cmp(&(a.severity, &b.finding, &b.credential_id)));
    findings(s, "Governance findings", "governance", &governance);

    let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
    for a in &r.alerts {
        if let Some(why) = &a.suppressed {
            *reasons.entry(why).or_default() += 1;
        }
    }
    let total: usize = reasons.values().sum();
    let _ = writeln!(s, "<h3>Suppressed alerts: {total}</h3>");
    if !reasons.is_empty() {
        s.push_str("<table id=\"suppressed\"><tr><th>reason</th><th>alerts</th></tr>\n");
        for (why, n) in &reasons {
            let _ = writeln!(s, "<tr><td>{}</td><td>{n}</td></tr>", esc(why));
        }
        s.push_str("</table>\n");
    }

    s.push_str("<h3>Baselines</h3>\n<table id=\"baselines\"><tr><th>day</th><th>judged against</th></tr>\n");
    for (day, v) in &r.baselines {
        let v = match v {
            Some(until) => format!("baseline until={}", esc(until)),
            None => "no baseline (cold start)".into(),
        };
        let _ = writeln!(s, "<tr><td>{}</td><td>{v}</td></tr>", esc(day));
    }
    s.push_str("</table>\n</section>\n");
}

fn findings(s: &mut String, title: &str, id: &str, alerts: &[&Alert]) {
    let _ = writeln!(s, "<h3>{title}: {}</h3>", alerts.len());
    if alerts.is_empty() {
        return;
    }
    let _ =
        writeln!(s, "<table id=\"{id}\"><tr><th>severity</th><th>finding</th><th>credential</th><th>detail</th></tr>");
    for a in alerts {
        // A fleet finding's credentials are its members, listed in `observed`.
        let credentials = if a.credential_id == FLEET { &a.observed } else { &a.credential_id };
        let _ = writeln!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            severity(a.severity),
            esc(&a.finding),
            esc(credentials),
            esc(&a.explanation)
        );
    }
    s.push_str("</table>\n");
}

fn incident(s: &mut String, inc: &IncidentPage) {
    let alerts: Vec<&Alert> = inc.alerts.iter().map(|p| &p.alert).collect();
    let sev = alerts.iter().map(|a| a.severity).max().unwrap_or(Severity::Low);
    let start = alerts.iter().map(|a| a.window_start_ms).min().unwrap_or(0);
    let end = alerts.iter().map(|a| a.window_end_ms).max().unwrap_or(0);
    let first = alerts.first().copied();
    let who = first.map_or(String::new(), |a| match &a.principal {
        Some(p) => format!("{} ({})", esc(&a.credential_id), esc(p)),
        None => esc(&a.credential_id),
    });
    let _ = write!(
        s,
        "<section class=\"incident\" id=\"{}\" data-severity=\"{}\">\n<h2>{} {who}</h2>\n<p>{} → {} (UTC), incident <code>{}</code></p>\n",
        esc(&inc.id),
        sev.as_str(),
        severity(sev),
        esc(&format_ms(start)),
        esc(&format_ms(end)),
        esc(&inc.id)
    );
    for p in &inc.alerts {
        alert_block(s, p);
    }
    if !inc.strips.is_empty() {
        s.push_str("<h3>Activity of the last 14 days</h3>\n");
    }
    for st in &inc.strips {
        let _ = writeln!(
            s,
            "<div class=\"strip\">{}<span>{}: {} request(s) from {} to {}, per day</span></div>",
            st.svg,
            esc(&st.credential),
            super::chart::short_number(st.requests),
            esc(&st.from),
            esc(&st.to)
        );
    }
    s.push_str("</section>\n");
}

fn alert_block(s: &mut String, p: &AlertPage) {
    let a = &p.alert;
    let _ = write!(
        s,
        "<article class=\"alert\" id=\"{}\">\n<h3>{} {}: {}</h3>\n<p class=\"explanation\">{}</p>\n\
         <p>observed: {}<br>baseline: {}</p>\n",
        esc(&a.alert_id),
        severity(a.severity),
        esc(&a.detector),
        esc(&a.finding),
        esc(&a.explanation),
        esc(&a.observed),
        esc(&a.baseline)
    );
    for (caption, svg) in &p.charts {
        // The SVG is the chart module's, its text escaped by the backend.
        let _ = writeln!(s, "<figure class=\"chart\">{svg}<figcaption>{}</figcaption></figure>", esc(caption));
    }
    if let [head, rows @ ..] = p.rows.as_slice() {
        s.push_str("<table class=\"rows\"><tr>");
        for h in head {
            let _ = write!(s, "<th>{}</th>", esc(h));
        }
        s.push_str("</tr>\n");
        for r in rows {
            table_row(s, r);
        }
        s.push_str("</table>\n");
    }
    evidence(s, &p.evidence);
    links(s, a);
    let _ = write!(
        s,
        "<p>To silence this as known-good, add to a suppression file (<code>--suppress FILE</code>):</p>\n<pre class=\"rule\">{}</pre>\n</article>\n",
        esc(&suppression_rule(a))
    );
}

fn table_row(s: &mut String, cells: &[String]) {
    s.push_str("<tr>");
    for c in cells {
        let _ = write!(s, "<td>{}</td>", esc(c));
    }
    s.push_str("</tr>\n");
}

fn evidence(s: &mut String, e: &Evidence) {
    if !e.rows.is_empty() {
        s.push_str("<table class=\"evidence\"><tr>");
        for c in &e.columns {
            let _ = write!(s, "<th>{c}</th>");
        }
        s.push_str("</tr>\n");
        for r in &e.rows {
            table_row(s, r);
        }
        s.push_str("</table>\n");
    }
    if e.more > 0 {
        let _ = writeln!(
            s,
            "<p class=\"more\">+{} more evidence event(s); every event of the window: <code>credtrail sql -c {}</code></p>",
            e.more,
            esc(&shell_word(&e.sql))
        );
    }
}

/// `s` as one POSIX shell word: in double quotes when nothing in it is
/// special there (the readable form of SQL), else in single quotes.
fn shell_word(s: &str) -> String {
    if s.contains(['"', '$', '`', '\\', '!']) { format!("'{}'", s.replace('\'', r"'\''")) } else { format!("\"{s}\"") }
}

/// ATT&CK and OWASP NHI links of an alert, when its labels name them.
fn links(s: &mut String, a: &Alert) {
    let mut out = Vec::new();
    if let Some(m) = &a.mitre_attack {
        match attack_url(m) {
            Some(url) => out.push(format!("ATT&amp;CK <a href=\"{}\">{}</a>", esc(&url), esc(m))),
            None => out.push(format!("ATT&amp;CK {}", esc(m))),
        }
    }
    if let Some(o) = &a.owasp_nhi {
        match owasp_url(o) {
            Some(url) => out.push(format!("OWASP <a href=\"{}\">{}</a>", esc(&url), esc(o))),
            None => out.push(format!("OWASP {}", esc(o))),
        }
    }
    if !out.is_empty() {
        let _ = writeln!(s, "<p class=\"links\">{}</p>", out.join(" · "));
    }
}

/// `T1078.004 Valid Accounts…` → its page on attack.mitre.org.
fn attack_url(label: &str) -> Option<String> {
    let id = label.split_whitespace().next()?;
    let (tech, sub) = id.split_once('.').map_or((id, None), |(t, s)| (t, Some(s)));
    let digits = |d: &str, n: usize| d.len() == n && d.bytes().all(|b| b.is_ascii_digit());
    if !(tech.len() == 5 && tech.starts_with('T') && digits(&tech[1..], 4) && sub.is_none_or(|s| digits(s, 3))) {
        return None;
    }
    Some(match sub {
        Some(sub) => format!("https://attack.mitre.org/techniques/{tech}/{sub}/"),
        None => format!("https://attack.mitre.org/techniques/{tech}/"),
    })
}

/// `NHI5:2025 Overprivileged NHI` → its page of the OWASP Non-Human Identities Top 10.
fn owasp_url(label: &str) -> Option<String> {
    let (id, name) = label.split_once(' ')?;
    let (n, year) = id.strip_prefix("NHI")?.split_once(':')?;
    if !(n.bytes().all(|b| b.is_ascii_digit()) && year.len() == 4 && year.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    let slug: String = name
        .to_ascii_lowercase()
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    Some(format!("https://owasp.org/www-project-non-human-identities-top-10/{year}/{n}-{slug}/"))
}

#[derive(Serialize)]
struct RuleFile {
    suppress: Vec<Rule>,
}

/// A suppression rule in the format `--suppress` reads (see `suppress`).
#[derive(Serialize)]
struct Rule {
    credential: String,
    detector: String,
    finding: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource: Option<String>,
    reason: String,
    expires: String,
}

/// A ready-to-copy rule silencing alerts like `a` for 30 days after it.
pub fn suppression_rule(a: &Alert) -> String {
    let rule = Rule {
        credential: a.credential_id.clone(),
        detector: a.detector.clone(),
        finding: a.finding.clone(),
        resource: a.subject.clone(),
        reason: "say why this is known to be good (ticket, owner)".into(),
        expires: day_of(a.window_end_ms + 30 * DAY_MS),
    };
    toml::to_string(&RuleFile { suppress: vec![rule] }).unwrap_or_default()
}

/// Incidents past [`MAX_DETAILED`]: listed, without charts.
fn rest(s: &mut String, r: &Report) {
    let active: Vec<Alert> = r.alerts.iter().filter(|a| a.suppressed.is_none()).cloned().collect();
    let incidents = alert::incidents(&active);
    if incidents.len() <= MAX_DETAILED {
        return;
    }
    let _ = write!(
        s,
        "<section id=\"more-incidents\">\n<h2>{} more incident(s)</h2>\n<p>Shown without charts to keep the page small; \
         <code>credtrail report --date D</code> on one of their days draws them.</p>\n<table><tr><th>severity</th>\
         <th>credential</th><th>start (UTC)</th><th>what happened</th></tr>\n",
        incidents.len() - MAX_DETAILED
    );
    for i in &incidents[MAX_DETAILED..] {
        let what: Vec<String> = i.alerts.iter().map(|a| format!("[{}] {}", a.detector, a.explanation)).collect();
        let _ = writeln!(
            s,
            "<tr id=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(i.id),
            severity(i.severity()),
            esc(&i.alerts[0].credential_id),
            esc(&format_ms(i.start())),
            esc(&what.join("\n"))
        );
    }
    s.push_str("</table>\n</section>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A day of 1,000 incidents: the first [`MAX_DETAILED`] drawn in full
    /// (two charts, a strip and a full evidence table each), the rest listed.
    #[test]
    fn a_thousand_alert_day_stays_a_few_megabytes() {
        use super::super::chart::{Band, Chart, Kind, Series, TimeAxis, svg};
        use super::super::{EVIDENCE_ROWS, Strip};
        let alerts: Vec<Alert> = (0..1000)
            .map(|i| {
                let mut a = crate::alert::tests::alert();
                a.alert_id = format!("ct-{i:04}");
                a.credential_id = format!("key_{i:04}");
                a.incident_id = Some(format!("inc-{i:04}"));
                a.explanation = "a sentence of what happened and what it was compared with ".repeat(4);
                a
            })
            .collect();
        let hours = (0..24).map(|h| (h * 3_600_000, (h * h * 1000) as f64)).collect();
        let chart = Chart {
            title: "tokens per hour".into(),
            y_label: "tokens".into(),
            x: (0, 24 * 3_600_000),
            axis: TimeAxis::Hours,
            series: vec![Series { label: "tokens".into(), kind: Kind::Line, points: hours }],
            band: Some(Band { label: "band".into(), slots: (0..24).map(|h| (h * 3_600_000, 10.0, 100.0)).collect() }),
            rules: vec![("median".into(), 50.0), ("p99".into(), 500.0)],
            marks: Vec::new(),
            log_y: true,
        };
        let chart = svg(&chart, (720, 260)).unwrap();
        let detailed = alert::incidents(&alerts)
            .iter()
            .take(MAX_DETAILED)
            .map(|i| IncidentPage {
                id: i.id.to_string(),
                alerts: i
                    .alerts
                    .iter()
                    .map(|a| AlertPage {
                        alert: (*a).clone(),
                        charts: vec![("caption".into(), chart.clone()); 2],
                        rows: Vec::new(),
                        evidence: Evidence {
                            columns: super::super::EVIDENCE_COLUMNS.to_vec(),
                            rows: vec![vec!["2026-11-05T09:23:48.134Z".to_string(); 12]; EVIDENCE_ROWS],
                            more: 40,
                            sql: "SELECT * FROM events".into(),
                        },
                    })
                    .collect(),
                strips: vec![Strip {
                    credential: i.alerts[0].credential_id.clone(),
                    svg: chart.clone(),
                    requests: 1.0,
                    from: "2026-10-23".into(),
                    to: "2026-11-05".into(),
                }],
            })
            .collect();
        let day = "2026-11-05".to_string();
        let r = Report {
            from: day.clone(),
            to: day.clone(),
            span: (day.clone(), day.clone()),
            baselines: vec![(day, None)],
            alerts,
            detailed,
        };
        let html = render(&r);
        assert!(html.len() < 5_000_000, "{} bytes", html.len());
        assert_eq!(html.matches("<section class=\"incident\"").count(), MAX_DETAILED);
        assert!(html.contains(&format!("{} more incident(s)", 1000 - MAX_DETAILED)));
        assert!(html.contains("+40 more evidence event(s)"));
    }

    #[test]
    fn escapes_text_and_attributes() {
        assert_eq!(esc("<script>alert('x')</script>"), "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;");
        assert_eq!(esc("a\"b&c"), "a&quot;b&amp;c");
    }

    #[test]
    fn technique_links() {
        assert_eq!(
            attack_url("T1078.004 Valid Accounts: Cloud Accounts").as_deref(),
            Some("https://attack.mitre.org/techniques/T1078/004/")
        );
        assert_eq!(attack_url("T1110 Brute Force").as_deref(), Some("https://attack.mitre.org/techniques/T1110/"));
        assert_eq!(attack_url("javascript:alert(1)"), None);
        assert_eq!(
            owasp_url("NHI5:2025 Overprivileged NHI").as_deref(),
            Some("https://owasp.org/www-project-non-human-identities-top-10/2025/5-overprivileged-nhi/")
        );
        assert_eq!(owasp_url("whatever"), None);
    }

    #[test]
    fn suppression_rule_parses_back_and_covers_its_alert() {
        let mut a = crate::alert::tests::alert();
        a.credential_id = "key_\"quoted\"".into();
        a.subject = Some("s3://b/<x>".into());
        let text = suppression_rule(&a);
        let rules = crate::suppress::Suppressions::parse(&text, std::path::Path::new("r.toml")).unwrap();
        let mut alerts = vec![a];
        assert_eq!(rules.apply(&mut alerts), 1, "{text}");
    }
}
