//! The gRPC services: each RPC dispatches to [`super::pods`], [`super::containers`],
//! [`super::images`], [`super::stats`], [`super::events`] or [`super::stream`]. RPCs not
//! listed here answer `Unimplemented` (checkpointing, metrics, the `Stream*` listings).

use std::sync::Arc;

use berth_cri::proto as pb;
use pb::image_service_server::ImageService;
use pb::runtime_service_server::RuntimeService;
use tonic::{Request, Response, Status};

use super::Cri;

/// The services on a [`Cri`] (a local type, as the traits are `berth-cri`'s).
#[derive(Clone)]
pub struct Service(pub Arc<Cri>);

type Answer<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl RuntimeService for Service {
    async fn version(&self, _: Request<pb::VersionRequest>) -> Answer<pb::VersionResponse> {
        Ok(Response::new(pb::VersionResponse {
            // The kubelet's API version of the answer (always "0.1.0").
            version: "0.1.0".into(),
            runtime_name: "berth".into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: berth_cri::RUNTIME_API_VERSION.into(),
        }))
    }

    async fn status(&self, req: Request<pb::StatusRequest>) -> Answer<pb::StatusResponse> {
        let cni = self.0.cni.clone();
        let net = super::blocking(move || Ok(cni.ready())).await?;
        let (net_ok, reason, message) = match &net {
            Ok(_) => (true, String::new(), String::new()),
            Err(e) => (false, "NetworkPluginNotReady".to_string(), e.to_string()),
        };
        let mut info = std::collections::HashMap::new();
        if req.into_inner().verbose {
            info.insert(
                "config".to_string(),
                serde_json::json!({
                    "cniConfDir": self.0.cni.conf_dir,
                    "cniBinDir": self.0.cni.bin_dir,
                    "network": net.as_ref().ok().map(|n| &n.name),
                    "sandboxImage": super::pods::PAUSE_IMAGE,
                })
                .to_string(),
            );
        }
        Ok(Response::new(pb::StatusResponse {
            status: Some(pb::RuntimeStatus {
                conditions: vec![
                    pb::RuntimeCondition {
                        r#type: "RuntimeReady".into(),
                        status: true,
                        ..Default::default()
                    },
                    pb::RuntimeCondition {
                        r#type: "NetworkReady".into(),
                        status: net_ok,
                        reason,
                        message,
                    },
                ],
            }),
            info,
            runtime_handlers: vec![pb::RuntimeHandler {
                name: String::new(),
                features: Some(pb::RuntimeHandlerFeatures::default()),
            }],
            features: Some(pb::RuntimeFeatures::default()),
        }))
    }

    async fn runtime_config(
        &self,
        _: Request<pb::RuntimeConfigRequest>,
    ) -> Answer<pb::RuntimeConfigResponse> {
        Ok(Response::new(pb::RuntimeConfigResponse {
            linux: Some(pb::LinuxRuntimeConfiguration {
                cgroup_driver: pb::CgroupDriver::Cgroupfs as i32,
            }),
        }))
    }

    async fn update_runtime_config(
        &self,
        _: Request<pb::UpdateRuntimeConfigRequest>,
    ) -> Answer<pb::UpdateRuntimeConfigResponse> {
        // The pod CIDR the kubelet passes is the CNI configuration's business.
        Ok(Response::new(pb::UpdateRuntimeConfigResponse {}))
    }

    async fn run_pod_sandbox(
        &self,
        req: Request<pb::RunPodSandboxRequest>,
    ) -> Answer<pb::RunPodSandboxResponse> {
        self.0
            .run_pod_sandbox(req.into_inner())
            .await
            .map(Response::new)
    }

    async fn stop_pod_sandbox(
        &self,
        req: Request<pb::StopPodSandboxRequest>,
    ) -> Answer<pb::StopPodSandboxResponse> {
        self.0
            .stop_pod_sandbox(&req.into_inner().pod_sandbox_id)
            .await?;
        Ok(Response::new(pb::StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        req: Request<pb::RemovePodSandboxRequest>,
    ) -> Answer<pb::RemovePodSandboxResponse> {
        self.0
            .remove_pod_sandbox(&req.into_inner().pod_sandbox_id)
            .await?;
        Ok(Response::new(pb::RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        req: Request<pb::PodSandboxStatusRequest>,
    ) -> Answer<pb::PodSandboxStatusResponse> {
        self.0
            .pod_sandbox_status(req.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_pod_sandbox(
        &self,
        req: Request<pb::ListPodSandboxRequest>,
    ) -> Answer<pb::ListPodSandboxResponse> {
        self.0
            .list_pod_sandbox(req.into_inner())
            .await
            .map(Response::new)
    }

    async fn create_container(
        &self,
        req: Request<pb::CreateContainerRequest>,
    ) -> Answer<pb::CreateContainerResponse> {
        self.0
            .create_container(req.into_inner())
            .await
            .map(Response::new)
    }

    async fn start_container(
        &self,
        req: Request<pb::StartContainerRequest>,
    ) -> Answer<pb::StartContainerResponse> {
        self.0
            .start_container(&req.into_inner().container_id)
            .await?;
        Ok(Response::new(pb::StartContainerResponse {}))
    }

    async fn stop_container(
        &self,
        req: Request<pb::StopContainerRequest>,
    ) -> Answer<pb::StopContainerResponse> {
        let r = req.into_inner();
        self.0.stop_container(&r.container_id, r.timeout).await?;
        Ok(Response::new(pb::StopContainerResponse {}))
    }

    async fn remove_container(
        &self,
        req: Request<pb::RemoveContainerRequest>,
    ) -> Answer<pb::RemoveContainerResponse> {
        self.0
            .remove_container(&req.into_inner().container_id)
            .await?;
        Ok(Response::new(pb::RemoveContainerResponse {}))
    }

    async fn list_containers(
        &self,
        req: Request<pb::ListContainersRequest>,
    ) -> Answer<pb::ListContainersResponse> {
        self.0
            .list_containers(req.into_inner())
            .await
            .map(Response::new)
    }

    async fn container_status(
        &self,
        req: Request<pb::ContainerStatusRequest>,
    ) -> Answer<pb::ContainerStatusResponse> {
        self.0
            .container_status(req.into_inner())
            .await
            .map(Response::new)
    }

    async fn exec_sync(&self, req: Request<pb::ExecSyncRequest>) -> Answer<pb::ExecSyncResponse> {
        self.0.exec_sync(req.into_inner()).await.map(Response::new)
    }

    async fn exec(&self, req: Request<pb::ExecRequest>) -> Answer<pb::ExecResponse> {
        let url = self.0.container_session(req.into_inner())?;
        Ok(Response::new(pb::ExecResponse { url }))
    }

    async fn attach(&self, req: Request<pb::AttachRequest>) -> Answer<pb::AttachResponse> {
        let url = self.0.container_session(req.into_inner())?;
        Ok(Response::new(pb::AttachResponse { url }))
    }

    async fn port_forward(
        &self,
        req: Request<pb::PortForwardRequest>,
    ) -> Answer<pb::PortForwardResponse> {
        self.0
            .port_forward(req.into_inner())
            .await
            .map(Response::new)
    }

    async fn update_container_resources(
        &self,
        req: Request<pb::UpdateContainerResourcesRequest>,
    ) -> Answer<pb::UpdateContainerResourcesResponse> {
        self.0.update_container_resources(req.into_inner()).await?;
        Ok(Response::new(pb::UpdateContainerResourcesResponse {}))
    }

    async fn reopen_container_log(
        &self,
        req: Request<pb::ReopenContainerLogRequest>,
    ) -> Answer<pb::ReopenContainerLogResponse> {
        self.0
            .reopen_container_log(&req.into_inner().container_id)
            .await?;
        Ok(Response::new(pb::ReopenContainerLogResponse {}))
    }

    async fn container_stats(
        &self,
        req: Request<pb::ContainerStatsRequest>,
    ) -> Answer<pb::ContainerStatsResponse> {
        self.0
            .container_stats(req.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_container_stats(
        &self,
        req: Request<pb::ListContainerStatsRequest>,
    ) -> Answer<pb::ListContainerStatsResponse> {
        self.0
            .list_container_stats(req.into_inner())
            .await
            .map(Response::new)
    }

    async fn pod_sandbox_stats(
        &self,
        req: Request<pb::PodSandboxStatsRequest>,
    ) -> Answer<pb::PodSandboxStatsResponse> {
        self.0
            .pod_sandbox_stats(req.into_inner())
            .await
            .map(Response::new)
    }

    async fn get_container_events(
        &self,
        _: Request<pb::GetEventsRequest>,
    ) -> Answer<tonic::codegen::BoxStream<pb::ContainerEventResponse>> {
        Ok(Response::new(self.0.event_stream()))
    }

    async fn list_pod_sandbox_stats(
        &self,
        req: Request<pb::ListPodSandboxStatsRequest>,
    ) -> Answer<pb::ListPodSandboxStatsResponse> {
        self.0
            .list_pod_sandbox_stats(req.into_inner())
            .await
            .map(Response::new)
    }
}

#[tonic::async_trait]
impl ImageService for Service {
    async fn list_images(
        &self,
        req: Request<pb::ListImagesRequest>,
    ) -> Answer<pb::ListImagesResponse> {
        self.0
            .list_images(req.into_inner())
            .await
            .map(Response::new)
    }

    async fn image_status(
        &self,
        req: Request<pb::ImageStatusRequest>,
    ) -> Answer<pb::ImageStatusResponse> {
        self.0
            .image_status(req.into_inner())
            .await
            .map(Response::new)
    }

    async fn pull_image(
        &self,
        req: Request<pb::PullImageRequest>,
    ) -> Answer<pb::PullImageResponse> {
        self.0.pull_image(req.into_inner()).await.map(Response::new)
    }

    async fn remove_image(
        &self,
        req: Request<pb::RemoveImageRequest>,
    ) -> Answer<pb::RemoveImageResponse> {
        self.0
            .remove_image(req.into_inner())
            .await
            .map(Response::new)
    }

    async fn image_fs_info(
        &self,
        _: Request<pb::ImageFsInfoRequest>,
    ) -> Answer<pb::ImageFsInfoResponse> {
        self.0.image_fs_info().await.map(Response::new)
    }
}
