//! End-to-end tests of `berth registry serve` / `berth registry gc` (crate
//! `berth-registry-server`): real clients (skopeo, Berth's own `berth-registry` client, raw
//! HTTP, headless Chromium) against the server on 127.0.0.1, side by side with Debian's
//! `docker-registry` where the results must agree.
//!
//! Needs `skopeo`, `/usr/bin/docker-registry` and `/bin/busybox` (skips with a message
//! otherwise); the web page test also needs `chromium` (skipped with a message without it).

#[path = "../../berth-registry/tests/common/mod.rs"]
mod rc;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use berth_image::manifest::media_types as mt;
use berth_image::manifest::Platform;
use berth_image::snapshot::CopySnapshotter;
use berth_image::store::BlobStore;
use berth_image::{Digest, Reference};
use berth_registry::{Client, NoProgress, PushOptions};
use sha2::Digest as _;

const BERTH: &str = env!("CARGO_BIN_EXE_berth");

fn skip() -> bool {
    if !rc::have_tools() {
        return true;
    }
    if !Path::new("/bin/busybox").exists() {
        eprintln!("SKIP: needs /bin/busybox (Debian busybox-static)");
        return true;
    }
    false
}

/// `berth registry serve` on 127.0.0.1:0, killed on drop.
struct Server {
    child: Child,
    _out: BufReader<ChildStdout>,
    port: u16,
    root: PathBuf,
}

impl Server {
    fn start(root: &Path, config: Option<&Path>) -> Server {
        Self::start_with(root, config, None)
    }

    fn start_with(root: &Path, config: Option<&Path>, tls: Option<(&Path, &Path)>) -> Server {
        let mut cmd = Command::new(BERTH);
        cmd.args(["registry", "serve", "--addr", "127.0.0.1:0", "--root"])
            .arg(root);
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        if let Some((c, k)) = tls {
            cmd.arg("--tls-cert").arg(c).arg("--tls-key").arg(k);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start berth registry serve");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let port = line
            .strip_prefix("listening on 127.0.0.1:")
            .and_then(|r| r.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| {
                let _ = child.kill();
                panic!("unexpected first line from the server: {line:?}")
            });
        Server {
            child,
            _out: out,
            port,
            root: root.to_path_buf(),
        }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn blobs(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.root.join("blobs/sha256"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        v.sort();
        v
    }

    /// Every blob's content hashes to its name; no temp files lie around.
    fn assert_consistent(&self) {
        for name in self.blobs() {
            assert!(!name.starts_with('.'), "temp file left in blobs/: {name}");
            let data = std::fs::read(self.root.join("blobs/sha256").join(&name)).unwrap();
            assert_eq!(
                hex::encode(sha2::Sha256::digest(&data)),
                name,
                "corrupt blob"
            );
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---- a raw HTTP/1.1 client (so that paths and bodies go out exactly as written) ------------

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Resp {
    fn h(&self, k: &str) -> Option<&str> {
        self.headers
            .get(&k.to_ascii_lowercase())
            .map(String::as_str)
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    fn code(&self) -> String {
        self.json()["errors"][0]["code"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }
}

fn read_resp(s: TcpStream, head: bool) -> Resp {
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let mut body = Vec::new();
    if !head && status != 100 {
        if headers.get("transfer-encoding").map(String::as_str) == Some("chunked") {
            loop {
                let mut sz = String::new();
                r.read_line(&mut sz).unwrap();
                let n = usize::from_str_radix(sz.trim(), 16).unwrap();
                let mut chunk = vec![0u8; n + 2];
                r.read_exact(&mut chunk).unwrap();
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        } else if let Some(n) = headers.get("content-length").and_then(|v| v.parse().ok()) {
            body = vec![0u8; n];
            r.read_exact(&mut body).unwrap();
        } else {
            r.read_to_end(&mut body).unwrap();
        }
    }
    Resp {
        status,
        headers,
        body,
    }
}

fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    http_on(s, port, method, path, headers, body)
}

/// [`http`] from another loopback address (`127.0.0.2`, …): another client to the server.
fn http_from(
    src: [u8; 4],
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    use socket2::{Domain, SockAddr, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    sock.bind(&SockAddr::from(std::net::SocketAddr::from((src, 0))))
        .unwrap();
    sock.connect(&SockAddr::from(std::net::SocketAddr::from((
        [127, 0, 0, 1],
        port,
    ))))
    .unwrap();
    http_on(sock.into(), port, method, path, headers, body)
}

fn http_on(
    mut s: TcpStream,
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("transfer-encoding"))
    {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    if headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("expect") && *v == "100-continue")
    {
        // Send the body only when the server asks for it (it may refuse it first).
        let r = read_resp(s.try_clone().unwrap(), method == "HEAD");
        if r.status != 100 {
            return r;
        }
        s.write_all(body).unwrap();
        return read_resp(s, method == "HEAD");
    }
    s.write_all(body).unwrap();
    read_resp(s, method == "HEAD")
}

fn get(port: u16, path: &str) -> Resp {
    http(port, "GET", path, &[], b"")
}

fn basic(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Uploads `data` monolithically to `repo`; returns its digest.
fn put_blob(port: u16, repo: &str, data: &[u8], auth: &[(&str, &str)]) -> Digest {
    let d = Digest::of_bytes(data);
    let r = http(
        port,
        "POST",
        &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
        auth,
        data,
    );
    assert_eq!(r.status, 201, "{r:?}");
    d
}

fn put_manifest(port: u16, repo: &str, reference: &str, media_type: &str, body: &[u8]) -> Resp {
    http(
        port,
        "PUT",
        &format!("/v2/{repo}/manifests/{reference}"),
        &[("Content-Type", media_type)],
        body,
    )
}

fn skopeo(args: &[&str]) -> (bool, String) {
    let out = Command::new("skopeo").args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn client(dir: &Path) -> Client {
    Client::new(rc::config(dir)).unwrap()
}

/// A pushed image's manifest digest, tags and the catalog, as a client sees them.
fn observe(host: &str, repo: &str, tag: &str) -> (String, serde_json::Value, serde_json::Value) {
    let (ok, raw, err) = rc::skopeo_inspect_raw(&format!("{host}/{repo}:{tag}"));
    assert!(ok, "{err}");
    let port: u16 = host.rsplit(':').next().unwrap().parse().unwrap();
    let tags = get(port, &format!("/v2/{repo}/tags/list")).json();
    let cat = get(port, "/v2/_catalog").json();
    (Digest::of_bytes(raw.as_bytes()).to_string(), tags, cat)
}

// ---- tests ---------------------------------------------------------------------------------

/// skopeo both ways and Berth's client push and pull, against our server and Debian's
/// docker-registry: same digests, tags, catalog and blob bytes.
#[test]
fn skopeo_and_berth_client_same_results_as_docker_registry() {
    if skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ours = Server::start(&tmp.path().join("root"), None);
    let theirs = rc::Registry::start(false);
    let img = rc::multilayer_image("amd64");
    let small = rc::random_image(7, 64);
    let src = BlobStore::open(tmp.path().join("src")).unwrap();
    small.write_store(&src);
    img.write_store(&src);
    let mut seen = Vec::new();
    for host in [ours.host(), theirs.host()] {
        // skopeo: OCI layout -> registry.
        img.seed(&host, "test/app:v1", None);
        // Berth's client: push a second image, then the first under another tag and into
        // another repository (mounted).
        let c = client(tmp.path());
        let r = Reference::parse(&format!("{host}/test/app:v2")).unwrap();
        let pushed = c.push(&r, &small.manifest, &src, &NoProgress).unwrap();
        assert_eq!(pushed.digest, small.manifest_digest());
        let r = Reference::parse(&format!("{host}/other/copy:latest")).unwrap();
        c.push_with(
            &r,
            &img.manifest,
            &src,
            &NoProgress,
            &PushOptions {
                mount_from: vec!["test/app".into()],
            },
        )
        .unwrap();
        // Berth's client with chunked uploads (PATCH with Content-Range, 64 KiB pieces).
        let mut cfg = rc::config(tmp.path());
        cfg.monolithic_upload_limit = 100_000;
        cfg.upload_chunk_size = 64 << 10;
        let chunky = Client::new(cfg).unwrap();
        let r = Reference::parse(&format!("{host}/chunked/app:1")).unwrap();
        chunky.push(&r, &img.manifest, &src, &NoProgress).unwrap();
        // skopeo: registry -> OCI layout, every blob byte-identical.
        let out = tmp.path().join(format!("out-{}", host.replace(':', "_")));
        let (ok, err) = skopeo(&[
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            "--preserve-digests",
            &format!("docker://{host}/other/copy:latest"),
            &format!("oci:{}:x", out.display()),
        ]);
        assert!(ok, "{err}");
        for b in img.blobs() {
            let d = Digest::of_bytes(&b);
            assert_eq!(
                std::fs::read(out.join("blobs/sha256").join(d.hex())).unwrap(),
                b
            );
        }
        // Berth's client: pull (verify + unpack) the first image.
        let local = tempfile::tempdir().unwrap();
        let store = BlobStore::open(local.path().join("store")).unwrap();
        let snap = CopySnapshotter::open(&local.path().join("snap")).unwrap();
        let r = Reference::parse(&format!("{host}/test/app:v1")).unwrap();
        let pulled = c
            .pull(&r, &Platform::host(), &store, &snap, &NoProgress)
            .unwrap();
        assert_eq!(pulled.manifest_digest, img.manifest_digest());
        assert_eq!(pulled.manifest_bytes, img.manifest);
        let a = observe(&host, "test/app", "v1");
        let b = observe(&host, "test/app", "v2");
        let c2 = observe(&host, "other/copy", "latest");
        let c3 = observe(&host, "chunked/app", "1");
        assert_eq!(c3.0, img.manifest_digest().to_string());
        seen.push((a, b, c2, c3));
    }
    assert_eq!(
        seen[0], seen[1],
        "our registry and docker-registry disagree"
    );
    assert_eq!(seen[0].0 .1["tags"], serde_json::json!(["v1", "v2"]));
    assert_eq!(
        seen[0].0 .2["repositories"],
        serde_json::json!(["chunked/app", "other/copy", "test/app"])
    );
    ours.assert_consistent();
    // The audit log recorded the pushes and pulls.
    let audit = std::fs::read_to_string(ours.root.join("audit.log")).unwrap();
    let lines: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.iter().any(|l| l["action"] == "push"
        && l["kind"] == "manifest"
        && l["repository"] == "test/app"
        && l["reference"] == "v1"));
    assert!(lines
        .iter()
        .any(|l| l["action"] == "push" && l["kind"] == "mount"));
    assert!(lines
        .iter()
        .any(|l| l["action"] == "pull" && l["repository"] == "other/copy"));
}

/// Uploads (chunked, streamed, monolithic), ranges, mounts, pagination, deletion, referrers
/// and hostile requests, with the spec's status codes and error bodies.
#[test]
fn distribution_api_details_and_hostile_requests() {
    if skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("root"), None);
    let p = s.port;

    let r = get(p, "/v2/");
    assert_eq!(r.status, 200);
    assert_eq!(r.h("docker-distribution-api-version"), Some("registry/2.0"));

    // Chunked upload: POST, PATCH with Content-Range, a wrong range, status, PUT.
    let data = pseudo_random(1, 300_000);
    let d = Digest::of_bytes(&data);
    let r = http(p, "POST", "/v2/up/load/blobs/uploads/", &[], b"");
    assert_eq!(r.status, 202, "{r:?}");
    let loc = r.h("location").unwrap().to_string();
    assert!(loc.starts_with("/v2/up/load/blobs/uploads/"));
    assert_eq!(r.h("range"), Some("0-0"));
    let uuid = r.h("docker-upload-uuid").unwrap().to_string();
    assert!(loc.ends_with(&uuid));
    let r = http(
        p,
        "PATCH",
        &loc,
        &[("Content-Range", "0-99999")],
        &data[..100_000],
    );
    assert_eq!(r.status, 202, "{r:?}");
    assert_eq!(r.h("range"), Some("0-99999"));
    let r = http(p, "PATCH", &loc, &[("Content-Range", "5-10")], &data[5..11]);
    assert_eq!(r.status, 416, "{r:?}");
    assert_eq!(r.h("range"), Some("0-99999"));
    let r = get(p, &loc);
    assert_eq!(r.status, 204);
    assert_eq!(r.h("range"), Some("0-99999"));
    // Streamed PATCH (chunked transfer encoding, no Content-Range).
    let mut body = Vec::new();
    for piece in data[100_000..250_000].chunks(30_000) {
        body.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        body.extend_from_slice(piece);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let r = http(p, "PATCH", &loc, &[("Transfer-Encoding", "chunked")], &body);
    assert_eq!(r.status, 202, "{r:?}");
    assert_eq!(r.h("range"), Some("0-249999"));
    assert!(
        !s.blobs().contains(&d.hex().to_string()),
        "visible before PUT"
    );
    // The final chunk with the PUT.
    let r = http(
        p,
        "PUT",
        &format!("{loc}?digest={d}"),
        &[],
        &data[250_000..],
    );
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.h("docker-content-digest"), Some(d.to_string().as_str()));
    assert_eq!(
        r.h("location"),
        Some(format!("/v2/up/load/blobs/{d}").as_str())
    );
    assert_eq!(get(p, &loc).code(), "BLOB_UPLOAD_UNKNOWN");

    // HEAD and ranged GETs.
    let r = http(p, "HEAD", &format!("/v2/up/load/blobs/{d}"), &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.h("content-length"), Some("300000"));
    let r = http(
        p,
        "GET",
        &format!("/v2/up/load/blobs/{d}"),
        &[("Range", "bytes=1000-1999")],
        b"",
    );
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &data[1000..2000]);
    assert_eq!(r.h("content-range"), Some("bytes 1000-1999/300000"));
    let r = http(
        p,
        "GET",
        &format!("/v2/up/load/blobs/{d}"),
        &[("Range", "bytes=-10")],
        b"",
    );
    assert_eq!(r.body, &data[299_990..]);
    let r = http(
        p,
        "GET",
        &format!("/v2/up/load/blobs/{d}"),
        &[("Range", "bytes=300000-")],
        b"",
    );
    assert_eq!(r.status, 416);
    assert_eq!(get(p, &format!("/v2/up/load/blobs/{d}")).body, data);

    // Cancel.
    let r = http(p, "POST", "/v2/up/load/blobs/uploads/", &[], b"");
    let loc2 = r.h("location").unwrap().to_string();
    assert_eq!(http(p, "DELETE", &loc2, &[], b"").status, 204);
    assert_eq!(http(p, "PATCH", &loc2, &[], b"x").status, 404);
    // An upload id of one repository is unknown in another.
    let r = http(p, "POST", "/v2/up/load/blobs/uploads/", &[], b"");
    let id3 = r.h("docker-upload-uuid").unwrap().to_string();
    let r = get(p, &format!("/v2/other/blobs/uploads/{id3}"));
    assert_eq!(r.status, 404);

    // Wrong digests change nothing.
    let before = s.blobs();
    let wrong = Digest::of_bytes(b"something else");
    let r = http(
        p,
        "POST",
        &format!("/v2/up/load/blobs/uploads/?digest={wrong}"),
        &[],
        b"hello",
    );
    assert_eq!((r.status, r.code().as_str()), (400, "DIGEST_INVALID"));
    let r = http(
        p,
        "POST",
        "/v2/up/load/blobs/uploads/?digest=sha256:xyz",
        &[],
        b"hello",
    );
    assert_eq!((r.status, r.code().as_str()), (400, "DIGEST_INVALID"));
    assert_eq!(s.blobs(), before);

    // Mount: from a repository that has the blob, and from one that does not.
    let r = http(
        p,
        "POST",
        &format!("/v2/mounted/blobs/uploads/?mount={d}&from=up/load"),
        &[],
        b"",
    );
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(get(p, &format!("/v2/mounted/blobs/{d}")).body, data);
    let r = http(
        p,
        "POST",
        &format!("/v2/third/blobs/uploads/?mount={d}&from=nothere"),
        &[],
        b"",
    );
    assert_eq!(r.status, 202, "falls back to an upload: {r:?}");
    // A blob is only served from repositories it is linked to.
    let r = http(p, "HEAD", &format!("/v2/third/blobs/{d}"), &[], b"");
    assert_eq!(r.status, 404);

    // Manifests: image (OCI), tags, pagination, by digest; Docker schema 2 and lists.
    let cfg = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let cd = put_blob(p, "up/load", cfg, &[]);
    let man = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": mt::OCI_MANIFEST,
        "config": {"mediaType": mt::OCI_CONFIG, "digest": cd.to_string(), "size": cfg.len()},
        "layers": [{"mediaType": mt::OCI_LAYER_GZIP, "digest": d.to_string(), "size": data.len()}],
    }))
    .unwrap();
    let md = Digest::of_bytes(&man);
    for t in ["t1", "t2", "t3", "t4", "t5"] {
        let r = put_manifest(p, "up/load", t, mt::OCI_MANIFEST, &man);
        assert_eq!(r.status, 201, "{r:?}");
        assert_eq!(r.h("docker-content-digest"), Some(md.to_string().as_str()));
    }
    let r = get(p, "/v2/up/load/tags/list?n=2");
    assert_eq!(r.json()["tags"], serde_json::json!(["t1", "t2"]));
    assert_eq!(
        r.h("link"),
        Some("</v2/up/load/tags/list?n=2&last=t2>; rel=\"next\"")
    );
    let r = get(p, "/v2/up/load/tags/list?n=2&last=t4");
    assert_eq!(r.json()["tags"], serde_json::json!(["t5"]));
    assert_eq!(r.h("link"), None);
    let r = get(p, &format!("/v2/up/load/manifests/{md}"));
    assert_eq!(r.body, man);
    assert_eq!(r.h("content-type"), Some(mt::OCI_MANIFEST));
    let r = http(p, "HEAD", "/v2/up/load/manifests/t3", &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.h("content-length"), Some(man.len().to_string().as_str()));
    // Docker schema 2 with the same blobs, and a manifest list over both.
    let dman = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": mt::DOCKER_MANIFEST,
        "config": {"mediaType": mt::DOCKER_CONFIG, "digest": cd.to_string(), "size": cfg.len()},
        "layers": [{"mediaType": mt::DOCKER_LAYER_GZIP, "digest": d.to_string(), "size": data.len()}],
    }))
    .unwrap();
    assert_eq!(
        put_manifest(p, "up/load", "docker", mt::DOCKER_MANIFEST, &dman).status,
        201
    );
    let list = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": mt::DOCKER_MANIFEST_LIST,
        "manifests": [
            {"mediaType": mt::DOCKER_MANIFEST, "digest": Digest::of_bytes(&dman).to_string(), "size": dman.len(),
             "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": mt::OCI_MANIFEST, "digest": md.to_string(), "size": man.len(),
             "platform": {"architecture": "arm64", "os": "linux"}},
        ],
    }))
    .unwrap();
    let r = put_manifest(p, "up/load", "multi", mt::DOCKER_MANIFEST_LIST, &list);
    assert_eq!(r.status, 201, "{r:?}");
    // An index naming a manifest this repository does not have.
    let bad_index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": mt::OCI_INDEX,
        "manifests": [{"mediaType": mt::OCI_MANIFEST, "digest": wrong.to_string(), "size": 3}],
    }))
    .unwrap();
    let r = put_manifest(p, "up/load", "bad", mt::OCI_INDEX, &bad_index);
    assert_eq!(
        (r.status, r.code().as_str()),
        (400, "MANIFEST_BLOB_UNKNOWN")
    );

    // Referrers: an artifact whose subject is the image.
    let empty = b"{}";
    let ed = put_blob(p, "up/load", empty, &[]);
    let art = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": mt::OCI_MANIFEST,
        "artifactType": "application/vnd.example.sbom",
        "config": {"mediaType": mt::OCI_EMPTY, "digest": ed.to_string(), "size": 2},
        "layers": [{"mediaType": mt::OCI_EMPTY, "digest": ed.to_string(), "size": 2}],
        "subject": {"mediaType": mt::OCI_MANIFEST, "digest": md.to_string(), "size": man.len()},
        "annotations": {"org.example": "1"},
    }))
    .unwrap();
    let ad = Digest::of_bytes(&art);
    let r = put_manifest(p, "up/load", &ad.to_string(), mt::OCI_MANIFEST, &art);
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.h("oci-subject"), Some(md.to_string().as_str()));
    let r = get(p, &format!("/v2/up/load/referrers/{md}"));
    assert_eq!(r.status, 200);
    assert_eq!(r.h("content-type"), Some(mt::OCI_INDEX));
    let j = r.json();
    assert_eq!(j["manifests"][0]["digest"], ad.to_string());
    assert_eq!(
        j["manifests"][0]["artifactType"],
        "application/vnd.example.sbom"
    );
    let r = get(
        p,
        &format!("/v2/up/load/referrers/{md}?artifactType=application/other"),
    );
    assert_eq!(r.json()["manifests"], serde_json::json!([]));
    assert_eq!(r.h("oci-filters-applied"), Some("artifactType"));

    // Malformed manifests, wrong digests, missing blobs, oversized: errors, nothing stored.
    let meta_before = std::fs::read(s.root.join("repositories/up/load/_meta.json")).unwrap();
    let before = s.blobs();
    for (body, ct, code, status) in [
        (&b"{not json"[..], mt::OCI_MANIFEST, "MANIFEST_INVALID", 400),
        (
            br#"{"schemaVersion":1}"#,
            mt::OCI_MANIFEST,
            "MANIFEST_INVALID",
            400,
        ),
        (&man[..], mt::DOCKER_MANIFEST, "MANIFEST_INVALID", 400),
        (&man[..], "text/plain", "MANIFEST_INVALID", 400),
    ] {
        let r = put_manifest(p, "up/load", "hostile", ct, body);
        assert_eq!((r.status, r.code().as_str()), (status, code), "{r:?}");
    }
    let missing = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": mt::OCI_MANIFEST,
        "config": {"mediaType": mt::OCI_CONFIG, "digest": cd.to_string(), "size": cfg.len()},
        "layers": [{"mediaType": mt::OCI_LAYER_GZIP, "digest": wrong.to_string(), "size": 14}],
    }))
    .unwrap();
    let r = put_manifest(p, "up/load", "hostile", mt::OCI_MANIFEST, &missing);
    assert_eq!(
        (r.status, r.code().as_str()),
        (400, "MANIFEST_BLOB_UNKNOWN")
    );
    let r = put_manifest(p, "up/load", &wrong.to_string(), mt::OCI_MANIFEST, &man);
    assert_eq!((r.status, r.code().as_str()), (400, "DIGEST_INVALID"));
    let huge = vec![b' '; 5 << 20];
    let r = http(
        p,
        "PUT",
        "/v2/up/load/manifests/hostile",
        &[
            ("Content-Type", mt::OCI_MANIFEST),
            ("Expect", "100-continue"),
        ],
        &huge,
    );
    assert_eq!(r.status, 413);
    assert_eq!(
        std::fs::read(s.root.join("repositories/up/load/_meta.json")).unwrap(),
        meta_before
    );
    assert_eq!(s.blobs(), before);

    // Bad names and path tricks.
    for path in [
        "/v2/../../etc/tags/list",
        "/v2/up/../load/tags/list",
        "/v2/UP/tags/list",
        "/v2/up%2f..%2fx/tags/list",
        "/v2//up/tags/list",
        "/v2/up/load/manifests/..",
        "/v2/up/load/manifests/bad%20tag",
    ] {
        let r = get(p, path);
        assert!(
            r.status == 400 || r.status == 404,
            "{path}: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        assert!(
            ["NAME_INVALID", "TAG_INVALID", "UNSUPPORTED"].contains(&r.code().as_str()),
            "{path}: {}",
            r.code()
        );
    }
    let r = http(p, "POST", "/v2/a/../b/blobs/uploads/", &[], b"");
    assert_eq!((r.status, r.code().as_str()), (400, "NAME_INVALID"));
    assert!(!s.root.join("repositories/b").exists());
    let r = get(p, "/v2/nothere/tags/list");
    assert_eq!((r.status, r.code().as_str()), (404, "NAME_UNKNOWN"));
    let r = get(p, "/v2/up/load/manifests/nope");
    assert_eq!((r.status, r.code().as_str()), (404, "MANIFEST_UNKNOWN"));
    let r = get(p, "/v2/up/load/tags/list?n=x");
    assert_eq!(r.status, 400);

    // Catalog pagination.
    let r = get(p, "/v2/_catalog?n=1");
    assert_eq!(r.json()["repositories"], serde_json::json!(["mounted"]));
    assert_eq!(
        r.h("link"),
        Some("</v2/_catalog?n=1&last=mounted>; rel=\"next\"")
    );
    // ("third" only has an upload in progress: not a repository yet.)
    let r = get(p, "/v2/_catalog?n=10&last=mounted");
    assert_eq!(r.json()["repositories"], serde_json::json!(["up/load"]));

    // Deletion: a tag, a manifest (its tags go too), a blob link.
    assert_eq!(
        http(p, "DELETE", "/v2/up/load/manifests/t5", &[], b"").status,
        202
    );
    assert_eq!(get(p, "/v2/up/load/manifests/t5").status, 404);
    assert_eq!(get(p, "/v2/up/load/manifests/t4").status, 200);
    let r = http(
        p,
        "DELETE",
        &format!("/v2/up/load/manifests/{md}"),
        &[],
        b"",
    );
    assert_eq!(r.status, 202);
    assert_eq!(get(p, &format!("/v2/up/load/manifests/{md}")).status, 404);
    let tags = get(p, "/v2/up/load/tags/list").json();
    assert_eq!(tags["tags"], serde_json::json!(["docker", "multi"]));
    assert_eq!(
        http(p, "DELETE", &format!("/v2/mounted/blobs/{d}"), &[], b"").status,
        202
    );
    assert_eq!(
        http(p, "HEAD", &format!("/v2/mounted/blobs/{d}"), &[], b"").status,
        404
    );
    assert_eq!(
        http(p, "DELETE", &format!("/v2/mounted/blobs/{d}"), &[], b"").code(),
        "BLOB_UNKNOWN"
    );
    // Still served where it is linked.
    assert_eq!(
        http(p, "HEAD", &format!("/v2/up/load/blobs/{d}"), &[], b"").status,
        200
    );
    s.assert_consistent();
}

fn write_config(dir: &Path, extra: serde_json::Value) -> PathBuf {
    let hash = bcrypt::hash(rc::PASS, 4).unwrap();
    let mut cfg = serde_json::json!({
        "users": {"alice": {"password_hash": hash}, "bob": {"password_hash": hash}},
        "access": [
            {"repository": "alice/*", "users": ["alice"], "actions": ["pull", "push", "delete"]},
            {"repository": "public/*", "users": ["anonymous"], "actions": ["pull"]},
            {"repository": "public/*", "users": ["alice"], "actions": ["push"]},
            {"repository": "*", "users": ["bob"], "actions": ["pull"]},
        ],
    });
    if let serde_json::Value::Object(m) = extra {
        for (k, v) in m {
            cfg[k] = v;
        }
    }
    let p = dir.join("config.json");
    std::fs::write(&p, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    p
}

fn token(p: u16, auth: Option<&str>, scope: &str) -> (u16, serde_json::Value) {
    let mut h = Vec::new();
    if let Some(a) = auth {
        h.push(("Authorization", a));
    }
    let r = http(
        p,
        "GET",
        &format!("/token?service=berth-registry&scope={scope}"),
        &h,
        b"",
    );
    let j = if r.status == 200 {
        r.json()
    } else {
        serde_json::Value::Null
    };
    (r.status, j)
}

fn claims(tok: &str) -> serde_json::Value {
    let part = tok.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap(),
    )
    .unwrap()
}

/// Accounts, permissions, the token flow (skopeo and Berth's client), denials.
#[test]
fn auth_tokens_permissions_and_denials() {
    if skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), serde_json::json!({"admins": ["alice"]}));
    let s = Server::start(&tmp.path().join("root"), Some(&cfg));
    let p = s.port;
    let alice = basic("alice", rc::PASS);
    let bob = basic("bob", rc::PASS);

    // The challenge.
    let r = get(p, "/v2/");
    assert_eq!(r.status, 401);
    assert_eq!(
        r.h("www-authenticate"),
        Some(
            format!("Bearer realm=\"http://127.0.0.1:{p}/token\",service=\"berth-registry\"")
                .as_str()
        )
    );
    let r = http(p, "HEAD", "/v2/alice/app/manifests/v1", &[], b"");
    assert_eq!(r.status, 401);
    assert!(r
        .h("www-authenticate")
        .unwrap()
        .ends_with("scope=\"repository:alice/app:pull\""));
    assert_eq!(
        http(p, "GET", "/v2/", &[("Authorization", &alice)], b"").status,
        200
    );
    let r = http(
        p,
        "GET",
        "/v2/",
        &[("Authorization", &basic("alice", "wrong"))],
        b"",
    );
    assert_eq!((r.status, r.code().as_str()), (401, "UNAUTHORIZED"));

    // Tokens grant only the permitted subset.
    let (st, j) = token(p, Some(&alice), "repository:alice/app:pull,push,delete");
    assert_eq!(st, 200);
    let c = claims(j["token"].as_str().unwrap());
    assert_eq!(c["sub"], "alice");
    assert_eq!(
        c["access"][0]["actions"],
        serde_json::json!(["pull", "push", "delete"])
    );
    let (_, j) = token(p, Some(&bob), "repository:alice/app:pull,push");
    let bob_tok = j["token"].as_str().unwrap().to_string();
    assert_eq!(
        claims(&bob_tok)["access"][0]["actions"],
        serde_json::json!(["pull"])
    );
    let (_, j) = token(p, None, "repository:alice/app:pull");
    assert_eq!(
        claims(j["token"].as_str().unwrap())["access"][0]["actions"],
        serde_json::json!([])
    );
    assert_eq!(
        token(p, Some(&basic("bob", "nope")), "repository:x:pull").0,
        401
    );
    // The OAuth2 password grant.
    let form = format!(
        "grant_type=password&username=alice&password={}&service=berth-registry&scope=repository%3Aalice%2Fapp%3Apull&client_id=test",
        rc::PASS.replace(' ', "+")
    );
    let r = http(
        p,
        "POST",
        "/token",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        form.as_bytes(),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.json()["access_token"].as_str().is_some());

    // skopeo with credentials pushes (token flow), without them it is refused.
    let img = rc::multilayer_image("amd64");
    let layout = tmp.path().join("layout");
    img.write_oci(&layout, "t");
    let creds = format!("alice:{}", rc::PASS);
    let (ok, err) = skopeo(&[
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        "--dest-creds",
        &creds,
        &format!("oci:{}:t", layout.display()),
        &format!("docker://{}/alice/app:v1", s.host()),
    ]);
    assert!(ok, "{err}");
    let (ok, _) = skopeo(&[
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        &format!("oci:{}:t", layout.display()),
        &format!("docker://{}/alice/app:v2", s.host()),
    ]);
    assert!(!ok, "anonymous push accepted");
    let bob_creds = format!("bob:{}", rc::PASS);
    let (ok, err) = skopeo(&[
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        "--dest-creds",
        &bob_creds,
        &format!("oci:{}:t", layout.display()),
        &format!("docker://{}/alice/app:v3", s.host()),
    ]);
    assert!(!ok, "bob may not push");
    assert!(err.contains("denied") || err.contains("403"), "{err}");
    // bob pulls with skopeo; anonymous pulls only public/*.
    let (ok, err) = skopeo(&[
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        "--src-creds",
        &bob_creds,
        &format!("docker://{}/alice/app:v1", s.host()),
        &format!("oci:{}:x", tmp.path().join("bob-out").display()),
    ]);
    assert!(ok, "{err}");
    let (ok, _) = skopeo(&[
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        &format!("docker://{}/alice/app:v1", s.host()),
        &format!("oci:{}:x", tmp.path().join("anon-out").display()),
    ]);
    assert!(!ok, "anonymous pull of alice/app accepted");
    let (ok, err) = skopeo(&[
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        "--dest-creds",
        &creds,
        &format!("oci:{}:t", layout.display()),
        &format!("docker://{}/public/app:v1", s.host()),
    ]);
    assert!(ok, "{err}");
    let (ok, err) = skopeo(&[
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        &format!("docker://{}/public/app:v1", s.host()),
        &format!("oci:{}:x", tmp.path().join("anon-pub").display()),
    ]);
    assert!(ok, "anonymous pull of public/app: {err}");

    // Berth's client: login, push, pull.
    let c = client(tmp.path());
    c.login(&s.host(), "alice", rc::PASS).unwrap();
    let small = rc::random_image(3, 16);
    let src = BlobStore::open(tmp.path().join("src")).unwrap();
    small.write_store(&src);
    let r = Reference::parse(&format!("{}/alice/small:1", s.host())).unwrap();
    assert_eq!(
        c.push(&r, &small.manifest, &src, &NoProgress)
            .unwrap()
            .digest,
        small.manifest_digest()
    );
    let local = tempfile::tempdir().unwrap();
    let store = BlobStore::open(local.path().join("store")).unwrap();
    let snap = CopySnapshotter::open(&local.path().join("snap")).unwrap();
    c.pull(&r, &Platform::host(), &store, &snap, &NoProgress)
        .unwrap();

    // Denials with basic auth and tokens.
    let m = "/v2/alice/app/manifests/v1".to_string();
    let r = http(p, "DELETE", &m, &[("Authorization", &bob)], b"");
    assert_eq!((r.status, r.code().as_str()), (403, "DENIED"));
    let bearer = format!("Bearer {bob_tok}");
    assert_eq!(
        http(p, "GET", &m, &[("Authorization", &bearer)], b"").status,
        200
    );
    let r = http(
        p,
        "POST",
        "/v2/alice/app/blobs/uploads/",
        &[("Authorization", &bearer)],
        b"",
    );
    assert_eq!((r.status, r.code().as_str()), (403, "DENIED"));
    // A token for one repository does not open another (alice may, so: insufficient scope).
    let (_, j) = token(p, Some(&alice), "repository:alice/app:pull");
    let at = format!("Bearer {}", j["token"].as_str().unwrap());
    let r = http(
        p,
        "GET",
        "/v2/alice/small/tags/list",
        &[("Authorization", &at)],
        b"",
    );
    assert_eq!(r.status, 401);
    assert!(r
        .h("www-authenticate")
        .unwrap()
        .contains("insufficient_scope"));
    let r = http(p, "GET", &m, &[("Authorization", "Bearer a.b.c")], b"");
    assert_eq!(r.status, 401);
    assert!(r.h("www-authenticate").unwrap().contains("invalid_token"));
    // Catalog: per user.
    let r = get(p, "/v2/_catalog");
    assert_eq!(r.status, 401);
    let r = http(p, "GET", "/v2/_catalog", &[("Authorization", &bob)], b"");
    assert_eq!(
        r.json()["repositories"],
        serde_json::json!(["alice/app", "alice/small", "public/app"])
    );
    let (_, j) = token(p, Some(&alice), "registry:catalog:*");
    let r = http(
        p,
        "GET",
        "/v2/_catalog",
        &[(
            "Authorization",
            &format!("Bearer {}", j["token"].as_str().unwrap()),
        )],
        b"",
    );
    assert_eq!(
        r.json()["repositories"],
        serde_json::json!(["alice/app", "alice/small", "public/app"])
    );
    // The web page: anonymous sees public/ only; the permissions table lists who may what.
    let ui = String::from_utf8(get(p, "/ui/").body).unwrap();
    assert!(
        ui.contains("public/app") && !ui.contains("alice/app"),
        "{ui}"
    );
    let ui =
        String::from_utf8(http(p, "GET", "/ui/", &[("Authorization", &alice)], b"").body).unwrap();
    assert!(ui.contains("alice/app"), "{ui}");
    assert_eq!(get(p, "/ui/login").status, 401);
    let perms = String::from_utf8(
        http(
            p,
            "GET",
            "/ui/permissions",
            &[("Authorization", &alice)],
            b"",
        )
        .body,
    )
    .unwrap();
    assert!(
        perms.contains("<td>alice/app</td>") && perms.contains("pull, push, delete"),
        "{perms}"
    );
    // Audit: who did what.
    let audit = std::fs::read_to_string(s.root.join("audit.log")).unwrap();
    assert!(audit.lines().any(|l| {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        v["user"] == "alice" && v["action"] == "push" && v["kind"] == "manifest"
    }));
    assert!(audit.lines().any(|l| {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        v["user"] == "bob" && v["action"] == "pull" && v["repository"] == "alice/app"
    }));
}

/// Limits: upload size, concurrent uploads, stalled bodies.
#[test]
fn limits_refuse_and_change_nothing() {
    if skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("open.json");
    std::fs::write(
        &cfg,
        serde_json::to_vec(&serde_json::json!({
            "access": [{"repository": "*", "users": ["anonymous"], "actions": ["*"]}],
            "limits": {"max_upload_bytes": 100000, "max_concurrent_uploads": 1, "idle_timeout_seconds": 3},
        }))
        .unwrap(),
    )
    .unwrap();
    let s = Server::start(&tmp.path().join("root"), Some(&cfg));
    let p = s.port;
    let big = pseudo_random(9, 150_000);
    let r = http(
        p,
        "POST",
        &format!("/v2/lim/blobs/uploads/?digest={}", Digest::of_bytes(&big)),
        &[("Expect", "100-continue")],
        &big,
    );
    assert_eq!((r.status, r.code().as_str()), (413, "SIZE_INVALID"));
    // Streamed (no Content-Length): cut off at the limit too.
    let r = http(p, "POST", "/v2/lim/blobs/uploads/", &[], b"");
    let loc = r.h("location").unwrap().to_string();
    let mut body = Vec::new();
    for piece in big.chunks(20_000) {
        body.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        body.extend_from_slice(piece);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let r = http(p, "PATCH", &loc, &[("Transfer-Encoding", "chunked")], &body);
    assert_eq!(r.status, 413);
    assert_eq!(get(p, &loc).status, 404, "the oversized upload is gone");
    assert!(s.blobs().is_empty());

    // One upload at a time: a second one, while the first is receiving, gets 429.
    let r = http(p, "POST", "/v2/lim/blobs/uploads/", &[], b"");
    let loc2 = r.h("location").unwrap().to_string();
    // (Retried with a fresh upload when the probe took the slot first: the slow request then
    // got the 429, or, when it came after the probe, stalled and got the 400.)
    let mut slow = None;
    for _ in 0..10 {
        let r = http(p, "POST", "/v2/lim/blobs/uploads/", &[], b"");
        let loc1 = r.h("location").unwrap().to_string();
        let mut c = TcpStream::connect(("127.0.0.1", p)).unwrap();
        write!(
            c,
            "PATCH {loc1} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 1000\r\n\r\n"
        )
        .unwrap();
        c.write_all(&[1u8; 10]).unwrap();
        c.flush().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let r = http(p, "PATCH", &loc2, &[], b"abc");
        if r.status == 429 {
            assert_eq!(r.code(), "TOOMANYREQUESTS");
            slow = Some((c, loc1));
            break;
        }
        assert_eq!(r.status, 202, "{r:?}");
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let r = read_resp(c, false);
        assert!(r.status == 429 || r.status == 400, "{r:?}");
    }
    let (slow, loc1) = slow.expect("no 429 while another upload was receiving");
    // The stalled body times out (idle timeout 3 s): the server answers and frees the slot;
    // what arrived stays in the upload, which can be resumed.
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let r = read_resp(slow, false);
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(get(p, &loc1).h("range"), Some("0-9"));
    let r = http(p, "PATCH", &loc1, &[("Content-Range", "10-12")], b"xyz");
    assert_eq!(r.status, 202, "{r:?}");
    assert!(s.blobs().is_empty());
}

/// The server killed (SIGKILL) while a PATCH is streaming: after a restart the store is
/// consistent, the partial upload is not a blob, and the upload can be resumed and finished.
#[test]
fn kill_during_upload_leaves_consistent_store_and_resumes() {
    if skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let mut s = Server::start(&root, None);
    let data = pseudo_random(42, 4 << 20);
    let d = Digest::of_bytes(&data);
    // Something complete first.
    let small = put_blob(s.port, "crash/test", b"complete blob", &[]);
    let r = http(s.port, "POST", "/v2/crash/test/blobs/uploads/", &[], b"");
    let loc = r.h("location").unwrap().to_string();
    let id = r.h("docker-upload-uuid").unwrap().to_string();
    let r = http(
        s.port,
        "PATCH",
        &loc,
        &[("Content-Range", "0-99999")],
        &data[..100_000],
    );
    assert_eq!(r.status, 202);
    // A PATCH that announces the rest but sends only part of it, then the server dies.
    let mut conn = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    write!(
        conn,
        "PATCH {loc} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        data.len() - 100_000
    )
    .unwrap();
    conn.write_all(&data[100_000..2_600_000]).unwrap();
    conn.flush().unwrap();
    let part = root.join("uploads").join(&id).join("data");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0) <= 100_000 {
        assert!(Instant::now() < deadline, "upload data never grew");
        std::thread::sleep(Duration::from_millis(10));
    }
    s.kill();
    drop(conn);
    assert!(!s.blobs().contains(&d.hex().to_string()));

    let s = Server::start(&root, None);
    s.assert_consistent();
    assert_eq!(s.blobs(), vec![small.hex().to_string()]);
    assert_eq!(
        get(s.port, &format!("/v2/crash/test/blobs/{small}")).body,
        b"complete blob"
    );
    // The upload resumes from what reached the disk.
    let r = get(s.port, &loc);
    assert_eq!(r.status, 204);
    let range = r.h("range").unwrap().to_string();
    let have: usize = range.strip_prefix("0-").unwrap().parse::<usize>().unwrap() + 1;
    assert!(have > 100_000 && have <= 2_600_000, "{range}");
    assert_eq!(std::fs::read(&part).unwrap(), &data[..have]);
    let cr = format!("{have}-{}", data.len() - 1);
    let r = http(
        s.port,
        "PATCH",
        &loc,
        &[("Content-Range", &cr)],
        &data[have..],
    );
    assert_eq!(r.status, 202, "{r:?}");
    let r = http(s.port, "PUT", &format!("{loc}?digest={d}"), &[], b"");
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(get(s.port, &format!("/v2/crash/test/blobs/{d}")).body, data);
    s.assert_consistent();
    assert!(std::fs::read_dir(root.join("uploads"))
        .unwrap()
        .next()
        .is_none());
}

fn gc(root: &Path, extra: &[&str]) -> String {
    let out = Command::new(BERTH)
        .args(["registry", "gc", "--root"])
        .arg(root)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// gc removes exactly the blobs no manifest references, while the server runs.
#[test]
fn gc_removes_only_unreferenced_blobs() {
    if skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let s = Server::start(&root, None);
    let a = rc::multilayer_image("amd64");
    let b = rc::random_image(11, 32);
    a.seed(&s.host(), "gc/a:1", None);
    // b only as the child of an index.
    let idx = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": mt::OCI_INDEX,
        "manifests": [{"mediaType": mt::OCI_MANIFEST, "digest": b.manifest_digest().to_string(), "size": b.manifest.len()}],
    }))
    .unwrap();
    b.seed(&s.host(), "gc/idx:child", None);
    assert_eq!(
        put_manifest(s.port, "gc/idx", "list", mt::OCI_INDEX, &idx).status,
        201
    );
    // The index's child manifest entry is deleted: the index still keeps b's blobs alive.
    let r = http(
        s.port,
        "DELETE",
        &format!("/v2/gc/idx/manifests/{}", b.manifest_digest()),
        &[],
        b"",
    );
    assert_eq!(r.status, 202);
    // c: pushed then deleted; its unique layer becomes garbage.
    let c = rc::random_image(12, 32);
    c.seed(&s.host(), "gc/c:1", None);
    let r = http(
        s.port,
        "DELETE",
        &format!("/v2/gc/c/manifests/{}", c.manifest_digest()),
        &[],
        b"",
    );
    assert_eq!(r.status, 202);
    let stray = put_blob(s.port, "gc/c", b"stray upload, never referenced", &[]);
    let mut garbage_extra: Vec<String> = Vec::new();

    // Default grace period: nothing is old enough.
    let out = gc(&root, &[]);
    assert!(out.contains("removed 0 "), "{out}");
    // Safe while serving: two old unreferenced blobs; a client HEADs one of them (as a pusher
    // does before deciding to skip its upload): that one is young again and spared.
    let old1 = put_blob(s.port, "gc/c", b"old unreferenced one", &[]);
    let old2 = put_blob(s.port, "gc/c", b"old unreferenced two", &[]);
    for d in [&old1, &old2] {
        let st = Command::new("touch")
            .args(["-m", "-d", "3 hours ago"])
            .arg(root.join("blobs/sha256").join(d.hex()))
            .status()
            .unwrap();
        assert!(st.success());
    }
    let r = http(s.port, "HEAD", &format!("/v2/gc/c/blobs/{old1}"), &[], b"");
    assert_eq!(r.status, 200);
    let out = gc(&root, &["--grace-seconds", "3600"]);
    assert!(out.contains(&format!("removed {old2}")), "{out}");
    assert!(!out.contains(&old1.to_string()), "{out}");
    assert_eq!(
        http(s.port, "HEAD", &format!("/v2/gc/c/blobs/{old2}"), &[], b"").status,
        404
    );
    garbage_extra.push(old1.hex().to_string());
    let before = s.blobs();
    // Dry run with no grace: reports, removes nothing.
    let out = gc(&root, &["--grace-seconds", "0", "--dry-run"]);
    assert!(out.contains("would remove"), "{out}");
    assert_eq!(s.blobs(), before);
    let out = gc(&root, &["--grace-seconds", "0"]);
    let mut garbage: Vec<String> = vec![
        c.manifest_digest().hex().to_string(),
        c.config_digest().hex().to_string(),
        stray.hex().to_string(),
    ];
    garbage.extend(c.layers.iter().map(|l| l.digest().hex().to_string()));
    garbage.extend(garbage_extra);
    garbage.sort();
    garbage.dedup();
    let after = s.blobs();
    let mut removed: Vec<String> = before
        .iter()
        .filter(|x| !after.contains(x))
        .cloned()
        .collect();
    removed.sort();
    assert_eq!(removed, garbage, "{out}");
    for img in [&a, &b] {
        for blob in img.blobs() {
            assert!(
                after.contains(&Digest::of_bytes(&blob).hex().to_string()),
                "referenced blob removed"
            );
        }
    }
    // While gc sweeps (exclusive gc lock), a HEAD waits: it cannot be told "exists" about a
    // blob being deleted.
    let lock = std::fs::File::open(root.join("gc.lock")).unwrap();
    use std::os::fd::AsRawFd as _;
    // SAFETY: flock on a descriptor we own; released by the LOCK_UN below or on close.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    let layer = a.layers[0].digest();
    let port = s.port;
    let head = std::thread::spawn(move || {
        http(port, "HEAD", &format!("/v2/gc/a/blobs/{layer}"), &[], b"").status
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(!head.is_finished(), "HEAD answered while gc held the lock");
    // SAFETY: as above.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_UN) }, 0);
    assert_eq!(head.join().unwrap(), 200);
    // Everything still pulls.
    let (ok, err) = skopeo(&[
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        &format!("docker://{}/gc/a:1", s.host()),
        &format!("oci:{}:x", tmp.path().join("o").display()),
    ]);
    assert!(ok, "{err}");
    assert_eq!(get(s.port, "/v2/gc/idx/manifests/list").body, idx);
    s.assert_consistent();

    // --delete-untagged: an image whose tag moved on is forgotten with its own blobs; an
    // artifact referring to the image now tagged stays.
    let d1 = rc::random_image(31, 16);
    let d2 = rc::random_image(32, 16);
    d1.seed(&s.host(), "gc/moving:latest", None);
    d2.seed(&s.host(), "gc/moving:latest", None);
    let ed = put_blob(s.port, "gc/moving", b"{}", &[]);
    let art = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": mt::OCI_MANIFEST, "artifactType": "application/vnd.example.sig",
        "config": {"mediaType": mt::OCI_EMPTY, "digest": ed.to_string(), "size": 2},
        "layers": [{"mediaType": mt::OCI_EMPTY, "digest": ed.to_string(), "size": 2}],
        "subject": {"mediaType": mt::OCI_MANIFEST, "digest": d2.manifest_digest().to_string(), "size": d2.manifest.len()},
    }))
    .unwrap();
    let ad = Digest::of_bytes(&art);
    assert_eq!(
        put_manifest(s.port, "gc/moving", &ad.to_string(), mt::OCI_MANIFEST, &art).status,
        201
    );
    let d1_layer = d1.layers[0].digest().hex().to_string();
    gc(&root, &["--grace-seconds", "0"]);
    assert!(
        s.blobs().contains(&d1_layer),
        "untagged kept without the flag"
    );
    let out = gc(
        &root,
        &["--grace-seconds", "0", "--delete-untagged", "--dry-run"],
    );
    assert!(out.contains("1 untagged manifests to forget"), "{out}");
    assert!(s.blobs().contains(&d1_layer));
    let out = gc(&root, &["--grace-seconds", "0", "--delete-untagged"]);
    assert!(out.contains("1 untagged manifests forgotten"), "{out}");
    let blobs = s.blobs();
    assert!(!blobs.contains(&d1_layer), "{out}");
    for b in d2.blobs().iter().chain([&art]) {
        assert!(
            blobs.contains(&Digest::of_bytes(b).hex().to_string()),
            "{out}"
        );
    }
    let m = |d: &Digest| get(s.port, &format!("/v2/gc/moving/manifests/{d}")).status;
    assert_eq!(m(&d1.manifest_digest()), 404);
    assert_eq!(m(&d2.manifest_digest()), 200);
    assert_eq!(m(&ad), 200);
    let refs = get(
        s.port,
        &format!("/v2/gc/moving/referrers/{}", d2.manifest_digest()),
    )
    .json();
    assert_eq!(refs["manifests"][0]["digest"], ad.to_string());
    s.assert_consistent();
}

/// HTTPS with a given certificate.
#[test]
fn tls_with_given_certificate() {
    if skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (cert, key) = (tmp.path().join("cert.pem"), tmp.path().join("key.pem"));
    let st = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output();
    match st {
        Ok(o) if o.status.success() => {}
        _ => {
            eprintln!("SKIP: openssl is needed to make a test certificate");
            return;
        }
    }
    let s = Server::start_with(&tmp.path().join("root"), None, Some((&cert, &key)));
    let img = rc::random_image(5, 8);
    let layout = tmp.path().join("layout");
    img.write_oci(&layout, "t");
    let (ok, err) = skopeo(&[
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        &format!("oci:{}:t", layout.display()),
        &format!("docker://{}/tls/app:1", s.host()),
    ]);
    assert!(ok, "{err}");
    // Verified against the certificate.
    let certs = tmp.path().join("certs.d");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(&cert, certs.join("ca.crt")).unwrap();
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--cert-dir"])
        .arg(&certs)
        .arg(format!("docker://{}/tls/app:1", s.host()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, img.manifest);
    // Plain HTTP on the TLS port is not served.
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let _ = c.read_to_end(&mut buf);
    assert!(!buf.starts_with(b"HTTP/1.1 200"));
}

/// The web page in a real browser (headless Chromium): repositories, tags, layers, config,
/// with HTML from image configs shown as text.
#[test]
fn web_page_in_headless_chromium() {
    if skip() {
        return;
    }
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let Some(chromium) = chromium else {
        eprintln!("SKIP: chromium is needed for the web page test (apt-get install chromium)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("root"), None);
    let mut img = rc::multilayer_image("amd64");
    // A config with markup in it: must come out as text.
    let mut cfg: serde_json::Value = serde_json::from_slice(&img.config).unwrap();
    cfg["config"]["Labels"] = serde_json::json!({"evil": "<script>document.title='pwned'</script><b id=\"inject\">x</b>"});
    img.config = serde_json::to_vec(&cfg).unwrap();
    let mut man: serde_json::Value = serde_json::from_slice(&img.manifest).unwrap();
    man["config"]["digest"] = Digest::of_bytes(&img.config).to_string().into();
    man["config"]["size"] = img.config.len().into();
    img.manifest = serde_json::to_vec(&man).unwrap();
    img.seed(&s.host(), "web/app:v1", None);
    img.seed(&s.host(), "web/app:v2", None);
    let md = img.manifest_digest();
    let dump = |path: &str| -> String {
        let profile = tempfile::tempdir().unwrap();
        let out = Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("--dump-dom")
            .arg(format!("http://{}{path}", s.host()))
            .stderr(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let index = dump("/ui/");
    assert!(index.contains("href=\"/ui/repo/web/app\""), "{index}");
    let repo = dump("/ui/repo/web/app");
    assert!(
        repo.contains("<td class=\"tag\">v1</td>") && repo.contains("<td class=\"tag\">v2</td>"),
        "{repo}"
    );
    assert!(repo.contains(&md.to_string()), "{repo}");
    let page = dump(&format!("/ui/repo/web/app/manifest/{md}"));
    for l in &img.layers {
        assert!(
            page.contains(&l.digest().to_string()),
            "layer missing: {page}"
        );
    }
    assert!(page.contains(&img.config_digest().to_string()));
    assert!(page.contains("&lt;script&gt;"), "{page}");
    assert!(
        !page.contains("<b id="),
        "markup from the config was rendered: {page}"
    );
    assert!(!page.contains("<title>pwned"), "{page}");
    let perms = dump("/ui/permissions");
    assert!(perms.contains("No access control"), "{perms}");
}

/// The same raw requests, including wrong ones, against our server and docker-registry: the
/// same status codes, error codes and bodies.
#[test]
fn same_answers_as_docker_registry_for_raw_requests() {
    if skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ours = Server::start(&tmp.path().join("root"), None);
    let theirs = rc::Registry::start(false);
    let img = rc::multilayer_image("amd64");
    let layer = img.layers[0].digest();
    let unknown = Digest::of_bytes(b"nope");
    let missing = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": mt::OCI_MANIFEST,
        "config": {"mediaType": mt::OCI_CONFIG, "digest": img.config_digest().to_string(), "size": img.config.len()},
        "layers": [{"mediaType": mt::OCI_LAYER_GZIP, "digest": unknown.to_string(), "size": 4}],
    }))
    .unwrap();
    let mut results = Vec::new();
    for port in [ours.port, theirs.port] {
        let host = format!("127.0.0.1:{port}");
        img.seed(&host, "test/app:v1", None);
        img.seed(&host, "test/app:v2", None);
        let mut out: Vec<(String, u16, String, Vec<u8>)> = Vec::new();
        let mut rec = |what: &str, r: Resp, keep_body: bool| {
            let code = if r.status >= 400 && !r.body.is_empty() {
                r.code()
            } else {
                String::new()
            };
            out.push((
                what.to_string(),
                r.status,
                code,
                if keep_body {
                    r.body.trim_ascii_end().to_vec()
                } else {
                    Vec::new()
                },
            ));
        };
        rec("base", get(port, "/v2/"), false);
        rec(
            "unknown tag",
            get(port, "/v2/test/app/manifests/nope"),
            false,
        );
        rec(
            "unknown blob",
            get(port, &format!("/v2/test/app/blobs/{unknown}")),
            false,
        );
        rec(
            "head unknown blob",
            http(
                port,
                "HEAD",
                &format!("/v2/test/app/blobs/{unknown}"),
                &[],
                b"",
            ),
            false,
        );
        rec(
            "unknown repo tags",
            get(port, "/v2/nothere/tags/list"),
            false,
        );
        rec("tags", get(port, "/v2/test/app/tags/list"), true);
        // (distribution 2.8 ignores `n` on tags/list: pagination is compared with the catalog.)
        rec("catalog page", get(port, "/v2/_catalog?n=1"), true);
        rec(
            "manifest",
            http(
                port,
                "GET",
                "/v2/test/app/manifests/v1",
                &[("Accept", mt::OCI_MANIFEST)],
                b"",
            ),
            true,
        );
        rec(
            "range",
            http(
                port,
                "GET",
                &format!("/v2/test/app/blobs/{layer}"),
                &[("Range", "bytes=10-99")],
                b"",
            ),
            true,
        );
        let r = http(port, "POST", "/v2/test/app/blobs/uploads/", &[], b"");
        let loc = r.h("location").unwrap().to_string();
        let loc = loc
            .split_once(&host)
            .map(|x| x.1.to_string())
            .unwrap_or(loc);
        let sep = if loc.contains('?') { '&' } else { '?' };
        rec(
            "wrong digest",
            http(
                port,
                "PUT",
                &format!("{loc}{sep}digest={unknown}"),
                &[("Content-Type", "application/octet-stream")],
                b"something",
            ),
            false,
        );
        rec(
            "invalid json",
            put_manifest(port, "test/app", "bad", mt::OCI_MANIFEST, b"{oops"),
            false,
        );
        rec(
            "missing blob",
            put_manifest(port, "test/app", "bad", mt::OCI_MANIFEST, &missing),
            false,
        );
        let r = http(port, "POST", "/v2/test/app/blobs/uploads/", &[], b"");
        let loc = r.h("location").unwrap().to_string();
        let loc = loc
            .split_once(&host)
            .map(|x| x.1.to_string())
            .unwrap_or(loc);
        rec("upload start", r, false);
        let r = http(port, "PATCH", &loc, &[("Content-Range", "0-3")], b"abcd");
        // (distribution keeps the upload's state in the URL: use the latest one.)
        let loc = r.h("location").unwrap().to_string();
        let loc = loc
            .split_once(&host)
            .map(|x| x.1.to_string())
            .unwrap_or(loc);
        rec("patch", r, false);
        let status = get(port, &loc);
        assert_eq!(status.h("range"), Some("0-3"), "{port} {loc} {status:?}");
        rec("upload status", status, false);
        rec(
            "mount",
            http(
                port,
                "POST",
                &format!("/v2/other/blobs/uploads/?mount={layer}&from=test/app"),
                &[],
                b"",
            ),
            false,
        );
        rec(
            "delete manifest",
            http(
                port,
                "DELETE",
                &format!("/v2/test/app/manifests/{}", img.manifest_digest()),
                &[],
                b"",
            ),
            false,
        );
        rec("deleted", get(port, "/v2/test/app/manifests/v1"), false);
        results.push(out);
    }
    let differ: Vec<String> = results[0]
        .iter()
        .zip(&results[1])
        .filter(|(a, b)| a != b)
        .map(|(a, b)| {
            format!(
                "{}: ours {} {} {:?}, docker-registry {} {} {:?}",
                a.0,
                a.1,
                a.2,
                String::from_utf8_lossy(&a.3),
                b.1,
                b.2,
                String::from_utf8_lossy(&b.3)
            )
        })
        .collect();
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}

/// A multi-platform image (OCI index) copied with `skopeo copy --all` to both registries:
/// the same index and children; Berth's client pulls the host's platform from ours.
#[test]
fn multi_platform_index_with_skopeo_and_berth_client() {
    if skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ours = Server::start(&tmp.path().join("root"), None);
    let theirs = rc::Registry::start(false);
    let host_arch = Platform::host().architecture.clone();
    let other_arch = if host_arch == "arm64" {
        "amd64"
    } else {
        "arm64"
    };
    let here = rc::random_image(21, 24);
    let mut there = rc::random_image(22, 24);
    let mut cfg: serde_json::Value = serde_json::from_slice(&there.config).unwrap();
    cfg["architecture"] = other_arch.into();
    there.config = serde_json::to_vec(&cfg).unwrap();
    let mut man: serde_json::Value = serde_json::from_slice(&there.manifest).unwrap();
    man["config"]["digest"] = Digest::of_bytes(&there.config).to_string().into();
    man["config"]["size"] = there.config.len().into();
    there.manifest = serde_json::to_vec(&man).unwrap();
    let here_cfg: serde_json::Value = serde_json::from_slice(&here.config).unwrap();
    assert_eq!(here_cfg["architecture"], "amd64");
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": mt::OCI_INDEX,
        "manifests": [
            {"mediaType": mt::OCI_MANIFEST, "digest": here.manifest_digest().to_string(), "size": here.manifest.len(),
             "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": mt::OCI_MANIFEST, "digest": there.manifest_digest().to_string(), "size": there.manifest.len(),
             "platform": {"architecture": other_arch, "os": "linux"}},
        ],
    }))
    .unwrap();
    let layout = tmp.path().join("layout");
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    for b in here
        .blobs()
        .into_iter()
        .chain(there.blobs())
        .chain([index.clone()])
    {
        std::fs::write(
            layout.join("blobs/sha256").join(Digest::of_bytes(&b).hex()),
            &b,
        )
        .unwrap();
    }
    let top = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": mt::OCI_INDEX, "digest": Digest::of_bytes(&index).to_string(), "size": index.len(),
        "annotations": {"org.opencontainers.image.ref.name": "multi"}}]});
    std::fs::write(layout.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    let mut seen = Vec::new();
    for host in [ours.host(), theirs.host()] {
        let (ok, err) = skopeo(&[
            "copy",
            "--quiet",
            "--all",
            "--preserve-digests",
            "--dest-tls-verify=false",
            &format!("oci:{}:multi", layout.display()),
            &format!("docker://{host}/multi/app:1"),
        ]);
        assert!(ok, "{err}");
        let (ok, raw, err) = rc::skopeo_inspect_raw(&format!("{host}/multi/app:1"));
        assert!(ok, "{err}");
        let (ok, child, err) =
            rc::skopeo_inspect_raw(&format!("{host}/multi/app@{}", there.manifest_digest()));
        assert!(ok, "{err}");
        seen.push((raw, child));
    }
    // Docker schema 2 (skopeo converts the OCI image on the way).
    let single = tmp.path().join("single");
    here.write_oci(&single, "one");
    for host in [ours.host(), theirs.host()] {
        let (ok, err) = skopeo(&[
            "copy",
            "--quiet",
            "--format",
            "v2s2",
            "--dest-tls-verify=false",
            &format!("oci:{}:one", single.display()),
            &format!("docker://{host}/docker/app:1"),
        ]);
        assert!(ok, "{err}");
        let (ok, raw, err) = rc::skopeo_inspect_raw(&format!("{host}/docker/app:1"));
        assert!(ok, "{err}");
        let v: serde_json::Value = serde_json::from_str(&raw).unwrap();
        assert_eq!(v["mediaType"], mt::DOCKER_MANIFEST);
        seen.push((raw, String::new()));
    }
    assert_eq!(seen[2], seen[3]);
    let (ok, err) = skopeo(&[
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        &format!("docker://{}/docker/app:1", ours.host()),
        &format!("oci:{}:x", tmp.path().join("back").display()),
    ]);
    assert!(ok, "{err}");
    assert_eq!(seen[0], seen[1]);
    assert_eq!(seen[0].0.as_bytes(), &index[..]);
    assert_eq!(seen[0].1.as_bytes(), &there.manifest[..]);
    if host_arch == "amd64" {
        let local = tempfile::tempdir().unwrap();
        let store = BlobStore::open(local.path().join("store")).unwrap();
        let snap = CopySnapshotter::open(&local.path().join("snap")).unwrap();
        let r = Reference::parse(&format!("{}/multi/app:1", ours.host())).unwrap();
        let pulled = client(tmp.path())
            .pull(&r, &Platform::host(), &store, &snap, &NoProgress)
            .unwrap();
        assert_eq!(pulled.manifest_digest, here.manifest_digest());
        assert_eq!(pulled.repo_digest, Digest::of_bytes(&index));
    }
    ours.assert_consistent();
}

/// Many clients pushing into the same repository at once: every tag lands, the metadata stays
/// whole, every blob is intact.
#[test]
fn concurrent_pushes_to_one_repository() {
    if skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("root"), None);
    let port = s.port;
    let shared = pseudo_random(77, 200_000);
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let shared = shared.clone();
            std::thread::spawn(move || {
                // The same layer from everyone, plus a config of one's own.
                let d = put_blob(port, "busy/repo", &shared, &[]);
                let cfg = format!(r#"{{"architecture":"amd64","os":"linux","n":{i}}}"#);
                let cd = put_blob(port, "busy/repo", cfg.as_bytes(), &[]);
                let man = serde_json::to_vec(&serde_json::json!({
                    "schemaVersion": 2, "mediaType": mt::OCI_MANIFEST,
                    "config": {"mediaType": mt::OCI_CONFIG, "digest": cd.to_string(), "size": cfg.len()},
                    "layers": [{"mediaType": mt::OCI_LAYER, "digest": d.to_string(), "size": shared.len()}],
                }))
                .unwrap();
                for t in 0..5 {
                    let r = put_manifest(port, "busy/repo", &format!("t{i}-{t}"), mt::OCI_MANIFEST, &man);
                    assert_eq!(r.status, 201, "{r:?}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let tags = get(port, "/v2/busy/repo/tags/list").json();
    assert_eq!(tags["tags"].as_array().unwrap().len(), 40, "{tags}");
    let meta: serde_json::Value = serde_json::from_slice(
        &std::fs::read(s.root.join("repositories/busy/repo/_meta.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(meta["manifests"].as_object().unwrap().len(), 8);
    s.assert_consistent();
}

/// Open upload sessions are capped: past the cap, starting one is 429 TOOMANYREQUESTS and
/// changes nothing; a cancelled session frees its place.
#[test]
fn open_upload_sessions_are_capped() {
    if skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("config.json");
    std::fs::write(
        &cfg,
        serde_json::to_vec(&serde_json::json!({
            "access": [{"repository": "*", "users": ["anonymous"], "actions": ["*"]}],
            "limits": {"max_open_uploads": 2},
        }))
        .unwrap(),
    )
    .unwrap();
    let s = Server::start(&tmp.path().join("root"), Some(&cfg));
    let p = s.port;
    let mut locs = Vec::new();
    for _ in 0..2 {
        let r = http(p, "POST", "/v2/cap/blobs/uploads/", &[], b"");
        assert_eq!(r.status, 202, "{r:?}");
        locs.push(r.h("location").unwrap().to_string());
    }
    let uploads = tmp.path().join("root/uploads");
    let count = || std::fs::read_dir(&uploads).unwrap().count();
    assert_eq!(count(), 2);
    let r = http(p, "POST", "/v2/cap/blobs/uploads/", &[], b"");
    assert_eq!((r.status, r.code().as_str()), (429, "TOOMANYREQUESTS"));
    // A monolithic upload is a session too.
    let r = http(
        p,
        "POST",
        &format!("/v2/cap/blobs/uploads/?digest={}", Digest::of_bytes(b"x")),
        &[],
        b"x",
    );
    assert_eq!(r.status, 429, "{r:?}");
    assert_eq!(count(), 2);
    assert!(s.blobs().is_empty());
    let r = http(p, "DELETE", &locs[0], &[], b"");
    assert_eq!(r.status, 204, "{r:?}");
    let r = http(p, "POST", "/v2/cap/blobs/uploads/", &[], b"");
    assert_eq!(r.status, 202, "{r:?}");
}

/// The lines of a server's audit log.
fn audit_lines(s: &Server) -> Vec<serde_json::Value> {
    std::fs::read_to_string(s.root.join("audit.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The permissions page lists every rule, user and repository: only administrators see it.
/// Anonymous visitors get a challenge (as `/v2/_catalog` gives them), other users 403.
#[test]
fn ui_permissions_only_for_admins() {
    if skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), serde_json::json!({"admins": ["alice"]}));
    let s = Server::start(&tmp.path().join("root"), Some(&cfg));
    let p = s.port;
    let alice = basic("alice", rc::PASS);
    let bob = basic("bob", rc::PASS);
    put_blob(
        p,
        "alice/secret-project",
        b"x",
        &[("Authorization", &alice)],
    );
    let leaks = |body: &[u8]| {
        let b = String::from_utf8_lossy(body);
        b.contains("secret-project") || b.contains("bob") || b.contains("alice/*")
    };

    assert_eq!(get(p, "/v2/_catalog").status, 401);
    let r = get(p, "/ui/permissions");
    assert_eq!(r.status, 401, "{r:?}");
    assert!(
        r.h("www-authenticate").unwrap().starts_with("Basic realm="),
        "{r:?}"
    );
    assert!(!leaks(&r.body), "{r:?}");
    let r = http(p, "GET", "/ui/permissions", &[("Authorization", &bob)], b"");
    assert_eq!(r.status, 403, "{r:?}");
    assert!(!leaks(&r.body), "{r:?}");
    let (_, j) = token(p, Some(&bob), "repository:alice/secret-project:pull");
    let bearer = format!("Bearer {}", j["token"].as_str().unwrap());
    let r = http(
        p,
        "GET",
        "/ui/permissions",
        &[("Authorization", &bearer)],
        b"",
    );
    assert_eq!(r.status, 403, "{r:?}");
    let r = http(
        p,
        "GET",
        "/ui/permissions",
        &[("Authorization", &basic("alice", "wrong"))],
        b"",
    );
    assert_eq!(r.status, 401, "{r:?}");
    assert!(!leaks(&r.body));
    // The administrator sees rules, users and repositories.
    let r = http(
        p,
        "GET",
        "/ui/permissions",
        &[("Authorization", &alice)],
        b"",
    );
    assert_eq!(r.status, 200, "{r:?}");
    let page = String::from_utf8(r.body).unwrap();
    assert!(
        page.contains("<td>alice/secret-project</td>")
            && page.contains("<th>bob</th>")
            && page.contains("<code>alice/*</code>"),
        "{page}"
    );
    // Only administrators are shown the link.
    let link = "href=\"/ui/permissions\"";
    let ui = |auth: Option<&str>| {
        let h: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
        String::from_utf8(http(p, "GET", "/ui/", &h, b"").body).unwrap()
    };
    assert!(ui(Some(&alice)).contains(link));
    assert!(!ui(Some(&bob)).contains(link));
    assert!(!ui(None).contains(link));
    // The refusals are in the audit log.
    let denied: Vec<(Option<String>, u64)> = audit_lines(&s)
        .iter()
        .filter(|v| v["action"] == "deny" && v["kind"] == "ui")
        .map(|v| {
            assert_eq!(v["reference"], "/ui/permissions");
            (
                v["user"].as_str().map(str::to_string),
                v["status"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        denied,
        [
            (None, 401),
            (Some("bob".to_string()), 403),
            (Some("bob".to_string()), 403)
        ]
    );
}

/// Open upload sessions are limited per identity (a signed-in user, or the client address of
/// anonymous requests): one client filling its quota does not stop anyone else's pushes.
#[test]
fn open_uploads_are_limited_per_identity() {
    if skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(
        tmp.path(),
        serde_json::json!({
            "access": [
                {"repository": "*", "users": ["*"], "actions": ["*"]},
                {"repository": "anon/*", "users": ["anonymous"], "actions": ["*"]},
            ],
            "limits": {"max_open_uploads": 20, "max_open_uploads_per_user": 2},
        }),
    );
    let s = Server::start(&tmp.path().join("root"), Some(&cfg));
    let p = s.port;
    let alice = basic("alice", rc::PASS);
    let bob = basic("bob", rc::PASS);
    let count = || std::fs::read_dir(s.root.join("uploads")).unwrap().count();
    let open = |auth: &str| {
        http(
            p,
            "POST",
            "/v2/up/x/blobs/uploads/",
            &[("Authorization", auth)],
            b"",
        )
    };
    let mut mine = Vec::new();
    for _ in 0..2 {
        let r = open(&alice);
        assert_eq!(r.status, 202, "{r:?}");
        mine.push(r.h("location").unwrap().to_string());
    }
    let r = open(&alice);
    assert_eq!(
        (r.status, r.code().as_str()),
        (429, "TOOMANYREQUESTS"),
        "{r:?}"
    );
    assert!(r.h("retry-after").is_some(), "{r:?}");
    assert!(r.json()["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("this client"));
    // A monolithic upload is a session too; a token for alice counts as alice.
    let data = b"monolithic";
    let r = http(
        p,
        "POST",
        &format!("/v2/up/x/blobs/uploads/?digest={}", Digest::of_bytes(data)),
        &[("Authorization", &alice)],
        data,
    );
    assert_eq!(r.status, 429, "{r:?}");
    let (_, j) = token(p, Some(&alice), "repository:up/x:pull,push");
    let r = open(&format!("Bearer {}", j["token"].as_str().unwrap()));
    assert_eq!(r.status, 429, "{r:?}");
    assert_eq!(count(), 2);
    // Others are not affected.
    let r = open(&bob);
    assert_eq!(r.status, 202, "{r:?}");
    put_blob(p, "up/y", b"bob's layer", &[("Authorization", &bob)]);
    // Anonymous clients: counted per address.
    let anon = |src: [u8; 4]| http_from(src, p, "POST", "/v2/anon/x/blobs/uploads/", &[], b"");
    for _ in 0..2 {
        assert_eq!(anon([127, 0, 0, 1]).status, 202);
    }
    assert_eq!(anon([127, 0, 0, 1]).status, 429);
    assert_eq!(anon([127, 0, 0, 2]).status, 202);
    // Finishing or cancelling frees a place.
    let r = http(p, "DELETE", &mine[0], &[("Authorization", &alice)], b"");
    assert_eq!(r.status, 204, "{r:?}");
    let r = http(
        p,
        "PUT",
        &format!("{}?digest={}", mine[1], Digest::of_bytes(b"")),
        &[("Authorization", &alice)],
        b"",
    );
    assert_eq!(r.status, 201, "{r:?}");
    for _ in 0..2 {
        assert_eq!(open(&alice).status, 202);
    }
    assert_eq!(open(&alice).status, 429);
}

/// An upload session that receives nothing for the idle timeout is removed with its data, and
/// its place in the quota is free again; sessions that keep receiving data stay.
#[test]
fn idle_upload_sessions_expire() {
    if skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("config.json");
    std::fs::write(
        &cfg,
        serde_json::to_vec(&serde_json::json!({
            "access": [{"repository": "*", "users": ["anonymous"], "actions": ["*"]}],
            "limits": {"max_open_uploads_per_user": 2, "upload_idle_timeout_seconds": 2},
        }))
        .unwrap(),
    )
    .unwrap();
    let s = Server::start(&tmp.path().join("root"), Some(&cfg));
    let p = s.port;
    let start = |n: usize| {
        let r = http(p, "POST", "/v2/idle/x/blobs/uploads/", &[], b"");
        assert_eq!(r.status, 202, "session {n}: {r:?}");
        r.h("location").unwrap().to_string()
    };
    let idle = start(0);
    let busy = start(1);
    let idle_id = idle.rsplit('/').next().unwrap().to_string();
    assert!(s.root.join("uploads").join(&idle_id).join("data").exists());
    http(p, "PATCH", &idle, &[], b"some data");
    assert_eq!(
        http(p, "POST", "/v2/idle/x/blobs/uploads/", &[], b"").status,
        429
    );
    // `busy` receives a piece every half second; `idle` nothing.
    let mut body = Vec::new();
    let t0 = Instant::now();
    let mut gone_after = None;
    while t0.elapsed() < Duration::from_secs(15) {
        let piece = format!("piece {}\n", body.len());
        let r = http(
            p,
            "PATCH",
            &busy,
            &[(
                "Content-Range",
                &format!("{}-{}", body.len(), body.len() + piece.len() - 1),
            )],
            piece.as_bytes(),
        );
        assert_eq!(r.status, 202, "the busy session expired: {r:?}");
        body.extend_from_slice(piece.as_bytes());
        let r = get(p, &idle);
        if r.status == 404 {
            assert_eq!(r.code(), "BLOB_UPLOAD_UNKNOWN");
            gone_after = Some(t0.elapsed());
            break;
        }
        assert_eq!(r.status, 204, "{r:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let gone_after = gone_after.expect("the idle session was not removed within 15 s");
    assert!(gone_after >= Duration::from_secs(1), "{gone_after:?}");
    assert!(
        !s.root.join("uploads").join(&idle_id).exists(),
        "its data stayed"
    );
    // Its place is free; the busy one is intact and can be finished.
    start(2);
    let r = http(
        p,
        "PUT",
        &format!("{busy}?digest={}", Digest::of_bytes(&body)),
        &[],
        b"",
    );
    assert_eq!(r.status, 201, "{r:?}");
    let expired: Vec<serde_json::Value> = audit_lines(&s)
        .into_iter()
        .filter(|v| v["action"] == "expire")
        .collect();
    assert_eq!(expired.len(), 1, "{expired:?}");
    assert_eq!(expired[0]["kind"], "upload");
    assert_eq!(expired[0]["reference"], idle_id.as_str());
    assert_eq!(expired[0]["repository"], "idle/x");
}

/// CPU time (user + system) a process used so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name (which may contain spaces) in parentheses.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis((f[11] + f[12]) * 1000 / hz)
}

/// Failed sign-ins are limited per client address (token bucket): past the allowance,
/// password checks get 429 with `Retry-After` and bcrypt does not run (measured as the
/// server's CPU time); successful sign-ins cost nothing, cached credentials and tokens keep
/// working, other clients are not affected.
#[test]
fn failed_sign_ins_are_rate_limited_per_client() {
    if skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // A costly hash for the flood, so that bcrypt runs show in the CPU time.
    let costly = bcrypt::hash("carol's password", 10).unwrap();
    let mut cfg: serde_json::Value = serde_json::from_slice(
        &std::fs::read(write_config(
            tmp.path(),
            serde_json::json!({
                "limits": {"auth_failures_burst": 5, "auth_failures_per_minute": 1},
            }),
        ))
        .unwrap(),
    )
    .unwrap();
    cfg["users"]["carol"] = serde_json::json!({ "password_hash": costly });
    let cfg_path = tmp.path().join("config.json");
    std::fs::write(&cfg_path, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let s = Server::start(&tmp.path().join("root"), Some(&cfg_path));
    let p = s.port;
    let pid = s.child.id();
    let alice = basic("alice", rc::PASS);
    let bob = basic("bob", rc::PASS);
    let wrong = basic("carol", "guess");
    let v2 = |auth: &str| http(p, "GET", "/v2/", &[("Authorization", auth)], b"");

    // Successes never count.
    for _ in 0..20 {
        assert_eq!(v2(&alice).status, 200);
    }
    let (st, j) = token(p, Some(&alice), "repository:alice/app:pull");
    assert_eq!(st, 200);
    let alice_token = format!("Bearer {}", j["token"].as_str().unwrap());
    // The allowance: five failures, each checked with bcrypt.
    let cpu0 = cpu_time(pid);
    for _ in 0..5 {
        let r = v2(&wrong);
        assert_eq!((r.status, r.code().as_str()), (401, "UNAUTHORIZED"));
    }
    let with_bcrypt = cpu_time(pid) - cpu0;
    // Then 429 with Retry-After, on every route that checks passwords, without bcrypt.
    let cpu1 = cpu_time(pid);
    for i in 0..50 {
        let r = match i % 3 {
            0 => v2(&wrong),
            1 => http(
                p,
                "GET",
                "/v2/alice/app/tags/list",
                &[("Authorization", &basic("nobody", "x"))],
                b"",
            ),
            _ => {
                let r = http(
                    p,
                    "GET",
                    "/token?service=berth-registry&scope=repository:alice/app:pull",
                    &[("Authorization", &wrong)],
                    b"",
                );
                assert_eq!(r.json()["error"], "too_many_requests", "{r:?}");
                r
            }
        };
        assert_eq!(
            (r.status, r.code().as_str()),
            (429, "TOOMANYREQUESTS"),
            "{r:?}"
        );
        let wait: u64 = r.h("retry-after").unwrap().parse().unwrap();
        assert!((1..=60).contains(&wait), "{r:?}");
    }
    let limited = cpu_time(pid) - cpu1;
    let form = "grant_type=password&username=carol&password=guess&service=berth-registry";
    let r = http(
        p,
        "POST",
        "/token",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        form.as_bytes(),
    );
    assert_eq!(r.status, 429, "{r:?}");
    let r = http(p, "GET", "/ui/", &[("Authorization", &wrong)], b"");
    assert_eq!(r.status, 429, "{r:?}");
    eprintln!(
        "server CPU: 5 failed sign-ins (bcrypt cost 10) {with_bcrypt:?}, 50 refused over the limit {limited:?}"
    );
    assert!(
        limited < with_bcrypt,
        "50 refused attempts cost {limited:?}, 5 checked ones {with_bcrypt:?}: bcrypt ran"
    );
    // Cached credentials and tokens still work; an uncached password waits like a wrong one.
    assert_eq!(v2(&alice).status, 200);
    assert_eq!(
        http(
            p,
            "GET",
            "/v2/alice/app/tags/list",
            &[("Authorization", &alice_token)],
            b""
        )
        .status,
        404
    );
    assert_eq!(v2(&bob).status, 429);
    // Another client is not affected.
    let from2 = |auth: &str| {
        http_from(
            [127, 0, 0, 2],
            p,
            "GET",
            "/v2/",
            &[("Authorization", auth)],
            b"",
        )
    };
    assert_eq!(from2(&wrong).status, 401);
    assert_eq!(from2(&bob).status, 200);
    // Audit: the failures that were checked, not the refusals.
    let denied = audit_lines(&s)
        .iter()
        .filter(|v| v["action"] == "deny" && v["kind"] == "credentials")
        .map(|v| {
            (
                v["user"].as_str().unwrap_or("").to_string(),
                v["remote"]
                    .as_str()
                    .unwrap()
                    .split(':')
                    .next()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect::<Vec<_>>();
    let mut want = vec![("carol".to_string(), "127.0.0.1".to_string()); 5];
    want.push(("carol".to_string(), "127.0.0.2".to_string()));
    assert_eq!(denied, want);
}

/// The audit log records denials (401/403, with the scope asked for), tokens issued (with
/// what they grant) and deletions of tags, manifests, blobs and upload sessions, in the same
/// line format as pushes and pulls.
#[test]
fn audit_log_records_denials_tokens_and_deletions() {
    if skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), serde_json::json!({}));
    let s = Server::start(&tmp.path().join("root"), Some(&cfg));
    let p = s.port;
    let alice = basic("alice", rc::PASS);
    let bob = basic("bob", rc::PASS);
    let auth = [("Authorization", alice.as_str())];

    // An image of alice's, to delete later.
    let cfg_blob = br#"{"architecture":"amd64","os":"linux"}"#;
    let layer = pseudo_random(5, 1000);
    let cd = put_blob(p, "alice/app", cfg_blob, &auth);
    let ld = put_blob(p, "alice/app", &layer, &auth);
    let man = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": mt::OCI_MANIFEST,
        "config": {"mediaType": mt::OCI_CONFIG, "digest": cd.to_string(), "size": cfg_blob.len()},
        "layers": [{"mediaType": mt::OCI_LAYER, "digest": ld.to_string(), "size": layer.len()}],
    }))
    .unwrap();
    let r = http(
        p,
        "PUT",
        "/v2/alice/app/manifests/v1",
        &[
            ("Authorization", &alice),
            ("Content-Type", mt::OCI_MANIFEST),
        ],
        &man,
    );
    assert_eq!(r.status, 201, "{r:?}");
    let md = Digest::of_bytes(&man);

    // Denials.
    assert_eq!(get(p, "/v2/alice/app/manifests/v1").status, 401);
    let r = http(
        p,
        "DELETE",
        &format!("/v2/alice/app/manifests/{md}"),
        &[("Authorization", &bob)],
        b"",
    );
    assert_eq!(r.status, 403);
    assert_eq!(v2_status(p, &basic("alice", "wrong")), 401);
    assert_eq!(v2_status(p, "Bearer not.a.token"), 401);
    assert_eq!(get(p, "/v2/_catalog").status, 401);
    // Tokens.
    let (st, _) = token(p, Some(&alice), "repository:alice/app:pull,push");
    assert_eq!(st, 200);
    let (st, _) = token(
        p,
        Some(&bob),
        "repository:alice/app:pull,push&scope=registry:catalog:*",
    );
    assert_eq!(st, 200);
    // Deletions.
    let r = http(p, "POST", "/v2/alice/app/blobs/uploads/", &auth, b"");
    let upload = r.h("location").unwrap().to_string();
    let upload_id = upload.rsplit('/').next().unwrap().to_string();
    assert_eq!(http(p, "DELETE", &upload, &auth, b"").status, 204);
    assert_eq!(
        http(p, "DELETE", "/v2/alice/app/manifests/v1", &auth, b"").status,
        202
    );
    assert_eq!(
        http(
            p,
            "DELETE",
            &format!("/v2/alice/app/manifests/{md}"),
            &auth,
            b""
        )
        .status,
        202
    );
    assert_eq!(
        http(
            p,
            "DELETE",
            &format!("/v2/alice/app/blobs/{ld}"),
            &auth,
            b""
        )
        .status,
        202
    );

    let lines = audit_lines(&s);
    for v in &lines {
        for k in [
            "time",
            "user",
            "remote",
            "action",
            "kind",
            "repository",
            "reference",
            "digest",
        ] {
            assert!(v.get(k).is_some(), "{k} missing: {v}");
        }
        assert!(
            v["remote"].as_str().unwrap().starts_with("127.0.0.1:"),
            "{v}"
        );
    }
    let find = |f: &dyn Fn(&serde_json::Value) -> bool| -> Vec<&serde_json::Value> {
        lines.iter().filter(|v| f(v)).collect()
    };
    let deny = |kind: &str| find(&|v| v["action"] == "deny" && v["kind"] == kind);
    let repo = deny("repository");
    assert_eq!(repo.len(), 2, "{repo:?}");
    assert_eq!(
        (
            &repo[0]["user"],
            &repo[0]["status"],
            &repo[0]["scope"],
            &repo[0]["repository"]
        ),
        (
            &serde_json::Value::Null,
            &serde_json::json!(401),
            &serde_json::json!("repository:alice/app:pull"),
            &serde_json::json!("alice/app")
        )
    );
    assert_eq!(
        (&repo[1]["user"], &repo[1]["status"], &repo[1]["scope"]),
        (
            &serde_json::json!("bob"),
            &serde_json::json!(403),
            &serde_json::json!("repository:alice/app:delete")
        )
    );
    let creds = deny("credentials");
    assert_eq!(creds.len(), 2, "{creds:?}");
    assert_eq!(
        (&creds[0]["user"], &creds[0]["status"]),
        (&serde_json::json!("alice"), &serde_json::json!(401))
    );
    assert_eq!(creds[1]["user"], serde_json::Value::Null);
    let cat = deny("catalog");
    assert_eq!(cat.len(), 1);
    assert_eq!(cat[0]["scope"], "registry:catalog:*");
    let tokens = find(&|v| v["action"] == "token");
    assert_eq!(tokens.len(), 2, "{tokens:?}");
    assert_eq!(
        (&tokens[0]["user"], &tokens[0]["scope"]),
        (
            &serde_json::json!("alice"),
            &serde_json::json!("repository:alice/app:pull,push")
        )
    );
    assert_eq!(
        (&tokens[1]["user"], &tokens[1]["scope"]),
        (
            &serde_json::json!("bob"),
            &serde_json::json!("repository:alice/app:pull registry:catalog:*")
        )
    );
    assert!(tokens.iter().all(|v| v.get("status").is_none()));
    let deleted: Vec<(String, String, String)> = find(&|v| v["action"] == "delete")
        .iter()
        .map(|v| {
            assert_eq!(v["user"], "alice");
            (
                v["kind"].as_str().unwrap().to_string(),
                v["reference"].as_str().unwrap_or("").to_string(),
                v["digest"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        deleted,
        [
            ("upload".to_string(), upload_id, String::new()),
            ("tag".to_string(), "v1".to_string(), String::new()),
            ("manifest".to_string(), md.to_string(), md.to_string()),
            ("blob".to_string(), String::new(), ld.to_string()),
        ]
    );
    // Pushes are still there, in the same format.
    assert_eq!(
        find(&|v| v["action"] == "push" && v["kind"] == "blob").len(),
        2
    );
    assert_eq!(
        find(&|v| v["action"] == "push" && v["kind"] == "manifest").len(),
        1
    );
}

fn v2_status(port: u16, auth: &str) -> u16 {
    http(port, "GET", "/v2/", &[("Authorization", auth)], b"").status
}
