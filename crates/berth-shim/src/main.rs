//! `berth-shim`: see the crate documentation and `berth-shim --help`.

use std::path::PathBuf;
use std::process::ExitCode;

use berth_shim::jsonlog::{DEFAULT_MAX_FILE, DEFAULT_MAX_SIZE};
use berth_shim::Config;

const USAGE: &str = "\
usage: berth-shim --id ID --bundle DIR --state-dir DIR [options]

Creates the container through the runtime with pipes (or a pty) as its stdio, detaches
(setsid, double fork), and serves DIR/shim.sock. Prints {\"pid\",\"init_pid\",\"socket\"}
once the container is created and the socket is listening; exits 1 with the error otherwise.

options:
  --id ID               container id (also the runtime's)
  --bundle DIR          OCI bundle
  --state-dir DIR       the shim's directory (socket, pid, exit.json, log)
  --runtime PATH        OCI runtime binary [berth-runtime]
  --runtime-root DIR    the runtime's --root [/run/berth-runtime]
  --runtime-fd N        the runtime is the executable open as descriptor N (berthd's sealed
                        copy, which needs no protective re-execution); overrides --runtime
  --log-path FILE       json-file log [STATE_DIR/ID-json.log]
  --log-max-size SIZE   rotate at this size (k, m, g suffixes; 0 = never) [10m]
  --log-max-file N      keep at most N log files [3]
  --tty                 give the container a pty (process.terminal must be true)
  --stdin               keep the container's stdin open for attach clients
  --direct-start        start the container by writing its exec fifo (ROOT/ID/exec.fifo, the
                        layout of berth-runtime and runc) instead of running `RUNTIME start`;
                        only for bundles without poststart hooks, which `start` would run
";

fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim().to_ascii_lowercase();
    let s = s.strip_suffix('b').unwrap_or(&s);
    let (num, mult) = match s.chars().last()? {
        'k' => (&s[..s.len() - 1], 1u64 << 10),
        'm' => (&s[..s.len() - 1], 1 << 20),
        'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    if num == "-1" {
        return Some(0);
    }
    num.parse::<u64>().ok().map(|n| n * mult)
}

fn parse(args: Vec<String>) -> Result<Config, String> {
    let mut id = None;
    let mut bundle = None;
    let mut state_dir = None;
    let mut runtime = PathBuf::from("berth-runtime");
    let mut runtime_root = PathBuf::from("/run/berth-runtime");
    let mut log_path = None;
    let mut max_size = DEFAULT_MAX_SIZE;
    let mut max_file = DEFAULT_MAX_FILE;
    let (mut tty, mut stdin, mut direct_start) = (false, false, false);
    let mut runtime_fd: Option<i32> = None;
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or(format!("{name} needs a value"))
        };
        match flag.as_str() {
            "--id" => id = Some(value("--id")?),
            "--bundle" => bundle = Some(PathBuf::from(value("--bundle")?)),
            "--state-dir" => state_dir = Some(PathBuf::from(value("--state-dir")?)),
            "--runtime" => runtime = PathBuf::from(value("--runtime")?),
            "--runtime-root" => runtime_root = PathBuf::from(value("--runtime-root")?),
            "--log-path" => log_path = Some(PathBuf::from(value("--log-path")?)),
            "--log-max-size" => {
                let v = value("--log-max-size")?;
                max_size = parse_size(&v).ok_or(format!("invalid --log-max-size {v:?}"))?;
            }
            "--log-max-file" => {
                let v = value("--log-max-file")?;
                max_file = v
                    .parse()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or(format!("invalid --log-max-file {v:?}"))?;
            }
            "--tty" => tty = true,
            "--stdin" => stdin = true,
            "--direct-start" => direct_start = true,
            "--runtime-fd" => {
                let v = value("--runtime-fd")?;
                runtime_fd = Some(
                    v.parse()
                        .ok()
                        .filter(|n| *n > 2)
                        .ok_or(format!("invalid --runtime-fd {v:?}"))?,
                );
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let id = id.ok_or("--id is required")?;
    let state_dir = state_dir.ok_or("--state-dir is required")?;
    if let Some(fd) = runtime_fd {
        // Kept for the shim's lifetime, never inherited by what it runs (an ELF binary is
        // executed through /proc/self/fd/N even when N is close-on-exec).
        // SAFETY: fcntl on a descriptor number; an invalid one fails with EBADF.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
            return Err(format!(
                "--runtime-fd {fd}: {}",
                std::io::Error::last_os_error()
            ));
        }
        runtime = PathBuf::from(format!("/proc/self/fd/{fd}"));
    }
    let abs = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
    let state_dir = abs(state_dir);
    Ok(Config {
        log_path: abs(log_path.unwrap_or_else(|| state_dir.join(format!("{id}-json.log")))),
        bundle: abs(bundle.ok_or("--bundle is required")?),
        runtime: if runtime.components().count() > 1 {
            abs(runtime)
        } else {
            runtime
        },
        runtime_root: abs(runtime_root),
        id,
        state_dir,
        log_max_size: max_size,
        log_max_file: max_file,
        tty,
        stdin,
        direct_start,
    })
}

fn main() -> ExitCode {
    match parse(std::env::args().skip(1).collect()) {
        Ok(cfg) => ExitCode::from(berth_shim::server::launch(cfg) as u8),
        Err(e) if e.is_empty() => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("berth-shim: {e}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10m"), Some(10 << 20));
        assert_eq!(parse_size("512k"), Some(512 << 10));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("1GB"), Some(1 << 30));
        assert_eq!(parse_size("-1"), Some(0));
        assert_eq!(parse_size("x"), None);
    }

    #[test]
    fn args() {
        let c = parse(
            "--id c1 --bundle /b --state-dir /s --tty --log-max-size=1k --log-max-file 2"
                .split(' ')
                .map(String::from)
                .collect(),
        )
        .unwrap();
        assert_eq!(c.log_path, PathBuf::from("/s/c1-json.log"));
        assert_eq!((c.log_max_size, c.log_max_file, c.tty), (1024, 2, true));
        assert!(parse(vec!["--id".into()]).is_err());
    }
}
