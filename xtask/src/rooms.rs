//! `cargo xtask rooms`: the structure limits every crate keeps, measured from the source
//! (parsed with `syn`, so strings and comments cannot fool the counts):
//! - no file over [`MAX_FILE_LINES`] lines of non-test code (everything but items marked
//!   `#[cfg(test)]`);
//! - no function over [`MAX_FN_LINES`] lines unless a `// long: why` comment sits in the
//!   lines just above it;
//! - no module cycle: no two files of one crate that reach each other through their
//!   `use`s and paths. A folder module reaching into its own children (`mod.rs`
//!   re-exporting them) is containment, not an arrow; a child using its parent's items is.
//!
//! It prints every file, function and cycle over the limits and fails if there is one;
//! `--all` also lists the largest files and functions within them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use syn::spanned::Spanned as _;
use syn::visit::Visit;

/// Lines of non-test code a file may have.
pub const MAX_FILE_LINES: usize = 600;
/// Lines a function may have (from `fn` to its closing brace) without a written reason.
pub const MAX_FN_LINES: usize = 150;
/// The marker of a written reason, looked for in the lines just above a long function.
const LONG_MARK: &str = "// long:";

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let all = args.iter().any(|a| a == "--all");
    let root = crate::util::root();
    let mut found = Vec::new();
    let mut sizes = Vec::new();
    let mut fns = Vec::new();
    for krate in crate_roots(&root)? {
        let files = modules(&krate)?;
        let mut parsed = BTreeMap::new();
        for (module, path) in &files {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let ast =
                syn::parse_file(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            let shown = path
                .strip_prefix(&root)
                .unwrap_or(path)
                .display()
                .to_string();
            let lines = text.lines().count() - test_lines(&ast);
            sizes.push((lines, shown.clone()));
            if lines > MAX_FILE_LINES {
                found.push(format!(
                    "{shown}: {lines} lines of non-test code (limit {MAX_FILE_LINES})"
                ));
            }
            let src: Vec<&str> = text.lines().collect();
            for (name, start, len) in functions(&ast) {
                fns.push((len, format!("{shown}:{start} {name}")));
                let reasoned = src[start.saturating_sub(4)..start.saturating_sub(1)]
                    .iter()
                    .any(|l| l.trim_start().starts_with(LONG_MARK));
                if len > MAX_FN_LINES && !reasoned {
                    found.push(format!(
                        "{shown}:{start}: fn {name} is {len} lines (limit {MAX_FN_LINES}; or say why in a `{LONG_MARK}` comment above it)"
                    ));
                }
            }
            parsed.insert(module.clone(), (shown, ast));
        }
        for cycle in cycles(&parsed) {
            found.push(format!(
                "module cycle: these files reach each other through their imports: {}",
                cycle.join(", ")
            ));
        }
    }
    if all {
        sizes.sort_by(|a, b| b.cmp(a));
        fns.sort_by(|a, b| b.cmp(a));
        println!("largest files (non-test lines):");
        for (n, f) in sizes.iter().take(15) {
            println!("  {n:5}  {f}");
        }
        println!("longest functions (lines):");
        for (n, f) in fns.iter().take(15) {
            println!("  {n:5}  {f}");
        }
    }
    if found.is_empty() {
        println!(
            "rooms: ok ({} files, {} functions; none over {MAX_FILE_LINES} non-test lines or {MAX_FN_LINES}-line functions without a reason, no module cycle)",
            sizes.len(),
            fns.len()
        );
        return Ok(());
    }
    for f in &found {
        eprintln!("{f}");
    }
    bail!("{} structure problem(s)", found.len())
}

/// Every library or binary source tree of the workspace, as its `src` folder; `bin/` files
/// are thin and left out.
fn crate_roots(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = vec![root.join("xtask/src"), root.join("fuzz/src")];
    for entry in std::fs::read_dir(root.join("crates"))? {
        let src = entry?.path().join("src");
        if src.is_dir() {
            out.push(src);
        }
    }
    out.sort();
    Ok(out)
}

/// A module path (`["restore", "sink"]`; the crate root is `[]`) for every file of a crate.
fn modules(src: &Path) -> anyhow::Result<BTreeMap<Vec<String>, PathBuf>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let rel = path.strip_prefix(src)?;
            if rel.starts_with("bin") {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let mut parts: Vec<String> = rel
                .with_extension("")
                .iter()
                .map(|c| c.to_string_lossy().into_owned())
                .collect();
            if matches!(
                parts.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                parts.pop();
            }
            out.insert(parts, path);
        }
    }
    Ok(out)
}

fn is_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.parse_args::<syn::Meta>()
                .is_ok_and(|m| m.path().is_ident("test"))
    })
}

/// Lines taken by `#[cfg(test)]` items at the top level of a file.
fn test_lines(ast: &syn::File) -> usize {
    ast.items
        .iter()
        .filter(|i| match i {
            syn::Item::Mod(m) => is_test(&m.attrs),
            syn::Item::Fn(f) => is_test(&f.attrs),
            syn::Item::Impl(i) => is_test(&i.attrs),
            syn::Item::Use(u) => is_test(&u.attrs),
            _ => false,
        })
        .map(|i| {
            let s = i.span();
            s.end().line - s.start().line + 1
        })
        .sum()
}

/// Every function with a body outside test code: name, first line, length in lines (from
/// `fn` to the closing brace; doc comments and attributes not counted).
fn functions(ast: &syn::File) -> Vec<(String, usize, usize)> {
    #[derive(Default)]
    struct Fns(Vec<(String, usize, usize)>);
    impl Fns {
        fn add(&mut self, name: &syn::Ident, sig: &syn::Signature, body: &syn::Block) {
            let start = sig.fn_token.span.start().line;
            let end = body.brace_token.span.close().end().line;
            self.0.push((name.to_string(), start, end - start + 1));
        }
    }
    impl<'a> Visit<'a> for Fns {
        fn visit_item_mod(&mut self, m: &'a syn::ItemMod) {
            if !is_test(&m.attrs) {
                syn::visit::visit_item_mod(self, m);
            }
        }
        fn visit_item_fn(&mut self, f: &'a syn::ItemFn) {
            if !is_test(&f.attrs) {
                self.add(&f.sig.ident, &f.sig, &f.block);
                syn::visit::visit_item_fn(self, f);
            }
        }
        fn visit_impl_item_fn(&mut self, f: &'a syn::ImplItemFn) {
            if !is_test(&f.attrs) {
                self.add(&f.sig.ident, &f.sig, &f.block);
                syn::visit::visit_impl_item_fn(self, f);
            }
        }
        fn visit_trait_item_fn(&mut self, f: &'a syn::TraitItemFn) {
            if let Some(body) = &f.default {
                self.add(&f.sig.ident, &f.sig, body);
            }
            syn::visit::visit_trait_item_fn(self, f);
        }
    }
    let mut v = Fns::default();
    v.visit_file(ast);
    v.0
}

/// Every path a file names, as written (`crate::a::B`, `super::x`, `sink::Sink`), from its
/// `use` items and from paths in its non-test code.
fn named_paths(ast: &syn::File) -> Vec<Vec<String>> {
    #[derive(Default)]
    struct Paths(Vec<Vec<String>>);
    fn flatten(prefix: &mut Vec<String>, tree: &syn::UseTree, out: &mut Vec<Vec<String>>) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                flatten(prefix, &p.tree, out);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                let mut p = prefix.clone();
                if n.ident != "self" {
                    p.push(n.ident.to_string());
                }
                out.push(p);
            }
            syn::UseTree::Rename(r) => {
                let mut p = prefix.clone();
                p.push(r.ident.to_string());
                out.push(p);
            }
            syn::UseTree::Glob(_) => out.push(prefix.clone()),
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    flatten(prefix, t, out);
                }
            }
        }
    }
    impl<'a> Visit<'a> for Paths {
        fn visit_item_mod(&mut self, m: &'a syn::ItemMod) {
            if !is_test(&m.attrs) {
                syn::visit::visit_item_mod(self, m);
            }
        }
        fn visit_item_fn(&mut self, f: &'a syn::ItemFn) {
            if !is_test(&f.attrs) {
                syn::visit::visit_item_fn(self, f);
            }
        }
        fn visit_item_use(&mut self, u: &'a syn::ItemUse) {
            if !is_test(&u.attrs) {
                flatten(&mut Vec::new(), &u.tree, &mut self.0);
            }
        }
        fn visit_path(&mut self, p: &'a syn::Path) {
            self.0
                .push(p.segments.iter().map(|s| s.ident.to_string()).collect());
            syn::visit::visit_path(self, p);
        }
    }
    let mut v = Paths::default();
    v.visit_file(ast);
    v.0
}

/// The file a path written in module `from` lands in, if it is one of this crate's.
fn resolve(
    from: &[String],
    path: &[String],
    files: &BTreeMap<Vec<String>, (String, syn::File)>,
) -> Option<Vec<String>> {
    let (mut base, rest): (Vec<String>, &[String]) = match path.first().map(String::as_str) {
        Some("crate") => (Vec::new(), &path[1..]),
        Some("self") => (from.to_vec(), &path[1..]),
        Some("super") => {
            let ups = path.iter().take_while(|s| *s == "super").count();
            (from[..from.len().checked_sub(ups)?].to_vec(), &path[ups..])
        }
        // A bare first segment reaches a child module of this file (2018 paths).
        Some(first) => {
            let mut child = from.to_vec();
            child.push(first.to_string());
            if !files.contains_key(&child) {
                return None;
            }
            (from.to_vec(), path)
        }
        None => return None,
    };
    let mut landed = base.clone();
    for seg in rest {
        base.push(seg.clone());
        if files.contains_key(&base) {
            landed = base.clone();
        } else {
            break;
        }
    }
    Some(landed)
}

/// Strongly connected groups of more than one file, following import arrows; an arrow
/// from a module into its own descendants is containment and not followed.
fn cycles(files: &BTreeMap<Vec<String>, (String, syn::File)>) -> Vec<Vec<String>> {
    let keys: Vec<&Vec<String>> = files.keys().collect();
    let index: BTreeMap<&Vec<String>, usize> =
        keys.iter().enumerate().map(|(i, k)| (*k, i)).collect();
    let mut edges: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); keys.len()];
    for (from, (_, ast)) in files {
        for path in named_paths(ast) {
            let Some(to) = resolve(from, &path, files) else {
                continue;
            };
            if to.starts_with(from) {
                continue;
            }
            edges[index[from]].insert(index[&to]);
        }
    }
    // Tarjan's algorithm; recursion is fine: a crate has a few dozen files.
    struct Tarjan<'e> {
        edges: &'e [BTreeSet<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        groups: Vec<Vec<usize>>,
    }
    impl Tarjan<'_> {
        fn visit(&mut self, v: usize) {
            self.index[v] = Some(self.next);
            self.low[v] = self.next;
            self.next += 1;
            self.stack.push(v);
            self.on_stack[v] = true;
            for &w in &self.edges[v] {
                match self.index[w] {
                    None => {
                        self.visit(w);
                        self.low[v] = self.low[v].min(self.low[w]);
                    }
                    Some(i) if self.on_stack[w] => self.low[v] = self.low[v].min(i),
                    Some(_) => {}
                }
            }
            if Some(self.low[v]) == self.index[v] {
                let mut group = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack[w] = false;
                    group.push(w);
                    if w == v {
                        break;
                    }
                }
                if group.len() > 1 {
                    self.groups.push(group);
                }
            }
        }
    }
    let n = keys.len();
    let mut t = Tarjan {
        edges: &edges,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        next: 0,
        groups: Vec::new(),
    };
    for v in 0..n {
        if t.index[v].is_none() {
            t.visit(v);
        }
    }
    t.groups
        .into_iter()
        .map(|g| {
            let mut names: Vec<String> = g.iter().map(|&i| files[keys[i]].0.clone()).collect();
            names.sort();
            names
        })
        .collect()
}
