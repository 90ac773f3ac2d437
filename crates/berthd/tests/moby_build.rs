//! Build API behaviours that moby's own integration tests (`integration/build`) check of
//! dockerd 28: the empty-Dockerfile errors and the image `create` event of a build.

mod common;
use common::*;

/// A Dockerfile of only comments or blank lines is BuildKit's parser error, wrapped as dockerd
/// wraps it; an empty one keeps its own message.
#[test]
fn dockerfile_without_instructions_is_refused_as_dockerd_does() {
    let d = root_daemon!();
    let ctx = d.context("comments", &[("Dockerfile", "# only a comment\n\n")]);
    d.classic_build(&ctx, &[])
        .fails_with("failed to parse Dockerfile: file with no instructions");
    let ctx = d.context("empty", &[("Dockerfile", "")]);
    d.classic_build(&ctx, &[])
        .fails_with("the Dockerfile (Dockerfile) cannot be empty");
    d.finish();
}

/// A classic build logs one image `create` event, for the image it built.
#[test]
fn classic_build_emits_image_create_event() {
    let d = root_daemon!();
    let ctx = d.context(
        "ev",
        &[("Dockerfile", "FROM busybox\nRUN echo hello > /hello\n")],
    );
    let t0 = berth_util::time::now().0 - 1;
    let id = d.classic_build(&ctx, &["-q", "--no-cache"]).ok().stdout;
    let id = id.trim();
    assert!(id.starts_with("sha256:"), "{id}");
    let t1 = berth_util::time::now().0 + 1;
    let (t0, t1) = (t0.to_string(), t1.to_string());
    let out = d
        .docker(&[
            "events",
            "--filter",
            "type=image",
            "--format",
            "{{.Action}} {{.Actor.ID}}",
            "--since",
            &t0,
            "--until",
            &t1,
        ])
        .ok()
        .stdout;
    let creates: Vec<&str> = out.lines().filter(|l| l.starts_with("create ")).collect();
    assert_eq!(creates, vec![format!("create {id}").as_str()], "{out}");
    d.finish();
}

/// A context tar built in memory from `(name, content)` entries, names written as they are
/// (`../a`, `/b`: the tar crate's path setters would refuse or clean them).
fn raw_tar(entries: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, content) in entries {
        let mut h = tar::Header::new_ustar();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append(&h, content.as_bytes()).unwrap();
    }
    b.into_inner().unwrap()
}

/// moby's TestBuildUncleanTarFilenames: dockerd extracts a context chrooted, so `../foo` and
/// `/bar` land at the context's root; a second build with other contents is no cache hit.
#[test]
fn context_names_above_the_root_land_in_it() {
    let d = root_daemon!();
    let df = "FROM scratch\nCOPY foo /\nFROM scratch\nCOPY bar /\n";
    for (i, n) in ["0", "1"].iter().enumerate() {
        let foo = format!("foocontents{n}");
        let bar = format!("barcontents{n}");
        let tar = raw_tar(&[("Dockerfile", df), ("../foo", &foo), ("/bar", &bar)]);
        let tag = format!("unclean{n}");
        let out = d
            .docker_cmd(&["build", "-t", &tag, "-"])
            .env("DOCKER_BUILDKIT", "0")
            .run_with_input(&tar)
            .ok()
            .stdout;
        if i == 1 {
            assert!(!out.contains("Using cache"), "{out}");
        }
        let id = d.docker(&["create", &tag, "x"]).ok().stdout;
        let got = d
            .docker(&["cp", &format!("{}:/bar", id.trim()), "-"])
            .ok()
            .stdout;
        assert!(got.contains(&bar), "{got}");
        d.docker(&["rm", id.trim()]).ok();
    }
    d.finish();
}
