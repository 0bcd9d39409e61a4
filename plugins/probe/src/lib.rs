//! The `probe` actor: reports on its own lifecycle and misbehaves on request.
//! Grove's tests use it to check activation, timers, turn isolation and the
//! sandbox.

mod bindings {
    wit_bindgen::generate!({
        path: [
            "../../wit/actor",
            "../../wit/examples/probe.wit",
            "../../wit/examples/probe-proxy.wit",
            "wit/counter-v2-proxy.wit",
            "wit/world.wit",
        ],
        world: "grove-example:probe-plugin/probe-actor",
        with: {
            "grove:actor/host@0.1.0": grove_guest::host,
            "grove:actor/types@0.1.0": grove_guest::types,
        },
        // Bindings for the imported proxies are generated here.
        generate_all,
    });
}

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use bindings::exports::grove_example::probe::probe::{Guest, Misbehavior};
use bindings::grove_example::counter_proxy::counter::Counter;
use bindings::grove_example::probe_proxy::probe::Probe as ProbeProxy;
use grove_guest::{reminder, state, CallError};

const TABLE: &str = "probe";

thread_local! {
    static TICKS: RefCell<HashMap<String, Vec<u64>>> = RefCell::new(HashMap::new());
    static IN_TURN: Cell<bool> = const { Cell::new(false) };
    static OVERLAPS: Cell<u32> = const { Cell::new(0) };
    static MEMO: RefCell<Option<String>> = const { RefCell::new(None) };
    static HOARD: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    static FLOOD_TICKS: Cell<u64> = const { Cell::new(0) };
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
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

    fn on_reminder(name: String) {
        if name.starts_with("trap") {
            bump(&format!("tries-{name}"));
            panic!("reminder {name} traps on purpose");
        }
        let key = grove_guest::self_key();
        let table = "probe-reminders";
        let mut fired: Vec<u64> = state::load(table, &key, Some(&name))
            .expect("load")
            .unwrap_or_default();
        fired.push(now_ms());
        state::save(table, &key, Some(&name), &fired).expect("save");
    }

    fn on_timer(name: String) {
        if name.starts_with("flood-") {
            FLOOD_TICKS.set(FLOOD_TICKS.get() + 1);
            return;
        }
        let now = now_ms();
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

    fn relay(path: Vec<String>) -> Result<Vec<String>, CallError> {
        let mut answered = vec![grove_guest::self_key()];
        if let Some((next, rest)) = path.split_first() {
            answered.extend(ProbeProxy::new(next).relay(rest)??);
        }
        Ok(answered)
    }

    fn relay_after(ms: u32, path: Vec<String>) -> Result<Vec<String>, CallError> {
        std::thread::sleep(std::time::Duration::from_millis(ms.into()));
        Self::relay(path)
    }

    fn provoke(
        target: String,
        what: Misbehavior,
        timeout_ms: Option<u32>,
    ) -> Result<String, CallError> {
        let callee = ProbeProxy::new(&target);
        if let Some(ms) = timeout_ms {
            callee.set_timeout(ms);
        }
        match what {
            Misbehavior::Trap => callee.fail("provoked")?,
            Misbehavior::Spin => callee.spin()?,
            Misbehavior::Hog => callee.hog(1 << 12).map(|_| ())?,
            Misbehavior::Behave => callee.recall().map(|_| ())?,
        }
        Ok("ok".into())
    }

    fn ping_many(target: String, count: u32) -> Result<Vec<u64>, CallError> {
        let callee = ProbeProxy::new(&target);
        let mut took = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let start = std::time::Instant::now();
            callee.recall()?;
            took.push(start.elapsed().as_nanos() as u64);
        }
        Ok(took)
    }

    fn nap(ms: u32) -> String {
        std::thread::sleep(std::time::Duration::from_millis(ms.into()));
        grove_guest::self_key()
    }

    fn gather(targets: Vec<String>, nap_ms: u32) -> Result<Vec<String>, CallError> {
        let started = targets
            .iter()
            .map(|t| ProbeProxy::new(t).start_nap(nap_ms))
            .collect::<Result<Vec<_>, _>>()?;
        let mut answered = Vec::with_capacity(started.len());
        for pending in &started {
            answered.push(pending.wait()?);
        }
        Ok(answered)
    }

    fn recall_each(
        targets: Vec<String>,
        at_once: bool,
        rounds: u32,
    ) -> Result<Vec<u64>, CallError> {
        let callees: Vec<ProbeProxy> = targets.iter().map(|t| ProbeProxy::new(t)).collect();
        let mut took = Vec::with_capacity(rounds as usize);
        for _ in 0..rounds {
            let start = std::time::Instant::now();
            if at_once {
                let started = callees
                    .iter()
                    .map(ProbeProxy::start_recall)
                    .collect::<Result<Vec<_>, _>>()?;
                for pending in &started {
                    pending.wait()?;
                }
            } else {
                for callee in &callees {
                    callee.recall()?;
                }
            }
            took.push(start.elapsed().as_nanos() as u64);
        }
        Ok(took)
    }

    fn wait_twice(target: String) -> Result<Option<String>, CallError> {
        let pending = ProbeProxy::new(&target).start_recall()?;
        pending.wait()?;
        pending.wait()
    }

    fn scatter_notes(target: String, first: u32, count: u32) -> Result<(), CallError> {
        let callee = ProbeProxy::new(&target);
        let started = (first..first + count)
            .map(|n| callee.start_note(n, false))
            .collect::<Result<Vec<_>, _>>()?;
        for pending in started.iter().rev() {
            pending.wait()?;
        }
        Ok(())
    }

    fn ping_bytes(target: String, count: u32, size: u32) -> Result<Vec<u64>, CallError> {
        let callee = ProbeProxy::new(&target);
        let payload = vec![7u8; size as usize];
        let mut took = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let start = std::time::Instant::now();
            callee.take_bytes(&payload)?;
            took.push(start.elapsed().as_nanos() as u64);
        }
        Ok(took)
    }

    fn take_bytes(payload: Vec<u8>) -> u32 {
        payload.len() as u32
    }

    fn count_up(len: u32) -> Vec<u32> {
        (0..len).collect()
    }

    fn reverse_bytes(mut payload: Vec<u8>) -> Vec<u8> {
        payload.reverse();
        payload
    }

    fn bounce_bytes(target: String, payload: Vec<u8>) -> Result<Vec<u8>, CallError> {
        ProbeProxy::new(&target).reverse_bytes(&payload)
    }

    fn double_counter(key: String) -> Result<u64, CallError> {
        Counter::new(&key).double()
    }

    fn post_notes(
        target: String,
        first: u32,
        count: u32,
        retire_every: u32,
    ) -> Result<(), CallError> {
        let callee = ProbeProxy::new(&target);
        for n in first..first + count {
            let retire = retire_every != 0 && n % retire_every == 0;
            callee.send_note(n, retire)?;
        }
        Ok(())
    }

    fn note(n: u32, retire: bool) {
        let key = grove_guest::self_key();
        let mut notes: Vec<u32> = state::load(TABLE, &key, Some("notes"))
            .expect("load")
            .unwrap_or_default();
        notes.push(n);
        state::save(TABLE, &key, Some("notes"), &notes).expect("save");
        if retire {
            grove_guest::deactivate_after_turn();
        }
    }

    fn notes() -> Vec<u32> {
        state::load(TABLE, &grove_guest::self_key(), Some("notes"))
            .expect("load")
            .unwrap_or_default()
    }

    fn flood_timers(count: u32, period_ms: u64) {
        for n in 0..count {
            grove_guest::host::set_timer(&format!("flood-{n}"), period_ms, Some(period_ms), false);
        }
    }

    fn flood_ticks() -> u64 {
        FLOOD_TICKS.get()
    }

    fn write_rows(count: u32, size: u32) -> u32 {
        let key = grove_guest::self_key();
        let value = vec![7u8; size as usize];
        for n in 0..count {
            if state::put("rows", &key, Some(&n.to_string()), &value).is_err() {
                return n;
            }
        }
        count
    }

    fn start_reminder(name: String, due_ms: u64, period_ms: Option<u64>) -> Result<(), String> {
        let due = std::time::Duration::from_millis(due_ms);
        match period_ms {
            None => reminder::once(&name, due),
            Some(p) => reminder::periodic(&name, due, std::time::Duration::from_millis(p)),
        }
        .map_err(|e| format!("{e:?}"))
    }

    fn cancel_reminder(name: String) -> Result<bool, String> {
        reminder::cancel(&name).map_err(|e| format!("{e:?}"))
    }

    fn reminders(name: String) -> Vec<u64> {
        state::load("probe-reminders", &grove_guest::self_key(), Some(&name))
            .expect("load")
            .unwrap_or_default()
    }
}

grove_guest::export_actor!(Probe with_types_in bindings);
