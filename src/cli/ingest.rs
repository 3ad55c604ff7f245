//! `credtrail ingest`, and the ingest step `run` shares.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use credtrail::{ingest, report};

use super::{LakeArg, ReadArgs};

/// Exit status when a run finished but quarantined records, failed files or
/// skipped directory entries.
const EXIT_QUARANTINED: u8 = 3;

#[derive(Args)]
pub struct IngestArgs {
    /// Files or directories (directories are walked for *.json, *.jsonl, *.ndjson, *.log, *.gz, *.txt),
    /// or s3://bucket/prefix (its objects listed alike and streamed; AWS_* environment for credentials,
    /// region and AWS_ENDPOINT_URL).
    /// An entry that cannot be read (dangling symlink, symlink loop, unreadable
    /// directory) is skipped with a warning and the rest ingested; exit status 3.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    #[command(flatten)]
    common: IngestCommon,
}

/// Where and how ingest writes: shared with `run`.
#[derive(Args)]
pub struct IngestCommon {
    #[command(flatten)]
    pub lake: LakeArg,
    #[command(flatten)]
    read: ReadArgs,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// Never draw a progress bar.
    #[arg(long)]
    no_progress: bool,
}

pub async fn run(a: IngestArgs) -> Result<ExitCode> {
    let summary = ingest_and_print(a.inputs, &a.common).await?;
    Ok(status_of(&summary))
}

/// Ingests `inputs` (on the blocking pool: it is CPU-bound and uses rayon)
/// and prints the summary.
pub async fn ingest_and_print(inputs: Vec<PathBuf>, c: &IngestCommon) -> Result<ingest::IngestSummary> {
    let opts = ingest::IngestOptions {
        inputs,
        lake: c.lake.lake.clone(),
        mappings: c.read.mappings.clone(),
        format: c.read.format.clone(),
        progress: !c.no_progress && !c.json && std::io::stderr().is_terminal(),
        pricing: c.read.pricing.clone(),
        ts_window: c.read.ts_window,
    };
    let summary = tokio::task::spawn_blocking(move || ingest::ingest(&opts)).await??;
    for e in &summary.skipped_entries {
        eprintln!("warning: {}: {}; skipped", e.path, e.reason);
    }
    if c.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print!("{}", report::ingest_summary(&summary));
    }
    Ok(summary)
}

pub fn status_of(summary: &ingest::IngestSummary) -> ExitCode {
    if summary.has_problems() { ExitCode::from(EXIT_QUARANTINED) } else { ExitCode::SUCCESS }
}
