//! `credtrail watch`: follow logs live until Ctrl-C or SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Args;

use credtrail::report;
use credtrail::stream::{self, sinks::AlertFormat};

use super::{DetectorArgs, LakeArg, ReadArgs, parse_delay, parse_interval, shutdown_signal};

#[derive(Args)]
pub struct WatchArgs {
    /// Files or glob patterns to follow (quote globs); `-` reads stdin.
    #[arg(long = "follow", short = 'f', value_name = "PATH", required = true, num_args = 1..)]
    follow: Vec<String>,
    #[command(flatten)]
    lake: LakeArg,
    /// Names this watcher's checkpoint in the lake (two watchers of one lake need two names).
    #[arg(long, default_value = "watch")]
    name: String,
    /// Read files already there at the first start from their beginning (default: only what is written from now on).
    #[arg(long)]
    from_beginning: bool,
    /// The credential inventory (CSV or TOML): enables out-of-scope checks.
    #[arg(long, value_name = "FILE")]
    inventory: Option<PathBuf>,
    #[command(flatten)]
    read: ReadArgs,
    /// Commit to the lake once this many events are pending…
    #[arg(long, default_value_t = 100_000)]
    flush_events: usize,
    /// …or once the oldest pending event is this old (e.g. 500ms, 10s, 1m; 0 to 24h).
    #[arg(long, default_value = "5s", value_parser = parse_delay)]
    flush_interval: Duration,
    /// How often files are checked for new lines (1ms to 24h).
    #[arg(long, default_value = "100ms", value_parser = parse_interval)]
    poll_interval: Duration,
    /// Also append alerts to this file (JSON lines, or OCSF with -o ocsf).
    #[arg(long, value_name = "FILE")]
    alerts: Option<PathBuf>,
    /// POST each alert as JSON (with a chat-friendly `text` field) to this URL (repeatable).
    #[arg(long, value_name = "URL")]
    webhook: Vec<String>,
    /// Run this shell command for each alert, with its JSON on stdin and
    /// CREDTRAIL_ALERT_ID, CREDTRAIL_CREDENTIAL_ID, CREDTRAIL_SEVERITY, CREDTRAIL_DETECTOR set.
    #[arg(long, value_name = "COMMAND")]
    on_alert: Option<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics (loopback only, e.g. 127.0.0.1:9464).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
    /// How often progress is logged on stderr (1ms to 24h).
    #[arg(long, default_value = "10s", value_parser = parse_interval)]
    progress_every: Duration,
    #[command(flatten)]
    detectors: DetectorArgs,
    /// How alerts are printed.
    #[arg(short, long, value_enum, default_value_t = AlertFormat::Jsonl)]
    output: AlertFormat,
}

pub async fn run(a: WatchArgs) -> Result<ExitCode> {
    let suppressions = a.detectors.suppressions()?;
    let opts = stream::WatchOptions {
        follow: a.follow,
        lake: a.lake.lake,
        name: a.name,
        from_beginning: a.from_beginning,
        mappings: a.read.mappings,
        format: a.read.format,
        pricing: a.read.pricing,
        ts_window: a.read.ts_window,
        inventory: a.inventory,
        queries: a.detectors.queries,
        tool_categories: a.detectors.tool_categories,
        api_risk: a.detectors.api_risk,
        suppressions,
        baseline_days: a.detectors.baseline_days,
        flush_events: a.flush_events.max(1),
        flush_interval: a.flush_interval,
        poll_interval: a.poll_interval,
        output: a.output,
        sinks: stream::sinks::SinkOptions { file: a.alerts, webhooks: a.webhook, command: a.on_alert },
        metrics: a.metrics,
        progress_every: a.progress_every,
    };
    let s = stream::watch(opts, shutdown_signal()?).await?;
    eprint!("{}", report::watch_stopped(&s));
    Ok(ExitCode::SUCCESS)
}
