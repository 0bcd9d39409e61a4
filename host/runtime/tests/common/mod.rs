//! Shared helpers for Grove's integration tests: where the built plugins are,
//! and hosts configured for fast tests.
#![allow(dead_code)]

#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub mod heap;
pub mod redis;

use std::path::PathBuf;
use std::time::Duration;

use grove_host::limits::{ActorLimits, Limits};
use grove_host::state::StateStore;
use grove_host::{Host, HostConfig};

/// The plugins built by `scripts/build-plugins`.
pub fn plugin(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../plugins/target/wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run scripts/build-plugins first",
        path.display()
    );
    path
}

/// A directory holding copies of the named plugins.
pub fn plugin_dir(names: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in names {
        std::fs::copy(plugin(name), dir.path().join(format!("{name}.wasm"))).unwrap();
    }
    dir
}

/// Compiled plugins are cached across the tests of one build.
pub fn compile_cache() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/grove-test-cache")
}

/// Test settings: a short idle timeout and turn deadline, small limits.
pub fn config() -> HostConfig {
    HostConfig {
        limits: Limits {
            max_activations: 2_000,
            actor: ActorLimits {
                max_memory: 32 << 20,
                turn_deadline: Duration::from_millis(1500),
                mailbox_capacity: 256,
                ..ActorLimits::default()
            },
            ..Limits::default()
        },
        idle_timeout: Duration::from_secs(60),
        compile_cache: Some(compile_cache()),
        call_timeout: Duration::from_secs(10),
        shutdown_timeout: Duration::from_secs(10),
        metrics: true,
    }
}

/// A host with the counter, showcase and probe plugins and in-memory state.
pub fn host() -> Host {
    host_with(config(), StateStore::memory())
}

/// A host with the named plugins, test settings and in-memory state.
pub fn host_of(plugins: &[&str]) -> Host {
    let host = Host::new(config(), StateStore::memory()).unwrap();
    for name in plugins {
        host.load_plugin(&plugin(name)).unwrap();
    }
    host
}

/// A host with the counter, showcase and probe plugins.
pub fn host_with(config: HostConfig, state: StateStore) -> Host {
    let host = Host::new(config, state).unwrap();
    for name in ["counter", "showcase", "probe"] {
        host.load_plugin(&plugin(name)).unwrap();
    }
    host
}

/// Calls `function` on `actor` with arguments written in WAVE and returns the
/// result in WAVE (`()` for none), or the error's kind and message.
pub async fn call(
    host: &Host,
    actor: &str,
    function: &str,
    args: &[&str],
) -> Result<String, String> {
    let actor: grove_host::ActorRef = actor.parse().unwrap();
    let plugin = host
        .plugin(&actor.actor_type)
        .map_err(|e| e.kind().to_owned())?;
    let (_, func) = plugin
        .function(function)
        .unwrap_or_else(|| panic!("{actor} has no function {function}"));
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let args = grove_host::values::args_from_wave(func, &args).unwrap();
    match host.call(&actor, function, args).await {
        Ok(Some(v)) => Ok(grove_host::values::to_wave(&v).unwrap()),
        Ok(None) => Ok("()".into()),
        Err(e) => Err(format!("{}: {e}", e.kind())),
    }
}

/// Like [`call`], for calls that must succeed.
pub async fn ok(host: &Host, actor: &str, function: &str, args: &[&str]) -> String {
    call(host, actor, function, args)
        .await
        .unwrap_or_else(|e| panic!("{actor}.{function}: {e}"))
}

/// Waits (up to `timeout`) until `check` holds.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while !check().await {
        assert!(start.elapsed() < timeout, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The process's memory mappings, which the kernel caps at
/// `vm.max_map_count`.
pub fn memory_mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .count()
}
