//! The `tally` actor: a count kept in memory only, carried to a new version
//! of the plugin by `grove:actor/migrate` (a test plugin for deploys).

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
}

impl migrate::Guest for Tally {
    fn snapshot() -> Vec<u8> {
        COUNT.get().to_le_bytes().to_vec()
    }

    fn restore(state: Vec<u8>) {
        let bytes: [u8; 8] = state.try_into().expect("a tally snapshot is 8 bytes");
        COUNT.set(u64::from_le_bytes(bytes));
    }
}

grove_guest::export_actor!(Tally with_types_in bindings);
