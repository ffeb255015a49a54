//! The one `bindgen!` site: host-side bindings for the whole WIT package.

wasmtime::component::bindgen!({
    world: "full-script",
    path: "../../wit",
});
