//! The generated bindings. Script authors never name anything in here: the crate root
//! re-exports the types under plain names and the `export_*!` macros wire the exports.
//!
//! Each world gets its own `generate!` with `pub_export_macro`, which keeps a world's
//! exports out of the binary until its export macro is invoked: a script that only
//! routes calls does not claim to decide flips. The host imports are generated once, in
//! `host`, and shared by the two export worlds through `with`.

pub mod host {
    wit_bindgen::generate!({
        world: "host",
        path: "wit",
        pub_export_macro: true,
        generate_all,
    });
}

pub mod routing {
    wit_bindgen::generate!({
        world: "routing-script",
        path: "wit",
        pub_export_macro: true,
        export_macro_name: "__export_routing_script",
        default_bindings_module: "::wasmpbx_guest::__bindings::routing",
        with: {
            "wasmpbx:script/log@0.2.0": crate::__bindings::host::wasmpbx::script::log,
            "wasmpbx:script/clock@0.2.0": crate::__bindings::host::wasmpbx::script::clock,
            "wasmpbx:script/config@0.2.0": crate::__bindings::host::wasmpbx::script::config,
            "wasmpbx:script/directory@0.2.0": crate::__bindings::host::wasmpbx::script::directory,
            "wasmpbx:script/kv@0.2.0": crate::__bindings::host::wasmpbx::script::kv,
        },
    });
}

pub mod flip {
    wit_bindgen::generate!({
        world: "flip-policy-script",
        path: "wit",
        pub_export_macro: true,
        export_macro_name: "__export_flip_policy_script",
        default_bindings_module: "::wasmpbx_guest::__bindings::flip",
        with: {
            "wasmpbx:script/log@0.2.0": crate::__bindings::host::wasmpbx::script::log,
            "wasmpbx:script/clock@0.2.0": crate::__bindings::host::wasmpbx::script::clock,
            "wasmpbx:script/config@0.2.0": crate::__bindings::host::wasmpbx::script::config,
            "wasmpbx:script/directory@0.2.0": crate::__bindings::host::wasmpbx::script::directory,
            "wasmpbx:script/kv@0.2.0": crate::__bindings::host::wasmpbx::script::kv,
        },
    });
}
