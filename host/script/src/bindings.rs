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

#[cfg(test)]
mod tests {
    /// The Rust SDK carries its own copy of the WIT package, so that it builds outside
    /// this repository; the copy must be this one.
    #[test]
    fn the_guest_sdk_carries_this_wit_package() {
        let ours = include_str!("../../../wit/wasmpbx.wit");
        let sdks = include_str!("../../../guest-sdk/wit/wasmpbx.wit");
        assert!(
            ours == sdks,
            "guest-sdk/wit/wasmpbx.wit differs from wit/wasmpbx.wit: copy wit/ over it"
        );
    }
}
