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
    let out = image_events(&d, t0, t1, "{{.Action}} {{.Actor.ID}}");
    let creates: Vec<&str> = out.lines().filter(|l| l.starts_with("create ")).collect();
    assert_eq!(creates, vec![format!("create {id}").as_str()], "{out}");
    d.finish();
}

/// The image events between `since` and `until` (seconds), one `format` line each.
fn image_events(d: &Daemon, since: i64, until: i64, format: &str) -> String {
    let (since, until) = (since.to_string(), until.to_string());
    let args = ["events", "--filter", "type=image", "--format", format];
    d.docker(&[&args[..], &["--since", &since, "--until", &until]].concat())
        .ok()
        .stdout
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

/// A BuildKit control client on a `POST /grpc` connection upgraded to h2c, as the BuildKit
/// client in the docker API client dials it.
async fn control(
    d: &Daemon,
) -> berth_buildkit::proto::moby::buildkit::v1::control_client::ControlClient<
    berth_buildkit::conn::H2Channel,
> {
    use berth_buildkit::conn::H2Channel;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::UnixStream::connect(d.sock()).await.unwrap();
    s.write_all(
        b"POST /grpc HTTP/1.1\r\nHost: berth\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        assert_eq!(s.read(&mut b).await.unwrap(), 1, "{head:?}");
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    let (ch, _closed) = H2Channel::connect(s).await.unwrap();
    berth_buildkit::proto::moby::buildkit::v1::control_client::ControlClient::with_origin(
        ch,
        H2Channel::origin(),
    )
}

/// moby's TestBuildkitHistoryTracePropagation solves `llb.Scratch()`: a present but empty
/// definition without a frontend. BuildKit solves it to an empty result at once (only a
/// request with neither waits for the client's gateway calls); the solve and its status
/// stream end instead of hanging; ListenBuildHistory is a clear Unimplemented.
#[test]
fn buildkit_solve_of_an_empty_definition_ends() {
    use berth_buildkit::proto::moby::buildkit::v1 as ctl;
    use berth_buildkit::proto::pb;
    let d = root_daemon!();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = control(&d).await;
        let mut status = c
            .status(ctl::StatusRequest {
                r#ref: "empty-def".into(),
            })
            .await
            .unwrap()
            .into_inner();
        let solve = c.solve(ctl::SolveRequest {
            r#ref: "empty-def".into(),
            definition: Some(pb::Definition::default()),
            ..Default::default()
        });
        let r = tokio::time::timeout(std::time::Duration::from_secs(30), solve)
            .await
            .expect("the solve of an empty definition hangs");
        let r = r.unwrap().into_inner();
        assert!(r.exporter_response.is_empty(), "{r:?}");
        let end = tokio::time::timeout(std::time::Duration::from_secs(30), async {
            while let Ok(Some(_)) = status.message().await {}
        })
        .await;
        assert!(end.is_ok(), "the status stream of the solve never ends");
        // No history records: a named Unimplemented at once, not an open, silent stream.
        let h = c.listen_build_history(ctl::BuildHistoryRequest {
            active_only: true,
            ..Default::default()
        });
        let e = tokio::time::timeout(std::time::Duration::from_secs(30), h)
            .await
            .expect("ListenBuildHistory hangs")
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unimplemented, "{e:?}");
        assert!(e.message().contains("build history"), "{e:?}");
    });
    d.finish();
}

/// moby's TestBuildAddTarXz, TestBuildAddTarXzGz and TestBuildAddBrokenTar: ADD extracts a
/// local `.tar.xz` (through `xz`, as dockerd), copies a `.tar.xz.gz` (its gzip holds no tar)
/// as a file, and fails on a tar cut short by a byte.
#[test]
fn add_extracts_xz_copies_non_tars_and_refuses_cut_tars() {
    let d = root_daemon!("xz", "gzip");
    let ctx = d.context("xz", &[]);
    let tar = raw_tar(&[("test/foo", "Hi")]);
    std::fs::write(ctx.join("test.tar"), &tar).unwrap();
    let sh = |c: &str| {
        let st = std::process::Command::new("sh")
            .arg("-c")
            .arg(c)
            .current_dir(&ctx)
            .status()
            .unwrap();
        assert!(st.success(), "{c}");
    };
    sh("xz -k test.tar && cp test.tar.xz t.tar.xz && gzip test.tar.xz");
    std::fs::write(ctx.join("cut.tar"), &tar[..tar.len() - 1]).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nADD t.tar.xz /\nADD test.tar.xz.gz /\nRUN cat /test/foo | grep Hi && ls /test.tar.xz.gz\n",
    )
    .unwrap();
    d.classic_build(&ctx, &["-t", "addxz"]).ok();
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nADD cut.tar /\n").unwrap();
    d.classic_build(&ctx, &["-t", "addcut"])
        .fails_with("unexpected EOF");
    d.finish();
}

/// moby's TestBuildDockerfileStdin and TestBuildDockerfileStdin*NoExtraFiles: `docker build
/// -f - DIR` sends a context whose last entry (the CLI's rewritten `.dockerignore`) lacks its
/// padding and the end-of-archive blocks; dockerd reads that as the archive's end. The
/// Dockerfile from stdin and an ignored `.dockerignore` stay out of the image.
#[test]
fn dockerfile_from_stdin_with_a_directory_context() {
    let d = root_daemon!();
    let df = "FROM busybox\nCOPY . /baz\n";
    for (ignore, want) in [
        (None, "foo\n"),
        (Some("Dockerfile\n"), ".dockerignore\nfoo\n"),
        (Some("Dockerfile\n.dockerignore\n"), "foo\n"),
    ] {
        let mut files = vec![("foo", "bar")];
        if let Some(i) = ignore {
            files.push(("Dockerfile", ""));
            files.push((".dockerignore", i));
        }
        let ctx = d.context(&format!("stdin{}", want.len() + files.len()), &files);
        d.docker_cmd(&["build", "-t", "stdindf", "-f", "-", ctx.to_str().unwrap()])
            .env("DOCKER_BUILDKIT", "0")
            .run_with_input(df.as_bytes())
            .ok();
        let out = d
            .docker(&["run", "--rm", "stdindf", "ls", "-A", "/baz"])
            .ok();
        assert_eq!(out.stdout, want, "{ignore:?}");
    }
    d.finish();
}

/// moby's TestBuildMultiStageOnBuild: the classic builder builds every stage up to the target
/// (the second stage, which the last one does not use, included), each stage's image ID an
/// `aux` message in stage order; ONBUILD triggers run in every stage built on the image.
#[test]
fn classic_build_sends_an_image_id_per_stage() {
    let d = root_daemon!("curl");
    let df = "FROM busybox AS stage1\nONBUILD RUN echo 'foo' >somefile\nONBUILD ENV bar=baz\n\nFROM stage1\nRUN cat somefile\n\nFROM stage1\nRUN cat somefile\n";
    let tar = raw_tar(&[("Dockerfile", df)]);
    let ctx = d.path("onbuild.tar");
    std::fs::write(&ctx, &tar).unwrap();
    let out = std::process::Command::new("curl")
        .args(["-sS", "--unix-socket"])
        .arg(d.sock())
        .args(["-H", "Content-Type: application/x-tar", "--data-binary"])
        .arg(format!("@{}", ctx.display()))
        .arg("http://berth/build?rm=1&forcerm=1")
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(body.contains("Successfully built"), "{body}");
    let ids: Vec<String> = body
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["aux"]["ID"].as_str().map(str::to_string))
        .collect();
    assert_eq!(ids.len(), 3, "{body}");
    let env = d.inspect("{{json .Config.Env}}", &ids[2]);
    assert!(env.contains("bar=baz"), "{env}");
    // Every stage's image exists (untagged, as dockerd's); one built on a stage has it as
    // its parent (TestBuildOnBuildCache), the first stage its base image.
    for id in &ids {
        d.docker(&["image", "inspect", id]).ok();
    }
    let busybox = d.inspect("{{.ID}}", "busybox").trim().to_string();
    assert_eq!(d.inspect("{{.Parent}}", &ids[0]).trim(), busybox);
    assert_eq!(d.inspect("{{.Parent}}", &ids[1]).trim(), ids[0]);
    assert_eq!(d.inspect("{{.Parent}}", &ids[2]).trim(), ids[0]);
    d.finish();
}

/// moby integration-cli TestBuildClearCmd, TestBuildEmptyScratch and
/// TestBuildEmptyStringVolume: `CMD []` leaves no command (`null`, Go's omitempty), a lone
/// `FROM scratch` generates no image in the classic builder, `VOLUME $EMPTY` is an empty path;
/// TestBuildBlankName's `ARG =foo`.
#[test]
fn classic_build_empty_cmd_scratch_and_volume() {
    let d = root_daemon!();
    let ctx = d.context(
        "clearcmd",
        &[(
            "Dockerfile",
            "FROM busybox\nENTRYPOINT [\"/bin/sh\"]\nCMD []\n",
        )],
    );
    d.classic_build(&ctx, &["-t", "clearcmd"]).ok();
    assert_eq!(d.inspect("{{json .Config.Cmd}}", "clearcmd").trim(), "null");
    let ctx = d.context("scratch", &[("Dockerfile", "FROM scratch\n")]);
    d.classic_build(&ctx, &["-t", "sc"])
        .fails_with("No image was generated. Is your Dockerfile empty?");
    // TestBuildLabelsOverride: `--label` flags are a step of their own.
    d.classic_build(&ctx, &["-t", "sc", "--label", "foo=bar"])
        .ok();
    assert_eq!(d.inspect("{{.Config.Labels.foo}}", "sc").trim(), "bar");
    let ctx = d.context(
        "emptyvol",
        &[("Dockerfile", "FROM busybox\nENV foo=\"\"\nVOLUME $foo\n")],
    );
    d.classic_build(&ctx, &["-t", "ev"])
        .fails_with("VOLUME specified can not be an empty string");
    // TestBuildBlankName: BuildKit's parser wording for a blank ARG name.
    let ctx = d.context(
        "blankarg",
        &[(
            "Dockerfile",
            "FROM busybox
ARG =foo
",
        )],
    );
    d.classic_build(&ctx, &["-t", "ba"])
        .fails_with("ARG names can not be blank");
    d.finish();
}

/// dockerd 28's words for instruction errors (BuildKit's `instructions.Parse`, not wrapped as
/// a parse failure of the file) and for a missing target.
#[test]
fn instruction_errors_and_a_missing_target_in_dockerds_words() {
    let d = root_daemon!();
    let ctx = d.context("onbuild", &[("Dockerfile", "FROM busybox\nONBUILD\n")]);
    let r = d.classic_build(&ctx, &[]);
    r.stderr_contains("Error response from daemon: dockerfile parse error on line 2: ONBUILD requires at least one argument");
    let ctx = d.context(
        "unknown",
        &[("Dockerfile", "FROM busybox\n\n# c\nNOINSTRUCTION echo ba\n")],
    );
    d.classic_build(&ctx, &[])
        .fails_with("dockerfile parse error on line 4: unknown instruction: NOINSTRUCTION");
    let ctx = d.context(
        "target",
        &[("Dockerfile", "FROM busybox AS a\nFROM busybox\n")],
    );
    d.classic_build(&ctx, &["--target", "nosuchtarget"])
        .fails_with(r#"target stage "nosuchtarget" could not be found"#);
    d.finish();
}

/// dockerd's `setDefaultPath`: a stage's steps start with `PATH` set, also from scratch.
#[test]
fn a_stage_starts_with_the_default_path() {
    let d = root_daemon!();
    let def = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    for (df, want) in [
        ("FROM scratch\nMAINTAINER me\n", format!("[{def}]")),
        ("FROM scratch\nENV FOO=bar\n", format!("[{def} FOO=bar]")),
        ("FROM scratch\nENV PATH=/test\n", "[PATH=/test]".to_string()),
    ] {
        let ctx = d.context("path", &[("Dockerfile", df)]);
        d.classic_build(&ctx, &["-t", "bldpath"]).ok();
        assert_eq!(d.inspect("{{.Config.Env}}", "bldpath").trim(), want, "{df}");
    }
    d.finish();
}

/// BuildKit's parser sorts EXPOSE's words: the same ports in another order are the same
/// step (a cache hit, the same image).
#[test]
fn expose_in_another_order_is_the_same_step() {
    let d = root_daemon!();
    let id = |ports: &str| {
        let ctx = d.context(
            "expose",
            &[("Dockerfile", &format!("FROM scratch\nEXPOSE {ports}\n"))],
        );
        d.classic_build(&ctx, &["-q"])
            .ok()
            .stdout
            .trim()
            .to_string()
    };
    assert_eq!(id("80 2375"), id("2375 80"));
    d.finish();
}

/// `RUN []` is no error: dockerd's step container runs the image's command.
#[test]
fn run_with_an_empty_json_command_runs_the_images_command() {
    let d = root_daemon!();
    let ctx = d.context("emptyrun", &[("Dockerfile", "FROM busybox\nRUN []\n")]);
    d.classic_build(&ctx, &[]).ok();
    d.finish();
}

/// A `.dockerignore` starting with a UTF-8 byte order mark: the mark is no part of its first
/// pattern (moby's TestBuildWithUTF8BOMDockerignore).
#[test]
fn dockerignore_with_a_byte_order_mark() {
    let d = root_daemon!();
    let ctx = d.context(
        "bom",
        &[
            (
                "Dockerfile",
                "FROM busybox\nADD . /tmp/\nRUN sh -c \"! ls /tmp/Dockerfile\"\nRUN ls /tmp/.dockerignore\n",
            ),
            (".dockerignore", "\u{feff}./Dockerfile\n"),
        ],
    );
    d.classic_build(&ctx, &[]).ok();
    d.finish();
}

/// dockerd's classic builder keeps RUN step containers with `rm=false`, a failed step's
/// without `forcerm` (also with `rm`), none with `forcerm` (moby's
/// TestBuildWithRemoveAndForceRemove): the IDs the build printed, stopped with the step's
/// exit code, the step's changes their own.
#[test]
fn classic_build_keeps_step_containers_as_rm_and_forcerm_say() {
    let d = root_daemon!();
    let ok = "FROM busybox\nRUN echo one > /one\nRUN exit 0\n";
    let bad = "FROM busybox\nRUN echo one > /one\nRUN echo two > /two && exit 3\n";
    for (name, df, flags, kept) in [
        ("norm-ok", ok, &["--rm=false"][..], 2),
        ("rm-ok", ok, &["--rm"][..], 0),
        ("forcerm-ok", ok, &["--force-rm"][..], 0),
        ("norm-bad", bad, &["--rm=false"][..], 2),
        ("rm-bad", bad, &[][..], 1),
        ("forcerm-bad", bad, &["--force-rm"][..], 0),
    ] {
        let ctx = d.context(name, &[("Dockerfile", df)]);
        let r = d.classic_build(&ctx, &[&["--no-cache"], flags].concat());
        let out = format!("{}{}", r.stdout, r.stderr);
        let ids: Vec<&str> = out
            .lines()
            .filter_map(|l| l.strip_prefix(" ---> Running in "))
            .map(str::trim)
            .collect();
        assert_eq!(ids.len(), 2, "{name}: {out}");
        let left: Vec<&str> = ids
            .iter()
            .copied()
            .filter(|id| d.docker(&["inspect", "--type", "container", id]).code == 0)
            .collect();
        assert_eq!(left.len(), kept, "{name}: {out}");
        for id in &left {
            assert!(
                !out.contains(&format!("Removed intermediate container {id}")),
                "{out}"
            );
        }
    }
    // The failed step's container: its exit code, its command, its changes on its image.
    let ctx = d.context("keep", &[("Dockerfile", bad)]);
    let r = d.classic_build(&ctx, &["--no-cache"]);
    let id = r
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix(" ---> Running in "))
        .next_back()
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(
        d.inspect("{{.State.Status}} {{.State.ExitCode}}", &id)
            .trim(),
        "exited 3"
    );
    assert_eq!(
        d.inspect("{{json .Config.Cmd}}", &id).trim(),
        r#"["/bin/sh","-c","echo two > /two && exit 3"]"#
    );
    let diff = d.docker(&["diff", &id]).ok().stdout;
    assert!(diff.contains("A /two"), "{diff}");
    let out = d.docker(&["cp", &format!("{id}:/one"), "-"]).ok().stdout;
    assert!(out.contains("one"), "{out}");
    d.finish();
}

/// An ARG's history entry shows its default as written, not the `--build-arg` value
/// (dockerd's commit string; moby's TestBuildBuildTimeArgHistory).
#[test]
fn arg_history_shows_the_default_as_written() {
    let d = root_daemon!();
    let ctx = d.context("arghist", &[("Dockerfile", "FROM busybox\nARG foo=bar1\n")]);
    d.classic_build(&ctx, &["--build-arg", "foo=bar", "-t", "arghist"])
        .ok();
    let h = d.docker_out("history --no-trunc --format {{.CreatedBy}} arghist", &[]);
    assert!(
        h.lines().next().unwrap_or("").contains("ARG foo=bar1"),
        "{h}"
    );
    d.finish();
}

/// moby integration-cli TestRunTmpfsMountsOverrideImageVolumes: a classic build's RUN step
/// sees its image's `VOLUME`s as dockerd's anonymous volumes: filled from the image (a
/// missing one empty and made), with the image directory's owner and mode, and its writes
/// there are not in the step's layer (the mount point is).
#[test]
fn classic_run_steps_write_volumes_to_throw_away_copies() {
    let d = root_daemon!();
    let ctx = d.context(
        "vols",
        &[(
            "Dockerfile",
            "FROM busybox
RUN mkdir -p /data && echo base >/data/f && chown 1:1 /data && chmod 0700 /data
VOLUME /data /newvol
RUN touch /newvol/stuff && echo seen-$(cat /data/f) && echo more >>/data/f && stat -c '%u %a' /data >/owner
",
        )],
    );
    let out = d.classic_build(&ctx, &["-t", "vols"]).ok().stdout;
    assert!(out.contains("seen-base"), "{out}");
    let out = d.docker_out(
        "run --rm vols sh -c",
        &["ls -A /newvol; cat /data/f /owner"],
    );
    assert_eq!(out, "base\n1 700\n");
    let out = d.docker_out("run --rm --tmpfs /newvol vols ls -A /newvol", &[]);
    assert_eq!(out, "");
    d.finish();
}

/// moby's TestSessionCreateWithBadUpgrade: `POST /session` (and `/grpc`) without an
/// `Upgrade` header, or with another protocol than h2c, is a 400 in dockerd's words.
#[test]
fn session_without_h2c_upgrade_is_refused_in_dockerds_words() {
    use std::io::{Read, Write};
    let d = root_daemon!();
    let ask = |path: &str, upgrade: &str| {
        let mut s = std::os::unix::net::UnixStream::connect(d.sock()).unwrap();
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: berth\r\nConnection: close\r\n{upgrade}Content-Length: 0\r\n\r\n"
        );
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    for path in ["/session", "/grpc"] {
        let none = ask(path, "");
        assert!(none.starts_with("HTTP/1.1 400"), "{none}");
        assert!(none.contains("no upgrade proto in request"), "{none}");
        let foo = ask(path, "Upgrade: foo\r\n");
        assert!(foo.starts_with("HTTP/1.1 400"), "{foo}");
        assert!(foo.contains("protocol foo not supported"), "{foo}");
    }
    d.finish();
}

/// moby integration-cli TestBuildMultiStageCopyFromErrors: what `COPY --from` cannot copy
/// from, in dockerd's words: its own index, an index past it, a name that is no stage (and no
/// image to be had).
#[test]
fn copy_from_errors_name_the_flag_value() {
    let d = root_daemon!();
    for (df, want) in [
        (
            "FROM busybox\nCOPY --from=0 foo bar\n",
            "Dockerfile line 2: invalid from flag value 0: refers to current build stage",
        ),
        (
            "FROM busybox\nCOPY --from=3 foo bar\n",
            "Dockerfile line 2: invalid from flag value 3: index out of bounds",
        ),
        (
            "FROM busybox AS foo\nCOPY --from=nosuchstage-berth foo bar\n",
            "Dockerfile line 2: invalid from flag value nosuchstage-berth: ",
        ),
    ] {
        let ctx = d.context("copyfrom", &[("Dockerfile", df), ("foo", "abc")]);
        d.classic_build(&ctx, &[]).fails_with(want);
    }
    d.finish();
}

/// The classic builder's `--label` flags are LABEL steps of the target stage, one per label
/// by key, their values as given (dockerd's buildLabelOptions): shown as `Step N/M`, cached,
/// and the last step's image is the one built (compose's classic builds label every image).
#[test]
fn classic_build_labels_are_steps() {
    let d = root_daemon!();
    let ctx = d.context(
        "labelsteps",
        &[("Dockerfile", "FROM busybox\nCMD [\"/bin/true\"]\n")],
    );
    let args = ["-t", "ls1", "--label", "b=2", "--label", "a=x $HOME 'q'"];
    let out = d.classic_build(&ctx, &args).ok().stdout;
    let steps: Vec<&str> = out.lines().filter(|l| l.starts_with("Step ")).collect();
    assert_eq!(
        steps,
        [
            "Step 1/4 : FROM busybox",
            "Step 2/4 : CMD [\"/bin/true\"]",
            "Step 3/4 : LABEL a=x $HOME 'q'",
            "Step 4/4 : LABEL b=2",
        ],
        "{out}"
    );
    let last = |out: &str| {
        let step = out.lines().rev().find_map(|l| l.strip_prefix(" ---> "));
        let built = out
            .lines()
            .find_map(|l| l.strip_prefix("Successfully built "));
        (step.map(str::to_string), built.map(str::to_string))
    };
    let (step, built) = last(&out);
    assert_eq!(step, built, "{out}");
    assert_eq!(
        d.inspect("{{json .Config.Labels}}", "ls1").trim(),
        r#"{"a":"x $HOME 'q'","b":"2"}"#
    );
    // Again: every step from the cache, the same image.
    let again = d.classic_build(&ctx, &args).ok().stdout;
    assert_eq!(again.matches("Using cache").count(), 3, "{again}");
    assert_eq!(last(&again).1, built, "{again}");
}

/// moby integration-cli TestBuildUsersAndGroups: a RUN step's process has the groups a
/// container's would, its user's groups from the image's `/etc/group` after its primary one
/// (none when `USER` names the group).
#[test]
fn run_steps_get_the_users_supplementary_groups() {
    let d = root_daemon!();
    let df = r#"FROM busybox
RUN printf 'root:x:0:0:root:/root:/bin/sh\napp:x:1001:1001::/:/bin/sh\n' > /etc/passwd && printf 'root:x:0:\nwheel:x:10:root,app\napp:x:1001:\nstaff:x:50:app\n' > /etc/group
RUN [ "$(id -G)" = '0 10' ]
USER app
RUN [ "$(id -G)" = '1001 10 50' ]
USER app:staff
RUN [ "$(id -G)" = '50' ]
"#;
    let ctx = d.context("groups", &[("Dockerfile", df)]);
    d.classic_build(&ctx, &["--no-cache"]).ok();
    d.finish();
}

/// moby integration-cli TestBuildVolumeFileExistsinContainer: VOLUME over a file of the
/// image fails the step as dockerd's container create fails it; over a directory (or a path
/// the image lacks) it is a volume.
#[test]
fn volume_over_an_existing_file_fails_the_step() {
    let d = root_daemon!();
    let ctx = d.context(
        "volfile",
        &[("Dockerfile", "FROM busybox\nRUN touch /foo\nVOLUME /foo\n")],
    );
    d.classic_build(&ctx, &[])
        .fails_with("Dockerfile line 3: cannot mount volume over existing file, file exists /foo");
    let ctx = d.context(
        "voldir",
        &[(
            "Dockerfile",
            "FROM busybox\nRUN mkdir /foo\nVOLUME /foo /bar\n",
        )],
    );
    d.classic_build(&ctx, &["-t", "voldir"]).ok();
    assert_eq!(
        d.inspect("{{json .Config.Volumes}}", "voldir").trim(),
        r#"{"/bar":{},"/foo":{}}"#
    );
    d.finish();
}

/// moby integration-cli TestBuildMultiStageCache: a step repeated in another stage of the
/// same build is made once, the repeat reports `Using cache` (dockerd's sequential classic
/// builder finds the first in its cache), also when the stages run at once.
#[test]
fn a_step_repeated_in_another_stage_is_made_once() {
    let d = root_daemon!();
    let ctx = d.context(
        "memo",
        &[
            (
                "Dockerfile",
                "FROM busybox\nADD baz /\nFROM busybox\nADD baz /\n",
            ),
            ("baz", "baz"),
        ],
    );
    let out = d.classic_build(&ctx, &[]).ok().stdout;
    assert_eq!(out.matches("Using cache").count(), 1, "{out}");
    // Independent stages (made at once): the second waits for the first's step.
    let df = "FROM busybox AS a\nRUN sleep 1; date +%s%N > /stamp\n\
              FROM busybox AS b\nRUN sleep 1; date +%s%N > /stamp\n\
              FROM busybox\nCOPY --from=a /stamp /a\nCOPY --from=b /stamp /b\n";
    let ctx = d.context("memo2", &[("Dockerfile", df)]);
    let out = d.classic_build(&ctx, &["-t", "memo2"]).ok().stdout;
    assert_eq!(out.matches("Using cache").count(), 1, "{out}");
    let stamps = d.docker_out("run --rm memo2 cat /a /b", &[]);
    let lines: Vec<&str> = stamps.lines().collect();
    assert_eq!(lines.len(), 2, "{stamps}");
    assert_eq!(lines[0], lines[1], "the step was made twice");
    d.finish();
}

/// moby integration-cli TestBuildMultiStageCopyFromSyntax: `COPY --from` is cached by what it
/// copies: a stage built again differently with the same files is a hit (the same image),
/// different content a miss.
#[test]
fn copy_from_is_cached_by_content() {
    let d = root_daemon!();
    let last = "FROM busybox\nCOPY --from=src /f /g\n";
    let a = d.context(
        "cfa",
        &[
            (
                "Dockerfile",
                &format!("FROM busybox AS src\nCOPY f /f\n{last}"),
            ),
            ("f", "same"),
        ],
    );
    d.classic_build(&a, &["-t", "cf:a"]).ok();
    let b = d.context(
        "cfb",
        &[
            (
                "Dockerfile",
                &format!("FROM busybox AS src\nRUN true\nCOPY f /f\n{last}"),
            ),
            ("f", "same"),
        ],
    );
    let out = d.classic_build(&b, &["-t", "cf:b"]).ok().stdout;
    assert_eq!(out.matches("Using cache").count(), 1, "{out}");
    assert_eq!(d.inspect("{{.Id}}", "cf:a"), d.inspect("{{.Id}}", "cf:b"));
    std::fs::write(b.join("f"), "other").unwrap();
    let out = d.classic_build(&b, &["-t", "cf:c"]).ok().stdout;
    assert_eq!(out.matches("Using cache").count(), 1, "{out}");
    assert_eq!(d.docker_out("run --rm cf:c cat /g", &[]), "other");
    d.finish();
}
