//! `cargo xtask bench containerd`: `airlock-unpack load --containerd` of a plain bundle of
//! about 1 GiB of images vs `ctr images import` of the same images as an archive (a tar of
//! the OCI layout `airlock-unpack extract` writes, which names each image like the load does),
//! both into one throwaway containerd (testkit), both unpacking into its snapshotter, taken in
//! turns, each after the images were removed and the garbage collector ran.

use std::path::Path;
use std::process::Command;

use airlock_testkit::containerd::TestContainerd;
use airlock_testkit::TestRegistry;

use super::{in_turns, Row};
use crate::util::sh;

pub fn run(bins: &Path) -> anyhow::Result<()> {
    let pack = bins.join("airlock-pack");
    let unpack = bins.join("airlock-unpack");
    let source = TestRegistry::start();
    let work = tempfile::tempdir_in(crate::util::scratch()?)?;
    let w = work.path();
    std::env::set_var("AIRLOCK_STATE_DIR", w.join("airlock-state"));
    eprintln!("bench: generating 1 GiB of fixture images");
    let (tags, bundle) = super::plain_bundle(&pack, w, &source)?;
    let layout = w.join("layout");
    sh(Command::new(&unpack)
        .arg("extract")
        .arg(&bundle)
        .arg("--to")
        .arg(&layout)
        .arg("--trust")
        .arg(w.join("keys/airlock.pub"))
        .arg("-q"))?;
    let archive = w.join("layout.tar");
    sh(Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&archive)
        .args(["oci-layout", "index.json", "blobs"]))?;
    std::fs::remove_dir_all(&layout)?;
    let size = std::fs::metadata(&bundle)?.len();

    let ctd = TestContainerd::start();
    let ns = "bench";
    let reset = || {
        let names = ctd.names(ns, &["images", "ls", "-q"]);
        if !names.is_empty() {
            let mut args = vec!["images", "rm"];
            args.extend(names.iter().map(String::as_str));
            ctd.ctr_ok(ns, &args);
        }
        ctd.collect_garbage(ns);
    };
    let mut ctr = Command::new("ctr");
    ctr.arg("--address")
        .arg(&ctd.socket)
        .args([
            "-n",
            ns,
            "images",
            "import",
            "--snapshotter",
            &ctd.snapshotter,
        ])
        .arg(&archive);
    let mut ours = Command::new(&unpack);
    ours.arg("load")
        .arg(&bundle)
        .arg("--containerd")
        .arg(&ctd.socket)
        .args([
            "--namespace",
            ns,
            "--snapshotter",
            &ctd.snapshotter,
            "--quiet",
            "--trust",
        ])
        .arg(w.join("keys/airlock.pub"));
    let (peer, ours) = in_turns(3, (&reset, &mut ctr), (&reset, &mut ours))?;
    reset();
    let rows = [Row::time_of(
        "load --containerd (unpacked)",
        ours,
        ("ctr images import", peer.secs),
        Some(1.2),
    )];
    if std::env::var_os("AIRLOCK_BENCH_KEEP").is_some() {
        eprintln!("bench: kept {} (AIRLOCK_BENCH_KEEP)", work.keep().display());
    }
    super::report(
        &rows,
        &format!(
            "{} images into containerd ({})",
            tags.len(),
            ctd.snapshotter
        ),
        size,
    )
}
