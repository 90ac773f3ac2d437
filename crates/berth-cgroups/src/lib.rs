//! Berth's cgroup manager.
//!
//! Detects the host's cgroup layout (v1, v2 or hybrid) from `/proc/self/mountinfo`, resolves a
//! container's cgroup directories from its OCI `cgroupsPath`, creates them, applies OCI
//! `linux.resources` (with runc's value conversions), moves processes in, freezes and thaws, reads
//! runc-shaped statistics, and removes the cgroup. On cgroup v2 the device allow-list is enforced
//! with an eBPF program that this crate generates and attaches itself.
//!
//! ```no_run
//! use berth_cgroups::{Cgroup, Hierarchy};
//! # fn main() -> Result<(), berth_cgroups::CgroupError> {
//! let h = Hierarchy::detect()?;
//! let cg = Cgroup::new(&h, None, "mycontainer")?; // "/berth/mycontainer"
//! cg.create()?;
//! cg.apply(&oci_spec::runtime::LinuxResources::default())?;
//! cg.add_task(std::process::id() as i32)?;
//! # Ok(()) }
//! ```

mod cgroup;
pub mod convert;
mod delegation;
pub mod devices;
mod error;
mod fsutil;
mod hierarchy;
pub mod stats;
mod v1;
mod v2;

pub use cgroup::{Cgroup, MountSources, UnifiedDir, V1Dir, V1MountSource};
pub use delegation::Delegation;
pub use error::{CgroupError, Result};
pub use hierarchy::{CgroupVersion, Hierarchy};
pub use stats::Stats;

#[doc(hidden)]
pub use fsutil::fake_writes_under;
