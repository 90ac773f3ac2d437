//! Value conversions between OCI (cgroup v1 flavoured) values and cgroup v2 files, as runc does them.

/// `cpu.shares` (v1, 2..=262144) to `cpu.weight` (v2, 1..=10000): `1 + ((shares-2)*9999)/262142`.
/// 0 means "unset" and maps to 0. Out-of-range shares are clamped first.
pub fn cpu_shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    let s = shares.clamp(2, 262_144);
    1 + ((s - 2) * 9999) / 262_142
}

/// blkio weight (v1, 10..=1000) to `io.weight` (v2, 1..=10000): `1 + (weight-10)*9999/990`.
/// 0 means "unset" and maps to 0. Out-of-range weights are clamped first.
pub fn blkio_weight_to_io_weight(weight: u16) -> u64 {
    if weight == 0 {
        return 0;
    }
    let w = u64::from(weight.clamp(10, 1000));
    1 + (w - 10) * 9999 / 990
}

/// A v1-style number (0 = unset, -1 = unlimited) as a v2 file value: `None` (don't write), `max`, or the number.
pub fn num_to_v2(value: i64) -> Option<String> {
    match value {
        0 => None,
        v if v < 0 => Some("max".to_string()),
        v => Some(v.to_string()),
    }
}

/// OCI `memory.swap` is memory+swap (v1 memsw). v2 `memory.swap.max` is swap alone: `swap - limit`.
///
/// Returns the v2 value: 0 = don't write, -1 = `max`. Mirrors runc's `ConvertMemorySwapToCgroupV2Value`.
pub fn memory_swap_to_v2(memory_swap: i64, memory: i64) -> Result<i64, SwapError> {
    // Unlimited memory and no explicit swap: unlimited swap too, as v1 would behave.
    if memory == -1 && memory_swap == 0 {
        return Ok(-1);
    }
    if memory_swap == -1 || memory_swap == 0 {
        return Ok(memory_swap);
    }
    if memory == 0 || memory == -1 {
        return Err(SwapError::NoMemoryLimit);
    }
    if memory < 0 {
        return Err(SwapError::InvalidMemory(memory));
    }
    if memory_swap < memory {
        return Err(SwapError::BelowMemory {
            swap: memory_swap,
            memory,
        });
    }
    Ok(memory_swap - memory)
}

/// Why a memory+swap limit has no cgroup v2 equivalent (runc's messages).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SwapError {
    #[error("unable to set swap limit without memory limit")]
    NoMemoryLimit,
    #[error("invalid memory value: {0}")]
    InvalidMemory(i64),
    #[error("memory+swap limit ({swap}) should be >= memory limit ({memory})")]
    BelowMemory { swap: i64, memory: i64 },
}

/// `pids.limit` as a file value: `<= 0` means unlimited (`max`).
pub fn pids_limit(limit: i64) -> String {
    if limit <= 0 {
        "max".to_string()
    } else {
        limit.to_string()
    }
}

/// `cpu.max` content from OCI quota/period. `None` quota keeps `existing_quota` (the current first
/// field of `cpu.max`, e.g. `max` or `50000`); a negative quota means unlimited.
pub fn cpu_max(quota: Option<i64>, period: Option<u64>, existing_quota: Option<&str>) -> String {
    let q = match quota {
        Some(q) if q > 0 => q.to_string(),
        Some(_) => "max".to_string(),
        None => existing_quota.unwrap_or("max").to_string(),
    };
    match period {
        Some(p) if p != 0 => format!("{q} {p}"),
        _ => q,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_to_weight() {
        assert_eq!(cpu_shares_to_weight(0), 0);
        assert_eq!(cpu_shares_to_weight(2), 1);
        assert_eq!(cpu_shares_to_weight(1024), 39);
        assert_eq!(cpu_shares_to_weight(262_144), 10_000);
        assert_eq!(cpu_shares_to_weight(1), 1);
        assert_eq!(cpu_shares_to_weight(u64::MAX), 10_000);
    }

    #[test]
    fn blkio_to_io_weight() {
        assert_eq!(blkio_weight_to_io_weight(0), 0);
        assert_eq!(blkio_weight_to_io_weight(10), 1);
        assert_eq!(blkio_weight_to_io_weight(500), 1 + 490 * 9999 / 990);
        assert_eq!(blkio_weight_to_io_weight(1000), 10_000);
        assert_eq!(blkio_weight_to_io_weight(5), 1);
    }

    #[test]
    fn swap_conversion() {
        assert_eq!(memory_swap_to_v2(0, -1), Ok(-1));
        assert_eq!(memory_swap_to_v2(-1, 100), Ok(-1));
        assert_eq!(memory_swap_to_v2(0, 100), Ok(0));
        assert_eq!(memory_swap_to_v2(300, 100), Ok(200));
        assert_eq!(memory_swap_to_v2(100, 100), Ok(0));
        assert!(memory_swap_to_v2(50, 100).is_err());
        assert!(memory_swap_to_v2(50, 0).is_err());
        assert!(memory_swap_to_v2(50, -5).is_err());
        assert_eq!(
            memory_swap_to_v2(50, 100).unwrap_err().to_string(),
            "memory+swap limit (50) should be >= memory limit (100)"
        );
        assert_eq!(memory_swap_to_v2(50, 0), Err(SwapError::NoMemoryLimit));
        assert_eq!(memory_swap_to_v2(50, -5), Err(SwapError::InvalidMemory(-5)));
    }

    #[test]
    fn numbers() {
        assert_eq!(num_to_v2(0), None);
        assert_eq!(num_to_v2(-1).as_deref(), Some("max"));
        assert_eq!(num_to_v2(5).as_deref(), Some("5"));
        assert_eq!(pids_limit(0), "max");
        assert_eq!(pids_limit(-1), "max");
        assert_eq!(pids_limit(10), "10");
    }

    #[test]
    fn cpu_max_strings() {
        assert_eq!(cpu_max(Some(50_000), Some(100_000), None), "50000 100000");
        assert_eq!(cpu_max(Some(-1), Some(100_000), None), "max 100000");
        assert_eq!(cpu_max(None, Some(20_000), Some("30000")), "30000 20000");
        assert_eq!(cpu_max(None, Some(20_000), None), "max 20000");
        assert_eq!(cpu_max(Some(1000), None, None), "1000");
    }
}
