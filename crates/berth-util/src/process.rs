//! Running a helper program with input on its standard input; the command lines of the
//! host's processes.

use std::io::{ErrorKind, Write};
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
