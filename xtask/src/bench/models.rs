//! `cargo xtask bench models` (also run after the image rows): `airlock-pack build` of a
//! 2 GiB Ollama model from the loopback registry vs `curl -o` of its blob, `build
//! --from-local` of it from an Ollama store (signed, encrypted) vs `openssl dgst -sha256` of
//! the store's blobs, `airlock-unpack
//! load` into a models directory vs `cp -r` of the same store (with the sha256 floor), and
//! into a Docker volume vs `docker cp`.

use std::path::Path;
use std::process::Command;

use airlock_testkit::ollama::OllamaModel;
use airlock_testkit::TestRegistry;

use super::{faster, in_turns, measure, measure_best, report, Measured, Row};
use crate::util::{capture, sh};

pub fn run(bins: &Path) -> anyhow::Result<()> {
    let pack = bins.join("airlock-pack");
    let unpack = bins.join("airlock-unpack");
    let registry = TestRegistry::start();
    let work = tempfile::tempdir_in(crate::util::scratch()?)?;
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
    let bundle = w.join("model.airlock");
    let blob_url = format!(
        "http://{}/v2/library/big/blobs/{}",
        registry.addr, big.digest
    );
    rows.push(pack_row(&pack, w, &spec, &blob_url, &bundle)?);

    // Load into a models dir vs cp -r of the same store (page cache warm for both).
    let store = w.join("store");
    model.install_local(&store, &airlock_bundle::ollama::ModelName::parse(&name)?);
    rows.push(local_row(&pack, &unpack, w, &name, &store)?);
    rows.extend(dir_rows(&unpack, w, &bundle, &store, &big.path)?);
    rows.extend(volume_rows(&unpack, w, &bundle, &store)?);

    let size = std::fs::metadata(&bundle)?.len();
    if std::env::var_os("AIRLOCK_BENCH_KEEP").is_some() {
        eprintln!("bench: kept {} (AIRLOCK_BENCH_KEEP)", work.keep().display());
    }
    report(&rows, "1 model", size)
}

/// `airlock-pack build` of the model (`spec`) into `bundle` vs `curl -o` of its blob at
/// `blob_url`, both cold. Leaves `bundle`.
fn pack_row(
    pack: &Path,
    w: &Path,
    spec: &Path,
    blob_url: &str,
    bundle: &Path,
) -> anyhow::Result<Row> {
    // Pack vs curl: both cold (curl has no cache; ours starts from an empty one), taken in
    // turns so that both see the same moments of this shared machine; best of three each.
    let blob_out = w.join("curl.blob");
    let mut curl_cmd = Command::new("curl");
    curl_cmd.args(["-sSf", "-o"]).arg(&blob_out).arg(blob_url);
    let mut pack_cmd = Command::new(pack);
    pack_cmd
        .arg("build")
        .arg(spec)
        .arg("-o")
        .arg(bundle)
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
                let _ = std::fs::remove_file(bundle);
            },
            &mut pack_cmd,
        ),
    )?;
    let _ = std::fs::remove_dir_all(w.join("cache"));
    Ok(Row::time_of(
        "pack build, 2 GiB model, cold",
        ours,
        ("curl -o", curl.secs),
        Some(1.2),
    ))
}

/// `airlock-pack build --from-local` of model `name` from the Ollama `store`, signed and
/// encrypted, vs `openssl dgst -sha256` of the store's blobs, in turns with the page cache
/// warm for both. Our floor is two sha256 passes (the store's blobs, the written parts) on
/// the two cores, plus the encryption and the copy into the page cache that a hash alone
/// does not pay.
fn local_row(
    pack: &Path,
    unpack: &Path,
    w: &Path,
    name: &str,
    store: &Path,
) -> anyhow::Result<Row> {
    let spec = w.join("local.toml");
    std::fs::write(
        &spec,
        format!("name = \"local\"\n[[model]]\nname = \"{name}\"\nsource = \"local\"\npath = \"/unused\"\n"),
    )?;
    sh(Command::new(unpack)
        .args(["keygen", "-o"])
        .arg(w.join("local-host")))?;
    sh(Command::new(pack)
        .arg("lock")
        .arg(&spec)
        .arg("--ollama-models")
        .arg(store)
        .arg("-q")
        .arg("--cache")
        .arg(w.join("local-cache")))?;
    let blobs: Vec<_> = std::fs::read_dir(store.join("blobs"))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    let mut openssl = Command::new("openssl");
    openssl.args(["dgst", "-sha256"]).args(&blobs);
    let out = w.join("local.airlock");
    let mut ours = Command::new(pack);
    ours.arg("build")
        .arg(&spec)
        .arg("-o")
        .arg(&out)
        .arg("--sign-key")
        .arg(w.join("keys/airlock.key"))
        .arg("--recipients-file")
        .arg(w.join("local-host/host.pub"))
        .arg("--ollama-models")
        .arg(store)
        .arg("-q")
        .arg("--cache")
        .arg(w.join("local-cache"));
    let remove = || {
        for p in [
            out.clone(),
            w.join("local.airlock.sums"),
            w.join("local.airlock.sums.minisig"),
        ] {
            let _ = std::fs::remove_file(p);
        }
    };
    capture(
        Command::new("cat")
            .args(&blobs)
            .stdout(std::process::Stdio::null()),
    )?;
    let (peer, ours) = in_turns(3, (&|| {}, &mut openssl), (&remove, &mut ours))?;
    remove();
    Ok(Row::time_of(
        "pack build --from-local, 2 GiB store, encrypted",
        ours,
        ("openssl dgst", peer.secs),
        Some(1.5),
    ))
}

/// `airlock-unpack load` of `bundle` into a models directory (fresh, then again with all
/// present) vs `cp -r` of the same `store`, and the sha256 of the model's `blob` as the
/// floor of any verifying load.
fn dir_rows(
    unpack: &Path,
    w: &Path,
    bundle: &Path,
    store: &Path,
    blob: &Path,
) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    capture(
        Command::new("cat")
            .arg(bundle)
            .arg(blob)
            .stdout(std::process::Stdio::null()),
    )?;
    let cp_dest = w.join("cp-dest");
    let cp = measure_best(
        2,
        &|| {
            let _ = std::fs::remove_dir_all(&cp_dest);
        },
        Command::new("cp").arg("-r").arg(store).arg(&cp_dest),
    )?;
    let _ = std::fs::remove_dir_all(&cp_dest);
    let restored = w.join("restored");
    let mut into_dir = Command::new(unpack);
    into_dir
        .arg("load")
        .arg(bundle)
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
        Command::new("openssl").args(["dgst", "-sha256"]).arg(blob),
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

    Ok(rows)
}

/// `airlock-unpack load` of `bundle` into a fresh Docker volume (and again, all present) vs
/// `docker cp` of the same `store` into one.
fn volume_rows(unpack: &Path, w: &Path, bundle: &Path, store: &Path) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
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
    let mut into_volume = Command::new(unpack);
    into_volume
        .arg("load")
        .arg(bundle)
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

    Ok(rows)
}
