//! `build --with-unpacker`: finding the static `airlock-unpack` to carry beside a bundle,
//! refusing anything that would not run on a bare gap host, and copying it into place so
//! that the signed sums list it (a host with no unpacker yet gets one on the first trip).

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::Command;

use airlock_bundle::parts::Part;
use airlock_bundle::{BundleError, Digest};
use sha2::{Digest as _, Sha256};

use crate::PackError;

/// The name the unpacker has beside the bundle (one of `airlock_bundle::parts::CARRIED`).
pub(crate) const NAME: &str = "airlock-unpack";
/// Where the airlock-pack `.deb` installs the static unpacker.
pub(crate) const INSTALLED: &str = "/usr/lib/airlock/airlock-unpack";
/// An ELF header and its program headers sit in the first bytes; no more is read to judge.
const MAX_HEAD: u64 = 64 << 10;

/// An unpacker fit to carry: a static x86_64 ELF that ran `--version`.
#[derive(Debug)]
pub(crate) struct Unpacker {
    pub(crate) path: PathBuf,
    /// What `--version` printed (`airlock-unpack 0.1.0`).
    pub(crate) version: String,
}

/// The unpacker `--with-unpacker` names, or without a path the one `cargo xtask dist` made
/// (`dist/airlock-unpack` in the directory of the running airlock-pack or up to three
/// above it: a workspace's `target/release/`), else the one the `.deb` installed.
pub(crate) fn find(given: Option<&Path>) -> Result<Unpacker, PackError> {
    if let Some(p) = given {
        return check(p);
    }
    let mut refused = String::new();
    for p in default_candidates().into_iter().filter(|p| p.is_file()) {
        match check(&p) {
            Ok(u) => return Ok(u),
            Err(e) => refused.push_str(&format!("\n  {e}")),
        }
    }
    Err(PackError::Usage(format!(
        "--with-unpacker: no static airlock-unpack found (looked for dist/{NAME} beside and above this airlock-pack, and {INSTALLED}); run `cargo xtask dist`, install the airlock-pack .deb, or give its path{refused}"
    )))
}

fn default_candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        out.extend(dir.ancestors().take(4).map(|a| a.join("dist").join(NAME)));
    }
    out.push(PathBuf::from(INSTALLED));
    out
}

/// Refuses what would not run on a gap host without libraries: not an x86_64 ELF, or one
/// that asks for a dynamic loader (`PT_INTERP`); then runs `--version`.
fn check(path: &Path) -> Result<Unpacker, PackError> {
    let mut head = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_HEAD).read_to_end(&mut head))
        .map_err(|source| PackError::Input {
            path: path.to_path_buf(),
            source,
        })?;
    if let Err(why) = static_x86_64(&head) {
        return Err(PackError::Usage(format!(
            "--with-unpacker {}: {why}; carry the static one `cargo xtask dist` builds (dist/{NAME})",
            path.display()
        )));
    }
    let out = Command::new(path)
        .arg("--version")
        .output()
        .map_err(|source| PackError::Input {
            path: path.to_path_buf(),
            source,
        })?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || !version.starts_with("airlock-unpack ") {
        return Err(PackError::Usage(format!(
            "--with-unpacker {}: `--version` did not answer `airlock-unpack VERSION` ({}, stdout {:?})",
            path.display(),
            out.status,
            airlock_bundle::text::escape(&version)
        )));
    }
    Ok(Unpacker {
        path: path.to_path_buf(),
        version,
    })
}

/// Whether `head` (the file's first bytes) is a 64-bit little-endian x86_64 ELF executable
/// with no program interpreter: the kernel runs it without any library.
fn static_x86_64(head: &[u8]) -> Result<(), String> {
    // Offsets come from the file: a field past the end (or past usize) is no field.
    fn field<const N: usize>(head: &[u8], o: usize) -> Option<[u8; N]> {
        head.get(o..o.checked_add(N)?)?.try_into().ok()
    }
    let u16_at = |o| field(head, o).map(u16::from_le_bytes);
    let u32_at = |o| field(head, o).map(u32::from_le_bytes);
    let u64_at = |o| field(head, o).map(u64::from_le_bytes);
    if !head.starts_with(b"\x7fELF") {
        return Err("not an ELF executable".into());
    }
    // EI_CLASS 2 (64-bit), EI_DATA 1 (little-endian), e_machine 62 (EM_X86_64).
    if head.get(4) != Some(&2) || head.get(5) != Some(&1) || u16_at(18) != Some(62) {
        return Err("not a 64-bit x86_64 ELF".into());
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(32), u16_at(54), u16_at(56)) else {
        return Err("truncated ELF header".into());
    };
    for i in 0..usize::from(phnum) {
        let at = usize::try_from(phoff)
            .ok()
            .and_then(|o| o.checked_add(i * usize::from(phentsize)))
            .ok_or("program headers out of range")?;
        // PT_INTERP (3): the program asks for a dynamic loader.
        match u32_at(at) {
            Some(3) => return Err("dynamically linked (it names a program interpreter)".into()),
            Some(_) => {}
            None => return Err("program headers past the first 64 KiB".into()),
        }
    }
    Ok(())
}

/// Copies the unpacker into `dir` as `airlock-unpack` (mode 0755, through a temp file and
/// a rename), hashing it as it goes; the part to list in the sums.
pub(crate) fn carry(unpacker: &Unpacker, dir: &Path) -> Result<Part, PackError> {
    let to = dir.join(NAME);
    let tmp = dir.join(format!(".{NAME}.partial"));
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PackError::Bundle(BundleError::Io { path, source })
    };
    let mut from = std::fs::File::open(&unpacker.path).map_err(|source| PackError::Input {
        path: unpacker.path.clone(),
        source,
    })?;
    let _ = std::fs::remove_file(&tmp);
    let mut out = {
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o755)
            .open(&tmp)
            .map_err(io(&tmp))?
    };
    let (mut h, mut size, mut buf) = (Sha256::new(), 0u64, vec![0u8; 1 << 16]);
    let copied = (|| -> std::io::Result<()> {
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) => return out.flush(),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            h.update(&buf[..n]);
            out.write_all(&buf[..n])?;
            size += n as u64;
        }
    })();
    if let Err(e) = copied.and_then(|()| std::fs::rename(&tmp, &to)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(&to)(e));
    }
    Ok(Part {
        name: NAME.into(),
        digest: Digest::from_bytes(h.finalize().into()),
        size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ELF header with one program header of type `ptype`.
    fn elf(machine: u16, ptype: u32) -> Vec<u8> {
        let mut h = vec![0u8; 64 + 56];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 2;
        h[5] = 1;
        h[18..20].copy_from_slice(&machine.to_le_bytes());
        h[32..40].copy_from_slice(&64u64.to_le_bytes());
        h[54..56].copy_from_slice(&56u16.to_le_bytes());
        h[56..58].copy_from_slice(&1u16.to_le_bytes());
        h[64..68].copy_from_slice(&ptype.to_le_bytes());
        h
    }

    #[test]
    fn only_static_x86_64_elf_passes() {
        assert_eq!(static_x86_64(&elf(62, 1)), Ok(()));
        assert!(static_x86_64(&elf(62, 3))
            .unwrap_err()
            .contains("dynamically linked"));
        assert!(static_x86_64(&elf(183, 1)).unwrap_err().contains("x86_64"));
        assert!(static_x86_64(b"#!/bin/sh\n")
            .unwrap_err()
            .contains("not an ELF"));
        let mut far = elf(62, 1);
        far[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(static_x86_64(&far).is_err());
        assert!(static_x86_64(&elf(62, 1)[..40]).is_err());
    }

    /// The binary running this test is the toolchain's default (dynamic) build: refused.
    #[test]
    fn a_dynamic_build_is_refused_by_name() {
        let me = std::env::current_exe().unwrap();
        let e = check(&me).unwrap_err().to_string();
        assert!(e.contains("dynamically linked"), "{e}");
    }
}
