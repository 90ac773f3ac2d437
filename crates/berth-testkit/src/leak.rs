//! [`LeakGuard`]: fails the test that leaves mounts, cgroups, network links, network
//! namespaces, nftables tables or processes behind.
//!
//! Only what carries one of the test's markers counts (its temporary root, its unique cgroup
//! parent, its bridge name: see [`crate::unique_name`]), so tests running in parallel never
//! blame each other, and only what was not there when the guard was made.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::cgroup::{cgroup_mounts, unescape};

/// What kind of thing was left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LeakKind {
    Mount,
    Cgroup,
    Link,
    Netns,
    NftTable,
    Process,
}

/// One thing left behind.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Leak {
    pub kind: LeakKind,
    /// A mount point, cgroup directory, link name, netns name, table name, or
    /// `<pid> <command line>`.
    pub what: String,
}

impl fmt::Display for Leak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            LeakKind::Mount => "mount",
            LeakKind::Cgroup => "cgroup",
            LeakKind::Link => "link",
            LeakKind::Netns => "netns",
            LeakKind::NftTable => "nft table",
            LeakKind::Process => "process",
        };
        write!(f, "{kind} {}", self.what)
    }
}

/// Snapshots the host's mounts, cgroups, links, netns, nft tables and processes that carry a
/// marker; on drop (or [`LeakGuard::check`]) fails the test if new ones remain. Leaks that go
/// away within the grace period (a lazy unmount, a namespace the kernel frees late) do not
/// count. Declare it before the fixtures it watches (locals drop in reverse order), or hold it
/// as a fixture's last field and clean up in the fixture's `Drop`.
#[derive(Debug)]
pub struct LeakGuard {
    markers: Vec<String>,
    before: BTreeSet<Leak>,
    grace: Duration,
    checked: bool,
}

impl LeakGuard {
    /// A guard for things whose names, paths, command lines or cgroups contain one of
    /// `markers` (empty markers are ignored).
    pub fn new<I, S>(markers: I) -> LeakGuard
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut g = LeakGuard {
            markers: Vec::new(),
            before: BTreeSet::new(),
            grace: Duration::from_secs(5),
            checked: false,
        };
        for m in markers {
            g.add_marker(m);
        }
        g
    }

    /// Watches one more marker (what carries it now is not counted).
    pub fn add_marker(&mut self, marker: impl Into<String>) {
        let m = marker.into();
        if m.is_empty() || self.markers.contains(&m) {
            return;
        }
        self.before.extend(scan(std::slice::from_ref(&m)));
        self.markers.push(m);
    }

    /// The markers watched.
    pub fn markers(&self) -> &[String] {
        &self.markers
    }

    /// How long leaks may take to go away before they count (default 5 s).
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// What carries a marker now and did not at the start.
    pub fn leaks_now(&self) -> Vec<Leak> {
        scan(&self.markers)
            .into_iter()
            .filter(|l| !self.before.contains(l))
            .collect()
    }

    /// [`LeakGuard::leaks_now`], waiting up to the grace period for it to become empty.
    pub fn leaks(&self) -> Vec<Leak> {
        let mut left = self.leaks_now();
        crate::wait_until(self.grace, || {
            left = self.leaks_now();
            left.is_empty()
        });
        left
    }

    /// Fails the test (panics) if anything is left behind; when the test is already failing,
    /// only prints what is left. Checks once (drop does not check again).
    pub fn check(&mut self) {
        self.check_then(|| {});
    }

    /// Like [`LeakGuard::check`], but runs `cleanup` (which removes what is left, so the host
    /// stays clean) between finding the leaks and failing the test.
    pub fn check_then(&mut self, cleanup: impl FnOnce()) {
        let left = if self.checked || self.markers.is_empty() {
            Vec::new()
        } else {
            self.leaks()
        };
        self.checked = true;
        cleanup();
        if left.is_empty() {
            return;
        }
        let list: Vec<String> = left.iter().map(Leak::to_string).collect();
        let msg = format!(
            "left behind by this test (markers {:?}):\n  {}",
            self.markers,
            list.join("\n  ")
        );
        if std::thread::panicking() {
            eprintln!("{msg}");
        } else {
            panic!("{msg}");
        }
    }
}

impl Drop for LeakGuard {
    fn drop(&mut self) {
        self.check();
    }
}

/// A temporary directory whose path is a leak marker: on drop, anything still mounted below it
/// (or any other leak carrying its path) fails the test; the mounts are detached either way.
pub struct TempRoot {
    dir: tempfile::TempDir,
    leaks: LeakGuard,
}

impl TempRoot {
    /// A new temporary directory named `<prefix>…`.
    pub fn new(prefix: &str) -> TempRoot {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
        TempRoot {
            leaks: LeakGuard::new([dir.path().display().to_string()]),
            dir,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The guard (to add markers).
    pub fn leaks(&mut self) -> &mut LeakGuard {
        &mut self.leaks
    }
}

impl Drop for TempRoot {
    fn drop(&mut self) {
        let dir = self.dir.path().to_path_buf();
        self.leaks.check_then(|| crate::unmount_below(&dir));
    }
}

fn carries(s: &str, markers: &[String]) -> bool {
    markers.iter().any(|m| s.contains(m.as_str()))
}

/// Everything on the host that carries one of `markers`.
fn scan(markers: &[String]) -> BTreeSet<Leak> {
    let mut out = BTreeSet::new();
    if markers.is_empty() {
        return out;
    }
    let mut add = |kind, what: String| {
        out.insert(Leak { kind, what });
    };
    // Mounts: the mount point, source or options name a marker.
    for l in std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
    {
        if carries(&unescape(l), markers) {
            if let Some(m) = l.split(' ').nth(4) {
                add(LeakKind::Mount, unescape(m));
            }
        }
    }
    // Cgroups: a directory whose path below the hierarchy names a marker.
    for m in cgroup_mounts() {
        walk_cgroups(&m, &m, 0, markers, &mut |p| add(LeakKind::Cgroup, p));
    }
    // Links: the name, or the bridge it is attached to, names a marker.
    if let Ok(rd) = std::fs::read_dir("/sys/class/net") {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let master = std::fs::read_link(e.path().join("master"))
                .ok()
                .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_default();
            if carries(&name, markers) || carries(&master, markers) {
                add(LeakKind::Link, name);
            }
        }
    }
    if let Ok(rd) = std::fs::read_dir("/run/netns") {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if carries(&name, markers) {
                add(LeakKind::Netns, name);
            }
        }
    }
    for t in nft_tables() {
        if carries(&t, markers) {
            add(LeakKind::NftTable, t);
        }
    }
    for (pid, cmd) in processes(markers) {
        add(LeakKind::Process, format!("{pid} {cmd}"));
    }
    out
}

fn walk_cgroups(
    root: &Path,
    dir: &Path,
    depth: usize,
    markers: &[String],
    f: &mut dyn FnMut(String),
) {
    if depth > 4 {
        return;
    }
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        if !e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        let p = e.path();
        let rel = p
            .strip_prefix(root)
            .unwrap_or(&p)
            .to_string_lossy()
            .into_owned();
        if carries(&rel, markers) {
            f(p.display().to_string());
        }
        walk_cgroups(root, &p, depth + 1, markers, f);
    }
}

/// `family name` of every nftables table (empty without `nft` or without the right to list).
fn nft_tables() -> Vec<String> {
    let Ok(o) = Command::new("nft")
        .args(["list", "tables"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("table "))
        .map(str::to_string)
        .collect()
}

/// Live processes (not this one, not zombies) whose command line or cgroup names a marker.
fn processes(markers: &[String]) -> HashMap<i32, String> {
    let me = std::process::id() as i32;
    let mut out = HashMap::new();
    for pid in crate::process::all_pids() {
        if pid == me || !crate::alive(pid) {
            continue;
        }
        let proc = Path::new("/proc").join(pid.to_string());
        let cmd = std::fs::read(proc.join("cmdline"))
            .map(|b| {
                String::from_utf8_lossy(&b)
                    .replace('\0', " ")
                    .trim()
                    .to_string()
            })
            .unwrap_or_default();
        let cg = std::fs::read_to_string(proc.join("cgroup")).unwrap_or_default();
        if carries(&cmd, markers) || carries(&cg, markers) {
            out.insert(pid, cmd);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt as _;
    use std::process::Command;

    /// `sleep 100` whose command line (argv[0]) is the marker.
    fn sleeper(marker: &str) -> crate::KillOnDrop {
        crate::KillOnDrop(
            Command::new("sleep")
                .arg0(marker)
                .arg("100")
                .spawn()
                .unwrap(),
        )
    }

    #[test]
    fn a_leaked_process_is_found_and_passes_once_gone() {
        let marker = crate::unique_name("leak");
        let mut g = LeakGuard::new([marker.clone()]).grace(Duration::from_millis(200));
        assert_eq!(g.markers(), std::slice::from_ref(&marker));
        assert!(g.leaks().is_empty());
        let child = sleeper(&marker);
        let pid = child.id();
        let left = g.leaks();
        assert_eq!(left.len(), 1, "{left:?}");
        assert_eq!(left[0].kind, LeakKind::Process);
        assert_eq!(left[0].what, format!("{pid} {marker} 100"));
        assert_eq!(left[0].to_string(), format!("process {}", left[0].what));
        drop(child);
        g.check();
    }

    #[test]
    fn a_mount_left_in_a_temp_root_fails_the_test_and_is_detached() {
        if crate::skip_unless_root() {
            return;
        }
        let root = TempRoot::new("berth-leak");
        let path = root.path().to_path_buf();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "none"])
            .arg(&path)
            .status()
            .unwrap();
        assert!(st.success());
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(root)));
        let msg = r.expect_err("a leak must fail the test");
        let msg = msg.downcast_ref::<String>().unwrap();
        assert!(msg.contains(&format!("mount {}", path.display())), "{msg}");
        assert!(crate::mounts_below(&path).is_empty());
        assert!(!path.exists());
    }

    #[test]
    fn what_existed_before_is_not_a_leak() {
        let marker = crate::unique_name("leak");
        let _child = sleeper(&marker);
        let g = LeakGuard::new([marker]).grace(Duration::from_millis(100));
        assert!(g.leaks().is_empty());
    }

    #[test]
    #[should_panic(expected = "left behind by this test")]
    fn a_leak_fails_the_test() {
        let marker = crate::unique_name("leak");
        let mut g = LeakGuard::new([marker.clone()]).grace(Duration::from_millis(100));
        let _child = sleeper(&marker);
        // Killed while unwinding from the check's panic.
        g.check();
    }

    #[test]
    fn mounts_cgroups_and_links_with_the_marker_are_leaks() {
        if crate::skip_unless_root() {
            return;
        }
        /// Undoes what the test made, even when it fails.
        struct Undo(std::path::PathBuf, String, String);
        impl Drop for Undo {
            fn drop(&mut self) {
                crate::unmount_below(&self.0);
                crate::remove_cgroup_tree(&self.1);
                let _ = Command::new("ip").args(["link", "del", &self.2]).status();
            }
        }
        let marker = crate::unique_name("lk");
        let g = LeakGuard::new([marker.clone()]).grace(Duration::from_millis(100));
        let dir = tempfile::Builder::new().prefix(&marker).tempdir().unwrap();
        let undo = Undo(
            dir.path().to_path_buf(),
            format!("/{marker}"),
            format!("{marker}b"),
        );
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "none"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(st.success());
        std::fs::create_dir(cgroup_mounts()[0].join(&marker)).unwrap();
        let st = Command::new("ip")
            .args(["link", "add", &undo.2, "type", "bridge"])
            .status()
            .unwrap();
        assert!(st.success());
        let kinds: BTreeSet<LeakKind> = g.leaks().into_iter().map(|l| l.kind).collect();
        assert_eq!(
            kinds,
            [LeakKind::Mount, LeakKind::Cgroup, LeakKind::Link].into()
        );
        drop(undo);
        assert!(g.leaks().is_empty());
    }
}
