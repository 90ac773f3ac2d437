//! skopeo, the independent registry client of the interoperability tests. A registry side
//! (`docker://…`) is reached without TLS verification: the test registries serve plain HTTP or
//! self-signed certificates.

use std::process::Command;

use crate::process::{CommandRun, Run};

/// `skopeo copy --quiet` from `src` to `dst` (each with its transport: `docker://…`,
/// `oci:…`, `docker-archive:…`), with `extra` flags of `copy`.
pub fn copy(src: &str, dst: &str, extra: &[&str]) -> Run {
    let mut cmd = Command::new("skopeo");
    cmd.args(["copy", "--quiet"]).args(extra);
    if src.starts_with("docker://") {
        cmd.arg("--src-tls-verify=false");
    }
    if dst.starts_with("docker://") {
        cmd.arg("--dest-tls-verify=false");
    }
    cmd.args([src, dst]).run()
}

/// `skopeo inspect --raw` of `docker://<image>`: the manifest as the registry serves it.
pub fn inspect_raw(image: &str) -> Run {
    Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{image}"))
        .run()
}
