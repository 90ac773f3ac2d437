//! [`UserDaemon`]: a rootless `berthd` run by a [`TestUser`] on its XDG default paths, driven
//! through the `berth` CLI (which finds the socket by itself) and the docker CLI as that user;
//! stopped on drop (the user's remaining processes go with the `TestUser`).

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::daemon::bin_dir;
use crate::process::{run_output, wait_until, Run};
use crate::user::TestUser;
use crate::Rootfs;

/// See the module docs.
pub struct UserDaemon<'a> {
    pub user: &'a TestUser,
    child: Child,
    log: PathBuf,
}

impl<'a> UserDaemon<'a> {
    /// Starts the user's daemon and waits until `berth version` answers.
    pub fn start(user: &'a TestUser) -> UserDaemon<'a> {
        Self::start_with(user, |_| {})
    }

    /// [`UserDaemon::start`], busybox loaded ([`UserDaemon::load_busybox`]).
    pub fn with_busybox(user: &'a TestUser) -> UserDaemon<'a> {
        let d = Self::start(user);
        d.load_busybox();
        d
    }

    /// [`UserDaemon::start`] with `setup` applied to the daemon's command first (e.g. an
    /// environment variable).
    pub fn start_with(user: &'a TestUser, setup: impl FnOnce(&mut Command)) -> UserDaemon<'a> {
        let log = user.home.join("berthd.log");
        let mut cmd = user.command(bin_dir().join("berthd"));
        cmd.arg("--init-path")
            .arg(bin_dir().join("berth-init.static"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .unwrap(),
            );
        setup(&mut cmd);
        let child = cmd.spawn().unwrap();
        let mut d = UserDaemon { user, child, log };
        // (A daemon that exits fails at once.)
        let up = wait_until(Duration::from_secs(30), || {
            !matches!(d.child.try_wait(), Ok(None))
                || (d.sock().exists() && d.berth(&["version"]).code == 0)
        });
        assert!(
            up && matches!(d.child.try_wait(), Ok(None)),
            "rootless berthd did not come up: {}",
            d.log()
        );
        d
    }

    /// The daemon's API socket (`$XDG_RUNTIME_DIR/berth/berth.sock`).
    pub fn sock(&self) -> PathBuf {
        self.user.runtime_dir().join("berth/berth.sock")
    }

    /// What the daemon wrote to stderr so far (all its runs).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The `berth` CLI as the user, with no address (it must find the daemon itself), not
    /// started.
    pub fn berth_cmd(&self, args: &[&str]) -> Command {
        let mut c = self.user.command(bin_dir().join("berth"));
        c.args(args);
        c
    }

    /// The `berth` CLI as the user, run to completion (no stdin).
    pub fn berth(&self, args: &[&str]) -> Run {
        run_output(self.berth_cmd(args).stdin(Stdio::null()).output().unwrap())
    }

    /// [`UserDaemon::berth`], asserting success; its standard output.
    #[track_caller]
    pub fn berth_stdout(&self, args: &[&str]) -> String {
        self.berth(args).ok().stdout
    }

    /// The docker CLI as the user on the daemon's socket (its configuration in the user's
    /// `~/.docker`), not started.
    pub fn docker_cmd(&self, args: &[&str]) -> Command {
        let mut c = self.user.command("docker");
        c.env("DOCKER_HOST", format!("unix://{}", self.sock().display()))
            .args(args);
        c
    }

    /// The docker CLI as the user, run to completion (no stdin).
    pub fn docker(&self, args: &[&str]) -> Run {
        run_output(self.docker_cmd(args).stdin(Stdio::null()).output().unwrap())
    }

    /// [`UserDaemon::docker`], asserting success; its standard output.
    #[track_caller]
    pub fn docker_stdout(&self, args: &[&str]) -> String {
        self.docker(args).ok().stdout
    }

    /// Makes root's buildx plugin (`~/.docker/cli-plugins/docker-buildx`) the user's (a link,
    /// or a copy across file systems); false when it is not installed.
    pub fn install_buildx(&self) -> bool {
        let Some(home) = std::env::var_os("HOME") else {
            return false;
        };
        let src = Path::new(&home).join(".docker/cli-plugins/docker-buildx");
        if !src.exists() {
            return false;
        }
        let dir = self.user.mkdir(".docker/cli-plugins");
        let dst = dir.join("docker-buildx");
        if std::fs::hard_link(&src, &dst).is_err() {
            std::fs::copy(&src, &dst).unwrap();
        }
        self.user.chown_tree(&self.user.home.join(".docker"));
        true
    }

    /// Imports busybox with files of several owners ([`owners_image_tar`]) as
    /// `busybox:latest`, with `CMD ["sh"]`.
    pub fn load_busybox(&self) {
        let tar = self.user.home.join("busybox-owners.tar");
        std::fs::write(&tar, owners_image_tar()).unwrap();
        self.user.chown_tree(&tar);
        self.berth(&[
            "import",
            "-c",
            "CMD [\"sh\"]",
            tar.to_str().unwrap(),
            "busybox:latest",
        ])
        .ok();
    }

    /// Stops the daemon (SIGTERM to its supervisor, which forwards it); containers keep
    /// running.
    pub fn stop(&mut self) {
        // Once reaped, its pid may be another process's.
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let stopped = wait_until(Duration::from_secs(20), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        if !stopped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Kills the daemon itself (the supervisor's child, in the user namespace) with SIGKILL,
    /// as a crash would; the supervisor exits with it. Containers keep running.
    pub fn crash(&mut self) {
        let sup = self.child.id();
        let children =
            std::fs::read_to_string(format!("/proc/{sup}/task/{sup}/children")).unwrap_or_default();
        for p in children
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            if std::fs::read_to_string(format!("/proc/{p}/comm"))
                .is_ok_and(|c| c.trim() == "berthd")
            {
                crate::process::kill9(p);
            }
        }
        let gone = wait_until(Duration::from_secs(20), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        assert!(gone, "the supervisor outlived its killed daemon");
    }
}

impl Drop for UserDaemon<'_> {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `dev:inode` of a process's user namespace.
pub fn userns_of(pid: &str) -> String {
    let m = std::fs::metadata(format!("/proc/{pid}/ns/user")).unwrap();
    format!("{}:{}", m.dev(), m.ino())
}

/// busybox (`bin`, `etc`, `tmp`, `root`) plus files of several owners (ids a subordinate
/// range covers): `/owners/by-1000` (1000:1000), `/owners/by-nobody` (65534:65534),
/// `/owners/by-33-44` (33:44).
pub fn owners_image_tar() -> Vec<u8> {
    let base = Rootfs::busybox().dirs(&["bin", "etc", "tmp", "root"]).tar();
    let mut b = tar::Builder::new(Vec::new());
    let mut a = tar::Archive::new(&base[..]);
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let mut h = e.header().clone();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        let path = e.path().unwrap().into_owned();
        match e.link_name().unwrap() {
            Some(l) => b.append_link(&mut h, &path, &l).unwrap(),
            None => b.append_data(&mut h, &path, &data[..]).unwrap(),
        }
    }
    for (path, uid, gid) in [
        ("owners/by-1000", 1000, 1000),
        ("owners/by-nobody", 65534, 65534),
        ("owners/by-33-44", 33, 44),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_size(2);
        b.append_data(&mut h, path, &b"x\n"[..]).unwrap();
    }
    b.into_inner().unwrap()
}

/// The first file named `name` below `dir` (not following links).
pub fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        let t = e.file_type().ok()?;
        if t.is_file() && e.file_name() == name {
            return Some(p);
        }
        if t.is_dir() {
            if let Some(f) = find_file(&p, name) {
                return Some(f);
            }
        }
    }
    None
}
