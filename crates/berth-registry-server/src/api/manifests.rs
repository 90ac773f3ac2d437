//! Manifests: GET/HEAD, PUT (validated against the linked blobs), DELETE.

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::Response;
use berth_image::Digest;

use super::listing::name_unknown;
use super::{blocking, empty, hv, remove_from_repo, Ctx, St};
use crate::error::{ApiError, Code};
use crate::manifest;
use crate::names::Reference;
use crate::storage::{now_secs, ManifestEntry};

fn manifest_unknown(r: &Reference) -> ApiError {
    ApiError::new(Code::ManifestUnknown, "manifest unknown")
        .detail(serde_json::json!({ "reference": r.to_string() }))
}

pub(super) async fn get_manifest(
    st: St,
    ctx: Ctx,
    name: String,
    reference: Reference,
    with_body: bool,
) -> Result<Response, ApiError> {
    let (st2, n2, r2) = (st.clone(), name.clone(), reference.clone());
    let (digest, entry, bytes) = blocking(move || {
        let meta = st2.store.read_meta(&n2)?.ok_or_else(|| name_unknown(&n2))?;
        let d = match &r2 {
            Reference::Tag(t) => meta
                .tags
                .get(t)
                .cloned()
                .ok_or_else(|| manifest_unknown(&r2))?,
            Reference::Digest(d) => d.to_string(),
        };
        let entry = meta
            .manifests
            .get(&d)
            .cloned()
            .ok_or_else(|| manifest_unknown(&r2))?;
        let digest = Digest::parse(&d).map_err(ApiError::internal)?;
        let bytes =
            std::fs::read(st2.store.blob_path(&digest)).map_err(|_| manifest_unknown(&r2))?;
        Ok((digest, entry, bytes))
    })
    .await?;
    if with_body {
        let ds = digest.to_string();
        let r = reference.to_string();
        ctx.audit(&st, "pull", "manifest", &name, Some(&r), Some(&ds));
    }
    let len = bytes.len();
    let mut r = Response::new(if with_body {
        Body::from(bytes)
    } else {
        Body::empty()
    });
    let h = r.headers_mut();
    h.insert("content-type", hv(&entry.media_type));
    h.insert("content-length", hv(&len.to_string()));
    h.insert("docker-content-digest", hv(&digest.to_string()));
    h.insert("etag", hv(&format!("\"{digest}\"")));
    Ok(r)
}

pub(super) async fn put_manifest(
    st: St,
    ctx: Ctx,
    name: String,
    reference: Reference,
    content_type: Option<String>,
    len: Option<u64>,
    body: Body,
) -> Result<Response, ApiError> {
    let limit = st.limits.max_manifest_bytes;
    if len.is_some_and(|l| l > limit as u64) {
        return Err(ApiError::too_large(limit as u64));
    }
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::too_large(limit as u64))?;
    let parsed = manifest::parse(&bytes, content_type.as_deref())?;
    let digest = Digest::of_bytes(&bytes);
    if let Reference::Digest(want) = &reference {
        if *want != digest {
            return Err(ApiError::new(
                Code::DigestInvalid,
                "manifest digest does not match the reference",
            )
            .detail(
                serde_json::json!({"expected": want.to_string(), "actual": digest.to_string()}),
            ));
        }
    }
    let (st2, n2, r2, p2, d2) = (
        st.clone(),
        name.clone(),
        reference.clone(),
        parsed.clone(),
        digest.clone(),
    );
    let size = bytes.len() as u64;
    blocking(move || {
        let store = &st2.store;
        let _gc = store.gc_lock(false)?;
        store.update_meta_locked(&n2, true, |meta| {
            let meta = meta.expect("created");
            for b in p2.blobs.iter().filter(|b| !b.external) {
                let ds = b.digest.to_string();
                let linked = meta.blobs.contains(&ds) || meta.manifests.contains_key(&ds);
                match store.blob_size(&b.digest) {
                    Some(s) if linked && s == b.size => store.touch(&b.digest),
                    Some(s) if linked => {
                        return Err(ApiError::new(
                            Code::ManifestInvalid,
                            format!("size of {ds} is {s}, the manifest says {}", b.size),
                        ))
                    }
                    _ => {
                        return Err(ApiError::new(
                            Code::ManifestBlobUnknown,
                            "blob unknown to registry",
                        )
                        .detail(serde_json::json!({ "digest": ds })))
                    }
                }
            }
            for c in &p2.children {
                let ds = c.digest.to_string();
                match meta.manifests.get(&ds) {
                    Some(e) if e.size == c.size => store.touch(&c.digest),
                    _ => {
                        return Err(ApiError::new(
                            Code::ManifestBlobUnknown,
                            "manifest references an unknown manifest",
                        )
                        .detail(serde_json::json!({ "digest": ds })))
                    }
                }
            }
            store.put_blob_bytes(&bytes)?;
            let artifact_type = p2
                .artifact_type
                .clone()
                .or_else(|| (!p2.is_index()).then(|| p2.blobs[0].media_type.clone()));
            meta.manifests.insert(
                d2.to_string(),
                ManifestEntry {
                    media_type: p2.media_type.clone(),
                    size,
                    blobs: p2.blobs.iter().map(|b| b.digest.to_string()).collect(),
                    children: p2.children.iter().map(|b| b.digest.to_string()).collect(),
                    subject: p2.subject.as_ref().map(|s| s.digest.to_string()),
                    artifact_type,
                    annotations: p2.annotations.clone(),
                    pushed: now_secs(),
                },
            );
            if let Reference::Tag(t) = &r2 {
                meta.tags.insert(t.clone(), d2.to_string());
            }
            Ok(((), true))
        })
    })
    .await?;
    let ds = digest.to_string();
    let r = reference.to_string();
    ctx.audit(&st, "push", "manifest", &name, Some(&r), Some(&ds));
    let mut hs = vec![
        ("location", format!("/v2/{name}/manifests/{digest}")),
        ("docker-content-digest", ds),
    ];
    if let Some(s) = &parsed.subject {
        hs.push(("oci-subject", s.digest.to_string()));
    }
    Ok(empty(StatusCode::CREATED, &hs))
}

pub(super) async fn delete_manifest(
    st: St,
    ctx: Ctx,
    name: String,
    reference: Reference,
) -> Result<Response, ApiError> {
    let r2 = reference.clone();
    remove_from_repo(&st, &name, name_unknown(&name), move |meta| {
        match &r2 {
            Reference::Tag(t) => {
                meta.tags.remove(t).ok_or_else(|| manifest_unknown(&r2))?;
            }
            Reference::Digest(d) => {
                let ds = d.to_string();
                meta.manifests
                    .remove(&ds)
                    .ok_or_else(|| manifest_unknown(&r2))?;
                meta.tags.retain(|_, v| *v != ds);
            }
        }
        Ok(())
    })
    .await?;
    let (kind, digest) = match &reference {
        Reference::Tag(_) => ("tag", None),
        Reference::Digest(d) => ("manifest", Some(d.to_string())),
    };
    let r = reference.to_string();
    ctx.audit(&st, "delete", kind, &name, Some(&r), digest.as_deref());
    Ok(empty(StatusCode::ACCEPTED, &[]))
}
