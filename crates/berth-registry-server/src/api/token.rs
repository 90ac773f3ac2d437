//! Docker's token endpoint: `GET /token` with basic auth, `POST /token` password grant.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::access::{retry_after, TOO_MANY_FAILURES};
use super::{client_ip, header, hv, json_response, q1, query_pairs, AppState, Remote, St};
use crate::audit;
use crate::auth::{parse_basic, Action, PasswordCheck};
use crate::error::Code;
use crate::names::valid_name;
use crate::storage::now_secs;

/// Grants for `scope` strings (`repository:<name>:<actions>`, `registry:catalog:*`).
fn grant(
    st: &AppState,
    user: Option<&str>,
    scopes: &[String],
) -> Vec<(String, String, Vec<Action>)> {
    let mut out: Vec<(String, String, Vec<Action>)> = Vec::new();
    for s in scopes
        .iter()
        .flat_map(|s| s.split(' '))
        .filter(|s| !s.is_empty())
    {
        let Some((ty, rest)) = s.split_once(':') else {
            continue;
        };
        let Some((name, acts)) = rest.rsplit_once(':') else {
            continue;
        };
        if ty == "registry" && name == "catalog" {
            out.push(("registry".into(), "catalog".into(), Vec::new()));
            continue;
        }
        if ty != "repository" || !valid_name(name) {
            continue;
        }
        let may = st.auth.allowed(user, name);
        let mut want: BTreeSet<Action> = BTreeSet::new();
        for a in acts.split(',') {
            if a == "*" {
                want.extend(Action::ALL);
            } else if let Some(a) = Action::parse(a) {
                want.insert(a);
            }
        }
        let granted: Vec<Action> = want.intersection(&may).copied().collect();
        out.push(("repository".into(), name.to_string(), granted));
    }
    out
}

fn token_error(status: StatusCode, error: &str, desc: &str) -> Response {
    let code = if status == StatusCode::TOO_MANY_REQUESTS {
        Code::TooManyRequests
    } else {
        Code::Unauthorized
    };
    json_response(
        status,
        &serde_json::json!({"error": error, "error_description": desc,
            "errors": [{"code": code.as_str(), "message": desc}]}),
        "application/json",
    )
}

fn not_configured() -> Response {
    token_error(
        StatusCode::NOT_FOUND,
        "unsupported",
        "authentication is not configured",
    )
}

/// Checks a password from the token endpoint (off the async threads); a wrong one is logged.
/// `Err` is the response to send.
async fn sign_in(st: &St, remote: Option<SocketAddr>, u: &str, p: &str) -> Result<(), Response> {
    let (st2, u2, p2) = (st.clone(), u.to_string(), p.to_string());
    let check =
        tokio::task::spawn_blocking(move || st2.auth.check_password(client_ip(remote), &u2, &p2))
            .await
            .unwrap_or(PasswordCheck::Invalid);
    match check {
        PasswordCheck::Valid => Ok(()),
        PasswordCheck::Invalid => Err(invalid_credentials(st, remote, Some(u))),
        PasswordCheck::Limited(wait) => {
            let mut r = token_error(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                TOO_MANY_FAILURES,
            );
            r.headers_mut()
                .insert("retry-after", hv(&retry_after(wait)));
            Err(r)
        }
    }
}

/// `401` for wrong credentials (`user`: the name given), logged.
fn invalid_credentials(st: &AppState, remote: Option<SocketAddr>, user: Option<&str>) -> Response {
    st.audit.log(&audit::Entry {
        user,
        remote,
        action: "deny",
        kind: "credentials",
        status: Some(401),
        ..Default::default()
    });
    let mut r = token_error(
        StatusCode::UNAUTHORIZED,
        "invalid_grant",
        "invalid username or password",
    );
    r.headers_mut().insert(
        "www-authenticate",
        hv(&format!("Basic realm=\"{}\"", st.auth.service)),
    );
    r
}

/// Issues a token for `user` granting what it may of `scopes`, and logs it.
fn issue(
    st: &AppState,
    remote: Option<SocketAddr>,
    user: Option<&str>,
    scopes: &[String],
) -> (String, u64) {
    let access = grant(st, user, scopes);
    let now = now_secs();
    let token = st.auth.issue(user, &access, now);
    let granted: Vec<String> = access
        .iter()
        .map(|(ty, name, acts)| {
            let acts: Vec<&str> = if ty == "registry" {
                vec!["*"]
            } else {
                acts.iter().map(|a| a.as_str()).collect()
            };
            format!("{ty}:{name}:{}", acts.join(","))
        })
        .collect();
    st.audit.log(&audit::Entry {
        user,
        remote,
        action: "token",
        kind: "token",
        scope: Some(&granted.join(" ")),
        ..Default::default()
    });
    (token, now)
}

fn scopes_of(pairs: &[(String, String)]) -> Vec<String> {
    pairs
        .iter()
        .filter(|(k, _)| k == "scope")
        .map(|(_, v)| v.clone())
        .collect()
}

/// `GET /token?service=…&scope=…` with optional basic auth (Docker's token protocol).
pub async fn token_get(State(st): State<St>, req: Request) -> Response {
    if !st.auth.enabled() {
        return not_configured();
    }
    let remote = req.extensions().get::<Remote>().map(|r| r.0);
    let q = query_pairs(req.uri().query());
    let user = match header(req.headers(), "authorization").map(parse_basic) {
        None => None,
        Some(Some((u, p))) => match sign_in(&st, remote, &u, &p).await {
            Ok(()) => Some(u),
            Err(r) => return r,
        },
        Some(None) => return invalid_credentials(&st, remote, None),
    };
    let (token, now) = issue(&st, remote, user.as_deref(), &scopes_of(&q));
    json_response(
        StatusCode::OK,
        &serde_json::json!({"token": token, "access_token": token, "expires_in": st.auth.ttl(),
            "issued_at": berth_image::timeutil::format_rfc3339(now as i64)}),
        "application/json",
    )
}

/// `POST /token` (OAuth2 password grant, as containerd and podman send it).
pub async fn token_post(State(st): State<St>, req: Request) -> Response {
    if !st.auth.enabled() {
        return not_configured();
    }
    let remote = req.extensions().get::<Remote>().map(|r| r.0);
    let Ok(body) = axum::body::to_bytes(req.into_body(), 64 * 1024).await else {
        return token_error(StatusCode::BAD_REQUEST, "invalid_request", "body too large");
    };
    let f = query_pairs(std::str::from_utf8(&body).ok());
    if q1(&f, "grant_type") != Some("password") {
        return token_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "only the password grant is supported",
        );
    }
    let (Some(u), Some(p)) = (q1(&f, "username"), q1(&f, "password")) else {
        return token_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "username and password required",
        );
    };
    if let Err(r) = sign_in(&st, remote, u, p).await {
        return r;
    }
    let scopes = scopes_of(&f);
    let (token, now) = issue(&st, remote, Some(u), &scopes);
    json_response(
        StatusCode::OK,
        &serde_json::json!({"access_token": token, "token_type": "Bearer",
            "expires_in": st.auth.ttl(), "scope": scopes.join(" "),
            "issued_at": berth_image::timeutil::format_rfc3339(now as i64)}),
        "application/json",
    )
}
