//! The last step, only after the whole bundle verified: manifests and host files written to
//! temps beside their destinations, then everything renamed into place in an order that
//! never shows half a model, then the volumes filled; and what was restored, for the
//! report.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use airlock_bundle::header::Target;
use airlock_bundle::Digest;
use bollard::Docker;

use airlock_progress::Progress;

use super::fs::{env, fs_err, read_all, stage_host_file, stage_manifest, Staged};
use super::{volumes, Action, RestoredFile, RestoredModel, Staging};
use crate::hostfs::{self, Dir};
use crate::UnpackError;

/// Makes everything visible, after the whole bundle verified.
pub(crate) async fn commit(
    st: &mut Staging,
    docker: Option<&Docker>,
    progress: &Progress,
) -> Result<(Vec<RestoredModel>, Vec<RestoredFile>), UnpackError> {
    // 1. Every manifest and host file is written to its temp beside its destination, and
    //    every directory made, before anything is renamed: a failure here (a full disk, a
    //    symlink in the way) leaves nothing visible changed.
    let (mut staged, replaced) = stage_manifests(st)?;
    let dir_modes = stage_host_files(st, &mut staged)?;

    // 2. Renames: blobs, then manifests (a model appears only once its blobs are there),
    //    then files. A blob without a temp file matched the one already there byte for byte.
    let written = place_blobs(st)?;
    for s in &staged {
        s.place()?;
    }
    st.temps.clear();
    // Directory modes last (deepest first), on their descriptors: a read-only directory
    // must not stop its own files.
    for (root, path, mode) in dir_modes.iter().rev() {
        root.open_path(path)
            .and_then(|d| d.chmod(*mode))
            .map_err(fs_err)?;
    }

    let mut models = Vec::new();
    for (hm, replaced) in st.host_models.iter().zip(replaced) {
        let n_written = hm
            .blobs
            .iter()
            .filter(|d| written.contains(&(hm.dir.clone(), **d)))
            .count();
        models.push(RestoredModel {
            name: hm.name.to_string(),
            target: hm.dir.display().to_string(),
            manifest: hm.record.manifest,
            blobs_written: n_written,
            blobs_present: hm.blobs.len() - n_written,
            replaced,
        });
    }
    // Volumes: models (one archive each, manifest last), then files (one archive per volume).
    if !st.volumes.is_empty() {
        volumes::fill(st, docker, &mut models, progress).await?;
    }
    let mut files = Vec::new();
    for pf in &st.files {
        files.push(RestoredFile {
            target: pf.record.target.to_string(),
            path: pf.record.path.clone(),
            action: pf.action,
            digest: pf.record.digest,
            previous: pf.previous,
        });
    }
    st.created_dirs.clear();
    st.spool = None;
    Ok((models, files))
}

/// Each host model's manifest, written to its temp; with the digest each replaces.
fn stage_manifests(st: &mut Staging) -> Result<(Vec<Staged>, Vec<Option<Digest>>), UnpackError> {
    let mut staged = Vec::new();
    let mut replaced = Vec::new();
    for hm in &st.host_models {
        let bytes = read_all(st.spool_file(&hm.record.manifest)?, &hm.record.manifest)?;
        let store = &st.stores[&hm.dir];
        let (s, previous) =
            stage_manifest(store, &hm.name, &bytes, &mut st.created_dirs, &mut st.temps)?;
        staged.push(s);
        replaced.push(previous);
    }
    Ok((staged, replaced))
}

/// A directory to give its mode once everything is in place: the root it is under, its
/// path there, the mode.
type DirMode = (Arc<Dir>, String, u32);

/// Each host file that changes written to its temp (added to `staged`), each directory
/// made; returns the directories' modes, to set last.
fn stage_host_files(
    st: &mut Staging,
    staged: &mut Vec<Staged>,
) -> Result<Vec<DirMode>, UnpackError> {
    let mut dir_modes = Vec::new();
    let host_files: Vec<(String, usize)> = st
        .files
        .iter()
        .enumerate()
        .filter_map(|(i, pf)| match &pf.record.target {
            Target::Path(root) if pf.action != Action::Unchanged => Some((root.clone(), i)),
            _ => None,
        })
        .collect();
    for (root, i) in host_files {
        let root = st.root_made(&root)?;
        let pf = &st.files[i];
        match (pf.action, pf.record.digest) {
            (Action::Directory, _) => {
                let mode = pf.record.mode_bits().map_err(UnpackError::Usage)?;
                root.create_path(&pf.record.path, 0o755, &mut st.created_dirs)
                    .map_err(fs_err)?;
                dir_modes.push((root, pf.record.path.clone(), mode));
            }
            (Action::Written | Action::Overwritten, Some(d)) => {
                let src = st.spool_file(&d)?;
                staged.push(stage_host_file(
                    &root,
                    &pf.record,
                    src,
                    pf.action == Action::Overwritten,
                    &mut st.created_dirs,
                    &mut st.temps,
                )?);
            }
            _ => {}
        }
    }
    Ok(dir_modes)
}

/// Renames each blob temp that was written into its models directory's `blobs/`; returns
/// which (directory, blob) pairs were written.
fn place_blobs(st: &Staging) -> Result<BTreeSet<(PathBuf, Digest)>, UnpackError> {
    let mut written = BTreeSet::new();
    for (dir, store) in &st.stores {
        for (d, temp) in &store.pending {
            let Some(id) = temp.made() else {
                continue;
            };
            hostfs::set_mode(&temp.reopen()?, 0o644).map_err(|e| env(&temp.path(), e))?;
            let final_name = format!("sha256-{}", d.hex());
            temp.dir
                .place(&temp.name, id, &store.blobs, &final_name, true)
                .map_err(fs_err)?;
            written.insert((dir.clone(), *d));
        }
    }
    Ok(written)
}
