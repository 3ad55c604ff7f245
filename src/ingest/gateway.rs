//! The gateway's native JSON-lines format: the canonical field names, so a
//! line deserializes straight into borrowed fields with no intermediate tree.

use std::borrow::Cow;

use serde::Deserialize;

use crate::schema::{Action, Event, Rejected};
use crate::time::parse_ts;

#[derive(Deserialize)]
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
    let l: Line<'_> = serde_json::from_str(line).map_err(|e| explain(line, e))?;
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
}
