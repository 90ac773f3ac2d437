//! End-to-end tests of `berth push`, `pull`, `login` and `logout` against a real
//! `docker-registry` on 127.0.0.1, checked with skopeo; the pulled image is then run with
//! `berth-runtime`.
//!
//! Needs root (mounting the snapshot, running the container), `/usr/bin/docker-registry`,
//! `skopeo` and `/bin/busybox`; skips with a message otherwise. The runtime binary is looked
//! up as `$BERTH_RUNTIME_BIN`, else next to this test's target directory
//! (`$CARGO_TARGET_DIR/debug/berth-runtime`), else built with `cargo build -p berth-runtime`.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use berth_image::image_store::ImageStore;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

const USER: &str = "alice";
const PASS: &str = "correct horse";

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn skip() -> bool {
    let tools = Path::new("/usr/bin/docker-registry").exists()
        && Command::new("skopeo")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
    if !tools {
        eprintln!(
            "SKIP: docker-registry and skopeo are needed (apt-get install docker-registry skopeo)"
        );
        return true;
    }
    if !is_root() {
        eprintln!("SKIP: needs root");
        return true;
    }
    if !Path::new("/bin/busybox").exists() {
        eprintln!("SKIP: needs /bin/busybox (Debian busybox-static)");
        return true;
    }
    false
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `docker-registry`, killed on drop.
struct Registry {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
}

impl Registry {
    fn start(htpasswd: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let storage = dir.path().join("storage");
        fs::create_dir_all(&storage).unwrap();
        let mut auth = String::new();
        if htpasswd {
            let hash = bcrypt::hash(PASS, 4).unwrap();
            let hp = dir.path().join("htpasswd");
            fs::write(&hp, format!("{USER}:{hash}\n")).unwrap();
            auth = format!(
                "auth:\n  htpasswd:\n    realm: basic-realm\n    path: {}\n",
                hp.display()
            );
        }
        for _ in 0..5 {
            let port = free_port();
            let cfg = format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{auth}",
                storage.display()
            );
            let cfg_path = dir.path().join("config.yml");
            fs::write(&cfg_path, cfg).unwrap();
            let log = fs::File::create(dir.path().join("registry.log")).unwrap();
            let mut child = Command::new("/usr/bin/docker-registry")
                .arg("serve")
                .arg(&cfg_path)
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("start docker-registry");
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Self { dir, port, child };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "docker-registry did not start: {}",
            fs::read_to_string(dir.path().join("registry.log")).unwrap_or_default()
        );
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = &self.dir;
    }
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }
}

fn run_output(o: Output) -> Run {
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// A data root and a Docker config directory in a temporary directory.
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn config_dir(&self) -> PathBuf {
        self.dir.path().join("docker-config")
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_berth"));
        c.env_remove("BERTH_DATA_ROOT")
            .env_remove("BERTH_CONFIG")
            .env_remove("BERTH_INSECURE_REGISTRIES")
            .env("DOCKER_CONFIG", self.config_dir())
            .arg("--data-root")
            .arg(self.root())
            .args(args);
        c
    }

    fn berth(&self, args: &[&str]) -> Run {
        run_output(self.cmd(args).stdin(Stdio::null()).output().unwrap())
    }

    fn berth_stdin(&self, args: &[&str], input: &str) -> Run {
        use std::io::Write;
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The command may exit without reading (usage errors).
        let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
        run_output(child.wait_with_output().unwrap())
    }

    /// Imports a busybox root file system as `tag`; returns the image ID.
    fn import_busybox(&self, tag: &str) -> String {
        let tar = self.dir.path().join("rootfs.tar");
        fs::write(&tar, busybox_tar()).unwrap();
        let r = self
            .berth(&["import", "-c", "CMD [\"sh\"]", tar.to_str().unwrap(), tag])
            .ok();
        let id = r.stdout.trim().to_string();
        assert!(id.starts_with("sha256:") && id.len() == 71, "{id}");
        id
    }
}

fn entry(
    b: &mut tar::Builder<Vec<u8>>,
    path: &str,
    kind: tar::EntryType,
    mode: u32,
    data: &[u8],
    link: Option<&str>,
) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_size(data.len() as u64);
    if let Some(l) = link {
        h.set_link_name(l).unwrap();
    }
    b.append_data(&mut h, path, data).unwrap();
}

/// A root file system: /bin/busybox with sh/echo/ls links, /etc/passwd, mount points.
fn busybox_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for d in ["bin/", "etc/", "proc/", "sys/", "dev/", "tmp/", "root/"] {
        entry(&mut b, d, tar::EntryType::Directory, 0o755, b"", None);
    }
    let busybox = fs::read("/bin/busybox").unwrap();
    entry(
        &mut b,
        "bin/busybox",
        tar::EntryType::Regular,
        0o755,
        &busybox,
        None,
    );
    for l in ["sh", "echo", "ls", "cat"] {
        entry(
            &mut b,
            &format!("bin/{l}"),
            tar::EntryType::Symlink,
            0o777,
            b"",
            Some("busybox"),
        );
    }
    entry(
        &mut b,
        "etc/passwd",
        tar::EntryType::Regular,
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\n",
        None,
    );
    entry(
        &mut b,
        "etc/group",
        tar::EntryType::Regular,
        0o644,
        b"root:x:0:\n",
        None,
    );
    b.into_inner().unwrap()
}

fn lines(s: &str) -> Vec<&str> {
    s.lines().collect()
}

fn skopeo_digest(image: &str) -> String {
    let out = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--raw"])
        .arg(format!("docker://{image}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out2 = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{image}"))
        .output()
        .unwrap();
    assert!(out2.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out2.stdout).unwrap();
    let digest = v["Digest"].as_str().unwrap().to_string();
    // The raw manifest hashes to the digest skopeo reports.
    use sha2::Digest as _;
    assert_eq!(
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(&out.stdout))),
        digest
    );
    digest
}

/// The `berth-runtime` binary (see the module docs).
fn runtime_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("BERTH_RUNTIME_BIN") {
        return PathBuf::from(p);
    }
    // target/debug/deps/registry-… → target/debug/berth-runtime
    let exe = std::env::current_exe().unwrap();
    let candidate = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("berth-runtime"))
        .unwrap();
    if !candidate.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .args(["build", "-p", "berth-runtime"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap();
        assert!(st.success(), "cargo build -p berth-runtime failed");
    }
    assert!(
        candidate.exists(),
        "berth-runtime not found at {}",
        candidate.display()
    );
    candidate
}

/// A container's root file system mounted from the image's snapshot, and the runtime state;
/// everything is removed on drop.
struct Container {
    store: ImageStore,
    id: String,
    rootfs: PathBuf,
    mounted: bool,
    runtime: PathBuf,
    state: PathBuf,
    cgroup_parent: String,
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new(&self.runtime)
            .arg("--root")
            .arg(&self.state)
            .args(["delete", "--force", &self.id])
            .output();
        if self.mounted {
            let _ = berth_image::snapshot::unmount(&self.rootfs);
        }
        if let Ok(s) = self.store.snapshotter() {
            let _ = s.remove_container(&self.id);
        }
        for m in cgroup_mounts() {
            let parent = m.join(self.cgroup_parent.trim_start_matches('/'));
            let _ = fs::remove_dir(parent.join(&self.id));
            let _ = fs::remove_dir(&parent);
        }
    }
}

fn cgroup_mounts() -> Vec<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let fstype = post.split_whitespace().next()?;
            let mnt = pre.split_whitespace().nth(4)?;
            (fstype == "cgroup" || fstype == "cgroup2").then(|| PathBuf::from(mnt))
        })
        .collect()
}

/// Mounts the snapshot of the image `name` in `root` and runs `args` in it with
/// `berth-runtime`; returns its standard output.
fn run_image(root: &Path, name: &str, work: &Path, args: &[&str]) -> String {
    let store = ImageStore::open(root).unwrap();
    let image = store.resolve(name).unwrap().image;
    let top = image.chain_ids().last().cloned().expect("image has layers");
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let id = format!("pulled-{}-{n}", std::process::id());
    let bundle = work.join(format!("bundle-{n}"));
    let rootfs = bundle.join("rootfs");
    fs::create_dir_all(&rootfs).unwrap();
    let mut c = Container {
        store,
        id: id.clone(),
        rootfs: rootfs.clone(),
        mounted: false,
        runtime: runtime_bin(),
        state: work.join(format!("state-{n}")),
        cgroup_parent: format!("/berth-test-{}-{n}", std::process::id()),
    };
    let snap = c.store.snapshotter().unwrap();
    snap.prepare_container(&id, Some(&top)).unwrap();
    snap.mount_container(&id, &rootfs).unwrap();
    c.mounted = true;
    assert!(rootfs.join("bin/busybox").exists());

    let out = Command::new(&c.runtime)
        .arg("spec")
        .arg("--bundle")
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg_path = bundle.join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_slice(&fs::read(&cfg_path).unwrap()).unwrap();
    cfg["process"]["terminal"] = serde_json::json!(false);
    cfg["process"]["args"] = serde_json::json!(args);
    cfg["linux"]["cgroupsPath"] = serde_json::json!(format!("{}/{id}", c.cgroup_parent));
    fs::write(&cfg_path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();

    // Output to files: the container inherits them.
    let (o, e) = (work.join(format!("out-{n}")), work.join(format!("err-{n}")));
    let st = Command::new(&c.runtime)
        .arg("--root")
        .arg(&c.state)
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(&id)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&o).unwrap())
        .stderr(fs::File::create(&e).unwrap())
        .status()
        .unwrap();
    let stdout = fs::read_to_string(&o).unwrap();
    assert!(
        st.success(),
        "berth-runtime run: {st}: {}{stdout}",
        fs::read_to_string(&e).unwrap_or_default()
    );
    drop(c);
    stdout
}

#[test]
fn push_pull_and_run() {
    if skip() {
        return;
    }
    let reg = Registry::start(false);
    let name = format!("{}/test/busybox:1", reg.host());
    let repo = format!("{}/test/busybox", reg.host());

    // Build and push.
    let a = Env::new();
    let id = a.import_busybox("busybox:imported");
    a.berth(&["tag", "busybox:imported", &name]).ok();
    let r = a.berth(&["push", &name]).ok();
    let out = lines(&r.stdout);
    assert_eq!(
        out[0],
        format!("The push refers to repository [{repo}]"),
        "{}",
        r.stdout
    );
    assert!(out.iter().any(|l| l.ends_with(": Pushed")), "{}", r.stdout);
    let last = out.last().unwrap();
    assert!(last.starts_with("1: digest: sha256:"), "{}", r.stdout);
    let pushed_digest = last.split_whitespace().nth(2).unwrap().to_string();
    let size: u64 = last.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(size > 100);

    // skopeo sees the same manifest.
    assert_eq!(skopeo_digest(&name), pushed_digest);

    // The repo digest is recorded.
    let r = a
        .berth(&[
            "images",
            "--digests",
            "--format",
            "{{.Repository}} {{.Tag}} {{.Digest}}",
        ])
        .ok();
    assert!(
        r.stdout
            .lines()
            .any(|l| l == format!("{repo} 1 {pushed_digest}")),
        "{}",
        r.stdout
    );

    // Pushing again: the layer is there already; same digest.
    let r = a.berth(&["push", &name]).ok();
    assert!(
        r.stdout
            .lines()
            .any(|l| l.ends_with(": Layer already exists")),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .trim_end()
            .ends_with(&format!("1: digest: {pushed_digest} size: {size}")),
        "{}",
        r.stdout
    );

    // Quiet push prints the reference only.
    let r = a.berth(&["push", "-q", &name]).ok();
    assert_eq!(r.stdout, format!("{name}\n"));

    // A push to another repository of the same registry mounts the layers.
    let other = format!("{}/other/busybox:2", reg.host());
    a.berth(&["tag", &name, &other]).ok();
    let r = a.berth(&["push", &other]).ok();
    assert!(
        r.stdout
            .lines()
            .any(|l| l.ends_with(": Mounted from test/busybox")
                || l.ends_with(": Layer already exists")),
        "{}",
        r.stdout
    );

    // Pushing an unknown image.
    let r = a.berth(&["push", &format!("{}/test/none:1", reg.host())]);
    assert_eq!(r.code, 1);
    assert_eq!(
        r.stderr.trim(),
        format!(
            "Error response from daemon: An image does not exist locally with the tag: {}/test/none",
            reg.host()
        )
    );

    // Pull into a fresh data root.
    let b = Env::new();
    let r = b.berth(&["pull", &name]).ok();
    let out = lines(&r.stdout);
    assert_eq!(out[0], "1: Pulling from test/busybox", "{}", r.stdout);
    assert!(
        out.iter().any(|l| l.ends_with(": Pull complete")),
        "{}",
        r.stdout
    );
    assert!(
        out.contains(&format!("Digest: {pushed_digest}").as_str()),
        "{}",
        r.stdout
    );
    assert_eq!(
        out[out.len() - 2],
        format!("Status: Downloaded newer image for {name}")
    );
    assert_eq!(out[out.len() - 1], name);

    let r = b
        .berth(&[
            "images",
            "--no-trunc",
            "--format",
            "{{.Repository}}:{{.Tag}} {{.ID}}",
        ])
        .ok();
    assert_eq!(r.stdout.trim(), format!("{name} {id}"));
    let a_size = a
        .berth(&["images", "--format", "{{.Size}}", &name])
        .ok()
        .stdout;
    let b_size = b
        .berth(&["images", "--format", "{{.Size}}", &name])
        .ok()
        .stdout;
    assert_eq!(a_size, b_size);
    let r = b
        .berth(&["images", "--digests", "--format", "{{.Digest}}"])
        .ok();
    assert_eq!(r.stdout.trim(), pushed_digest);

    // Again: up to date.
    let r = b.berth(&["pull", &name]).ok();
    let out = lines(&r.stdout);
    assert!(
        out.iter().any(|l| l.ends_with(": Already exists")),
        "{}",
        r.stdout
    );
    assert_eq!(
        out[out.len() - 2],
        format!("Status: Image is up to date for {name}")
    );

    // A platform the image is not for.
    let other_arch = if std::env::consts::ARCH == "x86_64" {
        "linux/arm64"
    } else {
        "linux/amd64"
    };
    let r = b.berth(&["pull", "-q", "--platform", other_arch, &name]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(
        r.stderr.contains(&format!(
            "was found but does not match the specified platform: wanted {other_arch}"
        )),
        "{}",
        r.stderr
    );

    // Quiet, by digest.
    let by_digest = format!("{repo}@{pushed_digest}");
    let r = b.berth(&["pull", "-q", &by_digest]).ok();
    assert_eq!(r.stdout, format!("{by_digest}\n"));

    // No tag: latest, which does not exist.
    let r = b.berth(&["pull", &repo]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.starts_with("Using default tag: latest\n"),
        "{}",
        r.stdout
    );
    assert!(
        r.stderr.starts_with(&format!(
            "Error response from daemon: manifest for {repo}:latest not found: manifest unknown: "
        )),
        "{}",
        r.stderr
    );

    // -a: every tag (here the one there is), then the repository's status and its name.
    let r = b.berth(&["pull", "-a", &repo]).ok();
    let out = lines(&r.stdout);
    assert!(
        out.contains(&"1: Pulling from test/busybox"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("Using default tag"), "{}", r.stdout);
    assert_eq!(
        out[out.len() - 2],
        format!("Status: Image is up to date for {repo}")
    );
    assert_eq!(out[out.len() - 1], repo);
    // A tag with -a is refused, as by Docker's CLI.
    let r = b.berth(&["pull", "-a", &name]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("tag can't be used with --all-tags/-a"),
        "{}",
        r.stderr
    );

    // Run the pulled image.
    let work = b.dir.path().join("run");
    fs::create_dir_all(&work).unwrap();
    let out = run_image(
        &b.root(),
        &name,
        &work,
        &["echo", "hello from a pulled image"],
    );
    assert_eq!(out, "hello from a pulled image\n");
}

#[test]
fn login_logout_and_auth() {
    if skip() {
        return;
    }
    let reg = Registry::start(true);
    let host = reg.host();
    let e = Env::new();

    // Anonymous push is refused.
    e.import_busybox("busybox:imported");
    let name = format!("{host}/auth/busybox:1");
    e.berth(&["tag", "busybox:imported", &name]).ok();
    let r = e.berth(&["push", &name]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("unauthorized"), "{}", r.stderr);

    // Wrong password.
    let r = e.berth(&["login", "-u", USER, "-p", "wrong", &host]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("Error response from daemon: ") && r.stderr.contains("unauthorized: "),
        "{}",
        r.stderr
    );
    assert!(!e.config_dir().join("config.json").exists());

    // --password-stdin needs -u.
    let r = e.berth_stdin(&["login", "--password-stdin", &host], "x\n");
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("Must provide --username"), "{}", r.stderr);

    // Right password.
    let r = e
        .berth_stdin(
            &["login", "-u", USER, "--password-stdin", &host],
            &format!("{PASS}\n"),
        )
        .ok();
    assert_eq!(r.stdout, "Login Succeeded\n");
    let cfg: serde_json::Value =
        serde_json::from_slice(&fs::read(e.config_dir().join("config.json")).unwrap()).unwrap();
    let auth = cfg["auths"][&host]["auth"].as_str().unwrap();
    use base64_check::decode;
    assert_eq!(decode(auth), format!("{USER}:{PASS}"));

    // Now push and pull work.
    e.berth(&["push", &name]).ok();
    let f = Env::new();
    // Not logged in from another config directory.
    let r = f.berth(&["pull", &name]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("unauthorized"), "{}", r.stderr);
    e.berth(&["rmi", &name]).ok();
    let r = e.berth(&["pull", &name]).ok();
    assert!(r.stdout.contains("Status: "), "{}", r.stdout);

    // Logout.
    let r = e.berth(&["logout", &host]).ok();
    assert_eq!(r.stdout, format!("Removing login credentials for {host}\n"));
    let cfg: serde_json::Value =
        serde_json::from_slice(&fs::read(e.config_dir().join("config.json")).unwrap()).unwrap();
    assert!(cfg["auths"].get(&host).is_none(), "{cfg}");
    let r = e.berth(&["logout", &host]).ok();
    assert_eq!(r.stdout, format!("Not logged in to {host}\n"));
}

/// A tiny base64 decoder for checking config.json (no extra dependency).
mod base64_check {
    pub fn decode(s: &str) -> String {
        const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut bits = 0u32;
        let mut n = 0;
        let mut out = Vec::new();
        for c in s.bytes().filter(|&c| c != b'=') {
            let v = T.iter().position(|&t| t == c).unwrap() as u32;
            bits = (bits << 6) | v;
            n += 6;
            if n >= 8 {
                n -= 8;
                out.push((bits >> n) as u8);
                bits &= (1 << n) - 1;
            }
        }
        String::from_utf8(out).unwrap()
    }
}
