//! The gateway's native JSON-lines format: the canonical field names, so a
//! line deserializes straight into borrowed fields with no intermediate tree.
//!
//! Every event goes through here, so a line is first read by [`scan`], a
//! scanner for the plain lines gateways write (no escapes, flat values). It
//! gives up on anything else, and serde_json reads that line instead: so
//! the scanner only ever returns what serde_json would, and every error and
//! quarantine reason is serde_json's. A SIMD parser was measured for this
//! and did not pay (`benches/RESULTS.md`, issue 20).

use std::borrow::Cow;

use serde::Deserialize;

use crate::schema::{Action, Event, Rejected};
use crate::time::parse_ts;

#[derive(Deserialize, Default, Debug, PartialEq)]
struct Line<'a> {
    #[serde(borrow)]
    ts: Cow<'a, str>,
    #[serde(borrow, default)]
    request_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    credential_id: Cow<'a, str>,
    #[serde(borrow, default)]
    principal: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    session_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    source_ip: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    user_agent: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    provider: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(borrow)]
    action: Cow<'a, str>,
    #[serde(borrow, default)]
    tool: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    resource: Option<Cow<'a, str>>,
    #[serde(default)]
    status: Option<u16>,
    #[serde(borrow, default)]
    error_code: Option<Cow<'a, str>>,
    #[serde(default)]
    latency_ms: Option<f64>,
    #[serde(default)]
    tokens_in: Option<i64>,
    #[serde(default)]
    tokens_out: Option<i64>,
    #[serde(default)]
    cost_usd: Option<f64>,
    #[serde(borrow, default)]
    region: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    account_id: Option<Cow<'a, str>>,
}

/// Whether a parsed record is a gateway event (for format detection).
pub fn looks_like_gateway(v: &serde_json::Value) -> bool {
    v.get("ts").is_some() && v.get("credential_id").is_some()
}

/// Parses one gateway line.
pub fn parse(line: &str) -> Result<Event<'_>, Rejected> {
    let l: Line<'_> = match scan(line) {
        Some(l) => l,
        None => serde_json::from_str(line).map_err(|e| explain(line, e))?,
    };
    let ts_ms = parse_ts(&l.ts).ok_or_else(|| Rejected(format!("ts {:?} is not a timestamp", truncate(&l.ts, 64))))?;
    if l.credential_id.trim().is_empty() {
        return Err(Rejected::new("credential_id is empty"));
    }
    let action: Action = l.action.parse().map_err(|e| Rejected(format!("action: {e}")))?;
    for (name, v) in [("tokens_in", l.tokens_in), ("tokens_out", l.tokens_out)] {
        if v.is_some_and(|n| n < 0) {
            return Err(Rejected(format!("{name} is negative")));
        }
    }
    if l.cost_usd.is_some_and(|c| !c.is_finite() || c < 0.0) {
        return Err(Rejected::new("cost_usd is negative or not finite"));
    }
    let latency_ms = match l.latency_ms {
        Some(v) if v.is_finite() && v >= 0.0 => Some(v.round().min(u32::MAX as f64) as u32),
        Some(_) => return Err(Rejected::new("latency_ms is negative or not finite")),
        None => None,
    };
    Ok(Event {
        ts_ms,
        request_id: l.request_id,
        credential_id: l.credential_id,
        principal: l.principal,
        session_id: l.session_id,
        source_ip: l.source_ip,
        user_agent: l.user_agent,
        provider: l.provider,
        model: l.model,
        action: Some(action),
        tool: l.tool,
        resource: l.resource,
        status: l.status,
        error_code: l.error_code,
        latency_ms,
        tokens_in: l.tokens_in,
        tokens_out: l.tokens_out,
        cost_usd: l.cost_usd,
        region: l.region,
        account_id: l.account_id,
        detail: None,
    })
}

/// Reads a plain gateway line: one flat object whose strings have no
/// escapes, with JSON's whitespace anywhere between tokens. `None` for
/// anything it does not read exactly as serde_json does (an escape, a
/// nested value, a duplicate or missing required field, a number serde_json
/// would round differently or reject, a type error): serde_json decides those.
fn scan(line: &str) -> Option<Line<'_>> {
    let mut c = Cursor { b: line.as_bytes(), i: 0, text: line };
    let mut l = Line::default();
    let mut seen = 0u32;
    let mut field: Option<usize> = None;
    c.byte(b'{')?;
    if c.peek()? != b'}' {
        loop {
            let key = c.string()?;
            c.byte(b':')?;
            // Gateways write the fields in one order: the one after the last is tried first.
            let next = field.map_or(0, |f| f + 1);
            field = match FIELDS.get(next) {
                Some(f) if *f == key => Some(next),
                _ => FIELDS.iter().position(|f| *f == key),
            };
            if let Some(f) = field {
                // serde_json refuses a duplicate field; let it say so.
                if seen & (1 << f) != 0 {
                    return None;
                }
                seen |= 1 << f;
            }
            match field {
                Some(0) => l.ts = Cow::Borrowed(c.string()?),
                Some(1) => l.request_id = c.opt_string()?,
                Some(2) => l.credential_id = Cow::Borrowed(c.string()?),
                Some(3) => l.principal = c.opt_string()?,
                Some(4) => l.session_id = c.opt_string()?,
                Some(5) => l.source_ip = c.opt_string()?,
                Some(6) => l.user_agent = c.opt_string()?,
                Some(7) => l.provider = c.opt_string()?,
                Some(8) => l.model = c.opt_string()?,
                Some(9) => l.action = Cow::Borrowed(c.string()?),
                Some(10) => l.tool = c.opt_string()?,
                Some(11) => l.resource = c.opt_string()?,
                Some(12) => l.status = c.opt_int()?.map(u16::try_from).transpose().ok()?,
                Some(13) => l.error_code = c.opt_string()?,
                Some(14) => l.latency_ms = c.opt_float()?,
                Some(15) => l.tokens_in = c.opt_int()?,
                Some(16) => l.tokens_out = c.opt_int()?,
                Some(17) => l.cost_usd = c.opt_float()?,
                Some(18) => l.region = c.opt_string()?,
                Some(19) => l.account_id = c.opt_string()?,
                _ => c.skip_scalar()?,
            }
            match c.next()? {
                b',' => continue,
                b'}' => break,
                _ => return None,
            }
        }
    } else {
        c.next()?;
    }
    // ts, credential_id and action are required; and nothing may follow.
    let required = 1 << 0 | 1 << 2 | 1 << 9;
    (seen & required == required && c.rest_is_blank()).then_some(l)
}

/// The fields of [`Line`], in [`scan`]'s order: the canonical columns' names.
const FIELDS: [&str; 20] = {
    use crate::schema::col::*;
    [
        TS,
        REQUEST_ID,
        CREDENTIAL_ID,
        PRINCIPAL,
        SESSION_ID,
        SOURCE_IP,
        USER_AGENT,
        PROVIDER,
        MODEL,
        ACTION,
        TOOL,
        RESOURCE,
        STATUS,
        ERROR_CODE,
        LATENCY_MS,
        TOKENS_IN,
        TOKENS_OUT,
        COST_USD,
        REGION,
        ACCOUNT_ID,
    ]
};

/// [`scan`]'s position in a line.
struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
    text: &'a str,
}

impl<'a> Cursor<'a> {
    /// The next byte that is not JSON whitespace, without taking it.
    fn peek(&mut self) -> Option<u8> {
        while let Some(&c) = self.b.get(self.i) {
            if !matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
                return Some(c);
            }
            self.i += 1;
        }
        None
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    fn byte(&mut self, want: u8) -> Option<()> {
        (self.next()? == want).then_some(())
    }

    /// A string without escapes or control characters, borrowed.
    fn string(&mut self) -> Option<&'a str> {
        self.byte(b'"')?;
        let start = self.i;
        let len = special(&self.b[start..])?;
        self.i = start + len;
        self.byte(b'"')?;
        // Both ends are ASCII quotes, so they are character boundaries.
        Some(&self.text[start..start + len])
    }

    /// `null`, if that is what comes next.
    fn null(&mut self) -> Option<bool> {
        if self.peek()? != b'n' {
            return Some(false);
        }
        (self.b[self.i..].starts_with(b"null")).then(|| self.i += 4)?;
        Some(true)
    }

    fn opt_string(&mut self) -> Option<Option<Cow<'a, str>>> {
        if self.null()? {
            return Some(None);
        }
        Some(Some(Cow::Borrowed(self.string()?)))
    }

    /// A JSON number: sign, digits, fraction and exponent checked as
    /// serde_json checks them; its digits read only when there are few.
    fn number(&mut self) -> Option<Number> {
        self.peek()?;
        let b = self.b;
        let neg = b[self.i] == b'-';
        let mut i = self.i + usize::from(neg);
        let mut significand = 0u64;
        let mut digits = |i: &mut usize| {
            let from = *i;
            while let Some(d) = b.get(*i).filter(|d| d.is_ascii_digit()) {
                significand = significand.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
                *i += 1;
            }
            *i - from
        };
        let int = digits(&mut i);
        if int == 0 || (int > 1 && b[i - int] == b'0') {
            return None;
        }
        let mut frac = 0;
        if b.get(i) == Some(&b'.') {
            i += 1;
            frac = digits(&mut i);
            if frac == 0 {
                return None;
            }
        }
        let exp = matches!(b.get(i), Some(b'e' | b'E'));
        self.i = i;
        // Past 18 digits the significand may have wrapped: not `simple`, so unused.
        Some(Number { neg, significand, simple: !exp && int + frac <= 18, int, frac })
    }

    /// An integer, as serde_json reads one into an `i64` field (it refuses a
    /// fraction or an exponent there, and reads `-0` as a float).
    fn opt_int(&mut self) -> Option<Option<i64>> {
        if self.null()? {
            return Some(None);
        }
        let n = self.number()?;
        let v = i64::try_from(n.significand).ok()?;
        (n.simple && n.frac == 0 && !(n.neg && v == 0)).then_some(Some(if n.neg { -v } else { v }))
    }

    /// A number as serde_json reads one into an `f64` field, by its own
    /// arithmetic: the digits as an integer, divided by the power of ten of
    /// the fraction. Only where both are exact in an f64 (at most 15 digits),
    /// so that one division is also the correctly rounded reading.
    fn opt_float(&mut self) -> Option<Option<f64>> {
        const POW10: [f64; 16] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15];
        if self.null()? {
            return Some(None);
        }
        let n = self.number()?;
        if !n.simple || n.int + n.frac > 15 {
            return None;
        }
        let f = n.significand as f64 / POW10[n.frac];
        Some(Some(if n.neg { -f } else { f }))
    }

    /// An unknown field's value: a string, number, `true`, `false` or
    /// `null`. An object or array is left to serde_json.
    fn skip_scalar(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b't' | b'f' | b'n' => {
                let word: &[u8] = ["true", "false", "null"]
                    .into_iter()
                    .find(|w| self.b[self.i..].starts_with(w.as_bytes()))?
                    .as_bytes();
                self.i += word.len();
                Some(())
            }
            _ => self.number().filter(|n| n.simple).map(drop),
        }
    }

    /// Whether only whitespace is left.
    fn rest_is_blank(&mut self) -> bool {
        self.peek().is_none()
    }
}

/// A number, as [`Cursor::number`] found it.
struct Number {
    neg: bool,
    /// Its digits, point left out, as one integer (meaningful when `simple`).
    significand: u64,
    /// No exponent (those are left to serde_json) and at most 18 digits.
    simple: bool,
    /// Digits before the point, and after it.
    int: usize,
    frac: usize,
}

/// The length of `b` before its first `"`, `\\` or control character (the
/// end of a plain JSON string, or where it stops being plain), eight bytes
/// at a time; `None` if there is none.
fn special(b: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // The high bit of each byte that is zero in `x`, or below `n`: exact
    // up to the first such byte, which is all that is used.
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH;
    let mut i = 0;
    while let Some(chunk) = b.get(i..i + 8) {
        let w = u64::from_le_bytes(chunk.try_into().ok()?);
        let hits = below(w ^ (ONES * u64::from(b'"')), 1) | below(w ^ (ONES * u64::from(b'\\')), 1) | below(w, 0x20);
        if hits != 0 {
            return Some(i + (hits.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    b[i..].iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20).map(|p| i + p)
}

/// Names the field a deserialization error is about. Only runs on the
/// error path, so the hot path pays nothing for it.
fn explain(line: &str, e: serde_json::Error) -> Rejected {
    if e.is_syntax() || e.is_eof() {
        return Rejected(format!("not JSON: {e}"));
    }
    let mut de = serde_json::Deserializer::from_str(line);
    match serde_path_to_error::deserialize::<_, Line<'_>>(&mut de) {
        Err(pe) if !pe.path().to_string().is_empty() && pe.path().to_string() != "." => {
            Rejected(format!("field `{}`: {}", pe.path(), pe.inner()))
        }
        _ => Rejected(format!("not a gateway event: {e}")),
    }
}

/// Cuts `s` to at most `max` bytes at a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = r#"{"ts":"2026-11-02T14:03:07.123Z","request_id":"req_1","credential_id":"key_a","principal":"agent:triage","session_id":null,"source_ip":"203.0.113.9","user_agent":"ua/1","provider":"openai","model":"gpt-4o","action":"inference","tool":null,"resource":null,"status":200,"error_code":null,"latency_ms":812.4,"tokens_in":1200,"tokens_out":340,"cost_usd":0.0064,"extra":{"ignored":true}}"#;

    #[test]
    fn parses_a_full_line_borrowing_strings() {
        let e = parse(LINE).unwrap();
        assert_eq!(e.ts_ms, crate::time::parse_ts("2026-11-02T14:03:07.123Z").unwrap());
        assert!(matches!(e.credential_id, Cow::Borrowed("key_a")));
        assert_eq!(e.action, Some(Action::Inference));
        assert_eq!(e.latency_ms, Some(812));
        assert_eq!(e.tokens_out, Some(340));
        assert_eq!(e.session_id, None);
    }

    #[test]
    fn rejects_with_reasons() {
        let cases = [
            (LINE.replace("\"inference\"", "\"delete\""), "action"),
            (LINE.replace("2026-11-02T14:03:07.123Z", "redacted"), "ts"),
            (LINE.replace(r#""credential_id":"key_a","#, ""), "credential_id"),
            (LINE.replace("\"tokens_in\":1200", "\"tokens_in\":-5"), "tokens_in"),
            (LINE.replace("\"status\":200", "\"status\":\"ok\""), "status"),
            ("{\"ts\":".to_string(), "EOF"),
        ];
        for (line, needle) in cases {
            let err = parse(&line).unwrap_err();
            assert!(err.0.contains(needle), "{needle}: {err}");
        }
    }

    #[test]
    fn the_scanner_reads_plain_lines_and_leaves_the_rest_to_serde() {
        let plain = LINE.replace(r#","extra":{"ignored":true}"#, r#","extra":"x","n":-1.5,"t":true"#);
        let fast = scan(&plain).expect("a plain line is scanned");
        assert_eq!(&fast, &serde_json::from_str::<Line<'_>>(&plain).unwrap());
        assert_eq!((fast.status, fast.latency_ms, fast.cost_usd), (Some(200), Some(812.4), Some(0.0064)));
        let spaced = " {\t\"ts\" : \"2026-11-02T14:03:07Z\" ,\"credential_id\":\"k\",\r\n\"action\":\"read\" } ";
        assert_eq!(scan(spaced).unwrap().credential_id, "k");
        for other in [
            LINE.to_string(),
            plain.replace("key_a", r"key\u005fa"),
            plain.replace(r#""tokens_in":1200"#, r#""tokens_in":-0"#),
            plain.replace(r#""tokens_in":1200"#, r#""tokens_in":12e2"#),
            plain.replace(r#""status":200"#, r#""status":70000"#),
            plain.replace(r#""cost_usd":0.0064"#, r#""cost_usd":0.12345678901234567"#),
            plain.replace(r#""ts":"#, r#""ts":"2026-11-02T14:03:07Z","ts":"#),
            plain.replace(r#""action":"inference","#, ""),
            plain.replace(r#""n":-1.5"#, r#""n":01"#),
            format!("{plain}x"),
        ] {
            assert!(scan(&other).is_none(), "{other}");
        }
    }

    /// A JSON value's text for a field: well-formed or not, plain or escaped.
    fn value() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            "\"[a-z0-9:._ \\-]{0,12}\"",
            "\"[a-z\\\\\"\u{1}é]{0,6}\"",
            "-?[0-9]{1,20}(\\.[0-9]{0,25})?([eE][+-]?[0-9]{1,3})?",
            "-?0[0-9]?(\\.[0-9]{1,3})?",
            Just("null".to_string()),
            Just("nul".to_string()),
            Just("true".to_string()),
            Just("false".to_string()),
            Just("{\"a\":[1]}".to_string()),
            Just("[]".to_string()),
            Just("\"2026-11-02T14:03:07.123Z\"".to_string()),
            Just("\"inference\"".to_string()),
        ]
    }

    proptest::proptest! {
        // About one line in six is plain enough for the scanner.
        #![proptest_config(proptest::test_runner::Config::with_cases(1024))]

        /// Whatever the scanner reads, serde_json reads the same; so the
        /// fast path changes no event and no quarantine reason.
        #[test]
        fn the_scanner_agrees_with_serde(
            // Per field: kept as in a plain line, replaced, or left out.
            edits in proptest::collection::vec(proptest::option::weighted(0.06, proptest::option::weighted(0.8, value())), 20),
            extra in proptest::collection::vec(("[a-z_]{1,12}", value()), 0..3),
            ws in " {0,2}",
            tail in proptest::prop_oneof![4 => proptest::strategy::Just(String::new()), 1 => "[ }x]{1,2}"],
        ) {
            let plain = [
                "\"2026-11-02T14:03:07.123Z\"", "\"req_1\"", "\"key_a\"", "\"agent:x\"", "null", "\"10.0.0.1\"",
                "\"ua/1\"", "\"openai\"", "\"gpt-4o\"", "\"inference\"", "null", "null", "200", "null", "812.4",
                "1200", "340", "0.0064", "\"us-east-1\"", "\"123\"",
            ];
            let mut parts = Vec::new();
            for ((k, v), edit) in FIELDS.iter().zip(plain).zip(&edits) {
                match edit {
                    None => parts.push(format!("\"{k}\":{v}")),
                    Some(Some(v)) => parts.push(format!("{ws}\"{k}\"{ws}:{ws}{v}{ws}")),
                    Some(None) => {}
                }
            }
            for (i, (k, v)) in extra.iter().enumerate() {
                parts.insert(i * 5 % (parts.len() + 1), format!("\"{k}\":{v}"));
            }
            let line = format!("{{{}}}{tail}", parts.join(","));
            if let Some(fast) = scan(&line) {
                let slow = serde_json::from_str::<Line<'_>>(&line).map_err(|e| e.to_string());
                proptest::prop_assert_eq!(Ok(fast), slow, "{}", line);
            }
        }
    }
}
