//! Anti-rollback and freshness: this host's record, per bundle `name`, of the newest signed
//! `created` time it loaded and that bundle's header digest, in `state.json` of the state
//! dir (`--state-dir`, `$AIRLOCK_STATE_DIR`, else `/var/lib/airlock`).
//!
//! A signature never expires, so without this an old signed bundle (with the old images,
//! models and files it carried) would load forever. With it, `load` refuses a bundle of a
//! known name that is older than the newest one loaded, or as old but different, unless
//! `--allow-downgrade`; the same bundle again is fine. It also refuses bundles older than a
//! maximum age, and bundles from more than [`FUTURE_SKEW`] in the future (recorded, one
//! would make every later bundle of its name look old).
//!
//! The state dir is held as a directory fd for the whole load and locked (`flock`), so two
//! loads cannot both pass the check and then both record; it must be a real directory (not
//! a symlink) owned by this user or root and writable by no one else. `state.json` is read
//! bounded, and a corrupt one is an environment error naming it, never silently reset
//! (that would re-open every downgrade). It is written only after a successful load, as a
//! temp file created `O_EXCL|O_NOFOLLOW` with a random name inside the held directory,
//! fsync'ed and renamed over the old one there.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use airlock_bundle::header::Header;
use airlock_bundle::text::escape;
use airlock_bundle::Digest;
use rustix::fs::{AtFlags, FlockOperation, Mode, OFlags};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};

use crate::UnpackError;

pub const DEFAULT_STATE_DIR: &str = "/var/lib/airlock";
pub const STATE_FILE: &str = "state.json";
/// Far more than any host's bundle names need; a bound, so that a wrong file is not read whole.
pub const MAX_STATE_SIZE: u64 = 16 << 20;
/// How far in this host's future a bundle's `created` may be (clocks on two sides of a gap
/// drift; a bundle from next year is a broken clock or a trap).
pub const FUTURE_SKEW: Duration = Duration::from_secs(24 * 3600);
const STATE_VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    version: u32,
    bundles: BTreeMap<String, Record>,
}

/// The newest bundle of one name this host loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// The bundle's signed `created`, as written in its header.
    pub created: String,
    pub header_digest: Digest,
    /// When this host loaded it.
    pub loaded: String,
}

/// What freshness asks of a bundle, besides not being a downgrade.
#[derive(Debug, Clone)]
pub struct Freshness {
    /// The maximum age and where it was set (`--max-age`, the policy).
    pub max_age: Option<(Duration, String)>,
    pub allow_downgrade: bool,
    pub now: SystemTime,
}

/// How a bundle compared with what this host loaded before, for the output and the report.
#[derive(Debug, Clone, Serialize)]
pub struct RollbackDecision {
    pub bundle_name: String,
    pub created: String,
    /// `first` (no bundle of this name loaded before), `newer`, `same` (this very bundle
    /// again), `downgrade-allowed` (older, or as old with other content: --allow-downgrade),
    /// or `refused`.
    pub decision: &'static str,
    /// The record it was compared with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous: Option<Record>,
    pub state_file: PathBuf,
}

impl RollbackDecision {
    /// One line for the operator.
    pub fn describe(&self) -> String {
        let name = escape(&self.bundle_name);
        let prev = |r: &Record| {
            format!(
                "created {}, {}, loaded {}",
                escape(&r.created),
                r.header_digest,
                r.loaded
            )
        };
        match (self.decision, &self.previous) {
            ("first", _) => format!(
                "anti-rollback: the first bundle named {name} on this host; recorded in {}",
                self.state_file.display()
            ),
            ("same", _) => format!(
                "anti-rollback: the same bundle {name} as loaded before (created {})",
                escape(&self.created)
            ),
            ("newer", Some(p)) => format!(
                "anti-rollback: {name} created {} is newer than the last loaded ({}); recorded",
                escape(&self.created),
                prev(p)
            ),
            ("downgrade-allowed", Some(p)) => format!(
                "anti-rollback: --allow-downgrade: loaded {name} created {} although this host loaded {}; the newer record is kept",
                escape(&self.created),
                prev(p)
            ),
            (d, _) => format!("anti-rollback: {name}: {d}"),
        }
    }
}

/// This host's records, read from the state dir (held and locked when it exists).
#[derive(Debug)]
pub struct State {
    dir: PathBuf,
    /// The state dir, open and locked, once it exists.
    held: Option<OwnedFd>,
    /// With each record's `created` parsed.
    records: BTreeMap<String, (Record, SystemTime)>,
}

/// The state dir or file at `path` could not be read or written.
fn env_err(path: &Path, source: std::io::Error) -> UnpackError {
    UnpackError::Io {
        what: "state",
        path: path.to_path_buf(),
        source,
    }
}

/// The state dir or file at `path` is not one this host can trust or read.
fn state_says(path: &Path, problem: impl Into<String>) -> UnpackError {
    UnpackError::Host {
        what: "state",
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

fn parse_time(s: &str) -> Result<SystemTime, String> {
    humantime::parse_rfc3339(s)
        .map_err(|e| format!("{:?} is not an RFC 3339 time ({e})", escape(s)))
}

/// A duration in days and hours (or minutes and seconds when short): "61d", "1d 2h", "5m 3s".
fn ago(d: Duration) -> String {
    let s = d.as_secs();
    let (days, hours, mins, secs) = (s / 86400, s % 86400 / 3600, s % 3600 / 60, s % 60);
    let parts: Vec<String> = if days > 0 {
        [(days, "d"), (hours, "h")]
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, u)| format!("{n}{u}"))
            .collect()
    } else if hours > 0 {
        [(hours, "h"), (mins, "m")]
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, u)| format!("{n}{u}"))
            .collect()
    } else {
        vec![format!("{mins}m {secs}s")]
    };
    parts.join(" ")
}

impl State {
    /// Opens the state at `dir`: locks it (waiting for another load that holds it) and reads
    /// its records. A dir that does not exist yet means no records; it is created (0700)
    /// when the first load is recorded.
    pub fn open(dir: &Path) -> Result<State, UnpackError> {
        let mut st = State {
            dir: dir.to_path_buf(),
            held: None,
            records: BTreeMap::new(),
        };
        if let Some(fd) = open_dir(dir)? {
            st.records = read_records(dir, &fd)?;
            st.held = Some(fd);
        }
        Ok(st)
    }

    pub fn file(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// The record of bundles named `name`, if any (the tests read records back with it).
    #[cfg(test)]
    pub fn get(&self, name: &str) -> Option<&Record> {
        self.records.get(name).map(|(r, _)| r)
    }

    /// How header `h` (digest `digest`) compares with this host's record, and every reason
    /// to refuse it (empty when it may load).
    pub fn check(
        &self,
        h: &Header,
        digest: Digest,
        fresh: &Freshness,
    ) -> (RollbackDecision, Vec<String>) {
        let name = escape(&h.name);
        let shown = escape(&h.created);
        let prev = self.records.get(&h.name);
        let mut decision = RollbackDecision {
            bundle_name: h.name.clone(),
            created: h.created.clone(),
            decision: "refused",
            previous: prev.map(|(r, _)| r.clone()),
            state_file: self.file(),
        };
        let mut problems = Vec::new();
        let created = match parse_time(&h.created) {
            Ok(t) => t,
            Err(e) => {
                problems.push(format!(
                    "bundle {name}: its signed creation time {e}: its age and its order against earlier bundles cannot be checked"
                ));
                return (decision, problems);
            }
        };
        if let Ok(ahead) = created.duration_since(fresh.now) {
            if ahead > FUTURE_SKEW {
                problems.push(format!(
                    "bundle {name} was created {shown}, {} in this host's future (clock: {}; {} of skew are allowed): recorded, it would make every later bundle of that name look older and be refused; check this host's clock and the packing side's",
                    ago(ahead),
                    humantime::format_rfc3339_seconds(fresh.now),
                    ago(FUTURE_SKEW)
                ));
            }
        }
        if let (Some((max, from)), Ok(age)) = (&fresh.max_age, fresh.now.duration_since(created)) {
            if age > *max {
                problems.push(format!(
                    "bundle {name} was created {shown}, {} ago: older than {} ({from})",
                    ago(age),
                    ago(*max)
                ));
            }
        }
        let verdict = match prev {
            None => Ok("first"),
            Some((r, _)) if r.header_digest == digest => Ok("same"),
            Some((_, t)) if created > *t => Ok("newer"),
            Some(_) if fresh.allow_downgrade => Ok("downgrade-allowed"),
            Some((r, t)) if created < *t => Err(format!(
                "bundle {name} created {shown} ({digest}) is older than the newest of that name this host loaded: created {}, {}, loaded {} (recorded in {}); an old signed bundle is refused so that it cannot be replayed (--allow-downgrade loads it anyway)",
                escape(&r.created),
                r.header_digest,
                r.loaded,
                self.file().display()
            )),
            Some((r, _)) => Err(format!(
                "bundle {name} created {shown} ({digest}) has the same creation time as the one of that name this host loaded ({}, loaded {}, recorded in {}) but other content: which is newer cannot be told, so it is refused (--allow-downgrade loads it anyway; airlock-pack takes `created` from the lock, so a rebuild with changed files keeps it: build with SOURCE_DATE_EPOCH=$(date +%s) to give a new bundle a new time)",
                r.header_digest,
                r.loaded,
                self.file().display()
            )),
        };
        match verdict {
            Ok(d) if problems.is_empty() => decision.decision = d,
            Ok(_) => {}
            Err(p) => problems.push(p),
        }
        (decision, problems)
    }

    /// Records a loaded bundle: it becomes the newest of its name unless the record is
    /// newer (a downgrade loaded with --allow-downgrade leaves the newer record in place).
    /// Creates the state dir (0700) if it does not exist yet.
    pub fn record(&mut self, h: &Header, digest: Digest) -> Result<(), UnpackError> {
        let created = parse_time(&h.created).map_err(|e| state_says(&self.file(), e))?;
        if self.held.is_none() {
            if let Some(parent) = self.dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                // Missing parents are made like target roots: from `/`, through trusted
                // symlinks only (the state dir itself is checked when opened below).
                let abs = std::path::absolute(parent).map_err(|e| env_err(parent, e))?;
                crate::hostfs::Dir::open_trusted(&abs, Some(&mut Vec::new()))
                    .map_err(|e| env_err(parent, e.into()))?;
            }
            match rustix::fs::mkdir(&self.dir, Mode::from_raw_mode(0o700)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(env_err(&self.dir, std::io::Error::from(e))),
            }
            let fd = open_dir(&self.dir)?
                .ok_or_else(|| state_says(&self.dir, "vanished right after it was created"))?;
            // Another load may have recorded since this one looked (there was no dir to
            // lock then).
            self.records = read_records(&self.dir, &fd)?;
            self.held = Some(fd);
        }
        let keep_existing = self.records.get(&h.name).is_some_and(|(_, t)| *t > created);
        if !keep_existing {
            self.records.insert(
                h.name.clone(),
                (
                    Record {
                        created: h.created.clone(),
                        header_digest: digest,
                        loaded: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
                    },
                    created,
                ),
            );
        }
        let file = StateFile {
            version: STATE_VERSION,
            bundles: self
                .records
                .iter()
                .map(|(k, (r, _))| (k.clone(), r.clone()))
                .collect(),
        };
        let mut bytes = serde_json::to_vec_pretty(&file).expect("state serialises");
        bytes.push(b'\n');
        let fd = self.held.as_ref().expect("held above");
        write_atomically(&self.dir, fd, &bytes)
    }
}

/// Opens and locks the state dir; `None` if it does not exist. Refused: a symlink, not a
/// directory, owned by someone else, writable by group or others.
fn open_dir(dir: &Path) -> Result<Option<OwnedFd>, UnpackError> {
    let fd = match rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(None),
        Err(Errno::LOOP) | Err(Errno::NOTDIR) => {
            return Err(state_says(
                dir,
                "is a symlink or not a directory: refused (the record of what this host loaded must be a directory only its owner controls)",
            ))
        }
        Err(e) => return Err(env_err(dir, std::io::Error::from(e))),
    };
    let st = rustix::fs::fstat(&fd).map_err(|e| env_err(dir, std::io::Error::from(e)))?;
    let me = rustix::process::geteuid().as_raw();
    if st.st_uid != 0 && st.st_uid != me {
        return Err(state_says(
            dir,
            format!(
                "owned by uid {}, neither root nor this user: refused (its owner could rewrite what this host loaded)",
                st.st_uid
            ),
        ));
    }
    if st.st_mode & 0o022 != 0 {
        return Err(state_says(
            dir,
            format!(
                "mode {:04o} lets group or others write it: refused (they could reset the record of what this host loaded; chmod 0700)",
                st.st_mode & 0o7777
            ),
        ));
    }
    if rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive).is_err() {
        airlock_progress::notice(format!(
            "waiting for another airlock-unpack load (it holds {})",
            dir.display()
        ));
        rustix::fs::flock(&fd, FlockOperation::LockExclusive)
            .map_err(|e| env_err(dir, std::io::Error::from(e)))?;
    }
    Ok(Some(fd))
}

/// Reads `state.json` in the held dir, bounded; absent means no records.
fn read_records(
    dir: &Path,
    fd: &OwnedFd,
) -> Result<BTreeMap<String, (Record, SystemTime)>, UnpackError> {
    let path = dir.join(STATE_FILE);
    let corrupt = |problem: String| UnpackError::StateCorrupt {
        path: path.clone(),
        problem,
    };
    let file = match rustix::fs::openat(
        fd,
        STATE_FILE,
        // NONBLOCK: a FIFO planted here must not hang the load.
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
    ) {
        Ok(f) => std::fs::File::from(f),
        Err(Errno::NOENT) => return Ok(BTreeMap::new()),
        Err(e) => return Err(corrupt(std::io::Error::from(e).to_string())),
    };
    let meta = file.metadata().map_err(|e| env_err(&path, e))?;
    if !meta.is_file() {
        return Err(corrupt("not a regular file".into()));
    }
    let mut bytes = Vec::new();
    file.take(MAX_STATE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| env_err(&path, e))?;
    if bytes.len() as u64 > MAX_STATE_SIZE {
        return Err(corrupt(format!("larger than {MAX_STATE_SIZE} bytes")));
    }
    let parsed: StateFile =
        serde_json::from_slice(&bytes).map_err(|e| corrupt(format!("not a state file: {e}")))?;
    if parsed.version != STATE_VERSION {
        return Err(corrupt(format!(
            "version {} (this airlock-unpack knows {STATE_VERSION})",
            parsed.version
        )));
    }
    parsed
        .bundles
        .into_iter()
        .map(|(k, r)| {
            let t = parse_time(&r.created)
                .map_err(|e| corrupt(format!("bundle {}: created {e}", escape(&k))))?;
            Ok((k, (r, t)))
        })
        .collect()
}

/// Replaces `state.json` in the held dir: a temp file with a random name, created
/// `O_EXCL|O_NOFOLLOW` (nothing planted is ever opened), fsync'ed, renamed in the same
/// directory, and the directory fsync'ed so that the rename survives a crash.
fn write_atomically(dir: &Path, fd: &OwnedFd, bytes: &[u8]) -> Result<(), UnpackError> {
    let mut rnd = [0u8; 12];
    rustix::rand::getrandom(&mut rnd, rustix::rand::GetRandomFlags::empty())
        .map_err(|e| env_err(dir, std::io::Error::from(e)))?;
    let tmp = format!(
        ".{STATE_FILE}.{}.tmp",
        Digest::of(&rnd).hex().get(..24).unwrap_or("")
    );
    let at = |e: Errno| env_err(&dir.join(&tmp), std::io::Error::from(e));
    let f = rustix::fs::openat(
        fd,
        tmp.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(at)?;
    let mut f = std::fs::File::from(f);
    let written = f
        .write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| env_err(&dir.join(&tmp), e))
        .and_then(|()| rustix::fs::renameat(fd, tmp.as_str(), fd, STATE_FILE).map_err(at));
    if let Err(e) = written {
        let _ = rustix::fs::unlinkat(fd, tmp.as_str(), AtFlags::empty());
        return Err(e);
    }
    rustix::fs::fsync(fd).map_err(|e| env_err(dir, std::io::Error::from(e)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn header(name: &str, created: &str) -> Header {
        Header {
            format: "airlock-bundle".into(),
            version: 3,
            provenance: Vec::new(),
            tool: "t".into(),
            name: name.into(),
            created: created.into(),
            entries: vec![],
            images: vec![],
            models: vec![],
            files: vec![],
            expected_present: vec![],
            compose: Vec::new(),
        }
    }

    fn fresh(now: &str) -> Freshness {
        Freshness {
            max_age: None,
            allow_downgrade: false,
            now: humantime::parse_rfc3339(now).unwrap(),
        }
    }

    #[test]
    fn newer_same_older_and_ties() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        let f = fresh("2026-06-01T00:00:00Z");
        let (a, b, c) = (Digest::of(b"a"), Digest::of(b"b"), Digest::of(b"c"));
        let mut st = State::open(&dir).unwrap();
        assert!(!dir.exists(), "opening creates nothing");
        let h1 = header("stack", "2026-05-01T00:00:00Z");
        let (d, p) = st.check(&h1, a, &f);
        assert_eq!((d.decision, p.len()), ("first", 0));
        st.record(&h1, a).unwrap();
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        drop(st);

        let mut st = State::open(&dir).unwrap();
        assert_eq!(st.check(&h1, a, &f).0.decision, "same");
        let h2 = header("stack", "2026-05-02T00:00:00Z");
        assert_eq!(st.check(&h2, b, &f).0.decision, "newer");
        st.record(&h2, b).unwrap();
        // Older: refused, naming both times and digests.
        let (d, p) = st.check(&h1, a, &f);
        assert_eq!(d.decision, "refused");
        assert_eq!(p.len(), 1, "{p:?}");
        for needle in [
            "2026-05-01T00:00:00Z",
            "2026-05-02T00:00:00Z",
            &a.to_string(),
            &b.to_string(),
            "--allow-downgrade",
        ] {
            assert!(p[0].contains(needle), "{needle}: {p:?}");
        }
        // As old, other content: refused, saying why.
        let (_, p) = st.check(&h2, c, &f);
        assert!(p[0].contains("same creation time"), "{p:?}");
        // --allow-downgrade: allowed, and the newer record stays.
        let down = Freshness {
            allow_downgrade: true,
            ..f.clone()
        };
        let (d, p) = st.check(&h1, a, &down);
        assert_eq!((d.decision, p.len()), ("downgrade-allowed", 0));
        st.record(&h1, a).unwrap();
        assert_eq!(st.get("stack").unwrap().header_digest, b);
        // Other names are independent.
        assert_eq!(
            st.check(&header("other", "2020-01-01T00:00:00Z"), c, &f)
                .0
                .decision,
            "first"
        );
    }

    #[test]
    fn age_future_and_bad_times() {
        let tmp = tempfile::tempdir().unwrap();
        let st = State::open(&tmp.path().join("s")).unwrap();
        let d = Digest::of(b"a");
        let mut f = fresh("2026-06-01T00:00:00Z");
        f.max_age = Some((Duration::from_secs(30 * 86400), "--max-age".into()));
        let (_, p) = st.check(&header("x", "2026-04-01T00:00:00Z"), d, &f);
        assert!(
            p[0].contains("61d ago: older than 30d (--max-age)"),
            "{p:?}"
        );
        assert!(st
            .check(&header("x", "2026-05-15T00:00:00Z"), d, &f)
            .1
            .is_empty());
        // Up to a day ahead is clock skew; more is refused.
        assert!(st
            .check(&header("x", "2026-06-01T23:00:00Z"), d, &f)
            .1
            .is_empty());
        let (_, p) = st.check(&header("x", "2026-06-03T00:00:00Z"), d, &f);
        assert!(p[0].contains("2d in this host's future"), "{p:?}");
        assert!(p[0].contains("1d of skew"), "{p:?}");
        assert!(p[0].contains("every later bundle"), "{p:?}");
        let (_, p) = st.check(&header("x", "last tuesday"), d, &f);
        assert!(p[0].contains("not an RFC 3339 time"), "{p:?}");
    }

    #[test]
    fn a_second_load_waits_for_the_first_to_record() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("s");
        let mut first = State::open(&dir).unwrap();
        first
            .record(&header("x", "2026-05-01T00:00:00Z"), Digest::of(b"a"))
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let d = dir.clone();
        let second = std::thread::spawn(move || {
            let st = State::open(&d).unwrap();
            tx.send(st.get("x").map(|r| r.created.clone())).unwrap();
        });
        // Held: the second open waits rather than reading a record about to change.
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
        first
            .record(&header("x", "2026-05-02T00:00:00Z"), Digest::of(b"b"))
            .unwrap();
        drop(first);
        let seen = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(seen.as_deref(), Some("2026-05-02T00:00:00Z"));
        second.join().unwrap();
    }

    #[test]
    fn a_corrupt_or_unsafe_state_is_refused_not_reset() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("s");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        for bad in [
            &b"{\"version\":1,"[..],
            b"{\"version\":2,\"bundles\":{}}",
            b"{\"version\":1,\"bundles\":{},\"x\":1}",
            b"{\"version\":1,\"bundles\":{\"a\":{\"created\":\"soon\",\"header_digest\":\"sha256:0000000000000000000000000000000000000000000000000000000000000000\",\"loaded\":\"\"}}}",
        ] {
            std::fs::write(dir.join(STATE_FILE), bad).unwrap();
            let e = State::open(&dir).unwrap_err();
            assert_eq!(e.exit_code(), crate::exit::ENVIRONMENT);
            assert!(e.to_string().contains("state.json"), "{e}");
            assert_eq!(std::fs::read(dir.join(STATE_FILE)).unwrap(), bad);
        }
        std::fs::remove_file(dir.join(STATE_FILE)).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(State::open(&dir)
            .unwrap_err()
            .to_string()
            .contains("group or others"));
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        assert!(State::open(&link)
            .unwrap_err()
            .to_string()
            .contains("symlink"));
        // A symlink as state.json is not followed.
        std::os::unix::fs::symlink("/etc/passwd", dir.join(STATE_FILE)).unwrap();
        let e = State::open(&dir).unwrap_err();
        assert_eq!(e.exit_code(), crate::exit::ENVIRONMENT, "{e}");
    }
}
