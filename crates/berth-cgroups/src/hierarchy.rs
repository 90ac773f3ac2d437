//! Detecting the mounted cgroup hierarchies from `/proc/self/mountinfo`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{CgroupError, Result};

/// Which cgroup layout the host uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CgroupVersion {
    /// Only cgroup v1 hierarchies (possibly with a `name=systemd` one).
    V1,
    /// Only the unified cgroup v2 hierarchy.
    V2,
    /// cgroup v1 controllers plus a cgroup2 mount (usually `/sys/fs/cgroup/unified`) without them.
    Hybrid,
}

/// One mounted cgroup v1 hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct V1Mount {
    /// Controllers bound to this hierarchy, e.g. `["cpu", "cpuacct"]`, or `["name=systemd"]` for a
    /// named hierarchy without controllers. Named hierarchies with controllers list both.
    pub(crate) controllers: Vec<String>,
    /// Where it is mounted (with the fake root prefix applied).
    pub(crate) mount_point: PathBuf,
    /// The cgroup inside the hierarchy that the mount shows (mountinfo field 4), usually `/`.
    pub(crate) root: String,
}

impl V1Mount {
    pub(crate) fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }

    /// The option string used to mount this hierarchy, e.g. `cpu,cpuacct` or `name=systemd`.
    pub(crate) fn options(&self) -> String {
        self.controllers.join(",")
    }

    /// Whether this is a named hierarchy without resource controllers (e.g. `name=systemd`).
    pub(crate) fn is_named_only(&self) -> bool {
        self.controllers.iter().all(|c| c.starts_with("name="))
    }
}

/// The detected cgroup mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    pub(crate) version: CgroupVersion,
    pub(crate) v1: Vec<V1Mount>,
    /// The cgroup2 mount point and its mountinfo root.
    pub(crate) unified: Option<(PathBuf, String)>,
    /// Content to use instead of `/proc/self/cgroup` (tests).
    pub(crate) self_cgroup: Option<String>,
    /// A fake tree in a temp dir (tests): writes create files.
    pub(crate) fake: bool,
}

/// cgroup v1 super options that are not controller names.
const V1_NON_CONTROLLER_OPTS: &[&str] = &[
    "rw",
    "ro",
    "noprefix",
    "xattr",
    "clone_children",
    "cpuset_v2_mode",
    "favordynmods",
    "nofavordynmods",
    "none",
    "all",
];

impl Hierarchy {
    /// Detect the host's hierarchies from `/proc/self/mountinfo`.
    pub fn detect() -> Result<Hierarchy> {
        let path = Path::new("/proc/self/mountinfo");
        let text = crate::fsutil::read_path(path)?;
        Self::from_mountinfo(&text, None)
    }

    /// Parse a mountinfo text. With `root_prefix`, every cgroup mount point is re-rooted below it
    /// (so tests can build a fake tree in a temp dir; such a hierarchy also uses fake-kernel writes).
    pub fn from_mountinfo(text: &str, root_prefix: Option<&Path>) -> Result<Hierarchy> {
        let mut v1: Vec<V1Mount> = Vec::new();
        let mut unified: Option<(PathBuf, String)> = None;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let Some(m) = parse_mountinfo_line(line)? else {
                continue;
            };
            let mount_point = match root_prefix {
                Some(prefix) => prefix.join(m.mount_point.trim_start_matches('/')),
                None => PathBuf::from(&m.mount_point),
            };
            match m.fstype.as_str() {
                "cgroup2" => {
                    // Prefer the canonical places if the v2 tree is mounted more than once.
                    let canonical = m.mount_point == "/sys/fs/cgroup"
                        || m.mount_point == "/sys/fs/cgroup/unified";
                    if unified.is_none() || canonical {
                        unified = Some((mount_point, m.root));
                    }
                }
                "cgroup" => {
                    let controllers: Vec<String> = m
                        .super_opts
                        .split(',')
                        .filter(|o| {
                            !o.is_empty()
                                && !V1_NON_CONTROLLER_OPTS.contains(o)
                                && (o.starts_with("name=") || !o.contains('='))
                        })
                        .map(str::to_string)
                        .collect();
                    if controllers.is_empty() {
                        continue;
                    }
                    // The same hierarchy may be bind-mounted several times: keep the first.
                    if v1.iter().any(|e| e.controllers == controllers) {
                        continue;
                    }
                    v1.push(V1Mount {
                        controllers,
                        mount_point,
                        root: m.root,
                    });
                }
                _ => {}
            }
        }
        let has_v1_controllers = v1.iter().any(|m| !m.is_named_only());
        let version = match (has_v1_controllers, unified.is_some()) {
            (true, true) => CgroupVersion::Hybrid,
            (true, false) => CgroupVersion::V1,
            (false, true) => CgroupVersion::V2,
            (false, false) => {
                return Err(CgroupError::NoCgroupMounts {
                    path: PathBuf::from("/proc/self/mountinfo"),
                })
            }
        };
        if version == CgroupVersion::V2 {
            // A lone name=systemd v1 tree next to a pure v2 host is ignored.
            v1.clear();
        }
        Ok(Hierarchy {
            version,
            v1,
            unified,
            self_cgroup: None,
            fake: root_prefix.is_some(),
        })
    }

    /// A pure cgroup v2 hierarchy rooted at `root` (a temp dir), using fake-kernel writes.
    pub fn fake_v2(root: &Path) -> Hierarchy {
        Hierarchy {
            version: CgroupVersion::V2,
            v1: Vec::new(),
            unified: Some((root.to_path_buf(), "/".to_string())),
            self_cgroup: None,
            fake: true,
        }
    }

    /// A cgroup v1 hierarchy with one directory per controller below `root` (`root/<controller>`),
    /// using fake-kernel writes. Entries may be co-mounted (`"cpu,cpuacct"`) or named (`"name=systemd"`).
    pub fn fake_v1(root: &Path, controllers: &[&str]) -> Hierarchy {
        let v1 = controllers
            .iter()
            .map(|c| V1Mount {
                controllers: c.split(',').map(str::to_string).collect(),
                mount_point: root.join(c),
                root: "/".to_string(),
            })
            .collect();
        Hierarchy {
            version: CgroupVersion::V1,
            v1,
            unified: None,
            self_cgroup: None,
            fake: true,
        }
    }

    /// Use `content` instead of reading `/proc/self/cgroup` when resolving relative paths (tests).
    pub fn with_self_cgroup(mut self, content: &str) -> Hierarchy {
        self.self_cgroup = Some(content.to_string());
        self
    }

    /// The detected layout.
    pub fn version(&self) -> CgroupVersion {
        self.version
    }

    /// The cgroup2 mount point, if any (on hybrid hosts, usually `/sys/fs/cgroup/unified`).
    pub fn unified_mount(&self) -> Option<&Path> {
        self.unified.as_ref().map(|(p, _)| p.as_path())
    }

    /// The v1 hierarchies: (mount option string such as `cpu,cpuacct`, mount point).
    pub fn v1_mounts(&self) -> Vec<(String, PathBuf)> {
        self.v1
            .iter()
            .map(|m| (m.options(), m.mount_point.clone()))
            .collect()
    }

    /// The mount point of the v1 hierarchy holding `controller` (e.g. `memory`, `name=systemd`).
    pub fn v1_mount_point(&self, controller: &str) -> Option<&Path> {
        self.v1
            .iter()
            .find(|m| m.has(controller))
            .map(|m| m.mount_point.as_path())
    }

    /// The content of `/proc/self/cgroup` (or the test override).
    pub(crate) fn self_cgroup_text(&self) -> Result<String> {
        match &self.self_cgroup {
            Some(s) => Ok(s.clone()),
            None => crate::fsutil::read_path(Path::new("/proc/self/cgroup")),
        }
    }
}

struct MountinfoEntry {
    root: String,
    mount_point: String,
    fstype: String,
    super_opts: String,
}

/// Parse one mountinfo line; `Ok(None)` for lines that are not cgroup mounts.
fn parse_mountinfo_line(line: &str) -> Result<Option<MountinfoEntry>> {
    let bad = || CgroupError::Parse {
        path: PathBuf::from("/proc/self/mountinfo"),
        content: line.to_string(),
    };
    let (pre, post) = line.split_once(" - ").ok_or_else(bad)?;
    let pre: Vec<&str> = pre.split(' ').collect();
    if pre.len() < 6 {
        return Err(bad());
    }
    let mut post = post.split(' ');
    let fstype = post.next().ok_or_else(bad)?;
    if fstype != "cgroup" && fstype != "cgroup2" {
        return Ok(None);
    }
    let _source = post.next().ok_or_else(bad)?;
    let super_opts = post.next().unwrap_or("");
    Ok(Some(MountinfoEntry {
        root: unescape_octal(pre[3]),
        mount_point: unescape_octal(pre[4]),
        fstype: fstype.to_string(),
        super_opts: super_opts.to_string(),
    }))
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = u32::from(oct[0] - b'0') * 64
                    + u32::from(oct[1] - b'0') * 8
                    + u32::from(oct[2] - b'0');
                if let Ok(byte) = u8::try_from(v) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One line of `/proc/<pid>/cgroup`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProcCgroupEntry {
    /// Controllers (`["cpu","cpuacct"]`, `["name=systemd"]`), empty for the v2 line.
    pub(crate) controllers: Vec<String>,
    pub(crate) path: String,
}

pub(crate) fn parse_proc_cgroup(text: &str) -> Vec<ProcCgroupEntry> {
    text.lines()
        .filter_map(|line| {
            let mut it = line.splitn(3, ':');
            let _id = it.next()?;
            let ctrls = it.next()?;
            let path = it.next()?;
            let controllers = if ctrls.is_empty() {
                Vec::new()
            } else {
                ctrls.split(',').map(str::to_string).collect()
            };
            Some(ProcCgroupEntry {
                controllers,
                path: path.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    const V1_COMOUNT: &str = "\
25 18 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,xattr,release_agent=/lib/systemd/systemd-cgroups-agent,name=systemd
29 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,cpu,cpuacct
30 25 0:27 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,memory
31 25 0:28 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,net_cls,net_prio
32 25 0:29 / /sys/fs/cgroup/cpuset rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,cpuset,clone_children
33 25 0:30 /docker/abc /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,pids
";

    const V2: &str = "\
24 18 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    #[test]
    fn hybrid_separate_cpu_cpuacct() {
        let h = Hierarchy::from_mountinfo(HYBRID, None).unwrap();
        assert_eq!(h.version(), CgroupVersion::Hybrid);
        assert_eq!(h.v1.len(), 9);
        assert_eq!(
            h.v1_mount_point("cpu"),
            Some(Path::new("/sys/fs/cgroup/cpu"))
        );
        assert_eq!(
            h.v1_mount_point("cpuacct"),
            Some(Path::new("/sys/fs/cgroup/cpuacct"))
        );
        assert_eq!(
            h.v1_mount_point("name=systemd"),
            Some(Path::new("/sys/fs/cgroup/systemd"))
        );
        assert_eq!(h.unified_mount(), Some(Path::new("/sys/fs/cgroup/unified")));
        assert!(!h.fake);
    }

    #[test]
    fn v1_comounted() {
        let h = Hierarchy::from_mountinfo(V1_COMOUNT, None).unwrap();
        assert_eq!(h.version(), CgroupVersion::V1);
        let cpu = h.v1.iter().find(|m| m.has("cpu")).unwrap();
        assert_eq!(cpu.controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(cpu.options(), "cpu,cpuacct");
        assert_eq!(cpu.mount_point, Path::new("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(h.v1_mount_point("cpuacct"), Some(cpu.mount_point.as_path()));
        let sd = h.v1.iter().find(|m| m.has("name=systemd")).unwrap();
        assert_eq!(sd.controllers, vec!["name=systemd"]);
        let cs = h.v1.iter().find(|m| m.has("cpuset")).unwrap();
        assert_eq!(cs.controllers, vec!["cpuset"]);
        let pids = h.v1.iter().find(|m| m.has("pids")).unwrap();
        assert_eq!(pids.root, "/docker/abc");
        assert!(h.unified_mount().is_none());
    }

    #[test]
    fn pure_v2() {
        let h = Hierarchy::from_mountinfo(V2, None).unwrap();
        assert_eq!(h.version(), CgroupVersion::V2);
        assert_eq!(h.unified_mount(), Some(Path::new("/sys/fs/cgroup")));
        assert!(h.v1.is_empty());
    }

    #[test]
    fn v2_with_named_systemd_only_is_v2() {
        let text = format!(
            "{V2}40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n"
        );
        let h = Hierarchy::from_mountinfo(&text, None).unwrap();
        assert_eq!(h.version(), CgroupVersion::V2);
    }

    #[test]
    fn root_prefix_rebases_mounts() {
        let h = Hierarchy::from_mountinfo(HYBRID, Some(Path::new("/tmp/x"))).unwrap();
        assert_eq!(
            h.v1_mount_point("memory"),
            Some(Path::new("/tmp/x/sys/fs/cgroup/memory"))
        );
        assert!(h.fake);
    }

    #[test]
    fn no_cgroups_is_an_error() {
        let e = Hierarchy::from_mountinfo("22 27 0:21 / /proc rw - proc proc rw\n", None);
        assert!(matches!(e, Err(CgroupError::NoCgroupMounts { .. })));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Hierarchy::from_mountinfo("nonsense", None).is_err());
        assert!(Hierarchy::from_mountinfo("1 2 - cgroup", None).is_err());
    }

    #[test]
    fn octal_escapes() {
        assert_eq!(unescape_octal(r"/a\040b"), "/a b");
        assert_eq!(unescape_octal(r"/a\\"), r"/a\\");
        assert_eq!(unescape_octal(r"x\04"), r"x\04");
        assert_eq!(unescape_octal(r"\777"), r"\777");
    }

    #[test]
    fn proc_cgroup_parse() {
        let e = parse_proc_cgroup("9:name=systemd:/\n2:cpu,cpuacct:/a/b\n0::/user.slice\n");
        assert_eq!(e.len(), 3);
        assert_eq!(e[1].controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(e[1].path, "/a/b");
        assert!(e[2].controllers.is_empty());
    }
}
