//! The first step, once the signed header is read and before any blob is: every target
//! decided, what is already there looked at (and never trusted), conflicting files refused
//! unless `--overwrite`, and for every blob the sinks it is streamed into.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use airlock_bundle::header::{FileRecord, Header, ModelRecord, Target};
use airlock_bundle::ollama::{self, ModelName};
use airlock_bundle::Digest;
use bollard::Docker;

use super::fs::{fs_err, host_blob_intact, host_existing, Spool, TempSpec, PARTIAL_MARK};
use super::sink::{PresentCell, SinkSpec};
use super::volumes::{check_in_background, open_reader};
use super::{
    model_target, Action, Conflict, HostModel, PlannedFile, RestoreOptions, Staging, VolumeModel,
};
use crate::hostfs::{self, Dir, Kind};
use crate::volume::{Existing, Helper};
use crate::{Destined, UnpackError};

/// Decides every write before a blob is read. Blobs already in place are checked (compared
/// with the stream in a directory, hashed in the background in a volume): kept if right,
/// replaced if damaged. Existing files that differ are conflicts, refused unless
/// `overwrite`.
pub(crate) async fn prepare(
    h: &Header,
    opts: &RestoreOptions,
    docker: Option<&Docker>,
) -> Result<Staging, UnpackError> {
    let mut st = Staging::default();
    if h.models.is_empty() && h.files.is_empty() {
        return Ok(st);
    }
    // Volumes that exist are read through a helper; a volume that does not exist yet is
    // known to be empty and is created only at commit.
    let mut volumes: BTreeSet<String> = BTreeSet::new();
    for m in &h.models {
        if let Target::Volume(v) = model_target(m, opts) {
            volumes.insert(v);
        }
    }
    for f in &h.files {
        if let Target::Volume(v) = &f.target {
            volumes.insert(v.clone());
        }
    }
    let reader = open_reader(docker, &volumes).await?;
    let result = prepare_with(h, opts, &mut st, reader.as_ref()).await;
    st.reader = reader;
    st.volumes = volumes;
    if let Err(e) = result {
        st.release().await;
        st.abort();
        return Err(e);
    }
    Ok(st)
}

/// What the header says of blob sizes: of those it carries, and of those a delta bundle
/// left out because the target should have them.
struct Sizes {
    carried: HashMap<Digest, u64>,
    left_out: HashMap<Digest, u64>,
}

impl Sizes {
    fn of(h: &Header) -> Sizes {
        Sizes {
            carried: h.entries.iter().map(|e| (e.digest, e.size)).collect(),
            left_out: h
                .expected_present
                .iter()
                .filter(|p| p.chain_id.is_none())
                .map(|p| (p.digest, p.size))
                .collect(),
        }
    }

    /// The size of a blob the bundle left out (not carried): it must be in place already.
    fn left_out(&self, d: &Digest) -> Option<u64> {
        self.left_out
            .get(d)
            .filter(|_| !self.carried.contains_key(d))
            .copied()
    }

    fn carried(&self, d: &Digest) -> Option<u64> {
        self.carried.get(d).copied()
    }
}

async fn prepare_with(
    h: &Header,
    opts: &RestoreOptions,
    st: &mut Staging,
    reader: Option<&Helper>,
) -> Result<(), UnpackError> {
    let sizes = Sizes::of(h);
    let mut sent_to_volume: BTreeSet<(String, Digest)> = BTreeSet::new();
    for m in &h.models {
        let name = ModelName::parse(&m.name).map_err(|e| {
            UnpackError::Bundle(airlock_bundle::BundleError::Malformed(e.to_string()))
        })?;
        // The manifest is needed in every case (it is written last, from the spool).
        st.need_spool(opts, m.manifest, None)?;
        let blobs: Vec<Digest> = {
            let mut seen = BTreeSet::new();
            std::iter::once(m.config)
                .chain(m.layers.iter().copied())
                .filter(|d| seen.insert(*d))
                .collect()
        };
        match model_target(m, opts) {
            Target::Path(dir) => plan_host_model(st, m, name, PathBuf::from(dir), blobs, &sizes)?,
            Target::Volume(v) => {
                let mut vm = VolumeModel {
                    record: m.clone(),
                    name,
                    volume: v,
                    send: Vec::new(),
                    blob_count: blobs.len(),
                    replaced: None,
                };
                plan_volume_model(
                    st,
                    opts,
                    &mut vm,
                    blobs,
                    &sizes,
                    reader,
                    &mut sent_to_volume,
                )
                .await?;
                st.volume_models.push(vm);
            }
        }
    }
    let conflicts = plan_files(h, opts, st, reader).await?;
    add_spool_sinks(st)?;
    if !conflicts.is_empty() {
        return Err(UnpackError::FilesDiffer(conflicts));
    }
    Ok(())
}

impl Staging {
    /// Blob `d` goes to the spool (made on first need): always, or with `unless`, unless
    /// that check finds it already in its volume.
    fn need_spool(
        &mut self,
        opts: &RestoreOptions,
        d: Digest,
        unless: Option<Arc<PresentCell>>,
    ) -> Result<(), UnpackError> {
        if self.spool.is_none() {
            self.spool = Some(Spool::create(&opts.work_dir)?);
        }
        self.spool_needs.entry(d).or_default().push(unless);
        Ok(())
    }
}

/// A model bound for a host models directory: a temp in its `blobs/` for each blob not
/// already planned there, compared with the blob in place when one of the right size is.
fn plan_host_model(
    st: &mut Staging,
    m: &ModelRecord,
    name: ModelName,
    dir: PathBuf,
    blobs: Vec<Digest>,
    sizes: &Sizes,
) -> Result<(), UnpackError> {
    let store = st.store(&dir)?;
    let blobs_dir = store.blobs.clone();
    let mut new_temps = Vec::new();
    let mut missing = Vec::new();
    for d in &blobs {
        let d = *d;
        if store.pending.contains_key(&d) {
            continue;
        }
        let final_name = format!("sha256-{}", d.hex());
        if let Some(size) = sizes.left_out(&d) {
            // Left out of a delta bundle: it must be here already, intact.
            if !host_blob_intact(&blobs_dir, &final_name, d, size) {
                missing.push(format!(
                    "model blob {d} ({size} bytes) of {} in {}",
                    m.name,
                    blobs_dir.path().join(&final_name).display()
                ));
            }
            continue;
        }
        let (spec, temp) = host_blob_sink(&blobs_dir, &final_name, d, sizes)?;
        store.pending.insert(d, temp.clone());
        new_temps.push((d, spec, temp));
    }
    st.missing.append(&mut missing);
    for (d, spec, temp) in new_temps {
        st.sinks.entry(d).or_default().push(spec);
        st.temps.push(temp);
    }
    st.host_models.push(HostModel {
        record: m.clone(),
        name,
        dir,
        blobs,
    });
    Ok(())
}

/// Where blob `d` (`final_name` in `blobs_dir`) is streamed to, and its temp.
fn host_blob_sink(
    blobs_dir: &Arc<Dir>,
    final_name: &str,
    d: Digest,
    sizes: &Sizes,
) -> Result<(SinkSpec, TempSpec), UnpackError> {
    // An unpredictable name: someone who can write the models directory cannot plant
    // anything where the temp will be.
    let temp = TempSpec::named(
        blobs_dir,
        format!(
            "{final_name}{PARTIAL_MARK}{}-{}",
            std::process::id(),
            hostfs::random_token()
        ),
    );
    // A blob already there with the right size is compared byte for byte with the bundle's
    // (which is hashed as it streams): equal means present and verified without hashing it
    // a second time; a difference switches to writing the temp file, which then replaces
    // the damaged blob.
    let spec = match blobs_dir.kind(final_name).map_err(fs_err)? {
        Kind::File { size } if Some(size) == sizes.carried(&d) => SinkSpec::Compare {
            dir: blobs_dir.clone(),
            existing: final_name.to_string(),
            temp: temp.clone(),
        },
        Kind::File { .. } | Kind::Missing => SinkSpec::Write(temp.clone()),
        _ => {
            return Err(UnpackError::NotAFile {
                path: blobs_dir.path().join(final_name),
                meant: Destined::Blob(d),
            })
        }
    };
    Ok((spec, temp))
}

/// A model bound for a volume: each blob not sent there by an earlier model is spooled,
/// unless a background check finds it in the volume already; `vm.send` lists them.
async fn plan_volume_model(
    st: &mut Staging,
    opts: &RestoreOptions,
    vm: &mut VolumeModel,
    blobs: Vec<Digest>,
    sizes: &Sizes,
    reader: Option<&Helper>,
    sent_to_volume: &mut BTreeSet<(String, Digest)>,
) -> Result<(), UnpackError> {
    let v = vm.volume.clone();
    let in_volume = reader.filter(|r| r.has(&v));
    for d in blobs {
        if sent_to_volume.contains(&(v.clone(), d)) {
            continue;
        }
        let rel = format!("models/{}", ollama::blob_path(&d).display());
        if let Some(size) = sizes.left_out(&d) {
            // Left out of a delta bundle: it must be in the volume, intact.
            let found = match in_volume {
                Some(r) => r.existing(&v, &rel).await?,
                None => Existing::Missing,
            };
            if !matches!(found, Existing::File { digest, .. } if digest == d) {
                st.missing.push(format!(
                    "model blob {d} ({size} bytes) of {} in volume {v}:/{rel}",
                    vm.record.name
                ));
            }
            sent_to_volume.insert((v.clone(), d));
            continue;
        }
        // Only the size is read now; a blob of the right size is hashed in the background
        // while the bundle streams, and sent only if it differs.
        let existing = match in_volume {
            Some(r) => r.file(&v, &rel).stat().await?,
            None => Existing::Missing,
        };
        let unless = match (existing, in_volume) {
            (Existing::Sized(size), Some(r)) if Some(size) == sizes.carried(&d) => {
                let (check, cell) = check_in_background(r, &v, &rel, d);
                st.checks.push(check);
                Some(cell)
            }
            (Existing::Missing | Existing::Sized(_) | Existing::File { .. }, _) => None,
            (other, _) => {
                return Err(UnpackError::VolumeNotABlob {
                    volume: v.to_string(),
                    path: rel.clone(),
                    found: describe(&other),
                })
            }
        };
        st.need_spool(opts, d, unless)?;
        sent_to_volume.insert((v.clone(), d));
        vm.send.push(d);
    }
    let mrel = format!("models/{}", vm.name.manifest_path().display());
    vm.replaced = match existing_in(reader, &Target::Volume(v), &mrel, None).await? {
        Existing::File { digest, .. } if digest != vm.record.manifest => Some(digest),
        _ => None,
    };
    Ok(())
}

/// Decides each file's [`Action`] from what is there; returns the conflicts (files with
/// other content, when not `overwrite`).
async fn plan_files(
    h: &Header,
    opts: &RestoreOptions,
    st: &mut Staging,
    reader: Option<&Helper>,
) -> Result<Vec<Conflict>, UnpackError> {
    let mut conflicts = Vec::new();
    for f in &h.files {
        let root = match &f.target {
            Target::Path(p) => st.root(p)?,
            Target::Volume(_) => None,
        };
        let existing = existing_in(reader, &f.target, &f.path, root.as_deref()).await?;
        let (action, previous) = file_action(f, &existing, opts.overwrite, &mut conflicts)?;
        if let (Some(d), Action::Written | Action::Overwritten) = (&f.digest, action) {
            st.need_spool(opts, *d, None)?;
        }
        st.files.push(PlannedFile {
            record: f.clone(),
            action,
            previous,
        });
    }
    Ok(conflicts)
}

/// What to do with file `f`, given what is there, and the digest it replaces.
fn file_action(
    f: &FileRecord,
    existing: &Existing,
    overwrite: bool,
    conflicts: &mut Vec<Conflict>,
) -> Result<(Action, Option<Digest>), UnpackError> {
    Ok(match (&f.digest, existing) {
        (None, Existing::Dir | Existing::Missing) => (Action::Directory, None),
        (Some(d), Existing::File { digest, .. }) if digest == d => (Action::Unchanged, None),
        (Some(_), Existing::Missing) => (Action::Written, None),
        (Some(d), Existing::File { digest, .. }) => {
            if !overwrite {
                conflicts.push(Conflict {
                    target: f.target.clone(),
                    path: f.path.clone(),
                    existing: describe(existing),
                    bundle: *d,
                });
            }
            (Action::Overwritten, Some(*digest))
        }
        (_, other) => {
            // A directory where a file goes, a file where a directory goes, or a
            // symlink: never replaced, not even with --overwrite.
            return Err(UnpackError::KindDiffers {
                target: f.target.to_string(),
                path: f.path.to_string(),
                found: describe(other),
                bundle_dir: f.is_dir(),
            });
        }
    })
}

/// Spool sinks: unconditional if anything needs the blob regardless, else skipped once
/// every check that could spare it found it in place.
fn add_spool_sinks(st: &mut Staging) -> Result<(), UnpackError> {
    for (d, needs) in std::mem::take(&mut st.spool_needs) {
        let temp = st.spool_temp(&d)?;
        let spec = if needs.iter().any(Option::is_none) {
            SinkSpec::Write(temp)
        } else {
            SinkSpec::SpoolUnlessPresent {
                temp,
                checks: needs.into_iter().flatten().collect(),
            }
        };
        st.sinks.entry(d).or_default().push(spec);
    }
    Ok(())
}

async fn existing_in(
    reader: Option<&Helper>,
    target: &Target,
    rel: &str,
    host_root: Option<&Dir>,
) -> Result<Existing, UnpackError> {
    match target {
        Target::Path(_) => host_existing(host_root, rel),
        Target::Volume(v) => match reader {
            Some(r) if r.has(v) => r.existing(v, rel).await,
            _ => Ok(Existing::Missing),
        },
    }
}

fn describe(e: &Existing) -> String {
    match e {
        Existing::File { digest, .. } => format!("content {digest}"),
        Existing::Sized(size) => format!("a file of {size} bytes"),
        Existing::Dir => "a directory".into(),
        Existing::Other => "a symlink or special file".into(),
        Existing::Missing => "nothing".into(),
    }
}
