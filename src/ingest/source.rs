//! Reading an input file: transparent gzip, line chunks for JSON lines, and a
//! streaming walk over the records of a CloudTrail `{"Records":[…]}` document.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use serde_json::value::RawValue;

/// Bytes handed to a parser at once: big enough to amortise scheduling,
/// small enough that both cores stay busy on a single file.
pub const CHUNK_BYTES: usize = 4 << 20;
/// A line longer than this is quarantined rather than buffered without bound.
pub const MAX_LINE_BYTES: usize = 16 << 20;
/// What is kept of such a line for its quarantine record.
const OVERSIZED_HEAD_BYTES: usize = 4096;

/// Opens `path`, decompressing gzip (recognised by its magic bytes, not by
/// the file name) including multi-member files.
pub fn open(path: &Path) -> io::Result<Box<dyn BufRead + Send>> {
    open_reader(File::open(path)?)
}

/// [`open`] for any byte source.
pub fn open_reader<R: Read + Send + 'static>(r: R) -> io::Result<Box<dyn BufRead + Send>> {
    let mut f = BufReader::with_capacity(1 << 20, r);
    let magic = f.fill_buf()?;
    if magic.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(BufReader::with_capacity(1 << 20, flate2::bufread::MultiGzDecoder::new(f))))
    } else {
        Ok(Box::new(f))
    }
}

/// A line too long to hold: its number, its first bytes and its whole length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Oversized {
    pub line: u64,
    pub head: Vec<u8>,
    pub bytes: u64,
}

/// A run of complete lines.
pub struct Chunk {
    pub bytes: Vec<u8>,
    /// 1-based number of the chunk's first line in the file.
    pub first_line: u64,
}

/// What ended reading a file early.
#[derive(Debug)]
pub struct ReadFailure {
    pub error: io::Error,
    /// The partial record being read when it happened, if any.
    pub partial: Option<(u64, Vec<u8>)>,
}

/// Splits a stream into chunks of whole lines. Iteration stops at EOF or at
/// the first read error, which is then available from [`Chunks::failure`].
pub struct Chunks<R> {
    reader: R,
    carry: Vec<u8>,
    next_line: u64,
    done: bool,
    pub failure: Option<ReadFailure>,
    /// Lines over [`MAX_LINE_BYTES`].
    pub oversized: Vec<Oversized>,
    /// The final line when the stream ends without a newline after it, as
    /// (line number, bytes): not handed out nor counted as consumed, since a
    /// writer may still be completing it. The caller decides what it is.
    pub unterminated: Option<(u64, Vec<u8>)>,
    skipping_oversized: bool,
    chunk_bytes: usize,
    max_line: usize,
}

impl<R: Read> Chunks<R> {
    pub fn new(reader: R, first_line: u64) -> Self {
        Chunks {
            reader,
            carry: Vec::new(),
            next_line: first_line,
            done: false,
            failure: None,
            oversized: Vec::new(),
            unterminated: None,
            skipping_oversized: false,
            chunk_bytes: CHUNK_BYTES,
            max_line: MAX_LINE_BYTES,
        }
    }

    /// Smaller limits, so tests can cross chunk and line-size boundaries.
    pub fn with_limits(mut self, chunk_bytes: usize, max_line: usize) -> Self {
        self.chunk_bytes = chunk_bytes.max(1);
        self.max_line = max_line.max(1);
        self
    }

    /// Lines handed out (or skipped as oversized) so far; never the
    /// [`Chunks::unterminated`] one.
    pub fn lines_consumed(&self) -> u64 {
        self.next_line - 1
    }

    fn emit(&mut self, bytes: Vec<u8>) -> Chunk {
        let first_line = self.next_line;
        self.next_line += memchr::memchr_iter(b'\n', &bytes).count() as u64;
        if !bytes.ends_with(b"\n") {
            self.next_line += 1;
        }
        Chunk { bytes, first_line }
    }

    /// Splits what follows the last newline off `buf`, as (its line number,
    /// bytes), if anything does.
    fn split_last_line(&self, buf: &mut Vec<u8>) -> Option<(u64, Vec<u8>)> {
        let cut = memchr::memrchr(b'\n', buf).map_or(0, |i| i + 1);
        let tail = buf.split_off(cut);
        (!tail.is_empty()).then(|| (self.next_line + memchr::memchr_iter(b'\n', buf).count() as u64, tail))
    }
}

impl<R: Read> Iterator for Chunks<R> {
    type Item = Chunk;

    fn next(&mut self) -> Option<Chunk> {
        if self.done {
            return None;
        }
        let mut buf = std::mem::take(&mut self.carry);
        loop {
            let start = buf.len();
            buf.resize(start + self.chunk_bytes, 0);
            let n = match read_full(&mut self.reader, &mut buf[start..]) {
                Ok(n) => n,
                Err((n, error)) => {
                    buf.truncate(start + n);
                    self.done = true;
                    // Whole lines before the failure are good; the tail is the
                    // record the failure cut.
                    let partial = self.split_last_line(&mut buf).filter(|_| !self.skipping_oversized);
                    self.failure = Some(ReadFailure { error, partial });
                    return (!buf.is_empty()).then(|| self.emit(buf));
                }
            };
            buf.truncate(start + n);
            if n == 0 {
                self.done = true;
                if self.skipping_oversized {
                    // Quarantined from its head whatever follows: consumed.
                    self.next_line += 1;
                    return None;
                }
                // Complete lines are handed out; what follows the last newline
                // is the unterminated last line.
                self.unterminated = self.split_last_line(&mut buf);
                return (!buf.is_empty()).then(|| self.emit(buf));
            }
            if self.skipping_oversized {
                // Drop the rest of an oversized line, up to its newline.
                let end = memchr::memchr(b'\n', &buf);
                if let Some(long) = self.oversized.last_mut() {
                    long.bytes += end.unwrap_or(buf.len()) as u64;
                }
                match end {
                    Some(i) => {
                        buf.drain(..=i);
                        self.skipping_oversized = false;
                        self.next_line += 1;
                    }
                    None => buf.clear(),
                }
                continue;
            }
            // The whole buffer: after skipping an oversized line, what is left of
            // the read may already hold complete lines.
            if let Some(i) = memchr::memrchr(b'\n', &buf) {
                self.carry = buf.split_off(i + 1);
                return Some(self.emit(buf));
            }
            if buf.len() > self.max_line {
                let head = buf[..buf.len().min(OVERSIZED_HEAD_BYTES)].to_vec();
                self.oversized.push(Oversized { line: self.next_line, head, bytes: buf.len() as u64 });
                self.skipping_oversized = true;
                buf.clear();
            }
        }
    }
}

/// Consumes the first `n` lines of `r` without parsing them (resuming a file
/// that grew since it was last ingested). Returns how many were there.
pub fn skip_lines<R: BufRead + ?Sized>(r: &mut R, n: u64) -> io::Result<u64> {
    let mut skipped = 0;
    while skipped < n {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            break;
        }
        let mut used = buf.len();
        for i in memchr::memchr_iter(b'\n', buf) {
            skipped += 1;
            if skipped == n {
                used = i + 1;
                break;
            }
        }
        r.consume(used);
    }
    Ok(skipped)
}

/// Reads until `buf` is full or EOF; on error returns how much was read.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> Result<usize, (usize, io::Error)> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err((n, e)),
        }
    }
    Ok(n)
}

/// How the records of a file are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    /// One JSON record per line.
    Lines,
    /// One JSON document holding an array of records: CloudTrail's
    /// `{"Records":[…]}` delivery files, or a bare top-level array.
    Array,
}

/// Decides the container from the first bytes of the decompressed stream.
pub fn sniff_container(head: &[u8]) -> Container {
    let text = String::from_utf8_lossy(head);
    let t = text.trim_start_matches(['\u{feff}', ' ', '\t', '\r', '\n']);
    if t.starts_with('[') {
        return Container::Array;
    }
    if records_key_at_start(t) { Container::Array } else { Container::Lines }
}

fn records_key_at_start(t: &str) -> bool {
    let Some(rest) = t.strip_prefix('{') else {
        return false;
    };
    let rest = rest.trim_start();
    let Some(rest) = rest.strip_prefix("\"Records\"") else {
        return false;
    };
    rest.trim_start().starts_with(':')
}

/// One record of an array document, as raw JSON text.
pub struct ArrayItem<'a> {
    pub index: u64,
    pub raw: &'a RawValue,
}

/// The records of array documents, in order, read one at a time so that a
/// truncated or corrupt document still yields every record before the damage.
/// Several documents may follow each other (delivery files concatenated, one
/// per line); indices run on across them. Returns the records and, if the
/// input is damaged, a description of where.
pub fn array_records(doc: &str) -> (Vec<ArrayItem<'_>>, Option<String>) {
    let mut items = Vec::new();
    let bytes = doc.as_bytes();
    let skip_ws = |mut i: usize| {
        while i < bytes.len() && matches!(bytes[i], b' ' | b'\t' | b'\r' | b'\n') {
            i += 1;
        }
        i
    };
    let mut pos = skip_ws(0);
    if doc[pos..].starts_with('\u{feff}') {
        pos = skip_ws(pos + 3);
    }
    let mut index = 0u64;
    while pos < bytes.len() {
        // Find the array: at the top level, or as the value of "Records".
        let wrapped = bytes[pos] == b'{';
        if wrapped {
            let Some(k) = doc[pos..].find("\"Records\"") else {
                return (items, Some(format!("no \"Records\" array in the document at byte {pos}")));
            };
            pos = skip_ws(pos + k + "\"Records\"".len());
            if bytes.get(pos) != Some(&b':') {
                return (items, Some("\"Records\" is not followed by ':'".into()));
            }
            pos = skip_ws(pos + 1);
        }
        if bytes.get(pos) != Some(&b'[') {
            return (items, Some(format!("expected '[' at byte {pos}")));
        }
        pos = skip_ws(pos + 1);
        if bytes.get(pos) != Some(&b']') {
            loop {
                let mut de = serde_json::Deserializer::from_str(&doc[pos..]).into_iter::<&RawValue>();
                match de.next() {
                    Some(Ok(raw)) => {
                        items.push(ArrayItem { index, raw });
                        index += 1;
                        pos = skip_ws(pos + de.byte_offset());
                    }
                    Some(Err(e)) => return (items, Some(format!("record {index} (byte {pos}) is damaged: {e}"))),
                    None => return (items, Some(format!("document ends before record {index}"))),
                }
                match bytes.get(pos) {
                    Some(b',') => pos = skip_ws(pos + 1),
                    Some(b']') => break,
                    Some(c) => {
                        let at = index - 1;
                        return (items, Some(format!("unexpected {:?} after record {at} at byte {pos}", *c as char)));
                    }
                    None => return (items, Some(format!("document ends after record {} (truncated)", index - 1))),
                }
            }
        }
        pos = skip_ws(pos + 1);
        if wrapped {
            if bytes.get(pos) != Some(&b'}') {
                return (items, Some(format!("unexpected content after the Records array at byte {pos}")));
            }
            pos = skip_ws(pos + 1);
        }
    }
    (items, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_keep_lines_whole_and_number_them() {
        let text: String = (1..=50_000).map(|i| format!("{{\"n\":{i}}}\n")).collect();
        let mut chunks = Chunks::new(text.as_bytes(), 1);
        let mut seen = 0u64;
        for c in chunks.by_ref() {
            let s = std::str::from_utf8(&c.bytes).unwrap();
            assert!(s.ends_with('\n'));
            assert_eq!(c.first_line, seen + 1);
            let first: serde_json::Value = serde_json::from_str(s.lines().next().unwrap()).unwrap();
            assert_eq!(first["n"], seen + 1);
            seen += s.lines().count() as u64;
        }
        assert_eq!(seen, 50_000);
        assert!(chunks.failure.is_none());
    }

    proptest::proptest! {
        /// Whatever the chunk size, every line comes out once, whole, with its
        /// number, and an over-long line is reported instead of buffered.
        #[test]
        fn chunking_keeps_every_line_once(
            lines in proptest::collection::vec("[a-z{}\":,0-9 ]{0,40}", 0..60),
            chunk in 1usize..64,
            trailing_newline: bool,
        ) {
            let mut text = lines.join("\n");
            if trailing_newline && !lines.is_empty() {
                text.push('\n');
            }
            let max_line = 30;
            let mut chunks = Chunks::new(text.as_bytes(), 1).with_limits(chunk, max_line);
            let mut got: Vec<(u64, String)> = Vec::new();
            for c in chunks.by_ref() {
                let s = String::from_utf8(c.bytes.clone()).unwrap();
                let body = s.strip_suffix('\n').unwrap_or(&s);
                for (i, l) in body.split('\n').enumerate() {
                    got.push((c.first_line + i as u64, l.to_string()));
                }
            }
            if let Some((n, bytes)) = chunks.unterminated.take() {
                proptest::prop_assert!(!trailing_newline);
                got.push((n, String::from_utf8(bytes).unwrap()));
            }
            let oversized: Vec<u64> = chunks.oversized.iter().map(|o| o.line).collect();
            // Expected: every line, numbered, except over-long ones (reported by number).
            let n_lines = if text.is_empty() { 0 } else { text.strip_suffix('\n').unwrap_or(&text).split('\n').count() };
            let all: Vec<(u64, String)> = text.strip_suffix('\n').unwrap_or(&text).split('\n').take(n_lines)
                .enumerate().map(|(i, l)| (i as u64 + 1, l.to_string())).collect();
            let kept: Vec<(u64, String)> = all.iter().filter(|(n, _)| !oversized.contains(n)).cloned().collect();
            // Lines longer than the limit may be passed whole when they fit a chunk; never lost or split.
            proptest::prop_assert_eq!(&got, &kept);
            for o in &chunks.oversized {
                let line = &all[o.line as usize - 1].1;
                proptest::prop_assert!(line.len() > max_line.min(chunk));
                proptest::prop_assert_eq!(o.bytes, line.len() as u64, "the whole length is known");
                proptest::prop_assert!(line.as_bytes().starts_with(&o.head));
            }
            proptest::prop_assert!(chunks.failure.is_none());
        }
    }

    #[test]
    fn last_line_without_newline_is_held_back_unconsumed() {
        let mut c = Chunks::new(&b"a\nb"[..], 1);
        let chunks: Vec<_> = c.by_ref().map(|c| (c.bytes, c.first_line)).collect();
        assert_eq!(chunks, vec![(b"a\n".to_vec(), 1)]);
        assert_eq!(c.unterminated, Some((2, b"b".to_vec())));
        assert_eq!(c.lines_consumed(), 1);
    }

    #[test]
    fn read_error_keeps_whole_lines_and_reports_the_partial_one() {
        struct Broken(Vec<u8>, bool);
        impl Read for Broken {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.1 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "truncated"));
                }
                self.1 = true;
                let n = self.0.len().min(buf.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                Ok(n)
            }
        }
        let mut c = Chunks::new(Broken(b"one\ntwo\nthr".to_vec(), false), 1);
        let got: Vec<_> = c.by_ref().collect();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].bytes, b"one\ntwo\n");
        let f = c.failure.unwrap();
        assert_eq!(f.partial, Some((3, b"thr".to_vec())));
    }

    #[test]
    fn skips_whole_lines() {
        let mut r = io::BufReader::with_capacity(4, &b"a\nbb\nccc\ndddd\n"[..]);
        assert_eq!(skip_lines(&mut r, 2).unwrap(), 2);
        let rest: Vec<_> = Chunks::new(r, 3).map(|c| (c.bytes, c.first_line)).collect();
        assert_eq!(rest, vec![(b"ccc\ndddd\n".to_vec(), 3)]);
        let mut short = &b"x\n"[..];
        assert_eq!(skip_lines(&mut short, 5).unwrap(), 1);
    }

    #[test]
    fn sniffs_containers() {
        assert_eq!(sniff_container(b"{\"Records\": [\n{\"a\":1}"), Container::Array);
        assert_eq!(sniff_container(b"{\"Records\":[{\"a\":1}]}\n"), Container::Array);
        assert_eq!(sniff_container(b"  [ {\"a\":1} ]"), Container::Array);
        assert_eq!(sniff_container(b"{\"ts\":1}\n{\"ts\":2}\n"), Container::Lines);
        assert_eq!(sniff_container(b"garbage\n{\"ts\":2}\n"), Container::Lines);
    }

    #[test]
    fn array_walk_salvages_records_before_damage() {
        let (items, err) = array_records(r#"{"Records": [ {"a":1}, {"b":[2,3]} ,{"c":3}]}"#);
        assert_eq!(items.len(), 3);
        assert!(err.is_none());
        assert_eq!(items[1].raw.get(), r#"{"b":[2,3]}"#);
        let (items, err) = array_records(r#"{"Records":[{"a":1},{"b":2},{"c":"#);
        assert_eq!(items.len(), 2);
        assert!(err.unwrap().contains("record 2"));
        let (items, err) = array_records("[]");
        assert!(items.is_empty() && err.is_none());
        // Concatenated delivery files, one per line.
        let (items, err) =
            array_records("{\"Records\":[{\"a\":1}]}\n{\"Records\":[]}\n{\"Records\":[{\"b\":2},{\"c\":3}]}\n");
        assert!(err.is_none(), "{err:?}");
        assert_eq!(
            items.iter().map(|i| (i.index, i.raw.get())).collect::<Vec<_>>(),
            vec![(0, r#"{"a":1}"#), (1, r#"{"b":2}"#), (2, r#"{"c":3}"#)]
        );
        let (items, err) = array_records(r#"{"Records":[{"a":1}],"x":2}"#);
        assert_eq!(items.len(), 1);
        assert!(err.unwrap().contains("after the Records array"));
    }
}
