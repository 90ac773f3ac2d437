//! Credentials stored like Docker's `~/.docker/config.json`:
//!
//! ```json
//! { "auths": { "localhost:5000": { "auth": "base64(user:password)" } } }
//! ```
//!
//! The file is found at, in order: an explicit path, `$BERTH_CONFIG/config.json`,
//! `$DOCKER_CONFIG/config.json`, `$HOME/.docker/config.json` — so credentials saved by
//! `docker login` work unchanged. Every other key in the file (`credsStore`, `proxies`, …) is
//! preserved on write; the file is written crash-safely with mode 0600.
//!
//! Docker Hub is stored under Docker's key `https://index.docker.io/v1/`. Lookups also accept
//! keys written with a scheme or a trailing `/v2/` (`https://host`, `http://host/v1/`), as
//! Docker does. Credential helpers (`credsStore`, `credHelpers`) are not run.

use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::{Map, Value};

use crate::error::{RegistryError, Result};

/// Docker's key for Docker Hub in `auths`.
pub const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";

/// A username and password (or identity token used as password).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password or token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// New credentials.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            username: username.into(),
            password: password.into(),
        }
    }

    /// The value of an `Authorization: Basic` header.
    pub fn basic_header(&self) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", self.username, self.password))
        )
    }
}

/// The credentials file.
#[derive(Debug, Clone)]
pub struct CredentialStore {
    path: PathBuf,
}

/// The key under `auths` for a registry domain (`docker.io` → Docker's legacy index key).
pub fn auth_key(registry: &str) -> String {
    match registry {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB_AUTH_KEY.to_string(),
        other => other.to_string(),
    }
}

/// Strips a scheme and path from an `auths` key: `https://host:5000/v1/` → `host:5000`.
fn key_host(key: &str) -> &str {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    k.split('/').next().unwrap_or(k)
}

impl CredentialStore {
    /// A store at an explicit file path.
    pub fn at(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The default location: `$BERTH_CONFIG/config.json`, `$DOCKER_CONFIG/config.json`, or
    /// `$HOME/.docker/config.json`.
    pub fn default_path() -> PathBuf {
        for var in ["BERTH_CONFIG", "DOCKER_CONFIG"] {
            if let Some(dir) = std::env::var_os(var).filter(|v| !v.is_empty()) {
                return PathBuf::from(dir).join("config.json");
            }
        }
        let home = std::env::var_os("HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/root"));
        home.join(".docker").join("config.json")
    }

    /// The store at [`default_path`](Self::default_path).
    pub fn default_location() -> Self {
        Self::at(Self::default_path())
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, reason: impl std::fmt::Display) -> RegistryError {
        RegistryError::Credentials {
            path: self.path.clone(),
            reason: reason.to_string(),
        }
    }

    fn load(&self) -> Result<Map<String, Value>> {
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Map::new()),
            Err(e) => return Err(self.err(e)),
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Map::new());
        }
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(_) => Err(self.err("not a JSON object")),
            Err(e) => Err(self.err(e)),
        }
    }

    fn save(&self, doc: &Map<String, Value>) -> Result<()> {
        let dir = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&dir).map_err(|e| self.err(e))?;
        let mut bytes =
            serde_json::to_vec_pretty(&Value::Object(doc.clone())).map_err(|e| self.err(e))?;
        bytes.push(b'\n');
        berth_util::fs::atomic_write_mode(&self.path, &bytes, 0o600).map_err(|e| self.err(e))
    }

    /// The credentials stored for `registry` (a reference domain such as `docker.io` or
    /// `localhost:5000`), if any.
    pub fn get(&self, registry: &str) -> Result<Option<Credentials>> {
        let doc = self.load()?;
        let Some(Value::Object(auths)) = doc.get("auths") else {
            return Ok(None);
        };
        let key = auth_key(registry);
        let want_host = key_host(&key).to_string();
        let entry = auths.get(&key).or_else(|| {
            auths
                .iter()
                .find(|(k, _)| key_host(k) == want_host)
                .map(|(_, v)| v)
        });
        let Some(entry) = entry else {
            return Ok(None);
        };
        self.decode_entry(entry)
    }

    fn decode_entry(&self, entry: &Value) -> Result<Option<Credentials>> {
        if let Some(auth) = entry.get("auth").and_then(Value::as_str) {
            if auth.is_empty() {
                return Ok(None);
            }
            let raw = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|e| self.err(format!("invalid base64 in auth: {e}")))?;
            let s = String::from_utf8(raw).map_err(|_| self.err("auth is not UTF-8"))?;
            let (u, p) = s
                .split_once(':')
                .ok_or_else(|| self.err("auth is not user:password"))?;
            return Ok(Some(Credentials::new(u, p.trim_end_matches('\n'))));
        }
        let user = entry.get("username").and_then(Value::as_str);
        let pass = entry.get("password").and_then(Value::as_str);
        if let (Some(u), Some(p)) = (user, pass) {
            return Ok(Some(Credentials::new(u, p)));
        }
        if let Some(tok) = entry.get("identitytoken").and_then(Value::as_str) {
            return Ok(Some(Credentials::new("<token>", tok)));
        }
        Ok(None)
    }

    /// Stores credentials for `registry`, keeping every other entry and key of the file.
    pub fn set(&self, registry: &str, creds: &Credentials) -> Result<()> {
        let mut doc = self.load()?;
        let auths = doc
            .entry("auths")
            .or_insert_with(|| Value::Object(Map::new()));
        if !auths.is_object() {
            *auths = Value::Object(Map::new());
        }
        let auths = auths.as_object_mut().expect("just made an object");
        let key = auth_key(registry);
        let host = key_host(&key).to_string();
        // Drop variants of the same host (with scheme / path) so the new entry wins.
        auths.retain(|k, _| k == &key || key_host(k) != host);
        let encoded = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", creds.username, creds.password));
        let mut entry = Map::new();
        entry.insert("auth".into(), Value::String(encoded));
        auths.insert(key, Value::Object(entry));
        self.save(&doc)
    }

    /// Removes the credentials for `registry`. Returns whether any were stored.
    pub fn remove(&self, registry: &str) -> Result<bool> {
        let mut doc = self.load()?;
        let Some(Value::Object(auths)) = doc.get_mut("auths") else {
            return Ok(false);
        };
        let key = auth_key(registry);
        let host = key_host(&key).to_string();
        let before = auths.len();
        auths.retain(|k, _| k != &key && key_host(k) != host);
        if auths.len() == before {
            return Ok(false);
        }
        self.save(&doc)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_preserve_other_keys() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("cfg").join("config.json");
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(
            &path,
            r#"{"auths":{"https://other.example:5000/v1/":{"auth":"dTpw"}},"psFormat":"x"}"#,
        )
        .unwrap();
        let s = CredentialStore::at(&path);
        assert_eq!(s.get("localhost:5000").unwrap(), None);
        assert_eq!(
            s.get("other.example:5000").unwrap(),
            Some(Credentials::new("u", "p"))
        );
        s.set("localhost:5000", &Credentials::new("alice", "s3cr:et"))
            .unwrap();
        s.set("docker.io", &Credentials::new("bob", "pw")).unwrap();
        assert_eq!(
            s.get("localhost:5000").unwrap(),
            Some(Credentials::new("alice", "s3cr:et"))
        );
        assert_eq!(
            s.get("docker.io").unwrap(),
            Some(Credentials::new("bob", "pw"))
        );
        let raw: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(raw["psFormat"], "x");
        assert_eq!(
            raw["auths"]["localhost:5000"]["auth"],
            base64::engine::general_purpose::STANDARD.encode("alice:s3cr:et")
        );
        assert!(raw["auths"][DOCKER_HUB_AUTH_KEY].is_object());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(s.remove("localhost:5000").unwrap());
        assert!(!s.remove("localhost:5000").unwrap());
        assert_eq!(s.get("localhost:5000").unwrap(), None);
        assert!(s.remove("other.example:5000").unwrap());
    }

    #[test]
    fn missing_and_bad_files() {
        let d = tempfile::tempdir().unwrap();
        let s = CredentialStore::at(d.path().join("nope.json"));
        assert_eq!(s.get("x").unwrap(), None);
        assert!(!s.remove("x").unwrap());
        let bad = d.path().join("bad.json");
        fs::write(&bad, "[1]").unwrap();
        let err = CredentialStore::at(&bad).get("x").unwrap_err();
        assert!(err.to_string().contains("not a JSON object"), "{err}");
    }

    #[test]
    fn debug_redacts_password() {
        let c = Credentials::new("u", "hunter2");
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
