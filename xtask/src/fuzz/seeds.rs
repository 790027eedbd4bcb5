//! `cargo xtask fuzz-seeds`: the seed corpus in `fuzz/seeds/<target>`, written afresh from
//! what the real tools produce (a loopback registry, `airlock-pack`, `airlock-unpack`, `age`,
//! and registries' auth challenges), so that fuzzing starts from realistic inputs.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use airlock_testkit::ollama::OllamaModel;
use airlock_testkit::{fixtures, ImageSpec, Layer, TestRegistry};
use anyhow::Context as _;

use crate::util::root;

/// The recipient of the fuzzing-only identity in `fuzz/src/agestream.rs`.
const FUZZ_RECIPIENT: &str = "age1nxrjrrkanpk4stxafh3c24j9v25x27h78mwnfl2lq57vyjw6yapqytcyth";

/// The seed directory being written: one subdirectory per target.
struct Seeds<'a> {
    dir: &'a Path,
}

impl Seeds<'_> {
    fn put(&self, target: &str, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
        let dir = self.dir.join(target);
        fs::create_dir_all(&dir)?;
        fs::write(dir.join(name), bytes)?;
        Ok(())
    }
}

/// Targets whose first byte picks a mode (see their module docs).
fn with_mode(mode: u8, bytes: &[u8]) -> Vec<u8> {
    [&[mode][..], bytes].concat()
}

/// What the bundles are made of: a loopback registry with a tiny image and an Ollama model,
/// carried files, and the spec naming them (in the work directory).
struct Sources {
    /// Kept running: the lock and the builds pull from it.
    _registry: TestRegistry,
    image: String,
    model: OllamaModel,
    model_name: String,
    files: PathBuf,
    spec: PathBuf,
}

/// Writes `fuzz/seeds/` (`dir`) afresh: a loopback registry with a tiny image and an Ollama
/// model, a spec with carried files, its lock, plain, encrypted, split and delta bundles
/// built by `airlock-pack`, the headers and sums in them, an inventory from `airlock-unpack`,
/// and the challenges real registries send. Signatures, keys and times differ on every run;
/// commit what it writes.
pub(super) fn write(dir: &Path) -> anyhow::Result<()> {
    crate::util::install_deps()?;
    let bins = crate::util::build_bins(false)?;
    let pack = bins.join("airlock-pack");
    let unpack = bins.join("airlock-unpack");
    let work = tempfile::tempdir()?;
    let w = work.path();
    let seeds = Seeds { dir };
    let src = sources(w, &seeds)?;
    bundles(&pack, &unpack, w, &src, &seeds)?;
    names(&src, &seeds)?;
    challenges(&seeds)?;
    eprintln!("xtask: fuzz seeds written to {}", dir.display());
    Ok(())
}

/// Starts the registry with the image and model, writes the carried files and the spec (and
/// the spec seeds).
fn sources(w: &Path, seeds: &Seeds) -> anyhow::Result<Sources> {
    let registry = TestRegistry::start();
    let layer = Layer::files(
        &w.join("layers"),
        &[("etc/motd", b"carried by airlock-fuzz seeds\n", 0o644)],
    );
    let image = format!("{}/fuzz/tiny:v1", registry.addr);
    fixtures::push(
        &registry.addr,
        "fuzz/tiny:v1",
        &[ImageSpec::new(vec![layer], &["/bin/true"])],
    );
    let model = OllamaModel::generate(&w.join("model"), 256, 7);
    model.push(&registry.addr, "library/tiny", "q4");
    let model_name = format!("{}/library/tiny:q4", registry.addr);
    let files = w.join("conf");
    fs::create_dir_all(files.join("rules"))?;
    fs::write(files.join("app.yml"), "listen: 127.0.0.1:9090\n")?;
    fs::write(files.join(".env"), "TOKEN=not-a-secret\n")?;
    fs::write(files.join("rules/alerts.yml"), "groups: []\n")?;
    let spec = w.join("fuzz.toml");
    let spec_text = format!(
        "name = \"fuzz\"\nplatforms = [\"linux/amd64\"]\n\n[[image]]\nref = \"{image}\"\n\n\
         [[model]]\nname = \"{model_name}\"\nvolume = \"ollama-data\"\n\n\
         [[files]]\nsource = \"conf\"\npath = \"/srv/fuzz\"\n\n\
         [registries.\"{}\"]\ninsecure = true\n",
        registry.addr
    );
    fs::write(&spec, &spec_text)?;
    seeds.put("spec", "fuzz.toml", spec_text.as_bytes())?;
    let llm_stack = fs::read(root().join("manifests/llm-stack.toml"))?;
    seeds.put("spec", "llm-stack.toml", &llm_stack)?;

    Ok(Sources {
        _registry: registry,
        image,
        model,
        model_name,
        files,
        spec,
    })
}

/// Locks the spec and builds plain, split, encrypted and delta bundles from it (with the
/// gap host's inventory the delta is made against), and an `age` stream from the `age`
/// tool: the tar, header, sums, agestream, lock and inventory seeds.
fn bundles(
    pack: &Path,
    unpack: &Path,
    w: &Path,
    src: &Sources,
    seeds: &Seeds,
) -> anyhow::Result<()> {
    let Sources {
        model,
        model_name,
        files,
        spec,
        ..
    } = src;
    let run = |c: &mut Command| crate::util::sh(c);
    run(Command::new(pack)
        .args(["keygen", "-o"])
        .arg(w.join("keys")))?;
    let cache = w.join("cache");
    run(Command::new(pack)
        .arg("lock")
        .arg(spec)
        .arg("--cache")
        .arg(&cache))?;
    seeds.put("lock", "fuzz.lock", &fs::read(w.join("fuzz.lock"))?)?;
    fs::write(w.join("fuzz.pub"), format!("{FUZZ_RECIPIENT}\n"))?;
    let build = |out: &str, extra: &[&std::ffi::OsStr]| -> anyhow::Result<PathBuf> {
        let out = w.join(out);
        run(Command::new(pack)
            .arg("build")
            .arg(spec)
            .arg("-o")
            .arg(&out)
            .arg("--sign-key")
            .arg(w.join("keys/airlock.key"))
            .arg("--cache")
            .arg(&cache)
            .arg("--quiet")
            .args(extra))?;
        Ok(out)
    };

    // A plain bundle: the tar framing, its header, its sums.
    let plain = build("plain.airlock", &[])?;
    let bundle = fs::read(&plain)?;
    seeds.put("tar", "plain", &with_mode(0, &bundle))?;
    seeds.put("tar", "plain-partial-reads", &with_mode(2, &bundle))?;
    seeds.put("header", "plain", &first_entry(&bundle)?)?;
    seeds.put("sums", "plain", &fs::read(w.join("plain.airlock.sums"))?)?;

    // Split into parts: a sums file of several lines.
    build("split.airlock", &["--split".as_ref(), "4096".as_ref()])?;
    seeds.put("sums", "split", &fs::read(w.join("split.airlock.sums"))?)?;

    // Encrypted to the fuzzing identity: a real age stream, as `airlock-pack` writes it.
    let enc = build(
        "enc.airlock",
        &["--recipients-file".as_ref(), w.join("fuzz.pub").as_os_str()],
    )?;
    seeds.put("agestream", "bundle", &with_mode(0, &fs::read(&enc)?))?;
    // And as the `age` tool writes it.
    let age_out = w.join("motd.age");
    run(Command::new("age")
        .args(["-r", FUZZ_RECIPIENT, "-o"])
        .arg(&age_out)
        .arg(files.join("app.yml")))?;
    seeds.put("agestream", "age-tool", &with_mode(0, &fs::read(&age_out)?))?;
    seeds.put(
        "agestream",
        "structured",
        &with_mode(1, b"airlock fuzz plaintext"),
    )?;

    // The gap host's inventory (its Ollama store has the model), and a delta against it.
    let models = w.join("models");
    model.install_local(
        &models,
        &airlock_bundle::ollama::ModelName::parse(model_name)?,
    );
    let inventory = w.join("host.inventory");
    run(Command::new(unpack)
        .args(["inventory", "--no-engine", "--ollama-models"])
        .arg(&models)
        .arg("-o")
        .arg(&inventory))?;
    seeds.put("inventory", "no-engine", &fs::read(&inventory)?)?;
    let delta = build("delta.airlock", &["--have".as_ref(), inventory.as_os_str()])?;
    seeds.put("header", "delta", &first_entry(&fs::read(&delta)?)?)?;

    Ok(())
}

/// Ollama manifests and names, and image references, as the `ollama` and `image_ref`
/// targets read them.
fn names(src: &Sources, seeds: &Seeds) -> anyhow::Result<()> {
    let Sources {
        image,
        model,
        model_name,
        ..
    } = src;
    seeds.put("ollama", "manifest.json", &model.manifest)?;
    seeds.put("ollama", "config.json", &fs::read(&model.config.path)?)?;
    for (i, n) in [
        model_name.as_str(),
        "llama3",
        "hf.co/bartowski/Llama-3.2-1B-GGUF:Q4_K_M",
    ]
    .iter()
    .enumerate()
    {
        seeds.put("ollama", &format!("name-{i}"), n.as_bytes())?;
    }
    for (i, r) in [
        image.as_str(),
        "busybox",
        "ghcr.io/open-webui/open-webui:main",
        "docker.io/library/alpine@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "[::1]:5000/a/b:c",
    ]
    .iter()
    .enumerate()
    {
        seeds.put("image_ref", &format!("ref-{i}"), r.as_bytes())?;
    }

    Ok(())
}

/// What real registries answer an anonymous request with.
fn challenges(seeds: &Seeds) -> anyhow::Result<()> {
    let basic = TestRegistry::start_with_auth("u", "p");
    seeds.put(
        "www_authenticate",
        "basic",
        challenge(&basic.addr, "/v2/")?.as_bytes(),
    )?;
    let token = airlock_testkit::token::TokenRegistry::start("u", "p");
    seeds.put(
        "www_authenticate",
        "bearer",
        challenge(&token.registry.addr, "/v2/")?.as_bytes(),
    )?;
    seeds.put(
        "www_authenticate",
        "bearer-scope",
        challenge(&token.registry.addr, "/v2/fuzz/tiny/manifests/v1")?.as_bytes(),
    )?;
    Ok(())
}

/// The first entry of a plain bundle: `airlock/header.json`.
fn first_entry(bundle: &[u8]) -> anyhow::Result<Vec<u8>> {
    use airlock_bundle::tarfmt::{parse_header, BLOCK};
    let block: &[u8; BLOCK] = bundle
        .first_chunk()
        .context("bundle shorter than a block")?;
    let h = parse_header(block)
        .map_err(anyhow::Error::msg)?
        .context("empty archive")?;
    Ok(bundle[BLOCK..BLOCK + h.size as usize].to_vec())
}

/// The `WWW-Authenticate` header a registry answers an anonymous GET of `path` with.
fn challenge(addr: &str, path: &str) -> anyhow::Result<String> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr)?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    text.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("www-authenticate")
                .then(|| v.trim().to_string())
        })
        .with_context(|| format!("no WWW-Authenticate from {addr}{path}"))
}
