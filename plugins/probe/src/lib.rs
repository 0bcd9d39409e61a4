//! The `probe` actor: reports on its own lifecycle and misbehaves on request.
//! Grove's tests use it to check activation, timers, turn isolation and the
//! sandbox.

mod bindings {
    wit_bindgen::generate!({
        path: ["../../wit/actor", "../../wit/examples/probe.wit"],
        world: "grove-example:probe/probe-actor",
        with: {
            "grove:actor/host@0.1.0": grove_guest::host,
            "grove:actor/types@0.1.0": grove_guest::types,
        },
    });
}

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use bindings::exports::grove_example::probe::probe::Guest;
use grove_guest::state;

const TABLE: &str = "probe";

thread_local! {
    static TICKS: RefCell<HashMap<String, Vec<u64>>> = RefCell::new(HashMap::new());
    static IN_TURN: Cell<bool> = const { Cell::new(false) };
    static OVERLAPS: Cell<u32> = const { Cell::new(0) };
    static MEMO: RefCell<Option<String>> = const { RefCell::new(None) };
    static HOARD: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

fn bump(counter: &str) {
    let key = grove_guest::self_key();
    let n: u32 = state::load(TABLE, &key, Some(counter))
        .expect("load")
        .unwrap_or(0);
    state::save(TABLE, &key, Some(counter), &(n + 1)).expect("save");
}

fn count(counter: &str) -> u32 {
    state::load(TABLE, &grove_guest::self_key(), Some(counter))
        .expect("load")
        .unwrap_or(0)
}

struct Probe;

impl grove_guest::Actor for Probe {
    fn on_activate() {
        bump("activations");
    }

    fn on_deactivate() {
        bump("deactivations");
    }

    fn on_timer(name: String) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        TICKS.with_borrow_mut(|ticks| ticks.entry(name).or_default().push(now));
    }
}

impl Guest for Probe {
    fn lifecycle_counts() -> (u32, u32) {
        (count("activations"), count("deactivations"))
    }

    fn start_timer(name: String, due_ms: u64, period_ms: Option<u64>, keep_alive: bool) {
        grove_guest::host::set_timer(&name, due_ms, period_ms, keep_alive);
    }

    fn cancel_timer(name: String) -> bool {
        grove_guest::timer::cancel(&name)
    }

    fn ticks(name: String) -> Vec<u64> {
        TICKS.with_borrow(|ticks| ticks.get(&name).cloned().unwrap_or_default())
    }

    fn overlap_check() -> u32 {
        if IN_TURN.replace(true) {
            OVERLAPS.set(OVERLAPS.get() + 1);
        }
        // Suspends this turn inside the host: if the host let another turn in
        // now, that turn would find IN_TURN set.
        bump("overlap-rounds");
        IN_TURN.set(false);
        OVERLAPS.get()
    }

    fn remember(value: String) {
        MEMO.set(Some(value));
    }

    fn recall() -> Option<String> {
        MEMO.with_borrow(|m| m.clone())
    }

    fn retire() {
        grove_guest::deactivate_after_turn();
    }

    fn fail(message: String) {
        panic!("{message}");
    }

    #[allow(clippy::empty_loop)]
    fn spin() {
        loop {}
    }

    fn hog(mebibytes: u32) -> u64 {
        HOARD.with_borrow_mut(|hoard| {
            for _ in 0..mebibytes {
                hoard.push(vec![1u8; 1 << 20]);
            }
            hoard.iter().map(|v| v.len() as u64).sum()
        })
    }
}

grove_guest::export_actor!(Probe with_types_in bindings);
