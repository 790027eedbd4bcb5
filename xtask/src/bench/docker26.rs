//! `cargo xtask bench docker26`: `airlock-unpack load` of a plain bundle of about 1 GiB of
//! images into Docker 26 with the containerd image store vs that engine's own
//! `docker load -i` of the same images as one archive file (`docker save` from the same
//! engine, so both send the same blobs), taken in turns, each into an engine that has none
//! of the images (and none of their content: removing the images lets containerd collect
//! the blobs and snapshots, checked before every run). Issue 10's target: ≤ 1.1×.

use std::path::Path;
use std::process::Command;

use airlock_testkit::docker26::Docker26;
use airlock_testkit::TestRegistry;
use anyhow::bail;

use super::{in_turns, mib};
use crate::util::{capture, sh};

pub fn run(bins: &Path) -> anyhow::Result<()> {
    let pack = bins.join("airlock-pack");
    let unpack = bins.join("airlock-unpack");
    let source = TestRegistry::start();
    let work = tempfile::tempdir_in(crate::util::scratch()?)?;
    let w = work.path();
    eprintln!("bench docker26: generating 1 GiB of fixture images, starting Docker 26");
    let (tags, bundle) = super::plain_bundle(&pack, w, &source)?;
    let size = std::fs::metadata(&bundle)?.len();
    let refs: Vec<String> = tags
        .iter()
        .map(|t| format!("{}/{t}", source.addr))
        .collect();

    let engine = Docker26::start();
    let docker = || engine.command();
    let mut ours_cmd = Command::new(&unpack);
    ours_cmd
        .arg("load")
        .arg(&bundle)
        .arg("--trust")
        .arg(w.join("keys/airlock.pub"))
        .arg("-q")
        .env("DOCKER_HOST", engine.host())
        // Its own anti-rollback record: the same bundle is loaded again and again.
        .env("AIRLOCK_STATE_DIR", w.join("state"))
        .env_remove("AIRLOCK_POLICY");
    // Ours once, to have the images to save: the peer's archive holds exactly the blobs
    // the engine stored from our load.
    sh(&mut ours_cmd)?;
    let save = w.join("docker26-save.tar");
    sh(docker().arg("save").arg("-o").arg(&save).args(&refs))?;
    let empty = content_count(&engine)?;
    let reset = || {
        for r in &refs {
            let _ = docker().args(["rmi", "-f", r]).output();
        }
        let _ = docker().args(["image", "prune", "-af"]).output();
    };
    reset();
    let left = content_count(&engine)?;
    if left > 0 {
        bail!(
            "Docker 26 kept {left} content blobs after its images were removed (it had {empty} with them): the runs would not start from an empty engine"
        );
    }
    // The archive is read from the page cache by both, like the bundle.
    capture(
        Command::new("cat")
            .arg(&save)
            .stdout(std::process::Stdio::null()),
    )?;
    let runs = 3;
    let (peer, ours) = in_turns(
        runs,
        (&reset, docker().arg("load").arg("-q").arg("-i").arg(&save)),
        (&reset, &mut ours_cmd),
    )?;
    reset();
    let save_size = std::fs::metadata(&save)?.len();
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    println!(
        "\nbench docker26: {} images into Docker 26 (containerd store, native snapshotter), bundle {:.2} GiB, archive {:.2} GiB, best of {runs} in turns",
        refs.len(),
        gib(size),
        gib(save_size)
    );
    println!(
        "{:<44} {:>8} {:>10} {:>9} {:>10}",
        "measurement", "wall", "MiB/s", "cpu", "peak RSS"
    );
    for (name, m) in [
        ("docker load -i (docker save archive)", &peer),
        ("airlock-unpack load (plain bundle)", &ours),
    ] {
        println!(
            "{:<44} {:>7.2}s {:>10.0} {:>8.2}s {:>10}",
            name,
            m.secs,
            size as f64 / (1 << 20) as f64 / m.secs,
            m.cpu,
            mib(m.rss_kib)
        );
    }
    let ratio = ours.secs / peer.secs;
    println!(
        "load into Docker 26 takes {ratio:.2}x the time of its docker load -i (target <= 1.1x: {})",
        if ratio <= 1.1 { "met" } else { "MISSED" }
    );
    drop(engine);
    if std::env::var_os("AIRLOCK_BENCH_KEEP").is_some() {
        eprintln!("bench: kept {} (AIRLOCK_BENCH_KEEP)", work.keep().display());
    } else {
        let _ = std::fs::remove_file(&save);
    }
    Ok(())
}

/// How many blobs the engine's containerd content store holds (through its managed
/// containerd's socket, with the host's `ctr`).
fn content_count(engine: &Docker26) -> anyhow::Result<usize> {
    let out = capture(
        Command::new("ctr")
            .arg("--address")
            .arg(engine.containerd_socket())
            .args(["-n", "moby", "content", "ls", "-q"]),
    )?;
    Ok(out.lines().filter(|l| !l.trim().is_empty()).count())
}
