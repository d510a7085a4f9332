//! Embeds the built web client (`web/dist`, committed) into the binary, so
//! that `colink serve` serves it with no Node.js on the machine.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let dist = manifest.join("../../web/dist");
    println!("cargo:rerun-if-changed={}", dist.display());
    let mut files = Vec::new();
    collect(&dist, &dist, &mut files);
    files.sort();
    let mut table = String::from(
        "/// Built web client files: path from the site root, and contents.\npub static ASSETS: &[(&str, &[u8])] = &[\n",
    );
    for (route, path) in &files {
        println!("cargo:rerun-if-changed={}", path.display());
        let _ = writeln!(table, "    ({route:?}, include_bytes!({:?})),", path.display().to_string());
    }
    table.push_str("];\n");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default()).join("web_assets.rs");
    if let Err(err) = std::fs::write(&out, table) {
        panic!("cannot write {}: {err}", out.display());
    }
}

fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(root, &path, files);
        } else if let Ok(relative) = path.strip_prefix(root) {
            let route = format!("/{}", relative.to_string_lossy().replace('\\', "/"));
            let absolute = path.canonicalize().unwrap_or(path);
            files.push((route, absolute));
        }
    }
}
