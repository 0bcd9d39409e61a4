//! A version of the `counter` actor whose `on-activate` traps, for deploy
//! tests: compatible with the counter, but no activation of it starts.

mod bindings {
    wit_bindgen::generate!({
        path: ["../../wit/actor", "../../wit/examples/counter.wit"],
        world: "grove-example:counter/counter-actor",
        with: {
            "grove:actor/host@0.1.0": grove_guest::host,
            "grove:actor/types@0.1.0": grove_guest::types,
        },
    });
}

use bindings::exports::grove_example::counter::counter::Guest;

struct Counter;

impl grove_guest::Actor for Counter {
    fn on_activate() {
        panic!("this version of the counter cannot start");
    }
}

impl Guest for Counter {
    fn add(amount: u64) -> u64 {
        amount
    }

    fn get() -> u64 {
        0
    }

    fn reset() {}
}

grove_guest::export_actor!(Counter with_types_in bindings);
