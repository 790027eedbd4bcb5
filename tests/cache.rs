//! The blob cache against a real registry: a cold build streams layers into the bundle and
//! writes each byte once; the finished bundle serves the next build (with no network), a
//! tampered one is caught and the blob fetched again; two concurrent builds fetch a shared
//! blob once; `cache ls` and `cache prune` keep what a lock needs.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use airlock_bundle::Digest;
use airlock_testkit::{fixtures, ImageSpec, Layer};
use airlock_tests::*;
use serde_json::Value;

/// The layer blobs in the cache's `blobs/` (documents are small; layers here are not).
fn cached_blobs(w: &World) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = std::fs::read_dir(w.path("cache/blobs/sha256"))
        .unwrap()
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .collect();
    v.sort();
    v
}

fn stores(w: &World) -> usize {
    std::fs::read_dir(w.path("cache/stores"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .count()
}

/// Runs `airlock-pack ARGS --cache DIR` under a shell that prints the I/O accounting of the
/// finished child (a reaped child's counters are added to its parent's): `wchar` is every
/// byte the build passed to write(2).
fn pack_counting_writes(w: &World, args: &[std::ffi::OsString]) -> (Output, u64) {
    let o = Command::new("sh")
        .arg("-c")
        .arg("\"$@\" || exit $?; cat /proc/$$/io >&2")
        .arg("sh")
        .arg(pack_bin())
        .args(args)
        .arg("--cache")
        .arg(w.path("cache"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    let wchar = err
        .lines()
        .find_map(|l| l.strip_prefix("wchar: "))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0);
    (o, wchar)
}

fn file_size(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().len()
}

/// Writes `NAME.toml` naming `repos` (`repo:tag`) at `addr` (the registry, or a proxy in
/// front of it) and locks it.
fn spec_at(w: &World, name: &str, addr: &str, repos: &[&str]) -> PathBuf {
    let spec = w.path(&format!("{name}.toml"));
    let mut text = format!("name = \"{name}\"\nplatforms = [\"linux/amd64\"]\n");
    for r in repos {
        text.push_str(&format!("\n[[image]]\nref = \"{addr}/{r}\"\n"));
    }
    text.push_str(&format!("\n[registries.\"{addr}\"]\ninsecure = true\n"));
    std::fs::write(&spec, text).unwrap();
    assert_ok(&w.pack(["lock", spec.to_str().unwrap()]));
    spec
}

/// `build SPEC -o OUT --sign-key KEY [--recipients-file host.pub] --quiet EXTRA…`.
fn build_args(
    w: &World,
    spec: &Path,
    out: &Path,
    plain: bool,
    extra: &[&str],
) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = vec![
        "build".into(),
        spec.into(),
        "-o".into(),
        out.into(),
        "--sign-key".into(),
        w.path("pack-keys/airlock.key").into(),
        "--quiet".into(),
    ];
    if !plain {
        args.extend(["--recipients-file".into(), w.path("host/host.pub").into()]);
    }
    args.extend(extra.iter().map(Into::into));
    args
}

/// A world whose `big` image carries a 24 MiB incompressible layer beside busybox.
fn big_world() -> (World, Layer, CountingProxy, PathBuf) {
    let w = World::new();
    let big = Layer::random(&w.path("layers-big"), 24 << 20, 7);
    fixtures::push(
        &w.registry.addr,
        "e2e/big:v1",
        &[ImageSpec::new(
            vec![w.busybox_layer.clone(), big.clone()],
            &["/bin/busybox", "true"],
        )],
    );
    let proxy = CountingProxy::start(&w.registry.addr);
    let spec = spec_at(&w, "big", &proxy.addr, &["e2e/big:v1", "e2e/hello:v1"]);
    (w, big, proxy, spec)
}

#[test]
fn a_cold_build_writes_each_layer_once_and_a_warm_rebuild_fetches_no_blob() {
    let (w, big, proxy, spec) = big_world();
    let cold = w.path("cold.airlock");
    let (o, wchar) = pack_counting_writes(&w, &build_args(&w, &spec, &cold, false, &[]));
    assert_ok(&o);
    let bundle = file_size(&cold);
    assert!(bundle > big.size, "{bundle}");
    // Each byte once: the bundle, its sums, the cache's small documents and the store
    // record. The old design wrote every layer twice (cache, then bundle).
    assert!(
        wchar < bundle + (1 << 20),
        "a cold build wrote {wchar} bytes for a {bundle}-byte bundle"
    );
    assert!(wchar > 0, "no I/O accounting read: {}", text(&o));
    eprintln!("cold build: {wchar} bytes written for a {bundle}-byte bundle");
    let blobs = cached_blobs(&w);
    assert!(
        blobs
            .iter()
            .all(|(h, _)| *h != big.digest.hex() && *h != w.busybox_layer.digest.hex()),
        "a layer landed in the cache: {blobs:?}"
    );
    assert!(blobs.iter().all(|(_, size)| *size < 64 << 10), "{blobs:?}");
    assert_eq!(stores(&w), 1);
    assert_eq!(proxy.gets_of(&big.digest), 1);
    assert_ok(&w.unpack("verify", &cold, &[]));

    // Warm: every layer comes from the cold bundle, not the registry.
    let blob_gets = proxy.gets.lock().unwrap().len();
    let warm = w.path("warm.airlock");
    let o = w.pack(build_args(&w, &spec, &warm, false, &[]));
    assert_ok(&o);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("(0 B downloaded)"), "{}", text(&o));
    assert_eq!(
        proxy.gets.lock().unwrap().len(),
        blob_gets,
        "the warm build fetched blobs: {:?}",
        proxy.gets.lock().unwrap()
    );
    assert_ok(&w.unpack("verify", &warm, &[]));
    assert_eq!(cached_blobs(&w), blobs, "the warm build filled the cache");
    assert_eq!(stores(&w), 2);

    // `cache ls` sees both bundles and nothing missing for the lock.
    let lock = w.path("big.lock");
    let o = w.pack(["cache", "ls", "--json", lock.to_str().unwrap()]);
    assert_ok(&o);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["stores"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v["locks"][0]["missing"], 0, "{v}");
    assert!(v["locks"][0]["in_stores"].as_u64().unwrap() >= 2, "{v}");

    // A bundle that is gone is forgotten.
    std::fs::remove_file(&cold).unwrap();
    let o = w.pack(["cache", "ls", "--json"]);
    assert_ok(&o);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["stores"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(stores(&w), 1);
}

/// Flips one byte of `path` at `at` in place, keeping its inode, size and mtime: the
/// identity the store record checks still matches, only the content does not.
fn flip_in_place(path: &Path, at: u64) {
    let before = std::fs::metadata(path).unwrap();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    use std::os::unix::fs::FileExt as _;
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    b[0] ^= 0x40;
    f.write_all_at(&b, at).unwrap();
    f.set_modified(before.modified().unwrap()).unwrap();
    drop(f);
    let after = std::fs::metadata(path).unwrap();
    assert_eq!(after.modified().unwrap(), before.modified().unwrap());
}

fn tampered_store_refetched(plain: bool) {
    let (w, big, proxy, spec) = big_world();
    let first = w.path("first.airlock");
    assert_ok(&w.pack(build_args(&w, &spec, &first, plain, &[])));
    // Somewhere inside the big layer (encrypted: its chunks are in the same place, give or
    // take the age header).
    let at = if plain {
        let bytes = std::fs::read(&first).unwrap();
        // The tar header's name field (NUL-padded), not the header.json mention.
        let name = format!("blobs/sha256/{}\0", big.digest.hex());
        (find(&bytes, name.as_bytes()) + 512 + 4096) as u64
    } else {
        file_size(&first) - (big.size / 2)
    };
    flip_in_place(&first, at);
    let second = w.path("second.airlock");
    let o = w.pack(build_args(&w, &spec, &second, plain, &[]));
    assert_ok(&o);
    assert_eq!(proxy.gets_of(&big.digest), 2, "fetched again");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no longer holds what the blob cache recorded"),
        "{}",
        text(&o)
    );
    assert_ok(&w.unpack("verify", &second, &[]));
    // The tampered bundle's record is gone; the new bundle's serves.
    assert_eq!(stores(&w), 1);
    let o = w.pack(["cache", "ls", "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        v["stores"][0]["bundle"]
            .as_str()
            .unwrap()
            .ends_with("second.airlock"),
        "{v}"
    );
}

#[test]
fn a_tampered_plain_bundle_is_dropped_as_a_store_and_the_blob_fetched_again() {
    tampered_store_refetched(true);
}

#[test]
fn a_tampered_encrypted_bundle_is_dropped_as_a_store_and_the_blob_fetched_again() {
    tampered_store_refetched(false);
}

/// A TCP proxy in front of the registry that counts `GET …/blobs/<digest>` requests.
struct CountingProxy {
    addr: String,
    gets: Arc<Mutex<Vec<String>>>,
}

impl CountingProxy {
    fn start(upstream: &str) -> CountingProxy {
        Self::start_paced(upstream, None)
    }

    /// With `pace`, a pause after every 64 KiB the registry sends: a slow link.
    fn start_paced(upstream: &str, pace: Option<std::time::Duration>) -> CountingProxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let gets = Arc::new(Mutex::new(Vec::new()));
        let (up, g) = (upstream.to_string(), gets.clone());
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                let (up, g) = (up.clone(), g.clone());
                std::thread::spawn(move || {
                    let Ok(s) = TcpStream::connect(&up) else {
                        return;
                    };
                    let (mut c2, mut s2) = (c.try_clone().unwrap(), s.try_clone().unwrap());
                    std::thread::spawn(move || {
                        let mut buf = vec![0u8; 64 << 10];
                        while let Ok(n) = s2.read(&mut buf) {
                            if n == 0 || c2.write_all(&buf[..n]).is_err() {
                                break;
                            }
                            if let Some(p) = pace {
                                std::thread::sleep(p);
                            }
                        }
                        let _ = c2.shutdown(std::net::Shutdown::Write);
                    });
                    let (mut c, mut s) = (c, s);
                    // Requests are small: scan each read for request lines.
                    let mut buf = vec![0u8; 64 << 10];
                    let mut carry = String::new();
                    loop {
                        let n = match c.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        carry.push_str(&String::from_utf8_lossy(&buf[..n]));
                        while let Some(i) = carry.find("\r\n") {
                            let line: String = carry.drain(..i + 2).collect();
                            if line.starts_with("GET ") && line.contains("/blobs/sha256:") {
                                g.lock().unwrap().push(line.trim().to_string());
                            }
                        }
                        if s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = s.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        CountingProxy { addr, gets }
    }

    fn gets_of(&self, d: &Digest) -> usize {
        let needle = format!("/blobs/{d}");
        self.gets
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(&needle))
            .count()
    }
}

#[test]
fn two_concurrent_cold_builds_sharing_a_large_blob_fetch_it_once() {
    let w = World::new();
    let big = Layer::random(&w.path("layers-big"), 48 << 20, 11);
    let proxy = CountingProxy::start(&w.registry.addr);
    let mut specs = Vec::new();
    for (name, text) in [("a", "only in a"), ("b", "only in b")] {
        let own = Layer::files(
            &w.path(&format!("layers-{name}")),
            &[("own.txt", text.as_bytes(), 0o644)],
        );
        fixtures::push(
            &w.registry.addr,
            &format!("shared/{name}:v1"),
            &[ImageSpec::new(
                vec![big.clone(), own],
                &["/bin/busybox", "true"],
            )],
        );
        let spec = w.path(&format!("{name}.toml"));
        std::fs::write(
            &spec,
            format!(
                "name = \"{name}\"\nplatforms = [\"linux/amd64\"]\n\n[[image]]\nref = \"{}/shared/{name}:v1\"\n\n[registries.\"{}\"]\ninsecure = true\n",
                proxy.addr, proxy.addr
            ),
        )
        .unwrap();
        assert_ok(&w.pack(["lock", spec.to_str().unwrap()]));
        specs.push(spec);
    }
    let children: Vec<(PathBuf, std::process::Child)> = specs
        .iter()
        .map(|spec| {
            let out = spec.with_extension("airlock");
            let child = Command::new(pack_bin())
                .arg("build")
                .arg(spec)
                .arg("-o")
                .arg(&out)
                .arg("--sign-key")
                .arg(w.path("pack-keys/airlock.key"))
                .arg("--recipients-file")
                .arg(w.path("host/host.pub"))
                .arg("--quiet")
                .arg("--cache")
                .arg(w.path("cache"))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            (out, child)
        })
        .collect();
    for (out, child) in children {
        let o = child.wait_with_output().unwrap();
        assert_ok(&o);
        assert_ok(&w.unpack("verify", &out, &[]));
    }
    assert_eq!(
        proxy.gets_of(&big.digest),
        1,
        "{:?}",
        proxy.gets.lock().unwrap()
    );
    assert_eq!(
        cached_blobs(&w)
            .iter()
            .filter(|(h, _)| *h == big.digest.hex())
            .count(),
        0
    );
}

#[test]
fn prune_keeps_exactly_what_a_lock_needs_and_max_size_evicts_the_least_recently_used() {
    let w = World::new();
    let proxy = CountingProxy::start(&w.registry.addr);
    // Two specs on one cache: hello alone, and second.
    let spec_a = spec_at(&w, "a", &proxy.addr, &["e2e/hello:v1"]);
    let spec_b = spec_at(&w, "b", &proxy.addr, &["e2e/second:v1"]);
    let lock_a: Value =
        serde_json::to_value(airlock_bundle::lock::Lock::load(&w.path("a.lock")).unwrap()).unwrap();
    let lock_b: Value =
        serde_json::to_value(airlock_bundle::lock::Lock::load(&w.path("b.lock")).unwrap()).unwrap();
    let digest_of = |l: &Value| l["image"][0]["digest"].as_str().unwrap().to_string();
    let (a_top, b_top) = (digest_of(&lock_a), digest_of(&lock_b));
    let hex = |d: &str| d.trim_start_matches("sha256:").to_string();
    // `lock` caches the manifest; its config and layer are still to fetch.
    let o = w.pack(["cache", "ls", "--json", w.path("a.lock").to_str().unwrap()]);
    assert_ok(&o);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["locks"][0]["blobs"], 3, "{v}");
    assert_eq!(v["locks"][0]["cached"], 1, "{v}");
    assert_eq!(v["locks"][0]["missing"], 2, "{v}");

    let mut bundles = Vec::new();
    for spec in [&spec_a, &spec_b] {
        let out = spec.with_extension("airlock");
        let args: Vec<std::ffi::OsString> = vec![
            "build".into(),
            spec.into(),
            "-o".into(),
            out.clone().into(),
            "--sign-key".into(),
            w.path("pack-keys/airlock.key").into(),
            "--quiet".into(),
            "--no-provenance".into(),
        ];
        assert_ok(&w.pack(&args));
        bundles.push(out);
    }
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(w.path(&format!("cache/blobs/sha256/{}", hex(&a_top)))).unwrap(),
    )
    .unwrap();
    let a_config = hex(manifest["config"]["digest"].as_str().unwrap());
    let held = |h: &str| w.path(&format!("cache/blobs/sha256/{h}")).exists();
    assert!(held(&hex(&a_top)) && held(&hex(&b_top)) && held(&a_config));
    let o = w.pack(["cache", "ls", "--json", w.path("a.lock").to_str().unwrap()]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["locks"][0]["cached"], 2, "{v}");
    assert_eq!(v["locks"][0]["in_stores"], 1, "{v}");
    assert_eq!(v["locks"][0]["missing"], 0, "{v}");

    let o = w.pack([
        "cache",
        "prune",
        "--keep",
        w.path("a.lock").to_str().unwrap(),
    ]);
    assert_ok(&o);
    let left: Vec<String> = cached_blobs(&w).into_iter().map(|(h, _)| h).collect();
    let mut want = vec![hex(&a_top), a_config.clone()];
    want.sort();
    assert_eq!(left, want, "{}", text(&o));
    // Both bundles carry the busybox layer a needs: both stay stores. Bundles are never
    // touched.
    assert_eq!(stores(&w), 2, "{}", text(&o));
    assert!(bundles.iter().all(|b| b.exists()));
    // What a needs is all still there: a rebuild fetches no blob. Past the size it is told
    // to mention, build says how much the cache holds.
    let gets = proxy.gets.lock().unwrap().len();
    let a2 = w.path("a2.airlock");
    let o = Command::new(pack_bin())
        .args(build_args(&w, &spec_a, &a2, true, &["--no-provenance"]))
        .arg("--cache")
        .arg(w.path("cache"))
        .env("AIRLOCK_CACHE_WARN", "1")
        .output()
        .unwrap();
    assert_ok(&o);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("cache prune"),
        "{}",
        text(&o)
    );
    assert_eq!(
        proxy.gets.lock().unwrap().len(),
        gets,
        "{:?}",
        proxy.gets.lock().unwrap()
    );

    // --max-size: the least recently used goes first.
    let old = w.path(&format!("cache/blobs/sha256/{}", hex(&a_top)));
    std::fs::File::options()
        .append(true)
        .open(&old)
        .unwrap()
        .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000))
        .unwrap();
    let total: u64 = cached_blobs(&w).iter().map(|(_, s)| s).sum();
    let o = w.pack(["cache", "prune", "--max-size", &(total - 1).to_string()]);
    assert_ok(&o);
    let left: Vec<String> = cached_blobs(&w).into_iter().map(|(h, _)| h).collect();
    assert_eq!(left, vec![a_config], "{}", text(&o));

    let o = w.pack(["cache", "prune"]);
    assert_refused(&o, 2, &["--keep", "--max-size"]);
}

#[test]
fn a_killed_build_resumes_from_what_it_wrote() {
    let w = World::new();
    let (one, two) = (
        Layer::random(&w.path("layers-1"), 16 << 20, 21),
        Layer::random(&w.path("layers-2"), 16 << 20, 22),
    );
    fixtures::push(
        &w.registry.addr,
        "e2e/two:v1",
        &[ImageSpec::new(
            vec![w.busybox_layer.clone(), one.clone(), two.clone()],
            &["/bin/busybox", "true"],
        )],
    );
    // At most 8 MiB a second: the build takes four, and is killed past the first large
    // layer with more than a second to spare.
    let proxy =
        CountingProxy::start_paced(&w.registry.addr, Some(std::time::Duration::from_millis(8)));
    let spec = spec_at(&w, "two", &proxy.addr, &["e2e/two:v1"]);
    let out = w.path("two.airlock");
    let temp = w.path(".two.airlock.partial");
    let mut child = Command::new(pack_bin())
        .args(build_args(&w, &spec, &out, false, &[]))
        .arg("--cache")
        .arg(w.path("cache"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let written = std::fs::metadata(&temp).map(|m| m.len()).unwrap_or(0);
        if written > (20 << 20) {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the build ended before it could be killed"
        );
        assert!(std::time::Instant::now() < deadline, "the build is stuck");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!out.exists());
    assert!(temp.exists(), "a killed build keeps its temp bundle");
    let before = proxy.gets_of(&one.digest) + proxy.gets_of(&two.digest);

    let o = w.pack(build_args(&w, &spec, &out, false, &[]));
    assert_ok(&o);
    assert_ok(&w.unpack("verify", &out, &[]));
    // The layer that was all written is not fetched again; the other one is.
    let again = proxy.gets_of(&one.digest) + proxy.gets_of(&two.digest) - before;
    assert_eq!(again, 1, "{:?}", proxy.gets.lock().unwrap());
    // The killed build's file served and is gone; the new bundle is the one store.
    let left: Vec<String> = std::fs::read_dir(w.path(""))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".resume-") || n.ends_with(".partial"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(stores(&w), 1);
}
