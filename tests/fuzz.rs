//! Structure-aware fuzzing of every parser that sees untrusted bytes: the
//! line transform (gateway, CloudTrail and the built-in mappings, the one
//! path `ingest` and `watch` share), mapping files, timestamps and the
//! secret scan. Inputs start from the real records in `tests/fixtures` and
//! are mutated: bytes flipped, cut, repeated, and hostile tokens spliced in.
//!
//! `cargo test` runs proptest's default number of cases per target; a long
//! run is `PROPTEST_CASES=1000000 cargo test --locked --test integration fuzz::`
//! (README, "Fuzzing").

use std::io::Read;
use std::sync::OnceLock;

use credtrail::ingest::LineParser;
use credtrail::ingest::mapping::Mapping;
use credtrail::ingest::source::Chunk;
use proptest::prelude::*;

use crate::common::fixture;

/// Single-line records from every fixture: JSON lines as they are, and the
/// `Records` of CloudTrail delivery files one per line.
fn seeds() -> &'static [String] {
    static SEEDS: OnceLock<Vec<String>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let mut out = Vec::new();
        let mut dirs = vec![fixture("panther"), fixture("litellm"), fixture("stratus")];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                if path.is_dir() {
                    dirs.push(path);
                    continue;
                }
                if name.contains("labels") || !(name.ends_with(".json") || name.contains(".json")) {
                    continue;
                }
                let mut text = String::new();
                let file = std::fs::File::open(&path).unwrap();
                if name.ends_with(".gz") {
                    flate2::read::GzDecoder::new(file).read_to_string(&mut text).unwrap();
                } else {
                    std::io::BufReader::new(file).read_to_string(&mut text).unwrap();
                }
                match serde_json::from_str::<serde_json::Value>(&text) {
                    Ok(doc) if doc.get("Records").is_some() => {
                        out.extend(doc["Records"].as_array().unwrap().iter().map(|r| r.to_string()))
                    }
                    _ => out.extend(text.lines().filter(|l| !l.trim().is_empty()).map(str::to_owned)),
                }
            }
        }
        assert!(out.len() > 300, "fixtures give {} seed records", out.len());
        out
    })
}

/// Tokens that have broken parsers elsewhere: escapes, extreme numbers and
/// dates, nesting, nulls, and secret-shaped text.
const HOSTILE: &[&str] = &[
    "\"",
    "\\",
    "\\u0000",
    "\\ud800",
    "\u{0}",
    "\u{202e}",
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "null",
    "true",
    "-1",
    "1e309",
    "-0",
    "9223372036854775807",
    "18446744073709551616",
    "-9223372036854775808",
    "0.0000000000000000000001",
    "\"9999-12-31T23:59:59Z\"",
    "\"0000-01-01T00:00:00Z\"",
    "\"2026-02-30 25:61:61.9999999999\"",
    "\"1700000000000000\"",
    "\"\"",
    "\"sk-proj-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"",
    "\"-----BEGIN PRIVATE KEY-----\"",
    "\"Records\"",
    "{\"Records\":[",
    "\"eventTime\"",
    "\"userIdentity\":{}",
    "\"ts\":",
];

#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Cut(usize, usize),
    Repeat(usize, usize),
    Splice(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Flip(i, b)),
        (any::<usize>(), 0usize..64).prop_map(|(i, n)| Edit::Cut(i, n)),
        (any::<usize>(), 1usize..64).prop_map(|(i, n)| Edit::Repeat(i, n)),
        (any::<usize>(), 0..HOSTILE.len()).prop_map(|(i, t)| Edit::Splice(i, t)),
    ]
}

fn mutate(seed: &str, edits: &[Edit]) -> Vec<u8> {
    let mut b = seed.as_bytes().to_vec();
    for e in edits {
        let len = b.len().max(1);
        match *e {
            Edit::Flip(i, x) if !b.is_empty() => b[i % len] ^= x,
            Edit::Cut(i, n) if !b.is_empty() => {
                let at = i % len;
                b.drain(at..(at + n).min(b.len()));
            }
            Edit::Repeat(i, n) if !b.is_empty() => {
                let at = i % len;
                let piece = b[at..(at + n).min(b.len())].to_vec();
                b.splice(at..at, piece);
            }
            Edit::Splice(i, t) => {
                let at = i % (b.len() + 1);
                b.splice(at..at, HOSTILE[t].bytes());
            }
            _ => {}
        }
    }
    b
}

fn mutated_line() -> impl Strategy<Value = Vec<u8>> {
    (any::<prop::sample::Index>(), prop::collection::vec(edit(), 0..6))
        .prop_map(|(i, edits)| mutate(&seeds()[i.index(seeds().len())], &edits))
}

fn parser() -> &'static LineParser {
    static PARSER: OnceLock<LineParser> = OnceLock::new();
    PARSER.get_or_init(|| LineParser::new(&[], None, None).expect("built-in formats load"))
}

proptest! {
    /// Any run of lines becomes events or quarantine, never a panic, and
    /// every line is accounted for.
    #[test]
    fn line_transform(lines in prop::collection::vec(mutated_line(), 1..8), newline_free in any::<bool>()) {
        let mut bytes = Vec::new();
        for l in &lines {
            // A newline inside a mutated line would split it; keep the line count known.
            bytes.extend(l.iter().map(|&b| if newline_free && b == b'\n' { b' ' } else { b }));
            bytes.push(b'\n');
        }
        let p = parser();
        let format = p.detect(&bytes);
        let parsed = p.parse(format, "fuzz.jsonl", "run", &Chunk { bytes, first_line: 1 });
        prop_assert_eq!(parsed.read, parsed.ingested + parsed.quarantine.len() as u64);
        prop_assert_eq!(parsed.events.num_rows() as u64, parsed.ingested);
    }

    /// A mapping file mutated from the built-in ones loads or is refused
    /// with an error; a loaded one maps any record without panicking.
    #[test]
    fn mapping_files(which in 0usize..4, edits in prop::collection::vec(edit(), 0..6), line in mutated_line()) {
        let names = ["bedrock-invocation", "openai-audit", "anthropic-activity", "litellm-spend"];
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("mappings/{}.toml", names[which]));
        let text = std::fs::read_to_string(&path).unwrap();
        let mutated = String::from_utf8_lossy(&mutate(&text, &edits)).into_owned();
        if let Ok(m) = Mapping::from_toml(&mutated, "fuzz.toml")
            && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&line)
            && m.matches(&v)
        {
            let _ = m.map(&v);
        }
    }

    /// Timestamps in any shape parse to a time or to nothing.
    #[test]
    fn timestamps(s in prop_oneof![
        "[0-9:TZ .+-]{0,40}",
        any::<String>(),
        (0..HOSTILE.len()).prop_map(|i| HOSTILE[i].trim_matches('"').to_owned()),
    ]) {
        if let Some(ms) = credtrail::time::parse_ts(&s) {
            let _ = credtrail::time::format_ms(ms);
            let _ = credtrail::time::day_of(ms);
        }
        let _ = credtrail::time::parse_date_or_ts(&s);
        let _ = credtrail::time::parse_day(&s);
    }

    /// The secret scan takes any text; each secret it finds is replaced by
    /// its marker, and a second scan of the result finds nothing left.
    #[test]
    fn secret_scan(line in mutated_line()) {
        let text = String::from_utf8_lossy(&line);
        let r = credtrail::secrets::redact(&text);
        for e in &r.exposures {
            prop_assert!(r.text.contains(&e.marker()), "{} not in {}", e.marker(), r.text);
        }
        let again = credtrail::secrets::redact(&r.text);
        prop_assert!(again.exposures.is_empty(), "left after redaction: {:?} in {}", again.exposures, r.text);
    }
}
