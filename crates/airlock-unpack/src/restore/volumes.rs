//! Docker named volumes as restore targets, always through [`crate::volume::Helper`]: the
//! read helper opened at prepare, the background checks that hash a volume's blobs while
//! the bundle streams, and at commit the filling: one archive per model whose manifest
//! entry comes last, then one archive per volume for its files, each a tar streamed from
//! the spool.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Write as _};
use std::path::PathBuf;
use std::sync::Arc;

use airlock_bundle::header::Target;
use airlock_bundle::ollama;
use airlock_bundle::Digest;
use bollard::Docker;
use bytes::Bytes;

use airlock_progress::Progress;

use super::sink::PresentCell;
use super::{Action, RestoredModel, Staging, VolumeModel};
use crate::volume::{volume_exists, Existing, Helper};
use crate::UnpackError;

fn needs_engine() -> UnpackError {
    UnpackError::NeedsDockerEngine
}

/// A helper reading the `volumes` that exist already (`None` when none does): a volume that
/// does not exist yet is known to be empty, and is created only at commit.
pub(super) async fn open_reader(
    docker: Option<&Docker>,
    volumes: &BTreeSet<String>,
) -> Result<Option<Helper>, UnpackError> {
    if volumes.is_empty() {
        return Ok(None);
    }
    let docker = docker.ok_or_else(needs_engine)?;
    let mut existing = Vec::new();
    for v in volumes {
        if volume_exists(docker, v).await? {
            existing.push(v.clone());
        }
    }
    if existing.is_empty() {
        return Ok(None);
    }
    Ok(Some(Helper::start(docker, &existing, false).await?))
}

/// A blob of the right size already in a volume, being hashed while the bundle streams.
#[derive(Debug)]
pub(super) struct VolumeCheck {
    volume: String,
    digest: Digest,
    pub(super) task: tokio::task::JoinHandle<Result<bool, UnpackError>>,
}

/// Starts hashing `rel` in volume `v` in the background; the cell says, once known,
/// whether it is blob `d` (so its spool file need not be written).
pub(super) fn check_in_background(
    reader: &Helper,
    v: &str,
    rel: &str,
    d: Digest,
) -> (VolumeCheck, Arc<PresentCell>) {
    let cell: Arc<PresentCell> = Arc::default();
    let file = reader.file(v, rel);
    let c = cell.clone();
    let task = tokio::spawn(async move {
        let found = matches!(
            file.existing().await?,
            Existing::File { digest, .. } if digest == d
        );
        *c.lock().unwrap_or_else(|p| p.into_inner()) = Some(found);
        Ok(found)
    });
    let check = VolumeCheck {
        volume: v.to_string(),
        digest: d,
        task,
    };
    (check, cell)
}

/// Waits for the background checks: which (volume, blob) pairs are already in place.
async fn settle(st: &mut Staging) -> Result<BTreeSet<(String, Digest)>, UnpackError> {
    let mut present = BTreeSet::new();
    for c in st.checks.drain(..) {
        let found = c.task.await.map_err(|source| UnpackError::EngineTask {
            what: "checking a volume",
            source,
        })??;
        if found {
            present.insert((c.volume, c.digest));
        }
    }
    if let Some(mut r) = st.reader.take() {
        r.remove().await;
    }
    Ok(present)
}

/// Fills the target volumes (created when missing): models, then files; the models are
/// added to `models`.
pub(super) async fn fill(
    st: &mut Staging,
    docker: Option<&Docker>,
    models: &mut Vec<RestoredModel>,
    progress: &Progress,
) -> Result<(), UnpackError> {
    let docker = docker.ok_or_else(needs_engine)?;
    let present = settle(st).await?;
    let volumes: Vec<String> = st.volumes.iter().cloned().collect();
    let mut helper = Helper::start(docker, &volumes, true).await?;
    let r = fill_with(st, &helper, models, &present, progress).await;
    helper.remove().await;
    r
}

async fn fill_with(
    st: &Staging,
    helper: &Helper,
    models: &mut Vec<RestoredModel>,
    present: &BTreeSet<(String, Digest)>,
    progress: &Progress,
) -> Result<(), UnpackError> {
    for vm in &st.volume_models {
        let (entries, n_sent, n_present) = model_archive(st, vm, present)?;
        put(helper, progress, &vm.volume, entries).await?;
        models.push(RestoredModel {
            name: vm.name.to_string(),
            target: format!("volume {}", vm.volume),
            manifest: vm.record.manifest,
            blobs_written: n_sent,
            blobs_present: n_present,
            replaced: vm.replaced,
        });
    }
    for (v, items) in file_archives(st)? {
        if !items.is_empty() {
            put(helper, progress, v, items).await?;
        }
    }
    Ok(())
}

/// Sends one archive into a volume, with one bar for it: a model's blobs can be gigabytes.
async fn put(
    helper: &Helper,
    progress: &Progress,
    volume: &str,
    items: Vec<TarItem>,
) -> Result<(), UnpackError> {
    let total: u64 = items
        .iter()
        .map(|i| match i {
            TarItem::File(_, src, _) => src.metadata().map(|m| m.len()).unwrap_or(0),
            TarItem::Dir(..) => 0,
        })
        .sum();
    let bar = progress.item_bytes(total, "restore", volume);
    let on = bar.clone();
    let body = tar_stream(items, Box::new(move |n| on.inc(n)));
    let r = helper.put(volume, body).await;
    progress.remove(&bar);
    r
}

/// A model's archive: the blobs not found in place, then its manifest; with how many
/// blobs it sends and how many were there.
fn model_archive(
    st: &Staging,
    vm: &VolumeModel,
    present: &BTreeSet<(String, Digest)>,
) -> Result<(Vec<TarItem>, usize, usize), UnpackError> {
    let mut entries: Vec<TarItem> = vec![
        TarItem::Dir("models".into(), 0o755),
        TarItem::Dir("models/blobs".into(), 0o755),
    ];
    let mut n_present = vm.blob_count - vm.send.len();
    let mut n_sent = 0;
    for d in &vm.send {
        if present.contains(&(vm.volume.clone(), *d)) {
            n_present += 1;
            continue;
        }
        n_sent += 1;
        entries.push(TarItem::File(
            format!("models/{}", ollama::blob_path(d).display()),
            st.spool_file(d)?,
            0o644,
        ));
    }
    let mpath = vm.name.manifest_path();
    let mut dir = PathBuf::from("models");
    for c in mpath.parent().into_iter().flat_map(|p| p.components()) {
        dir.push(c);
        entries.push(TarItem::Dir(dir.display().to_string(), 0o755));
    }
    // Last: once the engine extracted this entry, the model is complete.
    entries.push(TarItem::File(
        format!("models/{}", mpath.display()),
        st.spool_file(&vm.record.manifest)?,
        0o644,
    ));
    Ok((entries, n_sent, n_present))
}

/// Per volume, the archive of its files and directories.
fn file_archives(st: &Staging) -> Result<BTreeMap<&str, Vec<TarItem>>, UnpackError> {
    let mut per_volume: BTreeMap<&str, Vec<TarItem>> = BTreeMap::new();
    for pf in &st.files {
        let Target::Volume(v) = &pf.record.target else {
            continue;
        };
        let mode = pf.record.mode_bits().map_err(UnpackError::Usage)?;
        let items = per_volume.entry(v).or_default();
        match (pf.action, pf.record.digest) {
            (Action::Directory, _) => items.push(TarItem::Dir(pf.record.path.clone(), mode)),
            (Action::Written | Action::Overwritten, Some(d)) => items.push(TarItem::File(
                pf.record.path.clone(),
                st.spool_file(&d)?,
                mode,
            )),
            _ => {}
        }
    }
    Ok(per_volume)
}

enum TarItem {
    Dir(String, u32),
    /// A spooled file, opened through the spool's descriptor.
    File(String, fs::File, u32),
}

/// Tar output cut into 1 MiB chunks sent down a channel, counting each as it goes.
struct Chan(
    tokio::sync::mpsc::Sender<Result<Bytes, io::Error>>,
    Vec<u8>,
    Box<dyn Fn(u64) + Send>,
);

impl io::Write for Chan {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.1.extend_from_slice(b);
        if self.1.len() >= 1 << 20 {
            self.flush()?;
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        if !self.1.is_empty() {
            let chunk = Bytes::from(std::mem::take(&mut self.1));
            (self.2)(chunk.len() as u64);
            self.0.blocking_send(Ok(chunk)).map_err(|_| {
                io::Error::new(io::ErrorKind::BrokenPipe, "engine closed the upload")
            })?;
        }
        Ok(())
    }
}

/// Writes the tar of `items` into `chan`: owner root, mtime 0, the modes given.
fn write_tar(items: Vec<TarItem>, chan: Chan) -> io::Result<()> {
    let mut b = tar::Builder::new(chan);
    b.mode(tar::HeaderMode::Deterministic);
    for item in items {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        match item {
            TarItem::Dir(path, mode) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(mode);
                h.set_size(0);
                b.append_data(&mut h, &path, io::empty())?;
            }
            TarItem::File(path, f, mode) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(mode);
                h.set_size(f.metadata()?.len());
                b.append_data(&mut h, &path, io::BufReader::with_capacity(1 << 20, f))?;
            }
        }
    }
    let mut chan = b.into_inner()?;
    chan.flush()
}

/// A tar built on a blocking thread from spooled files and streamed in 1 MiB chunks.
fn tar_stream(
    items: Vec<TarItem>,
    on_bytes: Box<dyn Fn(u64) + Send>,
) -> impl futures::Stream<Item = Result<Bytes, io::Error>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, io::Error>>(4);
    std::thread::spawn(move || {
        let tx2 = tx.clone();
        let chan = Chan(tx, Vec::with_capacity(1 << 20), on_bytes);
        if let Err(e) = write_tar(items, chan) {
            let _ = tx2.blocking_send(Err(e));
        }
    });
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|i| (i, rx)) })
}
