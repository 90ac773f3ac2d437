//! Tests against fake cgroup trees in temp dirs (no root needed).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use berth_cgroups::{fake_writes_under, Cgroup, CgroupError, CgroupVersion, Hierarchy};
use oci_spec::runtime::{
    LinuxBlockIoBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder, LinuxDeviceType,
    LinuxHugepageLimitBuilder, LinuxMemoryBuilder, LinuxNetworkBuilder, LinuxPidsBuilder,
    LinuxResources, LinuxResourcesBuilder, LinuxThrottleDeviceBuilder, LinuxWeightDeviceBuilder,
};

fn read(p: impl AsRef<Path>) -> String {
    fs::read_to_string(p.as_ref())
        .unwrap_or_else(|e| panic!("{}: {e}", p.as_ref().display()))
        .trim()
        .to_string()
}

fn write(p: impl AsRef<Path>, s: &str) {
    fs::write(p, s).unwrap();
}

/// Writes each (file, content) in `dir`.
fn write_files(dir: &Path, files: &[(&str, &str)]) {
    for (f, c) in files {
        write(dir.join(f), c);
    }
}

/// Asserts each file's content in `dir` (as [`read`] returns it).
#[track_caller]
fn assert_files(dir: &Path, files: &[(&str, &str)]) {
    for (f, want) in files {
        assert_eq!(read(dir.join(f)), *want, "{f}");
    }
}

fn v2_root() -> (tempfile::TempDir, Hierarchy) {
    let t = tempfile::tempdir().unwrap();
    write(
        t.path().join("cgroup.controllers"),
        "cpu io memory pids cpuset hugetlb",
    );
    write(t.path().join("cgroup.subtree_control"), "");
    let h = Hierarchy::fake_v2(t.path());
    (t, h)
}

const V1_CONTROLLERS: &[&str] = &[
    "cpu,cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "blkio",
    "pids",
    "name=systemd",
];

fn v1_root() -> (tempfile::TempDir, Hierarchy) {
    let t = tempfile::tempdir().unwrap();
    for c in V1_CONTROLLERS {
        fs::create_dir_all(t.path().join(c)).unwrap();
    }
    write(t.path().join("cpuset/cpuset.cpus"), "0-3\n");
    write(t.path().join("cpuset/cpuset.mems"), "0\n");
    let h = Hierarchy::fake_v1(t.path(), V1_CONTROLLERS);
    (t, h)
}

/// The cgroup `x` (default parent) created in a fake hierarchy made by `root`.
fn created(root: fn() -> (tempfile::TempDir, Hierarchy)) -> (tempfile::TempDir, Hierarchy, Cgroup) {
    let (t, h) = root();
    let cg = Cgroup::new(&h, None, "x").unwrap();
    cg.create().unwrap();
    (t, h, cg)
}

fn resources(json: &str) -> LinuxResources {
    serde_json::from_str(json).unwrap()
}

// ---------------------------------------------------------------- paths

#[test]
fn default_path_is_berth_id() {
    let (t, h) = v2_root();
    let cg = Cgroup::new(&h, None, "abc").unwrap();
    assert_eq!(cg.path(), "/berth/abc");
    assert_eq!(cg.unified_dir(), Some(t.path().join("berth/abc").as_path()));
    let cg = Cgroup::new(&h, Some(""), "abc").unwrap();
    assert_eq!(cg.path(), "/berth/abc");
}

#[test]
fn bad_ids_and_paths_are_refused() {
    let (_t, h) = v2_root();
    for id in ["", ".", "..", "a/b"] {
        assert!(
            matches!(
                Cgroup::new(&h, None, id),
                Err(CgroupError::InvalidPath { .. })
            ),
            "{id:?}"
        );
    }
    assert!(matches!(
        Cgroup::new(&h, Some("/"), "x"),
        Err(CgroupError::InvalidPath { .. })
    ));
    assert!(matches!(
        Cgroup::new(&h, Some("/../.."), "x"),
        Err(CgroupError::InvalidPath { .. })
    ));
    let e = Cgroup::new(&h, Some("system.slice:docker:abc"), "abc").unwrap_err();
    assert!(matches!(e, CgroupError::SystemdPath { .. }));
    assert!(e.to_string().contains("system.slice:docker:abc"));
}

#[test]
fn absolute_path_cannot_escape_the_root() {
    let (t, h) = v2_root();
    let cg = Cgroup::new(&h, Some("/../../etc/x"), "id").unwrap();
    assert_eq!(cg.unified_dir(), Some(t.path().join("etc/x").as_path()));
}

#[test]
fn relative_path_is_below_own_cgroup_per_hierarchy() {
    let t = tempfile::tempdir().unwrap();
    let mountinfo = "\
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
36 31 0:33 /outer /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
";
    let self_cgroup = "\
9:name=systemd:/sd
8:pids:/outer/p
4:memory:/process_api/14d4
2:cpuacct,cpu:/c
0::/u
";
    let h = Hierarchy::from_mountinfo(mountinfo, Some(t.path()))
        .unwrap()
        .with_self_cgroup(self_cgroup);
    assert_eq!(h.version(), CgroupVersion::Hybrid);
    let cg = Cgroup::new(&h, Some("ctr/one"), "x").unwrap();
    let base = t.path().join("sys/fs/cgroup");
    assert_eq!(cg.path(), "ctr/one");
    for (controller, dir) in [
        ("memory", "memory/process_api/14d4/ctr/one"),
        ("cpuacct", "cpu,cpuacct/c/ctr/one"),
        // The pids mount shows cgroup /outer, so /outer/p is at <mount>/p.
        ("pids", "pids/p/ctr/one"),
        ("name=systemd", "systemd/sd/ctr/one"),
    ] {
        assert_eq!(
            cg.v1_dir(controller),
            Some(base.join(dir).as_path()),
            "{controller}"
        );
    }
    assert_eq!(
        cg.unified_dir(),
        Some(base.join("unified/u/ctr/one").as_path())
    );

    // Absolute paths ignore the own cgroup.
    let cg = Cgroup::new(&h, Some("/abs"), "x").unwrap();
    assert_eq!(cg.v1_dir("memory"), Some(base.join("memory/abs").as_path()));

    // A hierarchy missing from /proc/self/cgroup is an error for relative paths.
    let h2 = Hierarchy::from_mountinfo(mountinfo, Some(t.path()))
        .unwrap()
        .with_self_cgroup("0::/u\n");
    assert!(matches!(
        Cgroup::new(&h2, Some("rel"), "x"),
        Err(CgroupError::OwnCgroupNotFound { .. })
    ));
}

#[test]
fn serde_roundtrip_and_mount_sources() {
    let (t, h) = v1_root();
    let cg = Cgroup::new(&h, Some("/a/b"), "x").unwrap();
    let json = serde_json::to_string(&cg).unwrap();
    let back: Cgroup = serde_json::from_str(&json).unwrap();
    assert_eq!(back, cg);

    let ms = cg.mount_sources();
    assert_eq!(ms.version, CgroupVersion::V1);
    assert!(ms.unified.is_none());
    let cpu = ms.v1.iter().find(|m| m.options == "cpu,cpuacct").unwrap();
    assert_eq!(cpu.controllers, vec!["cpu", "cpuacct"]);
    assert_eq!(cpu.mount_name, "cpu,cpuacct");
    assert_eq!(cpu.host_dir, t.path().join("cpu,cpuacct/a/b"));
    let sd = ms.v1.iter().find(|m| m.options == "name=systemd").unwrap();
    assert_eq!(sd.host_dir, t.path().join("name=systemd/a/b"));
    assert_eq!(ms.v1.len(), V1_CONTROLLERS.len());
}

// ---------------------------------------------------------------- v2

#[test]
fn v2_create_enables_controllers_in_parents() {
    let (t, h) = v2_root();
    let cg = Cgroup::new(&h, Some("/a/b/c"), "x").unwrap();
    assert!(Cgroup::open_existing(&h, Some("/a/b/c"), "x").is_err());
    cg.create().unwrap();
    let all = "cpu io memory pids cpuset hugetlb";
    assert_eq!(read(t.path().join("cgroup.subtree_control")), all);
    assert_eq!(read(t.path().join("a/cgroup.controllers")), all);
    assert_eq!(read(t.path().join("a/cgroup.subtree_control")), all);
    assert_eq!(read(t.path().join("a/b/cgroup.subtree_control")), all);
    assert_eq!(read(t.path().join("a/b/c/cgroup.controllers")), all);
    // The leaf itself does not enable anything for children.
    assert!(!t.path().join("a/b/c/cgroup.subtree_control").exists());
    // Creating again is fine and does not rewrite what is already enabled.
    let before = fake_writes_under(t.path()).len();
    cg.create().unwrap();
    assert_eq!(fake_writes_under(t.path()).len(), before);
    assert!(Cgroup::open_existing(&h, Some("/a/b/c"), "x").is_ok());
}

#[test]
fn v2_create_enables_only_missing_controllers() {
    let (t, h) = v2_root();
    write(t.path().join("cgroup.subtree_control"), "cpu memory");
    let cg = Cgroup::new(&h, None, "x").unwrap();
    cg.create().unwrap();
    let writes = fake_writes_under(t.path());
    let root_write = writes
        .iter()
        .find(|(p, _)| p == &t.path().join("cgroup.subtree_control"))
        .unwrap();
    assert_eq!(root_write.1, "+io +pids +cpuset +hugetlb");
}

#[test]
fn v2_apply_writes_converted_values() {
    let (t, _, cg) = created(v2_root);
    let leaf = t.path().join("berth/x");
    let r = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(100 * 1024 * 1024_i64)
                .swap(300 * 1024 * 1024_i64)
                .reservation(50 * 1024 * 1024_i64)
                .swappiness(10u64)
                .disable_oom_killer(true)
                .build()
                .unwrap(),
        )
        .cpu(
            LinuxCpuBuilder::default()
                .shares(1024u64)
                .quota(50_000i64)
                .period(100_000u64)
                .cpus("0-1")
                .mems("0")
                .idle(1i64)
                .build()
                .unwrap(),
        )
        .pids(LinuxPidsBuilder::default().limit(10i64).build().unwrap())
        .block_io(
            LinuxBlockIoBuilder::default()
                .weight(500u16)
                .throttle_read_bps_device(vec![LinuxThrottleDeviceBuilder::default()
                    .major(8i64)
                    .minor(0i64)
                    .rate(1_048_576u64)
                    .build()
                    .unwrap()])
                .throttle_write_iops_device(vec![LinuxThrottleDeviceBuilder::default()
                    .major(8i64)
                    .minor(0i64)
                    .rate(100u64)
                    .build()
                    .unwrap()])
                .build()
                .unwrap(),
        )
        .hugepage_limits(vec![LinuxHugepageLimitBuilder::default()
            .page_size("2MB")
            .limit(4_194_304i64)
            .build()
            .unwrap()])
        .unified(HashMap::from([(
            "memory.high".to_string(),
            "90000000".to_string(),
        )]))
        .devices(vec![
            LinuxDeviceCgroupBuilder::default()
                .allow(false)
                .access("rwm")
                .build()
                .unwrap(),
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(LinuxDeviceType::C)
                .major(1i64)
                .minor(3i64)
                .access("rwm")
                .build()
                .unwrap(),
        ])
        .build()
        .unwrap();
    cg.apply(&r).unwrap();
    assert_files(
        &leaf,
        &[
            ("memory.max", "104857600"),
            ("memory.swap.max", "209715200"),
            ("memory.low", "52428800"),
            ("cpu.weight", "39"),
            ("cpu.max", "50000 100000"),
            ("cpu.idle", "1"),
            ("cpuset.cpus", "0-1"),
            ("cpuset.mems", "0"),
            ("pids.max", "10"),
        ],
    );
    assert_eq!(
        read(leaf.join("io.weight")),
        (1 + 490 * 9999 / 990).to_string()
    );
    assert_files(
        &leaf,
        &[
            ("io.max", "8:0 rbps=1048576 wiops=100"),
            ("hugetlb.2MB.max", "4194304"),
            ("memory.high", "90000000"),
        ],
    );
    assert!(!leaf.join("memory.swappiness").exists());
    assert!(!leaf.join("memory.oom_control").exists());
    let filter = read(leaf.join(berth_cgroups::devices::FAKE_FILTER_FILE));
    assert!(
        filter.starts_with("deny a *:* rwm\nallow c 1:3 rwm"),
        "{filter}"
    );

    // update: pids unlimited, memory unlimited (swap follows), cpu period only keeps the quota
    let r = resources(r#"{"pids":{"limit":0},"memory":{"limit":-1},"cpu":{"period":50000}}"#);
    cg.apply(&r).unwrap();
    assert_files(
        &leaf,
        &[
            ("pids.max", "max"),
            ("memory.max", "max"),
            ("memory.swap.max", "max"),
            ("cpu.max", "50000 50000"),
        ],
    );
    // memory == swap: swap disabled
    cg.apply(&resources(r#"{"memory":{"limit":1048576,"swap":1048576}}"#))
        .unwrap();
    assert_eq!(read(leaf.join("memory.swap.max")), "0");
    assert_eq!(read(leaf.join("memory.max")), "1048576");
    // negative quota = unlimited
    cg.apply(&resources(r#"{"cpu":{"quota":-1,"period":100000}}"#))
        .unwrap();
    assert_eq!(read(leaf.join("cpu.max")), "max 100000");
}

#[test]
fn v2_bfq_weight_is_used_when_present() {
    let (t, _, cg) = created(v2_root);
    let leaf = t.path().join("berth/x");
    write(leaf.join("io.bfq.weight"), "default 100");
    let r = LinuxResourcesBuilder::default()
        .block_io(
            LinuxBlockIoBuilder::default()
                .weight(300u16)
                .weight_device(vec![LinuxWeightDeviceBuilder::default()
                    .major(8i64)
                    .minor(16i64)
                    .weight(200u16)
                    .build()
                    .unwrap()])
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    cg.apply(&r).unwrap();
    let writes: Vec<String> = fake_writes_under(&leaf)
        .into_iter()
        .filter(|(p, _)| p.ends_with("io.bfq.weight"))
        .map(|(_, v)| v)
        .collect();
    assert_eq!(writes, vec!["300", "8:16 200"]);
    assert!(!leaf.join("io.weight").exists());
}

#[test]
fn v2_errors_name_file_and_value() {
    let (_t, _, cg) = created(v2_root);
    let e = cg
        .apply(&resources(r#"{"memory":{"limit":2000,"swap":1000}}"#))
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("memory.swap.max") && msg.contains("1000"),
        "{msg}"
    );

    let e = cg
        .apply(&resources(r#"{"unified":{"../escape":"1"}}"#))
        .unwrap_err();
    assert!(matches!(e, CgroupError::InvalidValue { .. }), "{e}");

    let e = cg
        .apply(&resources(
            r#"{"hugepageLimits":[{"pageSize":"../2MB","limit":1}]}"#,
        ))
        .unwrap_err();
    assert!(matches!(e, CgroupError::InvalidValue { .. }), "{e}");

    let e = cg
        .apply(&resources(
            r#"{"devices":[{"allow":true,"type":"c","access":"rwx"}]}"#,
        ))
        .unwrap_err();
    assert!(matches!(e, CgroupError::DeviceRule { .. }), "{e}");
}

#[test]
fn v2_check_before_update_refuses_limit_below_usage() {
    let (t, _, cg) = created(v2_root);
    write(t.path().join("berth/x/memory.current"), "5000000\n");
    let e = cg
        .apply(&resources(
            r#"{"memory":{"limit":1048576,"checkBeforeUpdate":true}}"#,
        ))
        .unwrap_err();
    match e {
        CgroupError::MemoryLimitBelowUsage { value, usage, .. } => {
            assert_eq!(value, 1_048_576);
            assert_eq!(usage, 5_000_000);
        }
        other => panic!("{other}"),
    }
}

#[test]
fn v2_freeze_waits_for_events() {
    let (t, _, cg) = created(v2_root);
    let leaf = t.path().join("berth/x");
    write(leaf.join("cgroup.events"), "populated 1\nfrozen 0\n");
    write(leaf.join("cgroup.freeze"), "0");
    assert!(!cg.is_frozen().unwrap());
    // The "kernel": once cgroup.freeze says 1, report frozen a little later.
    let leaf2 = leaf.clone();
    let kernel = std::thread::spawn(move || {
        for _ in 0..2000 {
            if fs::read_to_string(leaf2.join("cgroup.freeze"))
                .unwrap_or_default()
                .trim()
                == "1"
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
                fs::write(leaf2.join("cgroup.events"), "populated 1\nfrozen 1\n").unwrap();
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        false
    });
    cg.freeze().unwrap();
    assert!(kernel.join().unwrap());
    assert!(cg.is_frozen().unwrap());
    cg.thaw().unwrap();
    assert_eq!(read(leaf.join("cgroup.freeze")), "0");
}

#[test]
fn v2_stats_from_files() {
    let (t, _, cg) = created(v2_root);
    let d = t.path().join("berth/x");
    write_files(
        &d,
        &[
            ("cpu.stat", "usage_usec 2000\nuser_usec 1500\nsystem_usec 500\nnr_periods 10\nnr_throttled 2\nthrottled_usec 30\n"),
            ("memory.current", "4096\n"),
            ("memory.max", "max\n"),
            ("memory.peak", "8192\n"),
            ("memory.events", "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n"),
            ("memory.swap.current", "100\n"),
            ("memory.swap.max", "max\n"),
            ("memory.stat", "anon 1000\nfile 3000\n"),
            ("pids.current", "2\n"),
            ("pids.max", "10\n"),
            ("io.stat", "8:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n"),
            ("hugetlb.2MB.max", "max\n"),
            ("hugetlb.2MB.current", "2097152\n"),
            ("hugetlb.2MB.events", "max 4\n"),
            ("hugetlb.2MB.rsvd.max", "max\n"),
            ("cpuset.cpus.effective", "0-1\n"),
        ],
    );
    let s = cg.stats().unwrap();
    assert_eq!(s.cpu.usage.total, 2_000_000);
    assert_eq!(s.cpu.usage.user, 1_500_000);
    assert_eq!(s.cpu.usage.kernel, 500_000);
    assert_eq!(s.cpu.throttling.throttled_periods, 2);
    assert_eq!(s.cpu.throttling.throttled_time, 30_000);
    assert_eq!(s.memory.usage.usage, 4096);
    assert_eq!(s.memory.usage.limit, u64::MAX);
    assert_eq!(s.memory.usage.max, 8192);
    assert_eq!(s.memory.usage.failcnt, 3);
    assert_eq!(s.memory.swap.usage, 4196);
    assert_eq!(s.memory.cache, 3000);
    assert_eq!(s.memory.raw["anon"], 1000);
    assert_eq!(s.pids.current, 2);
    assert_eq!(s.pids.limit, 10);
    assert_eq!(s.blkio.io_service_bytes_recursive.len(), 3);
    assert_eq!(s.blkio.io_serviced_recursive[1].value, 2);
    assert_eq!(s.hugetlb.len(), 1);
    assert_eq!(s.hugetlb["2MB"].usage, 2_097_152);
    assert_eq!(s.hugetlb["2MB"].failcnt, 4);
    assert_eq!(s.cpuset.cpus, vec![0, 1]);
    assert_eq!(cg.oom_kill_count().unwrap(), 1);
    let v = serde_json::to_value(&s).unwrap();
    assert_eq!(v["memory"]["usage"]["failcnt"], 3);
}

#[test]
fn v2_pids_are_recursive_and_destroy_is_idempotent() {
    let (t, _, cg) = created(v2_root);
    let d = t.path().join("berth/x");
    write(d.join("cgroup.procs"), "12\n7\n");
    fs::create_dir(d.join("sub")).unwrap();
    write(d.join("sub/cgroup.procs"), "9\n12\n");
    assert_eq!(cg.pids().unwrap(), vec![7, 9, 12]);
    cg.add_task(42).unwrap();
    assert_eq!(read(d.join("cgroup.procs")), "42");
    assert!(cg.add_task(0).is_err());
    cg.destroy().unwrap();
    assert!(!d.exists());
    assert!(t.path().join("berth").exists(), "only the leaf is removed");
    cg.destroy().unwrap();
}

// ---------------------------------------------------------------- v1

#[test]
fn v1_create_copies_cpuset_from_parents() {
    let (t, h) = v1_root();
    let cg = Cgroup::new(&h, Some("/a/b"), "x").unwrap();
    cg.create().unwrap();
    for d in ["cpuset/a", "cpuset/a/b"] {
        assert_eq!(read(t.path().join(d).join("cpuset.cpus")), "0-3");
        assert_eq!(read(t.path().join(d).join("cpuset.mems")), "0");
    }
    for c in V1_CONTROLLERS {
        assert!(t.path().join(c).join("a/b").is_dir(), "{c}");
    }
    // An existing non-empty cpuset is kept.
    write(t.path().join("cpuset/a/b/cpuset.cpus"), "1");
    cg.create().unwrap();
    assert_eq!(read(t.path().join("cpuset/a/b/cpuset.cpus")), "1");
}

#[test]
fn v1_add_task_writes_every_hierarchy() {
    let (t, _, cg) = created(v1_root);
    cg.add_task(1234).unwrap();
    for c in V1_CONTROLLERS {
        assert_eq!(
            read(t.path().join(c).join("berth/x/cgroup.procs")),
            "1234",
            "{c}"
        );
    }
}

fn writes_in(dir: &Path) -> Vec<(String, String)> {
    fake_writes_under(dir)
        .into_iter()
        .map(|(p, v)| (p.file_name().unwrap().to_string_lossy().into_owned(), v))
        .collect()
}

#[test]
fn v1_memory_write_order_follows_runc() {
    let (t, _, cg) = created(v1_root);
    let mem: PathBuf = t.path().join("memory/berth/x");
    write(mem.join("memory.limit_in_bytes"), "104857600");
    write(mem.join("memory.memsw.limit_in_bytes"), "209715200");
    // Raising: memsw first.
    cg.apply(&resources(
        r#"{"memory":{"limit":314572800,"swap":629145600}}"#,
    ))
    .unwrap();
    let w = writes_in(&mem);
    assert_eq!(
        w,
        vec![
            ("memory.memsw.limit_in_bytes".into(), "629145600".into()),
            ("memory.limit_in_bytes".into(), "314572800".into()),
        ]
    );
    // Lowering: limit first.
    cg.apply(&resources(r#"{"memory":{"limit":1048576,"swap":2097152}}"#))
        .unwrap();
    let w = writes_in(&mem);
    assert_eq!(
        &w[2..],
        &[
            ("memory.limit_in_bytes".into(), "1048576".into()),
            ("memory.memsw.limit_in_bytes".into(), "2097152".into()),
        ]
    );
    // Unlimited memory, swap unset: swap becomes unlimited too, written first.
    cg.apply(&resources(r#"{"memory":{"limit":-1}}"#)).unwrap();
    let w = writes_in(&mem);
    assert_eq!(
        &w[4..],
        &[
            ("memory.memsw.limit_in_bytes".into(), "-1".into()),
            ("memory.limit_in_bytes".into(), "-1".into()),
        ]
    );
    // Other memory knobs.
    cg.apply(&resources(
        r#"{"memory":{"reservation":1000,"swappiness":5,"disableOOMKiller":true,"kernel":1,"kernelTCP":2}}"#,
    ))
    .unwrap();
    assert_files(
        &mem,
        &[
            ("memory.soft_limit_in_bytes", "1000"),
            ("memory.swappiness", "5"),
            ("memory.oom_control", "1"),
        ],
    );
    assert!(!mem.join("memory.kmem.limit_in_bytes").exists());
    let e = cg
        .apply(&resources(r#"{"memory":{"swappiness":101}}"#))
        .unwrap_err();
    assert!(e.to_string().contains("101"), "{e}");
}

#[test]
fn v1_apply_cpu_pids_blkio_devices() {
    let (t, _, cg) = created(v1_root);
    let blk = t.path().join("blkio/berth/x");
    write(blk.join("blkio.bfq.weight"), "100");
    let r = resources(
        r#"{
        "cpu": {"shares": 512, "quota": -1, "period": 100000, "cpus": "1-2", "mems": "0",
                "realtimePeriod": 1000000, "realtimeRuntime": 950000, "burst": 1000},
        "pids": {"limit": 10},
        "blockIO": {"weight": 300,
                    "weightDevice": [{"major": 8, "minor": 0, "weight": 200}],
                    "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1024}],
                    "throttleWriteIOPSDevice": [{"major": 8, "minor": 16, "rate": 50}]},
        "devices": [{"allow": false, "access": "rwm"},
                    {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
                    {"allow": true, "type": "c", "major": 136, "access": "rwm"}],
        "network": {"classID": 1048577}
    }"#,
    );
    cg.apply(&r).unwrap();
    let cpu = t.path().join("cpu,cpuacct/berth/x");
    assert_files(
        &cpu,
        &[
            ("cpu.shares", "512"),
            ("cpu.cfs_quota_us", "-1"),
            ("cpu.cfs_period_us", "100000"),
            ("cpu.cfs_burst_us", "1000"),
            ("cpu.rt_period_us", "1000000"),
            ("cpu.rt_runtime_us", "950000"),
        ],
    );
    let cs = t.path().join("cpuset/berth/x");
    assert_eq!(read(cs.join("cpuset.cpus")), "1-2");
    assert_eq!(read(t.path().join("pids/berth/x/pids.max")), "10");
    assert_eq!(
        writes_in(&blk),
        vec![
            ("blkio.bfq.weight".into(), "300".into()),
            ("blkio.bfq.weight_device".into(), "8:0 200".into()),
            ("blkio.throttle.read_bps_device".into(), "8:0 1024".into()),
            ("blkio.throttle.write_iops_device".into(), "8:16 50".into()),
        ]
    );
    assert_eq!(
        writes_in(&t.path().join("devices/berth/x")),
        vec![
            ("devices.deny".into(), "a".into()),
            ("devices.allow".into(), "c 1:3 rwm".into()),
            ("devices.allow".into(), "c 136:* rwm".into()),
        ]
    );
}

#[test]
fn v1_refuses_unified_and_missing_controllers() {
    let (t, _, cg) = created(v1_root);
    let e = cg
        .apply(&resources(
            r#"{"pids":{"limit":5},"unified":{"memory.high":"1000"}}"#,
        ))
        .unwrap_err();
    match &e {
        CgroupError::UnifiedOnV1 { key, value, .. } => {
            assert_eq!(key, "memory.high");
            assert_eq!(value, "1000");
        }
        other => panic!("{other}"),
    }
    // Refused before anything was written.
    assert!(!t.path().join("pids/berth/x/pids.max").exists());

    let e = cg
        .apply(&resources(
            r#"{"hugepageLimits":[{"pageSize":"2MB","limit":1}]}"#,
        ))
        .unwrap_err();
    assert!(
        matches!(e, CgroupError::ControllerMissing { ref controller, .. } if controller == "hugetlb"),
        "{e}"
    );
    // net_prio is not mounted: only a warning.
    let r = LinuxResourcesBuilder::default()
        .network(
            LinuxNetworkBuilder::default()
                .class_id(5u32)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    cg.apply(&r).unwrap();
}

#[test]
fn v1_freeze_and_thaw() {
    let (t, _, cg) = created(v1_root);
    let f = t.path().join("freezer/berth/x/freezer.state");
    write(&f, "THAWED\n");
    assert!(!cg.is_frozen().unwrap());
    cg.freeze().unwrap();
    assert_eq!(read(&f), "FROZEN");
    assert!(cg.is_frozen().unwrap());
    cg.thaw().unwrap();
    assert_eq!(read(&f), "THAWED");
}

#[test]
fn v1_stats_from_files() {
    let (t, _, cg) = created(v1_root);
    let cpu = t.path().join("cpu,cpuacct/berth/x");
    write_files(
        &cpu,
        &[
            ("cpuacct.usage", "3000\n"),
            ("cpuacct.usage_percpu", "1000 2000 \n"),
            ("cpuacct.stat", "user 3\nsystem 1\n"),
            (
                "cpuacct.usage_all",
                "cpu user system\n0 600 400\n1 1500 500\n",
            ),
            (
                "cpu.stat",
                "nr_periods 5\nnr_throttled 1\nthrottled_time 777\n",
            ),
        ],
    );
    let mem = t.path().join("memory/berth/x");
    write_files(
        &mem,
        &[
            ("memory.usage_in_bytes", "4096\n"),
            ("memory.max_usage_in_bytes", "8192\n"),
            ("memory.limit_in_bytes", "1048576\n"),
            ("memory.failcnt", "2\n"),
            ("memory.memsw.usage_in_bytes", "4096\n"),
            ("memory.stat", "cache 100\nrss 200\ntotal_cache 100\n"),
            (
                "memory.oom_control",
                "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
            ),
        ],
    );
    let pids = t.path().join("pids/berth/x");
    write(pids.join("pids.current"), "1\n");
    write(pids.join("pids.max"), "max\n");
    let blk = t.path().join("blkio/berth/x");
    write_files(
        &blk,
        &[
            ("blkio.bfq.io_service_bytes_recursive", ""),
            (
                "blkio.throttle.io_service_bytes_recursive",
                "8:0 Read 4096\n8:0 Write 0\nTotal 4096\n",
            ),
            (
                "blkio.throttle.io_serviced_recursive",
                "8:0 Read 1\nTotal 1\n",
            ),
        ],
    );
    let s = cg.stats().unwrap();
    assert_eq!(s.cpu.usage.total, 3000);
    assert_eq!(s.cpu.usage.percpu, vec![1000, 2000]);
    assert_eq!(s.cpu.usage.user, 30_000_000);
    assert_eq!(s.cpu.usage.kernel, 10_000_000);
    assert_eq!(s.cpu.usage.percpu_user, vec![600, 1500]);
    assert_eq!(s.cpu.usage.percpu_kernel, vec![400, 500]);
    assert_eq!(s.cpu.throttling.periods, 5);
    assert_eq!(s.cpu.throttling.throttled_time, 777);
    assert_eq!(s.memory.usage.usage, 4096);
    assert_eq!(s.memory.usage.limit, 1_048_576);
    assert_eq!(s.memory.usage.failcnt, 2);
    assert_eq!(s.memory.cache, 100);
    assert_eq!(s.memory.raw["rss"], 200);
    assert_eq!(s.pids.current, 1);
    assert_eq!(s.pids.limit, 0);
    assert_eq!(s.blkio.io_service_bytes_recursive.len(), 2);
    assert_eq!(s.blkio.io_serviced_recursive.len(), 1);
    assert_eq!(s.cpuset.cpus, vec![0, 1, 2, 3]);
    assert_eq!(cg.oom_kill_count().unwrap(), 3);
}

#[test]
fn v1_destroy_removes_leaf_everywhere() {
    let (t, _, cg) = created(v1_root);
    cg.destroy().unwrap();
    for c in V1_CONTROLLERS {
        assert!(!t.path().join(c).join("berth/x").exists(), "{c}");
        assert!(t.path().join(c).join("berth").exists(), "{c}");
    }
    cg.destroy().unwrap();
}

#[test]
fn huge_device_rule_lists_are_refused_not_miscompiled() {
    let (_t, _, cg) = created(v2_root);
    let rules: Vec<String> = (0..3000)
        .map(|i| format!(r#"{{"allow":true,"type":"c","major":{i},"minor":{i},"access":"rwm"}}"#))
        .collect();
    let r = resources(&format!(r#"{{"devices":[{}]}}"#, rules.join(",")));
    let e = cg.apply(&r).unwrap_err();
    assert!(matches!(e, CgroupError::DeviceRule { .. }), "{e}");
}
