//! What `airlock-pack build` refuses before it writes anything: a bundle the gap host's
//! header validation would refuse is a problem of the spec, found on the connected side.
//! And what `airlock-pack` refuses to write through: a link at one of its temp names.

use std::process::Command;

use airlock_tests::{assert_refused, pack_bin};

/// Two `[[files]]` records that claim the same file on the host: the header validation of
/// the gap host refuses such a bundle, so pack must not produce it.
#[test]
fn files_claiming_one_host_place_are_refused_at_build() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("conf")).unwrap();
    std::fs::write(d.join("conf/prometheus.yml"), "a\n").unwrap();
    std::fs::write(d.join("prometheus.yml"), "b\n").unwrap();
    let host = d.join("host-etc");
    std::fs::write(
        d.join("spec.toml"),
        format!(
            "name = \"clash\"\n\
             [[files]]\nsource = \"conf\"\npath = \"{0}\"\n\
             [[files]]\nsource = \"prometheus.yml\"\npath = \"{0}\"\n",
            host.display()
        ),
    )
    .unwrap();
    let ok = |c: &mut Command| {
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", airlock_tests::text(&o));
    };
    ok(Command::new(pack_bin())
        .args(["keygen", "-o"])
        .arg(d.join("keys")));
    ok(Command::new(pack_bin())
        .arg("lock")
        .arg(d.join("spec.toml"))
        .arg("-q"));
    let out = d.join("clash.airlock");
    let o = Command::new(pack_bin())
        .arg("build")
        .arg(d.join("spec.toml"))
        .arg("-o")
        .arg(&out)
        .arg("--sign-key")
        .arg(d.join("keys/airlock.key"))
        .arg("-q")
        .output()
        .unwrap();
    assert_refused(
        &o,
        2,
        &["spec.toml", "gap host would refuse", "prometheus.yml"],
    );
    assert!(!out.exists(), "a refused build wrote {}", out.display());
}

/// A directory with `spec.toml` carrying `conf/` (one file, `app.yml`) to `host-etc/`.
fn files_spec() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("conf")).unwrap();
    std::fs::write(d.join("conf/app.yml"), "v: 1\n").unwrap();
    std::fs::write(
        d.join("spec.toml"),
        format!(
            "name = \"conf\"\n[[files]]\nsource = \"conf\"\npath = \"{}\"\n",
            d.join("host-etc").display()
        ),
    )
    .unwrap();
    dir
}

/// A carried file that changed after `lock` is drift, as a moved tag is: the build refuses
/// until `lock --update` pins the new content under a later time. (Before, the rebuild kept
/// the lock's time, and the gap host's anti-rollback refused "same name and time, other
/// content".)
#[test]
fn a_changed_carried_file_needs_a_lock_update_and_a_later_time() {
    let dir = files_spec();
    let d = dir.path();
    let run = |args: &[&str]| {
        Command::new(pack_bin())
            .current_dir(d)
            .args(args)
            .output()
            .unwrap()
    };
    let ok = |args: &[&str]| {
        let o = run(args);
        assert!(o.status.success(), "{args:?}: {}", airlock_tests::text(&o));
    };
    let created = || -> String {
        let lock = std::fs::read_to_string(d.join("spec.lock")).unwrap();
        assert!(lock.contains("files = \"sha256:"), "{lock}");
        let line = lock.lines().find(|l| l.starts_with("created")).unwrap();
        line.to_string()
    };
    let build = |out: &str| {
        run(&[
            "build",
            "spec.toml",
            "-o",
            out,
            "--sign-key",
            "keys/airlock.key",
            "-q",
        ])
    };
    ok(&["keygen", "-o", "keys"]);
    ok(&["lock", "spec.toml", "-q"]);
    let first = created();
    let o = build("one.airlock");
    assert!(o.status.success(), "{}", airlock_tests::text(&o));

    std::fs::write(d.join("conf/app.yml"), "v: 2\n").unwrap();
    // A plain `lock` keeps what it pinned; the build then names the drift.
    ok(&["lock", "spec.toml", "-q"]);
    assert_eq!(created(), first);
    let o = build("two.airlock");
    assert_refused(&o, 8, &["[[files]]", "lock --update", "spec.toml"]);
    assert!(!d.join("two.airlock").exists());

    ok(&["lock", "--update", "spec.toml", "-q"]);
    let second = created();
    assert!(second > first, "{second} is not after {first}");
    let o = build("two.airlock");
    assert!(o.status.success(), "{}", airlock_tests::text(&o));
    // A mode change is a change too.
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(
        d.join("conf/app.yml"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    assert_refused(&build("three.airlock"), 8, &["[[files]]"]);
}

/// `lock` writes the lock through a temp file beside the spec: a link planted at that name
/// (here to another file in the directory) is replaced, never written through.
#[test]
fn a_link_at_the_lock_temp_name_is_not_written_through() {
    let dir = files_spec();
    let d = dir.path();
    let victim = d.join("victim");
    std::fs::write(&victim, "keep me").unwrap();
    std::os::unix::fs::symlink(&victim, d.join("spec.lock.tmp")).unwrap();
    let o = Command::new(pack_bin())
        .current_dir(d)
        .args(["lock", "spec.toml", "-q"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", airlock_tests::text(&o));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
    assert!(std::fs::symlink_metadata(d.join("spec.lock.tmp")).is_err());
    let lock = std::fs::symlink_metadata(d.join("spec.lock")).unwrap();
    assert!(lock.file_type().is_file());
    assert!(std::fs::read_to_string(d.join("spec.lock"))
        .unwrap()
        .contains("files = \"sha256:"));
}
