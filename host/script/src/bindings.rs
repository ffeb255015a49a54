//! The `bindgen!` sites: host-side bindings for each version of the WIT package the host
//! speaks. `v0_2` is `wit/` (the current package); `v0_1` is the frozen 0.1.0 package
//! (`host/script/wit/v0.1.0/`), kept so components built for it go on running.

pub mod v0_2 {
    wasmtime::component::bindgen!({
        world: "full-script",
        path: "../../wit",
    });
}

pub mod v0_1 {
    wasmtime::component::bindgen!({
        world: "full-script",
        path: "wit/v0.1.0",
    });
}
