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
