//! Finds credential secrets in raw log text and redacts them before anything
//! reaches disk.
//!
//! Redaction works on the raw record text, before any format-specific parsing,
//! so one mechanism covers every source, every field (stored or not) and the
//! quarantine. Replacements are plain ASCII without quotes or backslashes, so
//! a JSON record stays valid JSON after redaction. [`redact_record`] adds a
//! pass over the decoded string values, for secrets that JSON escapes hide
//! from the raw text; [`PemLines`] follows a private key written over several
//! lines; [`redact_path`] cleans input file names.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::LazyLock;

use aho_corasick::{AhoCorasick, Input, MatchKind};
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

/// What every prefixed pattern above starts with (case-sensitive there).
/// All but the PEM header need a word boundary before them (see
/// [`has_prefix`]): `sk-` alone is in `risk-`, `task-`, `disk-`, and each
/// such line went on to the full set. The regex set's own prefilter cannot
/// be this narrow: its case-insensitive `key` and `token` context occur in
/// every gateway line (`credential_id: key_…`, `tokens_in`).
const PREFIXES: &[&str] = &[PEM_HEADER, "sk-", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "xox", "eyJ"];

/// The literals of [`PREFIXES`], searched at once (SIMD where the CPU has it).
/// A plain literal search: a regex with the boundary in it cost every line
/// the regex's per-search setup and a DFA pass over each candidate.
static PREFIX_SEARCH: LazyLock<AhoCorasick> = LazyLock::new(|| {
    AhoCorasick::builder().match_kind(MatchKind::LeftmostFirst).build(PREFIXES).expect("secret prefixes build")
});

/// Whether one of [`PREFIXES`] occurs in `b`, each but the PEM header at
/// ASCII's word boundary (no ASCII letter, digit or `_` before it): true
/// wherever the patterns' Unicode `\b` is, since every prefix starts with
/// an ASCII letter. After an occurrence without the boundary the search
/// goes on from its second byte, so an occurrence overlapping it
/// (`sk-----BEGIN `) is still seen.
fn has_prefix(b: &[u8]) -> bool {
    let mut at = 0;
    while let Some(m) = PREFIX_SEARCH.find(Input::new(b).range(at..)) {
        let bounded = m.start() == 0 || !(b[m.start() - 1].is_ascii_alphanumeric() || b[m.start() - 1] == b'_');
        if PREFIXES[m.pattern()] == PEM_HEADER || bounded {
            return true;
        }
        at = m.start() + 1;
    }
    false
}

/// Whether `text` could hold a secret: one of the prefixes, or a run of 40
/// base64 characters (what the unprefixed AWS secret key and session token
/// patterns need). False means no pattern can match, which is nearly every
/// record, so most records are cleared without running the full set.
fn may_hold_secret(text: &str) -> bool {
    const RUN: usize = 40;
    if has_prefix(text.as_bytes()) {
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

/// Redacts a record: its raw text, then every string value as it reads once
/// JSON escapes are decoded (`\/`, `\u002d`, `\"` hide a secret from the
/// patterns in the raw text), and the string values of a JSON document
/// nested in a string (CloudTrail's `secretString`) decoded once more.
/// Where the decoded pass finds a secret the record is re-serialised with
/// its markers, so every column and the quarantine get the redacted value.
/// Text without a backslash has nothing escaped (every decoded value is a
/// substring the raw pass saw), so most records pay one byte scan for this.
pub fn redact_record(raw: &str) -> Redacted<'_> {
    let first = redact(raw);
    // memchr's SIMD search: `str::contains` scans a word at a time.
    if memchr::memchr(b'\\', first.text.as_bytes()).is_none() {
        return first;
    }
    let mut exposures = first.exposures;
    let text = match serde_json::from_str::<serde_json::Value>(&first.text) {
        Ok(mut v) => {
            let before = exposures.len();
            redact_strings(&mut v, &mut exposures, true);
            if exposures.len() == before {
                return Redacted { text: first.text, exposures };
            }
            v.to_string()
        }
        // Not JSON (it is bound for the quarantine): read it as if it were
        // one JSON string, keeping the decoded form only where that shows a secret.
        Err(_) => {
            let decoded = unescape_lossy(&first.text);
            let r = redact(&decoded);
            if r.exposures.is_empty() {
                return Redacted { text: first.text, exposures };
            }
            exposures.extend(r.exposures);
            r.text.into_owned()
        }
    };
    locate(&text, &mut exposures);
    Redacted { text: Cow::Owned(text), exposures }
}

/// Redacts every string in `v` in place; `nested` also opens a string that
/// is itself a JSON document (one level, as CloudTrail nests them).
fn redact_strings(v: &mut serde_json::Value, exposures: &mut Vec<Exposure>, nested: bool) {
    use serde_json::Value;
    match v {
        Value::String(s) => redact_string(None, s, exposures, nested),
        Value::Array(a) => a.iter_mut().for_each(|c| redact_strings(c, exposures, nested)),
        Value::Object(m) => {
            for (k, c) in m.iter_mut() {
                match c {
                    Value::String(s) => redact_string(Some(k), s, exposures, nested),
                    _ => redact_strings(c, exposures, nested),
                }
            }
        }
        _ => {}
    }
}

/// Redacts one decoded string. A member's value is read after its name, as
/// `"name":"value"`, since an AWS secret key or session token is known only
/// by the name it travels under.
fn redact_string(name: Option<&str>, s: &mut String, exposures: &mut Vec<Exposure>, nested: bool) {
    let in_context = name.and_then(|k| {
        let prefix = format!("\"{k}\":\"");
        let member = format!("{prefix}{s}\"");
        let r = redact(&member);
        if r.exposures.is_empty() {
            return Some(None);
        }
        // A match reaching into the name itself: judge the value alone.
        let value = r.text.strip_prefix(prefix.as_str())?.strip_suffix('"')?.to_string();
        Some(Some((value, r.exposures)))
    });
    let found = in_context.unwrap_or_else(|| {
        let r = redact(s);
        (!r.exposures.is_empty()).then(|| (r.text.into_owned(), r.exposures))
    });
    if let Some((value, found)) = found {
        exposures.extend(found);
        *s = value;
    }
    let t = s.trim_start();
    if nested
        && (t.starts_with('{') || t.starts_with('['))
        && let Ok(mut inner) = serde_json::from_str::<serde_json::Value>(s)
    {
        let before = exposures.len();
        redact_strings(&mut inner, exposures, false);
        if exposures.len() > before {
            *s = inner.to_string();
        }
    }
}

/// Points each exposure's offset at its marker in `text` (the n-th exposure
/// of a marker at its n-th occurrence), in text order.
fn locate(text: &str, exposures: &mut [Exposure]) {
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for e in exposures.iter_mut() {
        let marker = e.marker();
        let from = seen.get(&marker).copied().unwrap_or(0);
        if let Some(i) = text[from..].find(&marker) {
            e.offset = from + i;
            seen.insert(marker, from + i + 1);
        }
    }
    exposures.sort_by_key(|e| e.offset);
}

/// Decodes JSON string escapes wherever they occur; anything malformed is kept as written.
fn unescape_lossy(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let esc = &rest[i + 1..];
        let simple = match esc.as_bytes().first() {
            Some(b'/') => Some('/'),
            Some(b'\\') => Some('\\'),
            Some(b'"') => Some('"'),
            Some(b'n') => Some('\n'),
            Some(b't') => Some('\t'),
            Some(b'r') => Some('\r'),
            Some(b'b') => Some('\u{8}'),
            Some(b'f') => Some('\u{c}'),
            _ => None,
        };
        let hex = esc.get(1..5).filter(|_| esc.starts_with('u')).and_then(|h| u32::from_str_radix(h, 16).ok());
        match (simple, hex) {
            (Some(c), _) => {
                out.push(c);
                rest = &esc[1..];
            }
            (None, Some(code)) => {
                out.push(char::from_u32(code).unwrap_or('\u{FFFD}'));
                rest = &esc[5..];
            }
            (None, None) => {
                out.push('\\');
                rest = esc;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Redacts secrets in an input file's path before it is stored anywhere
/// (`source_file`, commits, quarantine, exposures). The marker keeps the
/// secret's fingerprint, so one path always redacts to the same text.
pub fn redact_path(path: &str) -> Cow<'_, str> {
    redact_record(path).text
}

/// Where a PEM private key written over several physical lines stands, for
/// a reader that sees one line at a time (each line is its own record, so
/// the block pattern of [`redact`] never sees the key whole).
///
/// The rule: a line holding a `-----BEGIN … PRIVATE KEY-----` header is
/// redacted from the header on, every line after it up to and including the
/// `-----END …-----` footer is redacted whole, and, for a reader that starts
/// in the middle of a block (a chunk boundary), so is any line made only of
/// 40 or more base64 characters: a key's body line, or the kind of bare
/// token no log record is. A JSON record ends a block that has no footer,
/// so a truncated key cannot swallow the records after it. One finding is reported per block, fingerprinted
/// by its first line of key material; every redacted line gets a marker.
#[derive(Debug, Default)]
pub struct PemLines {
    state: PemState,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum PemState {
    #[default]
    Outside,
    /// Inside a block, its finding not reported yet.
    Begun,
    Reported,
}

/// The literal every PEM header starts with: most lines lack it, and a
/// literal search clears them without a regex search's setup.
const PEM_HEADER: &str = "-----BEGIN ";
static PEM_HEADER_SEARCH: LazyLock<memchr::memmem::Finder<'static>> =
    LazyLock::new(|| memchr::memmem::Finder::new(PEM_HEADER));
static PEM_BEGIN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----").expect("PEM header compiles"));
static PEM_END: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"-----END [A-Z0-9 ]*-----").expect("PEM footer compiles"));

const PEM_KIND: &str = "private_key";

impl PemLines {
    /// `line` redacted when it belongs to a private key block, else `None`
    /// (and the line goes through [`redact_record`] as usual).
    pub fn line<'a>(&mut self, line: &'a str) -> Option<Redacted<'a>> {
        let mark = |secret: &str, report: bool, at: usize, exposures: &mut Vec<Exposure>| {
            let fp = fingerprint(secret);
            if report {
                exposures.push(Exposure { kind: PEM_KIND, fingerprint: fp.clone(), offset: at });
            }
            format!("{MARKER}{PEM_KIND}:{fp}]")
        };
        let mut exposures = Vec::new();
        if self.state == PemState::Outside {
            let header = PEM_HEADER_SEARCH.find(line.as_bytes()).and_then(|at| PEM_BEGIN.find_at(line, at));
            let Some(h) = header else {
                let body = line.trim();
                if body.len() >= 40 && body.bytes().all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b)) {
                    let text = mark(body, false, 0, &mut exposures);
                    return Some(Redacted { text: Cow::Owned(text), exposures });
                }
                return None;
            };
            // A whole block on one line is the block pattern's.
            if PEM_END.is_match(&line[h.end()..]) {
                return None;
            }
            let rest = line[h.end()..].trim();
            let report = !rest.is_empty();
            self.state = if report { PemState::Reported } else { PemState::Begun };
            let mut text = line[..h.start()].to_string();
            let secret = if report { rest } else { &line[h.start()..] };
            text += &mark(secret, report, h.start(), &mut exposures);
            return Some(Redacted { text: Cow::Owned(text), exposures });
        }
        // A record after a block that never ended: the block is over.
        if !PEM_END.is_match(line) && matches!(line.trim_start().as_bytes().first(), Some(b'{' | b'[')) {
            self.state = PemState::Outside;
            return None;
        }
        let report = self.state == PemState::Begun;
        let (text, after) = match PEM_END.find(line) {
            Some(f) => {
                self.state = PemState::Outside;
                (mark(&line[..f.end()], report, 0, &mut exposures), &line[f.end()..])
            }
            None => {
                self.state = PemState::Reported;
                (mark(line, report, 0, &mut exposures), "")
            }
        };
        Some(Redacted { text: Cow::Owned(text + after), exposures })
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
            pick in 0usize..6,
            body in "[A-Za-z0-9]{40}",
            escape in 0usize..4,
            escaped_at in proptest::collection::vec(proptest::bool::ANY, 64),
        ) {
            let secrets = [
                format!("sk-proj-{body}"),
                format!("ghp_{body}"),
                format!("xoxb-{}", &body[..20]),
                format!("eyJ{}.eyJ{}.{}", &body[..10], &body[10..20], &body[20..]),
                format!("-----BEGIN PRIVATE KEY-----\\n{body}\\n-----END PRIVATE KEY-----"),
                format!("aws_secret_access_key={}/{}", &body[..20], &body[21..]),
            ];
            let secret = &secrets[pick];
            // As JSON may write it: escaped `/` and `-`, any character as
            // `\uXXXX`, or inside a JSON document nested in the string.
            let written = match escape {
                0 => secret.clone(),
                1 => secret.replace('/', "\\/").replace('-', "\\u002d"),
                2 => secret
                    .chars()
                    .zip(escaped_at.iter().cycle())
                    .map(|(c, &e)| if e && c.is_ascii_alphanumeric() { format!("\\u{:04x}", c as u32) } else { c.to_string() })
                    .collect(),
                _ => serde_json::Value::String(serde_json::json!({ "inner": secret.replace("\\n", "\n") }).to_string())
                    .to_string()
                    .trim_matches('"')
                    .to_string(),
            };
            let mut obj = serde_json::Map::new();
            for (i, k) in keys.iter().enumerate() {
                obj.insert(format!("{k}{i}"), serde_json::Value::String(filler.clone()));
            }
            let target = format!("{}{}", keys[which % keys.len()], which % keys.len());
            obj.insert(target.clone(), serde_json::Value::String(format!("{filler} @SECRET@ {filler}")));
            let text = serde_json::Value::Object(obj).to_string().replace("@SECRET@", &written);
            let r = redact_record(&text);
            let v: serde_json::Value = serde_json::from_str(&r.text).unwrap();
            // Judged on the values as decoded: a secret's letters are plain there.
            let decoded = v.to_string();
            proptest::prop_assert!(!decoded.contains(&body[..8]) && !decoded.contains(&body[12..20]), "{} -> {}", text, r.text);
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
                        "\"", ":", "=", " ", "\n", "key_", "tokens_in", "risk", "é", "日",
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
        // A prefix inside a word is no secret's start; at a word's start it is.
        let task = line.replace("q3.csv", "task-runner/risk-etl");
        assert!(!may_hold_secret(&task));
        assert!(may_hold_secret(&task.replace("task-runner", "sk-runner")));
        // A prefix without its boundary does not hide one that overlaps it.
        let key = "risk-----BEGIN RSA PRIVATE KEY-----MIIEpAIBAAKCAQEA-----END RSA PRIVATE KEY-----";
        assert!(ANY.is_match(key) && may_hold_secret(key));
        assert!(!has_prefix(b"_sk-") && has_prefix("ésk-".as_bytes()) && has_prefix(b"eyJ"));
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

    #[test]
    fn escaped_secrets_are_redacted_where_they_decode() {
        let key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
        let cases = [
            // `\/` in an AWS secret key.
            (format!(r#"{{"note":"aws_secret_access_key={}"}}"#, key.replace('/', r"\/")), "note", "wJalrXUtnFEMI"),
            // The same under the key's own name.
            (
                format!(r#"{{"creds":{{"aws_secret_access_key":"{}"}}}}"#, key.replace('/', r"\/")),
                "creds.aws_secret_access_key",
                "wJalrXUtnFEMI",
            ),
            // `\u002d` in an OpenAI key.
            (r#"{"note":"sk\u002dproj\u002dabcdefghijklmnopqrstuvwxyz0123"}"#.to_string(), "note", "abcdefghijklmnop"),
            // A JSON document inside a string, as CloudTrail logs PutSecretValue.
            (
                format!(
                    r#"{{"requestParameters":{{"secretId":"db","secretString":"{{\"user\":\"app\",\"aws_secret_access_key\":\"{key}\"}}"}}}}"#
                ),
                "requestParameters.secretString",
                "wJalrXUtnFEMI",
            ),
        ];
        for (text, field, piece) in cases {
            assert!(redact(&text).exposures.is_empty(), "the raw pass alone misses {text}");
            let r = redact_record(&text);
            assert_eq!(r.exposures.len(), 1, "{text}");
            let v: serde_json::Value = serde_json::from_str(&r.text).expect("still JSON");
            assert!(!v.to_string().contains(piece), "{}", r.text);
            assert_eq!(exposure_fields(&r.exposures, Some(&v)), vec![Some(field.to_string())]);
            assert!(r.text[r.exposures[0].offset..].starts_with(MARKER));
        }
        // Nested values stay readable, and clean escaped text is left as written.
        let nested = redact_record(
            r#"{"p":{"secretString":"{\"user\":\"app\",\"token\":\"ghp_abcdefghijklmnopqrstuvwxyz0123456789AB\"}"}}"#,
        );
        assert!(nested.text.contains(r#"\"user\":\"app\""#), "{}", nested.text);
        let clean = r#"{"ua":"a\/b \"c\"","x":"\u0041"}"#;
        assert!(matches!(redact_record(clean).text, Cow::Borrowed(t) if t == clean));
        // Not JSON: the decoded form is kept only where it shows a secret.
        let broken = r#"{"note":"sk\u002dproj\u002dabcdefghijklmnopqrstuvwxyz0123"#;
        let r = redact_record(broken);
        assert_eq!(kinds_of(&r), vec!["openai_api_key"]);
        assert!(!r.text.contains("abcdefghijklmnop"));
        assert_eq!(redact_record(r#"{"a":"\u0041"#).text, r#"{"a":"\u0041"#);
    }

    fn kinds_of(r: &Redacted<'_>) -> Vec<&'static str> {
        r.exposures.iter().map(|e| e.kind).collect()
    }

    #[test]
    fn pem_header_is_found_after_other_headers_on_its_line() {
        let mut pem = PemLines::default();
        assert!(pem.line("-----BEGIN CERTIFICATE----- MIIB").is_none());
        let r = pem.line("-----BEGIN CERTIFICATE----- MIIB -----BEGIN EC PRIVATE KEY-----").expect("a key's header");
        assert!(r.text.starts_with("-----BEGIN CERTIFICATE----- MIIB ") && r.text.contains(MARKER), "{}", r.text);
    }

    #[test]
    fn pem_key_over_several_lines_is_redacted_line_by_line() {
        let body = [
            "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun",
            "VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK",
            "LxoS2tFczGkPLPgizskuemMghRniWaoLcyehkd3qqGElvW/VDL5AaWTg0nLVkjRo9z+40RQzuVaE8AkAFmxZzow3x+VJYKdjykkJ0iT9wCS0DRTXu269V264Vf/3jvredZiKRkgwlL9xNAwxXFg0x/XFw005UWVRIkdgcKWTjpBP2dPwVZ4WWC+9aGVd+Gyn1o0CLelf4rEjGoXbAAEgAqeGUxrcIlbjXfbcmwIDAQABAoIBAQ",
            "8W3M=",
        ];
        let lines: Vec<String> = std::iter::once("-----BEGIN RSA PRIVATE KEY-----".to_string())
            .chain(body.iter().map(|s| s.to_string()))
            .chain(["-----END RSA PRIVATE KEY-----".to_string(), r#"{"ts":"x","credential_id":"k"}"#.to_string()])
            .collect();
        let mut pem = PemLines::default();
        let out: Vec<Option<Redacted<'_>>> = lines.iter().map(|l| pem.line(l)).collect();
        // Every line of the block, the short last one too, and not the record after it.
        assert!(out[..lines.len() - 1].iter().all(Option::is_some));
        assert!(out[lines.len() - 1].is_none());
        let found: Vec<&Exposure> = out.iter().flatten().flat_map(|r| &r.exposures).collect();
        assert_eq!(found.len(), 1, "one finding per key");
        assert_eq!(found[0].fingerprint, fingerprint(body[0]));
        for (r, l) in out.iter().flatten().zip(&lines) {
            let piece = if l.len() > 20 { &l[5..20] } else { l.as_str() };
            assert!(r.text.starts_with(MARKER) && !r.text.contains(piece), "{}", r.text);
        }
        // Met in the middle (a chunk boundary): a body line alone is redacted, silently.
        let mut pem = PemLines::default();
        assert!(pem.line(body[1]).is_some_and(|r| r.exposures.is_empty() && !r.text.contains("VTLw7")));
        assert!(pem.line("8W3M=").is_none());
        // A key that never ends does not swallow the records after it.
        let mut pem = PemLines::default();
        let head = "log: -----BEGIN OPENSSH PRIVATE KEY-----";
        assert!(pem.line(head).is_some_and(|r| r.text.starts_with("log: [REDACTED:private_key:")));
        assert!(pem.line(r#"{"ts":"2026-11-02T00:00:00Z"}"#).is_none());
        assert!(pem.line("short").is_none());
    }

    #[test]
    fn paths_are_redacted_the_same_way_every_time() {
        let p = "/logs/export-sk-proj-abcdefghijklmnopqrstuvwxyz0123.jsonl";
        let r = redact_path(p);
        assert!(!r.contains("abcdefghijklmnop") && r.starts_with("/logs/export-[REDACTED:") && r.ends_with(".jsonl"));
        assert_eq!(redact_path(p), r);
        assert!(matches!(redact_path("/logs/gateway-2026-11-02.jsonl"), Cow::Borrowed(_)));
    }
}
