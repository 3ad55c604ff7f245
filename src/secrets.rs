//! Finds credential secrets in raw log text and redacts them before anything
//! reaches disk.
//!
//! Redaction works on the raw record text, before any format-specific parsing,
//! so one mechanism covers every source, every field (stored or not) and the
//! quarantine. Replacements are plain ASCII without quotes or backslashes, so
//! a JSON record stays valid JSON after redaction.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::LazyLock;

use regex::Regex;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// The kind of an AWS session token: half a credential, useless without the
/// secret access key it was issued with (see `ingest::cloudtrail::aws_own_secret`).
pub const AWS_SESSION_TOKEN: &str = "aws_session_token";

/// A kind of secret, with the pattern that finds it.
struct Detector {
    kind: &'static str,
    /// Group 1, when present, is the secret inside a larger match (its context).
    re: Regex,
}

static DETECTORS: LazyLock<Vec<Detector>> = LazyLock::new(|| {
    let d = |kind, pat: &str| Detector { kind, re: Regex::new(pat).expect("secret pattern compiles") };
    vec![
        d(
            "private_key",
            r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----[^\x22]*?-----END [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----",
        ),
        // Anthropic before generic `sk-` so the kind is specific.
        d("anthropic_api_key", r"\bsk-ant-[A-Za-z0-9_\-]{20,}"),
        d("openai_api_key", r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}"),
        d("github_token", r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})"),
        d("slack_token", r"\bxox[abposr]-[A-Za-z0-9\-]{10,}"),
        d("jwt", r"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"),
        // An AWS secret access key has no prefix of its own: it is 40 base64
        // characters, recognised by the name it travels under.
        d(
            "aws_secret_access_key",
            r#"(?i)(?:secret_?access_?key|aws_?secret(?:_?key)?|secret_?key)["']?\s*[:=]\s*["']?([A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+=]|$)"#,
        ),
        // Or right after its access key id, as a key pair is written down
        // (`AKIA…:secret`, a credentials CSV row, a JSON pair).
        d(
            "aws_secret_access_key",
            r#"\b(?:AKIA|ASIA)[A-Z0-9]{16}["']?\s*[:=,]\s*["']?([A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+=]|$)"#,
        ),
        // `X-Amz-Security-Token`, as in a presigned URL, counts too.
        d(
            AWS_SESSION_TOKEN,
            r#"(?i)(?:session[_-]?token|security[_-]?token)["']?\s*[:=]\s*["']?([A-Za-z0-9/+=]{100,})"#,
        ),
    ]
});

/// Every pattern at once, for records the pre-check lets through.
static ANY: LazyLock<regex::RegexSet> =
    LazyLock::new(|| regex::RegexSet::new(DETECTORS.iter().map(|d| d.re.as_str())).expect("secret patterns compile"));

/// What every prefixed pattern above starts with (case-sensitive there). The
/// regex set's own prefilter cannot be this narrow: its case-insensitive
/// `key` and `token` context occur in every gateway line (`credential_id:
/// key_…`, `tokens_in`).
static PREFIXES: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"-----BEGIN |sk-|gh[pousr]_|github_pat_|xox|eyJ").expect("secret prefixes compile"));

/// Whether `text` could hold a secret: one of the prefixes, or a run of 40
/// base64 characters (what the unprefixed AWS secret key and session token
/// patterns need). False means no pattern can match, which is nearly every
/// record, so most records are cleared without running the full set.
fn may_hold_secret(text: &str) -> bool {
    const RUN: usize = 40;
    if PREFIXES.is_match(text) {
        return true;
    }
    // Test the last byte of each 40-byte window first: one byte outside the
    // alphabet rules out every run through it, so typical text is skipped
    // many bytes at a time.
    let b = text.as_bytes();
    let in_run = |c: &u8| c.is_ascii_alphanumeric() || *c == b'/' || *c == b'+';
    let mut i = 0;
    while i + RUN <= b.len() {
        match b[i..i + RUN].iter().rposition(|c| !in_run(c)) {
            None => return true,
            Some(p) => i += p + 1,
        }
    }
    false
}

/// One secret found (and removed) in a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Exposure {
    pub kind: &'static str,
    /// First 16 hex digits of the secret's SHA-256: enough to tell whether two
    /// exposures are the same key, useless for recovering it.
    pub fingerprint: String,
    /// Byte offset of the replacement in the redacted text.
    pub offset: usize,
}

/// Text with its secrets replaced by `[REDACTED:<kind>:<fingerprint>]`.
#[derive(Debug)]
pub struct Redacted<'a> {
    pub text: Cow<'a, str>,
    pub exposures: Vec<Exposure>,
}

fn fingerprint(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    let mut s = String::with_capacity(16);
    for b in &digest[..8] {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The marker that replaces a secret; recognisable in SQL with `LIKE '%[REDACTED:%'`.
pub const MARKER: &str = "[REDACTED:";

/// Redacts every secret in `text`. Borrows when nothing is found, which is
/// the common case, so clean records cost one scan and no allocation.
pub fn redact(text: &str) -> Redacted<'_> {
    let mut current: Cow<'_, str> = Cow::Borrowed(text);
    let mut exposures = Vec::new();
    if !may_hold_secret(text) || !ANY.is_match(text) {
        return Redacted { text: current, exposures };
    }
    for det in DETECTORS.iter() {
        if !det.re.is_match(&current) {
            continue;
        }
        let mut out = String::with_capacity(current.len());
        let mut last = 0;
        for caps in det.re.captures_iter(&current) {
            let m = caps.get(1).unwrap_or_else(|| caps.get(0).expect("group 0 always matches"));
            out.push_str(&current[last..m.start()]);
            let fp = fingerprint(m.as_str());
            exposures.push(Exposure { kind: det.kind, fingerprint: fp.clone(), offset: out.len() });
            let _ = write!(out, "{MARKER}{}:{fp}]", det.kind);
            last = m.end();
        }
        out.push_str(&current[last..]);
        current = Cow::Owned(out);
    }
    exposures.sort_by_key(|e| e.offset);
    Redacted { text: current, exposures }
}

impl Exposure {
    /// The text that replaced this secret.
    pub fn marker(&self) -> String {
        format!("{MARKER}{}:{}]", self.kind, self.fingerprint)
    }
}

/// Pairs each exposure with the JSON path (`a.b.0.c`) of the field that held
/// it, for reporting which field leaked a secret. `None` where the record is
/// not JSON or the marker is not inside a string value.
pub fn exposure_fields(exposures: &[Exposure], v: Option<&serde_json::Value>) -> Vec<Option<String>> {
    let mut found = v.map(redacted_paths).unwrap_or_default();
    exposures
        .iter()
        .map(|e| {
            let marker = e.marker();
            let i = found.iter().position(|(_, s)| s.contains(&marker))?;
            let (path, s) = found.swap_remove(i);
            // One string may hold several markers: keep the rest findable.
            let rest = s.replacen(&marker, "", 1);
            if rest.contains(MARKER) {
                found.push((path.clone(), rest));
            }
            Some(path)
        })
        .collect()
}

/// The JSON paths of string values that hold a redaction marker, with the value.
fn redacted_paths(v: &serde_json::Value) -> Vec<(String, String)> {
    fn walk(v: &serde_json::Value, path: &mut String, out: &mut Vec<(String, String)>) {
        match v {
            serde_json::Value::String(s) if s.contains(MARKER) => out.push((path.clone(), s.clone())),
            serde_json::Value::Object(m) => {
                for (k, child) in m {
                    let len = path.len();
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(k);
                    walk(child, path, out);
                    path.truncate(len);
                }
            }
            serde_json::Value::Array(a) => {
                for (i, child) in a.iter().enumerate() {
                    let len = path.len();
                    if !path.is_empty() {
                        path.push('.');
                    }
                    let _ = write!(path, "{i}");
                    walk(child, path, out);
                    path.truncate(len);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(v, &mut String::new(), &mut out);
    out
}

/// A secret-exposure finding as stored in the lake's `secret_exposures`
/// table: who leaked a secret where, never the secret itself.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExposureRow {
    /// Time of the event that carried it, when the record was an event.
    pub ts_ms: Option<i64>,
    pub credential_id: Option<String>,
    pub request_id: Option<String>,
    pub source: Option<String>,
    pub source_file: String,
    pub source_record: u64,
    /// JSON path of the field, e.g. `requestParameters.tags.0.value`.
    pub field: Option<String>,
    pub kind: &'static str,
    pub fingerprint: String,
    pub run_id: String,
}

pub fn exposures_schema() -> arrow::datatypes::SchemaRef {
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    let ts = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    std::sync::Arc::new(Schema::new(vec![
        Field::new("ts", ts, true),
        Field::new("credential_id", DataType::Utf8, true),
        Field::new("request_id", DataType::Utf8, true),
        Field::new("source", DataType::Utf8, true),
        Field::new("source_file", DataType::Utf8, false),
        Field::new("source_record", DataType::UInt64, false),
        Field::new("field", DataType::Utf8, true),
        Field::new("kind", DataType::Utf8, false),
        Field::new("fingerprint", DataType::Utf8, false),
        Field::new("run_id", DataType::Utf8, false),
    ]))
}

pub fn exposures_batch(rows: &[ExposureRow]) -> arrow::array::RecordBatch {
    use arrow::array::{ArrayRef, StringArray, TimestampMillisecondArray, UInt64Array};
    use std::sync::Arc;
    let strs =
        |f: fn(&ExposureRow) -> Option<&str>| -> ArrayRef { Arc::new(rows.iter().map(f).collect::<StringArray>()) };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(
            TimestampMillisecondArray::from(rows.iter().map(|r| r.ts_ms).collect::<Vec<_>>()).with_timezone("UTC"),
        ),
        strs(|r| r.credential_id.as_deref()),
        strs(|r| r.request_id.as_deref()),
        strs(|r| r.source.as_deref()),
        strs(|r| Some(&r.source_file)),
        Arc::new(rows.iter().map(|r| r.source_record).collect::<UInt64Array>()),
        strs(|r| r.field.as_deref()),
        strs(|r| Some(r.kind)),
        strs(|r| Some(&r.fingerprint)),
        strs(|r| Some(&r.run_id)),
    ];
    arrow::array::RecordBatch::try_new(exposures_schema(), columns).expect("exposure columns match their schema")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::Strategy;

    fn kinds(text: &str) -> Vec<&'static str> {
        redact(text).exposures.iter().map(|e| e.kind).collect()
    }

    proptest::proptest! {
        /// A secret put in any string field of a JSON record is gone after
        /// redaction, the record is still JSON, and the field is named.
        #[test]
        fn any_field_any_secret(
            keys in proptest::collection::vec("[a-z_]{1,8}", 1..6),
            filler in "[ -~]{0,30}",
            which in 0usize..6,
            pick in 0usize..5,
            body in "[A-Za-z0-9]{40}",
        ) {
            let secrets = [
                format!("sk-proj-{body}"),
                format!("ghp_{body}"),
                format!("xoxb-{}", &body[..20]),
                format!("eyJ{}.eyJ{}.{}", &body[..10], &body[10..20], &body[20..]),
                format!("-----BEGIN PRIVATE KEY-----\\n{body}\\n-----END PRIVATE KEY-----"),
            ];
            let secret = &secrets[pick];
            let mut obj = serde_json::Map::new();
            for (i, k) in keys.iter().enumerate() {
                obj.insert(format!("{k}{i}"), serde_json::Value::String(filler.clone()));
            }
            let target = format!("{}{}", keys[which % keys.len()], which % keys.len());
            obj.insert(target.clone(), serde_json::Value::String(format!("{filler} {secret} {filler}")));
            let text = serde_json::Value::Object(obj).to_string();
            let r = redact(&text);
            proptest::prop_assert!(!r.text.contains(&body[..8]) && !r.text.contains(&body[12..20]), "{}", r.text);
            let v: serde_json::Value = serde_json::from_str(&r.text).unwrap();
            let fields = exposure_fields(&r.exposures, Some(&v));
            proptest::prop_assert!(fields.contains(&Some(target)), "{:?}", fields);
        }
    }

    proptest::proptest! {
        /// The pre-check never clears text a pattern would match: texts made
        /// of secret-like pieces (prefixes, key names, base64 runs of
        /// every length around 40 and 100) are cleared only when no
        /// pattern matches them.
        #[test]
        fn precheck_never_hides_a_secret(
            pieces in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::sample::select(vec![
                        "sk-", "sk-ant-", "ghp_", "github_pat_", "xoxb-", "eyJ", ".", "-----BEGIN RSA PRIVATE KEY-----",
                        "-----END RSA PRIVATE KEY-----", "aws_secret_access_key", "SecretKey", "session_token",
                        "\"", ":", "=", " ", "\n", "key_", "tokens_in",
                    ]).prop_map(str::to_string),
                    "[A-Za-z0-9/+=_-]{1,120}",
                ],
                1..12,
            ),
        ) {
            let text = pieces.concat();
            if ANY.is_match(&text) {
                proptest::prop_assert!(may_hold_secret(&text), "{text}");
            }
        }
    }

    #[test]
    fn precheck_clears_ordinary_gateway_lines() {
        let line = r#"{"ts":"2026-11-08T10:00:00.000Z","request_id":"req_b7cd3deee753e252","credential_id":"key_3H979W82UVL8","tokens_in":812,"tokens_out":96,"resource":"s3://finance-reports/q3.csv","user_agent":"agent-sdk/1.4 (python 3.11)"}"#;
        assert!(!may_hold_secret(line));
        assert!(may_hold_secret(&line.replace("q3.csv", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")));
    }

    #[test]
    fn clean_text_is_borrowed_untouched() {
        let line = r#"{"credential_id":"key_ABCDEF","tool":"s3:GetObject","access_key":"AKIAIOSFODNN7EXAMPLE"}"#;
        let r = redact(line);
        assert!(matches!(r.text, Cow::Borrowed(_)));
        assert!(r.exposures.is_empty());
    }

    #[test]
    fn each_kind_is_found_and_removed() {
        let cases = [
            ("openai_api_key", "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789"),
            ("anthropic_api_key", "sk-ant-api03-abcdefghijklmnopqrstuvwxyz012345"),
            ("github_token", "ghp_abcdefghijklmnopqrstuvwxyz0123456789AB"),
            ("slack_token", "xoxb-1234567890-abcdefghijkl"),
            ("jwt", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36PO"),
        ];
        for (kind, secret) in cases {
            let line = format!(r#"{{"user_agent":"x","note":"token {secret} used"}}"#);
            let r = redact(&line);
            assert_eq!(kinds(&line), vec![kind], "{secret}");
            assert!(!r.text.contains(secret));
            let v: serde_json::Value = serde_json::from_str(&r.text).expect("still JSON");
            assert_eq!(exposure_fields(&r.exposures, Some(&v)), vec![Some("note".to_string())]);
        }
    }

    #[test]
    fn aws_secret_needs_its_name_and_keeps_the_name() {
        let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
        let line = format!(r#"{{"detail":{{"aws_secret_access_key":"{secret}"}}}}"#);
        let r = redact(&line);
        assert_eq!(r.exposures.len(), 1);
        assert_eq!(r.exposures[0].kind, "aws_secret_access_key");
        assert!(r.text.contains("aws_secret_access_key"));
        assert!(!r.text.contains(secret));
        // The same 40 characters under an innocent name are not flagged.
        assert!(kinds(&format!(r#"{{"etag":"{secret}"}}"#)).is_empty());
        // In a command line too.
        assert_eq!(kinds(&format!("export AWS_SECRET_ACCESS_KEY={secret}")), vec!["aws_secret_access_key"]);
        // Or after its key id, however the pair is written.
        for pair in [format!("AKIAIOSFODNN7EXAMPLE:{secret}"), format!(r#"["AKIAIOSFODNN7EXAMPLE", "{secret}"]"#)] {
            let r = redact(&pair);
            assert_eq!(r.exposures.iter().map(|e| e.kind).collect::<Vec<_>>(), vec!["aws_secret_access_key"], "{pair}");
            assert!(r.text.contains("AKIAIOSFODNN7EXAMPLE") && !r.text.contains(secret), "{pair}");
        }
        // A key id alone, or beside a shorter or longer run, is not a pair.
        assert!(kinds(&format!("AKIAIOSFODNN7EXAMPLE:{secret}A")).is_empty());
        assert!(kinds(r#"{"accessKeyId":"AKIAIOSFODNN7EXAMPLE","x":"y"}"#).is_empty());
    }

    #[test]
    fn session_token_under_any_of_its_names() {
        let token = format!("IQoJb3JpZ2luX2VjE{}", "Ab1+/".repeat(30));
        for text in [
            format!(r#"{{"credentials":{{"sessionToken":"{token}"}}}}"#),
            format!("https://b.s3.amazonaws.com/k?X-Amz-Security-Token={token}&X-Amz-Date=1"),
            format!("AWS_SESSION_TOKEN={token}"),
        ] {
            let r = redact(&text);
            assert_eq!(r.exposures.iter().map(|e| e.kind).collect::<Vec<_>>(), vec![AWS_SESSION_TOKEN], "{text}");
            assert!(!r.text.contains(&token[..40]), "{text}");
        }
    }

    #[test]
    fn private_key_block_with_json_escapes() {
        let line = r#"{"body":"-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nabc==\n-----END RSA PRIVATE KEY-----","x":1}"#;
        let r = redact(line);
        assert_eq!(r.exposures.len(), 1);
        let v: serde_json::Value = serde_json::from_str(&r.text).unwrap();
        assert_eq!(v["x"], 1);
        assert!(!r.text.contains("MIIEow"));
    }

    #[test]
    fn same_secret_same_fingerprint_offsets_point_at_markers() {
        let s = "sk-abcdefghijklmnopqrstuvwxyz012345";
        let text = format!("a {s} b {s} c ghp_abcdefghijklmnopqrstuvwxyz0123456789AB");
        let r = redact(&text);
        assert_eq!(r.exposures.len(), 3);
        let v = serde_json::json!({"a": [r.text.as_ref()], "b": {"c": "x"}});
        let fields = exposure_fields(&r.exposures, Some(&v));
        assert_eq!(fields, vec![Some("a.0".to_string()); 3]);
        assert_eq!(exposure_fields(&r.exposures, None), vec![None; 3]);
        assert_eq!(r.exposures[0].fingerprint, r.exposures[1].fingerprint);
        assert_ne!(r.exposures[0].fingerprint, r.exposures[2].fingerprint);
        for e in &r.exposures {
            assert!(r.text[e.offset..].starts_with(MARKER));
        }
    }
}
