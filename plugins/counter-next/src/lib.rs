//! The next version of the `counter` actor, for deploy tests: the same value
//! in the same state row, and a `version` function that names it.

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

fn store(value: u64) {
    if let Err(e) = grove_guest::state::save(TABLE, &grove_guest::self_key(), None, &value) {
        panic!("could not store the counter: {e}");
    }
    VALUE.set(value);
}

impl grove_guest::Actor for Counter {
    fn on_activate() {
        match grove_guest::state::load::<u64>(TABLE, &grove_guest::self_key(), None) {
            Ok(value) => VALUE.set(value.unwrap_or(0)),
            Err(e) => panic!("could not load the counter: {e}"),
        }
    }
}

impl Guest for Counter {
    fn add(amount: u64) -> u64 {
        let value = VALUE.get().saturating_add(amount);
        store(value);
        value
    }

    fn get() -> u64 {
        VALUE.get()
    }

    fn reset() {
        store(0);
    }

    fn version() -> String {
        "next".into()
    }
}

grove_guest::export_actor!(Counter with_types_in bindings);
