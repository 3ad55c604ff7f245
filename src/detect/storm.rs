//! Retry storms: minutes in which a credential's failures (401/403, 429,
//! 5xx) are far more than its baseline error rate allows. The count in a
//! minute is judged by its Poisson tail probability under the credential's
//! usual errors per minute, above a minimum burst and above its own usual
//! bursts; neighbouring minutes join into one storm, typed by what failed.
//!
//! A storm paced to stay under the per-minute bar (key guessing at a few
//! requests a minute, a slow retry loop) is judged over a longer window too:
//! [`SUSTAINED_MINUTES`] of failures against the credential's usual rate, or
//! its peers' or the fleet's when its own history is thin (`sustained`).
//!
//! A credential with thin history (cold start) is judged, bursts and
//! sustained storms alike, by its peers' usual failures, else the fleet's
//! ([`peers::stand_in`]); only without either by assumed rates.

use arrow::array::RecordBatch;
use statrs::distribution::{DiscreteCDF, Poisson};

use super::peers;
use super::{Context, DetectError, grade};
use crate::alert::{self, Alert, MAX_EVIDENCE, Severity};
use crate::baseline::CredentialBaseline;
use crate::columns;

const MINUTE_MS: i64 = 60_000;
/// Fewer failures than this in a minute is never a storm.
const MIN_BURST: f64 = 20.0;
/// A minute fires when its count is less likely than this under the baseline.
const MAX_TAIL: f64 = 1e-6;
/// Errors per minute assumed for credentials without a usable baseline, and
/// the least assumed for any (so a spotless key is not infinitely surprised).
const COLD_RATE: f64 = 0.2;
const MIN_RATE: f64 = 0.05;
/// Minutes of quiet that end a storm.
const GAP_MINUTES: i64 = 2;
/// Minutes with fewer failures than this are no part of a burst (they still
/// count towards a sustained storm).
const BUSY_MINUTE: f64 = 5.0;
/// The window a sustained storm is judged over, in minutes…
pub const SUSTAINED_MINUTES: i64 = 10;
/// …and the fewest failures in it that can make one.
const MIN_SUSTAINED: f64 = 40.0;

struct Minute {
    cred: String,
    principal: Option<String>,
    minute: i64,
    errors: f64,
    auth: f64,
    throttled: f64,
    server: f64,
    ips: Vec<String>,
    codes: Vec<String>,
    evidence: Vec<String>,
    first: i64,
    last: i64,
}

/// `-log10 P(X ≥ k)` for X ~ Poisson(λ), capped where f64 runs out.
pub(crate) fn surprise(k: f64, lambda: f64) -> f64 {
    let Ok(p) = Poisson::new(lambda) else { return 0.0 };
    if k < 1.0 {
        return 0.0;
    }
    let tail = p.sf(k as u64 - 1);
    if tail <= 0.0 { 300.0 } else { (-tail.log10()).min(300.0) }
}

columns::row! {
    /// One row of the per-minute error query.
    struct MinuteRow {
        credential_id: text,
        principal: text,
        minute: time,
        errors: float,
        auth_failures: float,
        throttled: float,
        server_errors: float,
        source_ips: texts,
        error_codes: texts,
        evidence: texts,
        first_ts: time,
        last_ts: time,
    }
}

pub(super) fn score(cx: &Context<'_>, q: &str, batches: &[RecordBatch]) -> Result<Vec<Alert>, DetectError> {
    let mut minutes = Vec::new();
    for r in columns::rows::<MinuteRow>(batches, q) {
        let r = r?;
        let (Some(cred), Some(m)) = (r.credential_id, r.minute) else { continue };
        minutes.push(Minute {
            cred,
            principal: r.principal,
            minute: m,
            errors: r.errors.unwrap_or(0.0),
            auth: r.auth_failures.unwrap_or(0.0),
            throttled: r.throttled.unwrap_or(0.0),
            server: r.server_errors.unwrap_or(0.0),
            ips: r.source_ips,
            codes: r.error_codes,
            evidence: r.evidence,
            first: r.first_ts.unwrap_or(m),
            last: r.last_ts.unwrap_or(m),
        });
    }
    Ok(judge(cx, minutes))
}

/// Storms among the minutes of any credentials: per credential, its bursts,
/// then the sustained storms no burst covers.
fn judge(cx: &Context<'_>, mut minutes: Vec<Minute>) -> Vec<Alert> {
    minutes.sort_by(|a, b| (&a.cred, a.minute).cmp(&(&b.cred, b.minute)));
    let mut out = Vec::new();
    for own in minutes.chunk_by(|a, b| a.cred == b.cred) {
        let bursts = bursts(cx, own);
        let sustained = sustained(cx, own, &bursts);
        out.extend(bursts);
        out.extend(sustained);
    }
    out
}

/// Runs of busy minutes (neighbours within [`GAP_MINUTES`]) with an improbable minute.
fn bursts(cx: &Context<'_>, own: &[Minute]) -> Vec<Alert> {
    let mut out = Vec::new();
    let mut run: Vec<&Minute> = Vec::new();
    for m in own.iter().filter(|m| m.errors >= BUSY_MINUTE) {
        if let Some(last) = run.last()
            && m.minute - last.minute > GAP_MINUTES * MINUTE_MS
        {
            out.extend(storm_of(&run, cx));
            run.clear();
        }
        run.push(m);
    }
    out.extend(storm_of(&run, cx));
    out
}

/// The failures per minute a credential with this baseline usually has.
pub fn usual_rate(base: Option<&CredentialBaseline>) -> f64 {
    match base.filter(|b| !b.cold_start) {
        Some(b) => own_rate(b),
        None => COLD_RATE,
    }
}

/// A learned credential's usual failures per minute.
fn own_rate(b: &CredentialBaseline) -> f64 {
    (b.errors_per_hour.mean / 60.0).max(MIN_RATE)
}

/// The fewest failures in one minute that can fire a storm for a credential
/// with this baseline: no burst alert without such a minute.
pub fn least_burst(base: Option<&CredentialBaseline>) -> f64 {
    match base.filter(|b| !b.cold_start) {
        Some(b) => MIN_BURST.max(2.0 * b.error_minute_p99),
        None => MIN_BURST,
    }
}

/// The fewest failures in one [`SUSTAINED_MINUTES`] window that can fire a
/// sustained storm: more than its busiest normal hour (p99) ever held, and
/// never fewer than [`MIN_SUSTAINED`]. A window spans at most two fixed
/// windows, so no sustained storm without a fixed window of half this.
pub fn least_sustained(base: Option<&CredentialBaseline>) -> f64 {
    match base.filter(|b| !b.cold_start) {
        Some(b) => MIN_SUSTAINED.max(b.errors_per_hour.p99),
        None => MIN_SUSTAINED,
    }
}

/// What a credential's failures are compared with: its own learned
/// baseline, or with thin history its peers' or else the fleet's stand-in
/// ([`peers::stand_in`]), else assumed rates.
struct Level {
    /// The baseline the rates come from; none for the assumed ones.
    base: Option<CredentialBaseline>,
    /// Whose rates, for the alert; empty for the credential's own.
    who: Option<String>,
}

impl Level {
    fn of(cx: &Context<'_>, cred: &str, principal: Option<&str>) -> Level {
        let Some(b) = cx.baseline else { return Level { base: None, who: None } };
        if let Some(own) = b.credentials.get(cred).filter(|c| !c.cold_start) {
            return Level { base: Some(own.clone()), who: None };
        }
        match peers::stand_in(b, cx.inventory, cred, principal) {
            Some(s) => Level { base: Some(s.base), who: Some(s.level) },
            None => Level { base: None, who: None },
        }
    }

    fn per_minute(&self) -> f64 {
        usual_rate(self.base.as_ref())
    }

    /// Whose rate it is, as a sustained storm's text names it.
    fn rate_of(&self) -> String {
        match (&self.base, &self.who) {
            (_, Some(who)) => format!("the median of {who}"),
            (Some(_), None) => "its own usual".into(),
            (None, None) => "an assumed (no history)".into(),
        }
    }
}

/// Sustained storms: windows of [`SUSTAINED_MINUTES`] whose failures are
/// improbable under the credential's level ([`Level`]) and at least
/// [`least_sustained`], though perhaps no single minute is — a retry loop
/// or key guessing paced to stay under a per-minute threshold. Overlapping
/// firing windows make one storm; one that a burst covers is that burst.
fn sustained(cx: &Context<'_>, own: &[Minute], bursts: &[Alert]) -> Vec<Alert> {
    let Some(first) = own.first() else { return Vec::new() };
    let level = Level::of(cx, &first.cred, first.principal.as_deref());
    let least = least_sustained(level.base.as_ref());
    let lambda = level.per_minute() * SUSTAINED_MINUTES as f64;
    let window_ms = SUSTAINED_MINUTES * MINUTE_MS;
    // Spans of minutes (first and last index) covered by firing windows, with the peak window.
    let mut spans: Vec<(usize, usize, f64, f64)> = Vec::new();
    let (mut end, mut count) = (0, 0.0);
    for (i, m) in own.iter().enumerate() {
        // The busiest windows start at a failing minute: the window [m, m + window).
        while end < own.len() && own[end].minute < m.minute + window_ms {
            count += own[end].errors;
            end += 1;
        }
        let s = surprise(count, lambda);
        if count >= least && s >= -MAX_TAIL.log10() {
            match spans.last_mut() {
                Some(span) if m.minute - own[span.1].minute <= GAP_MINUTES * MINUTE_MS => {
                    span.1 = end - 1;
                    if count > span.2 {
                        (span.2, span.3) = (count, s);
                    }
                }
                _ => spans.push((i, end - 1, count, s)),
            }
        }
        count -= m.errors;
    }
    let mut out = Vec::new();
    for (a, b, peak, peak_surprise) in spans {
        let run: Vec<&Minute> = own[a..=b].iter().collect();
        let (from, to) = (run.iter().map(|m| m.first).min(), run.iter().map(|m| m.last).max());
        let (Some(from), Some(to)) = (from, to) else { continue };
        if bursts.iter().any(|x| x.window_start_ms <= to && from <= x.window_end_ms) {
            continue;
        }
        let sum = Summary::of(&run);
        let busiest = run.iter().map(|m| m.errors).fold(0.0, f64::max);
        let explanation = format!(
            "{} had {:.0} failed requests over {} minute(s), never more than {busiest:.0} in one minute but {peak:.0} \
             within {SUSTAINED_MINUTES} minutes (P = {} at {} {lambda:.1} per {SUSTAINED_MINUTES} minutes) — a \
             sustained storm paced under the per-minute bar, {}",
            first.cred,
            sum.total,
            sum.minutes,
            p_text(peak_surprise),
            level.rate_of(),
            sum.what_and_where(),
        );
        let baseline = format!(
            "{SUSTAINED_MINUTES}-minute window vs {} {:.2} failures per minute (Poisson); at least {least:.0} \
             failures in {SUSTAINED_MINUTES} minutes to alert",
            level.rate_of(),
            level.per_minute()
        );
        let observed = format!("{}; peak {peak:.0} in {SUSTAINED_MINUTES} minutes, {busiest:.0}/minute", sum.counts());
        out.push(sum.alert(cx, &run, Severity::Medium, peak_surprise, explanation, observed, baseline));
    }
    out
}

fn p_text(surprise: f64) -> String {
    if surprise >= 300.0 { "< 1e-300".to_string() } else { format!("1e-{surprise:.0}") }
}

/// What failed in a run of minutes, and where from.
struct Summary {
    total: f64,
    auth: f64,
    throttled: f64,
    server: f64,
    finding: &'static str,
    what: &'static str,
    ips: Vec<String>,
    codes: Vec<String>,
    minutes: usize,
}

impl Summary {
    fn of(run: &[&Minute]) -> Summary {
        let sum = |f: fn(&Minute) -> f64| run.iter().map(|m| f(m)).sum::<f64>();
        let (total, auth, throttled, server) =
            (sum(|m| m.errors), sum(|m| m.auth), sum(|m| m.throttled), sum(|m| m.server));
        let (finding, what) = if auth >= throttled && auth >= server {
            (
                "auth_failures",
                "401/403 failures: key guessing, or an invalid, revoked or under-privileged key being hammered",
            )
        } else if throttled >= server {
            ("throttling", "429 throttling: rate hammering (a runaway retry loop or abuse of the key)")
        } else {
            ("server_errors", "5xx failures amplified by retries")
        };
        let set = |f: fn(&Minute) -> &Vec<String>| super::union(run.iter().map(|m| f(m)));
        let minutes = match (run.first(), run.last()) {
            (Some(a), Some(z)) => ((z.minute - a.minute) / MINUTE_MS + 1) as usize,
            _ => 0,
        };
        Summary {
            total,
            auth,
            throttled,
            server,
            finding,
            what,
            ips: set(|m| &m.ips),
            codes: set(|m| &m.codes),
            minutes,
        }
    }

    /// `— what failed; codes … from …`, the tail of an explanation.
    fn what_and_where(&self) -> String {
        format!(
            "{}; codes {} from {}",
            self.what,
            self.codes.iter().take(4).cloned().collect::<Vec<_>>().join(", "),
            self.ips.iter().take(3).cloned().collect::<Vec<_>>().join(", "),
        )
    }

    fn counts(&self) -> String {
        format!(
            "{:.0} failures in {} minute(s): {:.0} × 401/403, {:.0} × 429, {:.0} × 5xx",
            self.total, self.minutes, self.auth, self.throttled, self.server
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn alert(
        &self,
        cx: &Context<'_>,
        run: &[&Minute],
        severity: Severity,
        score: f64,
        explanation: String,
        observed: String,
        baseline: String,
    ) -> Alert {
        let first = run[0];
        let cred = first.cred.as_str();
        let mapped = cx.rule.mapped(self.finding, None);
        Alert {
            alert_id: alert::alert_id(&cx.rule.family, cred, self.finding, first.minute),
            detector: cx.rule.family.clone(),
            finding: self.finding.to_string(),
            severity,
            score,
            credential_id: cred.to_string(),
            principal: first.principal.clone(),
            window_start_ms: run.iter().map(|m| m.first).min().unwrap_or(first.minute),
            window_end_ms: run.iter().map(|m| m.last).max().unwrap_or(first.minute),
            explanation,
            observed,
            baseline,
            evidence: run.iter().flat_map(|m| m.evidence.iter().cloned()).take(MAX_EVIDENCE).collect(),
            evidence_count: self.total as u64,
            mitre_attack: mapped.mitre(),
            owasp_nhi: mapped.owasp(),
            subject: self.codes.first().cloned(),
            incident_id: None,
            suppressed: None,
        }
    }
}

/// An alert for a run of busy minutes, if any minute in it is improbable.
fn storm_of(run: &[&Minute], cx: &Context<'_>) -> Option<Alert> {
    let first = *run.first()?;
    let cred = first.cred.as_str();
    let level = Level::of(cx, cred, first.principal.as_deref());
    let (lambda, least) = (level.per_minute(), least_burst(level.base.as_ref()));
    let fired: Vec<(&Minute, f64)> = run
        .iter()
        .map(|m| (*m, surprise(m.errors, lambda)))
        .filter(|(m, s)| m.errors >= least && *s >= -MAX_TAIL.log10())
        .collect();
    let (peak, peak_surprise) = fired.iter().max_by(|a, b| a.0.errors.total_cmp(&b.0.errors)).copied()?;
    let sum = Summary::of(run);
    let baseline = match (&level.base, &level.who) {
        (Some(_), None) => format!(
            "usually {lambda:.2} failures per minute (Poisson); bursts up to {least:.0} per minute are normal for it"
        ),
        (_, Some(who)) => format!(
            "too little history of its own (cold start), judged by {who}: usually {lambda:.2} failures per minute \
             (Poisson, the median of theirs); bursts up to {least:.0} per minute are normal for them"
        ),
        (None, None) => format!(
            "no baseline yet (cold start): assumed {lambda:.1} failures per minute, at least {least:.0} to alert"
        ),
    };
    let usual = match &level.who {
        Some(who) => format!("the usual {lambda:.2}/minute of {who}"),
        None => format!("its usual {lambda:.2}/minute"),
    };
    let explanation = format!(
        "{cred} had {:.0} failed requests in {} minute(s) (peak {:.0} in one minute, P = {} at {usual}) — {}",
        sum.total,
        sum.minutes,
        peak.errors,
        p_text(peak_surprise),
        sum.what_and_where(),
    );
    let severity = match sum.finding {
        "auth_failures" => grade(peak.errors, (0.0, 50.0, 1000.0)).max(Severity::Medium),
        _ => grade(peak.errors, (0.0, 100.0, 2000.0)).max(Severity::Medium),
    };
    let observed = format!("{}; peak {:.0}/minute", sum.counts(), peak.errors);
    Some(sum.alert(cx, run, severity, peak_surprise, explanation, observed, baseline))
}

/// The storm alerts of one credential's failures per minute (minute start,
/// failures), as `score` judges the query's rows: for tests of the gates
/// that stand in front of it.
#[cfg(test)]
pub(crate) fn alerts_for(base: Option<&crate::baseline::Baseline>, cred: &str, counts: &[(i64, f64)]) -> Vec<Alert> {
    let categories = super::ToolCategories::builtin();
    let cx = Context {
        baseline: base,
        categories: &categories,
        inventory: None,
        rule: super::builtin_rule("retry_storm"),
        chaining: Default::default(),
        api_risk: super::ApiRisk::builtin(),
    };
    let minutes = counts
        .iter()
        .map(|&(minute, errors)| Minute {
            cred: cred.into(),
            principal: None,
            minute,
            errors,
            auth: errors,
            throttled: 0.0,
            server: 0.0,
            ips: vec![],
            codes: vec![],
            evidence: vec![],
            first: minute,
            last: minute + MINUTE_MS - 1,
        })
        .collect();
    judge(&cx, minutes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_tail() {
        assert_eq!(surprise(0.0, 1.0), 0.0);
        // P(X ≥ 1) for λ = 1 is 1 - e^-1.
        assert!((surprise(1.0, 1.0) - (-(1.0 - (-1.0f64).exp()).log10())).abs() < 1e-9);
        assert!(surprise(20.0, 0.2) > 6.0, "20 failures at 0.2/min is a storm");
        assert!(surprise(8.0, 5.0) < 2.0, "8 at 5/min is ordinary");
        assert_eq!(surprise(5000.0, 0.05), 300.0);
    }

    const M: i64 = MINUTE_MS;

    #[test]
    fn a_storm_paced_under_the_minute_bar_is_judged_over_ten_minutes() {
        // 50 failures in 8 minutes, 6 or 7 a minute: no minute reaches 20.
        let slow: Vec<(i64, f64)> = (0..8).map(|i| (i * M, if i < 2 { 7.0 } else { 6.0 })).collect();
        let a = alerts_for(None, "k", &slow);
        assert_eq!(a.len(), 1, "{a:?}");
        assert!(a[0].explanation.contains("50 within 10 minutes"), "{}", a[0].explanation);
        assert!(a[0].baseline.starts_with("10-minute window vs an assumed"), "{}", a[0].baseline);
        assert_eq!((a[0].window_start_ms, a[0].evidence_count), (0, 50));
        // A few scattered failures an hour, and a short busy patch, stay quiet.
        let scattered: Vec<(i64, f64)> = (0..12).map(|i| (i * 5 * M, 3.0)).collect();
        assert!(alerts_for(None, "k", &scattered).is_empty());
        assert!(alerts_for(None, "k", &[(0, 8.0), (M, 8.0), (2 * M, 8.0), (3 * M, 8.0)]).is_empty(), "32 in 4 minutes");
    }

    #[test]
    fn a_burst_is_one_storm_and_a_noisy_key_needs_more() {
        // A burst inside a sustained run stays the burst's one alert.
        let mut counts: Vec<(i64, f64)> = (0..10).map(|i| (i * M, 6.0)).collect();
        counts[4].1 = 30.0;
        let a = alerts_for(None, "k", &counts);
        assert_eq!(a.len(), 1, "{a:?}");
        assert!(a[0].explanation.contains("peak 30 in one minute"), "{}", a[0].explanation);
        // A key that usually fails 6 times a minute: 60 in ten minutes is its normal.
        let mut b = crate::baseline::Baseline::default();
        let mut c = crate::baseline::CredentialBaseline {
            credential_id: "k".into(),
            days_seen: 7,
            requests: 10_000,
            errors_per_hour: crate::baseline::Stats { mean: 360.0, p99: 400.0, ..Default::default() },
            error_minute_p99: 10.0,
            ..Default::default()
        };
        b.credentials.insert("k".into(), c.clone());
        let steady: Vec<(i64, f64)> = (0..10).map(|i| (i * M, 6.0)).collect();
        assert!(alerts_for(Some(&b), "k", &steady).is_empty());
        // With thin history of its own, its peers' usual rate is the level.
        c.cold_start = true;
        b.credentials.insert("k".into(), c.clone());
        for p in ["k-1", "k-2"] {
            let mut peer = c.clone();
            (peer.credential_id, peer.cold_start) = (p.into(), false);
            (peer.errors_per_hour.mean, peer.errors_per_hour.p99) = (3.0, 10.0);
            b.credentials.insert(p.into(), peer);
        }
        let a = alerts_for(Some(&b), "k", &steady);
        assert_eq!(a.len(), 1, "{a:?}");
        assert!(a[0].baseline.contains("vs the median of peers (2 credentials of role k) 0.05"), "{}", a[0].baseline);
    }
}
