//! The sample week as AWS sees it: Bedrock apps and S3 services on IAM
//! users' access keys and on roles (temporary `ASIA…` session keys),
//! written as CloudTrail delivery files, with the inventory keyed by access
//! key (or role ARN) and every LLMjacking spike preceded by its recon chain.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use super::{
    Anomaly, Cred, FAMILIES, Kind, Line, MINUTE, Role, SampleError, Scope, TEAMS, Wording, call, inference, usual,
    write_atomic,
};
use crate::time::{HOUR_MS, format_ms};

/// The Bedrock family in `FAMILIES`.
pub(super) const BEDROCK: usize = 2;
/// How long before its spike the recon chain starts.
pub(super) const RECON_LEAD: i64 = 30 * MINUTE;

/// Background failures of AWS calls: (status, errorCode).
pub(super) const BACKGROUND_ERRORS: &[(u16, &str)] = &[
    (400, "ValidationException"),
    (404, "ResourceNotFoundException"),
    (500, "InternalServerException"),
    (503, "ServiceUnavailableException"),
];

const REGIONS: &[&str] = &["us-east-1", "us-east-1", "us-west-2", "eu-west-1"];

/// What a credential is on AWS.
#[derive(Debug, Clone)]
pub(super) struct CloudCred {
    pub account: String,
    pub region: &'static str,
    /// The IAM user and its long-lived key, for a user credential.
    pub user: Option<(String, String)>,
    /// The role's ARN and name, for a role (its `id` is the ARN).
    pub role_arn: Option<(String, String)>,
}

fn account(seed: u64) -> String {
    format!("{:012}", 100_000_000_000 + seed.wrapping_mul(7_919_993) % 899_999_999_999)
}

fn key(prefix: &str, rng: &mut impl Rng) -> String {
    const B32: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let s: String = (0..16).map(|_| B32[rng.random_range(0..B32.len())] as char).collect();
    format!("{prefix}{s}")
}

/// Re-keys a population the AWS way: IAM users with `AKIA…` keys, and a
/// third of the services as roles.
pub(super) fn rekey(creds: &mut [Cred], seed: u64, rng: &mut ChaCha8Rng) {
    let acct = account(seed);
    for (i, c) in creds.iter_mut().enumerate() {
        let region = REGIONS[rng.random_range(0..REGIONS.len())];
        let is_role = matches!(c.role, Role::Service { .. }) && i % 3 == 0;
        let name = c.principal.split(':').nth(1).unwrap_or(&c.principal).to_string();
        if is_role {
            let role = format!("{name}-{i}");
            let arn = format!("arn:aws:iam::{acct}:role/{role}");
            c.id = arn.clone();
            c.principal = arn.clone();
            c.kind = "aws_role";
            c.user_agent = "aws-sdk-java/2.25.60 Linux/6.1 OpenJDK_64-Bit_Server_VM".into();
            c.cloud = Some(CloudCred { account: acct.clone(), region, user: None, role_arn: Some((arn, role)) });
        } else {
            let k = key("AKIA", rng);
            let arn = format!("arn:aws:iam::{acct}:user/{name}");
            c.id = k.clone();
            c.principal = arn;
            c.kind = "aws_access_key";
            c.user_agent = match c.role {
                Role::LlmApp { .. } => {
                    format!("Boto3/1.34.{} md/Botocore#1.34 ua/2.0 os/linux", rng.random_range(10..90))
                }
                _ => format!("aws-cli/2.15.{} Python/3.11", rng.random_range(0..40)),
            };
            c.cloud = Some(CloudCred { account: acct.clone(), region, user: Some((name, k)), role_arn: None });
        }
    }
}

/// A service's call: S3 reads, writes and listings of its own bucket.
pub(super) fn service_call(c: &Cred, team: &str, ts: i64, rng: &mut ChaCha8Rng) -> Line {
    let (tool, action, resource) = match rng.random_range(0..10) {
        0..=5 => ("s3:GetObject", "read", format!("s3://{team}-data/in/{:04}.parquet", rng.random_range(0..5000))),
        6..=8 => ("s3:PutObject", "write", format!("s3://{team}-data/out/{:04}.parquet", rng.random_range(0..5000))),
        _ => ("s3:ListObjectsV2", "read", format!("s3://{team}-data/")),
    };
    call(usual(c, ts, rng), action, tool, resource)
}

fn attacker_ip(cred: usize) -> String {
    format!("{}.{}", ["203.0.113", "198.51.100", "192.0.2"][cred % 3], 2 + cred % 240)
}

const ATTACKER_UA: &str = "Boto3/1.35.0 md/Botocore#1.35.0 ua/2.0 os/linux#6.5 md/arch#x86_64 lang/python#3.12";

/// CloudTrail's wording of the anomalies (see [`super::describe`]).
pub(super) const WORDING: Wording = Wording {
    billing: "LLMjacking: InvokeModel of a premium model from a new address, far more requests than usual",
    chaining: |variant, _| {
        format!(
            "LLMjacking recon: first-ever Bedrock control-plane calls (logging, models, access), failed InvokeModel probes{}",
            if variant == 1 { ", then model-invocation logging deleted" } else { "" }
        )
    },
    storm: [
        "retry storm: a burst of UnrecognizedClientException / InvalidAccessKeyId (a revoked or guessed key)",
        "retry storm: a burst of AccessDenied",
        "retry storm: a burst of ThrottlingException / SlowDown",
    ],
    expired: "out of scope: the access key is used after its expiry",
    outside: |role| match role {
        Role::Service { .. } => Some("out of scope: reads of s3://finance-reports/, outside the key's resources"),
        _ => Some("out of scope: InvokeModel in a region outside the key's allowed regions"),
    },
    admin: "out of scope: iam:CreateUser, an admin call outside the key's allowed actions",
};

fn control(c: &Cred, ts: i64, tool: &str, model: Option<&str>, rng: &mut ChaCha8Rng) -> Line {
    let mut l = usual(c, ts, rng);
    l.action = "admin";
    l.tool = Some(tool.to_string());
    l.model = model.map(str::to_string);
    l
}

pub(super) fn inject(a: &Anomaly, c: &Cred, day_start: i64, rng: &mut ChaCha8Rng, out: &mut Vec<Line>) {
    let t = day_start + a.at;
    let premium = FAMILIES[BEDROCK].2;
    match a.kind {
        Kind::ToolChaining => {
            // The recon chain: what an LLMjacking toolkit calls with a fresh key.
            let mut ts = t;
            let calls: &[(&str, Option<&str>)] = &[
                ("bedrock:GetModelInvocationLoggingConfiguration", None),
                ("bedrock:ListFoundationModels", None),
                ("bedrock:GetFoundationModelAvailability", Some(premium)),
                ("bedrock:PutUseCaseForModelAccess", None),
                ("bedrock:CreateFoundationModelAgreement", Some(premium)),
                ("bedrock:PutFoundationModelEntitlement", Some(premium)),
            ];
            let mut steps: Vec<Line> = Vec::new();
            for (tool, model) in calls {
                steps.push(control(c, ts, tool, *model, rng));
                ts += rng.random_range(15_000..90_000);
            }
            for m in [premium, "anthropic.claude-v2", "meta.llama3-70b-instruct-v1:0"] {
                let mut l = inference(c, ts, 0.01, m, rng);
                l.status = 400;
                l.error_code = Some("ValidationException");
                l.tokens_out = Some(0);
                l.cost_usd = None;
                steps.push(l);
                ts += rng.random_range(15_000..90_000);
            }
            if a.variant == 1 {
                steps.push(control(c, ts, "bedrock:DeleteModelInvocationLoggingConfiguration", None, rng));
            }
            for mut l in steps {
                l.source_ip = attacker_ip(a.cred);
                l.user_agent = ATTACKER_UA.into();
                out.push(l);
            }
        }
        Kind::BillingSpike => {
            let hours = rng.random_range(1..=3);
            let per_hour = (c.rate * 3.0).max(40.0) as i64;
            for k in 0..hours * per_hour {
                let ts = t + k * (HOUR_MS / per_hour) + rng.random_range(0..HOUR_MS / per_hour);
                let mut l = inference(c, ts, rng.random_range(10.0..40.0), premium, rng);
                l.source_ip = attacker_ip(a.cred);
                l.user_agent = ATTACKER_UA.into();
                out.push(l);
            }
        }
        Kind::RetryStorm => {
            let service = matches!(c.role, Role::Service { .. });
            let (status, code) = match (a.variant % 3, service) {
                (0, false) => (401, "UnrecognizedClientException"),
                (0, true) => (401, "InvalidAccessKeyId"),
                (1, false) => (403, "AccessDeniedException"),
                (1, true) => (403, "AccessDenied"),
                (_, false) => (429, "ThrottlingException"),
                (_, true) => (429, "SlowDown"),
            };
            super::storm(c, t, status, code, rng, out);
        }
        Kind::OutOfScope => {
            let n = rng.random_range(5..=30);
            for k in 0..n {
                let ts = t + k * rng.random_range(20_000..120_000);
                let l = match (a.variant, c.role) {
                    (2, Role::Service { team }) => super::service_call(c, TEAMS[team], ts, rng),
                    (2, _) => inference(c, ts, 1.0, c.models[0], rng),
                    (0, Role::Service { .. }) => {
                        let ledger = |q| format!("s3://finance-reports/2026/q{q}-ledger.csv");
                        call(usual(c, ts, rng), "read", "s3:GetObject", ledger(rng.random_range(1..5)))
                    }
                    (0, _) => {
                        let mut l = inference(c, ts, 1.0, c.models[0], rng);
                        l.region = Some(if c.cloud.as_ref().is_some_and(|x| x.region == "ap-southeast-2") {
                            "sa-east-1"
                        } else {
                            "ap-southeast-2"
                        });
                        l
                    }
                    _ => call(
                        usual(c, ts, rng),
                        "admin",
                        "iam:CreateUser",
                        format!("svc-{}", rng.random_range(100..999)),
                    ),
                };
                out.push(l);
            }
        }
    }
}

/// A stable hex id from a string (request and event ids, session keys).
fn hex_of(s: &str, salt: u64) -> String {
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128_with_seed(s.as_bytes(), salt))
}

fn uuid(s: &str, salt: u64) -> String {
    let h = hex_of(s, salt);
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// A role's session: a new temporary key every four hours of work.
fn session(role: &str, ts: i64) -> (String, String) {
    let block = ts / (4 * HOUR_MS);
    let name = format!("botocore-session-{}", block * 4 * 3600);
    let h = hex_of(&format!("{role}/{block}"), 7).to_uppercase();
    const B32: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let key: String = h.bytes().take(16).map(|b| B32[b as usize % 32] as char).collect();
    (name, format!("ASIA{key}"))
}

fn record(l: &Line, c: &Cred) -> Value {
    let cloud = c.cloud.as_ref().expect("a CloudTrail sample credential");
    let acct = &cloud.account;
    let (svc, name) = match l.tool.as_deref() {
        Some(t) => t.split_once(':').unwrap_or(("bedrock", t)),
        None => ("bedrock", "InvokeModel"),
    };
    let identity = match (&cloud.user, &cloud.role_arn) {
        (Some((user, key)), _) => json!({
            "type": "IAMUser",
            "principalId": format!("AIDA{}", &hex_of(user, 3)[..16].to_uppercase()),
            "arn": c.principal,
            "accountId": acct,
            "accessKeyId": key,
            "userName": user,
        }),
        (None, Some((arn, role))) => {
            let (session_name, key) = session(arn, l.ts_ms);
            let role_id = format!("AROA{}", &hex_of(arn, 5)[..16].to_uppercase());
            json!({
                "type": "AssumedRole",
                "principalId": format!("{role_id}:{session_name}"),
                "arn": format!("arn:aws:sts::{acct}:assumed-role/{role}/{session_name}"),
                "accountId": acct,
                "accessKeyId": key,
                "sessionContext": {
                    "sessionIssuer": {"type": "Role", "principalId": role_id, "arn": arn, "accountId": acct, "userName": role},
                    "attributes": {"creationDate": format_ms(l.ts_ms / (4 * HOUR_MS) * 4 * HOUR_MS), "mfaAuthenticated": "false"},
                },
            })
        }
        (None, None) => Value::Null,
    };
    let params = match (svc, name) {
        ("s3", _) => {
            let r = l.resource.as_deref().unwrap_or("s3://unknown/");
            let (bucket, key) = r.trim_start_matches("s3://").split_once('/').unwrap_or((r, ""));
            if key.is_empty() || name == "ListObjectsV2" {
                json!({"bucketName": bucket, "list-type": "2", "prefix": key})
            } else {
                json!({"bucketName": bucket, "key": key, "Host": format!("{bucket}.s3.amazonaws.com")})
            }
        }
        ("iam", _) => json!({"userName": l.resource}),
        _ => match &l.model {
            Some(m) => json!({"modelId": m}),
            None => Value::Null,
        },
    };
    let data_event = svc == "s3" || name == "InvokeModel";
    let mut r = json!({
        "eventVersion": "1.09",
        "userIdentity": identity,
        "eventTime": format!("{}Z", &format_ms(l.ts_ms)[..19]),
        "eventSource": format!("{svc}.amazonaws.com"),
        "eventName": name,
        "awsRegion": l.region.unwrap_or(cloud.region),
        "sourceIPAddress": l.source_ip,
        "userAgent": l.user_agent,
        "requestParameters": params,
        "responseElements": Value::Null,
        "requestID": uuid(&l.request_id, 1),
        "eventID": uuid(&l.request_id, 2),
        "readOnly": matches!(l.action, "read" | "inference") || name.starts_with("Get") || name.starts_with("List"),
        "eventType": "AwsApiCall",
        "managementEvent": !data_event,
        "recipientAccountId": acct,
        "eventCategory": if data_event { "Data" } else { "Management" },
    });
    if let Some(code) = l.error_code {
        r["errorCode"] = json!(code);
        r["errorMessage"] = json!(format!("{code} ({name})"));
    }
    r
}

/// Writes one day as hourly delivery files per region:
/// `AWSLogs/<account>/CloudTrail/<region>/YYYY/MM/DD/<account>_CloudTrail_<region>_<YYYYMMDDTHHMMZ>_<id>.json.gz`.
pub(super) fn write_day(root: &Path, lines: &[Line], creds: &[Cred], seed: u64) -> Result<Vec<PathBuf>, SampleError> {
    let by_id: HashMap<&str, &Cred> = creds.iter().map(|c| (c.id.as_str(), c)).collect();
    let mut files: BTreeMap<(String, &'static str, i64), Vec<Value>> = BTreeMap::new();
    for l in lines {
        let c = by_id[l.credential_id.as_str()];
        let cloud = c.cloud.as_ref().expect("a CloudTrail sample credential");
        let region = l.region.unwrap_or(cloud.region);
        files.entry((cloud.account.clone(), region, l.ts_ms / HOUR_MS * HOUR_MS)).or_default().push(record(l, c));
    }
    let mut out = Vec::new();
    for ((acct, region, hour), records) in files {
        let stamp = format_ms(hour);
        let (y, m, d) = (&stamp[0..4], &stamp[5..7], &stamp[8..10]);
        let dir = root.join(&acct).join("CloudTrail").join(region).join(y).join(m).join(d);
        std::fs::create_dir_all(&dir).map_err(|source| SampleError::Io { path: dir.clone(), source })?;
        let compact = format!("{y}{m}{d}T{}{}Z", &stamp[11..13], &stamp[14..16]);
        let id = &hex_of(&format!("{seed}/{region}/{hour}"), 11)[..16].to_uppercase();
        let path = dir.join(format!("{acct}_CloudTrail_{region}_{compact}_{id}.json.gz"));
        // One write: the compressor is slow on many small ones.
        let doc = serde_json::to_vec(&json!({ "Records": records })).map_err(io::Error::from);
        write_atomic(&path, |w| w.write_all(&doc?), true)
            .map_err(|source| SampleError::Io { path: path.clone(), source })?;
        out.push(path);
    }
    Ok(out)
}

/// The inventory keyed the cloud's way: access key id (or role ARN), IAM
/// ARN, CloudTrail tool names, S3 prefixes and the allowed region.
pub(super) fn scope(c: &Cred) -> Scope {
    let (actions, models, tools, resources) = match c.role {
        Role::Service { team } => (
            "read;write",
            String::new(),
            "s3:GetObject;s3:PutObject;s3:ListObjectsV2".to_string(),
            format!("s3://{}-data/", TEAMS[team]),
        ),
        _ => ("inference", FAMILIES[BEDROCK].3.to_string(), "bedrock:InvokeModel".to_string(), String::new()),
    };
    Scope {
        actions: actions.to_string(),
        models,
        tools,
        resources,
        regions: c.cloud.as_ref().map_or("", |x| x.region).to_string(),
        // A role has no key to rotate or expire: its sessions' keys live for hours.
        dated: c.cloud.as_ref().is_none_or(|x| x.role_arn.is_none()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::io::Read;

    use super::super::{SampleFormat, SampleOptions, generate};
    use crate::ingest::cloudtrail::map_text;
    use crate::inventory::Inventory;

    /// Every generated record is CloudTrail the ingest maps; the credential
    /// it maps to is in the inventory; and outside the labelled anomalies,
    /// every call stays inside its inventory entry (action, tool, model,
    /// resource, region, validity).
    #[test]
    fn records_map_to_inventory_credentials_and_normal_traffic_is_in_scope() {
        let dir = tempfile::tempdir().unwrap();
        let opts = SampleOptions {
            days: 5,
            credentials: 24,
            seed: 9,
            rate_scale: 0.2,
            format: SampleFormat::CloudTrail,
            ..Default::default()
        };
        let s = generate(&opts, dir.path()).unwrap();
        let inv = Inventory::load(&s.inventory).unwrap();
        let mut rdr = csv::Reader::from_path(&s.labels).unwrap();
        let labels: Vec<HashMap<String, String>> = rdr.deserialize().map(|r| r.unwrap()).collect();
        let in_label = |cred: &str, t: i64| {
            labels.iter().any(|l| {
                l["credential_id"] == cred
                    && crate::time::parse_ts(&l["start"]).unwrap() <= t
                    && t <= crate::time::parse_ts(&l["end"]).unwrap()
            })
        };
        let mut n = 0u64;
        let mut sessions = 0;
        for f in &s.files {
            let mut text = String::new();
            flate2::read::GzDecoder::new(std::fs::File::open(f).unwrap()).read_to_string(&mut text).unwrap();
            let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
            for r in doc["Records"].as_array().unwrap() {
                n += 1;
                let raw = r.to_string();
                let e = map_text(&raw).unwrap_or_else(|e| panic!("{e}: {raw}"));
                let c = inv.get(&e.credential_id).unwrap_or_else(|| panic!("not in the inventory: {raw}"));
                sessions += e.session_id.as_deref().is_some_and(|s| s.contains("/ASIA")) as usize;
                if in_label(&e.credential_id, e.ts_ms) {
                    continue;
                }
                assert!(!c.is_expired(e.ts_ms), "{raw}");
                assert!(c.allows_action(e.action.unwrap()), "{raw}");
                assert!(c.allows_tool(e.tool.as_deref().unwrap()), "{raw}");
                assert!(e.model.as_deref().is_none_or(|m| c.allows_model(m)), "{raw}");
                assert!(e.region.as_deref().is_none_or(|r| c.allows_region(r)), "{raw}");
                if e.provider.as_deref() != Some("bedrock") {
                    assert!(e.resource.as_deref().is_none_or(|r| c.allows_resource(r)), "{raw}");
                }
            }
        }
        assert_eq!(n, s.events);
        assert!(sessions > 0, "roles work with temporary session keys");
        let kinds: std::collections::BTreeSet<&str> = labels.iter().map(|l| l["kind"].as_str()).collect();
        assert_eq!(kinds, ["billing_spike", "out_of_scope", "retry_storm", "tool_chaining"].into_iter().collect());
    }
}
