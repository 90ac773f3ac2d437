//! `berth-dist OUT_DIR`: writes what Berth's package ships beside its binaries, generated from
//! the binaries' own clap definitions so it never drifts from them:
//!
//! - `OUT/completions/bash/{berth,berthd}`, `OUT/completions/zsh/_{berth,berthd}`,
//!   `OUT/completions/fish/{berth,berthd}.fish`;
//! - `OUT/man/man1/berth.1` and one page per subcommand (`berth-run.1`, `berth-image-ls.1`, …),
//!   `OUT/man/man8/berthd.8`, and `OUT/man/man5/berth-daemon.json.5` (every key of
//!   `/etc/berth/daemon.json` with its flag, from the same table berthd checks files with).

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context};
use clap::{Command, CommandFactory};
use clap_complete::Shell;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let (Some(out), None) = (args.next(), args.next()) else {
        bail!("usage: berth-dist OUT_DIR");
    };
    let written = generate(Path::new(&out))?;
    println!(
        "{} files written under {}",
        written,
        Path::new(&out).display()
    );
    Ok(())
}

/// The commands documented: `berth` (section 1) and `berthd` (section 8).
fn commands() -> Vec<(Command, &'static str)> {
    let mut berth = berth_cli::cli::Cli::command();
    berth.build();
    let mut berthd = berthd::config::Flags::command();
    berthd.build();
    vec![(berth, "1"), (berthd, "8")]
}

fn create(path: &Path) -> anyhow::Result<std::fs::File> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))
}

/// Writes everything; returns the number of files.
pub fn generate(out: &Path) -> anyhow::Result<usize> {
    let mut n = 0;
    for (cmd, section) in commands() {
        let name = cmd.get_name().to_string();
        for (shell, file) in [
            (Shell::Bash, format!("bash/{name}")),
            (Shell::Zsh, format!("zsh/_{name}")),
            (Shell::Fish, format!("fish/{name}.fish")),
        ] {
            let mut f = create(&out.join("completions").join(file))?;
            clap_complete::generate(shell, &mut cmd.clone(), &name, &mut f);
            n += 1;
        }
        n += man_pages(&cmd, None, section, &out.join(format!("man/man{section}")))?;
    }
    let mut f = create(&out.join("man/man5/berth-daemon.json.5"))?;
    f.write_all(daemon_json_page().as_bytes())?;
    Ok(n + 1)
}

/// The page of `cmd` and of each of its visible subcommands (`berth-image-ls`).
fn man_pages(
    cmd: &Command,
    parent: Option<&str>,
    section: &str,
    dir: &Path,
) -> anyhow::Result<usize> {
    let page = match parent {
        Some(p) => format!("{p}-{}", cmd.get_name()),
        None => cmd.get_name().to_string(),
    };
    // Command names are `&'static str` without clap's `string` feature; this runs once.
    let title: &'static str = Box::leak(page.clone().into_boxed_str());
    let bin: &'static str = Box::leak(page.replace('-', " ").into_boxed_str());
    let named = cmd.clone().name(title).bin_name(bin).display_name(title);
    let mut buf = Vec::new();
    clap_mangen::Man::new(named)
        .section(section)
        .source(format!("berth {}", env!("CARGO_PKG_VERSION")))
        .manual("Berth")
        .render(&mut buf)?;
    create(&dir.join(format!("{page}.{section}")))?.write_all(&buf)?;
    let mut n = 1;
    for sub in cmd.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        n += man_pages(sub, Some(&page), section, dir)?;
    }
    Ok(n)
}

/// roff text with its special characters escaped.
fn roff(s: &str) -> String {
    let s = s.replace('\\', "\\e").replace('-', "\\-");
    // A line starting with a period or quote would be a request.
    s.lines()
        .map(|l| {
            if l.starts_with('.') || l.starts_with('\'') {
                format!("\\&{l}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `berth-daemon.json(5)`: the file's keys, their flags and help, and which a reload applies.
fn daemon_json_page() -> String {
    let flags = berthd::config::Flags::command();
    let mut s = String::new();
    s.push_str(&format!(
        ".TH BERTH\\-DAEMON.JSON 5 \"\" \"berth {}\" \"Berth\"\n",
        env!("CARGO_PKG_VERSION")
    ));
    s.push_str(".SH NAME\nberth\\-daemon.json \\- the configuration file of berthd\n");
    s.push_str(".SH SYNOPSIS\n/etc/berth/daemon.json (berthd \\-\\-config\\-file FILE)\n");
    s.push_str(&format!(
        ".SH DESCRIPTION\n{}\n",
        roff(
            "A JSON object whose keys are dockerd's: the long name of berthd's flag, plural for \
             the repeatable ones. An option given both in the file and as a flag is an error \
             naming both values; a key berthd does not know is an error listing every such key; \
             a value of the wrong type or out of range names its key and line. \
             berthd --validate checks a file and exits. SIGHUP (systemctl reload berthd, \
             service berthd reload) reads the file again: the options marked reloadable take \
             effect at once, a change of any other is logged and waits for a restart \
             (containers keep running across a restart)."
        )
    ));
    s.push_str(".SH OPTIONS\n");
    for o in berthd::config::OPTIONS {
        let help = flags
            .get_arguments()
            .find(|a| a.get_long() == Some(o.flag))
            .and_then(|a| a.get_help())
            .map(|h| h.to_string())
            .unwrap_or_default();
        s.push_str(&format!(
            ".TP\n\\fB{}\\fR (flag \\fB\\-\\-{}\\fR{})\n{}\n",
            roff(o.key),
            roff(o.flag),
            if o.reloadable { "; reloadable" } else { "" },
            roff(&help)
        ));
    }
    s.push_str(&format!(
        ".SH EXAMPLE\n.nf\n{}\n.fi\n",
        roff(
            r#"{
  "log-opts": {"max-size": "10m", "max-file": "3"},
  "registry-mirrors": ["https://mirror.example"],
  "default-address-pools": [{"base": "10.200.0.0/16", "size": 24}],
  "default-ulimits": {"nofile": {"Name": "nofile", "Soft": 65536, "Hard": 65536}},
  "docker-compat": true
}"#
        )
    ));
    s.push_str(".SH SEE ALSO\n\\fBberthd\\fR(8), \\fBberth\\fR(1)\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_completions_and_pages() {
        let dir = tempfile::tempdir().unwrap();
        let n = generate(dir.path()).unwrap();
        let read = |p: &str| std::fs::read_to_string(dir.path().join(p)).unwrap();
        assert!(read("completions/bash/berth").contains("complete -F _berth"));
        assert!(read("completions/zsh/_berthd").starts_with("#compdef berthd"));
        assert!(read("completions/fish/berth.fish").contains("complete -c berth"));
        let run = read("man/man1/berth-run.1");
        assert!(
            run.contains(".TH berth-run 1"),
            "{}",
            &run[..200.min(run.len())]
        );
        assert!(run.contains("\\-\\-rm"), "the flags of run are documented");
        assert!(std::fs::metadata(dir.path().join("man/man1/berth-image-ls.1")).is_ok());
        let d = read("man/man8/berthd.8");
        assert!(d.contains("\\-\\-config\\-file") && d.contains("\\-\\-docker\\-compat"));
        let page = read("man/man5/berth-daemon.json.5");
        for o in berthd::config::OPTIONS {
            assert!(
                page.contains(&format!("\\fB{}\\fR", roff(o.key))),
                "{}",
                o.key
            );
        }
        assert!(page
            .contains("registry\\-mirrors\\fR (flag \\fB\\-\\-registry\\-mirror\\fR; reloadable)"));
        assert!(n > 50, "{n} files");
        // Every page is valid roff for man(1) (groff -k: preconv, as man runs it) when groff
        // is there.
        if std::process::Command::new("groff")
            .arg("--version")
            .output()
            .is_ok()
        {
            for p in [
                "man/man8/berthd.8",
                "man/man5/berth-daemon.json.5",
                "man/man1/berth-run.1",
            ] {
                let o = std::process::Command::new("groff")
                    .args(["-k", "-man", "-Tutf8", "-ww", "-z"])
                    .arg(dir.path().join(p))
                    .output()
                    .unwrap();
                assert!(
                    o.status.success() && o.stderr.is_empty(),
                    "{p}: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
            }
        }
    }
}
