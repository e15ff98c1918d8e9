//! Tidy checks on the source tree: the core stays pure, and nothing names this machine's paths.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
    {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            found.push(path);
        }
    }
}

/// The part of a file that is not its unit-test module.
fn production_code(text: &str) -> &str {
    text.split("#[cfg(test)]").next().unwrap_or(text)
}

#[test]
fn the_core_names_no_wire_runtime_or_serde_crate() {
    let core = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/core");
    let mut files = Vec::new();
    rust_files(&core, &mut files);
    assert!(files.len() >= 8, "core files found: {files:?}");
    let forbidden = [
        "tonic",
        "prost",
        "tokio",
        "serde",
        "crate::pb",
        "pb::",
        "std::fs",
        "std::net",
        "SystemTime",
        "Instant::now",
    ];
    let mut problems = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("readable");
        for (number, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            for word in forbidden {
                if code.contains(word) {
                    problems.push(format!("{}:{}: names {word}", file.display(), number + 1));
                }
            }
        }
        let production = production_code(&text);
        for pattern in [
            ".unwrap()",
            ".expect(",
            "panic!(",
            "unreachable!(",
            "todo!(",
            "unimplemented!(",
        ] {
            if production.contains(pattern) {
                problems.push(format!(
                    "{}: production code uses {pattern}",
                    file.display()
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn no_committed_file_names_a_path_of_this_machine() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let machine_paths = [
        concat!("/wo", "rk/"),
        concat!("/ro", "ot/"),
        concat!("/h", "ome/"),
    ];
    let mut problems = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("readable dir") {
            let path = entry.expect("entry").path();
            let name = path
                .file_name()
                .and_then(|name| name.to_str())
                .unwrap_or_default();
            // `.git` is a file, not a directory, in a linked worktree (`git worktree add`): it names
            // where the repository is, and is never committed.
            if name == ".git" {
                continue;
            }
            if path.is_dir() {
                if !matches!(name, "target" | ".venv" | "node_modules") {
                    stack.push(path);
                }
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            for needle in machine_paths {
                if text.contains(needle) {
                    problems.push(format!("{} names {needle}", path.display()));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn statuses_are_made_in_one_module() {
    // ARCHITECTURE.md: every error becomes a gRPC status in `src/status.rs`. Elsewhere production
    // code neither makes a status nor writes one into a response's headers.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let constructors = [
        "new",
        "with_details",
        "with_metadata",
        "with_details_and_metadata",
        "with_error_details",
        "ok",
        "cancelled",
        "unknown",
        "invalid_argument",
        "deadline_exceeded",
        "not_found",
        "already_exists",
        "permission_denied",
        "resource_exhausted",
        "failed_precondition",
        "aborted",
        "out_of_range",
        "unimplemented",
        "internal",
        "unavailable",
        "data_loss",
        "unauthenticated",
        "from_error",
    ];
    let mut problems = Vec::new();
    for file in &files {
        if file.ends_with("src/status.rs") {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("readable");
        for (number, line) in production_code(&text).lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            let makes_status = constructors
                .iter()
                .any(|name| code.contains(&format!("Status::{name}(")));
            if makes_status || code.contains("\"grpc-status\"") {
                problems.push(format!(
                    "{}:{}: {}",
                    file.display(),
                    number + 1,
                    line.trim()
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
