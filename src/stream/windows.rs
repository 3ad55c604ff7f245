//! Windowed per-credential state of a live day: failures per minute, spend
//! per hour, and which kinds of record a credential has sent. It opens the
//! gates of the gated detectors ([`Gate`]), so that their queries read the
//! day of the few credentials that may have an alert, not of all that moved.
//!
//! The thresholds are the scoring's own ([`least_burst`], [`least_sustained`],
//! [`least_spend`]):
//! below them a credential's rows could not fire. An hour's spend bar is the
//! volume bar, or the lower new-network one once a request of the hour came
//! from a network the credential's history lacks: a busy hour from its usual
//! networks is no spike, and reading its day for one would cost every pass.
//! A gate must never stay shut when an alert would fire: the state
//! over-counts where it cannot know (spend before de-duplication, sums with
//! slack for rounding, a network AWS relayed counted as new) and a gate stays
//! open once passed.

use std::collections::HashSet;

use arrow::array::{Array, AsArray, Int64Array, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use hashbrown::HashMap;

use crate::baseline::Baseline;
use crate::columns::Text;
use crate::detect::{Gate, LeastSpend, SUSTAINED_MINUTES, least_burst, least_spend, least_sustained, new_network};
use crate::schema::col;
use crate::time::HOUR_MS;

const MINUTE_MS: i64 = 60_000;
/// Addresses whose networks a credential's state remembers as new or not.
const CALLERS_KEPT: usize = 256;

struct CredState {
    /// Failures in a minute, and tokens or cost in an hour, that can fire.
    least_burst: f64,
    least_sustained: f64,
    least_spend: LeastSpend,
    /// Minute → failed requests, until a storm is possible.
    failures: HashMap<i64, u32>,
    /// Fixed sustained-storm window → failed requests, likewise.
    sustained: HashMap<i64, u32>,
    /// Hour → its spend, until a spike is possible.
    spend: HashMap<i64, HourSpend>,
    /// Addresses seen → whether their network may be new to the credential
    /// (the first [`CALLERS_KEPT`]; a key spraying addresses pays per request).
    callers: HashMap<Box<str>, bool>,
    storm: bool,
    spend_open: bool,
    session_key: bool,
    /// Bedrock-plane records: a key's CloudTrail call and its role's
    /// invocation log count once between them, so the billing of either
    /// depends on the other and neither can be bounded alone.
    bedrock: bool,
}

impl CredState {
    fn new(credential: &str, base: Option<&Baseline>) -> CredState {
        let b = base.and_then(|b| b.credentials.get(credential));
        CredState {
            least_burst: least_burst(b),
            least_sustained: least_sustained(b),
            least_spend: least_spend(base, credential),
            failures: HashMap::new(),
            sustained: HashMap::new(),
            spend: HashMap::new(),
            callers: HashMap::new(),
            storm: false,
            spend_open: false,
            session_key: false,
            bedrock: false,
        }
    }

    /// Opens the spend gate for good: the hours' state is no longer needed.
    fn open_spend(&mut self) {
        self.spend_open = true;
        self.spend = HashMap::new();
        self.callers = HashMap::new();
    }
}

/// One hour's spend: tokens and cost of its successful requests (before
/// de-duplication, so never less than the query's), and whether a request
/// came from a network the credential may never have used.
#[derive(Default)]
struct HourSpend {
    tokens: f64,
    cost: f64,
    new_network: bool,
}

/// The state of one live day, judged against its baseline.
#[derive(Default)]
pub struct Windows {
    creds: HashMap<String, CredState>,
}

impl Windows {
    /// Takes in events of the day (any columns missing count as null).
    pub fn observe(&mut self, events: &RecordBatch, base: Option<&Baseline>) {
        // Dictionary values by key: no string copied per row.
        let strings = |name: &str| events.column_by_name(name).and_then(|c| Text::of(c).ok());
        let ints = |name: &str| {
            events
                .column_by_name(name)
                .and_then(|c| cast(c, &DataType::Int64).ok())
                .map(|a| a.as_primitive::<Int64Type>().clone())
        };
        let (Some(cred), Some(ts)) = (strings(col::CREDENTIAL_ID), ints(col::TS)) else { return };
        let (source, action, session) = (strings(col::SOURCE), strings(col::ACTION), strings(col::SESSION_ID));
        // Decoded only if some hour's bar depends on its callers.
        let source_ip = std::cell::OnceCell::new();
        let (status, tokens_in, tokens_out) = (ints(col::STATUS), ints(col::TOKENS_IN), ints(col::TOKENS_OUT));
        let cost = events
            .column_by_name(col::COST_USD)
            .and_then(|c| cast(c, &DataType::Float64).ok())
            .map(|a| a.as_primitive::<Float64Type>().clone());
        for i in 0..events.num_rows() {
            let (Some(c), true) = (cred.get(i), ts.is_valid(i)) else { continue };
            let s = match self.creds.get_mut(c) {
                Some(s) => s,
                None => self.creds.entry(c.to_string()).or_insert_with(|| CredState::new(c, base)),
            };
            let t = ts.value(i);
            let source = get(&source, i);
            if source == Some("cloudtrail") && get(&session, i).is_some_and(|k| k.contains("ASIA")) {
                s.session_key = true;
            }
            if source == Some("bedrock-invocation")
                || (source == Some("cloudtrail") && get(&action, i) == Some("inference"))
            {
                s.bedrock = true;
                s.open_spend();
            }
            match num(&status, i) {
                Some(st) if (matches!(st, 401 | 403 | 429) || st >= 500) && !s.storm => {
                    let n = s.failures.entry(t.div_euclid(MINUTE_MS)).or_default();
                    *n += 1;
                    let burst = f64::from(*n) >= s.least_burst;
                    // A sliding window spans at most two fixed ones: one holds half its failures.
                    let w = s.sustained.entry(t.div_euclid(SUSTAINED_MINUTES * MINUTE_MS)).or_default();
                    *w += 1;
                    if burst || 2.0 * f64::from(*w) >= s.least_sustained {
                        s.storm = true;
                        s.failures = HashMap::new();
                        s.sustained = HashMap::new();
                    }
                }
                _ => {}
            }
            if s.spend_open {
                continue;
            }
            let h = s.spend.entry(t.div_euclid(HOUR_MS)).or_default();
            // Failed requests are not billed, but their callers count as the hour's.
            if num(&status, i).is_none_or(|st| st < 400) {
                h.tokens += (num(&tokens_in, i).unwrap_or(0) + num(&tokens_out, i).unwrap_or(0)) as f64;
                h.cost += cost.as_ref().filter(|a| a.is_valid(i)).map_or(0.0, |a| a.value(i));
            }
            // Only learned history has networks to be new against, and only then is the bar lower.
            if !h.new_network
                && s.least_spend.new_network != s.least_spend.any
                && let (Some(b), Some(ip)) = (base, get(source_ip.get_or_init(|| strings(col::SOURCE_IP)), i))
            {
                h.new_network = match s.callers.get(ip) {
                    Some(&new) => new,
                    None => {
                        let new = new_network(b, c, ip);
                        if s.callers.len() < CALLERS_KEPT {
                            s.callers.insert(ip.into(), new);
                        }
                        new
                    }
                };
            }
            let bar = if h.new_network { s.least_spend.new_network } else { s.least_spend.any };
            // Slack for sums taken in another order than the query's.
            let reach = |x: f64, least: f64| x >= least * (1.0 - 1e-9);
            if reach(h.tokens, bar.0) || reach(h.cost, bar.1) {
                s.open_spend();
            }
        }
    }

    /// Whether a gated query may return rows for the credential.
    pub fn open(&self, credential: &str, gate: Gate) -> bool {
        self.creds.get(credential).is_some_and(|s| match gate {
            Gate::Storm => s.storm,
            Gate::Spend => s.spend_open,
            Gate::SessionKey => s.session_key,
        })
    }

    /// The credentials with any gate open.
    pub fn open_credentials(&self) -> HashSet<String> {
        self.creds.iter().filter(|(_, s)| s.storm || s.spend_open || s.session_key).map(|(c, _)| c.clone()).collect()
    }

    /// `creds`, and every credential with Bedrock-plane records if any of
    /// them has some: a key's CloudTrail call and its role's invocation log
    /// are one request, so their billing is judged together.
    pub fn with_bedrock<'a>(&'a self, mut creds: HashSet<&'a str>) -> HashSet<&'a str> {
        let bedrock = self.creds.iter().filter(|(_, s)| s.bedrock).map(|(c, _)| c.as_str());
        if creds.iter().any(|c| self.creds.get(*c).is_some_and(|s| s.bedrock)) {
            creds.extend(bedrock);
        }
        creds
    }
}

fn get<'a>(a: &'a Option<Text<'_>>, i: usize) -> Option<&'a str> {
    a.as_ref()?.get(i)
}

fn num(a: &Option<Int64Array>, i: usize) -> Option<i64> {
    a.as_ref().filter(|a| a.is_valid(i)).map(|a| a.value(i))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::{CredentialBaseline, Stats};
    use crate::schema::{Event, EventBuilder, Lineage};

    /// The address of the rows of [`batch`]: in the network [`baseline`] learned.
    const USUAL_IP: &str = "192.0.2.7";

    /// Events of one source: (credential, ts, status, tokens).
    fn batch(source: &str, rows: &[(&str, i64, Option<u16>, i64)]) -> RecordBatch {
        batch_from(source, USUAL_IP, rows)
    }

    /// The same, from `ip`.
    fn batch_from(source: &str, ip: &str, rows: &[(&str, i64, Option<u16>, i64)]) -> RecordBatch {
        let mut b = EventBuilder::new();
        for (i, (c, ts, status, tokens)) in rows.iter().enumerate() {
            let e = Event {
                ts_ms: *ts,
                credential_id: (*c).into(),
                status: *status,
                tokens_in: Some(*tokens),
                source_ip: Some(ip.into()),
                ..Default::default()
            };
            b.append(&e, Lineage { source, source_file: "f" }, i as u64 + 1);
        }
        b.finish()
    }

    fn baseline(credential: &str, tokens_p99: f64) -> Baseline {
        let c = CredentialBaseline {
            model_version: 1,
            credential_id: credential.into(),
            principal: None,
            history_from: "2026-11-01".into(),
            history_to: "2026-11-02".into(),
            days_seen: 2,
            hours: 48,
            requests: 400,
            cold_start: false,
            requests_per_hour: Stats::default(),
            tokens_per_hour: Stats { p99: tokens_p99, ..Stats::default() },
            cost_per_hour: Stats::default(),
            errors_per_hour: Stats::default(),
            error_rate: 0.0,
            error_minute_max: 0.0,
            error_minute_p99: 0.0,
        };
        let mut b = Baseline { credentials: [(credential.to_string(), c)].into(), ..Default::default() };
        let usual = crate::engine::udf::network_of(USUAL_IP).expect("an address");
        b.used_by.entry("network".into()).or_default().insert(usual, [credential.to_string()].into());
        b
    }

    #[test]
    fn a_storm_needs_its_failures_in_one_minute() {
        let mut w = Windows::default();
        // Without history a storm needs 20 failures in a minute: 19 in each
        // of two minutes (ten apart: a sustained storm's window holds only
        // one), and client errors that are no storm, open nothing.
        let mut rows: Vec<(&str, i64, Option<u16>, i64)> = Vec::new();
        for i in 0..19 {
            rows.push(("k", i * 1000, Some(429), 0));
            rows.push(("k", 10 * MINUTE_MS + i * 1000, Some(503), 0));
            rows.push(("k", 2 * MINUTE_MS + i * 1000, Some(404), 0));
        }
        rows.push(("k", 2 * MINUTE_MS + 5000, Some(400), 0));
        w.observe(&batch("gateway", &rows), None);
        assert!(!w.open("k", Gate::Storm));
        w.observe(&batch("gateway", &[("k", 59_999, Some(401), 0)]), None);
        assert!(w.open("k", Gate::Storm));
        assert!(!w.open("other", Gate::Storm));
    }

    #[test]
    fn spend_opens_at_the_least_spend_that_can_fire() {
        // Usual hours of nothing, from its usual network: 4 × the 5,000-token floor.
        let base = baseline("k", 1000.0);
        let mut w = Windows::default();
        // 19,999 tokens of successful requests, and a failed one's tokens that do not count.
        w.observe(&batch("gateway", &[("k", 0, Some(200), 19_999), ("k", 10, Some(500), 50_000)]), Some(&base));
        assert!(!w.open("k", Gate::Spend));
        // The next hour does not add to this one.
        w.observe(&batch("gateway", &[("k", HOUR_MS, None, 19_999)]), Some(&base));
        assert!(!w.open("k", Gate::Spend));
        w.observe(&batch("gateway", &[("k", 20, None, 1)]), Some(&base));
        assert!(w.open("k", Gate::Spend));

        // An hour with a caller from a network it never used fires from 3 × the floor,
        // whether that caller's request came before the spend or after it, billed or not.
        for new_caller_first in [true, false] {
            let mut w = Windows::default();
            let stranger = batch_from("gateway", "198.51.100.9", &[("k", 30, Some(403), 0)]);
            let spend = batch("gateway", &[("k", 0, Some(200), 15_000)]);
            let (a, b) = if new_caller_first { (&stranger, &spend) } else { (&spend, &stranger) };
            w.observe(a, Some(&base));
            assert!(!w.open("k", Gate::Spend));
            w.observe(b, Some(&base));
            assert!(w.open("k", Gate::Spend), "new caller first: {new_caller_first}");
        }
        // A stranger in another hour does not lower this one's bar.
        let mut w = Windows::default();
        w.observe(&batch_from("gateway", "198.51.100.9", &[("k", HOUR_MS, Some(200), 1)]), Some(&base));
        w.observe(&batch("gateway", &[("k", 0, Some(200), 15_000)]), Some(&base));
        assert!(!w.open("k", Gate::Spend));

        // Without history: the absolute floor.
        let mut w = Windows::default();
        w.observe(&batch("gateway", &[("new", 0, None, 999_999)]), None);
        assert!(!w.open("new", Gate::Spend));
        w.observe(&batch("gateway", &[("new", 1, None, 1)]), None);
        assert!(w.open("new", Gate::Spend));
    }

    #[test]
    fn bedrock_records_are_always_judged() {
        let mut w = Windows::default();
        w.observe(&batch("bedrock-invocation", &[("role", 0, None, 1)]), None);
        w.observe(&batch("gateway", &[("key", 0, None, 1)]), None);
        assert!(w.open("role", Gate::Spend));
        assert_eq!(w.with_bedrock(["key"].into()), ["key"].into(), "no Bedrock record: only itself");
        assert_eq!(w.with_bedrock(["role", "key"].into()), ["role", "key"].into());
        assert_eq!(w.with_bedrock(HashSet::new()), HashSet::new());
    }

    #[test]
    fn a_sustained_storm_opens_at_half_its_least_count_in_a_fixed_window() {
        // Without history a sustained storm needs 40 failures in ten minutes:
        // 19 in one fixed window and 19 in the next keep the gate shut…
        let mut w = Windows::default();
        let rows: Vec<(&str, i64, Option<u16>, i64)> =
            (0..38).map(|i| ("k", 10 * MINUTE_MS + (i - 19) * 30_000, Some(403), 0)).collect();
        w.observe(&batch("gateway", &rows), None);
        assert!(!w.open("k", Gate::Storm));
        // …a 20th in one of them, two a minute at most, opens it.
        w.observe(&batch("gateway", &[("k", 9 * MINUTE_MS + 45_000, Some(429), 0)]), None);
        assert!(w.open("k", Gate::Storm));
    }

    fn error_baseline(credential: &str, per_hour_mean: f64, hour_p99: f64, minute_p99: f64) -> Baseline {
        let mut b = baseline(credential, 0.0);
        let c = b.credentials.get_mut(credential).expect("the credential");
        c.errors_per_hour = Stats { mean: per_hour_mean, p99: hour_p99, ..Stats::default() };
        c.error_minute_p99 = minute_p99;
        b
    }

    proptest::proptest! {
        /// `watch` reads a credential's day for storms only once its gate is
        /// open: whatever the failures, batch scoring (bursts and sustained
        /// storms) never fires on a credential whose gate stayed shut.
        #[test]
        fn no_storm_fires_behind_a_shut_gate(
            failures in proptest::collection::vec((0i64..60, 0i64..60_000, 0usize..3), 0..200),
            spread in 1i64..60,
            history in proptest::option::of((0.0..600.0f64, 0.0..300.0f64, 0.0..40.0f64)),
        ) {
            let base = history.map(|(mean, hour_p99, minute_p99)| error_baseline("k", mean, hour_p99, minute_p99));
            let rows: Vec<(&str, i64, Option<u16>, i64)> = failures
                .iter()
                .map(|&(m, ms, s)| ("k", (m % spread) * MINUTE_MS + ms, Some([401, 429, 503][s]), 0))
                .collect();
            let mut w = Windows::default();
            let (a, b) = rows.split_at(rows.len() / 2);
            w.observe(&batch("gateway", a), base.as_ref());
            w.observe(&batch("gateway", b), base.as_ref());
            let mut counts: std::collections::BTreeMap<i64, f64> = Default::default();
            for (_, ts, _, _) in &rows {
                *counts.entry(ts.div_euclid(MINUTE_MS) * MINUTE_MS).or_default() += 1.0;
            }
            let counts: Vec<(i64, f64)> = counts.into_iter().collect();
            let alerts = crate::detect::storm_alerts_for(base.as_ref(), "k", &counts);
            proptest::prop_assert!(alerts.is_empty() || w.open("k", Gate::Storm), "{alerts:?}");
        }
    }
}
