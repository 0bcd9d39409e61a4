//! The `__NAME__` actor. Build it with `./build.sh`, then serve it with
//! `grove run --plugins .` and call it:
//! `grove call __NAME__/1 hello '"Ayla"'`.

mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "actors:__NAME__/__NAME__-actor",
        with: {
            "grove:actor/host@0.1.0": grove_guest::host,
            "grove:actor/types@0.1.0": grove_guest::types,
        },
    });
}

use std::cell::Cell;
use std::time::Duration;

use bindings::exports::actors::__SNAKE__::__SNAKE__::Guest;
use grove_guest::{log, state, timer};

/// The state table this actor keeps its rows in.
const TABLE: &str = "greetings";

thread_local! {
    /// Timer ticks since activation: in memory, gone when it deactivates.
    static TICKS: Cell<u64> = const { Cell::new(0) };
}

struct Actor;

impl Guest for Actor {
    fn hello(name: String) -> String {
        let key = grove_guest::self_key();
        // Rows survive deactivation and restarts; a state error traps the
        // turn, and the caller gets the error.
        let greeted: u64 = state::load(TABLE, &key, None).unwrap().unwrap_or(0) + 1;
        state::save(TABLE, &key, None, &greeted).unwrap();
        format!("Hello, {name}! {greeted} greetings from __NAME__/{key}.")
    }

    fn ticks() -> u64 {
        TICKS.get()
    }
}

impl grove_guest::Actor for Actor {
    fn on_activate() {
        // Every second while the actor is active; it does not keep it active.
        timer::periodic("tick", Duration::from_secs(1), Duration::from_secs(1), false);
    }

    fn on_timer(name: String) {
        TICKS.set(TICKS.get() + 1);
        log::debug(&format!("timer {name}"));
    }
}

grove_guest::export_actor!(Actor with_types_in bindings);
