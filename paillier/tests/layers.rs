//! The crate's modules form the layers `lib.rs` lists: a module names (by a
//! `crate::` path, in code or docs) only modules of lower layers, never one
//! of its own layer or above. Read from the sources, so a new `use` that
//! breaks the layering fails here.
//!
//! What a path check cannot see, inherent methods defined in a higher module
//! on a lower module's type (`scheme` adds encryption to `PublicKey`), is
//! kept out by convention: lower modules only call methods of their own
//! layer or below.

use std::collections::BTreeSet;
use std::path::Path;

/// Lowest first; the same list as the crate docs in `lib.rs`.
const LAYERS: &[&[&str]] = &[
    &["arith", "hex"],
    &["prime", "fingerprint"],
    &["error"],
    &["keys"],
    &["ciphertext"],
    &["scheme"],
    &["encoding", "threshold"],
    &["packing", "vector"],
    &["wire"],
];

fn layer_of(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|l| l.contains(&module))
        .unwrap_or_else(|| panic!("module `{module}` is in no layer: add it to LAYERS and lib.rs"))
}

/// The text of module `name`: `src/name.rs` or every file under `src/name/`.
fn sources(src: &Path, name: &str) -> Vec<(String, String)> {
    let file = src.join(format!("{name}.rs"));
    if file.exists() {
        return vec![(name.to_owned(), std::fs::read_to_string(file).unwrap())];
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(src.join(name)).unwrap() {
        let path = entry.unwrap().path();
        let shown = format!("{name}/{}", path.file_name().unwrap().to_string_lossy());
        out.push((shown, std::fs::read_to_string(path).unwrap()));
    }
    out
}

/// Top-level modules named by `crate::` paths in `text`.
fn named_modules(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        assert!(
            !rest.starts_with('{'),
            "write `use crate::module::...` per module, not `use crate::{{...}}`"
        );
        if !name.is_empty() {
            out.insert(name);
        }
    }
    out
}

#[test]
fn modules_name_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut modules = BTreeSet::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        if stem != "lib" {
            modules.insert(stem);
        }
    }
    let listed: BTreeSet<String> = LAYERS
        .iter()
        .flat_map(|l| l.iter().map(|s| s.to_string()))
        .collect();
    assert_eq!(modules, listed, "src/ and LAYERS disagree");
    let mut violations = Vec::new();
    for module in &modules {
        let own = layer_of(module);
        for (file, text) in sources(&src, module) {
            for used in named_modules(&text) {
                if &used != module && layer_of(&used) >= own {
                    violations.push(format!(
                        "{file} names crate::{used} (layer {} >= {})",
                        layer_of(&used) + 1,
                        own + 1
                    ));
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "layering broken:\n{}",
        violations.join("\n")
    );
}

/// The lib.rs docs list the same layers, in the same order.
#[test]
fn lib_docs_list_the_layers() {
    let lib =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    for (i, layer) in LAYERS.iter().enumerate() {
        let start = lib
            .find(&format!("//! {}. ", i + 1))
            .unwrap_or_else(|| panic!("lib.rs lists no layer {}", i + 1));
        // The item runs to the next numbered item or the end of the list.
        let rest = &lib[start..];
        let end = rest
            .find(&format!("//! {}. ", i + 2))
            .or_else(|| rest.find("//!\n"))
            .unwrap_or(rest.len());
        let item = &rest[..end];
        for m in *layer {
            assert!(
                item.contains(&format!("`{m}`")),
                "lib.rs layer {} should name `{m}`: {item}",
                i + 1
            );
        }
    }
}
