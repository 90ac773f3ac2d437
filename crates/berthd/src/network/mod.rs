//! Networks: Docker's network API, container attachment, published ports, embedded DNS.
//!
//! - [`manager`]: options, the firewall, networks (create, remove, prune).
//! - [`state`]: the state file (`<data-root>/network/state.json`): networks and, per
//!   container, its endpoints (address, MAC, aliases — kept from create to removal, so an
//!   address is never handed out twice) and the host ports it publishes while it runs.
//! - [`endpoints`]: a container's part (create, prepare, start = attach, exit, remove,
//!   adopt after a daemon restart), `connect`/`disconnect`, the embedded DNS's lookups.
//! - [`ports`]: published ports; [`render`]: Docker's JSON shapes.
//!
//! Per running container the daemon holds userland proxies of its published ports and an
//! embedded DNS server inside its namespace; both are rebuilt after a daemon restart
//! ([`Manager::adopt`]). Bridges are created or reused at start, and the firewall is always
//! written whole from the state, so a crash leaves nothing that the next start does not reuse
//! or replace. The engine reaches all of it through [`crate::engine::Participant`].

pub mod endpoints;
pub mod manager;
pub mod ports;
pub mod render;
pub mod sandbox;
pub mod state;

pub use endpoints::Plan;
pub use manager::{Manager, NetOptions};
