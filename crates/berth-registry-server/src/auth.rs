//! Accounts, permissions and tokens.
//!
//! The configuration file is JSON (see the crate docs for an example): `users` with bcrypt
//! password hashes, `access` rules granting `pull`, `push` and `delete` on repositories
//! matched by a glob (`*` matches any run of characters, `/` included; `?` one character) to
//! users by name, to `"*"` (every authenticated user) or to `"anonymous"` (everyone, signed in
//! or not). Without a configuration file the registry is open: anyone may do anything.
//!
//! Tokens are JWTs signed with HMAC-SHA256 (key: `token_key_file`, by default
//! `ROOT/token.key`, 32 random bytes created on first start), carrying `sub` and the granted
//! `access` as Docker's token service does. A token is honoured only for what it grants *and*
//! what its subject may still do under the current configuration.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::error::ServerError;
use crate::ratelimit::Limiter;

/// An action on a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    Pull,
    Push,
    Delete,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }
    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "pull" => Some(Action::Pull),
            "push" => Some(Action::Push),
            "delete" => Some(Action::Delete),
            _ => None,
        }
    }
    pub const ALL: [Action; 3] = [Action::Pull, Action::Push, Action::Delete];
}

/// A user.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// bcrypt hash (`$2b$…`), as `htpasswd -B` or `berth registry hash-password` make.
    pub password_hash: String,
}

/// One access rule.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccessRule {
    /// Glob over repository names.
    pub repository: String,
    /// User names, `"*"` (any signed-in user) or `"anonymous"` (everyone).
    pub users: Vec<String>,
    /// `pull`, `push`, `delete` (or `"*"` for all three).
    pub actions: Vec<String>,
}

/// Limits (all optional in the file).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest blob (bytes) an upload may reach.
    pub max_upload_bytes: u64,
    /// Largest manifest (bytes).
    pub max_manifest_bytes: usize,
    /// Uploads receiving data at the same time; more get 429 TOOMANYREQUESTS.
    pub max_concurrent_uploads: usize,
    /// Upload sessions open at the same time (started, neither finished nor cancelled nor
    /// expired); starting another gets 429 TOOMANYREQUESTS.
    pub max_open_uploads: usize,
    /// Upload sessions one identity may have open: a signed-in user, or for anonymous
    /// requests the client's address (its /64 for IPv6); more get 429 TOOMANYREQUESTS.
    pub max_open_uploads_per_user: usize,
    /// Seconds an upload session may go without receiving data before it is removed (with
    /// its data); no request may be working on it at that moment.
    pub upload_idle_timeout_seconds: u64,
    /// Failed sign-ins (wrong password, unknown user) a client may make in a row; after that
    /// its password checks get 429 TOOMANYREQUESTS with `Retry-After`, without running bcrypt.
    pub auth_failures_burst: u32,
    /// Failed sign-ins a client regains per minute.
    pub auth_failures_per_minute: u32,
    /// Seconds to read a request's headers, and the longest pause between two pieces of a
    /// request body.
    pub idle_timeout_seconds: u64,
    /// Seconds a request without a streamed body may take to be answered.
    pub request_timeout_seconds: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_upload_bytes: 20 << 30,
            max_manifest_bytes: 4 << 20,
            max_concurrent_uploads: 64,
            max_open_uploads: 1024,
            max_open_uploads_per_user: 64,
            upload_idle_timeout_seconds: 3600,
            auth_failures_burst: 10,
            auth_failures_per_minute: 6,
            idle_timeout_seconds: 60,
            request_timeout_seconds: 120,
        }
    }
}

/// The configuration file; every field may be absent (its default).
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub users: BTreeMap<String, UserConfig>,
    pub access: Vec<AccessRule>,
    /// Users who may see the permissions page (`/ui/permissions`: every rule, user and
    /// repository).
    pub admins: Vec<String>,
    /// The `service` of tokens and challenges (default `berth-registry`).
    pub service: Option<String>,
    /// The token realm URL announced in challenges (default: `<scheme>://<Host>/token`).
    pub realm: Option<String>,
    /// Token lifetime in seconds (default 300).
    pub token_ttl_seconds: Option<u64>,
    /// File with the token signing key (default `ROOT/token.key`, created when missing).
    pub token_key_file: Option<PathBuf>,
    /// Audit log (JSON lines; default `ROOT/audit.log`).
    pub audit_log: Option<PathBuf>,
    pub limits: Limits,
}

impl Config {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Config, ServerError> {
        let err = |msg: String| ServerError::ConfigInvalid {
            path: path.to_path_buf(),
            msg,
        };
        let bytes = std::fs::read(path).map_err(|source| ServerError::ConfigRead {
            path: path.to_path_buf(),
            source,
        })?;
        let c: Config =
            serde_json::from_slice(&bytes).map_err(|source| ServerError::ConfigParse {
                path: path.to_path_buf(),
                source,
            })?;
        for (u, uc) in &c.users {
            if u.is_empty() || u == "*" || u == "anonymous" || u.contains(':') {
                return Err(err(format!("invalid user name {u:?}")));
            }
            if !uc.password_hash.starts_with("$2") {
                return Err(err(format!(
                    "user {u}: password_hash must be a bcrypt hash"
                )));
            }
        }
        for u in &c.admins {
            if !c.users.contains_key(u) {
                return Err(err(format!("admins: unknown user {u:?}")));
            }
        }
        for (i, r) in c.access.iter().enumerate() {
            for a in &r.actions {
                if a != "*" && Action::parse(a).is_none() {
                    return Err(err(format!("access[{i}]: unknown action {a:?}")));
                }
            }
            for u in &r.users {
                if u != "*" && u != "anonymous" && !c.users.contains_key(u) {
                    return Err(err(format!("access[{i}]: unknown user {u:?}")));
                }
            }
        }
        Ok(c)
    }
}

/// Glob match: `*` any run (also empty, `/` included), `?` one character.
pub fn glob_match(pat: &str, s: &str) -> bool {
    let (p, t) = (pat.as_bytes(), s.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    Anonymous,
    /// Authenticated with basic auth.
    User(String),
    /// A bearer token: its subject (`None`: anonymous) and what it grants.
    Token {
        sub: Option<String>,
        access: BTreeMap<String, BTreeSet<Action>>,
        catalog: bool,
    },
}

impl Identity {
    /// The user name (for logs and per-user views).
    pub fn user(&self) -> Option<&str> {
        match self {
            Identity::Anonymous => None,
            Identity::User(u) => Some(u),
            Identity::Token { sub, .. } => sub.as_deref(),
        }
    }
}

/// Access control: `None` config means an open registry.
pub struct Auth {
    pub config: Option<Config>,
    pub service: String,
    key: Vec<u8>,
    ttl: u64,
    /// Recently verified basic credentials: user -> (sha256 of password, when).
    cache: Mutex<HashMap<String, ([u8; 32], Instant)>>,
    /// Failed sign-ins by client.
    failures: Limiter,
    /// bcrypt verifications run so far.
    bcrypt_runs: AtomicU64,
}

/// The outcome of a password check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordCheck {
    Valid,
    Invalid,
    /// The client failed too often: not checked; try again after this long.
    Limited(Duration),
}

const CACHE_FOR: Duration = Duration::from_secs(300);

impl Auth {
    pub fn new(config: Option<Config>, root: &Path) -> Result<Auth, ServerError> {
        let service = config
            .as_ref()
            .and_then(|c| c.service.clone())
            .unwrap_or_else(|| "berth-registry".to_string());
        let ttl = config
            .as_ref()
            .and_then(|c| c.token_ttl_seconds)
            .unwrap_or(300);
        let key_file = config
            .as_ref()
            .and_then(|c| c.token_key_file.clone())
            .unwrap_or_else(|| root.join("token.key"));
        let key = if config.is_some() {
            load_or_create_key(&key_file)?
        } else {
            Vec::new()
        };
        let limits = config
            .as_ref()
            .map(|c| c.limits.clone())
            .unwrap_or_default();
        Ok(Auth {
            config,
            service,
            key,
            ttl,
            cache: Mutex::new(HashMap::new()),
            failures: Limiter::new(limits.auth_failures_burst, limits.auth_failures_per_minute),
            bcrypt_runs: AtomicU64::new(0),
        })
    }

    pub fn enabled(&self) -> bool {
        self.config.is_some()
    }

    /// What `user` (`None`: anonymous) may do on `repo` under the configuration.
    pub fn allowed(&self, user: Option<&str>, repo: &str) -> BTreeSet<Action> {
        let Some(c) = &self.config else {
            return Action::ALL.into_iter().collect();
        };
        let mut out = BTreeSet::new();
        for r in &c.access {
            let applies = r.users.iter().any(|u| {
                u == "anonymous" || (user.is_some() && (u == "*" || Some(u.as_str()) == user))
            });
            if applies && glob_match(&r.repository, repo) {
                for a in &r.actions {
                    if a == "*" {
                        out.extend(Action::ALL);
                    } else if let Some(a) = Action::parse(a) {
                        out.insert(a);
                    }
                }
            }
        }
        out
    }

    /// May `id` do `action` on `repo`?
    pub fn permits(&self, id: &Identity, repo: &str, action: Action) -> bool {
        if !self.enabled() {
            return true;
        }
        match id {
            Identity::Anonymous => self.allowed(None, repo).contains(&action),
            Identity::User(u) => self.allowed(Some(u), repo).contains(&action),
            Identity::Token { sub, access, .. } => {
                access.get(repo).is_some_and(|a| a.contains(&action))
                    && self.allowed(sub.as_deref(), repo).contains(&action)
            }
        }
    }

    /// Is `id` an administrator (may see every rule, user and repository)? Only users signed
    /// in with their password and listed in `admins`; everyone in an open registry.
    pub fn is_admin(&self, id: &Identity) -> bool {
        match (&self.config, id) {
            (None, _) => true,
            (Some(c), Identity::User(u)) => c.admins.iter().any(|a| a == u),
            _ => false,
        }
    }

    /// Checks a user's password for a request from `client` (bcrypt; successes cached for a
    /// few minutes). Failures are counted per client; a client over its limit gets
    /// [`PasswordCheck::Limited`] and bcrypt does not run.
    pub fn check_password(&self, client: IpAddr, user: &str, password: &str) -> PasswordCheck {
        let Some(c) = &self.config else {
            return PasswordCheck::Invalid;
        };
        let ph: [u8; 32] = Sha256::digest(password.as_bytes()).into();
        {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((h, at)) = cache.get(user) {
                if ct_eq(h, &ph) && at.elapsed() < CACHE_FOR {
                    return PasswordCheck::Valid;
                }
            }
        }
        if let Err(wait) = self.failures.take(client) {
            return PasswordCheck::Limited(wait);
        }
        let ok = c.users.get(user).is_some_and(|u| {
            self.bcrypt_runs.fetch_add(1, Ordering::Relaxed);
            bcrypt::verify(password, &u.password_hash).unwrap_or(false)
        });
        if !ok {
            return PasswordCheck::Invalid;
        }
        self.failures.give_back(client);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.insert(user.to_string(), (ph, Instant::now()));
        PasswordCheck::Valid
    }

    /// How many bcrypt verifications ran since the start.
    pub fn bcrypt_runs(&self) -> u64 {
        self.bcrypt_runs.load(Ordering::Relaxed)
    }

    pub fn ttl(&self) -> u64 {
        self.ttl
    }

    /// Issues a token for `sub` granting `access`.
    pub fn issue(
        &self,
        sub: Option<&str>,
        access: &[(String, String, Vec<Action>)],
        now: u64,
    ) -> String {
        let header = serde_json::json!({"alg": "HS256", "typ": "JWT"});
        let access: Vec<_> = access
            .iter()
            .map(|(ty, name, acts)| {
                serde_json::json!({
                    "type": ty, "name": name,
                    "actions": acts.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
                })
            })
            .collect();
        let claims = serde_json::json!({
            "iss": self.service, "aud": self.service, "sub": sub.unwrap_or(""),
            "iat": now, "nbf": now.saturating_sub(10), "exp": now + self.ttl,
            "jti": berth_util::id::random_hex(16), "access": access,
        });
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let signing = format!(
            "{}.{}",
            b64.encode(header.to_string()),
            b64.encode(claims.to_string())
        );
        let sig = hmac_sha256(&self.key, signing.as_bytes());
        format!("{signing}.{}", b64.encode(sig))
    }

    /// Verifies a token; `None` when forged, malformed or expired.
    pub fn verify(&self, token: &str, now: u64) -> Option<Identity> {
        if !self.enabled() {
            return None;
        }
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut parts = token.split('.');
        let (h, c, s) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let sig = b64.decode(s).ok()?;
        let want = hmac_sha256(&self.key, format!("{h}.{c}").as_bytes());
        if !ct_eq(&sig, &want) {
            return None;
        }
        let header: serde_json::Value = serde_json::from_slice(&b64.decode(h).ok()?).ok()?;
        if header.get("alg")?.as_str()? != "HS256" {
            return None;
        }
        let claims: serde_json::Value = serde_json::from_slice(&b64.decode(c).ok()?).ok()?;
        let exp = claims.get("exp")?.as_u64()?;
        let nbf = claims.get("nbf").and_then(|v| v.as_u64()).unwrap_or(0);
        if now >= exp || nbf > now + 60 || claims.get("aud")?.as_str()? != self.service {
            return None;
        }
        let sub = claims
            .get("sub")
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        let mut access: BTreeMap<String, BTreeSet<Action>> = BTreeMap::new();
        let mut catalog = false;
        for a in claims.get("access")?.as_array()? {
            let ty = a.get("type")?.as_str()?;
            let name = a.get("name")?.as_str()?;
            let acts = a.get("actions")?.as_array()?;
            if ty == "registry" && name == "catalog" {
                catalog = true;
            } else if ty == "repository" {
                let e = access.entry(name.to_string()).or_default();
                e.extend(
                    acts.iter()
                        .filter_map(|x| x.as_str().and_then(Action::parse)),
                );
            }
        }
        Some(Identity::Token {
            sub,
            access,
            catalog,
        })
    }
}

/// Reads the token signing key, creating it (32 random bytes, mode 0600) when missing. The new
/// key is written to a temporary file and linked into place, so that a crash never leaves a
/// short key behind and two servers starting at once agree on one key.
fn load_or_create_key(path: &Path) -> Result<Vec<u8>, ServerError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let key_err = |source| ServerError::TokenKey {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::read(path) {
        Ok(k) if k.len() >= 32 => return Ok(k),
        Ok(_) => {
            return Err(ServerError::TokenKeyShort {
                path: path.to_path_buf(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(key_err(e)),
    }
    let mut k = vec![0u8; 32];
    berth_util::id::fill_random(&mut k).map_err(ServerError::Random)?;
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp_name);
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&k)?;
        f.sync_all()?;
        std::fs::hard_link(&tmp, path)
    })();
    let _ = std::fs::remove_file(&tmp);
    match written {
        Ok(()) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                berth_util::fs::fsync_dir(dir).map_err(key_err)?;
            }
            Ok(k)
        }
        // Another server created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => load_or_create_key(path),
        Err(e) => Err(key_err(e)),
    }
}

/// HMAC-SHA256 (RFC 2104).
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut ipad = [0x36u8; 64];
    let mut opad = [0x5cu8; 64];
    for i in 0..64 {
        ipad[i] ^= k[i];
        opad[i] ^= k[i];
    }
    let inner = Sha256::new()
        .chain_update(ipad)
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(opad)
        .chain_update(inner)
        .finalize()
        .into()
}

/// A bcrypt hash of `password` for the configuration file.
pub fn hash_password(password: &str) -> Result<String, bcrypt::BcryptError> {
    bcrypt::hash(password, bcrypt::DEFAULT_COST)
}

/// Constant-time equality.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Decodes `Basic base64(user:password)`.
pub fn parse_basic(value: &str) -> Option<(String, String)> {
    let v = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(v.trim())
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("*", "a/b"));
        assert!(glob_match("team/*", "team/app"));
        assert!(glob_match("team/*", "team/a/b"));
        assert!(!glob_match("team/*", "teamx/a"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "abbc"));
        assert!(glob_match("*x*y", "axxbyy"));
        assert!(!glob_match("", "a"));
    }

    #[test]
    fn hmac_rfc4231_case2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    /// An [`Auth`] with state in `dir` and the users alice and bob (password `pw`), its
    /// configuration's `key` set to `value`.
    fn alice_and_bob(dir: &Path, key: &str, value: serde_json::Value) -> Auth {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let mut cfg = serde_json::json!({
            "users": {"alice": {"password_hash": hash}, "bob": {"password_hash": hash}},
        });
        cfg[key] = value;
        Auth::new(Some(serde_json::from_value(cfg).unwrap()), dir).unwrap()
    }

    #[test]
    fn tokens_and_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let a = alice_and_bob(
            dir.path(),
            "access",
            serde_json::json!([
                {"repository": "alice/*", "users": ["alice"], "actions": ["*"]},
                {"repository": "pub/*", "users": ["anonymous"], "actions": ["pull"]},
                {"repository": "*", "users": ["*"], "actions": ["pull"]},
            ]),
        );
        let ip = IpAddr::from([127, 0, 0, 1]);
        assert_eq!(a.check_password(ip, "alice", "pw"), PasswordCheck::Valid);
        assert_eq!(a.check_password(ip, "alice", "pw"), PasswordCheck::Valid);
        assert_eq!(
            a.check_password(ip, "alice", "nope"),
            PasswordCheck::Invalid
        );
        assert_eq!(a.check_password(ip, "carol", "pw"), PasswordCheck::Invalid);
        let alice = Identity::User("alice".into());
        let bob = Identity::User("bob".into());
        assert!(a.permits(&alice, "alice/x", Action::Delete));
        assert!(!a.permits(&bob, "alice/x", Action::Push));
        assert!(a.permits(&bob, "alice/x", Action::Pull));
        assert!(a.permits(&Identity::Anonymous, "pub/x", Action::Pull));
        assert!(!a.permits(&Identity::Anonymous, "alice/x", Action::Pull));
        let t = a.issue(
            Some("alice"),
            &[("repository".into(), "alice/x".into(), vec![Action::Pull])],
            1000,
        );
        let id = a.verify(&t, 1001).unwrap();
        assert!(a.permits(&id, "alice/x", Action::Pull));
        assert!(!a.permits(&id, "alice/x", Action::Push));
        assert!(a.verify(&t, 1000 + 300).is_none(), "expired");
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let parts: Vec<&str> = t.split('.').collect();
        let other = b64.encode(
            serde_json::json!({"aud": "berth-registry", "exp": 5000, "sub": "alice",
                "access": [{"type": "repository", "name": "alice/x", "actions": ["push"]}]})
            .to_string(),
        );
        let forged = format!("{}.{}.{}", parts[0], other, parts[2]);
        assert!(a.verify(&forged, 1001).is_none());
        assert!(a.verify("a.b", 1001).is_none());
    }

    #[test]
    fn failed_sign_ins_are_limited_per_client_before_bcrypt() {
        let dir = tempfile::tempdir().unwrap();
        let a = alice_and_bob(
            dir.path(),
            "limits",
            serde_json::json!({"auth_failures_burst": 3, "auth_failures_per_minute": 0}),
        );
        let (x, y) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        // Successes cost nothing: many in a row, then the full allowance of failures.
        for _ in 0..5 {
            assert_eq!(a.check_password(x, "alice", "pw"), PasswordCheck::Valid);
        }
        assert_eq!(a.bcrypt_runs(), 1, "later successes come from the cache");
        for _ in 0..3 {
            assert_eq!(a.check_password(x, "alice", "bad"), PasswordCheck::Invalid);
        }
        // An unknown user is a failure too (no bcrypt to run).
        let runs = a.bcrypt_runs();
        assert_eq!(runs, 4);
        for _ in 0..50 {
            assert!(matches!(
                a.check_password(x, "alice", "bad"),
                PasswordCheck::Limited(_)
            ));
            assert!(matches!(
                a.check_password(x, "nobody", "bad"),
                PasswordCheck::Limited(_)
            ));
        }
        assert_eq!(a.bcrypt_runs(), runs, "bcrypt ran for a limited client");
        // Cached credentials still work; uncached ones wait (bcrypt does not run for them).
        assert_eq!(a.check_password(x, "alice", "pw"), PasswordCheck::Valid);
        assert!(matches!(
            a.check_password(x, "bob", "pw"),
            PasswordCheck::Limited(_)
        ));
        assert_eq!(a.bcrypt_runs(), runs);
        // Another client is not affected.
        assert_eq!(a.check_password(y, "bob", "bad"), PasswordCheck::Invalid);
        assert_eq!(a.check_password(y, "nobody", "bad"), PasswordCheck::Invalid);
        assert_eq!(a.check_password(y, "bob", "pw"), PasswordCheck::Valid);
    }
}
