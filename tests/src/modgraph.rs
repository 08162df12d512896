//! The module import graph of a crate, read from its source: which module names which other
//! module through `use` trees and inline `crate::` / `super::` / `self::` paths. The layering
//! test (`tests/layers.rs`) checks it for import circles and for imports that reach up a layer.
//!
//! A plain reader, not a Rust parser: line comments are dropped, string literals are not
//! understood, and paths relative to a module (a parent's `pub use child::Item`) are not edges,
//! since a parent naming its own children is how modules are declared. Names re-exported at the
//! crate root (`crate::Tensor`) and `#[macro_export]` macros (`crate::invalid!`) resolve to the
//! module that defines them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Modules by path (`""` for the crate root, `"ops::conv"`), each with the modules it imports.
#[derive(Debug, Default)]
pub struct ModGraph {
    pub edges: BTreeMap<String, BTreeSet<String>>,
}

impl ModGraph {
    /// Reads every `.rs` file under a crate's `src` folder.
    pub fn of_crate(src: &Path) -> ModGraph {
        let mut files = vec![];
        collect(src, src, &mut files);
        ModGraph::of_sources(&files)
    }

    /// Builds the graph from (module path, source text) pairs.
    pub fn of_sources(files: &[(String, String)]) -> ModGraph {
        let modules: BTreeSet<&str> = files.iter().map(|(m, _)| m.as_str()).collect();
        // What the crate root re-exports and which module defines each exported macro.
        let mut aliases: BTreeMap<String, String> = BTreeMap::new();
        for (module, text) in files {
            let text = strip_comments(text);
            let mut rest = text.as_str();
            while let Some(i) = rest.find("#[macro_export]") {
                rest = &rest[i..];
                if let Some(j) = rest.find("macro_rules!") {
                    let name: String =
                        rest[j + 12..].trim_start().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                    aliases.insert(name, module.clone());
                }
                rest = &rest[1..];
            }
            if module.is_empty() {
                for path in use_paths(&text).into_iter().filter(|p| p.starts_with("pub ")) {
                    let path = path.trim_start_matches("pub ").to_string();
                    let segs: Vec<&str> = path.split("::").collect();
                    if let (Some(name), Some(target)) = (segs.last(), resolve_in(&modules, &segs[..segs.len() - 1])) {
                        aliases.insert(name.to_string(), target);
                    }
                }
            }
        }
        let mut edges = BTreeMap::new();
        for (module, text) in files {
            let text = strip_comments(text);
            let mut targets = BTreeSet::new();
            let mut paths: Vec<String> =
                use_paths(&text).into_iter().map(|p| p.trim_start_matches("pub ").to_string()).collect();
            paths.extend(inline_paths(&text));
            for path in paths {
                let segs: Vec<&str> = path.split("::").collect();
                let here: Vec<&str> = if module.is_empty() { vec![] } else { module.split("::").collect() };
                let absolute: Vec<&str> = match segs[0] {
                    "crate" => segs[1..].to_vec(),
                    "self" => here.iter().copied().chain(segs[1..].iter().copied()).collect(),
                    "super" => {
                        let ups = segs.iter().take_while(|s| **s == "super").count();
                        let keep = here.len().saturating_sub(ups);
                        here[..keep].iter().copied().chain(segs[ups..].iter().copied()).collect()
                    }
                    _ => continue,
                };
                let target = match resolve_in(&modules, &absolute) {
                    Some(t) if !t.is_empty() => Some(t),
                    // A name the root re-exports (or an exported macro) stands for its module.
                    _ => absolute.first().and_then(|first| aliases.get(*first).cloned()),
                };
                if let Some(t) = target
                    && t != *module
                {
                    targets.insert(t);
                }
            }
            edges.insert(module.clone(), targets);
        }
        ModGraph { edges }
    }

    /// Every import circle: the modules of each strongly connected component of two or more
    /// modules, sorted.
    pub fn circles(&self) -> Vec<Vec<String>> {
        let names: Vec<&String> = self.edges.keys().collect();
        let index: BTreeMap<&String, usize> = names.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        let adj: Vec<Vec<usize>> =
            names.iter().map(|n| self.edges[*n].iter().filter_map(|t| index.get(t).copied()).collect()).collect();
        let mut out = vec![];
        for comp in strongly_connected(&adj) {
            if comp.len() > 1 {
                let mut c: Vec<String> = comp.iter().map(|&i| names[i].clone()).collect();
                c.sort();
                out.push(c);
            }
        }
        out.sort();
        out
    }

    /// Imports that go from a module to one in a higher layer, as `"from -> to"`. `layer` gives
    /// each module's layer (lower numbers are lower layers).
    pub fn upward(&self, layer: impl Fn(&str) -> usize) -> Vec<String> {
        let mut out = vec![];
        for (from, targets) in &self.edges {
            for to in targets {
                if layer(to) > layer(from) {
                    out.push(format!("{} -> {}", show(from), show(to)));
                }
            }
        }
        out
    }
}

fn show(m: &str) -> &str {
    if m.is_empty() { "(crate root)" } else { m }
}

/// The longest prefix of `segs` that names a module.
fn resolve_in(modules: &BTreeSet<&str>, segs: &[&str]) -> Option<String> {
    (0..=segs.len()).rev().map(|k| segs[..k].join("::")).find(|m| modules.contains(m.as_str()))
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect(root, &p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            let rel = p.strip_prefix(root).unwrap_or(&p).with_extension("");
            let mut segs: Vec<String> = rel.iter().map(|s| s.to_string_lossy().into_owned()).collect();
            if matches!(segs.last().map(String::as_str), Some("mod" | "lib" | "main")) {
                segs.pop();
            }
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            out.push((segs.join("::"), text));
        }
    }
}

fn strip_comments(text: &str) -> String {
    text.lines().map(|l| l.find("//").map_or(l, |i| &l[..i])).collect::<Vec<_>>().join("\n")
}

/// The paths of every `use` item, braces expanded; `pub use` paths keep a `pub ` prefix.
fn use_paths(text: &str) -> Vec<String> {
    let mut out = vec![];
    let bytes = text.as_bytes();
    let mut at = 0;
    while let Some(i) = text[at..].find("use ") {
        let start = at + i;
        at = start + 4;
        // A `use` keyword starts a statement: after a line start, `pub `, `pub(...) ` or `{`/`;`.
        let before = text[..start].trim_end_matches(' ');
        let is_pub = before.ends_with("pub") || before.ends_with(')') && before.contains("pub(");
        let at_statement = is_pub
            || before.is_empty()
            || before.ends_with('\n')
            || before.ends_with('{')
            || before.ends_with(';')
            || before.ends_with('}');
        if !at_statement || (start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_')) {
            continue;
        }
        let Some(end) = text[at..].find(';') else { break };
        let tree: String = text[at..at + end].split_whitespace().collect::<Vec<_>>().join(" ");
        for p in expand(&tree) {
            let p = p.split(" as ").next().unwrap_or("").trim().to_string();
            if !p.is_empty() {
                out.push(if is_pub { format!("pub {p}") } else { p });
            }
        }
        at += end;
    }
    out
}

/// `a::{b, c::{d, e}}` as `a::b`, `a::c::d`, `a::c::e`.
fn expand(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else { return vec![tree.to_string()] };
    let prefix = tree[..open].trim_end_matches("::").trim();
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let (mut parts, mut depth, mut cur) = (vec![], 0, String::new());
    for c in inner.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    parts.push(cur);
    let mut out = vec![];
    for p in parts.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
        for e in expand(p) {
            out.push(if e == "self" { prefix.to_string() } else { format!("{prefix}::{e}") });
        }
    }
    out
}

/// `crate::`, `super::` and `self::` paths written inside code.
fn inline_paths(text: &str) -> Vec<String> {
    let mut out = vec![];
    for head in ["crate::", "super::", "self::"] {
        let mut at = 0;
        while let Some(i) = text[at..].find(head) {
            let start = at + i;
            at = start + head.len();
            if start > 0
                && text[..start].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$')
            {
                continue;
            }
            let path: String =
                text[start..].chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect();
            out.push(path.trim_end_matches(':').to_string());
        }
    }
    out
}

/// Tarjan's strongly connected components.
fn strongly_connected(adj: &[Vec<usize>]) -> Vec<Vec<usize>> {
    struct State<'a> {
        adj: &'a [Vec<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        out: Vec<Vec<usize>>,
    }
    fn visit(s: &mut State, v: usize) {
        s.index[v] = Some(s.next);
        s.low[v] = s.next;
        s.next += 1;
        s.stack.push(v);
        s.on_stack[v] = true;
        for &w in &s.adj[v] {
            match s.index[w] {
                None => {
                    visit(s, w);
                    s.low[v] = s.low[v].min(s.low[w]);
                }
                Some(iw) if s.on_stack[w] => s.low[v] = s.low[v].min(iw),
                _ => {}
            }
        }
        if Some(s.low[v]) == s.index[v] {
            let mut comp = vec![];
            while let Some(w) = s.stack.pop() {
                s.on_stack[w] = false;
                comp.push(w);
                if w == v {
                    break;
                }
            }
            s.out.push(comp);
        }
    }
    let n = adj.len();
    let mut s = State {
        adj,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: vec![],
        next: 0,
        out: vec![],
    };
    for v in 0..n {
        if s.index[v].is_none() {
            visit(&mut s, v);
        }
    }
    s.out
}
