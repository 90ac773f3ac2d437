//! Upload sessions: monolithic, chunked and streamed uploads, mounts, status, cancel.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use berth_image::Digest;
use futures_util::StreamExt as _;
use sha2::{Digest as _, Sha256};
use tokio::sync::OwnedMutexGuard;

use super::{blocking, content_length, digest_or_err, empty, header, q1, AppState, Ctx, St};
use crate::auth::Action;
use crate::error::{ApiError, Code};
use crate::names::valid_name;
use crate::sessions::{HashState, Refused};
use crate::storage::UploadWriter;

fn upload_unknown(id: &str) -> ApiError {
    ApiError::new(Code::BlobUploadUnknown, "blob upload unknown to registry")
        .detail(serde_json::json!({ "id": id }))
}

fn range_value(size: u64) -> String {
    format!("0-{}", size.saturating_sub(1))
}

fn upload_headers(name: &str, id: &str, size: u64) -> Vec<(&'static str, String)> {
    vec![
        ("location", format!("/v2/{name}/blobs/uploads/{id}")),
        ("range", range_value(size)),
        ("docker-upload-uuid", id.to_string()),
    ]
}

fn upload_of(st: &AppState, name: &str, id: &str) -> Result<u64, ApiError> {
    match st.store.upload(id) {
        Some((info, size)) if info.repository == name => Ok(size),
        _ => Err(upload_unknown(id)),
    }
}

pub(super) async fn post_upload(
    st: St,
    ctx: Ctx,
    name: String,
    q: Vec<(String, String)>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // Cross-repository mount.
    if let Some(m) = q1(&q, "mount") {
        let d = digest_or_err(m)?;
        if let Some(from) = q1(&q, "from").filter(|f| valid_name(f)) {
            if st.auth.permits(&ctx.id, from, Action::Pull) {
                let (st2, n2, f2, d2) = (st.clone(), name.clone(), from.to_string(), d.clone());
                let mounted = blocking(move || {
                    let ds = d2.to_string();
                    let in_from = st2
                        .store
                        .read_meta(&f2)?
                        .is_some_and(|m| m.blobs.contains(&ds) || m.manifests.contains_key(&ds));
                    let _gc = st2.store.gc_lock(false)?;
                    if !in_from || st2.store.blob_size(&d2).is_none() {
                        return Ok(false);
                    }
                    st2.store.touch(&d2);
                    st2.store.update_meta_locked(&n2, true, |meta| {
                        let meta = meta.expect("created");
                        Ok::<_, ApiError>((true, meta.blobs.insert(ds)))
                    })
                })
                .await?;
                if mounted {
                    let ds = d.to_string();
                    ctx.audit(&st, "push", "mount", &name, Some(from), Some(&ds));
                    return Ok(empty(
                        StatusCode::CREATED,
                        &[
                            ("location", format!("/v2/{name}/blobs/{d}")),
                            ("docker-content-digest", ds),
                        ],
                    ));
                }
            }
        }
        // Not mountable: an ordinary upload session, as the spec says.
    }
    let digest = match q1(&q, "digest") {
        Some(d) => Some(digest_or_err(d)?),
        None => None,
    };
    let (st2, n2, owner) = (st.clone(), name.clone(), ctx.owner());
    let id = blocking(move || {
        // Each session is a directory on disk until it is finished, cancelled or expired:
        // without caps, a client could start them without end, or one client take them all.
        let (per_owner, total) = (
            st2.limits.max_open_uploads_per_user.max(1),
            st2.limits.max_open_uploads.max(1),
        );
        let id = st2
            .sessions
            .reserve(&st2.store, &owner, per_owner, total)
            .map_err(|r| {
                let msg = match r {
                    Refused::Owner(n) => {
                        format!("too many open upload sessions for this client ({n})")
                    }
                    Refused::Total(n) => format!("too many open upload sessions ({n})"),
                };
                ApiError::new(Code::TooManyRequests, msg).header("retry-after", "5".to_string())
            })?;
        if let Err(e) = st2.store.create_upload(&id, &n2, &owner) {
            st2.drop_upload(&id);
            return Err(e.into());
        }
        st2.sessions.opened(&id);
        Ok(id)
    })
    .await?;
    if let Some(d) = digest {
        // Monolithic upload: the body is the blob.
        let r = async {
            append(&st, &id, headers, body, None).await?;
            finish(&st, &ctx, &name, &id, &d).await
        }
        .await;
        if r.is_err() {
            st.drop_upload(&id);
        }
        return r;
    }
    Ok(empty(StatusCode::ACCEPTED, &upload_headers(&name, &id, 0)))
}

/// `Content-Range: <start>-<end>` (also `bytes <start>-<end>/<total>`).
fn parse_content_range(v: &str) -> Option<(u64, u64)> {
    let v = v.trim();
    let v = v.strip_prefix("bytes ").unwrap_or(v);
    let v = v.split('/').next()?;
    let (a, b) = v.split_once('-')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

pub(super) async fn patch_upload(
    st: St,
    name: String,
    id: String,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    upload_of(&st, &name, &id)?;
    let cr = match header(headers, "content-range") {
        Some(v) => Some(
            parse_content_range(v)
                .ok_or_else(|| ApiError::new(Code::RangeInvalid, "malformed Content-Range"))?,
        ),
        None => None,
    };
    let size = append(&st, &id, headers, body, cr).await.map_err(|e| {
        if e.code == Code::RangeInvalid {
            let size = st.store.upload(&id).map(|u| u.1).unwrap_or(0);
            e.header("location", format!("/v2/{name}/blobs/uploads/{id}"))
                .header("range", range_value(size))
        } else {
            e
        }
    })?;
    Ok(empty(
        StatusCode::ACCEPTED,
        &upload_headers(&name, &id, size),
    ))
}

pub(super) async fn put_upload(
    st: St,
    ctx: Ctx,
    name: String,
    id: String,
    q: Vec<(String, String)>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    upload_of(&st, &name, &id)?;
    let d = digest_or_err(
        q1(&q, "digest")
            .ok_or_else(|| ApiError::new(Code::DigestInvalid, "digest parameter missing"))?,
    )?;
    if content_length(headers) != Some(0) {
        let cr = header(headers, "content-range").and_then(parse_content_range);
        append(&st, &id, headers, body, cr).await?;
    }
    finish(&st, &ctx, &name, &id, &d).await
}

pub(super) async fn upload_status(st: St, name: String, id: String) -> Result<Response, ApiError> {
    let size = upload_of(&st, &name, &id)?;
    Ok(empty(
        StatusCode::NO_CONTENT,
        &upload_headers(&name, &id, size),
    ))
}

pub(super) async fn cancel_upload(
    st: St,
    ctx: Ctx,
    name: String,
    id: String,
) -> Result<Response, ApiError> {
    let hs = session(&st, &name, &id)?;
    let _g = hs.lock().await;
    // Checked again: it may have expired while this request waited for it.
    upload_of(&st, &name, &id)?;
    st.drop_upload(&id);
    ctx.audit(&st, "delete", "upload", &name, Some(&id), None);
    Ok(empty(StatusCode::NO_CONTENT, &[]))
}

/// The hash state of upload `id` of repository `name`.
fn session(st: &AppState, name: &str, id: &str) -> Result<HashState, ApiError> {
    upload_of(st, name, id)?;
    st.sessions.hash_state(id).ok_or_else(|| upload_unknown(id))
}

/// Locks upload `id`'s hash state for this request (one request at a time per upload) and
/// reads the upload's size.
async fn lock_upload(
    st: &AppState,
    id: &str,
) -> Result<(OwnedMutexGuard<Option<(u64, Sha256)>>, u64), ApiError> {
    let hs = st
        .sessions
        .hash_state(id)
        .ok_or_else(|| upload_unknown(id))?;
    let guard = hs.lock_owned().await;
    let size = st.store.upload(id).ok_or_else(|| upload_unknown(id))?.1;
    Ok((guard, size))
}

enum WriteFail {
    TooLarge,
    Io(std::io::Error),
}

/// Appends a request body to an upload (one request at a time per upload), hashing as it goes.
/// Returns the upload's new size.
async fn append(
    st: &AppState,
    id: &str,
    headers: &HeaderMap,
    body: Body,
    content_range: Option<(u64, u64)>,
) -> Result<u64, ApiError> {
    let max = st.limits.max_upload_bytes;
    let (mut guard, size) = lock_upload(st, id).await?;
    if let Some((start, end)) = content_range {
        if start != size || end < start {
            return Err(ApiError::new(
                Code::RangeInvalid,
                format!("Content-Range starts at {start}, the upload has {size} bytes"),
            ));
        }
        if let Some(len) = content_length(headers) {
            if len != end - start + 1 {
                return Err(ApiError::new(
                    Code::SizeInvalid,
                    "Content-Range and Content-Length disagree",
                ));
            }
        }
    }
    if let Some(len) = content_length(headers) {
        if size.saturating_add(len) > max {
            return Err(ApiError::too_large(max));
        }
    }
    let _slot = st.upload_slots.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(Code::TooManyRequests, "too many uploads in progress")
            .header("retry-after", "5".to_string())
    })?;
    let hasher = match guard.take() {
        Some((n, h)) if n == size => h,
        _ if size == 0 => Sha256::new(),
        _ => {
            // Unknown state (after a restart): hash what is on disk.
            let p = st.store.upload_data(id);
            blocking(move || {
                let mut f = std::fs::File::open(&p)?;
                let mut h = Sha256::new();
                std::io::copy(&mut f, &mut h)?;
                Ok(h)
            })
            .await?
        }
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let path = st.store.upload_data(id);
    let writer = tokio::task::spawn_blocking(move || {
        let mut h = hasher;
        let mut total = size;
        let res = (|| {
            let mut w = UploadWriter::open(&path).map_err(WriteFail::Io)?;
            while let Some(b) = rx.blocking_recv() {
                if total + b.len() as u64 > max {
                    return Err(WriteFail::TooLarge);
                }
                w.write(&b).map_err(WriteFail::Io)?;
                h.update(&b);
                total += b.len() as u64;
            }
            w.finish().map_err(WriteFail::Io)
        })();
        (res, h, total)
    });
    let idle = Duration::from_secs(st.limits.idle_timeout_seconds.max(1));
    let mut stream = body.into_data_stream();
    let mut body_err: Option<String> = None;
    loop {
        match tokio::time::timeout(idle, stream.next()).await {
            Ok(Some(Ok(b))) => {
                if tx.send(b).await.is_err() {
                    break;
                }
            }
            Ok(Some(Err(e))) => {
                body_err = Some(format!("reading the request body: {e}"));
                break;
            }
            Ok(None) => break,
            Err(_) => {
                body_err = Some("request body stalled".into());
                break;
            }
        }
    }
    drop(tx);
    let (res, h, total) = writer.await.map_err(ApiError::internal)?;
    match res {
        Ok(()) => {
            *guard = Some((total, h));
            match body_err {
                None => Ok(total),
                Some(e) => Err(ApiError::new(Code::BlobUploadInvalid, e)),
            }
        }
        Err(WriteFail::TooLarge) => {
            st.drop_upload(id);
            drop(guard);
            Err(ApiError::too_large(max))
        }
        Err(WriteFail::Io(e)) => Err(ApiError::internal(e)),
    }
}

/// Verifies an upload against `want` and makes it a blob linked to `name`.
async fn finish(
    st: &AppState,
    ctx: &Ctx,
    name: &str,
    id: &str,
    want: &Digest,
) -> Result<Response, ApiError> {
    let (mut guard, size) = lock_upload(st, id).await?;
    let got = match guard.take() {
        Some((n, h)) if n == size => Digest::from_sha256_bytes(h.finalize().into()),
        _ => {
            let store = st.store.clone();
            let id2 = id.to_string();
            blocking(move || Ok(store.hash_upload(&id2)?.0)).await?
        }
    };
    if &got != want {
        st.drop_upload(id);
        drop(guard);
        return Err(ApiError::new(
            Code::DigestInvalid,
            "provided digest did not match uploaded content",
        )
        .detail(serde_json::json!({"expected": want.to_string(), "actual": got.to_string()})));
    }
    let (store, id2, d2, n2) = (
        st.store.clone(),
        id.to_string(),
        want.clone(),
        name.to_string(),
    );
    blocking(move || {
        store.commit_upload(&id2, &d2)?;
        store.update_meta(&n2, true, |meta| {
            let meta = meta.expect("created");
            Ok::<_, ApiError>(((), meta.blobs.insert(d2.to_string())))
        })
    })
    .await?;
    st.sessions.remove(id);
    drop(guard);
    let ds = want.to_string();
    ctx.audit(st, "push", "blob", name, None, Some(&ds));
    Ok(empty(
        StatusCode::CREATED,
        &[
            ("location", format!("/v2/{name}/blobs/{want}")),
            ("docker-content-digest", ds),
        ],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(parse_content_range("0-99"), Some((0, 99)));
        assert_eq!(parse_content_range("bytes 100-199/*"), Some((100, 199)));
    }
}
