//! `cargo xtask bench [--big]`: throughput and peak memory of airlock against the peers the
//! issues name, measured in the same run on the same data:
//! - `airlock-pack build` (cold cache, plain and encrypted) vs `skopeo copy docker://… oci-archive:…`
//! - `airlock-unpack verify` vs `age -d -o /dev/null`
//! - `airlock-unpack load` vs `docker load -i` of a `docker save` archive of the same images
//!   (see `bench/images.rs`)
//!
//! - models (`cargo xtask bench models`, also run after the image rows): `airlock-pack build`
//!   of a 2 GiB Ollama model from the loopback registry vs `curl -o` of its blob, and
//!   `airlock-unpack load` into a models directory vs `cp -r` of the same store (see
//!   `bench/models.rs`)
//!
//! - parts (`cargo xtask bench parts`, also run last): `airlock-unpack verify --outer-only`
//!   of a 4 GiB bundle in 4 parts vs `sha256sum` and `openssl dgst -sha256` of the parts
//!   (see `bench/parts.rs`)
//! - parity (`cargo xtask bench parity`, also run after parts): `airlock-pack build --split
//!   --parity 10%` vs the same build without parity, and `airlock-unpack repair` of one lost
//!   part vs `cat` of the parts it reads, page cache dropped and warm (see `bench/parity.rs`)
//! - push (`cargo xtask bench push`): `airlock-unpack push` into a fresh loopback registry vs
//!   `skopeo copy oci:… docker://…` of the same images (see `bench/push.rs`)
//! - containerd (`cargo xtask bench containerd`, also run last): `airlock-unpack load
//!   --containerd` vs `ctr images import` of the same images (see `bench/containerd.rs`)
//!
//! Fixtures are generated: about 1 GiB of images (4 GiB with `--big`) with a shared base layer
//! and incompressible layers, and a model with a 2 GiB random blob. Peak RSS comes from GNU
//! time. `AIRLOCK_BENCH_KEEP=1` keeps the work directory (bundles, keys) for experiments.
//!
//! This file holds the dispatch, the measuring helpers (GNU time, best of n, peer and ours
//! in turns), the fixtures the sections share, and the report table.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use airlock_testkit::{fixtures, ImageSpec, Layer, TestRegistry};
use anyhow::{bail, Context as _};

use crate::util::{build_bins, install_deps, sh};

mod containerd;
mod docker26;
mod engines;
mod images;
mod models;
mod parity;
mod parts;
mod provenance;
mod push;

struct Measured {
    secs: f64,
    rss_kib: u64,
    /// User + system CPU seconds.
    cpu: f64,
    user: f64,
    sys: f64,
}

/// Runs `cmd` under GNU time; returns wall time and peak RSS.
fn measure(cmd: &mut Command) -> anyhow::Result<Measured> {
    // Start every measurement with no dirty pages left over from the previous one.
    let _ = Command::new("sync").status();
    measure_now(cmd)
}

/// [`measure`] without the `sync` first: for a run right after its peer's, which pays for
/// the peer's dirty pages as a real machine would.
fn measure_now(cmd: &mut Command) -> anyhow::Result<Measured> {
    let rss_file = tempfile::NamedTempFile::new()?;
    let mut timed = Command::new("/usr/bin/time");
    timed
        .arg("-f")
        .arg("%M %U %S")
        .arg("-o")
        .arg(rss_file.path())
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => timed.env(k, v),
            None => timed.env_remove(k),
        };
    }
    timed.stdout(std::process::Stdio::null());
    let start = Instant::now();
    let out = timed.output().with_context(|| format!("{cmd:?}"))?;
    let secs = start.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let line = std::fs::read_to_string(rss_file.path())?;
    let fields: Vec<f64> = line
        .trim()
        .lines()
        .last()
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    let (rss_kib, user, sys) = match fields.as_slice() {
        [rss, user, sys] => (*rss as u64, *user, *sys),
        _ => (0, 0.0, 0.0),
    };
    let cpu = user + sys;
    if std::env::var_os("AIRLOCK_BENCH_VERBOSE").is_some() {
        eprintln!(
            "bench: {:?}: {secs:.2}s wall, {cpu:.2}s cpu, {rss_kib} KiB",
            cmd.get_program()
        );
    }
    Ok(Measured {
        secs,
        rss_kib,
        cpu,
        user,
        sys,
    })
}

/// The faster of two measurements, with the larger peak RSS of the two.
fn faster(a: Measured, b: Measured) -> Measured {
    let rss_kib = a.rss_kib.max(b.rss_kib);
    if b.secs < a.secs {
        Measured { rss_kib, ..b }
    } else {
        Measured { rss_kib, ..a }
    }
}

/// The fastest of `n` runs, each after `reset` (outputs of the last run removed): the
/// usual way to take noise out of short measurements.
fn measure_best(n: usize, reset: &dyn Fn(), cmd: &mut Command) -> anyhow::Result<Measured> {
    reset();
    let mut best = measure(cmd)?;
    for _ in 1..n {
        reset();
        best = faster(best, measure(cmd)?);
    }
    Ok(best)
}

/// A peer and ours taken in turns, `n` runs each (each after its reset), so that both see
/// the same moments of this shared machine; the best of each.
fn in_turns(
    n: usize,
    peer: (&dyn Fn(), &mut Command),
    ours: (&dyn Fn(), &mut Command),
) -> anyhow::Result<(Measured, Measured)> {
    let (peer_reset, peer_cmd) = peer;
    let (ours_reset, ours_cmd) = ours;
    let mut best: Option<(Measured, Measured)> = None;
    for _ in 0..n {
        peer_reset();
        let p = measure(peer_cmd)?;
        ours_reset();
        let o = measure(ours_cmd)?;
        best = Some(match best {
            None => (p, o),
            Some((bp, bo)) => (faster(bp, p), faster(bo, o)),
        });
    }
    Ok(best.expect("at least one run"))
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let big = args.iter().any(|a| a == "--big");
    install_deps()?;
    if !Path::new("/usr/bin/time").exists() {
        sh(Command::new("apt-get")
            .args(["install", "-y", "-qq", "time"])
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    let bins = build_bins(true)?;
    if args.iter().any(|a| a == "models") {
        return models::run(&bins);
    }
    if args.iter().any(|a| a == "parts") {
        return parts::run(&bins);
    }
    if args.iter().any(|a| a == "parity") {
        return parity::run(&bins, big);
    }
    if args.iter().any(|a| a == "push") {
        return push::run(&bins);
    }
    if args.iter().any(|a| a == "provenance") {
        return provenance::run(&bins);
    }
    if args.iter().any(|a| a == "docker26") {
        return docker26::run(&bins);
    }
    if args.iter().any(|a| a == "containerd") {
        return containerd::run(&bins);
    }
    if args.iter().any(|a| a == "engines") {
        engines::run(&bins)?;
        docker26::run(&bins)?;
        return containerd::run(&bins);
    }
    images::run(&bins, big)?;
    if std::env::var("AIRLOCK_BENCH_ONLY").is_ok_and(|v| v == "pack") {
        return Ok(());
    }
    models::run(&bins)?;
    parts::run(&bins)?;
    parity::run(&bins, big)?;
    push::run(&bins)?;
    containerd::run(&bins)
}

/// About `scale` GiB of images in `registry`: a shared 256 MiB base (and busybox) under 3
/// images with their own 64 + 192 MiB each, all incompressible. Returns their tags.
fn fixture_images(w: &Path, registry: &TestRegistry, scale: u64) -> anyhow::Result<Vec<String>> {
    let layers = w.join("layers");
    let base = Layer::random(&layers, (256 * scale) << 20, 1);
    let busybox = Layer::busybox(&layers);
    let mut tags = Vec::new();
    for i in 0..3u64 {
        let ls = vec![
            busybox.clone(),
            base.clone(),
            Layer::random(&layers, (64 * scale) << 20, 10 + i),
            Layer::random(&layers, (192 * scale) << 20, 20 + i),
        ];
        let tag = format!("bench/img{i}:v1");
        fixtures::push(
            &registry.addr,
            &tag,
            &[ImageSpec::new(ls, &["/bin/busybox", "true"])],
        );
        tags.push(tag);
    }
    std::fs::remove_dir_all(&layers)?;
    Ok(tags)
}

/// A signing key pair in `w/keys`, a spec `w/bench.toml` for `tags` in `registry`, and its
/// lock (resolved through `cache`). Returns the spec.
fn keys_spec_and_lock(
    pack: &Path,
    w: &Path,
    registry: &TestRegistry,
    tags: &[String],
    cache: &Path,
) -> anyhow::Result<std::path::PathBuf> {
    let spec = w.join("bench.toml");
    let mut s = String::from("name = \"bench\"\n");
    for t in tags {
        s.push_str(&format!("[[image]]\nref = \"{}/{t}\"\n", registry.addr));
    }
    s.push_str(&format!(
        "[registries.\"{}\"]\ninsecure = true\n",
        registry.addr
    ));
    std::fs::write(&spec, s)?;
    sh(Command::new(pack)
        .args(["keygen", "-o"])
        .arg(w.join("keys")))?;
    sh(Command::new(pack)
        .arg("lock")
        .arg(&spec)
        .arg("-q")
        .arg("--cache")
        .arg(cache))?;
    Ok(spec)
}

/// The setup the engine and push sections share: 1 GiB of fixture images in `registry`,
/// keys, spec and lock in `w`, and one plain (signed, not encrypted) bundle of them,
/// `w/plain.airlock`, built through a cache that is removed afterwards. Returns the image
/// tags and the bundle.
fn plain_bundle(
    pack: &Path,
    w: &Path,
    registry: &TestRegistry,
) -> anyhow::Result<(Vec<String>, std::path::PathBuf)> {
    let tags = fixture_images(w, registry, 1)?;
    let spec = keys_spec_and_lock(pack, w, registry, &tags, &w.join("cache"))?;
    let bundle = w.join("plain.airlock");
    sh(Command::new(pack)
        .arg("build")
        .arg(&spec)
        .arg("-o")
        .arg(&bundle)
        .arg("--sign-key")
        .arg(w.join("keys/airlock.key"))
        .arg("-q")
        .arg("--cache")
        .arg(w.join("cache")))?;
    std::fs::remove_dir_all(w.join("cache"))?;
    Ok((tags, bundle))
}

fn report(rows: &[Row], what: &str, size: u64) -> anyhow::Result<()> {
    println!(
        "\nbench: {what}, bundle {:.2} GiB, {} cores",
        size as f64 / (1u64 << 30) as f64,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!(
        "{:<36} {:>9} {:>9}  {:<32} {:<6} {:>10} {:>9}",
        "measurement", "airlock", "peer", "ratio", "target", "peak RSS", "cpu"
    );
    for r in rows {
        println!(
            "{:<36} {:>8.2}s {:>8.2}s  {:<32} {:<6} {:>10} {:>8.2}s",
            r.name,
            r.ours.secs,
            r.peer,
            r.ratio,
            if r.ok { "met" } else { "MISSED" },
            mib(r.ours.rss_kib),
            r.ours.cpu
        );
    }
    let rss_ok = rows.iter().all(|r| r.ours.rss_kib <= 64 * 1024);
    println!(
        "peak RSS target (<= 64 MiB): {}",
        if rss_ok { "met" } else { "MISSED" }
    );
    Ok(())
}

struct Row {
    name: String,
    ours: Measured,
    peer: f64,
    ratio: String,
    ok: bool,
}

impl Row {
    /// Ours as a multiple of the peer's time; met if at most `limit` (informational rows
    /// have none).
    fn time_of(name: &str, ours: Measured, peer: (&str, f64), limit: Option<f64>) -> Row {
        let (peer_name, peer_secs) = peer;
        let times = ours.secs / peer_secs;
        Row {
            name: name.into(),
            ratio: format!("{times:.2}x the time of {peer_name}"),
            ok: limit.is_none_or(|l| times <= l),
            peer: peer_secs,
            ours,
        }
    }
}
