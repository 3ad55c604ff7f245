//! Peer groups: credentials doing one team's job, the level a detector
//! compares a credential with when its own history says too little (a thin
//! agent's tool steps, a new key's failure rate, a model new to one key but
//! everyday for its team). With an inventory the group is the credential's
//! kind and owner; otherwise its principal's role, the name without a
//! trailing instance number (`agent:support-7` → `agent:support`).
//!
//! Figures (billing's spend per hour, storms' failures per minute) of a
//! credential in cold start ([`crate::baseline::MIN_DAYS`],
//! [`crate::baseline::MIN_REQUESTS`]) are judged by a stand-in baseline
//! ([`stand_in`]), the nearest level that knows the work: its principal's
//! other learned credentials (a rotated key, another key of the same role
//! or user: one is enough, it is the same identity's work); else its learned
//! peers, when it has at least [`MIN_PEERS`]; else the fleet (every other
//! learned credential); else the detector's cold-start rules. Each figure is
//! the median of the level's members' own. The alert names the level it used.

use crate::baseline::{Baseline, CredentialBaseline, Stats};
use crate::inventory::Inventory;

/// Members of a peer group (or the fleet) that must do a thing for it to be
/// usual there — one could be an earlier attack; also the members a level
/// needs at all.
pub(crate) const MIN_PEERS: usize = 2;

/// A credential's peer group: its inventory kind and owner, else its principal's role.
pub(crate) fn group(inventory: Option<&Inventory>, cred: &str, principal: &str) -> String {
    match inventory.and_then(|i| i.get(cred)).and_then(|c| Some((c.kind.as_deref()?, c.owner.as_deref()?))) {
        Some((kind, owner)) => format!("kind {kind} owned by {owner}"),
        None => format!("role {}", role(principal)),
    }
}

/// A principal's name without its instance number: `agent:support-7` → `agent:support`.
fn role(principal: &str) -> String {
    let r = principal.trim_end_matches(|c: char| c.is_ascii_digit()).trim_end_matches(['-', '_', '.', '#']);
    if r.is_empty() || r.ends_with(':') { principal } else { r }.to_string()
}

/// The baseline's other credentials with learned history (not in cold
/// start) in `cred`'s peer group, sorted by id, and the group's name.
pub(crate) fn learned_peers<'b>(
    b: &'b Baseline,
    inventory: Option<&Inventory>,
    cred: &str,
    principal: Option<&str>,
) -> (String, Vec<&'b CredentialBaseline>) {
    let name = group(inventory, cred, principal.unwrap_or(cred));
    let mut peers: Vec<&CredentialBaseline> = b
        .credentials
        .values()
        .filter(|c| c.credential_id != cred && !c.cold_start)
        .filter(|c| group(inventory, &c.credential_id, c.principal.as_deref().unwrap_or(&c.credential_id)) == name)
        .collect();
    peers.sort_by(|x, y| x.credential_id.cmp(&y.credential_id));
    (name, peers)
}

/// The figures a credential with thin own history is judged by: its
/// peers' usual ones, else the fleet's (see [`stand_in`]).
pub(crate) struct StandIn {
    /// Per figure, the median over the level's credentials of their own
    /// learned figure (each field of each [`Stats`] on its own).
    pub base: CredentialBaseline,
    /// Says which level, for the alert: `peers (3 credentials of kind
    /// api_key owned by o@x)` or `the fleet (40 credentials)`.
    pub level: String,
}

/// The usual figures of a credential whose own history is thin (in cold
/// start): the medians of its principal's other learned credentials' own
/// figures when there is one, else of its [`learned_peers`]' when at least
/// [`MIN_PEERS`] exist, else of every other learned credential's (the
/// fleet) when as many exist, else none (the detector falls back to its
/// rules). A median, not a mean, so one odd member does not set the level.
pub(crate) fn stand_in(
    b: &Baseline,
    inventory: Option<&Inventory>,
    cred: &str,
    principal: Option<&str>,
) -> Option<StandIn> {
    if let Some(p) = principal.filter(|p| *p != cred) {
        let mut own: Vec<&CredentialBaseline> = b
            .credentials
            .values()
            .filter(|c| c.credential_id != cred && !c.cold_start && c.principal.as_deref() == Some(p))
            .collect();
        if !own.is_empty() {
            own.sort_by(|x, y| x.credential_id.cmp(&y.credential_id));
            let n = own.len();
            let level = format!("its principal {p} ({n} other credential{})", if n == 1 { "" } else { "s" });
            return Some(StandIn { base: medians(cred, &own), level });
        }
    }
    let (group, peers) = learned_peers(b, inventory, cred, principal);
    if peers.len() >= MIN_PEERS {
        let level = format!("peers ({} credentials of {group})", peers.len());
        return Some(StandIn { base: medians(cred, &peers), level });
    }
    let mut fleet: Vec<&CredentialBaseline> =
        b.credentials.values().filter(|c| c.credential_id != cred && !c.cold_start).collect();
    fleet.sort_by(|x, y| x.credential_id.cmp(&y.credential_id));
    (fleet.len() >= MIN_PEERS)
        .then(|| StandIn { base: medians(cred, &fleet), level: format!("the fleet ({} credentials)", fleet.len()) })
}

/// Whether a credential in cold start may get a [`stand_in`]: only when
/// some other credential has learned history (its principal's needs one,
/// the peers' and the fleet's [`MIN_PEERS`]). Its principal is not asked:
/// a gate that opens for one learned credential is never above the bar.
pub(crate) fn has_stand_in(b: &Baseline, cred: &str) -> bool {
    b.credentials.values().any(|c| c.credential_id != cred && !c.cold_start)
}

/// The upper median of some figures (of an even count, the larger middle
/// one: a level errs towards quiet).
fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(0.0)
}

/// A learned baseline for `cred` whose every figure is the median of the members' own.
fn medians(cred: &str, members: &[&CredentialBaseline]) -> CredentialBaseline {
    let of = |f: fn(&CredentialBaseline) -> f64| median(members.iter().map(|c| f(c)).collect());
    let stats = |f: fn(&CredentialBaseline) -> &Stats| Stats {
        median: median(members.iter().map(|c| f(c).median).collect()),
        mad: median(members.iter().map(|c| f(c).mad).collect()),
        p95: median(members.iter().map(|c| f(c).p95).collect()),
        p99: median(members.iter().map(|c| f(c).p99).collect()),
        max: median(members.iter().map(|c| f(c).max).collect()),
        mean: median(members.iter().map(|c| f(c).mean).collect()),
    };
    CredentialBaseline {
        credential_id: cred.to_string(),
        days_seen: of(|c| c.days_seen as f64) as u32,
        requests: of(|c| c.requests as f64) as u64,
        cold_start: false,
        requests_per_hour: stats(|c| &c.requests_per_hour),
        tokens_per_hour: stats(|c| &c.tokens_per_hour),
        cost_per_hour: stats(|c| &c.cost_per_hour),
        errors_per_hour: stats(|c| &c.errors_per_hour),
        error_rate: of(|c| c.error_rate),
        error_minute_max: of(|c| c.error_minute_max),
        error_minute_p99: of(|c| c.error_minute_p99),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_drop_instance_numbers_only() {
        assert_eq!(role("agent:support-7"), "agent:support");
        assert_eq!(role("app:summariser_12"), "app:summariser");
        assert_eq!(role("svc:etl"), "svc:etl");
        assert_eq!(role("agent:42"), "agent:42");
    }

    fn learned(id: &str, principal: &str, tokens_p99: f64) -> CredentialBaseline {
        CredentialBaseline {
            credential_id: id.into(),
            principal: Some(principal.into()),
            days_seen: 7,
            requests: 100,
            tokens_per_hour: Stats { median: tokens_p99 / 4.0, p99: tokens_p99, ..Default::default() },
            ..Default::default()
        }
    }

    #[test]
    fn a_stand_in_is_the_peers_medians_else_the_fleets_else_none() {
        let mut b = Baseline::default();
        let mut add = |c: CredentialBaseline| b.credentials.insert(c.credential_id.clone(), c);
        add(learned("s1", "agent:support-1", 1_000.0));
        add(learned("s2", "agent:support-2", 3_000.0));
        add(learned("s3", "agent:support-3", 2_000.0));
        add(learned("e1", "svc:etl-1", 900_000.0));
        let mut thin = learned("s4", "agent:support-4", 0.0);
        thin.cold_start = true;
        add(thin);
        let s = stand_in(&b, None, "s4", Some("agent:support-4")).expect("three peers");
        assert_eq!(s.level, "peers (3 credentials of role agent:support)");
        assert_eq!((s.base.tokens_per_hour.p99, s.base.tokens_per_hour.median), (2_000.0, 500.0));
        assert!(!s.base.cold_start && s.base.credential_id == "s4");
        // One peer is too few: the fleet's medians (s1, s2, s3 and e1; the upper of the middle two).
        let f = stand_in(&b, None, "e2", Some("svc:etl-2")).expect("the fleet");
        assert_eq!(f.level, "the fleet (4 credentials)");
        assert_eq!(f.base.tokens_per_hour.p99, 3_000.0);
        assert!(has_stand_in(&b, "e2"));
        // Without two other learned credentials there is no level to borrow,
        // unless one is the principal's own.
        let mut alone = Baseline::default();
        alone.credentials.insert("e1".into(), learned("e1", "svc:etl-1", 1.0));
        assert!(stand_in(&alone, None, "e2", Some("svc:etl-2")).is_none());
        let rotated = stand_in(&alone, None, "e1-new", Some("svc:etl-1")).expect("the principal's old key");
        assert_eq!(rotated.level, "its principal svc:etl-1 (1 other credential)");
        assert_eq!(rotated.base.tokens_per_hour.p99, 1.0);
        assert!(has_stand_in(&alone, "e2") && !has_stand_in(&Baseline::default(), "e2"));
    }

    /// A principal's own other credentials come before its peers: a second
    /// key of one busy service is judged by that service, not by the team's
    /// quieter ones.
    #[test]
    fn the_principals_own_credentials_come_first() {
        let mut b = Baseline::default();
        let mut add = |c: CredentialBaseline| b.credentials.insert(c.credential_id.clone(), c);
        add(learned("s1", "agent:support-1", 1_000.0));
        add(learned("s2", "agent:support-2", 3_000.0));
        add(learned("s3a", "agent:support-3", 50_000.0));
        let s = stand_in(&b, None, "s3b", Some("agent:support-3")).unwrap();
        assert_eq!(s.level, "its principal agent:support-3 (1 other credential)");
        assert_eq!(s.base.tokens_per_hour.p99, 50_000.0);
        // Another member of the role, with no key of its own learned, gets the peers.
        let p = stand_in(&b, None, "s4", Some("agent:support-4")).unwrap();
        assert!(p.level.starts_with("peers (3 credentials"), "{}", p.level);
    }
}
