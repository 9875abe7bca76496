//! The documentation's commands are the real ones.
//!
//! Reads README.md and docs/*.md and checks, against the built binaries:
//! - every `egress-loader SUBCOMMAND [--flag]...` in a code block or an inline
//!   code span names a subcommand and flags that `egress-loader SUBCOMMAND
//!   --help` lists (also when it follows `docker exec ...`, `kubectl ... --`,
//!   `cargo xtask run --`, or an `egress-filter:TAG` image in `docker run`);
//! - every `cargo xtask CMD [--flag]...` names a command and flags that
//!   `cargo xtask CMD --help` lists;
//! - every TOML block validates with `egress-loader check-config`, except a
//!   block marked ```` ```toml refused ````, which must be refused with exit
//!   status 2; a block marked ```` ```toml defaults ```` must be exactly what
//!   `check-config --defaults` prints;
//! - every relative link (and `#anchor`) resolves, and every doc in docs/ is
//!   linked from the README.
//!
//! Needs the loader binary (`EGRESS_LOADER_BIN`, set by `cargo xtask test`,
//! or next to the test executable) and cargo (for `cargo xtask`); no root.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// README.md and docs/*.md, as (path relative to the root, text).
fn documents() -> Vec<(String, String)> {
    let root = workspace_root();
    let mut names = vec!["README.md".to_string()];
    let mut docs: Vec<String> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".md"))
        .map(|n| format!("docs/{n}"))
        .collect();
    docs.sort();
    names.extend(docs);
    names
        .into_iter()
        .map(|n| {
            let text =
                std::fs::read_to_string(root.join(&n)).unwrap_or_else(|e| panic!("{n}: {e}"));
            (n, text)
        })
        .collect()
}

// ---------------------------------------------------------------- markdown

/// A fenced code block: its info string, its text, the line of its fence.
struct Block {
    info: String,
    text: String,
    line: usize,
}

/// Fenced code blocks, and the remaining (prose) lines with their numbers.
fn split_markdown(md: &str) -> (Vec<Block>, Vec<(usize, &str)>) {
    let mut blocks = Vec::new();
    let mut prose = Vec::new();
    let mut open: Option<(String, String, usize, usize)> = None; // fence, info, line, indent
    let mut text = String::new();
    for (i, line) in md.lines().enumerate() {
        let n = i + 1;
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        match &open {
            None => {
                let fence: String = trimmed
                    .chars()
                    .take_while(|&c| c == '`' || c == '~')
                    .collect();
                if fence.len() >= 3 && fence.chars().all(|c| c == fence.chars().next().unwrap()) {
                    let info = trimmed[fence.len()..].trim().to_string();
                    open = Some((fence, info, n, indent));
                    text.clear();
                } else {
                    prose.push((n, line));
                }
            }
            Some((fence, info, start, block_indent)) => {
                if trimmed.starts_with(fence.as_str()) && trimmed.trim_end() == fence.as_str() {
                    blocks.push(Block {
                        info: info.clone(),
                        text: std::mem::take(&mut text),
                        line: *start,
                    });
                    open = None;
                } else {
                    // Blocks inside list items are indented like the item.
                    let cut = indent.min(*block_indent);
                    text.push_str(&line[cut..]);
                    text.push('\n');
                }
            }
        }
    }
    assert!(open.is_none(), "unclosed code block");
    (blocks, prose)
}

/// Inline code spans of a prose line (single or double backticks).
fn code_spans(line: &str) -> Vec<String> {
    let mut spans = Vec::new();
    let mut rest = line;
    while let Some(start) = rest.find('`') {
        let ticks = rest[start..].chars().take_while(|&c| c == '`').count();
        let fence = &rest[start..start + ticks];
        let after = &rest[start + ticks..];
        match after.find(fence) {
            Some(end) => {
                spans.push(after[..end].trim().to_string());
                rest = &after[end + ticks..];
            }
            None => break,
        }
    }
    spans
}

/// GitHub's heading anchors: lower case, punctuation dropped, spaces to `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(md: &str) -> BTreeSet<String> {
    let (_, prose) = split_markdown(md);
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    for (_, line) in prose {
        let t = line.trim_start();
        if t.starts_with('#') {
            let s = slug(t.trim_start_matches('#'));
            let n = seen.entry(s.clone()).or_insert(0);
            out.insert(if *n == 0 {
                s.clone()
            } else {
                format!("{s}-{n}")
            });
            *n += 1;
        }
    }
    out
}

/// `](target)` link targets of the prose lines.
fn links(prose: &[(usize, &str)]) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for &(n, line) in prose {
        let mut rest = line;
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let Some(end) = after.find(')') else { break };
            out.push((n, after[..end].to_string()));
            rest = &after[end..];
        }
    }
    out
}

// ------------------------------------------------------------ shell words

/// Shell-like words of one logical line; quoted text stays in one word.
/// `(word, quoted)`.
fn words(line: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut quote: Option<char> = None;
    let mut any = false;
    for c in line.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => cur.push(c),
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                quoted = true;
                any = true;
            }
            None if c.is_whitespace() => {
                if any {
                    out.push((std::mem::take(&mut cur), quoted));
                }
                quoted = false;
                any = false;
            }
            None => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push((cur, quoted));
    }
    out
}

/// The words of one command: up to a pipe, `&&`, `;`, a redirection or a
/// comment, unless inside `[...]`/`(...)` (a synopsis, where `|` separates
/// alternatives).
fn command_words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth: i32 = 0;
    for (w, quoted) in words(line) {
        if !quoted && depth <= 0 {
            let stop = ["|", "||", "&&", ";", "&"].contains(&w.as_str())
                || w.starts_with('#')
                || w.starts_with('>')
                || w.starts_with("2>")
                || w.starts_with('<');
            if stop {
                break;
            }
        }
        if !quoted {
            depth += w.matches(['[', '(']).count() as i32;
            depth -= w.matches([']', ')']).count() as i32;
        }
        out.push(w);
    }
    out
}

/// A word without the synopsis punctuation around it.
fn bare(w: &str) -> &str {
    w.trim_start_matches(['[', '(', '"', '\''])
        .trim_end_matches("...")
        .trim_end_matches([']', ')', ',', '"', '\''])
        .trim_end_matches("...")
}

/// The flag a word names (`--pin-dir`, `-c`), if it is one.
fn flag_name(w: &str) -> Option<String> {
    let w = bare(w);
    if !w.starts_with('-') || w == "-" || w == "--" {
        return None;
    }
    let name = w.split('=').next().unwrap_or(w);
    // A cluster of short flags (`-ab`) stays one word, which no help lists:
    // the docs spell flags one by one.
    Some(name.trim_end_matches(['|', ',']).to_string())
}

/// Logical lines of a code block: `\` continuations joined.
fn logical_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        if let Some(body) = line.trim_end().strip_suffix('\\') {
            cur.push_str(body);
            cur.push(' ');
        } else {
            cur.push_str(line);
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

// ---------------------------------------------------------------- the CLIs

/// A CLI's subcommands and the flags each accepts, read from its `--help`.
struct Cli {
    top_flags: BTreeSet<String>,
    commands: BTreeMap<String, BTreeSet<String>>,
}

/// Flags listed in a clap help text: option lines start with two spaces
/// and a dash (`  -c, --config <FILE>`).
fn help_flags(help: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in help.lines() {
        let indent = line.len() - line.trim_start().len();
        if !(1..=6).contains(&indent) || !line.trim_start().starts_with('-') {
            continue;
        }
        for w in line.trim().split([' ', ',']) {
            if w.starts_with('-') && w.len() > 1 {
                out.insert(w.split(['=', '<', '[']).next().unwrap().to_string());
            } else if !w.is_empty() {
                break;
            }
        }
    }
    out
}

/// Subcommand names of a clap help text ("Commands:" section).
fn help_commands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| l.trim() != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

fn stdout_ok(what: &str, out: std::io::Result<Output>) -> String {
    let out = out.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 help")
}

fn loader_bin() -> PathBuf {
    egress_tests::loader_bin().unwrap_or_else(|e| panic!("{e:#}"))
}

fn read_cli(run: impl Fn(&[&str]) -> std::io::Result<Output>, name: &str) -> Cli {
    let top = stdout_ok(&format!("{name} --help"), run(&["--help"]));
    let mut commands = BTreeMap::new();
    for c in help_commands(&top) {
        if c == "help" {
            // clap's own: `help SUBCOMMAND`, no flags.
            commands.insert(c, BTreeSet::new());
            continue;
        }
        let help = stdout_ok(&format!("{name} {c} --help"), run(&[c.as_str(), "--help"]));
        commands.insert(c, help_flags(&help));
    }
    assert!(
        !commands.is_empty(),
        "{name} --help lists no commands:\n{top}"
    );
    Cli {
        top_flags: help_flags(&top),
        commands,
    }
}

fn loader_cli() -> &'static Cli {
    static CLI: OnceLock<Cli> = OnceLock::new();
    CLI.get_or_init(|| {
        let bin = loader_bin();
        read_cli(
            |args| Command::new(&bin).args(args).output(),
            "egress-loader",
        )
    })
}

/// `cargo xtask` is `cargo run --quiet --package xtask --` (.cargo/config.toml).
fn xtask_cli() -> &'static Cli {
    static CLI: OnceLock<Cli> = OnceLock::new();
    CLI.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let root = workspace_root();
        read_cli(
            |args| {
                Command::new(&cargo)
                    .args(["run", "--quiet", "--package", "xtask", "--"])
                    .args(args)
                    .current_dir(&root)
                    .output()
            },
            "cargo xtask",
        )
    })
}

// ------------------------------------------------------------- the checks

/// Problems with one `egress-loader` argument list (after the program name).
fn check_loader_args(args: &[String], problems: &mut Vec<String>) {
    let cli = loader_cli();
    let Some(first) = args.first() else { return };
    let first = bare(first);
    if first.starts_with('-') {
        for f in args.iter().filter_map(|w| flag_name(w)) {
            if !cli.top_flags.contains(&f) {
                problems.push(format!("egress-loader has no option {f}"));
            }
        }
        return;
    }
    let Some(flags) = cli.commands.get(first) else {
        problems.push(format!(
            "egress-loader has no subcommand {first:?} (it has: {})",
            cli.commands.keys().cloned().collect::<Vec<_>>().join(", ")
        ));
        return;
    };
    if first == "help" {
        return;
    }
    for w in &args[1..] {
        if bare(w) == "--" {
            break;
        }
        if let Some(f) = flag_name(w)
            && !flags.contains(&f)
        {
            problems.push(format!("`egress-loader {first}` has no option {f}"));
        }
    }
}

/// Problems with one `cargo xtask` argument list (after `xtask`).
fn check_xtask_args(args: &[String], problems: &mut Vec<String>) {
    let cli = xtask_cli();
    let Some(first) = args.first() else { return };
    let first = bare(first);
    if first.starts_with('-') {
        for f in args.iter().filter_map(|w| flag_name(w)) {
            if !cli.top_flags.contains(&f) {
                problems.push(format!("cargo xtask has no option {f}"));
            }
        }
        return;
    }
    let Some(flags) = cli.commands.get(first) else {
        problems.push(format!(
            "cargo xtask has no command {first:?} (it has: {})",
            cli.commands.keys().cloned().collect::<Vec<_>>().join(", ")
        ));
        return;
    };
    let rest = &args[1..];
    let split = rest
        .iter()
        .position(|w| bare(w) == "--")
        .unwrap_or(rest.len());
    for f in rest[..split].iter().filter_map(|w| flag_name(w)) {
        if !flags.contains(&f) {
            problems.push(format!("`cargo xtask {first}` has no option {f}"));
        }
    }
    // `cargo xtask run -- ARGS`: ARGS go to egress-loader, to `run` unless
    // they start with a subcommand. Other commands pass theirs to cargo or
    // to the bench binary, which are not checked here.
    if first == "run" && split < rest.len() {
        let loader = &rest[split + 1..];
        let explicit = loader
            .first()
            .is_some_and(|w| loader_cli().commands.contains_key(bare(w)));
        let mut args: Vec<String> = Vec::new();
        if !explicit {
            args.push("run".into());
        }
        args.extend(loader.iter().cloned());
        check_loader_args(&args, problems);
    }
}

/// Checks every command in one line of code; returns how many it found.
fn check_line(line: &str, problems: &mut Vec<String>) -> usize {
    let ws = command_words(line);
    if std::env::var_os("DOCS_TEST_VERBOSE").is_some() && !ws.is_empty() {
        eprintln!("  {}", ws.join(" "));
    }
    let mut found = 0;
    let is_loader = |w: &str| {
        Path::new(bare(w))
            .file_name()
            .is_some_and(|n| n == "egress-loader")
    };
    if let Some(i) = ws.iter().position(|w| is_loader(w)) {
        found += 1;
        check_loader_args(&ws[i + 1..], problems);
    } else if let Some(i) = ws
        .windows(2)
        .position(|p| bare(&p[0]) == "cargo" && bare(&p[1]) == "xtask")
    {
        found += 1;
        check_xtask_args(&ws[i + 2..], problems);
    } else if ws.first().map(String::as_str) == Some("docker")
        && ws.get(1).map(String::as_str) == Some("run")
    {
        // `docker run [OPTIONS] IMAGE [ARGS]`: the image's entry point is
        // egress-loader, so ARGS are its arguments.
        let image = ws.iter().position(|w| {
            bare(w)
                .rsplit('/')
                .next()
                .is_some_and(|last| last.starts_with("egress-filter:"))
        });
        if let Some(i) = image {
            found += 1;
            check_loader_args(&ws[i + 1..], problems);
        }
    }
    found
}

struct Report {
    problems: Vec<String>,
    commands: usize,
    tomls: usize,
}

fn temp_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("egress-docs-{}", egress_tests::unique_suffix()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("temp file");
    path
}

fn check_toml(block: &Block, problems: &mut Vec<String>) {
    let marks: Vec<&str> = block.info.split_whitespace().skip(1).collect();
    let path = temp_file("example.toml", &block.text);
    let out = Command::new(loader_bin())
        .arg("check-config")
        .arg(&path)
        .output()
        .expect("running check-config");
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
    let stderr = String::from_utf8_lossy(&out.stderr);
    if marks.contains(&"refused") {
        if out.status.code() != Some(2) {
            problems.push(format!(
                "TOML marked `refused` was not refused with exit status 2 ({})",
                out.status
            ));
        }
    } else if !out.status.success() {
        problems.push(format!(
            "TOML example does not validate ({}): {}",
            out.status,
            stderr.trim()
        ));
    }
    if marks.contains(&"defaults") {
        let defaults = stdout_ok(
            "egress-loader check-config --defaults",
            Command::new(loader_bin())
                .args(["check-config", "--defaults"])
                .output(),
        );
        if defaults != block.text {
            problems.push(format!(
                "TOML marked `defaults` differs from `egress-loader check-config --defaults`, which prints:\n{defaults}"
            ));
        }
    }
}

/// Every check on one document (`name` is relative to the workspace root).
fn check_document(name: &str, md: &str) -> Report {
    let mut report = Report {
        problems: Vec::new(),
        commands: 0,
        tomls: 0,
    };
    let (blocks, prose) = split_markdown(md);
    let add = |line: usize, code: &str, found: Vec<String>, report: &mut Report| {
        for p in found {
            report
                .problems
                .push(format!("{name}:{line}: `{}`: {p}", code.trim()));
        }
    };
    for b in &blocks {
        let lang = b.info.split_whitespace().next().unwrap_or("");
        if lang == "toml" {
            let mut found = Vec::new();
            check_toml(b, &mut found);
            report.tomls += 1;
            add(b.line, "toml block", found, &mut report);
            continue;
        }
        for (i, line) in logical_lines(&b.text).iter().enumerate() {
            let mut found = Vec::new();
            report.commands += check_line(line, &mut found);
            add(b.line + 1 + i, line, found, &mut report);
        }
    }
    for &(n, line) in &prose {
        for span in code_spans(line) {
            let mut found = Vec::new();
            report.commands += check_line(&span, &mut found);
            add(n, &span, found, &mut report);
        }
    }
    // Relative links and their anchors.
    let root = workspace_root();
    let dir = Path::new(name).parent().unwrap_or(Path::new(""));
    for (n, target) in links(&prose) {
        if target.contains("://") || target.starts_with("mailto:") {
            continue;
        }
        let (file, anchor) = match target.split_once('#') {
            Some((f, a)) => (f, Some(a)),
            None => (target.as_str(), None),
        };
        let path = if file.is_empty() {
            root.join(name)
        } else {
            root.join(dir).join(file)
        };
        if !path.exists() {
            report.problems.push(format!(
                "{name}:{n}: link to {target}: {} does not exist",
                path.display()
            ));
            continue;
        }
        if let Some(anchor) = anchor
            && path.extension().is_some_and(|e| e == "md")
        {
            let text = std::fs::read_to_string(&path).expect("linked doc");
            if !anchors(&text).contains(anchor) {
                report.problems.push(format!(
                    "{name}:{n}: link to {target}: no heading with anchor #{anchor}"
                ));
            }
        }
    }
    report
}

#[test]
fn the_docs_show_real_commands_and_valid_configs() {
    let docs = documents();
    let mut problems = Vec::new();
    let (mut commands, mut tomls) = (0, 0);
    for (name, text) in &docs {
        let r = check_document(name, text);
        problems.extend(r.problems);
        commands += r.commands;
        tomls += r.tomls;
    }
    // Every doc is reachable from the front page.
    let readme = &docs[0].1;
    for (name, _) in &docs[1..] {
        if !readme.contains(&format!("]({name})")) {
            problems.push(format!("README.md does not link {name}"));
        }
    }
    println!(
        "checked {commands} commands and {tomls} TOML blocks in {} documents",
        docs.len()
    );
    assert!(
        problems.is_empty(),
        "{} problem(s) in the docs:\n{}",
        problems.len(),
        problems.join("\n")
    );
    // The checks looked at something: the README alone shows several commands.
    assert!(
        commands >= 20 && tomls >= 3,
        "{commands} commands, {tomls} TOML blocks: is the parser broken?"
    );
}

/// The checker itself: made-up names and bad examples are caught, real
/// ones are not (a checker that accepts everything would pass the test above).
#[test]
fn made_up_commands_and_bad_examples_are_caught() {
    let md = "\
Prose with `egress-loader counters --json` and `egress-loader status --no-such-flag`.

```sh
$ egress-loader counters --watch --interval 5 | head -3   # fine
docker exec egress-filter egress-loader frobnicate
cargo xtask run -- --dry-run --smtp-rate 10/minute
cargo xtask run -- --smtp-rat 10/minute
cargo xtask run --no-such-xtask-flag -- counters --json
cargo xtask bogus
docker run -d --network host -v /sys/fs/bpf:/sys/fs/bpf egress-filter:latest run --ifac cni0
egress-loader check-config (FILE | --defaults)
egress-loader counters [--json | --watch [--interval SECONDS] [--count N]]
egress-loader verify [--pin-dir DIR] [--iface PATTERN]... [--smtp-syn N]
```

```toml
[smtp]
rate = \"5/fortnight\"
```

```toml refused
[smtp]
rate = \"5/minute\"
```

```toml defaults
dry_run = false
```

See [nowhere](no-such-file.md) and [the design](design.md#no-such-heading).
";
    let r = check_document("docs/selftest.md", md);
    let expect = [
        (
            "`egress-loader status --no-such-flag`",
            "has no option --no-such-flag",
        ),
        ("frobnicate", "has no subcommand \"frobnicate\""),
        (
            "--smtp-rat 10/minute",
            "`egress-loader run` has no option --smtp-rat",
        ),
        (
            "--no-such-xtask-flag",
            "`cargo xtask run` has no option --no-such-xtask-flag",
        ),
        ("cargo xtask bogus", "has no command \"bogus\""),
        ("--ifac cni0", "`egress-loader run` has no option --ifac"),
        (
            "--smtp-syn N",
            "`egress-loader verify` has no option --smtp-syn",
        ),
        ("toml block", "does not validate"),
        ("toml block", "was not refused with exit status 2"),
        (
            "toml block",
            "differs from `egress-loader check-config --defaults`",
        ),
        ("no-such-file.md", "does not exist"),
        (
            "design.md#no-such-heading",
            "no heading with anchor #no-such-heading",
        ),
    ];
    for (context, problem) in expect {
        assert!(
            r.problems
                .iter()
                .any(|p| p.contains(context) && p.contains(problem)),
            "expected a problem with {context:?} saying {problem:?}; got:\n{}",
            r.problems.join("\n")
        );
    }
    assert_eq!(
        r.problems.len(),
        expect.len(),
        "only the planted mistakes are problems:\n{}",
        r.problems.join("\n")
    );
    assert_eq!(r.commands, 12, "commands found");
}

#[test]
fn markdown_and_shell_words() {
    assert_eq!(
        slug("Drop events: who tried what"),
        "drop-events-who-tried-what"
    );
    assert_eq!(
        slug("Where the parser's view ends"),
        "where-the-parsers-view-ends"
    );
    assert_eq!(
        slug("Proving it works on this host: `verify`"),
        "proving-it-works-on-this-host-verify"
    );
    assert_eq!(
        command_words("egress-loader counters --json | jq '.counters[] | select(.x)' # c"),
        ["egress-loader", "counters", "--json"]
    );
    assert_eq!(
        command_words("egress-loader counters [--json | --watch [--count N]]"),
        [
            "egress-loader",
            "counters",
            "[--json",
            "|",
            "--watch",
            "[--count",
            "N]]"
        ]
    );
    assert_eq!(flag_name("[--block"), Some("--block".into()));
    assert_eq!(flag_name("--pin-dir=/x"), Some("--pin-dir".into()));
    assert_eq!(flag_name("PATTERN]..."), None);
    assert_eq!(code_spans("a `x` b ``y `z` `` c"), ["x", "y `z`"]);
    assert_eq!(logical_lines("a \\\n  b\nc\n"), ["a    b", "c"]);
}

/// The rows of the first table under `heading` in `md`: the cells of each row.
fn table_under(md: &str, heading: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut inside = false;
    for line in md.lines() {
        if line.starts_with('#') {
            if inside && !rows.is_empty() {
                break;
            }
            inside = line.trim_start_matches('#').trim() == heading;
            continue;
        }
        if !inside {
            continue;
        }
        let t = line.trim();
        if t.starts_with('|') {
            let cells: Vec<String> = t
                .trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_string())
                .collect();
            if !cells
                .iter()
                .all(|c| c.chars().all(|ch| ch == '-' || ch == ':'))
            {
                rows.push(cells);
            }
        } else if !rows.is_empty() {
            break;
        }
    }
    rows.into_iter().skip(1).collect() // the header row
}

/// configuration.md is the reference: its table of `run`'s flags lists every
/// flag `run --help` has and no other, and its table of keys names every key
/// `check-config --defaults` writes.
#[test]
fn configuration_md_documents_every_flag_and_key() {
    let md = std::fs::read_to_string(workspace_root().join("docs/configuration.md"))
        .expect("docs/configuration.md");
    let mut problems = Vec::new();

    let documented: BTreeSet<String> = table_under(&md, "Flags of `run`")
        .iter()
        .flat_map(|row| code_spans(&row[0]))
        .filter_map(|span| span.split_whitespace().next().and_then(flag_name))
        .collect();
    let real: BTreeSet<String> = loader_cli().commands["run"]
        .iter()
        .filter(|f| !["-h", "--help"].contains(&f.as_str()))
        .cloned()
        .collect();
    for f in real.difference(&documented) {
        problems.push(format!(
            "`run` flag {f} is missing from the table \"Flags of `run`\""
        ));
    }
    for f in documented.difference(&real) {
        problems.push(format!(
            "the table \"Flags of `run`\" lists {f}, which `run` does not have"
        ));
    }

    let keys: BTreeSet<String> = table_under(&md, "The file")
        .iter()
        .flat_map(|row| code_spans(&row[0]))
        .collect();
    let defaults = stdout_ok(
        "egress-loader check-config --defaults",
        Command::new(loader_bin())
            .args(["check-config", "--defaults"])
            .output(),
    );
    let mut section = String::new();
    for line in defaults.lines().map(str::trim) {
        if line.starts_with('#') {
            continue;
        } else if line.starts_with('[') {
            section = line.to_string();
        } else if let Some((key, _)) = line.split_once('=') {
            let key = key.trim();
            let name = if section.is_empty() {
                key.to_string()
            } else {
                format!("{section} {key}")
            };
            if !keys.contains(&name) {
                problems.push(format!(
                    "key `{name}` is missing from the table \"The file\""
                ));
            }
        }
    }
    assert!(
        documented.len() > 10 && keys.len() > 10,
        "tables not found: {documented:?} {keys:?}"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
