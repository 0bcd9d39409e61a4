//! The `rogue` actor: misbehaves on request, in each way a plugin might try
//! to hurt its host or the actors beside it. Grove's sandbox tests run it
//! beside well-behaved actors and check that they never notice.

mod bindings {
    wit_bindgen::generate!({
        path: [
            "../../wit/actor",
            "../../wit/examples/probe-proxy.wit",
            "wit/rogue.wit",
        ],
        world: "grove-example:rogue/rogue-actor",
        with: {
            "grove:actor/host@0.1.0": grove_guest::host,
            "grove:actor/types@0.1.0": grove_guest::types,
        },
        generate_all,
    });
}

use std::cell::RefCell;
use std::hint::black_box;
use std::time::Duration;

use bindings::exports::grove_example::rogue::rogue::Guest;
use bindings::grove_example::probe_proxy::probe::Probe;
use grove_guest::{reminder, state};

thread_local! {
    static HOARD: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

struct Rogue;

impl grove_guest::Actor for Rogue {}

/// One level of recursion with a frame the optimiser cannot drop.
#[inline(never)]
fn deeper(left: u64) -> u64 {
    let mut frame = [0u8; 256];
    frame[(left % 256) as usize] = 1;
    black_box(&mut frame);
    if left == 0 {
        return 0;
    }
    deeper(left - 1) + u64::from(frame[(left % 256) as usize])
}

impl Guest for Rogue {
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

    fn recurse(depth: u64) -> u64 {
        deeper(black_box(depth))
    }

    fn huge(len: u32) -> Vec<u8> {
        vec![7u8; len as usize]
    }

    fn shout(lines: u32) -> u32 {
        for i in 0..lines {
            grove_guest::log::info(&format!("shouting {i}"));
            println!("shouting {i} on stdout");
            eprintln!("shouting {i} on stderr");
        }
        lines
    }

    fn set_timers(count: u32) {
        for i in 0..count {
            grove_guest::timer::periodic(
                &format!("flood-{i}"),
                Duration::from_millis(1),
                Duration::from_millis(1),
                false,
            );
        }
    }

    fn set_reminders(count: u32) -> (u32, Option<String>) {
        for i in 0..count {
            let set = reminder::periodic(
                &format!("r-{i}"),
                Duration::from_secs(3600),
                Duration::from_secs(3600),
            );
            if let Err(e) = set {
                return (i, Some(format!("{e:?}")));
            }
        }
        (count, None)
    }

    fn fill_state(key1: String, rows: u32, size: u32) -> (u32, Option<String>) {
        let value = vec![1u8; size as usize];
        for i in 0..rows {
            if let Err(e) = state::put("hoard", &key1, Some(&i.to_string()), &value) {
                return (i, Some(format!("{e:?}")));
            }
        }
        (rows, None)
    }

    fn leak_proxies(count: u32) -> u32 {
        for i in 0..count {
            std::mem::forget(Probe::new(&format!("leaked-{i}")));
        }
        count
    }

    fn read_file(path: String) -> String {
        match std::fs::read(&path) {
            Ok(bytes) => format!("read {} bytes", bytes.len()),
            Err(e) => format!("error: {e}"),
        }
    }

    fn connect(address: String) -> String {
        match std::net::TcpStream::connect(&address) {
            Ok(_) => "connected".to_owned(),
            Err(e) => format!("error: {e}"),
        }
    }

    fn environment() -> Vec<String> {
        let mut seen: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
        seen.extend(std::env::args().map(|a| format!("arg {a}")));
        if let Ok(dir) = std::env::current_dir() {
            seen.push(format!("cwd {}", dir.display()));
        }
        if let Ok(entries) = std::fs::read_dir("/") {
            seen.extend(
                entries
                    .flatten()
                    .map(|e| format!("/{}", e.file_name().to_string_lossy())),
            );
        }
        seen
    }
}

grove_guest::export_actor!(Rogue with_types_in bindings);
