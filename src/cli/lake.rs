//! `credtrail lake`: keep the lake sound (`check`) and lean (`compact`).

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Subcommand;

use credtrail::lake::compact::{self, Policy};
use credtrail::lake::{self, Lake};
use credtrail::report;

use super::{DayRange, LakeArg};

#[derive(Subcommand)]
pub enum LakeCmd {
    /// Verify every data file against its commit record (size, rows, hash) and decode every page.
    ///
    /// Prints one line per bad file (path: reason). Exit status: 0 all files
    /// are sound, 1 some file is damaged or missing (or the check failed).
    Check {
        #[command(flatten)]
        lake: LakeArg,
    },
    /// Merge each day's small event files (under 65,536 rows) into as few files as the lake's writer makes.
    ///
    /// A lake fed in small steps (a watcher's micro-batches, hourly ingests)
    /// holds many small files a day, and every query opens each one. `watch`
    /// and `ingest` already merge them by size tier as they write; this
    /// merges all of them, once. Rows do not change; the files are replaced
    /// in one commit, so a crash leaves the old ones or the new ones. A file
    /// that no longer matches its commit record is left as it is (see `lake
    /// check`). The next baseline re-reads the days it compacted.
    Compact {
        #[command(flatten)]
        lake: LakeArg,
        #[command(flatten)]
        days: DayRange,
    },
}

pub async fn run(cmd: LakeCmd) -> Result<ExitCode> {
    let root = match cmd {
        LakeCmd::Check { lake: LakeArg { lake: root } } => root,
        LakeCmd::Compact { lake: LakeArg { lake: root }, days } => return compact(root, days).await,
    };
    // Reads every byte of the lake: off the async workers.
    let report =
        tokio::task::spawn_blocking(move || lake::check::check(&Lake::open(&root, lake::Open::Read)?)).await??;
    for bad in &report.bad {
        println!("{}: {}", bad.path.display(), bad.reason);
    }
    eprintln!(
        "checked {} file(s), {} against their commit records: {} bad",
        report.files,
        report.recorded,
        report.bad.len()
    );
    Ok(if report.bad.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn compact(root: std::path::PathBuf, days: DayRange) -> Result<ExitCode> {
    let range = days.range();
    for d in range.iter().flat_map(|(from, to)| [from, to]) {
        if credtrail::time::parse_day(d).is_none() {
            bail!("{d:?} is not a date (YYYY-MM-DD)");
        }
    }
    // Reads and writes whole files: off the async workers.
    let done = tokio::task::spawn_blocking(move || -> Result<compact::Compacted> {
        let lake = Lake::open(&root, lake::Open::Read)?;
        let txn = lake.begin()?;
        let days = compact::days(&lake, range)?;
        let done = compact::compact(&txn, &days, Policy::All)?;
        if done.merged > 0 {
            txn.commit(Vec::new())?;
        }
        Ok(done)
    })
    .await??;
    print!("{}", report::compacted(&done));
    Ok(ExitCode::SUCCESS)
}
