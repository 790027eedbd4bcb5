//! `cargo xtask bench parity` (also run after the parts row): what parity parts cost and
//! what `repair` does with them, on the bench's fixture images (about 1 GiB, 4 GiB with
//! `--big`) built into a bundle in parts of about an eleventh of it (`K` = 11 data parts,
//! `--parity 10%` gives `N` = 2):
//! - `airlock-pack build --split SIZE --parity 10%` vs the same build without `--parity`,
//!   cold cache, in turns: encrypted to an age recipient and signed (the target, ≤ 1.3×
//!   the time) and plain (signed only, informational);
//! - `airlock-unpack repair` of one deleted data part vs `cat` of the files repair reads
//!   (every surviving data and parity part) to /dev/null, as throughput over those bytes
//!   (target ≥ 0.5× cat's): with the page cache dropped before each run of both (media, the
//!   target row), and from the page cache (informational).
//!
//! Peak RSS of the builds with parity and of repair comes from GNU time (≤ 64 MiB).

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::Command;

use airlock_testkit::TestRegistry;
use anyhow::{bail, Context as _};

use super::{fixture_images, in_turns, keys_spec_and_lock, report, Measured, Row};
use crate::util::{capture, sh};

/// How many data parts the bundle is cut into: about ten, as the target assumes.
const DATA_PARTS: u64 = 11;
/// The measured share of parity parts.
const PARITY: &str = "10%";
/// Rounds of each pair, peer and ours in turns; the best of each.
const ROUNDS: usize = 3;

pub fn run(bins: &Path, big: bool) -> anyhow::Result<()> {
    let pack = bins.join("airlock-pack");
    let unpack = bins.join("airlock-unpack");
    let scale: u64 = if big { 4 } else { 1 };
    let registry = TestRegistry::start();
    let work = tempfile::tempdir_in(crate::util::scratch()?)?;
    let w = work.path();
    // The gap side's anti-rollback record stays with this run, not in /var/lib/airlock.
    std::env::set_var("AIRLOCK_STATE_DIR", w.join("airlock-state"));
    eprintln!("bench: generating {scale} GiB of fixture images for the parity rows");
    let tags = fixture_images(w, &registry, scale)?;
    let spec = keys_spec_and_lock(&pack, w, &registry, &tags, &w.join("lock-cache"))?;
    sh(Command::new(&unpack)
        .args(["keygen", "-o"])
        .arg(w.join("host")))?;

    // One unmeasured build tells the bundle's size (the parts are cut from it) and warms
    // the registry's files in the page cache for every measured build alike.
    let builds = Builds {
        pack: &pack,
        w,
        spec: &spec,
        split_mib: 0,
    };
    sh(&mut builds.command("probe.airlock", true, false))?;
    let bundle_size = std::fs::metadata(w.join("probe.airlock"))?.len();
    remove_set(w, "probe.airlock");
    let _ = std::fs::remove_dir_all(w.join("cache-cold"));
    let builds = Builds {
        split_mib: bundle_size.div_ceil(DATA_PARTS << 20),
        ..builds
    };

    let (plain_peer, plain_ours) = builds.pair(false)?;
    remove_set(w, "plain-parity.airlock");
    let (enc_peer, enc_ours) = builds.pair(true)?;
    let base = "enc-parity.airlock";
    let set = PartSet::of(w, base)?;
    eprintln!(
        "bench: {base}: K = {} data parts of {} MiB, N = {} parity parts",
        set.data.len(),
        builds.split_mib,
        set.parity.len()
    );
    let mut rows = vec![
        build_row(
            &format!("pack build --parity {PARITY}, encrypted"),
            enc_ours,
            &enc_peer,
            Some(1.3),
        ),
        build_row(
            &format!("pack build --parity {PARITY}, plain"),
            plain_ours,
            &plain_peer,
            None,
        ),
    ];
    rows.extend(repair_rows(&unpack, w, &set)?);

    let what = format!(
        "{} images in K = {} data parts of {} MiB + N = {} parity parts",
        tags.len(),
        set.data.len(),
        builds.split_mib,
        set.parity.len()
    );
    let size = set.data_bytes();
    if std::env::var_os("AIRLOCK_BENCH_KEEP").is_some() {
        eprintln!("bench: kept {} (AIRLOCK_BENCH_KEEP)", work.keep().display());
    }
    report(&rows, &what, size)
}

/// The measured builds: `spec` into `w`, cut in parts of `split_mib` MiB (none if 0), each
/// from an empty cache.
struct Builds<'a> {
    pack: &'a Path,
    w: &'a Path,
    spec: &'a Path,
    split_mib: u64,
}

impl Builds<'_> {
    fn command(&self, out: &str, encrypted: bool, parity: bool) -> Command {
        let mut c = Command::new(self.pack);
        c.arg("build")
            .arg(self.spec)
            .arg("-o")
            .arg(self.w.join(out))
            .arg("--sign-key")
            .arg(self.w.join("keys/airlock.key"))
            .arg("-q")
            .arg("--cache")
            .arg(self.w.join("cache-cold"));
        if self.split_mib > 0 {
            c.arg("--split").arg(format!("{}MiB", self.split_mib));
        }
        if parity {
            c.args(["--parity", PARITY]);
        }
        if encrypted {
            c.arg("--recipients-file").arg(self.w.join("host/host.pub"));
        }
        c
    }

    /// The build without parity (the peer) and with it (ours), in turns, each from the same
    /// state: no output of either on disk, an empty cache. Leaves ours' output,
    /// `{plain,enc}-parity.airlock.*`.
    fn pair(&self, encrypted: bool) -> anyhow::Result<(Measured, Measured)> {
        let kind = if encrypted { "enc" } else { "plain" };
        let (without, with) = (format!("{kind}.airlock"), format!("{kind}-parity.airlock"));
        let reset = || {
            remove_set(self.w, &without);
            remove_set(self.w, &with);
            let _ = std::fs::remove_dir_all(self.w.join("cache-cold"));
        };
        let (peer, ours) = in_turns(
            ROUNDS,
            (&reset, &mut self.command(&without, encrypted, false)),
            (&reset, &mut self.command(&with, encrypted, true)),
        )?;
        remove_set(self.w, &without);
        let _ = std::fs::remove_dir_all(self.w.join("cache-cold"));
        Ok((peer, ours))
    }
}

/// The files of one built part set in `w`: data parts `base.001…`, parity parts
/// `base.p01…`.
struct PartSet {
    base: String,
    data: Vec<PathBuf>,
    parity: Vec<PathBuf>,
}

impl PartSet {
    fn of(w: &Path, base: &str) -> anyhow::Result<PartSet> {
        let data: Vec<PathBuf> = (1..)
            .map(|i| w.join(format!("{base}.{i:03}")))
            .take_while(|p| p.exists())
            .collect();
        let parity: Vec<PathBuf> = (1..)
            .map(|i| w.join(format!("{base}.p{i:02}")))
            .take_while(|p| p.exists())
            .collect();
        if data.len() < 2 || parity.is_empty() {
            bail!(
                "{base}: expected data and parity parts, found {} and {}",
                data.len(),
                parity.len()
            );
        }
        Ok(PartSet {
            base: base.into(),
            data,
            parity,
        })
    }

    fn data_bytes(&self) -> u64 {
        bytes(&self.data)
    }
}

/// `airlock-unpack repair` of one deleted data part (a full-sized one in the middle) vs
/// `cat` of the surviving data and parity parts, which repair all reads (it hashes every
/// file against the signed sums before it rebuilds): cold, then warm.
fn repair_rows(unpack: &Path, w: &Path, set: &PartSet) -> anyhow::Result<Vec<Row>> {
    let lost = set.data[set.data.len() / 2].clone();
    let lost_name = lost
        .file_name()
        .and_then(|n| n.to_str())
        .context("part name")?
        .to_string();
    let lost_size = std::fs::metadata(&lost)?.len();
    let surviving: Vec<PathBuf> = set
        .data
        .iter()
        .chain(&set.parity)
        .filter(|p| **p != lost)
        .cloned()
        .collect();
    let read = bytes(&surviving);
    eprintln!(
        "bench: repair of {lost_name} ({lost_size} bytes) from {} surviving files, {read} bytes",
        surviving.len()
    );
    // The same state before every run of both: the lost part (and anything repair leaves
    // beside it) deleted; repair recreates it.
    let lose = || {
        let _ = std::fs::remove_file(w.join(&lost_name));
        let _ = std::fs::remove_file(w.join(format!("{lost_name}.damaged")));
        for e in std::fs::read_dir(w).into_iter().flatten().flatten() {
            if e.file_name()
                .to_string_lossy()
                .starts_with(".airlock-repair-")
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
    };
    let dropped = Cell::new(true);
    let lose_cold = || {
        lose();
        if drop_caches().is_err() {
            dropped.set(false);
        }
    };
    drop_caches().context(
        "dropping the page cache for the cold repair row (needs root: /proc/sys/vm/drop_caches)",
    )?;
    let sums = w.join(format!("{}.sums", set.base));
    let mut ours = Command::new(unpack);
    ours.arg("repair")
        .arg(&sums)
        .arg("--trust")
        .arg(w.join("keys/airlock.pub"))
        .arg("-q");
    let mut cat = Command::new("cat");
    cat.args(&surviving);

    let (cat_cold, ours_cold) = in_turns(ROUNDS, (&lose_cold, &mut cat), (&lose_cold, &mut ours))?;
    if !dropped.get() {
        bail!("dropping the page cache failed during the cold repair rounds");
    }
    rebuilt(&lost, lost_size)?;
    // Warm: every surviving file in the page cache for both.
    capture(
        Command::new("cat")
            .args(&surviving)
            .stdout(std::process::Stdio::null()),
    )?;
    let (cat_warm, ours_warm) = in_turns(ROUNDS, (&lose, &mut cat), (&lose, &mut ours))?;
    rebuilt(&lost, lost_size)?;
    Ok(vec![
        repair_row(
            "unpack repair, 1 lost part, cold",
            ours_cold,
            &cat_cold,
            read,
            true,
        ),
        repair_row(
            "unpack repair, 1 lost part, warm",
            ours_warm,
            &cat_warm,
            read,
            false,
        ),
    ])
}

/// Repair's last run left the lost part back at its size (repair itself checked its
/// sha256 against the signed sums before the rename).
fn rebuilt(lost: &Path, size: u64) -> anyhow::Result<()> {
    let actual = std::fs::metadata(lost)
        .with_context(|| format!("{} after repair", lost.display()))?
        .len();
    if actual != size {
        bail!(
            "{}: {actual} bytes after repair, expected {size}",
            lost.display()
        );
    }
    Ok(())
}

/// Writes back and drops the page cache, so that the next reader reads from the disk.
fn drop_caches() -> anyhow::Result<()> {
    sh(&mut Command::new("sync"))?;
    std::fs::write("/proc/sys/vm/drop_caches", "3\n").context("/proc/sys/vm/drop_caches")?;
    Ok(())
}

/// Removes the files of the set `name` in `w`: `name` and every `name.*`.
fn remove_set(w: &Path, name: &str) {
    let prefix = format!("{name}.");
    let Ok(entries) = std::fs::read_dir(w) else {
        return;
    };
    for e in entries.flatten() {
        let n = e.file_name();
        let n = n.to_string_lossy();
        if n == name || n.starts_with(&prefix) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

fn bytes(files: &[PathBuf]) -> u64 {
    files
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum()
}

/// A build with parity as a multiple of the same build's time without (`peer`), with both
/// CPU splits; met if at most `limit` (informational rows have none).
fn build_row(name: &str, ours: Measured, peer: &Measured, limit: Option<f64>) -> Row {
    let times = ours.secs / peer.secs;
    Row {
        name: name.into(),
        ratio: format!(
            "{times:.2}x the time without parity (user/sys {:.2}/{:.2}s vs {:.2}/{:.2}s)",
            ours.user, ours.sys, peer.user, peer.sys
        ),
        ok: limit.is_none_or(|l| times <= l),
        peer: peer.secs,
        ours,
    }
}

/// Repair's throughput over the `read` bytes of the surviving files vs `cat`'s over the
/// same; met (on a target row) at half cat's or more.
fn repair_row(name: &str, ours: Measured, cat: &Measured, read: u64, target: bool) -> Row {
    let mb_s = |secs: f64| read as f64 / 1e6 / secs;
    let share = cat.secs / ours.secs;
    Row {
        name: name.into(),
        ratio: format!(
            "{:.0} MB/s = {share:.2}x cat's {:.0} MB/s (user/sys {:.2}/{:.2}s vs {:.2}/{:.2}s)",
            mb_s(ours.secs),
            mb_s(cat.secs),
            ours.user,
            ours.sys,
            cat.user,
            cat.sys
        ),
        ok: !target || share >= 0.5,
        peer: cat.secs,
        ours,
    }
}
