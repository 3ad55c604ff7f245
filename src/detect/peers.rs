//! Peer groups: credentials doing one team's job, the level a detector
//! compares a credential with when its own history says too little (a thin
//! agent's tool steps, a new key's failure rate, a model new to one key but
//! everyday for its team). With an inventory the group is the credential's
//! kind and owner; otherwise its principal's role, the name without a
//! trailing instance number (`agent:support-7` → `agent:support`).

use crate::baseline::{Baseline, CredentialBaseline};
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
}
