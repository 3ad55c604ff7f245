//! `credtrail sample`: a labelled sample to try everything on.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;

use credtrail::report;
use credtrail::sample::{self, SampleFormat};

#[derive(Args)]
pub struct SampleArgs {
    /// How many days of logs (1 to 366).
    #[arg(long, default_value_t = 7)]
    days: u32,
    /// How many credentials (apps, agents, services) use the gateway (10 to 10000).
    #[arg(long, default_value_t = 200)]
    credentials: u32,
    /// The random seed: one seed gives the same files byte for byte.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// First day (YYYY-MM-DD).
    #[arg(long)]
    start: Option<chrono::NaiveDate>,
    /// Multiply every credential's request rate (above 0, up to 100).
    #[arg(long, default_value_t = 1.0)]
    rate_scale: f64,
    /// Write the daily logs gzip-compressed (CloudTrail files always are).
    #[arg(long)]
    gzip: bool,
    /// What kind of logs to write.
    #[arg(long, value_enum, default_value_t = SampleFormat::Gateway)]
    format: SampleFormat,
    /// The directory to write logs, inventory.csv and labels.csv into.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

pub async fn run(a: SampleArgs) -> Result<ExitCode> {
    let mut opts = sample::SampleOptions {
        days: a.days,
        credentials: a.credentials,
        seed: a.seed,
        gzip: a.gzip,
        rate_scale: a.rate_scale,
        format: a.format,
        ..Default::default()
    };
    if let Some(start) = a.start {
        opts.start = start;
    }
    let out = a.out;
    let s = tokio::task::spawn_blocking({
        let out = out.clone();
        move || sample::generate(&opts, &out)
    })
    .await?
    .with_context(|| format!("generating a sample in {}", out.display()))?;
    print!("{}", report::sample_summary(&s, &out));
    Ok(ExitCode::SUCCESS)
}
