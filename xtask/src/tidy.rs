//! Tidy checks: the repository's architecture rules, checked on its text.
//!
//! - p2p-core's `[dependencies]` name only the allowed crates, and no IO crate;
//! - p2p-core's sources never read a clock, draw OS randomness, touch the network, files or
//!   threads, or print (comments are exempt);
//! - no placeholder macro is left in any `.rs` file of the repository;
//! - every workspace library warns (or denies) on missing docs;
//! - the driver library, p2p-tokio with its default features, pulls in none of the crates of the
//!   binaries and harnesses ([`DRIVER_EXCLUDED_DEPS`]), as `cargo tree` resolves it.
//!
//! `cargo xtask tidy` and `cargo xtask ci` run them, and so does `cargo test` through the tests at
//! the bottom of this file. Each checker is a pure function over one file's text (or one command's
//! output), so the unit tests show on small examples that it fails when it should.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use crate::{TaskError, shell};

/// The only crates p2p-core may depend on (normal dependencies; dev-dependencies are free).
pub const CORE_ALLOWED_DEPS: &[&str] = &[
    "bytes",
    "sha2",
    "hashbrown",
    "smallvec",
    "siphasher",
    "thiserror",
];

/// Crates that perform IO, named in their own error message when p2p-core depends on them.
pub const IO_CRATES: &[&str] = &["tokio", "rustls", "socket2", "mio", "async-std"];

/// What p2p-core's code (outside comments) must never contain: clocks, OS randomness, IO,
/// threads and printing.
pub const CORE_FORBIDDEN: &[&str] = &[
    "Instant::now",
    "SystemTime::now",
    "thread_rng",
    "rand::random",
    "OsRng",
    "std::net",
    "std::fs",
    "tokio",
    "std::thread",
    "println!",
    "eprintln!",
    "print!",
    "eprint!",
];

/// Crates that must not be anywhere in p2p-tokio's normal dependency tree (default features):
/// those of the command-line binaries, the benchmark harness and the simulator.
pub const DRIVER_EXCLUDED_DEPS: &[&str] = &[
    "clap",
    "toml",
    "serde_json",
    "tracing-subscriber",
    "p2p-testkit",
];

/// Modules of `std` that p2p-core must not import through a `use std::{...}` group either.
const CORE_FORBIDDEN_STD_MODULES: &[&str] = &["net", "fs", "thread"];

/// Placeholder macros that must not be left anywhere. Each is built from two pieces so that this
/// file does not contain the patterns it looks for.
pub const PLACEHOLDERS: &[&str] = &[
    concat!("to", "do!("),
    concat!("unimple", "mented!("),
    concat!("db", "g!("),
];

/// One broken rule, at a file and (when it is about one line) a line number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The file, relative to the workspace root.
    pub file: String,
    /// 1-based line number, or 0 when the violation is about the whole file.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl Violation {
    fn new(file: &str, line: usize, message: impl Into<String>) -> Self {
        Violation {
            file: file.to_owned(),
            line,
            message: message.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}:{}: {}", self.file, self.line, self.message)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Entry point.

/// Runs every check on the repository, prints what it finds, and fails if anything is wrong.
pub fn run() -> Result<(), TaskError> {
    let root = shell::workspace_root();
    let checks: [(&str, RepoCheck); 5] = [
        ("p2p-core depends on no IO crate", repo_core_manifest),
        (
            "p2p-core sources: no clock, randomness, IO or printing",
            repo_core_sources,
        ),
        ("no placeholder macros in *.rs", repo_placeholders),
        (
            "every library warns on missing docs",
            repo_missing_docs_lints,
        ),
        (
            "p2p-tokio depends on no binary or harness crate",
            repo_driver_tree,
        ),
    ];
    let mut failed = 0;
    for (name, check) in checks {
        let violations = check(&root);
        if violations.is_empty() {
            println!("tidy: {name}: ok");
        } else {
            println!("tidy: {name}: {} violation(s)", violations.len());
            for v in &violations {
                println!("  {v}");
            }
            failed += violations.len();
        }
    }
    if failed == 0 {
        Ok(())
    } else {
        Err(TaskError::Failed(format!("{failed} tidy violation(s)")))
    }
}

// ---------------------------------------------------------------------------------------------
// The checks against the repository.

/// A check of the whole repository, given its root.
type RepoCheck = fn(&Path) -> Vec<Violation>;

/// Check (a) on `p2p-core/Cargo.toml`.
pub fn repo_core_manifest(root: &Path) -> Vec<Violation> {
    let file = "p2p-core/Cargo.toml";
    match fs::read_to_string(root.join(file)) {
        Ok(text) => check_core_manifest(file, &text),
        Err(e) => vec![Violation::new(file, 0, format!("cannot read: {e}"))],
    }
}

/// Check (b) on every `.rs` file under `p2p-core/src`.
pub fn repo_core_sources(root: &Path) -> Vec<Violation> {
    let dir = "p2p-core/src";
    let mut violations = Vec::new();
    let files = rust_files(root, &root.join(dir), &mut violations);
    if files.is_empty() && violations.is_empty() {
        violations.push(Violation::new(
            dir,
            0,
            "no .rs files found: is the path right?",
        ));
    }
    for path in files {
        let file = relative(root, &path);
        match fs::read_to_string(&path) {
            Ok(text) => violations.extend(check_core_source(&file, &text)),
            Err(e) => violations.push(Violation::new(&file, 0, format!("cannot read: {e}"))),
        }
    }
    violations
}

/// Check (c) on every `.rs` file of the repository outside build directories.
pub fn repo_placeholders(root: &Path) -> Vec<Violation> {
    let mut violations = Vec::new();
    let files = rust_files(root, root, &mut violations);
    if files.is_empty() && violations.is_empty() {
        violations.push(Violation::new(
            ".",
            0,
            "no .rs files found: is the root right?",
        ));
    }
    for path in files {
        let file = relative(root, &path);
        match fs::read_to_string(&path) {
            Ok(text) => violations.extend(check_placeholders(&file, &text)),
            Err(e) => violations.push(Violation::new(&file, 0, format!("cannot read: {e}"))),
        }
    }
    violations
}

/// Check (d) on the `src/lib.rs` of every workspace member that has one.
pub fn repo_missing_docs_lints(root: &Path) -> Vec<Violation> {
    let manifest = "Cargo.toml";
    let text = match fs::read_to_string(root.join(manifest)) {
        Ok(text) => text,
        Err(e) => return vec![Violation::new(manifest, 0, format!("cannot read: {e}"))],
    };
    let mut violations = Vec::new();
    let mut libraries = 0;
    for member in expand_members(root, &workspace_members(&text), &mut violations) {
        let lib = root.join(&member).join("src").join("lib.rs");
        if !lib.is_file() {
            continue;
        }
        libraries += 1;
        let file = relative(root, &lib);
        match fs::read_to_string(&lib) {
            Ok(text) => violations.extend(check_missing_docs_lint(&file, &text)),
            Err(e) => violations.push(Violation::new(&file, 0, format!("cannot read: {e}"))),
        }
    }
    if libraries == 0 && violations.is_empty() {
        violations.push(Violation::new(
            manifest,
            0,
            "no workspace member has a src/lib.rs: are the members parsed right?",
        ));
    }
    violations
}

/// Check (e): `cargo tree -p p2p-tokio -e normal`, default features, names no
/// [`DRIVER_EXCLUDED_DEPS`] crate.
pub fn repo_driver_tree(root: &Path) -> Vec<Violation> {
    let what = "cargo tree -p p2p-tokio -e normal";
    let mut cmd = shell::cargo();
    cmd.current_dir(root).args([
        "tree",
        "--quiet",
        "-p",
        "p2p-tokio",
        "-e",
        "normal",
        "--prefix",
        "none",
    ]);
    match cmd.output() {
        Ok(out) if out.status.success() => {
            check_driver_tree(what, &String::from_utf8_lossy(&out.stdout))
        }
        Ok(out) => vec![Violation::new(
            what,
            0,
            format!(
                "failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        )],
        Err(e) => vec![Violation::new(what, 0, format!("cannot run: {e}"))],
    }
}

// ---------------------------------------------------------------------------------------------
// (a) p2p-core's manifest.

/// Checks the `[dependencies]` of p2p-core's manifest (also target-specific ones and
/// `[dependencies.NAME]` tables; dev- and build-dependencies are not checked).
pub fn check_core_manifest(file: &str, text: &str) -> Vec<Violation> {
    let mut violations = Vec::new();
    let mut check = |line: usize, name: &str| {
        if IO_CRATES.contains(&name) {
            violations.push(Violation::new(
                file,
                line,
                format!("p2p-core must not depend on the IO crate `{name}`"),
            ));
        } else if !CORE_ALLOWED_DEPS.contains(&name) {
            violations.push(Violation::new(
                file,
                line,
                format!(
                    "p2p-core may depend only on {}; `{name}` is not allowed",
                    CORE_ALLOWED_DEPS.join(", ")
                ),
            ));
        }
    };

    /// Where in the manifest a line is.
    enum Section {
        /// `[dependencies]` or `[target.X.dependencies]`: each key is a dependency.
        Deps,
        /// `[dependencies.NAME]`: keys are the fields of one dependency.
        DepTable,
        /// Anything else.
        Other,
    }
    let mut section = Section::Other;
    let mut open_brackets = 0usize;
    for (index, raw) in text.lines().enumerate() {
        let line_no = index + 1;
        let line = strip_toml_comment(raw).trim();
        if open_brackets > 0 {
            // Inside a multi-line array: no keys or headers here.
            open_brackets = (open_brackets + count_outside_strings(line, '['))
                .saturating_sub(count_outside_strings(line, ']'));
            continue;
        }
        if line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            section = Section::Other;
            if line.starts_with("[[") {
                continue;
            }
            let inner = line.trim_start_matches('[').trim_end_matches(']');
            let path = split_toml_key(inner);
            let path: Vec<&str> = path.iter().map(String::as_str).collect();
            match path.as_slice() {
                ["dependencies"] | ["target", _, "dependencies"] => section = Section::Deps,
                ["dependencies", name] | ["target", _, "dependencies", name] => {
                    check(line_no, name);
                    section = Section::DepTable;
                }
                _ => {}
            }
            continue;
        }
        let Some((key, value)) = split_key_value(line) else {
            continue;
        };
        open_brackets =
            count_outside_strings(value, '[').saturating_sub(count_outside_strings(value, ']'));
        let key = split_toml_key(key);
        match section {
            Section::Deps => {
                if let Some(name) = key.first() {
                    check(line_no, name);
                }
                if let Some(package) = inline_string_field(value, "package") {
                    check(line_no, &package);
                }
            }
            Section::DepTable => {
                if key.len() == 1
                    && key[0] == "package"
                    && let Some(package) = unquote(value.trim())
                {
                    check(line_no, &package);
                }
            }
            Section::Other => {}
        }
    }
    violations
}

/// The line without a `#` comment (a `#` inside a string is kept).
fn strip_toml_comment(line: &str) -> &str {
    let mut in_string: Option<char> = None;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match in_string {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' && q == '"' {
                    escaped = true;
                } else if c == q {
                    in_string = None;
                }
            }
            None if c == '"' || c == '\'' => in_string = Some(c),
            None if c == '#' => return &line[..i],
            None => {}
        }
    }
    line
}

/// How often `needle` occurs outside quoted strings.
fn count_outside_strings(line: &str, needle: char) -> usize {
    let mut in_string: Option<char> = None;
    let mut count = 0;
    for c in line.chars() {
        match in_string {
            Some(q) if c == q => in_string = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => in_string = Some(c),
            None if c == needle => count += 1,
            None => {}
        }
    }
    count
}

/// Splits `key = value` at the first `=` outside quotes.
fn split_key_value(line: &str) -> Option<(&str, &str)> {
    let mut in_string: Option<char> = None;
    for (i, c) in line.char_indices() {
        match in_string {
            Some(q) if c == q => in_string = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => in_string = Some(c),
            None if c == '=' => return Some((line[..i].trim(), &line[i + 1..])),
            None => {}
        }
    }
    None
}

/// Splits a dotted TOML key (`target.'cfg(unix)'.dependencies`) into unquoted parts.
fn split_toml_key(key: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut in_string: Option<char> = None;
    for c in key.chars() {
        match in_string {
            Some(q) if c == q => in_string = None,
            Some(_) => current.push(c),
            None if c == '"' || c == '\'' => in_string = Some(c),
            None if c == '.' => parts.push(std::mem::take(&mut current).trim().to_owned()),
            None => current.push(c),
        }
    }
    parts.push(current.trim().to_owned());
    parts
}

/// The string value of `field` in an inline table such as `{ package = "tokio", version = "1" }`.
fn inline_string_field(value: &str, field: &str) -> Option<String> {
    let body = value
        .trim()
        .strip_prefix('{')?
        .trim_end()
        .strip_suffix('}')?;
    let mut in_string: Option<char> = None;
    let mut start = 0;
    let mut items = Vec::new();
    for (i, c) in body.char_indices() {
        match in_string {
            Some(q) if c == q => in_string = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => in_string = Some(c),
            None if c == ',' => {
                items.push(&body[start..i]);
                start = i + 1;
            }
            None => {}
        }
    }
    items.push(&body[start..]);
    items.into_iter().find_map(|item| {
        let (key, value) = split_key_value(item)?;
        (key == field).then(|| unquote(value.trim())).flatten()
    })
}

/// The content of a `"basic"` or `'literal'` TOML string.
fn unquote(value: &str) -> Option<String> {
    let inner = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))?;
    Some(inner.to_owned())
}

// ---------------------------------------------------------------------------------------------
// (b) p2p-core's sources.

/// Checks one p2p-core source file for [`CORE_FORBIDDEN`] patterns outside comments, and for
/// `use std::{net, fs, thread}` groups.
pub fn check_core_source(file: &str, text: &str) -> Vec<Violation> {
    let code = strip_comments(text);
    let mut violations = Vec::new();
    for (index, line) in code.lines().enumerate() {
        for pattern in CORE_FORBIDDEN {
            if find_token(line, pattern).is_some() {
                violations.push(Violation::new(
                    file,
                    index + 1,
                    format!("`{pattern}` in p2p-core (no clock, randomness, IO or printing)"),
                ));
            }
        }
    }
    for (line, module) in std_group_imports(&code) {
        if CORE_FORBIDDEN_STD_MODULES.contains(&module.as_str()) {
            violations.push(Violation::new(
                file,
                line,
                format!("`std::{module}` imported in a `std::{{..}}` group in p2p-core"),
            ));
        }
    }
    violations.sort_by_key(|v| v.line);
    violations
}

/// Returns `src` with every comment (line, block, doc) replaced by spaces; newlines, strings and
/// all other code stay where they were, so line numbers are unchanged.
pub fn strip_comments(src: &str) -> String {
    let chars: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        // Line comment.
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
            continue;
        }
        // Block comment, which nests in Rust.
        if c == '/' && next == Some('*') {
            let mut depth = 0usize;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
            continue;
        }
        let at_token_start = i == 0 || !is_ident_char(chars[i - 1]);
        // Raw strings: r"..", r#".."#, br"..", cr"..".
        if at_token_start {
            let prefix = if c == 'r' {
                1
            } else if (c == 'b' || c == 'c') && next == Some('r') {
                2
            } else {
                0
            };
            if prefix > 0 {
                let mut j = i + prefix;
                let mut hashes = 0;
                while chars.get(j) == Some(&'#') {
                    hashes += 1;
                    j += 1;
                }
                if chars.get(j) == Some(&'"') {
                    let end = raw_string_end(&chars, j + 1, hashes);
                    out.extend(&chars[i..end]);
                    i = end;
                    continue;
                }
            }
        }
        // Ordinary (byte, C) strings.
        if c == '"' {
            let mut j = i + 1;
            while j < chars.len() && chars[j] != '"' {
                j += if chars[j] == '\\' { 2 } else { 1 };
            }
            let end = (j + 1).min(chars.len());
            out.extend(&chars[i..end]);
            i = end;
            continue;
        }
        // Character literals ('x', '\n', '"'); a lifetime or label ('a) is left as code.
        if c == '\'' {
            let end = if next == Some('\\') {
                let mut j = i + 3;
                while j < chars.len() && chars[j] != '\'' && chars[j] != '\n' {
                    j += 1;
                }
                Some(j + 1)
            } else if chars.get(i + 2) == Some(&'\'') {
                Some(i + 3)
            } else {
                None
            };
            if let Some(end) = end {
                let end = end.min(chars.len());
                out.extend(&chars[i..end]);
                i = end;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    out
}

/// The index just past the end of a raw string whose body starts at `start`.
fn raw_string_end(chars: &[char], start: usize, hashes: usize) -> usize {
    let mut j = start;
    while j < chars.len() {
        if chars[j] == '"' && (1..=hashes).all(|k| chars.get(j + k) == Some(&'#')) {
            return j + 1 + hashes;
        }
        j += 1;
    }
    chars.len()
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The byte offset of the first occurrence of `pattern` in `line` that is not part of a longer
/// identifier (so `eprintln!` is not a `println!`, nor `p2p_tokio` a `tokio`).
pub fn find_token(line: &str, pattern: &str) -> Option<usize> {
    let first_is_ident = pattern.chars().next().is_some_and(is_ident_char);
    let last_is_ident = pattern.chars().next_back().is_some_and(is_ident_char);
    let mut from = 0;
    while let Some(offset) = line[from..].find(pattern) {
        let start = from + offset;
        let end = start + pattern.len();
        let before_ok =
            !first_is_ident || !line[..start].chars().next_back().is_some_and(is_ident_char);
        let after_ok = !last_is_ident || !line[end..].chars().next().is_some_and(is_ident_char);
        if before_ok && after_ok {
            return Some(start);
        }
        from = start + pattern.chars().next().map_or(1, char::len_utf8);
    }
    None
}

/// The first-level items of every `std::{...}` group in comment-free `code`, with their line.
fn std_group_imports(code: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(offset) = code[from..].find("std::{") {
        let start = from + offset;
        from = start + "std::{".len();
        if code[..start].chars().next_back().is_some_and(is_ident_char) {
            continue;
        }
        let mut depth = 1usize;
        let mut at_item_start = true;
        let mut ident = String::new();
        let mut ident_start = from;
        for (i, c) in code[from..].char_indices() {
            let pos = from + i;
            if is_ident_char(c) {
                if ident.is_empty() {
                    ident_start = pos;
                }
                ident.push(c);
                continue;
            }
            if !ident.is_empty() {
                if depth == 1 && at_item_start {
                    let line = code[..ident_start].matches('\n').count() + 1;
                    found.push((line, std::mem::take(&mut ident)));
                } else {
                    ident.clear();
                }
                at_item_start = false;
            }
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                ',' if depth == 1 => at_item_start = true,
                _ => {}
            }
        }
    }
    found
}

// ---------------------------------------------------------------------------------------------
// (c) placeholder macros.

/// Checks one `.rs` file for [`PLACEHOLDERS`], comments included.
pub fn check_placeholders(file: &str, text: &str) -> Vec<Violation> {
    let mut violations = Vec::new();
    for (index, line) in text.lines().enumerate() {
        for pattern in PLACEHOLDERS {
            if find_token(line, pattern).is_some() {
                violations.push(Violation::new(
                    file,
                    index + 1,
                    format!("placeholder `{pattern}..)` left in the code"),
                ));
            }
        }
    }
    violations
}

// ---------------------------------------------------------------------------------------------
// (d) missing docs.

/// Checks that a crate root has `#![warn(missing_docs)]` or `#![deny(missing_docs)]` (or
/// `forbid`, or the lint among others in the same attribute).
pub fn check_missing_docs_lint(file: &str, text: &str) -> Vec<Violation> {
    if has_missing_docs_lint(&strip_comments(text)) {
        Vec::new()
    } else {
        vec![Violation::new(
            file,
            0,
            "crate root lacks `#![warn(missing_docs)]` (or `deny`)",
        )]
    }
}

fn has_missing_docs_lint(code: &str) -> bool {
    let mut rest = code;
    while let Some(offset) = rest.find("#![") {
        rest = &rest[offset + 3..];
        let attr = rest.trim_start();
        let Some(args) = ["warn", "deny", "forbid"]
            .iter()
            .find_map(|level| attr.strip_prefix(level))
            .and_then(|after| after.trim_start().strip_prefix('('))
        else {
            continue;
        };
        let Some(close) = args.find(')') else {
            continue;
        };
        if args[..close]
            .split(',')
            .any(|lint| lint.trim() == "missing_docs")
        {
            return true;
        }
    }
    false
}

// ---------------------------------------------------------------------------------------------
// (e) the driver's dependency tree.

/// Checks the output of `cargo tree --prefix none` (one `name vX.Y.Z ...` per line) of p2p-tokio
/// for [`DRIVER_EXCLUDED_DEPS`]; each crate is reported once. `source` names the command.
pub fn check_driver_tree(source: &str, tree: &str) -> Vec<Violation> {
    let mut violations = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    let mut packages = 0;
    for line in tree.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        packages += 1;
        if DRIVER_EXCLUDED_DEPS.contains(&name) && !seen.contains(&name) {
            seen.push(name);
            violations.push(Violation::new(
                source,
                0,
                format!(
                    "p2p-tokio's library depends on `{name}`; binaries and harnesses belong in \
                     their own packages (p2p-node, p2p-bench) or behind a non-default feature"
                ),
            ));
        }
    }
    if packages == 0 {
        violations.push(Violation::new(
            source,
            0,
            "the dependency tree is empty: is the command right?",
        ));
    }
    violations
}

// ---------------------------------------------------------------------------------------------
// Walking the repository.

/// The entries of `members = [...]` in the `[workspace]` section of a root manifest.
pub fn workspace_members(manifest: &str) -> Vec<String> {
    let mut in_workspace = false;
    let mut collecting = false;
    let mut members = Vec::new();
    for raw in manifest.lines() {
        let line = strip_toml_comment(raw).trim();
        if !collecting && line.starts_with('[') {
            in_workspace = line == "[workspace]";
            continue;
        }
        let list = if collecting {
            line
        } else if in_workspace {
            match split_key_value(line) {
                Some(("members", value)) => {
                    collecting = true;
                    value.trim().trim_start_matches('[')
                }
                _ => continue,
            }
        } else {
            continue;
        };
        let (items, closed) = match list.find(']') {
            Some(end) => (&list[..end], true),
            None => (list, false),
        };
        members.extend(
            items
                .split(',')
                .filter_map(|item| unquote(item.trim()))
                .filter(|m| !m.is_empty()),
        );
        if closed {
            collecting = false;
        }
    }
    members
}

/// Member paths with `dir/*` globs expanded to the directories under `dir` with a Cargo.toml.
fn expand_members(root: &Path, members: &[String], violations: &mut Vec<Violation>) -> Vec<String> {
    let mut out = Vec::new();
    for member in members {
        if let Some(dir) = member.strip_suffix("/*") {
            match fs::read_dir(root.join(dir)) {
                Ok(entries) => {
                    let mut found: Vec<String> = entries
                        .filter_map(Result::ok)
                        .filter(|e| e.path().join("Cargo.toml").is_file())
                        .map(|e| format!("{dir}/{}", e.file_name().to_string_lossy()))
                        .collect();
                    found.sort();
                    out.extend(found);
                }
                Err(e) => violations.push(Violation::new(
                    "Cargo.toml",
                    0,
                    format!("cannot list workspace member glob `{member}`: {e}"),
                )),
            }
        } else if member.contains(['*', '?', '[']) {
            violations.push(Violation::new(
                "Cargo.toml",
                0,
                format!(
                    "tidy does not understand the member glob `{member}`; extend expand_members"
                ),
            ));
        } else {
            out.push(member.clone());
        }
    }
    out
}

/// Whether a directory is skipped by the walk: hidden ones and build output.
fn is_skipped_dir(name: &str) -> bool {
    name.starts_with('.') || name == "target" || name.starts_with("target-")
}

/// Every `.rs` file under `dir`, sorted, outside skipped directories; symbolic links are not
/// followed. Unreadable directories become violations.
fn rust_files(root: &Path, dir: &Path, violations: &mut Vec<Violation>) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) => {
                violations.push(Violation::new(
                    &relative(root, &dir),
                    0,
                    format!("cannot list directory: {e}"),
                ));
                continue;
            }
        };
        for entry in entries.filter_map(Result::ok) {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if kind.is_dir() && !is_skipped_dir(&name) {
                stack.push(entry.path());
            } else if kind.is_file() && name.ends_with(".rs") {
                files.push(entry.path());
            }
        }
    }
    files.sort();
    files
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .replace('\\', "/")
}

// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(violations: &[Violation]) -> String {
        violations
            .iter()
            .map(|v| format!("  {v}\n"))
            .collect::<String>()
    }

    // --- The checks against this repository (what `cargo test` enforces). ---

    #[test]
    fn repository_core_manifest_depends_on_no_io_crate() {
        let v = repo_core_manifest(&shell::workspace_root());
        assert!(v.is_empty(), "tidy violations:\n{}", messages(&v));
    }

    #[test]
    fn repository_core_sources_read_no_clock_randomness_or_io() {
        let v = repo_core_sources(&shell::workspace_root());
        assert!(v.is_empty(), "tidy violations:\n{}", messages(&v));
    }

    #[test]
    fn repository_has_no_placeholder_macros() {
        let v = repo_placeholders(&shell::workspace_root());
        assert!(v.is_empty(), "tidy violations:\n{}", messages(&v));
    }

    #[test]
    fn repository_libraries_warn_on_missing_docs() {
        let v = repo_missing_docs_lints(&shell::workspace_root());
        assert!(v.is_empty(), "tidy violations:\n{}", messages(&v));
    }

    #[test]
    fn repository_driver_depends_on_no_binary_or_harness_crate() {
        let v = repo_driver_tree(&shell::workspace_root());
        assert!(v.is_empty(), "tidy violations:\n{}", messages(&v));
    }

    #[test]
    fn repository_walk_sees_sources_and_skips_build_output() {
        let root = shell::workspace_root();
        let mut violations = Vec::new();
        let files: Vec<String> = rust_files(&root, &root, &mut violations)
            .iter()
            .map(|p| relative(&root, p))
            .collect();
        assert!(violations.is_empty(), "{}", messages(&violations));
        assert!(
            files.iter().any(|f| f == "p2p-core/src/lib.rs"),
            "{files:?}"
        );
        assert!(files.iter().any(|f| f == "xtask/src/tidy.rs"), "{files:?}");
        assert!(
            !files
                .iter()
                .any(|f| f.starts_with("target/") || f.contains("/target/")),
            "{files:?}"
        );
    }

    #[test]
    fn repository_members_include_the_core() {
        let root = shell::workspace_root();
        let text = fs::read_to_string(root.join("Cargo.toml")).expect("root manifest");
        let members = workspace_members(&text);
        assert!(members.iter().any(|m| m == "p2p-core"), "{members:?}");
        assert!(members.iter().any(|m| m == "xtask"), "{members:?}");
    }

    // --- (a) The manifest check fails when it should. ---

    const GOOD_MANIFEST: &str = r#"
[package]
name = "p2p-core"  # tokio would be wrong here, but this is a comment

[dependencies]
bytes.workspace = true
sha2 = "0.10"
hashbrown = { version = "0.15", default-features = false }
smallvec = { version = "1", features = [
    "union",
    "const_generics",
] }
thiserror.workspace = true

[dev-dependencies]
tokio = { version = "1", features = ["full"] }
rand = "0.8"

[build-dependencies]
cc = "1"

[[bench]]
name = "core"
harness = false
"#;

    #[test]
    fn manifest_with_only_allowed_dependencies_passes() {
        let v = check_core_manifest("Cargo.toml", GOOD_MANIFEST);
        assert!(v.is_empty(), "{}", messages(&v));
    }

    #[test]
    fn manifest_depending_on_tokio_fails_with_its_line() {
        let text = "[package]\nname = \"p2p-core\"\n\n[dependencies]\nbytes = \"1\"\ntokio = { version = \"1\" }\n";
        let v = check_core_manifest("Cargo.toml", text);
        assert_eq!(v.len(), 1, "{}", messages(&v));
        assert_eq!(v[0].line, 6);
        assert!(v[0].message.contains("IO crate `tokio`"), "{}", v[0]);
    }

    #[test]
    fn manifest_with_each_io_crate_fails() {
        for io in IO_CRATES {
            let text = format!("[dependencies]\n{io} = \"1\"\n");
            let v = check_core_manifest("Cargo.toml", &text);
            assert_eq!(v.len(), 1, "{io}: {}", messages(&v));
        }
    }

    #[test]
    fn manifest_with_an_unlisted_crate_fails() {
        let v = check_core_manifest("Cargo.toml", "[dependencies]\nserde = \"1\"\n");
        assert_eq!(v.len(), 1, "{}", messages(&v));
        assert!(v[0].message.contains("`serde` is not allowed"), "{}", v[0]);
    }

    #[test]
    fn manifest_dependency_table_form_fails() {
        let text = "[dependencies.mio]\nversion = \"1\"\n";
        let v = check_core_manifest("Cargo.toml", text);
        assert_eq!(v.len(), 1, "{}", messages(&v));
        assert_eq!(v[0].line, 1);
    }

    #[test]
    fn manifest_renamed_io_crate_fails() {
        let inline = "[dependencies]\nnet = { package = \"socket2\", version = \"0.5\" }\n";
        let v = check_core_manifest("Cargo.toml", inline);
        assert!(
            v.iter().any(|v| v.message.contains("`socket2`")),
            "{}",
            messages(&v)
        );
        let table = "[dependencies.bytes]\npackage = \"rustls\"\n";
        let v = check_core_manifest("Cargo.toml", table);
        assert!(
            v.iter().any(|v| v.message.contains("`rustls`")),
            "{}",
            messages(&v)
        );
    }

    #[test]
    fn manifest_target_specific_io_dependency_fails() {
        let text = "[target.'cfg(target_os = \"linux\")'.dependencies]\nasync-std = \"1\"\n";
        let v = check_core_manifest("Cargo.toml", text);
        assert_eq!(v.len(), 1, "{}", messages(&v));
        assert!(v[0].message.contains("`async-std`"), "{}", v[0]);
    }

    // --- (b) The core source check fails when it should. ---

    #[test]
    fn core_source_reading_the_clock_fails_with_its_line() {
        let text = "fn f() {\n    let t = std::time::Instant::now();\n}\n";
        let v = check_core_source("src/a.rs", text);
        assert_eq!(v.len(), 1, "{}", messages(&v));
        assert_eq!((v[0].file.as_str(), v[0].line), ("src/a.rs", 2));
        assert!(v[0].message.contains("Instant::now"), "{}", v[0]);
    }

    #[test]
    fn core_source_with_each_forbidden_pattern_fails() {
        for pattern in CORE_FORBIDDEN {
            let text = format!("fn f() {{\n    let _ = {pattern}(x);\n}}\n");
            let v = check_core_source("src/a.rs", &text);
            assert!(
                v.iter().any(|v| v.line == 2 && v.message.contains(pattern)),
                "{pattern}: {}",
                messages(&v)
            );
        }
    }

    #[test]
    fn core_source_mentions_in_comments_pass() {
        let text = "//! Never calls `Instant::now`, never uses tokio.\n\
                    /// Unlike std::net, this is pure.\n\
                    fn f() {} // println!(\"x\")\n\
                    /* a block comment: SystemTime::now\n   /* nested: OsRng */ std::fs */\n\
                    fn g() {}\n";
        let v = check_core_source("src/a.rs", text);
        assert!(v.is_empty(), "{}", messages(&v));
    }

    #[test]
    fn core_source_code_after_a_string_with_slashes_is_still_checked() {
        let text = "const URL: &str = \"http://example\"; fn f() { std::thread::spawn(g); }\n";
        let v = check_core_source("src/a.rs", text);
        assert_eq!(v.len(), 1, "{}", messages(&v));
        assert!(v[0].message.contains("std::thread"), "{}", v[0]);
    }

    #[test]
    fn core_source_code_after_quote_char_literals_and_raw_strings_is_still_checked() {
        let text = "fn f<'a>(x: &'a str) -> bool { x == \"'\" || x.starts_with('\"') }\n\
                    const R: &str = r#\"/* \" */\"#; fn g() { OsRng.next(); }\n";
        let v = check_core_source("src/a.rs", text);
        assert_eq!(v.len(), 1, "{}", messages(&v));
        assert_eq!(v[0].line, 2);
        assert!(v[0].message.contains("OsRng"), "{}", v[0]);
    }

    #[test]
    fn core_source_println_and_eprintln_are_reported_once_each() {
        let text = "fn f() { eprintln!(\"a\"); }\nfn g() { println!(\"b\"); }\n";
        let v = check_core_source("src/a.rs", text);
        let found: Vec<(usize, bool)> = v
            .iter()
            .map(|v| (v.line, v.message.starts_with("`eprintln!`")))
            .collect();
        assert_eq!(found, vec![(1, true), (2, false)], "{}", messages(&v));
    }

    #[test]
    fn core_source_longer_identifiers_are_not_matches() {
        let text = "use p2p_tokio_like as x; fn my_thread_rng_seed() {}\n";
        let v = check_core_source("src/a.rs", text);
        assert!(v.is_empty(), "{}", messages(&v));
    }

    #[test]
    fn core_source_std_group_import_of_net_fails() {
        let text = "use std::{\n    collections::BTreeMap,\n    net::SocketAddr,\n};\n";
        let v = check_core_source("src/a.rs", text);
        assert_eq!(v.len(), 1, "{}", messages(&v));
        assert_eq!(v[0].line, 3);
        let ok = "use std::{collections::BTreeMap, time::{Duration}};\n";
        assert!(check_core_source("src/a.rs", ok).is_empty());
    }

    // --- (c) The placeholder check fails when it should. ---

    #[test]
    fn each_placeholder_macro_fails_with_its_line() {
        for pattern in PLACEHOLDERS {
            let text = format!("fn f() -> u32 {{\n    {pattern})\n}}\n");
            let v = check_placeholders("src/a.rs", &text);
            assert_eq!(v.len(), 1, "{pattern}: {}", messages(&v));
            assert_eq!(v[0].line, 2);
        }
    }

    #[test]
    fn placeholder_lookalikes_pass() {
        // Built in pieces so that simple greps for the placeholders do not flag this file.
        let text = concat!("my_to", "do!(); x.undbg!(y); let todo = 1;\n");
        let v = check_placeholders("src/a.rs", text);
        assert!(v.is_empty(), "{}", messages(&v));
    }

    #[test]
    fn this_file_does_not_contain_its_own_patterns() {
        let text = include_str!("tidy.rs");
        assert!(check_placeholders("xtask/src/tidy.rs", text).is_empty());
    }

    // --- (d) The missing-docs check fails when it should. ---

    #[test]
    fn crate_roots_with_the_lint_pass() {
        for text in [
            "//! Docs.\n#![warn(missing_docs)]\n",
            "#![deny(missing_docs)]\n",
            "#![forbid(unsafe_code)]\n#![warn(\n    unreachable_pub,\n    missing_docs,\n)]\n",
        ] {
            let v = check_missing_docs_lint("src/lib.rs", text);
            assert!(v.is_empty(), "{text:?}: {}", messages(&v));
        }
    }

    #[test]
    fn crate_roots_without_the_lint_fail() {
        for text in [
            "//! Docs.\n#![forbid(unsafe_code)]\n",
            "// #![warn(missing_docs)]\n",
            "#![allow(missing_docs)]\n",
            "#![warn(missing_debug_implementations)]\n",
        ] {
            let v = check_missing_docs_lint("src/lib.rs", text);
            assert_eq!(v.len(), 1, "{text:?} passed but must fail");
        }
    }

    // --- (e) The driver tree check fails when it should. ---

    #[test]
    fn driver_tree_without_excluded_crates_passes() {
        let tree = "p2p-tokio v0.1.0 (/w/p2p-tokio)\nbytes v1.12.2\np2p-core v0.1.0 (/w/p2p-core)\n\
                    bytes v1.12.2\ntokio v1.54.1\ntracing v0.1.44\nserde_core v1.0.0\n";
        let v = check_driver_tree("tree", tree);
        assert!(v.is_empty(), "{}", messages(&v));
    }

    #[test]
    fn driver_tree_with_each_excluded_crate_fails_once() {
        for name in DRIVER_EXCLUDED_DEPS {
            let tree = format!(
                "p2p-tokio v0.1.0 (/w/p2p-tokio)\n{name} v1.0.0\nbytes v1.12.2\n{name} v1.0.0 (*)\n"
            );
            let v = check_driver_tree("tree", &tree);
            assert_eq!(v.len(), 1, "{name}: {}", messages(&v));
            assert!(v[0].message.contains(&format!("`{name}`")), "{}", v[0]);
        }
    }

    #[test]
    fn driver_tree_that_is_empty_fails() {
        assert_eq!(check_driver_tree("tree", "\n").len(), 1);
    }

    #[test]
    fn members_are_read_from_single_and_multi_line_arrays() {
        let one = "[workspace]\nresolver = \"3\"\nmembers = [\"a\", \"b\"]\n[workspace.package]\nversion = \"1\"\n";
        assert_eq!(workspace_members(one), vec!["a", "b"]);
        let many = "[package]\nname = \"x\"\n[workspace]\nmembers = [\n  \"a\", # first\n  \"crates/*\",\n]\nexclude = [\"fuzz\"]\n";
        assert_eq!(workspace_members(many), vec!["a", "crates/*"]);
    }
}
