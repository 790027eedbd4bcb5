//! The streaming step: where each blob's bytes go while the bundle is read. [`SinkSpec`]
//! says it (decided at prepare), [`Sink`] is one opened for an entry (a temp file written
//! in line or on its own thread, a comparison with the blob already in place, or nothing),
//! and [`Tee`] feeds the loader and every sink of an entry in one pass. Nothing here makes
//! anything visible: that is commit's.

use std::fs;
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::FileExt as _;
use std::sync::{Arc, Mutex};

use airlock_bundle::readahead::WriteBehind;

use super::fs::{fs_io, TempSpec};
use crate::hostfs::Dir;

/// What a background check found: `Some(true)` once the blob in the volume hashed right.
pub(crate) type PresentCell = Mutex<Option<bool>>;

/// Where a blob goes while the bundle streams.
#[derive(Debug, Clone)]
pub(crate) enum SinkSpec {
    /// A temp file.
    Write(TempSpec),
    /// A blob already in place (`existing` in `dir`): compared with the stream; written to
    /// `temp` only from the first difference on (the equal prefix copied from `existing`).
    Compare {
        dir: Arc<Dir>,
        existing: String,
        temp: TempSpec,
    },
    /// A spool file, not written if every check has already found the blob in its volume.
    SpoolUnlessPresent {
        temp: TempSpec,
        checks: Vec<Arc<PresentCell>>,
    },
}

/// One bundle entry's bytes to the loader (the engine upload, containerd's content store)
/// and to the temp files of the models and files that share the blob, in one pass.
pub(crate) struct Tee<'a, W> {
    pub(crate) out: Option<&'a mut W>,
    pub(crate) files: Vec<Sink>,
}

impl<W: std::io::Write> std::io::Write for Tee<'_, W> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        if let Some(o) = self.out.as_mut() {
            std::io::Write::write_all(o, b)?;
        }
        for f in &mut self.files {
            f.write_all(b)?;
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// An open [`SinkSpec`].
pub(crate) enum Sink {
    /// Not needed after all: the bytes are dropped (they are still hashed by the reader).
    Skip,
    Direct(io::BufWriter<fs::File>),
    Behind(WriteBehind<fs::File>),
    Compare {
        existing: io::BufReader<fs::File>,
        /// The same file again, for copying the equal prefix once they differ.
        original: fs::File,
        temp: TempSpec,
        big: bool,
        pos: u64,
        buf: Vec<u8>,
        diverged: Option<Box<Sink>>,
    },
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Sink::Skip => "Sink::Skip",
            Sink::Direct(_) => "Sink::Direct",
            Sink::Behind(_) => "Sink::Behind",
            Sink::Compare { .. } => "Sink::Compare",
        })
    }
}

impl Sink {
    /// Opens a sink for an entry of `size` bytes.
    pub(crate) fn open(spec: &SinkSpec, size: u64) -> io::Result<Sink> {
        // Large blobs are written on their own thread while the reader hashes: with sha256
        // at ~2 GB/s, writing in line would add half again to a model's load time.
        let big = size >= 4 << 20;
        match spec {
            SinkSpec::Write(t) => Sink::create(t, big),
            SinkSpec::SpoolUnlessPresent { temp, checks } => {
                let all_present = checks
                    .iter()
                    .all(|c| *c.lock().unwrap_or_else(|p| p.into_inner()) == Some(true));
                if all_present {
                    Ok(Sink::Skip)
                } else {
                    Sink::create(temp, big)
                }
            }
            SinkSpec::Compare {
                dir,
                existing,
                temp,
            } => {
                let original = dir.open_read(existing).map_err(fs_io)?;
                Ok(Sink::Compare {
                    existing: io::BufReader::with_capacity(1 << 20, original.try_clone()?),
                    original,
                    temp: temp.clone(),
                    big,
                    pos: 0,
                    buf: Vec::new(),
                    diverged: None,
                })
            }
        }
    }

    fn create(t: &TempSpec, big: bool) -> io::Result<Sink> {
        let f = t.create()?;
        Ok(if big {
            Sink::Behind(WriteBehind::spawn(f, 1 << 20, 4))
        } else {
            Sink::Direct(io::BufWriter::with_capacity(1 << 20, f))
        })
    }

    /// From here on, write: the temp file starts with the existing file's first `pos`
    /// bytes, which equalled the stream's (read with `pread`: the comparing reader shares
    /// the file offset).
    fn diverge(original: &fs::File, temp: &TempSpec, big: bool, pos: u64) -> io::Result<Sink> {
        let mut w = Sink::create(temp, big)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut at = 0u64;
        while at < pos {
            let want = buf.len().min((pos - at) as usize);
            let n = original.read_at(&mut buf[..want], at)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{}: shrank while being compared", temp.dir.path().display()),
                ));
            }
            w.write_all(&buf[..n])?;
            at += n as u64;
        }
        Ok(w)
    }

    pub(crate) fn write_all(&mut self, b: &[u8]) -> io::Result<()> {
        match self {
            Sink::Skip => Ok(()),
            Sink::Direct(w) => w.write_all(b),
            Sink::Behind(w) => w.write_all(b),
            Sink::Compare {
                existing,
                original,
                temp,
                big,
                pos,
                buf,
                diverged,
            } => {
                if let Some(w) = diverged {
                    return w.write_all(b);
                }
                buf.resize(b.len(), 0);
                let same = existing.read_exact(buf).is_ok() && buf[..] == b[..];
                if same {
                    *pos += b.len() as u64;
                    return Ok(());
                }
                let mut w = Sink::diverge(original, temp, *big, *pos)?;
                w.write_all(b)?;
                *diverged = Some(Box::new(w));
                Ok(())
            }
        }
    }

    pub(crate) fn finish(self) -> io::Result<()> {
        match self {
            Sink::Skip => Ok(()),
            Sink::Direct(mut w) => w.flush(),
            Sink::Behind(w) => w.finish().map(drop),
            Sink::Compare {
                mut existing,
                original,
                temp,
                big,
                pos,
                diverged,
                ..
            } => match diverged {
                Some(w) => w.finish(),
                None => {
                    // Equal so far; a longer existing file still differs.
                    if existing.read(&mut [0u8; 1])? == 0 {
                        Ok(())
                    } else {
                        Sink::diverge(&original, &temp, big, pos)?.finish()
                    }
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_sinks_write_only_from_the_first_difference() {
        let dir = tempfile::tempdir().unwrap();
        let held = Arc::new(Dir::open_trusted(dir.path(), None).unwrap());
        let data: Vec<u8> = (0..(5u32 << 20)).map(|i| (i % 253) as u8).collect();
        let run = |existing: &[u8]| -> Option<Vec<u8>> {
            let _ = fs::remove_file(dir.path().join("temp"));
            fs::write(dir.path().join("existing"), existing).unwrap();
            let temp = TempSpec::named(&held, "temp".into());
            let spec = SinkSpec::Compare {
                dir: held.clone(),
                existing: "existing".into(),
                temp: temp.clone(),
            };
            let mut s = Sink::open(&spec, data.len() as u64).unwrap();
            for c in data.chunks(100_000) {
                s.write_all(c).unwrap();
            }
            s.finish().unwrap();
            let out = fs::read(dir.path().join("temp")).ok();
            assert_eq!(
                out.is_some(),
                temp.made().is_some(),
                "made is what was created"
            );
            out
        };
        assert_eq!(run(&data), None, "equal: nothing written");
        let mut damaged = data.clone();
        damaged[3_333_333] ^= 1;
        assert_eq!(run(&damaged).as_deref(), Some(&data[..]), "one bit off");
        let mut longer = data.clone();
        longer.push(0);
        assert_eq!(run(&longer).as_deref(), Some(&data[..]), "longer");
        assert_eq!(run(&data[..1000]).as_deref(), Some(&data[..]), "shorter");
    }
}
