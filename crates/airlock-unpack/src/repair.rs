//! Rebuilding a damaged part set in place (`airlock-unpack repair`) on media whose
//! directory may belong to someone else.
//!
//! What is lost and how to rebuild it is the format's ([`RepairPlan`]); this module does
//! the writing, which runs as root on a gap host in a directory another user may be able to
//! write, so it never trusts a path there:
//!
//! - the set's directory is opened once ([`Dir::open_trusted`]) and every read, create and
//!   rename goes through that descriptor, never through a symbolic link;
//! - rebuilt files are written to private (0600) temp files created with
//!   `O_CREAT|O_EXCL|O_NOFOLLOW` under unpredictable names, checked against the signed sums
//!   as they are written, made readable (0644, on the descriptor) and synced;
//! - only when every rebuilt file matched does anything move: each damaged original is
//!   renamed (never replacing anything) to `NAME.damaged` (`.damaged.2`, … if taken) or
//!   unlinked with `--discard-damaged`, and the temp file is renamed into its place after
//!   checking it is still the file written (device and inode).

use std::fs::File;
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};

use airlock_bundle::parts::parity::FileShards;
use airlock_bundle::parts::repair::{RepairPlan, DAMAGED_SUFFIX};
use airlock_bundle::parts::{BundleFiles, SignedSums};

use crate::hostfs::{self, Dir, FileId, FsError, Kind};
use crate::UnpackError;

/// Temp files of a repair run are named `{TEMP_PREFIX}{pid}-{random}.tmp`, so that a later
/// run removes what a killed one left.
const TEMP_PREFIX: &str = ".airlock-repair-";

/// How many `NAME.damaged.N` names are tried before giving up.
const MAX_KEPT: usize = 1000;

/// What a repair did.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Each file rebuilt, in sums order, with the name its damaged original was kept as.
    pub(crate) rebuilt: Vec<(String, Option<String>)>,
    /// How many files the parity covers (data and parity parts).
    pub(crate) files: usize,
    /// Carried files beside the set other than their signed sum (parity does not cover them).
    pub(crate) carried_damaged: Vec<String>,
}

/// Finds the damaged files of the set `files` (signed sums `sums`), rebuilds them and puts
/// them in place; refuses, changing nothing, when more is damaged than the parity rebuilds
/// or a rebuilt file does not match the signed sums.
pub(crate) fn repair(
    files: &BundleFiles,
    sums: &SignedSums,
    discard_damaged: bool,
    on_bytes: &(dyn Fn(u64) + Sync),
) -> Result<Outcome, UnpackError> {
    let abs = std::path::absolute(&files.dir).map_err(|e| UnpackError::io(&files.dir, e))?;
    let dir = Dir::open_trusted(&abs, None)?;
    hostfs::sweep_dead(&dir, TEMP_PREFIX);
    let mut plan = RepairPlan::find(files, sums, on_bytes)?;
    let mut outcome = Outcome {
        files: plan.covered.len(),
        carried_damaged: plan.carried_damaged.clone(),
        ..Outcome::default()
    };
    if plan.lost.is_empty() {
        return Ok(outcome);
    }
    // A second pass only if the first, hashing as it read, found more damage; the plan it
    // returns has nothing left unchecked, so there is no third.
    let mut temps = loop {
        match Temps::rebuild(&dir, &plan, on_bytes)? {
            Rebuilt::Done(temps) => break temps,
            Rebuilt::MoreLost(next) => plan = next,
        }
    };
    for (j, &i) in plan.lost.iter().enumerate() {
        let name = &plan.covered[i].name;
        let kept = set_aside(&dir, name, discard_damaged)?;
        let (temp, id) = &temps.made[j];
        dir.place(temp, *id, &dir, name, false)?;
        temps.placed += 1;
        outcome.rebuilt.push((name.clone(), kept));
    }
    rustix::fs::fsync(dir.fd()).map_err(|e| UnpackError::io(dir.path(), e.into()))?;
    Ok(outcome)
}

/// What one rebuild pass gave.
enum Rebuilt<'d> {
    /// Every lost file, rebuilt and checked.
    Done(Temps<'d>),
    /// A file the pass hashed as it read it was damaged too: rebuild by this plan instead
    /// (the pass's temp files are gone).
    MoreLost(RepairPlan),
}

/// The rebuilt files, in temp files of the set's directory until placed; whatever is not
/// placed is removed when this is dropped.
struct Temps<'d> {
    dir: &'d Dir,
    made: Vec<(String, FileId)>,
    /// How many of `made`, in order, are in place (their temp names are no longer ours).
    placed: usize,
}

impl<'d> Temps<'d> {
    /// Rebuilds every lost file of `plan` into a temp file in `dir`, each checked against
    /// the signed sums, readable (0644) and synced.
    fn rebuild(
        dir: &'d Dir,
        plan: &RepairPlan,
        on_bytes: &(dyn Fn(u64) + Sync),
    ) -> Result<Rebuilt<'d>, UnpackError> {
        let mut temps = Temps {
            dir,
            made: Vec::with_capacity(plan.lost.len()),
            placed: 0,
        };
        let prefix = format!("{TEMP_PREFIX}{}-", std::process::id());
        let mut out: Vec<BufWriter<File>> = Vec::with_capacity(plan.lost.len());
        for _ in &plan.lost {
            let (name, f) = dir.create_temp(&prefix, ".tmp")?;
            let id = FileId::of_file(&f).map_err(|e| UnpackError::io(dir.path().join(&name), e))?;
            temps.made.push((name, id));
            out.push(BufWriter::with_capacity(1 << 16, f));
        }
        let names: Vec<PathBuf> = plan
            .covered
            .iter()
            .map(|c| PathBuf::from(&c.name))
            .collect();
        let src = FileShards::with_opener(names, |name: &Path| {
            let name = name.to_str().unwrap_or_default();
            dir.open_read(name).map_err(io::Error::from)
        });
        if let Some(next) = plan.rebuild(&src, &mut out, on_bytes)? {
            return Ok(Rebuilt::MoreLost(next));
        }
        for (w, (name, _)) in out.into_iter().zip(&temps.made) {
            let path = dir.path().join(name);
            let f = w
                .into_inner()
                .map_err(|e| UnpackError::io(&path, e.into_error()))?;
            // Parts are ciphertext: as readable as the build wrote them.
            hostfs::set_mode(&f, 0o644)
                .and_then(|()| f.sync_all())
                .map_err(|e| UnpackError::io(&path, e))?;
        }
        Ok(Rebuilt::Done(temps))
    }
}

impl Drop for Temps<'_> {
    fn drop(&mut self) {
        for (name, _) in &self.made[self.placed..] {
            let _ = self.dir.remove_file(name);
        }
    }
}

/// Moves the damaged file at `name` out of the way: kept as `NAME.damaged` (or the first
/// free `NAME.damaged.N`: nothing is replaced), or removed with `discard` (a directory
/// standing there is always kept, never removed). Returns the name it was kept as.
fn set_aside(dir: &Dir, name: &str, discard: bool) -> Result<Option<String>, UnpackError> {
    let kind = dir.kind(name)?;
    if kind == Kind::Missing {
        return Ok(None);
    }
    if discard && kind != Kind::Dir {
        dir.remove_file(name)?;
        return Ok(None);
    }
    for n in 1..=MAX_KEPT {
        let kept = match n {
            1 => format!("{name}{DAMAGED_SUFFIX}"),
            n => format!("{name}{DAMAGED_SUFFIX}.{n}"),
        };
        match dir.rename(name, dir, &kept, false) {
            Ok(()) => return Ok(Some(kept)),
            Err(FsError::Io { source, .. }) if source.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e.into()),
        }
    }
    Err(UnpackError::Host {
        what: "",
        path: dir.path().join(name),
        problem: format!(
            "{MAX_KEPT} damaged copies are kept beside it already: remove some, or repair with --discard-damaged"
        ),
    })
}
