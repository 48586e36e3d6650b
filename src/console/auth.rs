//! The console's token: read from a file (`--token-file`, or a systemd credential), asked of
//! every page, API call and download when there is one, as `Authorization: Bearer TOKEN` or
//! as HTTP Basic's password (so a browser can log in).

use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;

/// The token a console asks for. Its `Debug` never shows it.
#[derive(Clone)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(***)")
    }
}

/// Why a token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// It cannot be read.
    #[error("cannot read the token file `{path}`: {source}")]
    Unreadable {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// It holds too little to be a secret.
    #[error(
        "the token in `{0}` is shorter than 16 characters\n  hint: make one with `head -c 32 /dev/urandom | base64 > {0}`"
    )]
    TooShort(String),
}

impl Token {
    /// The token in `path`, its surrounding white space trimmed.
    pub fn read(path: &Path) -> Result<Token, TokenError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Unreadable {
            path: shown.clone(),
            source,
        })?;
        let token = text.trim();
        if token.chars().count() < 16 {
            return Err(TokenError::TooShort(shown));
        }
        Ok(Token(token.to_string()))
    }

    /// Whether the request's `Authorization` header carries this token.
    fn admits(&self, headers: &HeaderMap) -> bool {
        let Some(given) = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
        else {
            return false;
        };
        if let Some(bearer) = given.strip_prefix("Bearer ") {
            return same(bearer.trim().as_bytes(), self.0.as_bytes());
        }
        let Some(basic) = given.strip_prefix("Basic ") else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(basic.trim()) else {
            return false;
        };
        // `user:password`: any user name, the token as the password.
        match decoded.iter().position(|byte| *byte == b':') {
            Some(colon) => same(&decoded[colon + 1..], self.0.as_bytes()),
            None => false,
        }
    }
}

/// Compares in time that does not depend on where the two first differ.
fn same(given: &[u8], token: &[u8]) -> bool {
    given.len() == token.len()
        && given
            .iter()
            .zip(token)
            .fold(0u8, |differ, (a, b)| differ | (a ^ b))
            == 0
}

/// Lets a request through when there is no token, or when it carries it; else answers 401
/// with a challenge a browser shows as a login.
pub(super) async fn require_token(
    State(token): State<Arc<Option<Token>>>,
    request: Request,
    next: Next,
) -> Response {
    match token.as_ref() {
        Some(token) if !token.admits(request.headers()) => (
            StatusCode::UNAUTHORIZED,
            [(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"tapline\", charset=\"UTF-8\""),
            )],
            "this console needs its token: `Authorization: Bearer TOKEN`, or any user name with the token as password\n",
        )
            .into_response(),
        _ => next.run(request).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn the_token_is_taken_as_bearer_or_as_basic_password_only() {
        let token = Token("0123456789abcdef".into());
        assert!(token.admits(&headers("Bearer 0123456789abcdef")));
        assert!(!token.admits(&headers("Bearer 0123456789abcdeF")));
        assert!(!token.admits(&headers("Bearer 0123456789abcde")));
        let basic = base64::engine::general_purpose::STANDARD.encode("ops:0123456789abcdef");
        assert!(token.admits(&headers(&format!("Basic {basic}"))));
        let wrong = base64::engine::general_purpose::STANDARD.encode("0123456789abcdef:x");
        assert!(!token.admits(&headers(&format!("Basic {wrong}"))));
        assert!(!token.admits(&headers("Basic %%%")));
        assert!(!token.admits(&HeaderMap::new()));
        assert_eq!(format!("{token:?}"), "Token(***)");
    }
}
