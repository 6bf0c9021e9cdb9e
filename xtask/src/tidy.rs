//! `cargo xtask tidy`: the architecture rules that neither the compiler nor clippy state.
//!
//! - p2p-core's normal dependencies are only [`CORE_ALLOWED_DEPS`] (as `cargo metadata` reads
//!   the manifest, renamed and target-specific dependencies included), so no IO crate;
//! - p2p-tokio with its default features pulls in none of [`DRIVER_EXCLUDED_DEPS`] (as
//!   `cargo tree` resolves it: features are resolved for that one package);
//! - every workspace library warns (or denies) on missing docs.
//!
//! p2p-core's sans-IO rule (no clock, thread, file, socket, environment, printing or OS
//! randomness) is `p2p-core/clippy.toml`, and the ban on placeholder macros is the root
//! `clippy.toml`; `cargo xtask ci` enforces both in its `clippy` steps. `cargo test` runs tidy
//! through the test at the bottom of this file.

use std::fs;

use serde_json::Value;

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

/// Crates that must not be anywhere in p2p-tokio's normal dependency tree (default features):
/// those of the command-line binaries, the benchmark harness and the simulator.
pub const DRIVER_EXCLUDED_DEPS: &[&str] = &[
    "clap",
    "toml",
    "serde_json",
    "tracing-subscriber",
    "p2p-testkit",
];

/// The same for p2p-threads, the driver without an async runtime: tokio and its kin too.
pub const THREADS_EXCLUDED_DEPS: &[&str] = &[
    "tokio",
    "mio",
    "clap",
    "toml",
    "serde_json",
    "tracing-subscriber",
    "p2p-testkit",
];

/// Each driver package and the crates its normal dependency tree must not contain.
const DRIVERS: &[(&str, &[&str])] = &[
    ("p2p-tokio", DRIVER_EXCLUDED_DEPS),
    ("p2p-threads", THREADS_EXCLUDED_DEPS),
];

/// Runs every check, prints what it finds, and fails if anything is wrong.
pub fn run() -> Result<(), TaskError> {
    let violations = check_repository()?;
    for v in &violations {
        println!("tidy: {v}");
    }
    if violations.is_empty() {
        println!("tidy: ok");
        Ok(())
    } else {
        Err(TaskError::Failed(format!(
            "{} tidy violation(s)",
            violations.len()
        )))
    }
}

/// Every violation in the repository; an error when cargo cannot describe it.
fn check_repository() -> Result<Vec<String>, TaskError> {
    let mut metadata = shell::cargo();
    metadata.args(["metadata", "--format-version", "1", "--no-deps", "--quiet"]);
    let metadata: Value = serde_json::from_str(&shell::output(&mut metadata)?)
        .map_err(|e| TaskError::Failed(format!("cargo metadata: {e}")))?;
    let mut violations = core_dependencies(&metadata);
    for (driver, excluded) in DRIVERS {
        let mut tree = shell::cargo();
        tree.args(["tree", "--quiet", "-p", driver, "-e", "normal"])
            .args(["--prefix", "none", "--format", "{p}"]);
        let tree = shell::output(&mut tree)?;
        violations.extend(driver_tree(driver, excluded, &tree));
    }
    for (lib, path) in libraries(&metadata) {
        match fs::read_to_string(&path) {
            Ok(text) if warns_on_missing_docs(&text) => {}
            Ok(_) => violations.push(format!(
                "{path}: the root of `{lib}` lacks `#![warn(missing_docs)]` (or `deny`)"
            )),
            Err(e) => violations.push(format!("{path}: cannot read: {e}")),
        }
    }
    Ok(violations)
}

/// The workspace packages of `cargo metadata --no-deps` output.
fn packages(metadata: &Value) -> &[Value] {
    metadata["packages"].as_array().map_or(&[], Vec::as_slice)
}

/// p2p-core's normal dependencies (optional, renamed and target-specific ones included) that
/// are not in [`CORE_ALLOWED_DEPS`].
fn core_dependencies(metadata: &Value) -> Vec<String> {
    let Some(core) = packages(metadata).iter().find(|p| p["name"] == "p2p-core") else {
        return vec!["cargo metadata: no package p2p-core".to_owned()];
    };
    let deps = core["dependencies"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    deps.iter()
        .filter(|d| d["kind"].is_null())
        .filter_map(|d| d["name"].as_str())
        .filter(|name| !CORE_ALLOWED_DEPS.contains(name))
        .map(|name| {
            format!(
                "p2p-core depends on `{name}`; it may depend only on {}",
                CORE_ALLOWED_DEPS.join(", ")
            )
        })
        .collect()
}

/// The `excluded` crates named in `driver`'s `cargo tree --prefix none --format {p}` output
/// (one `name vX.Y.Z ...` per line), each once.
fn driver_tree(driver: &str, excluded: &[&str], tree: &str) -> Vec<String> {
    let names: Vec<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    if names.is_empty() {
        return vec![format!(
            "cargo tree -p {driver}: the dependency tree is empty"
        )];
    }
    excluded
        .iter()
        .filter(|excluded| names.contains(excluded))
        .map(|name| {
            format!(
                "{driver}'s library depends on `{name}`; a driver takes only what it drives with \
                 (binaries and harnesses belong in p2p-node or p2p-bench, or behind a non-default \
                 feature)"
            )
        })
        .collect()
}

/// `(package, root source file)` of every workspace package's library target.
fn libraries(metadata: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for package in packages(metadata) {
        for target in package["targets"].as_array().into_iter().flatten() {
            let is_lib = target["kind"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|k| k == "lib"));
            if let (true, Some(name), Some(path)) = (
                is_lib,
                package["name"].as_str(),
                target["src_path"].as_str(),
            ) {
                out.push((name.to_owned(), path.to_owned()));
            }
        }
    }
    out
}

/// Whether a crate root has `#![warn(missing_docs)]`, `deny` or `forbid`, alone or among other
/// lints in the attribute, outside `//` comments.
fn warns_on_missing_docs(root: &str) -> bool {
    let code: String = root
        .lines()
        .map(|line| line.split("//").next().unwrap_or_default())
        .collect();
    code.split("#![").skip(1).any(|attr| {
        let Some(lints) = ["warn", "deny", "forbid"]
            .iter()
            .find_map(|level| attr.trim_start().strip_prefix(level))
            .and_then(|rest| rest.trim_start().strip_prefix('('))
            .and_then(|rest| rest.split(')').next())
        else {
            return false;
        };
        lints.split(',').any(|lint| lint.trim() == "missing_docs")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_passes_tidy() {
        let violations = check_repository().expect("cargo metadata and cargo tree run");
        assert!(violations.is_empty(), "{violations:#?}");
    }

    fn metadata_with_core_deps(deps: &str) -> Value {
        let json = format!(r#"{{"packages": [{{"name": "p2p-core", "dependencies": [{deps}]}}]}}"#);
        serde_json::from_str(&json).expect("valid JSON")
    }

    #[test]
    fn core_with_allowed_normal_deps_and_any_dev_deps_passes() {
        let metadata = metadata_with_core_deps(
            r#"{"name": "bytes", "kind": null}, {"name": "sha2", "kind": null},
               {"name": "tokio", "kind": "dev"}, {"name": "p2p-core", "kind": "dev"}"#,
        );
        assert_eq!(core_dependencies(&metadata), Vec::<String>::new());
    }

    #[test]
    fn core_with_an_io_or_unlisted_crate_fails_once_for_each() {
        let metadata = metadata_with_core_deps(
            r#"{"name": "bytes", "kind": null},
               {"name": "tokio", "kind": null, "rename": "rt"},
               {"name": "serde", "kind": null, "target": "cfg(unix)", "optional": true}"#,
        );
        let v = core_dependencies(&metadata);
        assert_eq!(v.len(), 2, "{v:#?}");
        assert!(
            v[0].contains("`tokio`") && v[1].contains("`serde`"),
            "{v:#?}"
        );
    }

    #[test]
    fn driver_tree_fails_once_for_each_excluded_crate() {
        let clean = "p2p-tokio v0.1.0 (/w/p2p-tokio)\nbytes v1.12.2\nserde_core v1.0.0\n";
        for (driver, excluded) in DRIVERS {
            assert_eq!(driver_tree(driver, excluded, clean), Vec::<String>::new());
            for name in *excluded {
                let tree = format!("{clean}{name} v1.0.0\n{name} v1.0.0\n");
                let v = driver_tree(driver, excluded, &tree);
                assert_eq!(v.len(), 1, "{name}: {v:#?}");
                assert!(v[0].contains(&format!("`{name}`")), "{v:#?}");
                assert!(v[0].starts_with(driver), "{v:#?}");
            }
            assert_eq!(
                driver_tree(driver, excluded, "\n").len(),
                1,
                "an empty tree fails"
            );
        }
    }

    #[test]
    fn missing_docs_lint_is_found_where_it_is_and_only_there() {
        for root in [
            "//! Docs.\n#![warn(missing_docs)]\n",
            "#![deny(missing_docs)]\n",
            "#![forbid(unsafe_code)]\n#![warn(\n    unreachable_pub,\n    missing_docs,\n)]\n",
        ] {
            assert!(warns_on_missing_docs(root), "{root:?}");
        }
        for root in [
            "//! Docs.\n#![forbid(unsafe_code)]\n",
            "// #![warn(missing_docs)]\n",
            "#![allow(missing_docs)]\n",
            "#![warn(missing_debug_implementations)]\n",
        ] {
            assert!(!warns_on_missing_docs(root), "{root:?}");
        }
    }

    #[test]
    fn libraries_are_the_lib_targets_of_the_workspace_packages() {
        let json = r#"{"packages": [
            {"name": "a", "targets": [{"kind": ["lib"], "src_path": "/w/a/src/lib.rs"},
                                      {"kind": ["test"], "src_path": "/w/a/tests/t.rs"}]},
            {"name": "b", "targets": [{"kind": ["bin"], "src_path": "/w/b/src/main.rs"}]}]}"#;
        let metadata: Value = serde_json::from_str(json).expect("valid JSON");
        assert_eq!(
            libraries(&metadata),
            vec![("a".to_owned(), "/w/a/src/lib.rs".to_owned())]
        );
    }
}
