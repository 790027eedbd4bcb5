//! Writing into host directories that other users may own, without races.
//!
//! `airlock-unpack load` runs as root and writes into directories that service users own
//! (the `ollama` user's models directory, a service's config directory). A path that such a
//! user can change between our check and our use is not ours to trust, so everything here
//! works from directory file descriptors:
//!
//! - A target root is opened once, from `/`, one component at a time with
//!   `O_DIRECTORY|O_NOFOLLOW`. A symlink on the way is followed only if it is *trusted*:
//!   owned by root or by us, in a directory that no one else can write (so no one else
//!   could have put it there). Below a target root, a symlink is never followed.
//! - Files are created with `O_CREAT|O_EXCL|O_NOFOLLOW` under unpredictable names, private
//!   (0600) until placed; their mode is set on the descriptor (`fchmod`), and they are
//!   placed with `renameat` inside the held directory. What was renamed is checked to be
//!   the file we wrote (device and inode).
//! - Directories are created with `mkdirat` and their modes set through their descriptors.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, RenameFlags};

mod error;

pub use error::FsError;

/// The identity of a file: what we created is what we rename.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    fn of(st: &rfs::Stat) -> FileId {
        FileId {
            dev: st.st_dev,
            ino: st.st_ino,
        }
    }

    /// The identity of an open file.
    pub fn of_file(f: &File) -> io::Result<FileId> {
        Ok(FileId::of(&rfs::fstat(f)?))
    }
}

/// What stands at a name, looked at without following it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Missing,
    File { size: u64 },
    Dir,
    Symlink,
    Other,
}

const MAX_LINKS: usize = 40;

/// A directory held open; names below it are resolved relative to it, never through a
/// symlink.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// One plain name: no `/`, not empty, not `.` or `..`.
fn check_name(name: &str) -> io::Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a plain file name"),
        ));
    }
    Ok(())
}

impl Dir {
    /// The path this directory was opened as (for messages only: never used to open).
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Opens an absolute directory path from `/`. Symlinks on the way are followed only if
    /// trusted (owned by root or by this process's user, in a directory that only root or
    /// this user can write). With `create`, missing directories are made (mode 0755) and
    /// pushed onto it, outermost first.
    pub fn open_trusted(
        path: &Path,
        mut create: Option<&mut Vec<Created>>,
    ) -> Result<Dir, FsError> {
        if !path.is_absolute() {
            return Err(FsError::refused(path, "not an absolute path"));
        }
        let root = rfs::openat(rfs::CWD, "/", dir_flags(), Mode::empty())
            .map_err(|e| FsError::io("/", e))?;
        let mut cur = Dir {
            fd: root,
            path: PathBuf::from("/"),
        };
        // Components still to walk, last first.
        let mut todo: Vec<PathBuf> = rest_components(path);
        let mut links = 0;
        while let Some(c) = todo.pop() {
            let name = c.as_os_str();
            if name == ".." {
                // Only from a trusted link's target: go up by reopening the parent.
                let parent = cur.path.parent().unwrap_or(Path::new("/")).to_path_buf();
                cur = Dir::open_trusted(&parent, None)?;
                continue;
            }
            let here = cur.path.join(name);
            match rfs::openat(&cur.fd, name, dir_flags(), Mode::empty()) {
                Ok(fd) => {
                    cur = Dir { fd, path: here };
                }
                Err(rustix::io::Errno::NOENT) if create.is_some() => {
                    match rfs::mkdirat(&cur.fd, name, Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                        Err(e) => return Err(FsError::io(&here, e)),
                    }
                    let fd = rfs::openat(&cur.fd, name, dir_flags(), Mode::empty())
                        .map_err(|e| FsError::io(&here, e))?;
                    if let (Some(created), Some(n)) = (create.as_deref_mut(), name.to_str()) {
                        created.push(Created {
                            parent: cur.try_clone()?,
                            name: n.to_string(),
                        });
                    }
                    cur = Dir { fd, path: here };
                }
                Err(e @ (rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR)) => {
                    let st = rfs::statat(&cur.fd, name, AtFlags::SYMLINK_NOFOLLOW)
                        .map_err(|e| FsError::io(&here, e))?;
                    if FileType::from_raw_mode(st.st_mode) != FileType::Symlink {
                        return Err(FsError::io(&here, e));
                    }
                    cur.trust_link(name, &st)?;
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(FsError::refused(&here, "too many levels of symlinks"));
                    }
                    let target = rfs::readlinkat(&cur.fd, name, Vec::new())
                        .map_err(|e| FsError::io(&here, e))?;
                    let target = PathBuf::from(OsStr::from_bytes(target.as_bytes()));
                    todo.extend(rest_components(&target));
                    if target.is_absolute() {
                        let fd = rfs::openat(rfs::CWD, "/", dir_flags(), Mode::empty())
                            .map_err(|e| FsError::io("/", e))?;
                        cur = Dir {
                            fd,
                            path: PathBuf::from("/"),
                        };
                    }
                }
                Err(e) => return Err(FsError::io(&here, e)),
            }
        }
        Ok(Dir {
            fd: cur.fd,
            path: path.to_path_buf(),
        })
    }

    /// A symlink in this directory may be followed on the way to a target root only if no
    /// one but root or us could have made it.
    fn trust_link(&self, name: &OsStr, link: &rfs::Stat) -> Result<(), FsError> {
        let me = rustix::process::geteuid().as_raw();
        let here = self.path.join(name);
        let dir = rfs::fstat(&self.fd).map_err(|e| FsError::io(&self.path, e))?;
        let trusted_owner = |uid: u32| uid == 0 || uid == me;
        if !trusted_owner(link.st_uid) {
            return Err(FsError::refused(
                &here,
                format!(
                    "is a symlink owned by uid {}; on the way to a target directory only symlinks owned by root (or by you) in directories no one else can write are followed",
                    link.st_uid
                ),
            ));
        }
        // In a directory others can write, only the sticky bit stops them replacing a link
        // they did not make.
        let others_can_replace = dir.st_mode & 0o022 != 0 && dir.st_mode & 0o1000 == 0;
        if !trusted_owner(dir.st_uid) || others_can_replace {
            return Err(FsError::refused(
                &here,
                format!(
                    "is a symlink in {}, which {} can write; on the way to a target directory only symlinks in directories no one else can write are followed",
                    self.path.display(),
                    if trusted_owner(dir.st_uid) { "others" } else { "another user" }
                ),
            ));
        }
        Ok(())
    }

    /// A subdirectory, never through a symlink.
    pub fn open_dir(&self, name: &str) -> Result<Dir, FsError> {
        let here = self.path.join(name);
        check_name(name).map_err(|e| FsError::io(&here, e))?;
        match rfs::openat(&self.fd, name, dir_flags(), Mode::empty()) {
            Ok(fd) => Ok(Dir { fd, path: here }),
            Err(e @ (rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR)) => {
                Err(self.refusal(name).unwrap_or_else(|| FsError::io(&here, e)))
            }
            Err(e) => Err(FsError::io(&here, e)),
        }
    }

    /// A directory `rel` (slash-separated plain names) below this one, never through a
    /// symlink.
    pub fn open_path(&self, rel: &str) -> Result<Dir, FsError> {
        let mut cur: Option<Dir> = None;
        for name in rel.split('/').filter(|n| !n.is_empty()) {
            let next = cur.as_ref().unwrap_or(self).open_dir(name)?;
            cur = Some(next);
        }
        match cur {
            Some(d) => Ok(d),
            None => self.try_clone(),
        }
    }

    /// Like [`open_path`](Dir::open_path), creating missing directories with `mode`
    /// (pushed onto `created`, outermost first).
    pub fn create_path(
        &self,
        rel: &str,
        mode: u32,
        created: &mut Vec<Created>,
    ) -> Result<Dir, FsError> {
        let mut cur: Option<Dir> = None;
        for name in rel.split('/').filter(|n| !n.is_empty()) {
            let parent = cur.as_ref().unwrap_or(self);
            let (next, new) = parent.create_dir(name, mode)?;
            if new {
                created.push(Created {
                    parent: parent.try_clone()?,
                    name: name.to_string(),
                });
            }
            cur = Some(next);
        }
        match cur {
            Some(d) => Ok(d),
            None => self.try_clone(),
        }
    }

    /// A subdirectory, made with `mode` if missing; `true` when it was made.
    pub fn create_dir(&self, name: &str, mode: u32) -> Result<(Dir, bool), FsError> {
        let here = self.path.join(name);
        check_name(name).map_err(|e| FsError::io(&here, e))?;
        let new = match rfs::mkdirat(&self.fd, name, Mode::from_raw_mode(mode)) {
            Ok(()) => true,
            Err(rustix::io::Errno::EXIST) => false,
            Err(e) => return Err(FsError::io(&here, e)),
        };
        let d = self.open_dir(name)?;
        if new {
            // mkdirat's mode is cut by the umask; the mode asked for is the one wanted.
            d.chmod(mode)?;
        }
        Ok((d, new))
    }

    pub fn try_clone(&self) -> Result<Dir, FsError> {
        Ok(Dir {
            fd: self
                .fd
                .try_clone()
                .map_err(|e| FsError::io(&self.path, e))?,
            path: self.path.clone(),
        })
    }

    /// What stands at `name`, not following a symlink.
    pub fn kind(&self, name: &str) -> Result<Kind, FsError> {
        let here = self.path.join(name);
        check_name(name).map_err(|e| FsError::io(&here, e))?;
        match rfs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(match FileType::from_raw_mode(st.st_mode) {
                FileType::RegularFile => Kind::File {
                    size: st.st_size as u64,
                },
                FileType::Directory => Kind::Dir,
                FileType::Symlink => Kind::Symlink,
                _ => Kind::Other,
            }),
            Err(rustix::io::Errno::NOENT) => Ok(Kind::Missing),
            Err(e) => Err(FsError::io(&here, e)),
        }
    }

    fn refusal(&self, name: &str) -> Option<FsError> {
        let here = self.path.join(name);
        match self.kind(name).ok()? {
            Kind::Symlink => Some(FsError::refused(
                here,
                "is a symlink; airlock-unpack never follows symlinks below a target directory",
            )),
            Kind::File { .. } => Some(FsError::refused(here, "is a file, not a directory")),
            Kind::Other => Some(FsError::refused(here, "is a special file")),
            Kind::Dir | Kind::Missing => None,
        }
    }

    /// Opens an existing regular file for reading, never through a symlink (and without
    /// blocking on a FIFO).
    pub fn open_read(&self, name: &str) -> Result<File, FsError> {
        let here = self.path.join(name);
        check_name(name).map_err(|e| FsError::io(&here, e))?;
        let fd = rfs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            rustix::io::Errno::LOOP => self.refusal(name).unwrap_or_else(|| FsError::io(&here, e)),
            e => FsError::io(&here, e),
        })?;
        let st = rfs::fstat(&fd).map_err(|e| FsError::io(&here, e))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(FsError::refused(&here, "is not a regular file"));
        }
        Ok(File::from(fd))
    }

    /// Creates `name` new (never replacing, never through a symlink), mode 0600.
    pub fn create_new(&self, name: &str) -> Result<File, FsError> {
        let here = self.path.join(name);
        check_name(name).map_err(|e| FsError::io(&here, e))?;
        let fd = rfs::openat(
            &self.fd,
            name,
            OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| FsError::io(&here, e))?;
        Ok(File::from(fd))
    }

    /// Creates a private directory (0700, owned by us) named `{prefix}{random}`; returns
    /// its name. What is created in it stays ours: no one else can enter it.
    pub fn create_private_dir(&self, prefix: &str) -> Result<(String, Dir), FsError> {
        loop {
            let name = format!("{prefix}{}", random_token());
            match rfs::mkdirat(&self.fd, name.as_str(), Mode::from_raw_mode(0o700)) {
                Ok(()) => {}
                Err(rustix::io::Errno::EXIST) => continue,
                Err(e) => return Err(FsError::io(self.path.join(&name), e)),
            }
            let d = self.open_dir(&name)?;
            // Made by us a moment ago, unless someone swapped it in between.
            let st = rfs::fstat(&d.fd).map_err(|e| FsError::io(&d.path, e))?;
            if st.st_uid != rustix::process::geteuid().as_raw() {
                return Err(FsError::refused(
                    &d.path,
                    "was replaced by someone else right after airlock-unpack created it",
                ));
            }
            d.chmod(0o700)?;
            return Ok((name, d));
        }
    }

    /// Creates a private temp file named `{prefix}{random}{suffix}`; returns its name.
    pub fn create_temp(&self, prefix: &str, suffix: &str) -> Result<(String, File), FsError> {
        loop {
            let name = format!("{prefix}{}{suffix}", random_token());
            match self.create_new(&name) {
                Err(FsError::Io { source, .. })
                    if source.kind() == io::ErrorKind::AlreadyExists =>
                {
                    continue
                }
                r => return r.map(|f| (name, f)),
            }
        }
    }

    /// Sets this directory's mode, on its descriptor.
    pub fn chmod(&self, mode: u32) -> Result<(), FsError> {
        rfs::fchmod(&self.fd, Mode::from_raw_mode(mode)).map_err(|e| FsError::io(&self.path, e))
    }

    /// Renames `from` here to `to` in `dest` (the same directory or another held one).
    /// With `replace` false, an existing `to` is an error (nothing is clobbered).
    pub fn rename(&self, from: &str, dest: &Dir, to: &str, replace: bool) -> Result<(), FsError> {
        let flags = if replace {
            RenameFlags::empty()
        } else {
            RenameFlags::NOREPLACE
        };
        rfs::renameat_with(&self.fd, from, &dest.fd, to, flags)
            .map_err(|e| FsError::io(dest.path.join(to), e))
    }

    /// Places the file `id` (created here under `temp`) at `to` in `dest`, after checking
    /// that `temp` is still that file, and checks afterwards that `to` is.
    pub fn place(
        &self,
        temp: &str,
        id: FileId,
        dest: &Dir,
        to: &str,
        replace: bool,
    ) -> Result<(), FsError> {
        self.expect_id(temp, id)?;
        self.rename(temp, dest, to, replace)?;
        dest.expect_id(to, id)
    }

    fn expect_id(&self, name: &str, id: FileId) -> Result<(), FsError> {
        let here = self.path.join(name);
        let st = rfs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| FsError::io(&here, e))?;
        if FileId::of(&st) != id {
            return Err(FsError::refused(
                here,
                "was replaced by someone else while airlock-unpack was writing it",
            ));
        }
        Ok(())
    }

    /// Removes a file or symlink (never what a symlink points to).
    pub fn remove_file(&self, name: &str) -> Result<(), FsError> {
        rfs::unlinkat(&self.fd, name, AtFlags::empty())
            .map_err(|e| FsError::io(self.path.join(name), e))
    }

    /// Removes an empty subdirectory.
    pub fn remove_dir(&self, name: &str) -> Result<(), FsError> {
        rfs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR)
            .map_err(|e| FsError::io(self.path.join(name), e))
    }

    /// Hard-links `name` in `src` as `to` here (never following a symlink).
    pub fn link_from(&self, src: &Dir, name: &str, to: &str) -> Result<(), FsError> {
        rfs::linkat(&src.fd, name, &self.fd, to, AtFlags::empty())
            .map_err(|e| FsError::io(self.path.join(to), e))
    }

    /// The names in this directory with what they are (not following symlinks).
    pub fn entries(&self) -> Result<Vec<(String, Kind)>, FsError> {
        let dir = rfs::Dir::read_from(&self.fd).map_err(|e| FsError::io(&self.path, e))?;
        let mut out = Vec::new();
        for e in dir {
            let e = e.map_err(|e| FsError::io(&self.path, e))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name == "." || name == ".." {
                continue;
            }
            let kind = self.kind(&name).unwrap_or(Kind::Missing);
            out.push((name, kind));
        }
        Ok(out)
    }

    /// Removes `name` and everything below it, never following a symlink.
    pub fn remove_tree(&self, name: &str) -> Result<(), FsError> {
        match self.kind(name)? {
            Kind::Missing => Ok(()),
            Kind::Dir => {
                let d = self.open_dir(name)?;
                for (n, _) in d.entries()? {
                    d.remove_tree(&n)?;
                }
                self.remove_dir(name)
            }
            _ => self.remove_file(name),
        }
    }
}

/// A directory this run created, to remove again if the run fails.
#[derive(Debug)]
pub struct Created {
    parent: Dir,
    name: String,
}

impl Created {
    /// `name` in `parent`, just made by [`Dir::create_dir`].
    pub fn new(parent: Dir, name: &str) -> Created {
        Created {
            parent,
            name: name.to_string(),
        }
    }

    /// Removes the directory if it is still empty (a directory that gained anything else
    /// is left alone).
    pub fn undo(&self) {
        let _ = self.parent.remove_dir(&self.name);
    }
}

/// The normal components of `p` after its root, in reverse (the next one last).
fn rest_components(p: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = p
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(PathBuf::from(n)),
            Component::ParentDir => Some(PathBuf::from("..")),
            _ => None,
        })
        .collect();
    v.reverse();
    v
}

/// 16 random characters: a name no one can guess ahead of us.
pub fn random_token() -> String {
    let mut b = [0u8; 12];
    let mut filled = 0;
    while filled < b.len() {
        match rustix::rand::getrandom(&mut b[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => panic!("the kernel's random number generator failed: {e}"),
        }
    }
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
    let mut s = String::with_capacity(16);
    for chunk in b.chunks(3) {
        let n = u32::from(chunk[0]) << 16 | u32::from(chunk[1]) << 8 | u32::from(chunk[2]);
        for shift in [18, 12, 6, 0] {
            s.push(ALPHABET[(n >> shift & 63) as usize] as char);
        }
    }
    s
}

/// Sets an open file's mode on its descriptor (`fchmod`): never a path someone could
/// have swapped.
pub fn set_mode(f: &File, mode: u32) -> io::Result<()> {
    rfs::fchmod(f, Mode::from_raw_mode(mode)).map_err(io::Error::from)
}

/// Whether process `pid` exists (in this PID namespace).
pub fn pid_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// Removes the leftovers of killed runs in `dir`: entries named `{prefix}{pid}-…` whose
/// process is gone. A symlink so named is removed as a link; nothing is followed.
pub fn sweep_dead(dir: &Dir, prefix: &str) {
    let Ok(entries) = dir.entries() else {
        return;
    };
    for (name, _) in entries {
        let Some(pid) = name
            .strip_prefix(prefix)
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !pid_alive(pid) {
            let _ = dir.remove_tree(&name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use std::os::unix::fs::{symlink, MetadataExt as _, PermissionsExt as _};

    #[test]
    fn symlinks_below_a_root_are_never_followed() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::create_dir(t.path().join("root")).unwrap();
        symlink(&outside, t.path().join("root/conf")).unwrap();
        symlink(outside.join("secret"), t.path().join("root/file")).unwrap();
        std::fs::write(outside.join("secret"), b"secret").unwrap();
        let root = Dir::open_trusted(&t.path().join("root"), None).unwrap();
        let e = root.open_dir("conf").unwrap_err().to_string();
        assert!(e.contains("is a symlink"), "{e}");
        let e = root.open_path("conf/x").unwrap_err().to_string();
        assert!(e.contains("is a symlink"), "{e}");
        let e = root.open_read("file").unwrap_err().to_string();
        assert!(e.contains("is a symlink"), "{e}");
        assert!(root.create_new("file").is_err(), "O_EXCL refuses a symlink");
        assert_eq!(std::fs::read(outside.join("secret")).unwrap(), b"secret");
        let mut created = Vec::new();
        assert!(root
            .create_path("conf/deeper", 0o755, &mut created)
            .is_err());
        assert!(!outside.join("deeper").exists() && created.is_empty());
    }

    #[test]
    fn trusted_links_to_a_root_are_followed_untrusted_refused() {
        let t = tempfile::tempdir().unwrap();
        let real = t.path().join("real");
        std::fs::create_dir(&real).unwrap();
        // A link we own, in a directory only we can write: followed.
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        symlink("real", t.path().join("link")).unwrap();
        let d = Dir::open_trusted(&t.path().join("link/"), None).unwrap();
        d.create_new("x").unwrap();
        assert!(real.join("x").exists());
        // The same link in a directory others can write: refused.
        let open = t.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        symlink(&real, open.join("link")).unwrap();
        let e = Dir::open_trusted(&open.join("link"), None).unwrap_err();
        assert!(e.to_string().contains("others can write"), "{e}");
    }

    #[test]
    fn temps_are_private_unpredictable_and_placed_only_if_still_ours() {
        let t = tempfile::tempdir().unwrap();
        let d = Dir::open_trusted(t.path(), None).unwrap();
        let (name, mut f) = d.create_temp(".x-", ".tmp").unwrap();
        let (other, _) = d.create_temp(".x-", ".tmp").unwrap();
        assert_ne!(name, other);
        assert_eq!(f.metadata().unwrap().mode() & 0o777, 0o600);
        f.write_all(b"data").unwrap();
        let id = FileId::of_file(&f).unwrap();
        // Someone swaps the temp for another file: not placed.
        d.rename(&other, &d, &name, true).unwrap();
        let e = d.place(&name, id, &d, "final", false).unwrap_err();
        assert!(e.to_string().contains("replaced"), "{e}");
        assert_eq!(d.kind("final").unwrap(), Kind::Missing);
        // Never clobbers without `replace`.
        let (n2, f2) = d.create_temp(".x-", ".tmp").unwrap();
        std::fs::write(t.path().join("final"), b"old").unwrap();
        let id2 = FileId::of_file(&f2).unwrap();
        assert!(d.place(&n2, id2, &d, "final", false).is_err());
        assert_eq!(std::fs::read(t.path().join("final")).unwrap(), b"old");
        d.place(&n2, id2, &d, "final", true).unwrap();
        assert_eq!(std::fs::read(t.path().join("final")).unwrap(), b"");
    }

    #[test]
    fn remove_tree_does_not_follow_links() {
        let t = tempfile::tempdir().unwrap();
        let keep = t.path().join("keep");
        std::fs::create_dir(&keep).unwrap();
        std::fs::write(keep.join("f"), b"x").unwrap();
        std::fs::create_dir_all(t.path().join("gone/sub")).unwrap();
        symlink(&keep, t.path().join("gone/sub/link")).unwrap();
        let d = Dir::open_trusted(t.path(), None).unwrap();
        d.remove_tree("gone").unwrap();
        assert!(keep.join("f").exists());
        assert_eq!(d.kind("gone").unwrap(), Kind::Missing);
    }

    #[test]
    fn random_tokens_differ() {
        let a = random_token();
        assert_eq!(a.len(), 16);
        assert_ne!(a, random_token());
    }
}
