//! The storage crate's layout rules, checked on its sources: the imports
//! between top-level modules (those `lib.rs` declares) form no cycle, test
//! code aside; no module is joined by `#[path]`; every file starts with a
//! `//!` header; and no file's non-test part runs past 800 lines.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

const FILE_LINES_MAX: usize = 800;

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, sorted.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .expect("src is readable")
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            out.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// The file up to its inline test module (`#[cfg(test)]`, then `mod … {`);
/// nothing of a file that is a test module itself (`tests.rs`).
fn non_test_part<'a>(path: &Path, text: &'a str) -> &'a str {
    if path.file_name().is_some_and(|n| n == "tests.rs") {
        return "";
    }
    let lines: Vec<&str> = text.lines().collect();
    let mut at = 0;
    for (i, line) in lines.iter().enumerate() {
        let next_opens_mod = lines.get(i + 1).is_some_and(|l| {
            let l = l.trim();
            (l.starts_with("mod ") || l.contains(" mod ")) && l.ends_with('{')
        });
        if line.trim() == "#[cfg(test)]" && next_opens_mod {
            return &text[..at];
        }
        at += line.len() + 1;
    }
    text
}

/// The top-level module a source file belongs to (`None` for `lib.rs`).
fn top_level_module(path: &Path) -> Option<String> {
    let rel = path.strip_prefix(src_dir()).expect("under src");
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    match first.strip_suffix(".rs") {
        Some("lib") => None,
        Some(stem) => Some(stem.to_string()),
        None => Some(first),
    }
}

fn leading_ident(s: &str) -> String {
    s.trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// The modules named by `crate::X` paths (and `crate::{X, Y}` groups).
fn crate_paths(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (at, _) in text.match_indices("crate::") {
        let rest = &text[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    _ => {}
                }
                if depth == 0 || (depth == 1 && c == ',') {
                    out.insert(leading_ident(&item));
                    item.clear();
                    if depth == 0 {
                        break;
                    }
                } else if depth == 1 {
                    item.push(c);
                }
            }
        } else {
            out.insert(leading_ident(rest));
        }
    }
    out.remove("");
    out
}

fn declared_modules() -> BTreeSet<String> {
    let lib = fs::read_to_string(src_dir().join("lib.rs")).expect("lib.rs");
    lib.lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let l = l.strip_prefix("pub ").unwrap_or(l);
            l.strip_prefix("mod ")?
                .strip_suffix(';')
                .map(str::to_string)
        })
        .collect()
}

/// A cycle in `graph`, as the modules along it, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|n| n == node) {
            let mut cycle = path[i..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(cycle) = visit(node, graph, &mut Vec::new(), &mut done) {
            return Some(cycle);
        }
    }
    None
}

#[test]
fn top_level_modules_import_each_other_one_way() {
    let modules = declared_modules();
    assert!(modules.contains("log") && modules.contains("batch"));
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for path in sources(&src_dir()) {
        let Some(module) = top_level_module(&path) else {
            continue;
        };
        let text = fs::read_to_string(&path).expect("source");
        let uses = crate_paths(non_test_part(&path, &text));
        let edges = graph.entry(module.clone()).or_default();
        edges.extend(
            uses.into_iter()
                .filter(|m| *m != module && modules.contains(m)),
        );
    }
    assert_eq!(find_cycle(&graph), None, "import graph: {graph:?}");
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let edge = |a: &str, b: &[&str]| (a.to_string(), b.iter().map(|s| s.to_string()).collect());
    let acyclic: BTreeMap<String, BTreeSet<String>> =
        [edge("a", &["b", "c"]), edge("b", &["c"]), edge("c", &[])].into();
    assert_eq!(find_cycle(&acyclic), None);
    let cyclic: BTreeMap<String, BTreeSet<String>> =
        [edge("a", &["b"]), edge("b", &["c"]), edge("c", &["a"])].into();
    assert!(find_cycle(&cyclic).is_some());
    let uses = crate_paths("use crate::a::X;\nuse crate::{b, c::{D, E}};\nlet x = crate::d::f();");
    assert_eq!(
        uses,
        ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect()
    );
}

#[test]
fn files_have_headers_no_path_attributes_and_bounded_length() {
    for path in sources(&src_dir()) {
        let text = fs::read_to_string(&path).expect("source");
        let name = path.display();
        assert!(text.starts_with("//!"), "{name} has no //! header");
        assert!(!text.contains("#[path"), "{name} joins a module by #[path]");
        let lines = non_test_part(&path, &text).lines().count();
        assert!(
            lines <= FILE_LINES_MAX,
            "{name}: {lines} lines before its tests (at most {FILE_LINES_MAX})"
        );
    }
}
