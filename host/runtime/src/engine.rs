//! The one wasmtime [`Engine`] a host runs every plugin on, its limits, the
//! epoch clock that enforces turn deadlines, and the on-disk cache of compiled
//! components.
//!
//! Settings follow the measurements in `docs/architecture.md`: the pooling
//! allocator (instantiation in microseconds, memory reused between
//! activations), epoch interruption (cheap deadline checks in compiled code)
//! and no component-model concurrency (which slows every call down).
//!
//! Compiling gives the compiler's freed memory back to the system
//! (`compile`), and a component compiled into the cache runs from the
//! cache file's mapping, as one loaded from it does.
//!
//! Errors: [`HostError`] for what keeps a host (its engine, imports or
//! epoch clock) from starting, [`CompileError`] for a component that does
//! not compile.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::limits::Limits;

/// How often the epoch advances; the granularity of turn deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Why a host, or the engine under it, could not be created.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// Wasmtime refused the engine configuration the limits ask for (e.g. a
    /// pool too large for the address space).
    #[error("cannot configure the WebAssembly engine: {0}")]
    Engine(#[source] wasmtime::Error),
    /// The host imports (WASI and `grove:actor/host`) could not be defined.
    #[error("cannot define the host's imports: {0}")]
    Imports(#[source] wasmtime::Error),
    /// The thread that advances the epoch (and so enforces turn deadlines)
    /// could not be started.
    #[error("cannot start the epoch clock thread: {0}")]
    EpochClock(#[source] std::io::Error),
}

/// Why a component could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// Wasmtime rejected the bytes: not a valid component, or one it cannot
    /// compile.
    #[error("cannot compile the component: {0}")]
    Invalid(#[source] wasmtime::Error),
}

/// Builds the engine for `limits`.
pub fn build_engine(limits: &Limits) -> Result<Engine, HostError> {
    let n = limits.max_activations.max(1);
    // An idle activation gives its fiber stack back: stacks are needed for
    // running turns only.
    let stacks = running_turn_limit(limits);
    let mut pool = PoolingAllocationConfig::default();
    // A component built from Rust holds one memory and a few core instances
    // and tables (its own module plus small adapter shims).
    pool.total_component_instances(n)
        .total_core_instances(n.saturating_mul(8))
        .total_memories(n.saturating_mul(2))
        .total_tables(n.saturating_mul(4))
        .total_stacks(stacks)
        .max_memory_size(limits.largest_memory())
        .max_core_instances_per_component(32)
        .max_memories_per_component(4)
        .max_tables_per_component(16)
        // A slot an activation leaves keeps the pages it wrote resident,
        // reset in place, for the next activation of the same plugin.
        .linear_memory_keep_resident(1 << 20)
        .table_keep_resident(64 << 10)
        .pagemap_scan(Enabled::Auto);

    let mut config = Config::new();
    config
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .epoch_interruption(true)
        .concurrency_support(false)
        .wasm_component_model(true)
        // Reserve only what the memory limit allows, so that tens of thousands of
        // activations fit in the address space. Bounds checks are explicit,
        // offsets included, so slots need no guard region between them: a
        // guard would be a mapping of its own in every live slot.
        .memory_reservation(limits.largest_memory() as u64)
        .memory_guard_size(0)
        .memory_reservation_for_growth(0)
        .memory_may_move(false)
        // Each activation maps its plugin's initial memory copy-on-write:
        // pages it never writes stay shared between activations (the half
        // of an idle activation's memory that copying cost), at a slower
        // burst of activations on several cores (docs/benchmarks.md,
        // "Activation"). The image is kept in a memory file as long as the
        // largest memory, also for components loaded from the on-disk
        // cache, and the vendored wasmtime maps it over an activation's
        // whole slot: two mappings per live activation, where an image
        // between anonymous mappings made four (`vendor/README.md`).
        .memory_init_cow(true)
        .force_memory_init_memfd(true)
        .max_wasm_stack(512 << 10)
        .async_stack_size(1 << 20);
    Engine::new(&config).map_err(HostError::Engine)
}

/// How many turns may run at once under `limits`: no more than there are
/// activations.
pub(crate) fn running_turn_limit(limits: &Limits) -> u32 {
    limits
        .max_running_turns
        .clamp(1, limits.max_activations.max(1))
}

/// Memory mappings one live activation adds: its linear memory's slot, the
/// plugin's memory file mapped over all of it, split into the accessible part
/// and the reserved rest. (Measured by the `local_calls` benchmark and
/// checked by `tests/mappings.rs`: 2.00.)
const MAPPINGS_PER_ACTIVATION: u64 = 2;

/// Memory mappings each configured fiber stack holds from the engine's
/// start: the stack and its guard page.
const MAPPINGS_PER_STACK: u64 = 2;

/// Mappings left to everything else: the binary, libraries, the heap,
/// thread stacks, the pools' own regions, compiled plugins. A host serving
/// the benchmarks holds under 100 of these before its first activation.
const MAPPINGS_RESERVED: u64 = 2048;

/// How many activations the kernel's limit on memory mappings per process
/// (`vm.max_map_count`) leaves room for beside `running_turns` fiber
/// stacks, where that limit can be read. Past it, activations fail with
/// "Cannot allocate memory".
pub fn activations_that_fit(running_turns: u32) -> Option<u32> {
    let max: u64 = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let stacks = u64::from(running_turns) * MAPPINGS_PER_STACK;
    u32::try_from(max.saturating_sub(MAPPINGS_RESERVED + stacks) / MAPPINGS_PER_ACTIVATION).ok()
}

/// Warns when `limits.max_activations` is more than [`activations_that_fit`].
pub fn check_map_count(limits: &Limits) {
    let turns = running_turn_limit(limits);
    if let Some(fit) = activations_that_fit(turns).filter(|&fit| fit < limits.max_activations) {
        let needed = u64::from(limits.max_activations) * MAPPINGS_PER_ACTIVATION
            + u64::from(turns) * MAPPINGS_PER_STACK
            + MAPPINGS_RESERVED;
        tracing::warn!(
            "vm.max_map_count leaves room for about {fit} activations, not the {} allowed; \
             raise it with `sysctl -w vm.max_map_count={needed}` or lower --max-activations",
            limits.max_activations
        );
    }
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until dropped.
pub struct EpochClock {
    stop: Arc<AtomicBool>,
}

impl EpochClock {
    /// Starts the clock thread for `engine`.
    pub fn start(engine: &Engine) -> Result<Self, HostError> {
        let stop = Arc::new(AtomicBool::new(false));
        let (engine, flag) = (engine.clone(), stop.clone());
        thread::Builder::new()
            .name("grove-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .map_err(HostError::EpochClock)?;
        Ok(EpochClock { stop })
    }
}

impl Drop for EpochClock {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Compiled components on disk, keyed by the SHA-256 of the component and the
/// engine's compatibility hash (wasmtime version and settings), so that a
/// second start skips compilation and a changed engine never loads stale code.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
}

impl CompileCache {
    /// A cache kept in `dir` (created on first use).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        CompileCache { dir: dir.into() }
    }

    fn path_for(&self, engine: &Engine, content_hash: &str) -> PathBuf {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        self.dir
            .join(format!("{content_hash}-{:016x}.cwasm", h.finish()))
    }

    /// Loads the compiled form of `bytes` from the cache, or compiles it and
    /// stores the result. Returns the component and whether it was cached.
    pub fn load(
        &self,
        engine: &Engine,
        bytes: &[u8],
        content_hash: &str,
    ) -> Result<(Component, bool), CompileError> {
        let path = self.path_for(engine, content_hash);
        if path.exists() {
            // SAFETY: the file was written by `Component::serialize` of this
            // engine configuration (the name carries its compatibility hash)
            // into the host's own data directory; wasmtime still checks the
            // header and rejects a file from another version or configuration.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => return Ok((component, true)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "ignoring unusable compile cache entry")
                }
            }
        }
        let compiled = compile(engine, bytes).map_err(CompileError::Invalid)?;
        if let Err(e) = self.store(&path, &compiled) {
            tracing::warn!(path = %path.display(), error = %e, "cannot write compile cache entry");
            return Ok((compiled, false));
        }
        // Taken back from the file just written, the code is mapped from it
        // (page cache, which a restart shares and the kernel may reclaim)
        // instead of held in anonymous memory.
        // SAFETY: as above: whoever wrote the file (this host, or another
        // sharing the cache) wrote it with `Component::serialize` under the
        // same compatibility hash, and renamed it into place whole.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(mapped) => {
                drop(compiled);
                give_back_freed_memory();
                Ok((mapped, false))
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot map the compile cache entry just written");
                Ok((compiled, false))
            }
        }
    }

    fn store(&self, path: &Path, component: &Component) -> wasmtime::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        // Write then rename, so that a crash never leaves a torn entry behind
        // and hosts sharing the cache never read a half-written one.
        static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = WRITES.fetch_add(1, Ordering::Relaxed);
        let tmp = path.with_extension(format!("{}-{n}.tmp", std::process::id()));
        std::fs::write(&tmp, component.serialize()?)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }
}

/// Compiles `bytes`, then gives the memory the compiler freed back to the
/// system.
///
/// Cranelift compiles a component's functions on a pool of threads, and glibc
/// gives each of those threads an arena of its own, which keeps what the
/// compiler freed: glibc returns memory to the system only from the top of
/// an arena's heap: hundreds of MiB after the demo's plugins
/// (`docs/benchmarks.md`). `malloc_trim` releases every free page of every
/// arena.
pub(crate) fn compile(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Component> {
    let component = Component::new(engine, bytes);
    give_back_freed_memory();
    component
}

fn give_back_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only returns free memory to the system; it is
    // safe to call at any time from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Hex SHA-256 of a plugin's bytes: its content identity.
pub fn content_hash(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
