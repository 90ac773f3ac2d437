//! Docker's token endpoint: `GET /token` with basic auth, `POST /token` password grant.

use axum::extract::Request;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use std::collections::BTreeSet;

use super::hv;
use super::json_response;
use super::q1;
use super::query_pairs;
use super::AppState;
use super::St;
use crate::auth::parse_basic;
use crate::auth::Action;
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
    json_response(
        status,
        &serde_json::json!({"error": error, "error_description": desc,
            "errors": [{"code": "UNAUTHORIZED", "message": desc}]}),
        "application/json",
    )
}

/// `GET /token?service=…&scope=…` with optional basic auth (Docker's token protocol).
pub async fn token_get(State(st): State<St>, req: Request) -> Response {
    if !st.auth.enabled() {
        return token_error(
            StatusCode::NOT_FOUND,
            "unsupported",
            "authentication is not configured",
        );
    }
    let q = query_pairs(req.uri().query());
    let user = match req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(parse_basic)
    {
        None => None,
        Some(Some((u, p))) if blocking_check(&st, &u, &p).await => Some(u),
        Some(_) => {
            let mut r = token_error(
                StatusCode::UNAUTHORIZED,
                "invalid_grant",
                "invalid username or password",
            );
            r.headers_mut().insert(
                "www-authenticate",
                hv(&format!("Basic realm=\"{}\"", st.auth.service)),
            );
            return r;
        }
    };
    let scopes: Vec<String> = q
        .iter()
        .filter(|(k, _)| k == "scope")
        .map(|(_, v)| v.clone())
        .collect();
    let access = grant(&st, user.as_deref(), &scopes);
    let now = now_secs();
    let token = st.auth.issue(user.as_deref(), &access, now);
    json_response(
        StatusCode::OK,
        &serde_json::json!({"token": token, "access_token": token, "expires_in": st.auth.ttl(),
            "issued_at": berth_image::timeutil::format_rfc3339(now as i64)}),
        "application/json",
    )
}

async fn blocking_check(st: &St, u: &str, p: &str) -> bool {
    let (st, u, p) = (st.clone(), u.to_string(), p.to_string());
    tokio::task::spawn_blocking(move || st.auth.check_password(&u, &p))
        .await
        .unwrap_or(false)
}

/// `POST /token` (OAuth2 password grant, as containerd and podman send it).
pub async fn token_post(State(st): State<St>, req: Request) -> Response {
    if !st.auth.enabled() {
        return token_error(
            StatusCode::NOT_FOUND,
            "unsupported",
            "authentication is not configured",
        );
    }
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
    if !blocking_check(&st, u, p).await {
        return token_error(
            StatusCode::UNAUTHORIZED,
            "invalid_grant",
            "invalid username or password",
        );
    }
    let scopes: Vec<String> = f
        .iter()
        .filter(|(k, _)| k == "scope")
        .map(|(_, v)| v.clone())
        .collect();
    let access = grant(&st, Some(u), &scopes);
    let now = now_secs();
    let token = st.auth.issue(Some(u), &access, now);
    json_response(
        StatusCode::OK,
        &serde_json::json!({"access_token": token, "token_type": "Bearer",
            "expires_in": st.auth.ttl(), "scope": scopes.join(" "),
            "issued_at": berth_image::timeutil::format_rfc3339(now as i64)}),
        "application/json",
    )
}
