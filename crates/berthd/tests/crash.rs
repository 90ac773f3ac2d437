//! Crash safety: a container whose shim dies, and the crash matrix: berthd killed (by a
//! failpoint, `BERTHD_FAILPOINTS`, see `berthd::failpoint`) at each step of create, start,
//! stop, rm, pull, push, build, commit, volume create/remove and network connect, then
//! restarted: nothing lost, nothing orphaned (processes, cgroups, mounts, links, runtime
//! state, directories, snapshots, blobs, volumes, temporary files), the operation can be
//! retried.

mod common;
use common::*;
use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::Duration;

fn ids(d: &Daemon, all: bool) -> BTreeSet<String> {
    let args: &[&str] = if all {
        &["ps", "-aq", "--no-trunc"]
    } else {
        &["ps", "-q", "--no-trunc"]
    };
    d.docker(args)
        .ok()
        .stdout
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// What exists of the daemon's containers that its container list does not account for:
/// processes (other than the daemon) in its cgroups or naming its directories and no
/// running container, cgroups, mounts and runtime states of containers that are not
/// running, directories and snapshots of containers it does not list, intents left over.
fn orphans(d: &Daemon) -> Vec<String> {
    let running = ids(d, false);
    let all = ids(d, true);
    let me = d.child.as_ref().map(|c| c.id()).unwrap_or(0);
    let of_running = |s: &str| running.iter().any(|id| s.contains(id.as_str()));
    let mut out = Vec::new();
    for l in d.leaks.leaks_now() {
        use berth_testkit::leak::LeakKind::*;
        let keep = match l.kind {
            Process => {
                let pid: u32 = l.what.split(' ').next().unwrap().parse().unwrap();
                let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
                // The daemon's standby shim, waiting for the next start (engine::standby).
                let standby = l.what.contains(berth_shim::sys::STANDBY_ID)
                    && berth_testkit::process::parent_of(pid) == Some(me);
                pid == me || standby || of_running(&l.what) || of_running(&cg)
            }
            Cgroup => {
                l.what.trim_end_matches('/').ends_with(&d.cgroup_parent) || of_running(&l.what)
            }
            Mount => of_running(&l.what),
            // A running container's host-side veth: `vb<id[..6]><network id[..5]>`.
            Link | NftTable => {
                d.bridge
                    .as_ref()
                    .is_some_and(|b| l.what.contains(b.as_str()))
                    || running
                        .iter()
                        .any(|id| l.what.contains(&format!("vb{}", &id[..6])))
            }
            Netns => of_running(&l.what),
        };
        if !keep {
            out.push(l.to_string());
        }
    }
    for (dir, allowed) in [
        ("exec/runtime", &running),
        ("exec/containers", &all),
        ("data/containers", &all),
        ("data/snapshotter/containers", &all),
    ] {
        for e in list_dir(&d.path(dir)) {
            // `@…`: the runtime's own (its seccomp cache).
            if !allowed.contains(&e) && !e.starts_with('@') {
                out.push(format!("{dir}/{e}"));
            }
        }
    }
    for e in list_dir(&d.path("data/journal")) {
        out.push(format!("data/journal/{e}"));
    }
    // Pending blobs, the credentials of pulls and pushes, build work directories and
    // build step containers: none outlives its operation.
    for dir in ["data/blobs/ingest", "exec/auth", "exec/build-runtime"] {
        for e in list_dir(&d.path(dir)) {
            if !e.starts_with('@') {
                out.push(format!("{dir}/{e}"));
            }
        }
    }
    for e in build_leftovers(d) {
        out.push(format!("data/tmp/{e}"));
    }
    for e in list_dir(&d.path("data/volumes")) {
        if e.starts_with(".tmp-") || e.starts_with(".trash-") {
            out.push(format!("data/volumes/{e}"));
        }
    }
    out
}

#[track_caller]
fn assert_no_orphans(d: &Daemon, when: &str) {
    let mut left = Vec::new();
    let ok = wait_until(Duration::from_secs(10), || {
        left = orphans(d);
        left.is_empty()
    });
    assert!(
        ok,
        "{when}: orphans {left:#?}\n{}",
        std::fs::read_to_string(d.path("berthd.log")).unwrap_or_default()
    );
}

/// No container, no volume and nothing orphaned (`when` names the moment).
#[track_caller]
fn assert_all_gone(d: &Daemon, when: &str) {
    assert!(ids(d, true).is_empty());
    assert_eq!(d.docker_out("volume ls -q", &[]), "");
    assert_no_orphans(d, when);
}

/// A build context holding only `dockerfile`: its path.
fn dockerfile_context(d: &Daemon, dockerfile: &str) -> String {
    d.context("ctx", &[("Dockerfile", dockerfile)])
        .display()
        .to_string()
}

/// `cmd` started with its output thrown away.
fn spawn_quiet(cmd: &mut std::process::Command) -> std::process::Child {
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// `/f` of a new container of `image`.
fn cat_f(d: &Daemon, image: &str) -> String {
    d.docker_out("run --rm", &[image, "cat", "/f"])
}

fn container_id(d: &Daemon, name: &str) -> String {
    d.inspect("{{.Id}}", name).trim().to_string()
}

fn shim_pid(d: &Daemon, id: &str) -> i32 {
    let p = d.path(&format!("exec/containers/{id}/shim/shim.pid"));
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .parse()
        .unwrap()
}

/// Item 2: `kill -9` of a container's shim. berthd kills the container's processes and
/// deletes it from the runtime (state, cgroups), records the exit, then applies the restart
/// policy; `stop` and `rm -f` work afterwards and nothing is orphaned.
#[test]
fn dead_shim_kills_and_deletes_its_container() {
    let d = root_daemon!();
    d.docker_line("run -d --name plain busybox sleep 1000", &[])
        .ok();
    d.docker_line("run -d --name alw --restart always busybox sleep 1000", &[])
        .ok();
    let plain = container_id(&d, "plain");
    let alw = container_id(&d, "alw");
    // An exec'd process lives in the container's cgroups, not under the init.
    d.docker_line("exec -d plain sleep 999", &[]).ok();
    let init: i32 = d.inspect("{{.State.Pid}}", "plain").trim().parse().unwrap();

    kill_pid(shim_pid(&d, &plain));
    wait("the exit of a container whose shim died", || {
        d.inspect("{{.State.Status}}", "plain") == "exited\n"
    });
    assert!(
        d.inspect("{{.State.Error}}", "plain")
            .contains("lost the container's shim"),
        "{}",
        d.inspect("{{json .State}}", "plain")
    );
    wait("the init of the shimless container killed", || !alive(init));
    wait(
        "the runtime's state of the shimless container deleted",
        || !d.path(&format!("exec/runtime/{plain}")).exists(),
    );
    // `start` creates it again (no "already exists").
    d.docker_line("start plain", &[]).ok();
    assert_eq!(d.inspect("{{.State.Running}}", "plain"), "true\n");

    let init: i32 = d.inspect("{{.State.Pid}}", "alw").trim().parse().unwrap();
    kill_pid(shim_pid(&d, &alw));
    wait(
        "the restart of an `always` container whose shim died",
        || {
            let s = d
                .docker(&[
                    "inspect",
                    "-f",
                    "{{.State.Running}} {{.RestartCount}} {{.State.Pid}}",
                    "alw",
                ])
                .stdout;
            s.starts_with("true 1 ") && s.trim_end() != format!("true 1 {init}")
        },
    );
    wait("the old init of `alw` killed", || !alive(init));
    d.docker_line("stop -t 1 alw", &[]).ok();
    d.docker_line("rm -f plain alw", &[]).ok();
    assert_no_orphans(&d, "after rm");
    finish(d);
}

fn kill_pid(pid: i32) {
    // SAFETY: kill(2) of a process the test looked up.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
}

const FAILPOINTS: &str = "BERTHD_FAILPOINTS";

/// One test per failpoint: `test_name => scenario(args);`.
macro_rules! failpoint_tests {
    ($($name:ident => $scenario:ident($($arg:expr),*);)*) => {
        $(
            #[test]
            fn $name() {
                $scenario($($arg),*);
            }
        )*
    };
}

/// Restarts the daemon with the failpoint `fp` armed (its other variables kept).
fn arm(d: &mut Daemon, fp: &str) {
    d.kill9();
    d.env.retain(|(k, _)| k != FAILPOINTS);
    d.env.push((FAILPOINTS.into(), fp.into()));
    d.start();
}

/// Waits until the armed daemon killed itself at its failpoint, then starts it unarmed.
#[track_caller]
fn crashed(d: &mut Daemon, fp: &str) {
    let child = d.child.as_mut().unwrap();
    let mut status = None;
    wait_until(Duration::from_secs(20), || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    assert_eq!(
        status.and_then(|s| s.signal()),
        Some(libc::SIGKILL),
        "failpoint {fp} not reached: {}",
        std::fs::read_to_string(d.path("berthd.log")).unwrap_or_default()
    );
    d.child = None;
    d.env.retain(|(k, _)| k != FAILPOINTS);
    d.start();
}

/// Runs `docker WORDS REST` on the daemon armed to kill itself at `fp`: the command fails,
/// the daemon dies at the failpoint and is started again unarmed.
#[track_caller]
fn crash_at(d: &mut Daemon, fp: &str, words: &str, rest: &[&str]) {
    arm(d, fp);
    let r = d.docker_line(words, rest);
    assert_ne!(r.code, 0, "{r:?}");
    crashed(d, fp);
}

/// A create interrupted at `fp`: after the restart no trace of it (directories, snapshot,
/// anonymous volume), and the same create succeeds.
fn create_crash(fp: &str) {
    let mut d = root_daemon!();
    crash_at(
        &mut d,
        fp,
        "create --name ctr -v /data busybox sleep 1000",
        &[],
    );
    assert_all_gone(&d, "after the restart");
    d.docker_line("create --name ctr -v /data busybox sleep 1000", &[])
        .ok();
    d.docker_line("start ctr", &[]).ok();
    d.docker_line("rm -f -v ctr", &[]).ok();
    assert_eq!(d.docker_out("volume ls -q", &[]), "");
    assert_no_orphans(&d, "after rm");
    finish(d);
}

failpoint_tests! {
    crash_create_dir => create_crash("create.dir");
    crash_create_snapshot => create_crash("create.snapshot");
    crash_create_participants => create_crash("create.participants");
}

/// Item 3, a start interrupted at `fp` (before the shim, between the shim and the start,
/// after the start): after the restart the container is not running and nothing of the
/// attempt is left (shim, init blocked on the start fifo, runtime state, cgroups, mounts);
/// `start` succeeds, and `rm -f` leaves nothing.
fn start_crash(fp: &str) {
    let mut d = root_daemon!();
    d.docker_line("create --name ctr -p 127.0.0.1::80 busybox sleep 1000", &[])
        .ok();
    crash_at(&mut d, fp, "start ctr", &[]);
    assert_eq!(d.inspect("{{.State.Running}}", "ctr"), "false\n");
    assert_no_orphans(&d, "after the restart");
    d.docker_line("start ctr", &[]).ok();
    assert_eq!(d.inspect("{{.State.Running}}", "ctr"), "true\n");
    d.docker_line("exec ctr true", &[]).ok();
    d.docker_line("rm -f ctr", &[]).ok();
    assert_no_orphans(&d, "after rm");
    finish(d);
}

failpoint_tests! {
    crash_start_mounted => start_crash("start.mounted");
    crash_start_between_shim_and_start => start_crash("start.shim");
    crash_start_started => start_crash("start.started");
}

/// `stop` interrupted after the stop signal: the container's exit (while the daemon was
/// down) is recorded at restart; stopping again works, and `rm` leaves nothing.
#[test]
fn crash_stop_signalled() {
    let mut d = root_daemon!();
    d.docker_line(
        "run -d --name ctr busybox sh -c",
        &["trap 'exit 7' TERM; sleep 1000 & wait"],
    )
    .ok();
    crash_at(&mut d, "stop.signalled", "stop -t 30 ctr", &[]);
    wait("the exit recorded", || {
        d.inspect("{{.State.Status}} {{.State.ExitCode}}", "ctr") == "exited 7\n"
    });
    d.docker_line("stop ctr", &[]).ok();
    assert_no_orphans(&d, "after the restart");
    d.docker_line("start ctr", &[]).ok();
    d.docker_line("rm -f ctr", &[]).ok();
    assert_no_orphans(&d, "after rm");
    finish(d);
}

/// A container's exit recorded, its teardown (shim, rootfs, cgroups, runtime state)
/// interrupted: finished at the restart; the container starts again.
#[test]
fn crash_exit_recorded() {
    let mut d = root_daemon!();
    arm(&mut d, "exit.recorded");
    d.docker_line("run -d --name ctr busybox sh -c", &["sleep 1; exit 3"])
        .ok();
    crashed(&mut d, "exit.recorded");
    assert_eq!(
        d.inspect("{{.State.Status}} {{.State.ExitCode}}", "ctr"),
        "exited 3\n"
    );
    assert_no_orphans(&d, "after the restart");
    d.docker_line("start ctr", &[]).ok();
    assert_eq!(d.docker_out("wait ctr", &[]), "3\n");
    d.docker_line("rm -f ctr", &[]).ok();
    assert_no_orphans(&d, "after rm");
    finish(d);
}

/// `rm -f -v` interrupted before or after its commit (the rename of its directory): the
/// container is either still there and removable, or gone with everything it had.
fn remove_crash(fp: &str) {
    let mut d = root_daemon!();
    d.docker_line("run -d --name ctr -v /data busybox sleep 1000", &[])
        .ok();
    crash_at(&mut d, fp, "rm -f -v ctr", &[]);
    if !ids(&d, true).is_empty() {
        d.docker_line("rm -f -v ctr", &[]).ok();
    }
    assert_all_gone(&d, "after rm");
    d.docker_line("run -d --name ctr busybox sleep 1000", &[])
        .ok();
    d.docker_line("rm -f ctr", &[]).ok();
    finish(d);
}

failpoint_tests! {
    crash_remove_participants => remove_crash("remove.participants");
    crash_remove_renamed => remove_crash("remove.renamed");
}

/// A removal committed (`remove.renamed`: the daemon dies right after renaming the data
/// directory) while the container's shim cannot be asked (its socket not bound yet, as
/// when a crash cuts the shim's start short, here removed by hand): the restart's cleanup
/// must end the shim by its process before it removes the shim's directory, since nothing
/// could find it afterwards.
#[test]
fn crash_remove_renamed_with_an_unreachable_shim() {
    let mut d = root_daemon!();
    d.docker_line(
        "run -d --rm --name ctr --network none busybox sleep 1000",
        &[],
    )
    .ok();
    let id = container_id(&d, "ctr");
    let shim = shim_pid(&d, &id);
    arm(&mut d, "remove.renamed");
    // The exit of a `--rm` container removes it, the shim left for the cleanup.
    let _ = d.docker_line("kill ctr", &[]);
    let child = d.child.as_mut().unwrap();
    let mut status = None;
    wait_until(Duration::from_secs(20), || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    assert_eq!(status.and_then(|s| s.signal()), Some(libc::SIGKILL));
    d.child = None;
    assert!(alive(shim), "the shim waits for its cleanup");
    std::fs::remove_file(d.path(&format!("exec/containers/{id}/shim/shim.sock"))).unwrap();
    d.env.retain(|(k, _)| k != FAILPOINTS);
    d.start();
    assert_all_gone(&d, "after the restart");
    assert!(
        wait_until(Duration::from_secs(5), || !alive(shim)),
        "the shim {shim} outlived its container"
    );
    finish(d);
}

/// What the chaos test once found after a crash: a shim, its runtime state and cgroups,
/// with no record, no data directory and no run-time directory (the shim's socket) left
/// (made here by hand with the daemon down). The daemon start ends such a task: it finds
/// the shim by its process, kills it, deletes the runtime's state and the snapshot.
#[test]
fn unrecorded_shim_and_runtime_state_swept_at_start() {
    let mut d = root_daemon!();
    d.docker_line("run -d --name ctr --network none busybox sleep 1000", &[])
        .ok();
    let id = container_id(&d, "ctr");
    let shim = shim_pid(&d, &id);
    d.kill9();
    let exec = d.path(&format!("exec/containers/{id}"));
    let rootfs =
        std::ffi::CString::new(exec.join("rootfs").into_os_string().into_encoded_bytes()).unwrap();
    // SAFETY: umount2(2) of the container's rootfs mount, a valid C string.
    unsafe { libc::umount2(rootfs.as_ptr(), libc::MNT_DETACH) };
    std::fs::remove_dir_all(&exec).unwrap();
    std::fs::remove_dir_all(d.path(&format!("data/containers/{id}"))).unwrap();
    assert!(alive(shim));
    d.start();
    assert_all_gone(&d, "after the restart");
    assert!(!alive(shim), "the shim {shim} outlived its record");
    finish(d);
}

/// Volume create and remove interrupted: no half volume, the operation can be retried.
#[test]
fn crash_volume_create_and_remove() {
    let mut d = root_daemon!();
    crash_at(&mut d, "volume.create", "volume create v1", &[]);
    assert_eq!(d.docker_out("volume ls -q", &[]), "");
    assert_no_orphans(&d, "after the create crash");
    d.docker_line("volume create v1", &[]).ok();
    crash_at(&mut d, "volume.remove", "volume rm v1", &[]);
    assert_eq!(d.docker_out("volume ls -q", &[]), "");
    assert_no_orphans(&d, "after the remove crash");
    d.docker_line("volume create v1", &[]).ok();
    d.docker_line("volume rm v1", &[]).ok();
    finish(d);
}

/// `network connect` of a running container interrupted after its interface is plugged:
/// after the restart the endpoint is there, disconnect and connect work, `rm -f` and
/// `network rm` leave nothing.
#[test]
fn crash_network_connect() {
    let mut d = root_daemon!();
    let net = berth_testkit::unique_name("crashnet");
    d.docker_line("network create", &[&net]).ok();
    d.docker_line("run -d --name ctr busybox sleep 1000", &[])
        .ok();
    crash_at(&mut d, "network.connect", "network connect", &[&net, "ctr"]);
    assert_eq!(d.inspect("{{.State.Running}}", "ctr"), "true\n");
    d.docker_line("network disconnect", &[&net, "ctr"]).ok();
    d.docker_line("network connect", &[&net, "ctr"]).ok();
    let ifs = d.docker_out("exec ctr ls /sys/class/net", &[]);
    assert!(ifs.contains("eth1"), "{ifs}");
    d.docker_line("rm -f ctr", &[]).ok();
    d.docker_line("network rm", &[&net]).ok();
    assert_no_orphans(&d, "after rm");
    finish(d);
}

/// A pull interrupted while a layer downloads: after the restart its partial download is
/// gone (item 7), no image or blob of it is half there, and the pull can be retried.
#[test]
fn crash_pull_layer() {
    require_root!(DOCKER_REGISTRY);
    let (reg, mut d) = registry_and_daemon();
    let name = format!("127.0.0.1:{}/test/crash:v1", reg.port);
    d.docker(&["tag", "busybox", &name]).ok();
    d.docker(&["push", &name]).ok();
    d.docker(&["rmi", &name]).ok();
    d.docker(&["rmi", "busybox"]).ok();
    let blobs = list_dir(&d.path("data/blobs/sha256")).len();
    crash_at(&mut d, "pull.layer", "pull", &[&name]);
    assert_eq!(list_dir(&d.path("data/partial")), Vec::<String>::new());
    assert_eq!(d.docker_out("images -q", &[]), "");
    d.docker(&["pull", &name]).ok();
    assert_eq!(
        d.docker(&["run", "--rm", &name, "echo", "ok"]).ok().stdout,
        "ok\n"
    );
    d.docker(&["rmi", &name]).ok();
    d.docker_line("image prune -af", &[]).ok();
    assert_eq!(list_dir(&d.path("data/blobs/sha256")).len(), blobs);
    assert_no_orphans(&d, "after the pull");
    finish(d);
}

fn mounts_below(dir: &Path) -> Vec<String> {
    let prefix = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&prefix))
        .map(String::from)
        .collect()
}

/// Whether a build step's container exists (its runtime state under `exec/build-runtime`).
fn step_container_created(d: &Daemon) -> bool {
    let steps = d.path("exec/build-runtime");
    list_dir(&steps)
        .iter()
        .any(|e| !e.starts_with('@') && steps.join(e).join("state.json").exists())
}

fn build_leftovers(d: &Daemon) -> Vec<String> {
    list_dir(&d.path("data/tmp"))
        .into_iter()
        .filter(|e| e.starts_with("build-") || e.starts_with("from-"))
        .collect()
}

/// Item 7: a build killed with the daemon in the middle of a RUN step leaves its spooled
/// context (`tmp/build-ctx-*`), the step's work directory and its overlay mount, and the
/// step's container; the next daemon start removes them. Leftovers seen by a running daemon (the same context, put
/// back after the start) are counted by `system df` and removed by `system prune`.
#[test]
fn crash_leftovers_removed_at_start_counted_and_pruned() {
    let mut d = root_daemon!();
    let ctx = dockerfile_context(&d, "FROM busybox\nRUN sleep 60\n");
    let mut build = spawn_quiet(
        d.docker_cmd(&["build", "-t", "crashed", &ctx])
            .env("DOCKER_BUILDKIT", "0"),
    );
    let tmp = d.path("data/tmp");
    wait("a build step's container", || {
        !mounts_below(&tmp).is_empty() && step_container_created(&d)
    });
    d.kill9();
    let _ = build.kill();
    let _ = build.wait();
    let left = build_leftovers(&d);
    assert!(left.iter().any(|e| e.starts_with("build-ctx-")), "{left:?}");
    let aside = d.path("aside");
    let spool = left.iter().find(|e| e.starts_with("build-ctx-")).unwrap();
    std::fs::rename(tmp.join(spool), &aside).unwrap();
    d.start();
    assert_eq!(build_leftovers(&d), Vec::<String>::new());
    assert_eq!(mounts_below(&tmp), Vec::<String>::new());
    // The step's container (its process, cgroups, runtime state) went too.
    assert_no_orphans(&d, "after the restart");
    assert_eq!(
        list_dir(&d.path("exec/build-runtime"))
            .iter()
            .filter(|e| !e.starts_with('@'))
            .count(),
        0
    );
    // A leftover the running daemon finds: counted, then pruned.
    std::fs::rename(&aside, tmp.join(spool)).unwrap();
    let df = d.docker_out("system df --format", &["{{.Type}} {{.TotalCount}}"]);
    assert!(df.contains("Build Cache 1"), "{df}");
    let out = d.docker_out("system prune -f", &[]);
    assert_eq!(build_leftovers(&d), Vec::<String>::new(), "{out}");
    let df = d.docker_out("system df --format", &["{{.Type}} {{.TotalCount}}"]);
    assert!(df.contains("Build Cache 0"), "{df}");
    // Builds work as before (the same context, its Dockerfile rewritten).
    let ctx = dockerfile_context(&d, "FROM busybox\nRUN true\n");
    let r = d
        .docker_cmd(&["build", "-q", "-t", "crashed", &ctx])
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .unwrap();
    assert!(r.status.success(), "{r:?}");
    finish(d);
}

/// The last line of an HTTP server's answer at `addr` (empty when nothing answers).
fn answer(addr: &str) -> String {
    use std::io::Read;
    use std::io::Write;
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.lines().last().unwrap_or_default().to_string()
}

/// Item 5: a published port keeps answering while berthd is down (its proxy is a process
/// of its own) and after the restart (the new daemon adopts the proxy, the port stays the
/// same); removing the container ends the proxy.
#[test]
fn published_port_answers_while_the_daemon_is_down() {
    let mut d = root_daemon!();
    d.docker_line(
        "run -d --name web -p 127.0.0.1::8080 busybox sh -c",
        &["mkdir /w && echo hello > /w/index.html && exec httpd -f -p 8080 -h /w"],
    )
    .ok();
    let addr = d.docker_out("port web 8080/tcp", &[]).trim().to_string();
    wait("the published port", || answer(&addr) == "hello");
    d.kill9();
    assert_eq!(answer(&addr), "hello", "while the daemon is down");
    assert_eq!(answer(&addr), "hello", "while the daemon is down");
    d.start();
    assert_eq!(d.docker_out("port web 8080/tcp", &[]).trim(), addr);
    wait("the port after the restart", || answer(&addr) == "hello");
    d.restart();
    wait("the port after a second restart", || {
        answer(&addr) == "hello"
    });
    d.docker_line("rm -f web", &[]).ok();
    assert_no_orphans(&d, "after rm");
    assert_eq!(answer(&addr), "");
    finish(d);
}

/// What the daemon's image store holds (sorted): image IDs, blobs, snapshots.
#[derive(Debug, PartialEq, Eq)]
struct Stored {
    images: Vec<String>,
    blobs: Vec<String>,
    snapshots: Vec<String>,
}

fn stored(d: &Daemon) -> Stored {
    let mut images: Vec<String> = d
        .docker_out("images -a -q --no-trunc", &[])
        .lines()
        .map(String::from)
        .collect();
    images.sort();
    images.dedup();
    Stored {
        images,
        blobs: berth_testkit::list_dir(&d.path("data/blobs/sha256")),
        snapshots: berth_testkit::list_dir(&d.path("data/snapshotter/snapshots")),
    }
}

/// The daemon's process id (to find what it named after itself).
fn daemon_pid(d: &Daemon) -> u32 {
    d.child.as_ref().map(|c| c.id()).unwrap()
}

/// A push interrupted with the upload session of a layer open (`push.blob`) or with every
/// blob in the registry and its manifest not put (`push.manifest`), with credentials (an
/// `X-Registry-Auth` header, which the daemon keeps in a private file while the push
/// runs): after the restart the image is intact, nothing is left (the credentials file
/// neither: it used to stay in the daemon's `$TMPDIR`), and the push retried succeeds; the
/// registry then serves the image.
fn push_crash(fp: &str) {
    require_root!(DOCKER_REGISTRY);
    let reg = DockerRegistry::with_htpasswd();
    let mut d = Daemon::new();
    let tmp = d.path("daemon-tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    d.env.push(("TMPDIR".into(), tmp.display().to_string()));
    d.restart();
    let host = reg.host();
    use berth_testkit::registry::{PASS, USER};
    d.docker(&["login", &host, "-u", USER, "-p", PASS]).ok();
    let name = format!("{host}/test/crash-push:v1");
    d.docker(&["tag", "busybox", &name]).ok();
    let id = d.inspect("{{.Id}}", &name);
    let before = stored(&d);
    crash_at(&mut d, fp, "push", &[&name]);
    assert_eq!(list_dir(&tmp), Vec::<String>::new(), "the daemon's $TMPDIR");
    assert_eq!(d.inspect("{{.Id}}", &name), id);
    assert_eq!(stored(&d), before);
    assert_no_orphans(&d, "after the restart");
    assert_eq!(
        d.docker(&["run", "--rm", &name, "echo", "ok"]).ok().stdout,
        "ok\n"
    );
    d.docker(&["push", &name]).ok();
    assert_eq!(list_dir(&tmp), Vec::<String>::new(), "the daemon's $TMPDIR");
    d.docker(&["rmi", &name]).ok();
    d.docker(&["rmi", "busybox"]).ok();
    d.docker(&["pull", &name]).ok();
    assert_eq!(d.inspect("{{.Id}}", &name), id);
    assert_eq!(
        d.docker(&["run", "--rm", &name, "echo", "pulled"])
            .ok()
            .stdout,
        "pulled\n"
    );
    assert_no_orphans(&d, "after the push and pull");
    finish(d);
}

failpoint_tests! {
    crash_push_blob => push_crash("push.blob");
    crash_push_manifest => push_crash("push.manifest");
}

/// A legacy build (`DOCKER_BUILDKIT=0`) interrupted while a RUN step's container runs
/// (`build.run`: its overlay mount, cgroups, network namespace and veth up) or once that
/// step's changes are a snapshot and its layer a pending blob (`build.commit`): after the
/// restart no step container, mount, work directory, spooled or extracted context
/// (`/dev/shm` included), pending blob, snapshot or image of it is left, nothing that was
/// there is lost, and the build retried succeeds.
fn build_crash(fp: &str) {
    let mut d = root_daemon!();
    let ctx = dockerfile_context(
        &d,
        "FROM busybox\nRUN sleep 1 && echo data > /f\nRUN cat /f\n",
    );
    let build = |d: &Daemon| {
        d.docker_cmd(&["build", "-t", "built:v1", &ctx])
            .env("DOCKER_BUILDKIT", "0")
            .output()
            .unwrap()
    };
    let before = stored(&d);
    arm(&mut d, fp);
    let pid = daemon_pid(&d);
    let r = build(&d);
    assert!(!r.status.success(), "{r:?}");
    crashed(&mut d, fp);
    // (named `<pid>x<random>-…`, with a lock file `<pid>x<random>.lock`)
    let shm = format!("berth-build-ctx-{pid}x");
    assert_eq!(
        list_dir(Path::new("/dev/shm"))
            .into_iter()
            .filter(|e| e.starts_with(&shm))
            .collect::<Vec<_>>(),
        Vec::<String>::new(),
        "/dev/shm"
    );
    assert_build_recovered(&d, &before, || build(&d));
    finish(d);
}

/// After a build's crash and the restart: no mount below the daemon's directory, no orphan,
/// the image store as `before`; then `retry`, the build run again, succeeds, `built:v1`
/// holds its `/f`, and removing it and the build cache leaves the store as `before`.
#[track_caller]
fn assert_build_recovered(
    d: &Daemon,
    before: &Stored,
    retry: impl FnOnce() -> std::process::Output,
) {
    assert_eq!(mounts_below(d.dir.path()), Vec::<String>::new());
    assert_no_orphans(d, "after the restart");
    assert_eq!(stored(d), *before);
    let r = retry();
    assert!(r.status.success(), "{r:?}");
    assert_eq!(cat_f(d, "built:v1"), "data\n");
    d.docker_line("rmi built:v1", &[]).ok();
    d.docker_line("builder prune -af", &[]).ok();
    assert_eq!(stored(d), *before);
    assert_no_orphans(d, "after the build");
}

failpoint_tests! {
    crash_build_run => build_crash("build.run");
    crash_build_commit => build_crash("build.commit");
}

/// The runtime's status of a container (`running`, `paused`, …).
fn runtime_status(d: &Daemon, id: &str) -> String {
    let o = std::process::Command::new(berth_testkit::runtime_bin())
        .arg("--root")
        .arg(d.path("exec/runtime"))
        .args(["state", id])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stderr)));
    v["status"].as_str().unwrap_or_default().to_string()
}

/// `docker commit` of a running container (paused while its changes are read, unless
/// `pause` is false) interrupted with the container paused (`commit.paused`), its layer
/// written but not published (`commit.layer`), or published and unpacked but no image
/// registered (`commit.unpacked`): after the restart the container runs (resumed, in the
/// runtime and in its record), no image, layer, blob or snapshot of the commit is left, and
/// the commit retried succeeds and leaves the container running.
fn commit_crash(fp: &str, pause: bool) {
    let mut d = root_daemon!();
    d.docker_line(
        "run -d --name ctr busybox sh -c",
        &["echo data > /f; exec sleep 1000"],
    )
    .ok();
    let id = container_id(&d, "ctr");
    wait("the container's file", || {
        d.docker(&["exec", "ctr", "cat", "/f"]).stdout == "data\n"
    });
    let before = stored(&d);
    let pause = format!("--pause={pause}");
    crash_at(&mut d, fp, "commit", &[&pause, "ctr", "committed:v1"]);
    assert_eq!(
        d.inspect("{{.State.Status}} {{.State.Paused}}", "ctr"),
        "running false\n"
    );
    assert_eq!(runtime_status(&d, &id), "running");
    assert_eq!(stored(&d), before);
    assert_no_orphans(&d, "after the restart");
    assert_eq!(d.docker_out("exec ctr cat /f", &[]), "data\n");
    d.docker_line("commit ctr committed:v1", &[]).ok();
    assert_eq!(runtime_status(&d, &id), "running");
    assert_eq!(cat_f(&d, "committed:v1"), "data\n");
    d.docker_line("rm -f ctr", &[]).ok();
    d.docker_line("rmi committed:v1", &[]).ok();
    assert_eq!(stored(&d), before);
    assert_no_orphans(&d, "after rm");
    finish(d);
}

failpoint_tests! {
    crash_commit_paused => commit_crash("commit.paused", true);
    crash_commit_layer => commit_crash("commit.layer", true);
    crash_commit_unpacked => commit_crash("commit.unpacked", true);
    // The same, without the pause (`--pause=false`).
    crash_commit_unpacked_unpaused => commit_crash("commit.unpacked", false);
}

/// A BuildKit build (buildx, the docker CLI's default builder) whose daemon is killed while
/// a RUN step's container runs, the step before it committed (a snapshot no image or cache
/// record references yet): after the restart its work directory (in `/dev/shm`, or the
/// data root's `tmp/`), the step's container, mounts and network and the snapshot are
/// gone, nothing is lost, and the build retried succeeds.
#[test]
fn crash_buildx_run() {
    require_root!();
    let Some(mut d) = Daemon::with_cli_plugin("docker-buildx") else {
        return;
    };
    let ctx = dockerfile_context(
        &d,
        "FROM busybox\nARG S=60\nRUN echo data > /f\nRUN sleep $S\n",
    );
    let build = |d: &Daemon, args: &[&str]| {
        let mut all = vec!["buildx", "build", "-t", "built:v1"];
        all.extend_from_slice(args);
        all.push(&ctx);
        d.buildkit_cmd(&all)
    };
    let before = stored(&d);
    let pid = daemon_pid(&d);
    let mut client = spawn_quiet(&mut build(&d, &[]));
    let snapshots = d.path("data/snapshotter/snapshots");
    wait("the second RUN step's container", || {
        berth_testkit::list_dir(&snapshots) != before.snapshots && step_container_created(&d)
    });
    d.kill9();
    let _ = client.kill();
    let _ = client.wait();
    d.start();
    // (in /dev/shm `<pid>x<random>-…`, in the data root's tmp/ `<pid>-…`)
    let (work, work_tmp) = (format!("berth-bk-{pid}x"), format!("berth-bk-{pid}-"));
    let left: Vec<String> = list_dir(Path::new("/dev/shm"))
        .into_iter()
        .chain(list_dir(&d.path("data/tmp")))
        .filter(|e| e.starts_with(&work) || e.starts_with(&work_tmp))
        .collect();
    assert_eq!(left, Vec::<String>::new(), "work directories");
    assert_build_recovered(&d, &before, || {
        build(&d, &["--build-arg", "S=0"]).output().unwrap()
    });
    finish(d);
}

/// How many rounds a chaos test runs: `BERTH_CHAOS_ROUNDS`, 6 by default.
fn chaos_rounds() -> usize {
    std::env::var("BERTH_CHAOS_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6)
}

/// A small deterministic generator (xorshift64*) for the chaos rounds: the seed is printed,
/// and `BERTH_CHAOS_SEED` replays a run.
struct Rng(u64);

impl Rng {
    fn from_env() -> Rng {
        let seed = std::env::var("BERTH_CHAOS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("chaos: BERTH_CHAOS_SEED={seed}");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// The numbers a logging container printed (its `docker logs`), which must be 0, 1, 2, …
/// with no gap and no repeat (a log line lost or written twice across a daemon crash).
#[track_caller]
fn assert_log_sequence(d: &Daemon, name: &str, when: &str) -> usize {
    let out = d.docker(&["logs", name]).ok().stdout;
    let got: Vec<&str> = out.lines().collect();
    for (i, l) in got.iter().enumerate() {
        assert_eq!(
            *l,
            i.to_string(),
            "{when}: line {i} of `docker logs {name}`"
        );
    }
    got.len()
}

/// The operations the chaos rounds interrupt: each a `docker` command (run in the
/// background while the daemon is killed at a random moment).
fn chaos_op(d: &Daemon, rng: &mut Rng, round: usize, ctx: &str, saved: &str) -> Vec<String> {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let created: Vec<String> = d
        .docker_out("ps -a --format {{.Names}}", &[])
        .lines()
        .filter(|n| n.starts_with("c-"))
        .map(String::from)
        .collect();
    let pick = |rng: &mut Rng| created[rng.below(created.len() as u64) as usize].clone();
    let name = format!("c-{round}");
    match rng.below(18) {
        14 if !created.is_empty() => s(&["pause", &pick(rng)]),
        15 if !created.is_empty() => s(&["restart", "-t", "1", &pick(rng)]),
        16 if !created.is_empty() => {
            let nets = d.docker_out("network ls --format {{.Name}}", &[]);
            match nets.lines().find(|n| n.starts_with("n-")) {
                Some(n) => s(&["network", "disconnect", "-f", n, &pick(rng)]),
                None => s(&["network", "create", &format!("n-{round}")]),
            }
        }
        12 | 13 => s(&[
            "run",
            "-d",
            "--name",
            &format!("e-{round}"),
            "busybox",
            "sh",
            "-c",
            "sleep 0.4; exit 7",
        ]),
        0 | 1 => s(&[
            "run",
            "-d",
            "--name",
            &name,
            "-p",
            "127.0.0.1::80",
            "-v",
            "/data",
            "busybox",
            "sleep",
            "1000",
        ]),
        2 if !created.is_empty() => s(&["rm", "-f", "-v", &pick(rng)]),
        3 if !created.is_empty() => s(&["exec", &pick(rng), "sh", "-c", "sleep 0.3; echo hi"]),
        4 => s(&["volume", "create", &format!("v-{round}")]),
        5 => {
            let v = d.docker_out("volume ls -q", &[]);
            match v.lines().find(|v| v.starts_with("v-")) {
                Some(v) => s(&["volume", "rm", v]),
                None => s(&["volume", "create", &format!("v-{round}")]),
            }
        }
        6 => s(&["network", "create", &format!("n-{round}")]),
        7 if !created.is_empty() => {
            let nets = d.docker_out("network ls --format {{.Name}}", &[]);
            match nets.lines().find(|n| n.starts_with("n-")) {
                Some(n) => s(&["network", "connect", n, &pick(rng)]),
                None => s(&["network", "create", &format!("n-{round}")]),
            }
        }
        8 => s(&["build", "-q", "-t", "chaos:built", "--no-cache", ctx]),
        9 => s(&["load", "-i", saved]),
        10 if !created.is_empty() => s(&["stop", "-t", "1", &pick(rng)]),
        _ => s(&[
            "run",
            "--rm",
            "busybox",
            "sh",
            "-c",
            "echo x > /f; sleep 0.2",
        ]),
    }
}

/// Item 1, by chance: `kill -9` of berthd at random moments of random operations (run with
/// a published port and a volume, rm -f, exec, volume create/rm, network create/connect,
/// legacy build, load, stop), and of the shims of random containers, while a
/// `--restart always` web server with a published port, a crash-looping `--restart always`
/// container and a logging container run. After each restart: the web server answers on
/// the same port, containers that run are running and the others are not, the log has no
/// gap or repeat, nothing is orphaned; at the end `rm -f` and `system prune` remove
/// everything. `BERTH_CHAOS_ROUNDS` (default 6) rounds; `BERTH_CHAOS_SEED` replays one.
#[test]
fn chaos_kill9_at_random_moments() {
    let mut d = root_daemon!();
    let rounds = chaos_rounds();
    let mut rng = Rng::from_env();
    let before = stored(&d);
    let ctx = dockerfile_context(&d, "FROM busybox\nRUN sleep 0.3 && echo data > /f\n");
    let saved = d.path("busybox.tar").display().to_string();
    d.docker(&["save", "-o", &saved, "busybox"]).ok();
    d.docker_line(
        "run -d --name web --restart always -p 127.0.0.1::8080 busybox sh -c",
        &["mkdir -p /w && echo hello > /w/index.html && exec httpd -f -p 8080 -h /w"],
    )
    .ok();
    let mut addr = d.docker_out("port web 8080/tcp", &[]).trim().to_string();
    wait("the published port", || answer(&addr) == "hello");
    d.docker_line(
        "run -d --name loop --restart always busybox sh -c",
        &["sleep 0.5; exit 3"],
    )
    .ok();
    d.docker_line(
        "run -d --name logger -t busybox sh -c",
        &["i=0; while true; do echo $i; i=$((i+1)); sleep 0.05; done"],
    )
    .ok();
    for round in 0..rounds {
        let web_pid = d.inspect("{{.State.Pid}}", "web");
        let words = chaos_op(&d, &mut rng, round, &ctx, &saved);
        let delay = Duration::from_millis(rng.below(700));
        let kill_shim = rng.below(3) == 0;
        eprintln!(
            "chaos round {round}: docker {words:?}, kill -9 after {delay:?}, shim too: {kill_shim}"
        );
        let mut client = spawn_quiet(
            d.docker_cmd(&words.iter().map(String::as_str).collect::<Vec<_>>())
                .env("DOCKER_BUILDKIT", "0"),
        );
        std::thread::sleep(delay);
        if kill_shim {
            let running: Vec<String> = ids(&d, false).into_iter().collect();
            if !running.is_empty() {
                let id = &running[rng.below(running.len() as u64) as usize];
                if let Ok(pid) =
                    std::fs::read_to_string(d.path(&format!("exec/containers/{id}/shim/shim.pid")))
                {
                    // SAFETY: kill(2) of a shim the test looked up.
                    unsafe { libc::kill(pid.trim().parse().unwrap(), libc::SIGKILL) };
                }
            }
        }
        d.kill9();
        let _ = client.wait();
        // Sometimes killed again while it starts (recovering what the first crash left).
        if rng.below(3) == 0 {
            let mut early = spawn_quiet(&mut d.daemon_cmd());
            let delay = Duration::from_millis(rng.below(400));
            eprintln!("chaos round {round}: and kill -9 of the next daemon after {delay:?}");
            std::thread::sleep(delay);
            kill_pid(early.id() as i32);
            let _ = early.wait();
        }
        d.start();
        let when = format!("round {round} ({words:?} after {delay:?})");
        // The same port while the same process serves (a web server whose shim was killed
        // is restarted by its policy, and gets a new port, as in Docker).
        let port = |d: &Daemon| {
            d.docker(&["port", "web", "8080/tcp"])
                .stdout
                .trim()
                .to_string()
        };
        if d.inspect("{{.State.Pid}}", "web") == web_pid {
            assert_eq!(port(&d), addr, "{when}");
        }
        assert!(
            wait_until(Duration::from_secs(20), || {
                addr = port(&d);
                answer(&addr) == "hello"
            }),
            "{when}: the web server's port {addr}: {} {}",
            d.inspect("{{json .State}} {{.RestartCount}}", "web"),
            std::fs::read_to_string(d.path("berthd.log")).unwrap_or_default()
        );
        for id in ids(&d, true) {
            let state = d.inspect(
                "{{.Name}} {{.State.Running}} {{.State.Restarting}} {{.State.Pid}}",
                &id,
            );
            let f: Vec<&str> = state.split_whitespace().collect();
            let pid: i32 = f[3].parse().unwrap();
            // (a container waiting for its restart is `Running` with no process, as in Docker)
            if f[1] == "true" && f[2] == "false" {
                // (or it has just exited: then its record changes soon)
                wait(&format!("{when}: {state} alive or recorded"), || {
                    (pid > 0 && alive(pid))
                        || d.inspect(
                            "{{.Name}} {{.State.Running}} {{.State.Restarting}} {{.State.Pid}}",
                            &id,
                        ) != state
                });
            } else {
                assert_eq!(pid, 0, "{when}: {state}");
            }
        }
        // Containers that exited (perhaps while no daemon ran): their exit code recorded.
        for n in d.docker_out("ps -a --format {{.Names}}", &[]).lines() {
            if n.starts_with("e-") {
                wait(&format!("{when}: the exit of {n}"), || {
                    // (or killed with its shim)
                    let st = d.inspect("{{.State.Status}} {{.State.ExitCode}} {{.State.Error}}", n);
                    matches!(st.trim(), "exited 7" | "created 0")
                        || st.starts_with("exited 137 ") && st.contains("shim")
                });
            }
        }
        assert_no_orphans(&d, &when);
        if d.inspect("{{.State.Running}}", "logger") == "true\n" {
            assert_log_sequence(&d, "logger", &when);
        } else {
            d.docker_line("rm -f logger", &[]).ok();
            d.docker_line(
                "run -d --name logger -t busybox sh -c",
                &["i=0; while true; do echo $i; i=$((i+1)); sleep 0.05; done"],
            )
            .ok();
        }
    }
    let exited = d.inspect("{{.State.Status}}", "loop");
    assert!(
        matches!(exited.trim(), "running" | "restarting" | "exited"),
        "{exited}"
    );
    let all: Vec<String> = ids(&d, true).into_iter().collect();
    let mut args = vec!["rm", "-f", "-v"];
    args.extend(all.iter().map(String::as_str));
    d.docker(&args).ok();
    d.docker_line("system prune -af --volumes", &[]).ok();
    d.docker_line("volume prune -af", &[]).ok();
    assert_all_gone(&d, "after rm -f and prune");
    assert_eq!(answer(&addr), "");
    let nets = d.docker_out("network ls --format {{.Name}}", &[]);
    assert!(!nets.contains("n-"), "{nets}");
    // busybox itself went with the prune (nothing uses it): load it back, the store as before.
    d.docker(&["load", "-i", &saved]).ok();
    assert_eq!(stored(&d), before);
    finish(d);
}

/// Item 1, by chance, for the image operations: `kill -9` of berthd at random moments of
/// `docker pull` (of an image with a 20 MB layer), `docker load` and `docker buildx build`
/// (when the plugin is installed). After each restart the image is there and whole (its
/// content checked) or not there at all, no partial download, pending blob or work
/// directory is left, nothing is orphaned; at the end the image store is as before.
#[test]
fn chaos_kill9_during_pull_load_and_buildx() {
    require_root!(DOCKER_REGISTRY);
    let (reg, mut d) = registry_and_daemon();
    let buildx = d.cli_plugin("docker-buildx");
    let rounds = chaos_rounds();
    let mut rng = Rng::from_env();
    let before = stored(&d);
    let name = format!("127.0.0.1:{}/test/chaos:v1", reg.port);
    let ctx = dockerfile_context(
        &d,
        "FROM busybox\nRUN head -c 20000000 /dev/urandom > /big && md5sum /big > /sum\n",
    );
    let r = d
        .docker_cmd(&["build", "-q", "-t", &name, &ctx])
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .unwrap();
    assert!(r.status.success(), "{r:?}");
    d.docker(&["push", &name]).ok();
    let saved = d.path("big.tar").display().to_string();
    d.docker(&["save", "-o", &saved, &name]).ok();
    let whole = |d: &Daemon, image: &str| {
        let out = d.docker_out("run --rm", &[image, "md5sum", "-c", "/sum"]);
        assert_eq!(out, "/big: OK\n");
    };
    let bx_ctx = dockerfile_context(&d, "FROM busybox\nRUN sleep 0.5 && echo data > /f\n");
    for round in 0..rounds {
        d.docker(&["rmi", "-f", &name, "chaos:bx"]);
        d.docker_line("builder prune -af", &[]).ok();
        let which = rng.below(if buildx { 3 } else { 2 });
        let mut client = match which {
            0 => spawn_quiet(&mut d.docker_cmd(&["pull", &name])),
            1 => spawn_quiet(&mut d.docker_cmd(&["load", "-i", &saved])),
            _ => spawn_quiet(&mut d.buildkit_cmd(&[
                "buildx",
                "build",
                "--no-cache",
                "-t",
                "chaos:bx",
                &bx_ctx,
            ])),
        };
        let delay = Duration::from_millis(rng.below(2500));
        let what = ["pull", "load", "buildx build"][which as usize];
        eprintln!("chaos round {round}: {what}, kill -9 after {delay:?}");
        std::thread::sleep(delay);
        d.kill9();
        let _ = client.kill();
        let _ = client.wait();
        d.start();
        let when = format!("round {round} ({what} after {delay:?})");
        assert_eq!(
            list_dir(&d.path("data/partial")),
            Vec::<String>::new(),
            "{when}"
        );
        assert_no_orphans(&d, &when);
        if which < 2 {
            if d.docker(&["image", "inspect", &name]).code == 0 {
                whole(&d, &name);
            }
        } else if d.docker(&["image", "inspect", "chaos:bx"]).code == 0 {
            assert_eq!(cat_f(&d, "chaos:bx"), "data\n", "{when}");
        }
    }
    d.docker(&["rmi", "-f", &name, "chaos:bx"]);
    d.docker(&["pull", &name]).ok();
    whole(&d, &name);
    d.docker(&["rmi", &name]).ok();
    d.docker_line("builder prune -af", &[]).ok();
    d.docker_line("image prune -f", &[]).ok();
    assert_eq!(stored(&d), before);
    assert_no_orphans(&d, "at the end");
    finish(d);
}

/// A daemon started at once after a `kill -9` of its predecessor finds the data root's lock
/// held a moment longer (by a child the dead daemon forked that has not executed yet, whose
/// copy of the lock's descriptor goes at its exec): it waits for it instead of exiting with
/// "another berthd is already running". Here the test holds the lock for a second.
#[test]
fn start_waits_for_a_lock_released_soon() {
    let mut d = root_daemon!();
    d.kill9();
    let lock = std::fs::OpenOptions::new()
        .write(true)
        .open(d.path("data/berthd.lock"))
        .unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).unwrap();
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(1));
        drop(lock);
    });
    d.start();
    release.join().unwrap();
    d.docker_line("run --rm busybox true", &[]).ok();
    finish(d);
}
