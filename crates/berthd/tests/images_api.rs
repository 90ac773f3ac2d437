//! Image routes through the real docker CLI and docker-py against berthd: push and pull with
//! a local `docker-registry`, tag, rmi, inspect, history, save/load, import, prune, search.

mod common;
use common::*;

#[test]
fn push_pull_and_image_commands() {
    require_root!(DOCKER_REGISTRY);
    let (reg, d) = registry_and_daemon();
    let name = format!("127.0.0.1:{}/test/bb:v1", reg.port);
    let (r, out) = push_rmi_pull(&d, &name);
    assert!(
        r.stdout.contains("v1: digest: sha256:"),
        "{} {}",
        r.stdout,
        r.stderr
    );
    assert!(out.contains("Digest: sha256:"), "{out}");
    let out = d.docker(&["pull", &name]).ok().stdout;
    assert!(out.contains("Image is up to date"), "{out}");
    // An unknown tag: a clear error and a failure code.
    let r = d.docker(&["pull", &format!("127.0.0.1:{}/test/bb:nope", reg.port)]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("nope") || r.stderr.contains("not found") || r.stderr.contains("unknown"),
        "{}",
        r.stderr
    );
    // inspect, history, images.
    let id = d.docker_out("image inspect -f", &["{{.Id}}", "busybox"]);
    assert!(id.starts_with("sha256:"), "{id}");
    let h = d.docker(&["history", "busybox"]).ok().stdout;
    assert!(h.contains("IMAGE") && h.contains("CREATED BY"), "{h}");
    let imgs = d
        .docker(&["images", "--format", "{{.Repository}}:{{.Tag}}"])
        .ok()
        .stdout;
    assert!(
        imgs.contains("busybox:latest")
            && imgs.contains(&format!("127.0.0.1:{}/test/bb:v1", reg.port)),
        "{imgs}"
    );
    // save and load.
    let tar = d.path("bb.tar");
    d.docker(&["save", "-o", tar.to_str().unwrap(), "busybox"])
        .ok();
    assert!(std::fs::metadata(&tar).unwrap().len() > 100_000);
    d.docker(&["rmi", "-f", "busybox"]).ok();
    let out = d.docker(&["load", "-i", tar.to_str().unwrap()]).ok().stdout;
    assert!(out.contains("Loaded image: busybox:latest"), "{out}");
    // import from stdin with a change.
    let rootfs = d.path("rootfs.tar");
    let out = import_rootfs(&d, &["CMD [\"echo\", \"imported\"]"], "imp:1").stdout;
    assert!(out.trim().starts_with("sha256:"), "{out}");
    assert_eq!(
        d.docker(&["run", "--rm", "imp:1"]).ok().stdout,
        "imported\n"
    );
    // A registry-style name without a tag is tagged `latest` (dockerd's rule); the tag
    // parameter replaces a tag in the name.
    d.docker(&["import", rootfs.to_str().unwrap(), "localhost:5055/imp2"])
        .ok();
    d.docker(&["import", rootfs.to_str().unwrap(), "localhost:5055/imp3:a"])
        .ok();
    let imgs = d
        .docker(&["images", "--format", "{{.Repository}} {{.Tag}}"])
        .ok()
        .stdout;
    assert!(imgs.contains("localhost:5055/imp2 latest\n"), "{imgs}");
    assert!(imgs.contains("localhost:5055/imp3 a\n"), "{imgs}");
    d.docker(&["rmi", "localhost:5055/imp2", "localhost:5055/imp3:a"])
        .ok();
    // rmi of an image a container uses: a conflict; search is refused clearly.
    d.docker_line("create --name user imp:1", &[]).ok();
    let r = d.docker(&["rmi", "imp:1"]);
    r.fails_with("container");
    d.docker(&["rm", "user"]).ok();
    d.docker(&["rmi", "imp:1"]).ok();
    let r = d.docker(&["search", "busybox"]);
    r.fails_with("not supported");
    // docker-py: list, pull, tag, remove.
    let Some(py) = d.docker_py(&format!(
        r#"
import docker, os
c = docker.DockerClient(base_url=os.environ["BERTH_SOCK"])
img = c.images.pull("127.0.0.1:{port}/test/bb", tag="v1")
assert img.id.startswith("sha256:"), img.id
img.tag("pytag", "x")
assert any("pytag:x" in t for i in c.images.list() for t in i.tags)
c.images.remove("pytag:x")
print("ok")
"#,
        port = reg.port
    )) else {
        return;
    };
    assert_eq!(py.stdout.trim(), "ok", "{}", py.stderr);
    // The berth CLI's image commands go through the daemon too.
    let name2 = format!("127.0.0.1:{}/test/viaberth:v2", reg.port);
    d.berth(&["tag", "busybox", &name2]).ok();
    let out = d.berth(&["push", &name2]).ok().stdout;
    assert!(out.contains("v2: digest: sha256:"), "{out}");
    d.berth(&["rmi", &name2]).ok();
    let out = d.berth(&["pull", &name2]).ok().stdout;
    assert!(out.contains("Downloaded newer image"), "{out}");
    let imgs = d
        .berth(&["images", "--format", "{{.Repository}}:{{.Tag}}"])
        .ok()
        .stdout;
    assert!(imgs.contains("/test/viaberth:v2"), "{imgs}");
    assert!(d
        .berth_line("image inspect -f", &["{{.Os}}", "busybox"])
        .ok()
        .stdout
        .contains("linux"));
    let tar2 = d.path("bb2.tar");
    d.berth(&["save", "-o", tar2.to_str().unwrap(), &name2])
        .ok();
    d.berth(&["rmi", &name2]).ok();
    let out = d.berth(&["load", "-i", tar2.to_str().unwrap()]).ok().stdout;
    assert!(out.contains("Loaded image"), "{out}");
    let out = d
        .berth(&["import", rootfs.to_str().unwrap(), "imp:2"])
        .ok()
        .stdout;
    assert!(out.trim().starts_with("sha256:"), "{out}");
    assert!(d
        .berth(&["history", "imp:2"])
        .ok()
        .stdout
        .contains("Imported"));
    // system df.
    let df = d.docker(&["system", "df"]).ok().stdout;
    assert!(df.contains("Images") && df.contains("Containers"), "{df}");
    finish(d);
}

/// `docker pull -a` (the CLI omits `tag`): every tag of the repository, one block per tag,
/// then one status line for the repository and its name.
#[test]
fn pull_all_tags_through_the_daemon() {
    require_root!(DOCKER_REGISTRY);
    let (reg, d) = registry_and_daemon();
    let repo = format!("127.0.0.1:{}/test/alltags", reg.port);
    // Three tags: two of busybox, one of another image (busybox imported with a CMD).
    d.docker(&["tag", "busybox", &format!("{repo}:a")]).ok();
    d.docker(&["tag", "busybox", &format!("{repo}:b")]).ok();
    import_rootfs(&d, &["CMD [\"echo\", \"tag c\"]"], &format!("{repo}:c"));
    for t in ["a", "b", "c"] {
        d.docker(&["push", "-q", &format!("{repo}:{t}")]).ok();
        d.docker(&["rmi", &format!("{repo}:{t}")]).ok();
    }
    let r = d.docker(&["pull", "-a", &repo]).ok();
    for t in ["a", "b", "c"] {
        r.stdout_contains(&format!("{t}: Pulling from test/alltags"));
    }
    assert!(!r.stdout.contains("Using default tag"), "{}", r.stdout);
    assert_eq!(
        r.stdout.matches("Digest: sha256:").count(),
        3,
        "{}",
        r.stdout
    );
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(
        lines[lines.len() - 2],
        format!("Status: Downloaded newer image for {repo}"),
        "{}",
        r.stdout
    );
    assert_eq!(lines[lines.len() - 1], repo, "{}", r.stdout);
    let imgs = d
        .docker(&["images", "--format", "{{.Repository}}:{{.Tag}}", &repo])
        .ok()
        .stdout;
    let mut imgs: Vec<&str> = imgs.lines().collect();
    imgs.sort();
    assert_eq!(
        imgs,
        [
            format!("{repo}:a"),
            format!("{repo}:b"),
            format!("{repo}:c")
        ]
    );
    assert_eq!(
        d.docker(&["run", "--rm", &format!("{repo}:c")]).ok().stdout,
        "tag c\n"
    );
    // Again: up to date.
    let r = d.docker(&["pull", "-a", &repo]).ok();
    r.stdout_contains(&format!("Status: Image is up to date for {repo}"));
    // A tag with -a is refused by the CLI; the berth CLI refuses it the same way.
    let r = d.docker(&["pull", "-a", &format!("{repo}:a")]);
    assert_ne!(r.code, 0);
    let r = d.berth(&["pull", "-a", &format!("{repo}:a")]);
    r.fails_with("tag can't be used with --all-tags/-a");
    // Without -a, a bare name still means `latest` (the CLI sends tag=latest): not found.
    let r = d.docker(&["pull", &repo]);
    assert_ne!(r.code, 0);
    r.stdout_contains("Using default tag: latest");
    // The berth CLI's -a goes through the daemon the same way.
    for t in ["a", "b", "c"] {
        d.docker(&["rmi", &format!("{repo}:{t}")]).ok();
    }
    let r = d.berth(&["pull", "-a", &repo]).ok();
    assert_eq!(
        r.stdout.matches(": Pulling from test/alltags").count(),
        3,
        "{}",
        r.stdout
    );
    r.stdout_contains(&format!(
        "Status: Downloaded newer image for {repo}\n{repo}\n"
    ));
    finish(d);
}

/// `docker push --all-tags` (the CLI omits `tag`): every local tag of the repository in
/// lexical order, one block per tag, the repository line once (docker/cli e2e TestPushAllTags).
#[test]
fn push_all_tags_through_the_daemon() {
    require_root!(DOCKER_REGISTRY);
    let (reg, d) = registry_and_daemon();
    let repo = format!("127.0.0.1:{}/test/pushall", reg.port);
    for t in ["v1.0", "latest", "v1"] {
        d.docker(&["tag", "busybox", &format!("{repo}:{t}")]).ok();
    }
    let r = d.docker(&["push", "--all-tags", &repo]).ok();
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(
        lines[0],
        format!("The push refers to repository [{repo}]"),
        "{}",
        r.stdout
    );
    assert_eq!(
        r.stdout.matches("The push refers to repository").count(),
        1,
        "{}",
        r.stdout
    );
    let pushed: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.split_once(": digest: sha256:").map(|(t, _)| t))
        .collect();
    assert_eq!(pushed, ["latest", "v1", "v1.0"], "{}", r.stdout);
    // Every tag is in the registry now.
    d.docker(&["rmi", &format!("{repo}:v1")]).ok();
    d.docker(&["pull", "-q", &format!("{repo}:v1")]).ok();
    // A repository without local tags: the daemon's 404 before anything is pushed.
    let r = d.docker(&[
        "push",
        "--all-tags",
        &format!("127.0.0.1:{}/test/none", reg.port),
    ]);
    r.fails_with("An image does not exist locally with the tag");
    finish(d);
}

/// Pulling a tag of an image that is here already (under another name): dockerd prints no
/// layer lines ("Already exists"), only the digest and the status (docker/cli e2e
/// TestRunAttachedFromRemoteImageAndRemove's golden output).
#[test]
fn pull_of_an_image_here_already_prints_no_layer_lines() {
    require_root!(DOCKER_REGISTRY);
    let (reg, d) = registry_and_daemon();
    let name = format!("127.0.0.1:{}/test/here:v1", reg.port);
    d.docker(&["tag", "busybox", &name]).ok();
    d.docker(&["push", "-q", &name]).ok();
    d.docker(&["rmi", &name]).ok();
    let r = d.docker(&["pull", &name]).ok();
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", r.stdout);
    assert_eq!(lines[0], "v1: Pulling from test/here", "{}", r.stdout);
    assert!(lines[1].starts_with("Digest: sha256:"), "{}", r.stdout);
    assert_eq!(
        lines[2..],
        [
            format!("Status: Downloaded newer image for {name}"),
            name.clone()
        ],
        "{}",
        r.stdout
    );
    finish(d);
}
