//! Renders an actor interface as WIT text, from the WIT that every component
//! carries: named types keep their names, so `grove inspect` and
//! `GET /v1/plugins` show what the author wrote.

use wit_parser::{Docs, Function, Handle, Interface, Resolve, Type, TypeDefKind};

/// Stands for a type id that `resolve` does not hold. Ids come from the same
/// `Resolve`, so this shows only if the WIT read was inconsistent.
const UNKNOWN: &str = "<unknown>";

/// A rendered interface: the type definitions and each function's signature.
#[derive(Debug, Clone, Default)]
pub struct InterfaceText {
    /// One WIT definition (`record item { ... }`) per named type.
    pub types: Vec<String>,
    /// `(function name, signature, doc comment)` in declaration order.
    pub functions: Vec<(String, String, Option<String>)>,
}

/// Renders the exported interface `name` (e.g. `grove-example:counter/counter`)
/// of the component in `bytes`; `None` if the component's WIT cannot be read.
pub fn render_export(bytes: &[u8], name: &str) -> Option<InterfaceText> {
    let wit_parser::decoding::DecodedWasm::Component(resolve, world) =
        wit_parser::decoding::decode(bytes).ok()?
    else {
        return None;
    };
    let id = resolve
        .worlds
        .get(world)?
        .exports
        .iter()
        .find_map(|(_, item)| match item {
            wit_parser::WorldItem::Interface { id, .. }
                if interface_name(&resolve, *id).as_deref() == Some(name) =>
            {
                Some(*id)
            }
            _ => None,
        })?;
    Some(render_interface(&resolve, resolve.interfaces.get(id)?))
}

fn interface_name(resolve: &Resolve, id: wit_parser::InterfaceId) -> Option<String> {
    let iface = resolve.interfaces.get(id)?;
    let package = &resolve.packages.get(iface.package?)?.name;
    let mut name = format!(
        "{}:{}/{}",
        package.namespace,
        package.name,
        iface.name.as_ref()?
    );
    if let Some(version) = &package.version {
        name.push_str(&format!("@{version}"));
    }
    Some(name)
}

fn docs(d: &Docs) -> Option<String> {
    d.contents
        .as_ref()
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty())
}

fn render_interface(resolve: &Resolve, iface: &Interface) -> InterfaceText {
    let types = iface
        .types
        .values()
        .map(|&id| render_typedef(resolve, id))
        .collect();
    let functions = iface
        .functions
        .values()
        .map(|f| (f.name.clone(), signature(resolve, f), docs(&f.docs)))
        .collect();
    InterfaceText { types, functions }
}

/// `name: func(a: t, ...) -> r`
pub fn signature(resolve: &Resolve, f: &Function) -> String {
    let params: Vec<String> = f
        .params
        .iter()
        .map(|p| format!("{}: {}", p.name, ty(resolve, &p.ty)))
        .collect();
    let mut s = format!("{}: func({})", f.name, params.join(", "));
    if let Some(r) = &f.result {
        s.push_str(" -> ");
        s.push_str(&ty(resolve, r));
    }
    s
}

/// The WIT definition of the named type `id`, e.g. `record item { ... }`.
pub fn render_typedef(resolve: &Resolve, id: wit_parser::TypeId) -> String {
    let Some(def) = resolve.types.get(id) else {
        return UNKNOWN.into();
    };
    let name = def.name.clone().unwrap_or_default();
    let body = |items: Vec<String>| {
        if items.is_empty() {
            " {}".to_owned()
        } else {
            format!(
                " {{\n{}\n}}",
                items
                    .iter()
                    .map(|i| format!("    {i},"))
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        }
    };
    match &def.kind {
        TypeDefKind::Record(r) => {
            format!(
                "record {name}{}",
                body(
                    r.fields
                        .iter()
                        .map(|f| format!("{}: {}", f.name, ty(resolve, &f.ty)))
                        .collect()
                )
            )
        }
        TypeDefKind::Variant(v) => format!(
            "variant {name}{}",
            body(
                v.cases
                    .iter()
                    .map(|c| match &c.ty {
                        Some(t) => format!("{}({})", c.name, ty(resolve, t)),
                        None => c.name.clone(),
                    })
                    .collect()
            )
        ),
        TypeDefKind::Enum(e) => format!(
            "enum {name}{}",
            body(e.cases.iter().map(|c| c.name.clone()).collect())
        ),
        TypeDefKind::Flags(f) => format!(
            "flags {name}{}",
            body(f.flags.iter().map(|c| c.name.clone()).collect())
        ),
        TypeDefKind::Resource => format!("resource {name}"),
        TypeDefKind::Type(Type::Id(other))
            if resolve
                .types
                .get(*other)
                .is_some_and(|o| o.owner != def.owner) =>
        {
            format!("use {}", ty(resolve, &Type::Id(*other)))
        }
        _ => format!("type {name} = {}", anonymous(resolve, &def.kind)),
    }
}

/// A type as it appears in a signature: by name when it has one.
pub fn ty(resolve: &Resolve, t: &Type) -> String {
    match t {
        Type::Bool => "bool".into(),
        Type::U8 => "u8".into(),
        Type::U16 => "u16".into(),
        Type::U32 => "u32".into(),
        Type::U64 => "u64".into(),
        Type::S8 => "s8".into(),
        Type::S16 => "s16".into(),
        Type::S32 => "s32".into(),
        Type::S64 => "s64".into(),
        Type::F32 => "f32".into(),
        Type::F64 => "f64".into(),
        Type::Char => "char".into(),
        Type::String => "string".into(),
        Type::ErrorContext => "error-context".into(),
        Type::Id(id) => match resolve.types.get(*id) {
            Some(def) => match &def.name {
                Some(name) => name.clone(),
                None => anonymous(resolve, &def.kind),
            },
            None => UNKNOWN.into(),
        },
    }
}

fn opt(resolve: &Resolve, t: &Option<Type>) -> String {
    t.as_ref()
        .map_or_else(|| "_".to_owned(), |t| ty(resolve, t))
}

fn anonymous(resolve: &Resolve, kind: &TypeDefKind) -> String {
    match kind {
        TypeDefKind::List(t) => format!("list<{}>", ty(resolve, t)),
        TypeDefKind::FixedLengthList(t, n) => format!("list<{}, {n}>", ty(resolve, t)),
        TypeDefKind::Map(k, v) => format!("map<{}, {}>", ty(resolve, k), ty(resolve, v)),
        TypeDefKind::Option(t) => format!("option<{}>", ty(resolve, t)),
        TypeDefKind::Result(r) => match (&r.ok, &r.err) {
            (None, None) => "result".into(),
            (ok, None) => format!("result<{}>", opt(resolve, ok)),
            (ok, err) => format!("result<{}, {}>", opt(resolve, ok), opt(resolve, err)),
        },
        TypeDefKind::Tuple(t) => {
            format!(
                "tuple<{}>",
                t.types
                    .iter()
                    .map(|t| ty(resolve, t))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
        TypeDefKind::Handle(Handle::Own(id)) => ty(resolve, &Type::Id(*id)),
        TypeDefKind::Handle(Handle::Borrow(id)) => {
            format!("borrow<{}>", ty(resolve, &Type::Id(*id)))
        }
        TypeDefKind::Future(t) => format!("future<{}>", opt(resolve, t)),
        TypeDefKind::Stream(t) => format!("stream<{}>", opt(resolve, t)),
        TypeDefKind::Type(t) => ty(resolve, t),
        TypeDefKind::Record(_)
        | TypeDefKind::Variant(_)
        | TypeDefKind::Enum(_)
        | TypeDefKind::Flags(_)
        | TypeDefKind::Resource
        | TypeDefKind::Unknown => "<unnamed>".into(),
    }
}
