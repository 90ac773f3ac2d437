//! Who sent a request, challenges, and whether they may do what they ask.

use axum::http::HeaderMap;

use super::AppState;
use super::St;
use crate::auth::parse_basic;
use crate::auth::Action;
use crate::auth::Identity;
use crate::error::ApiError;
use crate::error::Code;
use crate::storage::now_secs;

/// Who sent the request; `Err` for credentials that are wrong (not merely absent).
pub fn identify(st: &AppState, headers: &HeaderMap, host: &str) -> Result<Identity, ApiError> {
    if !st.auth.enabled() {
        return Ok(Identity::Anonymous);
    }
    let Some(v) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return Ok(Identity::Anonymous);
    };
    if let Some((u, p)) = parse_basic(v) {
        if st.auth.check_password(&u, &p) {
            return Ok(Identity::User(u));
        }
        return Err(ApiError::new(Code::Unauthorized, "authentication required")
            .header("www-authenticate", challenge(st, host, None, None)));
    }
    if let Some(t) = v
        .strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))
    {
        if let Some(id) = st.auth.verify(t.trim(), now_secs()) {
            return Ok(id);
        }
        return Err(
            ApiError::new(Code::Unauthorized, "invalid or expired token").header(
                "www-authenticate",
                challenge(st, host, None, Some("invalid_token")),
            ),
        );
    }
    Err(
        ApiError::new(Code::Unauthorized, "unsupported authorization scheme")
            .header("www-authenticate", challenge(st, host, None, None)),
    )
}

/// [`identify`] off the async threads when a password has to be checked (bcrypt is slow on
/// purpose; wrong passwords are never cached).
pub async fn identify_async(
    st: &St,
    headers: &HeaderMap,
    host: &str,
) -> Result<Identity, ApiError> {
    let basic = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.len() > 6 && v.as_bytes()[..6].eq_ignore_ascii_case(b"basic "));
    if !basic || !st.auth.enabled() {
        return identify(st, headers, host);
    }
    let (st2, h2, host2) = (st.clone(), headers.clone(), host.to_string());
    tokio::task::spawn_blocking(move || identify(&st2, &h2, &host2))
        .await
        .map_err(ApiError::internal)?
}

/// The `Host` header, reduced to characters that are safe in a URL authority.
pub fn host_of(headers: &HeaderMap) -> String {
    let h = headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    let ok = !h.is_empty()
        && h.len() < 256
        && h.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b".:-[]".contains(&c));
    if ok {
        h.to_string()
    } else {
        "localhost".to_string()
    }
}

/// A `WWW-Authenticate: Bearer …` challenge.
pub fn challenge(st: &AppState, host: &str, scope: Option<&str>, error: Option<&str>) -> String {
    let realm = st
        .auth
        .config
        .as_ref()
        .and_then(|c| c.realm.clone())
        .unwrap_or_else(|| format!("{}://{host}/token", if st.tls { "https" } else { "http" }));
    let mut s = format!("Bearer realm=\"{realm}\",service=\"{}\"", st.auth.service);
    if let Some(sc) = scope {
        s.push_str(&format!(",scope=\"{sc}\""));
    }
    if let Some(e) = error {
        s.push_str(&format!(",error=\"{e}\""));
    }
    s
}

pub(super) fn authorize(
    st: &AppState,
    id: &Identity,
    host: &str,
    repo: &str,
    actions: &[Action],
) -> Result<(), ApiError> {
    if actions.iter().all(|a| st.auth.permits(id, repo, *a)) {
        return Ok(());
    }
    let scope = format!(
        "repository:{repo}:{}",
        actions
            .iter()
            .map(|a| a.as_str())
            .collect::<Vec<_>>()
            .join(",")
    );
    let detail = serde_json::json!([{"Type": "repository", "Name": repo,
        "Action": actions.iter().map(|a| a.as_str()).collect::<Vec<_>>()}]);
    match id {
        Identity::Anonymous => Err(ApiError::new(Code::Unauthorized, "authentication required")
            .detail(detail)
            .header("www-authenticate", challenge(st, host, Some(&scope), None))),
        Identity::User(_) => Err(ApiError::new(
            Code::Denied,
            "requested access to the resource is denied",
        )
        .detail(detail)),
        Identity::Token { sub, .. } => {
            let may = st.auth.allowed(sub.as_deref(), repo);
            if actions.iter().all(|a| may.contains(a)) {
                // The user may, the token does not say so: ask for a token with this scope.
                Err(
                    ApiError::new(Code::Unauthorized, "token does not grant this access")
                        .detail(detail)
                        .header(
                            "www-authenticate",
                            challenge(st, host, Some(&scope), Some("insufficient_scope")),
                        ),
                )
            } else {
                Err(
                    ApiError::new(Code::Denied, "requested access to the resource is denied")
                        .detail(detail),
                )
            }
        }
    }
}
