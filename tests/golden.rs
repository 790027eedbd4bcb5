//! Golden CLI output: every `--help` of both binaries, `--version`, `inspect` of the format
//! vectors (text and `--json`), and the message and exit code of each refusal that can be
//! made offline from the committed bundles. The cases and their expected output are in
//! `tests/golden/` (one `.toml` per command line, `.stdout` / `.stderr` beside it); refresh
//! them with `TRYCMD=overwrite cargo test -p airlock-tests --test golden` and read the diff.

#[test]
fn cli_output_is_unchanged() {
    let bins = airlock_tests::bin_dir();
    trycmd::TestCases::new()
        .register_bin("airlock-pack", bins.join("airlock-pack"))
        .register_bin("airlock-unpack", bins.join("airlock-unpack"))
        .case("golden/*.toml");
}
