//! A router built against a different version of the WIT package (`@0.0.9`).

wit_bindgen::generate!({
    inline: "
        package wasmpbx:script@0.0.9;
        interface router { handle: func(dialed: string) -> list<string>; }
        world routing-script { export router; }
    ",
});

struct Old;

impl exports::wasmpbx::script::router::Guest for Old {
    fn handle(dialed: String) -> Vec<String> {
        vec![dialed]
    }
}

export!(Old);
