//! Commands on existing containers: `start`, `restart`, `kill`, `pause`, `unpause`, `rename`,
//! `exec`, `attach`, `inspect`, `top`, `diff`, `update`, `commit`, `export`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use berth_api::common::IdResponse;
use berth_api::container::{ChangeItem, InspectResponse, TopResponse, UpdateConfig};
use berth_api::exec;
use berth_image::Reference;
use clap::Args;

use crate::api::{self, enc, json, query, ApiError, Host};
use crate::containers::each;
use crate::error::{CliError, Result};
use crate::opts::CreateFlags;
use crate::terminal::{
    container_session, interactive, parse_detach_keys, spawn_wait, term_size, SignalProxy,
};

/// `start` flags.
#[derive(Debug, Args)]
pub struct StartCmd {
    /// Attach STDOUT/STDERR and forward signals
    #[arg(short = 'a', long)]
    attach: bool,
    /// Attach container's STDIN
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Override the key sequence for detaching a container
    #[arg(long, default_value = "")]
    detach_keys: String,
    /// The containers
    #[arg(required = true)]
    containers: Vec<String>,
}

/// A container's inspect document.
pub fn inspect_container(host: &Host, name: &str) -> Result<InspectResponse, ApiError> {
    host.get(&format!("/containers/{}/json", enc(name)))
}

pub fn start(host: &Host, c: &StartCmd, out: &mut dyn Write, err: &mut dyn Write) -> Result<i32> {
    if c.attach || c.interactive {
        let info = inspect_container(host, &c.containers[0])?;
        let tty = info.config.tty;
        let id = info.id;
        let stream = api::attach(host, &id, c.interactive)?;
        let keys = parse_detach_keys(&c.detach_keys)?;
        let waiter = spawn_wait(host, &id, "next-exit");
        host.call("POST", &format!("/containers/{id}/start"), None)?;
        // `start -a` forwards signals (Docker's sig-proxy), unless a terminal is attached.
        let _proxy = if tty {
            None
        } else {
            Some(SignalProxy::start(host, &id)?)
        };
        return container_session(host, &id, stream, tty, c.interactive, &keys, waiter);
    }
    each(&c.containers, out, err, |n| {
        host.call("POST", &format!("/containers/{}/start", enc(n)), None)
            .map(|_| n.to_string())
    })?;
    Ok(0)
}

/// `restart` flags.
#[derive(Debug, Args)]
pub struct RestartCmd {
    #[command(flatten)]
    flags: crate::containers::StopFlags,
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn restart(host: &Host, c: &RestartCmd, out: &mut dyn Write, err: &mut dyn Write) -> Result {
    c.flags.post_each(host, "restart", &c.containers, out, err)
}

/// `kill` flags.
#[derive(Debug, Args)]
pub struct KillCmd {
    /// Signal to send to the container
    #[arg(short = 's', long, default_value = "KILL")]
    signal: String,
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn kill(host: &Host, c: &KillCmd, out: &mut dyn Write, err: &mut dyn Write) -> Result {
    each(&c.containers, out, err, |n| {
        host.call(
            "POST",
            &format!("/containers/{}/kill?signal={}", enc(n), enc(&c.signal)),
            None,
        )
        .map(|_| n.to_string())
    })
}

/// Names-only commands: `pause`, `unpause`.
#[derive(Debug, Args)]
pub struct NamesCmd {
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn simple_post(
    host: &Host,
    op: &str,
    c: &NamesCmd,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result {
    each(&c.containers, out, err, |n| {
        host.call("POST", &format!("/containers/{}/{op}", enc(n)), None)
            .map(|_| n.to_string())
    })
}

/// `rename OLD NEW`.
#[derive(Debug, Args)]
pub struct RenameCmd {
    container: String,
    new_name: String,
}

pub fn rename(host: &Host, c: &RenameCmd) -> Result {
    host.call(
        "POST",
        &format!(
            "/containers/{}/rename?name={}",
            enc(&c.container),
            enc(&c.new_name)
        ),
        None,
    )?;
    Ok(())
}

/// `exec` flags.
#[derive(Debug, Args)]
pub struct ExecCmd {
    /// Detached mode: run command in the background
    #[arg(short = 'd', long)]
    detach: bool,
    /// Keep STDIN open even if not attached
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short = 't', long)]
    tty: bool,
    /// `-e`, `-w`, `-u`
    #[command(flatten)]
    process: crate::containers::ProcessFlags,
    /// Give extended privileges to the command
    #[arg(long)]
    privileged: bool,
    /// Override the key sequence for detaching a container
    #[arg(long, default_value = "")]
    detach_keys: String,
    container: String,
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

pub fn exec(host: &Host, c: &ExecCmd, err: &mut dyn Write) -> Result<i32> {
    let keys = parse_detach_keys(&c.detach_keys)?;
    let body = exec::CreateRequest {
        attach_stdin: c.interactive && !c.detach,
        attach_stdout: !c.detach,
        attach_stderr: !c.detach,
        tty: c.tty,
        cmd: Some(c.command.clone()),
        env: c.process.env(),
        working_dir: c.process.working_dir(),
        user: c.process.user(),
        privileged: c.privileged,
        ..Default::default()
    };
    let created: IdResponse = host
        .post(
            &format!("/containers/{}/exec", enc(&c.container)),
            Some(&json(&body)),
        )
        .map_err(|e| {
            let _ = writeln!(err, "{}", CliError::from(e));
            CliError::Exit(1)
        })?;
    let id = created.id;
    let start = json(&exec::StartRequest {
        detach: c.detach,
        tty: c.tty,
        console_size: term_size()
            .filter(|_| c.tty)
            .map(|(h, w)| [u64::from(h), u64::from(w)]),
    });
    if c.detach {
        host.call("POST", &format!("/exec/{id}/start"), Some(&start))?;
        return Ok(0);
    }
    let stream = api::hijack(host, &format!("/exec/{id}/start"), Some(&start))?;
    if interactive(
        host,
        stream,
        c.tty,
        c.interactive,
        c.tty.then(|| format!("/exec/{id}/resize")),
        &keys,
    )? {
        return Ok(0);
    }
    let v: exec::Inspect = host.get(&format!("/exec/{id}/json"))?;
    Ok(v.exit_code.unwrap_or(126) as i32)
}

/// `attach` flags.
#[derive(Debug, Args)]
pub struct AttachCmd {
    /// Do not attach STDIN
    #[arg(long = "no-stdin")]
    no_stdin: bool,
    /// Override the key sequence for detaching a container
    #[arg(long, default_value = "")]
    detach_keys: String,
    /// Proxy all received signals to the process
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    sig_proxy: bool,
    container: String,
}

/// `attach`: the container's output (and input, when it has stdin open) until it exits or the
/// detach keys are pressed; exits with the container's status.
pub fn attach(host: &Host, c: &AttachCmd) -> Result<i32> {
    let info = inspect_container(host, &c.container)?;
    if !info.state.running {
        return Err(CliError::Message(
            "You cannot attach to a stopped container, start it first".into(),
        ));
    }
    let id = info.id;
    let tty = info.config.tty;
    let stdin = !c.no_stdin && info.config.open_stdin;
    let stream = api::attach(host, &id, stdin)?;
    let keys = parse_detach_keys(&c.detach_keys)?;
    let waiter = spawn_wait(host, &id, "next-exit");
    let _proxy = if c.sig_proxy && !tty {
        Some(SignalProxy::start(host, &id)?)
    } else {
        None
    };
    container_session(host, &id, stream, tty, stdin, &keys, waiter)
}

/// `inspect` flags.
#[derive(Debug, Args)]
pub struct InspectCmd {
    /// Format output using a custom template
    #[arg(short = 'f', long)]
    format: Option<String>,
    /// Return JSON for specified type
    #[arg(long = "type")]
    typ: Option<String>,
    /// Display total file sizes if the type is container
    #[arg(short = 's', long)]
    size: bool,
    #[arg(required = true)]
    names: Vec<String>,
}

/// `inspect` of objects by name through one route each (`path_of(name)`), printed as the
/// docker CLI does (`--format`, and how the JSON prints; `reencode` maps each answer, e.g.
/// through the typed model the docker CLI decodes it into); a name that fails is reported and
/// the command exits 1 at the end.
pub fn inspect_each(
    host: &Host,
    names: &[String],
    path_of: impl Fn(&str) -> String,
    reencode: impl Fn(String) -> String,
    (format, json): (Option<&str>, crate::commands::InspectJson),
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result {
    let t = crate::commands::inspect_template(format)?;
    let mut docs = Vec::new();
    let mut failed = false;
    for n in names {
        match api::request(host, "GET", &path_of(n), None) {
            Ok(r) => docs.push(reencode(String::from_utf8_lossy(&r.body).into_owned())),
            Err(e) => {
                failed = true;
                let _ = writeln!(err, "{}", CliError::from(e));
            }
        }
    }
    crate::commands::print_inspect(&docs, t.as_ref(), json, out)?;
    if failed {
        return Err(CliError::Exit(1));
    }
    Ok(())
}

/// `inspect` (`--type container|image`, both when not given) and `container inspect`
/// (`only`: `container`).
pub fn inspect(
    host: &Host,
    c: &InspectCmd,
    only: Option<&str>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result {
    let t = crate::commands::inspect_template(c.format.as_deref())?;
    let mut docs = Vec::new();
    let mut failed = false;
    let size = if c.size { "?size=1" } else { "" };
    for n in &c.names {
        let typ = only.or(c.typ.as_deref());
        let try_c = typ.is_none_or(|t| t == "container");
        let try_i = typ.is_none_or(|t| t == "image");
        let mut found = None;
        if try_c {
            if let Ok(r) = api::request(
                host,
                "GET",
                &format!("/containers/{}/json{size}", enc(n)),
                None,
            ) {
                found = Some(r);
            }
        }
        if found.is_none() && try_i {
            if let Ok(r) = api::request(host, "GET", &format!("/images/{n}/json"), None) {
                found = Some(r);
            }
        }
        match found {
            Some(r) => docs.push(String::from_utf8_lossy(&r.body).into_owned()),
            None => {
                failed = true;
                let _ = writeln!(err, "Error: No such object: {n}");
            }
        }
    }
    crate::commands::print_inspect(&docs, t.as_ref(), crate::commands::InspectJson::Raw, out)?;
    if failed {
        return Err(CliError::Exit(1));
    }
    Ok(())
}

/// `top CONTAINER [ps OPTIONS]`.
#[derive(Debug, Args)]
pub struct TopCmd {
    container: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    ps_args: Vec<String>,
}

pub fn top(host: &Host, c: &TopCmd, out: &mut dyn Write) -> Result {
    let mut p = format!("/containers/{}/top", enc(&c.container));
    if !c.ps_args.is_empty() {
        p.push_str(&format!("?ps_args={}", enc(&c.ps_args.join(" "))));
    }
    let v: TopResponse = host.get(&p)?;
    let mut text = String::new();
    text.push_str(&v.titles.join("\t"));
    text.push('\n');
    for row in &v.processes {
        text.push_str(&row.join("\t"));
        text.push('\n');
    }
    // The docker CLI's `top` table is wider than its lists' (minimum cell width 20).
    out.write_all(crate::tabwriter::align(&text, 20, 3).as_bytes())?;
    Ok(())
}

/// `diff CONTAINER`.
#[derive(Debug, Args)]
pub struct DiffCmd {
    container: String,
}

pub fn diff(host: &Host, c: &DiffCmd, out: &mut dyn Write) -> Result {
    let changes: Option<Vec<ChangeItem>> =
        host.get(&format!("/containers/{}/changes", enc(&c.container)))?;
    for ch in changes.unwrap_or_default() {
        let k = match ch.kind {
            0 => 'C',
            1 => 'A',
            _ => 'D',
        };
        writeln!(out, "{k} {}", ch.path)?;
    }
    Ok(())
}

/// `update` flags.
#[derive(Debug, Args)]
pub struct UpdateCmd {
    #[command(flatten)]
    flags: CreateFlags,
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn update(host: &Host, c: &UpdateCmd, out: &mut dyn Write, err: &mut dyn Write) -> Result {
    let mut body = UpdateConfig::default();
    body.set_resources(c.flags.resources()?);
    if let Some(p) = c.flags.restart_policy()? {
        body.restart_policy = p;
    }
    let body = json(&body);
    each(&c.containers, out, err, |n| {
        host.call(
            "POST",
            &format!("/containers/{}/update", enc(n)),
            Some(&body),
        )
        .map(|_| n.to_string())
    })
}

/// `commit` flags.
#[derive(Debug, Args)]
pub struct CommitCmd {
    /// Author (e.g., "John Hannibal Smith <hannibal@a-team.com>")
    #[arg(short = 'a', long)]
    author: Option<String>,
    /// Apply Dockerfile instruction to the created image
    #[arg(short = 'c', long = "change")]
    change: Vec<String>,
    /// Commit message
    #[arg(short = 'm', long)]
    message: Option<String>,
    /// Pause container during commit
    #[arg(short = 'p', long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pause: bool,
    /// The container
    container: String,
    /// [REPOSITORY[:TAG]]
    reference: Option<String>,
}

/// The query of `POST /commit` for these flags (the Engine API's documented request).
fn commit_query(c: &CommitCmd) -> Result<String> {
    let mut q: Vec<(&str, String)> = vec![("container", c.container.clone())];
    if let Some(r) = &c.reference {
        let parsed = Reference::parse_normalized(r)
            .map_err(|e| CliError::Message(format!("invalid reference format: {e}: \"{r}\"")))?;
        if parsed.digest().is_some() {
            return Err(CliError::Message(
                "refusing to create a tag with a digest reference".into(),
            ));
        }
        q.push(("repo", parsed.familiar_name()));
        if let Some(t) = parsed.tag() {
            q.push(("tag", t.to_string()));
        }
    }
    if let Some(m) = &c.message {
        q.push(("comment", m.clone()));
    }
    if let Some(a) = &c.author {
        q.push(("author", a.clone()));
    }
    for ch in &c.change {
        q.push(("changes", ch.clone()));
    }
    q.push(("pause", if c.pause { "1" } else { "0" }.into()));
    Ok(query(&q))
}

/// `commit CONTAINER [REPOSITORY[:TAG]]`: prints the new image's ID.
pub fn commit(host: &Host, c: &CommitCmd, out: &mut dyn Write) -> Result {
    let q = commit_query(c)?;
    let r: IdResponse = host.post(&format!("/commit{q}"), None)?;
    writeln!(out, "{}", r.id)?;
    Ok(())
}

/// `export` flags.
#[derive(Debug, Args)]
pub struct ExportCmd {
    /// Write to a file, instead of STDOUT
    #[arg(short = 'o', long)]
    output: Option<PathBuf>,
    /// The container
    container: String,
}

/// `export CONTAINER`: the container's file system as a tar, to `-o FILE` (written whole or
/// not at all) or to standard output (refused on a terminal).
pub fn export(host: &Host, c: &ExportCmd, out: &mut dyn Write) -> Result {
    let path = format!("/containers/{}/export", enc(&c.container));
    match &c.output {
        None => {
            if std::io::stdout().is_terminal() {
                return Err(CliError::Message(
                    "cowardly refusing to save to a terminal. Use the -o flag or redirect".into(),
                ));
            }
            let mut r = api::stream(host, &path)?;
            std::io::copy(&mut r, out)?;
            out.flush()?;
        }
        Some(p) => {
            // As the docker CLI: the output's directory must exist before anything is asked.
            let dir = p
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            if let Err(e) = std::fs::metadata(dir) {
                return Err(CliError::Message(format!(
                    "failed to export container: invalid output path: stat {}: {}",
                    dir.display(),
                    crate::commands::io_msg(&e)
                )));
            }
            let mut r = api::stream(host, &path)?;
            crate::commands::write_file_atomically(p, "export", "export container", |w| {
                std::io::copy(&mut r, w)?;
                Ok(())
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_requests_like_docker() {
        let c = crate::parse_args::<CommitCmd>(&[
            "-a",
            "Me <me@x>",
            "-m",
            "a message",
            "-c",
            "ENV A=1",
            "--change",
            "CMD [\"sh\"]",
            "web",
            "example.com/app:v1",
        ]);
        assert_eq!(
            commit_query(&c).unwrap(),
            "?container=web&repo=example.com%2Fapp&tag=v1&comment=a%20message&author=Me%20%3Cme%40x%3E&changes=ENV%20A%3D1&changes=CMD%20%5B%22sh%22%5D&pause=1"
        );
        let c = crate::parse_args::<CommitCmd>(&["--pause=false", "web", "busybox"]);
        assert_eq!(
            commit_query(&c).unwrap(),
            "?container=web&repo=busybox&pause=0"
        );
        let c = crate::parse_args::<CommitCmd>(&["-p=false", "web"]);
        assert_eq!(commit_query(&c).unwrap(), "?container=web&pause=0");
        let c = crate::parse_args::<CommitCmd>(&["web", &format!("b@sha256:{}", "a".repeat(64))]);
        assert!(commit_query(&c).unwrap_err().to_string().contains("digest"));
        let c = crate::parse_args::<CommitCmd>(&["web", "Bad:Ref:x"]);
        assert!(commit_query(&c).is_err());
    }
}
