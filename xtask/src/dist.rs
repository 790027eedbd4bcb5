//! `cargo xtask dist`: the release artifacts a user carries to hosts, in `dist/`. Every
//! binary is a static Linux x86_64 build (glibc with `+crt-static`): the offline
//! `airlock-unpack` (no HTTP client, no TLS: the one file to bootstrap a gap host with), the
//! `push`-capable `airlock-unpack-push` and `airlock-pack`. Those two resolve host names;
//! glibc 2.34 and later has its `files` and `dns` lookups built in, so a static build
//! resolves `localhost` from `/etc/hosts` without loading NSS modules (tests/ship.rs shows it
//! against a registry reached as `localhost:PORT`, and from an empty container). Then two
//! `.deb` packages with completions and man pages, and `SHA256SUMS` with its minisign
//! signature, so the tool crosses the gap the way bundles do.
//!
//! The static builds use their own target dir (`$CARGO_TARGET_DIR/dist`) and name the target
//! triple, so the flag reaches only the target's code (not build scripts or proc-macros)
//! and the normal build stays valid.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _};

use crate::util::{capture, cargo, root, scratch, sh};

const TRIPLE: &str = "x86_64-unknown-linux-gnu";
const VERSION: &str = env!("CARGO_PKG_VERSION");
const MAINTAINER: &str = "airlock maintainers <airlock@example.invalid>";

/// Where the `.deb` installs what, for each package (also what tests/ship.rs checks).
const BASH_DIR: &str = "usr/share/bash-completion/completions";
const ZSH_DIR: &str = "usr/share/zsh/vendor-completions";
const FISH_DIR: &str = "usr/share/fish/vendor_completions.d";
const MAN_DIR: &str = "usr/share/man/man1";

#[derive(Debug)]
struct Opts {
    out: PathBuf,
    sign_key: PathBuf,
}

fn parse(args: &[String]) -> anyhow::Result<Opts> {
    let mut out = root().join("dist");
    let mut sign_key = std::env::var_os("AIRLOCK_SIGN_KEY")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/airlock/airlock.key"))
        })
        .unwrap_or_default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .map(PathBuf::from)
                .context(format!("{a} needs a value"))
        };
        match a.as_str() {
            "--out" => out = value()?,
            "--sign-key" => sign_key = value()?,
            other => bail!(
                "dist: unknown argument {other:?} (usage: dist [--out DIR] [--sign-key FILE])"
            ),
        }
    }
    Ok(Opts { out, sign_key })
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let opts = parse(args)?;
    // The key is loaded first: a missing key should not cost a release build to find out.
    let key = airlock_bundle::sign::SigningKey::load(
        &opts.sign_key,
        std::env::var("AIRLOCK_KEY_PASSWORD")
            .ok()
            .map(zeroize::Zeroizing::new),
    )
    .with_context(|| {
        format!(
            "dist signs SHA256SUMS with --sign-key FILE, $AIRLOCK_SIGN_KEY or ~/.config/airlock/airlock.key ({})",
            opts.sign_key.display()
        )
    })?;
    let out = &opts.out;
    // Each artifact is overwritten by name; nothing else in --out DIR is touched (it may be
    // any directory), and SHA256SUMS lists only what this run wrote.
    std::fs::create_dir_all(out)?;

    let built = build_static(&["-p", "airlock-pack", "-p", "airlock-unpack"])?;
    copy_exec(&built.join("airlock-pack"), &out.join("airlock-pack"))?;
    copy_exec(
        &built.join("airlock-unpack"),
        &out.join("airlock-unpack-push"),
    )?;
    let built = build_static(&["-p", "airlock-unpack", "--no-default-features"])?;
    copy_exec(&built.join("airlock-unpack"), &out.join("airlock-unpack"))?;
    for b in ["airlock-pack", "airlock-unpack-push", "airlock-unpack"] {
        // The release profile keeps line tables for backtraces at home; what travels on
        // media is a third of the size without them (binutils comes with the linker).
        sh(Command::new("strip").arg(out.join(b)))?;
        check_static(&out.join(b))?;
    }
    check_offline(&out.join("airlock-unpack"))?;

    let staging = tempfile::tempdir_in(scratch()?)?;
    let unpack_deb = deb(
        staging.path(),
        out,
        &Package {
            name: "airlock-unpack",
            binary: &out.join("airlock-unpack-push"),
            extra: &[],
            description: "verify and load airlock bundles on an air-gapped host\n \
                Verifies a signed (and age-encrypted) airlock bundle offline, then loads its\n \
                container images into Docker, Podman or containerd, restores Ollama models\n \
                and files, extracts it, or pushes it into a registry inside the gap.\n \
                Statically linked. Trusted signing keys go in /etc/airlock/trust.d/.",
            trust_dir: true,
        },
    )?;
    let pack_deb = deb(
        staging.path(),
        out,
        &Package {
            name: "airlock-pack",
            binary: &out.join("airlock-pack"),
            extra: &[(
                &out.join("airlock-unpack"),
                "usr/lib/airlock/airlock-unpack",
            )],
            description: "pack container images and Ollama models into airlock bundles\n \
                Pins a spec's images, models and files in a lock, pulls them, and writes one\n \
                signed, encrypted bundle for an air-gapped host. Ships the static offline\n \
                airlock-unpack in /usr/lib/airlock for `build --with-unpacker`.\n \
                Statically linked.",
            trust_dir: false,
        },
    )?;

    let files = [
        "airlock-unpack".to_string(),
        "airlock-unpack-push".to_string(),
        "airlock-pack".to_string(),
        unpack_deb,
        pack_deb,
    ];
    let sums = write_signed_sums(out, &files, &key)?;
    eprintln!("\nxtask: dist: in {}:", out.display());
    for f in &files {
        let size = std::fs::metadata(out.join(f))?.len();
        eprintln!("  {f:<34} {:>6.1} MiB", size as f64 / (1 << 20) as f64);
    }
    eprintln!(
        "  {sums} (+ .minisig, key {})\n\
         linkage: airlock-unpack (offline), airlock-unpack-push and airlock-pack are all static\n\
         (ldd: statically linked); the .debs depend on nothing.\n\
         check: minisign -Vm {sums} -p airlock.pub && sha256sum -c {sums}",
        key.key_id()
    );
    Ok(())
}

/// A release build of `packages` for [`TRIPLE`] with a static C runtime, in the dist
/// target dir; the directory holding the binaries.
fn build_static(packages: &[&str]) -> anyhow::Result<PathBuf> {
    let target_dir = scratch()?.join("dist");
    sh(cargo()
        .args(["build", "--release", "--locked", "--target", TRIPLE])
        .args(packages)
        .env("CARGO_TARGET_DIR", &target_dir)
        .env_remove("RUSTFLAGS")
        .env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+crt-static"))?;
    Ok(target_dir.join(TRIPLE).join("release"))
}

fn copy_exec(from: &Path, to: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::copy(from, to).with_context(|| format!("{} -> {}", from.display(), to.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// `ldd` names a static binary "statically linked" (static-pie) or "not a dynamic
/// executable"; anything else lists libraries the gap host might not have.
fn check_static(bin: &Path) -> anyhow::Result<()> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .context("running ldd")?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !(said.contains("statically linked") || said.contains("not a dynamic executable")) {
        bail!("{} is not static; ldd says:\n{said}", bin.display());
    }
    Ok(())
}

/// The offline build has no `push` (and so no network client): clap must not know it.
fn check_offline(bin: &Path) -> anyhow::Result<()> {
    let out = Command::new(bin).args(["push", "--help"]).output()?;
    if out.status.success() {
        bail!(
            "{} knows `push`: the offline build was not the one copied",
            bin.display()
        );
    }
    Ok(())
}

#[derive(Debug)]
struct Package<'a> {
    name: &'a str,
    binary: &'a Path,
    /// Further files: (source, path in the package).
    extra: &'a [(&'a Path, &'a str)],
    description: &'a str,
    /// Creates `/etc/airlock/trust.d/`, where airlock-unpack looks for trusted keys.
    trust_dir: bool,
}

/// Builds `NAME_VERSION_amd64.deb` into `out` from a tree in `staging`: the binary in
/// /usr/bin, completions for bash, zsh and fish, a gzipped man page per command and
/// subcommand (generated by the binary itself from its clap definitions). Returns the
/// file name.
fn deb(staging: &Path, out: &Path, p: &Package) -> anyhow::Result<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let tree = staging.join(p.name);
    let mkdir = |rel: &str, mode: u32| -> anyhow::Result<PathBuf> {
        let d = tree.join(rel);
        std::fs::create_dir_all(&d)?;
        // Every directory on the way gets the usual 0755 (tempdir's 0700 must not leak in).
        for a in d.ancestors().take_while(|a| a.starts_with(&tree)) {
            std::fs::set_permissions(a, std::fs::Permissions::from_mode(0o755))?;
        }
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode))?;
        Ok(d)
    };
    copy_exec(p.binary, &mkdir("usr/bin", 0o755)?.join(p.name))?;
    for (from, to) in p.extra {
        let (dir, _) = to.rsplit_once('/').context("a path in the package")?;
        mkdir(dir, 0o755)?;
        copy_exec(from, &tree.join(to))?;
    }
    for (shell, dir, file) in [
        ("bash", BASH_DIR, p.name.to_string()),
        ("zsh", ZSH_DIR, format!("_{}", p.name)),
        ("fish", FISH_DIR, format!("{}.fish", p.name)),
    ] {
        let script = capture(Command::new(p.binary).args(["completions", shell]))?;
        if script.trim().is_empty() {
            bail!("{} completions {shell} printed nothing", p.name);
        }
        std::fs::write(mkdir(dir, 0o755)?.join(file), script)?;
    }
    let man = mkdir(MAN_DIR, 0o755)?;
    sh(Command::new(p.binary).arg("man").arg(&man))?;
    let pages: Vec<PathBuf> = std::fs::read_dir(&man)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    if pages.len() < 2 {
        bail!("{} man wrote {} pages", p.name, pages.len());
    }
    // -n: no name or time in the gzip header, so a rebuild gives the same bytes.
    sh(Command::new("gzip").arg("-9n").args(&pages))?;
    let doc = mkdir(&format!("usr/share/doc/{}", p.name), 0o755)?;
    std::fs::write(
        doc.join("copyright"),
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
         Upstream-Name: airlock\n\nFiles: *\nCopyright: the airlock authors\nLicense: Apache-2.0\n \
         On Debian systems the full text is in /usr/share/common-licenses/Apache-2.0.\n",
    )?;
    if p.trust_dir {
        mkdir("etc/airlock/trust.d", 0o755)?;
    }
    let installed_kib = du_kib(&tree)?;
    let control = mkdir("DEBIAN", 0o755)?;
    std::fs::write(
        control.join("control"),
        format!(
            "Package: {}\nVersion: {VERSION}\nArchitecture: amd64\nMaintainer: {MAINTAINER}\n\
             Installed-Size: {installed_kib}\nSection: admin\nPriority: optional\n\
             Homepage: https://example.invalid/airlock\nDescription: {}\n",
            p.name, p.description
        ),
    )?;
    let file = format!("{}_{VERSION}_amd64.deb", p.name);
    sh(Command::new("dpkg-deb")
        .args(["--build", "--root-owner-group", "-Zxz"])
        .arg(&tree)
        .arg(out.join(&file)))?;
    Ok(file)
}

/// The installed size in KiB, as dpkg counts it (each file rounded up).
fn du_kib(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let m = e.metadata()?;
        total += if m.is_dir() {
            du_kib(&e.path())?
        } else {
            m.len().div_ceil(1024)
        };
    }
    Ok(total)
}

/// `SHA256SUMS` (the format `sha256sum -c` reads) and `SHA256SUMS.minisig`, signed the way
/// bundle sums are (airlock-bundle's minisign signer, so `minisign -Vm` checks it).
fn write_signed_sums(
    out: &Path,
    files: &[String],
    key: &airlock_bundle::sign::SigningKey,
) -> anyhow::Result<&'static str> {
    let mut text = String::new();
    for f in files {
        let r = std::fs::File::open(out.join(f)).with_context(|| f.clone())?;
        let (digest, _) = airlock_bundle::hashing::digest_reader(r)?;
        text.push_str(&format!("{}  {f}\n", digest.hex()));
    }
    std::fs::write(out.join("SHA256SUMS"), &text)?;
    let sig = key.sign_with(
        text.as_bytes(),
        &format!("airlock dist {VERSION} SHA256SUMS"),
    );
    std::fs::write(out.join("SHA256SUMS.minisig"), sig)?;
    Ok("SHA256SUMS")
}
