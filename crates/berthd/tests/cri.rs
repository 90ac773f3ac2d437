//! The Kubernetes CRI (`runtime.v1`) driven directly over berthd's CRI socket with a tonic
//! client: version and status, images, and pod sandbox + container lifecycles on a CNI
//! network of the test's own (a bridge and subnet of its own, IPAM state in its temporary
//! directory), across a daemon restart; container and pod stats and the event stream.

mod common;

use std::path::Path;
use std::time::Duration;

use berth_cri::proto as pb;
use common::cri::*;
use common::*;

#[test]
fn cri_version_status_runtime_config_and_images() {
    let Some((net, d, _pods)) = cri_daemon(1) else {
        return;
    };
    rt().block_on(async {
        let (mut r, mut i) = clients(&d).await;
        let v = r
            .version(pb::VersionRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(v.runtime_name, "berth");
        assert_eq!(v.runtime_api_version, "v1");
        assert!(!v.runtime_version.is_empty());

        let conditions = |s: pb::StatusResponse| -> Vec<(String, bool, String)> {
            s.status
                .unwrap()
                .conditions
                .into_iter()
                .map(|c| (c.r#type, c.status, c.reason))
                .collect()
        };
        let s = r
            .status(pb::StatusRequest { verbose: true })
            .await
            .unwrap()
            .into_inner();
        assert!(s.info["config"].contains(&net.bridge), "{:?}", s.info);
        assert_eq!(
            conditions(s),
            vec![
                ("RuntimeReady".into(), true, String::new()),
                ("NetworkReady".into(), true, String::new())
            ]
        );
        // Without a configuration the network is not ready, and says why.
        let conf = net.conf_dir().join("10-test.conflist");
        let saved = std::fs::read(&conf).unwrap();
        std::fs::remove_file(&conf).unwrap();
        let s = r
            .status(pb::StatusRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            conditions(s)[1],
            ("NetworkReady".into(), false, "NetworkPluginNotReady".into())
        );
        std::fs::write(&conf, saved).unwrap();

        let c = r
            .runtime_config(pb::RuntimeConfigRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            c.linux.unwrap().cgroup_driver,
            pb::CgroupDriver::Cgroupfs as i32
        );

        // Images: the store's, one namespace with the Docker API's.
        let list = i
            .list_images(pb::ListImagesRequest::default())
            .await
            .unwrap()
            .into_inner()
            .images;
        let bb = list
            .iter()
            .find(|im| {
                im.repo_tags
                    .iter()
                    .any(|t| t == "docker.io/library/busybox:latest")
            })
            .unwrap_or_else(|| panic!("{list:?}"));
        assert!(bb.id.starts_with("sha256:") && bb.size > 0, "{bb:?}");
        let spec = |name: &str| {
            Some(pb::ImageSpec {
                image: name.into(),
                ..Default::default()
            })
        };
        let st = image_status(&mut i, spec("busybox"), false).await;
        assert_eq!(st.image.unwrap().id, bb.id);
        let missing = image_status(&mut i, spec("no-such-image:1"), false).await;
        assert!(missing.image.is_none());
        let filtered = i
            .list_images(pb::ListImagesRequest {
                filter: Some(pb::ImageFilter {
                    image: Some(pb::ImageSpec {
                        image: bb.id.clone(),
                        ..Default::default()
                    }),
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .images;
        assert_eq!(filtered.len(), 1);
        let fs = i
            .image_fs_info(pb::ImageFsInfoRequest {})
            .await
            .unwrap()
            .into_inner();
        let u = &fs.image_filesystems[0];
        assert!(u.used_bytes.as_ref().unwrap().value > 0, "{u:?}");
        assert!(u.inodes_used.as_ref().unwrap().value > 0, "{u:?}");
        // Removing what is not there succeeds; a bad name is refused.
        i.remove_image(pb::RemoveImageRequest {
            image: Some(pb::ImageSpec {
                image: "no-such-image:1".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
        let e = i
            .pull_image(pb::PullImageRequest {
                image: Some(pb::ImageSpec {
                    image: "Bad/Name".into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        // Streaming requests are checked before a URL is handed out (cri_stream.rs has the rest).
        let e = r.exec(pb::ExecRequest::default()).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("container_id"), "{e:?}");
    });
    finish(d);
}

#[test]
fn cri_pull_with_the_requests_credentials_and_remove() {
    require_root!(DOCKER_REGISTRY);
    let reg = DockerRegistry::with_htpasswd();
    let d = Daemon::new();
    let name = format!("{}/cri/bb:1", reg.host());
    d.docker(&[
        "login",
        &reg.host(),
        "-u",
        berth_testkit::registry::USER,
        "-p",
        berth_testkit::registry::PASS,
    ])
    .ok();
    d.docker(&["tag", "busybox", &name]).ok();
    d.docker(&["push", &name]).ok();
    d.docker(&["rmi", &name]).ok();
    d.docker(&["logout", &reg.host()]).ok();
    rt().block_on(async {
        let (_, mut i) = clients(&d).await;
        let spec = Some(pb::ImageSpec {
            image: name.clone(),
            ..Default::default()
        });
        let e = i
            .pull_image(pb::PullImageRequest {
                image: spec.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert!(
            e.message().to_lowercase().contains("auth"),
            "without credentials: {e:?}"
        );
        let pulled = i
            .pull_image(pb::PullImageRequest {
                image: spec.clone(),
                auth: Some(pb::AuthConfig {
                    username: berth_testkit::registry::USER.into(),
                    password: berth_testkit::registry::PASS.into(),
                    ..Default::default()
                }),
                sandbox_config: None,
            })
            .await
            .unwrap()
            .into_inner();
        let st = image_status(&mut i, spec.clone(), true).await;
        let img = st.image.unwrap();
        assert_eq!(img.id, pulled.image_ref);
        assert!(img.repo_tags.contains(&name), "{img:?}");
        assert!(st.info["imageSpec"].contains("rootfs"), "{:?}", st.info);
        // The CRI removes the image, every name of it included.
        i.remove_image(pb::RemoveImageRequest {
            image: spec.clone(),
        })
        .await
        .unwrap();
        let st = image_status(&mut i, spec, false).await;
        assert!(st.image.is_none());
    });
    let out = d.docker(&["images", "-q"]).ok().stdout;
    assert!(out.trim().is_empty(), "{out}");
    finish(d);
}

async fn exec(r: &mut Runtime, id: &str, cmd: &[&str], timeout: i64) -> (String, String, i32) {
    let x = try_exec_sync(r, id, cmd, timeout)
        .await
        .unwrap_or_else(|e| panic!("{cmd:?}: {e:?}"));
    (
        String::from_utf8_lossy(&x.stdout).into_owned(),
        String::from_utf8_lossy(&x.stderr).into_owned(),
        x.exit_code,
    )
}

#[test]
fn cri_pod_and_container_lifecycle_on_cni_across_a_restart() {
    let Some((net, mut d, _pods)) = cri_daemon(2) else {
        return;
    };
    let (uid, logs) = pod_uid_and_logs(&d);
    let ready = pb::PodSandboxState::SandboxReady as i32;
    let notready = pb::PodSandboxState::SandboxNotready as i32;
    let runtime = rt();
    let (sid, cid, ip) = runtime.block_on(async {
        let (mut r, _) = clients(&d).await;
        let cfg = sandbox_config(&d, &uid, &logs);
        let sid = r
            .run_pod_sandbox(pb::RunPodSandboxRequest {
                config: Some(cfg.clone()),
                runtime_handler: String::new(),
            })
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{e:?}\n{}",
                    std::fs::read_to_string(d.path("berthd.log")).unwrap_or_default()
                )
            })
            .into_inner()
            .pod_sandbox_id;
        let (state, ip) = sandbox_state(&mut r, &sid).await;
        assert_eq!(state, ready);
        assert!(ip.starts_with(&net.subnet_prefix), "{ip}");
        assert_eq!(net.leases(), vec![ip.clone()]);
        // The same pod again is refused.
        let again = r
            .run_pod_sandbox(pb::RunPodSandboxRequest {
                config: Some(cfg.clone()),
                runtime_handler: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(again.code(), tonic::Code::AlreadyExists, "{again:?}");
        let listed = r
            .list_pod_sandbox(pb::ListPodSandboxRequest {
                filter: Some(pb::PodSandboxFilter {
                    label_selector: [("app".to_string(), "web".to_string())].into(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .items;
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, sid);
        assert_eq!(listed[0].annotations["note"], "x");

        let ccfg = pb::ContainerConfig {
            metadata: Some(pb::ContainerMetadata {
                name: "app".into(),
                attempt: 0,
            }),
            image: Some(pb::ImageSpec {
                image: "busybox".into(),
                ..Default::default()
            }),
            command: vec!["sh".into(), "-c".into()],
            // What is written into /tmp/f is output too (for the log's rotation).
            args: vec![
                "echo hello $GREETING; echo oops >&2; mkfifo /tmp/f; while :; do cat /tmp/f; done"
                    .into(),
            ],
            envs: vec![pb::KeyValue {
                key: "GREETING".into(),
                value: b"pod".to_vec(),
            }],
            working_dir: "/tmp".into(),
            log_path: "app/0.log".into(),
            labels: [("tier".to_string(), "front".to_string())].into(),
            ..Default::default()
        };
        let cid = create_container(&mut r, &sid, &cfg, ccfg).await;
        let st = container_state(&mut r, &cid).await;
        assert_eq!(st.state, pb::ContainerState::ContainerCreated as i32);
        start_container(&mut r, &cid).await;
        let st = container_state(&mut r, &cid).await;
        assert_eq!(st.state, pb::ContainerState::ContainerRunning as i32);
        assert!(
            st.started_at > 0 && st.image_ref.starts_with("sha256:"),
            "{st:?}"
        );
        assert_eq!(st.log_path, logs.join("app/0.log").display().to_string());

        // The pod's namespaces, hostname and DNS, as the container sees them.
        let (out, _, code) = exec(&mut r, &cid, &["hostname"], 10).await;
        assert_eq!((out.trim(), code), ("web-pod", 0));
        let (out, _, _) = exec(&mut r, &cid, &["cat", "/etc/resolv.conf"], 10).await;
        assert!(
            out.contains("nameserver 10.96.0.10")
                && out.contains("search default.svc.cluster.local")
                && out.contains("ndots:5"),
            "{out}"
        );
        let (out, _, _) = exec(&mut r, &cid, &["ip", "-4", "addr", "show", "eth0"], 10).await;
        assert!(out.contains(&format!("inet {ip}/28")), "{out}");
        let (out, _, _) = exec(
            &mut r,
            &cid,
            &["cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start"],
            10,
        )
        .await;
        assert_eq!(out.trim(), "80");
        let (out, _, _) = exec(&mut r, &cid, &["pwd"], 10).await;
        assert_eq!(out.trim(), "/tmp");
        let (out, err, code) = exec(
            &mut r,
            &cid,
            &["sh", "-c", "echo o; echo e >&2; exit 3"],
            10,
        )
        .await;
        assert_eq!((out.as_str(), err.as_str(), code), ("o\n", "e\n", 3));
        // A command past its timeout is killed and reported as such.
        let e = try_exec_sync(&mut r, &cid, &["sleep", "30"], 1)
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::DeadlineExceeded, "{e:?}");

        // The log, in the CRI format at the kubelet's path.
        let log = logs.join("app/0.log");
        assert!(
            wait_until(Duration::from_secs(10), || std::fs::read_to_string(&log)
                .is_ok_and(|t| t.lines().count() >= 2)),
            "no log at {}",
            log.display()
        );
        let text = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let fields = |l: &str| l.splitn(4, ' ').map(String::from).collect::<Vec<_>>();
        let mut seen: Vec<(String, String, String)> = lines
            .iter()
            .map(|l| {
                let f = fields(l);
                assert!(f[0].ends_with('Z') && f[0].contains('T'), "{l}");
                (f[1].clone(), f[2].clone(), f[3].clone())
            })
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            vec![
                ("stderr".into(), "F".into(), "oops".into()),
                ("stdout".into(), "F".into(), "hello pod".into())
            ]
        );

        // The kubelet's rotation: rename, reopen, later output in the new file.
        let rotated = logs.join("app/0.log.20260101-000000");
        std::fs::rename(&log, &rotated).unwrap();
        r.reopen_container_log(pb::ReopenContainerLogRequest {
            container_id: cid.clone(),
        })
        .await
        .unwrap();
        exec(
            &mut r,
            &cid,
            &["sh", "-c", "echo after-rotation > /tmp/f"],
            10,
        )
        .await;
        assert!(
            wait_until(Duration::from_secs(10), || std::fs::read_to_string(&log)
                .is_ok_and(|t| t.contains(" stdout F after-rotation"))),
            "{:?}",
            std::fs::read_to_string(&log)
        );
        assert!(!std::fs::read_to_string(&rotated)
            .unwrap()
            .contains("after-rotation"));

        let running = r
            .list_containers(pb::ListContainersRequest {
                filter: Some(pb::ContainerFilter {
                    pod_sandbox_id: sid.clone(),
                    state: Some(pb::ContainerStateValue {
                        state: pb::ContainerState::ContainerRunning as i32,
                    }),
                    label_selector: [("tier".to_string(), "front".to_string())].into(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .containers;
        assert_eq!(running.len(), 1);
        assert_eq!(running[0].id, cid);
        (sid, cid, ip)
    });

    // An engine container of the CRI's without a CRI record (a create that a crash cut
    // short, or a record that a power loss took) is removed when berthd starts again.
    let orphan = format!("k8s_orphan_{}", berth_testkit::unique_id());
    d.docker(&[
        "create",
        "--name",
        &orphan,
        "--label",
        "io.berth.cri.kind=sandbox",
        concat!("localhost/berth-pause:", env!("CARGO_PKG_VERSION")),
    ])
    .ok();
    // berthd restarts with the pod running: the kubelet's view is the same.
    d.restart();
    runtime.block_on(async {
        let (mut r, _) = clients(&d).await;
        assert_eq!(sandbox_state(&mut r, &sid).await, (ready, ip.clone()));
        let left = d.docker(&["ps", "-aq", "--filter", &format!("name={orphan}")]);
        assert_eq!(left.ok().stdout.trim(), "", "the orphan is still there");
        let st = container_state(&mut r, &cid).await;
        assert_eq!(st.state, pb::ContainerState::ContainerRunning as i32);
        let (out, _, _) = exec(&mut r, &cid, &["hostname"], 10).await;
        assert_eq!(out.trim(), "web-pod");

        stop_container(&mut r, &cid, 1).await;
        let st = container_state(&mut r, &cid).await;
        assert_eq!(st.state, pb::ContainerState::ContainerExited as i32);
        assert!(st.finished_at >= st.started_at, "{st:?}");
        // SIGTERM, or SIGKILL after the timeout.
        assert!(
            [137, 143].contains(&st.exit_code) && st.reason == "Error",
            "{st:?}"
        );
        let none = r
            .list_containers(pb::ListContainersRequest {
                filter: Some(pb::ContainerFilter {
                    state: Some(pb::ContainerStateValue {
                        state: pb::ContainerState::ContainerRunning as i32,
                    }),
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .containers;
        assert!(none.is_empty(), "{none:?}");

        // Stop: NOTREADY, the address released, the IP kept in the status.
        stop_pod(&mut r, &sid).await;
        assert_eq!(sandbox_state(&mut r, &sid).await, (notready, ip.clone()));
        assert!(net.leases().is_empty(), "{:?}", net.leases());
        // Stopping again is fine; so is removing twice.
        stop_pod(&mut r, &sid).await;
        for _ in 0..2 {
            remove_pod(&mut r, &sid).await;
        }
        let e = try_sandbox_status(&mut r, &sid).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound);
        let left = list_containers(&mut r).await;
        assert!(left.is_empty(), "{left:?}");
    });
    let out = d.docker(&["ps", "-aq"]).ok().stdout;
    assert!(out.trim().is_empty(), "{out}");
    finish(d);
}

#[test]
fn cri_pods_removed_running_or_stopped_dead_release_their_network() {
    let Some((net, d, _pods)) = cri_daemon(3) else {
        return;
    };
    let (uid, logs) = pod_uid_and_logs(&d);
    rt().block_on(async {
        let (mut r, _) = clients(&d).await;
        let sid = run_pod(&mut r, &sandbox_config(&d, &uid, &logs)).await;
        assert_eq!(net.leases().len(), 1);
        // The kubelet may remove without stopping first.
        remove_pod(&mut r, &sid).await;
        assert!(net.leases().is_empty(), "{:?}", net.leases());
        let items = list_pods(&mut r).await;
        assert!(items.is_empty(), "{items:?}");
        // A pod whose pause process died is NOTREADY; stopping it still releases its address.
        let sid = run_pod(&mut r, &sandbox_config(&d, &uid, &logs)).await;
        let pid: i32 = d.inspect("{{.State.Pid}}", &sid).trim().parse().unwrap();
        assert!(pid > 0);
        // SAFETY: kill(2) with a pid and a signal number.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        assert!(
            wait_until(Duration::from_secs(10), || d
                .inspect("{{.State.Running}}", &sid)
                .trim()
                == "false"),
            "the pause process did not die"
        );
        let (state, _) = sandbox_state(&mut r, &sid).await;
        assert_eq!(state, pb::PodSandboxState::SandboxNotready as i32);
        assert_eq!(net.leases().len(), 1);
        stop_pod(&mut r, &sid).await;
        assert!(net.leases().is_empty(), "{:?}", net.leases());
        remove_pod(&mut r, &sid).await;
        // An unknown runtime handler is refused, and leaves nothing.
        let e = r
            .run_pod_sandbox(pb::RunPodSandboxRequest {
                config: Some(sandbox_config(&d, &uid, &logs)),
                runtime_handler: "kata".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
    });
    finish(d);
}

fn nat_rules() -> String {
    let o = std::process::Command::new("iptables")
        .args(["-t", "nat", "-S"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn cri_port_mapping_shared_pid_namespace_and_security_context() {
    require_root!("iptables");
    let Some((net, d, _pods)) = cri_daemon(4) else {
        return;
    };
    let (uid, logs) = pod_uid_and_logs(&d);
    let port = free_port();
    let gateway = format!("{}{}", net.subnet_prefix, 4 * 16 + 1);
    rt().block_on(async {
        let (mut r, _) = clients(&d).await;
        let mut cfg = sandbox_config(&d, &uid, &logs);
        cfg.port_mappings = vec![pb::PortMapping {
            protocol: pb::Protocol::Tcp as i32,
            container_port: 8080,
            host_port: port as i32,
            host_ip: String::new(),
        }];
        let linux = cfg.linux.get_or_insert_with(Default::default);
        linux.security_context = Some(pb::LinuxSandboxSecurityContext {
            namespace_options: Some(pb::NamespaceOption {
                pid: pb::NamespaceMode::Pod as i32,
                ..Default::default()
            }),
            ..Default::default()
        });
        let sid = run_pod(&mut r, &cfg).await;
        let (_, ip) = sandbox_state(&mut r, &sid).await;
        assert!(nat_rules().contains(&format!("--dport {port}")), "{}", nat_rules());

        let mut web = busybox_container(
            "web",
            "mkdir -p /tmp/www && echo hello-from-the-pod > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www",
        );
        web.linux = Some(pb::LinuxContainerConfig {
            security_context: Some(pb::LinuxContainerSecurityContext {
                namespace_options: Some(pb::NamespaceOption {
                    pid: pb::NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        let web = run_container(&mut r, &sid, &cfg, web).await;
        let mut locked = busybox_container("locked", "exec sleep 1000");
        locked.linux = Some(pb::LinuxContainerConfig {
            resources: Some(pb::LinuxContainerResources {
                memory_limit_in_bytes: 64 << 20,
                cpu_shares: 256,
                ..Default::default()
            }),
            security_context: Some(pb::LinuxContainerSecurityContext {
                run_as_user: Some(pb::Int64Value { value: 1000 }),
                run_as_group: Some(pb::Int64Value { value: 1000 }),
                supplemental_groups: vec![2000],
                readonly_rootfs: true,
                capabilities: Some(pb::Capability {
                    drop_capabilities: vec!["ALL".into()],
                    ..Default::default()
                }),
                namespace_options: Some(pb::NamespaceOption {
                    pid: pb::NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
        });
        let locked = run_container(&mut r, &sid, &cfg, locked).await;

        // The published port reaches the pod (DNAT of locally sent traffic to the host).
        let body = {
            let mut got = String::new();
            for _ in 0..50 {
                use std::io::{Read, Write};
                if let Ok(mut s) = std::net::TcpStream::connect((gateway.as_str(), port)) {
                    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
                    let _ = s.read_to_string(&mut got);
                    if got.contains("hello-from-the-pod") {
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            got
        };
        assert!(body.contains("hello-from-the-pod"), "{body:?} via {gateway}:{port} (pod {ip})");

        // One PID namespace for the pod: the pause process is its PID 1.
        let (out, _, _) = exec(&mut r, &locked, &["ps", "-o", "pid,comm"], 10).await;
        assert!(
            out.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["1", "pause"]),
            "{out}"
        );
        assert!(out.contains("httpd"), "{out}");
        // The security context: user, groups, read-only root, no capabilities.
        let (out, _, _) = exec(&mut r, &locked, &["id"], 10).await;
        assert!(
            out.starts_with("uid=1000 gid=1000") && out.contains("2000"),
            "{out}"
        );
        let (_, err, code) = exec(&mut r, &locked, &["touch", "/x"], 10).await;
        assert_ne!(code, 0, "{err}");
        let (out, _, _) = exec(&mut r, &locked, &["grep", "CapEff", "/proc/self/status"], 10).await;
        assert!(out.trim().ends_with("0000000000000000"), "{out}");
        let (out, _, _) = exec(&mut r, &web, &["id", "-u"], 10).await;
        assert_eq!(out.trim(), "0");
        // Resources: at create, then updated.
        let limits = || {
            d.inspect("{{.HostConfig.Memory}} {{.HostConfig.CpuShares}}", &locked)
                .trim()
                .to_string()
        };
        assert_eq!(limits(), format!("{} 256", 64 << 20));
        r.update_container_resources(pb::UpdateContainerResourcesRequest {
            container_id: locked.clone(),
            linux: Some(pb::LinuxContainerResources {
                memory_limit_in_bytes: 96 << 20,
                cpu_shares: 512,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
        assert_eq!(limits(), format!("{} 512", 96 << 20));

        remove_pod(&mut r, &sid).await;
        assert!(!nat_rules().contains(&format!("--dport {port}")), "{}", nat_rules());
        assert!(!nat_rules().contains(&ip), "{}", nat_rules());
        assert!(net.leases().is_empty());
    });
    // (The plugin's idle shared chains go with the last test network: `CniNet`.)
    finish(d);
}

#[test]
fn crictl_runp_create_start_exec_logs_rmp() {
    let Some((net, d, _pods, crictl)) = crictl_daemon(5) else {
        return;
    };
    let crictl = |args: &[&str]| crictl.run(args);
    let uid = format!("uid-{}", berth_testkit::unique_id());
    let pod = serde_json::json!({
        "metadata": {"name": "crictl-pod", "namespace": "default", "uid": uid, "attempt": 1},
        "hostname": "crictl-pod",
        "log_directory": d.path("pod-logs"),
        "linux": {"cgroup_parent": format!("{}/pod{uid}", d.cgroup_parent)}
    });
    let ctr = serde_json::json!({
        "metadata": {"name": "hello"},
        "image": {"image": "busybox"},
        "command": ["sh", "-c", "echo hello from crictl; exec sleep 1000"],
        "log_path": "hello.log"
    });
    std::fs::write(d.path("pod.json"), pod.to_string()).unwrap();
    std::fs::write(d.path("ctr.json"), ctr.to_string()).unwrap();
    let v = crictl(&["version"]).ok().stdout;
    assert!(
        v.contains("RuntimeName:  berth") && v.contains("RuntimeApiVersion:  v1"),
        "{v}"
    );
    let pod_json = d.path("pod.json").display().to_string();
    let ctr_json = d.path("ctr.json").display().to_string();
    let sid = crictl(&["runp", &pod_json]).ok().stdout.trim().to_string();
    let pods = crictl(&["pods", "-q"]).ok().stdout;
    assert_eq!(pods.trim(), sid);
    let cid = crictl(&["create", &sid, &ctr_json, &pod_json])
        .ok()
        .stdout
        .trim()
        .to_string();
    crictl(&["start", &cid]).ok();
    let out = crictl(&["exec", "-s", &cid, "hostname"]).ok().stdout;
    assert_eq!(out.trim(), "crictl-pod");
    assert!(
        wait_until(Duration::from_secs(10), || crictl(&["logs", &cid])
            .stdout
            .contains("hello from crictl")),
        "{:?}",
        crictl(&["logs", &cid])
    );
    let ps = crictl(&["ps", "-q"]).ok().stdout;
    assert_eq!(ps.trim(), cid);
    let inspect = crictl(&["inspectp", &sid]).ok().stdout;
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(v["status"]["state"], "SANDBOX_READY", "{v}");
    assert!(
        v["status"]["network"]["ip"]
            .as_str()
            .is_some_and(|ip| ip.starts_with(&net.subnet_prefix)),
        "{v}"
    );
    let images = crictl(&["images"]).ok().stdout;
    assert!(images.contains("docker.io/library/busybox"), "{images}");
    let pinned = crictl(&["images", "-o", "json"]).ok().stdout;
    let v: serde_json::Value = serde_json::from_str(&pinned).unwrap();
    let pause = v["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| {
            i["repoTags"][0]
                .as_str()
                .is_some_and(|t| t.contains("berth-pause"))
        })
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!(pause["pinned"], true, "{pause}");
    crictl(&["rmp", "-f", &sid]).ok();
    assert!(crictl(&["pods", "-q"]).ok().stdout.trim().is_empty());
    assert!(crictl(&["ps", "-aq"]).ok().stdout.trim().is_empty());
    assert!(net.leases().is_empty());
    finish(d);
}

#[test]
fn cri_host_network_and_ipc_pod() {
    let Some((net, d, _pods)) = cri_daemon(6) else {
        return;
    };
    let (uid, logs) = pod_uid_and_logs(&d);
    rt().block_on(async {
        let (mut r, _) = clients(&d).await;
        let mut cfg = sandbox_config(&d, &uid, &logs);
        let linux = cfg.linux.get_or_insert_with(Default::default);
        linux.sysctls.clear();
        // The host's IPC, also where the host has no /dev/mqueue mounted (some containers
        // running the tests): the containers then mount their own mqueue file system.
        linux.security_context = Some(pb::LinuxSandboxSecurityContext {
            namespace_options: Some(pb::NamespaceOption {
                network: pb::NamespaceMode::Node as i32,
                ipc: pb::NamespaceMode::Node as i32,
                ..Default::default()
            }),
            ..Default::default()
        });
        let sid = run_pod(&mut r, &cfg).await;
        // No CNI for a host-network pod, and no address of its own.
        assert_eq!(
            sandbox_state(&mut r, &sid).await,
            (pb::PodSandboxState::SandboxReady as i32, String::new())
        );
        assert!(net.leases().is_empty());
        let c = run_container(
            &mut r,
            &sid,
            &cfg,
            busybox_container("host", "exec sleep 1000"),
        )
        .await;
        let host_ns = |ns: &str| {
            std::fs::read_link(format!("/proc/self/ns/{ns}"))
                .unwrap()
                .display()
                .to_string()
        };
        for ns in ["net", "ipc"] {
            let (out, _, _) = exec(
                &mut r,
                &c,
                &["readlink", &format!("/proc/self/ns/{ns}")],
                10,
            )
            .await;
            assert_eq!(out.trim(), host_ns(ns), "{ns}");
        }
        let (out, _, _) = exec(&mut r, &c, &["readlink", "/proc/self/ns/uts"], 10).await;
        assert_ne!(
            out.trim(),
            host_ns("uts"),
            "the UTS namespace stays the pod's"
        );
        remove_pod(&mut r, &sid).await;
    });
    finish(d);
}

/// The next event of a `GetContainerEvents` stream (within 20 s).
async fn next_event(
    s: &mut tonic::Streaming<pb::ContainerEventResponse>,
) -> pb::ContainerEventResponse {
    tokio::time::timeout(Duration::from_secs(20), s.message())
        .await
        .expect("no event within 20 s")
        .unwrap()
        .expect("the event stream ended")
}

/// An event's (container id, type, pod state, container states).
type EventSummary = (String, i32, Option<i32>, Vec<(String, i32)>);

/// The next event's [`EventSummary`].
async fn next_summary(s: &mut tonic::Streaming<pb::ContainerEventResponse>) -> EventSummary {
    event_summary(&next_event(s).await)
}

/// The [`EventSummary`] of event `ev` of container `id`, in state `state`, of a ready pod.
fn ready_pods_container_event(
    id: &str,
    ev: pb::ContainerEventType,
    state: pb::ContainerState,
) -> EventSummary {
    (
        id.to_string(),
        ev as i32,
        Some(pb::PodSandboxState::SandboxReady as i32),
        vec![(id.to_string(), state as i32)],
    )
}

fn event_summary(e: &pb::ContainerEventResponse) -> EventSummary {
    (
        e.container_id.clone(),
        e.container_event_type,
        e.pod_sandbox_status.as_ref().map(|p| p.state),
        e.containers_statuses
            .iter()
            .map(|c| (c.id.clone(), c.state))
            .collect(),
    )
}

async fn container_stats(r: &mut Runtime, id: &str) -> pb::ContainerStats {
    r.container_stats(pb::ContainerStatsRequest {
        container_id: id.into(),
    })
    .await
    .unwrap()
    .into_inner()
    .stats
    .unwrap()
}

fn value(v: &Option<pb::UInt64Value>) -> u64 {
    v.as_ref()
        .map(|v| v.value)
        .unwrap_or_else(|| panic!("no value"))
}

#[test]
fn cri_stats_and_container_events() {
    use pb::ContainerEventType as Ev;
    use pb::ContainerState as Cs;
    let Some((net, d, _pods)) = cri_daemon(7) else {
        return;
    };
    let (uid, logs) = pod_uid_and_logs(&d);
    let gateway = format!("{}{}", net.subnet_prefix, 7 * 16 + 1);
    rt().block_on(async {
        let (mut r, mut i) = clients(&d).await;
        let mut events = r
            .clone()
            .get_container_events(pb::GetEventsRequest {})
            .await
            .unwrap()
            .into_inner();
        let cfg = sandbox_config(&d, &uid, &logs);
        let sid = run_pod(&mut r, &cfg).await;
        let e = next_event(&mut events).await;
        let ready = Some(pb::PodSandboxState::SandboxReady as i32);
        assert_eq!(
            event_summary(&e),
            (sid.clone(), Ev::ContainerStartedEvent as i32, ready, vec![])
        );
        let ip = e.pod_sandbox_status.unwrap().network.unwrap().ip;
        assert!(ip.starts_with(&net.subnet_prefix), "{ip}");
        assert!(e.created_at > 0);

        // A group without a user is refused (as containerd does), and announces nothing.
        let mut grouped = busybox_container("grouped", "true");
        grouped.linux = Some(pb::LinuxContainerConfig {
            security_context: Some(pb::LinuxContainerSecurityContext {
                run_as_group: Some(pb::Int64Value { value: 5 }),
                ..Default::default()
            }),
            ..Default::default()
        });
        let e = try_create_container(&mut r, &sid, &cfg, grouped)
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");

        // A busy container that wrote 2 MiB into its writable layer.
        let mut config = busybox_container(
            "busy",
            "dd if=/dev/zero of=/blob bs=1024 count=2048 && touch /done; while :; do :; done",
        );
        config.labels = [("tier".to_string(), "cpu".to_string())].into();
        let cid = create_container(&mut r, &sid, &cfg, config).await;
        assert_eq!(
            next_summary(&mut events).await,
            ready_pods_container_event(&cid, Ev::ContainerCreatedEvent, Cs::ContainerCreated)
        );
        // Not running: attributes and the writable layer, no CPU or memory.
        let st = container_stats(&mut r, &cid).await;
        assert!(st.cpu.is_none() && st.memory.is_none(), "{st:?}");
        assert_eq!(st.attributes.as_ref().unwrap().labels["tier"], "cpu");
        start_container(&mut r, &cid).await;
        assert_eq!(
            next_summary(&mut events).await,
            ready_pods_container_event(&cid, Ev::ContainerStartedEvent, Cs::ContainerRunning)
        );
        for _ in 0..100 {
            if exec(&mut r, &cid, &["test", "-e", "/done"], 5).await.2 == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let first = container_stats(&mut r, &cid).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let st = container_stats(&mut r, &cid).await;
        let a = st.attributes.as_ref().unwrap();
        assert_eq!(
            (a.id.as_str(), a.metadata.as_ref().unwrap().name.as_str()),
            (cid.as_str(), "busy")
        );
        let cpu = st.cpu.as_ref().unwrap();
        let used = value(&cpu.usage_core_nano_seconds);
        assert!(used > value(&first.cpu.as_ref().unwrap().usage_core_nano_seconds));
        // The busy loop uses a good part of a core between the two samples.
        let cores = value(&cpu.usage_nano_cores);
        assert!(cores > 50_000_000 && cores < 3_000_000_000, "{cores}");
        let mem = st.memory.as_ref().unwrap();
        let ws = value(&mem.working_set_bytes);
        assert!(ws > 0 && ws <= value(&mem.usage_bytes), "{mem:?}");
        assert!(value(&mem.page_faults) > 0, "{mem:?}");
        let wl = st.writable_layer.as_ref().unwrap();
        assert!(value(&wl.used_bytes) >= 2 << 20, "{wl:?}");
        assert!(value(&wl.inodes_used) >= 2, "{wl:?}");
        let fs = i
            .image_fs_info(pb::ImageFsInfoRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(wl.fs_id, fs.image_filesystems[0].fs_id);

        // Listing, with each filter.
        let lister = r.clone();
        let list = |f: pb::ContainerStatsFilter| {
            let mut r = lister.clone();
            async move {
                r.list_container_stats(pb::ListContainerStatsRequest { filter: Some(f) })
                    .await
                    .unwrap()
                    .into_inner()
                    .stats
                    .into_iter()
                    .map(|s| s.attributes.unwrap().id)
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(list(Default::default()).await, vec![cid.clone()]);
        let by_pod = pb::ContainerStatsFilter {
            pod_sandbox_id: sid.clone(),
            ..Default::default()
        };
        assert_eq!(list(by_pod).await, vec![cid.clone()]);
        let by_id = pb::ContainerStatsFilter {
            id: cid[..12].to_string(),
            ..Default::default()
        };
        assert_eq!(list(by_id).await, vec![cid.clone()]);
        let by_label = |v: &str| pb::ContainerStatsFilter {
            label_selector: [("tier".to_string(), v.to_string())].into(),
            ..Default::default()
        };
        assert_eq!(list(by_label("cpu")).await, vec![cid.clone()]);
        assert!(list(by_label("io")).await.is_empty());

        // The pod: its cgroup's CPU, memory and processes, its network, its container.
        let (_, _, code) = exec(&mut r, &cid, &["ping", "-c", "2", "-W", "1", &gateway], 10).await;
        assert_eq!(code, 0);
        let ps = r
            .pod_sandbox_stats(pb::PodSandboxStatsRequest {
                pod_sandbox_id: sid.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .stats
            .unwrap();
        assert_eq!(ps.attributes.as_ref().unwrap().id, sid);
        assert_eq!(ps.attributes.as_ref().unwrap().labels["app"], "web");
        let l = ps.linux.unwrap();
        assert!(value(&l.cpu.as_ref().unwrap().usage_core_nano_seconds) >= used);
        assert!(value(&l.memory.as_ref().unwrap().working_set_bytes) > 0);
        // pause, sh (and maybe a finishing exec).
        assert!(
            value(&l.process.as_ref().unwrap().process_count) >= 2,
            "{:?}",
            l.process
        );
        let n = l.network.unwrap();
        let eth0 = n.default_interface.unwrap();
        assert_eq!(eth0.name, "eth0");
        assert!(
            value(&eth0.tx_bytes) > 0 && value(&eth0.rx_bytes) > 0,
            "{eth0:?}"
        );
        assert_eq!(n.interfaces.len(), 1, "{:?}", n.interfaces);
        assert_eq!(l.containers.len(), 1);
        assert_eq!(l.containers[0].attributes.as_ref().unwrap().id, cid);
        let lister = r.clone();
        let pods = |sel: &str| {
            let mut r = lister.clone();
            let f = pb::PodSandboxStatsFilter {
                label_selector: [("app".to_string(), sel.to_string())].into(),
                ..Default::default()
            };
            async move {
                r.list_pod_sandbox_stats(pb::ListPodSandboxStatsRequest { filter: Some(f) })
                    .await
                    .unwrap()
                    .into_inner()
                    .stats
                    .len()
            }
        };
        assert_eq!(pods("web").await, 1);
        assert_eq!(pods("db").await, 0);

        // Stopped, then removed.
        stop_container(&mut r, &cid, 0).await;
        assert_eq!(
            next_summary(&mut events).await,
            ready_pods_container_event(&cid, Ev::ContainerStoppedEvent, Cs::ContainerExited)
        );
        let st = container_stats(&mut r, &cid).await;
        assert!(st.cpu.is_none(), "{st:?}");
        assert!(value(&st.writable_layer.unwrap().used_bytes) >= 2 << 20);
        remove_container(&mut r, &cid).await;
        assert_eq!(
            next_summary(&mut events).await,
            (cid.clone(), Ev::ContainerDeletedEvent as i32, ready, vec![])
        );
        let e = r
            .container_stats(pb::ContainerStatsRequest {
                container_id: cid.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound);
        stop_pod(&mut r, &sid).await;
        assert_eq!(
            next_summary(&mut events).await,
            (
                sid.clone(),
                Ev::ContainerStoppedEvent as i32,
                Some(pb::PodSandboxState::SandboxNotready as i32),
                vec![]
            )
        );
        let e = r
            .pod_sandbox_stats(pb::PodSandboxStatsRequest {
                pod_sandbox_id: sid.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert_eq!(pods("web").await, 0);
        remove_pod(&mut r, &sid).await;
        assert_eq!(
            next_summary(&mut events).await,
            (sid.clone(), Ev::ContainerDeletedEvent as i32, None, vec![])
        );
    });
    finish(d);
}

/// Issue 18 (critest "Container Mount Propagation"): a BIDIRECTIONAL mount of a host's shared
/// mount sees the host's new mounts below it, and the host sees the container's; a
/// HOST_TO_CONTAINER one only the first; BIDIRECTIONAL from a private mount fails with
/// containerd's (and dockerd's) message. The shared mounts are the test's own directories.
#[test]
fn cri_mount_propagation() {
    let Some((_net, d, _pods)) = cri_daemon(8) else {
        return;
    };
    let shared = berth_testkit::PropagationDir::new(true);
    let private = berth_testkit::PropagationDir::new(false);
    let (uid, logs) = pod_uid_and_logs(&d);
    rt().block_on(async {
        let (mut r, _) = clients(&d).await;
        let cfg = host_network_sandbox_config(&d, &uid, &logs);
        let sid = run_pod(&mut r, &cfg).await;
        let with_mount = |name: &str, host: &Path, p: pb::MountPropagation| {
            let mut c = busybox_container(
                name,
                &format!("mount -t tmpfs tmpfs /m/{name} && echo c > /m/{name}/f; exec sleep 1000"),
            );
            c.mounts = vec![pb::Mount {
                container_path: "/m".into(),
                host_path: host.display().to_string(),
                propagation: p as i32,
                ..Default::default()
            }];
            c.linux = Some(pb::LinuxContainerConfig {
                security_context: Some(pb::LinuxContainerSecurityContext {
                    capabilities: Some(pb::Capability {
                        add_capabilities: vec!["SYS_ADMIN".into()],
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            });
            c
        };
        for sub in ["bidi", "h2c"] {
            std::fs::create_dir(shared.path().join(sub)).unwrap();
        }
        let bidi = run_container(
            &mut r,
            &sid,
            &cfg,
            with_mount(
                "bidi",
                shared.path(),
                pb::MountPropagation::PropagationBidirectional,
            ),
        )
        .await;
        let h2c = run_container(
            &mut r,
            &sid,
            &cfg,
            with_mount(
                "h2c",
                shared.path(),
                pb::MountPropagation::PropagationHostToContainer,
            ),
        )
        .await;
        // Host to container, both ways.
        let host = shared.mount_tmpfs("host");
        std::fs::write(host.join("f"), "h").unwrap();
        for c in [&bidi, &h2c] {
            let (out, err, code) = exec(&mut r, c, &["cat", "/m/host/f"], 10).await;
            assert_eq!((out.as_str(), code), ("h", 0), "{c}: {err}");
        }
        // Container to host: only the bidirectional mount's.
        for (c, sub) in [(&bidi, "bidi"), (&h2c, "h2c")] {
            let path = format!("/m/{sub}/f");
            let mut mounted = false;
            for _ in 0..100 {
                if exec(&mut r, c, &["cat", &path], 10).await.2 == 0 {
                    mounted = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(mounted, "{sub}: the container's own mount");
        }
        assert!(shared.path().join("bidi/f").exists());
        assert!(!shared.path().join("h2c/f").exists());
        // Bidirectional needs a shared source mount.
        let bad = with_mount(
            "bad",
            private.path(),
            pb::MountPropagation::PropagationBidirectional,
        );
        let res = match try_create_container(&mut r, &sid, &cfg, bad).await {
            Err(e) => Err(e),
            Ok(c) => try_start_container(&mut r, &c).await,
        };
        let e = res.expect_err("a bidirectional mount of a private mount");
        let want = format!(
            "path {} is mounted on {} but it is not a shared mount",
            private.path().display(),
            private.path().display()
        );
        assert!(e.message().contains(&want), "{e:?}");
        for c in [bidi, h2c] {
            stop_container(&mut r, &c, 0).await;
        }
        remove_pod(&mut r, &sid).await;
    });
    drop(shared);
    drop(private);
    finish(d);
}
