//! Retry storms: minutes in which a credential's failures (401/403, 429,
//! 5xx) are far more than its baseline error rate allows. The count in a
//! minute is judged by its Poisson tail probability under the credential's
//! usual errors per minute, above a minimum burst and above its own usual
//! bursts; neighbouring minutes join into one storm, typed by what failed.

use arrow::array::RecordBatch;
use statrs::distribution::{DiscreteCDF, Poisson};

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
    for r in columns::rows::<MinuteRow>(batches, q)? {
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
    minutes.sort_by(|a, b| (&a.cred, a.minute).cmp(&(&b.cred, b.minute)));

    let mut out = Vec::new();
    let mut run: Vec<&Minute> = Vec::new();
    let flush = |run: &mut Vec<&Minute>, out: &mut Vec<Alert>| {
        if let Some(a) = storm_of(run, cx) {
            out.push(a);
        }
        run.clear();
    };
    for m in &minutes {
        if let Some(last) = run.last()
            && (last.cred != m.cred || m.minute - last.minute > GAP_MINUTES * MINUTE_MS)
        {
            flush(&mut run, &mut out);
        }
        run.push(m);
    }
    flush(&mut run, &mut out);
    Ok(out)
}

/// The baseline a credential's minutes are judged by: (errors per minute,
/// least count that can fire, whether it was learned).
fn expectation(cx: &Context<'_>, cred: &str) -> (f64, f64, bool) {
    let base = cx.baseline.and_then(|b| b.credentials.get(cred));
    let learned = base.is_some_and(|b| !b.cold_start);
    (usual_rate(base), least_burst(base), learned)
}

/// The failures per minute a credential with this baseline usually has.
pub fn usual_rate(base: Option<&CredentialBaseline>) -> f64 {
    match base.filter(|b| !b.cold_start) {
        Some(b) => (b.errors_per_hour.mean / 60.0).max(MIN_RATE),
        None => COLD_RATE,
    }
}

/// The fewest failures in one minute that can fire a storm for a credential
/// with this baseline: no storm alert without such a minute.
pub fn least_burst(base: Option<&CredentialBaseline>) -> f64 {
    match base.filter(|b| !b.cold_start) {
        Some(b) => MIN_BURST.max(2.0 * b.error_minute_p99),
        None => MIN_BURST,
    }
}

/// An alert for a run of busy minutes, if any minute in it is improbable.
fn storm_of(run: &[&Minute], cx: &Context<'_>) -> Option<Alert> {
    let first = *run.first()?;
    let cred = first.cred.as_str();
    let (lambda, least, learned) = expectation(cx, cred);
    let fired: Vec<(&Minute, f64)> = run
        .iter()
        .map(|m| (*m, surprise(m.errors, lambda)))
        .filter(|(m, s)| m.errors >= least && *s >= -MAX_TAIL.log10())
        .collect();
    let (peak, peak_surprise) = fired.iter().max_by(|a, b| a.0.errors.total_cmp(&b.0.errors)).copied()?;

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
    let mapped = cx.rule.mapped(finding, None);
    let set = |f: fn(&Minute) -> &Vec<String>| super::union(run.iter().map(|m| f(m)));
    let (ips, codes) = (set(|m| &m.ips), set(|m| &m.codes));
    let minutes = ((run.last()?.minute - first.minute) / MINUTE_MS + 1) as usize;
    let p = if peak_surprise >= 300.0 { "< 1e-300".to_string() } else { format!("1e-{peak_surprise:.0}") };
    let baseline = if learned {
        format!(
            "usually {lambda:.2} failures per minute (Poisson); bursts up to {least:.0} per minute are normal for it"
        )
    } else {
        format!("no baseline yet (cold start): assumed {lambda:.1} failures per minute, at least {least:.0} to alert")
    };
    let explanation = format!(
        "{cred} had {total:.0} failed requests in {minutes} minute(s) (peak {:.0} in one minute, P = {p} at its usual \
         {lambda:.2}/minute) — {what}; codes {} from {}",
        peak.errors,
        codes.iter().take(4).cloned().collect::<Vec<_>>().join(", "),
        ips.iter().take(3).cloned().collect::<Vec<_>>().join(", "),
    );
    let severity = match finding {
        "auth_failures" => grade(peak.errors, (0.0, 50.0, 1000.0)).max(Severity::Medium),
        _ => grade(peak.errors, (0.0, 100.0, 2000.0)).max(Severity::Medium),
    };
    Some(Alert {
        alert_id: alert::alert_id(&cx.rule.family, cred, finding, first.minute),
        detector: cx.rule.family.clone(),
        finding: finding.to_string(),
        severity,
        score: peak_surprise,
        credential_id: cred.to_string(),
        principal: first.principal.clone(),
        window_start_ms: run.iter().map(|m| m.first).min()?,
        window_end_ms: run.iter().map(|m| m.last).max()?,
        explanation,
        observed: format!(
            "{total:.0} failures in {minutes} minute(s): {auth:.0} × 401/403, {throttled:.0} × 429, {server:.0} × 5xx; peak {:.0}/minute",
            peak.errors
        ),
        baseline,
        evidence: run.iter().flat_map(|m| m.evidence.iter().cloned()).take(MAX_EVIDENCE).collect(),
        evidence_count: total as u64,
        mitre_attack: mapped.mitre(),
        owasp_nhi: mapped.owasp(),
        subject: codes.first().cloned(),
        incident_id: None,
        suppressed: None,
    })
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
}
