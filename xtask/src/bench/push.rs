//! `cargo xtask bench push`: `airlock-unpack push` of a plain bundle of about 1 GiB of images
//! into a fresh loopback registry vs `skopeo copy oci:DIR:REF docker://…` of the same images
//! (the layout `airlock-unpack extract` writes), each run into its own fresh registry, taken
//! in turns. A bare `curl -T` of every blob into a fresh registry shows what the registry
//! itself can take.

use std::path::Path;
use std::process::Command;

use airlock_testkit::TestRegistry;

use super::{faster, measure, mib, Measured};
use crate::util::sh;

pub fn run(bins: &Path) -> anyhow::Result<()> {
    let pack = bins.join("airlock-pack");
    let unpack = bins.join("airlock-unpack");
    let source = TestRegistry::start();
    let work = tempfile::tempdir_in(crate::util::scratch()?)?;
    let w = work.path();
    eprintln!("bench: generating 1 GiB of fixture images");
    // The same images as the image rows: the shared base is uploaded once, mounted twice.
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
    let size = std::fs::metadata(&bundle)?.len();

    let skopeo = |addr: &str| {
        let mut script = String::from("set -e\n");
        for t in &tags {
            script.push_str(&format!(
                "skopeo copy --quiet --dest-tls-verify=false oci:{}:{}/{t} docker://{addr}/{t}\n",
                layout.display(),
                source.addr
            ));
        }
        let mut c = Command::new("sh");
        c.args(["-c", &script]);
        c
    };
    let ours = |addr: &str| {
        let mut c = Command::new(&unpack);
        c.arg("push")
            .arg(&bundle)
            .args(["--registry", addr, "--insecure", "--quiet", "--trust"])
            .arg(w.join("keys/airlock.pub"));
        c
    };
    // Every blob of the layout, once, with curl: POST for a session, PUT with -T.
    let curl = |addr: &str| {
        let script = format!(
            "set -e\n\
             for f in {blobs}/*; do\n\
               loc=$(curl -sfi -X POST http://{addr}/v2/bench/raw/blobs/uploads/ | tr -d '\\r' | sed -n 's/^[Ll]ocation: //p')\n\
               curl -sf -o /dev/null -T \"$f\" \"$loc&digest=sha256:$(basename \"$f\")\"\n\
             done\n",
            blobs = layout.join("blobs/sha256").display()
        );
        let mut c = Command::new("sh");
        c.args(["-c", &script]);
        c
    };

    // In turns, each run into a registry of its own, started before the clock runs.
    let runs = 3;
    let mut best: [Option<Measured>; 3] = [None, None, None];
    for _ in 0..runs {
        for (i, make) in [&skopeo as &dyn Fn(&str) -> Command, &ours, &curl]
            .into_iter()
            .enumerate()
        {
            let target = TestRegistry::start();
            let m = measure(&mut make(&target.addr))?;
            best[i] = Some(match best[i].take() {
                None => m,
                Some(b) => faster(b, m),
            });
        }
    }
    let [Some(skopeo), Some(ours), Some(curl)] = best else {
        unreachable!("three runs each")
    };
    let gib = size as f64 / (1u64 << 30) as f64;
    println!("\nbench push: 3 images, bundle {gib:.2} GiB, best of {runs} in turns, each into a fresh registry");
    println!(
        "{:<44} {:>8} {:>10} {:>9} {:>10}",
        "measurement", "wall", "MiB/s", "cpu", "peak RSS"
    );
    for (name, m) in [
        ("skopeo copy oci: -> docker:// (3 images)", &skopeo),
        ("airlock-unpack push (plain bundle)", &ours),
        ("curl -T of every blob (registry floor)", &curl),
    ] {
        println!(
            "{:<44} {:>7.2}s {:>10.0} {:>8.2}s {:>10}",
            name,
            m.secs,
            size as f64 / (1 << 20) as f64 / m.secs,
            m.cpu,
            mib(m.rss_kib)
        );
    }
    let ratio = skopeo.secs / ours.secs;
    println!(
        "push is {ratio:.2}x faster than skopeo copy (target >= 1.5x: {}); {:.2}x the time of bare curl uploads",
        if ratio >= 1.5 { "met" } else { "MISSED" },
        ours.secs / curl.secs
    );
    if std::env::var_os("AIRLOCK_BENCH_KEEP").is_some() {
        eprintln!("bench: kept {} (AIRLOCK_BENCH_KEEP)", work.keep().display());
    }
    Ok(())
}
