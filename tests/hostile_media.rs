//! Hostile media and hostile headers, with the real binaries: what someone who can write the
//! disk a bundle arrives on can put beside it (symlinks to root-only files, a sums file of
//! 100 000 lines or of random bytes, a 200 GiB sparse stray, escape sequences in names, more
//! parts than file descriptors, an unsigned sums file naming another file), and what a buggy
//! or compromised signer can put into a header (overlapping targets, sizes that wrap, another
//! trusted comment). Each case ends quickly with the documented exit code, names what is
//! wrong, and never prints a byte it was not meant to.
//!
//! No registry and no Docker engine: the bundles carry `[[files]]` only.

use std::ffi::OsStr;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use airlock_bundle::header::{HEADER_PATH, SIGNATURE_PATH};
use airlock_bundle::sign::SigningKey;
use airlock_bundle::tarfmt;
use airlock_tests::{assert_ok, pack_bin, text, unpack_bin};
use serde_json::Value;

/// What a terminal acts on: no output of a refusal may contain it.
const ESC: char = '\u{1b}';
const EVIL: &str = "x\u{1b}]0;PWNED\u{7}\u{1b}[2J";

/// A signing key, a `[[files]]`-only spec with one file of `payload` bytes, and its lock.
struct Media {
    dir: tempfile::TempDir,
}

impl Media {
    fn new(payload: usize) -> Media {
        let m = Media {
            dir: tempfile::tempdir().unwrap(),
        };
        run_ok(
            Command::new(pack_bin())
                .args(["keygen", "-o"])
                .arg(m.path("keys")),
        );
        std::fs::create_dir_all(m.path("conf")).unwrap();
        // Not compressible and not repetitive, so that every part's digest differs.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let data: Vec<u8> = (0..payload)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        std::fs::write(m.path("conf/data.bin"), data).unwrap();
        std::fs::write(
            m.path("hm.toml"),
            format!(
                "name = \"hm\"\n[[files]]\nsource = \"conf\"\npath = \"{}\"\n",
                m.path("host").display()
            ),
        )
        .unwrap();
        let o = m.pack(&["lock".as_ref(), m.path("hm.toml").as_os_str()]);
        assert_ok(&o);
        m
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn key(&self) -> SigningKey {
        SigningKey::load(&self.path("keys/airlock.key"), None).unwrap()
    }

    fn pack(&self, args: &[&OsStr]) -> Output {
        Command::new(pack_bin())
            .args(args)
            .arg("--cache")
            .arg(self.path("cache"))
            .output()
            .unwrap()
    }

    /// Builds a plain (signed, not encrypted) bundle `DIR/hm.airlock` with `extra` args.
    fn build(&self, dir: &str, extra: &[&str]) -> PathBuf {
        let out = self.path(dir);
        std::fs::create_dir_all(&out).unwrap();
        let bundle = out.join("hm.airlock");
        let (spec, key) = (self.path("hm.toml"), self.path("keys/airlock.key"));
        let mut args: Vec<&OsStr> = vec![
            "build".as_ref(),
            spec.as_os_str(),
            "-o".as_ref(),
            bundle.as_os_str(),
            "--sign-key".as_ref(),
            key.as_os_str(),
            "--quiet".as_ref(),
        ];
        args.extend(extra.iter().map(OsStr::new));
        assert_ok(&self.pack(&args));
        bundle
    }

    /// `airlock-unpack CMD BUNDLE --trust airlock.pub -q EXTRA…`, killed after `limit`.
    fn unpack(&self, cmd: &str, bundle: &Path, extra: &[&str], limit: Duration) -> Run {
        let mut c = Command::new(unpack_bin());
        c.arg(cmd)
            .arg(bundle)
            .arg("--trust")
            .arg(self.path("keys/airlock.pub"))
            .arg("-q")
            .args(extra)
            .env_remove("AIRLOCK_TRUST_DIR")
            .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
            .env("AIRLOCK_WORK_DIR", self.path("work"));
        run_limited(&mut c, limit)
    }

    fn verify(&self, bundle: &Path, extra: &[&str]) -> Run {
        self.unpack("verify", bundle, extra, Duration::from_secs(60))
    }

    /// The plain bundle's tar rewritten with its header changed by `f` and signed by the
    /// real key with `comment` as the trusted comment.
    fn resign(&self, plain: &Path, comment: &str, f: impl Fn(&mut Value)) -> Vec<u8> {
        let key = self.key();
        rewrite(plain, |path, data, out| match path {
            HEADER_PATH => {
                let mut v: Value = serde_json::from_slice(data).unwrap();
                f(&mut v);
                let bytes = serde_json::to_vec_pretty(&v).unwrap();
                tarfmt::write_small(out, HEADER_PATH, &bytes).unwrap();
                let sig = key.sign_with(&bytes, comment);
                tarfmt::write_small(out, SIGNATURE_PATH, sig.as_bytes()).unwrap();
            }
            SIGNATURE_PATH => {}
            p => tarfmt::write_small(out, p, data).unwrap(),
        })
    }
}

/// A plain bundle's entries passed through `f` (which writes what it wants in their place),
/// with the end-of-archive blocks after them.
fn rewrite(plain: &Path, f: impl Fn(&str, &[u8], &mut Vec<u8>)) -> Vec<u8> {
    let mut archive = tar::Archive::new(std::fs::File::open(plain).unwrap());
    let mut out = Vec::new();
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        f(&path, &data, &mut out);
    }
    tarfmt::write_end(&mut out).unwrap();
    out
}

fn run_ok(c: &mut Command) {
    let o = c.output().unwrap();
    assert_ok(&o);
}

/// A finished (or killed) run and how long it took.
struct Run {
    out: Output,
    took: Duration,
}

impl Run {
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }

    fn show(&self) -> String {
        format!("after {:?}: {}", self.took, text(&self.out))
    }

    /// Exit `code`, every needle in stderr, and no raw escape character anywhere.
    fn refused(&self, code: i32, needles: &[&str]) {
        assert_eq!(self.out.status.code(), Some(code), "{}", self.show());
        let err = self.stderr();
        for n in needles {
            assert!(err.contains(n), "stderr lacks {n:?}: {}", self.show());
        }
        self.no_raw_escapes();
    }

    fn ok(&self) {
        assert!(self.out.status.success(), "{}", self.show());
        self.no_raw_escapes();
    }

    fn no_raw_escapes(&self) {
        for (what, bytes) in [("stdout", &self.out.stdout), ("stderr", &self.out.stderr)] {
            assert!(
                !bytes.contains(&(ESC as u8)) && !bytes.contains(&0x07),
                "raw control bytes on {what}: {}",
                self.show()
            );
        }
    }
}

/// Runs `c` with its output in files (no pipe to fill), killing it after `limit`.
fn run_limited(c: &mut Command, limit: Duration) -> Run {
    let logs = tempfile::tempdir().unwrap();
    let (out_p, err_p) = (logs.path().join("out"), logs.path().join("err"));
    let start = Instant::now();
    let mut child = c
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_p).unwrap())
        .stderr(std::fs::File::create(&err_p).unwrap())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        took: start.elapsed(),
        out: Output {
            status,
            stdout: std::fs::read(&out_p).unwrap(),
            stderr: std::fs::read(&err_p).unwrap(),
        },
    }
}

fn part(dir: &Path, n: usize) -> PathBuf {
    dir.join(format!("hm.airlock.{n:03}"))
}

/// Generous for a loaded two-core machine; the unbounded code took a minute (S3) or never
/// finished (S11).
const FAST: Duration = Duration::from_secs(5);

#[test]
fn pre_signature_work_on_the_sums_and_strays_is_bounded() {
    let m = Media::new(20_000);
    let dir = m.path("split");
    let first = part(&dir, 1);
    m.build("split", &["--split", "8192"]);
    let sums_path = dir.join("hm.airlock.sums");
    let sums = std::fs::read(&sums_path).unwrap();

    // S3: 100 000 unique lines, still under the original signature (which will not match).
    let hex = "ab".repeat(32);
    let huge: String = (0..100_000)
        .map(|i| format!("{hex}  hm.airlock.{i:06}\n"))
        .collect();
    std::fs::write(&sums_path, huge).unwrap();
    let r = m.verify(&first, &[]);
    assert!(r.took < FAST, "100k-line sums: {}", r.show());
    r.refused(3, &["hm.airlock.sums", "more than"]);

    // S1 (I-3): random bytes are a malformed sums file (3), not an environment error (7).
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 | 0x80)
        .collect();
    std::fs::write(&sums_path, &garbage).unwrap();
    m.verify(&first, &[])
        .refused(3, &["hm.airlock.sums", "UTF-8"]);
    std::fs::write(&sums_path, &sums).unwrap();
    m.verify(&first, &[]).ok();

    // S11: a 200 GiB sparse stray beside the parts is named by its size, never hashed.
    let stray = part(&dir, 999);
    std::fs::File::create(&stray)
        .unwrap()
        .set_len(200 << 30)
        .unwrap();
    let r = m.verify(&first, &["--outer-only"]);
    assert!(r.took < FAST, "sparse stray, --outer-only: {}", r.show());
    r.refused(3, &["hm.airlock.999", "214748364800 bytes", "not hashed"]);
    // A full read only warns about it.
    let r = m.verify(&first, &[]);
    assert!(r.took < FAST, "sparse stray, full verify: {}", r.show());
    r.ok();
    assert!(r.stderr().contains("hm.airlock.999"), "{}", r.show());

    // S11b: and a missing part on top: "which part?" does not hash the stray either.
    let aside = m.path("aside");
    std::fs::rename(part(&dir, 2), &aside).unwrap();
    let r = m.verify(&first, &[]);
    assert!(
        r.took < FAST,
        "sparse stray and a missing part: {}",
        r.show()
    );
    r.refused(3, &["hm.airlock.002: missing", "hm.airlock.999"]);
    std::fs::rename(&aside, part(&dir, 2)).unwrap();
    std::fs::remove_file(&stray).unwrap();
    m.verify(&first, &["--outer-only"]).ok();
}

#[test]
fn more_parts_than_file_descriptors_are_read_one_at_a_time() {
    // About 60 parts of 4096 bytes, read under a limit of 40 open files (S12b).
    let m = Media::new(240_000);
    let dir = m.path("many");
    m.build("many", &["--split", "4096"]);
    let parts = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            let n = e.as_ref().unwrap().file_name();
            n.to_string_lossy().starts_with("hm.airlock.0")
        })
        .count();
    assert!(parts > 55, "{parts} parts");
    let mut c = Command::new("bash");
    c.arg("-c")
        .arg("ulimit -n 40 && exec \"$0\" \"$@\"")
        .arg(unpack_bin())
        .arg("verify")
        .arg(part(&dir, 1))
        .arg("--trust")
        .arg(m.path("keys/airlock.pub"))
        .arg("-q")
        .env_remove("AIRLOCK_TRUST_DIR");
    let r = run_limited(&mut c, Duration::from_secs(60));
    r.ok();
    assert!(
        String::from_utf8_lossy(&r.out.stdout).contains("(verified)"),
        "{}",
        r.show()
    );
}

#[test]
fn symlinks_on_the_media_leak_nothing_and_parts_beside_are_not_followed() {
    let m = Media::new(20_000);
    // S10c: the bundle the user names is a link to a root-only file. Reading it is the
    // user's choice; echoing its bytes into the error (and the report) is not.
    let secret = m.path("shadow-like");
    let mut content =
        b"root:$y$j9T$SECRETSALTSECRETSALT$SECRETHASHSECRETHASHxyz:19700:0:99999:7:::\n".to_vec();
    while content.len() < 2048 {
        content.extend_from_slice(b"user2:SECRETHASHSECRETHASH:19700:0:99999:7:::\n");
    }
    std::fs::write(&secret, &content).unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let leak = m.path("leak.airlock");
    std::os::unix::fs::symlink(&secret, &leak).unwrap();
    let r = m.verify(&leak, &[]);
    r.refused(3, &["malformed bundle"]);
    assert!(
        !r.stderr().contains("SECRET") && !r.stderr().contains("root:$"),
        "the secret's bytes are in the error: {}",
        r.show()
    );
    let report = m.path("report.json");
    let r = m.unpack(
        "load",
        &leak,
        &["--report", report.to_str().unwrap()],
        Duration::from_secs(60),
    );
    r.refused(3, &["malformed bundle"]);
    let written = std::fs::read_to_string(&report).unwrap_or_default();
    assert!(
        !written.contains("SECRET") && !r.stderr().contains("SECRET"),
        "the secret's bytes are in the report: {written}"
    );

    // A part found beside the named one is not followed, even when it holds the right bytes.
    let dir = m.path("split");
    m.build("split", &["--split", "8192"]);
    let first = part(&dir, 1);
    let real2 = m.path("real-002");
    std::fs::rename(part(&dir, 2), &real2).unwrap();
    std::os::unix::fs::symlink(&real2, part(&dir, 2)).unwrap();
    for extra in [&[][..], &["--outer-only"][..]] {
        m.verify(&first, extra)
            .refused(3, &["hm.airlock.002", "symbolic link"]);
    }
    // The same without sums: parts found by name.
    let sums = dir.join("hm.airlock.sums");
    let sig = dir.join("hm.airlock.sums.minisig");
    let (sums_bytes, sig_bytes) = (std::fs::read(&sums).unwrap(), std::fs::read(&sig).unwrap());
    std::fs::remove_file(&sums).unwrap();
    std::fs::remove_file(&sig).unwrap();
    m.verify(&first, &[])
        .refused(3, &["hm.airlock.002", "symbolic link"]);
    std::fs::remove_file(part(&dir, 2)).unwrap();
    std::fs::rename(&real2, part(&dir, 2)).unwrap();
    m.verify(&first, &[]).ok();
    // A sums file beside the parts that is a link is not followed either.
    let elsewhere = m.path("sums-elsewhere");
    std::fs::write(&elsewhere, &sums_bytes).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &sums).unwrap();
    std::fs::write(&sig, &sig_bytes).unwrap();
    m.verify(&first, &[])
        .refused(3, &["hm.airlock.sums", "symbolic link"]);
    // … unless the user names it.
    m.verify(&sums, &[]).ok();
}

#[test]
fn an_unsigned_sums_file_does_not_choose_what_is_read() {
    // S6: the sums' signature is gone and the sums name an older, validly signed bundle;
    // the file the user named is garbage. What is read is the file the user named.
    let m = Media::new(20_000);
    let bundle = m.build("s6", &[]);
    let dir = bundle.parent().unwrap();
    let old = dir.join("old-release.bin");
    std::fs::copy(&bundle, &old).unwrap();
    let digest = airlock_bundle::Digest::of(&std::fs::read(&old).unwrap());
    std::fs::write(&bundle, vec![0x5a; 4096]).unwrap();
    std::fs::remove_file(dir.join("hm.airlock.sums.minisig")).unwrap();
    std::fs::write(
        dir.join("hm.airlock.sums"),
        format!("{}  old-release.bin\n", digest.hex()),
    )
    .unwrap();
    for named in [bundle.clone(), dir.join("hm.airlock.sums")] {
        let r = m.verify(&named, &[]);
        r.refused(
            3,
            &["hm.airlock.sums.minisig is missing", "reading hm.airlock"],
        );
        assert!(!r.stderr().contains("old-release.bin"), "{}", r.show());
    }
    // Named itself, the old bundle is read, and the warning says so.
    std::fs::copy(&old, &bundle).unwrap();
    let r = m.verify(&bundle, &[]);
    r.ok();
    assert!(r.stderr().contains("reading hm.airlock"), "{}", r.show());
}

#[test]
fn untrusted_names_are_printed_escaped() {
    let m = Media::new(2_000);
    let plain = m.build("plain", &[]);
    let dir = plain.parent().unwrap();

    // O24: a file of tar-like garbage whose name and checksum fields hold escapes.
    let mut block = [0u8; 512];
    block[..EVIL.len()].copy_from_slice(EVIL.as_bytes());
    block[148..156].copy_from_slice(b"\x1b[31m\x07\x1b[");
    let o24 = m.path("o24.airlock");
    std::fs::write(&o24, [&block[..], &[0x1b; 2048][..]].concat()).unwrap();
    m.verify(&o24, &[]).refused(3, &["malformed bundle"]);

    // O24c: an entry with a valid checksum, named with escapes, in place of index.json.
    let o24c = rewrite(&plain, |path, data, out| {
        let path = if path == "index.json" { EVIL } else { path };
        tarfmt::write_small(out, path, data).unwrap();
    });
    let o24c_path = m.path("o24c.airlock");
    std::fs::write(&o24c_path, o24c).unwrap();
    m.verify(&o24c_path, &[])
        .refused(3, &["expected index.json", "x\\u{1b}]0;PWNED\\u{7}"]);

    // S5: the sums list a name with escapes twice (found before any signature check).
    let sums = dir.join("hm.airlock.sums");
    let good = std::fs::read(&sums).unwrap();
    let d = "cd".repeat(32);
    std::fs::write(&sums, format!("{d}  {EVIL}\n{d}  {EVIL}\n")).unwrap();
    m.verify(&plain, &[])
        .refused(3, &["hm.airlock.sums line 1"]);
    std::fs::write(&sums, &good).unwrap();

    // A stray named with escapes beside the bundle: named, escaped.
    std::fs::write(dir.join(format!("hm.airlock.{EVIL}")), b"stray").unwrap();
    m.verify(&plain, &["--outer-only"])
        .refused(3, &["hm.airlock.x\\u{1b}]0;PWNED"]);
    std::fs::remove_file(dir.join(format!("hm.airlock.{EVIL}"))).unwrap();

    // T16: a signed file path with escapes is refused, and shown escaped.
    let t16 = m.resign(&plain, airlock_bundle::sign::TRUSTED_COMMENT, |v| {
        v["files"][0]["path"] = Value::from(EVIL)
    });
    let t16_path = m.path("t16.airlock");
    std::fs::write(&t16_path, t16).unwrap();
    for cmd in ["inspect", "verify"] {
        m.unpack(cmd, &t16_path, &[], Duration::from_secs(60))
            .refused(3, &["control", "x\\u{1b}]0;PWNED"]);
    }
    // The same for the bundle name, which inspect prints first.
    let named = m.resign(&plain, airlock_bundle::sign::TRUSTED_COMMENT, |v| {
        v["name"] = Value::from(EVIL)
    });
    let named_path = m.path("named.airlock");
    std::fs::write(&named_path, named).unwrap();
    m.unpack("inspect", &named_path, &[], Duration::from_secs(60))
        .refused(3, &["name", "control"]);
}

#[test]
fn overlapping_targets_are_refused_before_anything_is_written() {
    let m = Media::new(2_000);
    let plain = m.build("plain", &[]);
    let host = m.path("host");
    let header: Value = serde_json::from_slice(&header_of(&plain)).unwrap();
    let digest = header["files"][0]["digest"].clone();
    let file = |target: &str, path: &str| serde_json::json!({"target": {"path": target}, "path": path, "mode": "0644", "digest": digest});
    let h = host.display().to_string();
    let load = |name: &str, files: Vec<Value>| {
        let b = m.resign(&plain, airlock_bundle::sign::TRUSTED_COMMENT, |v| {
            v["files"] = Value::from(files.clone())
        });
        let p = m.path(name);
        std::fs::write(&p, b).unwrap();
        m.unpack("load", &p, &[], Duration::from_secs(60))
    };
    // T13: a file `b`, and a target `…/b` holding another file: one would be written, the
    // other fail (not all or nothing). Refused as a whole.
    let r = load(
        "t13.airlock",
        vec![
            file(&h, "b"),
            file(&format!("{h}/b"), "c"),
            file(&format!("{h}z"), "later"),
        ],
    );
    r.refused(3, &[&format!("{h}/b"), "a file"]);
    assert!(!host.exists() && !m.path("hostz").exists(), "{}", r.show());

    // T14: two records for one host path: last wins, silently. Refused.
    let r = load(
        "t14.airlock",
        vec![file(&h, "b/c"), file(&format!("{h}/b"), "c")],
    );
    r.refused(3, &[&format!("{h}/b/c"), "twice"]);
    assert!(!host.exists(), "{}", r.show());
}

/// The header bytes of a plain bundle.
fn header_of(plain: &Path) -> Vec<u8> {
    let mut archive = tar::Archive::new(std::fs::File::open(plain).unwrap());
    let mut e = archive.entries().unwrap().next().unwrap().unwrap();
    let mut data = Vec::new();
    e.read_to_end(&mut data).unwrap();
    data
}

#[test]
fn the_end_of_the_archive_and_the_trusted_comment_are_checked() {
    let m = Media::new(2_000);
    let plain = m.build("plain", &[]);
    // O18: 512 unsigned bytes in the second end-of-archive block.
    let mut bytes = std::fs::read(&plain).unwrap();
    let n = bytes.len();
    assert!(bytes[n - 1024..].iter().all(|&b| b == 0));
    bytes[n - 512..n - 512 + 22].copy_from_slice(b"unsigned bytes ride on");
    let o18 = m.path("o18.airlock");
    std::fs::write(&o18, &bytes).unwrap();
    m.verify(&o18, &[])
        .refused(3, &["second end-of-archive block is not zero"]);

    // T23: the header signed by the trusted key, but as something else.
    for (comment, shown) in [
        (
            "airlock-bundle sums v1 parts=1 total=1",
            "airlock-bundle sums v1 parts=1 total=1",
        ),
        ("airlock-unpack report v1", "airlock-unpack report v1"),
        ("\u{1b}[2Janything", "\\u{1b}[2Janything"),
    ] {
        let b = m.resign(&plain, comment, |_| {});
        let p = m.path("t23.airlock");
        std::fs::write(&p, b).unwrap();
        m.verify(&p, &[])
            .refused(4, &["not a header signature", shown]);
    }
    // The same bytes with the right comment verify.
    let b = m.resign(&plain, airlock_bundle::sign::TRUSTED_COMMENT, |_| {});
    let p = m.path("resigned.airlock");
    std::fs::write(&p, b).unwrap();
    m.verify(&p, &[]).ok();
}

#[test]
fn sizes_that_wrap_are_refused_or_shown_honestly() {
    let m = Media::new(20_000);
    // T15: a signed header whose entry sizes add up past u64::MAX.
    let plain = m.build("plain", &[]);
    let t15 = m.resign(&plain, airlock_bundle::sign::TRUSTED_COMMENT, |v| {
        let e = v["entries"].as_array_mut().unwrap();
        let last = e.len() - 1;
        e[last]["size"] = Value::from(u64::MAX);
    });
    let p = m.path("t15.airlock");
    std::fs::write(&p, t15).unwrap();
    m.unpack("inspect", &p, &[], Duration::from_secs(60))
        .refused(3, &["sizes", "more than"]);

    // S17: an unverified sums comment whose part size wraps the layout arithmetic.
    let dir = m.path("split");
    m.build("split", &["--split", "8192"]);
    let sums = std::fs::read(dir.join("hm.airlock.sums")).unwrap();
    let n = sums.iter().filter(|&&b| b == b'\n').count();
    let sig = m.key().sign_with(
        &sums,
        &format!(
            "airlock-bundle sums v1 parts={n} part-size={} total=4",
            u64::MAX
        ),
    );
    std::fs::write(dir.join("hm.airlock.sums.minisig"), sig).unwrap();
    for extra in [
        &["--insecure-skip-signature"][..],
        &["--insecure-skip-signature", "--outer-only"][..],
    ] {
        let r = m.verify(&part(&dir, 1), extra);
        r.ok();
        assert!(!r.stderr().contains("panicked"), "{}", r.show());
    }
    // Under a verified signature, the same layout is a malformed sums file.
    m.verify(&part(&dir, 1), &[])
        .refused(3, &["hm.airlock.sums", "layout"]);
    // An honest layout, not verified, with a truncated part: not called "signed".
    let good_sig = m.key().sign_with(&sums, &honest_layout(&dir));
    std::fs::write(dir.join("hm.airlock.sums.minisig"), good_sig).unwrap();
    let p3 = std::fs::read(part(&dir, 3)).unwrap();
    std::fs::write(part(&dir, 3), &p3[..p3.len() - 10]).unwrap();
    let r = m.verify(&part(&dir, 1), &["--insecure-skip-signature"]);
    r.refused(3, &["hm.airlock.003", "unverified"]);
    assert!(!r.stderr().contains("the signed sums say"), "{}", r.show());
    m.verify(&part(&dir, 1), &[])
        .refused(3, &["hm.airlock.003", "the signed sums say"]);
}

/// The trusted comment airlock-pack wrote for the parts in `dir`.
fn honest_layout(dir: &Path) -> String {
    let sizes: Vec<u64> = (1..)
        .map(|n| part(dir, n))
        .take_while(|p| p.exists())
        .map(|p| std::fs::metadata(p).unwrap().len())
        .collect();
    format!(
        "airlock-bundle sums v1 parts={} part-size={} total={}",
        sizes.len(),
        sizes[0],
        sizes.iter().sum::<u64>()
    )
}
