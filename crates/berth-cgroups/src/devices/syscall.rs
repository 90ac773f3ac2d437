//! Loading and attaching the device filter with the raw `bpf(2)` syscall (no libbpf).

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use super::bpf::Insn;
use crate::error::{CgroupError, Result};

const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_ATTACH: libc::c_int = 8;
const BPF_PROG_DETACH: libc::c_int = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_int = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_int = 15;
const BPF_PROG_QUERY: libc::c_int = 16;

const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;
const BPF_F_REPLACE: u32 = 4;

/// The name Berth gives its device programs, to find (and replace) them on update.
pub(crate) const PROG_NAME: &str = "berth_devices";

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Default)]
struct GetFdByIdAttr {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
}

#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// Call `bpf(cmd, attr, size_of(attr))`.
fn sys_bpf<T>(cmd: libc::c_int, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a valid, initialised `#[repr(C)]` struct matching the kernel's `union bpf_attr`
    // prefix for `cmd`, and we pass its exact size; any pointers inside it point to buffers that the
    // caller keeps alive for the duration of the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn fd_from(r: libc::c_long) -> OwnedFd {
    // SAFETY: the kernel returned a new file descriptor that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(r as i32) }
}

/// Load a cgroup-device program.
pub(crate) fn load_program(insns: &[Insn], cgroup: &Path) -> Result<OwnedFd> {
    let code: Vec<u8> = insns.iter().flat_map(|i| i.encode()).collect();
    let license = CString::new("Apache").unwrap_or_default();
    let mut name = [0u8; 16];
    name[..PROG_NAME.len()].copy_from_slice(PROG_NAME.as_bytes());
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: insns.len() as u32,
        insns: code.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name,
        ..Default::default()
    };
    match sys_bpf(BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => Ok(fd_from(fd)),
        Err(first) => {
            // Retry with the verifier log to say why.
            let mut log = vec![0u8; 64 * 1024];
            attr.log_level = 1;
            attr.log_size = log.len() as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
            let (source, log_text) = match sys_bpf(BPF_PROG_LOAD, &mut attr) {
                Ok(fd) => return Ok(fd_from(fd)),
                Err(e) => {
                    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                    (e, String::from_utf8_lossy(&log[..end]).trim().to_string())
                }
            };
            let _ = first;
            Err(CgroupError::Bpf {
                cmd: "BPF_PROG_LOAD",
                path: cgroup.to_path_buf(),
                source,
                log: log_text,
            })
        }
    }
}

/// The ids of the device programs attached to `dir`.
fn query_programs(dir: &File, cgroup: &Path) -> Result<Vec<u32>> {
    let mut ids = vec![0u32; 64];
    let mut attr = QueryAttr {
        target_fd: dir.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: ids.len() as u32,
        ..Default::default()
    };
    sys_bpf(BPF_PROG_QUERY, &mut attr).map_err(|source| CgroupError::Bpf {
        cmd: "BPF_PROG_QUERY",
        path: cgroup.to_path_buf(),
        source,
        log: String::new(),
    })?;
    ids.truncate((attr.prog_cnt as usize).min(64));
    Ok(ids)
}

/// Open a program by id and return it if it is one of Berth's (by name).
fn open_berth_program(id: u32) -> Option<OwnedFd> {
    let mut attr = GetFdByIdAttr {
        prog_id: id,
        ..Default::default()
    };
    let fd = fd_from(sys_bpf(BPF_PROG_GET_FD_BY_ID, &mut attr).ok()?);
    // struct bpf_prog_info: name[16] is at offset 64.
    let mut info = [0u8; 88];
    let mut iattr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: info.len() as u32,
        info: info.as_mut_ptr() as u64,
    };
    sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut iattr).ok()?;
    let name = &info[64..80];
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    (&name[..end] == PROG_NAME.as_bytes()).then_some(fd)
}

fn attach(dir: &File, prog: &OwnedFd, replace: Option<&OwnedFd>) -> io::Result<()> {
    let mut attr = AttachAttr {
        target_fd: dir.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..Default::default()
    };
    if let Some(old) = replace {
        attr.attach_flags |= BPF_F_REPLACE;
        attr.replace_bpf_fd = old.as_raw_fd() as u32;
    }
    sys_bpf(BPF_PROG_ATTACH, &mut attr).map(|_| ())
}

fn detach(dir: &File, prog: &OwnedFd) -> io::Result<()> {
    let mut attr = AttachAttr {
        target_fd: dir.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        ..Default::default()
    };
    sys_bpf(BPF_PROG_DETACH, &mut attr).map(|_| ())
}

/// Load `insns` and attach them to the cgroup directory `cgroup` (with `BPF_F_ALLOW_MULTI`),
/// replacing Berth's previous program there if any. Programs of other owners are left alone.
/// Since the new program is attached before old ones are detached, there is no moment without a filter.
pub(crate) fn install_device_filter(cgroup: &Path, insns: &[Insn]) -> Result<()> {
    let dir = File::open(cgroup).map_err(|source| CgroupError::Read {
        path: cgroup.to_path_buf(),
        source,
    })?;
    let old: Vec<OwnedFd> = query_programs(&dir, cgroup)?
        .into_iter()
        .filter_map(open_berth_program)
        .collect();
    let prog = load_program(insns, cgroup)?;
    let bpf_err = |cmd, source| CgroupError::Bpf {
        cmd,
        path: cgroup.to_path_buf(),
        source,
        log: String::new(),
    };
    if old.len() == 1 {
        match attach(&dir, &prog, Some(&old[0])) {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::debug!(cgroup = %cgroup.display(), error = %e, "BPF_F_REPLACE failed, attaching then detaching");
            }
        }
    }
    attach(&dir, &prog, None).map_err(|e| bpf_err("BPF_PROG_ATTACH", e))?;
    if old.len() > 1 {
        tracing::warn!(cgroup = %cgroup.display(), count = old.len(), "several Berth device filters were attached; replacing all");
    }
    for o in &old {
        detach(&dir, o).map_err(|e| bpf_err("BPF_PROG_DETACH", e))?;
    }
    Ok(())
}

/// Number of Berth device programs attached to `cgroup` (tests and diagnostics).
pub fn berth_filter_count(cgroup: &Path) -> Result<usize> {
    let dir = File::open(cgroup).map_err(|source| CgroupError::Read {
        path: cgroup.to_path_buf(),
        source,
    })?;
    Ok(query_programs(&dir, cgroup)?
        .into_iter()
        .filter_map(open_berth_program)
        .count())
}
