//! `credtrail lake check`: verify the lake's files against their commit records.

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;

use credtrail::lake::{self, Lake};

use super::LakeArg;

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
}

pub async fn run(cmd: LakeCmd) -> Result<ExitCode> {
    let LakeCmd::Check { lake: LakeArg { lake: root } } = cmd;
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
