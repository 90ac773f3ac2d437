//! Build contexts: making the tar a client sends (honouring `.dockerignore` as the docker
//! CLI does) and extracting a received one, confined to a directory.

use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;

use crate::dockerignore::IgnoreFile;

/// Writes the context directory as a tar, leaving out what `.dockerignore` excludes (the
/// Dockerfile and `.dockerignore` themselves are always sent, as docker does). `extra` adds a
/// file at the root (a Dockerfile from stdin or from outside the context).
pub fn write_context_tar(
    dir: &Path,
    dockerfile_rel: Option<&str>,
    extra: Option<(&str, &[u8])>,
    out: impl Write,
) -> io::Result<()> {
    let ignore = IgnoreFile::load(dir)?;
    let mut b = tar::Builder::new(out);
    b.follow_symlinks(false);
    b.mode(tar::HeaderMode::Complete);
    let keep: Vec<String> = [Some(".dockerignore"), dockerfile_rel]
        .into_iter()
        .flatten()
        .map(crate::dockerignore::clean)
        .collect();
    walk(&mut b, dir, "", &ignore, &keep)?;
    if let Some((name, data)) = extra {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_mtime(0);
        b.append_data(&mut h, name, data)?;
    }
    b.into_inner()?.flush()
}

fn walk<W: Write>(
    b: &mut tar::Builder<W>,
    dir: &Path,
    rel: &str,
    ig: &IgnoreFile,
    keep: &[String],
) -> io::Result<()> {
    let mut names: Vec<_> = fs::read_dir(dir.join(rel))?.collect::<io::Result<Vec<_>>>()?;
    names.sort_by_key(|e| e.file_name());
    for e in names {
        let n = e.file_name().to_string_lossy().into_owned();
        let r = if rel.is_empty() {
            n
        } else {
            format!("{rel}/{n}")
        };
        let ft = e.file_type()?;
        let kept = keep.contains(&r);
        if ft.is_dir() {
            if ig.skip_dir(&r) && !keep.iter().any(|k| k.starts_with(&format!("{r}/"))) {
                continue;
            }
            if !ig.ignored(&r) {
                b.append_path_with_name(e.path(), &r)?;
            }
            walk(b, dir, &r, ig, keep)?;
        } else {
            if ig.ignored(&r) && !kept {
                continue;
            }
            b.append_path_with_name(e.path(), &r)?;
        }
    }
    Ok(())
}

/// Extracts a context tar (plain, gzip or zstd) into `dest`. Every entry is confined to
/// `dest` (berth-image's layer applier: no `..`, no symlinked parents leaving the tree).
pub fn extract_context(reader: impl Read, dest: &Path) -> io::Result<()> {
    // dockerd extracts a context chrooted: names above the root (`../a`, `/a`) land in it.
    let opts = berth_image::layer::ApplyOptions {
        clamp_to_root: true,
        ..Default::default()
    };
    berth_image::layer::apply_layer(dest, reader, &opts).map_err(io::Error::other)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_honours_dockerignore_and_is_confined() {
        let d = tempfile::tempdir().unwrap();
        let c = d.path().join("ctx");
        fs::create_dir_all(c.join("skip/keep")).unwrap();
        fs::create_dir_all(c.join("src")).unwrap();
        fs::write(
            c.join(".dockerignore"),
            "skip\n!skip/keep\n*.log\nDockerfile\n",
        )
        .unwrap();
        fs::write(c.join("Dockerfile"), "FROM x\n").unwrap();
        fs::write(c.join("a.log"), "x").unwrap();
        fs::write(c.join("src/a.rs"), "x").unwrap();
        fs::write(c.join("skip/b"), "x").unwrap();
        fs::write(c.join("skip/keep/c"), "x").unwrap();
        let mut buf = Vec::new();
        write_context_tar(
            &c,
            Some("Dockerfile"),
            Some((".dockerfile.x", b"FROM y\n")),
            &mut buf,
        )
        .unwrap();
        let out = d.path().join("out");
        fs::create_dir(&out).unwrap();
        extract_context(&buf[..], &out).unwrap();
        assert!(out.join("Dockerfile").exists());
        assert!(out.join(".dockerignore").exists());
        assert!(out.join("src/a.rs").exists());
        assert!(out.join("skip/keep/c").exists());
        assert!(!out.join("skip/b").exists());
        assert!(!out.join("a.log").exists());
        assert_eq!(fs::read(out.join(".dockerfile.x")).unwrap(), b"FROM y\n");

        // A hostile tar cannot write outside.
        let mut t = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        t.append_link(&mut h, "esc", d.path()).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        t.append_data(&mut h, "esc/pwned", &b"x"[..]).unwrap();
        let bytes = t.into_inner().unwrap();
        let out2 = d.path().join("out2");
        fs::create_dir(&out2).unwrap();
        let _ = extract_context(&bytes[..], &out2);
        assert!(!d.path().join("pwned").exists());
    }
}
