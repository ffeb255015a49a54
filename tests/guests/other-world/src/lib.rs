//! A component for somebody else's world: it exports a greeting, not a router.

wit_bindgen::generate!({
    inline: "
        package example:greeter;
        world greeter { export greet: func(name: string) -> string; }
    ",
});

struct Greeter;

impl Guest for Greeter {
    fn greet(name: String) -> String {
        format!("hello {name}")
    }
}

export!(Greeter);
