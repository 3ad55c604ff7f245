//! The `credtrail` command line: parses arguments and hands off to the library.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

use credtrail::{alert, baseline, detect, eval, flight, ingest, inventory, sample, shell, sql, stream, suppress};

/// Exit status when a run finished but quarantined records or failed files.
const EXIT_QUARANTINED: u8 = 3;

#[derive(Parser)]
#[command(
    name = "credtrail",
    version,
    about = "Watch how non-human credentials are used and flag what a stolen or misused key does"
)]
struct Cli {
    /// More log output on stderr (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Ingest gateway, CloudTrail, Bedrock or mapped logs (plain or gzip) into the lake.
    ///
    /// Exit status: 0 all records ingested, 3 some records or files were
    /// quarantined (see LAKE/quarantine/), 1 the run failed.
    Ingest(IngestArgs),
    /// The batch job: ingest the inputs, learn baselines, detect over the days they hold, print incidents.
    Run(RunArgs),
    /// Credential inventory: validate it and report governance findings.
    #[command(subcommand)]
    Inventory(InventoryCmd),
    /// Generate a realistic labelled sample: gateway logs, inventory, labels.
    Sample(SampleArgs),
    /// Learn per-credential baselines from the lake's history (saved under LAKE/models/).
    Baseline(BaselineArgs),
    /// Run the detectors over days of the lake and write their alerts.
    Detect(DetectArgs),
    /// Score the lake's alerts against labelled anomalies: precision, recall, F1, time to detect.
    Eval(EvalArgs),
    /// Query the lake with SQL: an interactive shell, or -c / -f / stdin for scripts.
    ///
    /// Tables: events, alerts, secret_exposures, quarantine, credentials (with
    /// --inventory) and the detector_<name> views; \dt in the shell lists them.
    Sql(SqlArgs),
    /// Follow gateway logs live: alert as events arrive, commit events to the lake exactly once.
    ///
    /// Alerts are printed on stdout (one JSON object per line) and sent to the
    /// sinks; progress goes to stderr. Runs until SIGINT/SIGTERM, then commits
    /// what is pending; a restart resumes after the last committed line.
    Watch(WatchArgs),
    /// Serve the same tables over Arrow Flight SQL (for BI tools and ADBC/JDBC clients) until Ctrl-C.
    ///
    /// Read-only and without authentication: listens on loopback unless --allow-remote.
    Serve(ServeArgs),
}

#[derive(Args)]
struct IngestArgs {
    /// Files or directories (directories are walked for *.json, *.jsonl, *.ndjson, *.log, *.gz, *.txt).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    #[command(flatten)]
    common: IngestCommon,
}

#[derive(Args)]
struct IngestCommon {
    /// The lake directory (created if missing).
    #[arg(long, default_value = "lake")]
    lake: PathBuf,
    /// A field-mapping TOML for another log source (repeatable); tried before the built-in ones.
    #[arg(long = "mapping", value_name = "FILE")]
    mappings: Vec<PathBuf>,
    /// Read every file as this format instead of detecting it (gateway, cloudtrail, or a mapping's name).
    #[arg(long)]
    format: Option<String>,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// Never draw a progress bar.
    #[arg(long)]
    no_progress: bool,
    /// A Bedrock pricing table (TOML like models/bedrock_pricing.toml) instead of the shipped one.
    #[arg(long, value_name = "FILE")]
    pricing: Option<PathBuf>,
}

#[derive(Args)]
struct RunArgs {
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

#[derive(Subcommand)]
enum InventoryCmd {
    /// Validate an inventory and report ownerless, expired, long-lived and never-used credentials.
    Check {
        /// The inventory file (CSV or TOML).
        inventory: PathBuf,
        /// A lake to compare usage against (enables never-used, unknown and expired-but-used).
        #[arg(long)]
        lake: Option<PathBuf>,
        #[command(flatten)]
        check: CheckArgs,
        /// Print findings as JSON lines.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct CheckArgs {
    /// Credentials older than this many days are long-lived.
    #[arg(long, default_value_t = 90)]
    max_age_days: u32,
    /// Warn about credentials expiring within this many days.
    #[arg(long, default_value_t = 14)]
    expiring_within_days: u32,
    /// Evaluate as of this date (YYYY-MM-DD or RFC 3339) instead of now.
    #[arg(long)]
    now: Option<String>,
}

#[derive(Args)]
struct SampleArgs {
    #[arg(long, default_value_t = 7)]
    days: u32,
    #[arg(long, default_value_t = 200)]
    credentials: u32,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// First day (YYYY-MM-DD).
    #[arg(long)]
    start: Option<chrono::NaiveDate>,
    /// Multiply every credential's request rate.
    #[arg(long, default_value_t = 1.0)]
    rate_scale: f64,
    /// Write the daily logs gzip-compressed (CloudTrail files always are).
    #[arg(long)]
    gzip: bool,
    /// gateway: daily JSON-lines logs; cloudtrail: AWSLogs/… hourly CloudTrail delivery files, inventory keyed by access key.
    #[arg(long, value_enum, default_value_t = SampleFormatArg::Gateway)]
    format: SampleFormatArg,
    #[arg(long)]
    out: PathBuf,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SampleFormatArg {
    Gateway,
    Cloudtrail,
}

#[derive(Args)]
struct DetectArgs {
    #[arg(long, default_value = "lake")]
    lake: PathBuf,
    /// One day (YYYY-MM-DD); or use --from/--to; neither means every day in the lake.
    #[arg(long, conflicts_with_all = ["from", "to"])]
    date: Option<String>,
    #[arg(long, requires = "to")]
    from: Option<String>,
    #[arg(long, requires = "from")]
    to: Option<String>,
    /// The credential inventory (CSV or TOML): enables out-of-scope and governance detection.
    #[arg(long)]
    inventory: Option<PathBuf>,
    #[command(flatten)]
    detect: DetectCommon,
}

#[derive(Args)]
struct DetectCommon {
    /// A directory of <name>.sql files: built-in names replace those queries, other names run as detectors of their own.
    #[arg(long)]
    queries: Option<PathBuf>,
    /// A suppression file (TOML): known-good behaviour that should not alert.
    #[arg(long, value_name = "FILE")]
    suppress: Option<PathBuf>,
    /// Days of history a baseline covers when detect learns one.
    #[arg(long, default_value_t = 28)]
    baseline_days: u32,
    /// How to print alerts: incidents as a table, JSON lines, or OCSF Detection Findings (class 2004).
    #[arg(short, long, value_enum, default_value_t = AlertFormat::Table)]
    output: AlertFormat,
    /// Credentials older than this many days are long-lived (governance).
    #[arg(long, default_value_t = 90)]
    max_age_days: u32,
    /// Tool categories and dangerous chains (TOML like models/tool_categories.toml) instead of the built-in ones.
    #[arg(long, value_name = "FILE")]
    tool_categories: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum AlertFormat {
    Table,
    Jsonl,
    Ocsf,
}

#[derive(Args)]
struct WatchArgs {
    /// Files or glob patterns to follow (quote globs); `-` reads stdin.
    #[arg(long = "follow", short = 'f', value_name = "PATH", required = true, num_args = 1..)]
    follow: Vec<String>,
    #[arg(long, default_value = "lake")]
    lake: PathBuf,
    /// Names this watcher's checkpoint in the lake (two watchers of one lake need two names).
    #[arg(long, default_value = "watch")]
    name: String,
    /// Read files already there at the first start from their beginning (default: only what is written from now on).
    #[arg(long)]
    from_beginning: bool,
    /// The credential inventory (CSV or TOML): enables out-of-scope checks.
    #[arg(long)]
    inventory: Option<PathBuf>,
    /// A field-mapping TOML for another log source (repeatable).
    #[arg(long = "mapping", value_name = "FILE")]
    mappings: Vec<PathBuf>,
    /// Read every line as this format instead of detecting it.
    #[arg(long)]
    format: Option<String>,
    /// A Bedrock pricing table (TOML like models/bedrock_pricing.toml) instead of the shipped one.
    #[arg(long, value_name = "FILE")]
    pricing: Option<PathBuf>,
    /// Commit to the lake once this many events are pending…
    #[arg(long, default_value_t = 100_000)]
    flush_events: usize,
    /// …or once the oldest pending event is this old (e.g. 500ms, 10s, 1m).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    flush_interval: std::time::Duration,
    /// How often files are checked for new lines.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    poll_interval: std::time::Duration,
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
    /// How often progress is logged on stderr.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    progress_every: std::time::Duration,
    /// A directory of <name>.sql files replacing built-in detector queries.
    #[arg(long)]
    queries: Option<PathBuf>,
    /// A suppression file (TOML).
    #[arg(long, value_name = "FILE")]
    suppress: Option<PathBuf>,
    /// Days of history a baseline covers when watch learns one.
    #[arg(long, default_value_t = 28)]
    baseline_days: u32,
    /// Tool categories and dangerous chains (TOML) instead of the built-in ones.
    #[arg(long, value_name = "FILE")]
    tool_categories: Option<PathBuf>,
    /// How alerts are printed: JSON lines or OCSF Detection Findings.
    #[arg(short, long, value_enum, default_value_t = StreamFormat::Jsonl)]
    output: StreamFormat,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StreamFormat {
    Jsonl,
    Ocsf,
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let (num, unit) = s.find(|c: char| !c.is_ascii_digit() && c != '.').map_or((s, "s"), |i| s.split_at(i));
    let n: f64 = num.parse().map_err(|_| format!("{s:?} is not a duration (e.g. 500ms, 5s, 1m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    Ok(std::time::Duration::from_secs_f64(secs))
}

#[derive(Args)]
struct BaselineArgs {
    #[arg(long, default_value = "lake")]
    lake: PathBuf,
    /// The last day of history (YYYY-MM-DD); default: the lake's last day.
    #[arg(long)]
    until: Option<String>,
    /// How many days of history, ending at --until.
    #[arg(long, default_value_t = 28)]
    days: u32,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct EvalArgs {
    #[arg(long, default_value = "lake")]
    lake: PathBuf,
    /// Labelled anomalies (CSV: id, kind, credential_id, start, end, description), or labelled
    /// attack records (`.jsonl`: technique, request_id, event_id, event) for technique recall.
    #[arg(long)]
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

#[derive(Args)]
struct SqlArgs {
    #[command(flatten)]
    session: SessionArgs,
    /// Statements to run (`;`-separated), then exit; stops at the first error.
    #[arg(short = 'c', long = "command", conflicts_with = "file")]
    command: Option<String>,
    /// A file of `;`-separated statements to run, then exit; stops at the first error.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<PathBuf>,
    /// Output format [default: table on a terminal, csv otherwise].
    #[arg(long, value_enum)]
    format: Option<OutputFormat>,
    /// The file --format parquet writes (atomically: a temporary file renamed into place).
    #[arg(short = 'o', long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Replace `{NAME}` in statements with VALUE (quotes doubled; write '{NAME}'). Repeatable.
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
    params: Vec<(String, String)>,
}

/// What the shell and the Flight SQL server open.
#[derive(Args)]
struct SessionArgs {
    #[arg(long, default_value = "lake")]
    lake: PathBuf,
    /// A credential inventory (CSV or TOML) to query as the `credentials` table.
    #[arg(long)]
    inventory: Option<PathBuf>,
    /// Memory DataFusion may use; a query needing more spills or fails with "Resources exhausted".
    #[arg(long, default_value = "2GiB", value_parser = sql::parse_size)]
    memory_limit: usize,
}

impl SessionArgs {
    fn options(&self) -> sql::SessionOptions {
        sql::SessionOptions { memory_limit: Some(self.memory_limit), inventory: self.inventory.clone() }
    }
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    session: SessionArgs,
    /// Address to listen on; port 0 picks a free one (the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:32010")]
    listen: String,
    /// Allow listening on a non-loopback address (there is no authentication: anyone who reaches it can query).
    #[arg(long)]
    allow_remote: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum OutputFormat {
    Table,
    Csv,
    Json,
    Parquet,
}

fn parse_param(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not NAME=VALUE")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A watcher's progress is worth seeing by default; other commands keep stderr quiet.
    let watching = matches!(cli.command, Command::Watch(_));
    init_tracing(cli.verbose + u8::from(watching));
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();
}

fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Ingest(a) => {
            let summary = do_ingest(a.inputs, &a.common)?;
            Ok(status_of(&summary))
        }
        Command::Run(a) => {
            let summary = do_ingest(a.inputs, &a.common)?;
            // The days this run brought in; on a rerun with nothing new, the whole lake.
            let range = match (summary.days.first(), summary.days.last()) {
                (Some(a), Some(z)) => Some((a.clone(), z.clone())),
                _ => tokio::runtime::Runtime::new()?.block_on(detect::lake_days(&a.common.lake))?,
            };
            if let Some((from, to)) = range {
                do_detect(&a.common.lake, from, to, Some(a.inventory.clone()), &a.detect)?;
            }
            Ok(status_of(&summary))
        }
        Command::Inventory(InventoryCmd::Check { inventory, lake, check, json }) => {
            let findings = check_inventory(&inventory, lake.as_deref(), &check)?;
            if json {
                for f in &findings {
                    println!("{}", serde_json::to_string(f)?);
                }
            } else if findings.is_empty() {
                println!("{}: no findings", inventory.display());
            } else {
                println!("{}", inventory::format_findings_table(&findings));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Sample(a) => {
            let mut opts = sample::SampleOptions {
                days: a.days,
                credentials: a.credentials,
                seed: a.seed,
                gzip: a.gzip,
                rate_scale: a.rate_scale,
                format: match a.format {
                    SampleFormatArg::Gateway => sample::SampleFormat::Gateway,
                    SampleFormatArg::Cloudtrail => sample::SampleFormat::CloudTrail,
                },
                ..Default::default()
            };
            if let Some(start) = a.start {
                opts.start = start;
            }
            let s = sample::generate(&opts, &a.out)
                .with_context(|| format!("generating a sample in {}", a.out.display()))?;
            println!(
                "wrote {} events in {} file(s) for {} credentials with {} labelled anomalies to {}\n  inventory: {}\n  labels:    {}",
                s.events,
                s.files.len(),
                s.credentials,
                s.anomalies,
                a.out.display(),
                s.inventory.display(),
                s.labels.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Baseline(a) => {
            let rt = tokio::runtime::Runtime::new()?;
            let until = match a.until {
                Some(u) => u,
                None => match rt.block_on(detect::lake_days(&a.lake))? {
                    Some((_, last)) => last,
                    None => anyhow::bail!("{}: the lake has no events to learn from", a.lake.display()),
                },
            };
            let opts = baseline::BaselineOptions { lake: a.lake.clone(), until, days: a.days };
            let s = rt.block_on(baseline::learn(&opts))?;
            if a.json {
                println!("{}", serde_json::to_string(&s)?);
            } else {
                println!(
                    "baseline until={} (history {} to {}): {} credentials ({} in cold start), {} learned scope values, \
                     {} tool transitions of {} principals\n  saved in {}/models/ (tables baseline_credentials, \
                     baseline_profile, baseline_scope, baseline_transitions)",
                    s.until,
                    s.history_from,
                    s.until,
                    s.credentials,
                    s.cold_start,
                    s.scope_values,
                    s.transitions,
                    s.principals,
                    a.lake.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Detect(a) => {
            let (from, to) = match (a.date, a.from, a.to) {
                (Some(d), _, _) => (d.clone(), d),
                (None, Some(f), Some(t)) => (f, t),
                _ => match tokio::runtime::Runtime::new()?.block_on(detect::lake_days(&a.lake))? {
                    Some(range) => range,
                    None => anyhow::bail!("{}: the lake has no events to detect on", a.lake.display()),
                },
            };
            do_detect(&a.lake, from, to, a.inventory, &a.detect)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Eval(a) if eval::techniques::is_technique_labels(&a.labels) => {
            let labels = eval::techniques::load(&a.labels)?;
            let alerts = tokio::runtime::Runtime::new()?.block_on(eval::techniques::lake_alerts(&a.lake))?;
            let report = eval::techniques::score(&labels, &alerts);
            if a.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", report.format_table());
            }
            if report.recall < a.min_recall.unwrap_or(0.0) {
                eprintln!("technique recall {:.3} is below the required recall", report.recall);
                return Ok(ExitCode::FAILURE);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Eval(a) => {
            let labels = eval::load_labels(&a.labels)?;
            let alerts = tokio::runtime::Runtime::new()?.block_on(eval::lake_alerts(&a.lake))?;
            let report = eval::score(&labels, &alerts);
            if a.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", report.format_table());
            }
            let below = report.below(a.min_recall.unwrap_or(0.0), a.min_precision.unwrap_or(0.0));
            if !below.is_empty() {
                let kinds: Vec<&str> = below.iter().map(|k| k.kind.as_str()).collect();
                eprintln!("below the required recall/precision: {}", kinds.join(", "));
                return Ok(ExitCode::FAILURE);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Sql(a) => {
            let format = match a.format {
                None => shell::Format::for_stdout(),
                Some(OutputFormat::Table) => shell::Format::Table,
                Some(OutputFormat::Csv) => shell::Format::Csv,
                Some(OutputFormat::Json) => shell::Format::Json,
                Some(OutputFormat::Parquet) => shell::Format::Parquet,
            };
            let opts = shell::ShellOptions {
                lake: a.session.lake.clone(),
                session: a.session.options(),
                format,
                output: a.output,
                params: a.params,
            };
            let mut sh = shell::Shell::open(opts)?;
            sh.run(shell::Input::choose(a.command, a.file), &mut std::io::stdout().lock())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Watch(a) => {
            let suppressions = a.suppress.as_deref().map(suppress::Suppressions::load).transpose()?;
            let output = match a.output {
                StreamFormat::Jsonl => stream::sinks::AlertFormat::Jsonl,
                StreamFormat::Ocsf => stream::sinks::AlertFormat::Ocsf,
            };
            let opts = stream::WatchOptions {
                follow: a.follow,
                lake: a.lake,
                name: a.name,
                from_beginning: a.from_beginning,
                mappings: a.mappings,
                format: a.format,
                pricing: a.pricing,
                inventory: a.inventory,
                queries: a.queries,
                tool_categories: a.tool_categories,
                suppressions,
                baseline_days: a.baseline_days,
                flush_events: a.flush_events.max(1),
                flush_interval: a.flush_interval,
                poll_interval: a.poll_interval,
                output,
                sinks: stream::sinks::SinkOptions { file: a.alerts, webhooks: a.webhook, command: a.on_alert },
                metrics: a.metrics,
                progress_every: a.progress_every,
            };
            let s = tokio::runtime::Runtime::new()?.block_on(stream::watch(opts))?;
            eprintln!(
                "watch stopped: {} lines, {} events, {} quarantined, {} secrets redacted, {} alerts, {} commits{}",
                s.lines,
                s.events,
                s.quarantined,
                s.redacted,
                s.alerts,
                s.flushes,
                if s.late_events > 0 { format!(", {} events too late to judge live", s.late_events) } else { String::new() }
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(a) => {
            let opts = flight::ServeOptions {
                lake: a.session.lake.clone(),
                session: a.session.options(),
                listen: a.listen,
                allow_remote: a.allow_remote,
            };
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(flight::serve(&opts, |addr| {
                // The first line of stdout, so a script that asked for port 0 learns the port.
                println!("credtrail serve: Flight SQL on grpc://{addr} (lake {})", opts.lake.display());
                let _ = std::io::Write::flush(&mut std::io::stdout());
            }))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn do_ingest(inputs: Vec<PathBuf>, c: &IngestCommon) -> Result<ingest::IngestSummary> {
    let opts = ingest::IngestOptions {
        inputs,
        lake: c.lake.clone(),
        mappings: c.mappings.clone(),
        format: c.format.clone(),
        progress: !c.no_progress && !c.json && std::io::stderr().is_terminal(),
        pricing: c.pricing.clone(),
    };
    let summary = ingest::ingest(&opts)?;
    if c.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print!("{}", summary.render_text());
    }
    Ok(summary)
}

fn do_detect(
    lake: &std::path::Path,
    from: String,
    to: String,
    inventory: Option<PathBuf>,
    c: &DetectCommon,
) -> Result<()> {
    let suppressions = c.suppress.as_deref().map(suppress::Suppressions::load).transpose()?;
    let opts = detect::DetectOptions {
        lake: lake.to_path_buf(),
        from,
        to,
        inventory,
        queries: c.queries.clone(),
        baseline_days: c.baseline_days,
        suppressions,
        max_age_days: c.max_age_days,
        tool_categories: c.tool_categories.clone(),
    };
    let report = tokio::runtime::Runtime::new()?.block_on(detect::detect(&opts))?;
    match c.output {
        AlertFormat::Jsonl => {
            for a in report.active() {
                println!("{}", serde_json::to_string(a)?);
            }
        }
        AlertFormat::Ocsf => {
            for a in report.active() {
                println!("{}", alert::to_ocsf(a));
            }
        }
        AlertFormat::Table => print!("{}", detect::render_report(&report)),
    }
    if let Some(s) = &opts.suppressions {
        let end = credtrail::time::parse_date_or_ts(&opts.to).unwrap_or(0) + 86_400_000;
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

fn status_of(summary: &ingest::IngestSummary) -> ExitCode {
    if summary.has_problems() { ExitCode::from(EXIT_QUARANTINED) } else { ExitCode::SUCCESS }
}

fn check_inventory(
    path: &std::path::Path,
    lake: Option<&std::path::Path>,
    a: &CheckArgs,
) -> Result<Vec<inventory::Finding>> {
    let inv = inventory::Inventory::load(path)?;
    let now_ms = match &a.now {
        Some(s) => credtrail::time::parse_date_or_ts(s).with_context(|| format!("--now {s:?} is not a date"))?,
        None => chrono::Utc::now().timestamp_millis(),
    };
    let usage = match lake {
        Some(l) => {
            let rt = tokio::runtime::Runtime::new()?;
            Some(rt.block_on(sql::credential_usage(l))?)
        }
        None => None,
    };
    let opts =
        inventory::CheckOptions { now_ms, max_age_days: a.max_age_days, expiring_within_days: a.expiring_within_days };
    Ok(inventory::check(&inv, usage.as_ref(), &opts))
}
