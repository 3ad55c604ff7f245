//! A realistic, labelled sample of gateway traffic: the data the detectors
//! are developed and evaluated on, and what the README's demo runs.
//!
//! Normal traffic follows each credential's own rhythm and stays inside its
//! inventory scope; hard negatives (small 429 bursts, busy days, background
//! errors) look like trouble but are not; injected anomalies of four kinds
//! are written to `labels.csv`. Everything is a function of the seed.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use chrono::{Datelike, NaiveDate};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, LogNormal, Poisson};
use serde::Serialize;

use crate::time::{DAY_MS, HOUR_MS, format_ms};

pub mod cloudtrail;

const MINUTE: i64 = 60_000;

/// The largest sample [`generate`] makes: a year of days…
pub const MAX_DAYS: u32 = 366;
/// …this many credentials…
pub const MAX_CREDENTIALS: u32 = 10_000;
/// …at up to this many times their usual rates.
pub const MAX_RATE_SCALE: f64 = 100.0;

#[derive(Debug, Clone)]
pub struct SampleOptions {
    pub days: u32,
    pub credentials: u32,
    pub seed: u64,
    /// First day; a Monday by default so weekly rhythm starts clean.
    pub start: NaiveDate,
    pub gzip: bool,
    /// Multiplies every credential's request rate.
    pub rate_scale: f64,
    /// Gateway JSON lines, or CloudTrail delivery files.
    pub format: SampleFormat,
}

/// How the sample week is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SampleFormat {
    /// `logs/gateway-YYYY-MM-DD.jsonl[.gz]`: LLM apps, agents and services behind a gateway.
    #[default]
    Gateway,
    /// `AWSLogs/<account>/CloudTrail/<region>/YYYY/MM/DD/…json.gz`, hourly
    /// `Records` files: Bedrock apps and S3 services on AWS keys and roles,
    /// each LLMjacking spike preceded by its recon chain.
    #[value(name = "cloudtrail")]
    CloudTrail,
}

impl Default for SampleOptions {
    fn default() -> Self {
        SampleOptions {
            days: 7,
            credentials: 200,
            seed: 1,
            start: NaiveDate::from_ymd_opt(2026, 11, 2).expect("valid date"),
            gzip: false,
            rate_scale: 1.0,
            format: SampleFormat::Gateway,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{0}")]
    Invalid(String),
}

#[derive(Debug, Serialize)]
pub struct SampleSummary {
    pub events: u64,
    pub credentials: u32,
    pub anomalies: u32,
    pub files: Vec<PathBuf>,
    pub inventory: PathBuf,
    pub labels: PathBuf,
}

/// (model, provider, USD per 1M input tokens, per 1M output tokens)
const MODELS: &[(&str, &str, f64, f64)] = &[
    ("gpt-4o", "openai", 2.5, 10.0),
    ("gpt-4o-mini", "openai", 0.15, 0.6),
    ("gpt-4.1-mini", "openai", 0.4, 1.6),
    ("gpt-4.5-preview", "openai", 75.0, 150.0),
    ("claude-sonnet-4", "anthropic", 3.0, 15.0),
    ("claude-haiku-4", "anthropic", 1.0, 5.0),
    ("claude-opus-4", "anthropic", 15.0, 75.0),
    ("anthropic.claude-3-haiku-20240307-v1:0", "bedrock", 0.25, 1.25),
    ("anthropic.claude-3-5-sonnet-20240620-v1:0", "bedrock", 3.0, 15.0),
    ("anthropic.claude-3-opus-20240229-v1:0", "bedrock", 15.0, 75.0),
];

/// (provider, everyday models, premium model an abuser would pick, scope pattern)
const FAMILIES: &[(&str, &[&str], &str, &str)] = &[
    ("openai", &["gpt-4o", "gpt-4o-mini", "gpt-4.1-mini"], "gpt-4.5-preview", "gpt-*"),
    ("anthropic", &["claude-sonnet-4", "claude-haiku-4"], "claude-opus-4", "claude-*"),
    (
        "bedrock",
        &["anthropic.claude-3-haiku-20240307-v1:0", "anthropic.claude-3-5-sonnet-20240620-v1:0"],
        "anthropic.claude-3-opus-20240229-v1:0",
        "anthropic.claude-*",
    ),
];

fn price(model: &str) -> (f64, f64) {
    MODELS.iter().find(|m| m.0 == model).map_or((1.0, 4.0), |m| (m.2, m.3))
}

/// An agent type: the playbooks its sessions follow (tool, resource), the
/// tool namespaces it may use, and the dangerous chain an attacker drives it to.
struct AgentType {
    name: &'static str,
    playbooks: &'static [&'static [(&'static str, &'static str)]],
    allowed_tools: &'static [&'static str],
    allowed_resources: &'static [&'static str],
    danger: &'static [(&'static str, &'static str)],
    danger_text: &'static str,
}

const AGENTS: &[AgentType] = &[
    AgentType {
        name: "support-triage",
        playbooks: &[
            &[
                ("jira.search", "jira://SUP"),
                ("github.get_file", "github://acme/helpdesk/"),
                ("jira.create_issue", "jira://SUP"),
            ],
            &[("jira.search", "jira://SUP"), ("jira.add_comment", "jira://SUP")],
            &[
                ("slack.read_channel", "slack://acme/support"),
                ("jira.search", "jira://SUP"),
                ("jira.add_comment", "jira://SUP"),
            ],
        ],
        allowed_tools: &["jira.*", "github.*", "slack.*", "shell.*"],
        allowed_resources: &["jira://SUP", "github://acme/", "slack://acme/"],
        danger: &[("github.get_file", "github://acme/helpdesk/.env"), ("shell.exec", "")],
        danger_text: "read tools then shell execution (github.get_file → shell.exec)",
    },
    AgentType {
        name: "code-review",
        playbooks: &[
            &[
                ("github.list_pull_requests", "github://acme/payments"),
                ("github.get_file", "github://acme/payments/"),
                ("github.create_review_comment", "github://acme/payments"),
            ],
            &[
                ("github.get_file", "github://acme/payments/"),
                ("github.get_file", "github://acme/payments/"),
                ("github.create_pr", "github://acme/payments"),
            ],
        ],
        allowed_tools: &["github.*"],
        allowed_resources: &["github://acme/"],
        danger: &[
            ("github.get_file", "github://acme/payments/deploy.yaml"),
            ("github.add_collaborator", "github://acme/payments"),
        ],
        danger_text: "privilege change mid-session (github.get_file → github.add_collaborator)",
    },
    AgentType {
        name: "data-analyst",
        playbooks: &[
            &[
                ("db.query", "db://analytics/events"),
                ("db.query", "db://analytics/events"),
                ("slack.post_message", "slack://acme/analytics"),
            ],
            &[
                ("s3:GetObject", "s3://analytics-exports/daily/"),
                ("db.query", "db://analytics/events"),
                ("slack.post_message", "slack://acme/analytics"),
            ],
        ],
        allowed_tools: &["db.*", "s3:*", "slack.*", "email.*"],
        allowed_resources: &["db://analytics/", "s3://analytics-exports/", "slack://acme/"],
        danger: &[("db.query", "db://analytics/customers_pii"), ("email.send", "")],
        danger_text: "sensitive data read then external send (db.query → email.send)",
    },
    AgentType {
        name: "ops-bot",
        playbooks: &[
            &[
                ("k8s.get_pods", "k8s://prod/"),
                ("k8s.get_logs", "k8s://prod/"),
                ("slack.post_message", "slack://acme/ops"),
            ],
            &[("k8s.get_pods", "k8s://prod/"), ("k8s.describe", "k8s://prod/")],
        ],
        allowed_tools: &["k8s.*", "slack.*", "web.*"],
        allowed_resources: &["k8s://prod/", "slack://acme/"],
        danger: &[("k8s.get_secrets", "k8s://prod/secrets"), ("web.fetch", "")],
        danger_text: "secret read then outbound request (k8s.get_secrets → web.fetch)",
    },
];

/// What kind of caller a credential belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// An application calling models directly.
    LlmApp { family: usize },
    /// An agent: sessions of inference and tool calls.
    Agent { agent: usize, family: usize },
    /// A service reading and writing its own data.
    Service { team: usize },
}

const TEAMS: &[&str] = &["billing", "search", "growth", "risk", "platform", "ml"];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Rhythm {
    Business,
    Flat,
    Nightly,
}

struct Cred {
    id: String,
    owner: Option<String>,
    principal: String,
    kind: &'static str,
    role: Role,
    rhythm: Rhythm,
    rate: f64,
    ips: Vec<String>,
    user_agent: String,
    models: Vec<&'static str>,
    tokens_median: f64,
    error_rate: f64,
    created_at: i64,
    expires_at: Option<i64>,
    /// Traffic of this credential stops here (it expired, or was never used).
    active_until: i64,
    busy_day: Option<u32>,
    /// CloudTrail sample: the region it works in, and whether it is a role
    /// (its calls come with temporary session keys; `id` is the role ARN).
    cloud: Option<cloudtrail::CloudCred>,
}

#[derive(Serialize, Clone)]
struct Line {
    ts: String,
    request_id: String,
    credential_id: String,
    principal: String,
    session_id: Option<String>,
    source_ip: String,
    user_agent: String,
    provider: String,
    model: Option<String>,
    action: &'static str,
    tool: Option<String>,
    resource: Option<String>,
    status: u16,
    error_code: Option<&'static str>,
    latency_ms: u32,
    tokens_in: Option<i64>,
    tokens_out: Option<i64>,
    cost_usd: Option<f64>,
    #[serde(skip)]
    ts_ms: i64,
    /// CloudTrail sample: a region other than the credential's own.
    #[serde(skip)]
    region: Option<&'static str>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    ToolChaining,
    RetryStorm,
    BillingSpike,
    OutOfScope,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::ToolChaining => "tool_chaining",
            Kind::RetryStorm => "retry_storm",
            Kind::BillingSpike => "billing_spike",
            Kind::OutOfScope => "out_of_scope",
        }
    }
}

struct Anomaly {
    id: String,
    kind: Kind,
    cred: usize,
    day: u32,
    /// Offset in the day where it starts.
    at: i64,
    variant: u32,
    description: String,
    start: i64,
    end: i64,
}

/// Generates the sample into `out`: `logs/gateway-YYYY-MM-DD.jsonl[.gz]`,
/// `inventory.csv` and `labels.csv`.
pub fn generate(opts: &SampleOptions, out: &Path) -> Result<SampleSummary, SampleError> {
    // Bounded above too: past these a sample is a typo that would run for
    // days or exhaust memory (and a busier key than one request per
    // millisecond has no timestamps left to spread over).
    if !(1..=MAX_DAYS).contains(&opts.days) {
        return Err(SampleError::Invalid(format!("--days must be from 1 to {MAX_DAYS}")));
    }
    if !(10..=MAX_CREDENTIALS).contains(&opts.credentials) {
        return Err(SampleError::Invalid(format!("--credentials must be from 10 to {MAX_CREDENTIALS}")));
    }
    if !(opts.rate_scale > 0.0 && opts.rate_scale <= MAX_RATE_SCALE) {
        return Err(SampleError::Invalid(format!("--rate-scale must be a positive number up to {MAX_RATE_SCALE}")));
    }
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SampleError::Io { path, source }
    };
    let cloud = opts.format == SampleFormat::CloudTrail;
    let logs = out.join(if cloud { "AWSLogs" } else { "logs" });
    std::fs::create_dir_all(&logs).map_err(io_err(&logs))?;
    let t0 = opts.start.and_hms_opt(0, 0, 0).expect("midnight").and_utc().timestamp_millis();
    let end = t0 + opts.days as i64 * DAY_MS;

    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let mut creds = population(opts, t0, end, &mut rng);
    let mut anomalies = plan_anomalies(opts, &mut creds, t0, &mut rng);

    let mut files = Vec::new();
    let mut events = 0u64;
    for day in 0..opts.days {
        let day_start = t0 + day as i64 * DAY_MS;
        let mut lines = Vec::new();
        for (ci, c) in creds.iter().enumerate() {
            let mut r = ChaCha8Rng::seed_from_u64(opts.seed ^ ((ci as u64) << 20) ^ ((day as u64) << 48) ^ 0x9e37_79b9);
            normal_day(c, day, day_start, &mut r, &mut lines);
        }
        for a in anomalies.iter_mut().filter(|a| a.day == day) {
            let mut r = ChaCha8Rng::seed_from_u64(opts.seed ^ 0x5bd1_e995 ^ (a.cred as u64) << 8);
            let before = lines.len();
            inject(a, &creds[a.cred], day_start, &mut r, &mut lines);
            let span = lines[before..].iter().map(|l| l.ts_ms);
            a.start = span.clone().min().unwrap_or(day_start);
            if cloud {
                // CloudTrail times are whole seconds.
                a.start -= a.start.rem_euclid(1000);
            }
            a.end = span.max().unwrap_or(day_start);
        }
        lines.sort_by(|a, b| a.ts_ms.cmp(&b.ts_ms).then_with(|| a.request_id.cmp(&b.request_id)));
        events += lines.len() as u64;
        if cloud {
            files.extend(cloudtrail::write_day(&logs, &lines, &creds, opts.seed)?);
            continue;
        }
        let date = crate::time::day_of(day_start);
        let name = if opts.gzip { format!("gateway-{date}.jsonl.gz") } else { format!("gateway-{date}.jsonl") };
        let path = logs.join(name);
        write_atomic(
            &path,
            |w| {
                for l in &lines {
                    serde_json::to_writer(&mut *w, l).map_err(io::Error::from)?;
                    w.write_all(b"\n")?;
                }
                Ok(())
            },
            opts.gzip,
        )
        .map_err(io_err(&path))?;
        files.push(path);
    }

    let inventory = out.join("inventory.csv");
    let scope = if cloud { cloudtrail::scope } else { gateway_scope };
    write_atomic(&inventory, |w| write_inventory(w, &creds, scope), false).map_err(io_err(&inventory))?;
    let labels = out.join("labels.csv");
    write_atomic(&labels, |w| write_labels(w, &anomalies, &creds), false).map_err(io_err(&labels))?;
    Ok(SampleSummary {
        events,
        credentials: creds.len() as u32,
        anomalies: anomalies.len() as u32,
        files,
        inventory,
        labels,
    })
}

fn write_atomic(path: &Path, body: impl FnOnce(&mut dyn Write) -> io::Result<()>, gzip: bool) -> io::Result<()> {
    let tmp = path.with_extension(format!("{}.tmp", path.extension().and_then(|e| e.to_str()).unwrap_or("")));
    let f = File::create(&tmp)?;
    if gzip {
        let mut gz = flate2::write::GzEncoder::new(BufWriter::new(f), flate2::Compression::default());
        body(&mut gz)?;
        gz.finish()?.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    } else {
        let mut w = BufWriter::new(f);
        body(&mut w)?;
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

fn key_id(rng: &mut ChaCha8Rng) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let s: String = (0..12).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect();
    format!("key_{s}")
}

fn population(opts: &SampleOptions, t0: i64, end: i64, rng: &mut ChaCha8Rng) -> Vec<Cred> {
    let n = opts.credentials as usize;
    let rate_dist = LogNormal::new((12.0f64).ln(), 0.9).expect("valid lognormal");
    let mut creds = Vec::with_capacity(n);
    for i in 0..n {
        let roll = rng.random_range(0..100);
        let role = if opts.format == SampleFormat::CloudTrail {
            // On AWS: Bedrock apps and S3 services (agents' tool calls are not AWS API calls).
            if roll < 55 {
                Role::LlmApp { family: cloudtrail::BEDROCK }
            } else {
                Role::Service { team: roll as usize % TEAMS.len() }
            }
        } else if roll < 40 {
            Role::LlmApp { family: rng.random_range(0..FAMILIES.len()) }
        } else if roll < 75 {
            Role::Agent { agent: rng.random_range(0..AGENTS.len()), family: rng.random_range(0..FAMILIES.len()) }
        } else {
            Role::Service { team: rng.random_range(0..TEAMS.len()) }
        };
        // Several keys share an agent principal: its transition model is per principal.
        let (principal, kind, rhythm) = match role {
            Role::LlmApp { .. } => (
                format!("app:{}-{}", ["chat", "summariser", "classifier", "copilot"][i % 4], i),
                "api_key",
                Rhythm::Business,
            ),
            Role::Agent { agent, .. } => (format!("agent:{}", AGENTS[agent].name), "agent_token", Rhythm::Business),
            Role::Service { team } => (
                format!("svc:{}-etl", TEAMS[team]),
                "service_account",
                if i % 2 == 0 { Rhythm::Nightly } else { Rhythm::Flat },
            ),
        };
        let family = match role {
            Role::LlmApp { family } | Role::Agent { family, .. } => Some(family),
            Role::Service { .. } => None,
        };
        let models = match family {
            Some(f) => {
                let everyday = FAMILIES[f].1;
                let k = rng.random_range(1..=2.min(everyday.len()));
                let start = rng.random_range(0..everyday.len());
                (0..k).map(|j| everyday[(start + j) % everyday.len()]).collect()
            }
            None => vec![],
        };
        let net = format!("10.{}.{}", rng.random_range(1..250), rng.random_range(0..250));
        let ips = (0..rng.random_range(1..=3)).map(|_| format!("{net}.{}", rng.random_range(2..250))).collect();
        let user_agent = match role {
            Role::LlmApp { .. } => format!("openai-python/1.{}.0", rng.random_range(30..60)),
            Role::Agent { .. } => format!("agent-runtime/2.{} (+langgraph)", rng.random_range(0..9)),
            Role::Service { .. } => format!("etl-runner/{}.{}", rng.random_range(1..4), rng.random_range(0..10)),
        };
        // Most keys are rotated within policy; some are long-lived.
        let age_days = if rng.random_bool(0.85) { rng.random_range(1..85) } else { rng.random_range(120..400) };
        let created_at = t0 - age_days * DAY_MS;
        let expires_at = if rng.random_bool(0.8) { Some(end + rng.random_range(30..365) * DAY_MS) } else { None };
        creds.push(Cred {
            id: key_id(rng),
            owner: (!rng.random_bool(0.05)).then(|| {
                let team = match role {
                    Role::Service { team } => TEAMS[team],
                    _ => TEAMS[i % TEAMS.len()],
                };
                format!("{team}-team@example.com")
            }),
            principal,
            kind,
            role,
            rhythm,
            rate: (rate_dist.sample(rng).clamp(0.5, 400.0)) * opts.rate_scale,
            ips,
            user_agent,
            models,
            tokens_median: rng.random_range(300.0..3000.0),
            error_rate: rng.random_range(0.005..0.02),
            created_at,
            expires_at,
            active_until: end,
            busy_day: None,
            cloud: None,
        });
    }
    if opts.format == SampleFormat::CloudTrail {
        cloudtrail::rekey(&mut creds, opts.seed, rng);
    }
    // Governance: a few keys that expired before the sample and are not used.
    for c in creds.iter_mut().step_by(23) {
        let expiry = t0 - rng.random_range(1..60) * DAY_MS;
        c.expires_at = Some(expiry);
        c.created_at = c.created_at.min(expiry - rng.random_range(30..365) * DAY_MS);
        c.active_until = t0;
    }
    creds
}

fn hour_factor(rhythm: Rhythm, hour: u32, weekday: u32) -> f64 {
    let weekend = weekday >= 5;
    match rhythm {
        Rhythm::Business => {
            let h = match hour {
                8..=18 => 1.0,
                6 | 7 | 19 | 20 => 0.45,
                _ => 0.12,
            };
            if weekend { h * 0.3 } else { h }
        }
        Rhythm::Flat => 0.7,
        Rhythm::Nightly => {
            if (1..=4).contains(&hour) {
                2.5
            } else {
                0.25
            }
        }
    }
}

fn req_id(rng: &mut ChaCha8Rng) -> String {
    format!("req_{:016x}", rng.random::<u64>())
}

/// One request of credential `c` with everything at its usual values.
fn usual(c: &Cred, ts: i64, rng: &mut ChaCha8Rng) -> Line {
    let ip = c.ips.choose(rng).expect("at least one IP").clone();
    let provider = match c.role {
        Role::LlmApp { family } | Role::Agent { family, .. } => FAMILIES[family].0,
        Role::Service { .. } if c.cloud.is_some() => "aws",
        Role::Service { .. } => "internal",
    };
    Line {
        ts: format_ms(ts),
        request_id: req_id(rng),
        credential_id: c.id.clone(),
        principal: c.principal.clone(),
        session_id: None,
        source_ip: ip,
        user_agent: c.user_agent.clone(),
        provider: provider.to_string(),
        model: None,
        action: "read",
        tool: None,
        resource: None,
        status: 200,
        error_code: None,
        latency_ms: LogNormal::new(6.0f64, 0.5).expect("valid").sample(rng).min(60_000.0) as u32,
        tokens_in: None,
        tokens_out: None,
        cost_usd: None,
        ts_ms: ts,
        region: None,
    }
}

fn inference(c: &Cred, ts: i64, scale: f64, model: &str, rng: &mut ChaCha8Rng) -> Line {
    let mut l = usual(c, ts, rng);
    let tin = (LogNormal::new(c.tokens_median.ln(), 0.5).expect("valid").sample(rng) * scale).round() as i64;
    let tout = (tin as f64 * rng.random_range(0.05..0.3)).round() as i64;
    let (pin, pout) = price(model);
    l.action = "inference";
    l.model = Some(model.to_string());
    l.tokens_in = Some(tin);
    l.tokens_out = Some(tout);
    l.cost_usd = Some(((tin as f64 * pin + tout as f64 * pout) / 1e6 * 1e6).round() / 1e6);
    l
}

fn tool_call(c: &Cred, ts: i64, tool: &str, resource: &str, rng: &mut ChaCha8Rng) -> Line {
    let mut l = usual(c, ts, rng);
    l.action = "tool_call";
    l.tool = Some(tool.to_string());
    l.resource = if resource.is_empty() {
        None
    } else if resource.ends_with('/') {
        Some(format!(
            "{resource}{}",
            ["README.md", "src/main.py", "2026/report.csv", "pod-7f9c"][rng.random_range(0..4)]
        ))
    } else {
        Some(resource.to_string())
    };
    l
}

fn maybe_error(c: &Cred, l: &mut Line, rng: &mut ChaCha8Rng) {
    if rng.random_bool(c.error_rate) {
        let codes = match c.cloud {
            Some(_) => cloudtrail::BACKGROUND_ERRORS,
            None => &[(400, "invalid_request"), (404, "not_found"), (500, "internal_error"), (503, "overloaded")],
        };
        let (status, code) = codes[rng.random_range(0..4)];
        l.status = status;
        l.error_code = Some(code);
        l.tokens_out = l.tokens_out.map(|_| 0);
    }
}

fn normal_day(c: &Cred, day: u32, day_start: i64, rng: &mut ChaCha8Rng, out: &mut Vec<Line>) {
    let weekday = chrono::DateTime::from_timestamp_millis(day_start).map_or(0, |d| d.weekday().num_days_from_monday());
    let busy = if c.busy_day == Some(day) { 2.5 } else { 1.0 };
    for hour in 0..24u32 {
        let h0 = day_start + hour as i64 * HOUR_MS;
        if h0 + HOUR_MS > c.active_until {
            break;
        }
        let mean = c.rate * hour_factor(c.rhythm, hour, weekday) * busy;
        match c.role {
            Role::Agent { agent, .. } => {
                // Sessions of ~8 events each.
                let sessions = poisson(mean / 8.0, rng);
                for _ in 0..sessions {
                    let start = h0 + rng.random_range(0..HOUR_MS - 10 * MINUTE);
                    session(c, &AGENTS[agent], start, None, rng, out);
                }
            }
            _ => {
                for _ in 0..poisson(mean, rng) {
                    let ts = h0 + rng.random_range(0..HOUR_MS);
                    let mut l = match c.role {
                        Role::LlmApp { .. } => {
                            let m = *c.models.choose(rng).expect("an LLM app has models");
                            inference(c, ts, 1.0, m, rng)
                        }
                        Role::Service { team } => service_call(c, TEAMS[team], ts, rng),
                        Role::Agent { .. } => unreachable!("agents are handled above"),
                    };
                    maybe_error(c, &mut l, rng);
                    out.push(l);
                }
            }
        }
        // Hard negative: a busy key now and then gets a short burst of 429s.
        if c.rate >= 40.0 && hour_factor(c.rhythm, hour, weekday) >= 1.0 && rng.random_bool(0.04) {
            let t = h0 + rng.random_range(0..HOUR_MS - MINUTE);
            for k in 0..rng.random_range(3..=8) {
                let mut l = match c.role {
                    Role::Service { team } => service_call(c, TEAMS[team], t + k * 4_000, rng),
                    _ => inference(c, t + k * 4_000, 1.0, c.models.first().copied().unwrap_or("gpt-4o-mini"), rng),
                };
                l.status = 429;
                l.error_code = Some(match (&c.cloud, c.role) {
                    (Some(_), Role::Service { .. }) => "SlowDown",
                    (Some(_), _) => "ThrottlingException",
                    (None, _) => "rate_limited",
                });
                l.tokens_out = l.tokens_out.map(|_| 0);
                out.push(l);
            }
        }
    }
}

fn poisson(mean: f64, rng: &mut ChaCha8Rng) -> u64 {
    if mean <= 0.0 {
        return 0;
    }
    Poisson::new(mean).map_or(0, |p| p.sample(rng) as u64)
}

fn service_call(c: &Cred, team: &str, ts: i64, rng: &mut ChaCha8Rng) -> Line {
    if c.cloud.is_some() {
        return cloudtrail::service_call(c, team, ts, rng);
    }
    let (tool, action, resource) = match rng.random_range(0..10) {
        0..=4 => ("s3:GetObject", "read", format!("s3://{team}-data/in/{:04}.parquet", rng.random_range(0..5000))),
        5..=6 => ("s3:PutObject", "write", format!("s3://{team}-data/out/{:04}.parquet", rng.random_range(0..5000))),
        7 => ("s3:ListBucket", "read", format!("s3://{team}-data/in/")),
        _ => ("db.query", "read", format!("db://{team}/warehouse")),
    };
    call(usual(c, ts, rng), action, tool, resource)
}

/// A line made a call of `tool` on `resource`, as most non-inference lines are.
fn call(mut l: Line, action: &'static str, tool: &str, resource: String) -> Line {
    l.action = action;
    l.tool = Some(tool.to_string());
    l.resource = Some(resource);
    l
}

/// An agent session: inference before each tool step and at the end.
fn session(
    c: &Cred,
    a: &AgentType,
    start: i64,
    chain: Option<&[(&str, &str)]>,
    rng: &mut ChaCha8Rng,
    out: &mut Vec<Line>,
) {
    let sid = format!("sess_{:012x}", rng.random::<u64>() >> 16);
    let steps: Vec<(&str, &str)> = match chain {
        Some(ch) => ch.to_vec(),
        None => {
            let p = a.playbooks.choose(rng).expect("agents have playbooks");
            // Sometimes a step repeats (a second search, another file).
            let mut v = p.to_vec();
            if rng.random_bool(0.3) {
                let i = rng.random_range(0..v.len());
                v.insert(i, v[i]);
            }
            v
        }
    };
    let mut t = start;
    let model = *c.models.choose(rng).expect("agents have models");
    for (tool, resource) in steps.iter().copied() {
        let mut l = inference(c, t, 0.6, model, rng);
        l.session_id = Some(sid.clone());
        out.push(l);
        t += rng.random_range(2_000..20_000);
        let mut l = tool_call(c, t, tool, resource, rng);
        l.session_id = Some(sid.clone());
        if chain.is_none() {
            maybe_error(c, &mut l, rng);
        }
        out.push(l);
        t += rng.random_range(1_000..10_000);
    }
    let mut l = inference(c, t, 0.6, model, rng);
    l.session_id = Some(sid);
    out.push(l);
}

/// Chooses credentials and times for the anomalies, and adjusts the
/// population where an anomaly needs it (an expiry, a busy day elsewhere).
fn plan_anomalies(opts: &SampleOptions, creds: &mut [Cred], t0: i64, rng: &mut ChaCha8Rng) -> Vec<Anomaly> {
    let per_kind = ((opts.credentials as f64 * 4.0 / 200.0).round() as usize).max(2);
    let first_day = if opts.days > 3 { 3 } else { opts.days - 1 };
    let mut used = vec![false; creds.len()];
    let usable = |c: &Cred| c.active_until > t0;
    let mut out = Vec::new();
    let mut next_id = 1;
    let cloud = opts.format == SampleFormat::CloudTrail;
    // On CloudTrail, tool chaining is the LLMjacking recon chain that comes before each spike.
    let kinds: &[Kind] = if cloud {
        &[Kind::BillingSpike, Kind::RetryStorm, Kind::OutOfScope]
    } else {
        &[Kind::BillingSpike, Kind::RetryStorm, Kind::ToolChaining, Kind::OutOfScope]
    };
    for &kind in kinds {
        let mut candidates: Vec<usize> = (0..creds.len())
            .filter(|&i| !used[i] && usable(&creds[i]))
            // Roles stay clean: their sessions are what session-key checks look at.
            .filter(|&i| creds[i].cloud.as_ref().is_none_or(|c| c.role_arn.is_none()))
            .filter(|&i| match kind {
                Kind::BillingSpike => matches!(creds[i].role, Role::LlmApp { .. }),
                Kind::ToolChaining => matches!(creds[i].role, Role::Agent { .. }),
                _ => true,
            })
            .collect();
        let mut picked = 0;
        while picked < per_kind && !candidates.is_empty() {
            let i = candidates.swap_remove(rng.random_range(0..candidates.len()));
            used[i] = true;
            let day = rng.random_range(first_day..opts.days);
            // Inside working hours so the anomaly is not explained by a quiet night.
            let at = rng.random_range(9 * HOUR_MS..16 * HOUR_MS);
            // Out-of-scope starts with the expired-key variant so small samples have it.
            let variant = if kind == Kind::OutOfScope { (picked as u32 + 2) % 3 } else { picked as u32 % 3 };
            let description = describe(kind, variant, &creds[i]);
            out.push(Anomaly {
                id: format!("A{next_id:04}"),
                kind,
                cred: i,
                day,
                at,
                variant,
                description,
                start: 0,
                end: 0,
            });
            next_id += 1;
            picked += 1;
            if cloud && kind == Kind::BillingSpike {
                out.push(Anomaly {
                    id: format!("A{next_id:04}"),
                    kind: Kind::ToolChaining,
                    cred: i,
                    day,
                    at: at - cloudtrail::RECON_LEAD,
                    variant,
                    description: describe(Kind::ToolChaining, variant, &creds[i]),
                    start: 0,
                    end: 0,
                });
                next_id += 1;
            }
            if kind == Kind::OutOfScope && variant == 2 {
                // Expired key still in use: it expires at the start of the day and
                // its owner's own traffic stops there.
                let expiry = t0 + day as i64 * DAY_MS;
                creds[i].expires_at = Some(expiry);
                creds[i].created_at = creds[i].created_at.min(expiry - 30 * DAY_MS);
                creds[i].active_until = expiry;
            }
        }
    }
    // Hard negatives for billing: busy-but-normal days on a few other credentials.
    for (i, c) in creds.iter_mut().enumerate() {
        if !used[i] && usable(c) && i % 10 == 7 {
            c.busy_day = Some(rng.random_range(first_day..opts.days));
        }
    }
    out
}

/// How a log source words the anomalies it injects; [`describe`] picks the
/// text, so every source tells its kinds and variants apart the same way.
struct Wording {
    /// LLMjacking (billing spike).
    billing: &'static str,
    /// Tool chaining: its text depends on the agent or the variant.
    chaining: fn(variant: u32, &Cred) -> String,
    /// Retry storm, per variant: a bad key, forbidden, throttled.
    storm: [&'static str; 3],
    /// Out of scope, variant 2: the credential used after its expiry.
    expired: &'static str,
    /// Out of scope, variant 0: what the role reaches outside its scope (none: `admin`).
    outside: fn(Role) -> Option<&'static str>,
    /// Out of scope otherwise: an admin action.
    admin: &'static str,
}

/// The gateway's wording.
const GATEWAY: Wording = Wording {
    billing: "LLMjacking: a new model from a new address and user agent, tokens 10-100x the credential's usual",
    chaining: |_, c| match c.role {
        Role::Agent { agent, .. } => format!("tool chaining: {}", AGENTS[agent].danger_text),
        _ => "tool chaining".into(),
    },
    storm: [
        "retry storm: a burst of 401 invalid_api_key (key guessing or a revoked key hammered)",
        "retry storm: a burst of 403 forbidden",
        "retry storm: a burst of 429 rate_limited (rate hammering)",
    ],
    expired: "out of scope: the credential is used after its expiry",
    outside: |role| match role {
        Role::Service { .. } => {
            Some("out of scope: reads of s3://finance-reports/, outside the credential's resources")
        }
        Role::LlmApp { .. } => Some("out of scope: tool calls by an inference-only key"),
        Role::Agent { .. } => None,
    },
    admin: "out of scope: admin actions (iam.create_user) outside the credential's allowed actions",
};

/// What an injected anomaly is, in the words of the credential's source.
fn describe(kind: Kind, variant: u32, c: &Cred) -> String {
    let w = if c.cloud.is_some() { &cloudtrail::WORDING } else { &GATEWAY };
    match kind {
        Kind::BillingSpike => w.billing.into(),
        Kind::ToolChaining => (w.chaining)(variant, c),
        Kind::RetryStorm => w.storm[variant.min(2) as usize].into(),
        Kind::OutOfScope => match variant {
            2 => w.expired,
            0 => (w.outside)(c.role).unwrap_or(w.admin),
            _ => w.admin,
        }
        .into(),
    }
}

/// A retry storm from `t`: 1 to 5 minutes of 40 to 250 calls each, the
/// credential's usual kind of call failing with `status` and `code` (so
/// neither tokens out nor cost). Both log sources inject their storms so.
fn storm(c: &Cred, t: i64, status: u16, code: &'static str, rng: &mut ChaCha8Rng, out: &mut Vec<Line>) {
    let minutes = rng.random_range(1..=5);
    for m in 0..minutes {
        let n = rng.random_range(40..250);
        for k in 0..n {
            let ts = t + m * MINUTE + k * (MINUTE / n);
            let mut l = match c.role {
                Role::Service { team } => service_call(c, TEAMS[team], ts, rng),
                _ => inference(c, ts, 0.1, c.models.first().copied().unwrap_or("gpt-4o-mini"), rng),
            };
            l.status = status;
            l.error_code = Some(code);
            l.tokens_out = l.tokens_out.map(|_| 0);
            l.cost_usd = l.cost_usd.map(|_| 0.0);
            out.push(l);
        }
    }
}

fn inject(a: &Anomaly, c: &Cred, day_start: i64, rng: &mut ChaCha8Rng, out: &mut Vec<Line>) {
    if c.cloud.is_some() {
        return cloudtrail::inject(a, c, day_start, rng, out);
    }
    let t = day_start + a.at;
    match a.kind {
        Kind::BillingSpike => {
            let Role::LlmApp { family } = c.role else { return };
            let model = FAMILIES[family].2;
            let ip = format!(
                "{}.{}",
                ["203.0.113", "198.51.100", "192.0.2"][rng.random_range(0..3)],
                rng.random_range(2..250)
            );
            let hours = rng.random_range(1..=3);
            // Per hour: well above the key's usual rate, each request far larger.
            let per_hour = (c.rate * 3.0).max(40.0) as i64;
            for k in 0..hours * per_hour {
                let ts = t + k * (HOUR_MS / per_hour) + rng.random_range(0..HOUR_MS / per_hour);
                let mut l = inference(c, ts, rng.random_range(10.0..40.0), model, rng);
                l.source_ip = ip.clone();
                l.user_agent = "python-requests/2.31".into();
                out.push(l);
            }
        }
        Kind::RetryStorm => {
            let (status, code) =
                [(401, "invalid_api_key"), (403, "forbidden"), (429, "rate_limited")][a.variant as usize % 3];
            storm(c, t, status, code, rng, out);
        }
        Kind::ToolChaining => {
            let Role::Agent { agent, .. } = c.role else { return };
            session(c, &AGENTS[agent], t, Some(AGENTS[agent].danger), rng, out);
        }
        Kind::OutOfScope => {
            let n = rng.random_range(5..=30);
            for k in 0..n {
                let ts = t + k * rng.random_range(20_000..120_000);
                let l = match (a.variant, c.role) {
                    (2, Role::Service { team }) => service_call(c, TEAMS[team], ts, rng),
                    (2, Role::Agent { agent, .. }) => {
                        let (tool, res) = AGENTS[agent].playbooks[0][0];
                        tool_call(c, ts, tool, res, rng)
                    }
                    (2, _) => inference(c, ts, 1.0, c.models[0], rng),
                    (0, Role::Service { .. }) => {
                        let ledger = |q| format!("s3://finance-reports/2026/q{q}-ledger.csv");
                        call(usual(c, ts, rng), "read", "s3:GetObject", ledger(rng.random_range(1..5)))
                    }
                    (0, Role::LlmApp { .. }) => tool_call(c, ts, "shell.exec", "", rng),
                    _ => {
                        let user = |n| format!("iam://acme/users/svc-{n}");
                        call(usual(c, ts, rng), "admin", "iam.create_user", user(rng.random_range(100..999)))
                    }
                };
                out.push(l);
            }
        }
    }
}

/// What one inventory row declares besides who the credential is; each
/// format says it its own way (gateway scopes, or the cloud's).
struct Scope {
    actions: String,
    models: String,
    tools: String,
    resources: String,
    regions: String,
    /// False for a role: it has no key to rotate or expire.
    dated: bool,
}

/// The inventory CSV of either format: `scope` gives each row's scope.
fn write_inventory(w: &mut dyn Write, creds: &[Cred], scope: fn(&Cred) -> Scope) -> io::Result<()> {
    let mut csv = csv::Writer::from_writer(w);
    csv.write_record([
        "credential_id",
        "owner",
        "principal",
        "kind",
        "created_at",
        "expires_at",
        "allowed_actions",
        "allowed_models",
        "allowed_tools",
        "allowed_resources",
        "allowed_regions",
    ])?;
    for c in creds {
        let s = scope(c);
        let day = |ms: i64| crate::time::day_of(ms);
        let (created, expires) = match s.dated {
            true => (day(c.created_at), c.expires_at.map(day).unwrap_or_default()),
            false => (String::new(), String::new()),
        };
        csv.write_record([
            c.id.as_str(),
            c.owner.as_deref().unwrap_or(""),
            c.principal.as_str(),
            c.kind,
            &created,
            &expires,
            &s.actions,
            &s.models,
            &s.tools,
            &s.resources,
            &s.regions,
        ])?;
    }
    csv.flush()
}

/// A gateway credential's scope: actions, model family, tools, resources.
fn gateway_scope(c: &Cred) -> Scope {
    let (actions, models, tools, resources) = match c.role {
        Role::LlmApp { family } => {
            ("inference".to_string(), FAMILIES[family].3.to_string(), String::new(), String::new())
        }
        Role::Agent { agent, family } => (
            "inference;tool_call;read;write".to_string(),
            FAMILIES[family].3.to_string(),
            AGENTS[agent].allowed_tools.join(";"),
            AGENTS[agent].allowed_resources.join(";"),
        ),
        Role::Service { team } => (
            "read;write".to_string(),
            String::new(),
            "s3:*;db.query".to_string(),
            format!("s3://{0}-data/;db://{0}/", TEAMS[team]),
        ),
    };
    Scope { actions, models, tools, resources, regions: String::new(), dated: true }
}

fn write_labels(w: &mut dyn Write, anomalies: &[Anomaly], creds: &[Cred]) -> io::Result<()> {
    let mut csv = csv::Writer::from_writer(w);
    csv.write_record(["id", "kind", "credential_id", "start", "end", "description"])?;
    for a in anomalies {
        csv.write_record([
            a.id.as_str(),
            a.kind.as_str(),
            creds[a.cred].id.as_str(),
            &format_ms(a.start),
            &format_ms(a.end),
            &a.description,
        ])?;
    }
    csv.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeSet, HashMap};

    use crate::inventory::Inventory;
    use crate::schema::Action;

    fn small(seed: u64) -> SampleOptions {
        SampleOptions { days: 5, credentials: 30, seed, rate_scale: 0.4, ..Default::default() }
    }

    fn read_all(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<(String, Vec<u8>)> =
            walk(dir).into_iter().map(|p| (p.display().to_string(), std::fs::read(&p).unwrap())).collect();
        v.sort();
        v.into_iter().map(|(p, b)| (p.rsplit('/').next().unwrap().to_string(), b)).collect()
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            if e.path().is_dir() { out.extend(walk(&e.path())) } else { out.push(e.path()) }
        }
        out
    }

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        let (a, b, c) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        generate(&small(7), a.path()).unwrap();
        generate(&small(7), b.path()).unwrap();
        generate(&small(8), c.path()).unwrap();
        assert_eq!(read_all(a.path()), read_all(b.path()));
        assert_ne!(read_all(a.path()), read_all(c.path()));
    }

    struct Loaded {
        lines: Vec<serde_json::Value>,
        inv: Inventory,
        labels: Vec<HashMap<String, String>>,
    }

    fn load(opts: &SampleOptions) -> (tempfile::TempDir, Loaded, SampleSummary) {
        let dir = tempfile::tempdir().unwrap();
        let s = generate(opts, dir.path()).unwrap();
        let mut lines = Vec::new();
        for f in &s.files {
            for l in std::fs::read_to_string(f).unwrap().lines() {
                lines.push(serde_json::from_str(l).unwrap());
            }
        }
        let inv = Inventory::load(&s.inventory).unwrap();
        let mut rdr = csv::Reader::from_path(&s.labels).unwrap();
        let labels = rdr.deserialize().map(|r| r.unwrap()).collect();
        (dir, Loaded { lines, inv, labels }, s)
    }

    fn ms(v: &serde_json::Value) -> i64 {
        crate::time::parse_ts(v["ts"].as_str().unwrap()).unwrap()
    }

    fn in_label(l: &serde_json::Value, labels: &[HashMap<String, String>]) -> bool {
        let t = ms(l);
        labels.iter().any(|lab| {
            lab["credential_id"] == l["credential_id"].as_str().unwrap()
                && crate::time::parse_ts(&lab["start"]).unwrap() <= t
                && t <= crate::time::parse_ts(&lab["end"]).unwrap()
        })
    }

    #[test]
    fn normal_traffic_stays_in_scope_and_anomalies_are_labelled() {
        let (_d, s, summary) = load(&small(3));
        assert_eq!(summary.events as usize, s.lines.len());
        assert_eq!(s.inv.credentials.len(), 30);
        let kinds: BTreeSet<&str> = s.labels.iter().map(|l| l["kind"].as_str()).collect();
        assert_eq!(kinds, ["billing_spike", "out_of_scope", "retry_storm", "tool_chaining"].into_iter().collect());
        for lab in &s.labels {
            let cid = &lab["credential_id"];
            assert!(s.inv.get(cid).is_some());
            let inside = s
                .lines
                .iter()
                .filter(|l| l["credential_id"] == cid.as_str() && in_label(l, std::slice::from_ref(lab)))
                .count();
            assert!(inside >= 5, "{lab:?} has {inside} events");
        }
        for l in &s.lines {
            let action: Action = l["action"].as_str().unwrap().parse().unwrap();
            assert!(l["request_id"].as_str().unwrap().starts_with("req_"));
            if in_label(l, &s.labels) {
                continue;
            }
            let c = s.inv.get(l["credential_id"].as_str().unwrap()).unwrap();
            let t = ms(l);
            assert!(!c.is_expired(t), "normal use after expiry: {l}");
            assert!(c.allows_action(action), "{l}");
            if let Some(m) = l["model"].as_str() {
                assert!(c.allows_model(m), "{l}");
            }
            if let Some(tool) = l["tool"].as_str() {
                assert!(c.allows_tool(tool), "{l}");
            }
            if let Some(r) = l["resource"].as_str() {
                assert!(c.allows_resource(r), "{l}");
            }
        }
    }

    #[test]
    fn storms_and_spikes_stand_out_and_hard_negatives_stay_small() {
        let (_d, s, _) = load(&small(5));
        // Failures per credential-minute outside labels stay small; storms are big.
        let mut per_minute: HashMap<(String, i64), (usize, bool)> = HashMap::new();
        for l in &s.lines {
            if l["status"].as_u64().unwrap() >= 400 {
                let key = (l["credential_id"].as_str().unwrap().to_string(), ms(l) / MINUTE);
                let e = per_minute.entry(key).or_insert((0, false));
                e.0 += 1;
                e.1 |= in_label(l, &s.labels);
            }
        }
        assert!(per_minute.values().filter(|(_, lab)| !lab).all(|(n, _)| *n <= 10));
        for lab in s.labels.iter().filter(|l| l["kind"] == "retry_storm") {
            let biggest =
                per_minute.iter().filter(|((c, _), _)| *c == lab["credential_id"]).map(|(_, v)| v.0).max().unwrap();
            assert!(biggest >= 30, "{lab:?}");
        }
        // A billing spike comes from an address the key never used otherwise.
        for lab in s.labels.iter().filter(|l| l["kind"] == "billing_spike") {
            let (inside, outside): (Vec<_>, Vec<_>) = s
                .lines
                .iter()
                .filter(|l| l["credential_id"] == lab["credential_id"].as_str())
                .partition(|l| in_label(l, std::slice::from_ref(lab)));
            let usual: BTreeSet<&str> = outside.iter().map(|l| l["source_ip"].as_str().unwrap()).collect();
            let new: Vec<_> = inside.iter().filter(|l| !usual.contains(l["source_ip"].as_str().unwrap())).collect();
            assert!(new.len() * 2 > inside.len(), "{lab:?}: most of the window comes from a new address");
            let tokens =
                |v: &[&serde_json::Value]| v.iter().map(|l| l["tokens_in"].as_i64().unwrap_or(0)).sum::<i64>() as f64;
            let spike_hours = ((ms(inside.last().unwrap()) - ms(inside[0])) as f64 / HOUR_MS as f64).max(1.0);
            let usual_hours = (5 * 24) as f64;
            assert!(tokens(&inside) / spike_hours > 10.0 * tokens(&outside) / usual_hours, "{lab:?}");
        }
    }

    #[test]
    fn rejects_bad_options() {
        let d = tempfile::tempdir().unwrap();
        for o in [SampleOptions { days: 0, ..small(1) }, SampleOptions { credentials: 3, ..small(1) }] {
            assert!(matches!(generate(&o, d.path()), Err(SampleError::Invalid(_))));
        }
    }
}
