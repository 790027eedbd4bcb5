//! `load --containerd`: bundles into a real containerd (Debian's 1.6, started per test on a
//! temp socket, not the one Docker runs), checked with containerd's own `ctr`. The unpacking
//! side runs inside `unshare -n`; the socket is a path, so it is reachable there.

use std::collections::BTreeSet;

use airlock_bundle::inventory::chain_ids;
use airlock_bundle::Digest;
use airlock_testkit::containerd::TestContainerd;
use airlock_tests::*;
use serde_json::Value;

/// One image of the bundle as `inspect --json` lists it.
#[derive(Debug, Clone)]
struct Image {
    reference: String,
    manifest: String,
    config: String,
    layers: Vec<String>,
}

/// The bundle's images for `platform`.
fn images(w: &World, bundle: &std::path::Path, platform: &str) -> Vec<Image> {
    let o = w.unpack("inspect", bundle, &["--json"]);
    assert_ok(&o);
    let j: Value = serde_json::from_slice(&o.stdout).unwrap();
    let s = |v: &Value| v.as_str().unwrap().to_string();
    j["images"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["platform"] == platform)
        .map(|i| Image {
            reference: s(&i["ref"]),
            manifest: s(&i["manifest"]),
            config: s(&i["config"]),
            layers: i["layers"].as_array().unwrap().iter().map(s).collect(),
        })
        .collect()
}

/// `ctr content get D`, hashed.
fn stored_digest(c: &TestContainerd, ns: &str, d: &str) -> String {
    let o = c.ctr(ns, &["content", "get", d]);
    assert!(o.status.success(), "content get {d}: {}", text(&o));
    Digest::of(&o.stdout).to_string()
}

/// The chain IDs of an image's layers, from its config in containerd.
fn image_chain_ids(c: &TestContainerd, ns: &str, config: &str) -> Vec<String> {
    let o = c.ctr(ns, &["content", "get", config]);
    assert_ok(&o);
    let cfg: Value = serde_json::from_slice(&o.stdout).unwrap();
    let diff_ids: Vec<Digest> = cfg["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().parse().unwrap())
        .collect();
    chain_ids(&diff_ids).iter().map(|d| d.to_string()).collect()
}

fn load(
    w: &World,
    c: &TestContainerd,
    bundle: &std::path::Path,
    ns: &str,
    extra: &[&str],
) -> std::process::Output {
    let sock = c.socket.to_str().unwrap();
    let mut args = vec![
        "--containerd",
        sock,
        "--namespace",
        ns,
        "--snapshotter",
        &c.snapshotter,
        "--quiet",
    ];
    args.extend_from_slice(extra);
    w.unpack("load", bundle, &args)
}

fn all_content(c: &TestContainerd, ns: &str) -> BTreeSet<String> {
    c.names(ns, &["content", "ls"]).into_iter().collect()
}

fn snapshots(c: &TestContainerd, ns: &str) -> BTreeSet<String> {
    c.names(ns, &["snapshots", "--snapshotter", &c.snapshotter, "ls"])
        .into_iter()
        .collect()
}

/// `ctr images check`: every blob of `reference` is there, and it is unpacked into the
/// snapshotter or not.
fn assert_complete(c: &TestContainerd, ns: &str, reference: &str, unpacked: bool) {
    let check = c.ctr_ok(
        ns,
        &[
            "images",
            "check",
            "--snapshotter",
            &c.snapshotter,
            &format!("name=={reference}"),
        ],
    );
    let line = check
        .lines()
        .find(|l| l.starts_with(&format!("{reference} ")))
        .unwrap_or_else(|| panic!("{reference} not checked: {check}"));
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields[3], "complete", "{line}");
    assert_eq!(
        fields.last(),
        Some(&if unpacked { "true" } else { "false" }),
        "{line}"
    );
}

/// Every image for amd64 is there by name with the manifest as target, complete, every blob
/// stored with its digest, and (unpacked) a committed snapshot per chain ID; all of it
/// survives a garbage collection once the load's lease is gone.
#[test]
fn load_into_containerd_unpacked_complete_and_idempotent() {
    let w = World::new();
    w.lock();
    let bundle = w.build("ctd.airlock", false);
    let c = TestContainerd::start();
    let ns = "k8s.io";
    let want = images(&w, &bundle, "linux/amd64");
    assert_eq!(want.len(), 3, "{want:?}");

    let o = load(&w, &c, &bundle, ns, &["--platform", "linux/amd64"]);
    assert_ok(&o);
    let out = String::from_utf8_lossy(&o.stdout);
    for i in &want {
        assert!(
            out.contains(&format!(
                "loaded {} (linux/amd64) as {}",
                i.reference, i.manifest
            )),
            "{}",
            text(&o)
        );
    }
    // No lease is left behind: what holds the content now is the images.
    assert_eq!(c.ctr_ok(ns, &["leases", "ls", "-q"]).trim(), "");
    c.collect_garbage(ns);

    let listing = c.ctr_ok(ns, &["images", "ls"]);
    let names = c.names(ns, &["images", "ls", "-q"]);
    let mut expected: Vec<String> = want.iter().map(|i| i.reference.clone()).collect();
    expected.sort();
    assert_eq!(names, expected, "{listing}");
    for i in &want {
        let line = listing
            .lines()
            .find(|l| l.starts_with(&format!("{} ", i.reference)))
            .unwrap();
        assert!(line.contains(&i.manifest), "{line}");
        assert_complete(&c, ns, &i.reference, true);
        for d in [&i.manifest, &i.config].into_iter().chain(&i.layers) {
            assert_eq!(&stored_digest(&c, ns, d), d);
        }
    }
    let snaps = snapshots(&c, ns);
    let mut chains = BTreeSet::new();
    for i in &want {
        for chain in image_chain_ids(&c, ns, &i.config) {
            assert!(snaps.contains(&chain), "{chain} not in {snaps:?}");
            chains.insert(chain);
        }
    }
    // Only committed chain IDs: no extraction key of ours is left behind.
    assert_eq!(snaps, chains);
    // The other platform's image of the multi-arch reference was not written.
    let arm = images(&w, &bundle, "linux/arm64");
    let content = all_content(&c, ns);
    assert!(!content.contains(&arm[0].manifest), "{content:?}");

    // Again: nothing changes, and the load says so.
    let before = (all_content(&c, ns), snaps, c.ctr_ok(ns, &["images", "ls"]));
    let o = load(&w, &c, &bundle, ns, &["--platform", "linux/amd64"]);
    assert_ok(&o);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(out.matches("already present").count(), 3, "{}", text(&o));
    c.collect_garbage(ns);
    let after = (
        all_content(&c, ns),
        snapshots(&c, ns),
        c.ctr_ok(ns, &["images", "ls"]),
    );
    assert_eq!(before, after);
    // Other namespaces saw nothing.
    assert!(c.names("default", &["images", "ls", "-q"]).is_empty());
}

/// `--no-unpack` stores complete images and creates no snapshot.
#[test]
fn no_unpack_stores_content_only() {
    let w = World::new();
    w.lock_images(&["linux/amd64"], &[&w.hello, &w.second]);
    let bundle = w.build("ctd-nounpack.airlock", true);
    let c = TestContainerd::start();
    let ns = "default";
    let o = load(&w, &c, &bundle, ns, &["--no-unpack"]);
    assert_ok(&o);
    c.collect_garbage(ns);
    let want = images(&w, &bundle, "linux/amd64");
    for i in &want {
        assert_complete(&c, ns, &i.reference, false);
        for d in [&i.manifest, &i.config].into_iter().chain(&i.layers) {
            assert_eq!(&stored_digest(&c, ns, d), d);
        }
    }
    assert!(snapshots(&c, ns).is_empty());
}

/// A damaged bundle (a flipped byte in a layer, a truncated file) is refused with the
/// integrity exit code, and leaves no image, no snapshot, no lease, and, once the garbage
/// collector ran, no content.
#[test]
fn damaged_bundle_leaves_nothing_in_containerd() {
    let w = World::new();
    w.lock_images(&["linux/amd64"], &[&w.hello, &w.second]);
    let plain = w.build("ctd-plain.airlock", true);
    let good = std::fs::read(&plain).unwrap();
    let layer = std::fs::read(&w.busybox_layer.path).unwrap();
    let c = TestContainerd::start();
    let ns = "k8s.io";
    let flipped = write_variant(
        &w,
        "ctd-flipped.airlock",
        &flip(&good, find(&good, &layer[1000..1064]) + 7),
    );
    let truncated = write_variant(&w, "ctd-truncated.airlock", &good[..good.len() - 5000]);
    for bundle in [&flipped, &truncated] {
        let o = load(&w, &c, bundle, ns, &[]);
        assert_eq!(o.status.code(), Some(3), "{}", text(&o));
        assert!(c.names(ns, &["images", "ls", "-q"]).is_empty());
        assert_eq!(c.ctr_ok(ns, &["leases", "ls", "-q"]).trim(), "");
        // Cut off at the end, the blobs before were written; whether containerd's own
        // scheduled collection already removed them is a race, so no check of that here.
        c.collect_garbage(ns);
        assert!(all_content(&c, ns).is_empty(), "{:?}", all_content(&c, ns));
        assert!(snapshots(&c, ns).is_empty());
    }
    // The good bundle then loads, and its content survives a collection.
    let o = load(&w, &c, &plain, ns, &[]);
    assert_ok(&o);
    c.collect_garbage(ns);
    assert_eq!(c.names(ns, &["images", "ls", "-q"]).len(), 2);
    assert!(!all_content(&c, ns).is_empty());
}

/// Files bound for a host directory are restored alongside a containerd load; files bound
/// for a Docker volume are refused (exit 2) before anything is written: no image, no content,
/// no lease in containerd.
#[test]
fn files_restore_beside_containerd_and_volume_targets_are_refused() {
    let w = World::new();
    w.write_spec(&["linux/amd64"], &[&w.hello]);
    std::fs::write(w.path("conf.txt"), format!("conf {}\n", w.marker)).unwrap();
    let host_dir = w.path("host-target");
    let spec = std::fs::read_to_string(w.spec()).unwrap();
    std::fs::write(
        w.spec(),
        format!(
            "{spec}\n[[files]]\nsource = \"conf.txt\"\npath = \"{}\"\n",
            host_dir.display()
        ),
    )
    .unwrap();
    w.lock();
    let to_dir = w.build("ctd-files.airlock", false);
    std::fs::write(
        w.spec(),
        format!("{spec}\n[[files]]\nsource = \"conf.txt\"\nvolume = \"airlock-ctd-test\"\n"),
    )
    .unwrap();
    // The lock pins the [[files]] as the spec places them: another target is a re-pin.
    assert_ok(&w.pack(["lock", "--update", w.spec().to_str().unwrap(), "-q"]));
    let to_volume = w.build("ctd-volume.airlock", false);
    let c = TestContainerd::start();
    let ns = "k8s.io";

    // No containerd at the socket: the environment's fault (exit 7), said so, nothing written.
    let gone = w.path("no-containerd.sock");
    let o = w.unpack(
        "load",
        &to_dir,
        &["--containerd", gone.to_str().unwrap(), "--quiet"],
    );
    assert_refused(
        &o,
        7,
        &["cannot connect to containerd at", "no-containerd.sock"],
    );
    assert!(!host_dir.join("conf.txt").exists());

    let o = load(&w, &c, &to_volume, ns, &[]);
    assert_refused(&o, 2, &["Docker volumes", "--containerd"]);
    assert!(c.names(ns, &["images", "ls", "-q"]).is_empty());
    assert!(all_content(&c, ns).is_empty());
    assert_eq!(c.ctr_ok(ns, &["leases", "ls", "-q"]).trim(), "");

    let o = load(&w, &c, &to_dir, ns, &[]);
    assert_ok(&o);
    assert_eq!(
        std::fs::read_to_string(host_dir.join("conf.txt")).unwrap(),
        format!("conf {}\n", w.marker)
    );
    assert_eq!(c.names(ns, &["images", "ls", "-q"]), vec![w.hello.clone()]);
}
