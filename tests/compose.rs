//! `[[compose]]` end to end, with real parts: a compose file's images interpolated (spec
//! `env` over the `.env` over defaults), pinned by `lock` against the real registry, carried
//! by `build` with the compose file and its `.env`, loaded into the real Docker engine under
//! `unshare -n`, the files placed at `path`, and stderr ending with the exact
//! `docker compose -f … up -d` line. The refusals: a variable without a value, a build-only
//! service, `include:`, an image no registry has, a compose file edited after the lock.

use std::path::PathBuf;
use std::process::{Command, Output};

use airlock_tests::*;
use serde_json::Value;

/// A world whose spec is one `[[compose]]` entry (plus `extra` TOML after it) for `compose`
/// (with `dotenv` beside it when given), its compose file going to `<world>/opt/stack`.
struct Stack {
    w: World,
    target: PathBuf,
}

impl Stack {
    fn new(compose: &str, dotenv: Option<&str>, extra: &str) -> Stack {
        let w = World::new();
        std::fs::create_dir_all(w.path("stack")).unwrap();
        std::fs::write(w.path("stack/docker-compose.yml"), compose).unwrap();
        if let Some(e) = dotenv {
            std::fs::write(w.path("stack/.env"), e).unwrap();
        }
        let target = w.path("opt/stack");
        std::fs::write(
            w.spec(),
            format!(
                "name = \"e2e\"\n\
                 [[compose]]\nfile = \"stack/docker-compose.yml\"\npath = \"{}\"\n{extra}\n\
                 [registries.\"{}\"]\ninsecure = true\n",
                target.display(),
                w.registry.addr
            ),
        )
        .unwrap();
        Stack { w, target }
    }

    fn lock(&self) -> Output {
        self.w.pack(["lock", self.w.spec().to_str().unwrap()])
    }
}

/// `docker compose config` (the plugin), else `docker-compose config` (the Debian
/// package's compose v1), for the placed file: the images it resolves, or `None` when
/// neither is installed (nothing is installed for this check).
fn compose_config_images(file: &std::path::Path) -> Option<Vec<String>> {
    let tools: [&[&str]; 2] = [&["docker", "compose"], &["docker-compose"]];
    let tool = tools.into_iter().find(|t| {
        Command::new(t[0])
            .args(&t[1..])
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
    })?;
    let out = run_ok(
        Command::new(tool[0])
            .args(&tool[1..])
            .arg("-f")
            .arg(file)
            .arg("config"),
    );
    let mut images: Vec<String> = out
        .lines()
        .filter_map(|l| l.trim().strip_prefix("image: "))
        .map(|i| i.trim_matches('"').to_string())
        .collect();
    images.sort();
    images.dedup();
    Some(images)
}

fn lines(b: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(b)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn a_compose_stack_is_pinned_carried_loaded_and_started_with_one_line() {
    let compose = "\
x-base: &base
  restart: unless-stopped
services:
  hello:
    <<: *base
    image: ${REGISTRY}/e2e/hello:${HELLO_TAG:-v1}
  second:
    image: $REGISTRY/e2e/second:${SECOND_TAG}
    build: .                   # has an image too: compose uses it, no build needed
  again:
    extends:
      service: hello
";
    // The spec's env wins over the .env's REGISTRY, as the shell's would for compose.
    let dotenv = "# the stack's own\nSECOND_TAG=v1\nREGISTRY=wrong.invalid:5000\n";
    let s = Stack::new(compose, Some(dotenv), "");
    let addr = s.w.registry.addr.clone();
    // The hello image is also an explicit [[image]]: pinned once.
    let spec = std::fs::read_to_string(s.w.spec()).unwrap().replace(
        "[registries.",
        &format!(
            "[compose.env]\nREGISTRY = \"{addr}\"\n\n[[image]]\nref = \"{}\"\n\n[registries.",
            s.w.hello
        ),
    );
    std::fs::write(s.w.spec(), spec).unwrap();
    let lock = s.lock();
    assert_ok(&lock);
    let lock_text = std::fs::read_to_string(s.w.path("e2e.lock")).unwrap();
    let refs: Vec<&str> = lock_text
        .lines()
        .filter_map(|l| l.strip_prefix("ref = \""))
        .map(|l| l.trim_end_matches('"'))
        .collect();
    assert_eq!(
        refs,
        [s.w.hello.as_str(), s.w.second.as_str()],
        "{lock_text}"
    );

    let bundle = s.w.build("stack.airlock", false);
    let i = s.w.unpack("inspect", &bundle, &["--json"]);
    assert_ok(&i);
    let j: Value = serde_json::from_slice(&i.stdout).unwrap();
    assert_eq!(j["version"], 5);
    let services: Vec<(String, String)> = j["compose"][0]["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["image"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        services,
        [
            ("hello".to_string(), s.w.hello.clone()),
            ("second".to_string(), s.w.second.clone()),
            ("again".to_string(), s.w.hello.clone()),
        ]
    );
    let text_inspect = s.w.unpack("inspect", &bundle, &[]);
    assert_ok(&text_inspect);
    let shown = String::from_utf8_lossy(&text_inspect.stdout);
    assert!(
        shown.contains(&format!(
            "COMPOSE  {}/docker-compose.yml",
            s.target.display()
        )),
        "{shown}"
    );

    let engine = Engine::System;
    let _guard = engine.lock();
    let load = s.w.unpack_on(engine, "load", &bundle, &[]);
    let tags = [s.w.hello.as_str(), s.w.second.as_str()];
    let result = std::panic::catch_unwind(|| {
        assert_ok(&load);
        let placed = s.target.join("docker-compose.yml");
        let err = lines(&load.stderr);
        assert_eq!(
            err.last().map(String::as_str),
            Some(format!("docker compose -f {} up -d", placed.display()).as_str()),
            "{}",
            text(&load)
        );
        assert_eq!(std::fs::read_to_string(&placed).unwrap(), compose);
        let env = std::fs::read_to_string(s.target.join(".env")).unwrap();
        assert!(env.starts_with(dotenv), "{env}");
        assert!(env.ends_with(&format!("\nREGISTRY='{addr}'\n")), "{env}");
        assert_eq!(engine.run(&s.w.hello).trim(), s.w.marker);
        // The gap host's compose resolves the placed file (and its placed .env) to
        // exactly the carried images.
        match compose_config_images(&placed) {
            Some(images) => assert_eq!(images, [s.w.hello.as_str(), s.w.second.as_str()]),
            None => eprintln!("note: no docker compose here; `compose config` not run"),
        }
    });
    engine.rmi(&tags);
    result.unwrap();
}

#[test]
fn unset_variables_build_only_services_and_include_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("stack")).unwrap();
    let cases = [
        (
            "services:\n  web:\n    image: nginx:${WEB_TAG}\n",
            vec!["service web", "variable WEB_TAG is not set"],
        ),
        (
            "services:\n  web:\n    image: nginx:${WEB_TAG:?pin a tag}\n",
            vec!["service web", "required variable WEB_TAG", "pin a tag"],
        ),
        (
            "services:\n  web:\n    image: nginx:1\n  app:\n    build: ./app\n",
            vec!["service app", "has `build:` and no `image:`", "push"],
        ),
        (
            "include:\n  - base.yml\nservices:\n  web:\n    image: nginx:1\n",
            vec!["`include:`"],
        ),
        (
            "services:\n  web:\n    extends:\n      file: base.yml\n      service: web\n",
            vec!["service web", "another file (base.yml)"],
        ),
    ];
    let file = d.join("stack/docker-compose.yml");
    std::fs::write(
        d.join("spec.toml"),
        "name = \"c\"\n[[compose]]\nfile = \"stack/docker-compose.yml\"\npath = \"/opt/c\"\n",
    )
    .unwrap();
    for (compose, needles) in cases {
        std::fs::write(&file, compose).unwrap();
        let o = Command::new(pack_bin())
            .arg("lock")
            .arg(d.join("spec.toml"))
            .arg("--cache")
            .arg(d.join("cache"))
            .output()
            .unwrap();
        let mut all = vec![file.to_str().unwrap()];
        all.extend(needles);
        assert_refused(&o, 2, &all);
        assert!(
            !d.join("spec.lock").exists(),
            "{compose}: a lock was written"
        );
    }
    // The .env and the spec's env fill the variable: then it is the registry's turn (an
    // unroutable one, so the refusal is exit 9 naming the compose file and service).
    std::fs::write(
        &file,
        "services:\n  web:\n    image: ${REG}/nginx:${WEB_TAG}\n",
    )
    .unwrap();
    std::fs::write(d.join("stack/.env"), "WEB_TAG=1\nREG=wrong.invalid\n").unwrap();
    std::fs::write(
        d.join("spec.toml"),
        "name = \"c\"\n[[compose]]\nfile = \"stack/docker-compose.yml\"\npath = \"/opt/c\"\n\
         [compose.env]\nREG = \"127.0.0.1:9\"\n[registries.\"127.0.0.1:9\"]\ninsecure = true\n",
    )
    .unwrap();
    let o = Command::new(pack_bin())
        .arg("lock")
        .arg(d.join("spec.toml"))
        .arg("--cache")
        .arg(d.join("cache"))
        .output()
        .unwrap();
    assert_refused(
        &o,
        9,
        &["127.0.0.1:9/nginx:1", "docker-compose.yml, service web"],
    );
}

#[test]
fn lock_refuses_a_compose_image_the_registry_lacks_and_build_sees_an_edited_file() {
    let s = Stack::new(
        "services:\n  ghost:\n    image: ${R}/e2e/missing:v1\n",
        Some(""),
        "",
    );
    let addr = s.w.registry.addr.clone();
    let spec = std::fs::read_to_string(s.w.spec()).unwrap().replace(
        "[registries.",
        &format!("[compose.env]\nR = \"{addr}\"\n[registries."),
    );
    std::fs::write(s.w.spec(), &spec).unwrap();
    let o = s.lock();
    assert_refused(
        &o,
        9,
        &[
            &format!("{addr}/e2e/missing:v1"),
            "docker-compose.yml, service ghost",
        ],
    );
    // A resolvable stack locks; then an edit of the compose file (a comment is enough: the
    // file travels as it is) is drift at build until the lock is updated.
    let compose = s.w.path("stack/docker-compose.yml");
    std::fs::write(
        &compose,
        "services:\n  hello:\n    image: ${R}/e2e/hello:v1\n",
    )
    .unwrap();
    assert_ok(&s.lock());
    let mut edited = std::fs::read_to_string(&compose).unwrap();
    edited.push_str("# edited after the lock\n");
    std::fs::write(&compose, edited).unwrap();
    let (_, o) = s.w.try_build("edited.airlock", true);
    assert_refused(&o, 8, &["[[compose]]", "lock --update"]);
    // A bumped image (the usual edit): a plain `lock` pins it and takes the file as it is
    // now, so the build goes through without --update.
    std::fs::write(
        &compose,
        "services:\n  hello:\n    image: ${R}/e2e/second:v1\n",
    )
    .unwrap();
    let o = s.lock();
    assert_ok(&o);
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(
        said.contains("e2e/second:v1: pinned") && said.contains("[[files]]: pinned"),
        "{said}"
    );
    let bundle = s.w.build("bumped.airlock", true);
    let i = s.w.unpack("inspect", &bundle, &["--json"]);
    assert_ok(&i);
    let j: Value = serde_json::from_slice(&i.stdout).unwrap();
    assert_eq!(j["compose"][0]["services"][0]["image"], s.w.second.as_str());
}

/// A locked stack of the hello image, `R` (its registry) set in the spec's env; its bundle.
fn hello_stack(name: &str) -> (Stack, PathBuf) {
    let s = Stack::new(
        "services:\n  hello:\n    image: ${R}/e2e/hello:v1\n",
        None,
        "",
    );
    let addr = s.w.registry.addr.clone();
    let spec = std::fs::read_to_string(s.w.spec()).unwrap().replace(
        "[registries.",
        &format!("[compose.env]\nR = \"{addr}\"\n[registries."),
    );
    std::fs::write(s.w.spec(), &spec).unwrap();
    assert_ok(&s.lock());
    let bundle = s.w.build(name, false);
    (s, bundle)
}

/// With `--containerd` the line is nerdctl's, in the namespace the images went to.
#[test]
fn with_containerd_the_line_is_nerdctl_compose_in_its_namespace() {
    let (s, bundle) = hello_stack("ctd.airlock");
    let c = airlock_testkit::containerd::TestContainerd::start();
    let o = s.w.unpack(
        "load",
        &bundle,
        &[
            "--containerd",
            c.socket.to_str().unwrap(),
            "--namespace",
            "k8s.io",
            "--snapshotter",
            &c.snapshotter,
            "--json",
        ],
    );
    assert_ok(&o);
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    let placed = s.target.join("docker-compose.yml");
    assert_eq!(
        report["compose"],
        serde_json::json!([format!(
            "nerdctl --namespace k8s.io compose -f {} up -d",
            placed.display()
        )]),
        "{report}"
    );
}

/// On Podman the line is `podman compose …`, and `load --json` reports it as `compose`.
#[test]
fn on_podman_the_load_names_podman_compose() {
    let (s, bundle) = hello_stack("podman.airlock");
    let addr = s.w.registry.addr.clone();
    let p = airlock_testkit::podman::Podman::start();
    let o = s.w.unpack_env(
        "load",
        &bundle,
        &["--json"],
        &[("DOCKER_HOST", &p.docker_host())],
    );
    assert_ok(&o);
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    let placed = s.target.join("docker-compose.yml");
    assert_eq!(
        report["compose"],
        serde_json::json!([format!("podman compose -f {} up -d", placed.display())]),
        "{report}"
    );
    // No source .env and no spec env beyond R: the .env carries R alone.
    assert_eq!(
        std::fs::read_to_string(s.target.join(".env")).unwrap(),
        format!(
            "# Added by airlock-pack from the spec's [compose.env]; they win over the lines above.\nR='{addr}'\n"
        )
    );
}
