//! The module layering of `src/lib.rs`, checked on the source text: every `crate::` (and, in
//! `main.rs`, `gatekeeper::`) path a module names must point at its own layer or one below,
//! and no two modules may import each other, directly or around a loop. Sibling files of one
//! module (`siem::format`, `siem::ecs`) are held to the no-loop rule too; a file and the
//! module it belongs to (`siem` and `siem::spool`) are one unit and may name each other.
//!
//! A new top-level module fails here until it is placed in [`LAYERS`] (and in the order
//! written in `src/lib.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The data-flow order written in `src/lib.rs`, top first. A module may use its own layer and the
/// layers after it.
const LAYERS: &[&[&str]] = &[
    &["main"],
    &["daemon"],
    &["app", "api", "oidc", "server", "webhook"],
    &["smtp", "verify", "challenge", "assertion"],
    &["policy", "store", "siem", "dns", "domains", "backend"],
    &["config"],
    &["address", "audit"],
    &["reason"],
];

/// Imports known to break the rules, each to be removed when its loop is fixed. Empty: the
/// config -> domains and siem::format <-> ecs/cef loops are gone. The test fails once an entry
/// is no longer needed, so the list can only shrink.
const KNOWN_EXCEPTIONS: &[(&str, &str)] = &[];

#[test]
fn modules_import_only_their_layer_and_below() {
    let graph = Graph::read(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src")));
    let mut problems = Vec::new();
    let mut used_exceptions = BTreeSet::new();
    for (from, to, file) in graph.top_level_edges() {
        let (Some(rf), Some(rt)) = (rank(&from), rank(&to)) else {
            let unknown = if rank(&from).is_none() { &from } else { &to };
            problems.push(format!("module `{unknown}` is not in LAYERS ({file})"));
            continue;
        };
        if rt < rf {
            if is_exception(&from, &to) {
                used_exceptions.insert((from.clone(), to.clone()));
            } else {
                problems.push(format!(
                    "`{from}` imports `{to}`, a layer above it ({file})"
                ));
            }
        }
    }
    problems.extend(graph.cycles(&mut used_exceptions));
    for (from, to) in KNOWN_EXCEPTIONS {
        if !used_exceptions.contains(&(from.to_string(), to.to_string())) {
            problems.push(format!(
                "known exception `{from}` -> `{to}` is no longer needed: remove it from \
                 KNOWN_EXCEPTIONS"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The path reader, on made-up lines: it must see a grouped import and a `super::` path, and
/// ignore comments and root items. (The graph trims each path to the file it lands in.)
#[test]
fn checker_sees_what_it_must() {
    let cases: &[(&str, &str, &[&str])] = &[
        ("config/check.rs", "use crate::domains::x;", &["domains::x"]),
        (
            "smtp/mod.rs",
            "use crate::{address::A, reason};",
            &["address", "reason"],
        ),
        ("siem/ecs.rs", "use super::format::f;", &["siem::format::f"]),
        (
            "main.rs",
            "use gatekeeper::daemon::{self, cli};",
            &["daemon::cli"],
        ),
        (
            "policy.rs",
            "// crate::server is only named in a comment",
            &[],
        ),
        ("policy.rs", "//! [`x`]: crate::server::x", &[]),
        ("lib.rs", "pub(crate) fn lock() {}", &[]),
    ];
    for (file, text, want) in cases {
        let module = module_of(Path::new(file));
        let got: Vec<String> = references(&module, text).into_iter().collect();
        assert_eq!(&got, want, "{file}: {text}");
    }
}

fn rank(top: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&top))
}

fn is_exception(from: &str, to: &str) -> bool {
    KNOWN_EXCEPTIONS
        .iter()
        .any(|(f, t)| from.starts_with(f) && to.starts_with(t))
}

/// Which file-level modules each file-level module names.
struct Graph {
    /// Module path (`siem::format`) → (named module path → first file naming it).
    edges: BTreeMap<String, BTreeMap<String, String>>,
}

impl Graph {
    fn read(src: &Path) -> Graph {
        let mut files = Vec::new();
        collect(src, &mut files);
        let modules: Vec<(String, String, String)> = files
            .iter()
            .map(|path| {
                let rel = path.strip_prefix(src).unwrap();
                let text = std::fs::read_to_string(path).unwrap();
                (module_of(rel), rel.display().to_string(), text)
            })
            .collect();
        let known: BTreeSet<&str> = modules.iter().map(|(m, _, _)| m.as_str()).collect();
        let mut edges: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for (module, file, text) in &modules {
            for named in references(module, text) {
                // `crate::siem::format::FIELD_MAX_CHARS`: the longest prefix that is a file.
                let mut target = named.as_str();
                while !known.contains(target) {
                    match target.rsplit_once("::") {
                        Some((head, _)) => target = head,
                        None => break,
                    }
                }
                // Not a file: an item of the crate root, or `super::` out of an inline
                // `mod tests`, which names its own file.
                if !known.contains(target) {
                    continue;
                }
                if target != module && !target.is_empty() {
                    let entry = edges.entry(module.clone()).or_default();
                    entry
                        .entry(target.to_owned())
                        .or_insert_with(|| file.clone());
                }
            }
        }
        Graph { edges }
    }

    /// (from, to, file) for every import between two different top-level modules.
    fn top_level_edges(&self) -> Vec<(String, String, String)> {
        let mut out = BTreeMap::new();
        for (from, targets) in &self.edges {
            for (to, file) in targets {
                let (f, t) = (top(from), top(to));
                if !f.is_empty() && !t.is_empty() && f != t {
                    out.entry((f.to_owned(), t.to_owned()))
                        .or_insert_with(|| file.clone());
                }
            }
        }
        out.into_iter().map(|((f, t), file)| (f, t, file)).collect()
    }

    /// Loops between top-level modules, and between sibling files inside one; an edge of a
    /// loop that is a known exception breaks it (and counts as used).
    fn cycles(&self, used: &mut BTreeSet<(String, String)>) -> Vec<String> {
        let mut adjacency: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut add = |from: &str, to: &str, used: &mut BTreeSet<(String, String)>| {
            if is_exception(from, to) {
                used.insert((known_key(from), known_key(to)));
            } else {
                adjacency
                    .entry(from.to_owned())
                    .or_default()
                    .insert(to.to_owned());
            }
        };
        for (from, targets) in &self.edges {
            for to in targets.keys() {
                let (f, t) = (top(from), top(to));
                if f != t {
                    add(f, t, used);
                } else if !is_ancestor(from, to) && !is_ancestor(to, from) {
                    add(from, to, used);
                }
            }
        }
        let mut problems = Vec::new();
        for start in adjacency.keys() {
            if let Some(path) = find_path(&adjacency, start, start) {
                problems.push(format!("import loop: {start} -> {}", path.join(" -> ")));
            }
        }
        problems
    }
}

/// The exception entry an edge matched, in the form `used` records.
fn known_key(module: &str) -> String {
    KNOWN_EXCEPTIONS
        .iter()
        .flat_map(|(f, t)| [*f, *t])
        .filter(|k| module.starts_with(k))
        .max_by_key(|k| k.len())
        .unwrap_or(module)
        .to_owned()
}

fn is_ancestor(a: &str, b: &str) -> bool {
    b.strip_prefix(a).is_some_and(|rest| rest.starts_with("::"))
}

fn top(module: &str) -> &str {
    module.split("::").next().unwrap_or_default()
}

/// A path from `from` back to `to` through `adjacency`, if any (depth-first).
fn find_path(
    adjacency: &BTreeMap<String, BTreeSet<String>>,
    from: &str,
    to: &str,
) -> Option<Vec<String>> {
    let mut stack = vec![(from.to_owned(), vec![])];
    let mut seen = BTreeSet::new();
    while let Some((node, path)) = stack.pop() {
        for next in adjacency.get(&node).into_iter().flatten() {
            let mut path = path.clone();
            path.push(next.clone());
            if next == to {
                return Some(path);
            }
            if seen.insert(next.clone()) {
                stack.push((next.clone(), path));
            }
        }
    }
    None
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `siem/format.rs` → `siem::format`; `siem/mod.rs` → `siem`; `lib.rs` → `` (the root).
fn module_of(rel: &Path) -> String {
    let mut parts: Vec<String> = rel
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts.join("::")
}

/// Every module path a file's code names (comments skipped), resolved from `crate::`,
/// `gatekeeper::` (the binary names the library so) and `super::`.
fn references(module: &str, text: &str) -> BTreeSet<String> {
    let parent = module.rsplit_once("::").map(|(p, _)| p).unwrap_or_default();
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or_default();
        for (prefix, base) in [("crate::", ""), ("gatekeeper::", ""), ("super::", parent)] {
            if prefix == "gatekeeper::" && module != "main" {
                continue;
            }
            let mut rest = code;
            while let Some(at) = rest.find(prefix) {
                let before = rest.get(..at).and_then(|b| b.chars().last());
                rest = rest.get(at + prefix.len()..).unwrap_or_default();
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                    continue;
                }
                for path in paths(rest) {
                    let full = if base.is_empty() {
                        path
                    } else {
                        format!("{base}::{path}")
                    };
                    // `crate::lock` and other root items belong to no module.
                    if !full.is_empty() && full.chars().next().is_some_and(char::is_lowercase) {
                        out.insert(full);
                    }
                }
            }
        }
    }
    out.retain(|p| !p.starts_with("tests") && p != "lock");
    out
}

/// The module paths after a `crate::`: `a::b::Item` gives `a::b`, `{a::X, b}` gives `a`, `b`;
/// `a::{self, c}` gives `a::c` (and `a`).
fn paths(rest: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let end = inner.find('}').unwrap_or(inner.len());
        for part in inner.get(..end).unwrap_or_default().split(',') {
            out.extend(paths(part.trim()));
        }
        return out;
    }
    let mut segments = Vec::new();
    let mut s = rest;
    loop {
        let len = s
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(s.len());
        let word = s.get(..len).unwrap_or_default();
        if word.is_empty()
            || !word
                .chars()
                .all(|c| c.is_lowercase() || c == '_' || c.is_ascii_digit())
        {
            break;
        }
        segments.push(word.to_owned());
        s = s.get(len..).unwrap_or_default();
        match s.strip_prefix("::") {
            Some(next) if next.starts_with('{') => {
                let base = segments.join("::");
                for sub in paths(next) {
                    if sub == "self" {
                        continue;
                    }
                    out.push(format!("{base}::{sub}"));
                }
                if out.is_empty() {
                    out.push(base);
                }
                return out;
            }
            Some(next) => s = next,
            None => break,
        }
    }
    // A function call `crate::lock(..)` or a trailing item in lower case: keep the module
    // path; the graph trims it to the longest prefix that is a file.
    if !segments.is_empty() {
        out.push(segments.join("::"));
    }
    out
}
