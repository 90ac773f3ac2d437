//! The Debian package, built from the workspace's debug binaries (`packaging/deb/build-deb
//! --bin-dir target/debug --fast`), checked file by file, then installed, upgraded, removed
//! and purged with dpkg in a throw-away system: private mount, network and pid namespaces
//! where /usr, /etc and /var are overlays of the host's (the host's files and dpkg database
//! never change), /run is a fresh tmpfs and /var/lib/berth a directory of the test. With
//! systemd not running there, the package runs berthd through /etc/init.d/berthd. Ending the
//! pid namespace ends every process the test started.

use berth_testkit::CommandRun;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

fn ws() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Builds the binaries the package needs (debug) and returns their directory.
fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let me = PathBuf::from(env!("CARGO_BIN_EXE_berth-dist"));
        let dir = me.parent().unwrap().to_path_buf();
        let target = dir.parent().unwrap().to_path_buf();
        // The test daemons' set plus this package (`bins::build`: one cargo run per test run).
        let mut packages = berth_testkit::bins::BINARIES.to_vec();
        packages.push("berth-dist");
        berth_testkit::bins::build(&packages);
        berth_testkit::bins::build_static("berth-init", &target);
        dir
    })
}

fn build_deb(version: &str, out: &Path) -> PathBuf {
    let o = Command::new("bash")
        .arg(ws().join("packaging/deb/build-deb"))
        .arg("--bin-dir")
        .arg(bin_dir())
        .args(["--version", version, "--fast", "--out"])
        .arg(out)
        .output_ok();
    PathBuf::from(String::from_utf8_lossy(&o.stdout).trim())
}

fn out(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&cmd.output_ok().stdout).into_owned()
}

#[test]
fn package_contents() {
    berth_testkit::require_programs!("dpkg-shlibdeps");
    let dir = tempfile::tempdir().unwrap();
    let deb = build_deb("0.1.0~contents", dir.path());
    let size = std::fs::metadata(&deb).unwrap().len();
    eprintln!("package (debug binaries, gzip -1): {} KiB", size / 1024);
    let listing = out(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    let files: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .collect();
    let mode_of = |path: &str| {
        listing
            .lines()
            .find(|l| l.split_whitespace().nth(5) == Some(path))
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or_else(|| panic!("{path} not in the package:\n{listing}"))
            .to_string()
    };
    for (path, mode) in [
        ("./usr/bin/berth", "-rwxr-xr-x"),
        ("./usr/bin/berthd", "-rwxr-xr-x"),
        ("./usr/bin/berth-runtime", "-rwxr-xr-x"),
        ("./usr/libexec/berth/berth-shim", "-rwxr-xr-x"),
        ("./usr/libexec/berth/berth-init", "-rwxr-xr-x"),
        ("./usr/lib/systemd/system/berthd.service", "-rw-r--r--"),
        ("./usr/lib/systemd/system/berthd.socket", "-rw-r--r--"),
        ("./etc/init.d/berthd", "-rwxr-xr-x"),
        ("./etc/default/berthd", "-rw-r--r--"),
        ("./etc/logrotate.d/berthd", "-rw-r--r--"),
        ("./etc/berth/daemon.json", "-rw-r--r--"),
        (
            "./usr/share/bash-completion/completions/berth",
            "-rw-r--r--",
        ),
        (
            "./usr/share/bash-completion/completions/berthd",
            "-rw-r--r--",
        ),
        ("./usr/share/zsh/vendor-completions/_berth", "-rw-r--r--"),
        (
            "./usr/share/fish/vendor_completions.d/berth.fish",
            "-rw-r--r--",
        ),
        ("./usr/share/man/man1/berth.1.gz", "-rw-r--r--"),
        ("./usr/share/man/man1/berth-run.1.gz", "-rw-r--r--"),
        ("./usr/share/man/man5/berth-daemon.json.5.gz", "-rw-r--r--"),
        ("./usr/share/man/man8/berthd.8.gz", "-rw-r--r--"),
        ("./usr/share/doc/berth/copyright", "-rw-r--r--"),
        ("./usr/share/doc/berth/changelog.Debian.gz", "-rw-r--r--"),
    ] {
        assert_eq!(mode_of(path), mode, "{path}");
    }
    // Everything root's.
    for l in listing.lines() {
        assert_eq!(l.split_whitespace().nth(1), Some("root/root"), "{l}");
    }
    assert!(!files
        .iter()
        .any(|f| f.starts_with("./var/") || f.starts_with("./run/")));
    let info = out(Command::new("dpkg-deb").arg("--info").arg(&deb));
    assert!(info.contains("Package: berth"), "{info}");
    assert!(info.contains("Version: 0.1.0~contents"), "{info}");
    assert!(info.contains("Depends: libc6"), "{info}");
    assert!(info.contains("passwd"), "{info}");
    let x = tempfile::tempdir().unwrap();
    out(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(x.path()));
    let conffiles = std::fs::read_to_string(x.path().join("conffiles")).unwrap();
    assert_eq!(
        conffiles,
        "/etc/berth/daemon.json\n/etc/default/berthd\n/etc/init.d/berthd\n/etc/logrotate.d/berthd\n"
    );
    for s in ["postinst", "prerm", "postrm"] {
        Command::new("sh")
            .arg("-n")
            .arg(x.path().join(s))
            .output_ok();
    }
    // The shipped configuration passes berthd's own check; the units say what the issue
    // asks for.
    let data = tempfile::tempdir().unwrap();
    out(Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(data.path()));
    Command::new(data.path().join("usr/bin/berthd"))
        .arg("--validate")
        .arg("--config-file")
        .arg(data.path().join("etc/berth/daemon.json"))
        .output_ok();
    let units: [(&str, &[&str]); 2] = [
        (
            "berthd.service",
            &[
                "Type=notify",
                "ExecStart=/usr/bin/berthd -H fd://",
                "ExecReload=/bin/kill -s HUP $MAINPID",
                "KillMode=process",
                "Requires=berthd.socket",
            ],
        ),
        (
            "berthd.socket",
            &[
                "ListenStream=/run/berth/berth.sock",
                "SocketMode=0660",
                "SocketGroup=berth",
            ],
        ),
    ];
    for (name, lines) in units {
        let unit =
            std::fs::read_to_string(data.path().join("usr/lib/systemd/system").join(name)).unwrap();
        for l in lines {
            assert!(unit.lines().any(|x| x == *l), "{l} in {name}");
        }
    }
    // berth-init runs in images without a libc: it must be static.
    let f = out(Command::new("file").arg(data.path().join("usr/libexec/berth/berth-init")));
    assert!(
        f.contains("statically linked") || f.contains("static-pie"),
        "{f}"
    );
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok()
    {
        let o = Command::new("systemd-analyze")
            .arg("verify")
            .arg("--man=no")
            .arg(data.path().join("usr/lib/systemd/system/berthd.socket"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        // Only the unit's own problems count (verify also looks at the host's units).
        assert!(!err.contains("berthd.socket:"), "{err}");
    }
}

/// The install/upgrade/remove/purge cycle, as one script in the throw-away system. It prints
/// `STEP name value` lines that the test checks.
const CYCLE: &str = r#"
set -euo pipefail
W=$WORK
for d in usr etc var; do
  mkdir -p "$W/$d.upper" "$W/$d.work"
  mount -t overlay overlay -o "lowerdir=/$d,upperdir=$W/$d.upper,workdir=$W/$d.work" "/$d"
done
mount -t tmpfs tmpfs /run
mkdir -p /var/lib/berth "$W/berth-data"
mount --bind "$W/berth-data" /var/lib/berth
ip link set lo up
# Services start as on a real system (this host keeps them from starting in images).
rm -f /usr/sbin/policy-rc.d
unset BERTH_HOST DOCKER_HOST
step() { echo "STEP $*"; }

dpkg -i "$DEB1" >"$W/dpkg1.log" 2>&1 || { cat "$W/dpkg1.log"; exit 1; }
step installed "$(dpkg-query -W -f '${Version} ${db:Status-Abbrev}' berth)"
step group "$(getent group berth | cut -d: -f1)"
# No init system runs here (invoke-rc.d starts nothing): started by hand, as the README says.
service berthd start >/dev/null
step socket "$(stat -c '%a %G' /run/berth/berth.sock)"
step service "$(service berthd status >/dev/null && echo running)"
step validate "$(berthd --validate 2>&1)"
step compat "$(test -e /run/docker.sock && echo present || echo absent)"

mkdir -p "$W/rootfs/bin" "$W/rootfs/etc"
cp /bin/busybox "$W/rootfs/bin/busybox"
for a in sh echo sleep cat; do ln -s busybox "$W/rootfs/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' >"$W/rootfs/etc/passwd"
tar -C "$W/rootfs" -cf "$W/busybox.tar" .
berth import -c 'CMD ["sh"]' "$W/busybox.tar" busybox:latest >/dev/null
step run "$(berth run --rm busybox echo hi)"
berth run -d --name keeper busybox sleep 1000 >/dev/null
pid=$(berth inspect -f '{{.State.Pid}}' keeper)
step keeper "$(berth inspect -f '{{.Id}}' keeper)"
d1=$(cat /run/berth/berthd.pid)

service berthd restart >/dev/null
d2=$(cat /run/berth/berthd.pid)
step restart "$([ "$d1" != "$d2" ] && echo new-daemon) $([ "$(berth inspect -f '{{.State.Pid}}' keeper)" = "$pid" ] && echo same-container)"
step exec1 "$(berth exec keeper echo alive)"

service berthd reload >/dev/null
sleep 0.5
step reload "$(grep -c 'reloaded /etc/berth/daemon.json' /var/log/berthd.log)"

dpkg -i "$DEB2" >"$W/dpkg2.log" 2>&1 || { cat "$W/dpkg2.log"; exit 1; }
d3=$(cat /run/berth/berthd.pid)
step upgraded "$(dpkg-query -W -f '${Version}' berth) $([ "$d3" != "$d2" ] && echo new-daemon) $([ "$(berth inspect -f '{{.State.Pid}}' keeper)" = "$pid" ] && kill -0 "$pid" && echo same-container)"
step exec2 "$(berth exec keeper echo still-alive)"

dpkg -r berth >"$W/dpkg3.log" 2>&1 || { cat "$W/dpkg3.log"; exit 1; }
step removed "$(dpkg-query -W -f '${db:Status-Abbrev}' berth 2>/dev/null)"
step binaries "$(ls /usr/bin/berthd /usr/libexec/berth/berth-shim 2>/dev/null | wc -l)"
step conffile "$(test -f /etc/berth/daemon.json && echo kept)"
step data "$(ls /var/lib/berth/containers | grep -c .)"
step daemon-after-remove "$(kill -0 "$d3" 2>/dev/null && echo running || echo stopped)"
step container-after-remove "$(kill -0 "$pid" 2>/dev/null && echo running || echo stopped)"

dpkg -i "$DEB2" >"$W/dpkg4.log" 2>&1 || { cat "$W/dpkg4.log"; exit 1; }
service berthd start >/dev/null
step reinstalled "$(berth ps -a --format '{{.Names}} {{.State}}')"

dpkg -P berth >"$W/dpkg5.log" 2>&1 || { cat "$W/dpkg5.log"; exit 1; }
step purged "$(dpkg-query -W berth >/dev/null 2>&1 && echo known || echo gone)"
step purged-data "$(ls -A /var/lib/berth 2>/dev/null | wc -l)"
step purged-etc "$(test -e /etc/berth && echo left || echo gone)"
step purged-group "$(getent group berth >/dev/null && echo left || echo gone)"
step purged-bridge "$(ip link show berth0 >/dev/null 2>&1 && echo left || echo gone)"
step processes "$(ps -e -o comm= | grep -c -E '^berth' || true)"
"#;

#[test]
fn install_upgrade_remove_purge() {
    berth_testkit::require_root!("dpkg-shlibdeps");
    // On the host's file system (overlay upper directories cannot be on /tmp if it is an
    // overlay itself, and /var/lib/berth needs a file system overlayfs stacks on).
    let dir = tempfile::Builder::new()
        .prefix("berth-pkgtest")
        .tempdir_in(std::env::temp_dir())
        .unwrap();
    let debs = dir.path().join("debs");
    let deb1 = build_deb("0.1.0~pkgtest1", &debs);
    let deb2 = build_deb("0.1.0~pkgtest2", &debs);
    let work = dir.path().join("sys");
    std::fs::create_dir_all(&work).unwrap();
    let started = std::time::Instant::now();
    let o = Command::new("unshare")
        .args([
            "--mount",
            "--net",
            "--pid",
            "--fork",
            "--mount-proc",
            "--propagation",
            "private",
            "bash",
            "-c",
            CYCLE,
        ])
        .env("WORK", &work)
        .env("DEB1", &deb1)
        .env("DEB2", &deb2)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    let log = std::fs::read_to_string(work.join("var.upper/log/berthd.log")).unwrap_or_default();
    eprintln!(
        "install/upgrade/remove/purge cycle: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // The containers' cgroups, whatever happened (the pid namespace ended their processes).
    let keeper = stdout
        .lines()
        .find_map(|l| l.strip_prefix("STEP keeper "))
        .map(str::to_string);
    let mut left = Vec::new();
    if let Some(id) = &keeper {
        if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
            for h in rd.flatten() {
                let p = h.path().join("berth").join(id);
                if p.exists() {
                    let _ = std::fs::remove_dir(&p);
                    left.push(p.display().to_string());
                }
            }
        }
    }
    assert!(
        o.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}\nberthd.log:\n{log}"
    );
    let step = |name: &str| -> String {
        stdout
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!("STEP {name} "))
                    .or_else(|| (l == format!("STEP {name}")).then_some(""))
            })
            .unwrap_or_else(|| panic!("no step {name}:\n{stdout}"))
            .to_string()
    };
    // Each step of the script and what it printed.
    for (name, want, why) in [
        ("installed", "0.1.0~pkgtest1 ii ", ""),
        ("group", "berth", ""),
        ("socket", "660 berth", ""),
        ("service", "running", ""),
        ("validate", "configuration OK", ""),
        ("compat", "absent", "docker-compat is opt-in"),
        ("run", "hi", ""),
        ("restart", "new-daemon same-container", ""),
        ("exec1", "alive", ""),
        ("reload", "1", &log),
        ("upgraded", "0.1.0~pkgtest2 new-daemon same-container", ""),
        ("exec2", "still-alive", ""),
        ("removed", "rc ", ""),
        ("binaries", "0", ""),
        ("conffile", "kept", ""),
        ("data", "1", "the container's record stays"),
        ("daemon-after-remove", "stopped", ""),
        ("container-after-remove", "stopped", ""),
        ("reinstalled", "keeper exited", ""),
        ("purged", "gone", ""),
        ("purged-data", "0", ""),
        ("purged-etc", "gone", ""),
        ("purged-group", "gone", ""),
        ("purged-bridge", "gone", ""),
        ("processes", "0", ""),
    ] {
        assert_eq!(step(name), want, "step {name}: {why}");
    }
    assert!(left.is_empty(), "cgroups left behind: {left:?}");
    // Nothing of the throw-away system is mounted on the host.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&dir.path().display().to_string()));
}
