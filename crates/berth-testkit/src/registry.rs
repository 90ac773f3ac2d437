//! Registries on 127.0.0.1 for tests: Debian's `docker-registry` (distribution 2.8) and
//! Berth's own `berth registry serve`; both killed on drop.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{ChildStdout, Command, Stdio};
use std::time::Duration;

use crate::process::{free_port, wait_until, KillOnDrop};

/// Debian's distribution registry.
pub const DOCKER_REGISTRY: &str = "/usr/bin/docker-registry";

/// The user and password of a registry started with [`DockerRegistry::with_htpasswd`].
pub const USER: &str = "alice";
pub const PASS: &str = "correct horse";

/// A running `docker-registry` with its storage in a temporary directory.
pub struct DockerRegistry {
    pub dir: tempfile::TempDir,
    pub port: u16,
    _child: KillOnDrop,
}

impl DockerRegistry {
    /// Whether `docker-registry` is installed.
    pub fn available() -> bool {
        Path::new(DOCKER_REGISTRY).exists()
    }

    /// Without authentication.
    pub fn start() -> Self {
        Self::launch(false)
    }

    /// With HTTP basic authentication of [`USER`]/[`PASS`] (htpasswd, bcrypt).
    pub fn with_htpasswd() -> Self {
        Self::launch(true)
    }

    fn launch(htpasswd: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage).unwrap();
        let mut auth = String::new();
        if htpasswd {
            let hash = bcrypt::hash(PASS, 4).unwrap();
            let hp = dir.path().join("htpasswd");
            std::fs::write(&hp, format!("{USER}:{hash}\n")).unwrap();
            auth = format!(
                "auth:\n  htpasswd:\n    realm: basic-realm\n    path: {}\n",
                hp.display()
            );
        }
        let log_path = dir.path().join("registry.log");
        // A port found free may be taken before the registry binds it: try a few.
        for _ in 0..5 {
            let port = free_port();
            let cfg = format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: 127.0.0.1:{port}\n{auth}",
                storage.display()
            );
            let cfg_path = dir.path().join("config.yml");
            std::fs::write(&cfg_path, cfg).unwrap();
            let log = std::fs::File::create(&log_path).unwrap();
            let mut child = KillOnDrop(
                Command::new(DOCKER_REGISTRY)
                    .arg("serve")
                    .arg(&cfg_path)
                    .stdin(Stdio::null())
                    .stdout(log.try_clone().unwrap())
                    .stderr(log)
                    .spawn()
                    .expect("start docker-registry"),
            );
            let up = wait_until(Duration::from_secs(15), || {
                matches!(child.0.try_wait(), Ok(Some(_)))
                    || TcpStream::connect(("127.0.0.1", port)).is_ok()
            }) && matches!(child.0.try_wait(), Ok(None));
            if up {
                return DockerRegistry {
                    dir,
                    port,
                    _child: child,
                };
            }
        }
        panic!(
            "docker-registry did not start: {}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The registry's storage root.
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// The data file of the blob `sha256:<hex>` in the registry's storage.
    pub fn blob_data(&self, hex: &str) -> PathBuf {
        self.storage()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

/// A running `berth registry serve` on 127.0.0.1 (port chosen by the server, read from its
/// first line `listening on 127.0.0.1:<port>`).
pub struct BerthRegistry {
    pub port: u16,
    /// The storage root (`--root`).
    pub root: PathBuf,
    child: KillOnDrop,
    _out: BufReader<ChildStdout>,
    _dir: Option<tempfile::TempDir>,
}

/// How to start a [`BerthRegistry`].
#[derive(Debug, Default, Clone)]
pub struct BerthRegistryOptions {
    /// `--root` (default: a temporary directory's `root`).
    pub root: Option<PathBuf>,
    /// `--config` file.
    pub config: Option<PathBuf>,
    /// `--tls-cert` and `--tls-key`.
    pub tls: Option<(PathBuf, PathBuf)>,
}

impl BerthRegistry {
    /// Starts `<berth> registry serve` (`berth` is the CLI binary) with a temporary root and
    /// `config` (JSON text, written to a file) if given.
    pub fn start(berth: &Path, config: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut o = BerthRegistryOptions {
            root: Some(dir.path().join("root")),
            ..Default::default()
        };
        if let Some(c) = config {
            let p = dir.path().join("config.json");
            std::fs::write(&p, c).unwrap();
            o.config = Some(p);
        }
        let mut r = Self::start_with(berth, o);
        r._dir = Some(dir);
        r
    }

    /// Starts `<berth> registry serve` with these options.
    pub fn start_with(berth: &Path, o: BerthRegistryOptions) -> Self {
        let (root, dir) = match o.root {
            Some(r) => (r, None),
            None => {
                let d = tempfile::tempdir().unwrap();
                (d.path().join("root"), Some(d))
            }
        };
        let mut cmd = Command::new(berth);
        cmd.args(["registry", "serve", "--addr", "127.0.0.1:0", "--root"])
            .arg(&root);
        if let Some(c) = &o.config {
            cmd.arg("--config").arg(c);
        }
        if let Some((c, k)) = &o.tls {
            cmd.arg("--tls-cert").arg(c).arg("--tls-key").arg(k);
        }
        let mut child = KillOnDrop(
            cmd.stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("start berth registry serve"),
        );
        let mut out = BufReader::new(child.0.stdout.take().unwrap());
        let mut line = String::new();
        let _ = out.read_line(&mut line);
        let port = line
            .strip_prefix("listening on 127.0.0.1:")
            .and_then(|r| r.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from the server: {line:?}"));
        BerthRegistry {
            port,
            root,
            child,
            _out: out,
            _dir: dir,
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the server now (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
    }

    /// The names of the blobs in its store (sorted).
    pub fn blobs(&self) -> Vec<String> {
        crate::list_dir(&self.root.join("blobs/sha256"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_registry_answers_and_dies_with_its_guard() {
        if crate::guard::skip_unless_programs(&[DOCKER_REGISTRY]) {
            return;
        }
        let r = DockerRegistry::with_htpasswd();
        let mut s = TcpStream::connect(r.host()).unwrap();
        use std::io::{Read, Write};
        write!(s, "GET /v2/ HTTP/1.0\r\n\r\n").unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        assert!(resp.starts_with("HTTP/1.0 401"), "{resp}");
        assert!(r.blob_data("abcdef").ends_with("ab/abcdef/data"));
        let port = r.port;
        drop(r);
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    }
}
