//! `cargo xtask bench` (the image rows): `airlock-pack build` of about 1 GiB of images
//! (4 GiB with `--big`; cold cache, plain and encrypted, and warm) vs `skopeo copy
//! docker://… oci-archive:…`, `airlock-unpack verify` vs `age -d -o /dev/null`, and
//! `airlock-unpack load` vs `docker load -i` of a `docker save` archive of the same images.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use airlock_testkit::TestRegistry;

use super::{
    fixture_images, in_turns, keys_spec_and_lock, measure, measure_best, report, Measured, Row,
};
use crate::util::{capture, sh};

pub fn run(bins: &Path, big: bool) -> anyhow::Result<()> {
    let pack = bins.join("airlock-pack");
    let unpack = bins.join("airlock-unpack");

    let scale: u64 = if big { 4 } else { 1 };
    let registry = TestRegistry::start();
    let work = tempfile::tempdir_in(crate::util::scratch()?)?;
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

    let mut rows = pack_rows(&pack, w, &spec, &refs)?;
    if std::env::var("AIRLOCK_BENCH_ONLY").is_ok_and(|v| v == "pack") {
        let size = std::fs::metadata(w.join("enc.airlock"))?.len();
        if std::env::var_os("AIRLOCK_BENCH_KEEP").is_some() {
            eprintln!("bench: kept {} (AIRLOCK_BENCH_KEEP)", work.keep().display());
        }
        return report(&rows, &format!("{} images", refs.len()), size);
    }
    let bundle = w.join("enc.airlock");
    rows.extend(verify_rows(&unpack, w, &bundle)?);
    rows.push(load_row(&unpack, w, &bundle, &refs)?);

    let size = std::fs::metadata(&bundle)?.len();
    if std::env::var_os("AIRLOCK_BENCH_KEEP").is_some() {
        eprintln!("bench: kept {} (AIRLOCK_BENCH_KEEP)", work.keep().display());
    }
    report(&rows, &format!("{} images", refs.len()), size)
}

/// `airlock-pack build` of `spec` (cold plain, cold encrypted, warm encrypted) vs skopeo
/// copying the same images `refs`. Leaves `w/plain.airlock` and `w/enc.airlock`.
fn pack_rows(pack: &Path, w: &Path, spec: &Path, refs: &[String]) -> anyhow::Result<Vec<Row>> {
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
        let mut c = Command::new(pack);
        c.arg("build")
            .arg(spec)
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

    Ok(rows)
}

/// `airlock-unpack verify` of the encrypted and the plain bundle vs `age -d` of the
/// encrypted one. Removes `w/plain.airlock` afterwards.
fn verify_rows(unpack: &Path, w: &Path, bundle: &Path) -> anyhow::Result<Vec<Row>> {
    let mut rows: Vec<Row> = Vec::new();
    let trust = w.join("keys/airlock.pub");
    let identity = w.join("host/host.key");
    // Warm the page cache for both readers alike.
    capture(
        Command::new("cat")
            .arg(bundle)
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
            .arg(bundle),
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
        Command::new(unpack)
            .arg("verify")
            .arg(bundle)
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
        Command::new(unpack)
            .arg("verify")
            .arg(w.join("plain.airlock"))
            .arg("--trust")
            .arg(&trust)
            .arg("-q"),
    )?;
    rows.push(speed(verify_plain, "unpack verify (plain)", false));
    let _ = std::fs::remove_file(w.join("plain.airlock"));

    Ok(rows)
}

/// `airlock-unpack load` of `bundle` vs `docker load -i` of a `docker save` archive of the
/// images it holds (`refs`), each into an engine without them.
fn load_row(unpack: &Path, w: &Path, bundle: &Path, refs: &[String]) -> anyhow::Result<Row> {
    let trust = w.join("keys/airlock.pub");
    let identity = w.join("host/host.key");
    // Load: ours once to get the images, `docker save` them, then alternately docker load of
    // that archive and ours, each from an engine without the images; best of two each.
    let tags = refs.to_vec();
    rmi(&tags);
    let mut ours_cmd = Command::new(unpack);
    ours_cmd
        .arg("load")
        .arg(bundle)
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
    Ok(Row {
        name: "unpack load".into(),
        ratio: format!(
            "{:.2}x the time of docker load",
            ours.secs / docker_load.secs
        ),
        ok: ours.secs / docker_load.secs <= 1.1,
        peer: docker_load.secs,
        ours,
    })
}

fn rmi(tags: &[String]) {
    for t in tags {
        let _ = Command::new("docker").args(["rmi", "-f", t]).output();
    }
    let _ = Command::new("docker")
        .args(["image", "prune", "-f"])
        .output();
}
