//! Running a helper program with input on its standard input; the command lines of the
//! host's processes.

use std::io::{ErrorKind, Read, Write};
use std::process::{Command, Output, Stdio};

/// Runs `cmd` to completion with `input` on its standard input and collects its output (the
/// stdout and stderr the caller made pipes of; `Output` holds them). A program that exits
/// without reading all of `input` (`EPIPE`) is not an error here: its exit status and what it
/// printed tell why. Another write error kills it and is returned, as a failure to spawn or
/// wait is.
pub fn output_with_input(cmd: &mut Command, input: &[u8]) -> std::io::Result<Output> {
    let mut child = cmd.stdin(Stdio::piped()).spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        if let Err(e) = stdin.write_all(input) {
            if e.kind() != ErrorKind::BrokenPipe {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        }
    }
    child.wait_with_output()
}

/// [`output_with_input`] that answers once the program has exited, its exit status read
/// without reaping it (`waitid` with `WNOWAIT`); a thread of its own reaps it. Reaping a
/// program that ran many threads (a Go CNI plugin) costs the kernel a walk of its `/proc`
/// entries, milliseconds on a busy machine, which its caller need not wait for. `cmd`'s
/// stdout and stderr are collected when piped.
pub fn output_with_input_reaped_after(cmd: &mut Command, input: &[u8]) -> std::io::Result<Output> {
    let mut child = cmd.stdin(Stdio::piped()).spawn()?;
    let fail = |mut child: std::process::Child, e: std::io::Error| {
        let _ = child.kill();
        let _ = child.wait();
        Err(e)
    };
    if let Some(mut stdin) = child.stdin.take() {
        if let Err(e) = stdin.write_all(input) {
            if e.kind() != ErrorKind::BrokenPipe {
                return fail(child, e);
            }
        }
    }
    // Both outputs to their ends at the same time (neither pipe may fill up while the other
    // is read): stderr on a thread.
    let err = child.stderr.take().map(|mut e| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = e.read_to_end(&mut v);
            v
        })
    });
    let mut stdout = Vec::new();
    if let Some(mut o) = child.stdout.take() {
        if let Err(e) = o.read_to_end(&mut stdout) {
            return fail(child, e);
        }
    }
    let stderr = err
        .map(|t| t.join().unwrap_or_default())
        .unwrap_or_default();
    let pid = rustix::process::Pid::from_raw(child.id() as i32)
        .ok_or_else(|| std::io::Error::from(ErrorKind::InvalidInput))?;
    let options = rustix::process::WaitIdOptions::EXITED | rustix::process::WaitIdOptions::NOWAIT;
    let st = loop {
        match rustix::process::waitid(rustix::process::WaitId::Pid(pid), options) {
            Ok(Some(st)) => break st,
            Ok(None) => continue,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return fail(child, e.into()),
        }
    };
    // The raw wait status: the exit code in the second byte, or the terminating signal.
    let raw = match (st.exit_status(), st.terminating_signal()) {
        (Some(code), _) if st.exited() => (code & 0xff) << 8,
        (_, Some(sig)) => sig,
        _ => 0xff << 8,
    };
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    Ok(Output {
        status: std::os::unix::process::ExitStatusExt::from_raw(raw),
        stdout,
        stderr,
    })
}

/// The command lines of the processes in this PID namespace's `/proc`, as `(pid, args)`
/// (each argument without its terminating NUL). Processes that exit meanwhile, and zombies and
/// kernel threads (an empty `cmdline`), are left out.
pub fn command_lines() -> impl Iterator<Item = (i32, Vec<Vec<u8>>)> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<i32>().ok()?;
            let raw = std::fs::read(e.path().join("cmdline")).ok()?;
            let raw = raw.strip_suffix(&[0]).unwrap_or(&raw);
            if raw.is_empty() {
                return None;
            }
            Some((pid, raw.split(|b| *b == 0).map(<[u8]>::to_vec).collect()))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feeds_input_and_collects_output() {
        let out = output_with_input(Command::new("cat").stdout(Stdio::piped()), b"hello").unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, b"hello");
    }

    #[test]
    fn reaped_after_answers_output_and_status() {
        let out = output_with_input_reaped_after(
            Command::new("sh")
                .args(["-c", "cat; echo err >&2; exit 3"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
            b"in",
        )
        .unwrap();
        assert_eq!(
            (out.stdout, out.stderr),
            (b"in".to_vec(), b"err\n".to_vec())
        );
        assert_eq!(out.status.code(), Some(3));
        let out =
            output_with_input_reaped_after(Command::new("sh").args(["-c", "kill -9 $$"]), b"")
                .unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&out.status),
            Some(9)
        );
    }

    #[test]
    fn a_program_that_reads_nothing_is_not_a_write_error() {
        let big = vec![b'x'; 1 << 20];
        let out = output_with_input(
            Command::new("sh")
                .args(["-c", "echo no >&2; exit 1"])
                .stderr(Stdio::piped()),
            &big,
        )
        .unwrap();
        assert_eq!(out.stderr, b"no\n");
        assert!(!out.status.success());
    }

    #[test]
    fn command_lines_include_this_process_with_its_arguments() {
        use std::os::unix::ffi::OsStringExt;
        let me = i32::try_from(std::process::id()).unwrap();
        let found = command_lines().find(|(p, _)| *p == me).map(|(_, a)| a);
        let want: Vec<Vec<u8>> = std::env::args_os().map(OsStringExt::into_vec).collect();
        assert_eq!(found, Some(want));
    }

    #[test]
    fn a_missing_program_is_an_error() {
        let e = output_with_input(&mut Command::new("/nonexistent/berth-test"), b"").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
    }
}
