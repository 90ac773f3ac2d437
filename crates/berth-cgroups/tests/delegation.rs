//! The cgroup v2 subtree systemd delegates to a user (`user@UID.service`), found and used for
//! containers — against a fake tree laid out as one in a temporary directory (this machine's
//! hybrid cgroups delegate nothing): the hierarchy's root and `/proc/self/cgroup` are
//! injected, ownership is real (`chown`, so root only).

use std::fs;
use std::path::Path;

use berth_cgroups::{Cgroup, Delegation, Hierarchy};
use berth_testkit::require_root;
use oci_spec::runtime::{LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder};

/// The user the fake tree delegates to (no such account needed).
const UID: u32 = 4242;

const SERVICE: &str = "user.slice/user-4242.slice/user@4242.service";
const OWN: &str = "0::/user.slice/user-4242.slice/user@4242.service/app.slice/berthd.scope\n";

/// A cgroup directory with the interface files a delegation is about, owned by `uid`.
fn cgroup_dir(root: &Path, rel: &str, controllers: &str, enabled: &str, uid: u32) {
    let d = root.join(rel);
    fs::create_dir_all(&d).unwrap();
    for (f, c) in [
        ("cgroup.controllers", controllers),
        ("cgroup.subtree_control", enabled),
        ("cgroup.procs", ""),
    ] {
        fs::write(d.join(f), c).unwrap();
        std::os::unix::fs::chown(d.join(f), Some(uid), Some(uid)).unwrap();
    }
    std::os::unix::fs::chown(&d, Some(uid), Some(uid)).unwrap();
}

/// A cgroup v2 tree as systemd lays it out for user 4242's manager: root's slices above,
/// the user's service (memory, pids and cpu delegated) and its scopes below.
fn delegated_tree() -> (tempfile::TempDir, Hierarchy) {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    cgroup_dir(
        root,
        "",
        "cpuset cpu io memory hugetlb pids",
        "cpu io memory pids",
        0,
    );
    cgroup_dir(
        root,
        "user.slice",
        "cpu io memory pids",
        "cpu memory pids",
        0,
    );
    cgroup_dir(
        root,
        "user.slice/user-4242.slice",
        "cpu memory pids",
        "cpu memory pids",
        0,
    );
    cgroup_dir(root, SERVICE, "cpu memory pids", "cpu memory pids", UID);
    cgroup_dir(
        root,
        &format!("{SERVICE}/app.slice"),
        "cpu memory pids",
        "",
        UID,
    );
    cgroup_dir(
        root,
        &format!("{SERVICE}/app.slice/berthd.scope"),
        "",
        "",
        UID,
    );
    let h = Hierarchy::fake_v2(root).with_self_cgroup(OWN);
    (t, h)
}

#[test]
fn the_users_subtree_is_found_from_its_own_cgroup() {
    require_root!();
    let (t, h) = delegated_tree();
    let d = h.delegation(UID).expect("the delegated subtree");
    assert_eq!(
        d,
        Delegation {
            path: format!("/{SERVICE}"),
            dir: t.path().join(SERVICE),
            controllers: vec!["cpu".into(), "memory".into(), "pids".into()],
        }
    );
    assert!(d.has("memory") && !d.has("io"));
    assert_eq!(d.child("berth"), format!("/{SERVICE}/berth"));
    // Not another user's, nor root's.
    assert_eq!(h.delegation(UID + 1), None);
    assert_eq!(h.delegation(0), None);
    // A process outside the user's subtree has none.
    let h2 = Hierarchy::fake_v2(t.path()).with_self_cgroup("0::/user.slice\n");
    assert_eq!(h2.delegation(UID), None);
    // Nor a hybrid or v1 host (its controllers are in v1 hierarchies).
    let v1 = Hierarchy::fake_v1(t.path(), &["memory", "pids"]).with_self_cgroup(OWN);
    assert_eq!(v1.delegation(UID), None);
}

#[test]
fn a_directory_whose_control_files_stay_roots_is_not_delegated() {
    require_root!();
    let (t, h) = delegated_tree();
    // systemd hands over cgroup.subtree_control too: without it the service is not delegated,
    // only its slice below (all the user's).
    std::os::unix::fs::chown(
        t.path().join(SERVICE).join("cgroup.subtree_control"),
        Some(0),
        None,
    )
    .unwrap();
    let d = h.delegation(UID).unwrap();
    assert_eq!(d.path, format!("/{SERVICE}/app.slice"));
    assert_eq!(d.controllers, vec!["cpu", "memory", "pids"]);
}

#[test]
fn containers_below_the_delegation_get_their_limits() {
    require_root!();
    let (t, h) = delegated_tree();
    let d = h.delegation(UID).unwrap();
    // The daemon's parent inside the subtree, and a container's cgroup below it (an absolute
    // cgroupsPath, as berthd gives the runtime).
    let path = format!("{}/c1", d.child("berth"));
    let cg = Cgroup::new(&h, Some(&path), "c1").unwrap();
    assert_eq!(
        cg.unified_dir(),
        Some(&*t.path().join(SERVICE).join("berth/c1"))
    );
    cg.create().unwrap();
    let r = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(64 << 20)
                .build()
                .unwrap(),
        )
        .pids(LinuxPidsBuilder::default().limit(10).build().unwrap())
        .build()
        .unwrap();
    cg.apply(&r).unwrap();
    cg.add_task(4321).unwrap();
    let dir = t.path().join(SERVICE).join("berth");
    let read = |p: &Path| fs::read_to_string(p).unwrap().trim().to_string();
    assert_eq!(read(&dir.join("c1/memory.max")), "67108864");
    assert_eq!(read(&dir.join("c1/pids.max")), "10");
    assert_eq!(read(&dir.join("c1/cgroup.procs")), "4321");
    // The daemon's parent passes the delegated controllers on.
    assert_eq!(read(&dir.join("cgroup.subtree_control")), "cpu memory pids");
    assert_eq!(read(&dir.join("c1/cgroup.controllers")), "cpu memory pids");
    cg.destroy().unwrap();
    assert!(!dir.join("c1").exists());
}
