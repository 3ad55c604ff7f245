//! `credtrail report`: the HTML report of a lake's incidents.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use credtrail::html::{self, ReportOptions};
use credtrail::report;

use super::{DayRange, LakeArg};

#[derive(Args)]
pub struct ReportArgs {
    #[command(flatten)]
    lake: LakeArg,
    #[command(flatten)]
    days: DayRange,
    /// The HTML file to write (one self-contained page).
    #[arg(short, long, default_value = "report.html")]
    output: PathBuf,
    /// Open the report in the desktop's browser once written.
    #[arg(long)]
    open: bool,
}

pub async fn run(a: ReportArgs) -> Result<ExitCode> {
    let (from, to) = a.days.range().unzip();
    let opts = ReportOptions { lake: a.lake.lake, from, to };
    let written = html::write(&opts, &a.output).await?;
    print!("{}", report::html_written(&written, &a.output));
    if a.open {
        open(&a.output)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Hands the file to the desktop's opener.
fn open(path: &std::path::Path) -> Result<()> {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else if cfg!(windows) {
        "explorer"
    } else {
        "xdg-open"
    };
    let status = std::process::Command::new(opener).arg(path).status();
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => anyhow::bail!("{opener} {} exited with {s}; open the file in a browser", path.display()),
        Err(e) => anyhow::bail!("could not run {opener} ({e}); open {} in a browser", path.display()),
    }
}
