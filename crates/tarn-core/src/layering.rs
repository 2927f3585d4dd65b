//! A test that keeps `tarn-core`'s modules layered: no top-level module imports (names with
//! `crate::<module>`) another that, directly or through others, imports it back. `lib.rs`
//! composes the services and is not a layer; tests inside a module do not count.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each top-level module and the modules it names.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files: BTreeMap<String, Vec<std::path::PathBuf>> = BTreeMap::new();
    for entry in std::fs::read_dir(&src).unwrap().flatten() {
        let path = entry.path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if name == "lib" {
            continue;
        }
        let list = files.entry(name).or_default();
        if path.is_dir() {
            list.extend(
                std::fs::read_dir(&path)
                    .unwrap()
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|e| e == "rs")),
            );
        } else {
            list.push(path);
        }
    }
    let names: BTreeSet<String> = files.keys().cloned().collect();
    files
        .iter()
        .map(|(name, paths)| {
            let mut uses = BTreeSet::new();
            for path in paths {
                let text = std::fs::read_to_string(path).unwrap();
                let code = text.split("#[cfg(test)]").next().unwrap_or_default();
                for (i, _) in code.match_indices("crate::") {
                    let used: String = code[i + 7..]
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                        .collect();
                    if used != *name && names.contains(&used) {
                        uses.insert(used);
                    }
                }
            }
            (name.clone(), uses)
        })
        .collect()
}

/// A path of imports from `from` back to `to`, if there is one.
fn path_back(
    g: &BTreeMap<String, BTreeSet<String>>,
    from: &str,
    to: &str,
    seen: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    for next in &g[from] {
        if next == to {
            return Some(vec![from.to_string(), to.to_string()]);
        }
        if seen.insert(next.clone())
            && let Some(mut rest) = path_back(g, next, to, seen)
        {
            rest.insert(0, from.to_string());
            return Some(rest);
        }
    }
    None
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let g = graph();
    assert!(g.len() > 10, "the modules were not found: {g:?}");
    for (module, uses) in &g {
        for used in uses {
            if let Some(back) = path_back(&g, used, module, &mut BTreeSet::new()) {
                panic!(
                    "{module} imports {used}, which imports it back: {}",
                    back.join(" → ")
                );
            }
        }
    }
}
