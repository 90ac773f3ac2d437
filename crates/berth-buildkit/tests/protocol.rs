//! BuildKit's protocol end to end with a client of our own (runs everywhere, no buildx, no
//! root): a session that serves file sync over HTTP/2, a control `Solve` with the
//! `dockerfile.v0` frontend, the `Status` stream, the image in the store; and the file sync
//! receiver refusing paths that would leave its directory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use berth_buildkit::conn::H2Channel;
use berth_buildkit::filesync::{gomode, receive_dir, sync_dir, walk, Manifest, SyncRequest};
use berth_buildkit::proto::containerd::services::content::v1::{
    content_server::{Content, ContentServer},
    Info, InfoRequest, InfoResponse, ReadContentRequest, ReadContentResponse, WriteAction,
    WriteContentRequest, WriteContentResponse,
};
use berth_buildkit::proto::fsutil::types::{packet::PacketType, Packet, Stat};
use berth_buildkit::proto::moby::buildkit::v1 as ctl;
use berth_buildkit::proto::moby::filesync::v1::file_sync_server::{FileSync, FileSyncServer};
use berth_buildkit::session::SessionInfo;
use berth_buildkit::{Backend, BuildKit, RegistryAuth, TransferError};
use berth_image::image_store::ImageStore;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};

struct TestBackend {
    store: Arc<ImageStore>,
}

impl Backend for TestBackend {
    fn store(&self) -> Arc<ImageStore> {
        self.store.clone()
    }
    fn runtime(&self) -> PathBuf {
        PathBuf::from("/nonexistent/runtime")
    }
    fn runtime_root(&self) -> PathBuf {
        PathBuf::from("/nonexistent/root")
    }
    fn cgroup_parent(&self) -> String {
        "/berth-protocol-test".into()
    }
    fn pull(
        &self,
        name: &str,
        _: Option<&berth_image::manifest::Platform>,
        _: Option<&RegistryAuth>,
    ) -> Result<String, TransferError> {
        Err(TransferError::Registry(
            format!("no registry in this test ({name})").into(),
        ))
    }
    fn push(&self, name: &str, _: Option<&RegistryAuth>) -> Result<String, TransferError> {
        Err(TransferError::Registry(
            format!("no registry in this test ({name})").into(),
        ))
    }
    fn push_index(
        &self,
        name: &str,
        _: &[berth_image::Digest],
        _: Option<&RegistryAuth>,
    ) -> Result<String, TransferError> {
        Err(TransferError::Registry(
            format!("no registry in this test ({name})").into(),
        ))
    }
    fn image_event(&self, _: &str, _: &str) {}
    fn run_networks(&self) -> Option<&dyn berth_build::builder::RunNetworks> {
        None
    }
    fn version(&self) -> String {
        "test".into()
    }
}

/// What the test's file sync server sends: a directory (by walking it), or raw stats with
/// file contents by path.
#[derive(Clone)]
enum Source {
    Dir(HashMap<String, PathBuf>),
    Raw(Vec<(Stat, Vec<u8>)>),
    /// Directories, and the paths of the files the receiver asks for, logged.
    Logged(HashMap<String, PathBuf>, Requested),
}

type Requested = Arc<std::sync::Mutex<Vec<String>>>;

#[derive(Clone)]
struct Fs(Source);

type PacketStream = Pin<Box<dyn Stream<Item = Result<Packet, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl FileSync for Fs {
    type DiffCopyStream = PacketStream;

    /// fsutil's sender: stats, then the data of each requested file, then FIN.
    async fn diff_copy(
        &self,
        req: tonic::Request<tonic::Streaming<Packet>>,
    ) -> Result<tonic::Response<Self::DiffCopyStream>, tonic::Status> {
        let dir = req
            .metadata()
            .get("dir-name")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let includes: Vec<String> = req
            .metadata()
            .get_all("include-patterns")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect();
        let log = match &self.0 {
            Source::Logged(_, log) => Some(log.clone()),
            _ => None,
        };
        let entries: Vec<(Stat, Vec<u8>)> = match &self.0 {
            Source::Dir(dirs) | Source::Logged(dirs, _) => {
                let root = dirs
                    .get(&dir)
                    .ok_or_else(|| tonic::Status::not_found(format!("no dir {dir}")))?;
                walk(root)
                    .unwrap()
                    .into_iter()
                    .filter(|(_, st)| includes.is_empty() || includes.contains(&st.path))
                    .map(|(host, st)| {
                        let data = if st.mode & gomode::TYPE == 0 {
                            std::fs::read(host).unwrap()
                        } else {
                            vec![]
                        };
                        (st, data)
                    })
                    .collect()
            }
            Source::Raw(list) => list.clone(),
        };
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            for (st, _) in &entries {
                let _ = tx
                    .send(Ok(Packet {
                        r#type: PacketType::PacketStat as i32,
                        stat: Some(st.clone()),
                        ..Default::default()
                    }))
                    .await;
            }
            let _ = tx
                .send(Ok(Packet {
                    r#type: PacketType::PacketStat as i32,
                    ..Default::default()
                }))
                .await;
            while let Some(Ok(p)) = inbound.next().await {
                if p.r#type == PacketType::PacketReq as i32 {
                    if let Some(log) = &log {
                        let path = entries[p.id as usize].0.path.clone();
                        log.lock().unwrap().push(path);
                    }
                    let data = entries[p.id as usize].1.clone();
                    if !data.is_empty() {
                        let _ = tx
                            .send(Ok(Packet {
                                r#type: PacketType::PacketData as i32,
                                id: p.id,
                                data,
                                ..Default::default()
                            }))
                            .await;
                    }
                    let _ = tx
                        .send(Ok(Packet {
                            r#type: PacketType::PacketData as i32,
                            id: p.id,
                            ..Default::default()
                        }))
                        .await;
                } else if p.r#type == PacketType::PacketFin as i32 {
                    let _ = tx
                        .send(Ok(Packet {
                            r#type: PacketType::PacketFin as i32,
                            ..Default::default()
                        }))
                        .await;
                    break;
                }
            }
        });
        Ok(tonic::Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// A session served by `fs` on one end of an in-memory pipe, the daemon on the other.
async fn session(bk: &Arc<BuildKit>, id: &str, fs: Fs) {
    session_with(bk, id, fs, None).await
}

/// The same, also serving a content store.
async fn session_with(bk: &Arc<BuildKit>, id: &str, fs: Fs, content: Option<Blobs>) {
    session_keyed(bk, id, "", fs, content).await
}

/// The same, with a shared key (buildx's: the same for every build of a directory).
async fn session_keyed(
    bk: &Arc<BuildKit>,
    id: &str,
    shared_key: &str,
    fs: Fs,
    content: Option<Blobs>,
) {
    let (client, daemon) = tokio::io::duplex(1 << 20);
    let mut routes = tonic::service::Routes::new(FileSyncServer::new(fs));
    let mut methods = vec!["/moby.filesync.v1.FileSync/DiffCopy".to_string()];
    if let Some(c) = content {
        routes = routes.add_service(ContentServer::new(c));
        for m in ["Info", "Read", "Write"] {
            methods.push(format!("/containerd.services.content.v1.Content/{m}"));
        }
    }
    tokio::spawn(async move {
        let _ = berth_buildkit::conn::serve(client, routes).await;
    });
    let info = SessionInfo {
        id: id.into(),
        name: "test".into(),
        shared_key: shared_key.into(),
        methods: methods.into_iter().collect(),
    };
    tokio::spawn(bk.clone().serve_session(info, daemon));
}

/// A client's content store (containerd's API) in memory: blobs by digest, for the store
/// `local:<dir>` only.
#[derive(Clone, Default)]
struct Blobs {
    id: String,
    map: Arc<std::sync::Mutex<HashMap<String, Vec<u8>>>>,
}

impl Blobs {
    fn check(&self, md: &tonic::metadata::MetadataMap) -> Result<(), tonic::Status> {
        let id = md
            .get("buildkit-attachable-store-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if id == self.id {
            Ok(())
        } else {
            Err(tonic::Status::not_found(format!("unknown store {id}")))
        }
    }

    fn get(&self, d: &str) -> Option<Vec<u8>> {
        self.map.lock().unwrap().get(d).cloned()
    }

    /// The blob `d` asked for by a request of this store (NotFound otherwise).
    fn requested(
        &self,
        md: &tonic::metadata::MetadataMap,
        d: &str,
    ) -> Result<Vec<u8>, tonic::Status> {
        self.check(md)?;
        self.get(d)
            .ok_or_else(|| tonic::Status::not_found(d.to_string()))
    }
}

type ReadStream = Pin<Box<dyn Stream<Item = Result<ReadContentResponse, tonic::Status>> + Send>>;
type WriteStream = Pin<Box<dyn Stream<Item = Result<WriteContentResponse, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl Content for Blobs {
    type ReadStream = ReadStream;
    type WriteStream = WriteStream;

    async fn info(
        &self,
        req: tonic::Request<InfoRequest>,
    ) -> Result<tonic::Response<InfoResponse>, tonic::Status> {
        let data = self.requested(req.metadata(), &req.get_ref().digest)?;
        let d = req.into_inner().digest;
        Ok(tonic::Response::new(InfoResponse {
            info: Some(Info {
                digest: d,
                size: data.len() as i64,
                ..Default::default()
            }),
        }))
    }

    async fn read(
        &self,
        req: tonic::Request<ReadContentRequest>,
    ) -> Result<tonic::Response<ReadStream>, tonic::Status> {
        let data = self.requested(req.metadata(), &req.get_ref().digest)?;
        // In small pieces, as a real store sends them.
        let chunks: Vec<Result<ReadContentResponse, tonic::Status>> = data
            .chunks(100)
            .enumerate()
            .map(|(i, c)| {
                Ok(ReadContentResponse {
                    offset: (i * 100) as i64,
                    data: c.to_vec(),
                })
            })
            .collect();
        Ok(tonic::Response::new(Box::pin(tokio_stream::iter(chunks))))
    }

    /// containerd's protocol: every message answered; COMMIT checks the digest and size.
    async fn write(
        &self,
        req: tonic::Request<tonic::Streaming<WriteContentRequest>>,
    ) -> Result<tonic::Response<WriteStream>, tonic::Status> {
        self.check(req.metadata())?;
        let mut inbound = req.into_inner();
        let map = self.map.clone();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut expected = String::new();
            while let Some(Ok(m)) = inbound.next().await {
                if !m.expected.is_empty() {
                    expected = m.expected.clone();
                }
                if map.lock().unwrap().contains_key(&expected) {
                    let _ = tx
                        .send(Err(tonic::Status::already_exists(expected.clone())))
                        .await;
                    return;
                }
                if m.action == WriteAction::Write as i32 {
                    assert_eq!(m.offset as usize, buf.len(), "writes in order");
                    buf.extend_from_slice(&m.data);
                }
                let commit = m.action == WriteAction::Commit as i32;
                if commit {
                    use sha2::Digest;
                    let got = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&buf)));
                    if got != expected || m.total as usize != buf.len() {
                        let _ = tx
                            .send(Err(tonic::Status::failed_precondition(format!(
                                "got {got} ({} bytes), expected {expected} ({} bytes)",
                                buf.len(),
                                m.total
                            ))))
                            .await;
                        return;
                    }
                    map.lock()
                        .unwrap()
                        .insert(expected.clone(), std::mem::take(&mut buf));
                }
                let _ = tx
                    .send(Ok(WriteContentResponse {
                        action: m.action,
                        offset: buf.len() as i64,
                        digest: expected.clone(),
                        ..Default::default()
                    }))
                    .await;
                if commit {
                    return;
                }
            }
        });
        Ok(tonic::Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_cache_export_and_import_through_the_content_store() {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nENV A=1\nLABEL cached=yes\nCOPY f /f\n",
    )
    .unwrap();
    std::fs::write(ctx.path().join("f"), "some file content\n".repeat(50)).unwrap();
    let dirs: HashMap<String, PathBuf> = [
        ("context".to_string(), ctx.path().to_path_buf()),
        ("dockerfile".to_string(), ctx.path().to_path_buf()),
    ]
    .into_iter()
    .collect();
    let blobs = Blobs {
        id: "local:/cache/dir".into(),
        ..Default::default()
    };
    let entry = |kind: &str, attrs: &[(&str, &str)]| ctl::CacheOptionsEntry {
        r#type: kind.into(),
        attrs: attrs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    // Export: the image's blobs in the client's store, the manifest's descriptor returned.
    let (_data, _, bk) = buildkit();
    session_with(
        &bk,
        "sess-c1",
        Fs(Source::Dir(dirs.clone())),
        Some(blobs.clone()),
    )
    .await;
    let mut c = control(&bk).await;
    // A build exporting its cache to the client's store.
    let export = |r: &str, s: &str| ctl::SolveRequest {
        r#ref: r.into(),
        session: s.into(),
        frontend: "dockerfile.v0".into(),
        cache: Some(ctl::CacheOptions {
            exports: vec![entry("local", &[("dest", "/cache/dir")])],
            ..Default::default()
        }),
        ..Default::default()
    };
    let resp = c
        .solve(export("solve-c1", "sess-c1"))
        .await
        .unwrap()
        .into_inner();
    let id = resp.exporter_response["containerimage.config.digest"].clone();
    let desc: serde_json::Value =
        serde_json::from_str(&resp.exporter_response["cache.manifest"]).unwrap();
    let mdigest = desc["digest"].as_str().unwrap().to_string();
    let manifest = blobs
        .get(&mdigest)
        .expect("the manifest in the client's store");
    assert_eq!(desc["size"].as_u64().unwrap() as usize, manifest.len());
    let m: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(m["config"]["digest"], id.as_str());
    assert!(blobs.get(&id).is_some(), "the config");
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    assert!(blobs.get(layers[0]["digest"].as_str().unwrap()).is_some());
    // Written again: the store has every blob (AlreadyExists), the export still succeeds.
    session_with(
        &bk,
        "sess-c2",
        Fs(Source::Dir(dirs.clone())),
        Some(blobs.clone()),
    )
    .await;
    c.solve(export("solve-c2", "sess-c2")).await.unwrap();

    // Import into a fresh daemon: every step from the cache, so the very same image (its
    // config has the first build's creation times); the imported image itself is gone.
    let (_data2, store2, bk2) = buildkit();
    session_with(
        &bk2,
        "sess-c3",
        Fs(Source::Dir(dirs.clone())),
        Some(blobs.clone()),
    )
    .await;
    let mut c2 = control(&bk2).await;
    let solve = |r: &str, s: &str, imports| ctl::SolveRequest {
        r#ref: r.into(),
        session: s.into(),
        frontend: "dockerfile.v0".into(),
        exporters: moby_exporter("cached:1"),
        cache: Some(ctl::CacheOptions {
            imports,
            ..Default::default()
        }),
        ..Default::default()
    };
    let resp = c2
        .solve(solve(
            "solve-c3",
            "sess-c3",
            vec![entry(
                "local",
                &[("src", "/cache/dir"), ("digest", &mdigest)],
            )],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.exporter_response["containerimage.config.digest"], id);
    assert_eq!(store2.list().unwrap().len(), 1);
    // Without the cache, the same Dockerfile is another image (new creation times).
    let (_data3, _, bk3) = buildkit();
    session_with(&bk3, "sess-c4", Fs(Source::Dir(dirs)), Some(blobs.clone())).await;
    let resp = control(&bk3)
        .await
        .solve(solve(
            "solve-c4",
            "sess-c4",
            vec![entry(
                "local",
                &[
                    ("src", "/cache/dir"),
                    (
                        "digest",
                        "sha256:0000000000000000000000000000000000000000000000000000000000000000",
                    ),
                ],
            )],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(resp.exporter_response["containerimage.config.digest"], id);
}

/// A control client on a new `/grpc` connection.
/// A BuildKit service over a fresh image store (in the temporary directory returned with it).
fn buildkit() -> (tempfile::TempDir, Arc<ImageStore>, Arc<BuildKit>) {
    let data = tempfile::tempdir().unwrap();
    let store = Arc::new(ImageStore::open(data.path().join("data")).unwrap());
    let bk = BuildKit::new(Arc::new(TestBackend {
        store: store.clone(),
    }));
    (data, store, bk)
}

/// The `moby` exporter (the image store) naming the image `name`.
fn moby_exporter(name: &str) -> Vec<ctl::Exporter> {
    vec![ctl::Exporter {
        r#type: "moby".into(),
        attrs: [("name".to_string(), name.to_string())]
            .into_iter()
            .collect(),
    }]
}

async fn control(bk: &Arc<BuildKit>) -> ctl::control_client::ControlClient<H2Channel> {
    let (client, daemon) = tokio::io::duplex(1 << 20);
    tokio::spawn(bk.clone().serve_grpc(daemon));
    let (ch, _closed) = H2Channel::connect(client).await.unwrap();
    ctl::control_client::ControlClient::with_origin(ch, H2Channel::origin())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn solve_a_dockerfile_through_a_session_and_read_its_status() {
    let (_data, store, bk) = buildkit();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nARG V=1\nENV A=$V\nLABEL from=protocol\n",
    )
    .unwrap();
    std::fs::write(ctx.path().join("ignored"), "x").unwrap();
    let dirs: HashMap<String, PathBuf> = [
        ("context".to_string(), ctx.path().to_path_buf()),
        ("dockerfile".to_string(), ctx.path().to_path_buf()),
    ]
    .into_iter()
    .collect();
    session(&bk, "sess-1", Fs(Source::Dir(dirs))).await;
    let mut c = control(&bk).await;
    // Workers and version.
    let w = c
        .list_workers(ctl::ListWorkersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(w.record.len(), 1);
    assert!(!w.record[0].platforms.is_empty());
    // Status first (as clients do, concurrently with the solve).
    let mut status = c
        .status(ctl::StatusRequest {
            r#ref: "solve-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let collect = tokio::spawn(async move {
        let mut names = Vec::new();
        let mut done = 0;
        while let Some(Ok(r)) = status.next().await {
            for v in r.vertexes {
                if v.completed.is_some() {
                    done += 1;
                } else {
                    names.push(v.name);
                }
            }
        }
        (names, done)
    });
    let mut attrs = HashMap::new();
    attrs.insert("build-arg:V".to_string(), "7".to_string());
    let resp = c
        .solve(ctl::SolveRequest {
            r#ref: "solve-1".into(),
            session: "sess-1".into(),
            frontend: "dockerfile.v0".into(),
            frontend_attrs: attrs,
            exporters: moby_exporter("proto:test"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let id = resp.exporter_response["containerimage.config.digest"].clone();
    assert!(id.starts_with("sha256:"), "{resp:?}");
    assert_eq!(
        resp.exporter_response["image.name"],
        "docker.io/library/proto:test"
    );
    let r = store.resolve("proto:test").unwrap();
    assert_eq!(r.image.id.to_string(), id);
    let cfg = store.config(&r.image.id).unwrap();
    let cc = cfg.config.unwrap();
    assert!(cc.env.unwrap().contains(&"A=7".to_string()));
    assert_eq!(cc.labels.unwrap()["from"], "protocol");
    let (names, done) = tokio::time::timeout(std::time::Duration::from_secs(60), collect)
        .await
        .unwrap()
        .unwrap();
    for want in [
        "[internal] load build definition from Dockerfile",
        "[internal] load build context",
        "[3/4] ENV A=$V",
        "exporting to image",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }
    assert!(done >= names.len(), "{done} of {names:?} completed");
    // A solve naming a session that never connects fails (after waiting for it).
    let e = c
        .solve(ctl::SolveRequest {
            r#ref: "solve-2".into(),
            session: "no-such-session".into(),
            frontend: "nope.v0".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unimplemented, "{e:?}");
}

fn stat(path: &str, mode: u32, linkname: &str) -> Stat {
    Stat {
        path: path.into(),
        mode,
        linkname: linkname.into(),
        ..Default::default()
    }
}

async fn receive_raw(list: Vec<(Stat, Vec<u8>)>, dest: &Path) -> Result<usize, String> {
    let (_data, _, bk) = buildkit();
    let id = format!("raw-{}", dest.display());
    session(&bk, &id, Fs(Source::Raw(list))).await;
    let s = bk
        .sessions()
        .get(&id, std::time::Duration::from_secs(10))
        .await
        .unwrap();
    receive_dir(
        s.channel(),
        &SyncRequest {
            dir_name: "x".into(),
            ..Default::default()
        },
        dest,
    )
    .await
    .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_sync_writes_only_inside_its_directory() {
    let outside = tempfile::tempdir().unwrap();
    let out = outside.path().to_string_lossy().into_owned();
    // A good transfer: a directory, a file, a symlink, a hard link.
    let dest = tempfile::tempdir().unwrap();
    let n = receive_raw(
        vec![
            (stat("d", gomode::DIR | 0o755, ""), vec![]),
            (stat("d/f", 0o640, ""), b"content".to_vec()),
            (stat("d/l", gomode::SYMLINK | 0o777, "f"), vec![]),
            (stat("d/h", 0o640, "d/f"), vec![]),
        ],
        dest.path(),
    )
    .await
    .unwrap();
    assert_eq!(n, 4);
    assert_eq!(std::fs::read(dest.path().join("d/f")).unwrap(), b"content");
    assert_eq!(std::fs::read(dest.path().join("d/h")).unwrap(), b"content");
    assert_eq!(
        std::fs::read_link(dest.path().join("d/l")).unwrap(),
        Path::new("f")
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dest.path().join("d/f"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640);
    // Escapes: a parent path, an absolute path, a file through a symlink it sent, a hard
    // link to a file outside, an entry whose parent was never sent.
    let evil: Vec<Vec<(Stat, Vec<u8>)>> = vec![
        vec![(stat("../escape", 0o644, ""), b"x".to_vec())],
        vec![(stat(&format!("{out}/abs"), 0o644, ""), b"x".to_vec())],
        vec![
            (stat("link", gomode::SYMLINK | 0o777, &out), vec![]),
            (stat("link/through", 0o644, ""), b"x".to_vec()),
        ],
        vec![(stat("hl", 0o644, &format!("{out}/target")), vec![])],
        vec![(stat("nodir/file", 0o644, ""), b"x".to_vec())],
    ];
    std::fs::write(outside.path().join("target"), "t").unwrap();
    for list in evil {
        let dest = tempfile::tempdir().unwrap();
        let what = format!(
            "{:?}",
            list.iter().map(|(s, _)| &s.path).collect::<Vec<_>>()
        );
        let r = receive_raw(list, dest.path()).await;
        assert!(r.is_err(), "{what} was accepted");
        let left: Vec<_> = std::fs::read_dir(outside.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            left,
            vec![std::ffi::OsString::from("target")],
            "{what}: {left:?}"
        );
    }
}

/// A session serving `dirs` (logging what is requested), for one transfer.
async fn logged_session(dirs: HashMap<String, PathBuf>) -> (Arc<BuildKit>, H2Channel, Requested) {
    let (_data, _, bk) = buildkit();
    let log = Requested::default();
    let id = format!("logged-{}", berth_util::id::random_hex(8));
    session(&bk, &id, Fs(Source::Logged(dirs, log.clone()))).await;
    let s = bk
        .sessions()
        .get(&id, std::time::Duration::from_secs(10))
        .await
        .unwrap();
    (bk, s.channel(), log)
}

/// One transfer of `src` into `dest` over `base`: its manifest and the files requested.
async fn sync_once(src: &Path, dest: &Path, base: Manifest) -> (Manifest, Vec<String>) {
    let dirs = [("x".to_string(), src.to_path_buf())].into_iter().collect();
    let (_bk, ch, log) = logged_session(dirs).await;
    let req = SyncRequest {
        dir_name: "x".into(),
        ..Default::default()
    };
    let (_, m) = sync_dir(ch, &req, dest, base).await.unwrap();
    let mut asked = log.lock().unwrap().clone();
    asked.sort();
    (m, asked)
}

/// Every entry below `root` with its content (files) or target (symlinks).
fn tree(root: &Path) -> Vec<(String, String)> {
    walk(root)
        .unwrap()
        .into_iter()
        .map(|(host, st)| {
            let what = if st.mode & gomode::SYMLINK != 0 {
                format!("-> {}", st.linkname)
            } else if st.mode & gomode::DIR != 0 {
                "dir".to_string()
            } else {
                String::from_utf8_lossy(&std::fs::read(host).unwrap()).into_owned()
            };
            (st.path, what)
        })
        .collect()
}

fn set_mtime(p: &Path, secs: u64) {
    std::fs::File::options()
        .write(true)
        .open(p)
        .unwrap()
        .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_sync_into_a_kept_copy_sends_only_what_changed() {
    let src = tempfile::tempdir().unwrap();
    let s = src.path();
    std::fs::create_dir_all(s.join("files")).unwrap();
    std::fs::create_dir_all(s.join("sub/deep")).unwrap();
    std::fs::write(s.join("files/a"), "a1").unwrap();
    std::fs::write(s.join("files/b"), "b1").unwrap();
    std::fs::write(s.join("sub/deep/c"), "c1").unwrap();
    std::os::unix::fs::symlink("files/a", s.join("link")).unwrap();
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path();
    // First transfer: everything.
    let (m, asked) = sync_once(s, d, Manifest::new()).await;
    assert_eq!(asked, ["files/a", "files/b", "sub/deep/c"]);
    assert_eq!(tree(d), tree(s));
    // Nothing changed: no file is sent again.
    let (m, asked) = sync_once(s, d, m).await;
    assert!(asked.is_empty(), "{asked:?}");
    assert_eq!(tree(d), tree(s));
    // A file changed in size, another in content only (same size, another time); one
    // removed, a directory replaced by a file, a symlink retargeted, a file added.
    std::fs::write(s.join("files/a"), "a22").unwrap();
    std::fs::write(s.join("files/b"), "B1").unwrap();
    set_mtime(&s.join("files/b"), 1_000_000);
    std::fs::remove_dir_all(s.join("sub")).unwrap();
    std::fs::write(s.join("sub"), "now a file").unwrap();
    std::fs::remove_file(s.join("link")).unwrap();
    std::os::unix::fs::symlink("files/b", s.join("link")).unwrap();
    std::fs::write(s.join("new"), "n").unwrap();
    let (m, asked) = sync_once(s, d, m).await;
    assert_eq!(asked, ["files/a", "files/b", "new", "sub"]);
    assert_eq!(tree(d), tree(s));
    // The copy changed behind the manifest's back (a file rewritten, one added): the
    // transfer notices and puts it right.
    std::fs::write(d.join("files/a"), "tampered").unwrap();
    std::fs::write(d.join("stray"), "x").unwrap();
    std::fs::remove_file(d.join("new")).unwrap();
    let (_, asked) = sync_once(s, d, m).await;
    assert_eq!(asked, ["files/a", "new"]);
    assert_eq!(tree(d), tree(s));
}

/// One build of `ctx` through a session with buildx's shared key: the image ID, the context
/// files requested, and the `COPY` vertex's `cached` flag.
async fn keyed_build(
    bk: &Arc<BuildKit>,
    n: usize,
    ctx: &Path,
) -> (String, Vec<String>, Option<bool>) {
    let dirs: HashMap<String, PathBuf> = [
        ("context".to_string(), ctx.to_path_buf()),
        ("dockerfile".to_string(), ctx.to_path_buf()),
    ]
    .into_iter()
    .collect();
    let log = Requested::default();
    let sid = format!("kept-sess-{n}");
    session_keyed(
        bk,
        &sid,
        "buildx-shared-key",
        Fs(Source::Logged(dirs, log.clone())),
        None,
    )
    .await;
    let mut c = control(bk).await;
    let r#ref = format!("kept-solve-{n}");
    let mut status = c
        .status(ctl::StatusRequest {
            r#ref: r#ref.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let collect = tokio::spawn(async move {
        let mut cached = None;
        while let Some(Ok(r)) = status.next().await {
            for v in r.vertexes {
                if v.name.contains("COPY files/") && v.completed.is_some() {
                    cached = Some(v.cached);
                }
            }
        }
        cached
    });
    let resp = c
        .solve(ctl::SolveRequest {
            r#ref,
            session: sid,
            frontend: "dockerfile.v0".into(),
            exporters: moby_exporter("kept:test"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let cached = tokio::time::timeout(std::time::Duration::from_secs(60), collect)
        .await
        .unwrap()
        .unwrap();
    let mut asked: Vec<String> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|p| p.starts_with("files/"))
        .cloned()
        .collect();
    asked.sort();
    (
        resp.exporter_response["containerimage.config.digest"].clone(),
        asked,
        cached,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_context_reuses_unchanged_files_and_rebuilds_a_copy_of_changed_ones() {
    let (_data, store, bk) = buildkit();
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    std::fs::write(c.join("Dockerfile"), "FROM scratch\nCOPY files/ /files/\n").unwrap();
    std::fs::create_dir(c.join("files")).unwrap();
    std::fs::write(c.join("files/one"), "1").unwrap();
    std::fs::write(c.join("files/two"), "2").unwrap();
    let (id1, asked, cached) = keyed_build(&bk, 1, c).await;
    assert_eq!(asked, ["files/one", "files/two"]);
    assert_eq!(cached, Some(false));
    assert_eq!(bk.contexts().len(), 1);
    // Unchanged: nothing is sent again, the step comes from the cache, the same image.
    let (id2, asked, cached) = keyed_build(&bk, 2, c).await;
    assert!(asked.is_empty(), "{asked:?}");
    assert_eq!(cached, Some(true));
    assert_eq!(id2, id1);
    // A changed file: only it is sent, the COPY runs again, the image has the new content.
    std::fs::write(c.join("files/two"), "22").unwrap();
    let (id3, asked, cached) = keyed_build(&bk, 3, c).await;
    assert_eq!(asked, ["files/two"]);
    assert_eq!(cached, Some(false));
    assert_ne!(id3, id1);
    let res = berth_buildkit::frontend::BuildResult {
        image_id: id3.parse().unwrap(),
        config: Vec::new(),
        tags: Vec::new(),
        platforms: Vec::new(),
    };
    let read = |p: &str| berth_buildkit::rootfs::read_file(&store, &res, p, None).unwrap();
    assert_eq!(read("/files/two"), b"22");
    assert_eq!(read("/files/one"), b"1");
    // Same size, same content length, another modification time: still a change.
    std::fs::write(c.join("files/one"), "9").unwrap();
    set_mtime(&c.join("files/one"), 2_000_000);
    let (id4, asked, cached) = keyed_build(&bk, 4, c).await;
    assert_eq!(asked, ["files/one"]);
    assert_eq!(cached, Some(false));
    assert_ne!(id4, id3);
    // At the daemon's exit the copies go.
    bk.contexts().clear();
    assert!(bk.contexts().is_empty());
}
