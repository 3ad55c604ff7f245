//! Where streamed alerts go besides stdout: a JSON-lines file, webhooks
//! (chat and incident tools) and a command (e.g. one that revokes the key).
//!
//! Sinks run on their own task so a slow webhook never holds up detection.
//! An alert's id is recorded as delivered only after every sink has had it,
//! so a crash in between delivers it again on restart (at least once; the
//! stable `alert_id` lets receivers drop repeats).

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::alert::{self, Alert};

/// How many times a webhook is tried before the alert is given up on for it.
const WEBHOOK_TRIES: u32 = 3;
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// The rendering of alerts on stdout and in the alerts file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertFormat {
    Jsonl,
    Ocsf,
}

impl AlertFormat {
    pub fn render(self, a: &Alert) -> String {
        match self {
            AlertFormat::Jsonl => serde_json::to_string(a).expect("alerts serialize"),
            AlertFormat::Ocsf => alert::to_ocsf(a).to_string(),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct SinkOptions {
    pub file: Option<PathBuf>,
    pub webhooks: Vec<String>,
    pub command: Option<String>,
}

/// The ids of alerts delivered in earlier runs, from the delivery log.
pub fn delivered(log: &Path) -> io::Result<HashSet<String>> {
    let f = match File::open(log) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(HashSet::new()),
        Err(e) => return Err(e),
    };
    let mut out = HashSet::new();
    for line in BufReader::new(f).lines() {
        let line = line?;
        if let Some(id) = serde_json::from_str::<Value>(&line).ok().and_then(|v| v["alert_id"].as_str().map(String::from))
        {
            out.insert(id);
        }
    }
    Ok(out)
}

/// Starts the sink task. Alerts sent to the returned channel are delivered
/// in order; the task ends when the channel closes and everything is sent.
pub fn spawn(
    opts: SinkOptions,
    format: AlertFormat,
    log: PathBuf,
) -> io::Result<(mpsc::UnboundedSender<Alert>, tokio::task::JoinHandle<()>)> {
    let mut file = match &opts.file {
        Some(p) => Some(OpenOptions::new().create(true).append(true).open(p)?),
        None => None,
    };
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut log_file = OpenOptions::new().create(true).append(true).open(&log)?;
    let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(WEBHOOK_TIMEOUT)).build().into();
    let (tx, mut rx) = mpsc::unbounded_channel::<Alert>();
    let task = tokio::spawn(async move {
        while let Some(a) = rx.recv().await {
            if let (Some(f), Some(p)) = (file.as_mut(), &opts.file)
                && let Err(e) = writeln!(f, "{}", format.render(&a)).and_then(|_| f.sync_data())
            {
                tracing::error!(file = %p.display(), error = %e, alert = %a.alert_id, "cannot write an alert to the alerts file");
            }
            for url in &opts.webhooks {
                post(&agent, url, &a).await;
            }
            if let Some(cmd) = &opts.command {
                run_command(cmd, &a).await;
            }
            let record = serde_json::json!({"alert_id": a.alert_id, "day": crate::time::day_of(a.window_start_ms)});
            if let Err(e) = writeln!(log_file, "{record}").and_then(|_| log_file.sync_data()) {
                tracing::error!(file = %log.display(), error = %e, "cannot record a delivered alert");
            }
        }
    });
    Ok((tx, task))
}

/// The webhook body: the alert, plus a `text` line that chat tools (Slack,
/// Mattermost, Teams workflows) show as the message.
fn webhook_body(a: &Alert) -> Value {
    let mut v = serde_json::to_value(a).expect("alerts serialize");
    v["text"] = Value::String(format!("[credtrail {}] {}", a.severity.as_str(), a.explanation));
    v
}

async fn post(agent: &ureq::Agent, url: &str, a: &Alert) {
    let body = webhook_body(a).to_string();
    for attempt in 1..=WEBHOOK_TRIES {
        let (agent, url_owned, body_owned) = (agent.clone(), url.to_string(), body.clone());
        let sent = tokio::task::spawn_blocking(move || {
            agent.post(&url_owned).header("content-type", "application/json").send(body_owned.as_bytes()).map(|_| ())
        })
        .await;
        match sent {
            Ok(Ok(())) => return,
            Ok(Err(e)) if attempt < WEBHOOK_TRIES => {
                tracing::warn!(url, attempt, error = %e, "webhook failed; retrying");
                tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
            }
            Ok(Err(e)) => tracing::error!(url, error = %e, alert = %a.alert_id, "webhook failed; alert not delivered there"),
            Err(e) => {
                tracing::error!(url, error = %e, "webhook task failed");
                return;
            }
        }
    }
}

/// Runs the `--on-alert` command through the shell with the alert's JSON on
/// stdin and its key fields in the environment.
async fn run_command(cmd: &str, a: &Alert) {
    let spawned = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("CREDTRAIL_ALERT_ID", &a.alert_id)
        .env("CREDTRAIL_CREDENTIAL_ID", &a.credential_id)
        .env("CREDTRAIL_SEVERITY", a.severity.as_str())
        .env("CREDTRAIL_DETECTOR", &a.detector)
        .env("CREDTRAIL_FINDING", &a.finding)
        .stdin(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(command = cmd, error = %e, "cannot run the --on-alert command");
            return;
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        let body = format!("{}\n", serde_json::to_string(a).expect("alerts serialize"));
        // A command that does not read its input is fine.
        let _ = stdin.write_all(body.as_bytes()).await;
    }
    match tokio::time::timeout(COMMAND_TIMEOUT, child.wait()).await {
        Ok(Ok(s)) if s.success() => {}
        Ok(Ok(s)) => tracing::error!(command = cmd, status = %s, alert = %a.alert_id, "--on-alert command failed"),
        Ok(Err(e)) => tracing::error!(command = cmd, error = %e, "--on-alert command failed"),
        Err(_) => tracing::error!(command = cmd, alert = %a.alert_id, "--on-alert command timed out; killed"),
    }
}
