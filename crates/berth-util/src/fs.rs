//! Files.

use std::io::Write;
use std::path::Path;

/// Replaces `path`'s content by writing a temporary file next to it and renaming it over, so
/// a reader (or a writer killed half-way) sees the old or the new content, never a mix.
///
/// No fsync: for run-time state (pid files, runtime state, exit status) that lives in a tmpfs
/// and only has to survive the death of processes, which the rename guarantees; durability
/// against power loss would buy nothing and cost milliseconds.
pub fn replace_file_nosync(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(data)?;
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_and_leaves_no_temporary() {
        let d = std::env::temp_dir().join(format!("berth-util-fs-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("state.json");
        replace_file_nosync(&p, b"one").unwrap();
        replace_file_nosync(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
