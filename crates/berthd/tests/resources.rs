//! Resource limits and accounting against berthd, measured in the kernel's cgroup files:
//! `--cpus` throttles a busy loop, `--pids-limit` stops a fork bomb, `stats` matches the
//! cgroup, pause freezes progress, device throttles reach blkio, `system prune --volumes`
//! frees disk, and `cp` racing with `start` stays consistent.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Waits up to 30 s for `f` to hold.
#[track_caller]
fn wait_for(what: &str, f: impl FnMut() -> bool) {
    berth_testkit::wait_for(what, Duration::from_secs(30), f)
}

fn id_of(d: &Daemon, name: &str) -> String {
    d.inspect("{{.Id}}", name).trim().to_string()
}

/// The container's cgroup directory of a v1 controller.
fn cg_dir(d: &Daemon, ctl: &str, id: &str) -> PathBuf {
    PathBuf::from(format!("/sys/fs/cgroup/{ctl}{}/{id}", d.cgroup_parent))
}

fn cg_read(d: &Daemon, ctl: &str, id: &str, file: &str) -> String {
    let p = cg_dir(d, ctl, id).join(file);
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
        .trim()
        .to_string()
}

fn cg_u64(d: &Daemon, ctl: &str, id: &str, file: &str) -> u64 {
    let s = cg_read(d, ctl, id, file);
    s.parse()
        .unwrap_or_else(|_| panic!("{ctl}/{file} is not a number: {s:?}"))
}

/// The JSON body of a raw HTTP response.
fn body_json(resp: &str) -> serde_json::Value {
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n..];
        s = s.strip_prefix("\r\n").unwrap_or(s);
    }
    out
}

#[test]
fn cpus_half_throttles_a_busy_loop() {
    let d = root_daemon!();
    d.docker_line(
        "run -d --name busy --cpus 0.5 --network none busybox sh -c",
        &["while :; do :; done"],
    )
    .ok();
    let id = id_of(&d, "busy");
    assert_eq!(cg_read(&d, "cpu", &id, "cpu.cfs_quota_us"), "50000");
    assert_eq!(cg_read(&d, "cpu", &id, "cpu.cfs_period_us"), "100000");
    // Wait until the loop runs at all, then measure its usage over ~1.5 s of wall time.
    wait_for("the busy loop to use CPU", || {
        cg_u64(&d, "cpuacct", &id, "cpuacct.usage") > 20_000_000
    });
    // The wall interval is taken inside the two reads: it can only be shorter than the
    // interval the usage covers, which errs towards a higher ratio (the real check).
    let u0 = cg_u64(&d, "cpuacct", &id, "cpuacct.usage");
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    let wall = t0.elapsed();
    let u1 = cg_u64(&d, "cpuacct", &id, "cpuacct.usage");
    let ratio = (u1 - u0) as f64 / wall.as_nanos() as f64;
    eprintln!("--cpus 0.5: busy loop used {ratio:.3} CPU over {wall:?}");
    // CFS bandwidth control allows at most one period's quota (50 ms) above 0.5 CPU in any
    // window; a loaded machine only gives less.
    assert!(
        ratio < 0.75,
        "a busy loop under --cpus 0.5 used {ratio:.3} CPU"
    );
    assert!(ratio > 0.02, "the busy loop did not run: {ratio:.3} CPU");
    let nr_periods = cg_read(&d, "cpu", &id, "cpu.stat")
        .lines()
        .find_map(|l| l.strip_prefix("nr_periods "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    assert!(nr_periods > 0, "the CFS quota is not enforced (no periods)");
    // update lowers it further on the running container.
    d.docker_line("update --cpus 0.2 busy", &[]).ok();
    assert_eq!(cg_read(&d, "cpu", &id, "cpu.cfs_quota_us"), "20000");
    d.docker(&["rm", "-f", "busy"]).ok();
    finish(d);
}

#[test]
fn pids_limit_stops_a_fork_bomb() {
    let d = root_daemon!();
    d.docker_line(
        "run -d --name bomb --pids-limit 20 --network none busybox sh -c",
        &["bomb() { bomb | bomb & }; bomb; sleep 1000"],
    )
    .ok();
    let id = id_of(&d, "bomb");
    assert_eq!(cg_read(&d, "pids", &id, "pids.max"), "20");
    // The kernel refuses forks beyond the limit (pids.events counts them).
    wait_for("forks refused by the pids limit", || {
        cg_read(&d, "pids", &id, "pids.events")
            .strip_prefix("max ")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
            > 0
    });
    for _ in 0..5 {
        let cur = cg_u64(&d, "pids", &id, "pids.current");
        assert!(cur <= 20, "pids.current {cur} above the limit");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The daemon still answers, and the bomb is stopped and removed cleanly.
    assert_eq!(d.inspect("{{.State.Running}}", "bomb"), "true\n");
    d.docker_line("stop -t 1 bomb", &[]).ok();
    assert_eq!(d.inspect("{{.State.Running}}", "bomb"), "false\n");
    d.docker(&["rm", "bomb"]).ok();
    assert!(
        !cg_dir(&d, "pids", &id).exists(),
        "the container's pids cgroup is left behind"
    );
    // A container without the bomb still runs after it.
    assert_eq!(
        d.docker_out("run --rm --network none busybox echo ok", &[]),
        "ok\n"
    );
    finish(d);
}

#[test]
fn stats_no_stream_matches_the_cgroup_files() {
    let d = root_daemon!();
    // 24 MiB on the container's /dev/shm (charged to its memory cgroup), three processes.
    d.docker_line("run -d --name st --memory 256m --pids-limit 64 --network none busybox sh -c", &["dd if=/dev/zero of=/dev/shm/fill bs=1M count=24 2>/dev/null; touch /tmp/ready; sleep 1000 & sleep 1000 & wait"])
    .ok();
    let id = id_of(&d, "st");
    wait_for("the container's setup", || {
        d.docker_line("exec st test -f /tmp/ready", &[]).code == 0
            && cg_u64(&d, "pids", &id, "pids.current") == 3
    });
    let mem_file = || cg_u64(&d, "memory", &id, "memory.usage_in_bytes");
    let cpu_file = || cg_u64(&d, "cpuacct", &id, "cpuacct.usage");
    let m0 = mem_file();
    let c0 = cpu_file();
    let s = body_json(
        &d.http("GET", &format!("/containers/{id}/stats?stream=false"), None)
            .unwrap(),
    );
    let c1 = cpu_file();
    let m1 = mem_file();
    eprintln!("stats: {s}");
    let usage = s["memory_stats"]["usage"].as_u64().unwrap();
    let (lo, hi) = (m0.min(m1), m0.max(m1));
    assert!(
        usage + (1 << 20) >= lo && usage <= hi + (1 << 20),
        "memory usage {usage} vs the cgroup's {m0}..{m1}"
    );
    assert!(usage >= 24 << 20, "24 MiB in /dev/shm not counted: {usage}");
    assert_eq!(s["memory_stats"]["limit"].as_u64(), Some(256 << 20));
    assert_eq!(
        s["memory_stats"]["stats"]["shmem"]
            .as_u64()
            .map(|v| v >= 24 << 20),
        Some(true),
        "{}",
        s["memory_stats"]
    );
    assert_eq!(s["pids_stats"]["current"].as_u64(), Some(3));
    assert_eq!(s["pids_stats"]["limit"].as_u64(), Some(64));
    let total = s["cpu_stats"]["cpu_usage"]["total_usage"].as_u64().unwrap();
    assert!(
        c0 <= total && total <= c1,
        "cpu total_usage {total} outside the cgroup's {c0}..{c1}"
    );
    assert!(s["cpu_stats"]["system_cpu_usage"].as_u64().unwrap() > 0);
    assert!(s["cpu_stats"]["online_cpus"].as_u64().unwrap() >= 1);
    // stream=false gives a second sample with precpu_stats filled (docker CLI's CPU %).
    let pre = s["precpu_stats"]["cpu_usage"]["total_usage"]
        .as_u64()
        .unwrap();
    assert!(pre <= total && pre >= c0.saturating_sub(1_000_000_000));
    // The docker CLI shows the same numbers.
    let line = d.docker_out(
        "stats --no-stream --format",
        &["{{.Name}} {{.PIDs}} {{.MemUsage}}", "st"],
    );
    let f: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&f[..2], &["st", "3"], "{line}");
    // "24.1MiB / 256MiB": usage minus the inactive file cache, shmem included.
    let mib: f64 = f[2].trim_end_matches("MiB").parse().unwrap_or(0.0);
    assert!((23.0..64.0).contains(&mib), "{line}");
    assert_eq!(f.get(4), Some(&"256MiB"), "{line}");
    // docker-py: the same fields through its stats(stream=False).
    let Some(py) = d.docker_py(&format!(
        "import docker,os\nc=docker.DockerClient(base_url=os.environ['BERTH_SOCK'])\ns=c.containers.get('{id}').stats(stream=False)\nprint(s['pids_stats']['current'], s['memory_stats']['limit'])"
    )) else {
        return;
    };
    assert_eq!(py.ok().stdout, format!("3 {}\n", 256u64 << 20));
    d.docker(&["rm", "-f", "st"]).ok();
    finish(d);
}

#[test]
fn pause_stops_progress_and_unpause_resumes() {
    let d = root_daemon!();
    let out = d.path("out");
    std::fs::create_dir_all(&out).unwrap();
    let vol = format!("{}:/out", out.display());
    d.docker_line(
        "run -d --name ctr -v",
        &[
            &vol,
            "--network",
            "none",
            "busybox",
            "sh",
            "-c",
            "i=0; while :; do i=$((i+1)); echo $i >> /out/count; usleep 20000; done",
        ],
    )
    .ok();
    let id = id_of(&d, "ctr");
    let count = out.join("count");
    let size = || std::fs::metadata(&count).map(|m| m.len()).unwrap_or(0);
    wait_for("the counter to advance", || size() > 10);
    d.docker(&["pause", "ctr"]).ok();
    assert_eq!(cg_read(&d, "freezer", &id, "freezer.state"), "FROZEN");
    // Frozen tasks make no progress at all, however long we look.
    let a = size();
    std::thread::sleep(Duration::from_millis(600));
    let b = size();
    assert_eq!(a, b, "the counter advanced while paused");
    assert_eq!(d.inspect("{{.State.Status}}", "ctr"), "paused\n");
    // Stats of a paused container still work.
    let st = d.docker_out("stats --no-stream --format", &["{{.PIDs}}", "ctr"]);
    assert!(st.trim().parse::<u32>().unwrap() >= 1, "{st}");
    d.docker(&["unpause", "ctr"]).ok();
    assert_eq!(cg_read(&d, "freezer", &id, "freezer.state"), "THAWED");
    wait_for("the counter to resume", || size() > b + 10);
    // The count continues where it stopped: the lines are consecutive.
    let text = std::fs::read_to_string(&count).unwrap();
    let nums: Vec<u64> = text.lines().filter_map(|l| l.parse().ok()).collect();
    assert!(
        nums.windows(2).all(|w| w[1] == w[0] + 1),
        "counter not consecutive"
    );
    d.docker(&["rm", "-f", "ctr"]).ok();
    finish(d);
}

/// A whole disk of this machine: (name, major, minor), for blkio throttles.
fn a_whole_disk() -> Option<(String, u32, u32)> {
    let mut names: Vec<String> = std::fs::read_dir("/sys/block")
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("loop") && !n.starts_with("ram") && !n.starts_with("zram"))
        .collect();
    names.sort();
    for n in names {
        let size: u64 = std::fs::read_to_string(format!("/sys/block/{n}/size"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        if size == 0 {
            continue;
        }
        let dev = std::fs::read_to_string(format!("/sys/block/{n}/dev")).ok()?;
        let (ma, mi) = dev.trim().split_once(':')?;
        return Some((n, ma.parse().ok()?, mi.parse().ok()?));
    }
    None
}

/// A device node made for a test (the docker CLI wants paths below /dev), removed on drop.
struct NodeGuard(PathBuf);

impl Drop for NodeGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn device_throttles_land_in_blkio() {
    require_root!();
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let Some((name, major, minor)) = a_whole_disk() else {
        berth_testkit::skipped("no block device with a size in /sys/block");
        return;
    };
    let d = Daemon::new();
    let rdev = libc::makedev(major, minor);
    // The disk's own node when /dev has it, else a node of our own for it.
    let mut _guard = None;
    let own = PathBuf::from(format!("/dev/{name}"));
    let node = match std::fs::metadata(&own) {
        Ok(m) if m.file_type().is_block_device() && m.rdev() == rdev => own,
        _ => {
            let p = PathBuf::from(format!("/dev/berth-test-{}", std::process::id()));
            let c = std::ffi::CString::new(p.to_string_lossy().as_bytes()).unwrap();
            // SAFETY: mknod(2) with a valid path string.
            let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFBLK | 0o600, rdev) };
            assert_eq!(rc, 0, "mknod: {}", std::io::Error::last_os_error());
            _guard = Some(NodeGuard(p.clone()));
            p
        }
    };
    let n = node.display().to_string();
    d.docker_line(
        "run -d --name thr --network none --device-read-bps",
        &[
            &format!("{n}:1mb"),
            "--device-write-bps",
            &format!("{n}:2mb"),
            "--device-read-iops",
            &format!("{n}:300"),
            "--device-write-iops",
            &format!("{n}:400"),
            "busybox",
            "sleep",
            "1000",
        ],
    )
    .ok();
    let id = id_of(&d, "thr");
    let dev = format!("{major}:{minor}");
    for (file, want) in [
        ("blkio.throttle.read_bps_device", "1048576"),
        ("blkio.throttle.write_bps_device", "2097152"),
        ("blkio.throttle.read_iops_device", "300"),
        ("blkio.throttle.write_iops_device", "400"),
    ] {
        let text = cg_read(&d, "blkio", &id, file);
        assert!(
            text.lines().any(|l| l == format!("{dev} {want}")),
            "{file}: {text:?}, want {dev} {want}"
        );
    }
    let hc = d.inspect(
        "{{json .HostConfig.BlkioDeviceReadBps}} {{json .HostConfig.BlkioDeviceWriteIOps}}",
        "thr",
    );
    assert!(
        hc.contains(&format!("\"Path\":\"{n}\",\"Rate\":1048576"))
            && hc.contains(&format!("\"Path\":\"{n}\",\"Rate\":400")),
        "{hc}"
    );
    // A path that is not a device: a clear error, nothing created.
    let r = d.docker_line(
        "run --rm --device-read-bps /etc/hostname:1mb busybox true",
        &[],
    );
    assert_ne!(r.code, 0);
    assert!(!r.stderr.trim().is_empty());
    d.docker(&["rm", "-f", "thr"]).ok();
    finish(d);
}

/// Apparent disk usage of a directory tree, in bytes of allocated blocks.
fn du(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(m) = std::fs::symlink_metadata(p) else {
        return 0;
    };
    let mut n = m.blocks() * 512;
    if m.is_dir() {
        if let Ok(rd) = std::fs::read_dir(p) {
            for e in rd.flatten() {
                n += du(&e.path());
            }
        }
    }
    n
}

/// The size `system df -v` shows for a volume, e.g. "8.389MB".
fn df_volume_size(d: &Daemon, name: &str) -> Option<String> {
    let out = d.docker(&["system", "df", "-v"]).ok().stdout;
    let mut in_volumes = false;
    for l in out.lines() {
        if l.starts_with("Local Volumes space usage") {
            in_volumes = true;
            continue;
        }
        if in_volumes && l.starts_with("Build cache") {
            break;
        }
        let f: Vec<&str> = l.split_whitespace().collect();
        if in_volumes && f.first() == Some(&name) {
            return f.last().map(|s| s.to_string());
        }
    }
    None
}

fn reclaimed_mb(out: &str) -> f64 {
    let s = out
        .lines()
        .find_map(|l| l.strip_prefix("Total reclaimed space: "))
        .unwrap_or_else(|| panic!("no reclaimed space in {out}"));
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len()));
    let v: f64 = num.trim().parse().unwrap_or(0.0);
    match unit.trim() {
        "B" => v / 1e6,
        "kB" => v / 1e3,
        "MB" => v,
        "GB" => v * 1e3,
        u => panic!("unit {u} in {out}"),
    }
}

#[test]
fn system_prune_volumes_frees_disk() {
    let d = root_daemon!();
    for (cli, ctr) in [("docker", "p1"), ("berth", "p2")] {
        // An anonymous volume holding 8 MiB, its stopped container 4 MiB; a named volume in use by
        // nothing, which system prune keeps (Docker prunes only anonymous volumes there).
        d.docker(&[
            "run",
            "--name",
            ctr,
            "--network",
            "none",
            "-v",
            "/data",
            "busybox",
            "sh",
            "-c",
            "dd if=/dev/urandom of=/data/blob bs=1M count=8 2>/dev/null; dd if=/dev/urandom of=/rwfile bs=1M count=4 2>/dev/null",
        ])
        .ok();
        let named = format!("keep-{ctr}");
        d.docker(&["volume", "create", &named]).ok();
        let vol = d
            .inspect("{{range .Mounts}}{{.Name}}{{end}}", ctr)
            .trim()
            .to_string();
        let mp = PathBuf::from(
            d.docker_out("volume inspect -f", &["{{.Mountpoint}}", &vol])
                .trim(),
        );
        let before = du(&mp);
        assert!(before >= 8 << 20, "{} holds {before} bytes", mp.display());
        let shown = df_volume_size(&d, &vol).expect("volume in system df -v");
        assert!(shown.starts_with("8.") && shown.ends_with("MB"), "{shown}");
        let out = if cli == "docker" {
            d.docker_out("system prune --volumes -f", &[])
        } else {
            d.berth_line("system prune --volumes -f", &[]).ok().stdout
        };
        assert!(
            out.contains("Deleted Volumes:") && out.contains(&vol),
            "{out}"
        );
        // 8 MiB of volume and 4 MiB in the container's writable layer.
        let mb = reclaimed_mb(&out);
        assert!(mb >= 12.5, "{cli}: reclaimed {mb} MB: {out}");
        assert!(out.contains("Deleted Containers:"), "{out}");
        // The disk is really free: the volume's data is gone.
        assert!(!mp.exists(), "{} still exists", mp.display());
        assert_eq!(df_volume_size(&d, &vol), None);
        assert!(df_volume_size(&d, &named).is_some(), "named volume pruned");
        let ls = d.docker_out("ps -a --format", &["{{.Names}}"]);
        assert!(!ls.contains(ctr), "{ls}");
        d.docker(&["volume", "rm", &named]).ok();
    }
    finish(d);
}

#[test]
fn cp_racing_with_start_is_consistent() {
    let d = root_daemon!();
    let src = d.path("payload");
    std::fs::write(&src, "payload\n").unwrap();
    let host_before: Vec<_> = std::fs::read_dir("/tmp")
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().starts_with("payload-"))
        .collect();
    for i in 0..6 {
        let name = format!("race{i}");
        d.docker(&[
            "create",
            "--name",
            &name,
            "--network",
            "none",
            "busybox",
            "sh",
            "-c",
            "sleep 1000",
        ])
        .ok();
        let dest = format!("{name}:/tmp/payload-{i}");
        let src_s = src.display().to_string();
        // Start and copy at the same time (the copy sometimes before, sometimes during,
        // sometimes after the start).
        let (start, cp) = std::thread::scope(|s| {
            let a = s.spawn(|| d.docker(&["start", &name]));
            if i % 2 == 1 {
                std::thread::sleep(Duration::from_millis(5 * i as u64));
            }
            let b = s.spawn(|| d.docker(&["cp", &src_s, &dest]));
            (a.join().unwrap(), b.join().unwrap())
        });
        assert_eq!(start.code, 0, "start: {}", start.stderr);
        assert_eq!(cp.code, 0, "cp: {}", cp.stderr);
        // The file is in the running container's root, exactly once, with its content.
        assert_eq!(
            d.docker(&["exec", &name, "cat", &format!("/tmp/payload-{i}")])
                .ok()
                .stdout,
            "payload\n",
            "round {i}"
        );
        // And it stays there after a restart (it reached the container's layer).
        d.docker_line("restart -t 0", &[&name]).ok();
        assert_eq!(
            d.docker(&["exec", &name, "cat", &format!("/tmp/payload-{i}")])
                .ok()
                .stdout,
            "payload\n",
            "round {i} after restart"
        );
        d.docker(&["rm", "-f", &name]).ok();
    }
    // Nothing was written to the host's /tmp, no archive mount points are left.
    let host_after: Vec<_> = std::fs::read_dir("/tmp")
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().starts_with("payload-"))
        .collect();
    assert_eq!(host_before, host_after);
    let leftovers: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains("/archive-"))
        .map(str::to_string)
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    finish(d);
}
