//! `credtrail baseline`: learn and save per-credential baselines.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use credtrail::engine::EngineOptions;
use credtrail::{baseline, detect, report};

use super::LakeArg;

#[derive(Args)]
pub struct BaselineArgs {
    #[command(flatten)]
    lake: LakeArg,
    /// The last day of history (YYYY-MM-DD); default: the lake's last day.
    #[arg(long)]
    until: Option<String>,
    /// How many days of history, ending at --until.
    #[arg(long, default_value_t = 28)]
    days: u32,
    /// Learn from one scan of the whole window's events instead of merging the
    /// per-day partials under models/daily/ (slower; the exact reference).
    #[arg(long)]
    rescan: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    cluster: super::cluster::ClusterArg,
}

pub async fn run(a: BaselineArgs) -> Result<ExitCode> {
    let lake = a.lake.lake;
    let until = match a.until {
        Some(u) => u,
        None => match detect::lake_days(&lake).await? {
            Some((_, last)) => last,
            None => anyhow::bail!("{}: the lake has no events to learn from", lake.display()),
        },
    };
    let engine = EngineOptions { cluster: a.cluster.cluster, ..Default::default() };
    let opts = baseline::BaselineOptions { lake: lake.clone(), until, days: a.days, rescan: a.rescan, engine };
    let s = baseline::learn(&opts).await?;
    if a.json {
        println!("{}", serde_json::to_string(&s)?);
    } else {
        print!("{}", report::baseline_summary(&s, &lake));
    }
    Ok(ExitCode::SUCCESS)
}
