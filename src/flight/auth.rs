//! Who may query `serve`: holders of a bearer token the operator gave at
//! start. A call presents it as `authorization: Bearer TOKEN`, or as the
//! password of basic auth (any user name), which is what Flight SQL drivers
//! (ADBC, JDBC) send in the handshake; the handshake then answers with the
//! token as a bearer for the calls that follow.
//!
//! Tokens are compared in constant time and never logged or echoed in errors.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use subtle::ConstantTimeEq;
use tonic::metadata::MetadataMap;
use tonic::{Request, Status};

/// The environment variable that adds one token to `--tokens-file`'s.
pub const TOKEN_ENV: &str = "CREDTRAIL_SERVE_TOKEN";

/// Shorter tokens can be guessed by anyone who can reach the port.
const MIN_TOKEN_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("reading --tokens-file {}: {error}", path.display())]
    Read { path: PathBuf, error: std::io::Error },
    #[error(
        "{place}: a token must be at least {MIN_TOKEN_LEN} characters of visible ASCII without spaces \
         (e.g. the output of `openssl rand -hex 32`)"
    )]
    Bad { place: String },
}

/// The tokens `serve` accepts; none means no authentication.
#[derive(Clone, Default)]
pub struct Tokens(Arc<Vec<Vec<u8>>>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} redacted)", self.0.len())
    }
}

impl Tokens {
    /// The tokens of `--tokens-file` (one a line; blank lines and `#`
    /// comments skipped) and of `$CREDTRAIL_SERVE_TOKEN`.
    pub fn load(file: Option<&Path>, env: Option<&str>) -> Result<Tokens, TokenError> {
        let mut tokens = Vec::new();
        if let Some(path) = file {
            let text =
                std::fs::read_to_string(path).map_err(|error| TokenError::Read { path: path.to_path_buf(), error })?;
            for (i, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                tokens.push(valid(line, || format!("--tokens-file {} line {}", path.display(), i + 1))?);
            }
        }
        if let Some(t) = env {
            tokens.push(valid(t.trim(), || format!("${TOKEN_ENV}"))?);
        }
        Ok(Tokens(Arc::new(tokens)))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `candidate` is one of the tokens, in time independent of where they differ.
    fn accepts(&self, candidate: &[u8]) -> bool {
        let mut ok = subtle::Choice::from(0);
        for t in self.0.iter() {
            ok |= t.as_slice().ct_eq(candidate);
        }
        ok.into()
    }

    /// Admits a call that presents an accepted token (any call when there are no tokens).
    pub fn check(&self, metadata: &MetadataMap) -> Result<(), Status> {
        if self.is_empty() {
            return Ok(());
        }
        match presented(metadata) {
            None => Err(Status::unauthenticated(
                "this server needs a token: send `authorization: Bearer TOKEN`, or basic auth with the token as \
                 password",
            )),
            Some(t) if self.accepts(&t) => Ok(()),
            Some(_) => Err(Status::unauthenticated("the token is not one this server accepts")),
        }
    }
}

/// Every call passes through here before the service sees it.
impl tonic::service::Interceptor for Tokens {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.check(request.metadata())?;
        Ok(request)
    }
}

fn valid(token: &str, place: impl FnOnce() -> String) -> Result<Vec<u8>, TokenError> {
    if token.len() < MIN_TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(TokenError::Bad { place: place() });
    }
    Ok(token.as_bytes().to_vec())
}

/// Basic auth's base64, padded or not: Go's Flight client (under ADBC's
/// Flight SQL driver) sends it without padding.
const BASIC: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The token a call carries: a bearer, or basic auth's password.
pub fn presented(metadata: &MetadataMap) -> Option<Vec<u8>> {
    let value = metadata.get("authorization")?.to_str().ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        Some(rest.as_bytes().to_vec())
    } else if scheme.eq_ignore_ascii_case("basic") {
        let decoded = BASIC.decode(rest).ok()?;
        let colon = decoded.iter().position(|&b| b == b':')?;
        Some(decoded[colon + 1..].to_vec())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose;

    const GOOD: &str = "0123456789abcdef0123";

    fn with(value: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert("authorization", value.parse().unwrap());
        m
    }

    #[test]
    fn bearer_or_basic_password_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens");
        std::fs::write(&file, format!("# ops team\n\n  {GOOD}  \n")).unwrap();
        let tokens = Tokens::load(Some(&file), Some("ffffffffffffffffffff")).unwrap();
        assert!(!format!("{tokens:?}").contains(GOOD), "never shown");
        assert!(tokens.check(&with(&format!("Bearer {GOOD}"))).is_ok());
        assert!(tokens.check(&with("bearer ffffffffffffffffffff")).is_ok());
        let basic = general_purpose::STANDARD.encode(format!("anyone:{GOOD}"));
        assert!(tokens.check(&with(&format!("Basic {basic}"))).is_ok());
        let unpadded = general_purpose::STANDARD_NO_PAD.encode(format!("analyst:{GOOD}"));
        assert!(!unpadded.ends_with('=') && tokens.check(&with(&format!("Basic {unpadded}"))).is_ok());
        for bad in [format!("Bearer {GOOD}x"), "Bearer 0123".into(), format!("Token {GOOD}"), "Basic !!".into()] {
            let e = tokens.check(&with(&bad)).unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unauthenticated, "{bad}");
            assert!(!e.message().contains(GOOD));
        }
        assert_eq!(tokens.check(&MetadataMap::new()).unwrap_err().code(), tonic::Code::Unauthenticated);
        // No tokens: no authentication.
        assert!(Tokens::default().check(&MetadataMap::new()).is_ok());
    }

    #[test]
    fn weak_or_unreadable_tokens_are_refused_without_showing_them() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens");
        std::fs::write(&file, format!("{GOOD}\nshort-secret\n")).unwrap();
        let e = Tokens::load(Some(&file), None).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("at least 16"), "{e}");
        assert!(!e.contains("short-secret"), "{e}");
        let e = Tokens::load(None, Some("has a space in it, long enough")).unwrap_err().to_string();
        assert!(e.contains(TOKEN_ENV), "{e}");
        let e = Tokens::load(Some(&dir.path().join("missing")), None).unwrap_err().to_string();
        assert!(e.contains("--tokens-file") && e.contains("missing"), "{e}");
    }
}
