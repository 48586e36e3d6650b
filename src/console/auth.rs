//! The console's token: read from a file (`--token-file`, or a systemd credential), asked of
//! every page, API call and download when there is one, as `Authorization: Bearer TOKEN` or
//! as HTTP Basic's password (so a browser can log in).

use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
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

/// Refuses a request that changes something (a POST) when a browser says it comes from
/// another site: a page elsewhere must not start runs with the credentials a browser sends by
/// itself. Browsers say where a request comes from in `Sec-Fetch-Site`, or in `Origin`;
/// a request with neither comes from a program (curl, an orchestrator), which the token
/// alone admits. The rule Go's `http.CrossOriginProtection` applies.
pub(super) async fn same_origin(request: Request, next: Next) -> Response {
    match cross_site(request.method(), request.headers()) {
        Some(from) => (
            StatusCode::FORBIDDEN,
            format!("refused: this request comes from another site ({from}); the console's actions are taken from its own pages or with the token from a program\n"),
        )
            .into_response(),
        None => next.run(request).await,
    }
}

/// Where a request that changes something comes from, when that is another site.
fn cross_site(method: &Method, headers: &HeaderMap) -> Option<String> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return None;
    }
    let text = |name| {
        headers
            .get(name)
            .and_then(|value: &HeaderValue| value.to_str().ok())
    };
    if let Some(site) = text(header::HeaderName::from_static("sec-fetch-site")) {
        return (!matches!(site, "same-origin" | "none"))
            .then(|| format!("Sec-Fetch-Site: {site}"));
    }
    let origin = text(header::ORIGIN)?;
    let host = text(header::HOST).unwrap_or_default();
    let origin_host = origin
        .split_once("://")
        .map_or("", |(_, rest)| rest.trim_end_matches('/'));
    (origin_host.is_empty() || !origin_host.eq_ignore_ascii_case(host))
        .then(|| format!("Origin: {origin}"))
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

    #[test]
    fn a_post_from_another_site_is_told_apart_from_one_from_the_console_or_a_program() {
        let with = |pairs: &[(&'static str, &str)]| {
            let mut headers = HeaderMap::new();
            for (name, value) in pairs {
                headers.insert(*name, HeaderValue::from_str(value).unwrap());
            }
            headers
        };
        let host = ("host", "127.0.0.1:9464");
        // The console's own form, as browsers send it.
        let own = with(&[
            host,
            ("origin", "http://127.0.0.1:9464"),
            ("sec-fetch-site", "same-origin"),
        ]);
        assert_eq!(cross_site(&Method::POST, &own), None);
        // A browser without Sec-Fetch-Site, from the same origin.
        assert_eq!(
            cross_site(
                &Method::POST,
                &with(&[host, ("origin", "http://127.0.0.1:9464")])
            ),
            None
        );
        // curl or an orchestrator: neither header.
        assert_eq!(cross_site(&Method::POST, &with(&[host])), None);
        // Another site, either way a browser says it.
        assert!(
            cross_site(
                &Method::POST,
                &with(&[host, ("sec-fetch-site", "cross-site")])
            )
            .is_some()
        );
        assert!(
            cross_site(
                &Method::POST,
                &with(&[host, ("sec-fetch-site", "same-site")])
            )
            .is_some()
        );
        assert!(
            cross_site(
                &Method::POST,
                &with(&[host, ("origin", "https://evil.example")])
            )
            .is_some()
        );
        assert!(cross_site(&Method::POST, &with(&[host, ("origin", "null")])).is_some());
        // Reading is never refused.
        assert_eq!(
            cross_site(
                &Method::GET,
                &with(&[host, ("sec-fetch-site", "cross-site")])
            ),
            None
        );
    }
}
