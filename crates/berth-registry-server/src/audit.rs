//! The audit log: one JSON object per line for every push, pull and deletion, every denied
//! request, every token issued and every upload session expired.
//!
//! `{"time":"2026-11-23T21:00:00.123Z","user":"alice","remote":"127.0.0.1:5123",
//!   "action":"push","kind":"manifest","repository":"team/app","reference":"v1",
//!   "digest":"sha256:…"}` — `user` is null for anonymous requests.
//!
//! | action | kind | what |
//! | --- | --- | --- |
//! | `push` | `manifest`, `blob`, `mount` | a manifest or blob stored, a blob mounted (`reference`: the source repository) |
//! | `pull` | `manifest` | a manifest served (one line per image pulled, not one per blob) |
//! | `delete` | `manifest`, `tag`, `blob`, `upload` | a manifest, tag, blob link or upload session (`reference`: its id) removed |
//! | `expire` | `upload` | an upload session removed after the idle timeout |
//! | `token` | `token` | a token issued; `scope` lists what it grants (`user`: its subject) |
//! | `deny` | `repository`, `catalog`, `credentials`, `ui` | a request refused with `status` 401 or 403: access to a repository or the catalog (`scope`: what was asked), wrong credentials (`user`: the name given), the permissions page |
//!
//! `status` and `scope` appear only on the lines they concern. The anonymous `GET /v2/` that
//! every client sends first to learn how to authenticate is not a denial and is not logged.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Mutex;

use serde::Serialize;

/// The log file (appended, one `write` per line).
pub struct Audit {
    file: Mutex<File>,
}

/// One entry.
#[derive(Debug, Default, Serialize)]
pub struct Entry<'a> {
    pub user: Option<&'a str>,
    pub remote: Option<SocketAddr>,
    pub action: &'a str,
    pub kind: &'a str,
    pub repository: Option<&'a str>,
    pub reference: Option<&'a str>,
    pub digest: Option<&'a str>,
    /// The HTTP status of a denial.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// What a denied request asked for, or what an issued token grants (Docker's scope
    /// syntax, space-separated).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<&'a str>,
}

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    #[serde(flatten)]
    entry: &'a Entry<'a>,
}

impl Audit {
    pub fn open(path: &Path) -> std::io::Result<Audit> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Audit {
            file: Mutex::new(file),
        })
    }

    pub fn log(&self, e: &Entry<'_>) {
        let line = Line {
            time: berth_image::timeutil::now_rfc3339_nano(),
            entry: e,
        };
        let mut s = match serde_json::to_string(&line) {
            Ok(s) => s,
            Err(err) => {
                tracing::error!(error = %err, "audit entry not serializable");
                return;
            }
        };
        s.push('\n');
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(err) = f.write_all(s.as_bytes()) {
            tracing::error!(error = %err, "audit log write failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_keep_the_fields_and_add_status_and_scope_only_where_set() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("audit.log");
        let a = Audit::open(&p).unwrap();
        a.log(&Entry {
            user: Some("alice"),
            remote: Some("127.0.0.1:5000".parse().unwrap()),
            action: "push",
            kind: "manifest",
            repository: Some("team/app"),
            reference: Some("v1"),
            digest: Some("sha256:00"),
            ..Default::default()
        });
        a.log(&Entry {
            action: "deny",
            kind: "repository",
            repository: Some("team/app"),
            status: Some(401),
            scope: Some("repository:team/app:pull"),
            ..Default::default()
        });
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let keys = |v: &serde_json::Value| -> Vec<String> {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        assert_eq!(
            keys(&lines[0]),
            [
                "action",
                "digest",
                "kind",
                "reference",
                "remote",
                "repository",
                "time",
                "user"
            ]
        );
        assert_eq!(lines[0]["remote"], "127.0.0.1:5000");
        assert_eq!(lines[1]["user"], serde_json::Value::Null);
        assert_eq!(lines[1]["status"], 401);
        assert_eq!(lines[1]["scope"], "repository:team/app:pull");
    }
}
