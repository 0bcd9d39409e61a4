//! A `counter` whose `add` takes a string, for deploy tests: an
//! incompatible version of the counter.

mod bindings {
    wit_bindgen::generate!({
        path: ["../../wit/actor", "wit/counter.wit"],
        world: "grove-example:counter/counter-actor",
        with: {
            "grove:actor/host@0.1.0": grove_guest::host,
            "grove:actor/types@0.1.0": grove_guest::types,
        },
    });
}

use std::cell::Cell;

use bindings::exports::grove_example::counter::counter::Guest;

const TABLE: &str = "counter";

thread_local! {
    static VALUE: Cell<u64> = const { Cell::new(0) };
}

struct Counter;

impl grove_guest::Actor for Counter {
    fn on_activate() {
        match grove_guest::state::load::<u64>(TABLE, &grove_guest::self_key(), None) {
            Ok(value) => VALUE.set(value.unwrap_or(0)),
            Err(e) => panic!("could not load the counter: {e}"),
        }
    }
}

impl Guest for Counter {
    fn add(amount: String) -> u64 {
        let value = VALUE
            .get()
            .saturating_add(amount.trim().parse().unwrap_or(0));
        if let Err(e) = grove_guest::state::save(TABLE, &grove_guest::self_key(), None, &value) {
            panic!("could not store the counter: {e}");
        }
        VALUE.set(value);
        value
    }

    fn get() -> u64 {
        VALUE.get()
    }
}

grove_guest::export_actor!(Counter with_types_in bindings);
