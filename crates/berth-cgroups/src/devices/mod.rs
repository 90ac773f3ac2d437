//! Device access rules: normalisation of OCI rules, cgroup v1 `devices.allow`/`devices.deny`
//! writes, and the cgroup v2 eBPF device filter.

pub mod bpf;
pub(crate) mod syscall;

use std::path::Path;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use crate::error::{CgroupError, Result};

/// Device type matched by a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevType {
    /// Any device (`a`).
    All,
    /// Character device (`c`, also OCI `u`).
    Char,
    /// Block device (`b`).
    Block,
}

/// `m`: mknod access (same bit as `BPF_DEVCG_ACC_MKNOD`).
pub const ACC_MKNOD: u32 = 1;
/// `r`: read access (`BPF_DEVCG_ACC_READ`).
pub const ACC_READ: u32 = 2;
/// `w`: write access (`BPF_DEVCG_ACC_WRITE`).
pub const ACC_WRITE: u32 = 4;
/// `rwm`.
pub const ACC_ALL: u32 = ACC_MKNOD | ACC_READ | ACC_WRITE;

/// A normalised device rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRule {
    /// Allow (true) or deny.
    pub allow: bool,
    /// Device type.
    pub typ: DevType,
    /// Major number, `None` = any.
    pub major: Option<u32>,
    /// Minor number, `None` = any.
    pub minor: Option<u32>,
    /// Access bits (`ACC_*`).
    pub access: u32,
}

impl DeviceRule {
    /// Whether this rule matches every device with every access (`a *:* rwm`).
    pub fn is_wildcard_all(&self) -> bool {
        self.typ == DevType::All
            && self.major.is_none()
            && self.minor.is_none()
            && self.access == ACC_ALL
    }

    fn access_string(&self) -> String {
        let mut s = String::new();
        if self.access & ACC_READ != 0 {
            s.push('r');
        }
        if self.access & ACC_WRITE != 0 {
            s.push('w');
        }
        if self.access & ACC_MKNOD != 0 {
            s.push('m');
        }
        s
    }

    /// The rule in cgroup v1 syntax (`c 1:3 rwm`).
    pub fn v1_string(&self) -> String {
        let t = match self.typ {
            DevType::All => 'a',
            DevType::Char => 'c',
            DevType::Block => 'b',
        };
        let num = |n: Option<u32>| n.map_or_else(|| "*".to_string(), |n| n.to_string());
        format!(
            "{t} {}:{} {}",
            num(self.major),
            num(self.minor),
            self.access_string()
        )
    }

    /// Normalise an OCI rule. `Ok(None)` for rules that the device cgroup does not handle (FIFOs).
    pub fn from_oci(r: &LinuxDeviceCgroup, cgroup: &Path) -> Result<Option<DeviceRule>> {
        let typ = match r.typ().unwrap_or(LinuxDeviceType::A) {
            LinuxDeviceType::A => DevType::All,
            LinuxDeviceType::C | LinuxDeviceType::U => DevType::Char,
            LinuxDeviceType::B => DevType::Block,
            LinuxDeviceType::P => {
                tracing::warn!(rule = %r, "device cgroup rules for FIFOs (type p) are ignored");
                return Ok(None);
            }
        };
        let bad = |reason: String| CgroupError::DeviceRule {
            rule: r.to_string(),
            path: cgroup.to_path_buf(),
            reason,
        };
        let num = |n: Option<i64>, what: &str| -> Result<Option<u32>> {
            match n {
                None => Ok(None),
                Some(v) if v < 0 => Ok(None),
                Some(v) if v > i64::from(i32::MAX) => {
                    Err(bad(format!("{what} number {v} is too large")))
                }
                Some(v) => Ok(u32::try_from(v).ok()),
            }
        };
        let major = num(r.major(), "major")?;
        let minor = num(r.minor(), "minor")?;
        let access = match r.access().as_deref() {
            None | Some("") => ACC_ALL,
            Some(a) => {
                let mut bits = 0;
                for c in a.chars() {
                    bits |= match c {
                        'r' => ACC_READ,
                        'w' => ACC_WRITE,
                        'm' => ACC_MKNOD,
                        other => return Err(bad(format!("unknown access {other:?}"))),
                    };
                }
                bits
            }
        };
        Ok(Some(DeviceRule {
            allow: r.allow(),
            typ,
            major,
            minor,
            access,
        }))
    }
}

/// Install the cgroup v2 eBPF device filter for `rules` on the cgroup directory `dir` (a cgroup2
/// directory: pure v2, or the unified mount of a hybrid host), replacing Berth's previous filter there.
/// An empty rule list changes nothing.
pub fn install_filter(dir: &Path, rules: &[LinuxDeviceCgroup]) -> Result<()> {
    apply_device_filter(&crate::fsutil::Files { fake: false }, dir, rules)
}

pub use syscall::berth_filter_count;

pub(crate) fn apply_device_filter(
    files: &crate::fsutil::Files,
    dir: &Path,
    rules: &[LinuxDeviceCgroup],
) -> Result<()> {
    if rules.is_empty() {
        return Ok(());
    }
    let rules = normalize(rules, dir)?;
    let prog = bpf::device_filter_program(&rules);
    // Jump offsets are 16-bit: refuse absurdly long rule lists instead of miscompiling them.
    if prog.len() > MAX_PROGRAM_LEN {
        return Err(CgroupError::DeviceRule {
            rule: format!("{} rules", rules.len()),
            path: dir.to_path_buf(),
            reason: format!(
                "the device filter would have {} instructions (at most {MAX_PROGRAM_LEN})",
                prog.len()
            ),
        });
    }
    if files.fake {
        // A fake tree cannot take a BPF program: record what would have been loaded.
        let text: Vec<String> = rules
            .iter()
            .map(|r| {
                format!(
                    "{} {}",
                    if r.allow { "allow" } else { "deny" },
                    r.v1_string()
                )
            })
            .collect();
        return files.write(
            dir,
            FAKE_FILTER_FILE,
            &format!("{}\ninsns {}\n", text.join("\n"), prog.len()),
        );
    }
    syscall::install_device_filter(dir, &prog)
}

/// Longest device filter program we generate (keeps every jump offset within `i16`).
const MAX_PROGRAM_LEN: usize = 30_000;

/// In fake trees, the file that records the device filter that would have been attached.
pub const FAKE_FILTER_FILE: &str = "berth.device_filter";

/// Normalise a list of OCI rules (dropping FIFO rules).
pub fn normalize(rules: &[LinuxDeviceCgroup], cgroup: &Path) -> Result<Vec<DeviceRule>> {
    let mut out = Vec::with_capacity(rules.len());
    for r in rules {
        if let Some(d) = DeviceRule::from_oci(r, cgroup)? {
            out.push(d);
        }
    }
    Ok(out)
}

/// The cgroup v1 writes for a rule list, in order: `(file, value)`.
///
/// Like runc, the resulting cgroup starts from "deny everything" unless the first rule is an
/// allow-all: a leading `a` is written to `devices.deny` (or `devices.allow`). A wildcard-all rule
/// later in the list becomes a bare `a` (the kernel then resets the exception list, which matches
/// "last rule wins"). Rules of type `a` with a specific number or access are split into `c` and `b`
/// rules, since the kernel would treat any `a` rule as "everything".
pub fn v1_writes(rules: &[DeviceRule]) -> Vec<(&'static str, String)> {
    let file = |allow: bool| {
        if allow {
            "devices.allow"
        } else {
            "devices.deny"
        }
    };
    let mut out = Vec::new();
    let starts_with_wildcard = rules.first().is_some_and(DeviceRule::is_wildcard_all);
    if !starts_with_wildcard {
        out.push(("devices.deny", "a".to_string()));
    }
    for r in rules {
        if r.is_wildcard_all() {
            out.push((file(r.allow), "a".to_string()));
        } else if r.typ == DevType::All {
            for typ in [DevType::Char, DevType::Block] {
                let split = DeviceRule { typ, ..*r };
                out.push((file(r.allow), split.v1_string()));
            }
        } else {
            out.push((file(r.allow), r.v1_string()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxDeviceCgroupBuilder;

    fn oci(
        allow: bool,
        t: Option<LinuxDeviceType>,
        maj: Option<i64>,
        min: Option<i64>,
        acc: &str,
    ) -> LinuxDeviceCgroup {
        let mut b = LinuxDeviceCgroupBuilder::default().allow(allow).access(acc);
        if let Some(t) = t {
            b = b.typ(t);
        }
        if let Some(m) = maj {
            b = b.major(m);
        }
        if let Some(m) = min {
            b = b.minor(m);
        }
        b.build().unwrap()
    }

    #[test]
    fn normalise_rules() {
        let p = Path::new("/cg");
        let r = DeviceRule::from_oci(&oci(false, None, None, None, "rwm"), p)
            .unwrap()
            .unwrap();
        assert!(r.is_wildcard_all());
        assert!(!r.allow);
        let r = DeviceRule::from_oci(
            &oci(true, Some(LinuxDeviceType::C), Some(1), Some(3), "rw"),
            p,
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.v1_string(), "c 1:3 rw");
        let r = DeviceRule::from_oci(&oci(true, Some(LinuxDeviceType::U), Some(-1), None, ""), p)
            .unwrap()
            .unwrap();
        assert_eq!(r.v1_string(), "c *:* rwm");
        assert!(
            DeviceRule::from_oci(&oci(true, Some(LinuxDeviceType::P), None, None, "r"), p)
                .unwrap()
                .is_none()
        );
        let e = DeviceRule::from_oci(
            &oci(true, Some(LinuxDeviceType::C), Some(1), Some(3), "rx"),
            p,
        );
        assert!(matches!(e, Err(CgroupError::DeviceRule { .. })));
        let e = DeviceRule::from_oci(
            &oci(true, Some(LinuxDeviceType::C), Some(1 << 40), None, "r"),
            p,
        );
        assert!(e.is_err());
    }

    #[test]
    fn v1_write_sequence() {
        let p = Path::new("/cg");
        let rules = normalize(
            &[
                oci(false, None, None, None, "rwm"),
                oci(true, Some(LinuxDeviceType::C), Some(1), Some(3), "rwm"),
                oci(true, Some(LinuxDeviceType::A), Some(136), None, "rw"),
                oci(true, Some(LinuxDeviceType::P), None, None, "rwm"),
            ],
            p,
        )
        .unwrap();
        let w = v1_writes(&rules);
        assert_eq!(
            w,
            vec![
                ("devices.deny", "a".to_string()),
                ("devices.allow", "c 1:3 rwm".to_string()),
                ("devices.allow", "c 136:* rw".to_string()),
                ("devices.allow", "b 136:* rw".to_string()),
            ]
        );
        // Without a leading deny-all we still start from deny-all (runc's behaviour).
        let rules = normalize(
            &[oci(true, Some(LinuxDeviceType::C), Some(5), Some(1), "rw")],
            p,
        )
        .unwrap();
        assert_eq!(v1_writes(&rules)[0], ("devices.deny", "a".to_string()));
        // A leading allow-all is kept as such.
        let rules = normalize(
            &[
                oci(true, None, None, None, "rwm"),
                oci(false, Some(LinuxDeviceType::C), Some(1), Some(3), "r"),
            ],
            p,
        )
        .unwrap();
        assert_eq!(
            v1_writes(&rules),
            vec![
                ("devices.allow", "a".to_string()),
                ("devices.deny", "c 1:3 r".to_string())
            ]
        );
    }
}
