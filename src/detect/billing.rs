//! Billing spikes: credential-hours whose spend is far above the
//! credential's own baseline. An hour fires when it is both a robust outlier
//! (z over the median and MAD) and a multiple of the credential's busiest
//! normal hours (its 99th percentile, or the seasonal slot's high), with
//! floors so near-zero baselines do not fire on noise. A new model from a
//! new network on top of the volume is the LLMjacking signature.
//!
//! A credential with thin history (cold start) is judged the same way
//! against its peers' usual hours, else the fleet's ([`peers::stand_in`]):
//! the volume bar only, since everything is new to a new key. Without
//! either, the cold-start rules: an absolute floor, and far above its other
//! hours of the day.

use arrow::array::RecordBatch;

use super::{Context, DetectError, grade, peers};
use crate::alert::{self, Alert, MAX_EVIDENCE, Severity};
use crate::baseline::{Baseline, CredentialBaseline, ProfileSlot, Stats};
use crate::columns;
use crate::engine::udf::network_of;
use crate::time::HOUR_MS;

/// An hour must be this many times the credential's busiest normal hours…
const MIN_RATIO: f64 = 4.0;
/// …and this many robust standard deviations above its typical hour.
const MIN_Z: f64 = 8.0;
/// Spend from a network the credential never used needs less: this many
/// times its usual hour (the larger of its median and the seasonal slot's,
/// at least the "busiest hour" floor), and above its busiest normal hour.
const NEW_NETWORK_RATIO: f64 = 3.0;
/// Without usable history, an hour must pass an absolute floor and be this
/// many times the credential's typical hour of the same day.
pub const COLD_TOKENS: f64 = 1_000_000.0;
pub const COLD_COST: f64 = 20.0;
const COLD_RATIO: f64 = 10.0;

/// Floors for one metric: the smallest "busiest hour" and spread it is
/// compared with, so a key that usually spends nothing does not alert on a
/// few requests.
struct Metric {
    name: &'static str,
    high_floor: f64,
    spread_floor: f64,
    cold_floor: f64,
}

const TOKENS: Metric = Metric { name: "tokens", high_floor: 5_000.0, spread_floor: 1_000.0, cold_floor: COLD_TOKENS };
const COST: Metric = Metric { name: "cost", high_floor: 0.25, spread_floor: 0.05, cold_floor: COLD_COST };

struct Hour {
    cred: String,
    principal: Option<String>,
    hour: i64,
    tokens: f64,
    cost: f64,
    requests: i64,
    /// The credential's median hour of the day (tokens, cost).
    day_median: (f64, f64),
    first: i64,
    last: i64,
    new_models: Vec<String>,
    new_networks: Vec<String>,
    ips: Vec<String>,
    evidence: Vec<String>,
}

/// How one hour compares with the baseline, on the metric that stands out most.
#[derive(Debug, Clone, Copy)]
struct Verdict {
    metric: &'static str,
    observed: f64,
    typical: f64,
    high: f64,
    ratio: f64,
    z: f64,
    /// Fired only on a moderate excess over the usual hour from a new
    /// network (the ratio to that usual hour), not on the volume alone.
    new_network: Option<f64>,
}

fn judge(m: &Metric, x: f64, overall: &Stats, slot: Option<(f64, f64)>) -> Option<Verdict> {
    let (typical, slot_high) = slot.unwrap_or((overall.median, 0.0));
    let high = overall.p99.max(slot_high).max(m.high_floor);
    let spread = (1.4826 * overall.mad).max(0.1 * overall.p95).max(m.spread_floor);
    let (ratio, z) = (x / high, (x - typical) / spread);
    (ratio >= MIN_RATIO && z >= MIN_Z).then_some(Verdict {
        metric: m.name,
        observed: x,
        typical,
        high,
        ratio,
        z,
        new_network: None,
    })
}

/// A moderate excess — [`NEW_NETWORK_RATIO`] times the usual hour and more
/// than the busiest normal one — for an hour with spend from a network the
/// credential never used: a stranger spending on the key at a pace that
/// stays under the volume bar. (No robust z here: quiet nights spread a
/// day-time key's hours so wide that a z would hide such an hour.)
fn judge_new_network(m: &Metric, x: f64, overall: &Stats, slot: Option<(f64, f64)>) -> Option<Verdict> {
    let usual = overall.median.max(slot.map_or(0.0, |s| s.0)).max(m.high_floor);
    let high = overall.p99.max(slot.map_or(0.0, |s| s.1)).max(m.high_floor);
    let spread = (1.4826 * overall.mad).max(0.1 * overall.p95).max(m.spread_floor);
    let (times, z) = (x / usual, (x - usual) / spread);
    (times >= NEW_NETWORK_RATIO && x > high).then_some(Verdict {
        metric: m.name,
        observed: x,
        typical: usual,
        high,
        ratio: x / high,
        z,
        new_network: Some(times),
    })
}

/// The least spend (tokens, cost of successful requests) in one hour that
/// can fire for a credential with this baseline: an hour below both bars
/// never does. Which bar applies depends on the hour's callers, which
/// `watch`'s gate sees as the events arrive.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LeastSpend {
    /// Any hour: the volume bar, [`MIN_RATIO`] times the busiest normal
    /// hour (at least the floor). Without history, the volume bar over the
    /// smallest "busiest hour" a stand-in of its peers or the fleet may
    /// have, or the absolute floor when it can have none.
    pub any: (f64, f64),
    /// An hour with a request from a network the credential never used
    /// ([`new_network`]): a multiple of a usual hour of at least the floor,
    /// above the busiest normal hour. The same as `any` without learned
    /// history, which has no networks to be new against.
    pub new_network: (f64, f64),
}

/// The bars one hour of `cred` must reach to fire, by its callers.
pub fn least_spend(baseline: Option<&Baseline>, cred: &str) -> LeastSpend {
    let base = baseline.and_then(|b| b.credentials.get(cred));
    // `judge`'s and `judge_new_network`'s bars with the seasonal slot at its least (none).
    let volume = |m: &Metric, s: &Stats| MIN_RATIO * s.p99.max(m.high_floor);
    let new_network =
        |m: &Metric, s: &Stats| (NEW_NETWORK_RATIO * s.median.max(m.high_floor)).max(s.p99.max(m.high_floor));
    let without_history = |bar: (f64, f64)| LeastSpend { any: bar, new_network: bar };
    match base.filter(|b| !b.cold_start) {
        Some(b) => LeastSpend {
            any: (volume(&TOKENS, &b.tokens_per_hour), volume(&COST, &b.cost_per_hour)),
            // A busy hour of a key with quiet nights is many times its median but not above its p99.
            new_network: (new_network(&TOKENS, &b.tokens_per_hour), new_network(&COST, &b.cost_per_hour)),
        },
        None if baseline.is_some_and(|b| peers::has_stand_in(b, cred)) => {
            without_history((MIN_RATIO * TOKENS.high_floor, MIN_RATIO * COST.high_floor))
        }
        None => without_history((TOKENS.cold_floor, COST.cold_floor)),
    }
}

/// Whether a request from `source_ip` may count as from a network the
/// credential never used, as billing_spike.sql's `new_networks` judges it
/// (its `caller_network` against the learned scope). It may say yes where
/// the query says no (a request AWS relayed has no caller network), never
/// the other way.
pub fn new_network(baseline: &Baseline, cred: &str, source_ip: &str) -> bool {
    network_of(source_ip).is_some_and(|n| !baseline.used(cred, "network", &n))
}

/// How an hour compares with the credential's learned baseline (`base`),
/// or without one with its peers' or the fleet's (`stand_in`), or the rules.
fn verdict(
    h: &Hour,
    base: Option<&CredentialBaseline>,
    stand_in: Option<&CredentialBaseline>,
    slot: Option<&ProfileSlot>,
) -> Option<Verdict> {
    let Some(b) = base.filter(|b| !b.cold_start) else {
        if let Some(p) = stand_in {
            // Their seasons and networks are not its own: the volume bar alone.
            return judge(&TOKENS, h.tokens, &p.tokens_per_hour, None)
                .or_else(|| judge(&COST, h.cost, &p.cost_per_hour, None));
        }
        // Cold start: an absolute floor, and far above its other hours today.
        return [(&TOKENS, h.tokens, h.day_median.0), (&COST, h.cost, h.day_median.1)]
            .into_iter()
            .filter(|(m, x, typical)| *x >= m.cold_floor && *x >= COLD_RATIO * typical)
            .map(|(m, x, typical)| Verdict {
                metric: m.name,
                observed: x,
                typical,
                high: m.cold_floor,
                ratio: x / typical.max(m.spread_floor),
                z: 0.0,
                new_network: None,
            })
            .next();
    };
    // Tokens first: they are what a person recognises; cost covers sources that log only cost.
    let (tokens_slot, cost_slot) =
        (slot.map(|s| (s.tokens_median, s.tokens_high)), slot.map(|s| (s.cost_median, s.cost_high)));
    judge(&TOKENS, h.tokens, &b.tokens_per_hour, tokens_slot)
        .or_else(|| judge(&COST, h.cost, &b.cost_per_hour, cost_slot))
        .or_else(|| {
            // Less volume, with the other evidence of a stranger: a network the key never used.
            (!h.new_networks.is_empty()).then_some(())?;
            judge_new_network(&TOKENS, h.tokens, &b.tokens_per_hour, tokens_slot)
                .or_else(|| judge_new_network(&COST, h.cost, &b.cost_per_hour, cost_slot))
        })
}

columns::row! {
    /// One row of the hourly spend query.
    struct HourRow {
        credential_id: text,
        principal: text,
        hour: time,
        tokens: float,
        cost: float,
        requests: int,
        first_ts: time,
        last_ts: time,
        day_median_tokens: float,
        day_median_cost: float,
        new_models: texts,
        new_networks: texts,
        source_ips: texts,
        evidence: texts,
    }
}

pub(super) fn score(cx: &Context<'_>, q: &str, batches: &[RecordBatch]) -> Result<Vec<Alert>, DetectError> {
    let mut hours = Vec::new();
    for r in columns::rows::<HourRow>(batches, q) {
        let r = r?;
        let (Some(cred), Some(h)) = (r.credential_id, r.hour) else { continue };
        hours.push(Hour {
            cred,
            principal: r.principal,
            hour: h,
            tokens: r.tokens.unwrap_or(0.0),
            cost: r.cost.unwrap_or(0.0),
            requests: r.requests.unwrap_or(0),
            day_median: (r.day_median_tokens.unwrap_or(0.0), r.day_median_cost.unwrap_or(0.0)),
            first: r.first_ts.unwrap_or(h),
            last: r.last_ts.unwrap_or(h),
            new_models: r.new_models,
            new_networks: r.new_networks,
            ips: r.source_ips,
            evidence: r.evidence,
        });
    }
    hours.sort_by(|a, b| (&a.cred, a.hour).cmp(&(&b.cred, b.hour)));

    // Consecutive firing hours of one credential make one alert.
    let mut out = Vec::new();
    for own in hours.chunk_by(|a, b| a.cred == b.cred) {
        let (cred, principal) = (&own[0].cred, own[0].principal.as_deref());
        let base = cx.baseline.and_then(|b| b.credentials.get(cred));
        let stand_in = match (cx.baseline, base.is_some_and(|b| !b.cold_start)) {
            (Some(b), false) => peers::stand_in(b, cx.inventory, cred, principal),
            _ => None,
        };
        let mut run: Vec<(&Hour, Verdict)> = Vec::new();
        for h in own {
            let slot = cx.baseline.and_then(|b| b.slot(&h.cred, h.hour));
            let Some(v) = verdict(h, base, stand_in.as_ref().map(|s| &s.base), slot) else { continue };
            if run.last().is_some_and(|(last, _)| h.hour - last.hour > HOUR_MS) {
                out.push(alert_of(&run, stand_in.as_ref(), cx));
                run.clear();
            }
            run.push((h, v));
        }
        if !run.is_empty() {
            out.push(alert_of(&run, stand_in.as_ref(), cx));
        }
    }
    Ok(out)
}

fn human(x: f64) -> String {
    match x.abs() {
        v if v >= 1e6 => format!("{:.1}M", x / 1e6),
        v if v >= 1e4 => format!("{:.0}k", x / 1e3),
        v if v >= 1e3 => format!("{:.1}k", x / 1e3),
        _ => format!("{x:.0}"),
    }
}

fn amount(metric: &str, x: f64) -> String {
    if metric == "cost" { format!("${x:.2}") } else { format!("{} tokens", human(x)) }
}

fn alert_of(run: &[(&Hour, Verdict)], stand_in: Option<&peers::StandIn>, cx: &Context<'_>) -> Alert {
    let first = run[0].0;
    let cred = first.cred.as_str();
    let base = cx.baseline.and_then(|b| b.credentials.get(cred)).filter(|b| !b.cold_start);
    let (peak_h, peak) =
        run.iter().max_by(|a, b| a.1.ratio.total_cmp(&b.1.ratio)).map(|(h, v)| (*h, *v)).expect("a run");
    let set = |f: fn(&Hour) -> &Vec<String>| super::union(run.iter().map(|(h, _)| f(h)));
    // What is "new" only means something against a learned scope.
    let (new_models, new_networks) =
        if base.is_some() { (set(|h| &h.new_models), set(|h| &h.new_networks)) } else { (vec![], vec![]) };
    // Addresses in a new network first: they are the news.
    let mut ips = set(|h| &h.ips);
    ips.sort_by_key(|ip| {
        let net = network_of(ip).unwrap_or_default();
        (!new_networks.contains(&net), ip.clone())
    });
    let tokens: f64 = run.iter().map(|(h, _)| h.tokens).sum();
    let cost: f64 = run.iter().map(|(h, _)| h.cost).sum();
    let requests: i64 = run.iter().map(|(h, _)| h.requests).sum();
    let n_hours = run.len();

    let mut signature = Vec::new();
    if !new_models.is_empty() {
        signature.push(format!("a model it never used ({})", new_models.join(", ")));
    }
    if !new_networks.is_empty() {
        signature.push(format!("a new source network ({})", new_networks.join(", ")));
    }
    let llmjacking = !new_models.is_empty() && !new_networks.is_empty();
    // Every hour fired only on a moderate excess together with a new network.
    let moderate = run.iter().all(|(_, v)| v.new_network.is_some());
    let boost = 1.0 + 0.5 * (!new_models.is_empty() as u8 as f64) + 0.5 * (!new_networks.is_empty() as u8 as f64);
    let score = peak.ratio * boost;
    let severity = match (base, llmjacking, signature.is_empty()) {
        (None, _, _) if stand_in.is_some() => grade(peak.ratio, (0.0, 20.0, 200.0)).max(Severity::Medium),
        (None, _, _) => Severity::Medium,
        (_, true, _) => Severity::Critical,
        (_, false, _) if moderate => Severity::High,
        (_, false, false) if score >= 100.0 => Severity::Critical,
        (_, false, false) => Severity::High,
        _ => grade(peak.ratio, (0.0, 20.0, 200.0)).max(Severity::Medium),
    };
    // CloudTrail logs no tokens: its Bedrock calls are priced per request from the pricing table.
    let spent = if tokens == 0.0 && cost > 0.0 {
        format!("an estimated ${cost:.2} (priced per request, the log has no token counts) in {requests} requests")
    } else {
        format!("{} tokens (${cost:.2}) in {requests} requests", human(tokens))
    };
    let floor = if peak.metric == "cost" { COST.high_floor } else { TOKENS.high_floor };
    let busiest = if peak.high <= floor {
        format!("below the floor of {}", amount(peak.metric, floor))
    } else {
        amount(peak.metric, peak.high)
    };
    let (observed, baseline, explanation) = match (base, stand_in) {
        (Some(b), _) if moderate => {
            let times = peak.new_network.unwrap_or(peak.ratio);
            let baseline = format!(
                "usual hour {} (median or seasonal median, at least {}), busiest normal hour {} (p99 or seasonal \
                 high); {} days of history, none of it from {}",
                amount(peak.metric, peak.typical),
                amount(peak.metric, if peak.metric == "cost" { COST.high_floor } else { TOKENS.high_floor }),
                amount(peak.metric, peak.high),
                b.days_seen,
                new_networks.join(", ")
            );
            let mut e = format!(
                "{cred} spent {spent} over {n_hours} hour(s) with use from a network it never used ({}); its peak \
                 hour ({}) was {times:.1}× its usual hour ({} vs {}) — a moderate excess on its own, but with the \
                 new network the sign of a stranger spending on the key",
                new_networks.join(", "),
                crate::time::format_ms(peak_h.hour).get(11..16).unwrap_or(""),
                amount(peak.metric, peak.observed),
                amount(peak.metric, peak.typical),
            );
            if llmjacking {
                e.push_str(&format!(
                    ", with a model it never used ({}): the LLMjacking signature — revoke the key and check who holds it",
                    new_models.join(", ")
                ));
            } else {
                e.push_str(": check who holds it");
            }
            (
                format!(
                    "{spent}; peak {} in one hour, {times:.1}× its usual hour, robust z {:.0}, from a new network",
                    amount(peak.metric, peak.observed),
                    peak.z
                ),
                baseline,
                e,
            )
        }
        (Some(b), _) => {
            let baseline = format!(
                "busiest normal hour {busiest} (p99 or seasonal high), typical {} per hour (median; {} days of history)",
                amount(peak.metric, peak.typical),
                b.days_seen
            );
            let mut e = format!(
                "{cred} spent {spent} over {n_hours} hour(s); its peak hour ({}) was {:.0}× its busiest normal hour \
                 ({} vs {busiest})",
                crate::time::format_ms(peak_h.hour).get(11..16).unwrap_or(""),
                peak.ratio,
                amount(peak.metric, peak.observed),
            );
            if !signature.is_empty() {
                e.push_str(&format!(", with {}", signature.join(" and ")));
            }
            if llmjacking {
                e.push_str(": the LLMjacking signature — revoke the key and check who holds it");
            }
            (
                format!("{spent}; peak {} in one hour, robust z {:.0}", amount(peak.metric, peak.observed), peak.z),
                baseline,
                e,
            )
        }
        (None, Some(s)) => (
            format!("{spent}; peak {} in one hour, robust z {:.0}", amount(peak.metric, peak.observed), peak.z),
            format!(
                "too little history of its own (cold start), judged by {}: busiest normal hour {busiest} (the \
                 median of their p99s), typical {} per hour (the median of their medians)",
                s.level,
                amount(peak.metric, peak.typical)
            ),
            format!(
                "{cred} spent {spent} over {n_hours} hour(s); its peak hour ({}) was {:.0}× the busiest normal hour \
                 of {} ({} vs {busiest}); it has too little history of its own for a baseline",
                crate::time::format_ms(peak_h.hour).get(11..16).unwrap_or(""),
                peak.ratio,
                s.level,
                amount(peak.metric, peak.observed),
            ),
        ),
        (None, None) => (
            spent.clone(),
            format!(
                "no baseline yet (cold start): its typical hour today was {}; the floor is {} per hour",
                amount(peak.metric, peak.typical),
                amount(peak.metric, peak.high)
            ),
            format!(
                "{cred} spent {spent} over {n_hours} hour(s), {:.0}× its typical hour today ({}) and above the \
                 absolute floor of {} per hour; it has too little history for a baseline",
                peak.ratio,
                amount(peak.metric, peak.typical),
                amount(peak.metric, peak.high)
            ),
        ),
    };
    let evidence: Vec<String> = run.iter().flat_map(|(h, _)| h.evidence.iter().cloned()).take(MAX_EVIDENCE).collect();
    let window_start = run.iter().map(|(h, _)| h.first).min().unwrap_or(first.hour);
    let finding = match (llmjacking, moderate) {
        (true, _) => "llmjacking",
        (false, true) => "new_network_spend",
        (false, false) => "spend_spike",
    };
    let mapped = cx.rule.mapped(finding, None);
    Alert {
        alert_id: alert::alert_id(&cx.rule.family, cred, "spend", first.hour),
        detector: cx.rule.family.clone(),
        finding: finding.into(),
        severity,
        score,
        credential_id: cred.to_string(),
        principal: first.principal.clone(),
        window_start_ms: window_start,
        window_end_ms: run.iter().map(|(h, _)| h.last).max().unwrap_or(first.hour),
        explanation: format!("{explanation} (from {})", ips.iter().take(3).cloned().collect::<Vec<_>>().join(", ")),
        observed,
        baseline,
        evidence,
        evidence_count: requests.max(0) as u64,
        mitre_attack: mapped.mitre(),
        // A stranger spending on the key means the secret leaked.
        owasp_nhi: mapped.owasp().filter(|_| !new_networks.is_empty()),
        subject: Some(new_models.first().cloned().unwrap_or_else(|| peak.metric.to_string())),
        incident_id: None,
        suppressed: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(median: f64, p99: f64) -> Stats {
        Stats { median, mad: median / 2.0, p95: p99 * 0.8, p99, max: p99, mean: median }
    }

    #[test]
    fn fires_only_far_above_the_busiest_hours() {
        let s = stats(2_000.0, 10_000.0);
        assert!(judge(&TOKENS, 25_000.0, &s, None).is_none(), "2.5× the busiest hour is a busy day");
        let v = judge(&TOKENS, 200_000.0, &s, None).expect("20× fires");
        assert!((v.ratio - 20.0).abs() < 1e-9);
    }

    #[test]
    fn near_zero_baselines_need_real_volume() {
        let s = stats(0.0, 300.0);
        assert!(judge(&TOKENS, 4_000.0, &s, None).is_none(), "the floor stands in for a tiny p99");
        assert!(judge(&TOKENS, 50_000.0, &s, None).is_some());
    }

    #[test]
    fn a_seasonal_high_raises_the_bar() {
        let s = stats(2_000.0, 10_000.0);
        assert!(judge(&TOKENS, 60_000.0, &s, None).is_some());
        assert!(judge(&TOKENS, 60_000.0, &s, Some((20_000.0, 30_000.0))).is_none());
    }

    fn credential(cold_start: bool, tokens: Stats, cost: Stats) -> CredentialBaseline {
        CredentialBaseline {
            model_version: 1,
            credential_id: "k".into(),
            principal: None,
            history_from: "2026-11-01".into(),
            history_to: "2026-11-07".into(),
            days_seen: 7,
            hours: 168,
            requests: 1000,
            cold_start,
            requests_per_hour: Stats::default(),
            tokens_per_hour: tokens,
            cost_per_hour: cost,
            errors_per_hour: Stats::default(),
            error_rate: 0.0,
            error_minute_max: 0.0,
            error_minute_p99: 0.0,
        }
    }

    proptest::proptest! {
        /// `watch` reads a credential's day for billing only once an hour
        /// reaches `least_spend`'s bar for its callers: no hour below it may fire.
        #[test]
        fn no_hour_below_the_least_spend_fires(
            tokens in 0.0..2e7f64,
            cost in 0.0..200.0f64,
            (p99_tokens, p99_cost) in (0.0..1e6f64, 0.0..50.0f64),
            median in 0.0..1.0f64,
            slot_high in proptest::option::of(0.0..1e6f64),
            cold_start: bool,
            known: bool,
            new_network: bool,
            day_median in 0.0..1e6f64,
            peer_p99 in proptest::option::of((0.0..1e6f64, 0.0..50.0f64)),
        ) {
            let b = credential(cold_start, stats(median * p99_tokens, p99_tokens), stats(median * p99_cost, p99_cost));
            // Two learned peers (the fleet, without an inventory) that a key in cold start is judged by.
            let mut all = Baseline::default();
            if known {
                all.credentials.insert("k".into(), b.clone());
            }
            for (i, (t, c)) in peer_p99.into_iter().flat_map(|p| [p, (p.0 / 2.0, p.1 / 2.0)]).enumerate() {
                let mut peer = credential(false, stats(median * t, t), stats(median * c, c));
                peer.credential_id = format!("p{i}");
                all.credentials.insert(peer.credential_id.clone(), peer);
            }
            let stand_in = peers::stand_in(&all, None, "k", None).filter(|_| !known || cold_start);
            let h = Hour {
                cred: "k".into(), principal: None, hour: 0, tokens, cost, requests: 1,
                day_median: (day_median, day_median / 1e4), first: 0, last: 0,
                new_models: vec![], new_networks: if new_network { vec!["192.0.2.0/24".into()] } else { vec![] },
                ips: vec![], evidence: vec![],
            };
            let slot = slot_high.map(|high| ProfileSlot {
                credential_id: "k".into(), slot_kind: "hour_of_day".into(), slot: 0, observations: 10,
                tokens_median: high * median, tokens_high: high, cost_median: high * median / 1e4, cost_high: high / 1e4,
                requests_median: 1.0,
            });
            let base = known.then_some(&b);
            if verdict(&h, base, stand_in.as_ref().map(|s| &s.base), slot.as_ref()).is_some() {
                let least = least_spend(Some(&all), "k");
                let (least_tokens, least_cost) = if new_network { least.new_network } else { least.any };
                proptest::prop_assert!(tokens >= least_tokens || cost >= least_cost);
            }
        }
    }

    #[test]
    fn the_least_spend_is_the_scorings_own_bar() {
        let b = credential(false, stats(6_000.0, 10_000.0), stats(0.0, 0.0));
        let one =
            |b: &CredentialBaseline| Baseline { credentials: [("k".into(), b.clone())].into(), ..Default::default() };
        let least = least_spend(Some(&one(&b)), "k");
        assert_eq!(least.new_network, (18_000.0, 0.75), "3× the usual hour or the floor (from a new network)");
        assert_eq!(least.any, (40_000.0, 1.0), "4× the busiest hour or the floor (from any network)");
        assert!(judge_new_network(&TOKENS, 17_999.0, &b.tokens_per_hour, None).is_none());
        assert!(judge_new_network(&TOKENS, 40_000.0, &b.tokens_per_hour, None).is_some());
        assert!(judge(&TOKENS, 39_999.0, &b.tokens_per_hour, None).is_none(), "4× the p99 without one");
        assert!(judge(&TOKENS, 60_000.0, &b.tokens_per_hour, None).is_some());
        let cold = LeastSpend { any: (COLD_TOKENS, COLD_COST), new_network: (COLD_TOKENS, COLD_COST) };
        assert_eq!(least_spend(None, "k"), cold, "no history: no networks to be new against");
        // Quiet nights: busy hours of 30k are 15× the usual hour, but a new network must also beat the busiest.
        let b = credential(false, stats(2_000.0, 30_000.0), stats(0.1, 2.0));
        assert_eq!(least_spend(Some(&one(&b)), "k").new_network, (30_000.0, 2.0));
        assert!(judge_new_network(&TOKENS, 30_000.0, &b.tokens_per_hour, None).is_none());
        assert!(judge_new_network(&TOKENS, 30_001.0, &b.tokens_per_hour, None).is_some());
    }

    #[test]
    fn a_network_is_new_unless_the_credential_used_it() {
        let mut b = Baseline::default();
        b.used_by.entry("network".into()).or_default().insert("10.1.2.0/24".into(), ["k".to_string()].into());
        assert!(!new_network(&b, "k", "10.1.2.99"), "its own /24");
        assert!(new_network(&b, "other", "10.1.2.99"), "another key's network is new to this one");
        assert!(new_network(&b, "k", "10.1.3.1"));
        assert!(!new_network(&b, "k", "not an address"), "no network, nothing new (as in the query)");
    }

    #[test]
    fn a_moderate_excess_fires_only_from_a_new_network() {
        // Usual hours of 6k tokens, busiest 10k: 25k is 4× the usual hour but only 2.5× the busiest.
        let b = credential(
            false,
            Stats { median: 6_000.0, mad: 1_000.0, p95: 9_000.0, p99: 10_000.0, max: 12_000.0, mean: 6_000.0 },
            stats(0.0, 0.0),
        );
        let hour = |networks: Vec<String>| Hour {
            cred: "k".into(),
            principal: None,
            hour: 0,
            tokens: 25_000.0,
            cost: 0.0,
            requests: 26,
            day_median: (0.0, 0.0),
            first: 0,
            last: 0,
            new_models: vec![],
            new_networks: networks,
            ips: vec![],
            evidence: vec![],
        };
        assert!(verdict(&hour(vec![]), Some(&b), None, None).is_none(), "a busy hour from its usual networks");
        let v =
            verdict(&hour(vec!["198.18.0.0/24".into()]), Some(&b), None, None).expect("with a new network it fires");
        assert!((v.new_network.unwrap() - 25.0 / 6.0).abs() < 1e-9, "{v:?}");
        let mut cold = b.clone();
        cold.cold_start = true;
        assert!(
            verdict(&hour(vec!["198.18.0.0/24".into()]), Some(&cold), None, None).is_none(),
            "no learned scope, no news"
        );
    }
}
