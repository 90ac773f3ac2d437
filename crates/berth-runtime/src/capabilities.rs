//! Which of the requested capabilities a container's process gets, decided by the runtime
//! before the process is forked.
//!
//! The runtime spec asks that a capability that cannot be granted be logged as a warning, not
//! fail the container. Left to the kernel, such a capability fails `capset` or the ambient raise
//! in the init after `create` (and `start`) returned: the container dies where nobody sees why.
//! So the runtime drops, with a warning on its stderr (or `--log`), every capability
//! - that this kernel does not know (beyond `cap_last_cap`);
//! - that the runtime does not hold itself (outside a user namespace: not in its permitted set
//!   for `permitted`/`effective`, not in its bounding set for `bounding`), e.g. when it runs
//!   under a reduced bounding set;
//! - that the kernel's rules exclude: `inheritable` outside the final bounding set or (when
//!   the runtime's inheritable set lacks it) outside the runtime's permitted set, `effective`
//!   outside the final permitted set, `ambient` outside the final permitted and inheritable
//!   sets (`runc spec`'s default asks for ambient capabilities without inheritable ones).
//!
//! In a user namespace the container creates or joins, its process holds every capability of
//! that namespace (the kernel gives a full set on `unshare`/`setns`), so only the kernel's
//! rules apply. Names that are not capabilities at all are refused by `validate`.

use std::str::FromStr;

use crate::spec::{invalid, Capabilities, SpecError};

/// Capability sets as bit masks (bit N = capability N).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CapSets {
    pub bounding: u64,
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub ambient: u64,
}

/// What the runtime's process can hand on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// The highest capability this kernel knows.
    pub last_cap: u8,
    /// The runtime's own sets; `None` in a user namespace (the process gets all of them).
    pub own: Option<OwnSets>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnSets {
    pub permitted: u64,
    pub inheritable: u64,
    pub bounding: u64,
}

/// Capabilities of one set that are not granted, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub set: &'static str,
    pub caps: Vec<String>,
    pub reason: &'static str,
}

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "process.capabilities.{}: {} not granted: {}",
            self.set,
            self.caps.join(", "),
            self.reason
        )
    }
}

impl Held {
    /// The calling process's capabilities, for a container process that is (`in_user_ns`) or is
    /// not in a user namespace of its own.
    pub fn current(in_user_ns: bool) -> std::io::Result<Held> {
        let last_cap = last_cap();
        let own = if in_user_ns {
            None
        } else {
            let sets = rustix::thread::capabilities(None)?;
            let mut bounding = 0u64;
            for cap in 0..=last_cap {
                let c = rustix::thread::CapabilitySet::from_bits_retain(1 << cap);
                if rustix::thread::capability_is_in_bounding_set(c)? {
                    bounding |= 1 << cap;
                }
            }
            Some(OwnSets {
                permitted: sets.permitted.bits(),
                inheritable: sets.inheritable.bits(),
                bounding,
            })
        };
        Ok(Held { last_cap, own })
    }
}

/// The highest capability number this kernel knows (`/proc/sys/kernel/cap_last_cap`).
pub fn last_cap() -> u8 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

fn mask(set: &'static str, list: &Option<Vec<String>>) -> Result<u64, SpecError> {
    let mut m = 0u64;
    for (i, c) in list.iter().flatten().enumerate() {
        let cap = caps::Capability::from_str(c).map_err(|_| {
            invalid(
                format!("process.capabilities.{set}[{i}]"),
                format!("unknown capability {c:?}"),
            )
        })?;
        m |= 1u64 << cap.index();
    }
    Ok(m)
}

fn names(bits: u64) -> Vec<String> {
    (0..64u8)
        .filter(|i| bits & (1u64 << i) != 0)
        .map(|i| {
            caps::all()
                .into_iter()
                .find(|c| c.index() == i)
                .map(|c| c.to_string())
                .unwrap_or_else(|| format!("capability {i}"))
        })
        .collect()
}

/// The sets the process gets from `requested`, and what is dropped.
pub fn resolve(
    requested: &Capabilities,
    held: &Held,
) -> Result<(CapSets, Vec<Dropped>), SpecError> {
    let mut want = CapSets {
        bounding: mask("bounding", &requested.bounding)?,
        effective: mask("effective", &requested.effective)?,
        permitted: mask("permitted", &requested.permitted)?,
        inheritable: mask("inheritable", &requested.inheritable)?,
        ambient: mask("ambient", &requested.ambient)?,
    };
    let mut dropped = Vec::new();
    let mut keep = |set: &'static str, bits: &mut u64, allowed: u64, reason: &'static str| {
        let lost = *bits & !allowed;
        if lost != 0 {
            dropped.push(Dropped {
                set,
                caps: names(lost),
                reason,
            });
            *bits &= allowed;
        }
    };
    let known = if held.last_cap >= 63 {
        u64::MAX
    } else {
        (1u64 << (held.last_cap + 1)) - 1
    };
    for (set, bits) in [
        ("bounding", &mut want.bounding),
        ("effective", &mut want.effective),
        ("permitted", &mut want.permitted),
        ("inheritable", &mut want.inheritable),
        ("ambient", &mut want.ambient),
    ] {
        keep(set, bits, known, "this kernel does not know it");
    }
    if let Some(own) = held.own {
        keep(
            "bounding",
            &mut want.bounding,
            own.bounding,
            "not in the runtime's own bounding set",
        );
        keep(
            "permitted",
            &mut want.permitted,
            own.permitted,
            "the runtime does not hold it",
        );
        keep(
            "effective",
            &mut want.effective,
            own.permitted,
            "the runtime does not hold it",
        );
        keep(
            "inheritable",
            &mut want.inheritable,
            own.inheritable | own.permitted,
            "the runtime does not hold it",
        );
    }
    let own_inh = held.own.map_or(0, |o| o.inheritable);
    keep(
        "inheritable",
        &mut want.inheritable,
        want.bounding | own_inh,
        "an inheritable capability must be in the bounding set",
    );
    keep(
        "effective",
        &mut want.effective,
        want.permitted,
        "an effective capability must also be permitted",
    );
    keep(
        "ambient",
        &mut want.ambient,
        want.permitted & want.inheritable,
        "an ambient capability must also be permitted and inheritable",
    );
    Ok((want, dropped))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(list: &[&str]) -> Option<Vec<String>> {
        Some(list.iter().map(|s| s.to_string()).collect())
    }

    const KILL: u64 = 1 << 5;
    const NET_BIND: u64 = 1 << 10;
    const AUDIT_WRITE: u64 = 1 << 29;
    const SYS_TIME: u64 = 1 << 25;

    fn root_held() -> Held {
        Held {
            last_cap: 40,
            own: Some(OwnSets {
                permitted: (1 << 41) - 1,
                inheritable: 0,
                bounding: (1 << 41) - 1,
            }),
        }
    }

    #[test]
    fn runc_spec_default_ambient_without_inheritable_is_dropped() {
        let three = caps(&["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
        let req = Capabilities {
            bounding: three.clone(),
            effective: three.clone(),
            permitted: three.clone(),
            inheritable: None,
            ambient: three,
        };
        let (got, dropped) = resolve(&req, &root_held()).unwrap();
        let all3 = KILL | NET_BIND | AUDIT_WRITE;
        assert_eq!(
            got,
            CapSets {
                bounding: all3,
                effective: all3,
                permitted: all3,
                inheritable: 0,
                ambient: 0
            }
        );
        assert_eq!(dropped.len(), 1);
        assert_eq!(
            dropped[0].to_string(),
            "process.capabilities.ambient: CAP_KILL, CAP_NET_BIND_SERVICE, CAP_AUDIT_WRITE not \
             granted: an ambient capability must also be permitted and inheritable"
        );
    }

    #[test]
    fn capabilities_the_runtime_lacks_are_dropped() {
        let mut held = root_held();
        let own = held.own.as_mut().unwrap();
        own.bounding &= !SYS_TIME;
        own.permitted &= !SYS_TIME;
        let both = caps(&["CAP_SYS_TIME", "CAP_KILL"]);
        let req = Capabilities {
            bounding: both.clone(),
            effective: both.clone(),
            permitted: both.clone(),
            inheritable: both.clone(),
            ambient: both,
        };
        let (got, dropped) = resolve(&req, &held).unwrap();
        assert_eq!(
            got,
            CapSets {
                bounding: KILL,
                effective: KILL,
                permitted: KILL,
                inheritable: KILL,
                ambient: KILL
            }
        );
        let sets: Vec<&str> = dropped.iter().map(|d| d.set).collect();
        assert_eq!(
            sets,
            [
                "bounding",
                "permitted",
                "effective",
                "inheritable",
                "ambient"
            ]
        );
        assert!(
            dropped.iter().all(|d| d.caps == ["CAP_SYS_TIME"]),
            "{dropped:?}"
        );

        // In a user namespace the process holds everything: nothing is dropped.
        let userns = Held {
            last_cap: 40,
            own: None,
        };
        let (got, dropped) = resolve(&req, &userns).unwrap();
        assert_eq!(got.ambient, KILL | SYS_TIME);
        assert!(dropped.is_empty(), "{dropped:?}");
    }

    #[test]
    fn kernel_rules_and_unknown_capabilities() {
        // A kernel that stops at CAP_AUDIT_READ (37): CAP_BPF (39) is unknown to it.
        let held = Held {
            last_cap: 37,
            own: None,
        };
        let req = Capabilities {
            bounding: caps(&["CAP_KILL", "CAP_BPF"]),
            effective: caps(&["CAP_KILL", "CAP_NET_BIND_SERVICE"]),
            permitted: caps(&["CAP_KILL"]),
            inheritable: caps(&["CAP_KILL", "CAP_NET_BIND_SERVICE"]),
            ambient: None,
        };
        let (got, dropped) = resolve(&req, &held).unwrap();
        assert_eq!(got.bounding, KILL);
        assert_eq!(got.effective, KILL);
        assert_eq!(got.inheritable, KILL);
        let text: Vec<String> = dropped.iter().map(|d| d.to_string()).collect();
        assert_eq!(
            text,
            [
                "process.capabilities.bounding: CAP_BPF not granted: this kernel does not know it",
                "process.capabilities.inheritable: CAP_NET_BIND_SERVICE not granted: an \
                 inheritable capability must be in the bounding set",
                "process.capabilities.effective: CAP_NET_BIND_SERVICE not granted: an effective \
                 capability must also be permitted",
            ]
        );
        // Not a capability at all: refused, naming the field.
        let bad = Capabilities {
            effective: caps(&["CAP_NOPE"]),
            ..Default::default()
        };
        let e = resolve(&bad, &held).unwrap_err().to_string();
        assert!(e.contains("process.capabilities.effective[0]"), "{e}");
    }
}
