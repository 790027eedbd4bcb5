//! Developer entry points: `cargo xtask demo | ci | bench`. Needs nothing but cargo and a
//! Debian machine with a Docker engine; missing Debian packages are installed with apt.

mod bench;
mod demo;
mod util;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("demo") => demo::run(),
        Some("ci") => util::ci(),
        Some("bench") => bench::run(&args[1..]),
        Some("install-deps") => util::install_deps(),
        _ => {
            eprintln!(
                "usage: cargo xtask <command>\n\n\
                 commands:\n  \
                 demo          loopback registry + generated images -> pack -> unpack (offline) -> docker run\n  \
                 ci            install test dependencies, fmt, clippy, all tests (what .ci/run does)\n  \
                 bench [--big] throughput and peak memory against skopeo, age and docker load\n  \
                 bench models|parts|push  one section: models, verify --outer-only of parts, push\n  \
                 install-deps  apt-get install what tests and demo need"
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
