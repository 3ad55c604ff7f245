//! Which new events bring something new to their credential: a value, in
//! some scope dimensions, that its own learned scope lacks. A per-event
//! query that reports only such values (first_seen.sql, by its rule's
//! [`LiveEvents::NewToScope`](crate::detect::LiveEvents)) is handed these
//! events alone: most of a day's events use what their credential always
//! used, and the query's `DISTINCT`s over every new event were the largest
//! part of a pass.
//!
//! The values are derived as the query and the baselines derive them
//! (`Derive::of`, no network for a request AWS relayed), once per distinct
//! value, and each distinct combination of a credential's values is looked
//! up in the baseline once.

use arrow::array::{ArrayRef, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use datafusion::error::Result;
use hashbrown::{HashMap, HashSet};

use crate::baseline::Baseline;
use crate::columns::{Names, Text};
use crate::detect::ScopeDim;
use crate::engine::udf::{self, Derive};
use crate::schema::col;

const DIMENSIONS: usize = udf::SCOPE_DIMENSIONS.len();
/// A row's derived value ids, in the order of the dimensions asked for.
type Values = [Option<u32>; DIMENSIONS];

/// The rows of `events` with a value in one of `dims` that their
/// credential's learned scope in `base` lacks, plus the first row of each
/// (credential, principal) pair. Without a baseline nothing is learned, and
/// every row is kept; so is a row without a credential.
pub fn new_to_scope(events: &[RecordBatch], base: Option<&Baseline>, dims: &[ScopeDim]) -> Result<Vec<RecordBatch>> {
    let Some(base) = base else { return Ok(events.to_vec()) };
    let mut names = Names::default();
    // (credential, each dimension's derived value) → whether one is new.
    let mut judged: HashMap<(u32, Values), bool> = HashMap::new();
    let mut callers: HashSet<(u32, Option<u32>)> = HashSet::new();
    let mut out = Vec::new();
    for b in events {
        let text = |name: &str| b.column_by_name(name).map(Text::of).transpose();
        let Some(cred) = text(col::CREDENTIAL_ID)? else { return Ok(events.to_vec()) };
        let cred = cred.ids(&mut names);
        let principal = text(col::PRINCIPAL)?.map(|p| p.ids(&mut names));
        let values: Vec<Vec<Option<u32>>> = dims.iter().map(|d| derived(b, d, &mut names)).collect::<Result<_>>()?;
        let mut keep = Vec::with_capacity(b.num_rows());
        for (i, c) in cred.iter().enumerate() {
            let Some(c) = *c else {
                keep.push(true);
                continue;
            };
            let caller = principal.as_ref().and_then(|p| p[i]);
            let first_call = callers.insert((c, caller));
            let mut row = [None; DIMENSIONS];
            for (v, column) in row.iter_mut().zip(&values) {
                *v = column[i];
            }
            let key = (c, row);
            let new = match judged.get(&key) {
                Some(&new) => new,
                None => {
                    let credential = names.name(c);
                    let new = dims
                        .iter()
                        .zip(&key.1)
                        .any(|(d, v)| v.is_some_and(|v| !base.used(credential, d.0.name, names.name(v))));
                    judged.insert(key, new);
                    new
                }
            };
            keep.push(new || first_call);
        }
        let kept = filter_record_batch(b, &BooleanArray::from(keep))?;
        if kept.num_rows() > 0 {
            out.push(kept);
        }
    }
    Ok(out)
}

/// Each row's value in dimension `d` as a `names` id: none for a null, a
/// value the derivation drops, or a network of a request AWS relayed.
fn derived(b: &RecordBatch, d: &ScopeDim, names: &mut Names) -> Result<Vec<Option<u32>>> {
    let Some(column) = b.column_by_name(d.0.column) else { return Ok(vec![None; b.num_rows()]) };
    let derive = d.0.derive;
    let text = Text::of(column)?;
    // Derived once per distinct raw value of the batch.
    let mut by_raw: HashMap<&str, Option<u32>> = HashMap::new();
    let mut ids = text.ids_by(|raw| *by_raw.entry(raw).or_insert_with(|| derive.of(raw).map(|v| names.id(&v))));
    if derive == Derive::Network {
        let agents: ArrayRef = match b.column_by_name(col::USER_AGENT) {
            Some(a) => a.clone(),
            None => arrow::array::new_null_array(&arrow::datatypes::DataType::Utf8, b.num_rows()),
        };
        if let Some(relayed) = udf::relayed_rows(column, &agents)? {
            for (id, r) in ids.iter_mut().zip(relayed.iter()) {
                if r == Some(true) {
                    *id = None;
                }
            }
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{AsArray, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn dims(names: &[&str]) -> Vec<ScopeDim> {
        names.iter().map(|n| ScopeDim::try_from(n.to_string()).unwrap()).collect()
    }

    /// Rows of (request id, credential, principal, source_ip, user_agent, model, resource).
    fn events(rows: &[[Option<&str>; 7]]) -> RecordBatch {
        let names = [
            col::REQUEST_ID,
            col::CREDENTIAL_ID,
            col::PRINCIPAL,
            col::SOURCE_IP,
            col::USER_AGENT,
            col::MODEL,
            col::RESOURCE,
        ];
        let fields: Vec<Field> = names.iter().map(|n| Field::new(*n, DataType::Utf8, true)).collect();
        let columns =
            (0..7).map(|c| Arc::new(rows.iter().map(|r| r[c]).collect::<StringArray>()) as ArrayRef).collect();
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
    }

    fn ids(batches: &[RecordBatch]) -> Vec<String> {
        let id = |b: &RecordBatch| b.column_by_name(col::REQUEST_ID).unwrap().as_string::<i32>().clone();
        batches.iter().flat_map(|b| id(b).iter().map(|v| v.unwrap().to_string()).collect::<Vec<_>>()).collect()
    }

    #[test]
    fn keeps_what_the_credentials_own_history_lacks_and_each_caller_once() {
        let mut base = Baseline::default();
        let mut learn = |cred: &str, dim: &str, value: &str| {
            base.used_by.entry(dim.into()).or_default().entry(value.into()).or_default().insert(cred.into());
        };
        learn("k", "network", "198.51.100.0/24");
        learn("k", "model", "m1");
        learn("k", "resource_prefix", "s3://b/dir/");
        learn("other", "model", "m2");
        let console = "[S3Console/0.4, aws-internal/3 aws-sdk-java/1.12.488]";
        let (k, p, q, m1) = (Some("k"), Some("p"), Some("q"), Some("m1"));
        let rows = [
            // k's first call from p: kept whatever its values.
            [Some("first"), k, p, Some("198.51.100.7"), None, m1, None],
            [Some("known"), k, p, Some("198.51.100.9"), None, m1, Some("s3://b/dir/x")],
            // Another credential's model is still new to k.
            [Some("their-model"), k, p, Some("198.51.100.9"), None, Some("m2"), None],
            [Some("new-network"), k, p, Some("203.0.113.5"), Some("curl/8"), m1, None],
            // AWS relayed it: its address is not the caller's network.
            [Some("relayed"), k, p, Some("10.1.2.3"), Some(console), m1, None],
            [Some("known-prefix"), k, p, None, None, None, Some("s3://b/dir/y")],
            [Some("new-prefix"), k, p, None, None, None, Some("s3://b/other/y")],
            // Another caller of k: its first call kept, the next not.
            [Some("q-first"), k, q, None, None, m1, None],
            [Some("q-next"), k, q, None, None, m1, None],
            [Some("no-credential"), None, p, None, None, m1, None],
        ];
        let b = events(&rows);
        let three = dims(&["network", "model", "resource_prefix"]);
        // Split in two batches: what was judged and who called carry over.
        let kept = new_to_scope(&[b.slice(0, 4), b.slice(4, 6)], Some(&base), &three).unwrap();
        assert_eq!(ids(&kept), ["first", "their-model", "new-network", "new-prefix", "q-first", "no-credential"]);
        // Fewer dimensions, less is new; without a baseline nothing is known.
        let networks = new_to_scope(std::slice::from_ref(&b), Some(&base), &dims(&["network"])).unwrap();
        assert_eq!(ids(&networks), ["first", "new-network", "q-first", "no-credential"]);
        assert_eq!(ids(&new_to_scope(&[b], None, &three).unwrap()).len(), rows.len());
    }
}
