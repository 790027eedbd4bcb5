//! `--progress json` end to end: real builds against the testkit registry, real verify,
//! extract and load (into the system Docker engine) inside `unshare -n`, a real push into the
//! testkit registry. Every stderr line must parse as a schema-v1 event; every byte counter
//! must start, end last, and end at its total; phases come in the order the work runs;
//! a failure ends the stream with an `error` event carrying the exit code.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use airlock_tests::*;
use serde_json::Value;

/// Every stderr line of `o`, parsed and checked against the schema.
fn events(o: &Output) -> Vec<Value> {
    let err = String::from_utf8(o.stderr.clone()).expect("stderr is UTF-8");
    assert!(err.is_empty() || err.ends_with('\n'), "{}", text(o));
    let all: Vec<Value> = err
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}\n{}", text(o)));
            check_schema(&v);
            v
        })
        .collect();
    assert!(!all.is_empty(), "no events: {}", text(o));
    all
}

fn check_schema(v: &Value) {
    assert_eq!(v["v"], 1, "{v}");
    assert!(v["t"].as_f64().is_some_and(|t| t >= 0.0), "{v}");
    let str_in = |k: &str, allowed: &[&str]| {
        let s = v[k]
            .as_str()
            .unwrap_or_else(|| panic!("{k} not a string: {v}"));
        assert!(allowed.is_empty() || allowed.contains(&s), "{k}={s}: {v}");
    };
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    let fields: &[&str] = match v["type"].as_str() {
        Some("message") => {
            str_in("level", &["info", "note", "warning"]);
            str_in("text", &[]);
            &["level", "text"]
        }
        Some("bytes") => {
            str_in("state", &["start", "running", "end"]);
            str_in("phase", &[]);
            assert!(v["item"].is_null() || v["item"].is_string(), "{v}");
            for k in ["id", "done", "rate"] {
                assert!(v[k].is_u64(), "{k}: {v}");
            }
            assert!(v["total"].is_u64() || v["total"].is_null(), "{v}");
            assert!(v["elapsed"].as_f64().is_some_and(|e| e >= 0.0), "{v}");
            &[
                "id", "phase", "item", "state", "done", "total", "rate", "elapsed",
            ]
        }
        Some("error") => {
            assert!(v["code"].is_u64(), "{v}");
            str_in("message", &[]);
            &["code", "message"]
        }
        _ => panic!("unknown event type: {v}"),
    };
    let mut want: Vec<&str> = ["v", "t", "type"].iter().chain(fields).copied().collect();
    let mut keys = keys;
    want.sort_unstable();
    keys.sort_unstable();
    assert_eq!(keys, want, "{v}");
}

/// One byte counter's events, in stream order.
#[derive(Debug)]
struct Counter {
    phase: String,
    item: Option<String>,
    states: Vec<String>,
    done: u64,
    total: u64,
    /// Index in the stream of its start and of its end.
    start: usize,
    end: usize,
}

/// The byte counters of a stream, each checked: `start` first, `end` last and only once,
/// `running` in between no faster than the rate limit, time never going back, and the end
/// at the total.
fn counters(all: &[Value]) -> Vec<Counter> {
    counters_every(all, 0.5)
}

/// [`counters`] for a run whose `running` events come at most every `interval` seconds.
fn counters_every(all: &[Value], interval: f64) -> Vec<Counter> {
    let mut by_id: BTreeMap<u64, Counter> = BTreeMap::new();
    let mut last_t: BTreeMap<u64, f64> = BTreeMap::new();
    let mut last_running: BTreeMap<u64, f64> = BTreeMap::new();
    for (i, v) in all.iter().enumerate().filter(|(_, v)| v["type"] == "bytes") {
        let id = v["id"].as_u64().unwrap();
        let state = v["state"].as_str().unwrap().to_string();
        let t = v["t"].as_f64().unwrap();
        assert!(last_t.insert(id, t).is_none_or(|before| before <= t), "{v}");
        if state == "running" {
            if let Some(before) = last_running.insert(id, t) {
                // `t` is read when the line is made, a little after the sample, to the ms.
                assert!(
                    t - before >= interval * 0.9 - 0.001,
                    "two running events within {interval} s: {v}"
                );
            }
        }
        let c = by_id.entry(id).or_insert_with(|| Counter {
            phase: v["phase"].as_str().unwrap().to_string(),
            item: v["item"].as_str().map(str::to_string),
            states: Vec::new(),
            done: 0,
            total: 0,
            start: i,
            end: 0,
        });
        assert_eq!(c.phase, v["phase"], "a counter keeps its phase: {v}");
        assert!(
            c.states.last().is_none_or(|s| s != "end"),
            "event after end: {v}"
        );
        c.states.push(state);
        c.done = v["done"].as_u64().unwrap();
        c.total = v["total"].as_u64().unwrap_or(0);
        c.end = i;
    }
    let counters: Vec<Counter> = by_id.into_values().collect();
    for c in &counters {
        assert_eq!(c.states.first().map(String::as_str), Some("start"), "{c:?}");
        assert_eq!(c.states.last().map(String::as_str), Some("end"), "{c:?}");
        assert_eq!(c.done, c.total, "the last event reaches the total: {c:?}");
    }
    counters
}

/// The counters of `phase` that stand for the whole phase (no item).
fn phase<'a>(cs: &'a [Counter], name: &str) -> &'a Counter {
    let mut found = cs.iter().filter(|c| c.phase == name && c.item.is_none());
    let c = found
        .next()
        .unwrap_or_else(|| panic!("no {name} counter in {cs:?}"));
    assert!(found.next().is_none(), "one {name} counter: {cs:?}");
    assert!(c.total > 0, "{c:?}");
    c
}

fn messages(all: &[Value]) -> Vec<(String, String)> {
    all.iter()
        .filter(|v| v["type"] == "message")
        .map(|v| {
            (
                v["level"].as_str().unwrap().to_string(),
                v["text"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn pack_build_reports_downloads_and_the_write_as_json_lines() {
    let w = World::new();
    w.lock();
    let out = w.path("json.airlock");
    let mut args = w.build_args(&out, false);
    args.extend(["--progress".into(), "json".into()]);
    let o = w.pack(&args);
    assert_ok(&o);
    let all = events(&o);
    let cs = counters(&all);

    let write = phase(&cs, "write");
    let download = phase(&cs, "download");
    let blobs: Vec<&Counter> = cs
        .iter()
        .filter(|c| c.phase == "download" && c.item.is_some())
        .collect();
    assert!(!blobs.is_empty(), "a counter per fetched blob: {cs:?}");
    for b in &blobs {
        let item = b.item.as_deref().unwrap();
        assert!(item.starts_with("sha256:") && item.len() == 71, "{b:?}");
        // Each blob runs inside the download phase.
        assert!(download.start < b.start && b.end < download.end, "{b:?}");
    }
    // The items add up to the phase, the written bytes are the bundle's payload, and
    // the writer, which waits for the downloads, finishes after them.
    assert_eq!(blobs.iter().map(|b| b.total).sum::<u64>(), download.total);
    assert!(
        write.start < download.start && download.end < write.end,
        "{cs:?}"
    );
    assert!(write.total >= download.total, "{cs:?}");

    let said = messages(&all);
    assert!(
        said.iter()
            .any(|(l, t)| l == "info" && t.starts_with("writing ")),
        "{said:?}"
    );
    let fetched = said
        .iter()
        .filter(|(_, t)| t.starts_with("fetched sha256:"))
        .count();
    assert_eq!(fetched, blobs.len(), "{said:?}");
    assert!(!all.iter().any(|v| v["type"] == "error"));
    // The bundle is the one a quiet build writes: it verifies.
    assert_ok(&w.unpack("verify", &out, &[]));

    // The text styles keep their lines, bars off a terminal included (no bar is drawn
    // there, but the messages are not dropped with it).
    let spec = w.spec();
    for style in ["plain", "bars"] {
        let o = w.pack([
            "lock",
            "--update",
            spec.to_str().unwrap(),
            "--progress",
            style,
        ]);
        assert_ok(&o);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.lines().any(|l| l.starts_with("resolving ")),
            "{style}: {err}"
        );
        assert!(!err.contains("{\"v\":"), "{style}: {err}");
    }
}

#[test]
fn verify_extract_load_and_push_report_their_phase_and_a_failure_its_exit_code() {
    let w = World::new();
    w.lock_images(&["linux/amd64"], &[&w.hello, &w.second]);
    let bundle = w.build("json.airlock", false);
    let size = std::fs::metadata(&bundle).unwrap().len();
    let json = ["--progress", "json"];

    let v = w.unpack("verify", &bundle, &json);
    assert_ok(&v);
    assert!(
        String::from_utf8_lossy(&v.stdout).starts_with("OK "),
        "{}",
        text(&v)
    );
    let cs = counters(&events(&v));
    assert_eq!(phase(&cs, "verify").total, size, "{cs:?}");
    // The outer layer alone (the signed sums build writes beside every bundle).
    let outer = w.unpack("verify", &bundle, &["--outer-only", "--progress", "json"]);
    assert_ok(&outer);
    assert_eq!(
        phase(&counters(&events(&outer)), "verify parts").total,
        size
    );

    let dir = w.path("extracted");
    let x = w.unpack(
        "extract",
        &bundle,
        &["--to", dir.to_str().unwrap(), "--progress", "json"],
    );
    assert_ok(&x);
    assert_eq!(phase(&counters(&events(&x)), "extract").total, size);
    assert!(dir.join("index.json").is_file());

    let engine = Engine::System;
    let tags = [w.hello.as_str(), w.second.as_str()];
    let _guard = engine.lock();
    let l = w.unpack_on(engine, "load", &bundle, &json);
    let loaded = std::panic::catch_unwind(|| {
        assert_ok(&l);
        let all = events(&l);
        assert_eq!(phase(&counters(&all), "load").total, size);
        // The no-policy notice is a message of its own, not a raw line.
        let said = messages(&all);
        assert!(
            said.iter()
                .any(|(l, t)| l == "note" && t.contains("no policy file")),
            "{said:?}"
        );
        assert_eq!(engine.run(&w.hello).trim(), w.marker);
    });
    engine.rmi(&tags);
    loaded.unwrap();

    // push is the one networked command: straight to the testkit registry.
    let p = push(&w, &bundle, &json);
    assert_ok(&p);
    assert_eq!(phase(&counters(&events(&p)), "push").total, size);
    run_ok(
        Command::new("skopeo")
            .args(["inspect", "--tls-verify=false"])
            .arg(format!(
                "docker://{}/progress/e2e/hello:v1",
                w.registry.addr
            )),
    );

    // A flipped byte in a layer: the stream still parses, and its last line is the error
    // (exit 3), the digest in its message.
    let bytes = std::fs::read(w.build("plain.airlock", true)).unwrap();
    let layer = std::fs::read(&w.busybox_layer.path).unwrap();
    let at = find(&bytes, &layer[1000..1064]) + 7;
    let bad = write_variant(&w, "flipped.airlock", &flip(&bytes, at));
    let f = w.unpack("verify", &bad, &json);
    assert_eq!(f.status.code(), Some(3), "{}", text(&f));
    let all = events(&f);
    let last = all.last().unwrap();
    assert_eq!(last["type"], "error", "{}", text(&f));
    assert_eq!(last["code"], 3);
    let message = last["message"].as_str().unwrap();
    assert!(message.contains(&w.busybox_layer.digest.hex()), "{message}");
    assert_eq!(all.iter().filter(|v| v["type"] == "error").count(), 1);
    // Whatever was read before the failure: every counter still ends, where it got to.
    assert!(all
        .iter()
        .any(|v| v["type"] == "bytes" && v["phase"] == "verify" && v["state"] == "end"));
}

#[test]
fn a_long_phase_reports_running_counters_no_faster_than_the_interval() {
    let w = World::new();
    w.write_spec(&["linux/amd64"], &[]);
    // 64 MiB of [[files]]: long enough for many 5 ms intervals, anywhere.
    std::fs::write(w.path("big.bin"), vec![7u8; 64 << 20]).unwrap();
    let mut spec = std::fs::read_to_string(w.spec()).unwrap();
    spec.push_str("\n[[files]]\nsource = \"big.bin\"\npath = \"/opt/airlock-progress-test\"\n");
    std::fs::write(w.spec(), spec).unwrap();
    w.lock();
    let out = w.path("big.airlock");
    let mut args = w.build_args(&out, false);
    args.extend(["--progress".into(), "json".into()]);
    let b = Command::new(pack_bin())
        .args(&args)
        .arg("--cache")
        .arg(w.path("cache"))
        .env("AIRLOCK_PROGRESS_INTERVAL_MS", "5")
        .output()
        .unwrap();
    assert_ok(&b);
    let v = w.unpack_env(
        "verify",
        &out,
        &["--progress", "json"],
        &[("AIRLOCK_PROGRESS_INTERVAL_MS", "5")],
    );
    assert_ok(&v);
    for (o, name) in [(&b, "write"), (&v, "verify")] {
        let all = events(o);
        let cs = counters_every(&all, 0.005);
        let c = phase(&cs, name);
        let running = c.states.iter().filter(|s| *s == "running").count();
        assert!(running >= 2, "{name}: {running} running events: {c:?}");
        // Each reports its progress so far, growing.
        let done: Vec<u64> = all
            .iter()
            .filter(|e| e["phase"] == name && e["state"] == "running")
            .map(|e| e["done"].as_u64().unwrap())
            .collect();
        assert!(done.windows(2).all(|w| w[0] < w[1]), "{done:?}");
        assert!(done.iter().all(|d| *d > 0 && *d <= c.total), "{done:?}");
        let rates = all
            .iter()
            .filter(|e| e["phase"] == name && e["state"] == "running")
            .filter_map(|e| e["rate"].as_u64());
        assert!(
            rates.clone().all(|r| r > 0),
            "{:?}",
            rates.collect::<Vec<_>>()
        );
    }
}

/// `airlock-unpack push BUNDLE` into the world's registry under `progress/`.
fn push(w: &World, bundle: &Path, extra: &[&str]) -> Output {
    Command::new(unpack_bin())
        .arg("push")
        .arg(bundle)
        .args([
            "--registry",
            &w.registry.addr,
            "--insecure",
            "--prefix",
            "progress/",
        ])
        .arg("--trust")
        .arg(w.path("pack-keys/airlock.pub"))
        .arg("--identity")
        .arg(w.path("host/host.key"))
        .args(extra)
        .env_remove("AIRLOCK_TRUST_DIR")
        .env_remove("AIRLOCK_POLICY")
        .env_remove("REGISTRY_AUTH_FILE")
        .env("DOCKER_CONFIG", w.path("no-docker-config"))
        .output()
        .unwrap()
}

#[test]
fn quiet_and_a_progress_style_are_one_choice() {
    for (bin, args) in [
        (
            pack_bin(),
            vec!["build", "spec.toml", "-o", "x", "--sign-key", "k"],
        ),
        (unpack_bin(), vec!["verify", "x.airlock"]),
    ] {
        let o = Command::new(bin)
            .args(args)
            .args(["--quiet", "--progress", "json"])
            .output()
            .unwrap();
        assert_refused(&o, 2, &["--progress", "cannot be used with"]);
    }
}
