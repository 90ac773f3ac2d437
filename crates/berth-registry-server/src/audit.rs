//! The audit log: one JSON object per line for every push, pull and deletion.
//!
//! `{"time":"2026-11-23T21:00:00.123Z","user":"alice","remote":"127.0.0.1:5123",
//!   "action":"push","repository":"team/app","reference":"v1","digest":"sha256:…",
//!   "kind":"manifest"}` — `user` is null for anonymous requests; `kind` is `manifest`, `blob`,
//! `tag` or `mount`. Pulls are logged for manifests (one line per image pulled), not for every
//! blob read.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Mutex;

/// The log file (appended, one `write` per line).
pub struct Audit {
    file: Mutex<File>,
}

/// One entry.
pub struct Entry<'a> {
    pub user: Option<&'a str>,
    pub remote: Option<SocketAddr>,
    pub action: &'a str,
    pub kind: &'a str,
    pub repository: &'a str,
    pub reference: Option<&'a str>,
    pub digest: Option<&'a str>,
}

impl Audit {
    pub fn open(path: &Path) -> std::io::Result<Audit> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Audit {
            file: Mutex::new(file),
        })
    }

    pub fn log(&self, e: &Entry<'_>) {
        let line = serde_json::json!({
            "time": berth_image::timeutil::now_rfc3339_nano(),
            "user": e.user,
            "remote": e.remote.map(|a| a.to_string()),
            "action": e.action,
            "kind": e.kind,
            "repository": e.repository,
            "reference": e.reference,
            "digest": e.digest,
        });
        let mut s = line.to_string();
        s.push('\n');
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(err) = f.write_all(s.as_bytes()) {
            tracing::error!(error = %err, "audit log write failed");
        }
    }
}
