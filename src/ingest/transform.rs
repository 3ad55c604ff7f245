//! The transform: one record's text → redacted, format-detected, parsed
//! event (or a quarantine record), appended to columnar builders. Batch
//! ingest runs it per chunk of a file; `watch` runs it per poll of new lines
//! through [`LineParser`]. A parsed event whose values are implausible (a
//! time outside the accepted window, token counts or a cost no request can
//! have) is quarantined with the reason: one poisoned line must not break
//! every later query over the lake.

use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use serde_json::Value;

use super::mapping::{self, Mapping};
use super::pricing::Pricing;
use super::source;
use super::{IngestError, cloudtrail, gateway};
use crate::lake::QuarantineEntry;
use crate::schema::{Event, EventBuilder, Lineage, Rejected};
use crate::secrets::{self, Exposure, ExposureRow};
use crate::time::{TsWindow, format_ms};

/// The raw text kept for a quarantined record, at most.
pub(super) const QUARANTINE_RAW_BYTES: usize = 64 << 10;

/// The most tokens one request can count, each way: a billion is beyond any
/// model's context or output today by three orders of magnitude, while a sum
/// of such counts over a lake still fits an `i64` many million times over.
pub const MAX_TOKENS: i64 = 1_000_000_000;
/// The most one request can cost, in US dollars.
pub const MAX_COST_USD: f64 = 1_000_000.0;

/// The text of a record about to be quarantined.
pub(super) struct RawText<'a> {
    /// Redacted: all of the record, or the head of it that was read.
    pub(super) text: &'a str,
    /// Whether `text` is the whole record.
    pub(super) whole: bool,
    /// The record's length in bytes as read, when known.
    pub(super) bytes: Option<u64>,
}

impl RawText<'_> {
    /// What the quarantine keeps of the record, and whether that is less than
    /// all of it: the one place that decides both, so `raw_truncated` is true
    /// whenever anything was cut, here or before (a head of a record).
    pub(super) fn kept(&self) -> (String, bool) {
        let cut = gateway::truncate(self.text, QUARANTINE_RAW_BYTES);
        (cut.to_string(), !self.whole || cut.len() < self.text.len())
    }
}

/// The formats a run can read: the two built into code and every mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    Gateway,
    CloudTrail,
    Mapped(usize),
}

pub(super) struct Formats {
    /// The user's mappings first, then the built-in ones.
    mappings: Vec<Mapping>,
    user: usize,
    /// Prices Bedrock inference the log leaves unpriced.
    pricing: Pricing,
    /// The event times accepted; others are quarantined.
    window: TsWindow,
}

impl Formats {
    pub(super) fn load(user: &[PathBuf], pricing: Option<&Path>) -> Result<Formats, IngestError> {
        let mut mappings = user.iter().map(|p| Mapping::from_file(p)).collect::<Result<Vec<_>, _>>()?;
        let user = mappings.len();
        mappings.extend(mapping::builtin());
        Ok(Formats { mappings, user, pricing: Pricing::load(pricing)?, window: TsWindow::default() })
    }

    pub(super) fn with_ts_window(self, window: TsWindow) -> Formats {
        Formats { window, ..self }
    }

    pub(super) fn name(&self, f: Format) -> &str {
        match f {
            Format::Gateway => "gateway",
            Format::CloudTrail => "cloudtrail",
            Format::Mapped(i) => &self.mappings[i].name,
        }
    }

    fn names(&self) -> String {
        let mut v = vec!["gateway".to_string(), "cloudtrail".to_string()];
        v.extend(self.mappings.iter().map(|m| m.name.clone()));
        v.join(", ")
    }

    /// The format forced by name, if one is (an unknown name is an error).
    pub(super) fn forced(&self, name: Option<&str>) -> Result<Option<Format>, IngestError> {
        name.map(|n| self.by_name(n).ok_or_else(|| IngestError::UnknownFormat(n.to_string(), self.names()))).transpose()
    }

    fn by_name(&self, name: &str) -> Option<Format> {
        match name {
            "gateway" => Some(Format::Gateway),
            "cloudtrail" => Some(Format::CloudTrail),
            _ => self.mappings.iter().position(|m| m.name == name).map(Format::Mapped),
        }
    }

    /// The format of a record, from its shape. Mappings the user supplied
    /// come first so they can claim records a built-in would also match.
    pub(super) fn detect(&self, v: &Value) -> Option<Format> {
        if !v.is_object() {
            return None;
        }
        let mapped =
            |mut range: std::ops::Range<usize>| range.find(|&i| self.mappings[i].matches(v)).map(Format::Mapped);
        if let Some(f) = mapped(0..self.user) {
            return Some(f);
        }
        if gateway::looks_like_gateway(v) {
            return Some(Format::Gateway);
        }
        if cloudtrail::looks_like_cloudtrail(v) {
            return Some(Format::CloudTrail);
        }
        mapped(self.user..self.mappings.len())
    }
}

/// One worker's share of a file: events, rejects and secrets found.
pub(super) struct Output {
    pub(super) events: EventBuilder,
    pub(super) quarantine: Vec<QuarantineEntry>,
    pub(super) exposures: Vec<ExposureRow>,
    pub(super) read: u64,
    pub(super) ingested: u64,
}

impl Output {
    pub(super) fn new() -> Self {
        Output { events: EventBuilder::new(), quarantine: Vec::new(), exposures: Vec::new(), read: 0, ingested: 0 }
    }
}

/// Everything a worker needs to turn records of one file into events.
pub(super) struct FileCtx<'r> {
    pub(super) formats: &'r Formats,
    /// `None` when no record of the file was recognised.
    pub(super) format: Option<Format>,
    pub(super) file: &'r str,
    pub(super) run_id: &'r str,
}

impl FileCtx<'_> {
    pub(super) fn format_name(&self) -> Option<String> {
        self.format.map(|f| self.formats.name(f).to_string())
    }

    /// Quarantines a whole record: `raw` its text, `bytes` its length as read.
    pub(super) fn quarantine(&self, out: &mut Output, record: Option<u64>, reason: String, raw: &str, bytes: usize) {
        self.quarantine_raw(out, record, reason, RawText { text: raw, whole: true, bytes: Some(bytes as u64) });
    }

    /// Keeps a record that did not become an event. Its text is redacted
    /// here, whatever the caller did, before it is cut to size (a secret cut
    /// in two would escape the patterns).
    fn quarantine_raw(&self, out: &mut Output, record: Option<u64>, reason: String, raw: RawText<'_>) {
        let red = secrets::redact_record(raw.text);
        let (raw_text, raw_truncated) = RawText { text: &red.text, ..raw }.kept();
        out.quarantine.push(QuarantineEntry {
            run_id: self.run_id.to_string(),
            source_file: self.file.to_string(),
            record,
            format: self.format_name(),
            reason,
            raw: raw_text,
            raw_truncated,
            raw_bytes: raw.bytes,
        });
    }

    /// Quarantines a record known only as bytes (possibly not UTF-8), redacted:
    /// all of it, or only its head when `bytes` (its whole length, if known)
    /// is not the head's.
    pub(super) fn quarantine_bytes(
        &self,
        out: &mut Output,
        record: u64,
        reason: String,
        head: &[u8],
        bytes: Option<u64>,
    ) {
        out.read += 1;
        let text = String::from_utf8_lossy(head);
        let whole = bytes == Some(head.len() as u64);
        self.quarantine_raw(out, Some(record), reason, RawText { text: &text, whole, bytes });
    }

    /// Quarantines a line too long to hold, from its head: the one record
    /// batch ingest and `watch`'s tailer both make of such a line. `bytes` is
    /// its whole length when known.
    pub(super) fn oversized(&self, out: &mut Output, line: u64, head: &[u8], bytes: Option<u64>) {
        let reason = format!("line longer than {} MiB", source::MAX_LINE_BYTES >> 20);
        self.quarantine_bytes(out, line, reason, head, bytes);
    }

    /// The whole per-record transform: redact, parse, map, append or quarantine.
    pub(super) fn record(&self, raw: &str, record_no: u64, out: &mut Output) {
        out.read += 1;
        let red = secrets::redact_record(raw);
        let text: &str = &red.text;
        let Some(format) = self.format else {
            let reason = match serde_json::from_str::<Value>(text) {
                Ok(v) => unrecognised(&v, self.formats),
                Err(e) => format!("not JSON: {e}"),
            };
            self.record_exposures(&red.exposures, text, None, record_no, out);
            self.quarantine(out, Some(record_no), reason, text, raw.len());
            return;
        };
        let value: Result<Option<Value>, Rejected> = match format {
            // Both built-in formats parse their own text (typed, borrowing).
            Format::Gateway | Format::CloudTrail => Ok(None),
            _ => serde_json::from_str(text).map(Some).map_err(|e| Rejected(format!("not JSON: {e}"))),
        };
        let result: Result<Event<'_>, Rejected> = match (&value, format) {
            (Err(r), _) => Err(r.clone()),
            (Ok(_), Format::Gateway) => gateway::parse(text),
            (Ok(_), Format::CloudTrail) => cloudtrail::map_text(text),
            (Ok(Some(v)), Format::Mapped(i)) => self.formats.mappings[i].map(v),
            (Ok(None), _) => Err(Rejected::new("record was not parsed")),
        };
        let result = result.and_then(|mut e| {
            self.formats.pricing.apply(&mut e);
            plausible(&e, &self.formats.window)?;
            Ok(e)
        });
        self.record_exposures(&red.exposures, text, result.as_ref().ok(), record_no, out);
        match result {
            Ok(e) => {
                let lineage = Lineage { source: self.formats.name(format), source_file: self.file };
                out.events.append(&e, lineage, record_no);
                out.ingested += 1;
            }
            Err(r) => self.quarantine(out, Some(record_no), r.0, text, raw.len()),
        }
    }

    fn record_exposures(
        &self,
        exposures: &[Exposure],
        text: &str,
        event: Option<&Event<'_>>,
        record_no: u64,
        out: &mut Output,
    ) {
        if exposures.is_empty() {
            return;
        }
        let value: Option<Value> = serde_json::from_str(text).ok();
        let fields = secrets::exposure_fields(exposures, value.as_ref());
        for (e, field) in exposures.iter().zip(fields) {
            // Redacted all the same, but AWS's own record names no suspect.
            if self.format == Some(Format::CloudTrail)
                && value.as_ref().is_some_and(|v| cloudtrail::aws_own_secret(v, field.as_deref(), e.kind))
            {
                continue;
            }
            out.exposures.push(ExposureRow {
                ts_ms: event.map(|e| e.ts_ms),
                credential_id: event.map(|e| e.credential_id.to_string()),
                request_id: event.and_then(|e| e.request_id.as_deref().map(str::to_string)),
                source: self.format_name(),
                source_file: self.file.to_string(),
                source_record: record_no,
                field,
                kind: e.kind,
                fingerprint: e.fingerprint.clone(),
                run_id: self.run_id.to_string(),
            });
        }
    }

    /// Processes a chunk of whole lines. A private key written over several
    /// lines is followed across them ([`secrets::PemLines`]): each of its
    /// lines is quarantined redacted, not read as a record.
    pub(super) fn lines(&self, chunk: &source::Chunk) -> Output {
        self.lines_after(chunk, &mut secrets::PemLines::default())
    }

    /// [`Self::lines`] of a chunk that continues an earlier one of the same
    /// file, `pem` where that one left a private key block.
    fn lines_after(&self, chunk: &source::Chunk, pem: &mut secrets::PemLines) -> Output {
        let mut out = Output::new();
        for (n, line) in (chunk.first_line..).zip(split_lines(&chunk.bytes)) {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let (text, not_utf8) = match std::str::from_utf8(line) {
                Ok(text) => (std::borrow::Cow::Borrowed(text), None),
                Err(e) => (String::from_utf8_lossy(line), Some(format!("not UTF-8 text: {e}"))),
            };
            if let Some(red) = pem.line(&text) {
                out.read += 1;
                self.record_exposures(&red.exposures, &red.text, None, n, &mut out);
                let reason = "a line of a PEM private key (redacted): a secret, not a log record".to_string();
                self.quarantine(&mut out, Some(n), not_utf8.unwrap_or(reason), &red.text, line.len());
                continue;
            }
            match not_utf8 {
                None => self.record(&text, n, &mut out),
                Some(reason) => {
                    out.read += 1;
                    let red = secrets::redact_record(&text);
                    self.record_exposures(&red.exposures, &red.text, None, n, &mut out);
                    self.quarantine(&mut out, Some(n), reason, &red.text, line.len());
                }
            }
        }
        out
    }
}

/// `bytes` split at each newline as `slice::split` splits them (the piece
/// after the last one included), each end found by `memchr` rather than by
/// testing every byte: every event's line goes through here.
fn split_lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(bytes);
    std::iter::from_fn(move || {
        let r = rest?;
        Some(match memchr::memchr(b'\n', r) {
            Some(i) => {
                rest = Some(&r[i + 1..]);
                &r[..i]
            }
            None => {
                rest = None;
                r
            }
        })
    })
}

/// Whether an event's values are ones a real request can have: its time in
/// `window`, token counts in `0..=MAX_TOKENS` (a count near `i64::MAX` would
/// make every sum over it wrap), its cost in `0..=MAX_COST_USD`.
fn plausible(e: &Event<'_>, window: &TsWindow) -> Result<(), Rejected> {
    if !window.contains(e.ts_ms) {
        return Err(Rejected(format!(
            "ts {} is outside the accepted window {window}; widen it with --ts-window if the time is real",
            format_ms(e.ts_ms)
        )));
    }
    for (name, n) in [("tokens_in", e.tokens_in), ("tokens_out", e.tokens_out)] {
        if let Some(n) = n.filter(|n| !(0..=MAX_TOKENS).contains(n)) {
            return Err(Rejected(format!("{name} {n} is not a token count (0 to {MAX_TOKENS} per request)")));
        }
    }
    if let Some(c) = e.cost_usd.filter(|c| !(0.0..=MAX_COST_USD).contains(c)) {
        return Err(Rejected(format!("cost_usd {c} is not a request's cost (0 to {MAX_COST_USD} USD)")));
    }
    Ok(())
}

fn unrecognised(v: &Value, formats: &Formats) -> String {
    let keys: Vec<&str> = v.as_object().map(|m| m.keys().take(12).map(String::as_str).collect()).unwrap_or_default();
    format!(
        "unrecognised record format (top-level keys: {}); known formats: {}; add a field mapping with --mapping",
        keys.join(", "),
        formats.names()
    )
}

/// The format of the first recognisable line of the first chunk.
pub(super) fn detect_in_lines(bytes: &[u8], formats: &Formats) -> Option<Format> {
    split_lines(bytes)
        .take(1000)
        .filter_map(|l| serde_json::from_slice::<Value>(l).ok())
        .find_map(|v| formats.detect(&v))
}

/// How many lines of `bytes` are, each on its own, a record of a known
/// format (any JSON object when the format is forced); counts no further
/// than one past `enough`.
pub(super) fn records_in_lines(bytes: &[u8], formats: &Formats, forced: bool, enough: usize) -> usize {
    let is_record = |l: &[u8]| {
        serde_json::from_slice::<Value>(l).is_ok_and(|v| v.is_object() && (forced || formats.detect(&v).is_some()))
    };
    split_lines(bytes).filter(|l| is_record(l)).take(enough + 1).count()
}

/// Ingest's per-line transform — redact, detect the format, parse, map or
/// quarantine — for sources that arrive as lines over time (`watch`).
pub struct LineParser {
    formats: Formats,
    forced: Option<Format>,
}

/// A followed file's format, once [`LineParser::detect`] has recognised it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineFormat(Format);

/// What a run of lines became.
pub struct Parsed {
    /// Events, in line order (empty when none).
    pub events: RecordBatch,
    pub quarantine: Vec<QuarantineEntry>,
    pub exposures: Vec<ExposureRow>,
    pub read: u64,
    pub ingested: u64,
}

impl LineParser {
    pub fn new(mappings: &[PathBuf], format: Option<&str>, pricing: Option<&Path>) -> Result<LineParser, IngestError> {
        let formats = Formats::load(mappings, pricing)?;
        let forced = formats.forced(format)?;
        Ok(LineParser { formats, forced })
    }

    /// Accepts event times in `window` only (default [`TsWindow::default`]).
    pub fn with_ts_window(self, window: TsWindow) -> LineParser {
        LineParser { formats: self.formats.with_ts_window(window), ..self }
    }

    /// The format of a file from its first complete lines (or the forced one).
    pub fn detect(&self, lines: &[u8]) -> Option<LineFormat> {
        self.forced.or_else(|| detect_in_lines(lines, &self.formats)).map(LineFormat)
    }

    pub fn format_name(&self, f: LineFormat) -> &str {
        self.formats.name(f.0)
    }

    /// Parses complete lines (`first_line` is the 1-based number of the first).
    /// `format` is `None` while a file's format is unknown: its lines are quarantined.
    /// `file` is stored with its secrets redacted, as ingest stores its inputs' paths.
    pub fn parse(&self, format: Option<LineFormat>, file: &str, run_id: &str, chunk: &source::Chunk) -> Parsed {
        self.parse_after(format, file, run_id, chunk, &mut secrets::PemLines::default())
    }

    /// [`Self::parse`] of the next lines of a file read piece by piece
    /// (`watch`): `pem` is the file's private key state, kept by the caller
    /// between the pieces, so a key whose lines arrive over several reads is
    /// redacted whole.
    pub fn parse_after(
        &self,
        format: Option<LineFormat>,
        file: &str,
        run_id: &str,
        chunk: &source::Chunk,
        pem: &mut secrets::PemLines,
    ) -> Parsed {
        let file = &secrets::redact_path(file);
        let ctx = FileCtx { formats: &self.formats, format: format.map(|f| f.0), file, run_id };
        parsed(ctx.lines_after(chunk, pem))
    }

    /// Quarantines a line too long to hold, from its head.
    pub fn oversized(&self, format: Option<LineFormat>, file: &str, run_id: &str, line: u64, head: &[u8]) -> Parsed {
        let file = &secrets::redact_path(file);
        let ctx = FileCtx { formats: &self.formats, format: format.map(|f| f.0), file, run_id };
        let mut out = Output::new();
        ctx.oversized(&mut out, line, head, None);
        parsed(out)
    }
}

fn parsed(mut out: Output) -> Parsed {
    Parsed {
        events: out.events.finish(),
        quarantine: out.quarantine,
        exposures: out.exposures,
        read: out.read,
        ingested: out.ingested,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::AsArray;

    #[test]
    fn lines_split_as_slices_split() {
        for text in ["", "\n", "a", "a\n", "a\nb", "\n\nab\r\n\ncd", "{\"x\":1}\n{\"y\":2}\n"] {
            let want: Vec<&[u8]> = text.as_bytes().split(|&b| b == b'\n').collect();
            assert_eq!(split_lines(text.as_bytes()).collect::<Vec<_>>(), want, "{text:?}");
        }
    }

    const LINE: &str = r#"{"ts":"2026-11-02T14:03:07.123Z","request_id":"req_1","credential_id":"key_a","action":"inference","tokens_in":1200,"tokens_out":340,"cost_usd":0.0064}"#;

    fn parse(parser: &LineParser, file: &str, text: &str) -> Parsed {
        let chunk = source::Chunk { bytes: text.as_bytes().to_vec(), first_line: 1 };
        parser.parse(parser.detect(text.as_bytes()), file, "run", &chunk)
    }

    #[test]
    fn implausible_values_are_quarantined_with_their_reason() {
        let parser = LineParser::new(&[], None, None).unwrap();
        let cases = [
            (
                LINE.replace("2026-11-02T14:03:07.123Z", "9999-12-31T23:59:59Z"),
                "ts 9999-12-31T23:59:59.000Z is outside",
            ),
            (LINE.replace("2026-11-02T14:03:07.123Z", "0000-01-01T00:00:00Z"), "outside the accepted window"),
            (LINE.replace("1200", "9223372036854775807"), "tokens_in 9223372036854775807 is not a token count"),
            (LINE.replace("340", "1000000001"), "tokens_out 1000000001"),
            (LINE.replace("0.0064", "2e6"), "cost_usd 2000000"),
        ];
        for (bad, reason) in cases {
            let p = parse(&parser, "f.jsonl", &format!("{LINE}\n{bad}\n{LINE}\n"));
            assert_eq!((p.read, p.ingested, p.events.num_rows()), (3, 2, 2), "{bad}");
            assert_eq!(p.quarantine.len(), 1);
            assert!(p.quarantine[0].reason.contains(reason), "{}", p.quarantine[0].reason);
            assert_eq!(p.quarantine[0].record, Some(2));
        }
        // The bounds themselves are plausible, and the window is the caller's.
        let edge = LINE.replace("1200", &MAX_TOKENS.to_string());
        assert_eq!(parse(&parser, "f.jsonl", &edge).ingested, 1);
        let narrow =
            LineParser::new(&[], None, None).unwrap().with_ts_window("2026-11-03..2026-11-04".parse().unwrap());
        let p = parse(&narrow, "f.jsonl", LINE);
        assert_eq!((p.ingested, p.quarantine.len()), (0, 1));
        assert!(p.quarantine[0].reason.contains("--ts-window"));
    }

    #[test]
    fn a_secret_in_the_file_name_is_stored_redacted_everywhere() {
        let parser = LineParser::new(&[], None, None).unwrap();
        let file = "/logs/ghp_abcdefghijklmnopqrstuvwxyz0123456789AB/gateway.jsonl";
        let leak = LINE
            .replace("key_a", "key_b")
            .replace(r#""action""#, r#""note":"sk\u002dproj\u002dabcdefghijklmnopqrstuvwxyz","action""#);
        let p = parse(
            &parser,
            file,
            &format!(
                "{leak}\nnot json\n-----BEGIN PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeL\n-----END PRIVATE KEY-----\n"
            ),
        );
        let files = p.events.column_by_name("source_file").unwrap();
        let files = arrow::compute::cast(files, &arrow::datatypes::DataType::Utf8).unwrap();
        let stored = files.as_string::<i32>().value(0).to_string();
        assert!(stored.starts_with("/logs/[REDACTED:github_token:") && stored.ends_with("/gateway.jsonl"), "{stored}");
        assert!(p.quarantine.iter().all(|q| q.source_file == stored));
        assert!(p.exposures.iter().all(|e| e.source_file == stored));
        assert_eq!(p.exposures.iter().map(|e| e.kind).collect::<Vec<_>>(), vec!["openai_api_key", "private_key"]);
        assert_eq!(p.quarantine.len(), 4);
        assert!(p.quarantine.iter().all(|q| !q.raw.contains("MIIEow") && !q.raw.contains("BEGIN PRIVATE")));
        assert_eq!(p.quarantine[0].raw, "not json");
    }
}
