//! `credtrail detect`, and the detect step `run` shares.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use credtrail::engine::EngineOptions;
use credtrail::html::{self, ReportOptions};
use credtrail::report::{self, AlertOutput};
use credtrail::{detect, time};

use super::{DayRange, DetectorArgs, LakeArg};

#[derive(Args)]
pub struct DetectArgs {
    #[command(flatten)]
    lake: LakeArg,
    #[command(flatten)]
    days: DayRange,
    /// The credential inventory (CSV or TOML): enables out-of-scope and governance detection.
    #[arg(long, value_name = "FILE")]
    inventory: Option<PathBuf>,
    #[command(flatten)]
    detect: DetectCommon,
}

/// How batch detection runs and prints: shared with `run`.
#[derive(Args)]
pub struct DetectCommon {
    #[command(flatten)]
    detectors: DetectorArgs,
    /// How to print alerts.
    #[arg(short, long, value_enum, default_value_t = AlertOutput::Table)]
    output: AlertOutput,
    /// Credentials older than this many days are long-lived (governance).
    #[arg(long, default_value_t = 90)]
    max_age_days: u32,
    /// Also write the HTML report of the days detected to FILE, and print its path.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    #[command(flatten)]
    pub(super) cluster: super::cluster::ClusterArg,
}

pub async fn run(a: DetectArgs) -> Result<ExitCode> {
    let lake = &a.lake.lake;
    let (from, to) = match a.days.range() {
        Some(range) => range,
        None => match detect::lake_days(lake).await? {
            Some(range) => range,
            None => anyhow::bail!("{}: the lake has no events to detect on", lake.display()),
        },
    };
    detect_and_print(lake, from, to, a.inventory, &a.detect).await?;
    Ok(ExitCode::SUCCESS)
}

/// Detects over `from..=to`, prints the alerts, and notes expired suppressions on stderr.
pub async fn detect_and_print(
    lake: &Path,
    from: String,
    to: String,
    inventory: Option<PathBuf>,
    c: &DetectCommon,
) -> Result<()> {
    let d = &c.detectors;
    let opts = detect::DetectOptions {
        lake: lake.to_path_buf(),
        from,
        to,
        inventory,
        queries: d.queries.clone(),
        baseline_days: d.baseline_days,
        suppressions: d.suppressions()?,
        max_age_days: c.max_age_days,
        tool_categories: d.tool_categories.clone(),
        api_risk: d.api_risk.clone(),
        engine: EngineOptions { cluster: c.cluster.cluster.clone(), ..Default::default() },
    };
    let report = detect::detect(&opts).await?;
    print!("{}", c.output.render(&report));
    if let Some(out) = &c.report {
        let range =
            ReportOptions { lake: lake.to_path_buf(), from: Some(opts.from.clone()), to: Some(opts.to.clone()) };
        let line = report::html_written(&html::write(&range, out).await?, out);
        // Alerts as JSON lines keep stdout to themselves.
        match c.output {
            AlertOutput::Table => print!("{line}"),
            _ => eprint!("{line}"),
        }
    }
    if let Some(s) = &opts.suppressions {
        let end = time::parse_date_or_ts(&opts.to).unwrap_or(0) + time::DAY_MS;
        for r in s.expired(end) {
            eprintln!(
                "note: suppression {:?} expired on {}; it no longer applies",
                r.reason,
                r.expires.as_deref().unwrap_or("?")
            );
        }
    }
    Ok(())
}
