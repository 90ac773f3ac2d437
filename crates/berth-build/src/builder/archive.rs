//! ADD's local archives as dockerd's classic builder treats them: a file is extracted when,
//! decompressed (plain, gzip, zstd; xz through the host's `xz -d -c -q`, as dockerd's
//! `DecompressStream` runs it), it starts with a valid tar header; anything else (a `.tar.xz.gz`
//! whose gzip holds xz bytes, a text file named `.tar`) is copied as a file. Extraction fails on
//! an archive cut short inside a block, where Go's tar reader reports an unexpected EOF.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use berth_image::layer::{ApplyOptions, LayerError};

const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0];
const BLOCK: usize = 512;

/// A file's decompressed content, and the `xz` process producing it (if any).
struct Decompressed {
    reader: Box<dyn Read>,
    xz: Option<Child>,
}

impl Decompressed {
    fn open(path: &Path) -> io::Result<Self> {
        let mut f = File::open(path)?;
        let mut head = [0u8; 6];
        let n = read_full(&mut f, &mut head)?;
        if head[..n] == *XZ_MAGIC {
            let mut child = Command::new("xz")
                .args(["-d", "-c", "-q"])
                .stdin(File::open(path)?)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| io::Error::new(e.kind(), format!("running xz: {e}")))?;
            let out = child
                .stdout
                .take()
                .ok_or_else(|| io::Error::other("xz without a standard output"))?;
            return Ok(Self {
                reader: Box::new(out),
                xz: Some(child),
            });
        }
        let reader = berth_image::image_store::decompress(File::open(path)?)?;
        Ok(Self { reader, xz: None })
    }

    /// Waits for `xz` (killed first when the content was not read to its end): its failure
    /// is an error with what it wrote on stderr.
    fn finish(self, read_all: bool) -> io::Result<()> {
        drop(self.reader);
        let Some(mut child) = self.xz else {
            return Ok(());
        };
        if !read_all {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(());
        }
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        let st = child.wait()?;
        if st.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!("xz: {st}: {}", err.trim())))
        }
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// A tar header block as Go's reader accepts it: not all zeros, its checksum (unsigned or
/// signed sum, the checksum field counted as spaces) matching the octal number in the field.
fn valid_header(b: &[u8]) -> bool {
    if b.len() != BLOCK || b.iter().all(|&c| c == 0) {
        return false;
    }
    let field = &b[148..156];
    let digits: String = field
        .iter()
        .map(|&c| c as char)
        .filter(|c| !matches!(c, '\0' | ' '))
        .collect();
    let Ok(want) = i64::from_str_radix(&digits, 8) else {
        return false;
    };
    let (mut unsigned, mut signed) = (0i64, 0i64);
    for (i, &c) in b.iter().enumerate() {
        let c = if (148..156).contains(&i) { b' ' } else { c };
        unsigned += i64::from(c);
        signed += i64::from(c as i8);
    }
    want == unsigned || want == signed
}

/// Whether ADD extracts the file at `path` (dockerd's `isArchivePath`).
pub(super) fn is_archive(path: &Path) -> bool {
    let Ok(mut d) = Decompressed::open(path) else {
        return false;
    };
    let mut block = [0u8; BLOCK];
    let ok = read_full(&mut d.reader, &mut block).is_ok_and(|n| valid_header(&block[..n]));
    let _ = d.finish(false);
    ok
}

/// Counts what passes through.
struct Counted<R> {
    inner: R,
    n: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.n += k as u64;
        Ok(k)
    }
}

/// Extracts the archive at `path` into `dest`.
pub(super) fn extract(path: &Path, dest: &Path) -> Result<(), LayerError> {
    let d = Decompressed::open(path).map_err(LayerError::Read)?;
    let Decompressed { reader, xz } = d;
    let mut counted = Counted {
        inner: reader,
        n: 0,
    };
    let res = berth_image::layer::apply_layer(dest, &mut counted, &ApplyOptions::default());
    let drained = res.is_ok() && io::copy(&mut counted, &mut io::sink()).is_ok();
    let d = Decompressed {
        reader: Box::new(counted.inner),
        xz,
    };
    d.finish(drained).map_err(LayerError::Read)?;
    res?;
    // Go's tar reader reads whole blocks: a stream ending inside one is cut short.
    if counted.n % BLOCK as u64 != 0 {
        return Err(LayerError::Read(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "unexpected EOF",
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(name: &str, data: &[u8]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, data).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn archives_are_what_decompresses_to_a_tar_header() {
        let d = tempfile::tempdir().unwrap();
        let t = tar_of("test/foo", b"Hi");
        std::fs::write(d.path().join("a.tar"), &t).unwrap();
        std::fs::write(d.path().join("text.tar"), "not_a_tar_file").unwrap();
        std::fs::write(d.path().join("zeros.tar"), [0u8; 1024]).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, b"\xfd7zXZ\0 not a tar").unwrap();
        std::fs::write(d.path().join("x.tar.xz.gz"), gz.finish().unwrap()).unwrap();
        assert!(is_archive(&d.path().join("a.tar")));
        assert!(!is_archive(&d.path().join("text.tar")));
        assert!(!is_archive(&d.path().join("zeros.tar")));
        assert!(!is_archive(&d.path().join("x.tar.xz.gz")));
        // Cut short by a byte: still an archive, but extracting it fails.
        std::fs::write(d.path().join("cut.tar"), &t[..t.len() - 1]).unwrap();
        assert!(is_archive(&d.path().join("cut.tar")));
        let out = d.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let e = extract(&d.path().join("cut.tar"), &out).unwrap_err();
        assert!(
            e.to_string().contains("unexpected EOF") || format!("{e:?}").contains("unexpected EOF"),
            "{e:?}"
        );
        extract(&d.path().join("a.tar"), &out).unwrap();
        assert_eq!(std::fs::read(out.join("test/foo")).unwrap(), b"Hi");
    }
}
