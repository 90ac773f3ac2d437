//! End-to-end tests of `berthd` driven by the real docker CLI (28.2.2) and docker-py (7.1.0).
//!
//! Needs root, `/bin/busybox`, `docker` on PATH and `python3 -c 'import docker'`. Every test runs
//! its own daemon on temporary data and exec roots, a temporary socket and a unique cgroup
//! parent, and cleans everything up (containers, shims, mounts, cgroup directories).

mod common;
use common::*;

use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn version_info_images() {
    let d = root_daemon!();
    let v = d.docker(&["version"]).ok().stdout;
    assert!(v.contains("Server: Berth Engine"), "{v}");
    assert!(
        v.contains("API version:      1.51 (minimum version 1.24)"),
        "{v}"
    );
    let i = d.docker(&["info"]).ok().stdout;
    for want in [
        "Containers: 0",
        "Images: 1",
        "Cgroup Driver: cgroupfs",
        "Logging Driver: json-file",
        "OSType: linux",
    ] {
        assert!(i.contains(want), "missing {want:?} in {i}");
    }
    let imgs = d.docker(&["images"]).ok().stdout;
    let line = imgs.lines().nth(1).unwrap_or_default();
    assert!(line.starts_with("busybox      latest    "), "{imgs}");
    let f = d
        .docker(&["info", "-f", "{{.NCPU}} {{.OSType}} {{.DockerRootDir}}"])
        .ok()
        .stdout;
    assert_eq!(
        f.trim(),
        format!(
            "{} linux {}",
            std::thread::available_parallelism().unwrap(),
            d.path("data").display()
        )
    );
    // "name=cgroupns" says containers get a private cgroup namespace by default (dockerd: on
    // cgroup v2 hosts only); clients skip cgroupns tests on it (docker/cli e2e
    // TestRunWithCgroupNamespace).
    let opts = d
        .docker(&["info", "-f", "{{json .SecurityOptions}}"])
        .ok()
        .stdout;
    let own = d
        .docker(&["run", "--rm", "busybox", "cat", "/proc/self/cgroup"])
        .ok()
        .stdout;
    let private = own.lines().all(|l| l.ends_with(":/"));
    assert_eq!(opts.contains("name=cgroupns"), private, "{opts} {own}");
    // Docker's default seccomp profile, built in (`docker info`: "seccomp Profile: builtin").
    assert!(opts.contains("\"name=seccomp,profile=builtin\""), "{opts}");
    finish(d);
}

#[test]
fn run_rm_echo() {
    let d = root_daemon!();
    assert_eq!(d.docker_out("run --rm busybox echo hello", &[]), "hello\n");
    // The container was removed by the daemon (AutoRemove).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let ps = d.docker(&["ps", "-aq"]).ok().stdout;
        if ps.trim().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "container not removed: {ps}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Exit codes and stderr come through.
    let r = d.docker_line("run --rm busybox sh -c", &["echo oops >&2; exit 3"]);
    assert_eq!(r.code, 3);
    assert_eq!(r.stderr, "oops\n");
    // Env, workdir, user, network none.
    assert_eq!(
        d.docker_out(
            "run --rm --network none -e A=b -w /tmp -u nobody busybox sh -c",
            &["echo $A; pwd; id -u"]
        ),
        "b\n/tmp\n65534\n"
    );
    // The loopback-only namespace has lo up (as Docker's `none`); the default bridge network
    // adds eth0; host networking shares ours.
    for (net, inets) in [("none", 1), ("default", 2)] {
        let r = d
            .docker_line(
                "run --rm --network",
                &[net, "busybox", "/bin/busybox", "ip", "-o", "addr"],
            )
            .ok();
        assert!(
            r.stdout.contains("lo    inet 127.0.0.1/8"),
            "{net}: {}",
            r.stdout
        );
        assert_eq!(
            r.stdout.lines().filter(|l| l.contains("inet ")).count(),
            inets,
            "{}",
            r.stdout
        );
    }
    let r = d
        .docker_line(
            "run --rm --network host busybox /bin/busybox ip -o link",
            &[],
        )
        .ok();
    assert!(r.stdout.lines().count() >= 1);
    // The hostname is the short id; /etc/hosts names it.
    let r = d
        .docker_line("run --rm busybox sh -c", &["hostname; cat /etc/hosts"])
        .ok();
    let host = r.stdout.lines().next().unwrap().to_string();
    assert_eq!(host.len(), 12, "{}", r.stdout);
    // (Docker's: the container's address on the default bridge.)
    assert!(
        r.stdout.lines().any(|l| l.ends_with(&format!("\t{host}"))),
        "{}",
        r.stdout
    );
    finish(d);
}

#[test]
fn detached_lifecycle() {
    let d = root_daemon!();
    let id = d.docker_out("run -d --name t1 busybox sh -c", &["echo hi; sleep 100"]);
    let id = id.trim();
    assert_eq!(id.len(), 64);
    let ps = d.docker(&["ps"]).ok().stdout;
    assert!(ps.contains(" t1\n") && ps.contains(&id[..12]), "{ps}");
    let ps = d
        .docker(&["ps", "--format", "{{.Names}} {{.Image}} {{.State}}"])
        .ok()
        .stdout;
    assert_eq!(ps, "t1 busybox running\n");
    // The log may take a moment to be written.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let l = d.docker(&["logs", "t1"]).ok().stdout;
        if l == "hi\n" {
            break;
        }
        assert!(Instant::now() < deadline, "logs: {l:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(d.inspect("{{.State.Running}}", "t1"), "true\n");
    assert_eq!(
        d.inspect("{{.Name}} {{.Config.Image}} {{.Path}}", "t1"),
        "/t1 busybox sh\n"
    );
    // Name conflict.
    let r = d.docker_line("create --name t1 busybox", &[]);
    r.fails_with("is already in use");
    let t = Instant::now();
    assert_eq!(d.docker_out("stop -t 1 t1", &[]), "t1\n");
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(d.docker(&["wait", "t1"]).ok().stdout, "137\n");
    assert_eq!(
        d.inspect("{{.State.Status}} {{.State.ExitCode}}", "t1"),
        "exited 137\n"
    );
    let ps = d.docker_out("ps -a --format", &["{{.Names}} {{.Status}}"]);
    assert!(ps.starts_with("t1 Exited (137)"), "{ps}");
    assert_eq!(d.docker(&["rm", "t1"]).ok().stdout, "t1\n");
    assert_eq!(d.docker(&["ps", "-aq"]).ok().stdout, "");
    finish(d);
}

#[test]
fn kill_and_force_remove() {
    let d = root_daemon!();
    // PID 1 ignores signals it has no handler for: trap TERM.
    d.docker_line(
        "run -d --name k1 busybox sh -c",
        &["trap 'exit 143' TERM; while true; do sleep 0.1; done"],
    )
    .ok();
    let r = d.docker(&["rm", "k1"]);
    r.fails_with("container is running");
    d.docker_line("kill -s TERM k1", &[]).ok();
    assert_eq!(d.docker(&["wait", "k1"]).ok().stdout, "143\n");
    let r = d.docker(&["kill", "k1"]);
    r.stderr_contains("is not running");
    d.docker(&["start", "k1"]).ok();
    assert_eq!(d.inspect("{{.State.Running}}", "k1"), "true\n");
    d.docker(&["rm", "-f", "k1"]).ok();
    assert_eq!(d.docker(&["ps", "-aq"]).ok().stdout, "");
    finish(d);
}

#[test]
fn docker_py_run_and_logs() {
    let d = root_daemon!();
    let Some(r) = d.docker_py(
            r#"
import os, docker
c = docker.DockerClient(base_url=os.environ['BERTH_SOCK'])
assert c.ping()
print(c.containers.run('busybox', 'echo pyhello', remove=True).decode(), end='')
ct = c.containers.run('busybox', ['sh', '-c', 'echo out; echo err >&2; exit 4'], detach=True, name='py1')
print(ct.wait()['StatusCode'])
print(ct.logs(stdout=True, stderr=False).decode(), end='')
print(ct.logs(stdout=False, stderr=True).decode(), end='')
ct.reload()
print(ct.status, ct.attrs['State']['ExitCode'])
ct.remove()
print(len(c.containers.list(all=True)))
"#,
        ) else {
        return;
    };
    let r = r.ok();
    assert_eq!(
        r.stdout, "pyhello\n4\nout\nerr\nexited 4\n0\n",
        "{}",
        r.stderr
    );
    finish(d);
}

#[test]
fn daemon_restart_keeps_containers() {
    let mut d = root_daemon!();
    d.docker_line(
        "run -d --name r1 busybox sh -c",
        &["echo before; sleep 1; echo after; sleep 100"],
    )
    .ok();
    std::thread::sleep(Duration::from_millis(300));
    d.kill9();
    std::thread::sleep(Duration::from_millis(1500));
    d.start();
    assert_eq!(d.inspect("{{.State.Running}}", "r1"), "true\n");
    let ps = d.docker(&["ps", "--format", "{{.Names}}"]).ok().stdout;
    assert_eq!(ps, "r1\n");
    assert_eq!(d.docker(&["logs", "r1"]).ok().stdout, "before\nafter\n");
    d.docker_line("stop -t 1 r1", &[]).ok();
    assert_eq!(
        d.inspect("{{.State.Status}} {{.State.ExitCode}}", "r1"),
        "exited 137\n"
    );
    // A container that exits while the daemon is down is seen as exited.
    d.docker(&["start", "r1"]).ok();
    d.docker_line("run -d --name r2 busybox sh -c", &["sleep 1; exit 7"])
        .ok();
    d.kill9();
    std::thread::sleep(Duration::from_millis(1500));
    d.start();
    assert_eq!(d.docker(&["wait", "r2"]).ok().stdout, "7\n");
    assert_eq!(d.inspect("{{.State.Running}}", "r1"), "true\n");
    finish(d);
}

#[test]
fn bad_input() {
    let d = root_daemon!();
    let r = d.post("/v1.44/containers/create", "{bad");
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    assert!(r.contains("{\"message\":\"invalid JSON"), "{r}");
    let r = d.http("GET", "/containers/x/json", None).unwrap();
    assert!(r.starts_with("HTTP/1.1 404"), "{r}");
    assert!(r.contains("{\"message\":\"No such container: x\"}"), "{r}");
    assert!(
        r.to_lowercase().contains("content-type: application/json"),
        "{r}"
    );
    let r = d.http("GET", "/v1.12/version", None).unwrap();
    assert!(
        r.starts_with("HTTP/1.1 400") && r.contains("too old"),
        "{r}"
    );
    let r = d.http("GET", "/v1.24/nope", None).unwrap();
    assert!(r.starts_with("HTTP/1.1 404"), "{r}");
    let r = d.post(
        "/containers/create",
        r#"{"Image":"busybox","HostConfig":{"CapAdd":["CAP_BOGUS"]}}"#,
    );
    assert!(
        r.starts_with("HTTP/1.1 400") && r.contains("unknown capability"),
        "{r}"
    );
    // A volume driver Berth does not have: refused when a volume would be made with it (as
    // dockerd looks the plugin up only then); without volumes the container is made.
    let r = d.post(
        "/containers/create",
        r#"{"Image":"busybox","Volumes":{"/data":{}},"HostConfig":{"VolumeDriver":"nfs"}}"#,
    );
    assert!(
        r.starts_with("HTTP/1.1 400")
            && r.contains(r#"error looking up volume plugin nfs: plugin \"nfs\" not found"#),
        "{r}"
    );
    let r = d.post(
        "/containers/create?name=nfsnovol",
        r#"{"Image":"busybox","HostConfig":{"VolumeDriver":"nfs"}}"#,
    );
    assert!(r.starts_with("HTTP/1.1 201"), "{r}");
    let _ = d.http("DELETE", "/containers/nfsnovol?force=1", None);
    let r = d.post("/containers/create", r#"{"Image":"nope:1","Unknown":1}"#);
    assert!(
        r.starts_with("HTTP/1.1 404") && r.contains("No such image: nope:1"),
        "{r}"
    );
    d.docker(&["logs", "nope"])
        .failed_with(1, "No such container: nope");
    let r = d.http("HEAD", "/_ping", None).unwrap();
    assert!(
        r.contains("api-version: 1.51") || r.contains("Api-Version: 1.51"),
        "{r}"
    );
    // A second daemon on the same data root is refused.
    let o = d
        .daemon_cmd()
        .arg("-H")
        .arg(format!("unix://{}", d.path("other.sock").display()))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("already running"));
    // Still serving.
    d.docker(&["version"]).ok();
    finish(d);
}

#[test]
fn stdin_tty_follow_and_start_failure() {
    let d = root_daemon!();
    // stdin through attach (-i), closed at EOF.
    let r = d
        .docker_cmd(&["run", "-i", "--rm", "busybox", "cat"])
        .run_with_input(b"piped in\n")
        .ok();
    assert_eq!(r.stdout, "piped in\n");
    // A tty (the CLI's stdin is not a terminal, so no -i).
    assert_eq!(d.docker_out("run --rm -t busybox echo tty", &[]), "tty\r\n");
    // logs -f ends when the container exits; timestamps; tail.
    d.docker_line(
        "run -d --name f1 busybox sh -c",
        &["for i in 1 2 3; do echo l$i; sleep 0.2; done"],
    )
    .ok();
    let r = d.docker(&["logs", "-f", "f1"]).ok();
    assert_eq!(r.stdout, "l1\nl2\nl3\n");
    let r = d.docker_line("logs -t --tail 1 f1", &[]).ok();
    assert!(
        r.stdout.ends_with("Z l3\n") && r.stdout.starts_with("20"),
        "{}",
        r.stdout
    );
    // A command that cannot run: 127, and --rm still removes the container.
    let r = d.docker_line("run --rm busybox nosuchcmd", &[]);
    assert_eq!(r.code, 127, "{}", r.stderr);
    r.stderr_contains("executable file not found");
    let ps = d.docker_out("ps -a --format", &["{{.Names}}"]);
    assert_eq!(ps, "f1\n");
    finish(d);
}

#[test]
fn berth_cli_run_ps_logs_stop_wait_rm() {
    let d = root_daemon!();
    let r = d.berth_line("run --rm busybox echo hello", &[]).ok();
    assert_eq!(r.stdout, "hello\n");
    let r = d.berth_line("run --rm busybox sh -c", &["echo oops >&2; exit 3"]);
    assert_eq!(r.code, 3);
    assert_eq!(r.stderr, "oops\n");
    let id = d
        .berth_line("run -d --name c1 busybox sh -c", &["echo hi; sleep 100"])
        .ok()
        .stdout;
    assert_eq!(id.trim().len(), 64, "{id}");
    let ps = d.berth(&["ps"]).ok().stdout;
    assert!(ps.starts_with("CONTAINER ID   IMAGE"), "{ps}");
    assert!(
        ps.lines().any(|l| l.ends_with("c1") && l.contains("Up ")),
        "{ps}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if d.berth(&["logs", "c1"]).ok().stdout == "hi\n" {
            break;
        }
        assert!(Instant::now() < deadline, "no logs");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(d.berth_line("stop -t 1 c1", &[]).ok().stdout, "c1\n");
    assert_eq!(d.berth(&["wait", "c1"]).ok().stdout, "137\n");
    assert!(d.berth(&["ps", "-a"]).ok().stdout.contains("Exited (137)"));
    assert_eq!(d.berth(&["rm", "c1"]).ok().stdout, "c1\n");
    assert!(d.berth(&["ps", "-aq"]).ok().stdout.trim().is_empty());
    d.berth(&["run", "--rm", "nosuchimage"])
        .failed_with(125, "No such image");
    let r = d.berth(&["rm", "nosuch"]);
    r.failed_with(1, "No such container: nosuch");
    let v = d.berth(&["version"]).ok().stdout;
    assert!(
        v.contains("Server: Berth Engine") && v.contains("API version:      1.51"),
        "{v}"
    );
    assert_eq!(
        d.berth(&["version", "-f", "{{.Server.ApiVersion}}"])
            .ok()
            .stdout,
        "1.51\n"
    );
    let info = d.berth(&["info"]).ok().stdout;
    assert!(
        info.contains(" Containers: 0") && info.contains(" Cgroup Driver: cgroupfs"),
        "{info}"
    );
    assert_eq!(
        d.berth(&["info", "-f", "{{.OSType}}"]).ok().stdout,
        "linux\n"
    );
    // Without a daemon: a clear message naming the socket and how to start one.
    let o = Command::new(bin_dir().join("berth"))
        .args(["-H", "unix:///nonexistent/berth.sock", "ps"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("Is berthd running?"));
    finish(d);
}

/// The mount options of the overlay mounted at a container's rootfs.
fn rootfs_mount_options(d: &Daemon, id: &str) -> Option<String> {
    let target = d.path("exec").join("containers").join(id).join("rootfs");
    let target = target.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(target.as_str()))
        .map(|l| l.rsplit(' ').next().unwrap_or("").to_string())
}

#[test]
fn transient_layers_and_removal_that_a_crash_interrupts() {
    let mut d = root_daemon!();
    // `--rm` containers get a volatile writable layer (nothing of it is synced), others not.
    let rm = d
        .docker_out("run -d --rm busybox sleep 100", &[])
        .trim()
        .to_string();
    let keep = d
        .docker_out("run -d busybox sleep 100", &[])
        .trim()
        .to_string();
    let opts = rootfs_mount_options(&d, &rm).expect("--rm rootfs mounted");
    assert!(opts.contains("volatile"), "{opts}");
    let opts = rootfs_mount_options(&d, &keep).expect("rootfs mounted");
    assert!(!opts.contains("volatile"), "{opts}");
    d.docker(&["rm", "-f", &rm, &keep]).ok();
    // Removal returns before the storage is cleaned; image removal waits for it.
    d.docker(&["tag", "busybox", "other:1"]).ok();
    let c = d.docker_out("create other:1 true", &[]).trim().to_string();
    d.docker(&["rm", &c]).ok();
    d.docker(&["rmi", "other:1"]).ok();

    // A removal interrupted by a crash right after it was committed (the container's directory
    // renamed) is finished by the next start: the container is gone, and so is its storage.
    let c = d
        .docker_out("create --name half busybox true", &[])
        .trim()
        .to_string();
    let snap = d.path("data").join("snapshotter/containers").join(&c);
    assert!(snap.exists(), "{}", snap.display());
    d.kill9();
    let data = d.path("data").join("containers");
    std::fs::rename(data.join(&c), data.join(format!(".removing-{c}"))).unwrap();
    d.start();
    let ps = d.docker_out("ps -a --format", &["{{.Names}}"]);
    assert!(!ps.contains("half"), "{ps}");
    assert!(!snap.exists(), "snapshot left: {}", snap.display());
    assert!(!data.join(format!(".removing-{c}")).exists());
    // The name is free again.
    d.docker_line("create --name half busybox true", &[]).ok();
    d.docker(&["rm", "half"]).ok();
    for _ in 0..3 {
        d.docker_line("run --rm busybox true", &[]).ok();
    }
    finish(d);
}

#[test]
fn docker_py_attach_logs_without_stream() {
    let d = root_daemon!();
    let Some(r) = d.docker_py(
        r#"
import os, docker
c = docker.DockerClient(base_url=os.environ['BERTH_SOCK'])
ct = c.containers.run('busybox', ['sh', '-c', 'echo one; echo two >&2; sleep 100'], detach=True)
import time
for _ in range(100):
    if b'two' in ct.logs():
        break
    time.sleep(0.05)
# logs=1 without stream: what was written so far, then the session ends.
print(ct.attach(stdout=True, stderr=True, stream=False, logs=True).decode(), end='')
print(repr(ct.attach(stdout=True, stderr=False, stream=False, logs=True)))
# Neither logs nor stream: nothing.
print(repr(ct.attach(stdout=True, stderr=True, stream=False, logs=False)))
ct.remove(force=True)
"#,
    ) else {
        return;
    };
    assert_eq!(r.stdout, "one\ntwo\nb'one\\n'\nb''\n", "{}", r.stderr);
    finish(d);
}

#[test]
fn berth_ps_format_filter_last_like_docker() {
    let d = root_daemon!();
    d.docker_line("create --name psa --label k=v busybox true", &[])
        .ok();
    d.docker_line("run -d --name psb busybox sleep 100", &[])
        .ok();
    let same = |args: &[&str]| {
        let mut full = vec!["ps"];
        full.extend_from_slice(args);
        // ("Up N seconds" can tick between the two calls: asked again then.)
        let mut tries = 0;
        loop {
            let theirs = d.docker(&full).ok().stdout;
            let ours = d.berth(&full).ok().stdout;
            tries += 1;
            if ours == theirs || tries == 3 {
                assert_eq!(ours, theirs, "ps {args:?}");
                break ours;
            }
        }
    };
    let out = same(&[
        "-a",
        "--format",
        "{{.Names}} {{.Image}} {{.State}} {{.Labels}}",
    ]);
    assert!(out.contains("psa busybox created k=v"), "{out}");
    assert_eq!(same(&["--format", "{{.Names}}"]), "psb\n");
    assert_eq!(
        same(&["-a", "--filter", "name=psa", "--format", "{{.Names}}"]),
        "psa\n"
    );
    assert_eq!(same(&["-a", "-f", "label=k=v", "-q"]).lines().count(), 1);
    assert_eq!(same(&["-n", "1", "--format", "{{.Names}}"]), "psb\n");
    assert_eq!(same(&["-l", "--format", "{{.Names}}"]), "psb\n");
    same(&["-a", "--format", "{{.ID}}\t{{.Command}}\t{{.Status}}"]);
    same(&["-a", "--format", "table {{.Names}}\t{{.Image}}"]);
    same(&["-a", "--format", "{{.CreatedAt}}"]);
    let header = d.berth(&["ps"]).ok().stdout;
    assert_eq!(
        header
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        d.docker(&["ps"])
            .ok()
            .stdout
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()
    );
    d.docker_line("rm -f psa psb", &[]).ok();
    finish(d);
}
