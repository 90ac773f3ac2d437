//! End-to-end tests of volumes, bind and tmpfs mounts and `cp` (the archive API), driven by the
//! real docker CLI, docker-py, raw HTTP and the berth CLI. Each test runs its own daemon on
//! temporary roots and checks that no mount is left behind.

mod common;
use common::*;

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn uniq(tag: &str) -> String {
    format!(
        "berth-{tag}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    )
}

/// A raw HTTP request with a binary body; returns (status, headers+body as text).
fn http_raw(d: &Daemon, method: &str, path: &str, ct: &str, body: &[u8]) -> (u16, String) {
    let mut s = UnixStream::connect(d.sock()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: berth\r\nConnection: close\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, text)
}

/// `PUT /v1.44/containers/<target>` with a tar (the archive API).
fn put_archive(d: &Daemon, target: &str, tar: &[u8]) -> (u16, String) {
    let path = format!("/v1.44/containers/{target}");
    http_raw(d, "PUT", &path, "application/x-tar", tar)
}

/// `HEAD /v1.44/containers/<target>` (the archive API's stat).
fn head_archive(d: &Daemon, target: &str) -> (u16, String) {
    let path = format!("/v1.44/containers/{target}");
    http_raw(d, "HEAD", &path, "text/plain", b"")
}

/// A tar of raw entries `(name, kind, link, data)` (see [`raw_entry`]).
fn raw_tar(entries: &[(&str, tar::EntryType, &str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, link, data) in entries {
        raw_entry(&mut b, name, *kind, link, data);
    }
    b.into_inner().unwrap()
}

/// A tar entry with a raw (unchecked) name: hostile archives.
fn raw_entry(
    b: &mut tar::Builder<Vec<u8>>,
    name: &str,
    kind: tar::EntryType,
    link: &str,
    data: &[u8],
) {
    let mut h = tar::Header::new_old();
    {
        let o = h.as_old_mut();
        o.name[..name.len()].copy_from_slice(name.as_bytes());
        o.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

#[test]
fn volume_lifecycle_persistence_and_in_use() {
    let mut d = root_daemon!();
    let v = uniq("v");
    d.docker_line("volume create --label team=db", &[&v]).ok();
    let ls = d.docker_out("volume ls -q", &[]);
    assert!(ls.lines().any(|l| l == v), "{ls}");
    let lsf = d.docker_out("volume ls -q --filter label=team=db", &[]);
    assert_eq!(lsf.trim(), v);
    let mp = d.docker_out(
        "volume inspect -f",
        &["{{.Mountpoint}} {{.Driver}} {{.Labels.team}}", &v],
    );
    let want = d.path("data").join("volumes").join(&v).join("_data");
    assert_eq!(mp.trim(), format!("{} local db", want.display()));
    // The classic example: a "database" writes, is removed, a new container sees the data.
    d.docker_line(
        "run --name db1 -v",
        &[
            &format!("{v}:/var/lib/db"),
            "busybox",
            "sh",
            "-c",
            "echo row1 > /var/lib/db/table",
        ],
    )
    .ok();
    // In use by a stopped container: cannot be removed.
    let r = d.docker(&["volume", "rm", &v]);
    r.fails_with("volume is in use");
    let r = d.docker_line("volume rm -f", &[&v]);
    assert_ne!(r.code, 0, "force must not remove a volume in use");
    // References survive a daemon crash (rebuilt from the containers' records).
    d.kill9();
    d.start();
    let r = d.docker(&["volume", "rm", &v]);
    r.stderr_contains("volume is in use");
    d.docker(&["rm", "db1"]).ok();
    assert_eq!(
        d.docker_out(
            "run --rm -v",
            &[
                &format!("{v}:/var/lib/db:ro"),
                "busybox",
                "cat",
                "/var/lib/db/table",
            ]
        ),
        "row1\n"
    );
    // Read-only volume mount: writing fails.
    let r = d.docker_line(
        "run --rm -v",
        &[
            &format!("{v}:/db:ro"),
            "busybox",
            "sh",
            "-c",
            "echo x > /db/other",
        ],
    );
    assert_ne!(r.code, 0);
    assert!(!want.join("other").exists());
    // Inspect shows the mount in Docker's shape.
    d.docker_line(
        "create --name c2 -v",
        &[&format!("{v}:/data"), "busybox", "true"],
    )
    .ok();
    let m = d.inspect(
        "{{range .Mounts}}{{.Type}} {{.Name}} {{.Destination}} {{.RW}} {{.Driver}}{{end}}",
        "c2",
    );
    assert_eq!(m.trim(), format!("volume {v} /data true local"));
    d.docker(&["rm", "c2"]).ok();
    d.docker(&["volume", "rm", &v]).ok();
    assert!(!want.exists());
    let r = d.docker(&["volume", "inspect", &v]);
    r.fails_with("no such volume");
    finish(d);
}

#[test]
fn anonymous_volumes_rm_v_and_prune() {
    let d = root_daemon!();
    // `-v /path` makes an anonymous volume; `rm` keeps it, `prune` removes it.
    d.docker_line(
        "run --name a1 -v /anon busybox sh -c",
        &["echo a > /anon/f"],
    )
    .ok();
    let name = d
        .inspect("{{range .Mounts}}{{.Name}}{{end}}", "a1")
        .trim()
        .to_string();
    assert_eq!(name.len(), 64, "{name}");
    d.docker(&["rm", "a1"]).ok();
    assert!(d.docker_out("volume ls -q", &[]).contains(&name));
    let named = uniq("keep");
    d.docker(&["volume", "create", &named]).ok();
    let p = d.docker(&["volume", "prune", "-f"]).ok().stdout;
    assert!(p.contains(&name), "{p}");
    let ls = d.docker_out("volume ls -q", &[]);
    assert!(!ls.contains(&name) && ls.contains(&named), "{ls}");
    // `prune --all` removes unused named volumes too.
    d.docker_line("volume prune -f --all", &[]).ok();
    assert!(d.docker_out("volume ls -q", &[]).trim().is_empty());
    // `rm -v` removes the anonymous volume; `--rm` too.
    d.docker_line("create --name a2 -v /anon2 busybox true", &[])
        .ok();
    assert_eq!(d.docker_out("volume ls -q", &[]).lines().count(), 1);
    d.docker(&["rm", "-v", "a2"]).ok();
    assert!(d.docker_out("volume ls -q", &[]).trim().is_empty());
    d.docker_line("run --rm -v /anon3 busybox true", &[]).ok();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !d.docker_out("volume ls -q", &[]).trim().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "--rm kept the anonymous volume"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // system df reports volumes.
    let v = uniq("df");
    d.docker(&["volume", "create", &v]).ok();
    d.docker_line(
        "run --rm -v",
        &[
            &format!("{v}:/d"),
            "busybox",
            "dd",
            "if=/dev/zero",
            "of=/d/z",
            "bs=1024",
            "count=100",
        ],
    )
    .ok();
    let df = d.docker(&["system", "df", "-v"]).ok().stdout;
    assert!(df.contains(&v) && df.contains("102.4kB"), "{df}");
    // A read-only root filesystem still gets its volume mounts (mount points created first).
    assert_eq!(
        d.docker_out(
            "run --rm --read-only -v",
            &[
                &format!("{v}:/newdir"),
                "busybox",
                "sh",
                "-c",
                "echo w > /newdir/f && cat /newdir/f; echo x > /rootfile || echo ro-root",
            ]
        ),
        "w\nro-root\n"
    );
    finish(d);
}

#[test]
fn binds_ro_tmpfs_and_mount_flag() {
    let d = root_daemon!();
    let host = d.path("hostdir");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(host.join("in"), "from host").unwrap();
    let h = host.display().to_string();
    // ro: reads work, writes fail.
    assert_eq!(
        d.docker_out(
            "run --rm -v",
            &[&format!("{h}:/h:ro,Z"), "busybox", "cat", "/h/in"]
        ),
        "from host"
    );
    // A single file bind-mounted.
    assert_eq!(
        d.docker_out(
            "run --rm -v",
            &[
                &format!("{h}/in:/etc/single:ro"),
                "busybox",
                "cat",
                "/etc/single",
            ]
        ),
        "from host"
    );
    let r = d.docker_line(
        "run --rm -v",
        &[
            &format!("{h}:/h:ro"),
            "busybox",
            "sh",
            "-c",
            "echo x > /h/w",
        ],
    );
    r.fails_with("Read-only file system");
    assert!(!host.join("w").exists());
    // rw: the host sees the write.
    d.docker_line(
        "run --rm -v",
        &[
            &format!("{h}:/h:rw,rprivate"),
            "busybox",
            "sh",
            "-c",
            "echo x > /h/w",
        ],
    )
    .ok();
    assert_eq!(std::fs::read_to_string(host.join("w")).unwrap(), "x\n");
    // --mount bind readonly, tmpfs with size and mode, --tmpfs.
    let r = d
        .docker_line("run --rm --mount", &[&format!("type=bind,source={h},target=/b,readonly"), "--mount", "type=tmpfs,destination=/t,tmpfs-size=1048576,tmpfs-mode=1770", "--tmpfs", "/run2:rw,size=2m", "busybox", "sh", "-c", "grep -E ' /(b|t|run2) ' /proc/mounts | cut -d' ' -f2-4; stat -c %a /t; echo y > /b/z || echo ro-ok"])
        .ok();
    r.stdout_contains("/b ").stdout_contains(" ro");
    r.stdout_contains("/t tmpfs rw")
        .stdout_contains("size=1024k");
    r.stdout_contains("/run2 tmpfs rw")
        .stdout_contains("size=2048k");
    r.stdout_contains("1770\n");
    r.stdout_contains("ro-ok");
    // A missing --mount bind source is an error; -v creates it.
    let r = d.docker_line(
        "run --rm --mount",
        &[
            &format!("type=bind,src={h}/missing,dst=/m"),
            "busybox",
            "true",
        ],
    );
    r.fails_with("bind source path does not exist");
    d.docker_line("run --rm -v", &[&format!("{h}/made:/m"), "busybox", "true"])
        .ok();
    assert!(host.join("made").is_dir());
    // Volume with tmpfs options: mounted while used, unmounted afterwards.
    let tv = uniq("tv");
    d.docker_line(
        "volume create --opt type=tmpfs --opt device=tmpfs --opt o=size=3m",
        &[&tv],
    )
    .ok();
    let r = d
        .docker_line(
            "run --rm -v",
            &[
                &format!("{tv}:/tv"),
                "busybox",
                "sh",
                "-c",
                "grep ' /tv ' /proc/mounts",
            ],
        )
        .ok();
    r.stdout_contains("tmpfs").stdout_contains("size=3072k");
    let data = d.path("data").join("volumes").join(&tv).join("_data");
    let mounted = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .contains(&data.display().to_string());
    assert!(!mounted, "the tmpfs volume is still mounted");
    // --volumes-from shares the other container's volumes (read-only here).
    let v = uniq("vf");
    d.docker_line(
        "create --name src -v",
        &[&format!("{v}:/shared"), "busybox", "true"],
    )
    .ok();
    d.docker_line(
        "run --rm -v",
        &[
            &format!("{v}:/s"),
            "busybox",
            "sh",
            "-c",
            "echo shared > /s/f",
        ],
    )
    .ok();
    assert_eq!(
        d.docker_out(
            "run --rm --volumes-from src:ro busybox sh -c",
            &["cat /shared/f; echo z > /shared/g || echo ro-ok"]
        ),
        "shared\nro-ok\n"
    );
    finish(d);
}

#[test]
fn copy_up_keeps_content_and_ownership() {
    let mut d = root_daemon!();
    // An image with /data (owned 1234:5678, mode 0750) holding a file, declared a VOLUME.
    let tar = d.path("img.tar");
    {
        let mut b = tar::Builder::new(std::fs::File::create(&tar).unwrap());
        busybox_entries(&mut b);
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o750);
        h.set_uid(1234);
        h.set_gid(5678);
        h.set_size(0);
        b.append_data(&mut h, "data", std::io::empty()).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o640);
        h.set_uid(1234);
        h.set_gid(5678);
        h.set_size(5);
        b.append_data(&mut h, "data/seed", &b"seed\n"[..]).unwrap();
        b.finish().unwrap();
    }
    d.kill9();
    let o = std::process::Command::new(bin_dir().join("berth"))
        .arg("--data-root")
        .arg(d.path("data"))
        .args(["import", "-c", "VOLUME /data", "-c", "CMD [\"sh\"]"])
        .arg(&tar)
        .arg("seeded:1")
        .output()
        .unwrap();
    run_output(o).ok();
    d.start();
    // The image's VOLUME: an anonymous volume filled from the image.
    assert_eq!(
        d.docker_out(
            "run --name cu1 seeded:1 sh -c",
            &["cat /data/seed; stat -c '%u:%g %a' /data /data/seed"]
        ),
        "seed\n1234:5678 750\n1234:5678 640\n"
    );
    // A named volume mounted over image content: filled too, ownership on the host side.
    let v = uniq("cu");
    d.docker_line("run --rm -v", &[&format!("{v}:/data"), "seeded:1", "true"])
        .ok();
    let data = d.path("data").join("volumes").join(&v).join("_data");
    let m = std::fs::metadata(data.join("seed")).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (1234, 5678, 0o640));
    assert_eq!(std::fs::metadata(&data).unwrap().uid(), 1234);
    // Not again once the volume has content; nocopy skips it.
    let v2 = uniq("nc");
    d.docker_line(
        "run --rm -v",
        &[&format!("{v2}:/data:nocopy"), "seeded:1", "true"],
    )
    .ok();
    let data2 = d.path("data").join("volumes").join(&v2).join("_data");
    assert!(std::fs::read_dir(&data2).unwrap().next().is_none());
    d.docker(&["rm", "-v", "cu1"]).ok();
    finish(d);
}

/// The busybox image entries (so a derived image can run `sh`).
/// `cp SRC DEST` through `cli` (`Daemon::docker` or `Daemon::berth`), which must succeed,
/// DEST the daemon's new path `name`: DEST.
fn cp_out(d: &Daemon, cli: fn(&Daemon, &[&str]) -> Run, src: &str, name: &str) -> PathBuf {
    let dest = d.path(name);
    cli(d, &["cp", src, dest.to_str().unwrap()]).ok();
    dest
}

fn busybox_entries(b: &mut tar::Builder<std::fs::File>) {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("bb.tar");
    busybox_tar(&p);
    let mut a = tar::Archive::new(std::fs::File::open(&p).unwrap());
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let mut h = e.header().clone();
        let path = e.path().unwrap().into_owned();
        if h.entry_type() == tar::EntryType::Symlink {
            let t = e.link_name().unwrap().unwrap().into_owned();
            b.append_link(&mut h, &path, &t).unwrap();
        } else {
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            b.append_data(&mut h, &path, &data[..]).unwrap();
        }
    }
}

#[test]
fn docker_cp_both_ways_running_and_stopped_confined() {
    let d = root_daemon!();
    let v = uniq("cpv");
    let canary = uniq("canary");
    // Hostile symlinks inside the container.
    d.docker_line("run -d --name run1 -v", &[&format!("{v}:/vol"), "busybox", "sh", "-c", "ln -s / /evil; ln -s ../../.. /x; mkdir -p /tmp/deep/er; echo secret > /etc/inside; sleep 1000"])
    .ok();
    // Wait for the symlinks.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while d.docker(&["cp", "run1:/etc/inside", "-"]).code != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the container did not set up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Host -> container through /evil: lands inside the container.
    let src = d.path("file.txt");
    std::fs::write(&src, "payload").unwrap();
    let host_target = Path::new("/tmp").join(&canary);
    d.docker(&[
        "cp",
        src.to_str().unwrap(),
        &format!("run1:/evil/tmp/{canary}"),
    ])
    .ok();
    assert!(!host_target.exists(), "cp wrote to the host");
    let out = cp_out(&d, Daemon::docker, &format!("run1:/tmp/{canary}"), "out1");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "payload");
    // Container -> host through `../../..`: the container's file, not the host's.
    let out2 = cp_out(&d, Daemon::docker, "run1:/x/etc/inside", "out2");
    assert_eq!(std::fs::read_to_string(&out2).unwrap(), "secret\n");
    let out3 = d.path("out3");
    d.docker_line("cp -L run1:/x/etc/passwd", &[out3.to_str().unwrap()])
        .ok();
    assert!(std::fs::read_to_string(&out3)
        .unwrap()
        .starts_with("root:x:0:0:root:/root:/bin/sh\nnobody"));
    // Trees both ways; into the volume.
    let tree = d.context("tree", &[("a/b/c", "c")]);
    std::os::unix::fs::symlink("b/c", tree.join("a/l")).unwrap();
    d.docker(&["cp", tree.to_str().unwrap(), "run1:/vol/"]).ok();
    let vdata = d.path("data").join("volumes").join(&v).join("_data");
    assert_eq!(
        std::fs::read_to_string(vdata.join("tree/a/b/c")).unwrap(),
        "c"
    );
    assert_eq!(
        std::fs::read_link(vdata.join("tree/a/l")).unwrap(),
        Path::new("b/c")
    );
    let back = cp_out(&d, Daemon::docker, "run1:/vol/tree", "back");
    assert_eq!(std::fs::read_to_string(back.join("a/b/c")).unwrap(), "c");
    assert_eq!(
        std::fs::read_link(back.join("a/l")).unwrap(),
        Path::new("b/c")
    );
    // A symlink as the destination directory resolves inside.
    d.docker(&["cp", tree.to_str().unwrap(), "run1:/evil/tmp/deep"])
        .ok();
    let out6 = cp_out(&d, Daemon::docker, "run1:/tmp/deep/tree/a/b/c", "out6");
    assert_eq!(std::fs::read_to_string(&out6).unwrap(), "c");
    assert!(!Path::new("/tmp/deep/tree").exists());
    // Stopped container: both ways, volume honoured.
    d.docker_line("stop -t 0 run1", &[]).ok();
    let src2 = d.path("f2");
    std::fs::write(&src2, "stopped").unwrap();
    d.docker(&["cp", src2.to_str().unwrap(), "run1:/evil/etc/f2"])
        .ok();
    d.docker(&["cp", src2.to_str().unwrap(), "run1:/vol/f2"])
        .ok();
    assert_eq!(
        std::fs::read_to_string(vdata.join("f2")).unwrap(),
        "stopped"
    );
    let out4 = cp_out(&d, Daemon::docker, "run1:/x/etc/f2", "out4");
    assert_eq!(std::fs::read_to_string(&out4).unwrap(), "stopped");
    let out5 = cp_out(&d, Daemon::docker, "run1:/vol/tree/a/b/c", "out5");
    assert_eq!(std::fs::read_to_string(&out5).unwrap(), "c");
    assert!(!Path::new("/etc/f2").exists());
    // Missing paths: Docker's message.
    let r = d.docker(&["cp", "run1:/nope", d.path("x").to_str().unwrap()]);
    r.fails_with("Could not find the file /nope in container");
    // A created (never started) container.
    d.docker_line("create --name cr busybox cat /etc/f3", &[])
        .ok();
    d.docker(&["cp", src2.to_str().unwrap(), "cr:/etc/f3"]).ok();
    let r = d.docker(&["start", "-a", "cr"]).ok();
    assert_eq!(r.stdout, "stopped");
    finish(d);
}

#[test]
fn hostile_upload_tars_are_confined() {
    let d = root_daemon!();
    d.docker_line("create --name h1 busybox true", &[]).ok();
    let canary = uniq("esc");
    let hostdir = d.path("h");
    std::fs::create_dir(&hostdir).unwrap();
    use tar::EntryType::{Link, Regular as Reg, Symlink as Sym};
    let up = "../../../../../../../..";
    let f = |n: usize| format!("{canary}-{n}");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "dotdot",
            raw_tar(&[(&format!("{up}/tmp/{}", f(1)), Reg, "", b"x")]),
        ),
        (
            "absolute",
            raw_tar(&[(&format!("/tmp/{}", f(2)), Reg, "", b"x")]),
        ),
        (
            "symlink-then-write",
            raw_tar(&[
                ("lnk", Sym, "/tmp", b""),
                (&format!("lnk/{}", f(3)), Reg, "", b"x"),
            ]),
        ),
        (
            "symlink-dotdot",
            raw_tar(&[
                ("up", Sym, &format!("{up}/tmp"), b""),
                (&format!("up/{}", f(4)), Reg, "", b"x"),
            ]),
        ),
        (
            "hardlink-out",
            raw_tar(&[("hl", Link, &format!("{up}/etc/hostname"), b"")]),
        ),
    ];
    for (name, body) in &cases {
        for running in [false, true] {
            if running {
                d.docker_line("run -d --name h2 busybox sleep 1000", &[])
                    .ok();
            }
            let ctr = if running { "h2" } else { "h1" };
            let (code, text) = put_archive(&d, &format!("{ctr}/archive?path=/tmp"), body);
            assert!(code == 200 || code == 400, "{name}: {text}");
            for i in 1..=4 {
                assert!(
                    !Path::new(&format!("/tmp/{canary}-{i}")).exists(),
                    "{name} escaped"
                );
            }
            if running {
                d.docker(&["rm", "-f", "h2"]).ok();
            }
        }
    }
    // What was confined landed inside the container.
    let out = d.docker(&["start", "-a", "h1"]).code;
    assert_eq!(out, 0);
    let (code, _) = head_archive(&d, &format!("h1/archive?path=/tmp/tmp/{canary}-2"));
    assert_eq!(code, 200);
    // Symlinks in an upload resolve inside the extraction directory: `lnk -> /tmp` then
    // `lnk/x` is refused or written below the container's /tmp, never on the host.
    let (code, _) = head_archive(&d, "h1/archive?path=/tmp/lnk");
    assert_eq!(code, 200);
    // Errors: not a directory, missing path.
    let (code, text) = put_archive(&d, "h1/archive?path=/etc/passwd", &cases[1].1);
    assert_eq!(code, 400, "{text}");
    let (code, _) = put_archive(&d, "h1/archive?path=/nope", &cases[1].1);
    assert_eq!(code, 404);
    finish(d);
}

#[test]
fn docker_py_volumes_and_archive() {
    let d = root_daemon!();
    let script = r#"
import docker, io, tarfile, os, json
c = docker.DockerClient(base_url=os.environ["BERTH_SOCK"])
v = c.volumes.create("pyvol", labels={"a": "b"})
assert v.attrs["Labels"] == {"a": "b"}, v.attrs
assert "pyvol" in [x.name for x in c.volumes.list()]
ctr = c.containers.create("busybox", "sleep 1000", volumes={"pyvol": {"bind": "/data", "mode": "rw"}})
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w") as t:
    data = b"hello from py"
    ti = tarfile.TarInfo("greeting")
    ti.size = len(data); ti.uid = 42; ti.gid = 43; ti.mode = 0o600
    t.addfile(ti, io.BytesIO(data))
assert ctr.put_archive("/data", buf.getvalue())
ctr.start()
bits, stat = ctr.get_archive("/data/greeting")
raw = b"".join(bits)
with tarfile.open(fileobj=io.BytesIO(raw)) as t:
    m = t.getmember("greeting")
    assert (m.uid, m.gid, m.mode & 0o777) == (42, 43, 0o600), (m.uid, m.gid, m.mode)
    assert t.extractfile(m).read() == b"hello from py"
assert stat["name"] == "greeting" and stat["size"] == 13, stat
bits, stat = ctr.get_archive("/data")
assert stat["mode"] & (1 << 31), stat
ctr.remove(force=True)
c.volumes.get("pyvol").remove()
print("ok")
"#;
    let Some(r) = d.docker_py(script) else {
        return;
    };
    assert_eq!(r.stdout.trim(), "ok", "{}", r.stderr);
    finish(d);
}

#[test]
fn berth_cli_volumes_cp_and_run_flags() {
    let d = root_daemon!();
    let v = uniq("bv");
    assert_eq!(
        d.berth_line("volume create --label x=y", &[&v])
            .ok()
            .stdout
            .trim(),
        v
    );
    let ls = d.berth(&["volume", "ls"]).ok().stdout;
    assert!(ls.starts_with("DRIVER    VOLUME NAME\n"), "{ls}");
    assert!(ls.contains(&format!("local     {v}\n")), "{ls}");
    let f = d
        .berth_line("volume inspect -f", &["{{.Name}} {{.Labels.x}}", &v])
        .ok()
        .stdout;
    assert_eq!(f.trim(), format!("{v} y"));
    // run -v / --mount / --tmpfs.
    let r = d
        .berth_line(
            "run --rm -v",
            &[
                &format!("{v}:/data"),
                "--tmpfs",
                "/scratch",
                "--mount",
                "type=tmpfs,dst=/t2,tmpfs-size=1m",
                "busybox",
                "sh",
                "-c",
                "echo kept > /data/k; grep -c -E ' /(scratch|t2) tmpfs' /proc/mounts",
            ],
        )
        .ok();
    assert_eq!(r.stdout.trim(), "2");
    let r = d
        .berth_line(
            "run --rm -v",
            &[&format!("{v}:/d:ro"), "busybox", "cat", "/d/k"],
        )
        .ok();
    assert_eq!(r.stdout, "kept\n");
    // In use: refused; rm -v; prune.
    d.berth_line(
        "run --name u1 -v",
        &[&format!("{v}:/d"), "-v", "/anon", "busybox", "true"],
    )
    .ok();
    d.berth(&["volume", "rm", &v])
        .failed_with(1, "volume is in use");
    // cp both ways on the stopped container: file, tree, `-`.
    let tree = d.context("t", &[("sub/f", "tree file")]);
    std::os::unix::fs::chown(tree.join("sub/f"), Some(1500), Some(1600)).unwrap();
    d.berth(&["cp", tree.to_str().unwrap(), "u1:/d/"]).ok();
    d.berth(&["cp", "-a", tree.to_str().unwrap(), "u1:/d/owned"])
        .ok();
    let data = d.path("data").join("volumes").join(&v).join("_data");
    assert_eq!(
        std::fs::read_to_string(data.join("t/sub/f")).unwrap(),
        "tree file"
    );
    assert_eq!(std::fs::metadata(data.join("t/sub/f")).unwrap().uid(), 0);
    assert_eq!(
        std::fs::metadata(data.join("owned/sub/f")).unwrap().uid(),
        1500
    );
    let back = cp_out(&d, Daemon::berth, "u1:/d/owned", "back");
    assert_eq!(
        std::fs::read_to_string(back.join("sub/f")).unwrap(),
        "tree file"
    );
    let back2 = d.path("back2");
    std::fs::create_dir(&back2).unwrap();
    d.berth(&["cp", "u1:/d/owned/.", back2.to_str().unwrap()])
        .ok();
    assert_eq!(
        std::fs::read_to_string(back2.join("sub/f")).unwrap(),
        "tree file"
    );
    let one = cp_out(&d, Daemon::berth, "u1:/etc/passwd", "one");
    assert!(std::fs::read_to_string(&one)
        .unwrap()
        .starts_with("root:x:0:0"));
    // `-`: a tar on stdout.
    let o = std::process::Command::new(bin_dir().join("berth"))
        .arg("-H")
        .arg(format!("unix://{}", d.sock().display()))
        .args(["cp", "u1:/d/t", "-"])
        .output_ok();
    let mut a = tar::Archive::new(&o.stdout[..]);
    let names: Vec<String> = a
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert!(names.contains(&"t/sub/f".to_string()), "{names:?}");
    // `-` from stdin into the container.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(5);
    b.append_data(&mut h, "stdin-file", &b"stdin"[..]).unwrap();
    let tarbytes = b.into_inner().unwrap();
    let mut child = std::process::Command::new(bin_dir().join("berth"))
        .arg("-H")
        .arg(format!("unix://{}", d.sock().display()))
        .args(["cp", "-", "u1:/d"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&tarbytes).unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(
        std::fs::read_to_string(data.join("stdin-file")).unwrap(),
        "stdin"
    );
    d.berth(&["rm", "-v", "u1"]).ok();
    d.berth(&["volume", "rm", &v]).ok();
    let r = d.berth_line("volume prune -f -a", &[]).ok();
    r.stdout_contains("Total reclaimed space");
    assert!(d
        .berth(&["volume", "ls", "-q"])
        .ok()
        .stdout
        .trim()
        .is_empty());
    finish(d);
}

#[test]
fn archive_options_and_export() {
    let d = root_daemon!();
    d.docker_line("create --name o1 -u nobody busybox true", &[])
        .ok();
    let tar_of = |entries: &[(&str, tar::EntryType)]| {
        let mut b = tar::Builder::new(Vec::new());
        for (n, k) in entries {
            raw_entry(
                &mut b,
                n,
                *k,
                "",
                if *k == tar::EntryType::Regular {
                    b"x"
                } else {
                    b""
                },
            );
        }
        b.into_inner().unwrap()
    };
    // noOverwriteDirNonDir: /tmp/d is a directory, the upload has a file named d.
    let (code, _) = put_archive(
        &d,
        "o1/archive?path=/tmp",
        &tar_of(&[
            ("d/", tar::EntryType::Directory),
            ("f", tar::EntryType::Regular),
        ]),
    );
    assert_eq!(code, 200);
    let (code, text) = put_archive(
        &d,
        "o1/archive?path=/tmp&noOverwriteDirNonDir=1",
        &tar_of(&[("d", tar::EntryType::Regular)]),
    );
    assert_eq!(code, 400, "{text}");
    assert!(
        text.contains("cannot overwrite directory with non-directory"),
        "{text}"
    );
    let (code, text) = put_archive(
        &d,
        "o1/archive?path=/tmp&noOverwriteDirNonDir=1",
        &tar_of(&[("f/", tar::EntryType::Directory)]),
    );
    assert_eq!(code, 400, "{text}");
    // Whiteout-looking names are ordinary files in an upload (nothing is deleted).
    let (code, _) = put_archive(
        &d,
        "o1/archive?path=/tmp",
        &tar_of(&[(".wh.f", tar::EntryType::Regular)]),
    );
    assert_eq!(code, 200);
    // copyUIDGID with a container user: owned by that user.
    let (code, _) = put_archive(
        &d,
        "o1/archive?path=/tmp&copyUIDGID=1",
        &tar_of(&[("owned", tar::EntryType::Regular)]),
    );
    assert_eq!(code, 200);
    let out = d.path("x");
    std::fs::create_dir(&out).unwrap();
    d.docker(&["cp", "o1:/tmp/.", out.to_str().unwrap()]).ok();
    assert!(out.join("f").is_file() && out.join(".wh.f").is_file() && out.join("d").is_dir());
    // Ownership as the archive says (docker cp from a container keeps it for root).
    let r = d.docker(&["cp", "o1:/tmp/owned", "-"]).ok();
    let mut a = tar::Archive::new(r.stdout.as_bytes());
    let e = a.entries().unwrap().next().unwrap().unwrap();
    assert_eq!(
        (e.header().uid().unwrap(), e.header().gid().unwrap()),
        (65534, 65534)
    );
    // Export: the whole root filesystem as a tar.
    let ex = d.path("export.tar");
    d.docker(&["export", "-o", ex.to_str().unwrap(), "o1"]).ok();
    let mut a = tar::Archive::new(std::fs::File::open(&ex).unwrap());
    let names: Vec<String> = a
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert!(
        names.iter().any(|n| n == "bin/busybox"),
        "{:?}",
        &names[..names.len().min(10)]
    );
    assert!(names.iter().any(|n| n == "tmp/owned"));
    finish(d);
}

/// The mounts below the daemon's directory whose line has one of `needles`.
fn mounts_below(d: &Daemon, needles: &[&str]) -> Vec<String> {
    let root = d.dir.path().to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&root) && needles.iter().any(|n| l.contains(n)))
        .map(str::to_string)
        .collect()
}

#[test]
fn mount_volume_subpath() {
    let d = root_daemon!();
    let v = uniq("sub");
    d.docker(&["volume", "create", &v]).ok();
    let whole = format!("type=volume,src={v},dst=/v");
    // The volume: sub/a.txt, an absolute symlink to /sub (inside the volume, nothing on the
    // host), and one to the host's /etc.
    d.docker_line("run --rm --network none --mount", &[&whole, "busybox", "sh", "-c", "mkdir /v/sub /v/empty && echo hello > /v/sub/a.txt && ln -s /sub /v/abs && ln -s /etc /v/etc-link && echo top > /v/top"])
    .ok();
    let sub = |p: &str| format!("type=volume,src={v},dst=/m,volume-subpath={p}");
    // Only the subdirectory is mounted; writes land in it.
    let out = d.docker_out(
        "run --rm --network none --mount",
        &[
            &sub("sub"),
            "busybox",
            "sh",
            "-c",
            "ls /m; cat /m/a.txt; echo new > /m/b.txt",
        ],
    );
    assert_eq!(out, "a.txt\nhello\n");
    let out = d.docker_out(
        "run --rm --network none --mount",
        &[&whole, "busybox", "cat", "/v/sub/b.txt"],
    );
    assert_eq!(out, "new\n");
    // A symlink that leaves the volume (an absolute one, as dockerd resolves it on the host)
    // is refused, never followed: not to the host's /etc, not to the volume's /sub.
    for link in ["abs", "etc-link"] {
        let r = d.docker_line(
            "run --rm --network none --mount",
            &[&sub(link), "busybox", "ls", "/m"],
        );
        assert_ne!(r.code, 0, "{}", r.stdout);
        assert!(!r.stdout.contains("passwd"), "{}", r.stdout);
        r.stderr_contains("path concatenation escapes the base directory");
    }
    // An empty directory as the subpath gets the image's content (copy-up, as dockerd).
    let out = d.docker_out(
        "run --rm --network none --mount",
        &[
            &format!("type=volume,src={v},dst=/bin,volume-subpath=empty"),
            "busybox",
            "ls",
            "/bin/busybox",
        ],
    );
    assert_eq!(out, "/bin/busybox\n");
    // A file as the subpath.
    let out = d.docker_out(
        "run --rm --network none --mount",
        &[
            &format!("type=volume,src={v},dst=/f.txt,volume-subpath=top"),
            "busybox",
            "cat",
            "/f.txt",
        ],
    );
    assert_eq!(out, "top\n");
    // Bad subpaths: clear errors.
    for bad in ["../x", "/abs", "sub/../../x"] {
        let r = d.docker(&["create", "--mount", &sub(bad), "busybox", "true"]);
        assert_ne!(r.code, 0, "{bad}");
        r.stderr_contains("subpath must be a relative path within the volume");
    }
    // A missing one: Go's errno text, on which `docker run` exits 127 (docker/cli e2e
    // TestMountSubvolume).
    let r = d.docker_line(
        "run --rm --network none --mount",
        &[&sub("missing"), "busybox", "true"],
    );
    assert_eq!(r.code, 127, "{}", r.stderr);
    r.stderr_contains(&format!(
        "cannot access path missing in volume {v}: no such file or directory"
    ));
    // cp into a stopped container honours the subpath mount.
    d.docker_line(
        "create --name cpsub --network none --mount",
        &[&sub("sub"), "busybox", "true"],
    )
    .ok();
    let f = d.path("cpfile");
    std::fs::write(&f, "copied\n").unwrap();
    d.docker(&["cp", f.to_str().unwrap(), "cpsub:/m/c.txt"])
        .ok();
    let out = d.docker_out(
        "run --rm --network none --mount",
        &[&whole, "busybox", "cat", "/v/sub/c.txt"],
    );
    assert_eq!(out, "copied\n");
    // A running container with a subpath, stopped: its staging mounts go.
    d.docker_line(
        "run -d --name runsub --network none --mount",
        &[&sub("sub"), "busybox", "sleep", "1000"],
    )
    .ok();
    assert_eq!(d.docker_out("exec runsub cat /m/a.txt", &[]), "hello\n");
    d.docker_line("rm -f runsub cpsub", &[]).ok();
    let staged = mounts_below(&d, &["/subpaths/"]);
    assert!(staged.is_empty(), "{staged:?}");
    d.docker(&["volume", "rm", &v]).ok();
    finish(d);
}

/// Issue 18: `-v src:dst:rshared` of a host's shared mount propagates both ways, as dockerd's
/// (the root made shared); `--mount ...,bind-propagation=rslave` only host to container; a
/// shared bind of a private mount fails with dockerd's message.
#[test]
fn bind_propagation_rshared_and_rslave() {
    let d = root_daemon!();
    let shared = berth_testkit::PropagationDir::new(true);
    let private = berth_testkit::PropagationDir::new(false);
    let s = shared.path().display().to_string();
    for sub in ["shared", "slave"] {
        std::fs::create_dir(shared.path().join(sub)).unwrap();
    }
    // Each container waits for the host's mount, then mounts its own.
    let script = |sub: &str| {
        format!(
            "i=0; while [ ! -e /m/host/f ] && [ $i -lt 150 ]; do sleep 0.1; i=$((i+1)); done; \
             cat /m/host/f && mount -t tmpfs tmpfs /m/{sub} && echo c > /m/{sub}/f && \
             echo done > /m/{sub}.done; exec sleep 1000"
        )
    };
    let rshared = d.docker_line(
        "run -d --cap-add SYS_ADMIN -v",
        &[
            &format!("{s}:/m:rshared"),
            "busybox",
            "sh",
            "-c",
            &script("shared"),
        ],
    );
    let rslave = d.docker_line(
        "run -d --cap-add SYS_ADMIN --mount",
        &[
            &format!("type=bind,src={s},dst=/m,bind-propagation=rslave"),
            "busybox",
            "sh",
            "-c",
            &script("slave"),
        ],
    );
    let ids = [rshared.ok().stdout, rslave.ok().stdout];
    let host = shared.mount_tmpfs("host");
    std::fs::write(host.join("f"), "h").unwrap();
    for sub in ["shared", "slave"] {
        let done = berth_testkit::wait_until(Duration::from_secs(20), || {
            shared.path().join(format!("{sub}.done")).exists()
        });
        assert!(done, "{sub}: the container did not see the host's mount");
    }
    assert!(
        shared.path().join("shared/f").exists(),
        "rshared: container to host"
    );
    assert!(
        !shared.path().join("slave/f").exists(),
        "rslave: container to host"
    );
    for id in &ids {
        d.docker_line("rm -f", &[id.trim()]).ok();
    }
    let p = private.path().display().to_string();
    d.docker_line(
        "run --rm -v",
        &[&format!("{p}:/m:rshared"), "busybox", "true"],
    )
    .fails_with(&format!(
        "path {p} is mounted on {p} but it is not a shared mount"
    ));
    drop(shared);
    drop(private);
    finish(d);
}

/// `--mount type=image` (API 1.48+, moby's TestRunMountImage): the image's file system,
/// read-only, or a subpath of it resolved inside it; `rmi` of its last tag is refused while a
/// container mounts it, a forced one leaves the container able to start again; nothing stays
/// mounted once the containers are gone.
#[test]
fn mount_image_is_a_read_only_view_kept_in_use() {
    let d = root_daemon!();
    let img = uniq("imgmount");
    let ctx = d.context(
        "imgmount",
        &[
            (
                "Dockerfile",
                "FROM busybox AS links\nRUN mkdir /hack && ln -s ../subdir /hack/good && ln -s ../../../../../../.. /hack/bad\nFROM scratch\nCOPY foo /\nCOPY subdir subdir\nCOPY --from=links /hack /hack\n",
            ),
            ("foo", "bar"),
            ("subdir/hello", "world"),
        ],
    );
    d.classic_build(&ctx, &["-q", "-t", &img]).ok();
    let mnt = |sub: &str| {
        let mut m = format!("type=image,source={img},target=/image");
        if !sub.is_empty() {
            m.push_str(&format!(",image-subpath={sub}"));
        }
        m
    };
    let run = |m: &str, cmd: &str| {
        d.docker_line(
            "run --rm --network none --mount",
            &[m, "busybox", "sh", "-c", cmd],
        )
    };
    assert_eq!(run(&mnt(""), "cat /image/foo").ok().stdout, "bar");
    // Read-only, whatever the container's user.
    run(&mnt(""), "touch /image/x").fails_with("Read-only file system");
    assert_eq!(run(&mnt("subdir"), "ls /image").ok().stdout, "hello\n");
    assert_eq!(run(&mnt("hack/good"), "ls /image").ok().stdout, "hello\n");
    assert_eq!(run(&mnt("subdir/hello"), "cat /image").ok().stdout, "world");
    run(&mnt("hack/bad"), "ls /image").fails_with("path concatenation escapes the base directory");
    run(&mnt("not-existing-path"), "ls /image").fails_with("cannot access path");
    d.docker(&["create", "--mount", &mnt("../../etc/passwd"), "busybox"])
        .fails_with("subpath must be a relative path within the volume");
    // A missing image is create's 404 (through the API: the docker CLI would pull busybox).
    let r = d.post(
        "/v1.51/containers/create",
        r#"{"Image":"busybox","HostConfig":{"Mounts":[{"Type":"image","Source":"no-such-image","Target":"/i"}]}}"#,
    );
    assert!(
        r.starts_with("HTTP/1.1 404") && r.contains("No such image: no-such-image"),
        "{r}"
    );
    // Below API 1.48 it is a 400.
    let r = d.post(
        "/v1.47/containers/create",
        &format!(r#"{{"Image":"busybox","HostConfig":{{"Mounts":[{{"Type":"image","Source":"{img}","Target":"/i"}}]}}}}"#),
    );
    assert!(
        r.starts_with("HTTP/1.1 400")
            && r.contains(r#"Mount type \"Image\" needs API v1.48 or newer"#),
        "{r}"
    );
    // Shown in inspect as dockerd shows it.
    let id = d
        .docker_line(
            "create --name imgm --network none --mount",
            &[&mnt(""), "busybox", "cat", "/image/foo"],
        )
        .ok()
        .stdout
        .trim()
        .to_string();
    assert_eq!(
        d.inspect(
            "{{range .Mounts}}{{.Type}} {{.Name}} {{.Destination}} {{.RW}} {{.Propagation}}{{end}}",
            "imgm"
        )
        .trim(),
        format!("image {img} /image false rprivate")
    );
    // In use (by a stopped and a running container): the last tag cannot go without force,
    // as dockerd says it.
    d.docker_line(
        "run -d --name imgrun --network none --mount",
        &[&mnt(""), "busybox", "sleep", "1000"],
    )
    .ok();
    assert_eq!(d.docker_out("exec imgrun cat /image/foo", &[]), "bar");
    let img_id = d.inspect("{{.Id}}", &img).trim().to_string();
    let img_short = &img_id.trim_start_matches("sha256:")[..12];
    d.docker(&["rmi", &img])
        .fails_with(&format!("is using its referenced image {img_short}"));
    assert_eq!(d.docker_out("start -a imgm", &[]), "bar");
    d.docker_line("rm -f imgrun", &[]).ok();
    d.docker(&["rmi", &img]).fails_with(&format!(
        "container {} is using its referenced image {img_short}",
        &id[..12]
    ));
    // Forced: the image goes, its layers stay with the container, which starts again.
    d.docker(&["rmi", "-f", &img]).ok();
    d.docker(&["image", "inspect", &img])
        .fails_with("No such image");
    assert_eq!(d.docker_out("start -a imgm", &[]), "bar");
    d.docker_line("rm -f imgm", &[]).ok();
    let left = mounts_below(&d, &["/images/", "/subpaths/"]);
    assert!(left.is_empty(), "{left:?}");
    finish(d);
}

/// Inspect's `Mode` of volumes as dockerd 28 sets it: `z` (the shared SELinux label) for a
/// local volume of `Binds` or `Mounts` given no mode (`TestContainersAPICreateMountsCreate`),
/// the mode as given otherwise; none for the config's anonymous volumes and for copies
/// through `VolumesFrom`.
#[test]
fn volume_modes_in_inspect_are_dockerds() {
    let d = root_daemon!();
    let body = serde_json::json!({
        "Image": "busybox",
        "Volumes": {"/cfg": {}},
        "HostConfig": {
            "Binds": ["modes-named:/named", "/anon", "modes-ro:/ro:ro"],
            "Mounts": [
                {"Type": "volume", "Target": "/m-anon"},
                {"Type": "volume", "Source": "modes-m", "Target": "/m-named", "ReadOnly": true},
                {"Type": "volume", "Target": "/m-nocopy", "VolumeOptions": {"NoCopy": true}}
            ]
        }
    });
    let r = d.post("/containers/create?name=modes", &body.to_string());
    assert!(r.starts_with("HTTP/1.1 201 "), "{r}");
    let modes = |name: &str| -> std::collections::BTreeMap<String, String> {
        let v = get_json(&d, &format!("/containers/{name}/json"));
        v["Mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                assert_eq!(m["Type"], "volume", "{m}");
                let mode = m["Mode"].as_str().unwrap().to_string();
                (m["Destination"].as_str().unwrap().to_string(), mode)
            })
            .collect()
    };
    let want = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(
        modes("modes"),
        want(&[
            ("/anon", "z"),
            ("/cfg", ""),
            ("/m-anon", "z"),
            ("/m-named", "z"),
            ("/m-nocopy", "z"),
            ("/named", "z"),
            ("/ro", "ro"),
        ])
    );
    d.docker(&[
        "create",
        "--name",
        "copies",
        "--volumes-from",
        "modes:ro",
        "busybox",
    ])
    .ok();
    let copied = modes("copies");
    assert_eq!(copied.len(), 7, "{copied:?}");
    assert!(copied.values().all(String::is_empty), "{copied:?}");
    d.docker(&["rm", "-v", "copies", "modes"]).ok();
    d.docker(&["volume", "rm", "modes-named", "modes-ro", "modes-m"])
        .ok();
    finish(d);
}
