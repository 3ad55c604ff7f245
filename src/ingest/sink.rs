//! The sink: ingest's side of the lake's writer. Workers' outputs and the
//! files that could not be read become records staged in the run; the lake
//! ([`LakeWriter`]) buffers, partitions, sorts and writes them.

use super::transform::Output;
use super::{FileReport, FileStatus, IngestError};
use crate::lake::{LakeWriter, QuarantineEntry};

/// Hands one worker's share of a file to the writer.
pub(super) fn push(w: &LakeWriter<'_>, mut out: Output) -> Result<(), IngestError> {
    let events = out.events.finish();
    Ok(w.push(&events, &out.quarantine, &out.exposures)?)
}

/// Files that failed outright still leave a trace beside the records.
/// Returns whether there were any.
pub(super) fn quarantine_failures(
    w: &LakeWriter<'_>,
    run_id: &str,
    reports: &[FileReport],
) -> Result<bool, IngestError> {
    let failures: Vec<QuarantineEntry> = reports
        .iter()
        .filter(|r| r.status == FileStatus::Failed)
        .map(|r| QuarantineEntry {
            run_id: run_id.to_string(),
            source_file: r.path.clone(),
            record: None,
            format: r.format.clone(),
            reason: r.error.clone().unwrap_or_default(),
            raw: String::new(),
            raw_truncated: false,
            raw_bytes: None,
        })
        .collect();
    if !failures.is_empty() {
        w.write_quarantine(&failures)?;
    }
    Ok(!failures.is_empty())
}
