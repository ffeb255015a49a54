//! Build every guest (default scripts and test guests) for `wasm32-wasip2` and write
//! their paths as constants.

use std::path::PathBuf;

/// (package, constant name).
const GUESTS: [(&str, &str); 8] = [
    ("listen", "LISTEN"),
    ("front-door", "FRONT_DOOR"),
    ("flip-policy", "FLIP_POLICY"),
    ("misbehave", "MISBEHAVE"),
    ("other-world", "OTHER_WORLD"),
    ("old-version", "OLD_VERSION"),
    ("built-for-0-1", "BUILT_FOR_0_1"),
    ("speaker", "SPEAKER"),
];

fn main() {
    let packages: Vec<&str> = GUESTS.iter().map(|(package, _)| *package).collect();
    let built = wasmpbx_guests::build(&packages);
    let mut constants = String::new();
    for ((package, constant), path) in GUESTS.iter().zip(built) {
        constants.push_str(&format!(
            "/// The `{package}` guest.\npub const {constant}: &str = {:?};\n",
            path.display().to_string()
        ));
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("components.rs");
    std::fs::write(out, constants).expect("writing components.rs");
}
