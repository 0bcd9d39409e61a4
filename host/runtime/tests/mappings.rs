//! How many memory mappings live activations hold. The kernel caps a
//! process's mappings (`vm.max_map_count`, 65,530 by default), so this is
//! what caps a host's live activations; `grove run` sizes
//! `--max-activations` by it. The test has a binary of its own because it
//! counts the whole process's mappings.

mod common;

use grove_host::ActorRef;
use wasmtime::component::Val;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_activation_holds_two_memory_mappings_however_its_memory_grows() {
    const ACTORS: usize = 300;
    // No slots prepared at idle moments: they would hold mappings of their
    // own (`tests/prepared_slots.rs`).
    let mut config = common::config();
    config.limits.prepared_slots = 0;
    let host = common::host_with(config, grove_host::state::StateStore::memory());
    // The first activation of each plugin maps what every later one shares.
    host.call(&ActorRef::new("probe", "first"), "recall", vec![])
        .await
        .unwrap();
    host.call(&ActorRef::new("counter", "first"), "get", vec![])
        .await
        .unwrap();

    let before = common::memory_mappings();
    for i in 0..ACTORS {
        let probe = ActorRef::new("probe", &format!("p{i}"));
        host.call(&probe, "remember", vec![Val::String(format!("memo {i}"))])
            .await
            .unwrap();
        // Every third probe grows its memory by 2 MiB past its initial size.
        if i % 3 == 0 {
            host.call(&probe, "hog", vec![Val::U32(2)]).await.unwrap();
        }
        host.call(&ActorRef::new("counter", &format!("c{i}")), "get", vec![])
            .await
            .unwrap();
    }
    let per_activation = (common::memory_mappings() - before) as f64 / (2 * ACTORS) as f64;
    assert_eq!(host.active_count(), 2 * ACTORS + 2);
    // A copy-on-write data image in the middle of anonymous memory would
    // split each slot into four mappings.
    assert!(
        per_activation <= 2.05,
        "{per_activation:.2} mappings per live activation"
    );

    // Each activation kept its own memory.
    for i in (0..ACTORS).step_by(37) {
        let memo = host
            .call(&ActorRef::new("probe", &format!("p{i}")), "recall", vec![])
            .await
            .unwrap();
        assert_eq!(
            memo,
            Some(Val::Option(Some(Box::new(Val::String(format!(
                "memo {i}"
            ))))))
        );
    }
}
