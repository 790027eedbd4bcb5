//! Bundles on media: `--split` parts with signed sums, checked by the real `minisign` and
//! `sha256sum`, verified without the key, read across part boundaries, and every kind of
//! damage to the set of parts named exactly.

use std::path::{Path, PathBuf};
use std::process::Command;

use airlock_tests::*;

fn part(dir: &Path, n: usize) -> PathBuf {
    dir.join(format!("e2e.airlock.{n:03}"))
}

/// The standard tools a transfer station has: `minisign -V` on the sums, then `sha256sum -c`
/// in the bundle's directory.
fn standard_tools_check(w: &World, dir: &Path) -> std::process::Output {
    let m = Command::new("minisign")
        .arg("-Vm")
        .arg(dir.join("e2e.airlock.sums"))
        .arg("-p")
        .arg(w.path("pack-keys/airlock.pub"))
        .output()
        .unwrap();
    assert_ok(&m);
    Command::new("sha256sum")
        .args(["-c", "e2e.airlock.sums"])
        .current_dir(dir)
        .output()
        .unwrap()
}

#[test]
fn five_parts_round_trip_and_damage_is_named() {
    let w = World::new();
    w.lock();
    let dir = w.path("media");
    std::fs::create_dir(&dir).unwrap();
    let whole = dir.join("e2e.airlock");
    let build = |extra: &[&str]| {
        let mut args = w.build_args(&whole, false);
        args.push("--quiet".into());
        args.extend(extra.iter().map(Into::into));
        let o = w.pack(&args);
        assert_ok(&o);
        o
    };

    // Unsplit: the same sums and signature cover the one file.
    build(&[]);
    let size = std::fs::metadata(&whole).unwrap().len();
    let sums = std::fs::read_to_string(dir.join("e2e.airlock.sums")).unwrap();
    assert_eq!(sums.lines().count(), 1, "{sums}");
    assert!(sums.ends_with("  e2e.airlock\n"), "{sums}");
    assert_ok(&standard_tools_check(&w, &dir));
    let extracted_whole = w.path("x-whole");
    assert_ok(&w.unpack(
        "extract",
        &whole,
        &["--to", extracted_whole.to_str().unwrap()],
    ));

    // Five parts; the unsplit file of the earlier build is replaced, not left beside them.
    let part_size = (size + 4096).div_ceil(5).to_string();
    let o = build(&["--split", &part_size]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("in 5 parts"),
        "{}",
        text(&o)
    );
    assert!(
        !whole.exists(),
        "the unsplit bundle of the earlier build is gone"
    );
    for n in 1..=5 {
        assert!(part(&dir, n).is_file(), "part {n}");
    }
    assert!(!part(&dir, 6).exists());
    // (age adds a random-length grease stanza to each header, so sizes vary by a little.)
    for n in 1..=4 {
        assert_eq!(
            std::fs::metadata(part(&dir, n)).unwrap().len().to_string(),
            part_size
        );
    }
    let check = standard_tools_check(&w, &dir);
    assert_ok(&check);
    assert_eq!(
        String::from_utf8_lossy(&check.stdout)
            .matches(": OK")
            .count(),
        5
    );

    // Any of the first part, the sums file or the bundle name reads across the parts.
    for named in [part(&dir, 1), dir.join("e2e.airlock.sums"), whole.clone()] {
        let v = w.unpack("verify", &named, &[]);
        assert_ok(&v);
        assert!(
            String::from_utf8_lossy(&v.stdout).contains("decrypted"),
            "{}",
            text(&v)
        );
    }
    // No identity: the outer layer, checked without the key.
    let outer = Command::new("unshare")
        .arg("-n")
        .arg(unpack_bin())
        .args(["verify"])
        .arg(part(&dir, 1))
        .arg("--trust")
        .arg(w.path("pack-keys/airlock.pub"))
        .env_remove("AIRLOCK_IDENTITY")
        .output()
        .unwrap();
    assert_ok(&outer);
    let said = String::from_utf8_lossy(&outer.stdout);
    assert!(
        said.contains("5 parts") && said.contains("(verified)"),
        "{}",
        text(&outer)
    );
    let outer_only = |named: &Path| w.unpack("verify", named, &["--outer-only"]);
    assert_ok(&outer_only(&part(&dir, 1)));

    // The content is the same as the unsplit bundle's.
    let extracted = w.path("x-parts");
    assert_ok(&w.unpack(
        "extract",
        &part(&dir, 1),
        &["--to", extracted.to_str().unwrap()],
    ));
    let diff = Command::new("diff")
        .arg("-r")
        .arg(&extracted_whole)
        .arg(&extracted)
        .output()
        .unwrap();
    assert_ok(&diff);

    // A flipped byte in part 3: both layers name it.
    let orig3 = std::fs::read(part(&dir, 3)).unwrap();
    std::fs::write(part(&dir, 3), flip(&orig3, orig3.len() / 2)).unwrap();
    let expected3 = sums_line(&dir, 3);
    let o = outer_only(&part(&dir, 1));
    assert_refused(
        &o,
        3,
        &[
            "e2e.airlock.003: corrupt: expected sha256",
            &expected3,
            "computed",
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        ["002", "004", "005"]
            .iter()
            .all(|n| !err.contains(&format!("e2e.airlock.{n}")))
            && err.matches(": corrupt").count() == 1,
        "only part 3 is named: {}",
        text(&o)
    );
    let o = w.unpack("verify", &part(&dir, 1), &[]);
    assert_refused(&o, 3, &["e2e.airlock.003: corrupt"]);
    std::fs::write(part(&dir, 3), &orig3).unwrap();

    // Missing: named before anything is read, in both modes.
    let aside = w.path("aside");
    std::fs::rename(part(&dir, 4), &aside).unwrap();
    assert_refused(
        &outer_only(&part(&dir, 1)),
        3,
        &["e2e.airlock.004: missing"],
    );
    assert_refused(
        &w.unpack("load", &part(&dir, 1), &[]),
        3,
        &["e2e.airlock.004: missing"],
    );
    std::fs::rename(&aside, part(&dir, 4)).unwrap();

    // Renamed.
    std::fs::rename(part(&dir, 2), dir.join("e2e.airlock.2")).unwrap();
    assert_refused(
        &outer_only(&part(&dir, 1)),
        3,
        &["e2e.airlock.002: missing; its content is in e2e.airlock.2 (renamed?)"],
    );
    std::fs::rename(dir.join("e2e.airlock.2"), part(&dir, 2)).unwrap();

    // Duplicated: part 3 copied over part 4 (same size: the last part is not touched).
    let orig4 = std::fs::read(part(&dir, 4)).unwrap();
    std::fs::write(part(&dir, 4), &orig3).unwrap();
    assert_refused(
        &outer_only(&part(&dir, 1)),
        3,
        &["e2e.airlock.004: holds the content of e2e.airlock.003"],
    );
    std::fs::write(part(&dir, 4), &orig4).unwrap();
    // … or a stray copy beside the parts: named, and the bundle itself is intact.
    std::fs::copy(part(&dir, 2), dir.join("e2e.airlock.002 (1)")).unwrap();
    assert_refused(
        &outer_only(&part(&dir, 1)),
        3,
        &["e2e.airlock.002 (1): not in the signed sums; it is a copy of e2e.airlock.002"],
    );
    let v = w.unpack("verify", &part(&dir, 1), &[]);
    assert_ok(&v);
    assert!(
        String::from_utf8_lossy(&v.stderr).contains("e2e.airlock.002 (1): not a part"),
        "a full verify warns about the stray: {}",
        text(&v)
    );
    std::fs::remove_file(dir.join("e2e.airlock.002 (1)")).unwrap();

    // Reordered: parts 1 and 2 swapped.
    let (one, two) = (
        std::fs::read(part(&dir, 1)).unwrap(),
        std::fs::read(part(&dir, 2)).unwrap(),
    );
    std::fs::write(part(&dir, 1), &two).unwrap();
    std::fs::write(part(&dir, 2), &one).unwrap();
    let o = outer_only(&part(&dir, 1));
    assert_refused(
        &o,
        3,
        &[
            "e2e.airlock.001: holds the content of e2e.airlock.002",
            "e2e.airlock.002: holds the content of e2e.airlock.001",
        ],
    );
    let o = w.unpack("verify", &part(&dir, 1), &[]);
    assert_refused(
        &o,
        3,
        &["e2e.airlock.001: holds the content of e2e.airlock.002"],
    );
    std::fs::write(part(&dir, 1), &one).unwrap();
    std::fs::write(part(&dir, 2), &two).unwrap();

    // A sums file edited to match a forged part fails its signature (exit 4).
    let sums_path = dir.join("e2e.airlock.sums");
    let good = std::fs::read_to_string(&sums_path).unwrap();
    std::fs::write(&sums_path, good.replacen(&expected3, &"0".repeat(64), 1)).unwrap();
    assert_refused(
        &outer_only(&part(&dir, 1)),
        4,
        &["invalid signature on", "e2e.airlock.sums (key id"],
    );
    std::fs::write(&sums_path, &good).unwrap();
    // Without its signature, the outer layer cannot be checked (exit 4).
    let sig = dir.join("e2e.airlock.sums.minisig");
    std::fs::rename(&sig, &aside).unwrap();
    assert_refused(
        &outer_only(&part(&dir, 1)),
        4,
        &["e2e.airlock.sums.minisig", "missing"],
    );
    std::fs::rename(&aside, &sig).unwrap();
    assert_ok(&outer_only(&part(&dir, 1)));
}

/// The sha256 the sums file lists for part `n`.
fn sums_line(dir: &Path, n: usize) -> String {
    let sums = std::fs::read_to_string(dir.join("e2e.airlock.sums")).unwrap();
    sums.lines()
        .find(|l| l.ends_with(&format!(".{n:03}")))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// `--split --parity 2`: two parity parts after the data parts, listed in the v3 sums that
/// the real `minisign` and `sha256sum` check with the parts; the bundle still verifies and
/// reads as before (the parity parts are never read as bundle bytes), and a damaged parity
/// part is named by the outer check.
#[test]
fn parity_parts_are_checked_by_standard_tools_and_never_read_as_data() {
    let w = World::new();
    w.lock();
    let dir = w.path("media");
    std::fs::create_dir(&dir).unwrap();
    let whole = dir.join("e2e.airlock");
    let build = |extra: &[&str]| {
        let mut args = w.build_args(&whole, false);
        args.push("--quiet".into());
        args.extend(extra.iter().map(Into::into));
        w.pack(&args)
    };

    // Parity needs parts.
    let o = build(&["--parity", "2"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--split"),
        "{}",
        text(&o)
    );

    let o = build(&["--split", "100K", "--parity", "2"]);
    assert_ok(&o);
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(
        said.contains("2 parity parts (e2e.airlock.p01, e2e.airlock.p02"),
        "{}",
        text(&o)
    );
    let sums = std::fs::read_to_string(dir.join("e2e.airlock.sums")).unwrap();
    let names: Vec<&str> = sums.lines().map(|l| &l[66..]).collect();
    let data = names.len() - 2;
    assert!(data >= 2, "{sums}");
    assert_eq!(names[data..], ["e2e.airlock.p01", "e2e.airlock.p02"]);
    for p in ["e2e.airlock.p01", "e2e.airlock.p02"] {
        // 100K is even: a parity part has the part size.
        assert_eq!(std::fs::metadata(dir.join(p)).unwrap().len(), 100 << 10);
    }
    let sig = std::fs::read_to_string(dir.join("e2e.airlock.sums.minisig")).unwrap();
    assert!(
        sig.contains(&format!(
            "trusted comment: airlock-bundle sums v3 parts={data} part-size=102400 total="
        )) && sig.contains(" carried=0 parity=2 code=leopard16-high stripe="),
        "{sig}"
    );
    let check = standard_tools_check(&w, &dir);
    assert_ok(&check);
    assert_eq!(
        String::from_utf8_lossy(&check.stdout)
            .matches(": OK")
            .count(),
        data + 2
    );

    // The full read (decrypted, inner signature) and the outer check both pass.
    let v = w.unpack("verify", &dir.join("e2e.airlock.p01"), &[]);
    assert_ok(&v);
    assert!(
        String::from_utf8_lossy(&v.stdout).contains("decrypted"),
        "{}",
        text(&v)
    );
    assert_ok(&w.unpack("verify", &part(&dir, 1), &["--outer-only"]));

    // A damaged parity part is named; the bundle itself still reads.
    let p2 = dir.join("e2e.airlock.p02");
    let orig = std::fs::read(&p2).unwrap();
    std::fs::write(&p2, flip(&orig, 77)).unwrap();
    let o = w.unpack("verify", &part(&dir, 1), &["--outer-only"]);
    let hint = format!(
        "1 of {} files damaged; 2 parity parts present: run airlock-unpack repair ",
        data + 2
    );
    assert_refused(&o, 3, &["e2e.airlock.p02: corrupt: expected sha256", &hint]);
    assert_ok(&w.unpack("verify", &part(&dir, 1), &[]));

    // repair (no key): the damaged parity part and a lost data part are rebuilt, checked
    // by the signed sums; the damaged file is kept; the standard tools pass again.
    std::fs::remove_file(part(&dir, 2)).unwrap();
    let o = w.unpack("repair", &dir.join("e2e.airlock.sums"), &[]);
    assert_ok(&o);
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(
        said.contains("rebuilt e2e.airlock.002\n")
            && said.contains(
                "rebuilt e2e.airlock.p02 (the damaged file kept as e2e.airlock.p02.damaged)"
            )
            && said.contains(&format!("2 of {} files rebuilt", data + 2)),
        "{}",
        text(&o)
    );
    assert_eq!(std::fs::read(&p2).unwrap(), orig);
    std::fs::remove_file(dir.join("e2e.airlock.p02.damaged")).unwrap();
    assert_ok(&standard_tools_check(&w, &dir));
    assert_ok(&w.unpack("verify", &part(&dir, 1), &[]));

    // More damage than parity: refused (exit 3), naming the files, nothing changed.
    let before: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    for n in 1..=3 {
        let b = std::fs::read(part(&dir, n)).unwrap();
        std::fs::write(part(&dir, n), flip(&b, 10)).unwrap();
    }
    let damaged: Vec<(String, Vec<u8>)> = {
        let mut v: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(damaged.len(), before.len());
    let o = w.unpack("verify", &part(&dir, 1), &["--outer-only"]);
    assert_refused(
        &o,
        3,
        &[&format!(
            "3 of {} files damaged; 2 parity parts rebuild at most 2: 1 more good files would be needed",
            data + 2
        )],
    );
    let o = w.unpack("repair", &part(&dir, 1), &[]);
    assert_refused(
        &o,
        3,
        &[&format!(
            "3 of {} files damaged or missing (e2e.airlock.001, e2e.airlock.002, e2e.airlock.003); 2 parity parts rebuild at most 2: 1 more good files would be needed. Nothing was changed.",
            data + 2
        )],
    );
    let mut after: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    after.sort();
    assert!(after == damaged, "nothing changed");

    // A build without parity removes the parity parts of the earlier one.
    assert_ok(&build(&["--split", "100K"]));
    assert!(!dir.join("e2e.airlock.p01").exists());
    assert!(!p2.exists());
    assert_ok(&standard_tools_check(&w, &dir));
}
