//! Network routes: list, inspect, create, remove, prune, connect, disconnect.

use std::sync::Arc;

use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Extension;
use axum::Router;
use berth_api::network::{
    ConnectRequest, CreateRequest, CreateResponse, DisconnectRequest, PruneReport,
};
use berth_api::ApiVersion;

use super::{
    blocking, decode, filters, json, json_status, no_content, ApiError, AppState, Id, JsonBody, St,
    Q, R,
};

/// The network routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/networks", get(list))
        // dockerd routes the trailing-slash form to the list too.
        .route("/networks/", get(list))
        .route("/networks/create", post(create))
        .route("/networks/prune", post(prune))
        .route("/networks/{id}", get(inspect).delete(remove))
        .route("/networks/{id}/connect", post(connect))
        .route("/networks/{id}/disconnect", post(disconnect))
}

async fn list(s: St, Query(q): Q) -> R {
    Ok(json(&s.engine.net.list_networks(&filters(&q)?)?))
}

async fn inspect(s: St, id: Id) -> R {
    Ok(json(&s.engine.net.inspect_network(&id)?))
}

async fn create(s: St, Extension(v): Extension<ApiVersion>, JsonBody(body): JsonBody) -> R {
    let mut req: CreateRequest = decode(&body)?;
    v.adapt_network_create(&mut req)
        .map_err(|e| ApiError::bad(e.to_string()))?;
    let net = s.engine.net.clone();
    let (id, warning) = blocking(move || net.create_network(&req)).await?;
    Ok(json_status(
        StatusCode::CREATED,
        &CreateResponse { id, warning },
    ))
}

/// The exits under way release their endpoints first (see [`crate::engine::Engine::settle_exits`]).
async fn settle_exits(s: &St) {
    let ids: Vec<String> = s.engine.net.running_ids().into_iter().collect();
    s.engine.settle_exits(&ids).await;
}

async fn remove(s: St, id: Id) -> R {
    settle_exits(&s).await;
    let net = s.engine.net.clone();
    blocking(move || net.remove_network(&id)).await?;
    no_content()
}

async fn prune(s: St, Query(q): Q) -> R {
    let f = filters(&q)?;
    settle_exits(&s).await;
    let net = s.engine.net.clone();
    let deleted = blocking(move || net.prune(&f)).await?;
    Ok(json(&PruneReport {
        networks_deleted: Some(deleted),
    }))
}

async fn connect(
    s: St,
    Extension(v): Extension<ApiVersion>,
    id: Id,
    JsonBody(body): JsonBody,
) -> R {
    let mut req: ConnectRequest = decode(&body)?;
    if let Some(ep) = req.endpoint_config.as_mut() {
        v.adapt_connect(ep);
    }
    let c = s.engine.get(&req.container)?;
    let net = s.engine.net.clone();
    blocking(move || net.connect(&c, &id, req.endpoint_config.as_ref())).await?;
    Ok(StatusCode::OK.into_response())
}

async fn disconnect(s: St, id: Id, JsonBody(body): JsonBody) -> R {
    let req: DisconnectRequest = decode(&body)?;
    let c = s.engine.get(&req.container)?;
    let net = s.engine.net.clone();
    blocking(move || net.disconnect(&c, &id)).await?;
    Ok(StatusCode::OK.into_response())
}
