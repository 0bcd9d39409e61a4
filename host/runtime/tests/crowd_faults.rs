//! A crowd of activations on fresh slots: an activation that finds no
//! instance made ahead faults in the pages its plugin's first turns write
//! before they run. Without that, a first turn reads some of those pages
//! (the kernel maps their neighbours read-only with them) and then writes
//! them, and each such write makes the kernel interrupt every other core
//! running the host to drop the read-only mapping: on a virtual machine
//! with two cores, a third of the crowd's time (`docs/benchmarks.md`,
//! "Activations in a crowd fault their pages in first"). The test counts
//! those interrupts (the `TLB` row of `/proc/interrupts`, which Linux shows
//! on x86-64), machine-wide, so it has a binary of its own.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod common;

use grove_host::ActorRef;

const CROWD: usize = 2_000;
const IN_FLIGHT: usize = 64;

/// TLB shootdown interrupts taken so far, summed over the CPUs.
fn tlb_shootdowns() -> u64 {
    let interrupts = std::fs::read_to_string("/proc/interrupts").unwrap();
    let row = interrupts
        .lines()
        .find(|line| line.trim_start().starts_with("TLB:"))
        .expect("/proc/interrupts has a TLB row");
    row.split_whitespace()
        .skip(1)
        .map_while(|field| field.parse::<u64>().ok())
        .sum()
}

#[test]
fn a_crowd_on_fresh_slots_does_not_interrupt_the_other_cores() {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut config = common::config();
    // Every slot fresh (none prepared while the host is idle), and every
    // activation instantiating on its own path.
    config.limits.prepared_slots = 0;
    config.limits.warm_activations = 0;
    config.limits.max_activations = 2 * CROWD as u32;
    let host = runtime
        .block_on(async { grove_host::Host::new(config, grove_host::state::StateStore::memory()) })
        .unwrap();
    let probe = host.load_plugin(&common::plugin("probe")).unwrap();

    let (before, after) = runtime.block_on(async move {
        // The first activation shows which pages a first turn writes.
        let first = ActorRef::new("probe", "first");
        host.call(&first, "recall", vec![]).await.unwrap();
        let learning = std::time::Instant::now();
        while probe.pages_written_ahead() == 0 {
            assert!(
                learning.elapsed() < std::time::Duration::from_secs(10),
                "no first-turn pages learned in 10 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }

        let before = tlb_shootdowns();
        let callers: Vec<_> = (0..IN_FLIGHT)
            .map(|caller| {
                let host = host.clone();
                tokio::spawn(async move {
                    for i in (caller..CROWD).step_by(IN_FLIGHT) {
                        let actor = ActorRef::new("probe", &format!("crowd-{i}"));
                        host.call(&actor, "recall", vec![]).await.unwrap();
                    }
                })
            })
            .collect();
        for caller in callers {
            caller.await.unwrap();
        }
        (before, tlb_shootdowns())
    });
    // Each core interrupted counts one. Without faulting in first: 2.1–2.7
    // per activation on two cores; with it, about 0.02 (the machine's
    // other processes and the host's own unmapping).
    let per_activation = (after - before) as f64 / CROWD as f64;
    eprintln!("{per_activation:.3} TLB shootdowns per activation");
    let most = 0.2 * cores.saturating_sub(1).max(1) as f64;
    assert!(
        per_activation < most,
        "{per_activation:.2} TLB shootdowns per activation in a crowd of {CROWD}"
    );
}
