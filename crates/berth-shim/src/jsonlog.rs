//! Docker's `json-file` log format with size-based rotation.
//!
//! One JSON object per line: `{"log":"out\n","stream":"stdout","time":"2024-…Z"}`. `log` is the
//! line including its trailing newline; a line without its newline waits for it (written as
//! an entry without `\n`, which readers concatenate with the next, as Docker's partial
//! messages, only past [`MAX_PARTIAL`] or at the output's end).
//! Invalid UTF-8 becomes U+FFFD, as Docker's Go encoder does; a multi-byte character split across
//! two reads is kept together.
//!
//! Rotation (on by default here, unlike Docker): before a write, when the file has reached
//! `max_size`, `ID-json.log.(N-2)` → `.(N-1)`, …, `ID-json.log` → `.1`, and a new file is
//! started, so there are never more than `max_file` files. `max_file == 1` truncates instead.
//! `max_size == 0` disables rotation. With `compress` (`--log-opt compress=true`, and the
//! `local` driver's default) rotated files are gzipped as Docker's: `ID-json.log.1.gz`, ….
//! `attrs` (the `labels`, `env` and `tag` options) go into every entry as Docker's `attrs`.
//!
//! The same writer also writes the Kubernetes CRI log format (`--log-format cri`, the file at
//! the kubelet's `log_path`): `TIME STREAM TAG CONTENT\n`, TIME in RFC 3339 with nanoseconds,
//! TAG `F` for a full line (its newline is the record's) or `P` for a partial one.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub const DEFAULT_MAX_SIZE: u64 = 10 * 1024 * 1024;
pub const DEFAULT_MAX_FILE: u32 = 3;

pub struct JsonLog {
    path: PathBuf,
    file: File,
    size: u64,
    max_size: u64,
    max_file: u32,
    compress: bool,
    /// A JSON object written as each entry's `attrs`.
    attrs: Option<String>,
    /// The CRI format instead of JSON.
    cri: bool,
}

impl JsonLog {
    pub fn open(path: &Path, max_size: u64, max_file: u32) -> io::Result<JsonLog> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(JsonLog {
            path: path.to_path_buf(),
            file,
            size,
            max_size,
            max_file: max_file.max(1),
            compress: false,
            attrs: None,
            cri: false,
        })
    }

    /// Gzips rotated files.
    pub fn with_compress(mut self, compress: bool) -> Self {
        self.compress = compress;
        self
    }

    /// Adds `attrs` (a JSON object) to every entry.
    pub fn with_attrs(mut self, attrs: Option<String>) -> Self {
        self.attrs = attrs.filter(|a| !a.is_empty() && a != "{}");
        self
    }

    /// Writes the CRI log format instead of JSON.
    pub fn with_cri_format(mut self, cri: bool) -> Self {
        self.cri = cri;
        self
    }

    /// The name of a rotated file as it is kept (`.n`, or `.n.gz` when compressed).
    fn kept(&self, n: u32) -> PathBuf {
        let p = Self::rotated(&self.path, n);
        if self.compress {
            let mut s = p.into_os_string();
            s.push(".gz");
            PathBuf::from(s)
        } else {
            p
        }
    }

    /// The file name of rotated file number `n` (`ID-json.log.n`).
    pub fn rotated(path: &Path, n: u32) -> PathBuf {
        let mut s = path.as_os_str().to_owned();
        s.push(format!(".{n}"));
        PathBuf::from(s)
    }

    fn rotate(&mut self) -> io::Result<()> {
        if self.max_file <= 1 {
            self.file.set_len(0)?;
            self.size = 0;
            return Ok(());
        }
        for n in (1..self.max_file - 1).rev() {
            match std::fs::rename(self.kept(n), self.kept(n + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        let first = Self::rotated(&self.path, 1);
        std::fs::rename(&self.path, &first)?;
        if self.compress {
            gzip_file(&first, &self.kept(1))?;
        }
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        Ok(())
    }

    /// Writes one entry (`data` is one line with its `\n`, or a partial line).
    pub fn write_entry(&mut self, stream: &str, data: &[u8], time: &str) -> io::Result<()> {
        if self.max_size > 0 && self.size >= self.max_size {
            self.rotate()?;
        }
        let mut line = Vec::with_capacity(data.len() + 64);
        if self.cri {
            let (content, tag) = match data.strip_suffix(b"\n") {
                Some(c) => (c, "F"),
                None => (data, "P"),
            };
            line.extend_from_slice(format!("{time} {stream} {tag} ").as_bytes());
            line.extend_from_slice(content);
            line.push(b'\n');
            self.file.write_all(&line)?;
            self.size += line.len() as u64;
            return Ok(());
        }
        let text = String::from_utf8_lossy(data);
        line.extend_from_slice(b"{\"log\":");
        serde_json::to_writer(&mut line, &*text).map_err(io::Error::other)?;
        line.extend_from_slice(b",\"stream\":\"");
        line.extend_from_slice(stream.as_bytes());
        line.push(b'"');
        if let Some(a) = &self.attrs {
            line.extend_from_slice(b",\"attrs\":");
            line.extend_from_slice(a.as_bytes());
        }
        line.extend_from_slice(b",\"time\":\"");
        line.extend_from_slice(time.as_bytes());
        line.extend_from_slice(b"\"}\n");
        self.file.write_all(&line)?;
        self.size += line.len() as u64;
        Ok(())
    }
}

/// Gzips `from` into `to` (through a temporary name), then removes `from`.
fn gzip_file(from: &Path, to: &Path) -> io::Result<()> {
    let mut tmp = to.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut src = File::open(from)?;
    let mut enc =
        flate2::write::GzEncoder::new(File::create(&tmp)?, flate2::Compression::default());
    io::copy(&mut src, &mut enc)?;
    enc.finish()?;
    std::fs::rename(&tmp, to)?;
    std::fs::remove_file(from)
}

/// The most of a line held back before it is written as a partial entry (dockerd's copier
/// buffer, and containerd's default line size for the CRI format).
pub const MAX_PARTIAL: usize = 16 * 1024;

/// Splits one stream's output into log entries: whole lines; a line without its end yet
/// is held back until it has one, reaches [`MAX_PARTIAL`] or the output ends.
#[derive(Default)]
pub struct LineSplitter {
    /// Bytes of an incomplete UTF-8 character held back from the previous chunk.
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Calls `emit` for each entry in `chunk`.
    pub fn push(&mut self, chunk: &[u8], mut emit: impl FnMut(&[u8])) {
        let joined;
        let data: &[u8] = if self.pending.is_empty() {
            chunk
        } else {
            let mut v = std::mem::take(&mut self.pending);
            v.extend_from_slice(chunk);
            joined = v;
            &joined
        };
        let mut rest = data;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            emit(&rest[..=i]);
            rest = &rest[i + 1..];
        }
        if rest.is_empty() {
            return;
        }
        // A line still going waits for its end, as dockerd's log copier's: written as a
        // partial entry only once it fills the copier's buffer.
        if rest.len() < MAX_PARTIAL {
            self.pending.extend_from_slice(rest);
            return;
        }
        let keep = incomplete_utf8_tail(rest);
        let (now, later) = rest.split_at(rest.len() - keep);
        if !now.is_empty() {
            emit(now);
        }
        self.pending.extend_from_slice(later);
    }

    /// End of the stream: whatever was held back.
    pub fn finish(&mut self, mut emit: impl FnMut(&[u8])) {
        if !self.pending.is_empty() {
            emit(&std::mem::take(&mut self.pending));
        }
    }
}

/// How many trailing bytes of `b` are the start of a UTF-8 character that is not complete yet.
fn incomplete_utf8_tail(b: &[u8]) -> usize {
    for back in 1..=3.min(b.len()) {
        let c = b[b.len() - back];
        if c & 0xC0 == 0x80 {
            continue; // continuation byte: look further back
        }
        let need = if c & 0xE0 == 0xC0 {
            2
        } else if c & 0xF0 == 0xE0 {
            3
        } else if c & 0xF8 == 0xF0 {
            4
        } else {
            return 0;
        };
        return if back < need { back } else { 0 };
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, |e| out.push(e.to_vec()));
        }
        s.finish(|e| out.push(e.to_vec()));
        out
    }

    #[test]
    fn splits_lines_and_holds_partials_until_their_end() {
        assert_eq!(
            entries(&[b"a\nb\nc", b"d\n", b"e"]),
            vec![
                b"a\n".to_vec(),
                b"b\n".to_vec(),
                b"cd\n".to_vec(),
                b"e".to_vec()
            ]
        );
        // Nothing of a line without its end is written before it comes.
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        s.push(b"no end yet", |e| out.push(e.to_vec()));
        assert!(out.is_empty(), "{out:?}");
        // A line filling the buffer is written as a partial entry.
        let long = vec![b'x'; MAX_PARTIAL + 3];
        assert_eq!(
            entries(&[&long[..10], &long[10..], b"y\n"]),
            vec![long, b"y\n".to_vec()]
        );
    }

    #[test]
    fn keeps_split_utf8_together() {
        let e = "é".as_bytes();
        let mut long = vec![b'x'; MAX_PARTIAL];
        long.push(e[0]);
        let out = entries(&[&long, &[e[1], b'\n']]);
        assert_eq!(
            out,
            vec![long[..MAX_PARTIAL].to_vec(), "é\n".as_bytes().to_vec()]
        );
    }

    #[test]
    fn cri_format_tags_full_and_partial_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("0.log");
        let mut log = JsonLog::open(&p, 0, 1).unwrap().with_cri_format(true);
        log.write_entry("stdout", b"hello\n", "2026-01-02T03:04:05.000000006Z")
            .unwrap();
        log.write_entry("stderr", b"par", "2026-01-02T03:04:05.000000007Z")
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "2026-01-02T03:04:05.000000006Z stdout F hello\n2026-01-02T03:04:05.000000007Z stderr P par\n"
        );
    }

    /// Writes `n` entries `{prefix}0\n`, `{prefix}1\n`, … to `stream` at `time`.
    fn write_numbered(log: &mut JsonLog, stream: &str, prefix: &str, n: usize, time: &str) {
        for i in 0..n {
            log.write_entry(stream, format!("{prefix}{i}\n").as_bytes(), time)
                .unwrap();
        }
    }

    /// A log `c-json.log` in a new temporary directory.
    fn new_log(max_size: u64, max_file: u32) -> (tempfile::TempDir, std::path::PathBuf, JsonLog) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c-json.log");
        let log = JsonLog::open(&p, max_size, max_file).unwrap();
        (dir, p, log)
    }

    /// The names of the files in `dir`, sorted.
    fn file_names(dir: &std::path::Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn rotation_keeps_at_most_max_file() {
        let (dir, p, mut log) = new_log(200, 3);
        write_numbered(&mut log, "stdout", "line ", 100, "t");
        assert_eq!(
            file_names(dir.path()),
            ["c-json.log", "c-json.log.1", "c-json.log.2"]
        );
        let last = std::fs::read_to_string(&p).unwrap();
        assert!(last.contains("line 99\\n"), "{last}");
        let v: serde_json::Value = serde_json::from_str(last.lines().next().unwrap()).unwrap();
        assert_eq!(v["stream"], "stdout");
    }

    #[test]
    fn compressed_rotation_and_attrs() {
        let (dir, _, log) = new_log(10, 3);
        let mut log = log
            .with_compress(true)
            .with_attrs(Some(r#"{"tag":"t1"}"#.into()));
        write_numbered(&mut log, "stdout", "line ", 5, "T");
        assert_eq!(
            file_names(dir.path()),
            ["c-json.log", "c-json.log.1.gz", "c-json.log.2.gz"]
        );
        let mut text = String::new();
        let gz = std::fs::File::open(dir.path().join("c-json.log.1.gz")).unwrap();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(gz), &mut text).unwrap();
        assert_eq!(
            text,
            "{\"log\":\"line 3\\n\",\"stream\":\"stdout\",\"attrs\":{\"tag\":\"t1\"},\"time\":\"T\"}\n"
        );
    }

    #[test]
    fn max_file_one_truncates() {
        let (dir, p, mut log) = new_log(100, 1);
        write_numbered(&mut log, "stderr", "", 50, "t");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(std::fs::metadata(&p).unwrap().len() < 200);
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let (_dir, p, mut log) = new_log(0, 1);
        log.write_entry("stdout", b"a\xffb\"\n", "t").unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        assert_eq!(v["log"], "a\u{fffd}b\"\n");
    }
}
