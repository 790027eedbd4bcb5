//! `cargo xtask bench parts`: a 4 GiB bundle in 4 parts, `airlock-unpack verify
//! --outer-only` (the signed sums, no key) vs `sha256sum` and `openssl dgst -sha256` over the
//! same files.

use std::path::Path;
use std::process::Command;

use airlock_testkit::ollama::OllamaModel;

use super::{faster, in_turns, report, Row};
use crate::util::sh;

pub fn run(bins: &Path) -> anyhow::Result<()> {
    let pack = bins.join("airlock-pack");
    let unpack = bins.join("airlock-unpack");
    let work = tempfile::tempdir_in(crate::util::scratch()?)?;
    let w = work.path();
    // The gap side's anti-rollback record stays with this run, not in /var/lib/airlock.
    std::env::set_var("AIRLOCK_STATE_DIR", w.join("airlock-state"));
    eprintln!("bench: generating a 4 GiB model and packing it in 4 parts");
    let model = OllamaModel::generate(&w.join("model-src"), (4 << 30) - (8 << 20), 11);
    let name = airlock_bundle::ollama::ModelName::parse("library/big:latest")
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let store = w.join("store");
    model.install_local(&store, &name);
    drop(model);
    let _ = std::fs::remove_dir_all(w.join("model-src"));
    let spec = w.join("parts.toml");
    std::fs::write(
        &spec,
        "name = \"parts\"\n[[model]]\nname = \"library/big:latest\"\npath = \"/unused\"\nsource = \"local\"\n",
    )?;
    sh(Command::new(&pack)
        .args(["keygen", "-o"])
        .arg(w.join("keys")))?;
    let common = |c: &mut Command| {
        c.arg("--cache")
            .arg(w.join("cache"))
            .arg("--ollama-models")
            .arg(&store)
            .arg("-q");
    };
    let mut lock = Command::new(&pack);
    lock.arg("lock").arg(&spec);
    common(&mut lock);
    sh(&mut lock)?;
    let bundle = w.join("big.airlock");
    let mut build = Command::new(&pack);
    build
        .arg("build")
        .arg(&spec)
        .arg("-o")
        .arg(&bundle)
        .arg("--sign-key")
        .arg(w.join("keys/airlock.key"))
        .args(["--split", "1GiB"]);
    common(&mut build);
    sh(&mut build)?;
    let _ = std::fs::remove_dir_all(&store);
    let part_files: Vec<std::path::PathBuf> = (1..)
        .map(|i| w.join(format!("big.airlock.{i:03}")))
        .take_while(|p| p.exists())
        .collect();
    let size: u64 = part_files
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    // Every tool reads from the page cache: the parts were just written (and 4 GiB fits).
    let nothing = || {};
    let mut sha256sum = Command::new("sha256sum");
    sha256sum.args(&part_files);
    let mut openssl = Command::new("openssl");
    openssl.args(["dgst", "-sha256"]).args(&part_files);
    let mut ours = Command::new(&unpack);
    ours.arg("verify")
        .arg(&part_files[0])
        .arg("--outer-only")
        .arg("--trust")
        .arg(w.join("keys/airlock.pub"))
        .arg("-q");
    let (sum, ours_vs_sum) = in_turns(3, (&nothing, &mut sha256sum), (&nothing, &mut ours))?;
    let (ssl, ours_vs_ssl) = in_turns(3, (&nothing, &mut openssl), (&nothing, &mut ours))?;
    let best_ours = faster(ours_vs_sum, ours_vs_ssl);
    let peer = sum.secs.min(ssl.secs);
    let ratio = peer / best_ours.secs;
    let rows = vec![Row {
        name: format!("verify --outer-only, {} parts", part_files.len()),
        ratio: format!(
            "{ratio:.2}x the faster of sha256sum {:.2}s / openssl {:.2}s",
            sum.secs, ssl.secs
        ),
        ok: ratio >= 1.0,
        peer,
        ours: best_ours,
    }];
    report(&rows, "a 4 GiB bundle in parts", size)
}
