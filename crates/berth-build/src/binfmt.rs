//! The host's `binfmt_misc` handlers: whether RUN steps of a foreign platform can execute,
//! and through which emulator.
//!
//! A platform is *native* when it is Linux on the host's architecture. Another Linux platform
//! runs when an enabled `binfmt_misc` entry matches an ELF header of its machine (the
//! entry's magic and mask at its offset, as the kernel matches them). An entry with the `F`
//! (fix-binary) flag has its interpreter opened by the kernel at registration, so it works in
//! any mount namespace; for one without, the caller binds the interpreter into the container
//! at its path. When `binfmt_misc` is not mounted at `/proc/sys/fs/binfmt_misc`, it is read
//! through a private temporary mount that is removed right after (the host's mounts stay as
//! they were; the registrations are the kernel's, whatever mount shows them).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use berth_image::manifest::Platform;

/// Where `binfmt_misc` is normally mounted.
pub const MOUNT_POINT: &str = "/proc/sys/fs/binfmt_misc";

/// A registered `binfmt_misc` entry (magic entries only; extension entries are skipped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub enabled: bool,
    pub interpreter: PathBuf,
    pub flags: String,
    pub offset: usize,
    pub magic: Vec<u8>,
    pub mask: Vec<u8>,
}

impl Entry {
    /// Parses an entry file's text (as the kernel shows it).
    pub fn parse(name: &str, text: &str) -> Option<Entry> {
        let mut e = Entry {
            name: name.to_string(),
            enabled: false,
            interpreter: PathBuf::new(),
            flags: String::new(),
            offset: 0,
            magic: Vec::new(),
            mask: Vec::new(),
        };
        for line in text.lines() {
            let (k, v) = line.split_once([' ', ':']).unwrap_or((line, ""));
            let v = v.trim();
            match k {
                "enabled" => e.enabled = true,
                "disabled" => e.enabled = false,
                "interpreter" => e.interpreter = PathBuf::from(v),
                "flags" => e.flags = v.to_string(),
                "offset" => e.offset = v.parse().ok()?,
                "magic" => e.magic = hex(v)?,
                "mask" => e.mask = hex(v)?,
                _ => {}
            }
        }
        (!e.magic.is_empty() && !e.interpreter.as_os_str().is_empty()).then_some(e)
    }

    /// Whether the kernel's interpreter is fixed at registration (`F`), so the path need not
    /// exist where the program runs.
    pub fn fix_binary(&self) -> bool {
        self.flags.contains('F')
    }

    /// Whether the entry matches `header` as the kernel matches a file's first bytes.
    pub fn matches(&self, header: &[u8]) -> bool {
        let Some(window) = header.get(self.offset..self.offset + self.magic.len()) else {
            return false;
        };
        window
            .iter()
            .zip(&self.magic)
            .enumerate()
            .all(|(i, (b, m))| {
                let mask = self.mask.get(i).copied().unwrap_or(0xff);
                b & mask == m & mask
            })
    }
}

fn hex(s: &str) -> Option<Vec<u8>> {
    hex::decode(s).ok()
}

/// An ELF machine: class (1 = 32-bit, 2 = 64-bit), data (1 = little, 2 = big endian),
/// `e_machine`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElfMachine {
    pub class: u8,
    pub data: u8,
    pub machine: u16,
}

impl ElfMachine {
    /// The executables of a (normalised) platform's architecture.
    pub fn of(p: &Platform) -> Option<ElfMachine> {
        let (class, data, machine) = match p.architecture.as_str() {
            "amd64" => (2, 1, 0x3e),
            "386" => (1, 1, 0x03),
            "arm64" => (2, 1, 0xb7),
            "arm" => (1, 1, 0x28),
            "ppc64le" => (2, 1, 0x15),
            "ppc64" => (2, 2, 0x15),
            "s390x" => (2, 2, 0x16),
            "riscv64" => (2, 1, 0xf3),
            "mips64le" => (2, 1, 0x08),
            "mips64" => (2, 2, 0x08),
            "mipsle" => (1, 1, 0x08),
            "mips" => (1, 2, 0x08),
            "loong64" => (2, 1, 0x102),
            _ => return None,
        };
        Some(ElfMachine {
            class,
            data,
            machine,
        })
    }

    /// The first bytes of an executable (`e_type` 2) or a shared object/PIE (`e_type` 3) of
    /// this machine.
    pub fn header(&self, e_type: u16) -> [u8; 64] {
        let mut h = [0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = self.class;
        h[5] = self.data;
        h[6] = 1; // EV_CURRENT
        let half = |v: u16| {
            if self.data == 2 {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        h[16..18].copy_from_slice(&half(e_type));
        h[18..20].copy_from_slice(&half(self.machine));
        let version = if self.data == 2 {
            1u32.to_be_bytes()
        } else {
            1u32.to_le_bytes()
        };
        h[20..24].copy_from_slice(&version);
        h
    }
}

/// How a platform's programs run here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Execution {
    /// The host's own architecture.
    Native,
    /// Through `binfmt_misc`: the enabled entries that match (`F` ones first). Which one the
    /// kernel uses depends on their registration order, which is not shown: every
    /// interpreter of an entry without `F` must be reachable.
    Emulated(Vec<Entry>),
}

/// Why a platform's programs cannot run here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotRunnable {
    #[error("this host runs only linux programs, not {0}")]
    Os(String),
    #[error("Berth does not know the executables of architecture {0:?}")]
    UnknownArch(String),
    #[error(
        "no enabled binfmt_misc handler for {arch} executables is registered on this host ({host}){why}; \
         install an emulator (Debian: qemu-user-static) and register its handler, with the F flag \
         (e.g. `docker run --privileged tonistiigi/binfmt --install {arch}` elsewhere, or \
         /usr/lib/binfmt.d/qemu-*.conf written to {MOUNT_POINT}/register)"
    )]
    NoHandler {
        arch: String,
        host: String,
        /// Why the handlers could not be read (empty when they were).
        why: String,
    },
}

/// Whether `p` (normalised) is the host's own kind of program.
pub fn is_native(p: &Platform) -> bool {
    let h = Platform::host();
    p.os == h.os && p.architecture == h.architecture
}

/// How `p`'s programs run on this host, reading the registered handlers.
pub fn execution(p: &Platform) -> Result<Execution, NotRunnable> {
    if p.os != "linux" {
        return Err(NotRunnable::Os(p.os.clone()));
    }
    if is_native(p) {
        return Ok(Execution::Native);
    }
    let m = ElfMachine::of(p).ok_or_else(|| NotRunnable::UnknownArch(p.architecture.clone()))?;
    let (entries, why) = match entries() {
        Ok(e) => (e, String::new()),
        Err(e) => (Vec::new(), format!(" (reading {MOUNT_POINT}: {e})")),
    };
    let found = find(&entries, m);
    (!found.is_empty())
        .then_some(Execution::Emulated(found))
        .ok_or_else(|| {
            let h = Platform::host();
            NotRunnable::NoHandler {
                arch: p.architecture.clone(),
                host: format!("{}/{}", h.os, h.architecture),
                why,
            }
        })
}

/// The platforms this host runs: its own first, then those a registered handler emulates
/// (as BuildKit lists its worker's platforms).
pub fn runnable_platforms() -> Vec<Platform> {
    let mut out = vec![Platform::host()];
    let entries = entries().unwrap_or_default();
    for p in [
        "linux/amd64",
        "linux/arm64",
        "linux/riscv64",
        "linux/ppc64le",
        "linux/s390x",
        "linux/386",
        "linux/mips64le",
        "linux/mips64",
        "linux/loong64",
        "linux/arm/v7",
        "linux/arm/v6",
    ] {
        let Ok(p) = Platform::parse(p) else { continue };
        if is_native(&p) || out.contains(&p) {
            continue;
        }
        if ElfMachine::of(&p).is_some_and(|m| !find(&entries, m).is_empty()) {
            out.push(p);
        }
    }
    out
}

/// The enabled entries for `m`'s executables (`F` entries first, then in name order).
pub fn find(entries: &[Entry], m: ElfMachine) -> Vec<Entry> {
    let (exec, dyn_) = (m.header(2), m.header(3));
    let mut found: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.enabled && (e.matches(&exec) || e.matches(&dyn_)))
        .collect();
    found.sort_by_key(|e| (!e.fix_binary(), e.name.clone()));
    found.into_iter().cloned().collect()
}

/// The registered entries; `binfmt_misc` is mounted privately for the read when it is not
/// mounted at [`MOUNT_POINT`].
pub fn entries() -> io::Result<Vec<Entry>> {
    let std_dir = Path::new(MOUNT_POINT);
    if std_dir.join("register").exists() {
        return entries_in(std_dir);
    }
    let dir = tempfile::Builder::new()
        .prefix("berth-binfmt-")
        .tempdir_in("/run")
        .or_else(|_| tempfile::Builder::new().prefix("berth-binfmt-").tempdir())?;
    rustix::mount::mount(
        "binfmt_misc",
        dir.path(),
        "binfmt_misc",
        rustix::mount::MountFlags::NOSUID
            | rustix::mount::MountFlags::NODEV
            | rustix::mount::MountFlags::NOEXEC,
        None,
    )?;
    let res = entries_in(dir.path());
    if let Err(e) = rustix::mount::unmount(dir.path(), rustix::mount::UnmountFlags::DETACH) {
        tracing::warn!("unmounting {}: {e}", dir.path().display());
    }
    res
}

/// The entries of a mounted `binfmt_misc` (an unreadable entry is skipped: it was removed
/// while listing).
pub fn entries_in(dir: &Path) -> io::Result<Vec<Entry>> {
    let mut out = Vec::new();
    for d in fs::read_dir(dir)? {
        let d = d?;
        let name = d.file_name().to_string_lossy().into_owned();
        if name == "register" || name == "status" {
            continue;
        }
        let Ok(text) = fs::read_to_string(d.path()) else {
            continue;
        };
        out.extend(Entry::parse(&name, &text));
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The registration line for an entry matching `m`'s executables (`:name:M:offset:magic:
/// mask:interpreter:flags`, bytes as `\xNN`), as `/usr/lib/binfmt.d` files write them.
pub fn registration(name: &str, m: ElfMachine, interpreter: &Path, flags: &str) -> String {
    let h = m.header(2);
    let magic = &h[..20];
    // Every byte but e_ident's padding (OSABI and after) and e_type's low bit (EXEC/DYN).
    let mut mask = [0xffu8; 20];
    mask[7..16].fill(0);
    let low = if m.data == 2 { 17 } else { 16 };
    mask[low] = 0xfe;
    let esc = |b: &[u8]| b.iter().map(|x| format!("\\x{x:02x}")).collect::<String>();
    format!(
        ":{name}:M::{}:{}:{}:{flags}",
        esc(magic),
        esc(&mask),
        interpreter.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const QEMU_AARCH64: &str = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: POCF\noffset 0\nmagic 7f454c460201010000000000000000000200b700\nmask ffffffffffffff00fffffffffffffffffeffffff\n";

    #[test]
    fn parses_and_matches_qemu_entries() {
        let e = Entry::parse("qemu-aarch64", QEMU_AARCH64).unwrap();
        assert!(e.enabled && e.fix_binary());
        assert_eq!(e.magic.len(), 20);
        let arm64 = ElfMachine::of(&Platform::parse("linux/arm64").unwrap()).unwrap();
        assert!(e.matches(&arm64.header(2)) && e.matches(&arm64.header(3)));
        let amd64 = ElfMachine::of(&Platform::parse("linux/amd64").unwrap()).unwrap();
        assert!(!e.matches(&amd64.header(2)));
        let riscv = ElfMachine::of(&Platform::parse("linux/riscv64").unwrap()).unwrap();
        assert!(!e.matches(&riscv.header(2)));
        assert_eq!(find(std::slice::from_ref(&e), arm64), vec![e.clone()]);
        assert!(find(std::slice::from_ref(&e), riscv).is_empty());
        let mut off = e.clone();
        off.enabled = false;
        assert!(find(&[off], arm64).is_empty());
        let mut nof = e.clone();
        nof.name = "a-nof".into();
        nof.flags = "P".into();
        assert_eq!(find(&[nof.clone(), e.clone()], arm64), vec![e.clone(), nof]);
        // Extension entries and garbage are not magic entries.
        assert!(Entry::parse("x", "enabled\ninterpreter /x\nflags: \nextension .exe\n").is_none());
        assert!(Entry::parse("x", "enabled\ninterpreter /x\nmagic 7g\n").is_none());
    }

    #[test]
    fn registration_matches_what_it_registers() {
        for p in [
            "linux/arm64",
            "linux/arm/v7",
            "linux/s390x",
            "linux/riscv64",
            "linux/ppc64le",
        ] {
            let m = ElfMachine::of(&Platform::parse(p).unwrap()).unwrap();
            let line = registration("t", m, Path::new("/usr/bin/qemu"), "F");
            let f: Vec<&str> = line.split(':').collect();
            let unesc = |s: &str| hex(&s.replace("\\x", "")).unwrap();
            let text = format!(
                "enabled\ninterpreter {}\nflags: {}\noffset 0\nmagic {}\nmask {}\n",
                f[6],
                f[7],
                f[4].replace("\\x", ""),
                f[5].replace("\\x", "")
            );
            let e = Entry::parse("t", &text).unwrap();
            assert_eq!(e.magic, unesc(f[4]));
            assert!(e.matches(&m.header(2)) && e.matches(&m.header(3)), "{p}");
            let other = ElfMachine::of(&Platform::parse("linux/mips64le").unwrap()).unwrap();
            assert!(!e.matches(&other.header(2)), "{p}");
        }
    }

    #[test]
    fn native_and_foreign() {
        assert_eq!(execution(&Platform::host()), Ok(Execution::Native));
        assert!(matches!(
            execution(&Platform::parse("windows/amd64").unwrap()),
            Err(NotRunnable::Os(_))
        ));
        assert!(matches!(
            execution(&Platform::parse("linux/pdp11").unwrap()),
            Err(NotRunnable::UnknownArch(_))
        ));
    }
}
