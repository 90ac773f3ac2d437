//! The web page: server-rendered HTML, every dynamic string escaped.
//!
//! `/ui/` lists repositories, `/ui/repo/<name>` its tags (digest, media type, size) and
//! untagged manifests, `/ui/repo/<name>/manifest/<digest>` an image's config and layers (or an
//! index's children), `/ui/permissions` who may do what. With access control, a visitor sees
//! what they may pull; `/ui/login` asks the browser for basic credentials.

use std::fmt::Write as _;
use std::net::SocketAddr;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use berth_image::Digest;

use crate::api::{host_of, identify_async, Remote, St};
use crate::audit;
use crate::auth::{Action, Auth, Identity};
use crate::names::{parse_digest, valid_name};

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// Bytes as docker shows sizes.
pub fn human(n: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

fn page(auth: &Auth, title: &str, who: &Identity, body: &str) -> Response {
    let user = match who.user() {
        Some(u) => format!("signed in as <b>{}</b>", esc(u)),
        None if auth.enabled() => "anonymous — <a href=\"/ui/login\">sign in</a>".to_string(),
        None => "open registry (no access control)".to_string(),
    };
    let perms = if auth.is_admin(who) {
        "<a href=\"/ui/permissions\">Permissions</a>"
    } else {
        ""
    };
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t} — Berth registry</title>\
<style>body{{font-family:sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse;margin:1em 0}}\
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}th{{background:#eee}}code{{font-size:90%}}\
nav a{{margin-right:1em}}pre{{background:#f6f6f6;padding:1em;overflow:auto}}</style></head>\
<body><nav><a href=\"/ui/\">Repositories</a>{perms} <small>{user}</small></nav>\
<h1>{t}</h1>\n{body}\n</body></html>\n",
        t = esc(title)
    );
    let mut r = html_response(StatusCode::OK, html);
    r.headers_mut().insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
    );
    r
}

/// An HTML document with its content type.
fn html_response(status: StatusCode, html: String) -> Response {
    let mut r = (status, html).into_response();
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

/// A bare error page: `title` as its heading, then `msg`.
fn error_page(status: StatusCode, title: &str, msg: &str) -> Response {
    html_response(
        status,
        format!(
            "<!DOCTYPE html><html><body><h1>{title}</h1><p>{}</p></body></html>",
            esc(msg)
        ),
    )
}

fn not_found(msg: &str) -> Response {
    error_page(StatusCode::NOT_FOUND, "Not found", msg)
}

fn basic_challenge() -> Response {
    let mut r = (StatusCode::UNAUTHORIZED, "authentication required").into_response();
    r.headers_mut().insert(
        "www-authenticate",
        HeaderValue::from_static("Basic realm=\"berth-registry\""),
    );
    r
}

fn forbidden(msg: &str) -> Response {
    error_page(StatusCode::FORBIDDEN, "Forbidden", msg)
}

fn remote_of(req: &Request) -> Option<SocketAddr> {
    req.extensions().get::<Remote>().map(|r| r.0)
}

/// The visitor; `Err` is the answer to wrong credentials (a basic challenge) or to a client
/// that failed too often (429 with `Retry-After`).
async fn who(
    st: &St,
    headers: &HeaderMap,
    remote: Option<SocketAddr>,
) -> Result<Identity, Response> {
    let host = host_of(headers);
    identify_async(st, headers, &host, remote)
        .await
        .map_err(|e| {
            if e.status == StatusCode::TOO_MANY_REQUESTS {
                e.into_response()
            } else {
                basic_challenge()
            }
        })
}

/// `/ui` -> `/ui/`.
pub async fn redirect() -> Redirect {
    Redirect::permanent("/ui/")
}

/// `/ui/`: the repositories the visitor may pull.
pub async fn index(State(st): State<St>, req: Request) -> Response {
    let id = match who(&st, req.headers(), remote_of(&req)).await {
        Ok(id) => id,
        Err(r) => return r,
    };
    let st2 = st.clone();
    let repos = match tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        for r in st2.store.list_repos().unwrap_or_default() {
            if let Ok(Some(m)) = st2.store.read_meta(&r) {
                out.push((r, m.tags.len(), m.manifests.len()));
            }
        }
        out
    })
    .await
    {
        Ok(r) => r,
        Err(_) => return not_found("internal error"),
    };
    let mut b = String::from(
        "<table id=\"repositories\"><tr><th>Repository</th><th>Tags</th><th>Manifests</th></tr>\n",
    );
    let mut n = 0;
    for (r, tags, mans) in repos {
        if !st.auth.permits(&id, &r, Action::Pull) {
            continue;
        }
        n += 1;
        let _ = writeln!(
            b,
            "<tr><td><a href=\"/ui/repo/{r}\">{r}</a></td><td>{tags}</td><td>{mans}</td></tr>",
            r = esc(&r)
        );
    }
    b.push_str("</table>");
    if n == 0 {
        b.push_str("<p>No repositories visible.</p>");
    }
    page(&st.auth, "Repositories", &id, &b)
}

/// `/ui/login`: asks for basic credentials until valid ones come.
pub async fn login(State(st): State<St>, req: Request) -> Response {
    match who(&st, req.headers(), remote_of(&req)).await {
        Ok(Identity::Anonymous) if st.auth.enabled() => basic_challenge(),
        Ok(_) => Redirect::to("/ui/").into_response(),
        Err(r) => r,
    }
}

/// `/ui/permissions`: every rule, user and repository, so for administrators only (anyone in
/// an open registry): anonymous visitors get a basic challenge, other users 403; both logged.
pub async fn permissions(State(st): State<St>, req: Request) -> Response {
    let id = match who(&st, req.headers(), remote_of(&req)).await {
        Ok(id) => id,
        Err(r) => return r,
    };
    if !st.auth.is_admin(&id) {
        let r = if id.user().is_none() {
            basic_challenge()
        } else {
            forbidden("The permissions page is for administrators (\"admins\" in the configuration), signed in with their password.")
        };
        st.audit.log(&audit::Entry {
            user: id.user(),
            remote: remote_of(&req),
            action: "deny",
            kind: "ui",
            reference: Some("/ui/permissions"),
            status: Some(r.status().as_u16()),
            ..Default::default()
        });
        return r;
    }
    let mut b = String::new();
    match &st.auth.config {
        None => {
            b.push_str("<p>No access control: everyone may pull, push and delete everything.</p>")
        }
        Some(c) => {
            b.push_str("<h2>Rules</h2><table id=\"rules\"><tr><th>Repositories</th><th>Users</th><th>Actions</th></tr>\n");
            for r in &c.access {
                let users: Vec<String> = r
                    .users
                    .iter()
                    .map(|u| match u.as_str() {
                        "*" => "any signed-in user".to_string(),
                        "anonymous" => "everyone (anonymous)".to_string(),
                        u => u.to_string(),
                    })
                    .collect();
                let _ = writeln!(
                    b,
                    "<tr><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                    esc(&r.repository),
                    esc(&users.join(", ")),
                    esc(&r.actions.join(", "))
                );
            }
            b.push_str("</table>");
            // Effective rights per user on each existing repository.
            let st2 = st.clone();
            let repos =
                tokio::task::spawn_blocking(move || st2.store.list_repos().unwrap_or_default())
                    .await
                    .unwrap_or_default();
            let mut users: Vec<Option<&str>> = vec![None];
            users.extend(c.users.keys().map(|u| Some(u.as_str())));
            b.push_str("<h2>Who may do what</h2><table id=\"matrix\"><tr><th>Repository</th>");
            for u in &users {
                let _ = write!(b, "<th>{}</th>", esc(u.unwrap_or("anonymous")));
            }
            b.push_str("</tr>\n");
            for r in repos {
                let _ = write!(b, "<tr><td>{}</td>", esc(&r));
                for u in &users {
                    let a: Vec<&str> = st.auth.allowed(*u, &r).iter().map(|a| a.as_str()).collect();
                    let _ = write!(b, "<td>{}</td>", esc(&a.join(", ")));
                }
                b.push_str("</tr>\n");
            }
            b.push_str("</table>");
        }
    }
    page(&st.auth, "Permissions", &id, &b)
}

/// `/ui/repo/<name>` and `/ui/repo/<name>/manifest/<digest>`.
pub async fn repo(State(st): State<St>, req: Request) -> Response {
    let id = match who(&st, req.headers(), remote_of(&req)).await {
        Ok(id) => id,
        Err(r) => return r,
    };
    let path = req.uri().path().to_string();
    let rest = path.strip_prefix("/ui/repo/").unwrap_or("");
    let (name, digest) = match rest.rsplit_once("/manifest/") {
        Some((n, d)) => (n.to_string(), Some(d.to_string())),
        None => (rest.trim_end_matches('/').to_string(), None),
    };
    if !valid_name(&name) || !st.auth.permits(&id, &name, Action::Pull) {
        return not_found("no such repository");
    }
    let st2 = st.clone();
    let n2 = name.clone();
    let meta = match tokio::task::spawn_blocking(move || st2.store.read_meta(&n2)).await {
        Ok(Ok(Some(m))) => m,
        _ => return not_found("no such repository"),
    };
    match digest {
        None => repo_page(&st, &id, &name, &meta, &host_of(req.headers())).await,
        Some(d) => match parse_digest(&d) {
            Ok(d) if meta.manifests.contains_key(&d.to_string()) => {
                manifest_page(&st, &id, &name, &meta, &d).await
            }
            _ => not_found("no such manifest"),
        },
    }
}

fn read_json(st: &St, d: &str) -> Option<serde_json::Value> {
    let d = Digest::parse(d).ok()?;
    serde_json::from_slice(&std::fs::read(st.store.blob_path(&d)).ok()?).ok()
}

/// Total size of an image manifest (config + layers); an index's own size.
fn image_size(st: &St, e: &crate::storage::ManifestEntry) -> u64 {
    let mut total = 0;
    for b in &e.blobs {
        if let Ok(d) = Digest::parse(b) {
            total += st.store.blob_size(&d).unwrap_or(0);
        }
    }
    total.max(e.size)
}

async fn repo_page(
    st: &St,
    id: &Identity,
    name: &str,
    meta: &crate::storage::RepoMeta,
    host: &str,
) -> Response {
    let mut b = String::from(
        "<h2>Tags</h2><table id=\"tags\"><tr><th>Tag</th><th>Digest</th><th>Media type</th><th>Size</th></tr>\n",
    );
    let n = esc(name);
    for (t, d) in &meta.tags {
        let (mt, size) = meta
            .manifests
            .get(d)
            .map(|e| (e.media_type.clone(), human(image_size(st, e))))
            .unwrap_or_default();
        let _ = writeln!(
            b,
            "<tr><td class=\"tag\">{}</td><td><a href=\"/ui/repo/{n}/manifest/{d}\"><code>{d}</code></a></td><td>{}</td><td>{}</td></tr>",
            esc(t),
            esc(&mt),
            esc(&size),
            d = esc(d)
        );
    }
    b.push_str("</table>");
    let tagged: std::collections::BTreeSet<&String> = meta.tags.values().collect();
    let untagged: Vec<_> = meta
        .manifests
        .iter()
        .filter(|(d, _)| !tagged.contains(d))
        .collect();
    if !untagged.is_empty() {
        b.push_str("<h2>Untagged manifests</h2><table id=\"untagged\"><tr><th>Digest</th><th>Media type</th><th>Artifact type</th><th>Subject</th></tr>\n");
        for (d, e) in untagged {
            let _ = writeln!(
                b,
                "<tr><td><a href=\"/ui/repo/{n}/manifest/{d}\"><code>{d}</code></a></td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
                esc(&e.media_type),
                esc(e.artifact_type.as_deref().unwrap_or("")),
                esc(e.subject.as_deref().unwrap_or("")),
                d = esc(d)
            );
        }
        b.push_str("</table>");
    }
    let _ = write!(
        b,
        "<p>Pull: <code>docker pull {}/{n}:TAG</code></p>",
        esc(host)
    );
    page(&st.auth, name, id, &b)
}

async fn manifest_page(
    st: &St,
    id: &Identity,
    name: &str,
    meta: &crate::storage::RepoMeta,
    d: &Digest,
) -> Response {
    let ds = d.to_string();
    let e = &meta.manifests[&ds];
    let n = esc(name);
    let st2 = st.clone();
    let ds2 = ds.clone();
    let man = tokio::task::spawn_blocking(move || read_json(&st2, &ds2))
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    let tags: Vec<&str> = meta
        .tags
        .iter()
        .filter(|(_, v)| **v == ds)
        .map(|(t, _)| t.as_str())
        .collect();
    let mut b = format!(
        "<table id=\"summary\"><tr><th>Digest</th><td><code>{}</code></td></tr><tr><th>Media type</th><td>{}</td></tr><tr><th>Tags</th><td>{}</td></tr><tr><th>Size</th><td>{}</td></tr></table>\n",
        esc(&ds),
        esc(&e.media_type),
        esc(&tags.join(", ")),
        esc(&human(image_size(st, e)))
    );
    if let Some(children) = man.get("manifests").and_then(|m| m.as_array()) {
        b.push_str("<h2>Manifests</h2><table id=\"children\"><tr><th>Platform</th><th>Digest</th><th>Size</th></tr>\n");
        for c in children {
            let cd = c.get("digest").and_then(|v| v.as_str()).unwrap_or("");
            let p = c.get("platform");
            let plat = p
                .map(|p| {
                    let g = |k: &str| p.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
                    let v = g("variant");
                    format!(
                        "{}/{}{}",
                        g("os"),
                        g("architecture"),
                        if v.is_empty() {
                            String::new()
                        } else {
                            format!("/{v}")
                        }
                    )
                })
                .unwrap_or_default();
            let sz = c.get("size").and_then(|v| v.as_u64()).unwrap_or(0);
            let _ = writeln!(
                b,
                "<tr><td>{}</td><td><a href=\"/ui/repo/{n}/manifest/{cd}\"><code>{cd}</code></a></td><td>{}</td></tr>",
                esc(&plat),
                esc(&human(sz)),
                cd = esc(cd)
            );
        }
        b.push_str("</table>");
    }
    if let Some(layers) = man.get("layers").and_then(|m| m.as_array()) {
        b.push_str("<h2>Layers</h2><table id=\"layers\"><tr><th>#</th><th>Digest</th><th>Media type</th><th>Size</th></tr>\n");
        for (i, l) in layers.iter().enumerate() {
            let g = |k: &str| l.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
            let sz = l.get("size").and_then(|v| v.as_u64()).unwrap_or(0);
            let _ = writeln!(
                b,
                "<tr><td>{i}</td><td class=\"layer\"><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                esc(&g("digest")),
                esc(&g("mediaType")),
                esc(&human(sz))
            );
        }
        b.push_str("</table>");
    }
    if let Some(cfg) = man.get("config") {
        let cd = cfg
            .get("digest")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        let st2 = st.clone();
        let cd2 = cd.clone();
        let cfgv = tokio::task::spawn_blocking(move || read_json(&st2, &cd2))
            .await
            .ok()
            .flatten();
        let _ = write!(b, "<h2>Config</h2><p><code>{}</code></p>", esc(&cd));
        if let Some(c) = cfgv {
            let pretty = serde_json::to_string_pretty(&c).unwrap_or_default();
            let _ = write!(b, "<pre id=\"config\">{}</pre>", esc(&pretty));
        }
    }
    let pretty = serde_json::to_string_pretty(&man).unwrap_or_default();
    let _ = write!(
        b,
        "<h2>Manifest</h2><pre id=\"manifest\">{}</pre><p><a href=\"/ui/repo/{n}\">back to {n}</a></p>",
        esc(&pretty)
    );
    page(
        &st.auth,
        &format!("{name}@{}", &ds[..19.min(ds.len())]),
        id,
        &b,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(
            esc("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
        assert_eq!(human(999), "999 B");
        assert_eq!(human(1_500_000), "1.5 MB");
    }
}
