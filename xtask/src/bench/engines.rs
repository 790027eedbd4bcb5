//! `cargo xtask bench engines`: loading into the engines other than the system's Docker,
//! each against the engine's own loader of the same archive file, taken in turns, each run
//! into an engine that has none of the images:
//! - Podman (`podman system service` on private storage): `airlock-unpack load` vs
//!   `podman load -i` of the archive `airlock-unpack extract --archive` wrote from the same
//!   bundle (issue 10's target: ≤ 1.2×), and vs that archive sent to the same API endpoint
//!   by `curl -T` (the floor for anything that loads through the API: Podman spools the
//!   upload to a temp file before it reads it);
//! - pre-flight: `load` of a bundle whose images the engine already has (nothing is sent,
//!   so what is left is connecting, the policy, the pre-flight and the tag checks) with and
//!   without `--no-preflight`, in turns (target: the difference ≤ 50 ms).
//!
//! Docker 26 and containerd have sections of their own (`bench docker26`, `bench
//! containerd`); `bench engines` runs them after these.

use std::path::Path;
use std::process::Command;

use airlock_testkit::podman::Podman;
use airlock_testkit::TestRegistry;

use super::{in_turns, mib, Measured};
use crate::util::sh;

pub fn run(bins: &Path) -> anyhow::Result<()> {
    let pack = bins.join("airlock-pack");
    let unpack = bins.join("airlock-unpack");
    let source = TestRegistry::start();
    let work = tempfile::tempdir_in(crate::util::scratch()?)?;
    let w = work.path();
    eprintln!("bench engines: generating 1 GiB of fixture images, starting Podman");
    let (tags, bundle) = super::plain_bundle(&pack, w, &source)?;
    let size = std::fs::metadata(&bundle)?.len();
    let refs: Vec<String> = tags
        .iter()
        .map(|t| format!("{}/{t}", source.addr))
        .collect();
    let unpack_cmd = |sub: &str| {
        let mut c = Command::new(&unpack);
        c.arg(sub)
            .arg(&bundle)
            .arg("--trust")
            .arg(w.join("keys/airlock.pub"))
            .arg("-q")
            // Its own anti-rollback record: the same bundle is loaded again and again.
            .env("AIRLOCK_STATE_DIR", w.join("state"))
            .env_remove("AIRLOCK_POLICY");
        c
    };
    let archive = w.join("images.tar");
    sh(unpack_cmd("extract")
        .arg("--archive")
        .arg(&archive)
        .args(["--platform", "linux/amd64"]))?;
    let archive_size = std::fs::metadata(&archive)?.len();

    let podman = Podman::start();
    let reset = || {
        for r in &refs {
            let _ = podman.cli().args(["rmi", "-f", r]).output();
        }
        let _ = podman.cli().args(["image", "prune", "-af"]).output();
    };
    let mut ours = unpack_cmd("load");
    ours.env("DOCKER_HOST", podman.docker_host());
    let mut peer = podman.cli();
    peer.args(["load", "-q", "-i"]).arg(&archive);
    let mut api = Command::new("curl");
    api.args(["-sS", "--fail", "-o", "/dev/null", "--unix-socket"])
        .arg(&podman.socket)
        .args(["-X", "POST", "-H", "Content-Type: application/x-tar", "-T"])
        .arg(&archive)
        .arg("http://podman/v1.40/images/load?quiet=1");
    let runs = 3;
    let (peer_m, ours_m) = in_turns(runs, (&reset, &mut peer), (&reset, &mut ours))?;
    let (api_m, ours_m2) = in_turns(runs, (&reset, &mut api), (&reset, &mut ours))?;
    let ours_m = super::faster(ours_m, ours_m2);

    // Pre-flight: the images are there (the last run loaded them); nothing is sent.
    let nothing = || {};
    let mut with = unpack_cmd("load");
    with.env("DOCKER_HOST", podman.docker_host());
    let mut without = unpack_cmd("load");
    without
        .arg("--no-preflight")
        .env("DOCKER_HOST", podman.docker_host());
    let (without_m, with_m) = in_turns(7, (&nothing, &mut without), (&nothing, &mut with))?;
    reset();
    drop(podman);

    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    println!(
        "\nbench engines: {} images, bundle {:.2} GiB, archive {:.2} GiB, best of {runs} in turns",
        refs.len(),
        gib(size),
        gib(archive_size)
    );
    println!(
        "{:<52} {:>8} {:>10} {:>9} {:>10}",
        "measurement", "wall", "MiB/s", "cpu", "peak RSS"
    );
    let row = |name: &str, m: &Measured| {
        println!(
            "{:<52} {:>7.3}s {:>10.0} {:>8.2}s {:>10}",
            name,
            m.secs,
            size as f64 / (1 << 20) as f64 / m.secs,
            m.cpu,
            mib(m.rss_kib)
        );
    };
    row("podman load -i (extract --archive file)", &peer_m);
    row("curl -T of that file to the API's /images/load", &api_m);
    row("airlock-unpack load into Podman (plain bundle)", &ours_m);
    row("load, all present, --no-preflight (best of 7)", &without_m);
    row("load, all present, with pre-flight (best of 7)", &with_m);
    let ratio = ours_m.secs / peer_m.secs;
    println!(
        "load into Podman takes {ratio:.2}x the time of podman load -i (target <= 1.2x: {})",
        if ratio <= 1.2 { "met" } else { "MISSED" }
    );
    println!(
        "load into Podman takes {:.2}x the time of the same archive sent to its API by curl",
        ours_m.secs / api_m.secs
    );
    let added = (with_m.secs - without_m.secs) * 1000.0;
    println!(
        "pre-flight adds {added:.0} ms to a load (target <= 50 ms: {})",
        if added <= 50.0 { "met" } else { "MISSED" }
    );
    let peak = ours_m.rss_kib.max(with_m.rss_kib);
    println!(
        "peak RSS of load into Podman: {} (target <= 64 MiB: {})",
        mib(peak),
        if peak <= 64 * 1024 { "met" } else { "MISSED" }
    );
    Ok(())
}
