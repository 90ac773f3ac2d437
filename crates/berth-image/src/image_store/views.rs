//! Docker-shaped views of the store: the image list with its filters, history, inspect and
//! disk usage.

use super::*;

impl ImageStore {
    /// `id` and every image descending from it through `Parent` (moby's image `Children`,
    /// recursively): what `docker ps --filter ancestor=` matches.
    pub fn with_descendants(&self, id: &ImageId) -> Result<Vec<ImageId>> {
        let idx = self.read_index()?;
        let mut out = vec![id.clone()];
        let mut i = 0;
        while i < out.len() {
            let children = idx
                .images
                .values()
                .filter(|r| r.parent.as_ref() == Some(&out[i]) && !out.contains(&r.id));
            let children: Vec<ImageId> = children.map(|r| r.id.clone()).collect();
            out.extend(children);
            i += 1;
        }
        Ok(out)
    }

    /// Docker's image list with its filters and `-a` rule.
    pub fn list_summaries(&self, opts: &ListOptions) -> Result<Vec<ImageSummary>> {
        let idx = self.read_index()?;
        let mut dangling: Option<bool> = None;
        let mut patterns = Vec::new();
        let mut labels = Vec::new();
        // Bounds in nanoseconds since the epoch: the oldest `before` (and `until`), the newest
        // `since` (dockerd ANDs repeated values).
        let mut before: Option<i64> = opts.until_nanos;
        let mut since: Option<i64> = None;
        for (k, v) in &opts.filters {
            match k.as_str() {
                "dangling" if dangling.is_none() => {
                    let f: berth_api::Filters = opts.filters.iter().cloned().collect();
                    dangling = Some(
                        f.bool_or("dangling", false)
                            .map_err(ImageStoreError::InvalidArgument)?,
                    );
                }
                "dangling" => {}
                "reference" => patterns.push(v.clone()),
                "label" => labels.push(v.clone()),
                "before" => {
                    let t = self.created_nanos(&resolve_in(&idx, v)?.image);
                    before = Some(before.map_or(t, |b| b.min(t)));
                }
                "since" => {
                    let t = self.created_nanos(&resolve_in(&idx, v)?.image);
                    since = Some(since.map_or(t, |s| s.max(t)));
                }
                other => {
                    return Err(ImageStoreError::InvalidArgument(format!(
                        "invalid filter '{other}'"
                    )))
                }
            }
        }
        let parents: BTreeSet<Digest> = idx
            .images
            .values()
            .filter_map(|i| i.parent.clone())
            .collect();
        let mut out = Vec::new();
        for rec in idx.images.values() {
            if before.is_some() || since.is_some() {
                let created = self.created_nanos(rec);
                if before.is_some_and(|b| created >= b) || since.is_some_and(|s| created <= s) {
                    continue;
                }
            }
            let cfg_labels = self
                .config(&rec.id)
                .ok()
                .and_then(|c| c.config.and_then(|c| c.labels))
                .unwrap_or_default();
            if !labels.iter().all(|l| match l.split_once('=') {
                Some((k, v)) => cfg_labels.get(k).is_some_and(|x| x == v),
                None => cfg_labels.contains_key(l),
            }) {
                continue;
            }
            let keep = |r: &Reference| {
                patterns.is_empty()
                    || patterns.iter().any(|p| {
                        path_match(p, &r.familiar_string()) || path_match(p, &r.familiar_name())
                    })
            };
            let mut repo_tags: Vec<String> = Vec::new();
            let mut repo_digests: Vec<String> = Vec::new();
            for t in &rec.repo_tags {
                if let Ok(r) = Reference::parse_normalized(t) {
                    if keep(&r) {
                        repo_tags.push(r.familiar_string());
                    }
                }
            }
            for t in &rec.repo_digests {
                if let Ok(r) = Reference::parse_normalized(t) {
                    if keep(&r) {
                        repo_digests.push(r.familiar_string());
                    }
                }
            }
            repo_tags.sort();
            repo_digests.sort();
            if repo_tags.is_empty() && repo_digests.is_empty() {
                if opts.all || !parents.contains(&rec.id) {
                    if dangling == Some(false) || !patterns.is_empty() {
                        continue;
                    }
                    if opts.none_placeholders {
                        repo_tags = vec!["<none>:<none>".into()];
                        repo_digests = vec!["<none>@<none>".into()];
                    }
                } else {
                    continue;
                }
            } else if dangling == Some(true) && !repo_tags.is_empty() {
                continue;
            }
            out.push(ImageSummary {
                id: rec.id.to_string(),
                parent_id: rec
                    .parent
                    .as_ref()
                    .map(|p| p.to_string())
                    .unwrap_or_default(),
                repo_tags,
                repo_digests,
                created: rec.created,
                size: rec.size() as i64,
                shared_size: -1,
                labels: cfg_labels,
                containers: -1,
            });
        }
        out.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.id.cmp(&b.id)));
        Ok(out)
    }

    /// When the image was created, to the nanosecond (its config's `created`; the record's
    /// seconds when the config has none): the list filters compare images made within a second.
    fn created_nanos(&self, rec: &ImageRecord) -> i64 {
        self.config(&rec.id)
            .ok()
            .and_then(|c| c.created)
            .and_then(|c| berth_util::time::parse_rfc3339(&c))
            .map_or(rec.created.saturating_mul(1_000_000_000), |(s, ns)| {
                s.saturating_mul(1_000_000_000)
                    .saturating_add(i64::from(ns))
            })
    }

    /// Docker's `history` for an image, newest first.
    pub fn history(&self, id: &ImageId) -> Result<Vec<HistoryItem>> {
        let rec = self.get(id)?;
        let cfg = self.config(id)?;
        let mut items = Vec::new();
        let mut layer_iter = rec.layers.iter();
        if cfg.history.is_empty() {
            for l in &rec.layers {
                items.push(HistoryItem {
                    id: "<missing>".into(),
                    created: rec.created,
                    created_by: String::new(),
                    tags: Vec::new(),
                    size: l.unpacked_size as i64,
                    comment: String::new(),
                });
            }
        }
        for h in &cfg.history {
            let size = if h.empty_layer {
                0
            } else {
                layer_iter.next().map(|l| l.unpacked_size).unwrap_or(0)
            };
            items.push(HistoryItem {
                id: "<missing>".into(),
                created: h
                    .created
                    .as_deref()
                    .and_then(timeutil::parse_rfc3339)
                    .map(|(s, _)| s)
                    .unwrap_or(0),
                created_by: h.created_by.clone().unwrap_or_default(),
                tags: Vec::new(),
                size: size as i64,
                comment: h.comment.clone().unwrap_or_default(),
            });
        }
        items.reverse();
        if let Some(top) = items.first_mut() {
            top.id = rec.id.to_string();
            top.tags = rec.familiar_tags();
        }
        Ok(items)
    }

    /// Disk usage of images, counting each layer once.
    pub fn disk_usage(&self, in_use: &dyn Fn(&ImageId) -> bool) -> Result<DiskUsage> {
        let idx = self.read_index()?;
        let mut layer_users: HashMap<Digest, (u64, usize)> = HashMap::new();
        for rec in idx.images.values() {
            for (c, l) in rec.chain_ids().into_iter().zip(&rec.layers) {
                let e = layer_users.entry(c).or_insert((l.unpacked_size, 0));
                e.1 += 1;
            }
        }
        let layers_size = layer_users.values().map(|(s, _)| s).sum();
        let images = idx
            .images
            .values()
            .map(|rec| {
                let shared = rec
                    .chain_ids()
                    .iter()
                    .zip(&rec.layers)
                    .filter(|(c, _)| layer_users.get(*c).is_some_and(|(_, n)| *n > 1))
                    .map(|(_, l)| l.unpacked_size)
                    .sum();
                ImageUsage {
                    id: rec.id.clone(),
                    size: rec.size(),
                    shared_size: shared,
                    in_use: in_use(&rec.id),
                }
            })
            .collect();
        Ok(DiskUsage {
            layers_size,
            images,
        })
    }

    /// Docker's `image inspect` document.
    pub fn inspect(&self, id: &ImageId) -> Result<InspectImage> {
        let rec = self.get(id)?;
        let cfg = self.config(id)?;
        let c = cfg.config.clone().unwrap_or_default();
        let extra = |k: &str| c.extra.get(k).cloned().filter(|v| !v.is_null());
        let config = InspectConfig {
            container_fields: None,
            user: c.user.clone().unwrap_or_default(),
            exposed_ports: c.exposed_ports.clone(),
            env: c.env.clone(),
            cmd: c.cmd.clone(),
            healthcheck: extra("Healthcheck"),
            args_escaped: extra("ArgsEscaped")
                .and_then(|v| v.as_bool())
                .filter(|b| *b),
            volumes: c.volumes.clone(),
            working_dir: c.working_dir.clone().unwrap_or_default(),
            entrypoint: c.entrypoint.clone(),
            on_build: extra("OnBuild"),
            labels: c.labels.clone(),
            stop_signal: c.stop_signal.clone(),
            shell: extra("Shell"),
        };
        let created = cfg
            .created
            .as_deref()
            .and_then(timeutil::parse_rfc3339)
            .map(|(s, n)| timeutil::format_rfc3339_nano(s, n))
            .unwrap_or_default();
        let str_extra = |k: &str| {
            cfg.extra
                .get(k)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        let driver = self
            .read_index()?
            .driver
            .unwrap_or_else(|| "overlay".to_string());
        let mut data = BTreeMap::new();
        let chains = rec.chain_ids();
        let snapdir = self.snapshot_root().join("snapshots");
        let sub = if driver == "copy" { "fs" } else { "diff" };
        if let Some(top) = chains.last() {
            if driver == "copy" {
                data.insert(
                    "RootDir".to_string(),
                    snapdir.join(top.hex()).join(sub).display().to_string(),
                );
            } else {
                data.insert(
                    "UpperDir".to_string(),
                    snapdir.join(top.hex()).join(sub).display().to_string(),
                );
                let lowers: Vec<String> = chains[..chains.len() - 1]
                    .iter()
                    .rev()
                    .map(|c| snapdir.join(c.hex()).join(sub).display().to_string())
                    .collect();
                if !lowers.is_empty() {
                    data.insert("LowerDir".to_string(), lowers.join(":"));
                }
            }
        }
        Ok(InspectImage {
            id: rec.id.to_string(),
            repo_tags: rec.familiar_tags(),
            repo_digests: rec.familiar_digests(),
            parent: rec
                .parent
                .as_ref()
                .map(|p| p.to_string())
                .unwrap_or_default(),
            // dockerd: the config's comment, else the last history entry's (a commit's).
            comment: cfg
                .extra
                .get("comment")
                .and_then(|v| v.as_str())
                .filter(|c| !c.is_empty())
                .or_else(|| cfg.history.last().and_then(|h| h.comment.as_deref()))
                .unwrap_or_default()
                .to_string(),
            created,
            container_config: None,
            docker_version: str_extra("docker_version"),
            author: cfg.author.clone().unwrap_or_default(),
            config,
            architecture: cfg.architecture.clone(),
            variant: cfg.variant.clone(),
            os: cfg.os.clone(),
            os_version: cfg.os_version.clone(),
            size: rec.size() as i64,
            graph_driver: GraphDriver { name: driver, data },
            root_fs: InspectRootFs {
                kind: "layers".into(),
                layers: cfg.rootfs.diff_ids.iter().map(|d| d.to_string()).collect(),
            },
            metadata: InspectMetadata {
                last_tag_time: rec
                    .last_tag_time
                    .clone()
                    .unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
            },
        })
    }
}

/// Go's `path.Match`: `*` (no `/`), `?`, `[…]` classes with ranges and `^`, `\` escapes.
/// A malformed pattern matches nothing.
pub fn path_match(pattern: &str, name: &str) -> bool {
    fn m(p: &[char], n: &[char]) -> Option<bool> {
        if p.is_empty() {
            return Some(n.is_empty());
        }
        match p[0] {
            '*' => {
                for i in 0..=n.len() {
                    if i > 0 && n[i - 1] == '/' {
                        break;
                    }
                    if m(&p[1..], &n[i..])? {
                        return Some(true);
                    }
                }
                Some(false)
            }
            '?' => {
                if n.is_empty() || n[0] == '/' {
                    return Some(false);
                }
                m(&p[1..], &n[1..])
            }
            '[' => {
                let c = *n.first()?;
                let (matched, len) = berth_util::glob::match_class(&p[1..], c, false)?;
                if !matched || c == '/' {
                    return Some(false);
                }
                m(&p[1 + len..], &n[1..])
            }
            '\\' => {
                let ch = *p.get(1)?;
                if n.first() != Some(&ch) {
                    return Some(false);
                }
                m(&p[2..], &n[1..])
            }
            ch => {
                if n.first() != Some(&ch) {
                    return Some(false);
                }
                m(&p[1..], &n[1..])
            }
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    m(&p, &n).unwrap_or(false)
}
