//! `airlock-unpack inventory`: the blobs this host has, for a delta bundle.

use crate::cli::InventoryArgs;

pub(super) fn run(args: InventoryArgs) -> anyhow::Result<()> {
    let InventoryArgs {
        output,
        ollama_models,
        ollama_volume,
        no_engine,
    } = args;
    let mut sources = crate::inventory::Sources {
        engine: !no_engine,
        models_dirs: ollama_models,
        volumes: ollama_volume,
    };
    if sources.models_dirs.is_empty() && sources.volumes.is_empty() {
        let dir = airlock_bundle::ollama::default_models_dir();
        if dir.is_dir() {
            sources.models_dirs.push(dir);
        }
        if !no_engine {
            sources.volumes.push("ollama-data".into());
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let inv = rt.block_on(crate::inventory::take(&sources))?;
    let bytes = inv.to_bytes();
    match &output {
        Some(p) => crate::report::write_output("inventory", p, &bytes)?,
        None => std::io::Write::write_all(&mut std::io::stdout(), &bytes)?,
    }
    eprintln!(
        "inventory: {} images ({} layers), {} Ollama stores ({} blobs){}",
        inv.images.len(),
        inv.chain_ids().len(),
        inv.ollama.len(),
        inv.model_blobs().len(),
        output
            .map(|p| format!(" -> {}", p.display()))
            .unwrap_or_default()
    );
    Ok(())
}
