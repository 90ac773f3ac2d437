//! Blob GET/HEAD (with `Range`) and DELETE of a repository's blob link.

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use berth_image::Digest;

use super::{blocking, empty, hv, remove_from_repo, Ctx, St};
use crate::error::{ApiError, Code};

fn blob_unknown(d: &Digest) -> ApiError {
    ApiError::new(Code::BlobUnknown, "blob unknown to registry")
        .detail(serde_json::json!({ "digest": d.to_string() }))
}

/// Parses `bytes=a-b`, `bytes=a-`, `bytes=-n` against `size`: `Ok(None)` for no range,
/// `Err(())` when unsatisfiable or malformed.
fn parse_range(h: &str, size: u64) -> Result<(u64, u64), ()> {
    let spec = h.trim().strip_prefix("bytes=").ok_or(())?;
    if spec.contains(',') {
        return Err(());
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| ())?;
        if n == 0 {
            return Err(());
        }
        (size.saturating_sub(n), size.checked_sub(1).ok_or(())?)
    } else {
        let s: u64 = a.parse().map_err(|_| ())?;
        let e: u64 = if b.is_empty() {
            size.checked_sub(1).ok_or(())?
        } else {
            b.parse::<u64>()
                .map_err(|_| ())?
                .min(size.saturating_sub(1))
        };
        (s, e)
    };
    if start >= size || start > end {
        return Err(());
    }
    Ok((start, end))
}

pub(super) async fn get_blob(
    st: St,
    name: String,
    d: Digest,
    with_body: bool,
    range: Option<String>,
) -> Result<Response, ApiError> {
    let (st2, d2) = (st.clone(), d.clone());
    let size = blocking(move || {
        let meta = st2
            .store
            .read_meta(&name)?
            .ok_or_else(|| blob_unknown(&d2))?;
        let ds = d2.to_string();
        if !meta.blobs.contains(&ds) && !meta.manifests.contains_key(&ds) {
            return Err(blob_unknown(&d2));
        }
        let size = st2.store.blob_size(&d2).ok_or_else(|| blob_unknown(&d2))?;
        if !with_body {
            // HEAD is how pushers ask whether to upload: keep the blob out of gc's reach
            // (checked again under the gc lock, so that gc cannot be deleting it right now).
            let _gc = st2.store.gc_lock(false)?;
            st2.store.blob_size(&d2).ok_or_else(|| blob_unknown(&d2))?;
            st2.store.touch(&d2);
        }
        Ok(size)
    })
    .await?;
    let mut status = StatusCode::OK;
    let (mut start, mut len) = (0u64, size);
    let mut extra = Vec::new();
    if let Some(r) = range.filter(|_| with_body) {
        match parse_range(&r, size) {
            Ok((s, e)) => {
                status = StatusCode::PARTIAL_CONTENT;
                start = s;
                len = e - s + 1;
                extra.push(("content-range", format!("bytes {s}-{e}/{size}")));
            }
            Err(()) => {
                return Err(
                    ApiError::new(Code::RangeInvalid, "requested range not satisfiable")
                        .header("content-range", format!("bytes */{size}")),
                )
            }
        }
    }
    let body = if with_body {
        use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
        let mut f = tokio::fs::File::open(st.store.blob_path(&d))
            .await
            .map_err(|_| blob_unknown(&d))?;
        if start > 0 {
            f.seek(std::io::SeekFrom::Start(start)).await?;
        }
        let stream = futures_util::stream::unfold((f, len), |(mut f, rem)| async move {
            if rem == 0 {
                return None;
            }
            let mut buf = vec![0u8; rem.min(512 * 1024) as usize];
            match f.read(&mut buf).await {
                Ok(0) => Some((
                    Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "blob shorter than expected",
                    )),
                    (f, 0),
                )),
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(Bytes::from(buf)), (f, rem - n as u64)))
                }
                Err(e) => Some((Err(e), (f, 0))),
            }
        });
        Body::from_stream(stream)
    } else {
        Body::empty()
    };
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        "content-type",
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert("content-length", hv(&len.to_string()));
    h.insert("docker-content-digest", hv(&d.to_string()));
    h.insert("etag", hv(&format!("\"{d}\"")));
    h.insert("accept-ranges", HeaderValue::from_static("bytes"));
    h.insert(
        "cache-control",
        HeaderValue::from_static("max-age=31536000"),
    );
    for (k, v) in extra {
        h.insert(k, hv(&v));
    }
    Ok(r)
}

pub(super) async fn delete_blob(
    st: St,
    ctx: Ctx,
    name: String,
    d: Digest,
) -> Result<Response, ApiError> {
    let d2 = d.clone();
    remove_from_repo(&st, &name, blob_unknown(&d), move |meta| {
        if meta.blobs.remove(&d2.to_string()) {
            Ok(())
        } else {
            Err(blob_unknown(&d2))
        }
    })
    .await?;
    let ds = d.to_string();
    ctx.audit(&st, "delete", "blob", &name, None, Some(&ds));
    Ok(empty(StatusCode::ACCEPTED, &[]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Ok((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100), Ok((90, 99)));
        assert_eq!(parse_range("bytes=-10", 100), Ok((90, 99)));
        assert_eq!(parse_range("bytes=95-200", 100), Ok((95, 99)));
        assert_eq!(parse_range("bytes=100-", 100), Err(()));
        assert_eq!(parse_range("bytes=5-1", 100), Err(()));
        assert_eq!(parse_range("bytes=0-1,3-4", 100), Err(()));
        assert_eq!(parse_range("items=0-1", 100), Err(()));
    }
}
