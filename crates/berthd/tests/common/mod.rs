//! Shared harness of berthd's end-to-end tests: builds the binaries once, seeds a busybox image,
//! runs a daemon on temporary roots with a unique cgroup parent, and cleans everything up.
#![allow(dead_code)]
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The directory holding `berthd`, `berth-shim`, `berth-runtime`, `berth` (built once).
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let berthd = PathBuf::from(env!("CARGO_BIN_EXE_berthd"));
        let dir = berthd.parent().unwrap().to_path_buf();
        let target = dir.parent().unwrap();
        let ws = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut cmd = Command::new(env!("CARGO"));
        // Build under the environment a developer's `cargo build` has: variables that cargo
        // and nextest set for test processes would change build-script fingerprints.
        for (k, _) in std::env::vars() {
            if (k.starts_with("CARGO_") && k != "CARGO_HOME" && k != "CARGO_TARGET_DIR")
                || k.starts_with("NEXTEST")
                || k == "OUT_DIR"
                || k == "TARGET"
                || k == "HOST"
                || k == "RUST_TEST_THREADS"
            {
                cmd.env_remove(k);
            }
        }
        let st = cmd
            .args([
                "build",
                "-p",
                "berth-shim",
                "-p",
                "berth-runtime",
                "-p",
                "berth-cli",
                // The same feature unification as the test build: no rebuild ping-pong.
                "-p",
                "berthd",
            ])
            .arg("--target-dir")
            .arg(target)
            .current_dir(&ws)
            .status()
            .unwrap();
        assert!(st.success(), "building the shim, runtime and CLI failed");
        let mut cmd = Command::new("bash");
        for (k, _) in std::env::vars() {
            if (k.starts_with("CARGO_") && k != "CARGO_HOME" && k != "CARGO_TARGET_DIR")
                || k.starts_with("NEXTEST")
            {
                cmd.env_remove(k);
            }
        }
        let o = cmd
            .arg(ws.join("crates/berth-init/build-static.sh"))
            .env("CARGO_TARGET_DIR", target)
            .output()
            .unwrap();
        assert!(o.status.success(), "building berth-init failed");
        let init = String::from_utf8_lossy(&o.stdout).trim().to_string();
        // Other test processes may be running the current copy: replace it by a rename.
        let tmp = dir.join(format!("berth-init.static.{}", std::process::id()));
        std::fs::copy(&init, &tmp).unwrap();
        std::fs::rename(&tmp, dir.join("berth-init.static")).unwrap();
        dir
    })
}

pub fn busybox_tar(path: &Path) {
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    let mut dir = |name: &str| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        b.append_data(&mut h, name, std::io::empty()).unwrap();
    };
    for d in ["bin", "etc", "tmp", "root"] {
        dir(d);
    }
    let bb = std::fs::read("/bin/busybox").expect("busybox-static must be installed");
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o755);
    h.set_size(bb.len() as u64);
    b.append_data(&mut h, "bin/busybox", &bb[..]).unwrap();
    // Every applet of this busybox, as a symlink in /bin.
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    let applets: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .split_whitespace()
        .filter(|a| *a != "busybox")
        .map(str::to_string)
        .collect();
    for l in &applets {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        b.append_link(&mut h, format!("bin/{l}"), "busybox")
            .unwrap();
    }
    let files: [(&str, &[u8]); 2] = [
        (
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
        ),
        ("etc/group", b"root:x:0:\nnogroup:x:65534:\n"),
    ];
    for (n, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, n, data).unwrap();
    }
    b.finish().unwrap();
}

pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    pub cgroup_parent: String,
    /// More daemon flags (see [`Daemon::with_args`]).
    pub extra_args: Vec<String>,
    /// The daemon's own default bridge (removed with its nft table at cleanup).
    pub bridge: Option<String>,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn run_output(o: Output) -> Run {
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

impl Run {
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }
}

impl Daemon {
    pub fn new() -> Daemon {
        Self::with_args(&[])
    }

    /// A daemon started with more flags.
    pub fn with_args(extra: &[String]) -> Daemon {
        let dir = tempfile::Builder::new().prefix("bd").tempdir().unwrap();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let mut d = Daemon {
            dir,
            child: None,
            cgroup_parent: format!("/berth-test-{}-{n}", std::process::id()),
            extra_args: extra.to_vec(),
            bridge: None,
        };
        // A default bridge and subnet of this daemon's own, so tests run in parallel without
        // sharing addresses (unless the test chose its own through BERTHD_BRIDGE).
        if std::env::var_os("BERTHD_BRIDGE").is_none() {
            let pid = std::process::id();
            let bridge = format!("bd{pid}x{n}");
            let bip = format!(
                "10.{}.{}.{}/28",
                128 + ((pid >> 8) & 0x3f),
                pid & 0xff,
                (n % 16) * 16 + 1
            );
            d.extra_args
                .extend(["--bridge".to_string(), bridge.clone(), "--bip".into(), bip]);
            d.bridge = Some(bridge);
        }
        std::fs::create_dir_all(d.path("docker-config")).unwrap();
        // A configuration file of its own: an installed /etc/berth/daemon.json stays out.
        std::fs::write(d.path("daemon.json"), "{}").unwrap();
        // Seed busybox:latest through the berth CLI into the same data root.
        let tar = d.path("rootfs.tar");
        busybox_tar(&tar);
        let o = Command::new(bin_dir().join("berth"))
            .env_remove("BERTH_DATA_ROOT")
            .arg("--data-root")
            .arg(d.path("data"))
            .args(["import", "-c", "CMD [\"sh\"]"])
            .arg(&tar)
            .arg("busybox:latest")
            .output()
            .unwrap();
        run_output(o).ok();
        d.start();
        d
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub fn sock(&self) -> PathBuf {
        self.path("berth.sock")
    }

    pub fn daemon_cmd(&self) -> Command {
        let mut c = Command::new(bin_dir().join("berthd"));
        c.arg("--config-file")
            .arg(self.path("daemon.json"))
            .arg("-H")
            .arg(format!("unix://{}", self.sock().display()))
            .arg("--data-root")
            .arg(self.path("data"))
            .arg("--exec-root")
            .arg(self.path("exec"))
            .arg("--cgroup-parent")
            .arg(&self.cgroup_parent)
            .arg("--init-path")
            .arg(bin_dir().join("berth-init.static"))
            .args(&self.extra_args)
            .stdin(Stdio::null());
        c
    }

    pub fn start(&mut self) {
        let _ = std::fs::remove_file(self.sock());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("berthd.log"))
            .unwrap();
        let child = self
            .daemon_cmd()
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(r) = self.http("GET", "/_ping", None) {
                if r.starts_with("HTTP/1.1 200") {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "berthd did not come up: {}",
            std::fs::read_to_string(self.path("berthd.log")).unwrap_or_default()
        );
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn docker(&self, args: &[&str]) -> Run {
        let o = Command::new("docker")
            .args(args)
            .env("DOCKER_HOST", format!("unix://{}", self.sock().display()))
            .env("DOCKER_CONFIG", self.path("docker-config"))
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_API_VERSION")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        run_output(o)
    }

    pub fn python(&self, script: &str) -> Run {
        let o = Command::new("python3")
            .arg("-c")
            .arg(script)
            .env("BERTH_SOCK", format!("unix://{}", self.sock().display()))
            .output()
            .unwrap();
        run_output(o)
    }

    /// A raw HTTP/1.1 request; the whole response as text.
    pub fn http(&self, method: &str, path: &str, body: Option<&str>) -> std::io::Result<String> {
        let mut s = UnixStream::connect(self.sock())?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let body = body.unwrap_or("");
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: berth\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    }

    pub fn cleanup(&mut self) {
        if self.child.is_some() {
            let ids = self.docker(&["ps", "-aq", "--no-trunc"]).stdout;
            for id in ids.split_whitespace() {
                let _ = self.docker(&["rm", "-f", id]);
            }
        }
        self.kill9();
        // Shims still alive (a failed test): stop them by their recorded pids.
        if let Ok(rd) = std::fs::read_dir(self.path("exec/containers")) {
            for e in rd.flatten() {
                if let Ok(pid) = std::fs::read_to_string(e.path().join("shim/init.pid")) {
                    if let Ok(pid) = pid.trim().parse::<i32>() {
                        // SAFETY: kill(2) with a pid we recorded; no memory is involved.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
                if let Ok(pid) = std::fs::read_to_string(e.path().join("shim/shim.pid")) {
                    if let Ok(pid) = pid.trim().parse::<i32>() {
                        std::thread::sleep(Duration::from_millis(200));
                        // SAFETY: as above.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
            }
        }
        // Mounts left below the temporary directory, deepest first.
        let root = self.dir.path().to_string_lossy().into_owned();
        let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|m| m.starts_with(&root))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = Command::new("umount").arg("-l").arg(&m).status();
        }
        // Cgroup directories under our unique parent, in every hierarchy.
        let name = self.cgroup_parent.trim_start_matches('/');
        if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
            for h in rd.flatten() {
                let p = h.path().join(name);
                if p.is_dir() {
                    if let Ok(children) = std::fs::read_dir(&p) {
                        for c in children.flatten() {
                            if c.path().is_dir() {
                                let _ = std::fs::remove_dir(c.path());
                            }
                        }
                    }
                    let _ = std::fs::remove_dir(&p);
                }
            }
        }
        let unified = Path::new("/sys/fs/cgroup/unified").join(name);
        let _ = std::fs::remove_dir(unified);
        if let Some(b) = &self.bridge {
            let _ = Command::new("ip")
                .args(["link", "del", b])
                .stderr(Stdio::null())
                .status();
            let _ = Command::new("nft")
                .args(["delete", "table", "inet", &format!("berth_{b}")])
                .stderr(Stdio::null())
                .status();
        }
    }

    /// Leftovers after cleanup (for assertions).
    pub fn leftovers(&self) -> Vec<String> {
        let name = self.cgroup_parent.trim_start_matches('/');
        let mut v = Vec::new();
        if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
            for h in rd.flatten() {
                if h.path().join(name).exists() {
                    v.push(h.path().join(name).display().to_string());
                }
            }
        }
        let root = self.dir.path().to_string_lossy().into_owned();
        for l in std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
        {
            if let Some(m) = l.split(' ').nth(4) {
                if m.starts_with(&root) {
                    v.push(m.to_string());
                }
            }
        }
        v
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.cleanup();
    }
}

pub fn finish(mut d: Daemon) {
    d.cleanup();
    let left = d.leftovers();
    assert!(left.is_empty(), "left behind: {left:?}");
}

impl Daemon {
    /// The `berth` CLI against this daemon.
    pub fn berth(&self, args: &[&str]) -> Run {
        let o = Command::new(bin_dir().join("berth"))
            .arg("-H")
            .arg(format!("unix://{}", self.sock().display()))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        run_output(o)
    }
}

/// A running Debian `docker-registry` on 127.0.0.1, killed on drop.
pub struct DockerRegistry {
    _dir: tempfile::TempDir,
    pub port: u16,
    child: Child,
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl DockerRegistry {
    /// `None` (after a SKIP message) when docker-registry is not installed.
    pub fn start() -> Option<Self> {
        if !Path::new("/usr/bin/docker-registry").exists() {
            eprintln!("SKIP: /usr/bin/docker-registry is needed (apt-get install docker-registry)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        for _ in 0..5 {
            let port = free_port();
            let cfg = format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("storage").display()
            );
            let cfg_path = dir.path().join("config.yml");
            std::fs::write(&cfg_path, cfg).unwrap();
            let mut child = Command::new("/usr/bin/docker-registry")
                .arg("serve")
                .arg(&cfg_path)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Some(DockerRegistry {
                        _dir: dir,
                        port,
                        child,
                    });
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("docker-registry did not start");
    }
}

impl Drop for DockerRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
