//! The modules of pixmim-core form a DAG: data types and traits at the bottom, the engine
//! (the loop, jobs and data parallel) above them. This test reads the crate's own sources,
//! draws an edge for every `crate::a::b` / `super::x` path outside comments and test modules
//! (each file is a module), and fails on any cycle, naming it; and again with each folder (a
//! top-level module with all it holds) as one node, so that the crate's folders are layers too
//! (what a split of the crate along them needs).
//! The jobs' options and results live in `job`, below both the registry (whose `Method` runs
//! them) and the code that runs them (which takes the registry's `Composed`).
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn modules(src: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let rel = p.strip_prefix(src).unwrap().with_extension("");
                let mut parts: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
                    parts.pop();
                }
                out.insert(parts.join("::"), std::fs::read_to_string(&p).unwrap());
            }
        }
    }
    out
}

/// `a::b::c` -> the longest prefix that is a module.
fn resolve<'a>(mods: &'a BTreeMap<String, String>, path: &[&str]) -> Option<&'a str> {
    (1..=path.len()).rev().find_map(|k| {
        mods.get_key_value(&path[..k].join("::"))
            .map(|(m, _)| m.as_str())
    })
}

/// Paths after `prefix` in `code`, with `{a, b::c}` groups expanded.
fn paths_after(code: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (i, _) in code.match_indices(prefix) {
        let rest = &code[i + prefix.len()..];
        let head: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        let base: Vec<String> = head
            .split("::")
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        let after = &rest[head.len()..];
        if (head.is_empty() || head.ends_with("::")) && after.starts_with('{') {
            let group = &after[1..after.find('}').unwrap_or(after.len())];
            for item in group.split(',') {
                let mut p = base.clone();
                p.extend(
                    item.split_whitespace()
                        .next()
                        .unwrap_or("")
                        .split("::")
                        .filter(|s| !s.is_empty())
                        .map(String::from),
                );
                out.push(p);
            }
        } else {
            out.push(base);
        }
    }
    out
}

fn edges(mods: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, text) in mods {
        let code: String = text
            .split("#[cfg(test)]")
            .next()
            .unwrap_or("")
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let own: Vec<&str> = if m.is_empty() {
            vec![]
        } else {
            m.split("::").collect()
        };
        let parent = &own[..own.len().saturating_sub(1)];
        let mut targets = Vec::new();
        for p in paths_after(&code, "crate::") {
            targets.push(p);
        }
        for p in paths_after(&code, "super::") {
            let mut full: Vec<String> = parent.iter().map(|s| s.to_string()).collect();
            full.extend(p);
            targets.push(full);
        }
        for t in targets {
            let t: Vec<&str> = t.iter().map(String::as_str).collect();
            if let Some(to) = resolve(mods, &t) {
                let inside = to == m || m.starts_with(&format!("{to}::"));
                if !inside && !to.is_empty() {
                    g.entry(m.clone()).or_default().insert(to.to_string());
                }
            }
        }
    }
    g
}

/// The same edges between top-level modules (a folder and all it holds is one node).
fn folder_edges(g: &BTreeMap<String, BTreeSet<String>>) -> BTreeMap<String, BTreeSet<String>> {
    let top = |m: &str| m.split("::").next().unwrap_or_default().to_string();
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, tos) in g {
        for to in tos {
            if top(from) != top(to) {
                out.entry(top(from)).or_default().insert(top(to));
            }
        }
    }
    out
}

/// A cycle through `from`, if any (depth-first search).
fn cycle_from(g: &BTreeMap<String, BTreeSet<String>>, from: &str) -> Option<Vec<String>> {
    fn dfs(
        g: &BTreeMap<String, BTreeSet<String>>,
        at: &str,
        goal: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in g.get(at).into_iter().flatten() {
            if next == goal {
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if dfs(g, next, goal, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![from.to_string()];
    dfs(g, from, from, &mut path, &mut BTreeSet::new()).then_some(path)
}

#[test]
fn the_modules_form_a_dag() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mods = modules(&src);
    assert!(mods.len() > 40, "read {} modules", mods.len());
    let g = edges(&mods);
    // The reader sees real edges: the engine uses the registry's `Composed`.
    assert!(
        g["engine::train"].contains("registry"),
        "{:?}",
        g["engine::train"]
    );
    for m in mods.keys() {
        if let Some(c) = cycle_from(&g, m) {
            panic!("module cycle: {} -> {m}", c.join(" -> "));
        }
    }
}

#[test]
fn the_folders_form_a_dag() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let g = folder_edges(&edges(&modules(&src)));
    // Folders are seen as one node: the engine's files reach the registry.
    assert!(g["engine"].contains("registry"), "{:?}", g["engine"]);
    for m in g.keys() {
        if let Some(c) = cycle_from(&g, m) {
            panic!("folder cycle: {} -> {m}", c.join(" -> "));
        }
    }
}

#[test]
fn the_reader_finds_a_cycle_when_there_is_one() {
    let mods: BTreeMap<String, String> = [
        ("a", "use crate::b::Thing;"),
        ("b", "use crate::{c::x, d};"),
        ("c", "fn f() { super::a::g() }"),
        ("d", "// crate::a in a comment is no edge"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let g = edges(&mods);
    assert_eq!(
        cycle_from(&g, "a"),
        Some(vec!["a".to_string(), "b".into(), "c".into()])
    );
    assert_eq!(cycle_from(&g, "d"), None);
    // Files that form no cycle can, as folders: f::x -> g::y -> f::z.
    let mods: BTreeMap<String, String> = [
        ("f", ""),
        ("f::x", "use crate::g::y;"),
        ("f::z", ""),
        ("g", ""),
        ("g::y", "use crate::f::z;"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let g = edges(&mods);
    assert_eq!(cycle_from(&g, "f::x"), None);
    assert_eq!(
        cycle_from(&folder_edges(&g), "f"),
        Some(vec!["f".to_string(), "g".into()])
    );
}
