//! A `berthd` on temporary data and exec roots, with its own socket, cgroup parent, default
//! bridge and subnet, seeded with `busybox:latest`; everything it made is removed on drop,
//! and a [`LeakGuard`] fails the test if anything stays.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use crate::busybox::Rootfs;
use crate::leak::LeakGuard;
use crate::process::{kill9, run_output, wait_until, CommandRun, Run};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The directory holding `berthd`, `berth-shim`, `berth-runtime`, `berth`,
/// `berth-init.static` and `berth-runtime.static`, built (once per process) next to the running test.
/// The Python of the peers' venv, which has docker-py 7.2 (see [`Daemon::docker_py`]).
pub const DOCKER_PY_PYTHON: &str = "/root/peers/venv/bin/python";

pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // The same feature unification as berthd's test build: no rebuild ping-pong.
        crate::bins::build(crate::bins::BINARIES);
        let dir = crate::bins::profile_dir();
        let target = crate::bins::target_dir();
        let init = crate::bins::build_static("berth-init", &target);
        place(&init, &dir.join("berth-init.static"));
        // The runtime as the package ships it (static): berthd runs this one.
        let runtime = crate::bins::build_static("berth-runtime", &target);
        place(&runtime, &dir.join("berth-runtime.static"));
        dir
    })
}

/// Copies `src` to `dst` through a rename: other test processes may be running the current
/// copy.
fn place(src: &Path, dst: &Path) {
    let tmp = dst.with_extension(format!("tmp{}", std::process::id()));
    std::fs::copy(src, &tmp).unwrap();
    std::fs::rename(&tmp, dst).unwrap();
}

/// The runtime the test daemons run: the static build of `crates/berth-runtime/build-static.sh`
/// (the package's), in [`bin_dir`].
pub fn runtime_bin() -> PathBuf {
    bin_dir().join("berth-runtime.static")
}

/// Imports the test image as `busybox:latest` into the data root `data_root` with the berth CLI
/// (the tar written to `tar` on the way).
pub fn seed_busybox(data_root: &Path, tar: &Path) {
    busybox_tar(tar);
    let o = Command::new(bin_dir().join("berth"))
        .env_remove("BERTH_DATA_ROOT")
        .arg("--data-root")
        .arg(data_root)
        .args(["import", "-c", "CMD [\"sh\"]"])
        .arg(tar)
        .arg("busybox:latest")
        .output()
        .unwrap();
    run_output(o).ok();
}

/// Writes the test image's root file system as a tar: busybox with every applet, `/etc/passwd`
/// and `/etc/group`.
pub fn busybox_tar(path: &Path) {
    Rootfs::busybox()
        .dirs(&["bin", "etc", "tmp", "root"])
        .write_tar(path);
}

/// Root's docker CLI plugins directory (`~/.docker/cli-plugins`) when it holds `plugin`
/// (`docker-buildx`, `docker-compose`).
pub fn cli_plugins(plugin: &str) -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os("HOME")?).join(".docker/cli-plugins");
    dir.join(plugin).exists().then_some(dir)
}

/// A running `berthd` and what it made (see the module docs).
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    pub cgroup_parent: String,
    /// More daemon flags (see [`Daemon::with_args`]).
    pub extra_args: Vec<String>,
    /// The daemon's own default bridge (removed with its nft table at cleanup); `None` when
    /// the test chose one through `BERTHD_BRIDGE`.
    pub bridge: Option<String>,
    /// Environment variables of the daemon's process (e.g. `BERTHD_FAILPOINTS`), taken at
    /// each [`Daemon::start`].
    pub env: Vec<(String, String)>,
    /// Checks, after cleanup, that nothing carrying this daemon's names stays.
    pub leaks: LeakGuard,
    cleaned: bool,
}

impl Default for Daemon {
    fn default() -> Self {
        Self::new()
    }
}

impl Daemon {
    /// A daemon with the default flags.
    pub fn new() -> Daemon {
        Self::with_args(&[])
    }

    /// A daemon started with more flags.
    pub fn with_args(extra: &[String]) -> Daemon {
        let dir = tempfile::Builder::new().prefix("bd").tempdir().unwrap();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let cgroup_parent = format!("/{}", crate::unique_name("berth-test"));
        let mut d = Daemon {
            leaks: LeakGuard::new([
                dir.path().display().to_string(),
                cgroup_parent[1..].to_string(),
            ]),
            dir,
            child: None,
            cgroup_parent,
            extra_args: extra.to_vec(),
            env: Vec::new(),
            bridge: None,
            cleaned: false,
        };
        // A default bridge and subnet of this daemon's own, so tests run in parallel without
        // sharing addresses (unless the test chose its own through BERTHD_BRIDGE).
        if std::env::var_os("BERTHD_BRIDGE").is_none() {
            let pid = std::process::id();
            let bridge = format!("bd{}", crate::unique_id());
            let bip = format!(
                "10.{}.{}.{}/28",
                128 + ((pid >> 8) & 0x3f),
                pid & 0xff,
                (n % 16) * 16 + 1
            );
            d.extra_args
                .extend(["--bridge".to_string(), bridge.clone(), "--bip".into(), bip]);
            d.leaks.add_marker(bridge.clone());
            d.bridge = Some(bridge);
        }
        std::fs::create_dir_all(d.path("docker-config")).unwrap();
        // A configuration file of its own: an installed /etc/berth/daemon.json stays out.
        std::fs::write(d.path("daemon.json"), "{}").unwrap();
        // Seed busybox:latest through the berth CLI into the same data root.
        seed_busybox(&d.path("data"), &d.path("rootfs.tar"));
        d.start();
        d
    }

    /// A daemon whose docker CLI has root's plugins ([`Daemon::cli_plugin`]); `None`, after a
    /// `skipped:` line, when `plugin` is not installed.
    pub fn with_cli_plugin(plugin: &str) -> Option<Daemon> {
        if cli_plugins(plugin).is_none() {
            crate::skipped(&format!(
                "{plugin} not installed (~/.docker/cli-plugins/{plugin})"
            ));
            return None;
        }
        let d = Daemon::new();
        assert!(d.cli_plugin(plugin));
        Some(d)
    }

    /// Gives this daemon's docker CLI root's plugins (its configuration's `cli-plugins`, a link
    /// to `~/.docker/cli-plugins`) when `plugin` is among them; whether it is.
    pub fn cli_plugin(&self, plugin: &str) -> bool {
        let Some(dir) = cli_plugins(plugin) else {
            return false;
        };
        let link = self.path("docker-config/cli-plugins");
        if link.symlink_metadata().is_err() {
            std::os::unix::fs::symlink(dir, link).unwrap();
        }
        true
    }

    /// A path in the daemon's temporary directory.
    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// The API socket.
    pub fn sock(&self) -> PathBuf {
        self.path("berth.sock")
    }

    /// `unix://<socket>`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.sock().display())
    }

    /// The daemon's command line (not started).
    pub fn daemon_cmd(&self) -> Command {
        let mut c = Command::new(bin_dir().join("berthd"));
        c.arg("--config-file")
            .arg(self.path("daemon.json"))
            .arg("-H")
            .arg(self.host())
            .arg("--data-root")
            .arg(self.path("data"))
            .arg("--exec-root")
            .arg(self.path("exec"))
            .arg("--cgroup-parent")
            .arg(&self.cgroup_parent)
            .arg("--init-path")
            .arg(bin_dir().join("berth-init.static"))
            .arg("--runtime")
            .arg(runtime_bin())
            .args(&self.extra_args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        c
    }

    /// Starts the daemon (logging to `berthd.log`) and waits until it answers `/_ping`.
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
        self.cleaned = false;
        let up = wait_until(Duration::from_secs(10), || {
            self.http("GET", "/_ping", None)
                .map(|r| r.starts_with("HTTP/1.1 200"))
                .unwrap_or(false)
        });
        assert!(
            up,
            "berthd did not come up: {}",
            std::fs::read_to_string(self.path("berthd.log")).unwrap_or_default()
        );
    }

    /// Kills the daemon (SIGKILL), as a crash would; its containers keep running.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// [`Daemon::kill9`] then [`Daemon::start`].
    pub fn restart(&mut self) {
        self.kill9();
        self.start();
    }

    /// The docker CLI against this daemon.
    pub fn docker(&self, args: &[&str]) -> Run {
        self.docker_cmd(args).run()
    }

    /// The docker CLI with `words` (split at white space) followed by `rest` (taken as they
    /// are: templates, scripts, values with spaces).
    pub fn docker_line(&self, words: &str, rest: &[&str]) -> Run {
        self.docker(&line_args(words, rest))
    }

    /// [`Daemon::docker_line`], asserting success; its standard output.
    #[track_caller]
    pub fn docker_out(&self, words: &str, rest: &[&str]) -> String {
        self.docker_line(words, rest).ok().stdout
    }

    /// `docker inspect -f <format> <name>`'s output (asserting success).
    #[track_caller]
    pub fn inspect(&self, format: &str, name: &str) -> String {
        self.docker(&["inspect", "-f", format, name]).ok().stdout
    }

    /// The docker CLI against this daemon, not started.
    pub fn docker_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("docker");
        c.args(args)
            .env("DOCKER_HOST", self.host())
            .env("DOCKER_CONFIG", self.path("docker-config"))
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_API_VERSION");
        c
    }

    /// The docker CLI against this daemon with BuildKit as by default (buildx): neither
    /// `DOCKER_BUILDKIT` nor `BUILDKIT_PROGRESS` from the test's environment.
    pub fn buildkit_cmd(&self, args: &[&str]) -> Command {
        let mut c = self.docker_cmd(args);
        c.env_remove("DOCKER_BUILDKIT")
            .env_remove("BUILDKIT_PROGRESS");
        c
    }

    /// A directory `name` in the daemon's temporary directory holding `files` (path, content),
    /// parent directories made: a build context.
    pub fn context(&self, name: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir = self.path(name);
        std::fs::create_dir_all(&dir).unwrap();
        crate::write_files(&dir, files);
        dir
    }

    /// `docker build ARGS DIR` through the docker CLI's classic builder (`DOCKER_BUILDKIT=0`,
    /// the Engine API's `POST /build`).
    pub fn classic_build(&self, dir: &Path, args: &[&str]) -> Run {
        let dir = dir.to_str().unwrap();
        self.docker_cmd(&[&["build"], args, &[dir]].concat())
            .env("DOCKER_BUILDKIT", "0")
            .run()
    }

    /// The `berth` CLI against this daemon.
    pub fn berth(&self, args: &[&str]) -> Run {
        self.berth_cmd(args).run()
    }

    /// The `berth` CLI with `words` (split at white space) followed by `rest` (as they are).
    pub fn berth_line(&self, words: &str, rest: &[&str]) -> Run {
        self.berth(&line_args(words, rest))
    }

    /// `berth inspect -f <format> <name>`'s output (asserting success).
    #[track_caller]
    pub fn berth_inspect(&self, format: &str, name: &str) -> String {
        self.berth(&["inspect", "-f", format, name]).ok().stdout
    }

    /// The `berth` CLI against this daemon, not started.
    pub fn berth_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin_dir().join("berth"));
        c.arg("-H").arg(self.host()).args(args);
        c
    }

    /// A docker-py script (docker-py 7.2 in the peers' venv, [`DOCKER_PY_PYTHON`]) with
    /// `BERTH_SOCK` and `DOCKER_HOST` set to `unix://<socket>` and no standard input: the one
    /// way berthd's tests run docker-py. `None`, after a "skipped: …" line, without the venv.
    pub fn docker_py(&self, script: &str) -> Option<Run> {
        if !Path::new(DOCKER_PY_PYTHON).exists() {
            eprintln!("skipped: docker-py venv missing ({DOCKER_PY_PYTHON})");
            return None;
        }
        Some(
            Command::new(DOCKER_PY_PYTHON)
                .arg("-c")
                .arg(script)
                .env("BERTH_SOCK", self.host())
                .env("DOCKER_HOST", self.host())
                .stdin(Stdio::null())
                .run(),
        )
    }

    /// A raw HTTP/1.1 request; the whole response as text.
    pub fn http(&self, method: &str, path: &str, body: Option<&str>) -> std::io::Result<String> {
        let mut s = UnixStream::connect(self.sock())?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let body = body.unwrap_or("");
        // One write (`write!` would write piece by piece): a server that answers without
        // reading the body and closes (a 404 or 503 route) must not turn into EPIPE here.
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: berth\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        match s.write_all(req.as_bytes()) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            r => r?,
        }
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    }

    /// A raw `POST` of a JSON body; the whole response as text.
    #[track_caller]
    pub fn post(&self, path: &str, body: &str) -> String {
        self.http("POST", path, Some(body)).unwrap()
    }

    /// Removes every container (through the API), stops the daemon, then forcibly: shims
    /// still alive, mounts below the temporary directory, the cgroup parent in every
    /// hierarchy, the daemon's bridge and its nft table.
    pub fn cleanup(&mut self) {
        if self.cleaned {
            return;
        }
        self.cleaned = true;
        if self.child.is_some() {
            let ids = self.docker(&["ps", "-aq", "--no-trunc"]).stdout;
            for id in ids.split_whitespace() {
                let _ = self.docker(&["rm", "-f", id]);
            }
            // The test's networks: their bridges (`br-<id>`, names the leak guard cannot tie
            // to this daemon) would outlive the killed daemon.
            let _ = self.docker(&["network", "prune", "-f"]);
        }
        self.kill9();
        // A killed daemon cannot release its claims on work directories in /dev/shm (lock
        // files, see berth_util::shared_tmp): sweep what it left, as its next start would.
        for prefix in ["berth-build-ctx-", "berth-bk-"] {
            berth_util::shared_tmp::sweep(Path::new("/dev/shm"), prefix);
        }
        // Shims still alive (a failed test): stop them by their recorded pids.
        if let Ok(rd) = std::fs::read_dir(self.path("exec/containers")) {
            for e in rd.flatten() {
                if let Some(pid) = read_pid(&e.path().join("shim/init.pid")) {
                    kill9(pid);
                }
                if let Some(pid) = read_pid(&e.path().join("shim/shim.pid")) {
                    std::thread::sleep(Duration::from_millis(200));
                    kill9(pid);
                }
            }
        }
        // Published ports' proxy processes (`berthd userland-proxy … --state=<data root>…`).
        let marker = self.dir.path().display().to_string();
        for pid in crate::process::all_pids() {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd);
            if cmd.contains("\0userland-proxy\0") && cmd.contains(&marker) {
                kill9(pid);
            }
        }
        crate::unmount_below(self.dir.path());
        crate::remove_cgroup_tree(&self.cgroup_parent);
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

    /// Cleans up and fails the test if anything of this daemon stays.
    pub fn finish(mut self) {
        self.cleanup();
        self.leaks.check();
    }
}

/// `words` split at white space, then `rest`.
pub fn line_args<'a>(words: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    words
        .split_whitespace()
        .chain(rest.iter().copied())
        .collect()
}

fn read_pid(p: &Path) -> Option<i32> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.cleanup();
        // The leak guard (a field) checks after this.
    }
}

/// [`Daemon::finish`].
pub fn finish(d: Daemon) {
    d.finish();
}

#[cfg(test)]
mod tests {
    #[test]
    fn line_args_split_words_and_keep_the_rest() {
        assert_eq!(
            super::line_args("run  -d --name x\tbusybox sh -c", &["echo a b", ""]),
            ["run", "-d", "--name", "x", "busybox", "sh", "-c", "echo a b", ""]
        );
        assert_eq!(super::line_args("", &["a b"]), ["a b"]);
    }
}
