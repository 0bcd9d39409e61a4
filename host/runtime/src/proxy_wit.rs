//! `grove wit proxy`: derives the proxy WIT through which one actor calls
//! another, from the callee's actor interface.
//!
//! For a callee interface `my-game:player/player` the proxy is package
//! `my-game:player-proxy`, interface `player`, holding copies of every type
//! the callee's functions use and one resource named after the actor type:
//! a constructor taking the actor's key, `set-timeout`, and for each callee
//! function `f: func(a: A) -> R` three methods:
//!
//! * `f: func(a: A) -> result<R, call-error>`: a call that waits for the
//!   answer;
//! * `send-f: func(a: A) -> result<_, call-error>`: a one-way send that
//!   returns once the message is queued;
//! * `start-f: func(a: A) -> result<pending-f, call-error>`: a call that
//!   returns once the message is queued, with a handle whose
//!   `wait: func() -> result<R, call-error>` gives the answer. Calls started
//!   one after another on different callees run at the same time.
//!
//! A caller's world imports the proxy; its language's bindings generator does
//! the rest, e.g. `Player::new("42").take_hit(&hit)` in Rust or
//! `Player("42").take_hit(hit)` in Python. The host implements the imports
//! (see [`crate::proxy`]).
//!
//! An interface a proxy cannot be made for (one passing resources, say) is
//! refused with a [`ProxyWitError`] naming what to change.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use wit_parser::{InterfaceId, Resolve, Type, TypeDef, TypeDefKind, TypeId, TypeOwner, WorldItem};

use crate::plugin::LIFECYCLE_INTERFACE;
use crate::proxy::{
    PENDING_PREFIX, PROXY_PACKAGE_SUFFIX, SEND_PREFIX, SET_TIMEOUT, START_PREFIX, WAIT,
};
use crate::wit_text;

/// An error from `wit-parser`, which reports its errors as one opaque type.
pub type WitParserError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why no proxy WIT could be derived.
#[derive(Debug, thiserror::Error)]
pub enum ProxyWitError {
    /// The bytes are not a component whose WIT can be read.
    #[error("cannot read the component's WIT: {0}")]
    DecodeComponent(#[source] WitParserError),
    /// The bytes hold a WIT package, not a component.
    #[error("not a component")]
    NotAComponent,
    /// A WIT file or directory could not be read or parsed.
    #[error("cannot read WIT from {}: {source}", path.display())]
    ReadWit {
        /// The file or directory.
        path: PathBuf,
        /// The parser's error.
        source: WitParserError,
    },
    /// No WIT paths were given.
    #[error("no WIT given")]
    NoWit,
    /// The WIT read is inconsistent with itself (it names a world, package,
    /// interface or type it does not define).
    #[error("{0}")]
    Inconsistent(String),
    /// A component exports no actor interface, or several.
    #[error("the component exports {count} actor interfaces; a plugin exports exactly one")]
    ActorInterfaceCount {
        /// How many it exports.
        count: usize,
    },
    /// The interface asked for is not in the package.
    #[error("package {package} has no interface `{interface}`")]
    NoSuchInterface {
        /// The package searched.
        package: String,
        /// The interface asked for.
        interface: String,
    },
    /// No interface was named and the package has no single candidate.
    #[error("package {package} has {count} candidate actor interfaces; name one with --interface")]
    AmbiguousInterface {
        /// The package searched.
        package: String,
        /// How many candidates it has.
        count: usize,
    },
    /// The interface is declared inline in a world; actor interfaces are
    /// named.
    #[error("an inline interface cannot be an actor interface")]
    InlineInterface,
    /// The interface holds something other than plain functions.
    #[error("`{function}` is not a plain function; actor interfaces hold only functions")]
    NotAFunction {
        /// The function.
        function: String,
    },
    /// A function passes a resource.
    #[error("in `{function}`: the interface passes a resource; resources live in one actor and cannot be passed to another")]
    PassesResource {
        /// The function.
        function: String,
    },
    /// A function passes a future or a stream.
    #[error(
        "in `{function}`: the interface uses futures or streams, which actor calls do not carry"
    )]
    PassesFutureOrStream {
        /// The function.
        function: String,
    },
    /// A function uses a `grove:actor/types` type under another name.
    #[error(
        "in `{function}`: type `{name}` renames a grove:actor type; use it under its own name"
    )]
    RenamesGroveType {
        /// The function.
        function: String,
        /// The new name.
        name: String,
    },
    /// Two different types the proxy would copy have the same name.
    #[error("in `{function}`: two different types are both named `{name}`; rename one")]
    DuplicateTypeName {
        /// The function where the second one was found.
        function: String,
        /// The name.
        name: String,
    },
    /// A type has the actor type's name, which the proxy's resource takes.
    #[error(
        "a type is named `{actor}`, like the actor type; the proxy's resource needs that name"
    )]
    TypeNamedLikeActor {
        /// The actor type.
        actor: String,
    },
    /// A function has a name proxies reserve.
    #[error("a function is named `{function}`, which proxies use to set call timeouts")]
    ReservedName {
        /// The function.
        function: String,
    },
    /// A name the proxy makes for function `function` (`send-f`,
    /// `start-f` or `pending-f`) is also the name of a function or type of
    /// the interface.
    #[error("the proxy's `{name}` for function `{function}` would be ambiguous with the interface's own `{name}`; rename one")]
    Ambiguous {
        /// The function.
        function: String,
        /// The name made for it.
        name: String,
    },
}

/// The interface whose types a proxy refers to instead of copying.
const GROVE_TYPES: (&str, &str, &str) = ("grove", "actor", "types");

/// The proxy WIT for the actor interface of the component in `bytes`.
pub fn from_component(bytes: &[u8]) -> Result<String, ProxyWitError> {
    let wit_parser::decoding::DecodedWasm::Component(resolve, world) =
        wit_parser::decoding::decode(bytes)
            .map_err(|e| ProxyWitError::DecodeComponent(e.into()))?
    else {
        return Err(ProxyWitError::NotAComponent);
    };
    let exports: Vec<InterfaceId> = resolve
        .worlds
        .get(world)
        .ok_or_else(|| {
            ProxyWitError::Inconsistent("the component's WIT lacks the world it names".into())
        })?
        .exports
        .values()
        .filter_map(|item| match item {
            WorldItem::Interface { id, .. } => Some(*id),
            _ => None,
        })
        .filter(|id| is_actor_interface(&resolve, *id))
        .collect();
    match exports.as_slice() {
        [id] => generate(&resolve, *id),
        _ => Err(ProxyWitError::ActorInterfaceCount {
            count: exports.len(),
        }),
    }
}

/// The proxy WIT for an actor interface written in WIT. `paths` are WIT files
/// or directories, dependencies first (e.g. `wit/actor`, then the callee's
/// file); the interface is looked up in the last one: `interface` names it,
/// or else it is the one interface that package's worlds export (or the one
/// interface the package has).
pub fn from_wit(paths: &[&Path], interface: Option<&str>) -> Result<String, ProxyWitError> {
    let mut resolve = Resolve::default();
    let mut last = None;
    for path in paths {
        let (package, _) = resolve
            .push_path(path)
            .map_err(|e| ProxyWitError::ReadWit {
                path: path.into(),
                source: e.into(),
            })?;
        last = Some(package);
    }
    let package = last.ok_or(ProxyWitError::NoWit)?;
    let pkg = resolve.packages.get(package).ok_or_else(|| {
        ProxyWitError::Inconsistent("the WIT lacks the package it was read into".into())
    })?;
    let id = match interface {
        Some(name) => *pkg
            .interfaces
            .get(name)
            .ok_or_else(|| ProxyWitError::NoSuchInterface {
                package: pkg.name.to_string(),
                interface: name.to_owned(),
            })?,
        None => {
            let mut exported: BTreeSet<InterfaceId> = BTreeSet::new();
            for world in pkg.worlds.values() {
                let world = resolve.worlds.get(*world).ok_or_else(|| {
                    ProxyWitError::Inconsistent(format!(
                        "package {} lacks one of its worlds",
                        pkg.name
                    ))
                })?;
                for item in world.exports.values() {
                    if let WorldItem::Interface { id, .. } = item {
                        if is_actor_interface(&resolve, *id) {
                            exported.insert(*id);
                        }
                    }
                }
            }
            let candidates: Vec<InterfaceId> = if exported.is_empty() {
                pkg.interfaces.values().copied().collect()
            } else {
                exported.into_iter().collect()
            };
            match candidates.as_slice() {
                [id] => *id,
                _ => {
                    return Err(ProxyWitError::AmbiguousInterface {
                        package: pkg.name.to_string(),
                        count: candidates.len(),
                    })
                }
            }
        }
    };
    generate(&resolve, id)
}

fn is_actor_interface(resolve: &Resolve, id: InterfaceId) -> bool {
    resolve
        .id_of(id)
        .is_some_and(|name| name != LIFECYCLE_INTERFACE)
}

fn is_grove_types(resolve: &Resolve, owner: TypeOwner) -> bool {
    let TypeOwner::Interface(id) = owner else {
        return false;
    };
    let Some(iface) = resolve.interfaces.get(id) else {
        return false;
    };
    let Some(package) = iface.package.and_then(|p| resolve.packages.get(p)) else {
        return false;
    };
    let name = &package.name;
    (
        name.namespace.as_str(),
        name.name.as_str(),
        iface.name.as_deref(),
    ) == (GROVE_TYPES.0, GROVE_TYPES.1, Some(GROVE_TYPES.2))
}

/// The definition of type `id`. Ids come from the same `Resolve`, so a miss
/// means the WIT read was inconsistent.
fn type_def(resolve: &Resolve, id: TypeId) -> Result<&TypeDef, ProxyWitError> {
    resolve.types.get(id).ok_or_else(|| {
        ProxyWitError::Inconsistent("the WIT refers to a type it does not define".into())
    })
}

/// Named types a proxy needs, in an order where each comes after those it uses.
#[derive(Default)]
struct Needed {
    copied: Vec<TypeId>,
    seen: HashSet<TypeId>,
    names: HashMap<String, TypeId>,
    grove: BTreeSet<String>,
}

impl Needed {
    /// Notes the named types `ty`, used by `function`, needs.
    fn visit(&mut self, resolve: &Resolve, function: &str, ty: &Type) -> Result<(), ProxyWitError> {
        let Type::Id(id) = ty else {
            return Ok(());
        };
        let def = type_def(resolve, *id)?;
        if is_grove_types(resolve, def.owner) {
            if let Some(name) = &def.name {
                self.grove.insert(name.clone());
                return Ok(());
            }
        }
        if !self.seen.insert(*id) {
            return Ok(());
        }
        match &def.kind {
            TypeDefKind::Record(r) => {
                for f in &r.fields {
                    self.visit(resolve, function, &f.ty)?;
                }
            }
            TypeDefKind::Variant(v) => {
                for c in &v.cases {
                    if let Some(t) = &c.ty {
                        self.visit(resolve, function, t)?;
                    }
                }
            }
            TypeDefKind::Tuple(t) => {
                for t in &t.types {
                    self.visit(resolve, function, t)?;
                }
            }
            TypeDefKind::Option(t) | TypeDefKind::List(t) | TypeDefKind::FixedLengthList(t, _) => {
                self.visit(resolve, function, t)?
            }
            TypeDefKind::Map(k, v) => {
                self.visit(resolve, function, k)?;
                self.visit(resolve, function, v)?;
            }
            TypeDefKind::Result(r) => {
                for t in r.ok.iter().chain(r.err.iter()) {
                    self.visit(resolve, function, t)?;
                }
            }
            TypeDefKind::Type(t) => {
                self.visit(resolve, function, t)?;
                // `use x.{t}` of a type copied under its own name needs no alias.
                if let Type::Id(target) = t {
                    let target = type_def(resolve, *target)?;
                    if target.name == def.name
                        || (is_grove_types(resolve, target.owner) && def.name.is_some())
                    {
                        if is_grove_types(resolve, target.owner) && target.name != def.name {
                            return Err(ProxyWitError::RenamesGroveType {
                                function: function.to_owned(),
                                name: def.name.clone().unwrap_or_default(),
                            });
                        }
                        return Ok(());
                    }
                }
            }
            TypeDefKind::Enum(_) | TypeDefKind::Flags(_) => {}
            TypeDefKind::Resource | TypeDefKind::Handle(_) => {
                return Err(ProxyWitError::PassesResource {
                    function: function.to_owned(),
                })
            }
            TypeDefKind::Future(_) | TypeDefKind::Stream(_) | TypeDefKind::Unknown => {
                return Err(ProxyWitError::PassesFutureOrStream {
                    function: function.to_owned(),
                })
            }
        }
        if let Some(name) = &def.name {
            if let Some(other) = self.names.insert(name.clone(), *id) {
                if other != *id {
                    return Err(ProxyWitError::DuplicateTypeName {
                        function: function.to_owned(),
                        name: name.clone(),
                    });
                }
            }
            self.copied.push(*id);
        }
        Ok(())
    }
}

/// WIT keywords that must be written `%name` when used as identifiers.
pub const KEYWORDS: &[&str] = &[
    "as",
    "async",
    "bool",
    "borrow",
    "char",
    "constructor",
    "enum",
    "export",
    "f32",
    "f64",
    "flags",
    "from",
    "func",
    "future",
    "import",
    "include",
    "interface",
    "list",
    "option",
    "own",
    "package",
    "record",
    "resource",
    "result",
    "s16",
    "s32",
    "s64",
    "s8",
    "static",
    "stream",
    "string",
    "tuple",
    "type",
    "u16",
    "u32",
    "u64",
    "u8",
    "use",
    "variant",
    "with",
    "world",
];

fn ident(name: &str) -> String {
    if KEYWORDS.contains(&name) {
        format!("%{name}")
    } else {
        name.to_owned()
    }
}

fn doc_lines(out: &mut String, indent: &str, docs: &wit_parser::Docs) {
    if let Some(text) = docs.contents.as_deref() {
        for line in text.trim().lines() {
            let _ = writeln!(out, "{indent}/// {}", line.trim_end()).map(|_| ());
        }
    }
}

/// The proxy WIT for interface `id` of `resolve`.
pub fn generate(resolve: &Resolve, id: InterfaceId) -> Result<String, ProxyWitError> {
    let no_package = || ProxyWitError::Inconsistent("the interface has no package".into());
    let iface = resolve.interfaces.get(id).ok_or_else(|| {
        ProxyWitError::Inconsistent("the WIT lacks the interface to proxy".into())
    })?;
    let source = resolve.id_of(id).ok_or_else(no_package)?;
    let actor = iface.name.clone().ok_or(ProxyWitError::InlineInterface)?;
    let package = &iface
        .package
        .and_then(|p| resolve.packages.get(p))
        .ok_or_else(no_package)?
        .name;

    let mut needed = Needed::default();
    for f in iface.functions.values() {
        if !matches!(f.kind, wit_parser::FunctionKind::Freestanding) {
            return Err(ProxyWitError::NotAFunction {
                function: f.name.clone(),
            });
        }
        for p in &f.params {
            needed.visit(resolve, &f.name, &p.ty)?;
        }
        if let Some(r) = &f.result {
            needed.visit(resolve, &f.name, r)?;
        }
    }
    let names: HashSet<&str> = iface.functions.keys().map(String::as_str).collect();
    if needed.names.contains_key(&actor) {
        return Err(ProxyWitError::TypeNamedLikeActor { actor });
    }
    for name in &names {
        if *name == SET_TIMEOUT {
            return Err(ProxyWitError::ReservedName {
                function: SET_TIMEOUT.to_owned(),
            });
        }
        for made in [SEND_PREFIX, START_PREFIX] {
            let made = format!("{made}{name}");
            if names.contains(made.as_str()) {
                return Err(ProxyWitError::Ambiguous {
                    function: (*name).to_owned(),
                    name: made,
                });
            }
        }
        let pending = format!("{PENDING_PREFIX}{name}");
        if needed.names.contains_key(&pending) || pending == actor {
            return Err(ProxyWitError::Ambiguous {
                function: (*name).to_owned(),
                name: pending,
            });
        }
    }

    let mut grove = needed.grove.clone();
    grove.insert("call-error".to_owned());
    let version = package
        .version
        .as_ref()
        .map(|v| format!("@{v}"))
        .unwrap_or_default();

    let mut out = String::new();
    let _ = writeln!(
        out,
        "// Generated by `grove wit proxy` from {source}. Do not edit: regenerate it\n// when the interface changes.\npackage {}:{}{PROXY_PACKAGE_SUFFIX}{version};\n",
        package.namespace, package.name
    );
    let _ = writeln!(out, "/// Typed calls to `{actor}` actors (from {source}).");
    let _ = writeln!(out, "interface {} {{", ident(&actor));
    let _ = writeln!(
        out,
        "    use grove:actor/types@0.1.0.{{{}}};\n",
        grove
            .iter()
            .map(|n| ident(n))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for ty in &needed.copied {
        let def = type_def(resolve, *ty)?;
        doc_lines(&mut out, "    ", &def.docs);
        let text = match &def.kind {
            TypeDefKind::Type(t) => format!(
                "type {} = {}",
                ident(def.name.as_deref().unwrap_or_default()),
                wit_text::ty(resolve, t)
            ),
            _ => wit_text::render_typedef(resolve, *ty),
        };
        let semicolon = if text.starts_with("type ") { ";" } else { "" };
        for line in format!("{text}{semicolon}").lines() {
            let _ = writeln!(out, "    {line}");
        }
        out.push('\n');
    }
    for f in iface.functions.values() {
        let _ = writeln!(
            out,
            "    /// A call made with `{START_PREFIX}{name}`,\n    /// its answer still to come.\n    resource {} {{\n        /// Waits for the answer and takes it: a second `{WAIT}` traps.\n        /// Dropping the handle before the answer stops waiting for it; a\n        /// call still queued on this host is skipped.\n        {WAIT}: func() -> result<{}, call-error>;\n    }}\n",
            ident(&format!("{PENDING_PREFIX}{}", f.name)),
            result_type(resolve, f),
            name = f.name,
        );
    }
    let _ = writeln!(
        out,
        "    /// A handle on one `{actor}` actor. Making one does not activate the\n    /// actor; its first call does. Every call returns `call-error` if the\n    /// callee could not answer (see grove:actor/types).\n    resource {} {{",
        ident(&actor)
    );
    let _ = writeln!(
        out,
        "        /// Addresses the actor `{actor}/<key>`.\n        constructor(key: string);\n\n        /// How long calls through this handle wait for an answer before they\n        /// fail with `timeout` (default: the host's call timeout).\n        {SET_TIMEOUT}: func(timeout-ms: u32);"
    );
    for f in iface.functions.values() {
        let params: Vec<String> = f
            .params
            .iter()
            .map(|p| format!("{}: {}", ident(&p.name), wit_text::ty(resolve, &p.ty)))
            .collect();
        let params = params.join(", ");
        let result = result_type(resolve, f);
        out.push('\n');
        doc_lines(&mut out, "        ", &f.docs);
        let _ = writeln!(
            out,
            "        {}: func({params}) -> result<{result}, call-error>;",
            ident(&f.name)
        );
        let _ = writeln!(
            out,
            "        /// One-way `{}`: returns once the message is queued; its result is\n        /// dropped. One sender's messages to one actor run in order.\n        {}: func({params}) -> result<_, call-error>;",
            f.name,
            ident(&format!("{SEND_PREFIX}{}", f.name))
        );
        let _ = writeln!(
            out,
            "        /// Starts `{}`:\n        /// returns once the message is queued, with a handle whose `{WAIT}`\n        /// gives the answer. Calls started one after another on different\n        /// actors run at the same time.\n        {}: func({params}) -> result<{}, call-error>;",
            f.name,
            ident(&format!("{START_PREFIX}{}", f.name)),
            ident(&format!("{PENDING_PREFIX}{}", f.name)),
        );
    }
    out.push_str("    }\n}\n");
    Ok(out)
}

/// What `f` returns, in WIT (`_` for nothing).
fn result_type(resolve: &Resolve, f: &wit_parser::Function) -> String {
    f.result
        .as_ref()
        .map_or_else(|| "_".to_owned(), |r| wit_text::ty(resolve, r))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy(wit: &str) -> Result<String, ProxyWitError> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("callee.wit");
        std::fs::write(&file, wit).unwrap();
        let actor = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../wit/actor");
        from_wit(&[&actor, &file], None)
    }

    #[test]
    fn a_proxy_copies_the_types_and_wraps_each_function() {
        let wit = proxy(
            "package acme:shop@1.0.0;\n\
             interface shop {\n\
               record item { name: string, tags: list<tag> }\n\
               enum tag { new, sale }\n\
               buy: func(item: item, count: option<u32>) -> result<u64, string>;\n\
               ping: func();\n\
             }\n\
             world shop-actor { include grove:actor/actor@0.1.0; export shop; }",
        )
        .unwrap();
        assert!(wit.contains("package acme:shop-proxy@1.0.0;"), "{wit}");
        assert!(
            wit.contains("use grove:actor/types@0.1.0.{call-error};"),
            "{wit}"
        );
        assert!(
            wit.find("enum tag").unwrap() < wit.find("record item").unwrap(),
            "{wit}"
        );
        assert!(wit.contains("resource shop {"), "{wit}");
        assert!(wit.contains(
            "buy: func(item: item, count: option<u32>) -> result<result<u64, string>, call-error>;"
        ));
        assert!(wit
            .contains("send-buy: func(item: item, count: option<u32>) -> result<_, call-error>;"));
        assert!(wit.contains("ping: func() -> result<_, call-error>;"));
        assert!(wit.contains(
            "start-buy: func(item: item, count: option<u32>) -> result<pending-buy, call-error>;"
        ));
        assert!(wit.contains("resource pending-buy {"), "{wit}");
        assert!(wit.contains("wait: func() -> result<result<u64, string>, call-error>;"));
        assert!(wit.contains("start-ping: func() -> result<pending-ping, call-error>;"));
        assert!(wit.contains("wait: func() -> result<_, call-error>;"));
        // The generated WIT parses.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("proxy.wit"), &wit).unwrap();
        let actor = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../wit/actor");
        let mut resolve = Resolve::default();
        resolve.push_path(&actor).unwrap();
        resolve.push_path(dir.path().join("proxy.wit")).unwrap();
    }

    #[test]
    fn ambiguous_or_resource_passing_interfaces_are_refused() {
        let err =
            proxy("package acme:x;\ninterface x { go: func(); send-go: func(); }").unwrap_err();
        assert!(err.to_string().contains("ambiguous"), "{err}");
        let err =
            proxy("package acme:x;\ninterface x { go: func(); start-go: func(); }").unwrap_err();
        assert!(
            matches!(&err, ProxyWitError::Ambiguous { function, name } if function == "go" && name == "start-go"),
            "{err}"
        );
        let err = proxy(
            "package acme:x;\ninterface x { record pending-go { a: u8 } go: func(p: pending-go); }",
        )
        .unwrap_err();
        assert!(
            matches!(&err, ProxyWitError::Ambiguous { function, name } if function == "go" && name == "pending-go"),
            "{err}"
        );
        let err =
            proxy("package acme:y;\ninterface y { resource r; take: func(r: r); }").unwrap_err();
        assert!(
            matches!(&err, ProxyWitError::PassesResource { function } if function == "take"),
            "{err}"
        );
        assert!(err.to_string().contains("resource"), "{err}");
    }
}
