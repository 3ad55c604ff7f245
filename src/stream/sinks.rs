//! Where streamed alerts go besides stdout: a JSON-lines file, webhooks
//! (chat and incident tools) and a command (e.g. one that revokes the key).
//!
//! Sinks run on their own task so a slow webhook never holds up detection.
//! An alert's id is recorded as delivered only after every sink took it, so
//! a crash in between delivers it again on restart (at least once; the
//! stable `alert_id` lets receivers drop repeats). An alert some sink
//! refused (a webhook that failed every try, a failing command, an
//! unwritable alerts file) is logged with a `failed` reason instead and
//! counts as undelivered: the watcher sends it again when it detects it
//! after the next start, like one lost to a crash.

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AlertFormat {
    /// One alert per line as JSON.
    Jsonl,
    /// One OCSF Detection Finding (class 2004) per line.
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
    match File::open(log) {
        Ok(f) => delivered_in(BufReader::new(f)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(HashSet::new()),
        Err(e) => Err(e),
    }
}

/// The ids of alerts delivered, from a delivery log's lines.
pub fn delivered_in(log: impl BufRead) -> io::Result<HashSet<String>> {
    let mut out = HashSet::new();
    for line in log.lines() {
        let Ok(v) = serde_json::from_str::<Value>(&line?) else { continue };
        // A `failed` record keeps the reason; the alert is still owed.
        if v.get("failed").is_none()
            && let Some(id) = v["alert_id"].as_str()
        {
            out.insert(id.to_string());
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
            let mut failed = Vec::new();
            if let (Some(f), Some(p)) = (file.as_mut(), &opts.file)
                && let Err(e) = writeln!(f, "{}", format.render(&a)).and_then(|_| f.sync_data())
            {
                tracing::error!(file = %p.display(), error = %e, alert = %a.alert_id, "cannot write an alert to the alerts file");
                failed.push(format!("alerts file {}: {e}", p.display()));
            }
            for url in &opts.webhooks {
                if let Err(e) = post(&agent, url, &a).await {
                    failed.push(format!("webhook {url}: {e}"));
                }
            }
            if let Some(cmd) = &opts.command
                && let Err(e) = run_command(cmd, &a).await
            {
                failed.push(format!("command: {e}"));
            }
            let mut record = serde_json::json!({"alert_id": a.alert_id, "day": crate::time::day_of(a.window_start_ms)});
            if !failed.is_empty() {
                tracing::error!(alert = %a.alert_id, failed = %failed.join("; "), "alert not delivered to every sink; recorded as failed, sent again if detected after a restart");
                record["failed"] = failed.into();
            }
            if let Err(e) = writeln!(log_file, "{record}").and_then(|_| log_file.sync_data()) {
                tracing::error!(file = %log.display(), error = %e, "cannot record an alert's delivery");
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

/// Posts the alert, trying up to [`WEBHOOK_TRIES`] times; the error is the
/// last try's.
async fn post(agent: &ureq::Agent, url: &str, a: &Alert) -> Result<(), String> {
    let body = webhook_body(a).to_string();
    let mut attempt = 1;
    loop {
        let (agent, url_owned, body_owned) = (agent.clone(), url.to_string(), body.clone());
        let sent = tokio::task::spawn_blocking(move || {
            agent.post(&url_owned).header("content-type", "application/json").send(body_owned.as_bytes()).map(|_| ())
        })
        .await;
        match sent {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) if attempt < WEBHOOK_TRIES => {
                tracing::warn!(url, attempt, error = %e, "webhook failed; retrying");
                tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
                attempt += 1;
            }
            Ok(Err(e)) => {
                tracing::error!(url, error = %e, alert = %a.alert_id, "webhook failed every try; alert not delivered there");
                return Err(format!("{e} (after {WEBHOOK_TRIES} tries)"));
            }
            Err(e) => {
                tracing::error!(url, error = %e, "webhook task failed");
                return Err(e.to_string());
            }
        }
    }
}

/// Runs the `--on-alert` command through the shell with the alert's JSON on
/// stdin and its key fields in the environment.
async fn run_command(cmd: &str, a: &Alert) -> Result<(), String> {
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
            return Err(e.to_string());
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        let body = format!("{}\n", serde_json::to_string(a).expect("alerts serialize"));
        // A command that does not read its input is fine.
        let _ = stdin.write_all(body.as_bytes()).await;
    }
    let failure = match tokio::time::timeout(COMMAND_TIMEOUT, child.wait()).await {
        Ok(Ok(s)) if s.success() => return Ok(()),
        Ok(Ok(s)) => s.to_string(),
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("timed out after {COMMAND_TIMEOUT:?}; killed"),
    };
    tracing::error!(command = cmd, alert = %a.alert_id, failure, "--on-alert command failed");
    Err(failure)
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::net::TcpListener;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::alert::Severity;

    fn alert(id: &str) -> Alert {
        Alert {
            alert_id: id.into(),
            detector: "retry_storm".into(),
            finding: "auth_failures".into(),
            severity: Severity::High,
            score: 2.0,
            credential_id: "k".into(),
            principal: None,
            window_start_ms: 1_793_577_600_000,
            window_end_ms: 1_793_577_660_000,
            explanation: "many 401s".into(),
            observed: "303 failed requests".into(),
            baseline: "0.05 failures a minute".into(),
            evidence: vec!["r1".into(), "r2".into()],
            evidence_count: 303,
            mitre_attack: Some("T1110 Brute Force".into()),
            owasp_nhi: None,
            subject: Some("401".into()),
            incident_id: None,
            suppressed: None,
        }
    }

    /// A webhook endpoint on loopback that answers every POST with `status`
    /// and counts the requests it got.
    fn webhook(status: u16) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                // Read the head, then as much body as it announces.
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                let head_end = loop {
                    let n = s.read(&mut buf).unwrap_or(0);
                    if n == 0 {
                        break None;
                    }
                    req.extend_from_slice(&buf[..n]);
                    if let Some(p) = req.windows(4).position(|w| w == b"\r\n\r\n") {
                        break Some(p + 4);
                    }
                };
                let Some(head_end) = head_end else { continue };
                let head = String::from_utf8_lossy(&req[..head_end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
                    .unwrap_or(0);
                while req.len() < head_end + len {
                    let n = s.read(&mut buf).unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    req.extend_from_slice(&buf[..n]);
                }
                counted.fetch_add(1, Ordering::SeqCst);
                let reply = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = s.write_all(reply.as_bytes());
            }
        });
        (url, hits)
    }

    /// Sends the alerts through the sinks and waits until they are done.
    async fn deliver(opts: SinkOptions, log: &Path, ids: &[&str]) {
        let (tx, task) = spawn(opts, AlertFormat::Jsonl, log.to_path_buf()).unwrap();
        for id in ids {
            tx.send(alert(id)).unwrap();
        }
        drop(tx);
        task.await.unwrap();
    }

    #[tokio::test]
    async fn an_alert_every_webhook_took_is_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("state/delivered.jsonl");
        let (url, hits) = webhook(200);
        let file = dir.path().join("alerts.jsonl");
        let opts = SinkOptions { file: Some(file.clone()), webhooks: vec![url], command: None };
        deliver(opts, &log, &["a1", "a2"]).await;
        assert_eq!(hits.load(Ordering::SeqCst), 2, "one POST per alert, no retries");
        assert_eq!(delivered(&log).unwrap(), HashSet::from(["a1".to_string(), "a2".to_string()]));
        let written = std::fs::read_to_string(file).unwrap();
        assert_eq!(written.lines().count(), 2);
        assert!(written.contains("\"alert_id\":\"a1\""));
    }

    #[tokio::test]
    async fn an_alert_a_webhook_refused_every_try_is_recorded_as_failed() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("delivered.jsonl");
        let (ok_url, ok_hits) = webhook(200);
        let (bad_url, bad_hits) = webhook(500);
        let opts = SinkOptions { file: None, webhooks: vec![ok_url, bad_url.clone()], command: None };
        deliver(opts, &log, &["b1"]).await;
        assert_eq!(ok_hits.load(Ordering::SeqCst), 1);
        assert_eq!(bad_hits.load(Ordering::SeqCst), WEBHOOK_TRIES as usize, "tried every time");
        // Not delivered: the next start sends it again.
        assert!(delivered(&log).unwrap().is_empty());
        let record: Value = serde_json::from_str(std::fs::read_to_string(&log).unwrap().trim()).unwrap();
        assert_eq!(record["alert_id"], "b1");
        let reasons = record["failed"].as_array().unwrap();
        assert_eq!(reasons.len(), 1, "only the refusing webhook: {reasons:?}");
        assert!(reasons[0].as_str().unwrap().contains(&bad_url), "{reasons:?}");
    }

    #[tokio::test]
    async fn a_failing_command_keeps_the_alert_owed_until_a_later_delivery() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("delivered.jsonl");
        let failing = SinkOptions { command: Some("exit 3".into()), ..SinkOptions::default() };
        deliver(failing, &log, &["c1"]).await;
        assert!(delivered(&log).unwrap().is_empty());
        // The retry after a restart appends to the same log; now it counts.
        let working = SinkOptions { command: Some("cat >/dev/null".into()), ..SinkOptions::default() };
        deliver(working, &log, &["c1"]).await;
        assert_eq!(delivered(&log).unwrap(), HashSet::from(["c1".to_string()]));
    }

    #[test]
    fn the_delivery_log_tolerates_a_missing_file_and_torn_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("delivered.jsonl");
        assert!(delivered(&log).unwrap().is_empty());
        // A crash mid-write leaves a torn last line.
        std::fs::write(&log, "{\"alert_id\":\"d1\",\"day\":\"2026-11-02\"}\n{\"alert_id\":\"d2\",\"fai").unwrap();
        assert_eq!(delivered(&log).unwrap(), HashSet::from(["d1".to_string()]));
    }
}
