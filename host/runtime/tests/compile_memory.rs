//! Compiling plugins leaves no freed memory behind in the allocator.
//! Cranelift compiles on a pool of threads, and glibc gives each of them an
//! arena of its own that keeps what the compiler freed, until
//! `malloc_trim` gives it back; the host does that after each compile
//! (`docs/benchmarks.md`, "Memory: a cold start kept the compiler's
//! garbage"). The test has a binary of its own because it measures the
//! whole process.
#![cfg(all(target_os = "linux", target_env = "gnu"))]

mod common;

use grove_host::state::StateStore;
use grove_host::{ActorRef, Host};
use wasmtime::component::Val;

/// The process's anonymous resident memory, in KiB.
fn anonymous_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("RssAnon:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// How much anonymous memory a trim would give back now, in MiB.
fn untrimmed_mib() -> u64 {
    let before = anonymous_rss_kib();
    // SAFETY: `malloc_trim` only returns free memory to the system.
    unsafe {
        libc::malloc_trim(0);
    }
    before.saturating_sub(anonymous_rss_kib()) / 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiling_plugins_gives_the_compilers_memory_back() {
    let cache = tempfile::tempdir().unwrap();
    let mut uncached = common::config();
    uncached.compile_cache = None;
    let mut cached = common::config();
    cached.compile_cache = Some(cache.path().to_owned());
    let mut hosts = Vec::new();
    for (how, config) in [("without a cache", uncached), ("into a cache", cached)] {
        let host = Host::new(config, StateStore::memory()).unwrap();
        for name in ["guild", "world_cell", "world_player"] {
            host.load_plugin(&common::plugin(name)).unwrap();
        }
        // Without the host's own trim, this one gives back 200 MiB and more.
        let left = untrimmed_mib();
        assert!(
            left < 16,
            "compiling {how} left {left} MiB of freed memory in the allocator"
        );
        // The plugins compiled are whole: an actor of one of them answers.
        let cell = ActorRef::new("world-cell", "0");
        assert_eq!(
            host.call(&cell, "population", vec![]).await.unwrap(),
            Some(Val::U32(0))
        );
        hosts.push(host);
    }
    // What was compiled into the cache runs from the cache's files.
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    assert!(
        maps.lines().any(|line| line.contains(".cwasm")),
        "no compiled plugin is mapped from the cache"
    );
}
