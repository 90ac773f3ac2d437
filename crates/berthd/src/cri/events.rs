//! `GetContainerEvents` (the kubelet's evented PLEG): `CONTAINER_CREATED`, `STARTED`,
//! `STOPPED` and `DELETED` of containers and sandboxes, each with the pod's sandbox status
//! and its containers' statuses at the time, as containerd 1.7+ sends them.
//!
//! The CRI's own operations announce what they did (created, started, deleted: after the
//! records are written or removed); exits, asked for or not, come from the engine's event
//! bus (`die` of an engine container labelled as a CRI object). Every stream gets every
//! event from its subscription on (a stream too slow for [`BUFFER`] events loses the oldest
//! and is told so in the daemon's log).

use std::sync::Arc;

use berth_cri::proto as pb;
use futures_util::StreamExt;
use pb::ContainerEventType;
use tokio::sync::{broadcast, watch};
use tonic::codegen::BoxStream;

use super::{Cri, KIND_LABEL, SANDBOX_LABEL};

/// Events kept for a slow stream (containerd's channel holds 1000).
const BUFFER: usize = 1000;

/// The streams' channel.
pub(crate) struct Events(broadcast::Sender<pb::ContainerEventResponse>);

impl Default for Events {
    fn default() -> Self {
        Events(broadcast::channel(BUFFER).0)
    }
}

impl Cri {
    /// Sends an event of `container_id` (a sandbox's own id for the sandbox) to every
    /// stream; nothing is built without one.
    pub(crate) async fn emit(&self, container_id: &str, sandbox_id: &str, t: ContainerEventType) {
        if self.events.0.receiver_count() == 0 {
            return;
        }
        let created_at = super::now_nanos();
        // A removed sandbox has no status any more (containerd sends none either).
        let pod_sandbox_status = self
            .pod_sandbox_status(pb::PodSandboxStatusRequest {
                pod_sandbox_id: sandbox_id.to_string(),
                verbose: false,
            })
            .await
            .ok()
            .and_then(|r| r.status);
        let mut containers_statuses = Vec::new();
        if pod_sandbox_status.is_some() {
            for c in self.store.containers() {
                if c.sandbox_id != sandbox_id {
                    continue;
                }
                if let Ok(r) = self
                    .container_status(pb::ContainerStatusRequest {
                        container_id: c.id.clone(),
                        verbose: false,
                    })
                    .await
                {
                    containers_statuses.extend(r.status);
                }
            }
            containers_statuses.sort_by_key(|s| std::cmp::Reverse(s.created_at));
        }
        let _ = self.events.0.send(pb::ContainerEventResponse {
            container_id: container_id.to_string(),
            container_event_type: t as i32,
            created_at,
            pod_sandbox_status,
            containers_statuses,
        });
    }

    /// A stream of the events from now on.
    pub(crate) fn event_stream(&self) -> BoxStream<pb::ContainerEventResponse> {
        let rx = self.events.0.subscribe();
        futures_util::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(e) => return Some((Ok(e), rx)),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!("a CRI event stream fell behind and lost {n} events")
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
        .boxed()
    }
}

/// Announces the exits of CRI containers and sandboxes (the engine's `die` events), and
/// releases the network of a sandbox removed through the Docker API (its `destroy`), until
/// `stop` changes.
pub(crate) async fn watch_exits(cri: Arc<Cri>, mut stop: watch::Receiver<bool>) {
    let (_, mut rx) = cri.engine.bus.subscribe(None, false);
    loop {
        let ev = tokio::select! {
            ev = rx.recv() => ev,
            _ = stop.changed() => return,
        };
        let e = match ev {
            Ok(e) => e,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!("CRI events: the engine's bus lost {n} events");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if e.typ != "container" {
            continue;
        }
        if e.action == "destroy" {
            if e.attributes.get(KIND_LABEL).map(String::as_str) == Some("sandbox") {
                // Off the loop: a CNI DEL takes a while.
                let cri = cri.clone();
                tokio::spawn(async move { cri.sandbox_destroyed(&e.id).await });
            }
            continue;
        }
        if e.action != "die" {
            continue;
        }
        let sandbox = match e.attributes.get(KIND_LABEL).map(String::as_str) {
            Some("sandbox") => e.id.clone(),
            Some("container") => match e.attributes.get(SANDBOX_LABEL) {
                Some(s) => s.clone(),
                None => continue,
            },
            _ => continue,
        };
        cri.emit(&e.id, &sandbox, ContainerEventType::ContainerStoppedEvent)
            .await;
    }
}
