//! The `greeter` actor from the README's walkthrough.

mod bindings {
    wit_bindgen::generate!({
        path: ["../../wit/actor", "../../wit/examples/greeter.wit"],
        world: "my-game:greeter/greeter-actor",
        with: {
            "grove:actor/host@0.1.0": grove_guest::host,
            "grove:actor/types@0.1.0": grove_guest::types,
        },
    });
}

use bindings::exports::my_game::greeter::greeter::Guest;
use grove_guest::state;

struct Greeter;

impl Guest for Greeter {
    fn greet(name: String) -> (String, u32) {
        let key = grove_guest::self_key();
        let count: u32 = state::load("greetings", &key, None).unwrap().unwrap_or(0) + 1;
        state::save("greetings", &key, None, &count).unwrap();
        (format!("Hello, {name}, from greeter/{key}!"), count)
    }
}

// Lifecycle hooks are optional: on_activate, on_deactivate, on_timer.
impl grove_guest::Actor for Greeter {}

grove_guest::export_actor!(Greeter with_types_in bindings);
