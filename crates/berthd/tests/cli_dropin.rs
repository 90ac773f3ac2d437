//! The `berth` CLI as a drop-in for the docker CLI (issue 14), each behaviour compared with
//! the docker CLI's against the same berthd: `container …` and `image …` commands (a script
//! written for `docker` run through `berth`), Go-template functions and `.Label`, pulls by
//! `run`/`create` and `--pull`, signals forwarded by `run`, `commit` and `export`, `system df`.

mod common;
use common::*;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Runs the same arguments through the docker CLI and berth; the outputs and statuses must be
/// the same. Returns berth's.
#[track_caller]
fn same(d: &Daemon, args: &[&str]) -> Run {
    let theirs = d.docker(args);
    let ours = d.berth(args);
    assert_eq!(
        (ours.code, ours.stdout.as_str()),
        (theirs.code, theirs.stdout.as_str()),
        "{args:?}\nberth stderr: {}\ndocker stderr: {}",
        ours.stderr,
        theirs.stderr
    );
    ours
}

/// The names listed under `Commands:` in a command's help.
fn command_names(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

#[test]
fn container_and_image_commands_run_a_docker_script() {
    let d = Daemon::new();
    for group in ["container", "image"] {
        let ours = command_names(&d.berth(&[group, "--help"]).ok().stdout);
        let theirs = command_names(&d.docker(&[group, "--help"]).ok().stdout);
        assert!(!theirs.is_empty());
        assert_eq!(ours, theirs, "{group} commands");
    }
    // A script written for the docker CLI, run through docker and then with `docker` being
    // berth: the same output.
    d.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox\nRUN echo built > /built\nCMD [\"cat\", \"/built\"]\n",
        )],
    );
    let script = r#"
set -e
T="$1"
docker container run -d --name s1 busybox sh -c 'echo started; sleep 1000' >/dev/null
until docker container logs s1 | grep -q started; do sleep 0.1; done
docker container ls --format '{{.Names}} {{.Image}} {{.State}}'
docker container list -q | wc -l
docker container ps -a --format '{{.Names}}'
docker container logs s1
docker container exec s1 sh -c 'echo hi > /made; echo exec-ok'
docker container diff s1 | grep '/made'
docker container cp s1:/made "$T/made"
cat "$T/made"
docker container top s1 | grep -c 'sleep 1000'
docker container pause s1
docker container inspect -f '{{.State.Status}}' s1
docker container unpause s1
docker container update --cpus 0.5 s1
docker container inspect -f '{{.HostConfig.NanoCpus}}' s1
docker container rename s1 s2
docker container restart -t 1 s2
docker container stats --no-stream --format '{{.Name}}' s2
docker container port s2
docker container export -o "$T/s2.tar" s2
tar -tf "$T/s2.tar" | grep -c '^bin/busybox$'
docker container kill s2
docker container wait s2
docker container inspect -f '{{.State.Status}} {{.State.ExitCode}}' s2
docker container stop s2
docker container rm s2
docker container create --name s3 busybox echo created >/dev/null
docker container start -a s3
docker container run -d --name s4 busybox sh -c 'sleep 3; echo attached; exit 3' >/dev/null
docker container attach s4 || echo "attach exit $?"
docker container prune -f >/dev/null
docker container ls -a -q | wc -l
docker container run --rm busybox echo ran
docker image tag busybox dropin/bb:1
docker image ls --format '{{.Repository}}:{{.Tag}}' dropin/bb
docker image list --format '{{.Repository}}:{{.Tag}}' dropin/bb
docker image inspect -f '{{.Os}} {{len .RootFS.Layers}}' dropin/bb:1
docker image history --format '{{.Comment}}' dropin/bb:1
docker image save -o "$T/bb.tar" dropin/bb:1
docker image rm dropin/bb:1
docker image load -i "$T/bb.tar"
docker image import "$T/s2.tar" dropin/imp:1 >/dev/null
docker container run --rm dropin/imp:1 echo imported
docker image build -q -t dropin/built:1 "$T/ctx" >/dev/null
docker container run --rm dropin/built:1
docker image rm dropin/bb:1 dropin/imp:1 dropin/built:1 >/dev/null
docker image prune -f >/dev/null
docker image ls --format '{{.Repository}}'
"#;
    let run_script = |via_berth: bool| {
        let mut c = Command::new("bash");
        let berth = bin_dir().join("berth");
        let prelude = if via_berth {
            format!("docker() {{ {} \"$@\"; }}\n", berth.display())
        } else {
            String::new()
        };
        c.arg("-c")
            .arg(format!("{prelude}{script}"))
            .arg("script")
            .arg(d.path(""))
            .env("DOCKER_HOST", format!("unix://{}", d.sock().display()))
            .env("BERTH_HOST", format!("unix://{}", d.sock().display()))
            .env("DOCKER_CONFIG", d.path("docker-config"))
            .stdin(Stdio::null());
        run_output(c.output().unwrap())
    };
    let theirs = run_script(false);
    assert_eq!(
        theirs.code, 0,
        "docker: {}\n{}",
        theirs.stdout, theirs.stderr
    );
    let ours = run_script(true);
    assert_eq!(ours.code, 0, "berth: {}\n{}", ours.stdout, ours.stderr);
    assert_eq!(ours.stdout, theirs.stdout, "berth stderr: {}", ours.stderr);
    for want in [
        "exec-ok\n",
        "s2\n",
        "137\n",
        "created\n",
        "attached\nattach exit 3\n",
        "ran\n",
        "Loaded image: dropin/bb:1\n",
        "imported\n",
        "built\n",
    ] {
        assert!(ours.stdout.contains(want), "{want:?} in {}", ours.stdout);
    }
    finish(d);
}

#[test]
fn format_functions_and_label_methods_like_docker() {
    let d = Daemon::new();
    d.docker(&[
        "create",
        "--name",
        "fa",
        "--label",
        "com.example.team=db",
        "--label",
        "tier=back",
        "busybox",
        "true",
    ])
    .ok();
    d.docker(&[
        "run",
        "-d",
        "--name",
        "fb",
        "-l",
        "tier=front",
        "busybox",
        "sleep",
        "100",
    ])
    .ok();
    d.docker(&["volume", "create", "--label", "com.example.team=db", "va"])
        .ok();
    d.docker(&["volume", "create", "vb"]).ok();
    d.docker(&[
        "create",
        "--name",
        "fh",
        "-l",
        "html=<a&b>",
        "busybox",
        "sh",
        "-c",
        "true && echo '<x>'",
    ])
    .ok();
    d.docker(&["network", "create", "--label", "com.example.team=db", "na"])
        .ok();
    for f in [
        r#"{{.Label "com.example.team"}}|{{.Label "tier"}}|{{.Label "nope"}}|"#,
        r#"table {{.Names}}\t{{.Label "com.example.team"}}\t{{.Label "tier"}}"#,
        r#"{{"tier" | .Label}}"#,
        r#"{{if eq (.Label "tier") "back"}}back:{{.Names}}{{else}}other:{{.Names}}{{end}}"#,
        "{{json .Labels}} {{json .Names}}",
        r#"{{join (split .Labels ",") ";"}}"#,
        r#"{{range $i, $l := split .Labels ","}}[{{$i}}={{$l}}]{{end}}"#,
        "{{lower .State}} {{upper .Names}} {{title .Names}}",
        "{{truncate .Names 1}}|{{pad .Names 2 1}}|{{pad \"\" 3 3}}|",
        "{{println .Names}}",
        r#"{{index (split .Labels ",") 0}} {{len .Names}} {{len (split .Labels ",")}}"#,
        r#"{{html "<a&b>"}} {{js "it's <x>"}} {{urlquery "a b&c"}}"#,
        r#"{{printf "%-6s|%5s|%q" .Names .State .Image}}"#,
        "{{.Names}} {{.Command}} {{.Mounts}} {{.LocalVolumes}} {{.Networks}}",
        "table {{.Names}}\t{{.Size}}",
        "{{print .Names 1 2 .State}}",
        "{{slice .Names 0 1}}",
        "{{nosuch .Names}}",
        "{{.Nope}}",
    ] {
        let r = same(&d, &["ps", "-a", "--format", f]);
        if f.contains("slice") || f.contains("nosuch") || f.contains("Nope") {
            assert_eq!(r.code, 1, "{f}");
        } else {
            assert_eq!(r.code, 0, "{f}: {}", r.stderr);
        }
    }
    // `{{json .}}` of a row: the same fields (RunningFor and how long it is up aside: they tick).
    let strip = |s: &str| -> Vec<serde_json::Value> {
        s.lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                let o = v.as_object_mut().unwrap();
                o.remove("RunningFor");
                o.remove("CreatedSince");
                // "Up Less than a second" a moment later reads "Up 1 second".
                if let Some(st) = o.get_mut("Status") {
                    if st.as_str().is_some_and(|t| t.starts_with("Up ")) {
                        *st = "Up".into();
                    }
                }
                v
            })
            .collect()
    };
    for args in [
        &["ps", "-a", "--format", "{{json .}}"][..],
        &["volume", "ls", "--format", "json"],
        &["network", "ls", "--format", "{{json .}}"],
        &["images", "--format", "{{json .}}"],
    ] {
        let ours = d.berth(args).ok().stdout;
        let theirs = d.docker(args).ok().stdout;
        assert_eq!(strip(&ours), strip(&theirs), "{args:?}");
    }
    for f in [
        r#"{{.Name}} {{.Label "com.example.team"}}|"#,
        r#"table {{.Name}}\t{{.Label "com.example.team"}}\t{{.Labels}}"#,
        "table {{.Driver}}\t{{.Name}}\t{{.Scope}}\t{{.Links}}\t{{.Size}}",
    ] {
        same(&d, &["volume", "ls", "--format", f]);
    }
    for f in [
        r#"{{.Name}} {{.Label "com.example.team"}}|"#,
        r#"table {{.Name}}\t{{.Label "com.example.team"}}\t{{.Driver}}\t{{.IPv6}}\t{{.Internal}}"#,
        "{{.Name}} {{.CreatedAt}}",
    ] {
        same(&d, &["network", "ls", "--format", f]);
    }
    for f in [
        "{{.Repository}}:{{.Tag}} {{.Size}} {{.VirtualSize}} {{.SharedSize}}",
        "table {{.Repository}}\t{{.Containers}}",
    ] {
        same(&d, &["images", "--format", f]);
    }
    // inspect prints the daemon's JSON as the docker CLI does (volumes re-encoded as Go does).
    for args in [
        &["inspect", "fa", "fh"][..],
        &["container", "inspect", "fh"],
        &["image", "inspect", "busybox"],
        &["volume", "inspect", "va", "vb"],
        &["network", "inspect", "na"],
        &[
            "inspect",
            "-f",
            "{{.Config.Labels}} {{json .Config.Cmd}} {{.Args}}",
            "fh",
        ],
        &["volume", "inspect", "-f", "{{.Labels}} {{json .}}", "va"],
    ] {
        same(&d, args);
    }
    // events, printed and through templates (Docker's field order for `json`).
    let until = (berth_util::time::now().0 + 1).to_string();
    std::thread::sleep(Duration::from_millis(1100));
    for f in [
        None,
        Some("{{json .}}"),
        Some("{{.Type}} {{.Action}} {{.Actor.Attributes.name}}"),
    ] {
        let mut args = vec!["events", "--since", "0", "--until", until.as_str()];
        if let Some(f) = f {
            args.extend(["--format", f]);
        }
        let r = same(&d, &args);
        r.stdout_contains("fh");
    }
    // Images' `.Label` is Berth's (the docker CLI has no labels in image rows).
    let ctx = d.context(
        "ctx",
        &[("Dockerfile", "FROM busybox\nLABEL com.example.team=img\n")],
    );
    d.berth(&["build", "-q", "-t", "labeled:1", ctx.to_str().unwrap()])
        .ok();
    let out = d
        .berth(&[
            "images",
            "--format",
            r#"{{.Repository}} {{.Label "com.example.team"}}"#,
            "labeled",
        ])
        .ok()
        .stdout;
    assert_eq!(out, "labeled img\n");
    d.docker(&["rm", "-f", "fa", "fb", "fh"]).ok();
    d.docker(&["volume", "rm", "va", "vb"]).ok();
    d.docker(&["network", "rm", "na"]).ok();
    finish(d);
}

#[test]
fn run_and_create_pull_missing_images_like_docker() {
    let reg = DockerRegistry::start();
    let d = Daemon::new();
    let name = format!("127.0.0.1:{}/dropin/bb:v1", reg.port);
    d.docker(&["tag", "busybox", &name]).ok();
    d.docker(&["push", &name]).ok();
    // Missing: "Unable to find image … locally", the pull on stderr, then the container.
    let mut errs = Vec::new();
    for cli in ["docker", "berth"] {
        d.docker(&["rmi", &name]).ok();
        let args = ["run", "--rm", name.as_str(), "echo", "pulled"];
        let r = if cli == "docker" {
            d.docker(&args)
        } else {
            d.berth(&args)
        };
        assert_eq!(
            (r.code, r.stdout.as_str()),
            (0, "pulled\n"),
            "{cli}: {}",
            r.stderr
        );
        assert!(
            r.stderr.starts_with(&format!(
                "Unable to find image '{name}' locally\nv1: Pulling from dropin/bb\n"
            )),
            "{cli}: {}",
            r.stderr
        );
        assert!(
            r.stderr
                .ends_with(&format!("Status: Downloaded newer image for {name}\n")),
            "{cli}: {}",
            r.stderr
        );
        errs.push(r.stderr);
    }
    assert_eq!(errs[0], errs[1], "the pull's progress");
    // create too: the ID alone on stdout; -q hides the pull.
    for q in [false, true] {
        d.docker(&["rmi", &name]).ok();
        let mut args = vec!["create"];
        if q {
            args.push("-q");
        }
        args.push(&name);
        let r = d.berth(&args).ok();
        assert_eq!(r.stdout.trim().len(), 64, "{}", r.stdout);
        assert_eq!(
            r.stderr.contains("Unable to find image"),
            !q,
            "{}",
            r.stderr
        );
        d.berth(&["rm", r.stdout.trim()]).ok();
    }
    // --pull always: pulled although present; --pull never: not pulled although missing.
    let r = same(&d, &["run", "--rm", "--pull", "always", &name, "true"]);
    r.stderr_contains(&format!("Status: Image is up to date for {name}"));
    d.docker(&["rmi", &name]).ok();
    let theirs = d.docker(&["run", "--rm", "--pull", "never", &name, "true"]);
    let ours = d.berth(&["run", "--rm", "--pull", "never", &name, "true"]);
    assert_eq!((ours.code, theirs.code), (125, 125));
    assert!(
        ours.stderr.contains("No such image") && theirs.stderr.contains("No such image"),
        "{}",
        ours.stderr
    );
    assert!(
        !ours.stderr.contains("Unable to find image"),
        "{}",
        ours.stderr
    );
    assert!(
        d.docker(&["image", "inspect", &name]).code != 0,
        "not pulled"
    );
    let r = d.berth(&["run", "--pull", "sometimes", "busybox", "true"]);
    r.failed_with(125, "invalid pull option: 'sometimes'");
    finish(d);
}

/// A CLI's `run` in the foreground, and the container it runs.
fn spawn_run(d: &Daemon, cli: &str, args: &[&str]) -> std::process::Child {
    let mut c = if cli == "berth" {
        let mut c = Command::new(bin_dir().join("berth"));
        c.arg("-H").arg(format!("unix://{}", d.sock().display()));
        c
    } else {
        let mut c = Command::new("docker");
        c.env("DOCKER_HOST", format!("unix://{}", d.sock().display()))
            .env("DOCKER_CONFIG", d.path("docker-config"));
        c
    };
    c.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn container_state(d: &Daemon, name: &str) -> Option<String> {
    let r = d.docker(&["inspect", "-f", "{{.State.Status}}", name]);
    (r.code == 0).then(|| r.stdout.trim().to_string())
}

fn interrupt(child: &std::process::Child) {
    // SAFETY: kill(2) on a child this test spawned and has not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
}

#[test]
fn ctrl_c_on_run_is_forwarded_to_the_container_like_docker() {
    let d = Daemon::new();
    for cli in ["docker", "berth"] {
        // Ctrl-C on a foreground `run --rm`: the container gets SIGINT, exits, is removed.
        let name = format!("sig-{cli}");
        let mut child = spawn_run(
            &d,
            cli,
            &[
                "run",
                "--rm",
                "--name",
                &name,
                "busybox",
                "sh",
                "-c",
                "trap 'echo got-int; exit 130' INT; echo ready; while :; do sleep 0.1; done",
            ],
        );
        let mut out = child.stdout.take().unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 64];
        while !String::from_utf8_lossy(&seen).contains("ready") {
            let n = out.read(&mut buf).unwrap();
            assert!(n > 0, "{cli}: no output");
            seen.extend_from_slice(&buf[..n]);
        }
        interrupt(&child);
        out.read_to_end(&mut seen).unwrap();
        let st = child.wait().unwrap();
        assert_eq!(st.code(), Some(130), "{cli}");
        assert_eq!(String::from_utf8_lossy(&seen), "ready\ngot-int\n", "{cli}");
        wait("removal", || container_state(&d, &name).is_none());
        // A process that ignores SIGINT (pid 1 without a handler): three Ctrl-C end the CLI,
        // the container goes on.
        let name = format!("sig3-{cli}");
        let child = spawn_run(
            &d,
            cli,
            &["run", "--name", &name, "busybox", "sleep", "100"],
        );
        wait("running", || {
            container_state(&d, &name).as_deref() == Some("running")
        });
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(300));
            interrupt(&child);
        }
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(1), "{cli}");
        assert!(
            String::from_utf8_lossy(&o.stderr)
                .contains("got 3 SIGTERM/SIGINTs, forcefully exiting"),
            "{cli}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(
            container_state(&d, &name).as_deref(),
            Some("running"),
            "{cli}"
        );
        d.docker(&["rm", "-f", &name]).ok();
    }
    // --sig-proxy=false: the signal ends berth, not the container.
    let mut child = spawn_run(
        &d,
        "berth",
        &[
            "run",
            "--sig-proxy=false",
            "--name",
            "noproxy",
            "busybox",
            "sleep",
            "100",
        ],
    );
    wait("running", || {
        container_state(&d, "noproxy").as_deref() == Some("running")
    });
    interrupt(&child);
    let st = child.wait().unwrap();
    assert_ne!(st.code(), Some(0));
    assert_eq!(container_state(&d, "noproxy").as_deref(), Some("running"));
    d.docker(&["rm", "-f", "noproxy"]).ok();
    finish(d);
}

/// The entries of a tar (sorted).
fn tar_entries(path: &std::path::Path) -> Vec<String> {
    let mut a = tar::Archive::new(std::fs::File::open(path).unwrap());
    let mut v: Vec<String> = a
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The entries of the last layer of the (only) image of a `docker save` archive.
fn last_layer_entries(path: &std::path::Path) -> Vec<String> {
    #[derive(serde::Deserialize)]
    struct Saved {
        #[serde(rename = "Layers")]
        layers: Vec<String>,
    }
    let read = |name: &str| -> Vec<u8> {
        let mut a = tar::Archive::new(std::fs::File::open(path).unwrap());
        let mut e = a
            .entries()
            .unwrap()
            .map(Result::unwrap)
            .find(|e| e.path().unwrap().to_string_lossy() == name)
            .unwrap_or_else(|| panic!("{name} not in the archive"));
        let mut v = Vec::new();
        e.read_to_end(&mut v).unwrap();
        v
    };
    let saved: Vec<Saved> = serde_json::from_slice(&read("manifest.json")).unwrap();
    let layer = read(saved[0].layers.last().unwrap());
    let r: Box<dyn Read> = if layer.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::GzDecoder::new(&layer[..]))
    } else {
        Box::new(&layer[..])
    };
    let entries = tar::Archive::new(r)
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    entries
}

#[test]
fn commit_and_export_like_docker() {
    let d = Daemon::new();
    d.docker(&[
        "run",
        "--name",
        "ce",
        "busybox",
        "sh",
        "-c",
        "echo data > /committed",
    ])
    .ok();
    // export: -o and standard output, the same archive as the docker CLI's.
    let ours = d.path("ours.tar");
    let theirs = d.path("theirs.tar");
    d.berth(&["export", "-o", ours.to_str().unwrap(), "ce"])
        .ok();
    d.docker(&["export", "-o", theirs.to_str().unwrap(), "ce"])
        .ok();
    let entries = tar_entries(&ours);
    assert!(entries.contains(&"committed".to_string()), "{entries:?}");
    assert_eq!(entries, tar_entries(&theirs));
    let piped = d.path("piped.tar");
    let f = std::fs::File::create(&piped).unwrap();
    let st = Command::new(bin_dir().join("berth"))
        .arg("-H")
        .arg(format!("unix://{}", d.sock().display()))
        .args(["container", "export", "ce"])
        .stdout(f)
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(tar_entries(&piped), entries);
    let r = same(&d, &["export", "nosuch"]);
    assert_eq!(r.code, 1);
    let r = d.berth(&["export", "-o", "/nonexistent-dir/x.tar", "ce"]);
    r.failed_with(1, "invalid output path");
    // commit: through the Engine API's POST /commit.
    for (cli, image) in [
        ("docker", "committed/docker:1"),
        ("berth", "committed/berth:1"),
    ] {
        let args = [
            "commit",
            "-a",
            "Ann <ann@example.com>",
            "-m",
            "a message",
            "-c",
            "ENV COMMITTED=1",
            "-c",
            "CMD [\"cat\", \"/committed\"]",
            "ce",
            image,
        ];
        let r = if cli == "docker" {
            d.docker(&args)
        } else {
            d.berth(&args)
        }
        .ok();
        assert!(r.stdout.starts_with("sha256:"), "{cli}: {}", r.stdout);
        let f = "{{.Author}}|{{.Comment}}|{{.Config.Env}}|{{.Config.Cmd}}";
        let got = d.docker(&["image", "inspect", "-f", f, image]).ok().stdout;
        assert!(
            got.starts_with("Ann <ann@example.com>|a message|"),
            "{cli}: {got}"
        );
        assert!(
            got.contains("COMMITTED=1") && got.contains("[cat /committed]"),
            "{cli}: {got}"
        );
        assert_eq!(
            d.docker(&["run", "--rm", image]).ok().stdout,
            "data\n",
            "{cli}"
        );
        // The container's image is the committed image's parent, as dockerd records it.
        let parent = d
            .docker(&["image", "inspect", "-f", "{{.Parent}}", image])
            .ok()
            .stdout;
        let base = d
            .docker(&["image", "inspect", "-f", "{{.Id}}", "busybox"])
            .ok()
            .stdout;
        assert_eq!(parent, base, "{cli}");
    }
    let r = d.berth(&["commit", "--pause=false", "ce"]).ok();
    assert!(r.stdout.starts_with("sha256:"), "{}", r.stdout);
    let r = same(&d, &["commit", "nosuch"]);
    assert_eq!(r.code, 1);
    // A running container is paused while committed (the default) and keeps running; the
    // runtime's mount points are not in the new layer.
    d.docker(&[
        "run",
        "-d",
        "--name",
        "cr",
        "busybox",
        "sh",
        "-c",
        "echo live > /live; exec sleep 300",
    ])
    .ok();
    wait("/live", || {
        d.docker(&["exec", "cr", "cat", "/live"]).stdout == "live\n"
    });
    let r = d.berth(&["commit", "cr", "committed/running"]).ok();
    assert!(r.stdout.starts_with("sha256:"), "{}", r.stdout);
    let state = d
        .docker(&["inspect", "-f", "{{.State.Status}}", "cr"])
        .ok()
        .stdout;
    assert_eq!(state, "running\n");
    let until = format!("{}", berth_util::time::now().0 + 1);
    let actions = d
        .docker(&[
            "events",
            "--since",
            "0",
            "--until",
            &until,
            "--filter",
            "container=cr",
            "--format",
            "{{.Action}}",
        ])
        .ok()
        .stdout;
    let actions: Vec<&str> = actions.lines().collect();
    let at = |a: &str| actions.iter().position(|x| *x == a);
    // Paused, committed, resumed (dockerd's order).
    let order = [at("pause"), at("commit"), at("unpause")];
    assert!(
        order.iter().all(Option::is_some) && order.is_sorted(),
        "{actions:?}"
    );
    assert_eq!(
        d.docker(&["run", "--rm", "committed/running", "cat", "/live"])
            .ok()
            .stdout,
        "live\n"
    );
    let layers = |image: &str| {
        d.docker(&["image", "inspect", "-f", "{{len .RootFS.Layers}}", image])
            .ok()
            .stdout
    };
    let base: usize = layers("busybox").trim().parse().unwrap();
    assert_eq!(layers("committed/running").trim(), (base + 1).to_string());
    let saved = d.path("running.tar");
    d.docker(&[
        "image",
        "save",
        "-o",
        saved.to_str().unwrap(),
        "committed/running",
    ])
    .ok();
    let new_layer = last_layer_entries(&saved);
    assert!(new_layer.contains(&"live".to_string()), "{new_layer:?}");
    assert!(
        !new_layer
            .iter()
            .any(|e| e.starts_with("proc") || e.starts_with("dev") || e.starts_with("etc/hosts")),
        "{new_layer:?}"
    );
    d.docker(&["rm", "-f", "cr"]).ok();
    finish(d);
}

#[test]
fn system_df_counts_like_docker() {
    let d = Daemon::new();
    d.docker(&["volume", "create", "used"]).ok();
    d.docker(&["volume", "create", "unused"]).ok();
    d.docker(&[
        "run",
        "-d",
        "--name",
        "dfa",
        "-v",
        "used:/data",
        "busybox",
        "sh",
        "-c",
        "head -c 100000 /dev/zero > /data/f; head -c 5000 /dev/zero > /w; sleep 1000",
    ])
    .ok();
    d.docker(&[
        "run",
        "-v",
        "unused:/data",
        "--name",
        "dfb",
        "busybox",
        "sh",
        "-c",
        "head -c 3000 /dev/zero > /data/f; head -c 2000 /dev/zero > /x",
    ])
    .ok();
    d.docker(&["create", "--name", "dfc", "busybox", "true"])
        .ok();
    d.docker(&["rm", "dfb"]).ok();
    let r = same(&d, &["system", "df"]);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(
        lines[2].starts_with("Containers      2         1"),
        "{}",
        r.stdout
    );
    assert!(
        lines[3].starts_with("Local Volumes   2         1"),
        "{}",
        r.stdout
    );
    assert!(lines[4].starts_with("Build Cache"), "{}", r.stdout);
    same(&d, &["system", "df", "--format", "{{json .}}"]);
    same(
        &d,
        &[
            "system",
            "df",
            "--format",
            "table {{.Type}}\t{{.Active}}\t{{.Reclaimable}}",
        ],
    );
    same(
        &d,
        &[
            "system",
            "df",
            "--format",
            "{{.Type}}: {{.TotalCount}} {{.Size}}",
        ],
    );
    d.docker(&["rm", "-f", "dfa", "dfc"]).ok();
    d.docker(&["volume", "rm", "used", "unused"]).ok();
    // Prunes print what they removed as the docker CLI does (container IDs differ between the
    // two runs: they are replaced by a placeholder).
    let mut outs = Vec::new();
    for cli in ["docker", "berth"] {
        let run = |args: &[&str]| {
            if cli == "docker" {
                d.docker(args)
            } else {
                d.berth(args)
            }
        };
        d.docker(&["network", "create", "pn"]).ok();
        d.docker(&["volume", "create", "pv"]).ok();
        let id = d.docker(&["create", "busybox", "true"]).ok().stdout;
        let mut text = String::new();
        for args in [
            &["network", "prune", "-f"][..],
            &["volume", "prune", "-a", "-f"],
            &["container", "prune", "-f"],
            &["network", "prune", "-f"],
        ] {
            text.push_str(&run(args).ok().stdout.replace(id.trim(), "<id>"));
        }
        outs.push(text);
    }
    assert_eq!(outs[1], outs[0]);
    assert!(
        outs[1].contains("Deleted Networks:\npn\n\n") && outs[1].contains("Deleted Volumes:\npv\n"),
        "{}",
        outs[1]
    );
    finish(d);
}
