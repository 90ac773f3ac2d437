//! The container's root file system: mounts of every kind, devices, `pivot_root`, masked and
//! read-only paths. Runs in the container's init, inside its new mount namespace.
//!
//! Every mount target is resolved inside the rootfs with `openat2(RESOLVE_IN_ROOT)` and mounted
//! through its `/proc/self/fd/N` magic link, so a symlink in the image cannot redirect a mount
//! onto the host.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use libc::{
    MOUNT_ATTR_NOATIME, MOUNT_ATTR_NODEV, MOUNT_ATTR_NODIRATIME, MOUNT_ATTR_NOEXEC,
    MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY, MOUNT_ATTR_STRICTATIME,
};
use nix::mount::MsFlags;
use rustix::fs::{AtFlags, Mode};

use crate::cgroupfs;
use crate::spec::{Mount, Spec};
use berth_util::root::{mkdir_all_in_root, open_in_root, touch_in_root};

use crate::util::fd_path;

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("mount {what} on {dest}: {source}")]
    Mount {
        what: String,
        dest: String,
        source: std::io::Error,
    },
    #[error("{op} {path}: {source}")]
    Path {
        op: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("cgroup mount on {dest}: {message}")]
    Cgroup { dest: String, message: String },
    #[error("waiting to be moved into the container's cgroup: {0}")]
    CgroupJoin(Box<crate::sync::SyncError>),
    #[error("mounts[{index}]: {source}")]
    InMount {
        index: usize,
        source: Box<MountError>,
    },
}

pub(crate) fn path_err(
    op: &'static str,
    path: impl AsRef<Path>,
) -> impl FnOnce(std::io::Error) -> MountError {
    let path = path.as_ref().display().to_string();
    move |source| MountError::Path { op, path, source }
}

/// The error of a mount: `what` at `dest`.
pub(crate) fn mount_err(
    what: impl Into<String>,
    dest: impl std::fmt::Display,
) -> impl FnOnce(std::io::Error) -> MountError {
    let (what, dest) = (what.into(), dest.to_string());
    move |source| MountError::Mount { what, dest, source }
}

pub fn propagation_flag(p: &str) -> Option<libc::c_ulong> {
    Some(match p {
        "private" => libc::MS_PRIVATE,
        "rprivate" => libc::MS_PRIVATE | libc::MS_REC,
        "shared" => libc::MS_SHARED,
        "rshared" => libc::MS_SHARED | libc::MS_REC,
        "slave" => libc::MS_SLAVE,
        "rslave" => libc::MS_SLAVE | libc::MS_REC,
        "unbindable" => libc::MS_UNBINDABLE,
        "runbindable" => libc::MS_UNBINDABLE | libc::MS_REC,
        _ => return None,
    })
}

/// Mount options split into `mount(2)` flags, propagation changes and file-system data.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ParsedOptions {
    pub flags: libc::c_ulong,
    /// Flags explicitly cleared (`rw`, `suid`, ...), relevant for remounts.
    pub cleared: libc::c_ulong,
    pub propagation: Vec<libc::c_ulong>,
    pub data: Vec<String>,
    pub bind: bool,
    pub recursive: bool,
    /// `mount_setattr(2)` attributes applied recursively (`rro`, `rnosuid`, ...).
    pub rec_attr_set: u64,
    pub rec_attr_clr: u64,
}

pub fn parse_options(opts: &[String]) -> ParsedOptions {
    let mut p = ParsedOptions::default();
    for o in opts {
        let (set, clear): (libc::c_ulong, libc::c_ulong) = match toggle(&FLAG_OPTIONS, o) {
            Some((true, flag)) => (flag, 0),
            Some((false, flag)) => (0, flag),
            None => match o.as_str() {
                "dirsync" => (libc::MS_DIRSYNC, 0),
                "remount" => (libc::MS_REMOUNT, 0),
                "bind" => {
                    p.bind = true;
                    (0, 0)
                }
                "rbind" => {
                    p.bind = true;
                    p.recursive = true;
                    (0, 0)
                }
                "tmpcopyup" => (0, 0), // accepted and ignored (a crun/runc extension)
                other => {
                    if let Some(f) = propagation_flag(other) {
                        p.propagation.push(f);
                    } else if let Some((set, attr)) = rec_attr(other) {
                        if set {
                            p.rec_attr_set |= attr;
                        } else {
                            p.rec_attr_clr |= attr;
                        }
                    } else {
                        p.data.push(other.to_string());
                    }
                    (0, 0)
                }
            },
        };
        p.flags = (p.flags | set) & !clear;
        p.cleared = (p.cleared | clear) & !set;
    }
    p
}

fn rec_attr(o: &str) -> Option<(bool, u64)> {
    toggle(&REC_ATTR_OPTIONS, o).or(match o {
        "rnoatime" => Some((true, MOUNT_ATTR_NOATIME)),
        "rstrictatime" => Some((true, MOUNT_ATTR_STRICTATIME)),
        _ => None,
    })
}

/// `mount(2)` flags with the option that sets each and the one that clears it.
const FLAG_OPTIONS: [(&str, &str, libc::c_ulong); 13] = [
    ("ro", "rw", libc::MS_RDONLY),
    ("nosuid", "suid", libc::MS_NOSUID),
    ("nodev", "dev", libc::MS_NODEV),
    ("noexec", "exec", libc::MS_NOEXEC),
    ("sync", "async", libc::MS_SYNCHRONOUS),
    ("mand", "nomand", libc::MS_MANDLOCK),
    ("noatime", "atime", libc::MS_NOATIME),
    ("nodiratime", "diratime", libc::MS_NODIRATIME),
    ("relatime", "norelatime", libc::MS_RELATIME),
    ("strictatime", "nostrictatime", libc::MS_STRICTATIME),
    ("silent", "loud", libc::MS_SILENT),
    ("lazytime", "nolazytime", libc::MS_LAZYTIME),
    ("iversion", "noiversion", libc::MS_I_VERSION),
];

/// `mount_setattr(2)` attributes applied recursively, likewise (`rro`/`rrw`).
const REC_ATTR_OPTIONS: [(&str, &str, u64); 5] = [
    ("rro", "rrw", MOUNT_ATTR_RDONLY),
    ("rnosuid", "rsuid", MOUNT_ATTR_NOSUID),
    ("rnodev", "rdev", MOUNT_ATTR_NODEV),
    ("rnoexec", "rexec", MOUNT_ATTR_NOEXEC),
    ("rnodiratime", "rdiratime", MOUNT_ATTR_NODIRATIME),
];

/// Looks `o` up in a table of (setting option, clearing option, flag): whether it sets the
/// flag, and the flag.
fn toggle<T: Copy>(table: &[(&str, &str, T)], o: &str) -> Option<(bool, T)> {
    table.iter().find_map(|&(on, off, flag)| {
        (o == on)
            .then_some((true, flag))
            .or((o == off).then_some((false, flag)))
    })
}

/// `mount(2)`; `data` empty is no data.
pub fn sys_mount(
    src: Option<&str>,
    target: &str,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> std::io::Result<()> {
    let data = data.filter(|d| !d.is_empty());
    nix::mount::mount(src, target, fstype, MsFlags::from_bits_retain(flags), data)?;
    Ok(())
}

fn mount_setattr_rec(target: &str, set: u64, clr: u64) -> std::io::Result<()> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    let attr = MountAttr {
        attr_set: set,
        attr_clr: clr,
        propagation: 0,
        userns_fd: 0,
    };
    let c = crate::util::cstring(target)?;
    // SAFETY: `c` is a NUL-terminated path and `attr` a `struct mount_attr` of the size passed;
    // both live across the call, which only reads them (no wrapper in nix or rustix).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            c.as_ptr(),
            0x8000u32, /* AT_RECURSIVE */
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Flags the kernel locks on a mount inherited across a user namespace; a remount must keep them.
fn locked_flags(target: &str) -> libc::c_ulong {
    use nix::sys::statvfs::FsFlags;
    let Ok(st) = nix::sys::statvfs::statvfs(target) else {
        return 0;
    };
    let mut f = 0;
    for (st_flag, ms) in [
        (FsFlags::ST_NOSUID, libc::MS_NOSUID),
        (FsFlags::ST_NODEV, libc::MS_NODEV),
        (FsFlags::ST_NOEXEC, libc::MS_NOEXEC),
        (FsFlags::ST_NOATIME, libc::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, libc::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, libc::MS_RELATIME),
        (FsFlags::ST_RDONLY, libc::MS_RDONLY),
    ] {
        if st.flags().contains(st_flag) {
            f |= ms;
        }
    }
    f
}

/// Waits, once, until the init is in its cgroup (and has its cgroup namespace).
pub struct CgroupJoin<'a> {
    done: std::cell::Cell<bool>,
    f: &'a dyn Fn() -> Result<(), MountError>,
}

impl<'a> CgroupJoin<'a> {
    pub fn new(f: &'a dyn Fn() -> Result<(), MountError>) -> Self {
        CgroupJoin {
            done: std::cell::Cell::new(false),
            f,
        }
    }

    pub fn ensure(&self) -> Result<(), MountError> {
        if !self.done.get() {
            (self.f)()?;
            self.done.set(true);
        }
        Ok(())
    }
}

/// What the init needs from the runtime to set up the root file system.
pub struct RootfsContext<'a> {
    pub cgroup_join: &'a CgroupJoin<'a>,
    pub spec: &'a Spec,
    pub bundle: &'a Path,
    pub rootfs: PathBuf,
    pub in_user_ns: bool,
    /// The container has a cgroup namespace (new, made once the init is in its cgroup, or joined).
    pub cgroupns: bool,
    pub new_net_ns: bool,
    /// The container's cgroup directories, for `cgroup` mounts (see `cgroupfs`).
    pub cgroups: Option<&'a berth_cgroups::MountSources>,
}

/// Part one, before `pivot_root`: propagation, the rootfs bind, every mount, devices.
pub fn prepare_rootfs(ctx: &RootfsContext) -> Result<OwnedFd, MountError> {
    let linux = ctx.spec.linux();
    let prop = linux
        .rootfs_propagation
        .as_deref()
        .and_then(propagation_flag)
        .unwrap_or(libc::MS_SLAVE | libc::MS_REC);
    // Unbindable propagation is applied after pivot_root (`finish_rootfs`): the rootfs cannot
    // be bound from an unbindable mount. Shared propagation is applied here already (as runc
    // does), so that binds of the host's shared mounts stay their peers: a slave root would
    // turn them into slaves, and mounts made in the container would never reach the host.
    let setup_prop = if prop & libc::MS_UNBINDABLE != 0 {
        libc::MS_SLAVE | libc::MS_REC
    } else {
        prop
    };
    sys_mount(None, "/", None, setup_prop, None).map_err(mount_err("propagation", "/"))?;
    rootfs_parent_not_shared(&ctx.rootfs, setup_prop)?;
    let rootfs = ctx.rootfs.to_string_lossy().into_owned();
    sys_mount(
        Some(&rootfs),
        &rootfs,
        None,
        libc::MS_BIND | libc::MS_REC,
        None,
    )
    .map_err(mount_err("rootfs bind", &rootfs))?;
    // The rootfs must not be shared with its parent for pivot_root.
    let _ = sys_mount(None, &rootfs, None, libc::MS_PRIVATE, None);
    let root = std::fs::File::open(&ctx.rootfs).map_err(path_err("open rootfs", &ctx.rootfs))?;
    let root_fd: OwnedFd = root.into();

    let mut dev_is_tmpfs = false;
    for (i, m) in ctx.spec.mounts.iter().enumerate() {
        mount_one(ctx, root_fd.as_fd(), m).map_err(|e| MountError::InMount {
            index: i,
            source: Box::new(e),
        })?;
        if m.destination == Path::new("/dev") && m.typ.as_deref() == Some("tmpfs") {
            dev_is_tmpfs = true;
        }
    }
    if dev_is_tmpfs {
        create_default_devices(ctx, root_fd.as_fd())?;
    }
    create_spec_devices(ctx, root_fd.as_fd())?;
    if dev_is_tmpfs {
        dev_symlinks(root_fd.as_fd(), &ctx.rootfs)?;
    }
    Ok(root_fd)
}

/// Makes the mount holding the rootfs private (or a slave for a slave root), as runc's
/// `rootfsParentMountPropagation`: pivot_root refuses a shared parent, and the rootfs bind
/// under a shared parent would show in the host's mount namespace.
fn rootfs_parent_not_shared(rootfs: &Path, root_prop: libc::c_ulong) -> Result<(), MountError> {
    let flag = if root_prop & libc::MS_SLAVE != 0 {
        libc::MS_SLAVE
    } else {
        libc::MS_PRIVATE
    };
    let mut path = rootfs;
    loop {
        let p = path.to_string_lossy();
        match sys_mount(None, &p, None, flag, None) {
            Ok(()) => return Ok(()),
            // EINVAL: not a mount point; its parent directory may be.
            Err(e) => match path.parent() {
                Some(up) if e.raw_os_error() == Some(libc::EINVAL) => path = up,
                _ => return Err(mount_err("rootfs bind: parent mount propagation", p)(e)),
            },
        }
    }
}

fn mount_one(ctx: &RootfsContext, root: BorrowedFd<'_>, m: &Mount) -> Result<(), MountError> {
    let typ = m.typ.as_deref().unwrap_or("");
    let opts = parse_options(&m.options);
    let is_bind = opts.bind || typ == "bind" || typ == "rbind";
    let dest = &m.destination;
    let dest_s = dest.display().to_string();
    let data = opts.data.join(",");
    let flags = opts.flags & !libc::MS_REMOUNT;

    if is_bind {
        let src = m.source.clone().unwrap_or_default();
        let src = if src.is_absolute() {
            src
        } else {
            ctx.bundle.join(src)
        };
        let meta = std::fs::metadata(&src).map_err(path_err("stat bind source", &src))?;
        let target = if meta.is_dir() {
            mkdir_all_in_root(root, dest, 0o755)
        } else {
            touch_in_root(root, dest)
        }
        .map_err(path_err("create mount point", dest))?;
        let tpath = fd_path(&target);
        let rec = if opts.recursive || typ == "rbind" {
            libc::MS_REC
        } else {
            0
        };
        let src_s = src.to_string_lossy();
        sys_mount(Some(&src_s), &tpath, None, libc::MS_BIND | rec, None)
            .map_err(mount_err(format!("bind {src_s}"), &dest_s))?;
        // Re-open the target: it now is the root of the new mount.
        let target =
            open_in_root(root, dest, libc::O_PATH).map_err(path_err("open mount point", dest))?;
        let tpath = fd_path(&target);
        let remount_flags = flags & !(libc::MS_BIND | libc::MS_REC);
        if remount_flags != 0 || opts.cleared != 0 {
            let keep = if ctx.in_user_ns {
                locked_flags(&tpath) & !libc::MS_RDONLY
            } else {
                0
            };
            sys_mount(
                None,
                &tpath,
                None,
                libc::MS_BIND | libc::MS_REMOUNT | remount_flags | keep,
                None,
            )
            .map_err(mount_err(format!("remount {src_s}"), &dest_s))?;
        }
        return apply_attributes(&opts, &tpath, &dest_s);
    }

    let target =
        mkdir_all_in_root(root, dest, 0o755).map_err(path_err("create mount point", dest))?;
    let tpath = fd_path(&target);
    match typ {
        "cgroup" | "cgroup2" if ctx.cgroups.is_none() && ctx.in_user_ns => {
            // Rootless without a writable cgroup: the container runs in the caller's cgroup;
            // it sees the host's cgroup tree, read-only, as runc's rootless containers do.
            bind_host_cgroups(root, &tpath, dest, flags)?;
        }
        "cgroup" | "cgroup2" => {
            let sources = ctx.cgroups.ok_or_else(|| MountError::Cgroup {
                dest: dest_s.clone(),
                message: "the container has no cgroup".into(),
            })?;
            let steps = cgroupfs::plan(sources, dest, typ, ctx.cgroupns)?;
            if ctx.cgroupns {
                // A fresh mount shows the cgroup namespace's root: the init must be in its
                // cgroup and namespace first. Binds need neither.
                ctx.cgroup_join.ensure()?;
            }
            cgroupfs::apply(root, &steps, flags)?
        }
        "sysfs" if ctx.in_user_ns && !ctx.new_net_ns => {
            // sysfs cannot be mounted in a user namespace without its own network namespace.
            sys_mount(
                Some("/sys"),
                &tpath,
                None,
                libc::MS_BIND | libc::MS_REC,
                None,
            )
            .map_err(mount_err("bind /sys", &dest_s))?;
        }
        _ => {
            let src = m
                .source
                .as_ref()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| typ.to_string());
            let res = sys_mount(Some(&src), &tpath, Some(typ), flags, Some(&data));
            match res {
                Err(e)
                    if typ == "mqueue"
                        && ctx.in_user_ns
                        && e.raw_os_error() == Some(libc::EPERM) =>
                {
                    sys_mount(Some("/dev/mqueue"), &tpath, None, libc::MS_BIND, None)
                        .map_err(mount_err("bind /dev/mqueue", &dest_s))?;
                }
                Err(source) => return Err(mount_err(format!("{typ} ({src})"), dest_s)(source)),
                Ok(()) => {}
            }
        }
    }
    if !opts.propagation.is_empty() || opts.rec_attr_set != 0 || opts.rec_attr_clr != 0 {
        // Re-open the target: it now is the root of the new mount.
        let target =
            open_in_root(root, dest, libc::O_PATH).map_err(path_err("open mount point", dest))?;
        apply_attributes(&opts, &fd_path(&target), &dest_s)?;
    }
    Ok(())
}

/// A recursive bind of the host's `/sys/fs/cgroup` on `tpath` (the mount point `dest`), with
/// the mount's `ro`, `nosuid`, `nodev`, `noexec` applied to every mount below it.
fn bind_host_cgroups(
    root: BorrowedFd<'_>,
    tpath: &str,
    dest: &Path,
    flags: libc::c_ulong,
) -> Result<(), MountError> {
    let dest_s = dest.display().to_string();
    sys_mount(
        Some("/sys/fs/cgroup"),
        tpath,
        None,
        libc::MS_BIND | libc::MS_REC,
        None,
    )
    .map_err(mount_err("bind /sys/fs/cgroup", &dest_s))?;
    let mut attrs = 0;
    for (ms, attr) in [
        (libc::MS_RDONLY, MOUNT_ATTR_RDONLY),
        (libc::MS_NOSUID, MOUNT_ATTR_NOSUID),
        (libc::MS_NODEV, MOUNT_ATTR_NODEV),
        (libc::MS_NOEXEC, MOUNT_ATTR_NOEXEC),
    ] {
        if flags & ms != 0 {
            attrs |= attr;
        }
    }
    if attrs != 0 {
        let target =
            open_in_root(root, dest, libc::O_PATH).map_err(path_err("open mount point", dest))?;
        mount_setattr_rec(&fd_path(&target), attrs, 0)
            .map_err(mount_err("cgroup bind attributes", dest_s))?;
    }
    Ok(())
}

/// Recursive `mount_setattr` attributes and propagation changes of a mount, after it is made.
fn apply_attributes(opts: &ParsedOptions, tpath: &str, dest: &str) -> Result<(), MountError> {
    if opts.rec_attr_set != 0 || opts.rec_attr_clr != 0 {
        mount_setattr_rec(tpath, opts.rec_attr_set, opts.rec_attr_clr)
            .map_err(mount_err("recursive attributes", dest))?;
    }
    for p in &opts.propagation {
        sys_mount(None, tpath, None, *p, None).map_err(mount_err("propagation", dest))?;
    }
    Ok(())
}

const DEFAULT_DEVICES: &[(&str, u32, u32)] = &[
    ("/dev/null", 1, 3),
    ("/dev/zero", 1, 5),
    ("/dev/full", 1, 7),
    ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9),
    ("/dev/tty", 5, 0),
];

struct DeviceNode<'a> {
    path: &'a Path,
    kind: libc::mode_t,
    major: u32,
    minor: u32,
    mode: u32,
    uid: u32,
    gid: u32,
}

fn make_device(
    ctx: &RootfsContext,
    root: BorrowedFd<'_>,
    dev: &DeviceNode,
) -> Result<(), MountError> {
    let DeviceNode {
        path,
        kind,
        major,
        minor,
        mode,
        uid,
        gid,
    } = *dev;
    let parent = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    if ctx.in_user_ns {
        // mknod is not allowed in a user namespace: bind the host's device node instead.
        let host = PathBuf::from(format!(
            "/dev/{}",
            path.strip_prefix("/dev").unwrap_or(path).display()
        ));
        let t = touch_in_root(root, path).map_err(path_err("create device", path))?;
        let host_s = if host.exists() {
            host
        } else {
            path.to_path_buf()
        };
        return sys_mount(
            Some(&host_s.to_string_lossy()),
            &fd_path(&t),
            None,
            libc::MS_BIND,
            None,
        )
        .map_err(mount_err(
            format!("bind device {}", host_s.display()),
            path.display(),
        ));
    }
    let pfd =
        mkdir_all_in_root(root, parent, 0o755).map_err(path_err("create device dir", parent))?;
    let pdir = open_in_root(root, parent, libc::O_DIRECTORY | libc::O_RDONLY)
        .map_err(path_err("open device dir", parent))?;
    drop(pfd);
    let _ = rustix::fs::unlinkat(&pdir, &name, AtFlags::empty());
    let dev = rustix::fs::makedev(major, minor);
    let file_type = rustix::fs::FileType::from_raw_mode(kind);
    rustix::fs::mknodat(
        &pdir,
        &name,
        file_type,
        Mode::from_raw_mode(mode & 0o7777),
        dev,
    )
    .map_err(|e| path_err("mknod", path)(e.into()))?;
    // mknod is subject to the umask: set the exact mode and owner.
    let _ = rustix::fs::chmodat(
        &pdir,
        &name,
        Mode::from_raw_mode(mode & 0o7777),
        AtFlags::empty(),
    );
    let _ = rustix::fs::chownat(
        &pdir,
        &name,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    );
    Ok(())
}

fn create_default_devices(ctx: &RootfsContext, root: BorrowedFd<'_>) -> Result<(), MountError> {
    for (p, maj, min) in DEFAULT_DEVICES {
        let node = DeviceNode {
            path: Path::new(p),
            kind: libc::S_IFCHR,
            major: *maj,
            minor: *min,
            mode: 0o666,
            uid: 0,
            gid: 0,
        };
        make_device(ctx, root, &node)?;
    }
    Ok(())
}

fn create_spec_devices(ctx: &RootfsContext, root: BorrowedFd<'_>) -> Result<(), MountError> {
    for d in &ctx.spec.linux().devices {
        let kind = match d.typ.as_str() {
            "c" | "u" => libc::S_IFCHR,
            "b" => libc::S_IFBLK,
            "p" => libc::S_IFIFO,
            _ => continue,
        };
        let node = DeviceNode {
            path: &d.path,
            kind,
            major: d.major as u32,
            minor: d.minor as u32,
            mode: d.file_mode.unwrap_or(0o666),
            uid: d.uid.unwrap_or(0),
            gid: d.gid.unwrap_or(0),
        };
        make_device(ctx, root, &node)?;
    }
    Ok(())
}

fn dev_symlinks(root: BorrowedFd<'_>, rootfs: &Path) -> Result<(), MountError> {
    let dev = open_in_root(root, Path::new("/dev"), libc::O_DIRECTORY | libc::O_RDONLY)
        .map_err(path_err("open /dev", rootfs.join("dev")))?;
    let mut links = vec![
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
    ];
    if Path::new("/proc/kcore").exists() {
        links.push(("/proc/kcore", "core"));
    }
    // /dev/ptmx points at the container's own devpts instance.
    links.push(("pts/ptmx", "ptmx"));
    for (target, name) in links {
        if name == "ptmx" {
            let _ = rustix::fs::unlinkat(&dev, name, AtFlags::empty());
        }
        match rustix::fs::symlinkat(target, &dev, name) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(path_err("symlink", format!("/dev/{name}"))(e.into())),
        }
    }
    Ok(())
}

/// `pivot_root` into the prepared rootfs and detach the old root.
pub fn pivot_root(rootfs: &Path) -> Result<(), MountError> {
    let perr = |op: &'static str| path_err(op, rootfs);
    let old = std::fs::File::open("/").map_err(perr("open /"))?;
    let new = std::fs::File::open(rootfs).map_err(perr("open rootfs"))?;
    let errno = |op: &'static str| move |e: nix::Error| perr(op)(e.into());
    nix::unistd::fchdir(&new).map_err(errno("chdir"))?;
    // pivot_root(".", ".") stacks the old root under the new one.
    nix::unistd::pivot_root(".", ".").map_err(errno("pivot_root"))?;
    // The old root is now mounted on top of "."; make it private so unmounting does not
    // propagate to the host, then detach it.
    nix::unistd::fchdir(&old).map_err(errno("chdir to the old root"))?;
    sys_mount(None, ".", None, libc::MS_SLAVE | libc::MS_REC, None)
        .map_err(perr("make old root slave"))?;
    nix::mount::umount2(".", nix::mount::MntFlags::MNT_DETACH)
        .map_err(errno("unmount old root"))?;
    std::env::set_current_dir("/").map_err(perr("chdir"))?;
    Ok(())
}

/// Part two, after `pivot_root`: masked and read-only paths, a read-only root, propagation.
pub fn finish_rootfs(spec: &Spec, in_user_ns: bool) -> Result<(), MountError> {
    let linux = spec.linux();
    for p in &linux.readonly_paths {
        readonly_path(p, in_user_ns)?;
    }
    for p in &linux.masked_paths {
        mask_path(p)?;
    }
    if spec.root.as_ref().is_some_and(|r| r.readonly) {
        let keep = if in_user_ns { locked_flags("/") } else { 0 };
        sys_mount(
            None,
            "/",
            None,
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | keep,
            None,
        )
        .map_err(mount_err("read-only root", "/"))?;
    }
    if let Some(p) = linux
        .rootfs_propagation
        .as_deref()
        .and_then(propagation_flag)
    {
        if p & (libc::MS_SHARED | libc::MS_UNBINDABLE) != 0 {
            sys_mount(None, "/", None, p, None).map_err(mount_err("propagation", "/"))?;
        }
    }
    Ok(())
}

fn readonly_path(p: &str, in_user_ns: bool) -> Result<(), MountError> {
    match sys_mount(Some(p), p, None, libc::MS_BIND | libc::MS_REC, None) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
        Err(source) => return Err(mount_err("read-only path", p)(source)),
        Ok(()) => {}
    }
    let keep = if in_user_ns { locked_flags(p) } else { 0 };
    sys_mount(
        None,
        p,
        None,
        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_REC | keep,
        None,
    )
    .map_err(mount_err("read-only remount", p))
}

fn mask_path(p: &str) -> Result<(), MountError> {
    let meta = match std::fs::metadata(p) {
        Ok(m) => m,
        Err(_) => return Ok(()),
    };
    let res = if meta.is_dir() {
        sys_mount(
            Some("tmpfs"),
            p,
            Some("tmpfs"),
            libc::MS_RDONLY,
            Some("size=0,mode=000"),
        )
    } else {
        sys_mount(Some("/dev/null"), p, None, libc::MS_BIND, None)
    };
    match res {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(source) => Err(mount_err("masked path", p)(source)),
        Ok(()) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse() {
        let o: Vec<String> = [
            "rbind", "ro", "nosuid", "rprivate", "mode=755", "size=1m", "rro",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let p = parse_options(&o);
        assert!(p.bind && p.recursive);
        assert_eq!(p.flags, libc::MS_RDONLY | libc::MS_NOSUID);
        assert_eq!(p.propagation, vec![libc::MS_PRIVATE | libc::MS_REC]);
        assert_eq!(p.data, vec!["mode=755", "size=1m"]);
        assert_eq!(p.rec_attr_set, MOUNT_ATTR_RDONLY);
        let p = parse_options(&["ro".into(), "rw".into()]);
        assert_eq!(p.flags, 0);
        assert_eq!(p.cleared, libc::MS_RDONLY);
    }
}
