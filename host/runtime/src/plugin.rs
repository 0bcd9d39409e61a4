//! Loading plugins: a plugin is a WebAssembly component that exports Grove's
//! lifecycle interface and exactly one actor interface, whose name is the actor
//! type. The host learns the interface from the component itself — it needs no
//! Rust types for it — and prepares an `InstancePre` so that activating an
//! actor is a cheap instantiation.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use wasmtime::component::types::{ComponentFunc, ComponentItem};
use wasmtime::component::{Component, ComponentExportIndex, InstancePre, Linker, Type};
use wasmtime::Engine;

use crate::engine::{content_hash, CompileCache, CompileError, HostError};
use crate::imports::ActivationState;
use crate::metrics::FunctionCalls;
use crate::prefault::FirstTurnPages;
use crate::warm::WarmPool;
use crate::wit_text::{self, InterfaceText};

/// The lifecycle interface every plugin exports.
pub const LIFECYCLE_INTERFACE: &str = "grove:actor/lifecycle@0.1.0";

/// The interface a plugin may export to carry in-memory state to a new
/// version of itself.
pub const MIGRATE_INTERFACE: &str = "grove:actor/migrate@0.1.0";

/// Why a plugin file was rejected. The host goes on serving the others.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PluginError {
    /// The file could not be read.
    #[error("{file}: cannot read: {message}")]
    Read {
        /// The plugin file.
        file: PathBuf,
        /// The I/O error.
        message: String,
    },
    /// The file is not a valid WebAssembly component.
    #[error("{file}: not a valid WebAssembly component: {message}")]
    Invalid {
        /// The plugin file.
        file: PathBuf,
        /// What wasmtime found wrong.
        message: String,
    },
    /// The component is valid but does not follow Grove's plugin contract.
    #[error("{file}: not a Grove actor plugin: {message}")]
    NonConforming {
        /// The plugin file.
        file: PathBuf,
        /// Which rule it breaks.
        message: String,
    },
    /// Another plugin already provides this actor type.
    #[error("{file}: actor type `{actor_type}` is already provided by {other}")]
    Duplicate {
        /// The plugin file.
        file: PathBuf,
        /// The actor type both provide.
        actor_type: String,
        /// The file loaded first.
        other: PathBuf,
    },
}

impl PluginError {
    /// The file the error is about.
    pub fn file(&self) -> &Path {
        match self {
            PluginError::Read { file, .. }
            | PluginError::Invalid { file, .. }
            | PluginError::NonConforming { file, .. }
            | PluginError::Duplicate { file, .. } => file,
        }
    }
}

/// Why [`Plugin::inspect`] could not read a plugin.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The engine to load it on could not be created.
    #[error(transparent)]
    Host(#[from] HostError),
    /// The plugin itself was rejected.
    #[error(transparent)]
    Plugin(#[from] PluginError),
}

/// Why a directory of plugins could not be loaded at all (as opposed to
/// single files in it being rejected, which [`PluginError`] reports).
#[derive(Debug, thiserror::Error)]
pub enum PluginDirError {
    /// The directory could not be listed.
    #[error("cannot read plugins directory {}: {source}", dir.display())]
    Read {
        /// The directory.
        dir: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// One parameter of an actor function.
#[derive(Debug, Clone)]
pub struct Param {
    /// The parameter's WIT name.
    pub name: String,
    /// Its type, as wasmtime sees it.
    pub ty: Type,
}

/// One function of an actor interface.
#[derive(Debug, Clone)]
pub struct Function {
    /// The WIT name, e.g. `add-item`.
    pub name: String,
    /// Parameters in order.
    pub params: Vec<Param>,
    /// The result type, if the function returns one.
    pub result: Option<Type>,
    /// The WIT signature, e.g. `add: func(amount: u64) -> u64`.
    pub signature: String,
    /// The doc comment from the WIT, if the component carries it.
    pub docs: Option<String>,
    pub(crate) index: ComponentExportIndex,
}

/// Where the lifecycle hooks are in the component's exports.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LifecycleExports {
    pub(crate) on_activate: ComponentExportIndex,
    pub(crate) on_deactivate: ComponentExportIndex,
    pub(crate) on_timer: ComponentExportIndex,
    pub(crate) on_reminder: ComponentExportIndex,
    pub(crate) on_connect: ComponentExportIndex,
    pub(crate) on_message: ComponentExportIndex,
    pub(crate) on_disconnect: ComponentExportIndex,
}

/// Where `snapshot` and `restore` are, for a plugin that exports them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MigrateExports {
    pub(crate) snapshot: ComponentExportIndex,
    pub(crate) restore: ComponentExportIndex,
}

/// A loaded plugin: one actor type, ready to activate.
pub struct Plugin {
    /// The actor type, e.g. `counter`.
    pub actor_type: String,
    /// The exported actor interface, e.g. `grove-example:counter/counter`.
    pub interface: String,
    /// Where it was loaded from.
    pub file: PathBuf,
    /// SHA-256 of the component bytes.
    pub content_hash: String,
    /// The interface's functions, in declaration order.
    pub functions: Vec<Function>,
    /// WIT definitions of the interface's named types.
    pub type_definitions: Vec<String>,
    /// Hashed with foldhash: the names are the plugin's own, so there is
    /// no flooding to defend against, and SipHash showed in call profiles.
    by_name: foldhash::HashMap<String, usize>,
    pub(crate) lifecycle: LifecycleExports,
    pub(crate) migrate: Option<MigrateExports>,
    pub(crate) pre: InstancePre<ActivationState>,
    /// Activations running this version now.
    pub(crate) live: AtomicUsize,
    /// Instances of this version made ahead of their activations.
    pub(crate) warm: WarmPool,
    /// The pages this version's first turns write, to fault in ahead in
    /// those instances.
    pub(crate) first_turn: FirstTurnPages,
    /// Whether `on-disconnect` takes the host's `disconnect-reason`: loading
    /// checks only that it takes a variant, and the first activation of this
    /// version looks the hook up typed (an activation looks its other hooks
    /// up when it first runs them).
    pub(crate) disconnect_checked: OnceLock<Result<(), String>>,
    /// The call counters of each function, by index, once a host with
    /// metrics has loaded the plugin (see [`crate::metrics`]).
    pub(crate) calls: Vec<Arc<FunctionCalls>>,
    /// When this version was loaded.
    pub loaded_at: SystemTime,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("actor_type", &self.actor_type)
            .field("interface", &self.interface)
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl Plugin {
    /// Instances of this version made ahead of their activations, ready now
    /// ([`crate::limits::Limits::warm_activations`]).
    pub fn instances_made_ahead(&self) -> usize {
        self.warm.len()
    }

    /// Memory slots prepared for this version so far, and being prepared
    /// ([`crate::limits::Limits::prepared_slots`]).
    pub fn slots_prepared(&self) -> usize {
        self.warm.prepared()
    }

    /// Pages of memory to write ahead in each instance made ahead from now
    /// on: those an activation of this version wrote in its first batch of
    /// turns, at most 64 (0 before one has, and where they cannot be
    /// learned).
    pub fn pages_written_ahead(&self) -> usize {
        self.first_turn.len()
    }

    /// Reads and checks the plugin at `file` on its own, outside any host
    /// (what `grove inspect` does).
    pub fn inspect(file: &Path) -> Result<Plugin, InspectError> {
        let engine = crate::engine::build_engine(&crate::limits::Limits {
            max_activations: 1,
            ..Default::default()
        })?;
        let linker = crate::imports::linker(&engine).map_err(HostError::Imports)?;
        Ok(Self::load(&engine, &linker, None, file)?)
    }

    /// Reads, compiles (or loads from `cache`) and checks the plugin at `file`.
    pub(crate) fn load(
        engine: &Engine,
        linker: &Linker<ActivationState>,
        cache: Option<&CompileCache>,
        file: &Path,
    ) -> Result<Plugin, PluginError> {
        let bytes = std::fs::read(file).map_err(|e| PluginError::Read {
            file: file.into(),
            message: e.to_string(),
        })?;
        Self::from_bytes(engine, linker, cache, file, &bytes)
    }

    /// Compiles (or loads from `cache`) and checks the component `bytes`,
    /// named `file` in errors and listings.
    pub(crate) fn from_bytes(
        engine: &Engine,
        linker: &Linker<ActivationState>,
        cache: Option<&CompileCache>,
        file: &Path,
        bytes: &[u8],
    ) -> Result<Plugin, PluginError> {
        let invalid = |message: String| PluginError::Invalid {
            file: file.into(),
            message,
        };
        let nonconforming = |message: String| PluginError::NonConforming {
            file: file.into(),
            message,
        };
        if wasmparser::Parser::is_core_wasm(bytes) {
            return Err(invalid(
                "it is a core WebAssembly module; build it as a component (wasm32-wasip2)".into(),
            ));
        }
        if !wasmparser::Parser::is_component(bytes) {
            return Err(invalid(
                "the file does not start with a WebAssembly component header".into(),
            ));
        }
        let hash = content_hash(bytes);
        let component = match cache {
            Some(cache) => cache
                .load(engine, bytes, &hash)
                .map(|(c, _)| c)
                .map_err(|CompileError::Invalid(e)| e),
            None => crate::engine::compile(engine, bytes),
        }
        .map_err(|e| invalid(format!("{e:#}")))?;

        let (interface, funcs) = find_actor_interface(engine, &component).map_err(nonconforming)?;
        let lifecycle = find_lifecycle(engine, &component).map_err(nonconforming)?;
        let migrate = find_migrate(engine, &component).map_err(nonconforming)?;
        let actor_type = actor_type_of(&interface);
        let text = wit_text::render_export(bytes, &interface).unwrap_or_default();
        let iface_index = component
            .get_export_index(None, &interface)
            .ok_or_else(|| nonconforming(format!("export `{interface}` vanished")))?;
        let mut functions = Vec::with_capacity(funcs.len());
        for (name, func) in funcs {
            let index = component
                .get_export_index(Some(&iface_index), &name)
                .ok_or_else(|| nonconforming(format!("export `{interface}#{name}` vanished")))?;
            functions.push(describe(name, &func, &text, index).map_err(nonconforming)?);
        }
        let by_name = functions
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name.clone(), i))
            .collect();
        // Each plugin gets the proxies it imports, on top of the host imports.
        let mut linker = linker.clone();
        crate::proxy::define_imports(engine, &mut linker, &component).map_err(nonconforming)?;
        let pre = linker.instantiate_pre(&component).map_err(|e| {
            nonconforming(format!(
                "it needs an import that Grove does not provide: {e:#}"
            ))
        })?;
        // The memory images (one memory file per image) are made now rather
        // than on the first activation, which would otherwise wait for them
        // on one of the runtime's workers: sealing a file can wait on the
        // kernel for a while (`vendor/README.md`). If that fails, the first
        // activation tries again and reports the error.
        if let Err(e) = component.initialize_copy_on_write_image() {
            tracing::warn!(actor_type = %actor_type, error = %format!("{e:#}"), "cannot make the plugin's memory images yet");
        }
        Ok(Plugin {
            actor_type,
            interface,
            file: file.into(),
            content_hash: hash,
            functions,
            type_definitions: text.types,
            by_name,
            lifecycle,
            migrate,
            pre,
            live: AtomicUsize::new(0),
            warm: WarmPool::default(),
            first_turn: FirstTurnPages::default(),
            disconnect_checked: OnceLock::new(),
            calls: Vec::new(),
            loaded_at: SystemTime::now(),
        })
    }

    /// How many activations run this version now.
    pub fn activations(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// The function called `name`, with its index.
    pub fn function(&self, name: &str) -> Option<(usize, &Function)> {
        let &i = self.by_name.get(name)?;
        self.functions.get(i).map(|f| (i, f))
    }
}

/// `grove-example:counter/counter@1.0.0` → `counter`.
fn actor_type_of(interface: &str) -> String {
    let name = interface.rsplit_once('/').map_or(interface, |(_, n)| n);
    name.split_once('@').map_or(name, |(n, _)| n).to_owned()
}

type ExportedFuncs = Vec<(String, ComponentFunc)>;

fn find_actor_interface(
    engine: &Engine,
    component: &Component,
) -> Result<(String, ExportedFuncs), String> {
    let ty = component.component_type();
    let mut candidates = Vec::new();
    for (name, item) in ty.exports(engine) {
        // Only WIT interfaces (`ns:pkg/name`) can be actor interfaces; some
        // toolchains (componentize-py) export plain-named helper instances.
        if name == LIFECYCLE_INTERFACE || name == MIGRATE_INTERFACE || !name.contains(':') {
            continue;
        }
        if let ComponentItem::ComponentInstance(instance) = item.ty {
            let mut funcs = Vec::new();
            for (fname, fitem) in instance.exports(engine) {
                match fitem.ty {
                    ComponentItem::ComponentFunc(f) => funcs.push((fname.to_owned(), f)),
                    ComponentItem::Type(_) | ComponentItem::Resource(_) => {}
                    _ => {
                        return Err(format!(
                            "interface `{name}` exports `{fname}`, which is not a function"
                        ))
                    }
                }
            }
            candidates.push((name.to_owned(), funcs));
        }
    }
    match candidates.len() {
        1 => Ok(candidates.remove(0)),
        0 => Err("it exports no actor interface (a plugin's world exports exactly one besides grove:actor/lifecycle)".into()),
        _ => Err(format!(
            "it exports {} interfaces ({}); a plugin exports exactly one actor interface",
            candidates.len(),
            candidates.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
        )),
    }
}

fn find_lifecycle(engine: &Engine, component: &Component) -> Result<LifecycleExports, String> {
    let missing = || {
        format!(
            "it does not export {LIFECYCLE_INTERFACE} (its world must include grove:actor/actor)"
        )
    };
    let ty = component.component_type();
    let Some(ComponentItem::ComponentInstance(instance)) =
        ty.get_export(engine, LIFECYCLE_INTERFACE).map(|e| e.ty)
    else {
        return Err(missing());
    };
    let iface = component
        .get_export_index(None, LIFECYCLE_INTERFACE)
        .ok_or_else(missing)?;
    // Hooks are checked by the shape of their parameters; the exact type of
    // `on-disconnect`'s variant, by a typed lookup in the first activation
    // (`Plugin::disconnect_checked`).
    let hook = |name: &str, params: &[fn(&Type) -> bool]| -> Result<ComponentExportIndex, String> {
        let Some(ComponentItem::ComponentFunc(f)) = instance.get_export(engine, name).map(|e| e.ty)
        else {
            return Err(format!("its lifecycle interface lacks `{name}`"));
        };
        let got: Vec<Type> = f.params().map(|(_, t)| t).collect();
        let fits = got.len() == params.len() && got.iter().zip(params).all(|(t, ok)| ok(t));
        if !fits || f.results().len() != 0 {
            return Err(format!(
                "its lifecycle hook `{name}` has the wrong signature"
            ));
        }
        component
            .get_export_index(Some(&iface), name)
            .ok_or_else(missing)
    };
    fn string(t: &Type) -> bool {
        *t == Type::String
    }
    fn session(t: &Type) -> bool {
        *t == Type::U64
    }
    fn bytes(t: &Type) -> bool {
        matches!(t, Type::List(l) if l.ty() == Type::U8)
    }
    fn boolean(t: &Type) -> bool {
        *t == Type::Bool
    }
    fn reason(t: &Type) -> bool {
        matches!(t, Type::Variant(_))
    }
    Ok(LifecycleExports {
        on_activate: hook("on-activate", &[])?,
        on_deactivate: hook("on-deactivate", &[])?,
        on_timer: hook("on-timer", &[string])?,
        on_reminder: hook("on-reminder", &[string])?,
        on_connect: hook("on-connect", &[session])?,
        on_message: hook("on-message", &[session, bytes, boolean])?,
        on_disconnect: hook("on-disconnect", &[session, reason])?,
    })
}

/// The migrate exports, if the plugin has them; both or neither.
fn find_migrate(engine: &Engine, component: &Component) -> Result<Option<MigrateExports>, String> {
    let ty = component.component_type();
    let Some(ComponentItem::ComponentInstance(instance)) =
        ty.get_export(engine, MIGRATE_INTERFACE).map(|e| e.ty)
    else {
        return Ok(None);
    };
    let bytes = |t: &Type| matches!(t, Type::List(l) if l.ty() == Type::U8);
    let func = |name: &str| match instance.get_export(engine, name).map(|e| e.ty) {
        Some(ComponentItem::ComponentFunc(f)) => Ok(f),
        _ => Err(format!("its {MIGRATE_INTERFACE} interface lacks `{name}`")),
    };
    let snapshot = func("snapshot")?;
    let restore = func("restore")?;
    let snapshot_fits = snapshot.params().len() == 0
        && snapshot.results().len() == 1
        && snapshot.results().all(|t| bytes(&t));
    let restore_fits = restore.params().len() == 1
        && restore.params().all(|(_, t)| bytes(&t))
        && restore.results().len() == 0;
    if !snapshot_fits || !restore_fits {
        return Err(format!(
            "its {MIGRATE_INTERFACE} functions have the wrong signatures"
        ));
    }
    let missing = || format!("export `{MIGRATE_INTERFACE}` vanished");
    let iface = component
        .get_export_index(None, MIGRATE_INTERFACE)
        .ok_or_else(missing)?;
    let index = |name: &str| {
        component
            .get_export_index(Some(&iface), name)
            .ok_or_else(missing)
    };
    Ok(Some(MigrateExports {
        snapshot: index("snapshot")?,
        restore: index("restore")?,
    }))
}

fn describe(
    name: String,
    func: &ComponentFunc,
    text: &InterfaceText,
    index: ComponentExportIndex,
) -> Result<Function, String> {
    let params = func
        .params()
        .map(|(n, ty)| Param {
            name: n.to_owned(),
            ty,
        })
        .collect::<Vec<_>>();
    let mut results = func.results();
    let result = results.next();
    if results.next().is_some() {
        return Err(format!("function `{name}` returns more than one value"));
    }
    let (signature, docs) = text
        .functions
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, s, d)| (s.clone(), d.clone()))
        .unwrap_or_else(|| (format!("{name}: func(...)"), None));
    Ok(Function {
        name,
        params,
        result,
        signature,
        docs,
        index,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actor_type_is_the_interface_name() {
        assert_eq!(actor_type_of("grove-example:counter/counter"), "counter");
        assert_eq!(actor_type_of("acme:game/player@1.2.0"), "player");
    }
}
