//! The one client of a runc-compatible OCI runtime binary (`berth-runtime`, runc, crun): the
//! argv of each operation in one place, the global flags (`--root`, `--log`,
//! `--log-format`) prepended once, and a runtime's failure turned into a typed error that
//! carries what it printed.
//!
//! Each operation returns a ready [`Command`]; the caller sets its stdio (a container's pipes
//! or pty, `null`, or pipes for [`Runtime::call`]) and runs it.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

/// A runtime binary and its global options.
#[derive(Debug, Clone)]
pub struct Runtime {
    /// The executable (a name looked up in `PATH`, a path, or `/proc/self/fd/N`).
    pub binary: PathBuf,
    /// The runtime's state directory (`--root`).
    pub root: PathBuf,
    /// `--log FILE` (the runtime logs to stderr without it).
    pub log: Option<PathBuf>,
    /// `--log-format` (`text` or `json`).
    pub log_format: Option<String>,
    /// More global arguments, after the ones above (`--debug`, `--systemd-cgroup`…).
    pub extra_args: Vec<OsString>,
    /// The working directory of the runtime's process (relative paths such as a console
    /// socket's, kept short for `sun_path`, are resolved from it).
    pub cwd: Option<PathBuf>,
    /// Resets every signal disposition to the default in the child before `execve`
    /// ([`crate::signal::reset_dispositions`]): ignored signals survive `execve`, and a
    /// container created by a process that ignores some would inherit them.
    pub reset_signals: bool,
}

/// Where a new process's pid and terminal go, and which descriptors it inherits: the
/// options `create`, `run` and `exec` share.
#[derive(Debug, Clone, Default)]
pub struct ProcessIo {
    /// `--pid-file`: the process's pid is written there.
    pub pid_file: Option<PathBuf>,
    /// `--console-socket`: the runtime sends the pty master there (`process.terminal`).
    pub console_socket: Option<PathBuf>,
    /// `--preserve-fds N`: descriptors 3 to 3+N-1 are passed to the process.
    pub preserve_fds: u32,
}

impl ProcessIo {
    fn args(&self, c: &mut Command) {
        if let Some(p) = &self.pid_file {
            c.arg("--pid-file").arg(p);
        }
        if let Some(s) = &self.console_socket {
            c.arg("--console-socket").arg(s);
        }
        if self.preserve_fds > 0 {
            c.arg("--preserve-fds").arg(self.preserve_fds.to_string());
        }
    }
}

/// Options of `create`.
#[derive(Debug, Clone, Default)]
pub struct CreateOpts {
    /// The init process's pid file, console socket and inherited descriptors.
    pub io: ProcessIo,
    /// `--no-pivot`: `chroot` rather than `pivot_root` (a root on a ramfs).
    pub no_pivot: bool,
}

/// Options of `run` (create and start, then wait unless detached).
#[derive(Debug, Clone, Default)]
pub struct RunOpts {
    /// The options shared with `create`.
    pub create: CreateOpts,
    /// `--detach`: return once the container started.
    pub detach: bool,
    /// `--keep`: keep the container's state after it exits (no implicit delete).
    pub keep: bool,
}

/// Options of `exec`.
#[derive(Debug, Clone, Default)]
pub struct ExecOpts {
    /// `--process FILE`: the OCI `process` JSON to run (otherwise `args`).
    pub process_file: Option<PathBuf>,
    /// The command and its arguments when there is no process file.
    pub args: Vec<OsString>,
    /// `--detach`: return once the process started.
    pub detach: bool,
    /// `--tty`: allocate a pty (with a process file, its `terminal` decides).
    pub tty: bool,
    /// The process's pid file, console socket and inherited descriptors.
    pub io: ProcessIo,
}

/// A runtime that could not run, or that failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The binary could not be executed (or waited for, or fed).
    #[error("run {binary} {op}: {source}", binary = .binary.display())]
    Spawn {
        binary: PathBuf,
        op: String,
        #[source]
        source: std::io::Error,
    },
    /// The runtime exited unsuccessfully; `stderr` is what it printed (its error message).
    #[error("{}", failure_message(.op, .status, .stderr))]
    Failed {
        op: String,
        status: ExitStatus,
        stderr: String,
    },
}

fn failure_message(op: &str, status: &ExitStatus, stderr: &str) -> String {
    if stderr.is_empty() {
        format!("runtime {op} failed: {status}")
    } else {
        stderr.to_string()
    }
}

impl RuntimeError {
    /// A failure of `op` from its exit status and what it printed on stderr (for callers that
    /// ran the command with their own pipes).
    pub fn failed(op: &str, status: ExitStatus, stderr: &[u8]) -> Self {
        RuntimeError::Failed {
            op: op.to_string(),
            status,
            stderr: String::from_utf8_lossy(stderr).trim().to_string(),
        }
    }

    /// The runtime reported that the container does not exist (runc: "container does not
    /// exist", berth-runtime: "… not found").
    pub fn is_not_found(&self) -> bool {
        match self {
            RuntimeError::Failed { stderr, .. } => {
                stderr.contains("not found") || stderr.contains("does not exist")
            }
            RuntimeError::Spawn { .. } => false,
        }
    }
}

impl Runtime {
    /// `binary` with state in `root`, no log file, signal dispositions inherited.
    pub fn new(binary: impl Into<PathBuf>, root: impl Into<PathBuf>) -> Self {
        Runtime {
            binary: binary.into(),
            root: root.into(),
            log: None,
            log_format: None,
            extra_args: Vec::new(),
            cwd: None,
            reset_signals: false,
        }
    }

    /// The global arguments, in order.
    pub fn global_args(&self) -> Vec<OsString> {
        let mut v: Vec<OsString> = vec!["--root".into(), self.root.clone().into()];
        if let Some(l) = &self.log {
            v.push("--log".into());
            v.push(l.clone().into());
        }
        if let Some(f) = &self.log_format {
            v.push("--log-format".into());
            v.push(f.into());
        }
        v.extend(self.extra_args.iter().cloned());
        v
    }

    /// The binary with the global arguments (and the working directory and signal reset),
    /// ready for an operation's arguments.
    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.binary);
        c.args(self.global_args());
        if let Some(d) = &self.cwd {
            c.current_dir(d);
        }
        if self.reset_signals {
            // SAFETY: the closure runs in the forked child before exec and only makes raw
            // rt_sigaction calls (async-signal-safe); std clears the signal mask itself.
            unsafe {
                c.pre_exec(|| {
                    crate::signal::reset_dispositions();
                    Ok(())
                });
            }
        }
        c
    }

    fn op(&self, verb: &str) -> Command {
        let mut c = self.command();
        c.arg(verb);
        c
    }

    fn create_args(c: &mut Command, bundle: &Path, o: &CreateOpts) {
        c.arg("--bundle").arg(bundle);
        o.io.args(c);
        if o.no_pivot {
            c.arg("--no-pivot");
        }
    }

    /// `create --bundle B [options] ID`: the container waits for `start`.
    pub fn create(&self, id: &str, bundle: &Path, o: &CreateOpts) -> Command {
        let mut c = self.op("create");
        Self::create_args(&mut c, bundle, o);
        c.arg(id);
        c
    }

    /// `start ID`.
    pub fn start(&self, id: &str) -> Command {
        let mut c = self.op("start");
        c.arg(id);
        c
    }

    /// `run --bundle B [options] ID`: create, start and (unless detached) wait; the container
    /// is deleted when it exits unless `keep`.
    pub fn run(&self, id: &str, bundle: &Path, o: &RunOpts) -> Command {
        let mut c = self.op("run");
        Self::create_args(&mut c, bundle, &o.create);
        if o.detach {
            c.arg("--detach");
        }
        if o.keep {
            c.arg("--keep");
        }
        c.arg(id);
        c
    }

    /// `exec [options] ID [ARGS…]`.
    pub fn exec(&self, id: &str, o: &ExecOpts) -> Command {
        let mut c = self.op("exec");
        if o.detach {
            c.arg("--detach");
        }
        if o.tty {
            c.arg("--tty");
        }
        if let Some(p) = &o.process_file {
            c.arg("--process").arg(p);
        }
        o.io.args(&mut c);
        c.arg(id);
        c.args(&o.args);
        c
    }

    /// `kill [--all] ID SIGNAL` (a number or a name: `9`, `KILL`, `SIGKILL`).
    pub fn kill(&self, id: &str, signal: &str, all: bool) -> Command {
        let mut c = self.op("kill");
        if all {
            c.arg("--all");
        }
        c.arg(id).arg(signal);
        c
    }

    /// `delete [--force] ID`.
    pub fn delete(&self, id: &str, force: bool) -> Command {
        let mut c = self.op("delete");
        if force {
            c.arg("--force");
        }
        c.arg(id);
        c
    }

    /// `update --resources FILE ID`: the OCI `linux.resources` JSON in `resources`, or on
    /// stdin when it is `-` (see [`Runtime::call`]'s `input`).
    pub fn update(&self, id: &str, resources: &Path) -> Command {
        let mut c = self.op("update");
        c.arg("--resources").arg(resources).arg(id);
        c
    }

    /// `pause ID` (freeze every process).
    pub fn pause(&self, id: &str) -> Command {
        let mut c = self.op("pause");
        c.arg(id);
        c
    }

    /// `resume ID`.
    pub fn resume(&self, id: &str) -> Command {
        let mut c = self.op("resume");
        c.arg(id);
        c
    }

    /// `state ID` (the OCI state JSON on stdout).
    pub fn state(&self, id: &str) -> Command {
        let mut c = self.op("state");
        c.arg(id);
        c
    }

    /// The operation of a command made by this runtime (the first argument after the global
    /// ones), for error messages.
    pub fn op_name(&self, cmd: &Command) -> String {
        cmd.get_args()
            .nth(self.global_args().len())
            .map(|a| a.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Runs `cmd` (made by this runtime) to completion with `input` on its stdin (or none)
    /// and returns its stdout; a failure carries the runtime's stderr. For operations that
    /// do not touch a container's stdio.
    pub fn call(&self, mut cmd: Command, input: Option<&[u8]>) -> Result<Vec<u8>, RuntimeError> {
        let op = self.op_name(&cmd);
        let spawn_err = |source| RuntimeError::Spawn {
            binary: self.binary.clone(),
            op: op.clone(),
            source,
        };
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let out = match input {
            Some(data) => crate::process::output_with_input(&mut cmd, data),
            None => cmd.stdin(Stdio::null()).output(),
        }
        .map_err(spawn_err)?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(RuntimeError::failed(&op, out.status, &out.stderr))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(c: &Command) -> Vec<String> {
        std::iter::once(c.get_program())
            .chain(c.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    fn rt() -> Runtime {
        Runtime::new("berth-runtime", "/run/berth/runtime")
    }

    #[test]
    fn global_arguments_come_first() {
        assert_eq!(
            argv(&rt().start("c1")),
            [
                "berth-runtime",
                "--root",
                "/run/berth/runtime",
                "start",
                "c1"
            ]
        );
        let mut r = rt();
        r.log = Some("/state/runtime.log".into());
        r.log_format = Some("json".into());
        r.extra_args = vec!["--debug".into()];
        assert_eq!(
            argv(&r.state("c1")),
            [
                "berth-runtime",
                "--root",
                "/run/berth/runtime",
                "--log",
                "/state/runtime.log",
                "--log-format",
                "json",
                "--debug",
                "state",
                "c1"
            ]
        );
        assert_eq!(r.op_name(&r.state("c1")), "state");
    }

    #[test]
    fn create_and_run() {
        let r = rt();
        assert_eq!(
            argv(&r.create("c1", Path::new("/b"), &CreateOpts::default()))[3..],
            ["create", "--bundle", "/b", "c1"]
        );
        let o = CreateOpts {
            io: ProcessIo {
                console_socket: Some("console.sock".into()),
                pid_file: Some("/s/init.pid".into()),
                preserve_fds: 2,
            },
            no_pivot: true,
        };
        assert_eq!(
            argv(&r.create("c1", Path::new("/b"), &o))[3..],
            [
                "create",
                "--bundle",
                "/b",
                "--pid-file",
                "/s/init.pid",
                "--console-socket",
                "console.sock",
                "--preserve-fds",
                "2",
                "--no-pivot",
                "c1"
            ]
        );
        assert_eq!(
            argv(&r.run("b1", Path::new("/w/bundle"), &RunOpts::default()))[3..],
            ["run", "--bundle", "/w/bundle", "b1"]
        );
        let o = RunOpts {
            create: CreateOpts {
                io: ProcessIo {
                    pid_file: Some("p".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
            detach: true,
            keep: true,
        };
        assert_eq!(
            argv(&r.run("b1", Path::new("/w"), &o))[3..],
            [
                "run",
                "--bundle",
                "/w",
                "--pid-file",
                "p",
                "--detach",
                "--keep",
                "b1"
            ]
        );
    }

    #[test]
    fn exec_kill_delete_update_pause_resume() {
        let r = rt();
        let o = ExecOpts {
            process_file: Some("/s/exec-x.json".into()),
            detach: true,
            io: ProcessIo {
                pid_file: Some("/s/exec-x.pid".into()),
                console_socket: Some("console.sock".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(
            argv(&r.exec("c1", &o))[3..],
            [
                "exec",
                "--detach",
                "--process",
                "/s/exec-x.json",
                "--pid-file",
                "/s/exec-x.pid",
                "--console-socket",
                "console.sock",
                "c1"
            ]
        );
        let o = ExecOpts {
            args: vec!["ls".into(), "-l".into()],
            tty: true,
            io: ProcessIo {
                preserve_fds: 1,
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(
            argv(&r.exec("c1", &o))[3..],
            ["exec", "--tty", "--preserve-fds", "1", "c1", "ls", "-l"]
        );
        assert_eq!(
            argv(&r.kill("c1", "9", true))[3..],
            ["kill", "--all", "c1", "9"]
        );
        assert_eq!(
            argv(&r.kill("c1", "KILL", false))[3..],
            ["kill", "c1", "KILL"]
        );
        assert_eq!(
            argv(&r.delete("c1", true))[3..],
            ["delete", "--force", "c1"]
        );
        assert_eq!(argv(&r.delete("c1", false))[3..], ["delete", "c1"]);
        assert_eq!(
            argv(&r.update("c1", Path::new("-")))[3..],
            ["update", "--resources", "-", "c1"]
        );
        assert_eq!(argv(&r.pause("c1"))[3..], ["pause", "c1"]);
        assert_eq!(argv(&r.resume("c1"))[3..], ["resume", "c1"]);
    }

    #[test]
    fn working_directory() {
        let mut r = rt();
        r.cwd = Some("/state/c1".into());
        assert_eq!(
            r.start("c1").get_current_dir(),
            Some(Path::new("/state/c1"))
        );
    }

    /// A fake runtime: a shell script that records its arguments and stdin and fails with a
    /// message when asked to.
    fn fake(dir: &Path) -> Runtime {
        use std::os::unix::fs::PermissionsExt;
        let bin = dir.join("fake-runtime");
        std::fs::write(
            &bin,
            "#!/bin/sh\n\
             d=$(dirname \"$0\")\n\
             echo \"$@\" > \"$d/args\"\n\
             case \"$*\" in\n\
             *update*) cat > \"$d/stdin\" ;;\n\
             *state*) echo '{\"status\":\"running\"}' ;;\n\
             *missing*) echo 'container \"missing\" does not exist' >&2; exit 1 ;;\n\
             *quiet*) exit 3 ;;\n\
             esac\n",
        )
        .unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        Runtime::new(bin, dir.join("root"))
    }

    fn scratch() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "berth-util-runtime-{}-{}",
            std::process::id(),
            crate::fs::unique()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn call_returns_stdout_and_feeds_stdin() {
        let d = scratch();
        let r = fake(&d);
        let out = r.call(r.state("c1"), None).unwrap();
        assert_eq!(out, b"{\"status\":\"running\"}\n");
        r.call(r.update("c1", Path::new("-")), Some(b"{\"memory\":{}}"))
            .unwrap();
        assert_eq!(std::fs::read(d.join("stdin")).unwrap(), b"{\"memory\":{}}");
        assert_eq!(
            std::fs::read_to_string(d.join("args")).unwrap().trim(),
            format!(
                "--root {} update --resources - c1",
                d.join("root").display()
            )
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn failures_carry_the_runtime_message() {
        let d = scratch();
        let r = fake(&d);
        let e = r.call(r.delete("missing", true), None).unwrap_err();
        assert!(e.is_not_found());
        assert_eq!(e.to_string(), "container \"missing\" does not exist");
        let e = r.call(r.kill("quiet", "9", false), None).unwrap_err();
        assert!(!e.is_not_found());
        assert_eq!(e.to_string(), "runtime kill failed: exit status: 3");
        let mut gone = r.clone();
        gone.binary = d.join("no-such-binary");
        let e = gone.call(gone.start("c1"), None).unwrap_err();
        assert!(matches!(e, RuntimeError::Spawn { .. }), "{e:?}");
        assert!(e.to_string().contains("no-such-binary start"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn signal_dispositions_are_reset_when_asked() {
        use std::os::unix::fs::PermissionsExt;
        let d = scratch();
        let bin = d.join("show-ignored");
        std::fs::write(&bin, "#!/bin/sh\ngrep SigIgn /proc/self/status\n").unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let ignored = |r: &Runtime| -> bool {
            let out = r.command().output().unwrap();
            let s = String::from_utf8(out.stdout).unwrap();
            let mask = u64::from_str_radix(s.split_whitespace().nth(1).unwrap(), 16).unwrap();
            mask & (1 << (libc::SIGUSR2 - 1)) != 0
        };
        // SAFETY: SIG_IGN installs no handler; nothing else in this test process uses
        // SIGUSR2 (nextest runs each test in a process of its own).
        let old = unsafe { libc::signal(libc::SIGUSR2, libc::SIG_IGN) };
        let mut r = Runtime::new(&bin, "/r");
        let kept = ignored(&r);
        r.reset_signals = true;
        let reset = ignored(&r);
        // SAFETY: restores the disposition saved above.
        unsafe { libc::signal(libc::SIGUSR2, old) };
        assert!(kept, "an ignored signal is inherited by default");
        assert!(!reset, "reset_signals restores the default");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
