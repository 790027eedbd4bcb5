//! Shipping the tool itself (issue 13, items 1 and 3): `cargo xtask dist` builds static
//! binaries, `.deb`s and signed `SHA256SUMS`; the static `airlock-unpack` runs from an
//! empty container and, carried beside a bundle by `build --with-unpacker`, verifies and
//! loads it inside `unshare -n` (and, carried beside parity parts, repairs the set it came
//! with: issue 14); the static `airlock-pack` and push build resolve
//! `localhost` (which is why they are static too); the `.deb`s install and remove with the
//! real dpkg; completions and man pages exist for every subcommand.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use airlock_tests::*;

/// What one `cargo xtask dist` run (once per test process) wrote, and the key it signed
/// with.
struct Dist {
    _tmp: tempfile::TempDir,
    out: PathBuf,
    public_key: PathBuf,
}

fn dist() -> &'static Dist {
    static DIST: OnceLock<Dist> = OnceLock::new();
    DIST.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        run_ok(
            Command::new(pack_bin())
                .args(["keygen", "-o"])
                .arg(tmp.path().join("key")),
        );
        // Named `dist` like the workspace's, so that a build without a --with-unpacker PATH
        // finds the static unpacker beside this airlock-pack (see unpacker.rs).
        let out = tmp.path().join("dist");
        let root = airlock_testkit::tools::workspace_root();
        run_ok(
            Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .current_dir(&root)
                .args(["run", "--quiet", "--locked", "-p", "xtask", "--", "dist"])
                .arg("--out")
                .arg(&out)
                .arg("--sign-key")
                .arg(tmp.path().join("key/airlock.key"))
                .env_remove("AIRLOCK_KEY_PASSWORD"),
        );
        Dist {
            public_key: tmp.path().join("key/airlock.pub"),
            out,
            _tmp: tmp,
        }
    })
}

fn ldd(bin: &Path) -> String {
    let o = Command::new("ldd").arg(bin).output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn dist_binaries_are_static_and_its_sums_check_with_standard_tools() {
    let d = dist();
    for bin in ["airlock-unpack", "airlock-unpack-push", "airlock-pack"] {
        let said = ldd(&d.out.join(bin));
        assert!(
            said.contains("statically linked") || said.contains("not a dynamic executable"),
            "{bin}: {said}"
        );
        let v = run_ok(Command::new(d.out.join(bin)).arg("--version"));
        assert!(v.starts_with(bin.trim_end_matches("-push")), "{bin}: {v}");
    }
    // The offline build has no push at all; the push build has it.
    let o = Command::new(d.out.join("airlock-unpack"))
        .args(["push", "--help"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    run_ok(Command::new(d.out.join("airlock-unpack-push")).args(["push", "--help"]));

    let listed = std::fs::read_to_string(d.out.join("SHA256SUMS")).unwrap();
    let names: Vec<&str> = listed.lines().map(|l| &l[66..]).collect();
    assert_eq!(
        names,
        [
            "airlock-unpack",
            "airlock-unpack-push",
            "airlock-pack",
            &format!("airlock-unpack_{}_amd64.deb", env!("CARGO_PKG_VERSION")),
            &format!("airlock-pack_{}_amd64.deb", env!("CARGO_PKG_VERSION")),
        ]
    );
    run_ok(
        Command::new("minisign")
            .args(["-Vm", "SHA256SUMS", "-p"])
            .arg(&d.public_key)
            .current_dir(&d.out),
    );
    run_ok(
        Command::new("sha256sum")
            .args(["-c", "--strict", "SHA256SUMS"])
            .current_dir(&d.out),
    );
    // The signature really covers the list: one changed digest and minisign refuses.
    let bad = tempfile::tempdir().unwrap();
    let mut flipped = listed.into_bytes();
    flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
    std::fs::write(bad.path().join("SHA256SUMS"), flipped).unwrap();
    std::fs::copy(
        d.out.join("SHA256SUMS.minisig"),
        bad.path().join("SHA256SUMS.minisig"),
    )
    .unwrap();
    let o = Command::new("minisign")
        .args(["-Vm", "SHA256SUMS", "-p"])
        .arg(&d.public_key)
        .current_dir(bad.path())
        .output()
        .unwrap();
    assert!(!o.status.success(), "{}", text(&o));
}

/// The subcommands `--help` lists (clap's own `help` aside).
fn subcommands(bin: &Path) -> Vec<String> {
    let help = run_ok(Command::new(bin).arg("--help"));
    let start = help.find("Commands:\n").expect("a Commands section") + 10;
    help[start..]
        .lines()
        .take_while(|l| l.starts_with("  "))
        // A wrapped description continues further in; a command starts at two spaces.
        .filter(|l| !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

#[test]
fn completions_and_man_pages_exist_for_every_subcommand() {
    for bin in [pack_bin(), unpack_bin()] {
        let name = bin.file_name().unwrap().to_string_lossy().into_owned();
        let subs = subcommands(&bin);
        assert!(
            subs.len() >= 4 && subs.contains(&"completions".to_string()),
            "{subs:?}"
        );
        for shell in ["bash", "zsh", "fish"] {
            let script = run_ok(Command::new(&bin).args(["completions", shell]));
            for s in &subs {
                assert!(script.contains(s.as_str()), "{name} {shell}: no {s}");
            }
        }
        let o = Command::new(&bin)
            .args(["completions", "tcsh"])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));

        let dir = tempfile::tempdir().unwrap();
        run_ok(Command::new(&bin).arg("man").arg(dir.path()));
        for page in std::iter::once(name.clone()).chain(subs.iter().map(|s| format!("{name}-{s}")))
        {
            let p = dir.path().join(format!("{page}.1"));
            let roff =
                std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            assert!(roff.contains(".TH") && roff.len() > 200, "{page}: {roff}");
        }
        // The real man renders the main page, subcommands named in it.
        if airlock_testkit::tools::have("man") {
            let shown = run_ok(
                Command::new("man")
                    .arg("-l")
                    .arg(dir.path().join(format!("{name}.1")))
                    .env("MANPAGER", "cat")
                    .env("MANWIDTH", "100"),
            );
            assert!(shown.contains(&subs[0]), "{shown}");
        }
    }
}

/// A spec naming the world's hello image through `localhost:PORT`: the static binaries must
/// resolve `localhost` themselves.
fn localhost_spec(w: &World) -> (PathBuf, String) {
    let port = w.registry.addr.rsplit_once(':').unwrap().1;
    let image = format!("localhost:{port}/e2e/hello:v1");
    let spec = w.path("local.toml");
    std::fs::write(
        &spec,
        format!(
            "name = \"local\"\nplatforms = [\"linux/amd64\"]\n\n[[image]]\nref = \"{image}\"\n\n\
             [registries.\"localhost:{port}\"]\ninsecure = true\n"
        ),
    )
    .unwrap();
    (spec, image)
}

/// `airlock-unpack` (at `bin`) `ARGS…` inside `unshare -n`, with this world's keys.
fn gap_unpack(w: &World, bin: &Path, cmd: &str, bundle: &Path, extra: &[&str]) -> Output {
    Command::new("unshare")
        .arg("-n")
        .arg(bin)
        .arg(cmd)
        .arg(bundle)
        .arg("--trust")
        .arg(w.path("pack-keys/airlock.pub"))
        .arg("--identity")
        .arg(w.path("host/host.key"))
        .args(extra)
        .env("AIRLOCK_STATE_DIR", w.path("airlock-state"))
        .env_remove("AIRLOCK_POLICY")
        .env_remove("AIRLOCK_TRUST_DIR")
        .output()
        .unwrap()
}

/// The first trip: the static airlock-pack locks and builds through `localhost:PORT`, with
/// the static unpacker beside the bundle (found without a PATH), listed in the signed sums
/// that `sha256sum -c` and `minisign -Vm` check; that very unpacker then verifies and loads
/// the bundle with no network.
#[test]
fn the_first_trip_carries_the_static_unpacker_which_loads_the_bundle_offline() {
    let d = dist();
    let w = World::new();
    let (spec, image) = localhost_spec(&w);
    let pack = d.out.join("airlock-pack");
    let cache = w.path("cache");
    run_ok(
        Command::new(&pack)
            .arg("lock")
            .arg(&spec)
            .arg("--cache")
            .arg(&cache),
    );
    let trip = w.path("trip");
    std::fs::create_dir(&trip).unwrap();
    let bundle = trip.join("local.airlock");
    let built = run_ok(
        Command::new(&pack)
            .arg("build")
            .arg(&spec)
            .arg("-o")
            .arg(&bundle)
            .arg("--sign-key")
            .arg(w.path("pack-keys/airlock.key"))
            .arg("--recipients-file")
            .arg(w.path("host/host.pub"))
            .args(["--with-unpacker", "--quiet", "--cache"])
            .arg(&cache),
    );
    assert!(built.contains("listed in its signed sums"), "{built}");
    let carried = trip.join("airlock-unpack");
    assert_eq!(
        std::fs::read(&carried).unwrap(),
        std::fs::read(d.out.join("airlock-unpack")).unwrap()
    );
    let sums = std::fs::read_to_string(trip.join("local.airlock.sums")).unwrap();
    assert_eq!(sums.lines().count(), 2, "{sums}");
    assert!(
        sums.lines().nth(1).unwrap().ends_with("  airlock-unpack"),
        "{sums}"
    );
    run_ok(
        Command::new("minisign")
            .args(["-Vm", "local.airlock.sums", "-p"])
            .arg(w.path("pack-keys/airlock.pub"))
            .current_dir(&trip),
    );
    run_ok(
        Command::new("sha256sum")
            .args(["-c", "--strict", "local.airlock.sums"])
            .current_dir(&trip),
    );

    // The carried binary, run from where it arrived, reads the bundle beside it.
    for extra in [&["--outer-only"][..], &[]] {
        let v = gap_unpack(&w, &carried, "verify", &bundle, extra);
        assert_ok(&v);
    }
    // So does the normal (dynamic, dev) build: it reads v2 sums too.
    assert_ok(&gap_unpack(
        &w,
        &unpack_bin(),
        "verify",
        &bundle,
        &["--outer-only"],
    ));
    {
        let _guard = docker_lock();
        let load = gap_unpack(&w, &carried, "load", &bundle, &[]);
        let result = std::panic::catch_unwind(|| {
            assert_ok(&load);
            assert_eq!(Engine::System.run(&image).trim(), w.marker);
        });
        docker_rmi(&[&image]);
        result.unwrap();
    }

    // A changed unpacker beside the bundle is named by the outer check...
    let original = std::fs::read(&carried).unwrap();
    let mut changed = original.clone();
    let last = changed.len() - 1;
    changed[last] ^= 1;
    std::fs::write(&carried, &changed).unwrap();
    let o = w.unpack("verify", &bundle, &["--outer-only"]);
    assert_refused(&o, 3, &["airlock-unpack: corrupt"]);
    // ...and one moved into place on the host is no problem of the bundle's.
    std::fs::remove_file(&carried).unwrap();
    assert_ok(&w.unpack("verify", &bundle, &["--outer-only"]));

    // A dynamically linked unpacker would not run on a bare host: refused before building.
    let o = Command::new(&pack)
        .arg("build")
        .arg(&spec)
        .arg("-o")
        .arg(w.path("refused.airlock"))
        .arg("--sign-key")
        .arg(w.path("pack-keys/airlock.key"))
        .arg("--with-unpacker")
        .arg(unpack_bin())
        .arg("--cache")
        .arg(&cache)
        .output()
        .unwrap();
    assert_refused(&o, 2, &["dynamically linked"]);
    assert!(!w.path("refused.airlock").exists());
}

/// `build --with-unpacker --split --parity 2`: the signed sums list the data parts, then
/// the parity parts, then the carried unpacker (sums v3, `carried=1 parity=2`), and the
/// standard tools check them all. On the gap host the carried unpacker itself, with no
/// network, repairs a lost data part and a damaged parity part beside it, and leaves
/// itself as it was. A damaged unpacker is named (exit 3) after the parts are repaired; a
/// missing one is ignored.
#[test]
fn a_split_bundle_with_parity_carries_the_unpacker_last_and_repairs_beside_it() {
    let d = dist();
    let w = World::new();
    w.lock_images(&["linux/amd64"], &[&w.hello]);
    let trip = w.path("trip");
    std::fs::create_dir(&trip).unwrap();
    let bundle = trip.join("hello.airlock");
    let mut args = w.build_args(&bundle, false);
    args.push("--with-unpacker".into());
    args.push(d.out.join("airlock-unpack").into());
    for a in ["--split", "256K", "--parity", "2", "--quiet"] {
        args.push(a.into());
    }
    assert_ok(&w.pack(&args));

    let sums = std::fs::read_to_string(trip.join("hello.airlock.sums")).unwrap();
    let names: Vec<&str> = sums.lines().map(|l| &l[66..]).collect();
    let data = names.len() - 3;
    assert!(data >= 2, "{sums}");
    let parts: Vec<String> = (1..=data)
        .map(|i| format!("hello.airlock.{i:03}"))
        .collect();
    assert_eq!(names[..data], parts, "{sums}");
    assert_eq!(
        names[data..],
        ["hello.airlock.p01", "hello.airlock.p02", "airlock-unpack"],
        "{sums}"
    );
    let sig = std::fs::read_to_string(trip.join("hello.airlock.sums.minisig")).unwrap();
    assert!(
        sig.contains(&format!(
            "trusted comment: airlock-bundle sums v3 parts={data} part-size=262144 total="
        )) && sig.contains(" carried=1 parity=2 code=leopard16-high stripe="),
        "{sig}"
    );
    let standard_tools = || {
        run_ok(
            Command::new("minisign")
                .args(["-Vm", "hello.airlock.sums", "-p"])
                .arg(w.path("pack-keys/airlock.pub"))
                .current_dir(&trip),
        );
        let checked = run_ok(
            Command::new("sha256sum")
                .args(["-c", "--strict", "hello.airlock.sums"])
                .current_dir(&trip),
        );
        assert_eq!(checked.matches(": OK\n").count(), data + 3, "{checked}");
    };
    standard_tools();

    // A data part lost and a parity part damaged on the way.
    let carried = trip.join("airlock-unpack");
    let unpacker = std::fs::read(&carried).unwrap();
    assert_eq!(
        unpacker,
        std::fs::read(d.out.join("airlock-unpack")).unwrap()
    );
    let lost = trip.join("hello.airlock.002");
    let lost_bytes = std::fs::read(&lost).unwrap();
    std::fs::remove_file(&lost).unwrap();
    let p01 = trip.join("hello.airlock.p01");
    let p01_bytes = std::fs::read(&p01).unwrap();
    std::fs::write(&p01, flip(&p01_bytes, 4321)).unwrap();

    let o = gap_unpack(
        &w,
        &carried,
        "repair",
        &trip.join("hello.airlock.sums"),
        &[],
    );
    assert_ok(&o);
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(
        said.contains("rebuilt hello.airlock.002\n")
            && said.contains(
                "rebuilt hello.airlock.p01 (the damaged file kept as hello.airlock.p01.damaged)"
            )
            // The parity covers the data and parity parts, not the carried unpacker.
            && said.contains(&format!("2 of {} files rebuilt", data + 2)),
        "{}",
        text(&o)
    );
    assert_eq!(std::fs::read(&lost).unwrap(), lost_bytes);
    assert_eq!(std::fs::read(&p01).unwrap(), p01_bytes);
    assert_eq!(
        std::fs::read(&carried).unwrap(),
        unpacker,
        "repair changed the unpacker"
    );
    assert!(!trip.join("airlock-unpack.damaged").exists());
    std::fs::remove_file(trip.join("hello.airlock.p01.damaged")).unwrap();
    standard_tools();
    assert_ok(&gap_unpack(&w, &carried, "verify", &bundle, &[]));

    // A damaged unpacker is not covered by the parity: repair (the dev build, since the
    // carried one is what broke) still rebuilds the lost part, then names the unpacker with
    // exit 3 and leaves it as it found it.
    let sums_path = trip.join("hello.airlock.sums");
    let damaged = flip(&unpacker, unpacker.len() / 2);
    std::fs::write(&carried, &damaged).unwrap();
    std::fs::remove_file(&lost).unwrap();
    let o = gap_unpack(&w, &unpack_bin(), "repair", &sums_path, &[]);
    assert_refused(
        &o,
        3,
        &[
            "airlock-unpack (carried beside the bundle) other than its signed sum",
            "parity parts do not cover it",
        ],
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("rebuilt hello.airlock.002\n"),
        "{}",
        text(&o)
    );
    assert_eq!(std::fs::read(&lost).unwrap(), lost_bytes);
    assert_eq!(std::fs::read(&carried).unwrap(), damaged);
    assert!(!trip.join("airlock-unpack.damaged").exists());

    // One moved away (installed on the host) is no problem of the set's, as for verify.
    std::fs::remove_file(&carried).unwrap();
    let o = gap_unpack(&w, &unpack_bin(), "repair", &sums_path, &[]);
    assert_ok(&o);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&format!(
            "all {} files match the signed sums; nothing to repair",
            data + 2
        )),
        "{}",
        text(&o)
    );
}

/// The static push build resolves `localhost` too: it pushes into a registry inside the
/// gap (a namespace with only loopback) named `localhost:5000`.
#[test]
fn the_static_push_build_pushes_to_a_registry_named_localhost() {
    let d = dist();
    let w = World::new();
    w.lock_images(&["linux/amd64"], &[&w.hello]);
    let bundle = w.build("hello.airlock", false);
    let data = w.path("gap-registry");
    std::fs::create_dir_all(&data).unwrap();
    let config = data.join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:5000\n",
            data.join("data").display()
        ),
    )
    .unwrap();
    let script = format!(
        "set -e\nip link set lo up\n\
         docker-registry serve {config} >{log} 2>&1 &\nREG=$!\ntrap 'kill $REG' EXIT\n\
         i=0\nuntil busybox wget -q -O /dev/null http://127.0.0.1:5000/v2/ 2>/dev/null; do\n\
           i=$((i+1)); [ $i -lt 200 ] || {{ echo registry did not start >&2; exit 99; }}; sleep 0.05\n\
         done\n\
         \"$UNPACK\" push {bundle} --registry localhost:5000 --insecure --prefix gap/ \
           --trust \"$TRUST\" --identity \"$IDENTITY\" --json --quiet\n\
         busybox wget -q -O - http://127.0.0.1:5000/v2/_catalog\n",
        config = config.display(),
        log = data.join("registry.log").display(),
        bundle = bundle.display(),
    );
    let o = Command::new("unshare")
        .args(["-n", "sh", "-c", &script])
        .env("UNPACK", d.out.join("airlock-unpack-push"))
        .env("TRUST", w.path("pack-keys/airlock.pub"))
        .env("IDENTITY", w.path("host/host.key"))
        .env("AIRLOCK_STATE_DIR", w.path("airlock-state"))
        .env("DOCKER_CONFIG", w.path("no-docker-config"))
        .env_remove("AIRLOCK_TRUST_DIR")
        .env_remove("REGISTRY_AUTH_FILE")
        .output()
        .unwrap();
    assert_ok(&o);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("\"gap/e2e/hello\""), "{}", text(&o));
}

/// An image holding nothing but the static unpacker (`docker import` of a one-file tar):
/// it prints its version and verifies a bundle mounted in, with no network.
#[test]
fn the_static_unpacker_runs_from_an_empty_container() {
    let d = dist();
    let w = World::new();
    w.lock_images(&["linux/amd64"], &[&w.hello]);
    let bundle = w.build("hello.airlock", false);
    assert!(
        bundle.starts_with(w.dir.path()),
        "mounted into the container as /b"
    );
    let tar_path = w.path("scratch.tar");
    {
        let mut t = tar::Builder::new(std::fs::File::create(&tar_path).unwrap());
        let mut h = tar::Header::new_gnu();
        let bin = std::fs::read(d.out.join("airlock-unpack")).unwrap();
        h.set_size(bin.len() as u64);
        h.set_mode(0o755);
        h.set_cksum();
        t.append_data(&mut h, "airlock-unpack", bin.as_slice())
            .unwrap();
        t.finish().unwrap();
    }
    let tag = format!("airlock-scratch-test:{}", std::process::id());
    let _guard = docker_lock();
    run_ok(
        Command::new("docker")
            .arg("import")
            .arg(&tar_path)
            .arg(&tag),
    );
    let result = std::panic::catch_unwind(|| {
        let files = run_ok(Command::new("docker").args([
            "image",
            "inspect",
            "--format",
            "{{len .RootFS.Layers}}",
            &tag,
        ]));
        assert_eq!(files.trim(), "1");
        let mount = format!("{}:/b:ro", w.dir.path().display());
        let docker = |args: &[&str]| {
            let mut c = Command::new("docker");
            c.args([
                "run",
                "--rm",
                "--network",
                "none",
                "-v",
                &mount,
                &tag,
                "/airlock-unpack",
            ])
            .args(args);
            c.output().unwrap()
        };
        let v = docker(&["--version"]);
        assert_ok(&v);
        assert!(String::from_utf8_lossy(&v.stdout).starts_with("airlock-unpack "));
        let v = docker(&[
            "verify",
            "/b/hello.airlock",
            "--trust",
            "/b/pack-keys/airlock.pub",
            "--identity",
            "/b/host/host.key",
        ]);
        assert_ok(&v);
        assert!(
            String::from_utf8_lossy(&v.stdout).contains("(verified)"),
            "{}",
            text(&v)
        );
        // Nothing else is in the image: no shell to fall back on.
        let o = Command::new("docker")
            .args([
                "run",
                "--rm",
                "--network",
                "none",
                &tag,
                "/bin/sh",
                "-c",
                "true",
            ])
            .output()
            .unwrap();
        assert!(!o.status.success(), "{}", text(&o));
    });
    let _ = Command::new("docker").args(["rmi", "-f", &tag]).output();
    result.unwrap();
}

/// Runs `dpkg -r` for the packages when dropped, so that a failing test leaves no package
/// installed.
struct Installed(&'static [&'static str]);

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").arg("-r").args(self.0).output();
    }
}

fn is_root() -> bool {
    run_ok(Command::new("id").arg("-u")).trim() == "0"
}

#[test]
fn the_debs_install_binaries_completions_man_pages_and_the_trust_dir_then_remove() {
    if !is_root() {
        eprintln!("SKIPPED: dpkg -i needs root (CI runs as root)");
        return;
    }
    let d = dist();
    let v = env!("CARGO_PKG_VERSION");
    for pkg in ["airlock-unpack", "airlock-pack"] {
        let deb = d.out.join(format!("{pkg}_{v}_amd64.deb"));
        let control = run_ok(Command::new("dpkg-deb").arg("-f").arg(&deb));
        for field in [
            format!("Package: {pkg}"),
            format!("Version: {v}"),
            "Architecture: amd64".into(),
            "Maintainer: ".into(),
            "Description: ".into(),
        ] {
            assert!(control.contains(&field), "{pkg}: {field}: {control}");
        }
        assert!(
            !control.contains("Depends:"),
            "static: depends on nothing: {control}"
        );
    }
    let before_trust = Path::new("/etc/airlock/trust.d").exists();
    let guard = Installed(&["airlock-pack", "airlock-unpack"]);
    run_ok(
        Command::new("dpkg")
            .arg("-i")
            .arg(d.out.join(format!("airlock-unpack_{v}_amd64.deb")))
            .arg(d.out.join(format!("airlock-pack_{v}_amd64.deb"))),
    );
    let mut installed = Vec::new();
    for (pkg, bin) in [
        ("airlock-unpack", "/usr/bin/airlock-unpack"),
        ("airlock-pack", "/usr/bin/airlock-pack"),
    ] {
        let out = run_ok(Command::new(bin).arg("--version"));
        assert_eq!(out.trim(), format!("{pkg} {v}"));
        let subs = subcommands(Path::new(bin));
        let mut files = vec![
            PathBuf::from(bin),
            format!("/usr/share/bash-completion/completions/{pkg}").into(),
            format!("/usr/share/zsh/vendor-completions/_{pkg}").into(),
            format!("/usr/share/fish/vendor_completions.d/{pkg}.fish").into(),
            format!("/usr/share/man/man1/{pkg}.1.gz").into(),
        ];
        files.extend(
            subs.iter()
                .map(|s| PathBuf::from(format!("/usr/share/man/man1/{pkg}-{s}.1.gz"))),
        );
        for f in &files {
            let m = std::fs::metadata(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            assert!(m.len() > 0, "{} is empty", f.display());
        }
        // dpkg knows each file as the package's.
        let listed = run_ok(Command::new("dpkg").args(["-L", pkg]));
        for f in &files {
            assert!(
                listed.lines().any(|l| Path::new(l) == f),
                "{pkg}: {}",
                f.display()
            );
        }
        installed.extend(files);
    }
    // The installed push build has push; the pack package carries the static offline one.
    run_ok(Command::new("/usr/bin/airlock-unpack").args(["push", "--help"]));
    let carried = Path::new("/usr/lib/airlock/airlock-unpack");
    let said = ldd(carried);
    assert!(
        said.contains("statically linked") || said.contains("not a dynamic executable"),
        "{said}"
    );
    installed.push(carried.to_path_buf());
    {
        use std::os::unix::fs::PermissionsExt as _;
        let m = std::fs::metadata("/etc/airlock/trust.d").unwrap();
        assert!(m.is_dir());
        assert_eq!(m.permissions().mode() & 0o7777, 0o755);
        let owner = std::os::unix::fs::MetadataExt::uid(&m);
        assert_eq!(owner, 0, "root owns the trust dir");
    }

    drop(guard);
    for f in &installed {
        assert!(!f.exists(), "{} left after dpkg -r", f.display());
    }
    let status = Command::new("dpkg")
        .args(["-s", "airlock-unpack"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&status.stdout).contains("Status: install ok installed"));
    if !before_trust {
        assert!(
            !Path::new("/etc/airlock/trust.d").exists(),
            "an empty trust dir goes with the package"
        );
    }
}
