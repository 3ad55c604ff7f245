//! The transform: one record's text → redacted, format-detected, parsed
//! event (or a quarantine record), appended to columnar builders. Batch
//! ingest runs it per chunk of a file; `watch` runs it per poll of new lines
//! through [`LineParser`].

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

/// The raw text kept for a quarantined record, at most.
pub(super) const QUARANTINE_RAW_BYTES: usize = 64 << 10;

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
}

impl Formats {
    pub(super) fn load(user: &[PathBuf], pricing: Option<&Path>) -> Result<Formats, IngestError> {
        let mut mappings = user.iter().map(|p| Mapping::from_file(p)).collect::<Result<Vec<_>, _>>()?;
        let user = mappings.len();
        mappings.extend(mapping::builtin());
        Ok(Formats { mappings, user, pricing: Pricing::load(pricing)? })
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

    /// Quarantines a whole record: `raw` its redacted text, `bytes` its length as read.
    pub(super) fn quarantine(&self, out: &mut Output, record: Option<u64>, reason: String, raw: &str, bytes: usize) {
        self.quarantine_raw(out, record, reason, RawText { text: raw, whole: true, bytes: Some(bytes as u64) });
    }

    fn quarantine_raw(&self, out: &mut Output, record: Option<u64>, reason: String, raw: RawText<'_>) {
        let (raw_text, raw_truncated) = raw.kept();
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
        let red = secrets::redact(&text);
        let whole = bytes == Some(head.len() as u64);
        self.quarantine_raw(out, Some(record), reason, RawText { text: &red.text, whole, bytes });
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
        let red = secrets::redact(raw);
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
        self.record_exposures(&red.exposures, text, result.as_ref().ok(), record_no, out);
        match result {
            Ok(mut e) => {
                self.formats.pricing.apply(&mut e);
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

    /// Processes a chunk of whole lines.
    pub(super) fn lines(&self, chunk: &source::Chunk) -> Output {
        let mut out = Output::new();
        for (n, line) in (chunk.first_line..).zip(chunk.bytes.split(|&b| b == b'\n')) {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match std::str::from_utf8(line) {
                Ok(text) => self.record(text, n, &mut out),
                Err(e) => {
                    out.read += 1;
                    let lossy = String::from_utf8_lossy(line);
                    let red = secrets::redact(&lossy);
                    self.record_exposures(&red.exposures, &red.text, None, n, &mut out);
                    self.quarantine(&mut out, Some(n), format!("not UTF-8 text: {e}"), &red.text, line.len());
                }
            }
        }
        out
    }
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
    bytes
        .split(|&b| b == b'\n')
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
    bytes.split(|&b| b == b'\n').filter(|l| is_record(l)).take(enough + 1).count()
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

    /// The format of a file from its first complete lines (or the forced one).
    pub fn detect(&self, lines: &[u8]) -> Option<LineFormat> {
        self.forced.or_else(|| detect_in_lines(lines, &self.formats)).map(LineFormat)
    }

    pub fn format_name(&self, f: LineFormat) -> &str {
        self.formats.name(f.0)
    }

    /// Parses complete lines (`first_line` is the 1-based number of the first).
    /// `format` is `None` while a file's format is unknown: its lines are quarantined.
    pub fn parse(&self, format: Option<LineFormat>, file: &str, run_id: &str, chunk: &source::Chunk) -> Parsed {
        let ctx = FileCtx { formats: &self.formats, format: format.map(|f| f.0), file, run_id };
        parsed(ctx.lines(chunk))
    }

    /// Quarantines a line too long to hold, from its head.
    pub fn oversized(&self, format: Option<LineFormat>, file: &str, run_id: &str, line: u64, head: &[u8]) -> Parsed {
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
