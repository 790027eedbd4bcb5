//! `cargo xtask bench provenance`: what `[[verify]]` rules cost. The bench's image set
//! (about 1 GiB, 3 images), every image signed by skopeo 1.18 in the loopback registry; then
//! `airlock-pack lock --update` and `airlock-pack build` (plain, warm cache, so that the
//! registry lookups are not hidden behind downloads) of a spec with a `[[verify]]` rule
//! covering every image vs the same spec without it, taken in turns. Both builds carry the
//! signatures (the default); the difference is fetching and judging them again. CPU (user +
//! system) is reported beside wall time: on this shared machine it is the steadier number.
//! Target: ≤ 1.05x. A `--no-provenance` build is shown for what carrying costs.

use std::path::Path;
use std::process::Command;

use airlock_testkit::cosign::{self, CosignKey};
use airlock_testkit::TestRegistry;

use super::{faster, measure, Measured};
use crate::util::sh;

pub fn run(bins: &Path) -> anyhow::Result<()> {
    let pack = bins.join("airlock-pack");
    let registry = TestRegistry::start();
    let work = tempfile::tempdir_in(crate::util::scratch()?)?;
    let w = work.path();
    eprintln!("bench: generating 1 GiB of fixture images, signing them with skopeo 1.18");
    let tags = super::fixture_images(w, &registry, 1)?;
    let key = CosignKey::generate(&w.join("cosign"), "upstream");
    for t in &tags {
        cosign::sign_existing(&format!("docker://{}/{t}", registry.addr), &key);
    }
    let cache = w.join("cache");
    let bare = super::keys_spec_and_lock(&pack, w, &registry, &tags, &cache)?;
    // The same spec with a rule for every image, in the same directory (the key path is
    // relative to it).
    let ruled = w.join("ruled.toml");
    std::fs::write(
        &ruled,
        std::fs::read_to_string(&bare)?.replace("name = \"bench\"", "name = \"ruled\"")
            + &format!(
                "[[verify]]\nmatch = \"{}/bench/*\"\nkey = \"cosign/upstream.pub\"\n",
                registry.addr
            ),
    )?;
    let lock_cmd = |spec: &Path| {
        let mut c = Command::new(&pack);
        c.arg("lock")
            .arg(spec)
            .args(["--update", "-q", "--cache"])
            .arg(&cache);
        c
    };
    sh(&mut lock_cmd(&ruled))?;
    let build_cmd = |spec: &Path, out: &str, extra: &[&str]| {
        let mut c = Command::new(&pack);
        c.arg("build")
            .arg(spec)
            .arg("-o")
            .arg(w.join(out))
            .arg("--sign-key")
            .arg(w.join("keys/airlock.key"))
            .args(["-q", "--cache"])
            .arg(&cache)
            .args(extra);
        c
    };
    // Warm the cache: every blob (and every signature) fetched once before the clock runs.
    sh(&mut build_cmd(&ruled, "warm.airlock", &[]))?;

    let runs = 5;
    let mut best: [Option<Measured>; 5] = Default::default();
    for _ in 0..runs {
        let mut cmds = [
            lock_cmd(&bare),
            lock_cmd(&ruled),
            build_cmd(&bare, "bare.airlock", &[]),
            build_cmd(&ruled, "ruled.airlock", &[]),
            build_cmd(&bare, "none.airlock", &["--no-provenance"]),
        ];
        for (i, c) in cmds.iter_mut().enumerate() {
            let m = measure(c)?;
            best[i] = Some(match best[i].take() {
                None => m,
                Some(b) => faster(b, m),
            });
        }
    }
    let [Some(lock_bare), Some(lock_ruled), Some(build_bare), Some(build_ruled), Some(build_none)] =
        best
    else {
        unreachable!("five runs each")
    };
    println!(
        "\nbench provenance: 3 signed images (about 1 GiB), best of {runs} in turns, warm cache"
    );
    println!(
        "{:<46} {:>8} {:>9} {:>13} {:>13}",
        "measurement", "wall", "cpu", "wall ratio", "cpu ratio"
    );
    let row = |name: &str, m: &Measured, base: &Measured| {
        println!(
            "{:<46} {:>7.2}s {:>8.2}s {:>12.3}x {:>12.3}x",
            name,
            m.secs,
            m.cpu,
            m.secs / base.secs,
            m.cpu / base.cpu
        );
    };
    row("lock --update, no rules", &lock_bare, &lock_bare);
    row(
        "lock --update, [[verify]] every image",
        &lock_ruled,
        &lock_bare,
    );
    row(
        "build, no rules (signatures carried)",
        &build_bare,
        &build_bare,
    );
    row("build, [[verify]] every image", &build_ruled, &build_bare);
    row("build --no-provenance, no rules", &build_none, &build_bare);
    let ratio = build_ruled.secs / build_bare.secs;
    println!(
        "build with rules is {ratio:.3}x the time without (target <= 1.05: {})",
        if ratio <= 1.05 { "met" } else { "MISSED" }
    );
    if std::env::var_os("AIRLOCK_BENCH_KEEP").is_some() {
        eprintln!("bench: kept {} (AIRLOCK_BENCH_KEEP)", work.keep().display());
    }
    Ok(())
}
