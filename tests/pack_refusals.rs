//! What `airlock-pack build` refuses before it writes anything: a bundle the gap host's
//! header validation would refuse is a problem of the spec, found on the connected side.

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
