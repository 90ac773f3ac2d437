//! How networking and mounts take part in a container's life: one interface the engine calls
//! at create, prepare (start, before the runtime), start (after the runtime created the
//! container), exit and remove.

use std::collections::BTreeMap;
use std::path::PathBuf;

use berth_api::go::Set;
use berth_api::network::NetworkingConfig;
use berth_runtime::spec::Mount;

use super::Container;
use crate::error::Result;

/// What a create request asks of the participants beyond the container's record.
#[derive(Debug, Default, Clone, Copy)]
pub struct CreateInput<'a> {
    /// `NetworkingConfig` of the request.
    pub networking: Option<&'a NetworkingConfig>,
    /// `Config.Volumes` of the request (anonymous volumes).
    pub volumes: Option<&'a Set>,
    /// The image's `VOLUME`s.
    pub image_volumes: Option<&'a BTreeMap<String, serde_json::Value>>,
    /// A volatile create ([`super::create::CreateOptions::volatile`]): what only describes
    /// the container may be written without a sync (a power loss that takes it takes the
    /// container with it); what names things outside it (volumes) stays durable.
    pub volatile: bool,
}

/// What the participants add to a container's bundle at start.
#[derive(Debug, Default)]
pub struct Bundle {
    /// The container's mounted root.
    pub rootfs: PathBuf,
    /// Its hostname.
    pub hostname: String,
    /// Files the engine writes to the container's data directory and binds into it
    /// (`/etc/hosts`, `/etc/resolv.conf`): (destination, content).
    pub files: Vec<(&'static str, String)>,
    /// OCI mounts after Docker's defaults and the files above (volumes, binds, tmpfs).
    pub mounts: Vec<Mount>,
    /// A network namespace to join (`container:<x>`).
    pub netns: Option<PathBuf>,
    /// The root's propagation the binds need (`linux.rootfsPropagation`), none for the default.
    pub rootfs_propagation: Option<&'static str>,
}

/// Other containers, as a participant sees them.
pub trait Peers {
    /// `(id, init pid)` of a running container.
    fn running(&self, name_or_id: &str) -> Option<(String, i64)>;
    /// The id of a container in any state.
    fn id_of(&self, name_or_id: &str) -> Result<String>;
}

/// A part of the daemon that takes part in every container's life. The engine calls each
/// participant in order, and on a failure undoes what the earlier ones did (in reverse).
pub trait Participant: Send + Sync {
    /// Create: check the request's settings and reserve what the container keeps until it is
    /// removed (volumes and their references, addresses).
    fn create(&self, c: &Container, input: CreateInput<'_>, peers: &dyn Peers) -> Result<()>;

    /// Start, before the runtime (blocking; the root is mounted): add to the bundle.
    fn prepare(&self, c: &Container, bundle: &mut Bundle, peers: &dyn Peers) -> Result<()>;

    /// Start, after the runtime created the container (its init waits): set up what needs
    /// the container's namespaces (interfaces, published ports, DNS).
    fn start(&self, c: &Container, pid: i64) -> Result<()>;

    /// The container stopped (or failed to start): release what it held while running.
    fn exit(&self, id: &str);

    /// The container is removed: release what it kept; `volumes` also removes its anonymous
    /// volumes (`rm -v`, `--rm`).
    fn remove(&self, id: &str, volumes: bool);
}

impl Participant for crate::network::Manager {
    fn create(&self, c: &Container, input: CreateInput<'_>, _: &dyn Peers) -> Result<()> {
        self.on_create(c, input.networking)
    }

    fn prepare(&self, c: &Container, b: &mut Bundle, peers: &dyn Peers) -> Result<()> {
        let plan = crate::network::Manager::prepare(self, c, &b.hostname, peers)?;
        b.files.push(("/etc/hosts", plan.hosts));
        b.files.push(("/etc/resolv.conf", plan.resolv));
        b.netns = plan.netns_path;
        Ok(())
    }

    fn start(&self, c: &Container, pid: i64) -> Result<()> {
        self.attach(c, pid)
            .map_err(|e| e.prefixed(crate::network::endpoints::SETUP_NETWORKING))
    }

    fn exit(&self, id: &str) {
        self.on_exit(id)
    }

    fn remove(&self, id: &str, _volumes: bool) {
        self.on_remove(id)
    }
}
