//! Test helpers: a real `docker-registry` on 127.0.0.1, a tiny HTTP server that can fake
//! responses or forward to the registry (cutting connections, recording requests, acting as a
//! token service), and locally built images (OCI layouts, blob stores).
#![allow(dead_code, unused_imports)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_image::manifest::media_types as mt;
use berth_image::manifest::Platform;
use berth_image::snapshot::CopySnapshotter;
use berth_image::store::BlobStore;
use berth_image::Digest;
use berth_image::Reference;
use berth_registry::{
    Client, CredentialStore, NoProgress, Progress, PulledImage, PushedManifest, RegistryConfig,
};

pub use berth_testkit::registry::{DOCKER_REGISTRY, PASS, USER};
pub use berth_testkit::{free_port, require, require_programs, require_root, CommandRun};

pub const SKOPEO: &str = "skopeo";

/// A running `docker-registry` (berth-testkit's), killed on drop.
pub struct Registry(berth_testkit::DockerRegistry);

impl std::ops::Deref for Registry {
    type Target = berth_testkit::DockerRegistry;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Registry {
    /// With HTTP basic authentication of [`USER`]/[`PASS`] when `htpasswd`.
    pub fn start(htpasswd: bool) -> Self {
        Self(if htpasswd {
            berth_testkit::DockerRegistry::with_htpasswd()
        } else {
            berth_testkit::DockerRegistry::start()
        })
    }

    /// The data file of a blob in the registry's storage.
    pub fn blob_data(&self, d: &Digest) -> PathBuf {
        self.0.blob_data(d.hex())
    }
}

/// A blob store and a copy snapshotter in a temporary directory.
pub struct Local {
    pub dir: tempfile::TempDir,
    pub store: BlobStore,
    pub snap: CopySnapshotter,
}

impl Local {
    /// `client.pull` into this store and snapshotter, without progress.
    pub fn pull(
        &self,
        client: &Client,
        r: &Reference,
        platform: &Platform,
    ) -> berth_registry::Result<PulledImage> {
        client.pull(r, platform, &self.store, &self.snap, &NoProgress)
    }

    /// `client.pull` for this host's platform, reporting to `progress`.
    pub fn pull_progress(
        &self,
        client: &Client,
        r: &Reference,
        progress: &dyn Progress,
    ) -> berth_registry::Result<PulledImage> {
        client.pull(r, &Platform::host(), &self.store, &self.snap, progress)
    }

    /// [`Local::pull`] of `host/repo_tag` for this host's platform.
    pub fn pull_ref(
        &self,
        client: &Client,
        host: &str,
        repo_tag: &str,
    ) -> berth_registry::Result<PulledImage> {
        self.pull(client, &reference(host, repo_tag), &Platform::host())
    }

    /// `client.push` of a manifest whose blobs are in this store.
    pub fn push(
        &self,
        client: &Client,
        r: &Reference,
        manifest: &[u8],
        progress: &dyn Progress,
    ) -> berth_registry::Result<PushedManifest> {
        client.push(r, manifest, &self.store, progress)
    }
}

/// A [`local`] store and a client whose credentials live beside it.
pub fn local_client() -> (Local, Client) {
    let l = local();
    let client = Client::new(config(l.dir.path())).unwrap();
    (l, client)
}

pub fn local() -> Local {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path().join("store")).unwrap();
    let snap = CopySnapshotter::open(&dir.path().join("snap")).unwrap();
    Local { dir, store, snap }
}

pub fn platform(s: &str) -> Platform {
    Platform::parse(s).unwrap()
}

pub fn reference(host: &str, repo_tag: &str) -> Reference {
    Reference::parse(&format!("{host}/{repo_tag}")).unwrap()
}

/// A client config for tests: credentials in `dir`, small chunks.
pub fn config(dir: &Path) -> RegistryConfig {
    RegistryConfig {
        credentials: CredentialStore::at(dir.join("config.json")),
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(20),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------
// A tiny HTTP/1.1 server: one request per connection.

#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Req {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

pub enum Action {
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Forward to the backend (`host:port`); optionally cut the connection after this many
    /// bytes of the backend's response.
    Forward {
        backend: String,
        cut_after: Option<usize>,
        /// Wait this long before forwarding.
        delay: Duration,
        /// Send the response in pieces of this size with this pause between them.
        throttle: Option<(usize, Duration)>,
        /// Hold the rest of the response after this many bytes until the gate opens.
        gate: Option<Gate>,
    },
}

/// A pause in a forwarded response: after `after` bytes, nothing more is sent until `open()`
/// is true (or `timeout` has passed).
#[derive(Clone)]
pub struct Gate {
    pub after: usize,
    pub open: Arc<dyn Fn() -> bool + Send + Sync>,
    pub timeout: Duration,
}

/// Forwards unchanged.
pub fn forward(backend: &str) -> Action {
    Action::Forward {
        backend: backend.to_string(),
        cut_after: None,
        delay: Duration::ZERO,
        throttle: None,
        gate: None,
    }
}

pub type Handler = Arc<dyn Fn(&Req) -> Action + Send + Sync>;

pub struct TestServer {
    pub port: u16,
    pub log: Arc<Mutex<Vec<Req>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    pub fn start(handler: Handler) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let log: Arc<Mutex<Vec<Req>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (l2, s2) = (log.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((sock, _)) => {
                        let h = handler.clone();
                        let l = l2.clone();
                        std::thread::spawn(move || {
                            let _ = serve_one(sock, &h, &l);
                        });
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => break,
                }
            }
        });
        Self {
            port,
            log,
            stop,
            thread: Some(thread),
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn requests(&self) -> Vec<Req> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_one(sock: TcpStream, handler: &Handler, log: &Mutex<Vec<Req>>) -> std::io::Result<()> {
    sock.set_nonblocking(false)?;
    sock.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(sock.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut headers = HashMap::new();
    let mut raw_headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end().to_string();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
        raw_headers.push(h);
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body)?;
    let req = Req {
        method,
        path,
        headers,
        body,
        at: Instant::now(),
    };
    log.lock().unwrap().push(req.clone());
    let mut out = sock;
    match handler(&req) {
        Action::Respond {
            status,
            headers,
            body,
        } => {
            let mut resp = format!(
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                body.len()
            );
            for (k, v) in headers {
                resp.push_str(&format!("{k}: {v}\r\n"));
            }
            resp.push_str("\r\n");
            out.write_all(resp.as_bytes())?;
            if req.method != "HEAD" {
                out.write_all(&body)?;
            }
        }
        Action::Forward {
            backend,
            cut_after,
            delay,
            throttle,
            gate,
        } => {
            std::thread::sleep(delay);
            let mut up = TcpStream::connect(&backend)?;
            let mut head = format!("{} {} HTTP/1.1\r\n", req.method, req.path);
            for h in &raw_headers {
                let lower = h.to_ascii_lowercase();
                if lower.starts_with("connection:") || lower.starts_with("authorization:") {
                    continue;
                }
                head.push_str(h);
                head.push_str("\r\n");
            }
            head.push_str("Connection: close\r\n\r\n");
            up.write_all(head.as_bytes())?;
            up.write_all(&req.body)?;
            let mut buf = vec![0u8; throttle.map(|t| t.0).unwrap_or(16384)];
            let mut sent = 0usize;
            loop {
                if let Some((_, pause)) = throttle {
                    if sent > 0 {
                        std::thread::sleep(pause);
                    }
                }
                let n = up.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                let mut n = n;
                if let Some(c) = cut_after {
                    if sent + n >= c {
                        n = c - sent;
                        out.write_all(&buf[..n])?;
                        out.flush()?;
                        // Abort: reset rather than a clean close.
                        let _ = out.shutdown(Shutdown::Both);
                        return Ok(());
                    }
                }
                if let Some(g) = gate
                    .as_ref()
                    .filter(|g| sent < g.after && sent + n >= g.after)
                {
                    let first = g.after - sent;
                    out.write_all(&buf[..first])?;
                    out.flush()?;
                    let deadline = std::time::Instant::now() + g.timeout;
                    while !(g.open)() && std::time::Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    out.write_all(&buf[first..n])?;
                } else {
                    out.write_all(&buf[..n])?;
                }
                sent += n;
            }
        }
    }
    out.flush()?;
    let _ = out.shutdown(Shutdown::Write);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Images built locally.

pub struct Layer {
    pub blob: Vec<u8>,
    pub media_type: &'static str,
    pub diff_id: Digest,
}

impl Layer {
    pub fn digest(&self) -> Digest {
        Digest::of_bytes(&self.blob)
    }
}

pub enum Entry<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8], u32),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
}

pub fn tar_of(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        match e {
            Entry::Dir(p) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, p, std::io::empty()).unwrap();
            }
            Entry::File(p, data, mode) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, *data).unwrap();
            }
            Entry::Symlink(p, t) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, p, t).unwrap();
            }
            Entry::Hardlink(p, t) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_mode(0o644);
                h.set_size(0);
                b.append_link(&mut h, p, t).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn layer_gz(entries: &[Entry<'_>]) -> Layer {
    let t = tar_of(entries);
    Layer {
        diff_id: Digest::of_bytes(&t),
        blob: gzip(&t),
        media_type: mt::OCI_LAYER_GZIP,
    }
}

pub fn layer_plain(entries: &[Entry<'_>]) -> Layer {
    let t = tar_of(entries);
    Layer {
        diff_id: Digest::of_bytes(&t),
        blob: t,
        media_type: mt::OCI_LAYER,
    }
}

pub struct Image {
    pub layers: Vec<Layer>,
    pub config: Vec<u8>,
    pub manifest: Vec<u8>,
}

impl Image {
    pub fn new(layers: Vec<Layer>, arch: &str) -> Self {
        let diff_ids: Vec<String> = layers.iter().map(|l| l.diff_id.to_string()).collect();
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": arch,
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": layers.iter().map(|_| serde_json::json!({"created_by": "test"})).collect::<Vec<_>>(),
        }))
        .unwrap();
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": mt::OCI_MANIFEST,
            "config": {"mediaType": mt::OCI_CONFIG, "digest": Digest::of_bytes(&config).to_string(), "size": config.len()},
            "layers": layers.iter().map(|l| serde_json::json!({
                "mediaType": l.media_type, "digest": l.digest().to_string(), "size": l.blob.len()
            })).collect::<Vec<_>>(),
        }))
        .unwrap();
        Self {
            layers,
            config,
            manifest,
        }
    }

    pub fn manifest_digest(&self) -> Digest {
        Digest::of_bytes(&self.manifest)
    }

    pub fn config_digest(&self) -> Digest {
        Digest::of_bytes(&self.config)
    }

    pub fn blobs(&self) -> Vec<Vec<u8>> {
        let mut v = vec![self.config.clone(), self.manifest.clone()];
        v.extend(self.layers.iter().map(|l| l.blob.clone()));
        v
    }

    /// Writes an OCI layout with this image tagged `tag`.
    pub fn write_oci(&self, dir: &Path, tag: &str) {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        for b in self.blobs() {
            std::fs::write(
                dir.join("blobs/sha256").join(Digest::of_bytes(&b).hex()),
                &b,
            )
            .unwrap();
        }
        let index = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": mt::OCI_MANIFEST,
                "digest": self.manifest_digest().to_string(),
                "size": self.manifest.len(),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }],
        });
        std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    }

    /// Puts every blob in a local store.
    pub fn write_store(&self, store: &BlobStore) {
        for b in self.blobs() {
            store.write_bytes(None, &b).unwrap();
        }
    }

    /// Seeds a registry with `skopeo copy` from an OCI layout.
    pub fn seed(&self, registry: &str, repo_tag: &str, creds: Option<&str>) {
        let d = tempfile::tempdir().unwrap();
        self.write_oci(d.path(), "t");
        let mut extra = vec!["--preserve-digests"];
        if let Some(c) = creds {
            extra.extend(["--dest-creds", c]);
        }
        berth_testkit::skopeo::copy(
            &format!("oci:{}:t", d.path().display()),
            &format!("docker://{registry}/{repo_tag}"),
            &extra,
        )
        .ok();
    }
}

/// The busybox binary's bytes.
pub fn busybox() -> Vec<u8> {
    std::fs::read("/bin/busybox").expect("/bin/busybox (busybox-static)")
}

/// A 3-layer image: busybox base (gzip), deletions and an opaque dir (gzip), a plain tar.
pub fn multilayer_image(arch: &str) -> Image {
    let bb = busybox();
    let l1 = layer_gz(&[
        Entry::Dir("bin"),
        Entry::File("bin/busybox", &bb, 0o755),
        Entry::Symlink("bin/sh", "busybox"),
        Entry::Symlink("bin/ls", "busybox"),
        Entry::Dir("etc"),
        Entry::File("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o644),
        Entry::Dir("data"),
        Entry::File("data/a", b"a", 0o644),
        Entry::File("data/b", b"b", 0o644),
        Entry::Hardlink("data/b2", "data/b"),
        Entry::Dir("data/sub"),
        Entry::File("data/sub/x", b"x", 0o644),
    ]);
    let l2 = layer_gz(&[
        Entry::Dir("data"),
        Entry::File("data/.wh.a", b"", 0o644),
        Entry::File("data/c", b"c", 0o644),
        Entry::Dir("data/sub"),
        Entry::File("data/sub/.wh..wh..opq", b"", 0o644),
        Entry::File("data/sub/y", b"y", 0o644),
    ]);
    let l3 = layer_plain(&[
        Entry::Dir("etc"),
        Entry::File("etc/hostname", b"berth\n", 0o644),
        Entry::Dir("data"),
        Entry::File("data/.wh.b2", b"", 0o644),
    ]);
    Image::new(vec![l1, l2, l3], arch)
}

/// A small single-layer image with `n` KiB of pseudo-random (incompressible) data.
pub fn random_image(seed: u64, kib: usize) -> Image {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut data = Vec::with_capacity(kib * 1024);
    while data.len() < kib * 1024 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    let name = format!("file-{seed}");
    let l = layer_gz(&[Entry::File(&name, &data, 0o644)]);
    Image::new(vec![l], "amd64")
}

/// `skopeo inspect --raw` as `(success, stdout, stderr)`, for the tests that include this
/// module by path (berth-cli's `registry_server`); these tests use [`berth_testkit::skopeo`].
pub fn skopeo_inspect_raw(image: &str) -> (bool, String, String) {
    let r = berth_testkit::skopeo::inspect_raw(image);
    (r.code == 0, r.stdout, r.stderr)
}
