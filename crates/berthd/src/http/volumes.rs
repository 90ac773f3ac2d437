//! Volume routes: list, create, inspect, remove, prune.

use std::sync::Arc;

use axum::extract::Query;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Extension, Router};
use berth_api::volume::{CreateOptions, ListResponse, PruneReport};
use berth_api::ApiVersion;

use super::{
    blocking, decode, filters, json, json_status, no_content, AppState, Id, JsonBody, Params, St,
    Q, R,
};

/// `/volumes` routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/volumes", get(list))
        .route("/volumes/create", post(create))
        .route("/volumes/prune", post(prune))
        .route("/volumes/{name}", get(inspect).delete(remove))
}

async fn list(s: St, Query(q): Q) -> R {
    let volumes = s.engine.volumes.list_api(&filters(&q)?)?;
    Ok(json(&ListResponse {
        volumes,
        warnings: None,
    }))
}

async fn create(s: St, JsonBody(body): JsonBody) -> R {
    let o: CreateOptions = decode(&body)?;
    let engine = s.engine.clone();
    // As dockerd's volume service: a volume created without a name is anonymous (so a
    // `volume prune` of API 1.42+ removes it).
    let anonymous = o.name.is_empty();
    let v = blocking(move || {
        engine.volumes.create(
            Some(o.name.as_str()),
            &o.driver,
            o.labels.unwrap_or_default(),
            o.driver_opts.unwrap_or_default(),
            anonymous,
        )
    })
    .await?;
    Ok(json_status(
        StatusCode::CREATED,
        &s.engine.volumes.to_api(&v),
    ))
}

async fn inspect(s: St, name: Id) -> R {
    let v = s.engine.volumes.get(&name)?;
    Ok(json(&s.engine.volumes.to_api(&v)))
}

#[derive(Default, serde::Deserialize)]
#[serde(default)]
struct RemoveQuery {
    force: String,
}

async fn remove(s: St, name: Id, Params(q): Params<RemoveQuery>) -> R {
    let force = matches!(q.force.as_str(), "1" | "true");
    let engine = s.engine.clone();
    blocking(move || engine.volumes.remove(&name, force)).await?;
    no_content()
}

async fn prune(s: St, Extension(v): Extension<ApiVersion>, Query(q): Q) -> R {
    let mut f = filters(&q)?;
    // Below API 1.42 a prune removes every unused volume, not only anonymous ones.
    if v.volume_prune_all_by_default() && !f.has("all") {
        f.0.push(("all".into(), "true".into()));
    }
    let engine = s.engine.clone();
    let (volumes_deleted, space_reclaimed) = blocking(move || engine.volumes.prune(&f)).await?;
    Ok(json(&PruneReport {
        volumes_deleted,
        space_reclaimed,
    }))
}
