//! Listing a repository's tags (`GET /v2/<name>/tags/list`), following the `Link: <…>;
//! rel="next"` pagination of the distribution API. Used by `pull --all-tags`.

use berth_image::Reference;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use url::Url;

use crate::client::{header_str, ApiFailure, Client, Endpoint, Inner};
use crate::error::{RegistryError, Result};

/// Tags asked for per page (registries may return fewer, and say where the next page is).
pub const DEFAULT_PAGE_SIZE: usize = 1000;

/// Pages followed at most (a registry that keeps sending `next` links is broken).
const MAX_PAGES: usize = 10_000;

#[derive(Deserialize)]
struct TagList {
    #[serde(default)]
    tags: Option<Vec<String>>,
}

impl Client {
    /// All tags of `reference`'s repository, in the registry's order (the tag or digest of
    /// `reference`, if any, is ignored). Mirrors are tried first, as for a pull.
    pub fn list_tags(&self, reference: &Reference) -> Result<Vec<String>> {
        self.list_tags_paged(reference, DEFAULT_PAGE_SIZE)
    }

    /// Like [`Client::list_tags`], asking for `page_size` tags per request.
    pub fn list_tags_paged(&self, reference: &Reference, page_size: usize) -> Result<Vec<String>> {
        let inner = &*self.inner;
        self.rt.block_on(
            inner.on_pull_endpoints(reference.domain(), "listing tags", async |ep| {
                inner.tags(ep, reference, page_size.max(1)).await
            }),
        )
    }
}

impl Inner {
    async fn tags(&self, ep: &Endpoint, reference: &Reference, n: usize) -> Result<Vec<String>> {
        let mut url = ep.url(&format!("/v2/{}/tags/list?n={n}", reference.path()));
        let mut out: Vec<String> = Vec::new();
        for _ in 0..MAX_PAGES {
            let resp = self.get_pull(ep, reference.path(), &url, &|r| r).await?;
            if !resp.status().is_success() {
                let f = ApiFailure::read(&Method::GET, resp).await;
                return Err(match f.status {
                    StatusCode::NOT_FOUND => RegistryError::NameUnknown {
                        repository: reference.name(),
                        message: f.message,
                    },
                    _ => f.into_error(&ep.host),
                });
            }
            let next = header_str(resp.headers(), "link").and_then(|l| next_link(&l));
            let body = resp.bytes().await.map_err(|e| RegistryError::Http {
                registry: ep.host.clone(),
                context: format!("listing the tags of {}", reference.name()),
                source: e,
            })?;
            let page: TagList =
                serde_json::from_slice(&body).map_err(|e| RegistryError::Protocol {
                    registry: ep.host.clone(),
                    message: format!("bad tag list for {}: {e}", reference.name()),
                })?;
            for t in page.tags.unwrap_or_default() {
                if !out.contains(&t) {
                    out.push(t);
                }
            }
            let Some(next) = next else {
                return Ok(out);
            };
            let joined = Url::parse(&url)
                .and_then(|base| base.join(&next))
                .map_err(|e| RegistryError::Protocol {
                    registry: ep.host.clone(),
                    message: format!("bad Link {next:?} in a tag list: {e}"),
                })?;
            if joined.origin() != ep.base.origin() {
                return Err(RegistryError::Protocol {
                    registry: ep.host.clone(),
                    message: format!("tag list Link points to another host: {joined}"),
                });
            }
            url = joined.to_string();
        }
        Err(RegistryError::Protocol {
            registry: ep.host.clone(),
            message: format!("more than {MAX_PAGES} pages of tags"),
        })
    }
}

/// The target of the `rel="next"` entry of a `Link` header.
fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (target, params) = part.trim().split_once(';')?;
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        params
            .split(';')
            .filter_map(|p| p.trim().split_once('='))
            .any(|(k, v)| k.trim() == "rel" && v.trim().trim_matches('"') == "next")
            .then(|| target.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::next_link;

    #[test]
    fn link_header() {
        assert_eq!(
            next_link(r#"</v2/a/tags/list?last=b&n=2>; rel="next""#).as_deref(),
            Some("/v2/a/tags/list?last=b&n=2")
        );
        assert_eq!(
            next_link(r#"<https://x/prev>; rel="prev", <https://x/n>; rel=next"#).as_deref(),
            Some("https://x/n")
        );
        assert_eq!(next_link(r#"</a>; rel="prev""#), None);
        assert_eq!(next_link("garbage"), None);
    }
}
