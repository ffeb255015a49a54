//! The C examples' build-time tool, so they need nothing beyond clang and this
//! workspace's crates:
//!
//!     wasmpbx-c-componentize bindgen WIT_DIR WORLD OUT_DIR
//!         C bindings for WORLD of the WIT package in WIT_DIR (wit-bindgen's C
//!         generator): WORLD.h, WORLD.c and WORLD_component_type.o
//!     wasmpbx-c-componentize component CORE.wasm OUT.wasm
//!         the component of a core module built with those bindings (what
//!         `wasm-tools component new` does)

use std::path::Path;

use anyhow::{Context as _, bail};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["bindgen", wit, world, out] => bindgen(Path::new(wit), world, Path::new(out)),
        ["component", core, out] => component(Path::new(core), Path::new(out)),
        _ => bail!(
            "usage: wasmpbx-c-componentize bindgen WIT_DIR WORLD OUT_DIR | component CORE.wasm OUT.wasm"
        ),
    }
}

fn bindgen(wit: &Path, world: &str, out: &Path) -> anyhow::Result<()> {
    let mut resolve = wit_parser::Resolve::default();
    let (package, _) = resolve
        .push_path(wit)
        .with_context(|| format!("reading the WIT package in {}", wit.display()))?;
    let world = resolve.select_world(&[package], Some(world))?;
    let mut files = wit_bindgen_core::Files::default();
    wit_bindgen_c::Opts::default()
        .build()
        .generate(&mut resolve, world, &mut files)?;
    std::fs::create_dir_all(out)?;
    for (name, contents) in files.iter() {
        std::fs::write(out.join(name), contents)
            .with_context(|| format!("writing {}", out.join(name).display()))?;
    }
    Ok(())
}

fn component(core: &Path, out: &Path) -> anyhow::Result<()> {
    let module = std::fs::read(core).with_context(|| format!("reading {}", core.display()))?;
    let component = wit_component::ComponentEncoder::default()
        .module(&module)?
        .validate(true)
        .encode()
        .with_context(|| format!("making a component of {}", core.display()))?;
    std::fs::write(out, component).with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}
