//! `GET /distribution/{name}/json`: the registry's descriptor of a reference and its
//! platforms (dockerd's distribution router), with the request's `X-Registry-Auth`.

use std::sync::Arc;

use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::Router;
use berth_image::Reference;
use berth_registry::images::BackendError;
use berth_registry::RegistryError;

use super::{blocking, json, ApiError, AppState, St, R};
use crate::images;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/distribution/{*rest}", get(inspect))
}

/// dockerd's status and text for a registry failure: the registry's own error code and
/// message for an unknown repository or manifest (404), 401/403 for refused credentials (the
/// registry error codes' statuses), the pull's categories otherwise.
fn registry_error(e: RegistryError) -> ApiError {
    match e {
        RegistryError::ManifestUnknown { message, .. } => {
            ApiError::not_found(format!("manifest unknown: {message}"))
        }
        RegistryError::NameUnknown { message, .. } => {
            ApiError::not_found(format!("name unknown: {message}"))
        }
        e @ RegistryError::Unauthorized { .. } => {
            ApiError::new(StatusCode::UNAUTHORIZED, e.to_string())
        }
        e @ RegistryError::Denied { .. } => ApiError::new(StatusCode::FORBIDDEN, e.to_string()),
        e => {
            let b = BackendError::from(e);
            let status = match b.kind {
                berth_registry::images::ErrorKind::NotFound => StatusCode::NOT_FOUND,
                berth_registry::images::ErrorKind::Conflict => StatusCode::CONFLICT,
                berth_registry::images::ErrorKind::InvalidArgument => StatusCode::BAD_REQUEST,
                berth_registry::images::ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            };
            ApiError::new(status, b.message)
        }
    }
}

/// The reference of `name` as dockerd's `reference.ParseAnyReference` reads it: a full image
/// ID (64 hex digits, `sha256:` or not) has no manifest to look up.
fn parse(name: &str) -> Result<Reference, ApiError> {
    let id = name.strip_prefix("sha256:").unwrap_or(name);
    if id.len() == 64
        && id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "no manifest found for full image ID",
        ));
    }
    Reference::parse_normalized(name).map_err(|e| ApiError::bad(e.to_string()))
}

async fn inspect(s: St, Path(rest): Path<String>, headers: HeaderMap) -> R {
    let Some(name) = rest.strip_suffix("/json").filter(|n| !n.is_empty()) else {
        return Err(ApiError::not_found("page not found"));
    };
    let r = parse(name)?;
    let auth = headers
        .get("X-Registry-Auth")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let engine = s.engine.clone();
    let out = blocking(move || -> Result<_, ApiError> {
        // dockerd ignores an X-Registry-Auth it cannot decode here (as for a search).
        let (cfg, _guard) = images::registry_config(&engine, auth.as_deref(), r.domain())
            .or_else(|_| images::registry_config(&engine, None, r.domain()))?;
        let client = berth_registry::Client::new(cfg).map_err(registry_error)?;
        client.inspect_distribution(&r).map_err(registry_error)
    })
    .await?;
    Ok(json(&out))
}
