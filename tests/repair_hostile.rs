//! `repair` on a hostile gap host: root repairs a part set in a directory that a real
//! unprivileged user (uid 65534, through `setpriv`) owns, as a USB stick mounted for that
//! user is. The attacker plants symbolic links at a damaged part's name, at the names a
//! repair keeps damaged files under and at the temp name earlier code used, and reaches the
//! set through a link of their own. After each, the root-only victim file keeps its bytes
//! and mode, the rebuilt parts are regular files that the standard tools accept, the
//! attacker's links were moved or removed but never followed, and nothing of the run is
//! left behind.
//!
//! These tests need root (to act as another user); they are the gap host's situation.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;

use airlock_tests::*;

const VICTIM: &[u8] = b"ROOT ONLY: the gap host's age identity\n";

/// A set of 3 or so data parts with 2 parity parts, copied into `media/` of a directory
/// everyone may traverse and owned by the attacker, with a root-only victim file beside it.
struct Media {
    w: World,
    base: tempfile::TempDir,
    /// The pristine files of the set: name and bytes.
    pristine: Vec<(String, Vec<u8>)>,
}

impl Media {
    fn new() -> Media {
        let w = World::new();
        w.lock();
        let built = w.path("built");
        std::fs::create_dir(&built).unwrap();
        let whole = built.join("e2e.airlock");
        let mut args = w.build_args(&whole, false);
        args.push("--quiet".into());
        assert_ok(&w.pack(&args));
        let size = std::fs::metadata(&whole).unwrap().len();
        let mut args = w.build_args(&whole, false);
        args.extend([
            "--quiet".into(),
            "--split".into(),
            (size + 4096).div_ceil(3).to_string().into(),
            "--parity".into(),
            "2".into(),
        ]);
        assert_ok(&w.pack(&args));
        let base = tempfile::Builder::new()
            .prefix("airlock-media-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let media = base.path().join("media");
        std::fs::create_dir(&media).unwrap();
        let mut pristine = Vec::new();
        for e in std::fs::read_dir(&built).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            let bytes = std::fs::read(e.path()).unwrap();
            std::fs::write(media.join(&name), &bytes).unwrap();
            pristine.push((name, bytes));
        }
        pristine.sort();
        assert!(
            pristine.iter().any(|(n, _)| n == "e2e.airlock.p02"),
            "{pristine:?}"
        );
        chown_nobody(&media);
        let victim = base.path().join("victim");
        std::fs::write(&victim, VICTIM).unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
        Media { w, base, pristine }
    }

    fn media(&self) -> PathBuf {
        self.base.path().join("media")
    }

    fn victim(&self) -> PathBuf {
        self.base.path().join("victim")
    }

    /// Runs a shell script as the attacker, in `media/`.
    fn attack(&self, script: &str) {
        let o = Command::new("setpriv")
            .args([
                &format!("--reuid={NOBODY}"),
                &format!("--regid={NOBODY}"),
                "--clear-groups",
                "sh",
                "-ec",
                script,
            ])
            .current_dir(self.media())
            .output()
            .unwrap();
        assert_ok(&o);
    }

    /// `airlock-unpack repair` as root (no identity: repair needs none), with no network.
    fn repair(&self, named: &Path, extra: &[&str]) -> std::process::Output {
        Command::new("unshare")
            .arg("-n")
            .arg(unpack_bin())
            .arg("repair")
            .arg(named)
            .arg("--trust")
            .arg(self.w.path("pack-keys/airlock.pub"))
            .args(extra)
            .env_remove("AIRLOCK_TRUST_DIR")
            .env_remove("AIRLOCK_IDENTITY")
            .output()
            .unwrap()
    }

    /// The victim is as it was: its bytes and its mode.
    fn assert_victim_intact(&self) {
        let v = self.victim();
        assert_eq!(std::fs::read(&v).unwrap(), VICTIM, "the victim's bytes");
        let m = std::fs::metadata(&v).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o600, "the victim's mode");
        assert_eq!(m.uid(), 0, "the victim's owner");
    }

    /// Every file of the set is a regular file with its pristine bytes, and the real
    /// `sha256sum -c` accepts the set.
    fn assert_set_whole(&self) {
        for (name, bytes) in &self.pristine {
            let p = self.media().join(name);
            let m = std::fs::symlink_metadata(&p).unwrap();
            assert!(m.is_file(), "{name} is a regular file");
            assert!(
                std::fs::read(&p).unwrap() == *bytes,
                "{name}: pristine bytes"
            );
        }
        let sums = Command::new("sha256sum")
            .args(["-c", "e2e.airlock.sums"])
            .current_dir(self.media())
            .output()
            .unwrap();
        assert_ok(&sums);
    }

    /// Names in `media/` that a repair run made for itself (temp files).
    fn leftovers(&self) -> Vec<String> {
        std::fs::read_dir(self.media())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".airlock-repair-"))
            .collect()
    }
}

fn is_link_to(p: &Path, target: &Path) -> bool {
    std::fs::read_link(p).is_ok_and(|t| t == target)
}

/// A damaged part replaced by a link to the victim, links at the `.damaged` names and at
/// the temp name older code used: the links are set aside (renamed, never followed), the
/// parts rebuilt as new regular files beside them, readable, owned by root; a killed run's
/// temp file is swept. With `--discard-damaged` a planted link is removed, not followed.
#[test]
fn planted_links_are_moved_never_followed() {
    let m = Media::new();
    let media = m.media();
    let victim = m.victim();
    let v = victim.display();
    m.attack(&format!(
        "rm e2e.airlock.002; ln -s {v} e2e.airlock.002
         ln -s {v} e2e.airlock.002.damaged
         ln -s {v} .e2e.airlock.002.repair
         ln -s {v} .e2e.airlock.p01.repair
         printf 'x' | dd of=e2e.airlock.p01 bs=1 seek=100 conv=notrunc 2>/dev/null
         ln -s {v} e2e.airlock.p01.damaged
         echo stale > .airlock-repair-2147483646-AAAAAAAAAAAAAAAA.tmp"
    ));
    let o = m.repair(&media.join("e2e.airlock.001"), &[]);
    assert_ok(&o);
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(
        said.contains(
            "rebuilt e2e.airlock.002 (the damaged file kept as e2e.airlock.002.damaged.2)\n"
        ) && said.contains(
            "rebuilt e2e.airlock.p01 (the damaged file kept as e2e.airlock.p01.damaged.2)\n"
        ),
        "{}",
        text(&o)
    );
    m.assert_victim_intact();
    m.assert_set_whole();
    // The attacker's links: the one at the part's name was moved aside, still a link;
    // the others are where they were, still links.
    for planted in [
        "e2e.airlock.002.damaged.2",
        "e2e.airlock.002.damaged",
        ".e2e.airlock.002.repair",
        ".e2e.airlock.p01.repair",
        "e2e.airlock.p01.damaged",
    ] {
        assert!(is_link_to(&media.join(planted), &victim), "{planted}");
    }
    // The flipped parity part was moved aside as it was (the attacker's file).
    let kept = std::fs::symlink_metadata(media.join("e2e.airlock.p01.damaged.2")).unwrap();
    assert!(kept.is_file() && kept.uid() == NOBODY);
    for rebuilt in ["e2e.airlock.002", "e2e.airlock.p01"] {
        let meta = std::fs::symlink_metadata(media.join(rebuilt)).unwrap();
        assert_eq!(meta.uid(), 0, "{rebuilt} is root's");
        assert_eq!(meta.mode() & 0o777, 0o644, "{rebuilt} is readable");
    }
    assert!(m.leftovers().is_empty(), "{:?}", m.leftovers());

    // --discard-damaged: a link at a part's name is removed, not followed.
    m.attack(&format!("rm e2e.airlock.003; ln -s {v} e2e.airlock.003"));
    let o = m.repair(&media.join("e2e.airlock.sums"), &["--discard-damaged"]);
    assert_ok(&o);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("rebuilt e2e.airlock.003\n"),
        "{}",
        text(&o)
    );
    m.assert_victim_intact();
    m.assert_set_whole();
    assert!(!media.join("e2e.airlock.003.damaged").exists());
    assert!(m.leftovers().is_empty(), "{:?}", m.leftovers());
}

/// The set reached through a link the attacker owns (which they could point anywhere
/// between our look and our write): repair refuses to write through it (exit 10), and
/// nothing is changed.
#[test]
fn a_set_reached_through_someone_elses_link_is_refused() {
    let m = Media::new();
    let attacker = m.base.path().join("attacker");
    std::fs::create_dir(&attacker).unwrap();
    chown_nobody(&attacker);
    let media = m.media();
    m.attack(&format!(
        "rm e2e.airlock.002; ln -s {} {}/link",
        media.display(),
        attacker.display()
    ));
    let o = m.repair(&attacker.join("link/e2e.airlock.sums"), &[]);
    assert_refused(&o, 10, &["link: is a symlink owned by uid 65534"]);
    assert!(!media.join("e2e.airlock.002").exists(), "nothing rebuilt");
    assert!(m.leftovers().is_empty(), "{:?}", m.leftovers());
    // Named by the real directory, the same set is repaired.
    assert_ok(&m.repair(&media.join("e2e.airlock.sums"), &[]));
    m.assert_set_whole();
}
