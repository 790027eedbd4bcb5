//! `cargo xtask demo`: the whole job on an embedded default. A loopback registry gets two
//! generated images and a generated Ollama model; with the LLM stack's Prometheus config as
//! carried files they are locked, packed (signed, encrypted), verified and loaded inside a
//! network namespace with no network (images into the engine, the model and the files into
//! Docker volumes), then the images run and a container shows the restored Ollama store.

use std::path::Path;
use std::process::Command;

use airlock_testkit::{fixtures, ImageSpec, Layer, TestRegistry};
use anyhow::Context as _;

use crate::util::{build_bins, capture, install_deps, sh};

const MODEL_VOLUME: &str = "airlock-demo-ollama";
const FILES_VOLUME: &str = "airlock-demo-prometheus";

fn step(n: u32, what: &str) {
    eprintln!("\n\x1b[1m[{n}] {what}\x1b[0m");
}

pub fn run() -> anyhow::Result<()> {
    step(
        1,
        "installing missing tools (docker-registry, skopeo, age, minisign, busybox-static)",
    );
    install_deps()?;
    capture(Command::new("docker").args(["version", "--format", "{{.Server.Version}}"]))
        .context("the Docker engine must be running")?;

    step(2, "building airlock-pack and airlock-unpack");
    let bins = build_bins(false)?;
    let pack = bins.join("airlock-pack");
    let unpack = bins.join("airlock-unpack");

    step(
        3,
        "starting a loopback registry and pushing two generated images",
    );
    let registry = TestRegistry::start();
    let work = tempfile::tempdir()?;
    let w = work.path();
    // The gap side's anti-rollback record stays with this run, not in /var/lib/airlock.
    std::env::set_var("AIRLOCK_STATE_DIR", w.join("airlock-state"));
    let (hello, motd) = publish(&registry, w)?;
    pack_side(&pack, &unpack, w)?;
    transfer_station(w)?;
    gap_host(&unpack, w)?;

    step(
        10,
        "run the loaded images, and look into the restored volumes",
    );
    let result = show(&hello, &motd);

    step(11, "cleaning up");
    for image in [&hello, &motd] {
        let _ = Command::new("docker").args(["rmi", "-f", image]).output();
    }
    let _ = Command::new("docker")
        .args(["volume", "rm", MODEL_VOLUME, FILES_VOLUME])
        .output();
    drop(registry);
    result?;
    eprintln!(
        "\ndemo complete: packed, carried, verified offline; loaded and ran 2 images, restored 1 model and its files"
    );
    Ok(())
}

/// Two images sharing a layer and an Ollama model in the loopback registry, and the spec
/// naming them (through a compose file) with the LLM stack's Prometheus config as files;
/// returns the two images.
fn publish(registry: &TestRegistry, w: &Path) -> anyhow::Result<(String, String)> {
    let layers = w.join("layers");
    let busybox = Layer::busybox(&layers);
    let note = Layer::files(
        &layers,
        &[(
            "etc/motd",
            b"carried across the airlock by airlock-demo\n",
            0o644,
        )],
    );
    let hello = format!("{}/demo/hello:v1", registry.addr);
    let motd = format!("{}/demo/motd:v1", registry.addr);
    fixtures::push(
        &registry.addr,
        "demo/hello:v1",
        &[ImageSpec::new(
            vec![busybox.clone()],
            &[
                "/bin/busybox",
                "echo",
                "hello from the other side of the airlock",
            ],
        )],
    );
    fixtures::push(
        &registry.addr,
        "demo/motd:v1",
        &[ImageSpec::new(
            vec![busybox, note],
            &["/bin/busybox", "cat", "/etc/motd"],
        )],
    );
    eprintln!("    {hello}\n    {motd}  (shares the busybox layer)");
    let model = airlock_testkit::ollama::OllamaModel::generate(&w.join("model"), 16 << 20, 42);
    model.push(&registry.addr, "library/tinyllama", "latest");
    let model_name = format!("{}/library/tinyllama:latest", registry.addr);
    eprintln!("    {model_name}  (an Ollama model: 16 MiB of weights, template, params, license)");

    let spec = w.join("demo.toml");
    let prometheus = crate::util::root().join("manifests/llm-stack/prometheus");
    // The images come from a compose file, its registry interpolated from the spec.
    std::fs::create_dir_all(w.join("stack"))?;
    std::fs::write(
        w.join("stack/docker-compose.yml"),
        "services:\n  hello:\n    image: ${REGISTRY}/demo/hello:v1\n  \
         motd:\n    image: ${REGISTRY}/demo/motd:${MOTD_TAG:-v1}\n",
    )?;
    std::fs::write(
        &spec,
        format!(
            "name = \"demo\"\nplatforms = [\"linux/amd64\"]\n\n\
             [[compose]]\nfile = \"stack/docker-compose.yml\"\npath = \"{}\"\n\
             env = {{ REGISTRY = \"{}\" }}\n\n\
             [[model]]\nname = \"{model_name}\"\nvolume = \"{MODEL_VOLUME}\"\n\n\
             [[files]]\nsource = \"{}\"\nvolume = \"{FILES_VOLUME}\"\n\n\
             [registries.\"{}\"]\ninsecure = true\n",
            w.join("gap/opt/demo-stack").display(),
            registry.addr,
            prometheus.display(),
            registry.addr
        ),
    )?;
    Ok((hello, motd))
}

/// The connected side: keys on both sides, then lock and build.
fn pack_side(pack: &Path, unpack: &Path, w: &Path) -> anyhow::Result<()> {
    let spec = w.join("demo.toml");
    step(
        4,
        "keys: a signing key on the connected side, an age identity on the gap host",
    );
    sh(Command::new(pack)
        .args(["keygen", "-o"])
        .arg(w.join("pack-keys")))?;
    sh(Command::new(unpack)
        .args(["keygen", "-o"])
        .arg(w.join("host")))?;

    step(5, "airlock-pack lock: pin every tag to a digest");
    sh(Command::new(pack)
        .arg("lock")
        .arg(&spec)
        .arg("--cache")
        .arg(w.join("cache")))?;
    eprintln!("{}", std::fs::read_to_string(w.join("demo.lock"))?);

    step(
        6,
        "airlock-pack build: one signed bundle, encrypted to the gap host, in 8 MiB parts with signed sums",
    );
    let bundle = w.join("demo.airlock");
    sh(Command::new(pack)
        .arg("build")
        .arg(&spec)
        .arg("-o")
        .arg(&bundle)
        .arg("--sign-key")
        .arg(w.join("pack-keys/airlock.key"))
        .arg("--recipients-file")
        .arg(w.join("host/host.pub"))
        .args(["--split", "8M"])
        .arg("--cache")
        .arg(w.join("cache")))?;
    Ok(())
}

/// What a transfer station can check with standard tools and no key.
fn transfer_station(w: &Path) -> anyhow::Result<()> {
    step(
        7,
        "a transfer station, with standard tools and no key: minisign -Vm demo.airlock.sums && sha256sum -c",
    );
    sh(Command::new("minisign")
        .arg("-Vm")
        .arg(w.join("demo.airlock.sums"))
        .arg("-p")
        .arg(w.join("pack-keys/airlock.pub")))?;
    sh(Command::new("sha256sum")
        .args(["-c", "demo.airlock.sums"])
        .current_dir(w))?;
    Ok(())
}

/// The gap host, without any network: verify, inspect, load.
fn gap_host(unpack: &Path, w: &Path) -> anyhow::Result<()> {
    let first_part = w.join("demo.airlock.001");
    let offline = |args: &[&str]| -> Command {
        let mut c = Command::new("unshare");
        c.arg("-n").arg(unpack).args(args).arg(&first_part);
        c.arg("--trust").arg(w.join("pack-keys/airlock.pub"));
        c.arg("--identity").arg(w.join("host/host.key"));
        c
    };
    step(
        8,
        "on the gap host (unshare -n: no network at all): verify (reading across the parts), inspect",
    );
    sh(&mut offline(&["verify"]))?;
    sh(&mut offline(&["inspect"]))?;

    step(
        9,
        "on the gap host: load images into the engine, the model and files into volumes (all or nothing)",
    );
    sh(&mut offline(&["load"]))?;
    Ok(())
}

/// The loaded images run, and a container shows the restored model and files.
fn show(hello: &str, motd: &str) -> anyhow::Result<()> {
    for image in [hello, motd] {
        let out =
            capture(Command::new("docker").args(["run", "--rm", "--network", "none", image]))?;
        eprintln!("    docker run {image}\n    > {}", out.trim());
    }
    let out = capture(Command::new("docker").args([
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        &format!("{MODEL_VOLUME}:/root/.ollama:ro"),
        "-v",
        &format!("{FILES_VOLUME}:/etc/prometheus:ro"),
        hello,
        "/bin/busybox",
        "find",
        "/root/.ollama/models",
        "/etc/prometheus",
        "-type",
        "f",
    ]))?;
    eprintln!("    the Ollama store and the Prometheus config, as a container sees them:");
    for line in out.lines() {
        eprintln!("    > {line}");
    }
    Ok(())
}
