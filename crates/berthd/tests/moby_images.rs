//! Image API behaviours that moby's own integration tests (`integration/image`) check of
//! dockerd 28, through raw HTTP and the docker CLI against berthd: list filters and shapes,
//! tag validation, `docker load` of archives written by Go tools.

mod common;
use common::*;

/// The string field `key` of each object of a JSON array.
fn field_of_each<'a>(list: &'a serde_json::Value, key: &str) -> Vec<&'a str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|e| e[key].as_str().unwrap())
        .collect()
}

/// The IDs an image list answers.
fn list_ids(d: &Daemon, filters: &str) -> Vec<String> {
    let q: String = filters
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let v = get_json(d, &format!("/v1.44/images/json?filters={q}"));
    let mut ids: Vec<String> = field_of_each(&v, "Id")
        .into_iter()
        .map(str::to_string)
        .collect();
    ids.sort();
    ids
}

/// `before`/`since` compare creation times to the nanosecond (images committed within one
/// second still order), `until` bounds by time, and a dangling image's `RepoTags` and
/// `RepoDigests` are empty lists from API 1.43 (`<none>:<none>` before).
#[test]
fn image_list_time_filters_and_dangling_shape() {
    let d = root_daemon!();
    d.docker(&["create", "--name", "src", "busybox", "true"])
        .ok();
    let mut ids = Vec::new();
    for i in 0..4 {
        std::thread::sleep(std::time::Duration::from_millis(2));
        let id = d
            .docker_out("commit", &["src", &format!("lf:v{i}")])
            .trim()
            .to_string();
        ids.push(id);
    }
    let middle = {
        let mut m = ids[1..3].to_vec();
        m.sort();
        m
    };
    let f = format!(
        r#"{{"since":{{"{}":true}},"before":{{"{}":true}}}}"#,
        ids[0], ids[3]
    );
    assert_eq!(list_ids(&d, &f), middle);
    // Several `before` values: the oldest bound wins; several `since`: the newest.
    let f = format!(
        r#"{{"before":{{"{}":true,"{}":true}},"reference":{{"lf":true}}}}"#,
        ids[3], ids[2]
    );
    let mut want = ids[0..2].to_vec();
    want.sort();
    assert_eq!(list_ids(&d, &f), want);
    // `until`: an RFC 3339 time in the future keeps all, one in the past none.
    let f = r#"{"until":{"2999-01-01T00:00:00Z":true},"reference":{"lf":true}}"#;
    assert_eq!(list_ids(&d, f).len(), 4);
    let f = r#"{"until":{"2000-01-01T00:00:00Z":true},"reference":{"lf":true}}"#;
    assert!(list_ids(&d, f).is_empty());
    let r = d
        .http(
            "GET",
            "/v1.44/images/json?filters=%7B%22until%22%3A%7B%22soon%22%3Atrue%7D%7D",
            None,
        )
        .unwrap();
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    // A dangling image (its only tag moved away).
    d.docker(&["commit", "src", "lf:v3"]).ok();
    let dangling = &ids[3];
    let find = |v: serde_json::Value| {
        v.as_array()
            .unwrap()
            .iter()
            .find(|i| i["Id"] == dangling.as_str())
            .cloned()
            .unwrap_or_else(|| panic!("{dangling} not listed: {v}"))
    };
    let now = find(get_json(&d, "/v1.44/images/json"));
    assert_eq!(now["RepoTags"], serde_json::json!([]), "{now}");
    assert_eq!(now["RepoDigests"], serde_json::json!([]), "{now}");
    let old = find(get_json(&d, "/v1.42/images/json"));
    assert_eq!(
        old["RepoTags"],
        serde_json::json!(["<none>:<none>"]),
        "{old}"
    );
    assert_eq!(
        old["RepoDigests"],
        serde_json::json!(["<none>@<none>"]),
        "{old}"
    );
    // The CLI still shows it as <none>.
    let out = d.docker_out("images --format", &["{{.Repository}}:{{.Tag}} {{.ID}}"]);
    assert!(
        out.contains(&format!("<none>:<none> {}", &dangling[7..19])),
        "{out}"
    );
    d.finish();
}

/// `sha256:sometag` would read as an image ID: dockerd refuses it as a tag.
#[test]
fn tag_with_digest_algorithm_as_name_is_refused() {
    let d = root_daemon!();
    let r = d.post("/v1.44/images/busybox/tag?repo=sha256&tag=sometag", "");
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    assert!(
        r.contains("refusing to create an ambiguous tag using digest algorithm as name"),
        "{r}"
    );
    d.docker(&["tag", "busybox", "sha256:x"])
        .fails_with("refusing to create an ambiguous tag");
    // A repository merely starting with it is fine.
    d.docker(&["tag", "busybox", "sha256x:y"]).ok();
    d.finish();
}

/// A `docker save` archive as Go writes it for an image without layers or tags: `null` lists
/// in `manifest.json` and in the config's `rootfs.diff_ids` load as empty ones.
#[test]
fn load_archive_with_null_lists() {
    let d = root_daemon!();
    let dir = d.path("nulls");
    let config = r#"{"architecture":"amd64","config":{"Env":["PATH=/bin"],"Labels":{"k":"v"}},"created":null,"history":[{"created_by":"LABEL k=v","empty_layer":true}],"os":"linux","rootfs":{"type":"layers","diff_ids":null}}"#;
    let hex = berth_image::digest::Digest::of_bytes(config.as_bytes())
        .hex()
        .to_string();
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    std::fs::write(dir.join("blobs/sha256").join(&hex), config).unwrap();
    std::fs::write(
        dir.join("manifest.json"),
        format!(r#"[{{"Config":"blobs/sha256/{hex}","RepoTags":null,"Layers":null}}]"#),
    )
    .unwrap();
    let tar = d.path("nulls.tar");
    let st = std::process::Command::new("tar")
        .arg("-C")
        .arg(&dir)
        .arg("-cf")
        .arg(&tar)
        .args(["manifest.json", "blobs"])
        .status()
        .unwrap();
    assert!(st.success());
    let out = d.docker(&["load", "-i", tar.to_str().unwrap()]).ok().stdout;
    assert!(
        out.contains(&format!("Loaded image ID: sha256:{hex}")),
        "{out}"
    );
    let v = get_json(&d, &format!("/v1.44/images/sha256:{hex}/json"));
    assert_eq!(v["RepoTags"], serde_json::json!([]), "{v}");
    assert_eq!(v["Config"]["Labels"]["k"], "v", "{v}");
    d.finish();
}

/// `docker save REPO` of a repository without a `latest` tag saves all of its tags; an image's
/// config and layers in the archive carry the image's creation time (dockerd's graphdriver
/// store), the other entries the epoch.
#[test]
fn save_bare_repository_and_entry_times() {
    let d = root_daemon!();
    d.docker(&["create", "--name", "src", "busybox", "true"])
        .ok();
    let foo = d
        .docker_out("commit", &["src", "multi:foo"])
        .trim()
        .to_string();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let bar = d
        .docker_out("commit", &["src", "multi:bar"])
        .trim()
        .to_string();
    let tar = d.path("multi.tar");
    d.docker(&["save", "-o", tar.to_str().unwrap(), "multi", "busybox"])
        .ok();
    let mut a = tar::Archive::new(std::fs::File::open(&tar).unwrap());
    let mut mtimes = std::collections::BTreeMap::new();
    let mut manifest = String::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        if path == "manifest.json" {
            std::io::Read::read_to_string(&mut e, &mut manifest).unwrap();
        }
        mtimes.insert(path, e.header().mtime().unwrap());
    }
    let entries: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    let configs = field_of_each(&entries, "Config");
    assert_eq!(configs.len(), 3, "{manifest}");
    for id in [&foo, &bar] {
        let path = format!("blobs/sha256/{}", &id[7..]);
        assert!(configs.contains(&path.as_str()), "{id}: {manifest}");
        let created = d.inspect("{{.Created}}", id);
        let secs = berth_util::time::parse_rfc3339(created.trim()).unwrap().0;
        assert_eq!(mtimes[&path], secs as u64, "{path} of {created}");
    }
    assert_eq!(mtimes["manifest.json"], 0);
    // An unknown repository is still a 404 before anything is written.
    let r = d
        .http("GET", "/v1.44/images/get?names=nosuchrepo", None)
        .unwrap();
    assert!(r.starts_with("HTTP/1.1 404"), "{r}");
    assert!(r.contains("No such image: nosuchrepo:latest"), "{r}");
    d.finish();
}

/// An import of a request body answers once the image exists (dockerd reports nothing
/// before): a client that only reads the response head finds the image at once. An empty
/// archive imports as an image without content, with the requested platform.
#[test]
fn import_answers_when_the_image_exists() {
    use std::io::{Read, Write};
    let d = root_daemon!();
    for (i, body) in [vec![0u8; 1024], Vec::new()].into_iter().enumerate() {
        let mut s = std::os::unix::net::UnixStream::connect(d.sock()).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(60)))
            .unwrap();
        let head = format!(
            "POST /v1.44/images/create?fromSrc=-&repo=imp-head:tc{i}&platform=linux/sparc64 HTTP/1.1\r\nHost: berth\r\nConnection: close\r\nContent-Type: application/x-tar\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(&body).unwrap();
        // Only the response head: the body (the ID) is not waited for.
        let mut got = Vec::new();
        let mut byte = [0u8; 1];
        while !got.ends_with(b"\r\n\r\n") {
            assert_eq!(s.read(&mut byte).unwrap(), 1, "{got:?}");
            got.push(byte[0]);
        }
        assert!(got.starts_with(b"HTTP/1.1 200"), "{got:?}");
        let v = get_json(&d, &format!("/v1.44/images/imp-head:tc{i}/json"));
        assert_eq!(v["Architecture"], "sparc64", "{v}");
        assert_eq!(v["Os"], "linux", "{v}");
    }
    d.finish();
}

/// `GET /networks/` (a trailing slash) lists the networks, as dockerd's router does.
#[test]
fn network_list_with_trailing_slash() {
    let d = root_daemon!();
    let v = get_json(&d, "/v1.44/networks/");
    let names = field_of_each(&v, "Name");
    assert!(names.contains(&"bridge"), "{v}");
    d.finish();
}

/// moby integration-cli TestSaveAndLoadRepoFlags and TestSaveLoadParents: loading an archive
/// does not touch `LastTagTime` (dockerd's load adds references only), and an image saved
/// with its parent gets that parent back when loaded.
#[test]
fn load_keeps_last_tag_time_and_restores_parents() {
    let d = root_daemon!();
    d.docker_line("run --name slp1 busybox touch /foo", &[])
        .ok();
    let foo = d
        .docker_line("commit slp1 slp:foo", &[])
        .ok()
        .stdout
        .trim()
        .to_string();
    d.docker_line("run --name slp2", &[&foo, "touch", "/bar"])
        .ok();
    let bar = d
        .docker_line("commit slp2 slp:bar", &[])
        .ok()
        .stdout
        .trim()
        .to_string();
    assert_eq!(d.inspect("{{.Parent}}", &bar).trim(), foo);
    let before = d.docker_line("image inspect slp:foo", &[]).ok().stdout;
    let out = d.path("slp.tar");
    let out = out.to_str().unwrap();
    d.docker(&["save", "-o", out, &bar, &foo]).ok();
    d.docker(&["save", "-o", &format!("{out}.foo"), "slp:foo"])
        .ok();
    d.docker_line("load -i", &[&format!("{out}.foo")]).ok();
    let after = d.docker_line("image inspect slp:foo", &[]).ok().stdout;
    assert_eq!(before, after, "inspect changed by a save and load");
    d.docker_line("rm slp2", &[]).ok();
    d.docker_line("rmi slp:bar", &[]).ok();
    d.docker_line("load -i", &[out]).ok();
    assert_eq!(d.inspect("{{.Parent}}", &bar).trim(), foo);
    d.finish();
}

/// A commit logs dockerd's events in its order: the new image's `create` (its ID as actor
/// and name), its `tag`, then the container's `commit`.
#[test]
fn commit_logs_image_create_then_tag_then_container_commit() {
    let d = root_daemon!();
    d.docker(&["create", "--name", "ev", "busybox", "true"])
        .ok();
    let id = d
        .docker_out("commit", &["ev", "evimg:1"])
        .trim()
        .to_string();
    let until = (berth_util::time::now().0 + 1).to_string();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let out = d.docker_out(
        "events --since 0 --until",
        &[
            &until,
            "--filter",
            "type=image",
            "--filter",
            "type=container",
            "--format",
            "{{.Type}} {{.Action}} {{.Actor.ID}} {{.Actor.Attributes.name}}",
        ],
    );
    let lines: Vec<&str> = out
        .lines()
        .filter(|l| !l.starts_with("container create"))
        .collect();
    assert_eq!(
        lines,
        [
            format!("image create {id} {id}"),
            format!("image tag {id} evimg:1"),
            format!("container commit {} ev", d.inspect("{{.Id}}", "ev").trim()),
        ],
        "{out}"
    );
    finish(d);
}

/// `load --platform` (API 1.48): only the archive's images of that platform are loaded; an
/// archive without one is an error naming it.
#[test]
fn load_with_a_platform_takes_only_that_platforms_images() {
    let d = root_daemon!();
    let rootfs = d.path("rootfs.tar");
    let rootfs = rootfs.to_str().unwrap();
    d.docker(&["import", "--platform", "linux/arm64", rootfs, "ldp:arm"])
        .ok();
    d.docker(&["tag", "busybox", "ldp:amd"]).ok();
    let archive = d.path("ldp.tar");
    let archive = archive.to_str().unwrap();
    d.docker(&["save", "-o", archive, "ldp:arm", "ldp:amd"])
        .ok();
    d.docker(&["rmi", "ldp:arm", "ldp:amd"]).ok();
    let out = d
        .docker(&["load", "--platform", "linux/arm64", "-i", archive])
        .ok()
        .stdout;
    assert_eq!(out, "Loaded image: ldp:arm\n");
    d.docker(&["image", "inspect", "ldp:amd"])
        .fails_with("No such image: ldp:amd");
    d.docker(&["load", "--platform", "linux/s390x", "-i", archive])
        .fails_with("requested platform (linux/s390x) not found");
    finish(d);
}

/// An import's `platform` is checked as dockerd does (moby TestImportWithCustomPlatformReject):
/// containerd's `platforms.Parse` words, then a non-Linux OS refused; all 400s.
#[test]
fn import_platform_is_checked_as_dockerd() {
    let d = root_daemon!();
    let rootfs = d.path("rootfs.tar");
    let rootfs = rootfs.to_str().unwrap();
    for (p, want) in [
        ("%20%20%20%20%20%20%20", "is an invalid OS component"),
        ("%2F", "is an invalid OS component"),
        ("macos", "operating system is not supported"),
        ("macos%2Farm64", "operating system is not supported"),
        ("nintendo64", "unknown operating system or architecture"),
    ] {
        let r = d.post(
            &format!("/v1.51/images/create?fromSrc=-&repo=imp:p&platform={p}"),
            "",
        );
        let msg = api_error(&r, 400);
        assert!(msg.contains(want), "{p}: {msg}");
    }
    d.docker(&["import", "--platform", "linux/arm64", rootfs, "imp:p"])
        .ok();
    finish(d);
}

/// moby's TestImportWithCustomPlatformReject: a request refused before its body is read
/// (an import for an unknown operating system) still reads the body a client is streaming,
/// as Go's server does, so the client gets the answer rather than a broken pipe.
#[test]
fn a_refused_upload_still_reads_the_body_and_answers() {
    use std::io::{Read, Write};
    let d = root_daemon!();
    let body = vec![0u8; 200 << 10];
    let mut s = std::os::unix::net::UnixStream::connect(d.sock()).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let head = format!(
        "POST /v1.51/images/create?fromSrc=-&platform=macos&repo=imp:x HTTP/1.1\r\nHost: berth\r\nConnection: close\r\nContent-Type: application/x-tar\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    // The daemon has answered by now; the body follows.
    std::thread::sleep(std::time::Duration::from_millis(500));
    s.write_all(&body)
        .expect("the daemon closed before reading the body");
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(out.contains("operating system is not supported"), "{out}");
    d.finish();
}

/// moby's TestCommitInheritsEnv: `commit --change` expands variables with the environment
/// the image and the changes before it give (nothing in single quotes).
#[test]
fn commit_changes_expand_the_environment() {
    let d = root_daemon!();
    d.docker_out("create --name ce1 busybox", &[]);
    d.docker_line("commit --change", &["ENV PATH=/bin", "ce1", "ce:1"])
        .ok();
    d.docker_out("create --name ce2 ce:1", &[]);
    d.docker_line(
        "commit",
        &[
            "--change",
            "ENV PATH=/usr/bin:$PATH",
            "--change",
            "ENV A=\"$PATH x\"",
            "--change",
            "LABEL lit='$PATH' exp=$A",
            "ce2",
            "ce:2",
        ],
    )
    .ok();
    let env = d.inspect("{{json .Config.Env}}", "ce:2");
    assert_eq!(env.trim(), r#"["PATH=/usr/bin:/bin","A=/usr/bin:/bin x"]"#);
    let labels = d.inspect("{{json .Config.Labels}}", "ce:2");
    assert_eq!(labels.trim(), r#"{"exp":"/usr/bin:/bin x","lit":"$PATH"}"#);
    d.docker_out("rm ce1 ce2", &[]);
    d.finish();
}
