//! `cargo xtask bench [--big]`: throughput and peak memory of airlock against the peers the
//! issues name, measured in the same run on the same data:
//! - `airlock-pack build` (cold cache, plain and encrypted) vs `skopeo copy docker://… oci-archive:…`
//! - `airlock-unpack verify` vs `age -d -o /dev/null`
//! - `airlock-unpack load` vs `docker load -i` of a `docker save` archive of the same images
//!
//! - models (`cargo xtask bench models`, also run after the image rows): `airlock-pack build`
//!   of a 2 GiB Ollama model from the loopback registry vs `curl -o` of its blob, and
//!   `airlock-unpack load` into a models directory vs `cp -r` of the same store
//!
//! - parts (`cargo xtask bench parts`, also run last): `airlock-unpack verify --outer-only`
//!   of a 4 GiB bundle in 4 parts vs `sha256sum` and `openssl dgst -sha256` of the parts
//! - push (`cargo xtask bench push`): `airlock-unpack push` into a fresh loopback registry vs
//!   `skopeo copy oci:… docker://…` of the same images (see `bench/push.rs`)
//! - containerd (`cargo xtask bench containerd`, also run last): `airlock-unpack load
//!   --containerd` vs `ctr images import` of the same images (see `bench/containerd.rs`)
//!
//! Fixtures are generated: about 1 GiB of images (4 GiB with `--big`) with a shared base layer
//! and incompressible layers, and a model with a 2 GiB random blob. Peak RSS comes from GNU
//! time. `AIRLOCK_BENCH_KEEP=1` keeps the work directory (bundles, keys) for experiments.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use airlock_testkit::{fixtures, ImageSpec, Layer, TestRegistry};
use anyhow::{bail, Context as _};

use crate::util::{build_bins, capture, install_deps, sh};

mod containerd;
mod docker26;
mod engines;
mod push;

struct Measured {
    secs: f64,
    rss_kib: u64,
    /// User + system CPU seconds.
    cpu: f64,
}

/// Runs `cmd` under GNU time; returns wall time and peak RSS.
fn measure(cmd: &mut Command) -> anyhow::Result<Measured> {
    // Start every measurement with no dirty pages left over from the previous one.
    let _ = Command::new("sync").status();
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
    let (rss_kib, cpu) = match fields.as_slice() {
        [rss, user, sys] => (*rss as u64, user + sys),
        _ => (0, 0.0),
    };
    if std::env::var_os("AIRLOCK_BENCH_VERBOSE").is_some() {
        eprintln!(
            "bench: {:?}: {secs:.2}s wall, {cpu:.2}s cpu, {rss_kib} KiB",
            cmd.get_program()
        );
    }
    Ok(Measured { secs, rss_kib, cpu })
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

fn rmi(tags: &[String]) {
    for t in tags {
        let _ = Command::new("docker").args(["rmi", "-f", t]).output();
    }
    let _ = Command::new("docker")
        .args(["image", "prune", "-f"])
        .output();
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
        return models(&bins);
    }
    if args.iter().any(|a| a == "parts") {
        return parts(&bins);
    }
    if args.iter().any(|a| a == "push") {
        return push::run(&bins);
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
    images(&bins, big)?;
    if std::env::var("AIRLOCK_BENCH_ONLY").is_ok_and(|v| v == "pack") {
        return Ok(());
    }
    models(&bins)?;
    parts(&bins)?;
    push::run(&bins)?;
    containerd::run(&bins)
}

/// A 4 GiB bundle in 4 parts: `verify --outer-only` (the signed sums, no key) vs
/// `sha256sum` and `openssl dgst -sha256` over the same files.
fn parts(bins: &Path) -> anyhow::Result<()> {
    use airlock_testkit::ollama::OllamaModel;
    let pack = bins.join("airlock-pack");
    let unpack = bins.join("airlock-unpack");
    let work = tempfile::tempdir_in(crate::util::root().join("target"))?;
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

fn images(bins: &Path, big: bool) -> anyhow::Result<()> {
    let pack = bins.join("airlock-pack");
    let unpack = bins.join("airlock-unpack");

    let scale: u64 = if big { 4 } else { 1 };
    let registry = TestRegistry::start();
    let work = tempfile::tempdir_in(crate::util::root().join("target"))?;
    let w = work.path();
    // The gap side's anti-rollback record stays with this run, not in /var/lib/airlock.
    std::env::set_var("AIRLOCK_STATE_DIR", w.join("airlock-state"));
    eprintln!("bench: generating {} GiB of fixture images", scale);
    let tags = fixture_images(w, &registry, scale)?;
    let refs: Vec<String> = tags
        .iter()
        .map(|t| format!("{}/{t}", registry.addr))
        .collect();
    let spec = keys_spec_and_lock(&pack, w, &registry, &tags, &w.join("lock-cache"))?;
    sh(Command::new(&unpack)
        .args(["keygen", "-o"])
        .arg(w.join("host")))?;

    let mut rows: Vec<Row> = Vec::new();

    // Each measurement starts from the same state: its own outputs and caches removed, no
    // dirty pages (measure syncs), and the best of two runs, for the peer as for us. Big
    // files left over from a previous run measurably slow the next one on this machine.
    let skopeo_once = || -> anyhow::Result<f64> {
        let _ = Command::new("sync").status();
        let start = Instant::now();
        for (i, r) in refs.iter().enumerate() {
            sh(Command::new("skopeo")
                .args(["copy", "--quiet", "--src-tls-verify=false"])
                .arg(format!("docker://{r}"))
                .arg(format!(
                    "oci-archive:{}",
                    w.join(format!("skopeo-{i}.tar")).display()
                )))?;
        }
        let secs = start.elapsed().as_secs_f64();
        for i in 0..refs.len() {
            let _ = std::fs::remove_file(w.join(format!("skopeo-{i}.tar")));
        }
        Ok(secs)
    };
    let skopeo = skopeo_once()?.min(skopeo_once()?);

    let build = |name: &str, cache: &str, encrypted: bool| -> anyhow::Result<Measured> {
        let mut c = Command::new(&pack);
        c.arg("build")
            .arg(&spec)
            .arg("-o")
            .arg(w.join(name))
            .arg("--sign-key")
            .arg(w.join("keys/airlock.key"))
            .arg("-q");
        c.arg("--cache").arg(w.join(cache));
        if encrypted {
            c.arg("--recipients-file").arg(w.join("host/host.pub"));
        }
        measure(&mut c)
    };
    // Best of two cold builds; the output of the last one is kept.
    let cold = |name: &str, encrypted: bool| -> anyhow::Result<Measured> {
        let first = build(name, "cache-cold", encrypted)?;
        let _ = std::fs::remove_dir_all(w.join("cache-cold"));
        let _ = std::fs::remove_file(w.join(name));
        let second = build(name, "cache-cold", encrypted)?;
        let _ = std::fs::remove_dir_all(w.join("cache-cold"));
        Ok(if first.secs < second.secs {
            Measured {
                rss_kib: first.rss_kib.max(second.rss_kib),
                ..first
            }
        } else {
            Measured {
                rss_kib: first.rss_kib.max(second.rss_kib),
                ..second
            }
        })
    };
    let faster = |m: Measured, name: &str, target: bool| Row {
        name: name.into(),
        ratio: format!("{:.2}x faster than skopeo copy", skopeo / m.secs),
        ok: !target || skopeo / m.secs >= 2.0,
        peer: skopeo,
        ours: m,
    };
    rows.push(faster(
        cold("plain.airlock", false)?,
        "pack build, plain, cold cache",
        true,
    ));
    rows.push(faster(
        cold("enc.airlock", true)?,
        "pack build, encrypted, cold cache",
        true,
    ));
    build("warmup.airlock", "cache-warm", true)?;
    let _ = std::fs::remove_file(w.join("warmup.airlock"));
    let warm = build("enc2.airlock", "cache-warm", true)?;
    rows.push(faster(warm, "pack build, encrypted, warm cache", false));
    let _ = std::fs::remove_file(w.join("enc2.airlock"));
    let _ = std::fs::remove_dir_all(w.join("cache-warm"));

    if std::env::var("AIRLOCK_BENCH_ONLY").is_ok_and(|v| v == "pack") {
        let size = std::fs::metadata(w.join("enc.airlock"))?.len();
        if std::env::var_os("AIRLOCK_BENCH_KEEP").is_some() {
            eprintln!("bench: kept {} (AIRLOCK_BENCH_KEEP)", work.keep().display());
        }
        return report(&rows, &format!("{} images", refs.len()), size);
    }
    let bundle = w.join("enc.airlock");
    let trust = w.join("keys/airlock.pub");
    let identity = w.join("host/host.key");
    // Warm the page cache for both readers alike.
    capture(
        Command::new("cat")
            .arg(&bundle)
            .arg(w.join("plain.airlock"))
            .stdout(std::process::Stdio::null()),
    )?;
    let age = measure_best(
        3,
        &|| {},
        Command::new("age")
            .arg("-d")
            .arg("-i")
            .arg(&identity)
            .arg("-o")
            .arg("/dev/null")
            .arg(&bundle),
    )?;
    let speed = |m: Measured, name: &str, target: bool| Row {
        name: name.into(),
        ratio: format!("{:.2}x the speed of age -d", age.secs / m.secs),
        ok: !target || age.secs / m.secs >= 0.9,
        peer: age.secs,
        ours: m,
    };
    let verify = measure_best(
        3,
        &|| {},
        Command::new(&unpack)
            .arg("verify")
            .arg(&bundle)
            .arg("--trust")
            .arg(&trust)
            .arg("--identity")
            .arg(&identity)
            .arg("-q"),
    )?;
    rows.push(speed(verify, "unpack verify (encrypted)", true));
    let verify_plain = measure_best(
        3,
        &|| {},
        Command::new(&unpack)
            .arg("verify")
            .arg(w.join("plain.airlock"))
            .arg("--trust")
            .arg(&trust)
            .arg("-q"),
    )?;
    rows.push(speed(verify_plain, "unpack verify (plain)", false));
    let _ = std::fs::remove_file(w.join("plain.airlock"));

    // Load: ours once to get the images, `docker save` them, then alternately docker load of
    // that archive and ours, each from an engine without the images; best of two each.
    let tags = refs.clone();
    rmi(&tags);
    let mut ours_cmd = Command::new(&unpack);
    ours_cmd
        .arg("load")
        .arg(&bundle)
        .arg("--trust")
        .arg(&trust)
        .arg("--identity")
        .arg(&identity)
        .arg("-q");
    sh(&mut ours_cmd)?;
    let save = w.join("save.tar");
    sh(Command::new("docker")
        .arg("save")
        .arg("-o")
        .arg(&save)
        .args(&tags))?;
    rmi(&tags);
    capture(
        Command::new("cat")
            .arg(&save)
            .stdout(std::process::Stdio::null()),
    )?;
    let reset = || rmi(&tags);
    let (docker_load, ours) = in_turns(
        2,
        (
            &reset,
            Command::new("docker")
                .arg("load")
                .arg("-q")
                .arg("-i")
                .arg(&save),
        ),
        (&reset, &mut ours_cmd),
    )?;
    rmi(&tags);
    let _ = std::fs::remove_file(&save);
    rows.push(Row {
        name: "unpack load".into(),
        ratio: format!(
            "{:.2}x the time of docker load",
            ours.secs / docker_load.secs
        ),
        ok: ours.secs / docker_load.secs <= 1.1,
        peer: docker_load.secs,
        ours,
    });

    let size = std::fs::metadata(&bundle)?.len();
    if std::env::var_os("AIRLOCK_BENCH_KEEP").is_some() {
        eprintln!("bench: kept {} (AIRLOCK_BENCH_KEEP)", work.keep().display());
    }
    report(&rows, &format!("{} images", refs.len()), size)
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

/// A 2 GiB model: pack from the loopback registry vs `curl -o` of the blob; load into a
/// models directory vs `cp -r` of the same store.
fn models(bins: &Path) -> anyhow::Result<()> {
    use airlock_testkit::ollama::OllamaModel;
    let pack = bins.join("airlock-pack");
    let unpack = bins.join("airlock-unpack");
    let registry = TestRegistry::start();
    let work = tempfile::tempdir_in(crate::util::root().join("target"))?;
    let w = work.path();
    // The gap side's anti-rollback record stays with this run, not in /var/lib/airlock.
    std::env::set_var("AIRLOCK_STATE_DIR", w.join("airlock-state"));
    eprintln!("bench: generating a 2 GiB model");
    let model = OllamaModel::generate(&w.join("model-src"), 2 << 30, 7);
    model.push(&registry.addr, "library/big", "latest");
    let big = &model.layers[0];
    let name = format!("{}/library/big:latest", registry.addr);
    let spec = w.join("models.toml");
    std::fs::write(
        &spec,
        format!(
            "name = \"models\"\n[[model]]\nname = \"{name}\"\npath = \"/unused\"\n[registries.\"{}\"]\ninsecure = true\n",
            registry.addr
        ),
    )?;
    sh(Command::new(&pack)
        .args(["keygen", "-o"])
        .arg(w.join("keys")))?;
    sh(Command::new(&pack)
        .arg("lock")
        .arg(&spec)
        .arg("-q")
        .arg("--cache")
        .arg(w.join("lock-cache")))?;

    let mut rows = Vec::new();
    // Pack vs curl: both cold (curl has no cache; ours starts from an empty one), taken in
    // turns so that both see the same moments of this shared machine; best of three each.
    let blob_out = w.join("curl.blob");
    let bundle = w.join("model.airlock");
    let mut curl_cmd = Command::new("curl");
    curl_cmd.args(["-sSf", "-o"]).arg(&blob_out).arg(format!(
        "http://{}/v2/library/big/blobs/{}",
        registry.addr, big.digest
    ));
    let mut pack_cmd = Command::new(&pack);
    pack_cmd
        .arg("build")
        .arg(&spec)
        .arg("-o")
        .arg(&bundle)
        .arg("--sign-key")
        .arg(w.join("keys/airlock.key"))
        .arg("-q")
        .arg("--cache")
        .arg(w.join("cache"));
    let (curl, ours) = in_turns(
        3,
        (
            &|| {
                let _ = std::fs::remove_file(&blob_out);
            },
            &mut curl_cmd,
        ),
        (
            &|| {
                let _ = std::fs::remove_file(&blob_out);
                let _ = std::fs::remove_dir_all(w.join("cache"));
                let _ = std::fs::remove_file(&bundle);
            },
            &mut pack_cmd,
        ),
    )?;
    let _ = std::fs::remove_dir_all(w.join("cache"));
    rows.push(Row::time_of(
        "pack build, 2 GiB model, cold",
        ours,
        ("curl -o", curl.secs),
        Some(1.2),
    ));

    // Load into a models dir vs cp -r of the same store (page cache warm for both).
    let store = w.join("store");
    model.install_local(&store, &airlock_bundle::ollama::ModelName::parse(&name)?);
    capture(
        Command::new("cat")
            .arg(&bundle)
            .arg(&big.path)
            .stdout(std::process::Stdio::null()),
    )?;
    let cp_dest = w.join("cp-dest");
    let cp = measure_best(
        2,
        &|| {
            let _ = std::fs::remove_dir_all(&cp_dest);
        },
        Command::new("cp").arg("-r").arg(&store).arg(&cp_dest),
    )?;
    let _ = std::fs::remove_dir_all(&cp_dest);
    let restored = w.join("restored");
    let mut into_dir = Command::new(&unpack);
    into_dir
        .arg("load")
        .arg(&bundle)
        .arg("--trust")
        .arg(w.join("keys/airlock.pub"))
        .arg("--ollama-models")
        .arg(&restored)
        .arg("-q");
    let ours = measure_best(
        2,
        &|| {
            let _ = std::fs::remove_dir_all(&restored);
        },
        &mut into_dir,
    )?;
    rows.push(Row::time_of(
        "unpack load, 2 GiB model, into a dir",
        ours,
        ("cp -r", cp.secs),
        Some(1.2),
    ));
    // The floor of any load that verifies: sha256 of the same bytes, with the fastest tool
    // on this machine (SHA-NI). `cp -r` verifies nothing, so it can beat this floor.
    let floor = measure_best(
        2,
        &|| {},
        Command::new("openssl")
            .args(["dgst", "-sha256"])
            .arg(&big.path),
    )?;
    rows.push(Row::time_of(
        "(sha256 of the 2 GiB: openssl dgst)",
        floor,
        ("cp -r", cp.secs),
        None,
    ));
    let again = measure(&mut into_dir)?;
    rows.push(Row::time_of(
        "unpack load again (all present)",
        again,
        ("cp -r", cp.secs),
        None,
    ));
    let _ = std::fs::remove_dir_all(&restored);

    // Into a Docker volume: no target in the issue; the peer is `docker cp` of the same store
    // into a fresh volume through a created container (the same archive API we use).
    let volume = format!("airlock-bench-{}", std::process::id());
    let rm_volume = || {
        let _ = Command::new("docker")
            .args(["volume", "rm", "-f", &volume])
            .output();
    };
    let empty = w.join("empty.tar");
    std::fs::write(&empty, [0u8; 1024])?;
    sh(Command::new("docker")
        .args(["import"])
        .arg(&empty)
        .arg("airlock-bench-empty:1"))?;
    let docker_cp = || -> anyhow::Result<Measured> {
        rm_volume();
        let cid = capture(Command::new("docker").args([
            "create",
            "-v",
            &format!("{volume}:/root/.ollama"),
            "airlock-bench-empty:1",
            "/none",
        ]))?;
        let cid = cid.trim().to_string();
        let m = measure(
            Command::new("docker")
                .arg("cp")
                .arg(format!("{}/.", store.display()))
                .arg(format!("{cid}:/root/.ollama/models")),
        );
        let _ = Command::new("docker").args(["rm", "-f", &cid]).output();
        m
    };
    let a = docker_cp()?;
    let b = docker_cp()?;
    let cp_vol = faster(a, b);
    let mut into_volume = Command::new(&unpack);
    into_volume
        .arg("load")
        .arg(&bundle)
        .arg("--trust")
        .arg(w.join("keys/airlock.pub"))
        .arg("--ollama-volume")
        .arg(&volume)
        .arg("-q")
        .env("AIRLOCK_WORK_DIR", w.join("work"));
    let vol = measure_best(2, &rm_volume, &mut into_volume)?;
    rows.push(Row::time_of(
        "unpack load into a Docker volume",
        vol,
        ("docker cp", cp_vol.secs),
        None,
    ));
    let vol_again = measure(&mut into_volume)?;
    rows.push(Row::time_of(
        "  again (all present, read back)",
        vol_again,
        ("docker cp", cp_vol.secs),
        None,
    ));
    rm_volume();
    let _ = Command::new("docker")
        .args(["rmi", "-f", "airlock-bench-empty:1"])
        .output();

    let size = std::fs::metadata(&bundle)?.len();
    if std::env::var_os("AIRLOCK_BENCH_KEEP").is_some() {
        eprintln!("bench: kept {} (AIRLOCK_BENCH_KEEP)", work.keep().display());
    }
    report(&rows, "1 model", size)
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
