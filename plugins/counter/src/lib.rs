//! The `counter` actor: a number per key, kept in state so it survives
//! deactivation and host restarts.

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

use std::cell::Cell;

use bindings::exports::grove_example::counter::counter::Guest;

const TABLE: &str = "counter";

thread_local! {
    /// The value, loaded once per activation and written through on change.
    static VALUE: Cell<u64> = const { Cell::new(0) };
}

struct Counter;

fn store(value: u64) {
    // A write that was not stored must not be reported as done: trapping ends
    // the turn with an error for the caller and leaves the old value in place.
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
}

grove_guest::export_actor!(Counter with_types_in bindings);
