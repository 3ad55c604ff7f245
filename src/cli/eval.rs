//! `credtrail eval`: score the lake's alerts against labels.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use credtrail::{eval, report};

use super::LakeArg;

#[derive(Args)]
pub struct EvalArgs {
    #[command(flatten)]
    lake: LakeArg,
    /// Labelled anomalies (CSV: id, kind, credential_id, start, end, description), or labelled
    /// attack records (`.jsonl`: technique, request_id, event_id, event) for technique recall.
    #[arg(long, value_name = "FILE")]
    labels: PathBuf,
    /// Print the scores as JSON.
    #[arg(long)]
    json: bool,
    /// Exit 1 when any kind's recall is below this.
    #[arg(long)]
    min_recall: Option<f64>,
    /// Exit 1 when any kind's precision is below this.
    #[arg(long)]
    min_precision: Option<f64>,
}

pub async fn run(a: EvalArgs) -> Result<ExitCode> {
    if eval::techniques::is_technique_labels(&a.labels) {
        return techniques(a).await;
    }
    let labels = eval::load_labels(&a.labels)?;
    let alerts = eval::lake_alerts(&a.lake.lake).await?;
    let scores = eval::score(&labels, &alerts);
    if a.json {
        println!("{}", serde_json::to_string(&scores)?);
    } else {
        print!("{}", report::eval_table(&scores));
    }
    let below = scores.below(a.min_recall.unwrap_or(0.0), a.min_precision.unwrap_or(0.0));
    if !below.is_empty() {
        let kinds: Vec<&str> = below.iter().map(|k| k.kind.as_str()).collect();
        eprintln!("below the required recall/precision: {}", kinds.join(", "));
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Technique recall: whether any alert's evidence holds one of each technique's records.
async fn techniques(a: EvalArgs) -> Result<ExitCode> {
    let labels = eval::techniques::load(&a.labels)?;
    let alerts = eval::techniques::lake_alerts(&a.lake.lake).await?;
    let scores = eval::techniques::score(&labels, &alerts);
    if a.json {
        println!("{}", serde_json::to_string(&scores)?);
    } else {
        print!("{}", report::technique_table(&scores));
    }
    if scores.recall < a.min_recall.unwrap_or(0.0) {
        eprintln!("technique recall {:.3} is below the required recall", scores.recall);
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
