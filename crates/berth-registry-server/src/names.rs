//! Repository names, tags and digests as the distribution spec defines them.
//!
//! Names are checked byte by byte against the spec's grammar
//! `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`, at most 255
//! bytes, so no name can contain `..`, an empty component, a leading `/` or any character
//! that means something to the file system: a valid name is also a safe relative path.

use berth_image::Digest;

/// Longest accepted repository name (as distribution).
pub const MAX_NAME_LEN: usize = 255;

/// True when `name` is a valid repository name.
pub fn valid_name(name: &str) -> bool {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return false;
    }
    name.split('/')
        .all(berth_image::reference::is_path_component)
}

/// True when `tag` matches `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub fn valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    if b.is_empty() || b.len() > 128 {
        return false;
    }
    let first = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
    first(b[0])
        && b[1..]
            .iter()
            .all(|&x| x.is_ascii_alphanumeric() || x == b'_' || x == b'.' || x == b'-')
}

/// Why a digest string was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum DigestProblem {
    /// Not `algorithm:encoded` at all, or a bad encoding.
    Invalid,
    /// A well-formed digest of an algorithm this registry does not store (sha512, …).
    Unsupported,
}

/// Parses a digest; only sha256 is stored.
pub fn parse_digest(s: &str) -> Result<Digest, DigestProblem> {
    let Some((alg, enc)) = s.split_once(':') else {
        return Err(DigestProblem::Invalid);
    };
    let alg_ok = !alg.is_empty()
        && alg
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"+._-".contains(&c));
    let enc_ok = !enc.is_empty()
        && enc
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"=_-".contains(&c));
    if !alg_ok || !enc_ok {
        return Err(DigestProblem::Invalid);
    }
    if alg != "sha256" {
        return Err(DigestProblem::Unsupported);
    }
    Digest::parse(s).map_err(|_| DigestProblem::Invalid)
}

/// A manifest reference: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// A tag.
    Tag(String),
    /// A digest.
    Digest(Digest),
}

impl Reference {
    /// Parses a tag or a digest (anything with a `:` is taken as a digest).
    pub fn parse(s: &str) -> Option<Reference> {
        if s.contains(':') {
            parse_digest(s).ok().map(Reference::Digest)
        } else if valid_tag(s) {
            Some(Reference::Tag(s.to_string()))
        } else {
            None
        }
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reference::Tag(t) => f.write_str(t),
            Reference::Digest(d) => write!(f, "{d}"),
        }
    }
}

/// What a `/v2/…` path asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// `/v2/`
    Base,
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/<name>/tags/list`
    Tags(String),
    /// `/v2/<name>/manifests/<reference>`
    Manifest(String, String),
    /// `/v2/<name>/blobs/<digest>`
    Blob(String, String),
    /// `/v2/<name>/blobs/uploads/` (no id) or `/v2/<name>/blobs/uploads/<id>`
    Upload(String, Option<String>),
    /// `/v2/<name>/referrers/<digest>`
    Referrers(String, String),
}

/// Splits a `/v2/…` path (not percent-decoded: a `%` anywhere makes the name invalid later).
/// The name is returned unvalidated; `None` for paths that match no endpoint.
pub fn route(path: &str) -> Option<Route> {
    let rest = path.strip_prefix("/v2")?;
    if rest.is_empty() || rest == "/" {
        return Some(Route::Base);
    }
    let rest = rest.strip_prefix('/')?;
    if rest == "_catalog" {
        return Some(Route::Catalog);
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Some(Route::Tags(name.to_string()));
    }
    if let Some(i) = rest.rfind("/blobs/uploads") {
        let after = &rest[i + "/blobs/uploads".len()..];
        let id = match after {
            "" | "/" => Some(None),
            a => a
                .strip_prefix('/')
                .filter(|s| !s.is_empty() && !s.contains('/'))
                .map(|s| Some(s.to_string())),
        };
        if let Some(id) = id {
            return Some(Route::Upload(rest[..i].to_string(), id));
        }
    }
    // The rightmost marker wins: a name may itself contain "blobs" or "manifests" as a
    // component, the last segment never contains a '/'.
    let mut best: Option<(usize, &str)> = None;
    for m in ["/manifests/", "/blobs/", "/referrers/"] {
        if let Some(i) = rest.rfind(m) {
            if best.is_none_or(|(b, _)| i > b) {
                best = Some((i, m));
            }
        }
    }
    let (i, m) = best?;
    let name = rest[..i].to_string();
    let last = &rest[i + m.len()..];
    if last.is_empty() || last.contains('/') {
        return None;
    }
    let last = last.to_string();
    Some(match m {
        "/manifests/" => Route::Manifest(name, last),
        "/blobs/" => Route::Blob(name, last),
        _ => Route::Referrers(name, last),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in [
            "a",
            "library/busybox",
            "a.b/c_d/e__f/g-h/i---j",
            "0/1",
            "team/blobs/x",
        ] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "",
            "A",
            "a/",
            "/a",
            "a//b",
            "..",
            "a/../b",
            "a/./b",
            ".a",
            "a.",
            "a..b",
            "a___b",
            "a%2fb",
            "a b",
            "a\0b",
            "a:b",
            &"a".repeat(256),
        ] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn tags_and_refs() {
        assert!(valid_tag("latest"));
        assert!(valid_tag("_v1.2-rc"));
        assert!(!valid_tag(".x"));
        assert!(!valid_tag("-x"));
        assert!(!valid_tag(&"a".repeat(129)));
        assert!(matches!(Reference::parse("v1"), Some(Reference::Tag(_))));
        let d = format!("sha256:{}", "a".repeat(64));
        assert!(matches!(Reference::parse(&d), Some(Reference::Digest(_))));
        assert_eq!(Reference::parse("sha256:zz"), None);
        assert_eq!(
            parse_digest(&format!("sha512:{}", "a".repeat(128))),
            Err(DigestProblem::Unsupported)
        );
        assert_eq!(parse_digest("nocolon"), Err(DigestProblem::Invalid));
    }

    #[test]
    fn routes() {
        assert_eq!(route("/v2/"), Some(Route::Base));
        assert_eq!(route("/v2"), Some(Route::Base));
        assert_eq!(route("/v2/_catalog"), Some(Route::Catalog));
        assert_eq!(route("/v2/a/b/tags/list"), Some(Route::Tags("a/b".into())));
        assert_eq!(
            route("/v2/a/blobs/uploads/"),
            Some(Route::Upload("a".into(), None))
        );
        assert_eq!(
            route("/v2/a/b/blobs/uploads/xyz"),
            Some(Route::Upload("a/b".into(), Some("xyz".into())))
        );
        assert_eq!(
            route("/v2/blobs/manifests/blobs/x"),
            Some(Route::Blob("blobs/manifests".into(), "x".into()))
        );
        assert_eq!(
            route("/v2/a/manifests/v1"),
            Some(Route::Manifest("a".into(), "v1".into()))
        );
        assert_eq!(
            route("/v2/a/referrers/sha256:1"),
            Some(Route::Referrers("a".into(), "sha256:1".into()))
        );
        assert_eq!(route("/v2/a/manifests/"), None);
        assert_eq!(route("/v3/a"), None);
    }
}
