//! `cargo xtask fuzz [--pending] [SECONDS] [TARGET…]`: builds the cargo-fuzz targets in `fuzz/` (nightly,
//! AddressSanitizer, debug assertions), runs each for SECONDS, then replays every committed
//! regression input (`fuzz/regressions/<target>/*`). `cargo xtask ci` runs the same with a
//! short time per target. cargo-fuzz is installed when missing; the nightly toolchain must be
//! there already. `--pending` also checks for the known bugs of `fuzz/pending/README.md` and
//! replays their inputs: it fails until their fixes land.
//!
//! Each run starts from the committed seeds (`fuzz/seeds/<target>`) and the regressions, and
//! grows a working corpus in `fuzz/corpus/<target>` (git-ignored). libFuzzer's own output
//! goes to a log beside the build; it is printed only when a target fails.
//!
//! This file builds and runs the targets and replays their inputs; `seeds` writes the seed
//! corpus (`cargo xtask fuzz-seeds`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context as _};

use crate::util::root;

mod seeds;

/// One fuzz target and the largest input worth mutating for it: a little more than the
/// largest real input of its kind (a small bundle for `tar`, a header, a spec).
struct Target {
    name: &'static str,
    max_len: usize,
    /// Off for the targets that run the reader: its read-ahead threads outlive the call by a
    /// moment, and LeakSanitizer reports the thread-local destructor list of a thread still
    /// running as a leak. Memory stays bounded by the RSS limit all the same.
    detect_leaks: bool,
}

const TARGETS: &[Target] = &[
    Target {
        name: "header",
        max_len: 32 << 10,
        detect_leaks: true,
    },
    Target {
        name: "tar",
        max_len: 64 << 10,
        detect_leaks: false,
    },
    Target {
        name: "agestream",
        max_len: 32 << 10,
        detect_leaks: false,
    },
    Target {
        name: "sums",
        max_len: 16 << 10,
        detect_leaks: true,
    },
    Target {
        name: "inventory",
        max_len: 16 << 10,
        detect_leaks: true,
    },
    Target {
        name: "spec",
        max_len: 8 << 10,
        detect_leaks: true,
    },
    Target {
        name: "lock",
        max_len: 8 << 10,
        detect_leaks: true,
    },
    Target {
        name: "ollama",
        max_len: 8 << 10,
        detect_leaks: true,
    },
    Target {
        name: "image_ref",
        max_len: 8 << 10,
        detect_leaks: true,
    },
    Target {
        name: "www_authenticate",
        max_len: 4 << 10,
        detect_leaks: true,
    },
];

/// The cargo-fuzz installed when none is: a known version, so that CI does not change
/// under us.
const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// libFuzzer's limits: resident memory (AddressSanitizer doubles ours), and seconds for one
/// input before it counts as a hang.
const RSS_LIMIT_MB: u32 = 2048;
const INPUT_TIMEOUT_S: u32 = 10;
/// What `cargo xtask fuzz` gives each target without an argument, and what CI gives it.
pub const DEFAULT_SECONDS: u64 = 60;
pub const CI_SECONDS: u64 = 10;

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let usage = "usage: cargo xtask fuzz [--pending] [SECONDS] [TARGET…]";
    let pending = args.first().is_some_and(|a| a == "--pending");
    let args = &args[usize::from(pending)..];
    let (seconds, only) = match args.first() {
        Some(s) if s.bytes().all(|b| b.is_ascii_digit()) => (s.parse().context(usage)?, &args[1..]),
        _ => (DEFAULT_SECONDS, args),
    };
    for t in only {
        if !TARGETS.iter().any(|k| k.name == t) {
            let names: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
            bail!(
                "{usage}\nunknown target {t:?}; targets: {}",
                names.join(" ")
            );
        }
    }
    fuzz(seconds, only, pending)
}

/// Builds, runs every target (or those in `only`) for `seconds`, then replays the
/// regressions (and with `pending`, the inputs of known bugs, with their checks on). Fails if
/// any target found a crash or a replayed input fails.
pub fn fuzz(seconds: u64, only: &[String], pending: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    require_nightly()?;
    ensure_cargo_fuzz()?;
    let targets: Vec<&Target> = TARGETS
        .iter()
        .filter(|t| only.is_empty() || only.iter().any(|o| o == t.name))
        .collect();

    let t = Instant::now();
    eprintln!("xtask: fuzz: building {} targets", targets.len());
    let mut build = cargo_fuzz("build", false);
    crate::util::sh(&mut build)?;
    eprintln!("xtask: fuzz: built in {}", secs(t.elapsed()));

    let mut failed = Vec::new();
    if seconds > 0 {
        for target in &targets {
            if let Err(e) = run_target(target, seconds, pending) {
                eprintln!("xtask: fuzz: {e:#}");
                failed.push(target.name);
            }
        }
    }
    let t = Instant::now();
    for target in &targets {
        if let Err(e) = replay(target, pending) {
            eprintln!("xtask: fuzz: {e:#}");
            failed.push(target.name);
        }
    }
    eprintln!("xtask: fuzz: regressions replayed in {}", secs(t.elapsed()));
    let pending_inputs = fs::read_dir(fuzz_dir().join("pending"))
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|d| d.path().is_dir())
        .flat_map(|d| fs::read_dir(d.path()).into_iter().flatten())
        .count();
    if pending_inputs > 0 && !pending {
        eprintln!(
            "xtask: fuzz: {pending_inputs} inputs of known bugs in fuzz/pending are not checked until their fixes land (cargo xtask fuzz --pending checks them)"
        );
    }
    eprintln!("xtask: fuzz: {} in all", secs(started.elapsed()));
    if !failed.is_empty() {
        failed.dedup();
        bail!(
            "fuzzing failed for {}; see above for each input and how to reproduce it",
            failed.join(", ")
        );
    }
    Ok(())
}

fn require_nightly() -> anyhow::Result<()> {
    let ok = Command::new("cargo")
        .args(["+nightly", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!(
            "\n!!! xtask: fuzz: the nightly toolchain is missing, so NOTHING WAS FUZZED.\n\
             !!! cargo fuzz needs it: rustup toolchain install nightly\n"
        );
        bail!("fuzzing needs the nightly toolchain (rustup toolchain install nightly)");
    }
    Ok(())
}

fn ensure_cargo_fuzz() -> anyhow::Result<()> {
    let have = Command::new("cargo")
        .args(["+nightly", "fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if have {
        return Ok(());
    }
    eprintln!("xtask: fuzz: installing cargo-fuzz {CARGO_FUZZ_VERSION}");
    crate::util::sh(Command::new("cargo").args([
        "install",
        "cargo-fuzz",
        "--locked",
        "--version",
        CARGO_FUZZ_VERSION,
    ]))
}

fn fuzz_dir() -> PathBuf {
    root().join("fuzz")
}

/// Where the nightly build goes: `$AIRLOCK_FUZZ_TARGET_DIR`, else `fuzz/` under the usual
/// target dir (never the fuzz crate's own `fuzz/target`).
fn target_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("AIRLOCK_FUZZ_TARGET_DIR") {
        return PathBuf::from(d);
    }
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
        .join("fuzz")
}

/// `cargo +nightly fuzz SUBCOMMAND` on the fuzz crate, with what this xtask's own `cargo run`
/// put in the environment removed (it names the stable toolchain).
fn cargo_fuzz(sub: &str, pending: bool) -> Command {
    let mut c = Command::new("cargo");
    c.current_dir(root())
        .args(["+nightly", "fuzz", sub, "--fuzz-dir"])
        .arg(fuzz_dir())
        .arg("--target-dir")
        .arg(target_dir());
    for v in [
        "CARGO",
        "RUSTUP_TOOLCHAIN",
        "RUSTC",
        "RUSTDOC",
        "AIRLOCK_FUZZ_PENDING",
    ] {
        c.env_remove(v);
    }
    if pending {
        // Read by `airlock_fuzz::pending_checks`.
        c.env("AIRLOCK_FUZZ_PENDING", "1");
    }
    c
}

fn limits(t: &Target, max_len: usize) -> [String; 4] {
    [
        format!("-max_len={max_len}"),
        format!("-rss_limit_mb={RSS_LIMIT_MB}"),
        format!("-timeout={INPUT_TIMEOUT_S}"),
        format!("-detect_leaks={}", u8::from(t.detect_leaks)),
    ]
}

/// Runs one target for `seconds` from its seeds, regressions and working corpus.
fn run_target(t: &Target, seconds: u64, pending: bool) -> anyhow::Result<()> {
    let corpus = fuzz_dir().join("corpus").join(t.name);
    let artifacts = fuzz_dir().join("artifacts").join(t.name);
    fs::create_dir_all(&corpus)?;
    fs::create_dir_all(&artifacts)?;
    let log = target_dir().join("logs").join(format!("{}.log", t.name));
    fs::create_dir_all(log.parent().unwrap())?;
    eprintln!("xtask: fuzz: {} for {seconds} s", t.name);
    let since = SystemTime::now();
    let mut c = cargo_fuzz("run", pending);
    c.arg(t.name).arg(&corpus);
    for d in ["seeds", "regressions"] {
        let dir = fuzz_dir().join(d).join(t.name);
        if dir.is_dir() {
            c.arg(dir);
        }
    }
    c.arg("--")
        .args(limits(t, t.max_len))
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg("-print_final_stats=1");
    let ok = run_logged(&mut c, &log)?;
    let text = fs::read_to_string(&log).unwrap_or_default();
    if !ok {
        print_tail(&text);
        let found = new_files(&artifacts, since);
        let shown: Vec<String> = found.iter().map(|p| p.display().to_string()).collect();
        bail!(
            "{} failed (log {}); crashing input: {}\n  reproduce: cargo +nightly fuzz run {} FILE\n  \
             minimise:  cargo +nightly fuzz tmin {} FILE, then commit it under fuzz/regressions/{}/",
            t.name,
            log.display(),
            if shown.is_empty() { "none written".into() } else { shown.join(" ") },
            t.name,
            t.name,
            t.name,
        );
    }
    let stat = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("stat::{k}:")))
            .map_or("?", str::trim)
            .to_string()
    };
    let corpus_len = fs::read_dir(&corpus).map_or(0, |d| d.count());
    eprintln!(
        "xtask: fuzz: {} ok: {} runs, {} exec/s, corpus {corpus_len}, peak {} MB",
        t.name,
        stat("number_of_executed_units"),
        stat("average_exec_per_sec"),
        stat("peak_rss_mb"),
    );
    Ok(())
}

/// Runs every committed regression input of a target once (and with `pending`, those of
/// known bugs).
fn replay(t: &Target, pending: bool) -> anyhow::Result<()> {
    let dirs: &[&str] = if pending {
        &["regressions", "pending"]
    } else {
        &["regressions"]
    };
    let mut inputs: Vec<PathBuf> = dirs
        .iter()
        .flat_map(|d| {
            fs::read_dir(fuzz_dir().join(d).join(t.name))
                .into_iter()
                .flatten()
        })
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    if inputs.is_empty() {
        return Ok(());
    }
    inputs.sort();
    let log = target_dir()
        .join("logs")
        .join(format!("{}.replay.log", t.name));
    fs::create_dir_all(log.parent().unwrap())?;
    let mut c = cargo_fuzz("run", pending);
    c.arg(t.name)
        .args(&inputs)
        .arg("--")
        .args(limits(t, t.max_len.max(1 << 20)));
    if !run_logged(&mut c, &log)? {
        let text = fs::read_to_string(&log).unwrap_or_default();
        print_tail(&text);
        let last = text
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("Running: "))
            .unwrap_or("?");
        bail!(
            "{}: regression input {last} fails again (log {})",
            t.name,
            log.display()
        );
    }
    eprintln!(
        "xtask: fuzz: {}: {} regression inputs pass",
        t.name,
        inputs.len()
    );
    Ok(())
}

/// Runs `c` with stdout and stderr into `log`; whether it succeeded.
fn run_logged(c: &mut Command, log: &Path) -> anyhow::Result<bool> {
    let f = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let status = c
        .stdout(f.try_clone()?)
        .stderr(f)
        .status()
        .with_context(|| format!("running {c:?}"))?;
    Ok(status.success())
}

/// The end of a libFuzzer log, where the panic, the input and the reproduction command are;
/// lines cut short (libFuzzer prints a crashing input whole, as bytes).
fn print_tail(text: &str) {
    let lines: Vec<&str> = text.lines().collect();
    for l in &lines[lines.len().saturating_sub(60)..] {
        match l.char_indices().nth(300) {
            Some((i, _)) => eprintln!("    {}…", &l[..i]),
            None => eprintln!("    {l}"),
        }
    }
}

fn new_files(dir: &Path, since: SystemTime) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| {
            e.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|m| m >= since)
        })
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

fn secs(d: Duration) -> String {
    format!("{:.0} s", d.as_secs_f64())
}

/// `cargo xtask fuzz-seeds`: writes `fuzz/seeds/` afresh from what the real tools produce
/// (see [`seeds::write`]). Commit what it writes.
pub fn seeds() -> anyhow::Result<()> {
    seeds::write(&fuzz_dir().join("seeds"))
}
