//! End-to-end tests of the `berth` image commands against a temporary data root.
//!
//! The base image is a busybox root file system made from Debian's `busybox-static`
//! (`/bin/busybox`). skopeo is used as an independent implementation of the archive formats.

use std::fs;
use std::io::Write;
use std::process::{Command, Stdio};

use berth_cli::{tabwriter, units};
use sha2::Digest as _;

mod common;

use common::*;

/// A rootfs tar with `extra` files.
fn busybox_tar(extra: &[(&str, &[u8])]) -> Vec<u8> {
    busybox_rootfs(extra).tar()
}

fn busybox_size(extra: &[(&str, &[u8])]) -> i64 {
    busybox_rootfs(extra).size() as i64
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(b))
}

/// A docker-archive with the given config and layers (all entries well formed).
fn docker_archive(config: &[u8], layers: &[Vec<u8>], tags: &[&str]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let cfg = format!("{}.json", sha256_hex(config));
    entry(&mut b, &cfg, tar::EntryType::Regular, 0o644, config, None);
    let mut paths = Vec::new();
    for l in layers {
        let p = format!("{}/layer.tar", sha256_hex(l));
        entry(&mut b, &p, tar::EntryType::Regular, 0o644, l, None);
        paths.push(p);
    }
    let manifest = serde_json::json!([{"Config": cfg, "RepoTags": tags, "Layers": paths}]);
    file(&mut b, "manifest.json", manifest.to_string().as_bytes());
    b.into_inner().unwrap()
}

/// A regular file (mode 0644) in a tar.
fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
    entry(b, path, tar::EntryType::Regular, 0o644, data, None);
}

/// A tar of one regular file holding `evil` whose name is written raw (no path checks), with
/// `mode` if given.
fn raw_file(name: &[u8], mode: Option<u32>) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(4);
    h.set_entry_type(tar::EntryType::Regular);
    if let Some(m) = mode {
        h.set_mode(m);
    }
    h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name);
    h.set_cksum();
    b.append(&h, &b"evil"[..]).unwrap();
    b.into_inner().unwrap()
}

/// A tar of one entry.
fn one_entry(path: &str, kind: tar::EntryType, mode: u32, link: Option<&str>) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    entry(&mut b, path, kind, mode, b"", link);
    b.into_inner().unwrap()
}

/// Loads a docker-archive of the busybox layer (config from [`config_for`]) tagged `tags`;
/// returns the image ID.
fn load_busybox_archive(env: &Env, file_name: &str, tags: &[&str]) -> String {
    let layer = busybox_tar(&[]);
    let config = config_for(std::slice::from_ref(&layer));
    let ar = env.path(file_name);
    fs::write(
        &ar,
        docker_archive(&config, std::slice::from_ref(&layer), tags),
    )
    .unwrap();
    env.berth(&["load", "-i", ar.to_str().unwrap()]).ok();
    format!("sha256:{}", sha256_hex(&config))
}

fn config_for(layers: &[Vec<u8>]) -> Vec<u8> {
    let diffs: Vec<String> = layers
        .iter()
        .map(|l| format!("sha256:{}", sha256_hex(l)))
        .collect();
    serde_json::json!({
        "architecture": "amd64", "os": "linux", "created": "2020-01-02T03:04:05Z",
        "config": {"Cmd": ["sh"], "Labels": {"org.example": "yes"}},
        "rootfs": {"type": "layers", "diff_ids": diffs},
        "history": [{"created": "2020-01-02T03:04:05Z", "created_by": "/bin/sh -c #(nop) ADD file:0123456789abcdef0123456789abcdef in / "},
                    {"created": "2020-01-02T03:04:05Z", "created_by": "/bin/sh -c #(nop)  CMD [\"sh\"]", "empty_layer": true}]
    })
    .to_string()
    .into_bytes()
}

/// `f(template)` (an inspect with that format) gives each template's expected output.
#[track_caller]
fn assert_formats(f: &impl Fn(&str) -> String, cases: &[(&str, &str)]) {
    for (template, want) in cases {
        assert_eq!(f(template), *want, "{template}");
    }
}

#[test]
fn import_and_images_table_format() {
    require_root!();
    let env = Env::new();
    // An empty store prints just the header.
    let r = env.berth(&["images"]).ok();
    assert_eq!(
        r.stdout,
        "REPOSITORY   TAG       IMAGE ID   CREATED   SIZE\n"
    );
    let id = env.import_busybox(Some("busybox"), &[]);
    let short = &id[7..19];
    let r = env.berth(&["images"]).ok();
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", r.stdout);
    // Rebuild the exact expected table from the CREATED value shown.
    let rest = lines[1]
        .strip_prefix(&format!("busybox      latest    {short}   "))
        .unwrap_or_else(|| panic!("row: {:?}", lines[1]));
    let size = units::image_size(busybox_size(&[]));
    assert_eq!(size, "1.98MB", "busybox-static is about 2 MB");
    let created = rest.trim_end().strip_suffix(&size).unwrap().trim_end();
    assert!(created.ends_with(" ago"), "{created}");
    let w = (created.len() + 3).max(10);
    assert_eq!(
        lines[0],
        format!(
            "REPOSITORY   TAG       IMAGE ID       {:<w$}SIZE",
            "CREATED"
        )
    );
    assert_eq!(
        lines[1],
        format!("busybox      latest    {short}   {created:<w$}{size}")
    );
    // -q, --no-trunc, --digests.
    assert_eq!(
        env.berth(&["images", "-q"]).ok().stdout,
        format!("{short}\n")
    );
    assert_eq!(
        env.berth(&["images", "-q", "--no-trunc"]).ok().stdout,
        format!("{id}\n")
    );
    let r = env.berth(&["image", "ls", "--digests"]).ok();
    assert!(
        r.stdout
            .starts_with("REPOSITORY   TAG       DIGEST    IMAGE ID       CREATED"),
        "{}",
        r.stdout
    );
    assert!(r
        .stdout
        .lines()
        .nth(1)
        .unwrap()
        .starts_with(&format!("busybox      latest    <none>    {short}   ")));
    // Templates.
    let r = env
        .berth(&[
            "images",
            "--format",
            "{{.Repository}}:{{.Tag}} {{.ID}} {{.Size}}",
        ])
        .ok();
    assert_eq!(r.stdout, format!("busybox:latest {short} {size}\n"));
    let r = env
        .berth(&["images", "--format", "table {{.Repository}}\\t{{.ID}}"])
        .ok();
    assert_eq!(
        r.stdout,
        format!("REPOSITORY   IMAGE ID\nbusybox      {short}\n")
    );
    let r = env.berth(&["images", "--format", "{{json .}}"]).ok();
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(v["Repository"], "busybox");
    assert_eq!(v["Tag"], "latest");
    assert_eq!(v["ID"], short);
    assert_eq!(v["Digest"], "<none>");
    assert_eq!(v["Containers"], "N/A");
    assert_eq!(v["Size"], size.as_str());
    assert!(
        r.stdout
            .starts_with("{\"Containers\":\"N/A\",\"CreatedAt\":"),
        "{}",
        r.stdout
    );
    let r = env.berth(&["images", "--format", "json"]).ok();
    assert!(r.stdout.contains("\"Repository\":\"busybox\""));
    // The positional reference filter.
    assert_eq!(
        env.berth(&["images", "-q", "busybox"]).ok().stdout,
        format!("{short}\n")
    );
    assert_eq!(env.berth(&["images", "-q", "nothing"]).ok().stdout, "");
}

#[test]
fn import_changes_message_and_sources() {
    require_root!();
    let env = Env::new();
    let tar = busybox_tar(&[]);
    // stdin, gzip-compressed, with every kind of change.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    let r = env
        .berth_stdin(
            &[
                "import",
                "-m",
                "my message",
                "-c",
                "ENTRYPOINT [\"/bin/sh\", \"-c\"]",
                "-c",
                "CMD echo hi",
                "-c",
                "ENV A=1 B=\"two words\"",
                "-c",
                "WORKDIR /srv",
                "-c",
                "USER nobody",
                "-c",
                "LABEL a=b",
                "-c",
                "EXPOSE 80 53/udp",
                "-c",
                "VOLUME /data",
                "-c",
                "STOPSIGNAL SIGINT",
                "-c",
                "ONBUILD RUN echo child",
                "-",
                "example.com/team/app:v1",
            ],
            &gz,
        )
        .ok();
    let id = r.stdout.trim().to_string();
    let f = |t: &str| env.inspect(t, "example.com/team/app:v1");
    assert_eq!(f("{{.Id}}"), format!("{id}\n"));
    assert_formats(
        &f,
        &[
            ("{{.Comment}}", "my message\n"),
            ("{{json .Config.Entrypoint}}", "[\"/bin/sh\",\"-c\"]\n"),
            ("{{json .Config.Cmd}}", "[\"/bin/sh\",\"-c\",\"echo hi\"]\n"),
            ("{{.Config.Env}}", "[A=1 B=two words]\n"),
            (
                "{{.Config.WorkingDir}} {{.Config.User}} {{.Config.Labels}}",
                "/srv nobody map[a:b]\n",
            ),
            (
                "{{json .Config.ExposedPorts}}",
                "{\"53/udp\":{},\"80/tcp\":{}}\n",
            ),
            ("{{.Config.Volumes}}", "map[/data:{}]\n"),
            (
                "{{.Config.StopSignal}} {{.Config.OnBuild}}",
                "SIGINT [RUN echo child]\n",
            ),
        ],
    );
    // The same rootfs zstd-compressed, and as a directory: same DiffID as the plain tar.
    let zst = zstd::encode_all(&tar[..], 3).unwrap();
    let z = env.path("rootfs.tar.zst");
    fs::write(&z, &zst).unwrap();
    env.berth(&["import", z.to_str().unwrap(), "zst:1"]).ok();
    let diff = |n: &str| {
        env.berth(&["image", "inspect", "-f", "{{index .RootFS.Layers 0}}", n])
            .ok()
            .stdout
    };
    assert_eq!(diff("zst:1"), diff("example.com/team/app:v1"));
    assert_eq!(
        env.berth(&["image", "inspect", "-f", "{{.Comment}}", "zst:1"])
            .ok()
            .stdout,
        "Imported from -\n"
    );
    let dir = env.path("rootdir");
    fs::create_dir_all(dir.join("bin")).unwrap();
    fs::write(dir.join("bin/hello"), b"hello").unwrap();
    std::os::unix::fs::symlink("hello", dir.join("bin/hi")).unwrap();
    env.berth(&["import", dir.to_str().unwrap(), "fromdir"])
        .ok();
    assert_eq!(
        env.berth(&["image", "inspect", "-f", "{{.Size}}", "fromdir"])
            .ok()
            .stdout,
        "10\n"
    );
    // Bad input.
    env.berth(&["import", "http://example.com/rootfs.tar"])
        .failed_with(1, "importing from a URL is not supported");
    env.berth(&["import", "-c", "RUN echo", z.to_str().unwrap()])
        .failed(
            1,
            "Error response from daemon: RUN is not a valid change command\n",
        );
    env.berth(&["import", env.path("missing.tar").to_str().unwrap()])
        .failed_with(1, "no such file or directory");
    let r = env.berth_stdin(
        &["import", "-"],
        b"this is not a tar archive at all, but it is long enough to be read as one block? no",
    );
    assert_ne!(r.code, 0);
}

#[test]
fn tag_rmi_and_untag_semantics() {
    require_root!();
    let env = Env::new();
    let id = env.import_busybox(Some("busybox"), &[]);
    let short = &id[7..19];
    env.berth(&["tag", "busybox", "myrepo:1"]).ok();
    env.berth(&["image", "tag", short, "other/x:2"]).ok();
    let r = env
        .berth(&["images", "--format", "{{.Repository}}:{{.Tag}}"])
        .ok();
    assert_eq!(r.stdout, "busybox:latest\nmyrepo:1\nother/x:2\n");
    assert_eq!(
        env.berth(&[
            "image",
            "inspect",
            "-f",
            "{{join .RepoTags \",\"}}",
            "myrepo:1"
        ])
        .ok()
        .stdout,
        "busybox:latest,myrepo:1,other/x:2\n"
    );
    // Removing one of several tags only untags.
    let r = env.berth(&["rmi", "myrepo:1"]).ok();
    assert_eq!(r.stdout, "Untagged: myrepo:1\n");
    // By ID with references in several repositories: refused without -f.
    env.berth(&["rmi", short]).failed(1, format!("Error response from daemon: conflict: unable to delete {short} (must be forced) - image is referenced in multiple repositories\n"));
    // No such image; the other argument is still processed.
    let r = env.berth(&["rmi", "nope", "other/x:2"]).failed(
        1,
        "Error response from daemon: No such image: nope:latest\n",
    );
    assert_eq!(r.stdout, "Untagged: other/x:2\n");
    // A tag moves between images.
    let id2 = env.import_busybox(Some("second"), &[("etc/hostname", b"x\n")]);
    env.berth(&["tag", "second", "busybox"]).ok();
    assert_eq!(
        env.berth(&["image", "inspect", "-f", "{{.Id}}", "busybox"])
            .ok()
            .stdout,
        format!("{id2}\n")
    );
    let r = env
        .berth(&[
            "images",
            "-a",
            "--format",
            "{{.Repository}}:{{.Tag}} {{.ID}}",
        ])
        .ok();
    r.stdout_contains(&format!("<none>:<none> {short}"));
    let r = env
        .berth(&["images", "--filter", "dangling=true", "-q"])
        .ok();
    assert_eq!(r.stdout, format!("{short}\n"));
    // The last reference by name: untag and delete, with its layer.
    let blobs_before = env.blobs().len();
    let r = env.berth(&["rmi", short]).ok();
    let layer = env
        .berth(&[
            "image",
            "inspect",
            "-f",
            "{{index .RootFS.Layers 0}}",
            "second",
        ])
        .ok()
        .stdout;
    assert!(
        r.stdout.starts_with(&format!("Deleted: {id}\n")),
        "{}",
        r.stdout
    );
    assert_eq!(r.stdout.lines().count(), 2, "image + layer: {}", r.stdout);
    assert!(!r.stdout.contains(layer.trim()));
    assert_eq!(
        env.blobs().len(),
        blobs_before - 3,
        "config, manifest and layer of the first image"
    );
    // -f with two tags removes both and the image.
    let r = env.berth(&["rmi", "-f", &id2]).ok();
    assert_eq!(
        r.stdout.lines().take(3).collect::<Vec<_>>(),
        vec![
            "Untagged: busybox:latest",
            "Untagged: second:latest",
            &format!("Deleted: {id2}")
        ]
    );
    assert_eq!(env.berth(&["images", "-qa"]).ok().stdout, "");
    assert!(env.blobs().is_empty(), "{:?}", env.blobs());
    assert!(env.snapshots().is_empty(), "{:?}", env.snapshots());
    // Usage errors exit 125; bad references are reported.
    assert_eq!(env.berth(&["rmi"]).code, 125);
    assert_eq!(env.berth(&["images", "--bogus"]).code, 125);
    assert_eq!(env.berth(&["nosuchcommand"]).code, 125);
    let id3 = env.import_busybox(Some("third"), &[]);
    let r = env.berth(&["tag", "third", "Bad:Name"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .starts_with("Error parsing reference: \"Bad:Name\" is not a valid repository/tag"),
        "{}",
        r.stderr
    );
    let r = env.berth(&["tag", "nothere", "x"]);
    assert_eq!(
        r.stderr,
        "Error response from daemon: No such image: nothere:latest\n"
    );
    assert_eq!(r.code, 1);
    assert!(!id3.is_empty());
}

#[test]
fn inspect_formats() {
    require_root!();
    let env = Env::new();
    let id = env.import_busybox(Some("busybox"), &[]);
    let f = |t: &str| env.inspect(t, "busybox");
    assert_eq!(f("{{.Id}}"), format!("{id}\n"));
    assert_formats(
        &f,
        &[
            ("{{.Config.Cmd}}", "[sh]\n"),
            ("{{.Config.Entrypoint}}", "[]\n"),
            ("{{json .Config.Cmd}}", "[\"sh\"]\n"),
            ("{{index .RepoTags 0}}", "busybox:latest\n"),
        ],
    );
    assert_eq!(
        f("{{.Os}}/{{.Architecture}}"),
        format!(
            "linux/{}\n",
            if cfg!(target_arch = "x86_64") {
                "amd64"
            } else {
                "arm64"
            }
        )
    );
    assert_eq!(
        f("{{if .Parent}}parent{{else}}none{{end}} {{len .RootFS.Layers}}"),
        "none 1\n"
    );
    assert_eq!(f("{{range .RepoTags}}<{{.}}>{{end}}"), "<busybox:latest>\n");
    assert_eq!(f("{{.Size}}"), format!("{}\n", busybox_size(&[])));
    assert_eq!(
        f("{{upper .Os}} {{printf \"%.12s\" .Id}}"),
        format!("LINUX {}\n", &id[..12])
    );
    let cfg: serde_json::Value = serde_json::from_str(&f("{{json .Config}}")).unwrap();
    assert_eq!(cfg["Cmd"], serde_json::json!(["sh"]));
    // API 1.50+: the image config without the container-only fields (Hostname, Tty, …).
    assert!(cfg.get("Hostname").is_none(), "{cfg}");
    assert!(f("{{json .Config}}").starts_with("{\"User\":\"\",\"Env\":null,\"Cmd\":[\"sh\"]"));
    // The default output: Docker's shape, 4-space indentation, key order.
    let r = env.berth(&["image", "inspect", "busybox", &id[7..19]]).ok();
    assert!(
        r.stdout.starts_with("[\n    {\n        \"Id\": \"sha256:"),
        "{}",
        r.stdout
    );
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
    let keys: Vec<&str> = [
        "\"Id\"",
        "\"RepoTags\"",
        "\"RepoDigests\"",
        "\"Parent\"",
        "\"Comment\"",
        "\"Created\"",
        "\"DockerVersion\"",
        "\"Author\"",
        "\"Config\"",
        "\"Architecture\"",
        "\"Os\"",
        "\"Size\"",
        "\"GraphDriver\"",
        "\"RootFS\"",
        "\"Metadata\"",
    ]
    .to_vec();
    let mut pos = 0;
    for k in keys {
        let p = r.stdout[pos..]
            .find(k)
            .unwrap_or_else(|| panic!("{k} missing or out of order"));
        pos += p;
    }
    for k in [
        "User",
        "Env",
        "Cmd",
        "Volumes",
        "WorkingDir",
        "Entrypoint",
        "OnBuild",
        "Labels",
    ] {
        assert!(v[0]["Config"].get(k).is_some(), "Config.{k}");
    }
    // API 1.50 drops the container-only fields from an image's config.
    for k in [
        "Hostname",
        "Domainname",
        "AttachStdin",
        "Tty",
        "OpenStdin",
        "Image",
    ] {
        assert!(v[0]["Config"].get(k).is_none(), "Config.{k}");
    }
    assert_eq!(v[0]["RootFS"]["Type"], "layers");
    assert!(v[0]["GraphDriver"]["Name"].is_string());
    assert!(v[0]["Metadata"]["LastTagTime"].is_string());
    // Not found: the found documents, then the error.
    let r = env.berth(&["image", "inspect", "nope"]);
    assert_eq!(r.code, 1);
    assert_eq!(r.stdout, "[]\n");
    assert_eq!(r.stderr, "Error: No such image: nope\n");
    env.berth(&["image", "inspect", "-f", "{{.Nope}}", "busybox"])
        .failed_with(1, "can't evaluate field Nope");
}

#[test]
fn history_output() {
    require_root!();
    let env = Env::new();
    let id = load_busybox_archive(&env, "h.tar", &["hist:1"]);
    let r = env.berth(&["history", "hist:1"]).ok();
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", r.stdout);
    let size = units::image_size(busybox_size(&[]));
    let created = lines[1].split("   ").nth(1).unwrap().trim().to_string();
    assert!(created.ends_with("years ago"), "{created}");
    let add = "/bin/sh -c #(nop) ADD file:0123456789abcdef0123456789abcdef in / ";
    let add_trunc = format!("{}…", add.chars().take(44).collect::<String>());
    let expect = tabwriter::docker_table(&format!(
        "IMAGE\tCREATED\tCREATED BY\tSIZE\tCOMMENT\n{}\t{created}\t/bin/sh -c #(nop)  CMD [\"sh\"]\t0B\t\n<missing>\t{created}\t{add_trunc}\t{size}\t\n",
        &id[7..19]
    ));
    assert_eq!(r.stdout, expect);
    assert!(
        lines[0].starts_with("IMAGE          CREATED"),
        "{}",
        lines[0]
    );
    let r = env.berth(&["history", "-q", "hist:1"]).ok();
    assert_eq!(r.stdout, format!("{}\n<missing>\n", &id[7..19]));
    let r = env
        .berth(&[
            "history",
            "--no-trunc",
            "--format",
            "{{.ID}}|{{.CreatedBy}}|{{.Size}}",
            "hist:1",
        ])
        .ok();
    assert_eq!(
        r.stdout,
        format!("{id}|/bin/sh -c #(nop)  CMD [\"sh\"]|0B\n<missing>|/bin/sh -c #(nop) ADD file:0123456789abcdef0123456789abcdef in / |{size}\n")
    );
    let r = env
        .berth(&[
            "history",
            "-H=false",
            "--format",
            "{{.CreatedSince}} {{.Size}}",
            "hist:1",
        ])
        .ok();
    assert_eq!(
        r.stdout,
        format!(
            "2020-01-02T03:04:05Z 0\n2020-01-02T03:04:05Z {}\n",
            busybox_size(&[])
        )
    );
    env.berth(&["history", "nope"]).failed(
        1,
        "Error response from daemon: No such image: nope:latest\n",
    );
}

#[test]
fn save_load_roundtrip() {
    require_root!();
    let env = Env::new();
    let id = env.import_busybox(Some("busybox"), &[]);
    env.berth(&["tag", "busybox", "busybox:1.36"]).ok();
    let out = env.path("bb.tar");
    env.berth(&["save", "-o", out.to_str().unwrap(), "busybox"])
        .ok();
    // Docker 25+'s layout: docker-archive and OCI layout at once.
    let names: Vec<String> = tar::Archive::new(fs::File::open(&out).unwrap())
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    for n in [
        "manifest.json",
        "index.json",
        "oci-layout",
        "repositories",
        &format!("blobs/sha256/{}", &id[7..]),
    ] {
        assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
    }
    // Saving again gives the same bytes.
    let out2 = env.path("bb2.tar");
    env.berth(&["save", "-o", out2.to_str().unwrap(), "busybox"])
        .ok();
    assert_eq!(fs::read(&out).unwrap(), fs::read(&out2).unwrap());

    let other = Env::new();
    let r = other.berth(&["load", "-i", out.to_str().unwrap()]).ok();
    assert_eq!(
        r.stdout,
        "Loaded image: busybox:1.36\nLoaded image: busybox:latest\n"
    );
    assert_eq!(
        other
            .berth(&["image", "inspect", "-f", "{{.Id}}", "busybox:1.36"])
            .ok()
            .stdout,
        format!("{id}\n")
    );
    // Through a pipe: save to stdout, load from stdin (quietly), untagged by ID.
    let third = Env::new();
    let bytes = env
        .cmd(&["save", &id[7..19]])
        .stdin(Stdio::null())
        .output()
        .unwrap()
        .stdout;
    let r = third.berth_stdin(&["load", "-q"], &bytes).ok();
    assert_eq!(r.stdout, format!("Loaded image ID: {id}\n"));
    // Loading over an existing tag moves it, as Docker says.
    let moved = env.import_busybox(Some("busybox"), &[("etc/motd", b"hi\n")]);
    let r = env.berth(&["load", "-i", out.to_str().unwrap()]).ok();
    r.stdout_contains(&format!("The image busybox:latest already exists, renaming the old one with ID {moved} to empty string"));
    // gzip-compressed archives load too.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&fs::read(&out).unwrap()).unwrap();
    let fourth = Env::new();
    let r = fourth.berth_stdin(&["load"], &gz.finish().unwrap()).ok();
    assert!(r.stdout.contains("Loaded image: busybox:latest"));
    // Errors.
    env.berth(&["save", "nope"]).failed(
        1,
        "Error response from daemon: No such image: nope:latest\n",
    );
    assert!(!env.path("nope.tar").exists());
    let r = env.berth(&["save", "-o", env.path("x.tar").to_str().unwrap(), "nope"]);
    assert_eq!(r.code, 1);
    assert!(!env.path("x.tar").exists(), "no partial archive");
    let r = env.berth(&["load", "-i", env.path("missing.tar").to_str().unwrap()]);
    assert_eq!(r.code, 1);
}

fn skopeo_copy(src: &str, dst: &str) {
    Command::new("skopeo")
        .args(["--insecure-policy", "copy", "-q", src, dst])
        .output_ok();
}

#[test]
fn skopeo_interop_and_oci_layout_archives() {
    require_root!();
    require_programs!(SKOPEO);
    let env = Env::new();
    let id = env.import_busybox(Some("busybox"), &[]);
    let out = env.path("bb.tar");
    env.berth(&["save", "-o", out.to_str().unwrap(), "busybox"])
        .ok();
    // skopeo reads our save output, both as a docker-archive and as an OCI layout.
    let oci = env.path("oci");
    skopeo_copy(
        &format!("docker-archive:{}", out.display()),
        &format!("oci:{}:bb:1", oci.display()),
    );
    let o = Command::new("skopeo")
        .args(["inspect", &format!("docker-archive:{}", out.display())])
        .output_ok();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["Layers"].as_array().unwrap().len(), 1);
    // skopeo's docker-archive output loads into berth.
    let sk = env.path("skopeo.tar");
    skopeo_copy(
        &format!("oci:{}:bb:1", oci.display()),
        &format!("docker-archive:{}:skopeo/bb:v1", sk.display()),
    );
    let other = Env::new();
    let r = other.berth(&["load", "-i", sk.to_str().unwrap()]).ok();
    assert_eq!(r.stdout, "Loaded image: skopeo/bb:v1\n");
    let f = |e: &Env, t: &str, n: &str| e.berth(&["image", "inspect", "-f", t, n]).ok().stdout;
    assert_eq!(
        f(&other, "{{.RootFS.Layers}}", "skopeo/bb:v1"),
        f(&env, "{{.RootFS.Layers}}", "busybox")
    );
    assert_eq!(f(&other, "{{.Config.Cmd}}", "skopeo/bb:v1"), "[sh]\n");
    // An OCI image layout archive (gzip layers, as skopeo writes with compression) loads.
    let oci_gz = env.path("ocigz");
    Command::new("skopeo")
        .args([
            "--insecure-policy",
            "copy",
            "-q",
            "--dest-compress",
            "--dest-compress-format",
            "gzip",
        ])
        .arg(format!("oci:{}:bb:1", oci.display()))
        .arg(format!("oci:{}:example.com/bb:gz", oci_gz.display()))
        .output_ok();
    let mut b = tar::Builder::new(Vec::new());
    b.append_dir_all(".", &oci_gz).unwrap();
    let layout_tar = b.into_inner().unwrap();
    let third = Env::new();
    let r = third.berth_stdin(&["load"], &layout_tar).ok();
    assert_eq!(r.stdout, "Loaded image: example.com/bb:gz\n");
    assert_eq!(
        f(&third, "{{.RootFS.Layers}}", "example.com/bb:gz"),
        f(&env, "{{.RootFS.Layers}}", "busybox")
    );
    // The same image already present with uncompressed layers: only the tag is added, and
    // the gzip blobs are not kept.
    let blobs = other.blobs();
    let r = other.berth_stdin(&["load"], &layout_tar).ok();
    assert_eq!(r.stdout, "Loaded image: example.com/bb:gz\n");
    assert_eq!(other.blobs(), blobs);
    assert_eq!(
        f(&other, "{{.Id}}", "example.com/bb:gz"),
        f(&other, "{{.Id}}", "skopeo/bb:v1")
    );
    // Layers stay compressed in the store; save decompresses them to DiffID-named tars, and
    // the round trip through berth keeps the image ID.
    let again = third.path("again.tar");
    third
        .berth(&["save", "-o", again.to_str().unwrap(), "example.com/bb:gz"])
        .ok();
    let fourth = Env::new();
    fourth.berth(&["load", "-i", again.to_str().unwrap()]).ok();
    assert_eq!(
        f(&fourth, "{{.Id}}", "example.com/bb:gz"),
        f(&third, "{{.Id}}", "example.com/bb:gz")
    );
    // Our own save output read as a plain OCI layout (no manifest.json) loads too.
    let mut filtered = tar::Builder::new(Vec::new());
    let mut ar = tar::Archive::new(fs::File::open(&out).unwrap());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let p = e.path().unwrap().to_string_lossy().into_owned();
        if p == "manifest.json" || p == "repositories" {
            continue;
        }
        let mut h = e.header().clone();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).unwrap();
        filtered.append_data(&mut h, &p, &data[..]).unwrap();
    }
    let fifth = Env::new();
    let r = fifth
        .berth_stdin(&["load"], &filtered.into_inner().unwrap())
        .ok();
    assert_eq!(r.stdout, "Loaded image: busybox:latest\n");
    assert_eq!(f(&fifth, "{{.Id}}", "busybox"), format!("{id}\n"));
}

/// Loads `archive` and checks it is refused with `needle` in the message, nothing written
/// outside, and the store unchanged.
fn assert_refused(env: &Env, archive: &[u8], needle: &str) {
    let blobs = env.blobs();
    let snaps = env.snapshots();
    let images = env.berth(&["images", "-qa", "--no-trunc"]).ok().stdout;
    let r = env.berth_stdin(&["load"], archive);
    assert_eq!(r.code, 1, "stdout: {} stderr: {}", r.stdout, r.stderr);
    assert!(
        r.stderr.starts_with("Error response from daemon: "),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains(needle), "{needle:?} not in {}", r.stderr);
    assert_eq!(env.blobs(), blobs, "blobs changed");
    assert_eq!(env.snapshots(), snaps, "snapshots changed");
    assert_eq!(
        env.berth(&["images", "-qa", "--no-trunc"]).ok().stdout,
        images
    );
    assert!(!env.dir.path().join("evil").exists());
    assert!(!env.root().join("evil").exists());
    assert!(
        list_dir(&env.root().join("tmp")).is_empty(),
        "scratch files left"
    );
}

#[test]
fn hostile_archives_are_refused() {
    require_root!();
    let env = Env::new();
    env.import_busybox(Some("keep"), &[]);
    let layer = busybox_tar(&[("etc/new", b"x")]);
    let config = config_for(std::slice::from_ref(&layer));
    let good = docker_archive(&config, std::slice::from_ref(&layer), &["good:1"]);

    // Path traversal in the archive.
    assert_refused(
        &env,
        &raw_file(b"../evil", Some(0o644)),
        "path contains '..'",
    );

    // Absolute path.
    assert_refused(&env, &raw_file(b"/tmp/evil", None), "absolute path");

    // A symlink escaping the archive, used as the manifest.
    for (target, why) in [
        ("../../../../etc/passwd", "escapes the archive"),
        ("/etc/passwd", "symlink to absolute path"),
    ] {
        let ar = one_entry(
            "manifest.json",
            tar::EntryType::Symlink,
            0o777,
            Some(target),
        );
        assert_refused(&env, &ar, why);
    }

    // A device node.
    let ar = one_entry("dev", tar::EntryType::Char, 0o644, None);
    assert_refused(&env, &ar, "unsupported entry type");

    // An oversized PAX header.
    let mut b = tar::Builder::new(Vec::new());
    let big = vec![b'a'; 200 * 1024];
    entry(
        &mut b,
        "PaxHeader",
        tar::EntryType::XHeader,
        0o644,
        &big,
        None,
    );
    assert_refused(
        &env,
        &b.into_inner().unwrap(),
        "PAX header of 204800 bytes is larger than",
    );

    // Wrong layer digest: the layer in the archive is not the one the config names.
    let other_layer = busybox_tar(&[("etc/other", b"y")]);
    let bad = docker_archive(&config, std::slice::from_ref(&other_layer), &["bad:1"]);
    assert_refused(&env, &bad, "digest mismatch");
    // A config whose file name does not match its digest.
    let renamed: Vec<u8> = {
        let mut b = tar::Builder::new(Vec::new());
        let name = format!("{}.json", "0".repeat(64));
        entry(&mut b, &name, tar::EntryType::Regular, 0o644, &config, None);
        entry(
            &mut b,
            "l.tar",
            tar::EntryType::Regular,
            0o644,
            &layer,
            None,
        );
        let m = serde_json::json!([{"Config": name, "RepoTags": ["x:1"], "Layers": ["l.tar"]}]);
        file(&mut b, "manifest.json", m.to_string().as_bytes());
        b.into_inner().unwrap()
    };
    assert_refused(&env, &renamed, "digest mismatch");
    // A layer with a traversal entry, all digests right: refused when unpacking.
    let evil_layer = raw_file(b"../../evil", Some(0o644));
    let evil_config = config_for(std::slice::from_ref(&evil_layer));
    assert_refused(
        &env,
        &docker_archive(&evil_config, &[evil_layer], &["evil:1"]),
        "escapes",
    );
    // Truncated archive.
    assert_refused(&env, &good[..good.len() / 2], "");
    // Garbage.
    assert_refused(&env, b"not an archive", "");
    // The good one still loads afterwards.
    let r = env.berth_stdin(&["load"], &good).ok();
    assert_eq!(r.stdout, "Loaded image: good:1\n");
}

#[test]
fn prune_frees_blobs_and_system_df() {
    require_root!();
    let env = Env::new();
    let r = env.berth(&["system", "df"]).ok();
    assert_eq!(
        r.stdout,
        "TYPE            TOTAL     ACTIVE    SIZE      RECLAIMABLE\n\
         Images          0         0         0B        0B\n\
         Containers      0         0         0B        0B\n\
         Local Volumes   0         0         0B        0B\n\
         Build Cache     0         0         0B        0B\n"
    );
    let kept = env.import_busybox(Some("kept"), &[]);
    let dangling = env.import_busybox(None, &[("etc/extra", &[7u8; 5000])]);
    let size_kept = busybox_size(&[]);
    let size_dangling = busybox_size(&[("etc/extra", &[7u8; 5000])]);
    let total = size_kept + size_dangling;
    let r = env.berth(&["system", "df"]).ok();
    let expect = tabwriter::docker_table(&format!(
        "TYPE\tTOTAL\tACTIVE\tSIZE\tRECLAIMABLE\nImages\t2\t0\t{}\t{} (100%)\nContainers\t0\t0\t0B\t0B\nLocal Volumes\t0\t0\t0B\t0B\nBuild Cache\t0\t0\t0B\t0B\n",
        units::human_size(total as f64),
        units::human_size(total as f64)
    ));
    assert_eq!(r.stdout, expect);
    let r = env
        .berth(&["system", "df", "--format", "{{.Type}}={{.TotalCount}}"])
        .ok();
    assert_eq!(
        r.stdout,
        "Images=2\nContainers=0\nLocal Volumes=0\nBuild Cache=0\n"
    );

    // Without -f, a "no" answer does nothing.
    let r = env.berth_stdin(&["image", "prune"], b"n\n").ok();
    assert_eq!(
        r.stdout,
        "WARNING! This will remove all dangling images.\nAre you sure you want to continue? [y/N] "
    );
    assert_eq!(env.berth(&["images", "-qa"]).ok().stdout.lines().count(), 2);

    let blobs_before = env.blobs().len();
    let snaps_before = env.snapshots().len();
    let r = env.berth(&["image", "prune", "-f"]).ok();
    let layer_lines: String = r
        .stdout
        .lines()
        .filter(|l| l.starts_with("deleted: ") && !l.contains(&dangling))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        r.stdout,
        format!(
            "Deleted Images:\ndeleted: {dangling}\n{layer_lines}\nTotal reclaimed space: {}\n",
            units::human_size(size_dangling as f64)
        )
    );
    assert_eq!(
        env.blobs().len(),
        blobs_before - 3,
        "config, manifest and layer of the dangling image"
    );
    assert_eq!(env.snapshots().len(), snaps_before - 1);
    assert_eq!(
        env.berth(&["images", "-qa", "--no-trunc"]).ok().stdout,
        format!("{kept}\n")
    );
    // Nothing left to prune.
    assert_eq!(
        env.berth(&["image", "prune", "-f"]).ok().stdout,
        "Total reclaimed space: 0B\n"
    );
    // -a removes tagged images too.
    let r = env.berth_stdin(&["image", "prune", "-a"], b"y\n").ok();
    assert!(r.stdout.starts_with("WARNING! This will remove all images without at least one container associated to them.\nAre you sure you want to continue? [y/N] Deleted Images:\nuntagged: kept:latest\n"), "{}", r.stdout);
    assert!(r.stdout.ends_with(&format!(
        "Total reclaimed space: {}\n",
        units::human_size(size_kept as f64)
    )));
    assert!(env.blobs().is_empty(), "{:?}", env.blobs());
    assert!(env.snapshots().is_empty(), "{:?}", env.snapshots());
}

#[test]
fn list_filters() {
    require_root!();
    let env = Env::new();
    let old = load_busybox_archive(&env, "old.tar", &["old:1", "tools/old:2"]);
    let new = env.import_busybox(Some("new:1"), &[("etc/x", b"1")]);
    let q = |args: &[&str]| {
        let mut a = vec![
            "images",
            "--no-trunc",
            "--format",
            "{{.ID}} {{.Repository}}:{{.Tag}}",
        ];
        a.extend_from_slice(args);
        env.berth(&a).ok().stdout
    };
    assert_eq!(
        q(&[]),
        format!("{new} new:1\n{old} old:1\n{old} tools/old:2\n")
    );
    assert_eq!(q(&["--filter", "reference=old"]), format!("{old} old:1\n"));
    assert_eq!(
        q(&["--filter", "reference=*/old:*"]),
        format!("{old} tools/old:2\n")
    );
    assert_eq!(
        q(&["--filter", "label=org.example=yes"]),
        format!("{old} old:1\n{old} tools/old:2\n")
    );
    assert_eq!(q(&["--filter", "label=org.example=no"]), "");
    assert_eq!(
        q(&["--filter", "before=new:1"]),
        format!("{old} old:1\n{old} tools/old:2\n")
    );
    assert_eq!(q(&["--filter", "since=old:1"]), format!("{new} new:1\n"));
    assert_eq!(
        q(&["--filter", "dangling=false", "-f", "reference=new"]),
        format!("{new} new:1\n")
    );
    env.berth(&["images", "--filter", "bogus=1"])
        .failed(1, "Error response from daemon: invalid filter 'bogus'\n");
    let r = env.berth(&["images", "--filter", "nobody"]);
    assert_eq!(r.code, 1);
    // CREATED for an image from 2020.
    let r = env
        .berth(&[
            "images",
            "--format",
            "{{.CreatedSince}}|{{.CreatedAt}}",
            "old",
        ])
        .ok();
    assert!(
        r.stdout
            .ends_with(" years ago|2020-01-02 03:04:05 +0000 UTC\n"),
        "{}",
        r.stdout
    );
}

#[test]
fn concurrent_processes_keep_every_tag() {
    require_root!();
    let env = Env::new();
    env.import_busybox(Some("base"), &[]);
    let children: Vec<_> = (0..6)
        .map(|i| {
            env.cmd(&["tag", "base", &format!("c{i}:x")])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let r = env.berth(&["images", "--format", "{{.Repository}}"]).ok();
    assert_eq!(r.stdout, "base\nc0\nc1\nc2\nc3\nc4\nc5\n");
}

/// Maps an archive entry's data (or drops it).
type EntryMap<'a> = dyn Fn(&str, Vec<u8>) -> Option<Vec<u8>> + 'a;

/// Rewrites a tar archive: `f` gets each path and its data and returns the new data, or
/// `None` to drop the entry.
fn rewrite(archive: &[u8], f: impl Fn(&str, Vec<u8>) -> Option<Vec<u8>>) -> Vec<u8> {
    let mut out = tar::Builder::new(Vec::new());
    let mut ar = tar::Archive::new(archive);
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let p = e.path().unwrap().to_string_lossy().into_owned();
        let mut h = e.header().clone();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).unwrap();
        if let Some(d) = f(&p, data) {
            h.set_size(d.len() as u64);
            out.append_data(&mut h, &p, &d[..]).unwrap();
        }
    }
    out.into_inner().unwrap()
}

#[test]
fn hostile_oci_layouts_are_refused() {
    require_root!();
    let src = Env::new();
    let id = src.import_busybox(Some("busybox"), &[]);
    let layer_hex = src
        .berth(&[
            "image",
            "inspect",
            "-f",
            "{{index .RootFS.Layers 0}}",
            "busybox",
        ])
        .ok()
        .stdout
        .trim()
        .trim_start_matches("sha256:")
        .to_string();
    let saved = src
        .cmd(&["save", "busybox"])
        .stdin(Stdio::null())
        .output()
        .unwrap()
        .stdout;
    let oci_only = |f: &EntryMap<'_>| {
        rewrite(&saved, |p, d| {
            if p == "manifest.json" || p == "repositories" {
                None
            } else {
                f(p, d)
            }
        })
    };
    let env = Env::new();
    env.import_busybox(Some("keep"), &[("etc/k", b"k")]);
    // A corrupted layer blob.
    let layer_path = format!("blobs/sha256/{layer_hex}");
    let bad = oci_only(&|p, mut d| {
        if p == layer_path {
            let n = d.len() / 2;
            d[n] ^= 0xff;
        }
        Some(d)
    });
    assert_refused(&env, &bad, "digest mismatch");
    // A missing config blob.
    let cfg_path = format!("blobs/sha256/{}", &id[7..]);
    let missing = oci_only(&|p, d| (p != cfg_path).then_some(d));
    assert_refused(&env, &missing, "is not in the archive");
    // A manifest that is not what index.json says.
    let tampered = oci_only(&|p, d| {
        if p == "index.json" {
            let s = String::from_utf8(d).unwrap();
            Some(s.replace("\"size\":", "\"size\":1").into_bytes())
        } else {
            Some(d)
        }
    });
    assert_refused(&env, &tampered, "size");
    // The untouched layout loads.
    let r = env.berth_stdin(&["load"], &oci_only(&|_, d| Some(d))).ok();
    assert_eq!(r.stdout, "Loaded image: busybox:latest\n");
    assert_eq!(
        env.berth(&["image", "inspect", "-f", "{{.Id}}", "busybox"])
            .ok()
            .stdout,
        format!("{id}\n")
    );
}
