//! Developer entry points: `cargo xtask demo | ci | dist | bench | fuzz | vectors | rooms`. Needs
//! nothing but cargo and a Debian machine with a Docker engine; missing Debian packages are
//! installed with apt.

mod bench;
mod ci;
mod demo;
mod dist;
mod fuzz;
mod rooms;
mod util;
mod vectors;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("demo") => demo::run(),
        Some("dist") => dist::run(&args[1..]),
        Some("ci") => ci::ci(),
        Some("bench") => bench::run(&args[1..]),
        Some("fuzz") => fuzz::run(&args[1..]),
        Some("fuzz-seeds") => fuzz::seeds(),
        Some("install-deps") => util::install_deps(),
        Some("vectors") => vectors::run(),
        Some("rooms") => rooms::run(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <command>\n\n\
                 commands:\n  \
                 demo          loopback registry + generated images -> pack -> unpack (offline) -> docker run\n  \
                 ci            install test dependencies, fmt, clippy, rooms, cargo deny (bans, licenses, sources),\n                \
                 all tests, a short fuzz run (what .ci/run does)\n  \
                 dist [--out DIR] [--sign-key FILE]  static binaries, .debs, signed SHA256SUMS in dist/\n  \
                 bench [--big] throughput and peak memory against skopeo, age and docker load\n  \
                 bench models|parts|push  one section: models, verify --outer-only of parts, push\n  \
                 bench engines  load into Podman (vs podman load -i), pre-flight cost, then Docker 26\n  \
                 bench docker26|containerd  load into Docker 26's containerd store, or load --containerd\n  \
                 fuzz [--pending] [SECONDS] [TARGET...]  every cargo-fuzz target for SECONDS (default 60)\n                \
                 each, then the committed regression inputs (needs nightly; installs cargo-fuzz);\n                \
                 --pending also checks the known bugs listed in fuzz/pending\n  \
                 fuzz-seeds    rewrite fuzz/seeds from what the real tools produce (registry, pack, unpack)\n  \
                 install-deps  apt-get install what tests and demo need\n  \
                 vectors       rewrite tests/vectors (format test vectors) and the bundles tests/golden uses\n  \
                 rooms [--all] structure limits: file and function sizes, no module cycle\n                \
                 (--all: the largest files and functions too)"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}
