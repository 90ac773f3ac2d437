//! Who sent a request, challenges, and whether they may do what they ask.

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::HeaderMap;

use super::{client_ip, header, AppState, Ctx, St};
use crate::audit;
use crate::auth::{parse_basic, Action, Identity, PasswordCheck};
use crate::error::{ApiError, Code};
use crate::storage::now_secs;

/// Who sent the request; `Err` for credentials that are wrong (not merely absent), logged as
/// a denial, and `429` for a client that failed to sign in too often (bcrypt is not run then).
/// Runs bcrypt: call it off the async threads ([`identify_async`]).
pub fn identify(
    st: &AppState,
    headers: &HeaderMap,
    host: &str,
    remote: Option<SocketAddr>,
) -> Result<Identity, ApiError> {
    if !st.auth.enabled() {
        return Ok(Identity::Anonymous);
    }
    let Some(v) = header(headers, "authorization") else {
        return Ok(Identity::Anonymous);
    };
    let denied = |user: Option<&str>, e: ApiError| {
        st.audit.log(&audit::Entry {
            user,
            remote,
            action: "deny",
            kind: "credentials",
            status: Some(e.status.as_u16()),
            ..Default::default()
        });
        e
    };
    if let Some((u, p)) = parse_basic(v) {
        return match st.auth.check_password(client_ip(remote), &u, &p) {
            PasswordCheck::Valid => Ok(Identity::User(u)),
            PasswordCheck::Invalid => Err(denied(
                Some(&u),
                ApiError::new(Code::Unauthorized, "authentication required")
                    .header("www-authenticate", challenge(st, host, None, None)),
            )),
            PasswordCheck::Limited(wait) => Err(too_many_failures(wait)),
        };
    }
    if let Some(t) = v
        .strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))
    {
        if let Some(id) = st.auth.verify(t.trim(), now_secs()) {
            return Ok(id);
        }
        return Err(denied(
            None,
            ApiError::new(Code::Unauthorized, "invalid or expired token").header(
                "www-authenticate",
                challenge(st, host, None, Some("invalid_token")),
            ),
        ));
    }
    Err(denied(
        None,
        ApiError::new(Code::Unauthorized, "unsupported authorization scheme")
            .header("www-authenticate", challenge(st, host, None, None)),
    ))
}

/// What a client over its failed sign-in limit is told.
pub(super) const TOO_MANY_FAILURES: &str = "too many failed sign-in attempts from this address";

/// `429 TOOMANYREQUESTS` for a client over its failed sign-in limit.
fn too_many_failures(wait: Duration) -> ApiError {
    ApiError::new(Code::TooManyRequests, TOO_MANY_FAILURES).header("retry-after", retry_after(wait))
}

/// Whole seconds for `Retry-After` (at least 1).
pub(super) fn retry_after(wait: Duration) -> String {
    wait.as_secs_f64().ceil().max(1.0).to_string()
}

/// [`identify`] off the async threads when a password has to be checked (bcrypt is slow on
/// purpose; wrong passwords are never cached).
pub async fn identify_async(
    st: &St,
    headers: &HeaderMap,
    host: &str,
    remote: Option<SocketAddr>,
) -> Result<Identity, ApiError> {
    let basic = header(headers, "authorization")
        .is_some_and(|v| v.len() > 6 && v.as_bytes()[..6].eq_ignore_ascii_case(b"basic "));
    if !basic || !st.auth.enabled() {
        return identify(st, headers, host, remote);
    }
    let (st2, h2, host2) = (st.clone(), headers.clone(), host.to_string());
    tokio::task::spawn_blocking(move || identify(&st2, &h2, &host2, remote))
        .await
        .map_err(ApiError::internal)?
}

/// The `Host` header, reduced to characters that are safe in a URL authority.
pub fn host_of(headers: &HeaderMap) -> String {
    let h = header(headers, "host").unwrap_or("localhost");
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

/// May the request do `actions` on `repo`? A refusal (401 with a challenge for the scope, or
/// 403) is logged.
pub(super) fn authorize(
    st: &AppState,
    ctx: &Ctx,
    repo: &str,
    actions: &[Action],
) -> Result<(), ApiError> {
    if actions.iter().all(|a| st.auth.permits(&ctx.id, repo, *a)) {
        return Ok(());
    }
    let names: Vec<&str> = actions.iter().map(|a| a.as_str()).collect();
    let scope = format!("repository:{repo}:{}", names.join(","));
    let e = refusal(st, ctx, repo, &scope, &names);
    st.audit.log(&audit::Entry {
        action: "deny",
        kind: "repository",
        repository: Some(repo),
        status: Some(e.status.as_u16()),
        scope: Some(&scope),
        ..ctx.entry()
    });
    Err(e)
}

fn refusal(st: &AppState, ctx: &Ctx, repo: &str, scope: &str, actions: &[&str]) -> ApiError {
    let detail = serde_json::json!([{"Type": "repository", "Name": repo, "Action": actions}]);
    let denied = || {
        ApiError::new(Code::Denied, "requested access to the resource is denied")
            .detail(detail.clone())
    };
    match &ctx.id {
        Identity::Anonymous => ApiError::new(Code::Unauthorized, "authentication required")
            .detail(detail.clone())
            .header(
                "www-authenticate",
                challenge(st, &ctx.host, Some(scope), None),
            ),
        Identity::User(_) => denied(),
        Identity::Token { sub, .. } => {
            let may = st.auth.allowed(sub.as_deref(), repo);
            if actions
                .iter()
                .filter_map(|a| Action::parse(a))
                .all(|a| may.contains(&a))
            {
                // The user may, the token does not say so: ask for a token with this scope.
                ApiError::new(Code::Unauthorized, "token does not grant this access")
                    .detail(detail.clone())
                    .header(
                        "www-authenticate",
                        challenge(st, &ctx.host, Some(scope), Some("insufficient_scope")),
                    )
            } else {
                denied()
            }
        }
    }
}
