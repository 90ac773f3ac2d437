//! The CRI pod start benchmark's persistent client (`bench/cri/pod`): as the kubelet, one
//! gRPC connection to each CRI socket, kept for every run. Each run times RunPodSandbox →
//! CreateContainer → StartContainer of a pod with one container (the configurations of the
//! benchmark's `crictl run`; StartContainer answers once the container runs, which
//! ContainerStatus checks after), and removes the pod outside the timing. With several
//! runtimes their pods alternate, so that each sees the same load of a busy machine. The
//! first round is a warm-up, not counted.
//!
//! Usage: cri_pod_bench IMAGE LOG_DIR RUNS NAME=SOCKET...
//! Prints, per runtime, `NAME pod+container to running: median … ms, mean …, min …, max …
//! (N runs; …)` with the medians of the three requests as the client saw them.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use berth_buildkit::conn::H2Channel;
use berth_cri::proto as pb;
use pb::runtime_service_client::RuntimeServiceClient;

type Client = RuntimeServiceClient<H2Channel>;

struct Args {
    image: String,
    log_dir: String,
    runs: usize,
    /// (name, socket path)
    runtimes: Vec<(String, String)>,
}

fn args() -> anyhow::Result<Args> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let [image, log_dir, runs, runtimes @ ..] = a.as_slice() else {
        bail!("usage: cri_pod_bench IMAGE LOG_DIR RUNS NAME=SOCKET...");
    };
    let runtimes = runtimes
        .iter()
        .map(|r| {
            let (name, sock) = r
                .split_once('=')
                .with_context(|| format!("{r:?} is not NAME=SOCKET"))?;
            Ok((
                name.to_string(),
                sock.trim_start_matches("unix://").to_string(),
            ))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let runs: usize = runs.parse().context("RUNS")?;
    if runs == 0 || runtimes.is_empty() {
        bail!("usage: cri_pod_bench IMAGE LOG_DIR RUNS NAME=SOCKET... (RUNS at least 1)");
    }
    Ok(Args {
        image: image.clone(),
        log_dir: log_dir.clone(),
        runs,
        runtimes,
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[(s.len() - 1) / 2]
}

/// One pod on `c`: the durations of the whole and of RunPodSandbox, CreateContainer and
/// StartContainer; the pod is removed after (not timed).
async fn one(c: &mut Client, a: &Args, name: &str, i: usize) -> anyhow::Result<[Duration; 4]> {
    let log_dir = format!("{}/{name}-{i}", a.log_dir);
    std::fs::create_dir_all(&log_dir).with_context(|| format!("creating {log_dir}"))?;
    let sandbox = pb::PodSandboxConfig {
        metadata: Some(pb::PodSandboxMetadata {
            name: "bench".into(),
            namespace: "default".into(),
            uid: format!("bench-{name}-grpc-{i}"),
            attempt: 0,
        }),
        hostname: "bench".into(),
        log_directory: log_dir,
        linux: Some(Default::default()),
        ..Default::default()
    };
    let container = pb::ContainerConfig {
        metadata: Some(pb::ContainerMetadata {
            name: "sleeper".into(),
            attempt: 0,
        }),
        image: Some(pb::ImageSpec {
            image: a.image.clone(),
            ..Default::default()
        }),
        command: vec!["sleep".into(), "3600".into()],
        log_path: "sleeper.log".into(),
        linux: Some(Default::default()),
        ..Default::default()
    };
    let t0 = Instant::now();
    let pod = c
        .run_pod_sandbox(pb::RunPodSandboxRequest {
            config: Some(sandbox.clone()),
            runtime_handler: String::new(),
        })
        .await
        .context("RunPodSandbox")?
        .into_inner()
        .pod_sandbox_id;
    let t1 = Instant::now();
    let ctr = c
        .create_container(pb::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(container),
            sandbox_config: Some(sandbox),
        })
        .await
        .context("CreateContainer")?
        .into_inner()
        .container_id;
    let t2 = Instant::now();
    c.start_container(pb::StartContainerRequest {
        container_id: ctr.clone(),
    })
    .await
    .context("StartContainer")?;
    let t3 = Instant::now();
    // Not timed: the container runs, then the pod goes.
    let state = c
        .container_status(pb::ContainerStatusRequest {
            container_id: ctr.clone(),
            verbose: false,
        })
        .await
        .context("ContainerStatus")?
        .into_inner()
        .status
        .map(|s| s.state)
        .unwrap_or_default();
    if state != pb::ContainerState::ContainerRunning as i32 {
        bail!("{name}: container {ctr} is not running (state {state})");
    }
    c.stop_pod_sandbox(pb::StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .context("StopPodSandbox")?;
    c.remove_pod_sandbox(pb::RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await
    .context("RemovePodSandbox")?;
    Ok([t3 - t0, t1 - t0, t2 - t1, t3 - t2])
}

async fn run(a: Args) -> anyhow::Result<()> {
    let mut clients = Vec::new();
    for (name, sock) in &a.runtimes {
        let io = tokio::net::UnixStream::connect(sock)
            .await
            .with_context(|| format!("{name}: connecting to {sock}"))?;
        let (ch, _closed) = H2Channel::connect(io).await.context("HTTP/2")?;
        clients.push(RuntimeServiceClient::with_origin(ch, H2Channel::origin()));
    }
    let mut times: Vec<Vec<[Duration; 4]>> = vec![Vec::new(); clients.len()];
    for i in 0..=a.runs {
        for (k, c) in clients.iter_mut().enumerate() {
            let name = &a.runtimes[k].0;
            let t = one(c, &a, name, i)
                .await
                .with_context(|| format!("{name}: pod {i}"))?;
            // The first round (warm-up) is not counted.
            if i > 0 {
                times[k].push(t);
            }
        }
    }
    for ((name, _), times) in a.runtimes.iter().zip(&times) {
        let total: Vec<f64> = times.iter().map(|t| ms(t[0])).collect();
        let part = |k: usize| median(&times.iter().map(|t| ms(t[k])).collect::<Vec<_>>());
        let mean = total.iter().sum::<f64>() / total.len() as f64;
        let min = total.iter().copied().fold(f64::INFINITY, f64::min);
        let max = total.iter().copied().fold(0.0, f64::max);
        println!(
            "{name:<10} pod+container to running: median {:.1} ms, mean {mean:.1} ms, min {min:.1}, max {max:.1} ({} runs; RunPodSandbox {:.1}, CreateContainer {:.1}, StartContainer {:.1})",
            median(&total),
            total.len(),
            part(1),
            part(2),
            part(3)
        );
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let a = args()?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run(a))
}
