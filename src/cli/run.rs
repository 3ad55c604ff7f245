//! `credtrail run`: ingest, then detect over the days the inputs brought.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use credtrail::detect;

use super::detect::{DetectCommon, detect_and_print};
use super::ingest::{IngestCommon, ingest_and_print, status_of};

#[derive(Args)]
pub struct RunArgs {
    /// Log files or directories to ingest.
    #[arg(default_value = "sample-data/logs")]
    inputs: Vec<PathBuf>,
    #[command(flatten)]
    common: IngestCommon,
    /// The credential inventory (CSV or TOML).
    #[arg(long, default_value = "sample-data/inventory.csv")]
    inventory: PathBuf,
    #[command(flatten)]
    detect: DetectCommon,
}

pub async fn run(a: RunArgs) -> Result<ExitCode> {
    let summary = ingest_and_print(a.inputs, &a.common).await?;
    let lake = &a.common.lake.lake;
    // The days this run brought in; on a rerun with nothing new, the whole lake.
    let range = match (summary.days.first(), summary.days.last()) {
        (Some(a), Some(z)) => Some((a.clone(), z.clone())),
        _ => detect::lake_days(lake).await?,
    };
    if let Some((from, to)) = range {
        detect_and_print(lake, from, to, Some(a.inventory), &a.detect).await?;
    }
    Ok(status_of(&summary))
}
