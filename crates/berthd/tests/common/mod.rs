//! Shared harness of berthd's end-to-end tests: berth-testkit's [`Daemon`] (the binaries built
//! once, a busybox image seeded, a daemon on temporary roots with a unique cgroup parent and
//! bridge, everything cleaned up and leak-checked on drop) and the kit's other pieces.
#![allow(dead_code, unused_imports)]

pub use berth_testkit::daemon::{bin_dir, busybox_tar, finish, Daemon};
pub use berth_testkit::registry::DOCKER_REGISTRY;
pub use berth_testkit::{
    free_port, require, require_programs, require_root, run_output, wait_for, wait_until,
    CommandRun, DockerRegistry, Run,
};
