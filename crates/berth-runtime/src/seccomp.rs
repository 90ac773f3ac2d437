//! `linux.seccomp`: compiled to classic BPF with libseccomp in the runtime's parent process and
//! loaded with the raw `seccomp(2)` call in the container's init, just before `execve`.
//!
//! Compiling in the parent keeps libseccomp's allocations out of the container's memory cgroup
//! and lets the filter be built while the child sets up its root file system.

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};

use crate::spec::{invalid, Seccomp, SpecError};

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("seccomp: {op}: {source}")]
    Libseccomp {
        op: &'static str,
        source: libseccomp::error::SeccompError,
    },
    #[error("seccomp: exporting the program: {0}")]
    Export(#[source] std::io::Error),
    #[error("seccomp: malformed BPF program of {len} bytes")]
    Malformed { len: usize },
    #[error("seccomp: loading the filter failed: {0}")]
    Load(#[source] std::io::Error),
}

/// A filter ready to load: BPF instructions plus `SECCOMP_FILTER_FLAG_*` flags.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct CompiledFilter {
    pub bpf: Vec<u8>,
    pub flags: u32,
}

const FLAG_TSYNC: u32 = 1;
const FLAG_LOG: u32 = 2;
const FLAG_SPEC_ALLOW: u32 = 4;
const FLAG_WAIT_KILLABLE_RECV: u32 = 32;

fn parse_flag(f: &str) -> Option<u32> {
    Some(match f {
        "SECCOMP_FILTER_FLAG_TSYNC" => FLAG_TSYNC,
        "SECCOMP_FILTER_FLAG_LOG" => FLAG_LOG,
        "SECCOMP_FILTER_FLAG_SPEC_ALLOW" => FLAG_SPEC_ALLOW,
        "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV" => FLAG_WAIT_KILLABLE_RECV,
        _ => return None,
    })
}

fn parse_action(a: &str, errno: Option<u32>, field: &str) -> Result<ScmpAction, SpecError> {
    let eperm = libc::EPERM;
    Ok(match a {
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => ScmpAction::KillThread,
        "SCMP_ACT_KILL_PROCESS" => ScmpAction::KillProcess,
        "SCMP_ACT_TRAP" => ScmpAction::Trap,
        "SCMP_ACT_ERRNO" => ScmpAction::Errno(errno.map(|e| e as i32).unwrap_or(eperm)),
        "SCMP_ACT_TRACE" => ScmpAction::Trace(errno.map(|e| e as u16).unwrap_or(eperm as u16)),
        "SCMP_ACT_ALLOW" => ScmpAction::Allow,
        "SCMP_ACT_LOG" => ScmpAction::Log,
        "SCMP_ACT_NOTIFY" => {
            return Err(invalid(
                field,
                "SCMP_ACT_NOTIFY (seccomp user notification) is not supported",
            ))
        }
        other => return Err(invalid(field, format!("unknown seccomp action {other:?}"))),
    })
}

fn parse_op(op: &str, value: u64, field: &str) -> Result<ScmpCompareOp, SpecError> {
    Ok(match op {
        "SCMP_CMP_NE" => ScmpCompareOp::NotEqual,
        "SCMP_CMP_LT" => ScmpCompareOp::Less,
        "SCMP_CMP_LE" => ScmpCompareOp::LessOrEqual,
        "SCMP_CMP_EQ" => ScmpCompareOp::Equal,
        "SCMP_CMP_GE" => ScmpCompareOp::GreaterEqual,
        "SCMP_CMP_GT" => ScmpCompareOp::Greater,
        "SCMP_CMP_MASKED_EQ" => ScmpCompareOp::MaskedEqual(value),
        other => {
            return Err(invalid(
                field,
                format!("unknown seccomp operator {other:?}"),
            ))
        }
    })
}

fn parse_arch(a: &str, field: &str) -> Result<ScmpArch, SpecError> {
    let arch = match a {
        "SCMP_ARCH_X86" => ScmpArch::X86,
        "SCMP_ARCH_X86_64" => ScmpArch::X8664,
        "SCMP_ARCH_X32" => ScmpArch::X32,
        "SCMP_ARCH_ARM" => ScmpArch::Arm,
        "SCMP_ARCH_AARCH64" => ScmpArch::Aarch64,
        "SCMP_ARCH_MIPS" => ScmpArch::Mips,
        "SCMP_ARCH_MIPS64" => ScmpArch::Mips64,
        "SCMP_ARCH_MIPS64N32" => ScmpArch::Mips64N32,
        "SCMP_ARCH_MIPSEL" => ScmpArch::Mipsel,
        "SCMP_ARCH_MIPSEL64" => ScmpArch::Mipsel64,
        "SCMP_ARCH_MIPSEL64N32" => ScmpArch::Mipsel64N32,
        "SCMP_ARCH_PPC" => ScmpArch::Ppc,
        "SCMP_ARCH_PPC64" => ScmpArch::Ppc64,
        "SCMP_ARCH_PPC64LE" => ScmpArch::Ppc64Le,
        "SCMP_ARCH_S390" => ScmpArch::S390,
        "SCMP_ARCH_S390X" => ScmpArch::S390X,
        "SCMP_ARCH_RISCV64" => ScmpArch::Riscv64,
        "SCMP_ARCH_LOONGARCH64" => ScmpArch::Loongarch64,
        other => {
            return Err(invalid(
                field,
                format!("unknown seccomp architecture {other:?}"),
            ))
        }
    };
    Ok(arch)
}

/// Checks every name in the seccomp section without building a filter.
pub fn validate(s: &Seccomp) -> Result<(), SpecError> {
    parse_action(
        &s.default_action,
        s.default_errno_ret,
        "linux.seccomp.defaultAction",
    )?;
    for (i, a) in s.architectures.iter().enumerate() {
        parse_arch(a, &format!("linux.seccomp.architectures[{i}]"))?;
    }
    for (i, f) in s.flags.iter().enumerate() {
        if parse_flag(f).is_none() {
            return Err(invalid(
                format!("linux.seccomp.flags[{i}]"),
                format!("unknown flag {f:?}"),
            ));
        }
    }
    for (i, sc) in s.syscalls.iter().enumerate() {
        parse_action(
            &sc.action,
            sc.errno_ret,
            &format!("linux.seccomp.syscalls[{i}].action"),
        )?;
        if sc.names.is_empty() {
            return Err(invalid(
                format!("linux.seccomp.syscalls[{i}].names"),
                "must not be empty",
            ));
        }
        for (j, a) in sc.args.iter().enumerate() {
            let f = format!("linux.seccomp.syscalls[{i}].args[{j}]");
            if a.index > 5 {
                return Err(invalid(format!("{f}.index"), "must be 0..5"));
            }
            parse_op(&a.op, a.value, &format!("{f}.op"))?;
        }
    }
    Ok(())
}

fn lib_err(op: &'static str) -> impl FnOnce(libseccomp::error::SeccompError) -> SeccompError {
    move |source| SeccompError::Libseccomp { op, source }
}

/// Builds the filter; syscall names unknown to libseccomp are skipped (as runc does), since
/// profiles list syscalls of newer kernels.
pub fn compile(s: &Seccomp) -> Result<CompiledFilter, SeccompError> {
    validate(s)?;
    let default = parse_action(&s.default_action, s.default_errno_ret, "")?;
    let mut ctx = ScmpFilterContext::new(default).map_err(lib_err("new filter"))?;
    // The kernel's NNP handling is ours, not libseccomp's.
    ctx.set_ctl_nnp(false).map_err(lib_err("set_ctl_nnp"))?;
    for a in &s.architectures {
        let arch = parse_arch(a, "")?;
        if arch == ScmpArch::native() {
            continue;
        }
        // Architectures the kernel cannot run are harmless to add.
        ctx.add_arch(arch).map_err(lib_err("add_arch"))?;
    }
    for sc in &s.syscalls {
        let action = parse_action(&sc.action, sc.errno_ret, "")?;
        if action == default {
            continue; // libseccomp refuses rules equal to the default action
        }
        for name in &sc.names {
            let call = match ScmpSyscall::from_name(name) {
                Ok(c) => c,
                Err(_) => {
                    tracing::debug!(syscall = %name, "seccomp: unknown syscall, skipped");
                    continue;
                }
            };
            let mut conds = Vec::with_capacity(sc.args.len());
            for a in &sc.args {
                let op = parse_op(&a.op, a.value, "")?;
                let datum = if matches!(op, ScmpCompareOp::MaskedEqual(_)) {
                    a.value_two
                } else {
                    a.value
                };
                conds.push(ScmpArgCompare::new(a.index, op, datum));
            }
            // libseccomp cannot AND two conditions on the same argument: like runc, such a rule
            // becomes one rule per condition.
            let same_index = conds.len() > 1 && sc.args.iter().all(|a| a.index == sc.args[0].index);
            if conds.is_empty() {
                ctx.add_rule(action, call).map_err(lib_err("add_rule"))?;
            } else if same_index {
                for c in &conds {
                    ctx.add_rule_conditional(action, call, std::slice::from_ref(c))
                        .map_err(lib_err("add_rule"))?;
                }
            } else {
                ctx.add_rule_conditional(action, call, &conds)
                    .map_err(lib_err("add_rule"))?;
            }
        }
    }
    let bpf = export(&ctx)?;
    let mut flags = 0;
    for f in &s.flags {
        flags |= parse_flag(f).unwrap_or(0);
    }
    Ok(CompiledFilter { bpf, flags })
}

/// [`compile`], through a cache of compiled programs in `dir` (the runtime's state root):
/// compiling Docker's default profile with libseccomp costs milliseconds on every container
/// start, and almost every container uses the same profile (crun caches the same way).
///
/// The key covers the profile, the runtime binary (its size and modification time, so that a
/// new runtime never uses an old compilation) and libseccomp's version. The directory is the
/// runtime's own (root only); an entry is written atomically and checked on read.
pub fn compile_cached(s: &Seccomp, dir: &std::path::Path) -> Result<CompiledFilter, SeccompError> {
    use sha2::{Digest, Sha256};
    let Some(key) = (|| {
        let mut h = Sha256::new();
        h.update(serde_json::to_vec(s).ok()?);
        let exe = std::fs::metadata("/proc/self/exe").ok()?;
        let mtime = exe
            .modified()
            .ok()?
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?;
        h.update(format!(
            "{}:{}:{}",
            exe.len(),
            mtime.as_nanos(),
            CACHE_FORMAT
        ));
        let v = libseccomp::ScmpVersion::current().ok()?;
        h.update(format!("{}.{}.{}", v.major, v.minor, v.micro));
        Some(hex::encode(h.finalize()))
    })() else {
        return compile(s);
    };
    let path = dir.join(format!("{key}.bpf"));
    if let Ok(bpf) = std::fs::read(&path) {
        if !bpf.is_empty() && bpf.len() % 8 == 0 {
            validate(s)?;
            let mut flags = 0;
            for f in &s.flags {
                flags |= parse_flag(f).unwrap_or(0);
            }
            return Ok(CompiledFilter { bpf, flags });
        }
    }
    let compiled = compile(s)?;
    // A cache that cannot be written only costs the next start a compilation.
    if std::fs::create_dir_all(dir).is_ok() {
        let tmp = dir.join(format!(".{key}.{}", std::process::id()));
        if std::fs::write(&tmp, &compiled.bpf).is_ok() && std::fs::rename(&tmp, &path).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
    Ok(compiled)
}

/// Bumped whenever [`compile`] changes what it produces for the same profile.
const CACHE_FORMAT: u32 = 1;

/// libseccomp 2.5 (Debian 12) has no in-memory export: export into a memfd and read it back.
fn export(ctx: &ScmpFilterContext) -> Result<Vec<u8>, SeccompError> {
    use std::io::{Read, Seek};
    let fd = rustix::fs::memfd_create("seccomp", rustix::fs::MemfdFlags::CLOEXEC)
        .map_err(|e| SeccompError::Export(e.into()))?;
    let mut f = std::fs::File::from(fd);
    ctx.export_bpf(&f).map_err(lib_err("export_bpf"))?;
    let mut out = Vec::new();
    f.rewind().map_err(SeccompError::Export)?;
    f.read_to_end(&mut out).map_err(SeccompError::Export)?;
    Ok(out)
}

/// Loads a compiled filter into the calling thread (`seccomp(SECCOMP_SET_MODE_FILTER)`).
pub fn load(filter: &CompiledFilter) -> Result<(), SeccompError> {
    if filter.bpf.len() % 8 != 0 || filter.bpf.is_empty() {
        return Err(SeccompError::Malformed {
            len: filter.bpf.len(),
        });
    }
    let prog = libc::sock_fprog {
        len: (filter.bpf.len() / 8) as u16,
        filter: filter.bpf.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `prog` points at `filter.bpf` (a whole number of 8-byte `sock_filter`s, checked
    // above), which outlives the call; the kernel copies the program. Neither nix nor rustix
    // wraps seccomp(2).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            1, /* SECCOMP_SET_MODE_FILTER */
            filter.flags as libc::c_ulong,
            &prog as *const libc::sock_fprog,
        )
    };
    if rc < 0 {
        return Err(SeccompError::Load(std::io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(errno: u32) -> Seccomp {
        serde_json::from_value(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "flags": ["SECCOMP_FILTER_FLAG_LOG"],
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno}]
        }))
        .unwrap()
    }

    #[test]
    fn cache_returns_what_compile_makes_and_keys_by_profile() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let a = profile(1);
        let fresh = compile(&a).unwrap();
        let first = compile_cached(&a, &cache).unwrap();
        assert_eq!(first.bpf, fresh.bpf);
        assert_eq!(first.flags, FLAG_LOG);
        let entries: Vec<_> = std::fs::read_dir(&cache).unwrap().collect();
        assert_eq!(entries.len(), 1);
        let second = compile_cached(&a, &cache).unwrap();
        assert_eq!(second.bpf, fresh.bpf);
        assert_eq!(second.flags, FLAG_LOG);
        // A different profile is a different entry with a different program.
        let b = profile(2);
        let other = compile_cached(&b, &cache).unwrap();
        assert_ne!(other.bpf, fresh.bpf);
        assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 2);
        // A damaged entry is compiled again and replaced.
        let path = entries[0].as_ref().unwrap().path();
        std::fs::write(&path, b"short").unwrap();
        let again = compile_cached(&a, &cache).unwrap();
        assert_eq!(again.bpf, fresh.bpf);
        assert_eq!(std::fs::read(&path).unwrap(), fresh.bpf);
        // An invalid profile is refused even when cached programs exist.
        let mut bad = a.clone();
        bad.default_action = "SCMP_ACT_MAYBE".into();
        assert!(compile_cached(&bad, &cache).is_err());
    }
}
