//! What a gap host already has, as `airlock-unpack inventory` writes it and `airlock-pack
//! build --have` reads it: the Docker engine's images with the diff IDs of their layers
//! (from which every layer's chain ID follows: the engine's key for a layer and all below
//! it), and the blobs of Ollama stores in host directories and volumes.
//!
//! An inventory is a hint for leaving blobs out, not a proof: the delta bundle records what
//! it left out, and `load` checks that the host really has it before loading anything.

use std::collections::{BTreeSet, HashSet};

use serde::{Deserialize, Serialize};

use crate::header::Target;
use crate::{BundleError, Digest};

pub const INVENTORY_FORMAT: &str = "airlock-inventory";
pub const INVENTORY_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    pub format: String,
    pub version: u32,
    pub tool: String,
    pub created: String,
    /// The host's name, so that a delta built against the wrong inventory is recognisable.
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub images: Vec<EngineImage>,
    #[serde(default)]
    pub ollama: Vec<OllamaStore>,
}

/// One image in the Docker engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineImage {
    /// The engine's image ID (the config digest on the classic store).
    pub id: String,
    #[serde(default)]
    pub tags: Vec<String>,
    /// `RootFS.Layers`: the uncompressed digests of the layers, bottom first.
    pub diff_ids: Vec<Digest>,
}

/// One Ollama store and the blobs in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OllamaStore {
    pub target: Target,
    pub blobs: Vec<StoredBlob>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StoredBlob {
    pub digest: Digest,
    pub size: u64,
}

/// The chain IDs of a stack of layers: the first is its diff ID, each next one the sha256 of
/// `"<previous chain ID> <diff ID>"` (the OCI image spec's definition).
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => *d,
            Some(prev) => Digest::of(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

impl Inventory {
    pub fn new(tool: String, created: String, host: String) -> Inventory {
        Inventory {
            format: INVENTORY_FORMAT.into(),
            version: INVENTORY_VERSION,
            tool,
            created,
            host,
            images: Vec::new(),
            ollama: Vec::new(),
        }
    }

    pub fn parse(bytes: &[u8], what: &str) -> Result<Inventory, BundleError> {
        let inv: Inventory = serde_json::from_slice(bytes)
            .map_err(|e| BundleError::Usage(format!("{what}: not an airlock inventory: {e}")))?;
        if inv.format != INVENTORY_FORMAT || inv.version == 0 || inv.version > INVENTORY_VERSION {
            return Err(BundleError::Usage(format!(
                "{what}: {} version {} is not an inventory this version reads ({INVENTORY_FORMAT} {INVENTORY_VERSION})",
                inv.format, inv.version
            )));
        }
        Ok(inv)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("inventory serialises");
        v.push(b'\n');
        v
    }

    /// Every chain ID the engine has (one per layer of every image).
    pub fn chain_ids(&self) -> HashSet<Digest> {
        self.images
            .iter()
            .flat_map(|i| chain_ids(&i.diff_ids))
            .collect()
    }

    /// Every blob of every Ollama store.
    pub fn model_blobs(&self) -> BTreeSet<StoredBlob> {
        self.ollama
            .iter()
            .flat_map(|s| s.blobs.iter().copied())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_image_spec() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let c = chain_ids(&[a, b]);
        assert_eq!(c[0], a);
        assert_eq!(
            c[1],
            Digest::of(format!("sha256:{} sha256:{}", a.hex(), b.hex()).as_bytes())
        );
        // The same layer on another base is another chain.
        assert_ne!(chain_ids(&[b, b])[1], c[1]);
        assert!(chain_ids(&[]).is_empty());
    }

    #[test]
    fn inventories_round_trip_and_others_are_refused() {
        let mut inv = Inventory::new("t".into(), "now".into(), "gap".into());
        inv.images.push(EngineImage {
            id: Digest::of(b"cfg").to_string(),
            tags: vec!["x:1".into()],
            diff_ids: vec![Digest::of(b"a"), Digest::of(b"b")],
        });
        inv.ollama.push(OllamaStore {
            target: Target::Volume("ollama-data".into()),
            blobs: vec![StoredBlob {
                digest: Digest::of(b"m"),
                size: 1,
            }],
        });
        let back = Inventory::parse(&inv.to_bytes(), "inv").unwrap();
        assert_eq!(back, inv);
        assert_eq!(back.chain_ids().len(), 2);
        assert_eq!(back.model_blobs().len(), 1);
        assert!(Inventory::parse(b"{}", "inv").is_err());
        let mut newer = inv.clone();
        newer.version = 2;
        assert!(Inventory::parse(&newer.to_bytes(), "inv").is_err());
    }
}
