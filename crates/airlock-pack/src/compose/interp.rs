//! Compose's variable interpolation (`$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`,
//! `${VAR:?message}`, `${VAR?message}`, `${VAR:+other}`, `${VAR+other}`, `$$` for a literal
//! `$`, defaults that interpolate in turn) and the `.env` file format it reads variables
//! from. Stricter than compose in one place, on purpose: a variable that is unset and has no
//! default is an error, not an empty string, because an image reference with a blank tag or
//! name is never what the author meant.

use std::collections::BTreeMap;

/// How deep `${A:-${B:-${C}}}` may nest.
const MAX_NESTING: usize = 8;

/// Why a string could not be interpolated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterpError {
    /// `$VAR` or `${VAR}` with `VAR` unset and no default.
    Unset { var: String },
    /// `${VAR:?message}` (unset or empty) or `${VAR?message}` (unset).
    Required { var: String, message: String },
    /// Not compose's syntax (a lone `$`, an unclosed `${`, a bad name).
    Invalid { why: String },
}

impl std::fmt::Display for InterpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InterpError::Unset { var } => write!(
                f,
                "variable {var} is not set and has no default: set it in the spec's \
                 [compose.env], in the .env beside the compose file, or write ${{{var}:-default}}"
            ),
            InterpError::Required { var, message } if message.is_empty() => {
                write!(f, "required variable {var} is missing a value")
            }
            InterpError::Required { var, message } => {
                write!(f, "required variable {var} is missing a value: {message}")
            }
            InterpError::Invalid { why } => write!(f, "invalid interpolation: {why}"),
        }
    }
}

/// `s` with every variable replaced by what `vars` gives.
pub fn interpolate(s: &str, vars: &dyn Fn(&str) -> Option<String>) -> Result<String, InterpError> {
    expand(s, vars, 0, true)
}

/// `strict`: an unset variable without a default is an error (else it is empty, as compose
/// reads a `.env`).
fn expand(
    s: &str,
    vars: &dyn Fn(&str) -> Option<String>,
    depth: usize,
    strict: bool,
) -> Result<String, InterpError> {
    if depth > MAX_NESTING {
        return Err(InterpError::Invalid {
            why: format!("defaults nest deeper than {MAX_NESTING} levels"),
        });
    }
    let invalid = |why: String| InterpError::Invalid { why };
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = after.strip_prefix('{') {
            let end =
                closing_brace(r).ok_or_else(|| invalid(format!("unclosed \"${{\" in {s:?}")))?;
            out.push_str(&braced(&r[..end], vars, depth, strict)?);
            rest = &r[end + 1..];
        } else {
            let len = name_len(after);
            if len == 0 {
                return Err(invalid(format!(
                    "\"$\" must start a variable or be written \"$$\" in {s:?}"
                )));
            }
            let var = &after[..len];
            out.push_str(&lookup(var, vars, strict)?);
            rest = &after[len..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn lookup(
    var: &str,
    vars: &dyn Fn(&str) -> Option<String>,
    strict: bool,
) -> Result<String, InterpError> {
    match vars(var) {
        Some(v) => Ok(v),
        None if strict => Err(InterpError::Unset { var: var.into() }),
        None => Ok(String::new()),
    }
}

/// The inside of `${...}`: a name, then nothing or an operator and its word.
fn braced(
    inner: &str,
    vars: &dyn Fn(&str) -> Option<String>,
    depth: usize,
    strict: bool,
) -> Result<String, InterpError> {
    let len = name_len(inner);
    let (var, op) = inner.split_at(len);
    if var.is_empty() {
        return Err(InterpError::Invalid {
            why: format!("\"${{{inner}}}\" does not start with a variable name"),
        });
    }
    if op.is_empty() {
        return lookup(var, vars, strict);
    }
    let value = vars(var);
    let set = value.is_some();
    let nonempty = value.as_deref().is_some_and(|v| !v.is_empty());
    let word = |w: &str| expand(w, vars, depth + 1, strict);
    for (prefix, colon) in [(":-", true), ("-", false)] {
        if let Some(w) = op.strip_prefix(prefix) {
            let use_value = if colon { nonempty } else { set };
            return if use_value {
                Ok(value.unwrap_or_default())
            } else {
                word(w)
            };
        }
    }
    for (prefix, colon) in [(":?", true), ("?", false)] {
        if let Some(w) = op.strip_prefix(prefix) {
            let ok = if colon { nonempty } else { set };
            return match value {
                Some(v) if ok => Ok(v),
                _ => Err(InterpError::Required {
                    var: var.into(),
                    message: word(w)?,
                }),
            };
        }
    }
    for (prefix, colon) in [(":+", true), ("+", false)] {
        if let Some(w) = op.strip_prefix(prefix) {
            let replace = if colon { nonempty } else { set };
            return if replace { word(w) } else { Ok(String::new()) };
        }
    }
    Err(InterpError::Invalid {
        why: format!("\"${{{inner}}}\": unknown operator after {var}"),
    })
}

/// The index of the `}` closing a `${` whose inside starts `s`, skipping nested `${…}` and
/// `$$`.
fn closing_brace(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let (mut i, mut depth) = (0, 0usize);
    while i < b.len() {
        match b[i] {
            b'$' if b.get(i + 1) == Some(&b'$') => i += 1,
            b'$' if b.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

/// Length of the variable name `s` starts with (`[A-Za-z_][A-Za-z0-9_]*`), 0 for none.
fn name_len(s: &str) -> usize {
    let b = s.as_bytes();
    match b.first() {
        Some(c) if c.is_ascii_alphabetic() || *c == b'_' => b
            .iter()
            .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
            .unwrap_or(b.len()),
        _ => 0,
    }
}

/// Why a `.env` line could not be read: its 1-based number and the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DotenvError {
    pub line: usize,
    pub why: String,
}

/// The variables of a `.env` file, as compose reads one: `KEY=VALUE` lines (an `export `
/// before the key is allowed), blank lines and `#` comments skipped; a value in single quotes
/// is literal; one in double quotes knows `\n`, `\t`, `\\`, `\"` and `\$` and is
/// interpolated; a bare one ends at ` #` (a comment), is trimmed and interpolated.
/// Interpolation sees the variables defined above, then `outer`; unset ones are empty there,
/// as in compose. A later line for the same key wins. Values spanning lines are refused.
pub fn parse_dotenv(
    text: &str,
    outer: &dyn Fn(&str) -> Option<String>,
) -> Result<BTreeMap<String, String>, DotenvError> {
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let fail = |why: String| DotenvError { line: i + 1, why };
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line
            .strip_prefix("export ")
            .map(str::trim_start)
            .unwrap_or(line);
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| fail("expected KEY=VALUE".into()))?;
        let key = key.trim_end();
        if !airlock_bundle::spec::is_variable_name(key) {
            return Err(fail(format!("{key:?} is not a variable name")));
        }
        let value = value.trim_start();
        let seen = |v: &str| vars.get(v).cloned().or_else(|| outer(v));
        let value = if let Some(q) = value.strip_prefix('\'') {
            let end = q.find('\'').ok_or_else(|| {
                fail("unclosed ' (values spanning lines are not supported)".into())
            })?;
            q[..end].to_string()
        } else if let Some(q) = value.strip_prefix('"') {
            let body = double_quoted(q).map_err(fail)?;
            expand(&body, &seen, 0, false).map_err(|e| fail(e.to_string()))?
        } else {
            let bare = match value.find(" #") {
                Some(c) => &value[..c],
                None => value,
            };
            expand(bare.trim_end(), &seen, 0, false).map_err(|e| fail(e.to_string()))?
        };
        vars.insert(key.to_string(), value);
    }
    Ok(vars)
}

/// The content of a double-quoted value up to its closing quote, escapes resolved (`\$`
/// stays `$$`, so that interpolation leaves a literal `$`).
fn double_quoted(q: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = q.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Ok(out),
            '\\' => match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('$') => out.push_str("$$"),
                Some(c @ ('\\' | '"')) => out.push(c),
                Some(c) => {
                    out.push('\\');
                    out.push(c);
                }
                None => break,
            },
            c => out.push(c),
        }
    }
    Err("unclosed \" (values spanning lines are not supported)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn every_form_of_compose_interpolation() {
        let vars = with(&[("TAG", "1.2"), ("EMPTY", ""), ("REPO", "ollama/ollama")]);
        let cases = [
            ("nginx:$TAG", "nginx:1.2"),
            ("nginx:${TAG}", "nginx:1.2"),
            ("$REPO:${TAG}-slim", "ollama/ollama:1.2-slim"),
            ("x:${MISSING:-latest}", "x:latest"),
            ("x:${EMPTY:-latest}", "x:latest"),
            ("x:${EMPTY-latest}", "x:"),
            ("x:${MISSING-latest}", "x:latest"),
            ("x:${TAG:-latest}", "x:1.2"),
            ("x:${MISSING:-${TAG}}", "x:1.2"),
            ("x:${MISSING:-${ALSO:-v${TAG}}}", "x:v1.2"),
            ("x${TAG:+-tagged}", "x-tagged"),
            ("x${EMPTY:+-tagged}", "x"),
            ("x${EMPTY+-set}", "x-set"),
            ("x${MISSING+-set}", "x"),
            ("cost $$5 ${TAG}", "cost $5 1.2"),
            ("${TAG:?must be set}", "1.2"),
            ("no variables", "no variables"),
            ("x:${MISSING:-a}}", "x:a}"),
        ];
        for (input, want) in cases {
            assert_eq!(interpolate(input, &vars).as_deref(), Ok(want), "{input}");
        }
    }

    #[test]
    fn unset_required_and_invalid_are_errors() {
        let vars = with(&[("EMPTY", "")]);
        let unset = |v: &str| InterpError::Unset { var: v.into() };
        assert_eq!(interpolate("x:$TAG", &vars), Err(unset("TAG")));
        assert_eq!(interpolate("x:${TAG}", &vars), Err(unset("TAG")));
        // A default that names an unset variable is as unset.
        assert_eq!(interpolate("x:${A:-$B}", &vars), Err(unset("B")));
        assert_eq!(
            interpolate("${EMPTY:?give a tag}", &vars),
            Err(InterpError::Required {
                var: "EMPTY".into(),
                message: "give a tag".into()
            })
        );
        assert_eq!(interpolate("${EMPTY?give a tag}", &vars).as_deref(), Ok(""));
        assert!(matches!(
            interpolate("${MISSING?}", &vars),
            Err(InterpError::Required { .. })
        ));
        for bad in [
            "a$",
            "a$-b",
            "${",
            "${A",
            "${}",
            "${1A}",
            "${A!b}",
            "${A:-${B}",
        ] {
            assert!(
                matches!(interpolate(bad, &vars), Err(InterpError::Invalid { .. })),
                "{bad}: {:?}",
                interpolate(bad, &vars)
            );
        }
        let deep = format!("{}x{}", "${A:-".repeat(20), "}".repeat(20));
        assert!(matches!(
            interpolate(&deep, &vars),
            Err(InterpError::Invalid { .. })
        ));
        let msg = unset("TAG").to_string();
        assert!(
            msg.contains("TAG") && msg.contains("[compose.env]"),
            "{msg}"
        );
    }

    /// Every mix of the syntax's pieces: no panic, and text without `$` comes back as it is.
    #[test]
    fn arbitrary_text_never_panics_and_dollar_free_text_is_unchanged() {
        let pieces = [
            "$", "{", "}", ":-", "-", ":?", "?", ":+", "+", "A", "_b", "1", "$$", " ", "é", "'",
            "\"", "#", "\\",
        ];
        let vars = with(&[("A", "x"), ("E", "")]);
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) as usize
        };
        for _ in 0..20_000 {
            let len = next() % 12;
            let s: String = (0..len).map(|_| pieces[next() % pieces.len()]).collect();
            let got = interpolate(&s, &vars);
            if !s.contains('$') {
                assert_eq!(got.as_deref(), Ok(s.as_str()));
            }
            let _ = parse_dotenv(&format!("K={s}\nL=\"{s}\"\nM='{s}'\n"), &vars);
        }
    }

    #[test]
    fn dotenv_lines_quotes_comments_and_order() {
        let text = "# a comment\n\nTAG=1.2\nexport REPO = ollama/ollama # trailing\n\
                    SINGLE='lit $TAG # kept'\nDOUBLE=\"v${TAG}\\n\\$x\"\nREF=${TAG}-b\n\
                    TAG=1.3\nUNSET_REF=${NOPE}\n";
        let outer = with(&[("OUTER", "o")]);
        let got = parse_dotenv(text, &outer).unwrap();
        assert_eq!(got["TAG"], "1.3");
        assert_eq!(got["REPO"], "ollama/ollama");
        assert_eq!(got["SINGLE"], "lit $TAG # kept");
        assert_eq!(got["DOUBLE"], "v1.2\n$x");
        assert_eq!(got["REF"], "1.2-b");
        assert_eq!(got["UNSET_REF"], "");
        assert_eq!(parse_dotenv("A=$OUTER", &outer).unwrap()["A"], "o");
        for (bad, line) in [
            ("A=1\nnot a pair\n", 2),
            ("1A=x", 1),
            ("A='open", 1),
            ("A=\"open", 1),
            ("A=a$", 1),
        ] {
            let e = parse_dotenv(bad, &outer).unwrap_err();
            assert_eq!(e.line, line, "{bad}: {e:?}");
        }
    }
}
