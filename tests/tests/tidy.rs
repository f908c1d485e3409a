//! Layout rules that keep the code readable, checked on every test run (in
//! the spirit of rust-analyzer's tidy tests): no import cycle among the
//! top-level modules of a crate, no module file whose non-test part passes
//! 800 lines, a `//!` header on every module, and no `#[path]` attribute
//! (the directory shows the nesting).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The crates whose sources are checked, from the workspace root.
const CRATES: &[&str] = &["storage", "net", "replication", "broker", "bench-harness"];

/// Lines a module file may have before its tests.
const FILE_LINES_MAX: usize = 800;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace")
        .to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A file whose whole content is tests (`#[cfg(test)] mod tests;`).
fn is_test_file(path: &Path) -> bool {
    path.file_name().is_some_and(|n| n == "tests.rs")
}

/// The part of a file before its `#[cfg(test)] mod ... {` block.
fn before_tests(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim() == "#[cfg(test)]"
            && lines
                .peek()
                .is_some_and(|next| next.contains("mod ") && next.contains('{'))
        {
            break;
        }
        out.push(line);
    }
    out
}

/// `before_tests` without line comments.
fn non_test_code(text: &str) -> String {
    let mut out = String::new();
    for line in before_tests(text) {
        out.push_str(line.find("//").map_or(line, |i| &line[..i]));
        out.push('\n');
    }
    out
}

fn ident_at(s: &[u8], mut i: usize) -> (String, usize) {
    let start = i;
    while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == b'_') {
        i += 1;
    }
    (String::from_utf8_lossy(&s[start..i]).into_owned(), i)
}

/// The first path segment of every `crate::` path in `code`, including
/// those inside `crate::{a, b::c}` groups.
fn crate_paths(code: &str) -> BTreeSet<String> {
    let s = code.as_bytes();
    let mut out = BTreeSet::new();
    let mut from = 0;
    while let Some(at) = code[from..].find("crate::") {
        let mut i = from + at + "crate::".len();
        let preceded_by_ident = from + at > 0 && {
            let b = s[from + at - 1];
            b.is_ascii_alphanumeric() || b == b'_' || b == b':'
        };
        from = i;
        if preceded_by_ident {
            continue;
        }
        if s.get(i) == Some(&b'{') {
            // Items of the group at depth 1: the segment after '{' or ','.
            let mut depth = 0usize;
            let mut expect = true;
            while i < s.len() {
                match s[i] {
                    b'{' => {
                        depth += 1;
                        expect = depth == 1;
                        i += 1;
                    }
                    b'}' => {
                        depth -= 1;
                        i += 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    b',' => {
                        expect = depth == 1;
                        i += 1;
                    }
                    b if b.is_ascii_whitespace() => i += 1,
                    b if expect && (b.is_ascii_alphabetic() || b == b'_') => {
                        let (name, next) = ident_at(s, i);
                        out.insert(name);
                        expect = false;
                        i = next;
                    }
                    _ => {
                        expect = false;
                        i += 1;
                    }
                }
            }
            from = i;
        } else {
            let (name, _) = ident_at(s, i);
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

/// The modules a crate root declares (test-only ones left out).
fn declared_modules(root_file: &Path) -> Vec<String> {
    let text = fs::read_to_string(root_file).expect("reads the crate root");
    let mut out = Vec::new();
    let mut test_only = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("#[cfg(test)]") {
            test_only = true;
            continue;
        }
        let decl = t
            .strip_prefix("pub mod ")
            .or_else(|| t.strip_prefix("pub(crate) mod "))
            .or_else(|| t.strip_prefix("mod "));
        if let Some(rest) = decl.and_then(|r| r.strip_suffix(';')) {
            if !test_only {
                out.push(rest.trim().to_string());
            }
        }
        if !t.starts_with("#[") {
            test_only = false;
        }
    }
    out
}

/// module -> (module it imports -> files that import it).
type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

fn module_graph(src: &Path, root: &str) -> Graph {
    let root_file = src.join(root);
    let modules = declared_modules(&root_file);
    let mut graph = Graph::new();
    for module in &modules {
        let mut files = Vec::new();
        let single = src.join(format!("{module}.rs"));
        if single.exists() {
            files.push(single);
        }
        rust_files(&src.join(module), &mut files);
        let edges = graph.entry(module.clone()).or_default();
        for file in files.iter().filter(|f| !is_test_file(f)) {
            let text = fs::read_to_string(file).expect("reads a source file");
            for target in crate_paths(&non_test_code(&text)) {
                if &target != module && modules.contains(&target) {
                    let shown = file.strip_prefix(src).unwrap_or(file).display().to_string();
                    edges.entry(target).or_default().insert(shown);
                }
            }
        }
    }
    graph
}

/// Strongly connected components of more than one module (Tarjan).
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    struct Walk<'a> {
        graph: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        found: Vec<Vec<String>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, v: &'a str) {
            self.index.insert(v, self.next);
            self.low.insert(v, self.next);
            self.next += 1;
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.graph[v].keys() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.on_stack.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !walk.index.contains_key(v.as_str()) {
            walk.visit(v);
        }
    }
    walk.found
}

#[test]
fn no_import_cycle_among_the_top_level_modules_of_a_crate() {
    let root = workspace_root();
    let mut problems = Vec::new();
    for krate in CRATES {
        let src = root.join(krate).join("src");
        for crate_root in ["lib.rs", "main.rs"] {
            if !src.join(crate_root).exists() {
                continue;
            }
            let graph = module_graph(&src, crate_root);
            for component in cycles(&graph) {
                let mut why = Vec::new();
                for from in &component {
                    for (to, files) in &graph[from] {
                        if component.contains(to) {
                            let files: Vec<_> = files.iter().cloned().collect();
                            why.push(format!("  {from} -> {to} ({})", files.join(", ")));
                        }
                    }
                }
                problems.push(format!(
                    "{krate}/src/{crate_root}: modules {} import each other:\n{}",
                    component.join(", "),
                    why.join("\n")
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "arrows must point one way; a context is handed in, events go out:\n{}",
        problems.join("\n")
    );
}

#[test]
fn module_files_are_short_documented_and_where_the_tree_says() {
    let root = workspace_root();
    let mut problems = Vec::new();
    for krate in CRATES {
        let mut files = Vec::new();
        rust_files(&root.join(krate).join("src"), &mut files);
        for file in files {
            let text = fs::read_to_string(&file).expect("reads a source file");
            let shown = file
                .strip_prefix(&root)
                .unwrap_or(&file)
                .display()
                .to_string();
            if !is_test_file(&file) {
                let lines = before_tests(&text).len();
                if lines > FILE_LINES_MAX {
                    problems.push(format!(
                        "{shown}: {lines} lines before its tests (at most {FILE_LINES_MAX}: split it along a seam a reader would name)"
                    ));
                }
            }
            if !text.trim_start().starts_with("//!") {
                problems.push(format!("{shown}: no `//!` saying what the module is for"));
            }
            if text.lines().any(|l| l.trim_start().starts_with("#[path")) {
                problems.push(format!(
                    "{shown}: `#[path]` hides the nesting; move the file where the tree shows it"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_path_reader_sees_grouped_and_nested_imports() {
    let code = "use crate::a::B;\nuse crate::{c, d::{e, f}, g::H};\nfn x() { crate::i::j(); notcrate::k(); }\n";
    let found: Vec<_> = crate_paths(code).into_iter().collect();
    assert_eq!(found, ["a", "c", "d", "g", "i"]);
    let mut graph = Graph::new();
    graph
        .entry("a".into())
        .or_default()
        .entry("b".into())
        .or_default();
    graph
        .entry("b".into())
        .or_default()
        .entry("a".into())
        .or_default();
    graph
        .entry("c".into())
        .or_default()
        .entry("a".into())
        .or_default();
    assert_eq!(cycles(&graph), vec![vec!["a".to_string(), "b".to_string()]]);
}
