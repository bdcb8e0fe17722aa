//! Data flows one way: within each crate of the workspace, no two sibling modules import each
//! other (directly or through their submodules). Read from the sources, so a `use` that closes a
//! circle fails here, naming both modules and one import of each direction.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Each crate's source root.
const CRATES: [&str; 4] = ["crates/soft-core/src", "crates/soft-gpu/src", "native/src", "web/src"];

/// A module's path inside its crate (`["eval", "llm"]`), from its file.
fn module_of(root: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(root).unwrap().with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        parts.pop();
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module paths a file's code names, from the crate root, each with the line it is on:
/// `crate::a::b`, and `super::`/`self::` paths resolved from `module` (the file's own module).
/// The test module and comments are left out.
fn imports(module: &[String], text: &str) -> Vec<(Vec<String>, String)> {
    let code = text.split("#[cfg(test)]").next().unwrap_or_default();
    let mut found = Vec::new();
    for line in code.lines() {
        let line = line.split("//").next().unwrap_or_default();
        let words: Vec<&str> = line.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).collect();
        for word in words {
            let parts: Vec<&str> = word.split("::").filter(|p| !p.is_empty()).collect();
            let (mut base, rest): (Vec<String>, &[&str]) = match parts.first() {
                Some(&"crate") => (Vec::new(), &parts[1..]),
                Some(&"self") => (module.to_vec(), &parts[1..]),
                Some(&"super") => (module.to_vec(), &parts[..]),
                _ => continue,
            };
            let mut rest = rest;
            while rest.first() == Some(&"super") {
                base.pop();
                rest = &rest[1..];
            }
            if !word.starts_with("crate::") && !word.starts_with("self::") && !word.starts_with("super::") {
                continue;
            }
            base.extend(rest.iter().map(|s| s.to_string()));
            if !rest.is_empty() {
                found.push((base, line.trim().to_string()));
            }
        }
    }
    found
}

#[test]
fn no_two_sibling_modules_import_each_other() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut circles = Vec::new();
    for krate in CRATES {
        let root = workspace.join(krate);
        let mut files = Vec::new();
        rust_files(&root, &mut files);
        // For each pair of sibling modules (same parent), one import that goes from a to b.
        let mut edges: BTreeMap<(Vec<String>, Vec<String>), String> = BTreeMap::new();
        for file in &files {
            let from = module_of(&root, file);
            for (to, line) in imports(&from, &std::fs::read_to_string(file).unwrap()) {
                let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
                if common < from.len() && common < to.len() {
                    let (a, b) = (from[..=common].to_vec(), to[..=common].to_vec());
                    edges.entry((a, b)).or_insert_with(|| format!("{}: {line}", file.display()));
                }
            }
        }
        for ((a, b), line) in &edges {
            if a < b {
                if let Some(back) = edges.get(&(b.clone(), a.clone())) {
                    circles.push(format!("{krate}: {} <-> {}\n  {line}\n  {back}", a.join("::"), b.join("::")));
                }
            }
        }
    }
    assert!(circles.is_empty(), "modules that import each other:\n{}", circles.join("\n"));
}

#[test]
fn the_check_sees_an_import_and_skips_comments_and_other_crates() {
    let text = "use crate::eval::llm::title_trie;\n// crate::model::x\nuse soft_core::data::Catalog;\nfn f() { crate::runtime::log(\"\"); }\nuse super::config::X;\nuse super::super::eval::Y;\n#[cfg(test)]\nuse crate::app::X;";
    let module = ["cmd".to_string(), "run".to_string()];
    let found: Vec<Vec<String>> = imports(&module, text).into_iter().map(|(p, _)| p).collect();
    assert_eq!(
        found,
        [vec!["eval", "llm", "title_trie"], vec!["runtime", "log"], vec!["cmd", "config", "X"], vec!["eval", "Y"]]
    );
    let root = Path::new("/r");
    assert_eq!(module_of(root, Path::new("/r/eval/mod.rs")), ["eval"]);
    assert_eq!(module_of(root, Path::new("/r/eval/llm.rs")), ["eval", "llm"]);
}
