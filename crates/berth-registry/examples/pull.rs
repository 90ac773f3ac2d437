//! `pull REFERENCE ROOT`: pull an image into an (empty) store under ROOT with the best
//! snapshotter (overlay, else copy) and print the digests. Used by `bench/pull` until the
//! `berth pull` command lands.

use std::path::PathBuf;

use berth_image::manifest::Platform;
use berth_image::reference::Reference;
use berth_registry::{Client, NoProgress, PlainProgress, Progress, RegistryConfig};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        anyhow::bail!("usage: pull REFERENCE ROOT");
    }
    let reference = Reference::parse(&args[1])?;
    let root = PathBuf::from(&args[2]);
    let store = berth_image::store::BlobStore::open(root.join("blobs"))?;
    let snapshotter = berth_image::snapshot::open_best(&root.join("snapshots"))?;
    let client = Client::new(RegistryConfig::default())?;
    let quiet = std::env::var_os("QUIET").is_some();
    let plain;
    let progress: &dyn Progress = if quiet {
        &NoProgress
    } else {
        plain = PlainProgress::new(Box::new(std::io::stderr()));
        &plain
    };
    let pulled = client.pull(
        &reference,
        &Platform::host(),
        &store,
        snapshotter.as_ref(),
        progress,
    )?;
    println!("{} {}", pulled.manifest_digest, pulled.config_digest);
    Ok(())
}
