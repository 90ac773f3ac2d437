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

/// `impl $service for Service`: the hand-written methods in the braces, plus one method for
/// each RPC that only hands over to the [`Cri`] method of the same name, either with the whole
/// request, answering what that method answers (`forward`), or with one id field of the
/// request, answering an empty response once it succeeds (`by_id`).
macro_rules! service {
    (
        impl $service:ident;
        forward { $($fwd:ident($fwd_req:ident) -> $fwd_resp:ident;)* }
        by_id { $($id:ident($id_req:ident.$field:ident) -> $id_resp:ident;)* }
        $($method:tt)*
    ) => {
        #[tonic::async_trait]
        impl $service for Service {
            $(
                async fn $fwd(&self, req: Request<pb::$fwd_req>) -> Answer<pb::$fwd_resp> {
                    self.0.$fwd(req.into_inner()).await.map(Response::new)
                }
            )*
            $(
                async fn $id(&self, req: Request<pb::$id_req>) -> Answer<pb::$id_resp> {
                    self.0.$id(&req.into_inner().$field).await?;
                    Ok(Response::new(pb::$id_resp {}))
                }
            )*
            $($method)*
        }
    };
}

service! {
    impl RuntimeService;
    forward {
        run_pod_sandbox(RunPodSandboxRequest) -> RunPodSandboxResponse;
        pod_sandbox_status(PodSandboxStatusRequest) -> PodSandboxStatusResponse;
        list_pod_sandbox(ListPodSandboxRequest) -> ListPodSandboxResponse;
        create_container(CreateContainerRequest) -> CreateContainerResponse;
        list_containers(ListContainersRequest) -> ListContainersResponse;
        container_status(ContainerStatusRequest) -> ContainerStatusResponse;
        exec_sync(ExecSyncRequest) -> ExecSyncResponse;
        port_forward(PortForwardRequest) -> PortForwardResponse;
        container_stats(ContainerStatsRequest) -> ContainerStatsResponse;
        list_container_stats(ListContainerStatsRequest) -> ListContainerStatsResponse;
        pod_sandbox_stats(PodSandboxStatsRequest) -> PodSandboxStatsResponse;
        list_pod_sandbox_stats(ListPodSandboxStatsRequest) -> ListPodSandboxStatsResponse;
    }
    by_id {
        stop_pod_sandbox(StopPodSandboxRequest.pod_sandbox_id) -> StopPodSandboxResponse;
        remove_pod_sandbox(RemovePodSandboxRequest.pod_sandbox_id) -> RemovePodSandboxResponse;
        start_container(StartContainerRequest.container_id) -> StartContainerResponse;
        remove_container(RemoveContainerRequest.container_id) -> RemoveContainerResponse;
        reopen_container_log(ReopenContainerLogRequest.container_id) -> ReopenContainerLogResponse;
    }

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

    async fn stop_container(
        &self,
        req: Request<pb::StopContainerRequest>,
    ) -> Answer<pb::StopContainerResponse> {
        let r = req.into_inner();
        self.0.stop_container(&r.container_id, r.timeout).await?;
        Ok(Response::new(pb::StopContainerResponse {}))
    }

    async fn exec(&self, req: Request<pb::ExecRequest>) -> Answer<pb::ExecResponse> {
        let url = self.0.container_session(req.into_inner())?;
        Ok(Response::new(pb::ExecResponse { url }))
    }

    async fn attach(&self, req: Request<pb::AttachRequest>) -> Answer<pb::AttachResponse> {
        let url = self.0.container_session(req.into_inner())?;
        Ok(Response::new(pb::AttachResponse { url }))
    }

    async fn update_container_resources(
        &self,
        req: Request<pb::UpdateContainerResourcesRequest>,
    ) -> Answer<pb::UpdateContainerResourcesResponse> {
        self.0.update_container_resources(req.into_inner()).await?;
        Ok(Response::new(pb::UpdateContainerResourcesResponse {}))
    }

    async fn get_container_events(
        &self,
        _: Request<pb::GetEventsRequest>,
    ) -> Answer<tonic::codegen::BoxStream<pb::ContainerEventResponse>> {
        Ok(Response::new(self.0.event_stream()))
    }
}

service! {
    impl ImageService;
    forward {
        list_images(ListImagesRequest) -> ListImagesResponse;
        image_status(ImageStatusRequest) -> ImageStatusResponse;
        pull_image(PullImageRequest) -> PullImageResponse;
        remove_image(RemoveImageRequest) -> RemoveImageResponse;
    }
    by_id {}

    async fn image_fs_info(
        &self,
        _: Request<pb::ImageFsInfoRequest>,
    ) -> Answer<pb::ImageFsInfoResponse> {
        self.0.image_fs_info().await.map(Response::new)
    }
}
