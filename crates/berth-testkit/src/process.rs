//! Commands' results, ports, waiting, and processes.

use std::io::Write;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A finished command: exit code (-1 when killed by a signal) and its output as text.
#[derive(Debug, Clone)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// [`Run`] from a command's output.
pub fn run_output(o: Output) -> Run {
    Run::from(o)
}

impl Run {
    /// Asserts success (showing both streams otherwise).
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }

    /// Asserts failure whose standard error contains `needle`.
    #[track_caller]
    pub fn fails_with(self, needle: &str) -> Self {
        assert_ne!(self.code, 0, "succeeded: {}", self.stdout);
        assert_contains("stderr", &self.stderr, needle);
        self
    }

    /// Asserts exit code `code` and exactly `stderr` on standard error.
    #[track_caller]
    pub fn failed(self, code: i32, stderr: impl AsRef<str>) -> Self {
        assert_eq!(
            self.code, code,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        assert_eq!(self.stderr, stderr.as_ref());
        self
    }

    /// Asserts exit code `code` and standard error containing `needle`.
    #[track_caller]
    pub fn failed_with(self, code: i32, needle: &str) -> Self {
        assert_eq!(
            self.code, code,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        assert_contains("stderr", &self.stderr, needle);
        self
    }

    /// Asserts standard output contains `needle` (whatever the exit code).
    #[track_caller]
    pub fn stdout_contains(&self, needle: &str) -> &Self {
        assert_contains("stdout", &self.stdout, needle);
        self
    }

    /// Asserts standard error contains `needle` (whatever the exit code).
    #[track_caller]
    pub fn stderr_contains(&self, needle: &str) -> &Self {
        assert_contains("stderr", &self.stderr, needle);
        self
    }

    /// Standard output without surrounding white space.
    pub fn out(&self) -> &str {
        self.stdout.trim()
    }
}

/// Asserts that `text` (the stream named `stream`) contains `needle`, showing it otherwise.
#[track_caller]
fn assert_contains(stream: &str, text: &str, needle: &str) {
    assert!(text.contains(needle), "{stream} lacks {needle:?}: {text}");
}

/// Running a [`Command`](std::process::Command) to its end as a [`Run`].
pub trait CommandRun {
    /// Runs the command (standard input from /dev/null unless set); panics only when it
    /// cannot be started.
    fn run(&mut self) -> Run;

    /// [`CommandRun::run`], asserting success (showing both streams otherwise).
    fn run_ok(&mut self) -> Run;

    /// The raw output, asserting success (showing standard error otherwise).
    fn output_ok(&mut self) -> Output;

    /// Starts the command with its three standard streams piped.
    fn spawn_piped(&mut self) -> Child;

    /// Runs the command to its end with `input` on its standard input, written from a thread
    /// (the command may exit without reading it) and then closed.
    fn run_with_input(&mut self, input: &[u8]) -> Run;
}

impl CommandRun for std::process::Command {
    fn run(&mut self) -> Run {
        let o = self
            .output()
            .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", self.get_program()));
        Run::from(o)
    }

    #[track_caller]
    fn run_ok(&mut self) -> Run {
        let r = self.run();
        assert_eq!(
            r.code,
            0,
            "{:?} {:?} failed\nstdout: {}\nstderr: {}",
            self.get_program(),
            self.get_args().collect::<Vec<_>>(),
            r.stdout,
            r.stderr
        );
        r
    }

    #[track_caller]
    fn output_ok(&mut self) -> Output {
        let o = self
            .output()
            .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", self.get_program()));
        assert!(
            o.status.success(),
            "{:?} {:?} failed ({}): {}",
            self.get_program(),
            self.get_args().collect::<Vec<_>>(),
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        o
    }

    fn spawn_piped(&mut self) -> Child {
        self.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", self.get_program()))
    }

    fn run_with_input(&mut self, input: &[u8]) -> Run {
        let mut child = self.spawn_piped();
        let mut stdin = child.stdin.take().unwrap();
        let data = input.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&data);
        });
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        Run::from(out)
    }
}

/// Runs `cmd` (a shell command line) under `script`, i.e. on a real pseudo-terminal, typing
/// `input` into it; its output. `script` is the command of the `script` program (its user and
/// environment set by the caller). A NUL in `input` is a pause: the output so far gets through
/// first.
pub fn on_pty(mut script: Command, cmd: &str, input: &str) -> String {
    let mut child = script.args(["-qfec", cmd, "/dev/null"]).spawn_piped();
    {
        let mut i = child.stdin.take().unwrap();
        for part in input.split('\0') {
            std::thread::sleep(Duration::from_millis(500));
            let _ = i.write_all(part.as_bytes());
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let o = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A python `http.server` on 127.0.0.1 serving a directory's files, killed on drop.
pub struct HttpServer {
    child: std::process::Child,
    /// Its port.
    pub port: u16,
}

impl HttpServer {
    /// Serves `dir` (waits until the port answers).
    pub fn serve(dir: &std::path::Path) -> HttpServer {
        let port = free_port();
        let child = std::process::Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .arg("--directory")
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let s = HttpServer { child, port };
        wait_until(Duration::from_secs(5), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        s
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free TCP port on 127.0.0.1 (free now: bind it soon).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` every 20 ms until it holds (true) or `timeout` passes (false).
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// [`wait_until`], failing the test with "timed out waiting for `what`" when time runs out.
#[track_caller]
pub fn wait_for(what: &str, timeout: Duration, f: impl FnMut() -> bool) {
    assert!(wait_until(timeout, f), "timed out waiting for {what}");
}

/// The pids in /proc now (empty when it cannot be read).
pub fn all_pids() -> Vec<i32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .collect()
}

/// The parent of `pid` (`None` when it is gone or /proc cannot be read).
pub fn parent_of(pid: u32) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = s.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// True while `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => match s
            .rfind(')')
            .and_then(|i| s[i + 1..].split_whitespace().next())
        {
            Some(state) => state != "Z" && state != "X",
            None => false,
        },
        Err(_) => false,
    }
}

/// SIGKILL to `pid` (no error when it is gone).
pub fn kill9(pid: i32) {
    if let Some(p) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
    }
}

/// A child process killed and reaped on drop; when it leads its own process group (spawned
/// with `process_group(0)`), the whole group is killed (e.g. helpers that a program forks).
#[derive(Debug)]
pub struct KillOnDrop(pub Child);

impl KillOnDrop {
    pub fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // The child is not reaped yet, so its pid (and group id) cannot have been reused.
        if let Some(pid) = rustix::process::Pid::from_raw(self.0.id() as i32) {
            if rustix::process::getpgid(Some(pid)) == Ok(pid) {
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            }
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_keeps_code_and_text() {
        let r = run_output(
            Command::new("sh")
                .args(["-c", "echo out; echo err >&2; exit 3"])
                .output()
                .unwrap(),
        );
        assert_eq!((r.code, r.out(), r.stderr.as_str()), (3, "out", "err\n"));
        let r = r.fails_with("err");
        assert_eq!(r.code, 3);
        let r = r.failed(3, "err\n").failed_with(3, "rr");
        assert_eq!(r.stdout, "out\n");
        run_output(Command::new("true").output().unwrap()).ok();
    }

    #[test]
    fn commands_run_to_their_end() {
        let r = Command::new("sh").args(["-c", "echo hi"]).run_ok();
        assert_eq!(r.stdout, "hi\n");
        assert_eq!(Command::new("false").run().code, 1);
        let r = Command::new("sh")
            .args(["-c", "tr a-z A-Z; echo err >&2"])
            .run_with_input(b"typed\n");
        assert_eq!(
            (r.code, r.stdout.as_str(), r.stderr.as_str()),
            (0, "TYPED\n", "err\n")
        );
        // A command that exits without reading its input.
        assert_eq!(
            Command::new("true").run_with_input(&[b'x'; 1 << 20]).code,
            0
        );
    }

    #[test]
    #[should_panic(expected = "stderr: boom")]
    fn ok_shows_the_streams() {
        run_output(
            Command::new("sh")
                .args(["-c", "echo boom >&2; exit 1"])
                .output()
                .unwrap(),
        )
        .ok();
    }

    #[test]
    fn waiting_and_processes() {
        let mut n = 0;
        assert!(wait_until(Duration::from_secs(5), || {
            n += 1;
            n == 3
        }));
        assert!(!wait_until(Duration::from_millis(50), || false));
        assert!(alive(std::process::id() as i32));
        let child = KillOnDrop(Command::new("sleep").arg("100").spawn().unwrap());
        let pid = child.id() as i32;
        assert!(alive(pid));
        drop(child);
        assert!(!alive(pid));
        assert_ne!(free_port(), 0);
        // A process group: the forked grandchild dies too.
        use std::os::unix::process::CommandExt as _;
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let group = KillOnDrop(
            Command::new("sh")
                .arg("-c")
                .arg(format!("sleep 100 & echo $! > {}; wait", pidfile.display()))
                .process_group(0)
                .spawn()
                .unwrap(),
        );
        let mut grandchild = 0;
        wait_for("the pid file", Duration::from_secs(5), || {
            grandchild = std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
            grandchild > 0
        });
        assert!(alive(grandchild));
        drop(group);
        assert!(wait_until(Duration::from_secs(5), || !alive(grandchild)));
    }

    #[test]
    #[should_panic(expected = "timed out waiting for nothing")]
    fn wait_for_fails_the_test() {
        wait_for("nothing", Duration::from_millis(30), || false);
    }
}
