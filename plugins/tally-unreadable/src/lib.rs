//! A version of the `tally` actor that cannot read the snapshot the version
//! before wrote: its `restore` traps (a test plugin for a rollback that must
//! keep the actors' in-memory state).

mod bindings {
    wit_bindgen::generate!({
        path: ["../../wit/actor", "wit/tally.wit"],
        world: "grove-example:tally/tally-actor",
        with: {
            "grove:actor/host@0.1.0": grove_guest::host,
            "grove:actor/types@0.1.0": grove_guest::types,
        },
    });
}

use std::cell::Cell;

use bindings::exports::grove::actor::migrate;
use bindings::exports::grove_example::tally::tally::Guest;

thread_local! {
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

struct Tally;

impl grove_guest::Actor for Tally {}

impl Guest for Tally {
    fn add(amount: u64) -> u64 {
        COUNT.set(COUNT.get() + amount);
        COUNT.get()
    }

    fn get() -> u64 {
        COUNT.get()
    }

    fn version() -> String {
        "unreadable".into()
    }
}

impl migrate::Guest for Tally {
    fn snapshot() -> Vec<u8> {
        COUNT.get().to_le_bytes().to_vec()
    }

    fn restore(_state: Vec<u8>) {
        panic!("this version cannot read the snapshot of the version before");
    }
}

grove_guest::export_actor!(Tally with_types_in bindings);
