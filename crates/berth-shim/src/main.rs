//! `berth-shim`: see the crate documentation and `berth-shim --help`.

use std::path::PathBuf;
use std::process::ExitCode;

use berth_shim::jsonlog::{DEFAULT_MAX_FILE, DEFAULT_MAX_SIZE};
use berth_shim::Config;
use berth_util::units::{parse_ram_bytes, UnitsError};

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
                        copy, which needs no protective re-execution); overrides --runtime;
                        0: given as standard input, which then becomes /dev/null
  --log-path FILE       json-file log [STATE_DIR/ID-json.log]
  --log-max-size SIZE   rotate at this size (k, m, g suffixes; 0 = never) [10m]
  --log-max-file N      keep at most N log files [3]
  --log-compress        gzip rotated log files (ID-json.log.1.gz, …)
  --log-attrs JSON      a JSON object added to every log entry as its attrs
  --no-log              write no log (the `none` logging driver)
  --log-format FORMAT   json (Docker's json-file, default) or cri (the Kubernetes CRI log format)
  --tty                 give the container a pty (process.terminal must be true)
  --stdin               keep the container's stdin open for attach clients
  --direct-start        start the container by writing its exec fifo (ROOT/ID/exec.fifo, the
                        layout of berth-runtime and runc) instead of running `RUNTIME start`;
                        only for bundles without poststart hooks, which `start` would run
  --start               start the container as soon as it is created, before the report (for
                        a starter that has nothing to do in between: no attach, no setup in
                        the container's namespaces); the report then follows the start

berth-shim --standby --runtime-root DIR --id PLACEHOLDER: started ahead of need with a socket
as standard output, on which the options above then come as one JSON array of strings and a
newline (berthd's standby shim); the id then replaces the placeholder in the process's command
line. Exits quietly when the socket closes first.
";

/// `--log-max-size`: go-units `RAMInBytes` (`10m` = 10 MiB); `-1`, Docker's "no limit", is
/// 0 (never rotate).
fn parse_size(s: &str) -> Result<u64, UnitsError> {
    let s = s.trim();
    if s == "-1" {
        return Ok(0);
    }
    parse_ram_bytes(s).map(|n| n as u64)
}

/// A command line the shim cannot run with.
#[derive(Debug, thiserror::Error)]
enum ArgsError {
    /// `--help`: print the usage, succeed.
    #[error("help")]
    Help,
    #[error("{0} is required")]
    Missing(&'static str),
    #[error("{0} needs a value")]
    NeedsValue(String),
    #[error("invalid {flag} {value:?}")]
    Invalid { flag: &'static str, value: String },
    #[error("invalid --log-max-size {value:?}: {source}")]
    Size {
        value: String,
        #[source]
        source: UnitsError,
    },
    #[error("--runtime-fd {fd}: {source}")]
    RuntimeFd {
        fd: i32,
        #[source]
        source: std::io::Error,
    },
    #[error("unknown argument {0:?}")]
    Unknown(String),
}

fn parse(args: Vec<String>) -> Result<Config, ArgsError> {
    let mut id = None;
    let mut bundle = None;
    let mut state_dir = None;
    let mut runtime = PathBuf::from("berth-runtime");
    let mut runtime_root = PathBuf::from("/run/berth-runtime");
    let mut log_path = None;
    let mut max_size = DEFAULT_MAX_SIZE;
    let mut max_file = DEFAULT_MAX_FILE;
    let (mut tty, mut stdin, mut direct_start, mut start) = (false, false, false, false);
    let (mut log_compress, mut log_disabled, mut log_attrs) = (false, false, None);
    let mut log_cri = false;
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
                .ok_or_else(|| ArgsError::NeedsValue(name.to_string()))
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
                max_size = parse_size(&v).map_err(|source| ArgsError::Size { value: v, source })?;
            }
            "--log-max-file" => {
                let v = value("--log-max-file")?;
                max_file = v
                    .parse()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or(ArgsError::Invalid {
                        flag: "--log-max-file",
                        value: v,
                    })?;
            }
            "--log-compress" => log_compress = true,
            "--no-log" => log_disabled = true,
            "--log-format" => {
                let v = value("--log-format")?;
                log_cri = match v.as_str() {
                    "json" => false,
                    "cri" => true,
                    _ => {
                        return Err(ArgsError::Invalid {
                            flag: "--log-format",
                            value: v,
                        })
                    }
                };
            }
            "--log-attrs" => {
                let v = value("--log-attrs")?;
                if !v.trim_start().starts_with('{')
                    || serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&v)
                        .is_err()
                {
                    return Err(ArgsError::Invalid {
                        flag: "--log-attrs",
                        value: v,
                    });
                }
                log_attrs = Some(v);
            }
            "--tty" => tty = true,
            "--stdin" => stdin = true,
            "--direct-start" => direct_start = true,
            "--start" => start = true,
            "--runtime-fd" => {
                let v = value("--runtime-fd")?;
                runtime_fd = Some(v.parse().ok().filter(|n| *n == 0 || *n > 2).ok_or(
                    ArgsError::Invalid {
                        flag: "--runtime-fd",
                        value: v,
                    },
                )?);
            }
            "-h" | "--help" => return Err(ArgsError::Help),
            other => return Err(ArgsError::Unknown(other.to_string())),
        }
    }
    let id = id.ok_or(ArgsError::Missing("--id"))?;
    let state_dir = state_dir.ok_or(ArgsError::Missing("--state-dir"))?;
    // A path (not a name looked up in PATH) made absolute: the shim changes directories.
    let abs_runtime = |p: PathBuf| {
        if p.components().count() > 1 {
            std::path::absolute(&p).unwrap_or(p)
        } else {
            p
        }
    };
    let mut runtime_shared = None;
    if let Some(fd) = runtime_fd {
        // Kept for the shim's lifetime, never inherited by what it runs (an ELF binary is
        // executed through /proc/self/fd/N even when N is close-on-exec).
        let fd = if fd == 0 {
            berth_shim::sys::take_stdin().map_err(|source| ArgsError::RuntimeFd { fd, source })?
        } else {
            fd
        };
        berth_shim::sys::set_cloexec(fd).map_err(|source| ArgsError::RuntimeFd { fd, source })?;
        runtime_shared = Some((fd, abs_runtime(runtime)));
        runtime = PathBuf::from(format!("/proc/self/fd/{fd}"));
    }
    let abs = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
    let state_dir = abs(state_dir);
    Ok(Config {
        log_path: abs(log_path.unwrap_or_else(|| state_dir.join(format!("{id}-json.log")))),
        bundle: abs(bundle.ok_or(ArgsError::Missing("--bundle"))?),
        runtime: abs_runtime(runtime),
        runtime_shared,
        runtime_root: abs(runtime_root),
        id,
        state_dir,
        log_max_size: max_size,
        log_max_file: max_file,
        log_compress,
        log_attrs,
        log_disabled,
        log_cri,
        tty,
        stdin,
        direct_start,
        start,
    })
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    // Started ahead of need by the daemon (see berthd's `engine::standby`): the command line
    // comes later, on standard output; nothing is done before it.
    if args.first().map(String::as_str) == Some("--standby") {
        match berth_shim::sys::standby_args() {
            Some(a) => args = a,
            None => return ExitCode::SUCCESS,
        }
        // What the daemon's recovery recognizes a container's shim by: its runtime root (the
        // standby's already) and its id (in place of the placeholder).
        let id = args.iter().skip_while(|a| *a != "--id").nth(1);
        if let Some(id) = id.filter(|id| id.len() == berth_shim::sys::STANDBY_ID.len()) {
            if let Err(e) = berth_shim::sys::set_cmdline_id(id) {
                eprintln!("berth-shim: standby: showing the id {id}: {e}");
                return ExitCode::from(1);
            }
        }
    }
    match parse(args) {
        Ok(cfg) => ExitCode::from(berth_shim::server::launch(cfg) as u8),
        Err(ArgsError::Help) => {
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
        assert_eq!(parse_size("10m"), Ok(10 << 20));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("100"), Ok(100));
        assert_eq!(parse_size("1GB"), Ok(1 << 30));
        assert_eq!(parse_size("-1"), Ok(0));
        assert!(parse_size("x").is_err());
        assert_eq!(parse_size(" 1.5k "), Ok(1536));
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
        assert!(matches!(
            parse(vec!["--id".into()]),
            Err(ArgsError::NeedsValue(_))
        ));
        assert!(matches!(
            parse(vec!["--id".into(), "c1".into()]),
            Err(ArgsError::Missing("--state-dir"))
        ));
        assert!(matches!(
            parse(vec!["--log-max-size=1x".into()]),
            Err(ArgsError::Size { .. })
        ));
        assert!(matches!(parse(vec!["--help".into()]), Err(ArgsError::Help)));
        assert!(matches!(
            parse(vec!["--nope".into()]),
            Err(ArgsError::Unknown(_))
        ));
    }
}
