//! The files the binaries write beside their real work: the `--report` of a load or push
//! (and its `.minisig`), and the keys `keygen` writes. Real binaries, real paths: a symbolic
//! link planted at one of those names is never written through, and the modes of what they
//! create do not depend on the umask.

use std::os::unix::fs::{symlink, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use airlock_tests::*;
use serde_json::Value;

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn is_link(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink())
}

/// Names in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// `BIN keygen -o DIR` under `umask`.
fn keygen(bin: &Path, dir: &Path, umask: &str) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(format!("umask {umask}; exec \"$0\" keygen -o \"$1\""))
        .arg(bin)
        .arg(dir)
        .output()
        .unwrap()
}

/// The two keygens: binary, secret key name, public key name.
fn keygens() -> [(PathBuf, &'static str, &'static str); 2] {
    [
        (unpack_bin(), "host.key", "host.pub"),
        (pack_bin(), "airlock.key", "airlock.pub"),
    ]
}

/// A signing key pair to trust and sign reports with.
fn pack_keys(dir: &Path) -> PathBuf {
    let keys = dir.join("pack-keys");
    assert_ok(&keygen(&pack_bin(), &keys, "022"));
    keys
}

/// `load MISSING.airlock --report REPORT …`: refused (there is no bundle), which is still
/// worth a report.
fn load_with_report(dir: &Path, keys: &Path, report: &Path, sign: bool) -> Output {
    let mut c = Command::new(unpack_bin());
    c.arg("load")
        .arg(dir.join("missing.airlock"))
        .arg("--trust")
        .arg(keys.join("airlock.pub"))
        .arg("--quiet")
        .arg("--report")
        .arg(report)
        .env_remove("AIRLOCK_TRUST_DIR")
        .env_remove("AIRLOCK_KEY_PASSWORD");
    if sign {
        c.arg("--report-sign-key").arg(keys.join("airlock.key"));
    }
    c.output().unwrap()
}

/// K5: `--report` naming a symbolic link (to a file, or to nowhere) is refused before any
/// work, with exit 7 naming it; the link's target keeps its bytes and mode, and nothing is
/// created where a dangling link points.
#[test]
fn a_report_path_that_is_a_symlink_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let keys = pack_keys(d.path());
    let victim = d.path().join("victim");
    std::fs::write(&victim, "root:secret:19700:0:99999:7:::\n").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    let reports = d.path().join("reports");
    std::fs::create_dir(&reports).unwrap();

    let link = reports.join("report.json");
    symlink(&victim, &link).unwrap();
    let o = load_with_report(d.path(), &keys, &link, false);
    assert_refused(&o, 7, &["report.json", "symbolic link"]);
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "root:secret:19700:0:99999:7:::\n"
    );
    assert_eq!(mode(&victim), 0o600);
    assert!(is_link(&link));

    let nowhere = d.path().join("nowhere");
    let dangling = reports.join("dangling.json");
    symlink(&nowhere, &dangling).unwrap();
    let o = load_with_report(d.path(), &keys, &dangling, false);
    assert_refused(&o, 7, &["dangling.json", "symbolic link"]);
    assert!(!nowhere.exists(), "written through a dangling link");

    // The signature beside the report is held to the same rule.
    let sig_link = reports.join("signed.json.minisig");
    symlink(&victim, &sig_link).unwrap();
    let o = load_with_report(d.path(), &keys, &reports.join("signed.json"), true);
    assert_refused(&o, 7, &["signed.json.minisig", "symbolic link"]);
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "root:secret:19700:0:99999:7:::\n"
    );
    assert!(!reports.join("signed.json").exists());
    assert_eq!(
        listing(&reports),
        ["dangling.json", "report.json", "signed.json.minisig"],
        "something was left in the report directory"
    );
}

/// A report (and its signature) is written whole, replacing what was there: a new one is
/// 0644 whatever the umask, a replaced regular file keeps its mode, no temp file stays, and
/// the signature checks with the real `minisign`.
#[test]
fn a_report_replaces_a_regular_file_and_leaves_no_temp() {
    let d = tempfile::tempdir().unwrap();
    let keys = pack_keys(d.path());
    let reports = d.path().join("reports");
    std::fs::create_dir(&reports).unwrap();
    let report = reports.join("load.json");

    let o = Command::new("sh")
        .arg("-c")
        .arg("umask 077; exec \"$@\"")
        .arg("sh")
        .arg(unpack_bin())
        .arg("load")
        .arg(d.path().join("missing.airlock"))
        .arg("--trust")
        .arg(keys.join("airlock.pub"))
        .args(["--quiet", "--report"])
        .arg(&report)
        .arg("--report-sign-key")
        .arg(keys.join("airlock.key"))
        .env_remove("AIRLOCK_TRUST_DIR")
        .output()
        .unwrap();
    assert!(!o.status.success(), "a missing bundle loaded: {}", text(&o));
    let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["result"], "refused", "{r:#}");
    assert_eq!(mode(&report), 0o644);
    assert_eq!(mode(&reports.join("load.json.minisig")), 0o644);
    run_ok(
        Command::new("minisign")
            .arg("-Vm")
            .arg(&report)
            .arg("-p")
            .arg(keys.join("airlock.pub")),
    );

    std::fs::write(&report, "old report\n").unwrap();
    std::fs::set_permissions(&report, std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = load_with_report(d.path(), &keys, &report, true);
    assert!(!o.status.success(), "{}", text(&o));
    let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["result"], "refused", "{r:#}");
    assert_eq!(mode(&report), 0o600, "the replaced report lost its mode");
    assert_eq!(listing(&reports), ["load.json", "load.json.minisig"]);
}

/// K6c, K6e: a dangling symbolic link at either key name makes keygen refuse (both
/// binaries); nothing is created where it points, and no half key pair is left.
#[test]
fn keygen_refuses_a_symlink_at_a_key_name() {
    for (bin, secret, public) in keygens() {
        for planted in [public, secret] {
            let d = tempfile::tempdir().unwrap();
            let keys = d.path().join("keys");
            std::fs::create_dir(&keys).unwrap();
            let elsewhere = d.path().join("elsewhere");
            symlink(&elsewhere, keys.join(planted)).unwrap();
            let o = keygen(&bin, &keys, "022");
            assert_refused(&o, 2, &[planted, "already exists"]);
            assert!(
                !elsewhere.exists(),
                "{} wrote through {planted}",
                bin.display()
            );
            assert_eq!(listing(&keys), [planted], "{}", bin.display());
        }
    }
}

/// K6f: under umask 000 the key directory is 0700, the secret key 0600 and the public key
/// 0644; the same under a strict umask. Missing parents are 0755 at most.
#[test]
fn keygen_modes_do_not_follow_the_umask() {
    for (bin, secret, public) in keygens() {
        for (umask, parent) in [("000", 0o755), ("077", 0o700)] {
            let d = tempfile::tempdir().unwrap();
            let keys = d.path().join("etc").join("keys");
            let o = keygen(&bin, &keys, umask);
            assert_ok(&o);
            let what = format!("{} under umask {umask}", bin.display());
            assert_eq!(mode(&keys), 0o700, "{what}");
            assert_eq!(mode(&keys.join(secret)), 0o600, "{what}");
            assert_eq!(mode(&keys.join(public)), 0o644, "{what}");
            assert_eq!(mode(&d.path().join("etc")), parent, "{what}");
        }
    }
}

/// An existing key directory keeps its mode; one that is a symbolic link, or that others
/// can write to, is refused.
#[test]
fn keygen_into_an_existing_directory() {
    for (bin, secret, public) in keygens() {
        let d = tempfile::tempdir().unwrap();
        let keys = d.path().join("keys");
        std::fs::create_dir(&keys).unwrap();
        std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o750)).unwrap();
        assert_ok(&keygen(&bin, &keys, "022"));
        assert_eq!(mode(&keys), 0o750);
        assert_eq!(listing(&keys), [secret, public]);
        // A second keygen there overwrites nothing.
        let before = std::fs::read(keys.join(secret)).unwrap();
        let o = keygen(&bin, &keys, "022");
        assert_refused(&o, 2, &["already exists"]);
        assert_eq!(std::fs::read(keys.join(secret)).unwrap(), before);

        let real = d.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = d.path().join("link");
        symlink(&real, &link).unwrap();
        let o = keygen(&bin, &link, "022");
        assert_refused(&o, 2, &["link", "symbolic link"]);
        assert!(listing(&real).is_empty(), "{}", bin.display());

        let shared = d.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let o = keygen(&bin, &shared, "022");
        assert_refused(&o, 2, &["shared", "writable by others"]);
        assert!(listing(&shared).is_empty(), "{}", bin.display());
    }
}
