//! `WWW-Authenticate` challenges from a registry (`airlock-pack` pulling, `airlock-unpack
//! push`): a Bearer challenge that parses, written back with every value quoted and
//! escaped, parses to the same challenge.

use airlock_registry_auth::{parse_challenge, Challenge};

pub fn check(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    match parse_challenge(s) {
        None => {}
        Some(Challenge::Basic) => {
            assert_eq!(parse_challenge("Basic"), Some(Challenge::Basic));
        }
        Some(c @ Challenge::Bearer { .. }) => {
            let text = write(&c);
            assert_eq!(parse_challenge(&text), Some(c), "written as {text:?}");
        }
    }
}

fn quote(v: &str) -> String {
    let mut out = String::from("\"");
    for ch in v.chars() {
        if ch == '"' || ch == '\\' {
            out.push('\\');
        }
        out.push(ch);
    }
    out.push('"');
    out
}

fn write(c: &Challenge) -> String {
    let Challenge::Bearer {
        realm,
        service,
        scope,
    } = c
    else {
        unreachable!()
    };
    let mut s = format!("Bearer realm={}", quote(realm));
    if let Some(v) = service {
        s.push_str(&format!(",service={}", quote(v)));
    }
    if let Some(v) = scope {
        s.push_str(&format!(",scope={}", quote(v)));
    }
    s
}
