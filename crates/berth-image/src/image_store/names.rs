//! Names: resolving a name, reference or ID to an image; tags added and removed under
//! Docker's rules.

use super::*;

impl ImageStore {
    /// Resolves a name or ID the way Docker does: a full or familiar reference (`latest`
    /// added), `name@digest`, a `sha256:` ID, or a unique ID prefix (with or without
    /// `sha256:`).
    pub fn resolve(&self, name_or_id: &str) -> Result<Resolved> {
        let idx = self.read_index()?;
        resolve_in(&idx, name_or_id)
    }

    /// Every tag of the repository `repository` names (its tag and digest ignored), with the
    /// image each points at, in the order of the references' strings (dockerd's reference
    /// store order: `docker push --all-tags` and `docker save NAME` go through them so).
    pub fn repository_tags(&self, repository: &Reference) -> Result<Vec<(Reference, ImageId)>> {
        let mut tags: Vec<(Reference, ImageId)> = Vec::new();
        for rec in self.read_index()?.images.into_values() {
            for t in rec.references() {
                if t.name() == repository.name() && t.tag().is_some() && t.digest().is_none() {
                    tags.push((t, rec.id.clone()));
                }
            }
        }
        tags.sort_by_cached_key(|(t, _)| t.to_string());
        Ok(tags)
    }

    /// Points `target` at the image `source` names (moving it from another image).
    pub fn tag(&self, source: &str, target: &Reference) -> Result<Registered> {
        if target.digest().is_some() {
            return Err(ImageStoreError::InvalidArgument(
                "refusing to create a tag with a digest reference".into(),
            ));
        }
        // `sha256:abc` would read as an image ID (dockerd's postImagesTag).
        if target.familiar_name() == "sha256" {
            return Err(ImageStoreError::InvalidArgument(
                "refusing to create an ambiguous tag using digest algorithm as name".into(),
            ));
        }
        let target = if target.tag().is_none() {
            target.with_tag(crate::reference::DEFAULT_TAG)?
        } else {
            target.clone()
        };
        let _g = self.lock()?;
        let mut idx = self.read_index()?;
        let id = resolve_in(&idx, source)?.image.id;
        let moved = set_tags(&mut idx, &id, std::slice::from_ref(&target), &[], true);
        self.write_index(&idx)?;
        Ok(Registered {
            id,
            new: false,
            moved_tags: moved,
        })
    }

    /// Records `parent` as the image's parent (dockerd's `setParentID` of a load): refused
    /// unless the parent's history is the image's but for one last entry (`checkValidParent`;
    /// creation times compared as times).
    pub fn set_parent(&self, id: &ImageId, parent: &ImageId) -> Result<()> {
        let (img, par) = (self.config(id)?, self.config(parent)?);
        let valid = (img.history.is_empty() && par.history.is_empty())
            || (img.history.len() == par.history.len() + 1
                && par.history.iter().zip(&img.history).all(|(p, c)| {
                    let t = |h: &crate::manifest::History| {
                        h.created.as_deref().map(timeutil::parse_rfc3339)
                    };
                    let (mut p, mut c) = (p.clone(), c.clone());
                    let same_time = t(&p) == t(&c);
                    p.created = None;
                    c.created = None;
                    same_time && p == c
                }));
        if !valid {
            return Err(ImageStoreError::InvalidArgument(format!(
                "image {parent} is not a valid parent for {id}"
            )));
        }
        let _g = self.lock()?;
        let mut idx = self.read_index()?;
        let rec = idx
            .images
            .get_mut(id.hex())
            .ok_or_else(|| ImageStoreError::NotFound(id.to_string()))?;
        rec.parent = Some(parent.clone());
        self.write_index(&idx)
    }

    /// Removes one tag or digest reference; returns the image it pointed at.
    pub fn untag(&self, r: &Reference) -> Result<ImageId> {
        let _g = self.lock()?;
        let mut idx = self.read_index()?;
        let id = untag_in(&mut idx, r)?;
        self.write_index(&idx)?;
        Ok(id)
    }
}

pub(super) fn resolve_in(idx: &Index, s: &str) -> Result<Resolved> {
    let by_id = |hex: &str| {
        idx.images.get(hex).map(|r| Resolved {
            image: r.clone(),
            reference: None,
        })
    };
    if let Some(hex) = s.strip_prefix("sha256:") {
        if hex.len() == 64 {
            return by_id(hex).ok_or_else(|| ImageStoreError::NotFound(s.to_string()));
        }
    }
    let mut not_found = s.to_string();
    match Reference::parse_normalized(s) {
        Ok(r) => {
            let r = if r.tag().is_none() && r.digest().is_none() {
                r.with_tag(crate::reference::DEFAULT_TAG)?
            } else {
                r
            };
            if let Some(img) = find_by_reference(idx, &r) {
                return Ok(Resolved {
                    image: img.clone(),
                    reference: Some(r),
                });
            }
            not_found = r.familiar_string();
        }
        Err(e) => {
            if !is_id_prefix(s) {
                return Err(e.into());
            }
        }
    }
    if is_id_prefix(s) {
        let prefix = s.strip_prefix("sha256:").unwrap_or(s);
        let mut hits = idx
            .images
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix));
        if let Some((_, first)) = hits.next() {
            if hits.next().is_some() {
                return Err(ImageStoreError::Ambiguous(prefix.to_string()));
            }
            return Ok(Resolved {
                image: first.clone(),
                reference: None,
            });
        }
    }
    Err(ImageStoreError::NotFound(not_found))
}

pub(super) fn is_id_prefix(s: &str) -> bool {
    let p = s.strip_prefix("sha256:").unwrap_or(s);
    !p.is_empty() && p.len() <= 64 && p.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

pub(super) fn find_by_reference<'a>(idx: &'a Index, r: &Reference) -> Option<&'a ImageRecord> {
    let full = r.to_string();
    if let Some(d) = r.digest() {
        // name@digest (a tag alongside is ignored, as Docker does).
        let canon = r.repository().with_digest(d.clone()).to_string();
        if let Some(i) = idx
            .images
            .values()
            .find(|i| i.repo_digests.contains(&canon))
        {
            return Some(i);
        }
        // A manifest digest we know for an image of that repository.
        return idx.images.values().find(|i| {
            i.manifests.contains(d) && i.references().iter().any(|x| x.name() == r.name())
        });
    }
    idx.images.values().find(|i| i.repo_tags.contains(&full))
}

/// Points tags and digest references at `id`, moving them from other images; returns the
/// moved tags with their previous images. `touch`: a tag sets the image's `LastTagTime`.
pub(super) fn set_tags(
    idx: &mut Index,
    id: &ImageId,
    tags: &[Reference],
    digests: &[Reference],
    touch: bool,
) -> Vec<(Reference, ImageId)> {
    let mut moved = Vec::new();
    let now = timeutil::now_rfc3339_nano();
    for (r, is_tag) in tags
        .iter()
        .map(|t| (t, true))
        .chain(digests.iter().map(|d| (d, false)))
    {
        let s = r.to_string();
        for other in idx.images.values_mut() {
            if &other.id == id {
                continue;
            }
            let list = other.names_mut(is_tag);
            if let Some(pos) = list.iter().position(|x| *x == s) {
                list.remove(pos);
                if is_tag {
                    moved.push((r.clone(), other.id.clone()));
                }
            }
        }
        if let Some(rec) = idx.images.get_mut(id.hex()) {
            let list = rec.names_mut(is_tag);
            if !list.contains(&s) {
                list.push(s);
                list.sort();
            }
            if is_tag && touch {
                rec.last_tag_time = Some(now.clone());
            }
        }
    }
    moved
}

pub(super) fn untag_in(idx: &mut Index, r: &Reference) -> Result<ImageId> {
    let r = if r.tag().is_none() && r.digest().is_none() {
        r.with_tag(crate::reference::DEFAULT_TAG)?
    } else {
        r.clone()
    };
    let (s, is_digest) = match r.digest() {
        Some(d) => (r.repository().with_digest(d.clone()).to_string(), true),
        None => (r.to_string(), false),
    };
    for rec in idx.images.values_mut() {
        let list = rec.names_mut(!is_digest);
        if let Some(pos) = list.iter().position(|x| *x == s) {
            list.remove(pos);
            return Ok(rec.id.clone());
        }
    }
    Err(ImageStoreError::NotFound(r.familiar_string()))
}
