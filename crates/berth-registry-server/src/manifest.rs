//! Validation of pushed manifests: OCI image manifests and indexes, Docker schema 2 manifests
//! and manifest lists.

use std::collections::BTreeMap;

use berth_image::manifest::media_types as mt;
use berth_image::Digest;
use serde_json::Value;

use crate::error::{ApiError, Code};
use crate::names::parse_digest;

/// The manifest media types this registry stores.
pub const SUPPORTED: [&str; 4] = [
    mt::OCI_MANIFEST,
    mt::OCI_INDEX,
    mt::DOCKER_MANIFEST,
    mt::DOCKER_MANIFEST_LIST,
];

/// A descriptor in a manifest.
#[derive(Debug, Clone)]
pub struct Desc {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    /// External (`urls`) layers need not be stored here.
    pub external: bool,
    pub platform: Option<Value>,
}

/// What a valid manifest refers to.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub media_type: String,
    /// Config and layers (image manifests).
    pub blobs: Vec<Desc>,
    /// Child manifests (indexes).
    pub children: Vec<Desc>,
    pub subject: Option<Desc>,
    pub artifact_type: Option<String>,
    pub annotations: Option<BTreeMap<String, String>>,
}

impl Parsed {
    pub fn is_index(&self) -> bool {
        self.media_type == mt::OCI_INDEX || self.media_type == mt::DOCKER_MANIFEST_LIST
    }
}

fn invalid(msg: impl Into<String>) -> ApiError {
    ApiError::new(Code::ManifestInvalid, msg)
}

fn desc(v: &Value, what: &str) -> Result<Desc, ApiError> {
    let o = v
        .as_object()
        .ok_or_else(|| invalid(format!("{what}: not an object")))?;
    let media_type = o
        .get("mediaType")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("{what}: mediaType missing")))?
        .to_string();
    let d = o
        .get("digest")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("{what}: digest missing")))?;
    let digest = parse_digest(d).map_err(|_| invalid(format!("{what}: bad digest {d:?}")))?;
    let size = o
        .get("size")
        .and_then(Value::as_u64)
        .ok_or_else(|| invalid(format!("{what}: size missing or negative")))?;
    let external = o
        .get("urls")
        .and_then(Value::as_array)
        .is_some_and(|u| !u.is_empty());
    Ok(Desc {
        media_type,
        digest,
        size,
        external,
        platform: o.get("platform").cloned(),
    })
}

/// Checks a manifest's JSON against its media type (`content_type` from the request, with
/// parameters; absent or `application/json`: the document's `mediaType`, else inferred).
pub fn parse(body: &[u8], content_type: Option<&str>) -> Result<Parsed, ApiError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| invalid(format!("not valid JSON: {e}")))?;
    let o = v
        .as_object()
        .ok_or_else(|| invalid("manifest is not a JSON object"))?;
    if o.get("schemaVersion").and_then(Value::as_u64) != Some(2) {
        return Err(invalid(
            "schemaVersion must be 2 (schema 1 is not supported)",
        ));
    }
    let doc_mt = match o.get("mediaType") {
        None => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err(invalid("mediaType is not a string")),
    };
    let ct = content_type
        .map(|c| c.split(';').next().unwrap_or("").trim())
        .filter(|c| !c.is_empty() && *c != "application/json");
    let media_type = match (ct, doc_mt) {
        (Some(c), Some(d)) if c != d => {
            return Err(invalid(format!(
                "Content-Type {c} does not match the manifest's mediaType {d}"
            )))
        }
        (Some(c), _) => c.to_string(),
        (None, Some(d)) => d.to_string(),
        (None, None) if o.contains_key("manifests") => mt::OCI_INDEX.to_string(),
        (None, None) => mt::OCI_MANIFEST.to_string(),
    };
    if !SUPPORTED.contains(&media_type.as_str()) {
        return Err(invalid(format!(
            "unsupported manifest media type {media_type}"
        )));
    }
    if media_type.starts_with("application/vnd.docker.") && doc_mt.is_none() {
        return Err(invalid(
            "Docker schema 2 documents must carry their mediaType",
        ));
    }
    let is_index = media_type == mt::OCI_INDEX || media_type == mt::DOCKER_MANIFEST_LIST;
    let mut blobs = Vec::new();
    let mut children = Vec::new();
    if is_index {
        if o.contains_key("config") || o.contains_key("layers") {
            return Err(invalid("an index has no config or layers"));
        }
        let ms = o
            .get("manifests")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid("manifests missing"))?;
        for (i, m) in ms.iter().enumerate() {
            children.push(desc(m, &format!("manifests[{i}]"))?);
        }
    } else {
        if o.contains_key("manifests") {
            return Err(invalid("an image manifest has no manifests list"));
        }
        let c = o.get("config").ok_or_else(|| invalid("config missing"))?;
        blobs.push(desc(c, "config")?);
        let ls = match o.get("layers") {
            Some(Value::Array(a)) => a.as_slice(),
            // OCI artifacts may have no layers; Docker's schema 2 always has the key.
            None if media_type == mt::OCI_MANIFEST => &[],
            _ => return Err(invalid("layers missing")),
        };
        for (i, l) in ls.iter().enumerate() {
            blobs.push(desc(l, &format!("layers[{i}]"))?);
        }
    }
    let subject = match o.get("subject") {
        None | Some(Value::Null) => None,
        Some(s) => Some(desc(s, "subject")?),
    };
    let artifact_type = match o.get("artifactType") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(invalid("artifactType is not a string")),
    };
    let annotations = match o.get("annotations") {
        None | Some(Value::Null) => None,
        Some(a) => Some(
            serde_json::from_value::<BTreeMap<String, String>>(a.clone())
                .map_err(|_| invalid("annotations must map strings to strings"))?,
        ),
    };
    Ok(Parsed {
        media_type,
        blobs,
        children,
        subject,
        artifact_type,
        annotations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn image_and_index() {
        let m = serde_json::json!({"schemaVersion":2,"mediaType":mt::OCI_MANIFEST,
            "config":{"mediaType":mt::OCI_CONFIG,"digest":d('a'),"size":2},
            "layers":[{"mediaType":mt::OCI_LAYER_GZIP,"digest":d('b'),"size":3}],
            "subject":{"mediaType":mt::OCI_MANIFEST,"digest":d('c'),"size":4}});
        let p = parse(&serde_json::to_vec(&m).unwrap(), Some(mt::OCI_MANIFEST)).unwrap();
        assert_eq!(p.blobs.len(), 2);
        assert!(p.subject.is_some());
        let e = parse(&serde_json::to_vec(&m).unwrap(), Some(mt::DOCKER_MANIFEST)).unwrap_err();
        assert_eq!(e.code, Code::ManifestInvalid);
        let i = serde_json::json!({"schemaVersion":2,
            "manifests":[{"mediaType":mt::OCI_MANIFEST,"digest":d('a'),"size":2}]});
        let p = parse(&serde_json::to_vec(&i).unwrap(), None).unwrap();
        assert!(p.is_index());
        for bad in [
            &b"{"[..],
            b"[]",
            br#"{"schemaVersion":1}"#,
            br#"{"schemaVersion":2,"mediaType":"text/plain"}"#,
            br#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:zz","size":1}}"#,
            br#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:aa","size":-1}}"#,
        ] {
            assert!(
                parse(bad, None).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
