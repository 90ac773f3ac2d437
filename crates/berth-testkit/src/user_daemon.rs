//! A rootless `berthd` of a [`TestUser`] on its XDG default paths, driven through the `berth`
//! CLI (which finds the socket by itself) and the docker CLI; stopped on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::daemon::bin_dir;
use crate::process::{run_output, wait_until, Run};
use crate::user::TestUser;

/// The user's daemon; stopped (SIGTERM to its supervisor) on drop.
pub struct UserDaemon<'a> {
    pub user: &'a TestUser,
    child: Child,
    log: PathBuf,
}

impl<'a> UserDaemon<'a> {
    /// Starts the daemon and waits until it answers.
    pub fn start(user: &'a TestUser) -> UserDaemon<'a> {
        Self::start_with(user, |_| {})
    }

    /// Starts the daemon with `setup` applied to its command (e.g. an environment variable).
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
        let sock = user.runtime_dir().join("berth/berth.sock");
        // (A daemon that exits fails at once.)
        let up = wait_until(Duration::from_secs(30), || {
            !matches!(d.child.try_wait(), Ok(None))
                || (sock.exists() && d.berth(&["version"]).code == 0)
        });
        assert!(
            up && matches!(d.child.try_wait(), Ok(None)),
            "rootless berthd did not come up: {}",
            d.log()
        );
        d
    }

    /// The daemon's log so far (every start of this user's daemons).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The supervisor's pid (the process started; the daemon is its child).
    pub fn supervisor_pid(&self) -> u32 {
        self.child.id()
    }

    /// The `berth` CLI as the user, with no address: it must find the daemon itself.
    pub fn berth(&self, args: &[&str]) -> Run {
        run_output(
            self.user
                .command(bin_dir().join("berth"))
                .args(args)
                .stdin(Stdio::null())
                .output()
                .unwrap(),
        )
    }

    /// The docker CLI as the user, on the daemon's socket.
    pub fn docker(&self, args: &[&str]) -> Run {
        let sock = self.user.runtime_dir().join("berth/berth.sock");
        run_output(
            self.user
                .command("docker")
                .env("DOCKER_HOST", format!("unix://{}", sock.display()))
                .args(args)
                .stdin(Stdio::null())
                .output()
                .unwrap(),
        )
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

    /// Kills the daemon itself (the supervisor's child in the user namespace) with SIGKILL,
    /// as a crash would; the supervisor then exits too. Containers keep running.
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
                if let Some(pid) = rustix::process::Pid::from_raw(p) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
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
        // (The user's remaining processes go with the TestUser.)
        self.stop();
    }
}
