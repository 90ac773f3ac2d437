//! The build cache as BuildKit clients see it (`docker buildx du`, `docker system df`'s
//! build cache, `docker buildx prune`): one record per cached step of Berth's builder.

use berth_image::image_store::ImageStore;

use crate::proto::moby::buildkit::v1::{PruneRequest, UsageRecord};

#[derive(serde::Deserialize)]
struct StepRecord {
    #[serde(default)]
    layers: Vec<berth_image::image_store::LayerRecord>,
}

fn timestamp(t: std::time::SystemTime) -> prost_types::Timestamp {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// The cached steps.
pub fn usage(store: &ImageStore) -> Vec<UsageRecord> {
    let dir = berth_build::builder::cache_dir(store).join("steps");
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        let Some(id) = p.file_stem().map(|s| s.to_string_lossy().into_owned()) else {
            continue;
        };
        let Ok(rec) = berth_image::fsutil::read_json::<StepRecord>(&p) else {
            continue;
        };
        let meta = e.metadata().ok();
        let created = meta.as_ref().and_then(|m| m.modified().ok()).map(timestamp);
        let used = meta.as_ref().and_then(|m| m.accessed().ok()).map(timestamp);
        out.push(UsageRecord {
            id,
            mutable: false,
            in_use: false,
            size: rec.layers.last().map(|l| l.size as i64).unwrap_or(0),
            created_at: created,
            last_used_at: used,
            usage_count: 1,
            description: "berth build step".into(),
            record_type: "regular".into(),
            shared: rec.layers.len() > 1,
            ..Default::default()
        });
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

/// Removes the build cache; the records removed.
pub fn prune(
    store: &ImageStore,
    _req: &PruneRequest,
) -> Result<Vec<UsageRecord>, berth_build::builder::BuildError> {
    let before = usage(store);
    let report = berth_build::builder::prune(store)?;
    Ok(before
        .into_iter()
        .filter(|r| report.caches_deleted.contains(&r.id))
        .collect())
}
