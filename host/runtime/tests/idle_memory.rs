//! What an idle activation keeps on the host's heap. Thousands of idle
//! players each hold their activation's store, instances and task, so a
//! kilobyte here is megabytes on a busy host (`docs/benchmarks.md`, "A
//! store's module registry as a sorted list"). The test has a binary of
//! its own because it reads the whole process's heap.
#![cfg(all(target_os = "linux", target_env = "gnu"))]

mod common;

use grove_host::state::StateStore;
use grove_host::ActorRef;

use common::heap::heap_in_use;

const ACTIVATIONS: usize = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_activation_keeps_little_on_the_heap() {
    // No slots prepared at idle moments: the instances held meanwhile
    // would count as heap.
    let mut config = common::config();
    config.limits.prepared_slots = 0;
    let host = common::host_with(config, StateStore::memory());
    let call = |i: usize| {
        let host = host.clone();
        async move {
            let actor = ActorRef::new("counter", &i.to_string());
            host.call(&actor, "get", vec![]).await.unwrap();
        }
    };
    // The first activations grow what every later one shares.
    for i in 0..50 {
        call(i).await;
    }
    let before = heap_in_use();
    for i in 50..50 + ACTIVATIONS {
        call(i).await;
    }
    let per_activation = heap_in_use().saturating_sub(before) / ACTIVATIONS as u64;
    assert_eq!(host.active_count(), 50 + ACTIVATIONS);
    // 13.8 KiB when this was written; wasmtime's store kept 2.4 KiB more
    // in three B-tree maps for its one to four modules before the vendored
    // patch listed them in sorted vectors.
    assert!(
        per_activation < 15 * 1024,
        "an idle activation keeps {per_activation} bytes on the heap"
    );
}
