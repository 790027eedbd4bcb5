//! A gap host's inventory (`airlock-unpack inventory`), which `airlock-pack build --have`
//! reads: one that parses writes back to bytes that parse to the same inventory.

use airlock_bundle::inventory::{Inventory, INVENTORY_FORMAT, INVENTORY_VERSION};

pub fn check(data: &[u8]) {
    let Ok(inv) = Inventory::parse(data, "fuzz-inventory.json") else {
        return;
    };
    assert_eq!(inv.format, INVENTORY_FORMAT);
    assert!(inv.version >= 1 && inv.version <= INVENTORY_VERSION);
    let bytes = inv.to_bytes();
    let back = Inventory::parse(&bytes, "round trip").expect("written inventory parses");
    assert_eq!(back, inv, "inventory round trip");
    // What `build --have` computes from it.
    let chains = inv.chain_ids();
    let layers: usize = inv.images.iter().map(|i| i.diff_ids.len()).sum();
    assert!(chains.len() <= layers);
    let blobs = inv.model_blobs();
    assert!(blobs.len() <= inv.ollama.iter().map(|s| s.blobs.len()).sum());
}
