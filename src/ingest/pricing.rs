//! Prices Bedrock inference the logs do not price: from real token counts
//! (model-invocation logs), or, for CloudTrail, which has none, from the
//! typical tokens of a request. The table is `models/bedrock_pricing.toml`
//! (compiled in), or the user's own file.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::pattern::name_matches;
use crate::schema::{Action, Event};

const BUILTIN: &str = include_str!("../../models/bedrock_pricing.toml");

#[derive(Debug, thiserror::Error)]
pub enum PricingError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{origin}: {message}")]
    Toml { origin: String, message: String },
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Price {
    input_per_1k: f64,
    output_per_1k: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Default_ {
    input_per_1k: f64,
    output_per_1k: f64,
    typical_input_tokens: u32,
    typical_output_tokens: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelPrice {
    model: String,
    #[serde(flatten)]
    price: Price,
    typical_input_tokens: Option<u32>,
    typical_output_tokens: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    default: Default_,
    #[serde(default)]
    model: Vec<ModelPrice>,
}

/// A pricing table: per model pattern, USD per 1,000 input and output tokens.
#[derive(Debug, Clone)]
pub struct Pricing {
    file: File,
}

impl Pricing {
    /// The shipped table.
    pub fn builtin() -> Pricing {
        Pricing::parse(BUILTIN, "models/bedrock_pricing.toml").expect("the shipped pricing table is valid")
    }

    /// The user's table, or the shipped one.
    pub fn load(path: Option<&Path>) -> Result<Pricing, PricingError> {
        let Some(path) = path else { return Ok(Pricing::builtin()) };
        let text =
            std::fs::read_to_string(path).map_err(|source| PricingError::Io { path: path.to_path_buf(), source })?;
        Pricing::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, origin: &str) -> Result<Pricing, PricingError> {
        let file: File = toml::from_str(text)
            .map_err(|e| PricingError::Toml { origin: origin.to_string(), message: e.to_string() })?;
        let bad = |message: String| PricingError::Invalid { origin: origin.to_string(), message };
        let prices = std::iter::once(("[default]", file.default.input_per_1k, file.default.output_per_1k))
            .chain(file.model.iter().map(|m| (m.model.as_str(), m.price.input_per_1k, m.price.output_per_1k)));
        for (what, i, o) in prices {
            if !(i.is_finite() && o.is_finite() && i >= 0.0 && o >= 0.0) {
                return Err(bad(format!("{what}: prices must be non-negative numbers")));
            }
        }
        Ok(Pricing { file })
    }

    /// (USD per 1k input tokens, per 1k output tokens, typical input and output tokens of a request).
    fn of(&self, model: &str) -> (f64, f64, u32, u32) {
        let d = &self.file.default;
        match self.file.model.iter().find(|m| name_matches(&m.model, model)) {
            Some(m) => (
                m.price.input_per_1k,
                m.price.output_per_1k,
                m.typical_input_tokens.unwrap_or(d.typical_input_tokens),
                m.typical_output_tokens.unwrap_or(d.typical_output_tokens),
            ),
            None => (d.input_per_1k, d.output_per_1k, d.typical_input_tokens, d.typical_output_tokens),
        }
    }

    /// The cost of a request from its token counts.
    pub fn cost(&self, model: &str, tokens_in: i64, tokens_out: i64) -> f64 {
        let (i, o, _, _) = self.of(model);
        round6((tokens_in.max(0) as f64 * i + tokens_out.max(0) as f64 * o) / 1000.0)
    }

    /// The cost of a request with no token counts: its typical tokens, priced.
    pub fn estimate(&self, model: &str) -> f64 {
        let (_, _, ti, to) = self.of(model);
        self.cost(model, ti as i64, to as i64)
    }

    /// Fills `cost_usd` of a successful Bedrock inference event that has
    /// none: from its tokens when the log has them, else estimated. Failed
    /// requests are not billed, and a cost the log states is kept.
    pub fn apply(&self, e: &mut Event<'_>) {
        let bedrock = e.provider.as_deref() == Some("bedrock") && e.action == Some(Action::Inference);
        let failed = e.status.is_some_and(|s| s >= 400) || e.error_code.is_some();
        if !bedrock || failed || e.cost_usd.is_some() {
            return;
        }
        let model: &str = e.model.as_deref().unwrap_or("");
        e.cost_usd = Some(match (e.tokens_in, e.tokens_out) {
            (None, None) => self.estimate(model),
            (i, o) => self.cost(model, i.unwrap_or(0), o.unwrap_or(0)),
        });
    }
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_from_tokens_or_typical_request() {
        let p = Pricing::builtin();
        // Haiku: 0.00025 / 0.00125 per 1k.
        assert_eq!(p.cost("anthropic.claude-3-haiku-20240307-v1:0", 1000, 1000), 0.0015);
        // An inference profile id matches the same pattern.
        assert_eq!(p.cost("us.anthropic.claude-3-haiku-20240307-v1:0", 1000, 0), 0.00025);
        // Opus, 2000 in and 500 out by default: 0.03 + 0.0375.
        assert_eq!(p.estimate("anthropic.claude-3-opus-20240229-v1:0"), 0.0675);
        // Unknown models take [default].
        assert_eq!(p.estimate("acme.newmodel-v1"), 0.0135);
    }

    #[test]
    fn applies_only_to_successful_bedrock_inference_without_a_cost() {
        let p = Pricing::builtin();
        let base = Event {
            credential_id: "AKIA1".into(),
            provider: Some("bedrock".into()),
            action: Some(Action::Inference),
            model: Some("anthropic.claude-3-opus-20240229-v1:0".into()),
            status: Some(200),
            ..Default::default()
        };
        let mut e = base.clone();
        p.apply(&mut e);
        assert_eq!(e.cost_usd, Some(0.0675));
        let mut e = Event { tokens_in: Some(100), tokens_out: Some(10), ..base.clone() };
        p.apply(&mut e);
        assert_eq!(e.cost_usd, Some(0.00225));
        for mut e in [
            Event { status: Some(400), error_code: Some("ValidationException".into()), ..base.clone() },
            Event { action: Some(Action::Admin), ..base.clone() },
            Event { provider: Some("openai".into()), ..base.clone() },
        ] {
            p.apply(&mut e);
            assert_eq!(e.cost_usd, None);
        }
        let mut e = Event { cost_usd: Some(1.5), ..base };
        p.apply(&mut e);
        assert_eq!(e.cost_usd, Some(1.5));
    }

    #[test]
    fn a_user_table_replaces_the_shipped_one_and_is_checked() {
        let p = Pricing::parse(
            "[default]\ninput_per_1k = 1.0\noutput_per_1k = 2.0\ntypical_input_tokens = 10\ntypical_output_tokens = 0\n",
            "mine.toml",
        )
        .unwrap();
        assert_eq!(p.estimate("anthropic.claude-3-haiku-20240307-v1:0"), 0.01);
        let err = Pricing::parse("[default]\ninput_per_1k = -1.0\noutput_per_1k = 2.0\ntypical_input_tokens = 1\ntypical_output_tokens = 1\n", "bad.toml").unwrap_err();
        assert!(err.to_string().starts_with("bad.toml: [default]: prices must be"), "{err}");
        assert!(
            Pricing::parse("[default]\ninput_per_1k = 1.0\n", "short.toml")
                .unwrap_err()
                .to_string()
                .contains("short.toml")
        );
    }
}
