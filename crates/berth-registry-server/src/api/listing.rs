//! Catalog, tag lists and referrers, with `n`/`last` pagination.

use axum::http::StatusCode;
use axum::response::Response;
use berth_image::Digest;

use super::{blocking, challenge, json_response, q1, with_headers, Ctx, St};
use crate::audit;
use crate::auth::{Action, Identity};
use crate::error::{ApiError, Code};

/// A page of names and, when more follow, the `n` and `last` of the next page.
type Page = (Vec<String>, Option<(usize, String)>);

fn paginate(all: Vec<String>, q: &[(String, String)]) -> Result<Page, ApiError> {
    let n = match q1(q, "n") {
        None | Some("") => None,
        Some(s) => Some(s.parse::<usize>().map_err(|_| {
            ApiError::new(Code::PaginationNumberInvalid, "invalid number of results")
                .detail(serde_json::json!({ "n": s }))
        })?),
    };
    let last = q1(q, "last").unwrap_or("");
    let rest: Vec<String> = all
        .into_iter()
        .filter(|t| last.is_empty() || t.as_str() > last)
        .collect();
    match n {
        Some(n) if rest.len() > n => {
            let page: Vec<String> = rest.into_iter().take(n).collect();
            let next = page.last().cloned().map(|l| (n, l));
            Ok((page, next))
        }
        _ => Ok((rest, None)),
    }
}

fn link(path: &str, next: Option<(usize, String)>) -> Vec<(&'static str, String)> {
    match next {
        Some((n, last)) => {
            let enc: String = form_urlencoded::byte_serialize(last.as_bytes()).collect();
            vec![("link", format!("<{path}?n={n}&last={enc}>; rel=\"next\""))]
        }
        None => Vec::new(),
    }
}

pub(super) async fn catalog(
    st: St,
    ctx: Ctx,
    q: Vec<(String, String)>,
) -> Result<Response, ApiError> {
    if st.auth.enabled() && ctx.id == Identity::Anonymous {
        const SCOPE: &str = "registry:catalog:*";
        st.audit.log(&audit::Entry {
            action: "deny",
            kind: "catalog",
            status: Some(401),
            scope: Some(SCOPE),
            ..ctx.entry()
        });
        return Err(
            ApiError::new(Code::Unauthorized, "authentication required").header(
                "www-authenticate",
                challenge(&st, &ctx.host, Some(SCOPE), None),
            ),
        );
    }
    let st2 = st.clone();
    let repos = blocking(move || Ok(st2.store.list_repos()?)).await?;
    let user = ctx.id.user().map(str::to_string);
    let visible: Vec<String> = repos
        .into_iter()
        .filter(|r| match &ctx.id {
            Identity::Token { .. } => st.auth.allowed(user.as_deref(), r).contains(&Action::Pull),
            id => st.auth.permits(id, r, Action::Pull),
        })
        .collect();
    let (page, next) = paginate(visible, &q)?;
    let r = json_response(
        StatusCode::OK,
        &serde_json::json!({ "repositories": page }),
        "application/json",
    );
    Ok(with_headers(r, link("/v2/_catalog", next)))
}

pub(super) async fn tags(
    st: St,
    name: String,
    q: Vec<(String, String)>,
) -> Result<Response, ApiError> {
    let n2 = name.clone();
    let meta = blocking(move || Ok(st.store.read_meta(&n2)?)).await?;
    let Some(meta) = meta.filter(|m| !m.tags.is_empty() || !m.manifests.is_empty()) else {
        return Err(name_unknown(&name));
    };
    let (page, next) = paginate(meta.tags.keys().cloned().collect(), &q)?;
    let r = json_response(
        StatusCode::OK,
        &serde_json::json!({ "name": name, "tags": page }),
        "application/json",
    );
    Ok(with_headers(
        r,
        link(&format!("/v2/{name}/tags/list"), next),
    ))
}

pub(super) fn name_unknown(name: &str) -> ApiError {
    ApiError::new(Code::NameUnknown, "repository name not known to registry")
        .detail(serde_json::json!({ "name": name }))
}

pub(super) async fn referrers(
    st: St,
    name: String,
    subject: Digest,
    q: Vec<(String, String)>,
) -> Result<Response, ApiError> {
    let meta = blocking(move || Ok(st.store.read_meta(&name)?)).await?;
    let filter = q1(&q, "artifactType").map(str::to_string);
    let mut list = Vec::new();
    if let Some(meta) = meta {
        let s = subject.to_string();
        for (d, e) in &meta.manifests {
            if e.subject.as_deref() != Some(s.as_str()) {
                continue;
            }
            if let Some(f) = &filter {
                if e.artifact_type.as_deref() != Some(f.as_str()) {
                    continue;
                }
            }
            let mut desc =
                serde_json::json!({"mediaType": e.media_type, "digest": d, "size": e.size});
            if let Some(a) = &e.artifact_type {
                desc["artifactType"] = a.clone().into();
            }
            if let Some(a) = &e.annotations {
                desc["annotations"] = serde_json::to_value(a).unwrap_or_default();
            }
            list.push(desc);
        }
    }
    let r = json_response(
        StatusCode::OK,
        &serde_json::json!({"schemaVersion": 2, "mediaType": berth_image::manifest::media_types::OCI_INDEX, "manifests": list}),
        berth_image::manifest::media_types::OCI_INDEX,
    );
    Ok(if filter.is_some() {
        with_headers(r, vec![("oci-filters-applied", "artifactType".to_string())])
    } else {
        r
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages() {
        let all: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        let q = vec![("n".to_string(), "2".to_string())];
        let (p, next) = paginate(all.clone(), &q).unwrap();
        assert_eq!(p, ["a", "b"]);
        assert_eq!(next, Some((2, "b".to_string())));
        let q = vec![
            ("n".to_string(), "2".to_string()),
            ("last".to_string(), "b".to_string()),
        ];
        let (p, next) = paginate(all.clone(), &q).unwrap();
        assert_eq!(p, ["c", "d"]);
        assert_eq!(next, None);
        let (p, _) = paginate(all.clone(), &[("n".into(), "0".into())]).unwrap();
        assert!(p.is_empty());
        assert!(paginate(all, &[("n".into(), "x".into())]).is_err());
    }
}
