//! The one-way house (ARCHITECTURE.md): reads the `use` graph of `src/` and fails on an import
//! cycle or an import from a lower layer to a higher one.
//!
//! A *unit* is a top-level module of the library (`config`, `genai`, `pipeline`, ...), or one
//! component under `receiver/`, `processor/` or `exporter/` (`processor::slo`); the family's own
//! `mod.rs` is a unit of its own (`processor` is the stage contract). Every reference counts:
//! `use` lines and paths written inline, `crate::` and `super::` alike, test modules included.
//! Checked:
//! - the graph of units has no cycle;
//! - inside a unit, no file imports a sibling that imports it back (a module and its own
//!   submodules may refer to each other: that is one module's inside);
//! - no unit imports one of a higher layer, but for the exceptions named in ARCHITECTURE.md
//!   (listed in `ALLOWED_UPWARD`, at most two).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Layers from the bottom; a unit may import its own layer and the ones below.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "kit",
        &[
            "config",
            "names",
            "attributes",
            "signal",
            "rpc_status",
            "net",
            "test_logs",
        ],
    ),
    (
        "vocabulary",
        &[
            "stage",
            "findings",
            "telemetry",
            "tls",
            "memory",
            "derived",
            "genai",
        ],
    ),
    ("contracts", &["trace", "processor", "exporter", "receiver"]),
    ("components", &["processor::*", "exporter::*", "alerting"]),
    ("pipeline", &["pipeline"]),
    ("receivers", &["receiver::*"]),
    ("views", &["page", "admin"]),
    ("composition root", &["service"]),
];

/// Upward imports accepted, each justified in ARCHITECTURE.md: (from unit, to unit).
const ALLOWED_UPWARD: &[(&str, &str)] = &[];

const FAMILIES: [&str; 3] = ["receiver", "processor", "exporter"];

type Module = Vec<String>;

fn layer_of(unit: &Module) -> Option<usize> {
    let name = unit.join("::");
    let wildcard = format!("{}::*", unit[0]);
    LAYERS.iter().position(|(_, units)| {
        units
            .iter()
            .any(|u| *u == name || (unit.len() == 2 && *u == wildcard))
    })
}

fn unit_of(m: &[String]) -> Module {
    match m {
        [] => Vec::new(),
        [family, component, ..] if FAMILIES.contains(&family.as_str()) => {
            vec![family.clone(), component.clone()]
        }
        [top, ..] => vec![top.clone()],
    }
}

/// Every `.rs` file of the library with its module path (`src/a/b.rs` and `src/a/b/mod.rs` are
/// `a::b`); the binaries (`main.rs`, `bin/`) are another crate.
fn modules(src: &Path) -> BTreeMap<Module, PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(src, &mut files);
    let mut out = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(src).expect("under src");
        let mut parts: Vec<String> = rel
            .with_extension("")
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if parts.first().is_some_and(|p| p == "bin") || parts == ["main"] {
            continue;
        }
        if parts == ["lib"] {
            parts.clear();
        } else if parts.last().is_some_and(|p| p == "mod") {
            parts.pop();
        }
        out.insert(parts, f);
    }
    out
}

/// The text without comments, string and character literals (doc comments name paths too).
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let mut depth = 0;
            while i < b.len() {
                if b[i..].starts_with(b"/*") {
                    depth += 1;
                    i += 2;
                } else if b[i..].starts_with(b"*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if b[i] == b'r'
            && (b.get(i + 1) == Some(&b'"') || b.get(i + 1) == Some(&b'#'))
            && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_'))
        {
            // A raw string r"..." or r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&b'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&b'"') {
                out.push('r');
                i += 1;
                continue;
            }
            let close: Vec<u8> = std::iter::once(b'"')
                .chain(std::iter::repeat_n(b'#', hashes))
                .collect();
            j += 1;
            while j < b.len() && !b[j..].starts_with(&close) {
                j += 1;
            }
            i = j + close.len();
            out.push_str("\"\"");
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' && b.get(i + 2) == Some(&b'\'') {
            i += 3;
            out.push_str("' '");
        } else if b[i] == b'\'' && b.get(i + 1) == Some(&b'\\') {
            // '\n', '\u{..}'
            let mut j = i + 2;
            while j < b.len() && b[j] != b'\'' {
                j += 1;
            }
            i = j + 1;
            out.push_str("' '");
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The paths a use tree names: `a::{b, c::{d}}` → a::b, a::c::d.
fn expand(tree: &str) -> Vec<Vec<String>> {
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let prefix: Vec<String> = tree[..open]
            .split("::")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        let close = tree.rfind('}').unwrap_or(tree.len());
        let inner = &tree[open + 1..close];
        let (mut depth, mut start, mut parts) = (0, 0, Vec::new());
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(&inner[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        parts.push(&inner[start..]);
        let mut out = Vec::new();
        for p in parts.into_iter().filter(|p| !p.trim().is_empty()) {
            for q in expand(p) {
                let mut full = prefix.clone();
                full.extend(q);
                out.push(full);
            }
        }
        out
    } else {
        vec![
            tree.split("::")
                .map(|s| s.trim().split(|c: char| !is_ident(c)).next().unwrap_or(""))
                .take_while(|s| !s.is_empty())
                .map(String::from)
                .collect(),
        ]
    }
}

/// The path (or use tree) written right after position `i`.
fn path_at(code: &str, i: usize) -> &str {
    let b = code.as_bytes();
    let mut j = i;
    let mut depth = 0;
    while j < b.len() {
        let c = b[j] as char;
        match c {
            '{' => depth += 1,
            '}' if depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    j += 1;
                    break;
                }
            }
            _ if depth > 0 => {}
            c if is_ident(c)
                || c == ':'
                || c.is_whitespace() && code[j..].trim_start().starts_with("::") => {}
            c if c.is_whitespace() && code[i..j].trim_end().ends_with("::") => {}
            _ => break,
        }
        j += 1;
    }
    &code[i..j]
}

/// Every module path the file at `module` refers to (absolute, from the crate root).
fn references(module: &[String], code: &str) -> Vec<Vec<String>> {
    // The spans of inline `mod x { ... }` blocks: `super` inside one is the file's module.
    let mut inline = Vec::new();
    for (i, _) in code.match_indices("mod ") {
        if i > 0 && is_ident(code.as_bytes()[i - 1] as char) {
            continue;
        }
        let rest = &code[i + 4..];
        let name_len = rest.find(|c: char| !is_ident(c)).unwrap_or(rest.len());
        let after = rest[name_len..].trim_start();
        if name_len > 0 && after.starts_with('{') {
            let open = i + 4 + name_len + (rest[name_len..].len() - after.len());
            let mut depth = 0;
            let mut end = code.len();
            for (k, c) in code[open..].char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = open + k;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            inline.push((open, end));
        }
    }
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    for keyword in ["crate", "super"] {
        for (i, _) in code.match_indices(keyword) {
            let before_ok = i == 0 || {
                let c = bytes[i - 1] as char;
                !is_ident(c) && c != ':'
            };
            let after = &code[i + keyword.len()..];
            if !before_ok || !after.trim_start().starts_with("::") {
                continue;
            }
            let mut path = path_at(code, i);
            let mut base: Vec<String> = Vec::new();
            if keyword == "super" {
                let mut ups = 0;
                while let Some(rest) = path.trim_start().strip_prefix("super") {
                    ups += 1;
                    path = rest.trim_start().trim_start_matches("::");
                }
                let depth_inline = inline.iter().filter(|(a, b)| *a <= i && i < *b).count();
                if ups <= depth_inline {
                    continue; // inside this file
                }
                let up = ups - depth_inline;
                if up > module.len() {
                    continue;
                }
                base = module[..module.len() - up].to_vec();
            } else {
                path = path["crate".len()..].trim_start().trim_start_matches("::");
            }
            for p in expand(path) {
                let mut full = base.clone();
                full.extend(p);
                out.push(full);
            }
        }
    }
    // Paths through the file's own submodules: `child::Item` where `mod child;` is declared.
    for (i, _) in code.match_indices("mod ") {
        if i > 0 && is_ident(bytes[i - 1] as char) {
            continue;
        }
        let rest = &code[i + 4..];
        let n = rest.find(|c: char| !is_ident(c)).unwrap_or(rest.len());
        if n == 0 || !rest[n..].trim_start().starts_with(';') {
            continue;
        }
        let child = &rest[..n];
        for (j, _) in code.match_indices(child) {
            let ok_before = j == 0 || {
                let c = bytes[j - 1] as char;
                !is_ident(c) && c != ':'
            };
            let tail = &code[j + child.len()..];
            if ok_before && tail.trim_start().starts_with("::") {
                for p in expand(path_at(code, j)) {
                    let mut full = module.to_vec();
                    full.extend(p);
                    out.push(full);
                }
            }
        }
    }
    out
}

/// The module a path lands in: its longest prefix that is a file of the crate.
fn resolve(path: &[String], modules: &BTreeMap<Module, PathBuf>) -> Module {
    (0..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|p| modules.contains_key(p))
        .unwrap_or_default()
}

/// Strongly connected components with more than one node (Tarjan).
fn cycles(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct T<'a> {
        edges: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<Module, usize>,
        low: BTreeMap<Module, usize>,
        stack: Vec<Module>,
        on: BTreeSet<Module>,
        out: Vec<Vec<Module>>,
    }
    fn visit(t: &mut T<'_>, v: &Module) {
        let n = t.index.len();
        t.index.insert(v.clone(), n);
        t.low.insert(v.clone(), n);
        t.stack.push(v.clone());
        t.on.insert(v.clone());
        for w in t.edges.get(v).into_iter().flatten() {
            if !t.index.contains_key(w) {
                visit(t, w);
                let l = t.low[w].min(t.low[v]);
                t.low.insert(v.clone(), l);
            } else if t.on.contains(w) {
                let l = t.index[w].min(t.low[v]);
                t.low.insert(v.clone(), l);
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(&w);
                let done = &w == v;
                comp.push(w);
                if done {
                    break;
                }
            }
            if comp.len() > 1 {
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    let nodes: BTreeSet<Module> = edges
        .iter()
        .flat_map(|(a, bs)| std::iter::once(a.clone()).chain(bs.iter().cloned()))
        .collect();
    for v in &nodes {
        if !t.index.contains_key(v) {
            visit(&mut t, v);
        }
    }
    t.out
}

struct Graph {
    units: BTreeMap<Module, BTreeSet<Module>>,
    files: BTreeMap<Module, BTreeSet<Module>>,
    /// An example path for each unit edge, for the failure message.
    why: BTreeMap<(Module, Module), String>,
}

fn graph(src: &Path) -> Graph {
    let modules = modules(src);
    let mut g = Graph {
        units: BTreeMap::new(),
        files: BTreeMap::new(),
        why: BTreeMap::new(),
    };
    for (m, file) in &modules {
        let code = code_only(&std::fs::read_to_string(file).expect("read a source file"));
        for r in references(m, &code) {
            let target = resolve(&r, &modules);
            if target.is_empty() || &target == m {
                continue;
            }
            let (a, b) = (unit_of(m), unit_of(&target));
            if a != b && !b.is_empty() && !a.is_empty() {
                g.units.entry(a.clone()).or_default().insert(b.clone());
                g.why.entry((a, b)).or_insert_with(|| r.join("::"));
            } else if a == b && !target.starts_with(m) && !m.starts_with(&target) {
                g.files.entry(m.clone()).or_default().insert(target);
            }
        }
    }
    g
}

fn show(m: &[String]) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        m.join("::")
    }
}

#[test]
fn no_import_cycles_and_no_upward_imports() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let g = graph(&src);
    assert!(
        g.units.len() >= 20,
        "the use graph looks empty ({} units with imports): is the reader broken?",
        g.units.len()
    );
    let mut problems = Vec::new();
    for c in cycles(&g.units) {
        let names: Vec<String> = c.iter().map(|m| show(m)).collect();
        let mut edges = Vec::new();
        for a in &c {
            for b in g
                .units
                .get(a)
                .into_iter()
                .flatten()
                .filter(|b| c.contains(b))
            {
                edges.push(format!(
                    "{} -> {} ({})",
                    show(a),
                    show(b),
                    g.why[&(a.clone(), b.clone())]
                ));
            }
        }
        problems.push(format!(
            "import cycle among {}:\n    {}",
            names.join(", "),
            edges.join("\n    ")
        ));
    }
    for c in cycles(&g.files) {
        let names: Vec<String> = c.iter().map(|m| show(m)).collect();
        problems.push(format!(
            "sibling files import each other: {}",
            names.join(", ")
        ));
    }
    assert!(ALLOWED_UPWARD.len() <= 2, "at most two upward imports");
    for (a, bs) in &g.units {
        for b in bs {
            let (Some(la), Some(lb)) = (layer_of(a), layer_of(b)) else {
                problems.push(format!(
                    "{} -> {}: a unit in no layer (add it to LAYERS and ARCHITECTURE.md)",
                    show(a),
                    show(b)
                ));
                continue;
            };
            if lb > la && !ALLOWED_UPWARD.contains(&(show(a).as_str(), show(b).as_str())) {
                problems.push(format!(
                    "{} ({}) imports {} ({}), a higher layer: {}",
                    show(a),
                    LAYERS[la].0,
                    show(b),
                    LAYERS[lb].0,
                    g.why[&(a.clone(), b.clone())]
                ));
            }
        }
    }
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}

/// The reader itself, on small inputs whose references are worked out by hand: if it read
/// nothing, the check above would pass on any tree.
#[test]
fn the_use_reader_finds_what_is_written() {
    let code = code_only(
        r##"
use crate::a::{b::{C, d}, e};
use super::sibling::Thing; // crate::not::this
/* crate::nor::this */
mod child;
mod tests {
    use super::*;
    use super::super::up::X;
}
fn f() { let s = "crate::in_a::string"; crate::inline::path::f(); child::g(); }
"##,
    );
    let mut refs: Vec<String> = references(&["m".into(), "n".into()], &code)
        .into_iter()
        .map(|r| r.join("::"))
        .collect();
    refs.sort();
    assert_eq!(
        refs,
        vec![
            "a::b::C",
            "a::b::d",
            "a::e",
            "inline::path::f",
            "m::n::child::g",
            "m::sibling::Thing",
            "m::up::X",
        ]
    );
    let mut edges = BTreeMap::new();
    let m = |s: &str| vec![s.to_string()];
    edges.insert(m("a"), BTreeSet::from([m("b")]));
    edges.insert(m("b"), BTreeSet::from([m("c")]));
    edges.insert(m("c"), BTreeSet::from([m("a")]));
    edges.insert(m("d"), BTreeSet::from([m("a")]));
    let c = cycles(&edges);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].len(), 3);
}
