//! `load`, whatever the engine: open the bundle and verify its header, let the host's guard
//! (policy, anti-rollback) decide, stage the models and files, stream the body into the
//! engine and the staged files in one pass, then make it all visible, or, on any failure,
//! undo all of it. This module owns that order and the all-or-nothing cleanup; what differs
//! between the Docker Engine API ([`crate::docker`]) and containerd ([`crate::containerd`])
//! sits behind [`EngineSide`] (which images to send, how they stream, how they are checked
//! and rolled back).

use std::collections::HashMap;
use std::io::{self, Read, Write};

use airlock_bundle::header::{Entry, Header};
use airlock_bundle::reader::{BundleReader, ReadOptions, Verified, Visitor};
use airlock_bundle::text::escape;
use airlock_bundle::{BundleError, Digest};
use airlock_progress::Progress;
use bollard::Docker;
use serde::Serialize;
use tokio::runtime::{Handle, Runtime};

use crate::open::{open_bundle, Access};
use crate::policy::{Cleared, LoadGuard};
use crate::restore::{
    commit, RestoreOptions, RestoredFile, RestoredModel, Sink, SinkSpec, Staging, Tee,
};
use crate::UnpackError;

/// One image as it ended up in the engine.
#[derive(Debug, Clone, Serialize)]
pub struct LoadedImage {
    pub reference: String,
    pub platform: String,
    pub id: String,
    pub config: Digest,
    pub manifest: Digest,
    /// The engine already had it under this tag; nothing was sent.
    pub already_present: bool,
}

#[derive(Debug)]
pub struct LoadReport {
    pub verified: Verified,
    pub images: Vec<LoadedImage>,
    pub models: Vec<RestoredModel>,
    pub files: Vec<RestoredFile>,
    pub engine: String,
    /// What the policy and anti-rollback let through (and `--no-files` skipped).
    pub cleared: Cleared,
}

/// What one kind of engine does in a load; [`run`] calls these in a fixed order and does
/// the cleanup between them: once [`EngineSide::plan`] succeeded, every failure ends in
/// [`EngineSide::abandon`] or [`EngineSide::refuse`], which undo what the engine took and
/// let go of what was held for the load (a hold name, a lease).
pub(crate) trait EngineSide {
    /// Streams the selected images' blobs into the engine, on the bundle reader's thread.
    type Stream: EngineStream + Send;
    /// Why the engine refused what it was sent (turned into the error by [`Self::refuse`]
    /// once the engine's changes are undone).
    type Refusal;

    /// From the verified header (`restored`: as restoring sees it, `--no-files` applied):
    /// connect if needed, choose the images and check that the engine can take them. On an
    /// error nothing is left held.
    async fn plan(
        &mut self,
        header: &Header,
        restored: &Header,
        restore: &RestoreOptions,
    ) -> Result<(), UnpackError>;
    /// The Docker engine, for models and files in its volumes.
    fn docker(&self) -> Option<&Docker>;
    /// What a delta bundle left out for the chosen images that the engine lacks.
    async fn missing(&mut self, header: &Header) -> Result<Vec<String>, UnpackError>;
    /// The last step before anything is sent: what a rollback needs of the engine as it is.
    async fn hold(&mut self) -> Result<(), UnpackError>;
    /// The writer the bundle reader streams into (`header`: the verified one).
    fn stream(&mut self, header: &Header, handle: &Handle) -> Self::Stream;
    /// Runs on this thread while the body streams: the engine's side of the transfer, and
    /// what the engine said.
    async fn upload(&mut self) -> Result<Vec<String>, Self::Refusal>;
    /// After the whole bundle verified: make the images visible and check them.
    async fn finish(&mut self, header: &Header) -> Result<Vec<LoadedImage>, Self::Refusal>;
    /// Undoes the load in the engine for a refusal, and says why in the error.
    async fn refuse(&mut self, refusal: Self::Refusal, header: &Header) -> UnpackError;
    /// Undoes whatever the engine took of a load that failed elsewhere.
    async fn abandon(&mut self, progress: &Progress);
    /// After the models and files were placed (`placed`) or not: keep the images or undo
    /// them, and let go of what was held for the load.
    async fn committed(&mut self, placed: bool, progress: &Progress);
    /// The engine, as the report names it.
    fn describe(&self) -> String;
}

/// The engine's half of streaming one blob (see [`LoadVisitor`]).
pub(crate) trait EngineStream {
    /// A new entry starts: the previous one verified.
    fn next_entry(&mut self) -> io::Result<()>;
    /// Whether the engine takes the blob `digest`.
    fn wants(&self, digest: &Digest) -> bool;
    /// Starts the blob's transfer; its bytes then go to [`Self::out`].
    fn begin(&mut self, entry: &Entry) -> io::Result<()>;
    fn out(&mut self) -> &mut dyn Write;
    /// The blob's bytes all went through (`copied`), or failed.
    fn end(&mut self, entry: &Entry, copied: io::Result<()>) -> io::Result<()>;
    /// Every entry verified.
    fn finish(&mut self) -> Result<(), BundleError>;
    /// The read failed: nothing in flight may reach the engine complete.
    fn abort(&mut self, why: &BundleError);
}

/// Streams the body: each blob to the engine (when it takes it) and to the temp files of
/// the models and files that share it.
struct LoadVisitor<S> {
    engine: S,
    sinks: HashMap<Digest, Vec<SinkSpec>>,
}

impl<S: EngineStream> Visitor for LoadVisitor<S> {
    fn entry(&mut self, entry: &Entry, data: &mut dyn Read) -> io::Result<()> {
        self.engine.next_entry()?;
        if !entry.path.starts_with("blobs/") {
            return Ok(());
        }
        let to_engine = self.engine.wants(&entry.digest);
        let files = self.sinks.get(&entry.digest).cloned().unwrap_or_default();
        if !to_engine && files.is_empty() {
            return Ok(());
        }
        let mut outs: Vec<Sink> = Vec::new();
        for spec in &files {
            outs.push(Sink::open(spec, entry.size)?);
        }
        if to_engine {
            self.engine.begin(entry)?;
        }
        let mut engine_out = to_engine.then(|| self.engine.out());
        let mut tee = Tee {
            out: engine_out.as_mut(),
            files: outs,
        };
        let copied = airlock_bundle::hashing::copy_large(data, &mut tee).and_then(|_| {
            for f in std::mem::take(&mut tee.files) {
                f.finish()?;
            }
            Ok(())
        });
        if to_engine {
            self.engine.end(entry, copied)
        } else {
            copied
        }
    }

    fn finish(&mut self) -> Result<(), BundleError> {
        self.engine.finish()
    }
}

/// What [`decide`] settled once the header verified.
struct Decision {
    staging: Staging,
    cleared: Cleared,
}

/// Loads the bundle at `path` through `engine`: images into the engine, models and files
/// into their host directories and volumes. Nothing becomes visible unless all of it
/// verified, and nothing is written or sent unless `guard` (the host's policy,
/// anti-rollback) let the verified header through and the engine side planned it; a
/// successful load is recorded in `guard`'s state.
pub(crate) fn run<E: EngineSide>(
    path: &std::path::Path,
    access: &Access,
    mut engine: E,
    restore: &RestoreOptions,
    guard: &mut LoadGuard,
    progress: &Progress,
) -> Result<LoadReport, UnpackError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(UnpackError::Runtime)?;
    let (input, bar, on_disk) = open_bundle(path, access, progress, "load")?;
    let opts = ReadOptions {
        trust: access.trust(),
        decryption: &access.decryption,
    };
    // Nothing is decided, and nothing sent or written, until the header verified.
    let opened = BundleReader::open(input, &opts)
        .map_err(UnpackError::from)
        .and_then(|(verified, body)| {
            let d = rt.block_on(decide(&verified, &mut engine, restore, guard, progress))?;
            Ok((verified, body, d))
        });
    let (
        verified,
        body,
        Decision {
            mut staging,
            cleared,
        },
    ) = match opened {
        Ok(o) => o,
        Err(e) => {
            // Refused (the body is dropped unread), or the header itself failed.
            progress.remove(&bar);
            return Err(on_disk.explain(e, progress));
        }
    };
    let streamed = stream(
        &rt,
        &mut engine,
        &verified.header,
        body,
        staging.sinks.clone(),
    );
    progress.remove(&bar);
    let failed = |engine: &mut E, staging: &mut Staging| {
        rt.block_on(async {
            engine.abandon(progress).await;
            staging.release().await;
        });
        staging.abort();
    };
    let refused = |engine: &mut E, staging: &mut Staging, r: E::Refusal| {
        let e = rt.block_on(async {
            let e = engine.refuse(r, &verified.header).await;
            staging.release().await;
            e
        });
        staging.abort();
        e
    };
    // A verification failure explains an aborted upload better than the engine's error.
    match streamed {
        (Err(e), _) => {
            failed(&mut engine, &mut staging);
            return Err(on_disk.explain(e.into(), progress));
        }
        (Ok(()), Err(r)) => return Err(refused(&mut engine, &mut staging, r)),
        (Ok(()), Ok(messages)) => {
            for m in messages {
                progress.say(format!("engine: {}", escape(&m)));
            }
        }
    }
    let images = match rt.block_on(engine.finish(&verified.header)) {
        Ok(i) => i,
        Err(r) => return Err(refused(&mut engine, &mut staging, r)),
    };
    let committed = rt.block_on(commit(&mut staging, engine.docker(), progress));
    // A load is all or nothing: if the models or files beside the images could not be
    // placed, the engine side undoes the images too.
    rt.block_on(engine.committed(committed.is_ok(), progress));
    let (models, files) = match committed {
        Ok(v) => v,
        Err(e) => {
            rt.block_on(staging.release());
            staging.abort();
            return Err(e);
        }
    };
    guard
        .record(&verified)
        .map_err(|e| UnpackError::NotRecorded(Box::new(e)))?;
    Ok(LoadReport {
        verified,
        images,
        models,
        files,
        engine: engine.describe(),
        cleared,
    })
}

/// Streams `body` on a thread of its own into the engine's stream and the restore sinks,
/// while this thread runs the engine's side of the transfer.
fn stream<E: EngineSide>(
    rt: &Runtime,
    engine: &mut E,
    header: &Header,
    body: airlock_bundle::reader::Body,
    sinks: HashMap<Digest, Vec<SinkSpec>>,
) -> (Result<(), BundleError>, Result<Vec<String>, E::Refusal>) {
    let mut v = LoadVisitor {
        engine: engine.stream(header, rt.handle()),
        sinks,
    };
    std::thread::scope(|s| {
        let producer = s.spawn(move || {
            let r = body.read(&mut v);
            if let Err(e) = &r {
                v.engine.abort(e);
            }
            r
        });
        let uploaded = rt.block_on(engine.upload());
        let produced = match producer.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        (produced, uploaded)
    })
}

/// Decides, from the verified header: first whether this host's policy and anti-rollback
/// allow it at all (before the engine is contacted or anything is written), then the
/// engine's plan, where model and file blobs go, whether a delta's left-out content is
/// here, and last what a rollback needs (so that no refusal above leaves a hold behind).
async fn decide<E: EngineSide>(
    v: &Verified,
    engine: &mut E,
    restore: &RestoreOptions,
    guard: &LoadGuard,
    progress: &Progress,
) -> Result<Decision, UnpackError> {
    let cleared = guard.check(v, restore.models_to.as_ref())?;
    for line in crate::provenance::verified_lines(&cleared.provenance) {
        progress.say(line);
    }
    // --no-files: restoring sees a header without [[files]]; their blobs are still read and
    // verified with the rest, and written nowhere.
    let without_files;
    let restored: &Header = if guard.no_files {
        without_files = Header {
            files: Vec::new(),
            ..v.header.clone()
        };
        &without_files
    } else {
        &v.header
    };
    engine.plan(&v.header, restored, restore).await?;
    let mut staging = match crate::restore::prepare(restored, restore, engine.docker()).await {
        Ok(s) => s,
        Err(e) => {
            engine.abandon(progress).await;
            return Err(e);
        }
    };
    // A delta bundle: what it left out must be here before anything is loaded.
    let refused = match engine.missing(&v.header).await {
        Ok(mut missing) => {
            missing.append(&mut staging.missing);
            if missing.is_empty() {
                engine.hold().await.err()
            } else {
                Some(UnpackError::NotPresent(missing))
            }
        }
        Err(e) => Some(e),
    };
    if let Some(e) = refused {
        engine.abandon(progress).await;
        staging.release().await;
        staging.abort();
        return Err(e);
    }
    Ok(Decision { staging, cleared })
}
