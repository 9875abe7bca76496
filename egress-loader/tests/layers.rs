//! The loader's layers, checked from the source: each `src/<layer>/` file
//! may use only the layers below its own (error <- kernel <- policy <-
//! endpoint <- observe <- verify <- daemon <- cli), and within a layer the
//! modules import each other without a circle and never from their layer's
//! `mod.rs` (which declares them). Every `crate::`, `super::` and
//! `egress_loader::` path in the code counts, in `use` lines or inline,
//! test modules included; comments and string literals do not.
//!
//! With the same reading of the code:
//! - docs/design.md's layer table ("Loader layers") lists each layer's
//!   modules as its `mod.rs` declares them, and so does the table in that
//!   `mod.rs`'s own documentation where it has one; what the section says
//!   touches the kernel in a layer is what does;
//! - no crate of the workspace has an import circle among its modules.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

/// Bottom first.
const LAYERS: &[&str] = &[
    "error", "kernel", "policy", "endpoint", "observe", "verify", "daemon", "cli",
];

fn rank(layer: &str) -> Option<usize> {
    LAYERS.iter().position(|l| *l == layer)
}

/// The code with comments removed and the contents of string and char
/// literals blanked, so neither can look like a path.
fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    while i < b.len() {
        let c = b[i];
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let mut depth = 0;
            while i < b.len() {
                if b[i..].starts_with(b"/*") {
                    depth += 1;
                    i += 2;
                } else if b[i..].starts_with(b"*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if c == b'r'
            && (i == 0 || !ident(b[i - 1]))
            && matches!(b.get(i + 1), Some(b'"') | Some(b'#'))
        {
            // r"..." or r#"..."#
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&b'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&b'"') {
                out.push('r');
                i += 1;
                continue;
            }
            let close: Vec<u8> = std::iter::once(b'"')
                .chain(std::iter::repeat_n(b'#', hashes))
                .collect();
            j += 1;
            while j < b.len() && !b[j..].starts_with(&close) {
                j += 1;
            }
            i = j + close.len();
            out.push_str("\"\"");
        } else if c == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == b'\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a).
            if b.get(i + 1) == Some(&b'\\') {
                let mut j = i + 2;
                while j < b.len() && b[j] != b'\'' {
                    j += 1;
                }
                i = j + 1;
                out.push_str("' '");
            } else if b.get(i + 2) == Some(&b'\'') {
                i += 3;
                out.push_str("' '");
            } else {
                out.push('\'');
                i += 1;
            }
        } else {
            out.push(c as char);
            i += 1;
        }
    }
    out
}

/// Byte ranges of inline modules (`mod tests { .. }`): in them, the first
/// `super` is the file's own module.
fn inline_modules(code: &str) -> Vec<(usize, usize)> {
    let b = code.as_bytes();
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(p) = code[at..].find("mod ") {
        let start = at + p;
        at = start + 4;
        if start > 0 && (b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_') {
            continue;
        }
        let rest = &code[at..];
        let name_len = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let after = rest[name_len..].trim_start();
        if name_len == 0 || !after.starts_with('{') {
            continue;
        }
        let open = at + name_len + (rest[name_len..].len() - after.len());
        let mut depth = 0;
        for (k, ch) in code[open..].char_indices() {
            match ch {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        out.push((open, open + k));
                        break;
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// Parses a use tree (or an inline path) at the start of `s`: every path
/// it names, as its segments (`{a::b, c}` gives [a, b] and [c]).
fn use_tree(s: &str) -> Vec<Vec<String>> {
    fn skip_ws(s: &str, i: &mut usize) {
        while s[*i..].starts_with(|c: char| c.is_whitespace()) {
            *i += 1;
        }
    }
    fn tree(s: &str, i: &mut usize, prefix: &[String], out: &mut Vec<Vec<String>>) {
        skip_ws(s, i);
        if s[*i..].starts_with('{') {
            *i += 1;
            loop {
                skip_ws(s, i);
                if s[*i..].starts_with('}') {
                    *i += 1;
                    return;
                }
                tree(s, i, prefix, out);
                skip_ws(s, i);
                if s[*i..].starts_with(',') {
                    *i += 1;
                } else if s[*i..].starts_with('}') {
                    *i += 1;
                    return;
                } else {
                    return;
                }
            }
        }
        let len = s[*i..]
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '*'))
            .unwrap_or(s.len() - *i);
        if len == 0 {
            if !prefix.is_empty() {
                out.push(prefix.to_vec());
            }
            return;
        }
        let mut path = prefix.to_vec();
        path.push(s[*i..*i + len].to_string());
        *i += len;
        skip_ws(s, i);
        if s[*i..].starts_with("::") && !s[*i + 2..].trim_start().starts_with('<') {
            *i += 2;
            tree(s, i, &path, out);
        } else {
            if s[*i..].starts_with("as ") {
                *i += 3;
                skip_ws(s, i);
                *i += s[*i..]
                    .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .unwrap_or(0);
            }
            out.push(path);
        }
    }
    let mut out = Vec::new();
    let mut i = 0;
    tree(s, &mut i, &[], &mut out);
    out
}

/// What a path starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Base {
    /// The library's root: the first segment is a layer.
    Library,
    /// The file's own layer: the first segment is a sibling module (or an
    /// item of the layer's mod.rs).
    OwnLayer,
    /// Not the library (the binary's root, the file's own module).
    Elsewhere,
}

/// A path a file names from outside its own module: `head` is `crate`,
/// `super` or a crate's name, `supers` how many `super`s lead it (less the
/// one that only leaves an inline module), `path` the segments after them.
struct Named {
    head: &'static str,
    supers: usize,
    path: Vec<String>,
}

/// Every path starting with one of `heads` in the code of `src`.
fn named_paths(src: &str, heads: &[&'static str]) -> Vec<Named> {
    let code = code_only(src);
    let inline = inline_modules(&code);
    let b = code.as_bytes();
    let mut out = Vec::new();
    for &head in heads {
        let mut at = 0;
        while let Some(p) = code[at..].find(head) {
            let start = at + p;
            at = start + head.len();
            if start > 0 && (b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_') {
                continue;
            }
            if start > 0 && head == "super" && code[..start].trim_end().ends_with("::") {
                continue; // the second `super` of super::super, counted below
            }
            let rest = &code[at..];
            if !rest.trim_start().starts_with("::") {
                continue;
            }
            let mut path_text = rest.trim_start()[2..].to_string();
            let mut supers = usize::from(head == "super");
            while let Some(r) = path_text.trim_start().strip_prefix("super") {
                let r = r.trim_start();
                let Some(r) = r.strip_prefix("::") else { break };
                supers += 1;
                path_text = r.to_string();
            }
            if inline.iter().any(|&(s, e)| s < start && start < e) && supers > 0 {
                supers -= 1; // the first super is the file's module
                if supers == 0 && head == "super" {
                    continue;
                }
            }
            for path in use_tree(&path_text) {
                out.push(Named { head, supers, path });
            }
        }
    }
    out
}

/// Every library path a file names, with where it starts from.
fn references(src: &str, file_module: &str, layer: &str) -> Vec<(Base, Vec<String>)> {
    named_paths(src, &["crate", "super", "egress_loader"])
        .into_iter()
        .map(|Named { head, supers, path }| {
            let base = match (head, supers) {
                ("egress_loader", _) => Base::Library,
                ("crate", _) if layer == "cli" => Base::Elsewhere,
                ("crate", _) => Base::Library,
                (_, 1) if layer == "cli" => Base::OwnLayer,
                (_, 1) if file_module == "mod" || layer == "error" => Base::Library,
                (_, 1) => Base::OwnLayer,
                (_, 2) if layer != "cli" && file_module != "mod" => Base::Library,
                _ => Base::Elsewhere,
            };
            (base, path)
        })
        .collect()
}

struct Source {
    layer: String,
    /// File stem within the layer ("mod" for mod.rs; the layer for error.rs).
    module: String,
    path: PathBuf,
    text: String,
}

fn sources(src: &Path) -> Vec<Source> {
    let mut out = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap();
            let parts: Vec<String> = rel
                .iter()
                .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
                .collect();
            let (layer, module) = match parts.as_slice() {
                [root] if root == "lib" || root == "main" => continue,
                [single] => (single.clone(), single.clone()),
                [layer, module, ..] => (layer.clone(), module.clone()),
                [] => continue,
            };
            out.push(Source {
                layer,
                module,
                text: std::fs::read_to_string(&path).unwrap(),
                path,
            });
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// Every problem with the layering of the tree at `src`.
fn problems(src: &Path) -> Vec<String> {
    let files = sources(src);
    let mut problems = Vec::new();
    let modules: BTreeMap<&str, BTreeSet<&str>> = files.iter().fold(BTreeMap::new(), |mut m, f| {
        m.entry(f.layer.as_str())
            .or_default()
            .insert(f.module.as_str());
        m
    });
    // Module graph within each layer: (layer, from) -> {to}.
    let mut edges: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let shown = f.path.strip_prefix(src).unwrap().display();
        let Some(from_rank) = rank(&f.layer) else {
            problems.push(format!(
                "{shown}: not in a layer (the layers are {LAYERS:?})"
            ));
            continue;
        };
        for (base, path) in references(&f.text, &f.module, &f.layer) {
            let (layer, module) = match base {
                Base::Elsewhere => continue,
                Base::OwnLayer => (f.layer.as_str(), path.first().map(String::as_str)),
                Base::Library => {
                    let first = path[0].as_str();
                    // The root re-exports `Error`.
                    let layer = if first == "Error" { "error" } else { first };
                    (layer, path.get(1).map(String::as_str))
                }
            };
            let Some(to_rank) = rank(layer) else {
                problems.push(format!(
                    "{shown}: uses {} outside the layers",
                    path.join("::")
                ));
                continue;
            };
            if to_rank > from_rank {
                problems.push(format!(
                    "{shown}: layer {} uses {}, a layer above it",
                    f.layer,
                    path.join("::")
                ));
                continue;
            }
            if to_rank < from_rank || f.layer == "error" || f.layer == "cli" {
                continue;
            }
            let known = modules[layer].contains(module.unwrap_or("")) && module != Some("mod");
            match module {
                Some(m) if known => {
                    if m != f.module {
                        edges
                            .entry((f.layer.clone(), f.module.clone()))
                            .or_default()
                            .insert(m.to_string());
                    }
                }
                _ if f.module == "mod" => {}
                _ => problems.push(format!(
                    "{shown}: uses {} from its layer's mod.rs (which declares this module); \
                     name the module that defines it",
                    path.join("::")
                )),
            }
        }
    }
    // A circle among the modules of one layer.
    fn visit(
        node: &(String, String),
        edges: &BTreeMap<(String, String), BTreeSet<String>>,
        trail: &mut Vec<(String, String)>,
        done: &mut BTreeSet<(String, String)>,
        found: &mut Vec<String>,
    ) {
        if let Some(p) = trail.iter().position(|n| n == node) {
            let circle: Vec<&str> = trail[p..]
                .iter()
                .chain(std::iter::once(node))
                .map(|n| n.1.as_str())
                .collect();
            found.push(format!("{}/: {}", node.0, circle.join(" -> ")));
            return;
        }
        if !done.insert(node.clone()) {
            return;
        }
        trail.push(node.clone());
        for next in edges.get(node).into_iter().flatten() {
            visit(&(node.0.clone(), next.clone()), edges, trail, done, found);
        }
        trail.pop();
    }
    let mut done = BTreeSet::new();
    for node in edges.keys() {
        visit(node, &edges, &mut Vec::new(), &mut done, &mut problems);
    }
    problems
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn each_layer_uses_only_the_layers_below_it() {
    let problems = problems(&src_dir());
    assert!(
        problems.is_empty(),
        "layering broken:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn the_check_sees_the_tree() {
    let files = sources(&src_dir());
    let layers: BTreeSet<&str> = files.iter().map(|f| f.layer.as_str()).collect();
    assert_eq!(layers, LAYERS.iter().copied().collect(), "{layers:?}");
    // It finds real references (a check that sees none passes anything).
    let f = files
        .iter()
        .find(|f| f.path.ends_with("daemon/run.rs"))
        .unwrap();
    let refs = references(&f.text, &f.module, &f.layer);
    assert!(
        refs.iter()
            .any(|(b, p)| *b == Base::Library && p[0] == "kernel" && p[1] == "attach"),
        "{refs:?}"
    );
}

/// A copy of the tree with one line added to one file.
struct Altered(PathBuf);

impl Altered {
    fn new(tag: &str, file: &str, line: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("egress-layers-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for f in sources(&src_dir()) {
            let rel = f.path.strip_prefix(src_dir()).unwrap();
            let to = dir.join(rel);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            let mut text = f.text.clone();
            if rel == Path::new(file) {
                text = format!("{line}\n{text}");
            }
            std::fs::write(to, text).unwrap();
        }
        Self(dir)
    }
}

impl Drop for Altered {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn an_upward_import_is_found() {
    for (file, line) in [
        ("kernel/pins.rs", "use crate::daemon::run;"),
        (
            "policy/apply.rs",
            "use crate::{error::Error, observe::{counters}};",
        ),
        (
            "error.rs",
            "fn f() { let _ = crate::kernel::clock::monotonic_ns(); }",
        ),
        ("verify/probe.rs", "use super::super::daemon::RunOptions;"),
    ] {
        let t = Altered::new("up", file, line);
        let p = problems(&t.0);
        assert!(
            p.iter()
                .any(|p| p.contains(file) && p.contains("a layer above")),
            "{file}: {line}: {p:?}"
        );
    }
}

#[test]
fn a_circle_within_a_layer_is_found() {
    // values has no import from its layer; apply imports values.
    let t = Altered::new(
        "circle",
        "policy/values.rs",
        "use crate::policy::apply::trie_entries;",
    );
    let p = problems(&t.0);
    assert!(
        p.iter()
            .any(|p| p.contains("policy/: ") && p.contains("apply")),
        "{p:?}"
    );
    let t = Altered::new(
        "modrs",
        "observe/events.rs",
        "use super::counters;\nuse super::Foo;",
    );
    let p = problems(&t.0);
    assert!(p.iter().any(|p| p.contains("mod.rs")), "{p:?}");
}

#[test]
fn comments_and_strings_are_not_imports() {
    let code = code_only(
        "// use crate::daemon::run;\nlet s = \"crate::daemon\"; let r = r#\"crate::cli\"#; let c = '\"'; use crate::kernel::pins;",
    );
    assert!(!code.contains("daemon") && !code.contains("cli"), "{code}");
    assert!(code.contains("crate::kernel::pins"), "{code}");
    assert_eq!(
        use_tree("{a::b, c::{d, e as f}, g}::x"),
        [vec!["a", "b"], vec!["c", "d"], vec!["c", "e"], vec!["g"]]
    );
}

// Import circles in every crate of the workspace, not only the loader's
// layers: within each module, its child modules must import each other
// without a circle (as the modules of one layer must).

/// The `mod name;` declarations of a file (not inline `mod name { .. }`).
fn declared_modules(src: &str) -> Vec<String> {
    let code = code_only(src);
    let b = code.as_bytes();
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(p) = code[at..].find("mod ") {
        let start = at + p;
        at = start + 4;
        if start > 0 && (b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_') {
            continue;
        }
        let rest = code[at..].trim_start();
        let len = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if len > 0 && rest[len..].trim_start().starts_with(';') {
            out.push(rest[..len].to_string());
        }
    }
    out
}

/// A module of a crate, in one file.
struct ModuleFile {
    /// From the crate's root (empty for the root itself).
    path: Vec<String>,
    text: String,
}

/// A crate's module tree, followed from its root file through the `mod`
/// declarations.
fn crate_modules(root: &Path) -> Vec<ModuleFile> {
    let mut out = Vec::new();
    let mut stack = vec![(Vec::new(), root.to_path_buf(), true)];
    while let Some((path, file, owns_dir)) = stack.pop() {
        let text =
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        // A root or a mod.rs declares the files beside it; a.rs those in a/.
        let dir = if owns_dir {
            file.parent().unwrap().to_path_buf()
        } else {
            file.with_extension("")
        };
        for name in declared_modules(&text) {
            let mut child = path.clone();
            child.push(name.clone());
            let flat = dir.join(format!("{name}.rs"));
            let nested = dir.join(&name).join("mod.rs");
            match (flat.exists(), nested.exists()) {
                (true, _) => stack.push((child, flat, false)),
                (_, true) => stack.push((child, nested, true)),
                _ => panic!("{}: mod {name}: no file", file.display()),
            }
        }
        out.push(ModuleFile { path, text });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// The root files of a package's crates: library, binaries, integration
/// tests, benches, examples, build script.
fn crate_roots(package: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for f in ["build.rs", "src/lib.rs", "src/main.rs"] {
        if package.join(f).is_file() {
            out.push(package.join(f));
        }
    }
    for dir in ["src/bin", "tests", "benches", "examples"] {
        let Ok(entries) = std::fs::read_dir(package.join(dir)) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|e| e == "rs") {
                out.push(p);
            } else if p.join("main.rs").is_file() {
                out.push(p.join("main.rs"));
            }
        }
    }
    out.sort();
    out
}

/// The workspace's packages, from the `members` of its Cargo.toml.
fn workspace_packages() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let line = manifest
        .lines()
        .find(|l| l.trim_start().starts_with("members"))
        .expect("a members line in the workspace's Cargo.toml");
    line.split('"')
        .skip(1)
        .step_by(2)
        .map(|m| root.join(m))
        .collect()
}

/// The import circles of the crate at `root`: for each module (the root
/// included), the circles among its child modules. A child imports a
/// sibling when any file under it names a path into the sibling, from
/// `crate::` or through `super::`.
fn crate_circles(root: &Path) -> Vec<String> {
    let modules = crate_modules(root);
    let known: BTreeSet<&[String]> = modules.iter().map(|m| m.path.as_slice()).collect();
    // (parent, child) -> {sibling}
    let mut edges: BTreeMap<(Vec<String>, String), BTreeSet<String>> = BTreeMap::new();
    for m in &modules {
        for Named { head, supers, path } in named_paths(&m.text, &["crate", "super"]) {
            let target: Vec<String> = match head {
                "crate" => path,
                _ if supers <= m.path.len() => m.path[..m.path.len() - supers]
                    .iter()
                    .cloned()
                    .chain(path)
                    .collect(),
                _ => continue,
            };
            let common = m
                .path
                .iter()
                .zip(&target)
                .take_while(|(a, b)| a == b)
                .count();
            if common >= m.path.len() || common >= target.len() {
                continue; // the module itself, a parent or a child of it
            }
            if !known.contains(&target[..=common]) {
                continue; // an item of the parent, not a module
            }
            edges
                .entry((m.path[..common].to_vec(), m.path[common].clone()))
                .or_default()
                .insert(target[common].clone());
        }
    }
    // Strongly connected components (Tarjan), per parent.
    struct Tarjan<'a> {
        edges: &'a BTreeMap<(Vec<String>, String), BTreeSet<String>>,
        parent: Vec<String>,
        index: BTreeMap<String, (usize, usize)>,
        stack: Vec<String>,
        found: Vec<Vec<String>>,
    }
    impl Tarjan<'_> {
        fn visit(&mut self, v: &str) {
            let n = self.index.len();
            self.index.insert(v.to_string(), (n, n));
            self.stack.push(v.to_string());
            let next: Vec<String> = self
                .edges
                .get(&(self.parent.clone(), v.to_string()))
                .into_iter()
                .flatten()
                .cloned()
                .collect();
            for w in next {
                if !self.index.contains_key(&w) {
                    self.visit(&w);
                    let low = self.index[&w].1.min(self.index[v].1);
                    self.index.get_mut(v).unwrap().1 = low;
                } else if self.stack.contains(&w) {
                    let low = self.index[&w].0.min(self.index[v].1);
                    self.index.get_mut(v).unwrap().1 = low;
                }
            }
            let (i, low) = self.index[v];
            if i == low {
                let at = self.stack.iter().rposition(|s| s == v).unwrap();
                let mut scc = self.stack.split_off(at);
                if scc.len() > 1 {
                    scc.sort();
                    self.found.push(scc);
                }
            }
        }
    }
    let parents: BTreeSet<Vec<String>> = edges.keys().map(|(p, _)| p.clone()).collect();
    let mut out = Vec::new();
    for parent in parents {
        let mut t = Tarjan {
            edges: &edges,
            parent: parent.clone(),
            index: BTreeMap::new(),
            stack: Vec::new(),
            found: Vec::new(),
        };
        let nodes: Vec<String> = edges
            .keys()
            .filter(|(p, _)| *p == parent)
            .map(|(_, c)| c.clone())
            .collect();
        for v in nodes {
            if !t.index.contains_key(&v) {
                t.visit(&v);
            }
        }
        for scc in t.found {
            let arrows: Vec<String> = scc
                .iter()
                .map(|a| {
                    let to: Vec<&str> = edges[&(parent.clone(), a.clone())]
                        .iter()
                        .filter(|b| scc.contains(b))
                        .map(String::as_str)
                        .collect();
                    format!("{a} -> {}", to.join(", "))
                })
                .collect();
            let within = if parent.is_empty() {
                String::new()
            } else {
                format!(" in {}", parent.join("::"))
            };
            out.push(format!(
                "{{{}}}{within}: {}",
                scc.join(", "),
                arrows.join("; ")
            ));
        }
    }
    out
}

/// Every import circle in the workspace, one line each.
fn workspace_circles() -> Vec<String> {
    let mut out = Vec::new();
    for package in workspace_packages() {
        for root in crate_roots(&package) {
            let shown = root
                .strip_prefix(package.parent().unwrap())
                .unwrap()
                .display()
                .to_string();
            for c in crate_circles(&root) {
                out.push(format!("{shown}: {c}"));
            }
        }
    }
    out
}

#[test]
fn no_crate_of_the_workspace_has_an_import_circle() {
    let circles = workspace_circles();
    assert!(
        circles.is_empty(),
        "{} import circle(s):\n  {}",
        circles.len(),
        circles.join("\n  ")
    );
}

#[test]
fn the_circle_check_sees_every_crate() {
    let packages = workspace_packages();
    assert!(packages.len() >= 7, "{packages:?}");
    let roots: Vec<PathBuf> = packages.iter().flat_map(|p| crate_roots(p)).collect();
    let common = roots
        .iter()
        .find(|r| r.ends_with("egress-ebpf-common/src/lib.rs"))
        .expect("the common crate");
    let modules = crate_modules(common);
    assert!(
        modules.iter().any(|m| m.path == ["parse"]) && modules.iter().any(|m| m.path == ["decide"]),
        "{:?}",
        modules.iter().map(|m| &m.path).collect::<Vec<_>>()
    );
    // Nested modules are followed (the loader's layers).
    let lib = roots
        .iter()
        .find(|r| r.ends_with("egress-loader/src/lib.rs"))
        .unwrap();
    assert!(
        crate_modules(lib)
            .iter()
            .any(|m| m.path == ["daemon", "run"])
    );
}

#[test]
fn a_circle_in_any_crate_is_found() {
    let dir = std::env::temp_dir().join(format!("egress-circles-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("b")).unwrap();
    for (file, text) in [
        ("lib.rs", "mod a;\nmod b;\nmod c;\n"),
        ("a.rs", "use crate::b::x::Thing;\n"),
        ("b/mod.rs", "pub mod x;\npub mod y;\n"),
        // From a nested file: up two levels, and a sibling in b/.
        ("b/x.rs", "use super::y::Y;\n"),
        (
            "b/y.rs",
            "fn f() { super::super::a::g(); }\n#[cfg(test)]\nmod tests { use super::super::x::Thing; }\n",
        ),
        // c only imports: no circle through it.
        ("c.rs", "use crate::{a::g, b::y::Y};\n"),
    ] {
        std::fs::write(dir.join(file), text).unwrap();
    }
    let circles = crate_circles(&dir.join("lib.rs"));
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        circles,
        ["{a, b}: a -> b; b -> a", "{x, y} in b: x -> y; y -> x"],
        "{circles:?}"
    );
}

// docs/design.md's "Loader layers" against the tree.

/// The text of docs/design.md's "Loader layers" section.
fn layers_section(design: &str) -> &str {
    let start = design
        .find("\n## Loader layers\n")
        .expect("docs/design.md has a \"Loader layers\" section");
    let rest = &design[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |e| e + 4);
    &rest[..end]
}

/// The words between backticks in `text`.
fn ticked(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// The section's table: each row's layer (`cli/` is "cli", `error.rs`
/// "error") and the names in its modules column, in the table's order.
fn design_table(section: &str) -> Vec<(String, Vec<String>)> {
    section
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let [_, layer, modules, ..] = cells.as_slice() else {
                return None;
            };
            let layer = layer.strip_prefix('`')?.strip_suffix('`')?;
            let layer = layer.trim_end_matches('/').trim_end_matches(".rs");
            Some((layer.to_string(), ticked(modules)))
        })
        .collect()
}

/// The first word of each line of the ```text table in a module's `//!`
/// documentation (continuation lines are indented); `None` without one.
fn doc_table(src: &str) -> Option<Vec<String>> {
    let doc: Vec<&str> = src
        .lines()
        .map_while(|l| l.strip_prefix("//!"))
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .collect();
    let open = doc.iter().position(|l| l.trim() == "```text")?;
    let close = open + 1 + doc[open + 1..].iter().position(|l| l.trim() == "```")?;
    Some(
        doc[open + 1..close]
            .iter()
            .filter(|l| !l.starts_with(char::is_whitespace))
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_string)
            .collect(),
    )
}

/// Whether a file's code touches the kernel: the kernel layer, or aya.
fn touches_kernel(f: &Source) -> bool {
    if f.layer == "kernel" {
        return true;
    }
    let code = code_only(&f.text);
    let b = code.as_bytes();
    let aya = ["aya::", "aya_log::"].iter().any(|head| {
        code.match_indices(head)
            .any(|(i, _)| i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_'))
    });
    aya || references(&f.text, &f.module, &f.layer)
        .iter()
        .any(|(base, path)| *base == Base::Library && path[0] == "kernel")
}

/// Where the "Loader layers" section of `design` and the tree at `src`
/// disagree.
fn design_problems(design: &str, src: &Path) -> Vec<String> {
    let section = layers_section(design);
    let files = sources(src);
    let mut problems = Vec::new();
    let table = design_table(section);
    let order: Vec<&str> = table.iter().map(|(l, _)| l.as_str()).collect();
    let top_first: Vec<&str> = LAYERS.iter().rev().copied().collect();
    if order != top_first {
        problems.push(format!(
            "design.md's layer table has the layers {order:?}; the tree's, top first, are {top_first:?}"
        ));
    }
    for (layer, listed) in &table {
        let listed: BTreeSet<&str> = listed.iter().map(String::as_str).collect();
        let Some(own) = files
            .iter()
            .find(|f| &f.layer == layer && f.module == "mod")
        else {
            // A layer in one file (error.rs): the column names its types.
            let Some(file) = files.iter().find(|f| &f.layer == layer) else {
                problems.push(format!(
                    "design.md lists a layer {layer} the tree does not have"
                ));
                continue;
            };
            let code = code_only(&file.text);
            for name in &listed {
                let defined = ["enum", "struct", "trait", "type"]
                    .iter()
                    .any(|kind| code.contains(&format!("pub {kind} {name}")));
                if !defined {
                    problems.push(format!(
                        "design.md lists {name} under {layer}, which does not define it"
                    ));
                }
            }
            continue;
        };
        let declared = declared_modules(&own.text);
        let declared: BTreeSet<&str> = declared.iter().map(String::as_str).collect();
        for m in declared.difference(&listed) {
            let under: Vec<&str> = table
                .iter()
                .filter(|(_, ms)| ms.iter().any(|x| x == m))
                .map(|(l, _)| l.as_str())
                .collect();
            problems.push(if under.is_empty() {
                format!("{layer}/{m}.rs is missing from design.md's layer table")
            } else {
                format!(
                    "{layer}/{m}.rs is listed under {} in design.md",
                    under.join(", ")
                )
            });
        }
        for m in listed.difference(&declared) {
            problems.push(format!(
                "design.md lists {m} under {layer}/, which has no such module"
            ));
        }
        if let Some(doc) = doc_table(&own.text) {
            let doc: BTreeSet<&str> = doc.iter().map(String::as_str).collect();
            for m in declared.symmetric_difference(&doc) {
                problems.push(format!(
                    "{layer}/mod.rs: its table and its `mod` lines disagree on {m}"
                ));
            }
        }
    }
    // "Nothing in `x/` touches the kernel" / "In `x/` only `a` touches the
    // kernel": each such sentence against the code.
    let prose: String = section
        .lines()
        .filter(|l| !l.starts_with('|'))
        .collect::<Vec<_>>()
        .join(" ");
    for sentence in prose.split(". ") {
        if !(sentence.contains("touch") && sentence.contains("the kernel")) {
            continue;
        }
        // The names before the verb: "In `x/` only `a` and `b` touch".
        let words = ticked(&sentence[..sentence.find("touch").unwrap()]);
        let (layers, claimed): (Vec<&String>, Vec<&String>) =
            words.iter().partition(|w| w.ends_with('/'));
        let claimed: BTreeSet<&str> = if sentence.contains("Nothing in") {
            BTreeSet::new()
        } else {
            claimed.iter().map(|s| s.as_str()).collect()
        };
        for layer in layers {
            let layer = layer.trim_end_matches('/');
            let touching: BTreeSet<&str> = files
                .iter()
                .filter(|f| f.layer == layer && f.module != "mod" && touches_kernel(f))
                .map(|f| f.module.as_str())
                .collect();
            if touching != claimed {
                problems.push(format!(
                    "design.md says {claimed:?} in {layer}/ touch the kernel; {touching:?} do"
                ));
            }
        }
    }
    problems
}

fn design_md() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/design.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn design_md_lists_the_layers_as_the_tree_has_them() {
    let problems = design_problems(&design_md(), &src_dir());
    assert!(
        problems.is_empty(),
        "docs/design.md (\"Loader layers\") is stale:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn a_stale_design_md_is_found() {
    let design = design_md();
    let section = layers_section(&design);
    assert_eq!(design_table(section).len(), LAYERS.len(), "{section}");
    for (from, to, expect) in [
        // A module renamed in the table only.
        (
            "`identity`, `engine`",
            "`identities`, `engine`",
            "endpoint/identity.rs is missing",
        ),
        // A module listed under another layer.
        ("`wake`, `filter`", "`wake`", "daemon/filter.rs is missing"),
        ("`check`", "`check`, `wake`", "lists wake under policy/"),
        // The old claim.
        (
            "In `policy/` only `apply` touches the kernel",
            "Nothing in `policy/` touches the kernel",
            "in policy/ touch the kernel",
        ),
        (
            "`Error`, `ConfigError`",
            "`Error`, `Failure`",
            "Failure under error",
        ),
    ] {
        assert!(section.contains(from), "{from}");
        let stale = design.replacen(from, to, 1);
        let p = design_problems(&stale, &src_dir());
        assert!(p.iter().any(|p| p.contains(expect)), "{to}: {p:?}");
    }
    // A module the tree gains that neither table lists.
    let t = Altered::new("newmod", "policy/values.rs", "");
    let mod_rs = t.0.join("policy/mod.rs");
    let text = std::fs::read_to_string(&mod_rs).unwrap();
    std::fs::write(&mod_rs, format!("{text}\npub mod fresh;\n")).unwrap();
    std::fs::write(t.0.join("policy/fresh.rs"), "").unwrap();
    let p = design_problems(&design, &t.0);
    assert!(
        p.iter().any(|p| p.contains("policy/fresh.rs is missing"))
            && p.iter()
                .any(|p| p.contains("policy/mod.rs") && p.contains("fresh")),
        "{p:?}"
    );
}
