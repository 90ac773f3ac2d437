//! The build cache as BuildKit clients see it (`docker buildx du`, `docker system df`'s
//! build cache, `docker buildx prune` with its filters and space limits): one record per
//! cached step of Berth's builder.

use berth_build::builder::{PruneFilter, PruneOptions, StepInfo};
use berth_image::image_store::ImageStore;

use crate::errors::SolveError;
use crate::proto::moby::buildkit::v1::{PruneRequest, UsageRecord};

fn timestamp(t: std::time::SystemTime) -> prost_types::Timestamp {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

fn record(s: &StepInfo) -> UsageRecord {
    UsageRecord {
        id: s.id.clone(),
        mutable: false,
        in_use: false,
        size: s.size as i64,
        created_at: Some(timestamp(s.created)),
        last_used_at: Some(timestamp(s.last_used)),
        usage_count: 1,
        description: StepInfo::DESCRIPTION.into(),
        record_type: StepInfo::TYPE.into(),
        shared: s.shared,
        ..Default::default()
    }
}

/// The cached steps.
pub fn usage(store: &ImageStore) -> Vec<UsageRecord> {
    berth_build::builder::steps(store)
        .iter()
        .map(record)
        .collect()
}

/// A prune request as the builder's options (`keep_duration` in nanoseconds, the space
/// limits in bytes; negative values are refused).
pub fn options(req: &PruneRequest) -> Result<PruneOptions, SolveError> {
    let bad = |m: String| SolveError::new(tonic::Code::InvalidArgument, m);
    let bytes = |name: &str, v: i64| {
        u64::try_from(v).map_err(|_| bad(format!("{name} must not be negative ({v})")))
    };
    let filters = PruneFilter::parse_all(&req.filter).map_err(|e| bad(e.to_string()))?;
    let keep_duration = match req.keep_duration {
        0 => None,
        d => Some(std::time::Duration::from_nanos(bytes("keep duration", d)?)),
    };
    Ok(PruneOptions {
        filters,
        keep_duration,
        reserved_space: bytes("reserved space", req.reserved_space)?,
        max_used_space: bytes("max used space", req.max_used_space)?,
        min_free_space: bytes("min free space", req.min_free_space)?,
    })
}

/// Prunes the build cache as `req` asks; the records removed.
pub fn prune(store: &ImageStore, req: &PruneRequest) -> Result<Vec<UsageRecord>, SolveError> {
    let opts = options(req)?;
    let before = usage(store);
    let report = berth_build::builder::prune_matching(store, &opts)
        .map_err(|e| SolveError::unknown(e.to_string()))?;
    Ok(before
        .into_iter()
        .filter(|r| report.caches_deleted.contains(&r.id))
        .collect())
}
