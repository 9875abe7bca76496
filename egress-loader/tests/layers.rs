//! The loader's layers, checked from the source: each `src/<layer>/` file
//! may use only the layers below its own (error <- kernel <- policy <-
//! observe <- verify <- daemon <- cli), and within a layer the modules
//! import each other without a circle and never from their layer's
//! `mod.rs` (which declares them). Every `crate::`, `super::` and
//! `egress_loader::` path in the code counts, in `use` lines or inline,
//! test modules included; comments and string literals do not.

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

/// Every library path a file names, with where it starts from.
fn references(src: &str, file_module: &str, layer: &str) -> Vec<(Base, Vec<String>)> {
    let code = code_only(src);
    let inline = inline_modules(&code);
    let b = code.as_bytes();
    let mut out = Vec::new();
    for head in ["crate", "super", "egress_loader"] {
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
            let base = match (head, supers) {
                ("egress_loader", _) if layer == "cli" => Base::Library,
                ("egress_loader", _) => Base::Library,
                ("crate", _) if layer == "cli" => Base::Elsewhere,
                ("crate", _) => Base::Library,
                (_, 1) if layer == "cli" => Base::OwnLayer,
                (_, 1) if file_module == "mod" || layer == "error" => Base::Library,
                (_, 1) => Base::OwnLayer,
                (_, 2) if layer != "cli" && file_module != "mod" => Base::Library,
                _ => Base::Elsewhere,
            };
            for path in use_tree(&path_text) {
                out.push((base, path));
            }
        }
    }
    out
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
