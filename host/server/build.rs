//! Build the default scripts for `wasm32-wasip2` so the binary can carry them
//! (`src/default_scripts.rs`): a copied binary runs on its own.

use std::path::PathBuf;

const DEFAULT_SCRIPTS: [&str; 3] = ["listen", "front-door", "flip-policy"];

fn main() {
    let built = wasmpbx_guests::build(&DEFAULT_SCRIPTS);
    let mut table = String::from("[\n");
    for (name, path) in DEFAULT_SCRIPTS.iter().zip(built) {
        table.push_str(&format!(
            "    ({name:?}, include_bytes!({:?}).as_slice()),\n",
            path.display().to_string()
        ));
    }
    table.push(']');
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("default_scripts.rs");
    std::fs::write(out, table).expect("writing default_scripts.rs");
}
