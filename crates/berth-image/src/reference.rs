//! Docker image references, parsed and normalised exactly like docker/distribution's
//! `reference` package (`ParseNormalizedNamed` + `TagNameOnly`).
//!
//! Grammar:
//! ```text
//! reference       := name [ ":" tag ] [ "@" digest ]
//! name            := [domain '/'] path-component ['/' path-component]*
//! domain          := host [':' port-number]
//! host            := domain-name | '[' ipv6 ']'
//! domain-name     := domain-component ['.' domain-component]*
//! domain-component:= /([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])/
//! path-component  := alphanumeric [separator alphanumeric]*
//! alphanumeric    := /[a-z0-9]+/
//! separator       := /[_.]|__|[-]+/
//! tag             := /[\w][\w.-]{0,127}/
//! ```
//! The name (domain and path) is at most 255 characters.

use std::fmt;

use crate::digest::{Digest, DigestError};

/// The default registry domain.
pub const DEFAULT_DOMAIN: &str = "docker.io";
/// The legacy name of the default registry, normalised to [`DEFAULT_DOMAIN`].
pub const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
/// The namespace of official images on the default registry.
pub const OFFICIAL_REPO_PREFIX: &str = "library/";
/// The tag used when a reference names neither a tag nor a digest.
pub const DEFAULT_TAG: &str = "latest";
/// The longest allowed name (domain and path).
pub const NAME_TOTAL_LENGTH_MAX: usize = 255;

/// Why a reference is invalid. Messages follow Docker's.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    /// The reference is empty.
    #[error("invalid reference format: repository name must have at least one component")]
    Empty,
    /// The reference does not match the grammar.
    #[error("invalid reference format")]
    InvalidFormat,
    /// The repository part of the name is not lowercase.
    #[error("invalid reference format: repository name ({0}) must be lowercase")]
    NameNotLowercase(String),
    /// The reference would be valid if it were lowercase.
    #[error("invalid reference format: repository name must be lowercase")]
    NameContainsUppercase,
    /// The name is longer than 255 characters.
    #[error("invalid reference format: repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters")]
    NameTooLong,
    /// A bare 64-hex string is an image ID, not a repository name.
    #[error("invalid repository name ({0}), cannot specify 64-byte hexadecimal strings")]
    HexIdentifier(String),
    /// The digest part is malformed or uses an unsupported algorithm.
    #[error("invalid reference format: {0}")]
    InvalidDigest(#[from] DigestError),
}

/// A normalised, fully qualified image reference.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Parses a reference the way `docker pull` does: normalised (`busybox` =
    /// `docker.io/library/busybox`), and given the tag `latest` when it has neither a tag
    /// nor a digest. A reference with both a tag and a digest keeps both.
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        let mut r = Self::parse_normalized(s)?;
        if r.tag.is_none() && r.digest.is_none() {
            r.tag = Some(DEFAULT_TAG.to_string());
        }
        Ok(r)
    }

    /// Parses and normalises a reference without adding a default tag
    /// (distribution's `ParseNormalizedNamed`).
    pub fn parse_normalized(s: &str) -> Result<Self, ReferenceError> {
        if s.len() == 64 && is_lower_hex(s) {
            return Err(ReferenceError::HexIdentifier(s.to_string()));
        }
        let (domain, remainder) = split_docker_domain(s);
        let remote_name = match remainder.find(':') {
            Some(i) => &remainder[..i],
            None => &remainder[..],
        };
        if remote_name.to_lowercase() != remote_name {
            return Err(ReferenceError::NameNotLowercase(remote_name.to_string()));
        }
        let full = format!("{domain}/{remainder}");
        let r = Self::parse_canonical(&full)?;
        Ok(r)
    }

    /// Parses a reference that must already be in canonical form
    /// (`domain/path[:tag][@digest]`, no normalisation) — distribution's `Parse`, requiring a
    /// domain.
    pub fn parse_canonical(s: &str) -> Result<Self, ReferenceError> {
        let parts = match match_reference(s) {
            Some(p) => p,
            None => {
                if s.is_empty() {
                    return Err(ReferenceError::Empty);
                }
                if match_reference(&s.to_lowercase()).is_some() {
                    return Err(ReferenceError::NameContainsUppercase);
                }
                return Err(ReferenceError::InvalidFormat);
            }
        };
        if parts.name.len() > NAME_TOTAL_LENGTH_MAX {
            return Err(ReferenceError::NameTooLong);
        }
        let digest = match parts.digest {
            Some(d) => Some(Digest::parse(d)?),
            None => None,
        };
        let (domain, path) = match parts.domain_split {
            Some(i) => (&parts.name[..i], &parts.name[i + 1..]),
            None => return Err(ReferenceError::InvalidFormat),
        };
        Ok(Self {
            domain: domain.to_string(),
            path: path.to_string(),
            tag: parts.tag.map(str::to_string),
            digest,
        })
    }

    /// The registry domain, e.g. `docker.io` or `localhost:5000`.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository path, e.g. `library/busybox`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// `domain/path`, e.g. `docker.io/library/busybox`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// The short form Docker shows: `busybox`, `user/app`, `localhost:5000/a/b`.
    pub fn familiar_name(&self) -> String {
        if self.domain == DEFAULT_DOMAIN {
            if let Some(rest) = self.path.strip_prefix(OFFICIAL_REPO_PREFIX) {
                if !rest.contains('/') {
                    return rest.to_string();
                }
            }
            return self.path.clone();
        }
        self.name()
    }

    /// The familiar name with tag and digest: `busybox:latest`.
    pub fn familiar_string(&self) -> String {
        let mut s = self.familiar_name();
        self.push_suffix(&mut s);
        s
    }

    /// A copy with the given tag (validated), keeping the digest.
    pub fn with_tag(&self, tag: &str) -> Result<Self, ReferenceError> {
        if !is_tag(tag) {
            return Err(ReferenceError::InvalidFormat);
        }
        let mut r = self.clone();
        r.tag = Some(tag.to_string());
        Ok(r)
    }

    /// A copy with the given digest, keeping the tag.
    pub fn with_digest(&self, digest: Digest) -> Self {
        let mut r = self.clone();
        r.digest = Some(digest);
        r
    }

    /// A copy with neither tag nor digest (just the repository).
    pub fn repository(&self) -> Self {
        Self {
            domain: self.domain.clone(),
            path: self.path.clone(),
            tag: None,
            digest: None,
        }
    }

    fn push_suffix(&self, s: &mut String) {
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(&d.to_string());
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = self.name();
        self.push_suffix(&mut s);
        f.write_str(&s)
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reference({self})")
    }
}

text_form!(
    Reference,
    ReferenceError,
    Reference::parse,
    Reference::parse_normalized
);

/// distribution's `splitDockerDomain`.
fn split_docker_domain(name: &str) -> (String, String) {
    let (mut domain, mut remainder) = match name.find('/') {
        Some(i) => {
            let first = &name[..i];
            if !first.contains(['.', ':']) && first != "localhost" && first.to_lowercase() == first
            {
                (DEFAULT_DOMAIN.to_string(), name.to_string())
            } else {
                (first.to_string(), name[i + 1..].to_string())
            }
        }
        None => (DEFAULT_DOMAIN.to_string(), name.to_string()),
    };
    if domain == LEGACY_DEFAULT_DOMAIN {
        domain = DEFAULT_DOMAIN.to_string();
    }
    if domain == DEFAULT_DOMAIN && !remainder.contains('/') {
        remainder = format!("{OFFICIAL_REPO_PREFIX}{remainder}");
    }
    (domain, remainder)
}

struct Parts<'a> {
    name: &'a str,
    /// Byte index of the '/' after the domain, when the first component is a domain.
    domain_split: Option<usize>,
    tag: Option<&'a str>,
    digest: Option<&'a str>,
}

/// Matches `ReferenceRegexp` (anchored). Returns `None` when it does not match.
fn match_reference(s: &str) -> Option<Parts<'_>> {
    let (name_tag, digest) = match s.split_once('@') {
        Some((a, b)) => {
            if !is_digest_format(b) {
                return None;
            }
            (a, Some(b))
        }
        None => (s, None),
    };
    let last_slash = name_tag.rfind('/');
    let (name, tag) = match name_tag.rfind(':') {
        Some(c) if last_slash.is_none_or(|sl| c > sl) => (&name_tag[..c], Some(&name_tag[c + 1..])),
        _ => (name_tag, None),
    };
    if let Some(t) = tag {
        if !is_tag(t) {
            return None;
        }
    }
    let comps: Vec<&str> = name.split('/').collect();
    let rest_ok = |from: usize| comps[from..].iter().all(|c| is_path_component(c));
    // A first component that could be a domain is taken as one when followed by more
    // components (as the regex's optional domain group would).
    let domain_split = if comps.len() >= 2 && is_domain(comps[0]) && rest_ok(1) {
        Some(comps[0].len())
    } else if rest_ok(0) {
        None
    } else {
        return None;
    };
    Some(Parts {
        name,
        domain_split,
        tag,
        digest,
    })
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A repository path component: `[a-z0-9]+ ( ([_.]|__|[-]+) [a-z0-9]+ )*` (the
/// distribution grammar; a valid component is also a safe file name).
pub fn is_path_component(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &s[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_domain_component(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
}

/// `host [':' port]` where host is a domain name or a bracketed IPv6 address.
fn is_domain(s: &str) -> bool {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some(end) = rest.find(']') else {
            return false;
        };
        let addr = &rest[..end];
        if addr.is_empty() || !addr.bytes().all(|c| c.is_ascii_hexdigit() || c == b':') {
            return false;
        }
        let after = &rest[end + 1..];
        if after.is_empty() {
            return true;
        }
        match after.strip_prefix(':') {
            Some(p) => ("", Some(p)),
            None => return false,
        }
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|c| c.is_ascii_digit()) {
            return false;
        }
    }
    if s.starts_with('[') {
        return true;
    }
    host.split('.').all(is_domain_component)
}

/// `[\w][\w.-]{0,127}`
fn is_tag(s: &str) -> bool {
    let b = s.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    !b.is_empty()
        && b.len() <= 128
        && word(b[0])
        && b.iter().all(|&c| word(c) || c == b'.' || c == b'-')
}

/// `[A-Za-z][A-Za-z0-9]*([-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}`
fn is_digest_format(s: &str) -> bool {
    let Some((alg, hex)) = s.split_once(':') else {
        return false;
    };
    if hex.len() < 32 || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
        return false;
    }
    alg.split(['-', '_', '+', '.']).all(|part| {
        let b = part.as_bytes();
        !b.is_empty() && b[0].is_ascii_alphabetic() && b.iter().all(|c| c.is_ascii_alphanumeric())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";

    #[test]
    fn valid_references() {
        let d = D;
        // input, domain, path, tag, has digest, familiar string
        type Case<'a> = (String, &'a str, &'a str, Option<&'a str>, bool, &'a str);
        let cases: Vec<Case> = vec![
            // input, domain, path, tag, has digest, familiar string
            (
                "busybox".into(),
                "docker.io",
                "library/busybox",
                Some("latest"),
                false,
                "busybox:latest",
            ),
            (
                "busybox:1.36".into(),
                "docker.io",
                "library/busybox",
                Some("1.36"),
                false,
                "busybox:1.36",
            ),
            (
                "library/debian".into(),
                "docker.io",
                "library/debian",
                Some("latest"),
                false,
                "debian:latest",
            ),
            (
                "docker/docker".into(),
                "docker.io",
                "docker/docker",
                Some("latest"),
                false,
                "docker/docker:latest",
            ),
            (
                "docker.io/debian".into(),
                "docker.io",
                "library/debian",
                Some("latest"),
                false,
                "debian:latest",
            ),
            (
                "docker.io/library/debian".into(),
                "docker.io",
                "library/debian",
                Some("latest"),
                false,
                "debian:latest",
            ),
            (
                "index.docker.io/debian".into(),
                "docker.io",
                "library/debian",
                Some("latest"),
                false,
                "debian:latest",
            ),
            (
                "index.docker.io/docker/docker".into(),
                "docker.io",
                "docker/docker",
                Some("latest"),
                false,
                "docker/docker:latest",
            ),
            (
                "docker.io/library/a/b".into(),
                "docker.io",
                "library/a/b",
                Some("latest"),
                false,
                "library/a/b:latest",
            ),
            (
                "host:5000/a/b:tag".into(),
                "host:5000",
                "a/b",
                Some("tag"),
                false,
                "host:5000/a/b:tag",
            ),
            (
                "127.0.0.1:5000/debian".into(),
                "127.0.0.1:5000",
                "debian",
                Some("latest"),
                false,
                "127.0.0.1:5000/debian:latest",
            ),
            (
                "192.168.0.1/debian".into(),
                "192.168.0.1",
                "debian",
                Some("latest"),
                false,
                "192.168.0.1/debian:latest",
            ),
            (
                "localhost/x".into(),
                "localhost",
                "x",
                Some("latest"),
                false,
                "localhost/x:latest",
            ),
            (
                "localhost:5000/x".into(),
                "localhost:5000",
                "x",
                Some("latest"),
                false,
                "localhost:5000/x:latest",
            ),
            // A bare `localhost:5000` is the repository `localhost` with tag `5000`, as in Docker.
            (
                "localhost:5000".into(),
                "docker.io",
                "library/localhost",
                Some("5000"),
                false,
                "localhost:5000",
            ),
            (
                "example.com/ns/app".into(),
                "example.com",
                "ns/app",
                Some("latest"),
                false,
                "example.com/ns/app:latest",
            ),
            (
                "[2001:db8::1]:5000/repo:v1".into(),
                "[2001:db8::1]:5000",
                "repo",
                Some("v1"),
                false,
                "[2001:db8::1]:5000/repo:v1",
            ),
            (
                "[::1]/repo".into(),
                "[::1]",
                "repo",
                Some("latest"),
                false,
                "[::1]/repo:latest",
            ),
            // The first component is a domain when it has uppercase letters (domains may).
            (
                "Foo.com/bar".into(),
                "Foo.com",
                "bar",
                Some("latest"),
                false,
                "Foo.com/bar:latest",
            ),
            (
                "Foo/bar".into(),
                "Foo",
                "bar",
                Some("latest"),
                false,
                "Foo/bar:latest",
            ),
            (
                format!("busybox@{d}"),
                "docker.io",
                "library/busybox",
                None,
                true,
                "busybox@sha256:ffff",
            ),
            (
                format!("busybox:1.0@{d}"),
                "docker.io",
                "library/busybox",
                Some("1.0"),
                true,
                "busybox:1.0@sha256:ffff",
            ),
            (
                format!("host:5000/a/b:t@{d}"),
                "host:5000",
                "a/b",
                Some("t"),
                true,
                "host:5000/a/b:t@sha256:ffff",
            ),
            (
                "a-b--c/d__e.f_g:T_a.g-1".into(),
                "docker.io",
                "a-b--c/d__e.f_g",
                Some("T_a.g-1"),
                false,
                "a-b--c/d__e.f_g:T_a.g-1",
            ),
            (
                "foo_bar.com:8080".into(),
                "docker.io",
                "library/foo_bar.com",
                Some("8080"),
                false,
                "foo_bar.com:8080",
            ),
            (
                "foo/foo_bar.com:8080".into(),
                "docker.io",
                "foo/foo_bar.com",
                Some("8080"),
                false,
                "foo/foo_bar.com:8080",
            ),
            (
                "docker.io/1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a".into(),
                "docker.io",
                "library/1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a",
                Some("latest"),
                false,
                "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a:latest",
            ),
            (
                "a/b/c/d/e/f".into(),
                "docker.io",
                "a/b/c/d/e/f",
                Some("latest"),
                false,
                "a/b/c/d/e/f:latest",
            ),
        ];
        for (input, domain, path, tag, has_digest, familiar) in cases {
            let r = Reference::parse(&input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(r.domain(), domain, "{input}");
            assert_eq!(r.path(), path, "{input}");
            assert_eq!(r.tag(), tag, "{input}");
            assert_eq!(r.digest().is_some(), has_digest, "{input}");
            let fam = r.familiar_string();
            let fam_short = fam.replace(&D[7..], "ffff");
            assert_eq!(fam_short, familiar, "{input}");
            // Display is the canonical form and reparses to the same reference.
            let again = Reference::parse(&r.to_string()).unwrap();
            assert_eq!(again, r, "{input}");
            assert!(r.to_string().starts_with(&format!("{domain}/{path}")));
        }
    }

    #[test]
    fn display_and_familiar() {
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        assert_eq!(r.familiar_name(), "busybox");
        assert_eq!(r.name(), "docker.io/library/busybox");
        let r = Reference::parse_normalized("busybox").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/busybox");
        assert_eq!(r.tag(), None);
        let r = Reference::parse(&format!("busybox@{D}")).unwrap();
        assert_eq!(r.to_string(), format!("docker.io/library/busybox@{D}"));
        assert_eq!(r.tag(), None, "a digest reference gets no default tag");
        let r = Reference::parse(&format!("busybox:1@{D}")).unwrap();
        assert_eq!(r.to_string(), format!("docker.io/library/busybox:1@{D}"));
        let r2 = r.repository().with_tag("2").unwrap();
        assert_eq!(r2.to_string(), "docker.io/library/busybox:2");
        assert!(r2.with_tag(".bad").is_err());
        let j = serde_json::to_string(&r2).unwrap();
        assert_eq!(serde_json::from_str::<Reference>(&j).unwrap(), r2);
    }

    #[test]
    fn invalid_references() {
        use ReferenceError::*;
        let hex64 = "a".repeat(64);
        let long_name = format!("{}/x", "a".repeat(250));
        let long_tag = format!("x:{}", "a".repeat(129));
        let cases: Vec<(String, Option<ReferenceError>)> = vec![
            ("".into(), None),
            (":justtag".into(), Some(InvalidFormat)),
            (format!("@{D}"), Some(InvalidFormat)),
            ("Uppercase".into(), Some(NameNotLowercase("library/Uppercase".into()))),
            ("BUSYBOX:latest".into(), Some(NameNotLowercase("library/BUSYBOX".into()))),
            ("docker.io/Uppercase".into(), Some(NameNotLowercase("library/Uppercase".into()))),
            ("host:5000/Upper/x".into(), Some(NameNotLowercase("Upper/x".into()))),
            ("foo/Bar".into(), Some(NameNotLowercase("foo/Bar".into()))),
            (hex64.clone(), Some(HexIdentifier(hex64.clone()))),
            (long_name, Some(NameTooLong)),
            (long_tag, Some(InvalidFormat)),
            ("-foo".into(), Some(InvalidFormat)),
            ("foo-".into(), Some(InvalidFormat)),
            ("foo___bar".into(), Some(InvalidFormat)),
            ("foo..bar".into(), Some(InvalidFormat)),
            ("foo._bar".into(), Some(InvalidFormat)),
            ("aa/asdf$$^/aa".into(), Some(InvalidFormat)),
            ("foo//bar".into(), Some(InvalidFormat)),
            ("foo/".into(), Some(InvalidFormat)),
            ("docker.io/".into(), Some(InvalidFormat)),
            ("/foo".into(), Some(InvalidFormat)),
            ("foo:".into(), Some(InvalidFormat)),
            ("foo:.tag".into(), Some(InvalidFormat)),
            ("foo:-tag".into(), Some(InvalidFormat)),
            ("foo:bar:baz".into(), Some(InvalidFormat)),
            ("foo@".into(), Some(InvalidFormat)),
            ("foo@sha256:abc".into(), Some(InvalidFormat)),
            ("foo@sha256".into(), Some(InvalidFormat)),
            (format!("foo@{D}@{D}"), Some(InvalidFormat)),
            ("foo bar".into(), Some(InvalidFormat)),
            ("host:port/x".into(), Some(InvalidFormat)),
            ("-host.com/x".into(), Some(InvalidFormat)),
            ("[zz::1]/x".into(), Some(InvalidFormat)),
            ("validname@invaliddigest:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff".into(), None),
            ("validname@sha256:fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff".into(), None),
            ("validname@sha256:FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF".into(), None),
            ("é".into(), Some(InvalidFormat)),
        ];
        for (input, want) in cases {
            let got = Reference::parse(&input);
            match (&got, &want) {
                (Err(e), Some(w)) => assert_eq!(e, w, "{input:?}"),
                (Err(e), None) => assert!(e.to_string().starts_with("invalid"), "{input:?}: {e}"),
                (Ok(r), _) => panic!("{input:?} parsed as {r}, expected an error"),
            }
        }
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            Reference::parse("Busybox").unwrap_err().to_string(),
            "invalid reference format: repository name (library/Busybox) must be lowercase"
        );
        assert_eq!(
            Reference::parse_canonical("docker.io/library/Busybox")
                .unwrap_err()
                .to_string(),
            "invalid reference format: repository name must be lowercase"
        );
        assert_eq!(
            Reference::parse("a b").unwrap_err().to_string(),
            "invalid reference format"
        );
        assert!(Reference::parse(&"a".repeat(64))
            .unwrap_err()
            .to_string()
            .contains("cannot specify 64-byte hexadecimal strings"));
        assert!(Reference::parse("x@md5:ffffffffffffffffffffffffffffffff")
            .unwrap_err()
            .to_string()
            .contains("unsupported digest algorithm"));
        // 255 is the limit for the whole name, including the domain.
        let ok = format!("h.io/{}", "a".repeat(250));
        assert_eq!(ok.len(), 255);
        assert!(Reference::parse(&ok).is_ok());
        assert_eq!(
            Reference::parse(&format!("{ok}a")).unwrap_err(),
            ReferenceError::NameTooLong
        );
        assert!(Reference::parse(&format!("x:{}", "a".repeat(128))).is_ok());
    }
}
