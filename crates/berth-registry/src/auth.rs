//! `WWW-Authenticate` challenges and bearer tokens.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// An authentication challenge from a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic realm="…"`.
    Basic,
    /// `Bearer realm="…",service="…",scope="…"`.
    Bearer {
        /// The token endpoint.
        realm: String,
        /// The `service` parameter to pass back.
        service: Option<String>,
        /// The scope the registry asked for, if it said.
        scope: Option<String>,
    },
}

/// Parses a `WWW-Authenticate` header value into its challenges (unknown schemes skipped).
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut out = Vec::new();
    for (scheme, params) in parse_raw(header) {
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => out.push(Challenge::Basic),
            "bearer" => {
                if let Some(realm) = params.get("realm") {
                    out.push(Challenge::Bearer {
                        realm: realm.clone(),
                        service: params.get("service").cloned(),
                        scope: params.get("scope").cloned(),
                    });
                }
            }
            _ => {}
        }
    }
    out
}

/// Splits a header into `(scheme, params)` pairs. Params are `key=token` or
/// `key="quoted \" string"`, comma separated; a bare token starts a new challenge.
fn parse_raw(s: &str) -> Vec<(String, BTreeMap<String, String>)> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut out: Vec<(String, BTreeMap<String, String>)> = Vec::new();
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && (b[*i] == b' ' || b[*i] == b'\t' || b[*i] == b',') {
            *i += 1;
        }
    };
    let token = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && !matches!(b[*i], b' ' | b'\t' | b',' | b'=' | b'"') {
            *i += 1;
        }
        s[start..*i].to_string()
    };
    loop {
        skip_ws(&mut i);
        if i >= b.len() {
            break;
        }
        let word = token(&mut i);
        if word.is_empty() {
            // Stray character: skip it.
            i += 1;
            continue;
        }
        // Lookahead: `word=` is a parameter, otherwise `word` is a scheme.
        let mut j = i;
        while j < b.len() && (b[j] == b' ' || b[j] == b'\t') {
            j += 1;
        }
        if j < b.len() && b[j] == b'=' && !out.is_empty() {
            i = j + 1;
            while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
                i += 1;
            }
            let value = if i < b.len() && b[i] == b'"' {
                i += 1;
                let mut v = String::new();
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' && i + 1 < b.len() {
                        i += 1;
                    }
                    // Push whole UTF-8 characters.
                    let ch = s[i..].chars().next().unwrap_or('\u{fffd}');
                    v.push(ch);
                    i += ch.len_utf8();
                }
                i += 1; // closing quote
                v
            } else {
                token(&mut i)
            };
            if let Some(last) = out.last_mut() {
                last.1.insert(word.to_ascii_lowercase(), value);
            }
        } else {
            out.push((word, BTreeMap::new()));
        }
    }
    out
}

/// A cached bearer token.
#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub(crate) token: String,
    pub(crate) expires: Instant,
}

impl Token {
    pub(crate) fn valid(&self) -> bool {
        Instant::now() < self.expires
    }
}

/// The token endpoint's JSON answer.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct TokenResponse {
    #[serde(default)]
    pub(crate) token: Option<String>,
    #[serde(default)]
    pub(crate) access_token: Option<String>,
    #[serde(default)]
    pub(crate) expires_in: Option<u64>,
}

impl TokenResponse {
    pub(crate) fn into_token(self) -> Option<Token> {
        let tok = self
            .token
            .filter(|t| !t.is_empty())
            .or(self.access_token.filter(|t| !t.is_empty()))?;
        // The spec's default lifetime is 60 s; renew a little early.
        let secs = self.expires_in.unwrap_or(60).max(60);
        Some(Token {
            token: tok,
            expires: Instant::now() + Duration::from_secs(secs.saturating_sub(10)),
        })
    }
}

/// The scope string for repository access: `repository:<path>:pull` or `…:pull,push`.
pub fn repository_scope(path: &str, push: bool) -> String {
    if push {
        format!("repository:{path}:pull,push")
    } else {
        format!("repository:{path}:pull")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        );
        assert_eq!(
            c,
            vec![Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull".into()),
            }]
        );
    }

    #[test]
    fn basic_and_multiple() {
        assert_eq!(
            parse_challenges(r#"Basic realm="Registry Realm""#),
            vec![Challenge::Basic]
        );
        let c = parse_challenges(r#"Bearer realm="http://a/t", service=svc, Basic realm="x\"y""#);
        assert_eq!(c.len(), 2);
        assert_eq!(
            c[0],
            Challenge::Bearer {
                realm: "http://a/t".into(),
                service: Some("svc".into()),
                scope: None
            }
        );
        assert_eq!(c[1], Challenge::Basic);
        assert!(parse_challenges("").is_empty());
        assert!(parse_challenges("Negotiate").is_empty());
        // A bearer challenge without a realm is unusable.
        assert!(parse_challenges("Bearer service=x").is_empty());
    }

    #[test]
    fn token_response() {
        let t: TokenResponse =
            serde_json::from_str(r#"{"access_token":"a","expires_in":300}"#).unwrap();
        let t = t.into_token().unwrap();
        assert_eq!(t.token, "a");
        assert!(t.valid());
        let t: TokenResponse = serde_json::from_str(r#"{"token":"b","access_token":"a"}"#).unwrap();
        assert_eq!(t.into_token().unwrap().token, "b");
        let t: TokenResponse = serde_json::from_str(r#"{}"#).unwrap();
        assert!(t.into_token().is_none());
    }
}
