//! The command line: the clap definitions, the flag groups several commands
//! share, and one module per command whose `run` turns parsed arguments into
//! a library call and prints its result through `credtrail::report`.
//!
//! `main` parses, sets up logging, builds the one tokio runtime and calls
//! [`dispatch`]. Blocking work (ingest, sample, the SQL shell) runs on the
//! runtime's blocking pool; everything else is awaited.

mod baseline;
mod cluster;
mod detect;
mod eval;
mod ingest;
mod inventory;
mod lake;
mod report;
mod run;
mod sample;
mod serve;
mod sql;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use credtrail::suppress;

#[derive(Parser)]
#[command(
    name = "credtrail",
    version,
    about = "Watch how non-human credentials are used and flag what a stolen or misused key does"
)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Ingest gateway, CloudTrail, Bedrock or mapped logs (plain or gzip) into the lake.
    ///
    /// Exit status: 0 all records ingested, 3 some records or files were
    /// quarantined (see LAKE/quarantine/), 1 the run failed.
    Ingest(ingest::IngestArgs),
    /// The batch job: ingest the inputs, learn baselines, detect over the days they hold, print incidents.
    Run(run::RunArgs),
    /// Credential inventory: validate it and report governance findings.
    #[command(subcommand)]
    Inventory(inventory::InventoryCmd),
    /// Generate a realistic labelled sample: gateway logs, inventory, labels.
    Sample(sample::SampleArgs),
    /// Learn per-credential baselines from the lake's history (saved under LAKE/models/).
    Baseline(baseline::BaselineArgs),
    /// Run the detectors over days of the lake and write their alerts.
    Detect(detect::DetectArgs),
    /// Score the lake's alerts against labelled anomalies: precision, recall, F1, time to detect.
    Eval(eval::EvalArgs),
    /// Query the lake with SQL: an interactive shell, or -c / -f / stdin for scripts.
    ///
    /// Tables: events, alerts, secret_exposures, quarantine, credentials (with
    /// --inventory) and the detector_<name> views; \dt in the shell lists them.
    Sql(sql::SqlArgs),
    /// Follow gateway logs live: alert as events arrive, commit events to the lake exactly once.
    ///
    /// Alerts are printed on stdout (one JSON object per line) and sent to the
    /// sinks; progress goes to stderr. Runs until SIGINT/SIGTERM, then commits
    /// what is pending; a restart resumes after the last committed line.
    Watch(watch::WatchArgs),
    /// Maintain the lake: `lake check` verifies its files, `lake compact` merges small ones.
    #[command(subcommand)]
    Lake(lake::LakeCmd),
    /// Serve the same tables over Arrow Flight SQL (for BI tools and ADBC/JDBC clients) until Ctrl-C.
    ///
    /// Read-only; listens on loopback unless --allow-remote, which needs tokens and TLS.
    Serve(serve::ServeArgs),
    /// Write one self-contained HTML report of the lake's incidents, with charts (works offline).
    Report(report::ReportArgs),
    /// Run a Ballista scheduler or executor for `--cluster` (baseline, detect, run, sql, serve).
    #[command(subcommand)]
    Cluster(cluster::ClusterCmd),
}

/// Runs one command.
pub async fn dispatch(command: Command) -> Result<ExitCode> {
    match command {
        Command::Ingest(a) => ingest::run(a).await,
        Command::Run(a) => run::run(a).await,
        Command::Inventory(a) => inventory::run(a).await,
        Command::Sample(a) => sample::run(a).await,
        Command::Baseline(a) => baseline::run(a).await,
        Command::Detect(a) => detect::run(a).await,
        Command::Eval(a) => eval::run(a).await,
        Command::Sql(a) => sql::run(a).await,
        Command::Watch(a) => watch::run(a).await,
        Command::Serve(a) => serve::run(a).await,
        Command::Lake(a) => lake::run(a).await,
        Command::Report(a) => report::run(a).await,
        Command::Cluster(a) => cluster::run(a).await,
    }
}

/// The lake a command reads or writes.
#[derive(Args)]
pub struct LakeArg {
    /// The lake directory (ingest and watch create it if missing), or file://…;
    /// s3://bucket/prefix reads a lake on object storage (sql, serve, report, eval).
    #[arg(long, default_value = "lake")]
    pub lake: PathBuf,
}

/// The days a command covers: shared by detect and report.
#[derive(Args)]
pub struct DayRange {
    /// One day (YYYY-MM-DD); or use --from/--to; neither means every day in the lake.
    #[arg(long, conflicts_with_all = ["from", "to"])]
    pub date: Option<String>,
    /// The first day of a range (YYYY-MM-DD), with --to.
    #[arg(long, requires = "to")]
    pub from: Option<String>,
    /// The last day of a range (YYYY-MM-DD, included), with --from.
    #[arg(long, requires = "from")]
    pub to: Option<String>,
}

impl DayRange {
    /// The first and last day asked for; none means every day in the lake.
    pub fn range(self) -> Option<(String, String)> {
        match (self.date, self.from, self.to) {
            (Some(d), _, _) => Some((d.clone(), d)),
            (None, Some(f), Some(t)) => Some((f, t)),
            _ => None,
        }
    }
}

/// How log lines are read: shared by ingest, run and watch.
#[derive(Args)]
pub struct ReadArgs {
    /// A field-mapping TOML for another log source (repeatable); tried before the built-in ones.
    #[arg(long = "mapping", value_name = "FILE")]
    pub mappings: Vec<PathBuf>,
    /// Read every input as this format instead of detecting it (gateway, cloudtrail, or a mapping's name).
    #[arg(long)]
    pub format: Option<String>,
    /// A Bedrock pricing table (TOML like models/bedrock_pricing.toml) instead of the shipped one.
    #[arg(long, value_name = "FILE")]
    pub pricing: Option<PathBuf>,
    /// Event times accepted, FROM..UNTIL (dates or RFC 3339, UNTIL excluded); records timed outside are quarantined.
    #[arg(long, value_name = "FROM..UNTIL", default_value = credtrail::time::DEFAULT_TS_WINDOW)]
    pub ts_window: credtrail::time::TsWindow,
}

/// What the detectors run with: shared by detect, run and watch.
#[derive(Args)]
pub struct DetectorArgs {
    /// A directory of <name>.sql files: built-in names replace those queries, other names run as detectors of their own.
    #[arg(long, value_name = "DIR")]
    pub queries: Option<PathBuf>,
    /// A suppression file (TOML): known-good behaviour that should not alert.
    #[arg(long, value_name = "FILE")]
    pub suppress: Option<PathBuf>,
    /// Days of history a baseline covers when one is learned on the way.
    #[arg(long, default_value_t = 28)]
    pub baseline_days: u32,
    /// Tool categories and dangerous chains (TOML like models/tool_categories.toml) instead of the built-in ones.
    #[arg(long, value_name = "FILE")]
    pub tool_categories: Option<PathBuf>,
    /// API risk tiers for cloud_api_risk (TOML like models/api_risk.toml) instead of the built-in ones.
    #[arg(long, value_name = "FILE")]
    pub api_risk: Option<PathBuf>,
}

impl DetectorArgs {
    pub fn suppressions(&self) -> Result<Option<suppress::Suppressions>> {
        Ok(self.suppress.as_deref().map(suppress::Suppressions::load).transpose()?)
    }
}

/// What the SQL shell and the Flight SQL server open.
#[derive(Args)]
pub struct SessionArgs {
    #[command(flatten)]
    pub lake: LakeArg,
    /// A credential inventory (CSV or TOML) to query as the `credentials` table.
    #[arg(long, value_name = "FILE")]
    pub inventory: Option<PathBuf>,
    /// Memory DataFusion may use; a query needing more spills or fails with "Resources exhausted".
    #[arg(long, default_value = "2GiB", value_parser = credtrail::engine::parse_size)]
    pub memory_limit: usize,
    /// Let SQL read and write files by path (CREATE EXTERNAL TABLE, COPY ... TO); off, so SQL reaches only the lake and the inventory.
    #[arg(long)]
    pub allow_files: bool,
    #[command(flatten)]
    pub cluster: cluster::ClusterArg,
}

impl SessionArgs {
    pub fn options(&self) -> credtrail::analyst::SessionOptions {
        credtrail::analyst::SessionOptions {
            engine: credtrail::engine::EngineOptions {
                memory_limit: Some(self.memory_limit),
                cluster: self.cluster.cluster.clone(),
            },
            inventory: self.inventory.clone(),
            allow_files: self.allow_files,
        }
    }
}

/// The longest interval any duration flag takes: past a day it is a typo.
const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// A duration such as `500ms`, `5s`, `1m`, `1h` (or a bare number of
/// seconds), from 1ms to 24h.
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(1) {
        return Err("must be at least 1ms".into());
    }
    Ok(d)
}

/// Like [`parse_interval`], but zero is allowed (it means "at once").
pub fn parse_delay(s: &str) -> Result<Duration, String> {
    parse_duration(s)
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let d = match s.parse::<f64>() {
        Ok(secs) => Duration::try_from_secs_f64(secs).map_err(|_| format!("{s:?} is not a number of seconds"))?,
        Err(_) => {
            humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration (e.g. 500ms, 5s, 1m): {e}"))?
        }
    };
    if d > MAX_INTERVAL {
        return Err("must be at most 24h".into());
    }
    Ok(d)
}

/// Resolves on Ctrl-C, or SIGTERM on Unix: the one shutdown of `watch` and
/// `serve`. The handlers are installed now, so a signal that arrives before
/// the future is first polled is not lost (nor kills the process).
pub fn shutdown_signal() -> Result<impl Future<Output = ()>> {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let interrupt = interrupt_signal()?;
    Ok(async move {
        #[cfg(unix)]
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => tracing::info!("terminated"),
        }
        #[cfg(not(unix))]
        interrupt.await;
    })
}

/// Resolves on Ctrl-C, its handler installed now like [`shutdown_signal`]'s.
/// The SQL shell takes a fresh one for each statement, so Ctrl-C stops the
/// running query and not the shell.
pub fn interrupt_signal() -> Result<impl Future<Output = ()> + 'static> {
    #[cfg(unix)]
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    Ok(async move {
        #[cfg(unix)]
        interrupt.recv().await;
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("interrupted");
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_todays_forms_and_refuse_absurd_ones() {
        assert_eq!(parse_interval("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_interval("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_interval("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_interval("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_interval("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_delay("0s"), Ok(Duration::ZERO));
        assert!(parse_interval("0s").unwrap_err().contains("at least"));
        assert!(parse_interval("0").is_err());
        assert!(parse_delay("99999999999999999999s").is_err());
        assert!(parse_delay("99999999999999999999").is_err());
        assert!(parse_delay("25h").unwrap_err().contains("at most"));
        assert!(parse_delay("-1").is_err());
        assert!(parse_delay("soon").is_err());
    }
}
