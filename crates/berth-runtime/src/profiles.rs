//! Docker-equivalent defaults for engines built on this runtime: the default capability set and
//! the default seccomp profile (an allow-list, default `EPERM`, with argument rules for
//! `personality`, `clone`, `clone3` and `socket`, and syscall groups unlocked by capabilities),
//! written from the profile's documented behaviour.

use crate::spec::{Seccomp, SeccompArg, Syscall};

/// What differs between the containers an engine runs with Docker's defaults (see
/// [`default_spec`]).
pub struct DefaultSpec<'a> {
    pub args: &'a [String],
    pub env: &'a [String],
    /// `/` when empty.
    pub cwd: &'a str,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: &'a [u32],
    pub tty: bool,
    pub hostname: &'a str,
    /// No network namespace of its own.
    pub host_network: bool,
    pub cgroups_path: String,
    /// The cgroup file system at `/sys/fs/cgroup` (read-only), as `docker run` has it.
    pub cgroup_mount: bool,
    /// Mounts after Docker's defaults, in mount order.
    pub mounts: Vec<serde_json::Value>,
}

/// A `config.json` (root `rootfs` next to it) with Docker's defaults: its mounts, the
/// pid/ipc/uts/mount (and network) namespaces, the default capabilities and seccomp profile,
/// masked and read-only `/proc` paths, and no device access beyond the defaults.
pub fn default_spec(i: &DefaultSpec<'_>) -> serde_json::Value {
    use serde_json::json;
    let caps = DEFAULT_CAPABILITIES;
    let cap_names: Vec<String> = caps.iter().map(|c| c.to_string()).collect();
    let seccomp = serde_json::to_value(default_seccomp(&cap_names)).unwrap_or_default();
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ];
    if !i.host_network {
        namespaces.push(json!({"type": "network"}));
    }
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
    ];
    if i.cgroup_mount {
        mounts.push(json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["ro", "nosuid", "noexec", "nodev"]}));
    }
    mounts.push(json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}));
    mounts.push(json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}));
    mounts.extend(i.mounts.iter().cloned());
    let mut user = json!({"uid": i.uid, "gid": i.gid});
    if !i.additional_gids.is_empty() {
        user["additionalGids"] = json!(i.additional_gids);
    }
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": i.tty,
            "user": user,
            "args": i.args,
            "env": i.env,
            "cwd": if i.cwd.is_empty() { "/" } else { i.cwd },
            "capabilities": {
                "bounding": caps,
                "effective": caps,
                "permitted": caps,
            },
            "noNewPrivileges": false,
            "oomScoreAdj": 0,
        },
        "root": {"path": "rootfs", "readonly": false},
        "hostname": i.hostname,
        "mounts": mounts,
        "linux": {
            "cgroupsPath": i.cgroups_path,
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": namespaces,
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": READONLY_PATHS,
            "seccomp": seccomp,
        }
    })
}

/// Docker's default capabilities.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Paths Docker masks and makes read-only in `/proc` and `/sys`.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Allowed for every container.
const ALLOWED: &str =
    "accept accept4 access adjtimex alarm bind brk cachestat capget capset chdir \
chmod chown chown32 clock_adjtime clock_adjtime64 clock_getres clock_getres_time64 clock_gettime \
clock_gettime64 clock_nanosleep clock_nanosleep_time64 close close_range connect copy_file_range \
creat dup dup2 dup3 epoll_create epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2 \
epoll_wait epoll_wait_old eventfd eventfd2 execve execveat exit exit_group faccessat faccessat2 \
fadvise64 fadvise64_64 fallocate fanotify_mark fchdir fchmod fchmodat fchmodat2 fchown fchown32 \
fchownat fcntl fcntl64 fdatasync fgetxattr flistxattr flock fork fremovexattr fsetxattr fstat \
fstat64 fstatat64 fstatfs fstatfs64 fsync ftruncate ftruncate64 futex futex_requeue futex_time64 \
futex_wait futex_waitv futex_wake futimesat getcpu getcwd getdents getdents64 getegid getegid32 \
geteuid geteuid32 getgid getgid32 getgroups getgroups32 getitimer getpeername getpgid getpgrp \
getpid getppid getpriority getrandom getresgid getresgid32 getresuid getresuid32 getrlimit \
get_robust_list getrusage getsid getsockname getsockopt get_thread_area gettid gettimeofday \
getuid getuid32 getxattr inotify_add_watch inotify_init inotify_init1 inotify_rm_watch io_cancel \
ioctl io_destroy io_getevents io_pgetevents io_pgetevents_time64 ioprio_get ioprio_set io_setup \
io_submit io_uring_enter io_uring_register io_uring_setup ipc kill landlock_add_rule \
landlock_create_ruleset landlock_restrict_self lchown lchown32 lgetxattr link linkat listen \
listxattr llistxattr _llseek lremovexattr lseek lsetxattr lstat lstat64 madvise map_shadow_stack \
membarrier memfd_create memfd_secret mincore mkdir mkdirat mknod mknodat mlock mlock2 mlockall \
mmap mmap2 mprotect mq_getsetattr mq_notify mq_open mq_timedreceive mq_timedreceive_time64 \
mq_timedsend mq_timedsend_time64 mq_unlink mremap msgctl msgget msgrcv msgsnd msync munlock \
munlockall munmap name_to_handle_at nanosleep newfstatat _newselect open openat openat2 pause \
pidfd_open pidfd_send_signal pipe pipe2 pkey_alloc pkey_free pkey_mprotect poll ppoll \
ppoll_time64 prctl pread64 preadv preadv2 prlimit64 process_mrelease pselect6 pselect6_time64 \
ptrace pwrite64 pwritev pwritev2 read readahead readlink readlinkat readv recv recvfrom recvmmsg \
recvmmsg_time64 recvmsg remap_file_pages removexattr rename renameat renameat2 restart_syscall \
rmdir rseq rt_sigaction rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend \
rt_sigtimedwait rt_sigtimedwait_time64 rt_tgsigqueueinfo sched_getaffinity sched_getattr \
sched_getparam sched_get_priority_max sched_get_priority_min sched_getscheduler \
sched_rr_get_interval sched_rr_get_interval_time64 sched_setaffinity sched_setattr \
sched_setparam sched_setscheduler sched_yield seccomp select semctl semget semop semtimedop \
semtimedop_time64 send sendfile sendfile64 sendmmsg sendmsg sendto setfsgid setfsgid32 setfsuid \
setfsuid32 setgid setgid32 setgroups setgroups32 setitimer setpgid setpriority setregid \
setregid32 setresgid setresgid32 setresuid setresuid32 setreuid setreuid32 setrlimit \
set_robust_list setsid setsockopt set_thread_area set_tid_address setuid setuid32 setxattr shmat \
shmctl shmdt shmget shutdown sigaltstack signalfd signalfd4 sigprocmask sigreturn socketcall \
socketpair splice stat stat64 statfs statfs64 statx symlink symlinkat sync sync_file_range \
syncfs sysinfo tee tgkill time timer_create timer_delete timer_getoverrun timer_gettime \
timer_gettime64 timer_settime timer_settime64 timerfd_create timerfd_gettime timerfd_gettime64 \
timerfd_settime timerfd_settime64 times tkill truncate truncate64 ugetrlimit umask uname unlink \
unlinkat utime utimensat utimensat_time64 utimes vfork vmsplice wait4 waitid waitpid write writev";

/// Allowed only on x86 (the arch-specific calls Docker allows there).
const ALLOWED_X86: &str = "arch_prctl modify_ldt";

/// Calls unlocked by a capability.
const BY_CAPABILITY: &[(&str, &str)] = &[
    (
        "CAP_SYS_ADMIN",
        "bpf clone fanotify_init fsconfig fsmount fsopen fspick lookup_dcookie mount \
         mount_setattr move_mount open_tree perf_event_open quotactl quotactl_fd setdomainname \
         sethostname setns syslog umount umount2 unshare",
    ),
    ("CAP_SYS_BOOT", "reboot"),
    ("CAP_SYS_CHROOT", "chroot"),
    ("CAP_SYS_MODULE", "delete_module init_module finit_module"),
    ("CAP_SYS_PACCT", "acct"),
    (
        "CAP_SYS_PTRACE",
        "kcmp pidfd_getfd process_madvise process_vm_readv process_vm_writev",
    ),
    ("CAP_SYS_RAWIO", "iopl ioperm"),
    (
        "CAP_SYS_TIME",
        "settimeofday stime clock_settime clock_settime64",
    ),
    ("CAP_SYS_TTY_CONFIG", "vhangup"),
    (
        "CAP_SYS_NICE",
        "get_mempolicy mbind set_mempolicy set_mempolicy_home_node",
    ),
    ("CAP_SYSLOG", "syslog"),
    ("CAP_BPF", "bpf"),
    ("CAP_PERFMON", "perf_event_open"),
];

/// The namespace flags `clone` may not use without CAP_SYS_ADMIN.
const CLONE_NS_FLAGS: u64 = 0x7E02_0000;

fn names(list: &str) -> Vec<String> {
    list.split_whitespace().map(str::to_string).collect()
}

fn allow(list: &str) -> Syscall {
    Syscall {
        names: names(list),
        action: "SCMP_ACT_ALLOW".into(),
        errno_ret: None,
        args: vec![],
    }
}

/// Allows the system call `name` when its argument matches `arg`.
fn allow_when(name: &str, arg: SeccompArg) -> Syscall {
    Syscall {
        args: vec![arg],
        ..allow(name)
    }
}

fn arg(index: u32, value: u64, value_two: u64, op: &str) -> SeccompArg {
    SeccompArg {
        index,
        value,
        value_two,
        op: op.into(),
    }
}

/// The default profile for a container holding `caps` (CAP_ names).
pub fn default_seccomp(caps: &[String]) -> Seccomp {
    let has = |c: &str| caps.iter().any(|x| x == c);
    let mut rules = vec![allow(ALLOWED)];
    let arch_names: Vec<String>;
    if cfg!(target_arch = "x86_64") || cfg!(target_arch = "x86") {
        rules.push(allow(ALLOWED_X86));
        arch_names = names("SCMP_ARCH_X86_64 SCMP_ARCH_X86 SCMP_ARCH_X32");
    } else if cfg!(target_arch = "aarch64") {
        arch_names = names("SCMP_ARCH_AARCH64 SCMP_ARCH_ARM");
    } else {
        arch_names = Vec::new();
    }
    // personality: only the harmless personas.
    for v in [0x0u64, 0x0008, 0x20000, 0x20008, 0xffff_ffff] {
        rules.push(allow_when("personality", arg(0, v, 0, "SCMP_CMP_EQ")));
    }
    // socket: everything but AF_VSOCK (40).
    rules.push(allow_when("socket", arg(0, 40, 0, "SCMP_CMP_NE")));
    for (cap, list) in BY_CAPABILITY {
        if has(cap) {
            rules.push(allow(list));
        }
    }
    if !has("CAP_SYS_ADMIN") {
        // clone without namespace flags (x86: flags are the first argument).
        let no_namespaces = arg(0, CLONE_NS_FLAGS, 0, "SCMP_CMP_MASKED_EQ");
        rules.push(allow_when("clone", no_namespaces));
        // clone3 cannot be inspected (its flags are behind a pointer): ENOSYS makes libcs fall
        // back to clone.
        rules.push(Syscall {
            names: vec!["clone3".into()],
            action: "SCMP_ACT_ERRNO".into(),
            errno_ret: Some(libc::ENOSYS as u32),
            args: vec![],
        });
    } else {
        rules.push(allow("clone3"));
    }
    Seccomp {
        default_action: "SCMP_ACT_ERRNO".into(),
        default_errno_ret: Some(libc::EPERM as u32),
        architectures: arch_names,
        flags: vec![],
        listener_path: None,
        listener_metadata: None,
        syscalls: rules,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_compiles_for_default_and_privileged_caps() {
        let caps: Vec<String> = DEFAULT_CAPABILITIES.iter().map(|s| s.to_string()).collect();
        let p = default_seccomp(&caps);
        crate::seccomp::validate(&p).unwrap();
        let f = crate::seccomp::compile(&p).unwrap();
        assert!(f.bpf.len() > 8 * 100, "suspiciously small filter");
        assert!(!p
            .syscalls
            .iter()
            .any(|s| s.names.iter().any(|n| n == "mount")));
        let mut all = caps.clone();
        all.push("CAP_SYS_ADMIN".into());
        let p = default_seccomp(&all);
        assert!(p
            .syscalls
            .iter()
            .any(|s| s.names.iter().any(|n| n == "mount")));
        crate::seccomp::compile(&p).unwrap();
    }
}
