//! [`TestUser`]: an unprivileged user with subordinate id ranges for rootless tests, made with
//! `useradd` (which allocates the `/etc/subuid` and `/etc/subgid` ranges, under its locks) and
//! removed on drop, even when the test fails: its processes killed, `userdel`, any
//! subordinate-id line still naming it removed, its home deleted.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::CommandRun;

/// A subordinate id range (`/etc/subuid` or `/etc/subgid`): `count` ids from `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub start: u32,
    pub count: u32,
}

/// Why [`TestUser::create`] failed.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// A file operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A shadow tool (`useradd`, `usermod`, `userdel`) could not run or failed.
    #[error("{command}: {message}")]
    Tool { command: String, message: String },
    /// The new user is missing from `/etc/passwd` or a subordinate-id file.
    #[error("no entry for user {name} in {file}")]
    NotListed { name: String, file: String },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> UserError {
    let path = path.to_path_buf();
    move |source| UserError::Io { op, path, source }
}

/// See the module docs.
#[derive(Debug)]
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Its home directory (mode 0755, owned by the user); holds `run/` for `XDG_RUNTIME_DIR`.
    pub home: PathBuf,
    pub subuid: IdRange,
    pub subgid: IdRange,
}

/// The range of `name` in a `/etc/subuid`-format text.
pub fn parse_subid(text: &str, name: &str) -> Option<IdRange> {
    text.lines().find_map(|l| {
        let mut f = l.trim().split(':');
        if f.next()? != name {
            return None;
        }
        let start = f.next()?.parse().ok()?;
        let count = f.next()?.parse().ok()?;
        Some(IdRange { start, count })
    })
}

/// Runs a shadow tool, retrying while another one holds the password files' lock.
fn shadow_tool(program: &str, args: &[&str]) -> Result<(), UserError> {
    let mut last = String::new();
    for _ in 0..100 {
        let out = Command::new(program)
            .args(args)
            .output()
            .map_err(|e| UserError::Tool {
                command: program.to_string(),
                message: e.to_string(),
            })?;
        if out.status.success() {
            return Ok(());
        }
        last = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if !last.contains("lock") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Err(UserError::Tool {
        command: format!("{program} {}", args.join(" ")),
        message: last,
    })
}

impl TestUser {
    /// A new user `<prefix>-<random>` (at most 32 characters) with its own group, a home in a
    /// fresh directory and subordinate ranges. Needs root.
    pub fn create(prefix: &str) -> Result<TestUser, UserError> {
        let name = format!("{prefix}-{}", &crate::unique_id()[..8]);
        assert!(name.len() <= 32, "user name {name} too long");
        let base = tempfile::Builder::new()
            .prefix("berth-user-")
            .tempdir()
            .map_err(io_err(
                "create a temporary directory in",
                &std::env::temp_dir(),
            ))?
            .keep();
        // The temporary directory is 0700; the user must reach its home below it.
        set_mode(&base, 0o755)?;
        let home = base.join(&name);
        shadow_tool(
            "useradd",
            &[
                "--user-group",
                "--create-home",
                "--home-dir",
                home.to_str().unwrap(),
                "--shell",
                "/bin/sh",
                &name,
            ],
        )
        .inspect_err(|_| {
            let _ = std::fs::remove_dir_all(&base);
        })?;
        // From here on, Drop cleans up.
        let mut user = TestUser {
            name: name.clone(),
            uid: 0,
            gid: 0,
            home: home.clone(),
            subuid: IdRange { start: 0, count: 0 },
            subgid: IdRange { start: 0, count: 0 },
        };
        let passwd = std::fs::read_to_string("/etc/passwd")
            .map_err(io_err("read", Path::new("/etc/passwd")))?;
        (user.uid, user.gid) = passwd
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 3 && f[0] == name)
                    .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
            })
            .ok_or_else(|| UserError::NotListed {
                name: name.clone(),
                file: "/etc/passwd".into(),
            })?;
        assert_ne!(user.uid, 0, "useradd made {name} with uid 0");
        set_mode(&home, 0o755)?;
        user.subuid = user.subid_range("/etc/subuid")?;
        user.subgid = user.subid_range("/etc/subgid")?;
        let run = user.runtime_dir();
        std::fs::create_dir_all(&run).map_err(io_err("create", &run))?;
        set_mode(&run, 0o700)?;
        std::os::unix::fs::chown(&run, Some(user.uid), Some(user.gid))
            .map_err(io_err("chown", &run))?;
        Ok(user)
    }

    /// The user's range in `file`; one is added with `usermod` when `useradd` made none.
    fn subid_range(&self, file: &str) -> Result<IdRange, UserError> {
        let read = || {
            parse_subid(
                &std::fs::read_to_string(file).unwrap_or_default(),
                &self.name,
            )
        };
        if let Some(r) = read() {
            return Ok(r);
        }
        // A range no other entry uses: above every range of the file.
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let top = text
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                Some(f.get(1)?.parse::<u64>().ok()? + f.get(2)?.parse::<u64>().ok()?)
            })
            .max()
            .unwrap_or(100_000)
            .max(100_000);
        let range = format!("{top}-{}", top + 65_535);
        let flag = if file.ends_with("subuid") {
            "--add-subuids"
        } else {
            "--add-subgids"
        };
        shadow_tool("usermod", &[flag, &range, &self.name])?;
        read().ok_or_else(|| UserError::NotListed {
            name: self.name.clone(),
            file: file.to_string(),
        })
    }

    /// `$XDG_RUNTIME_DIR` for the user (`<home>/run`, mode 0700).
    pub fn runtime_dir(&self) -> PathBuf {
        self.home.join("run")
    }

    /// `program` run as the user (std drops root's supplementary groups), in its home, with a login's
    /// environment: `HOME`, `USER`, `LOGNAME`, `XDG_RUNTIME_DIR`, Debian's `PATH` of an ordinary
    /// user (no `sbin` directories).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        c.env_clear()
            .env("HOME", &self.home)
            .env("USER", &self.name)
            .env("LOGNAME", &self.name)
            .env("XDG_RUNTIME_DIR", self.runtime_dir())
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .current_dir(&self.home)
            .uid(self.uid)
            .gid(self.gid);
        c
    }

    /// A directory `name` in the user's home, owned by the user.
    pub fn mkdir(&self, name: &str) -> PathBuf {
        let p = self.home.join(name);
        std::fs::create_dir_all(&p).unwrap();
        self.chown_tree(&p);
        p
    }

    /// Gives everything at and below `p` to the user (e.g. a rootfs written by the test).
    pub fn chown_tree(&self, p: &Path) {
        Command::new("chown")
            .args([
                "-R",
                "--no-dereference",
                &format!("{}:{}", self.uid, self.gid),
            ])
            .arg(p)
            .output_ok();
    }

    /// The pids of every process (zombies aside) running with the user's uid or one of its
    /// subordinate uids (real, effective or saved).
    pub fn pids(&self) -> Vec<i32> {
        let mut v = Vec::new();
        for pid in crate::process::all_pids() {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let uids = status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .unwrap_or("");
            // A zombie runs nothing (its parent reaps it).
            if status
                .lines()
                .find_map(|l| l.strip_prefix("State:"))
                .is_some_and(|st| st.trim_start().starts_with('Z'))
            {
                continue;
            }
            let sub = self.subuid.start as u64..self.subuid.start as u64 + self.subuid.count as u64;
            if uids.split_whitespace().take(3).any(|u| {
                u.parse::<u64>()
                    .is_ok_and(|u| u == self.uid as u64 || sub.contains(&u))
            }) {
                v.push(pid);
            }
        }
        v
    }
}

/// The processes of `pids` that hold a capability in the initial user namespace: those in it
/// (the test runs there) whose effective, permitted or ambient set is not empty. A process in
/// any other user namespace holds capabilities only there and below.
pub fn privileged_in_initial_ns(pids: &[i32]) -> Vec<String> {
    let initial = std::fs::metadata("/proc/self/ns/user").ok();
    let key = |m: &std::fs::Metadata| {
        use std::os::unix::fs::MetadataExt;
        (m.dev(), m.ino())
    };
    let mut bad = Vec::new();
    for pid in pids {
        let Ok(ns) = std::fs::metadata(format!("/proc/{pid}/ns/user")) else {
            continue; // gone
        };
        if initial.as_ref().map(key) != Some(key(&ns)) {
            continue;
        }
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        for set in ["CapEff:", "CapPrm:", "CapAmb:"] {
            let v = status
                .lines()
                .find_map(|l| l.strip_prefix(set))
                .map(str::trim)
                .unwrap_or("0");
            if u64::from_str_radix(v, 16) != Ok(0) {
                let name = status.lines().next().unwrap_or("").to_string();
                bad.push(format!("pid {pid} ({name}) {set} {v}"));
            }
        }
    }
    bad
}

fn set_mode(p: &Path, mode: u32) -> Result<(), UserError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).map_err(io_err("chmod", p))
}

/// Removes the lines of `name` from a subordinate-id file (what `userdel` left, if anything).
fn remove_subid_lines(file: &str, name: &str) {
    let Ok(text) = std::fs::read_to_string(file) else {
        return;
    };
    if parse_subid(&text, name).is_none() {
        return;
    }
    let kept: String = text
        .lines()
        .filter(|l| l.split(':').next() != Some(name))
        .map(|l| format!("{l}\n"))
        .collect();
    let _ = std::fs::write(file, kept);
}

impl Drop for TestUser {
    fn drop(&mut self) {
        // Processes of the user (containers, daemons) first: userdel refuses a logged-in user.
        for _ in 0..50 {
            // Never root's processes (a user whose uid could not be read).
            let pids = if self.uid == 0 {
                Vec::new()
            } else {
                self.pids()
            };
            if pids.is_empty() {
                break;
            }
            for p in pids.into_iter().filter_map(rustix::process::Pid::from_raw) {
                let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        if let Err(e) = shadow_tool("userdel", &["--force", &self.name]) {
            eprintln!("TestUser: {e}");
        }
        remove_subid_lines("/etc/subuid", &self.name);
        remove_subid_lines("/etc/subgid", &self.name);
        if let Some(base) = self.home.parent() {
            let _ = std::fs::remove_dir_all(base);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subid_lines() {
        let text = "alice:100000:65536\nbob:165536:65536\n";
        assert_eq!(
            parse_subid(text, "bob"),
            Some(IdRange {
                start: 165536,
                count: 65536
            })
        );
        assert_eq!(parse_subid(text, "bo"), None);
    }
}
