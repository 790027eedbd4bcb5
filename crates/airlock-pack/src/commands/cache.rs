//! `airlock-pack cache ls` and `cache prune`: what the blob cache holds (and of it, what
//! given locks need), and trimming it to what those locks need or to a size.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use airlock_bundle::lock::Lock;
use airlock_progress::human;
use serde_json::json;

use crate::cache::lock::CacheLock;
use crate::cache::store::Stores;
use crate::cache::usage;
use crate::cache::BlobCache;
use crate::cli::{CacheArgs, CacheCommand};
use crate::PackError;

pub(crate) fn run(args: CacheArgs) -> anyhow::Result<()> {
    let root = args.cache.clone().unwrap_or_else(BlobCache::default_root);
    let cache = BlobCache::open(root.clone()).map_err(|source| PackError::CacheOpen {
        path: root.clone(),
        source,
    })?;
    let lock_err = |source| PackError::CacheOpen {
        path: root.join("lock"),
        source,
    };
    match args.command {
        CacheCommand::Ls { locks, json } => {
            let _held = CacheLock::shared(&cache).map_err(lock_err)?;
            ls(&cache, &locks, json)
        }
        CacheCommand::Prune { keep, max_size } => {
            if keep.is_empty() && max_size.is_none() {
                return Err(PackError::Usage(
                    "cache prune: say what to keep (--keep LOCK…) or how much (--max-size SIZE)"
                        .into(),
                )
                .into());
            }
            let keep_set = if keep.is_empty() {
                None
            } else {
                let mut set = BTreeSet::new();
                for l in &keep {
                    let (_, lock) = load_lock(l)?;
                    set.extend(usage::needs(&cache, &lock).into_keys());
                }
                Some(set)
            };
            let (_held, waited) = CacheLock::exclusive(&cache).map_err(lock_err)?;
            if waited {
                eprintln!("waited for running builds to finish");
            }
            let (stores, _) = Stores::load(&cache, false);
            let p = usage::prune(&cache, &stores, keep_set.as_ref(), max_size);
            println!(
                "removed {} files ({}), forgot {} stores; the cache holds {}",
                p.files,
                human(p.bytes),
                p.stores,
                human(p.kept_bytes)
            );
            Ok(())
        }
    }
}

/// A lock by its path, or by its spec's.
fn load_lock(path: &Path) -> anyhow::Result<(PathBuf, Lock)> {
    let lock_path = if path.extension().is_some_and(|x| x == "toml") {
        Lock::path_for(path)
    } else {
        path.to_path_buf()
    };
    let lock = Lock::load(&lock_path)?;
    Ok((lock_path, lock))
}

fn ls(cache: &BlobCache, locks: &[PathBuf], as_json: bool) -> anyhow::Result<()> {
    let files = usage::files(cache);
    let (blobs, partial): (Vec<_>, Vec<_>) = files
        .iter()
        .partition(|f| f.path.parent().is_some_and(|p| p.ends_with("sha256")));
    let bytes: u64 = blobs.iter().map(|f| f.size).sum();
    let partial_bytes: u64 = partial.iter().map(|f| f.size).sum();
    let (stores, _) = Stores::load(cache, false);
    let mut coverage = Vec::new();
    for l in locks {
        let (path, lock) = load_lock(l)?;
        coverage.push(usage::coverage(cache, &stores, path, &lock));
    }
    if as_json {
        let v = json!({
            "root": cache.root(),
            "bytes": bytes + partial_bytes,
            "blobs": blobs.len(),
            "blob_bytes": bytes,
            "partial_bytes": partial_bytes,
            "stores": stores.stores.iter().map(|s| json!({
                "bundle": s.bundle(),
                "blobs": s.blobs().count(),
                "bytes": s.blob_bytes(),
                "encrypted": s.encrypted(),
            })).collect::<Vec<_>>(),
            "locks": coverage,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{}: {} in {} blobs{}, {} bundles serve as stores",
        cache.root().display(),
        human(bytes + partial_bytes),
        blobs.len(),
        if partial_bytes > 0 {
            format!(" (and {} of partial downloads)", human(partial_bytes))
        } else {
            String::new()
        },
        stores.stores.len()
    );
    for s in &stores.stores {
        println!(
            "  store {}{}: {} blobs, {}",
            airlock_bundle::text::escape(&s.bundle().display().to_string()),
            if s.encrypted() { " (encrypted)" } else { "" },
            s.blobs().count(),
            human(s.blob_bytes())
        );
    }
    for c in &coverage {
        println!(
            "{}: {} blobs: {} in the cache, {} in stores, {} missing ({})",
            c.lock.display(),
            c.blobs,
            c.cached,
            c.in_stores,
            c.missing,
            human(c.missing_bytes)
        );
    }
    Ok(())
}
