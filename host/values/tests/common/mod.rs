//! Real `wasmtime::component::Type`s for the tests, and values of them.
//!
//! wasmtime only hands out `Type`s read from a component, so a test type is
//! written as WIT ([`Wit`]), rendered into a package that exports a function
//! taking it, turned into a component with wit-component's dummy module, and
//! read back from the compiled component's signature. Compiled types are
//! cached by their WIT text, since proptest revisits the same types while it
//! shrinks.

#![allow(
    dead_code,
    reason = "each test binary uses its own part of the helpers"
)]

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{LazyLock, Mutex};

use anyhow::{anyhow, Context as _};
use proptest::prelude::*;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Type, Val};
use wasmtime::{Config, Engine};
use wit_component::{ComponentEncoder, StringEncoding};
use wit_parser::{ManglingAndAbi, Resolve};

/// A WIT type, as the tests build it.
#[derive(Debug, Clone, PartialEq)]
pub enum Wit {
    Bool,
    S8,
    U8,
    S16,
    U16,
    S32,
    U32,
    S64,
    U64,
    F32,
    F64,
    Char,
    String,
    List(Box<Wit>),
    FixedList(Box<Wit>, u32),
    Map(Box<Wit>, Box<Wit>),
    Tuple(Vec<Wit>),
    /// Field count; fields are named `field0`, `field1`, ...
    Record(Vec<Wit>),
    /// One entry per case, `case0`, `case1`, ..., with its payload if any.
    Variant(Vec<Option<Wit>>),
    /// Case count; cases are `e0`, `e1`, ...
    Enum(usize),
    Option(Box<Wit>),
    Result(Option<Box<Wit>>, Option<Box<Wit>>),
    /// Flag count; flags are `flag0`, `flag1`, ...
    Flags(usize),
}

pub fn field_name(i: usize) -> String {
    format!("field{i}")
}

pub fn case_name(i: usize) -> String {
    format!("case{i}")
}

pub fn enum_name(i: usize) -> String {
    format!("e{i}")
}

pub fn flag_name(i: usize) -> String {
    format!("flag{i}")
}

/// Renders `ty` as a WIT type expression, declaring the named types it needs
/// in `decls`.
fn render(ty: &Wit, decls: &mut String, next: &mut usize) -> String {
    fn declare(body: String, decls: &mut String, next: &mut usize) -> String {
        let name = format!("t{next}");
        *next += 1;
        let _ = writeln!(decls, "    {}", body.replace("NAME", &name));
        name
    }
    match ty {
        Wit::Bool => "bool".into(),
        Wit::S8 => "s8".into(),
        Wit::U8 => "u8".into(),
        Wit::S16 => "s16".into(),
        Wit::U16 => "u16".into(),
        Wit::S32 => "s32".into(),
        Wit::U32 => "u32".into(),
        Wit::S64 => "s64".into(),
        Wit::U64 => "u64".into(),
        Wit::F32 => "f32".into(),
        Wit::F64 => "f64".into(),
        Wit::Char => "char".into(),
        Wit::String => "string".into(),
        Wit::List(t) => format!("list<{}>", render(t, decls, next)),
        Wit::FixedList(t, n) => format!("list<{}, {n}>", render(t, decls, next)),
        Wit::Map(k, v) => format!(
            "map<{}, {}>",
            render(k, decls, next),
            render(v, decls, next)
        ),
        Wit::Tuple(ts) => {
            let parts: Vec<_> = ts.iter().map(|t| render(t, decls, next)).collect();
            format!("tuple<{}>", parts.join(", "))
        }
        Wit::Record(fields) => {
            let parts: Vec<_> = fields
                .iter()
                .enumerate()
                .map(|(i, t)| format!("{}: {}", field_name(i), render(t, decls, next)))
                .collect();
            declare(
                format!("record NAME {{ {} }}", parts.join(", ")),
                decls,
                next,
            )
        }
        Wit::Variant(cases) => {
            let parts: Vec<_> = cases
                .iter()
                .enumerate()
                .map(|(i, t)| match t {
                    Some(t) => format!("{}({})", case_name(i), render(t, decls, next)),
                    None => case_name(i),
                })
                .collect();
            declare(
                format!("variant NAME {{ {} }}", parts.join(", ")),
                decls,
                next,
            )
        }
        Wit::Enum(n) => {
            let parts: Vec<_> = (0..*n).map(enum_name).collect();
            declare(format!("enum NAME {{ {} }}", parts.join(", ")), decls, next)
        }
        Wit::Flags(n) => {
            let parts: Vec<_> = (0..*n).map(flag_name).collect();
            declare(
                format!("flags NAME {{ {} }}", parts.join(", ")),
                decls,
                next,
            )
        }
        Wit::Option(t) => format!("option<{}>", render(t, decls, next)),
        Wit::Result(ok, err) => match (ok, err) {
            (None, None) => "result".into(),
            (Some(ok), None) => format!("result<{}>", render(ok, decls, next)),
            (None, Some(err)) => format!("result<_, {}>", render(err, decls, next)),
            (Some(ok), Some(err)) => format!(
                "result<{}, {}>",
                render(ok, decls, next),
                render(err, decls, next)
            ),
        },
    }
}

/// A WIT package whose interface `api` exports `run: func(x: <ty>)`, with
/// `extra` pasted into the interface.
pub fn package(params: &[String], extra: &str) -> String {
    let params: Vec<_> = params
        .iter()
        .enumerate()
        .map(|(i, p)| format!("p{i}: {p}"))
        .collect();
    format!(
        "package grove:gen;\n\ninterface api {{\n{extra}    run: func({});\n}}\n\nworld gen {{\n    export api;\n}}\n",
        params.join(", ")
    )
}

/// The WIT package text for a function taking one parameter per type.
pub fn wit_text(types: &[Wit]) -> String {
    let mut decls = String::new();
    let mut next = 0;
    let params: Vec<_> = types
        .iter()
        .map(|t| render(t, &mut decls, &mut next))
        .collect();
    package(&params, &decls)
}

pub static ENGINE: LazyLock<Engine> = LazyLock::new(|| {
    let mut config = Config::new();
    config.wasm_component_model_map(true);
    config.wasm_component_model_fixed_length_lists(true);
    // Only the types are wanted: compile the dummy code as fast as possible.
    config.cranelift_opt_level(wasmtime::OptLevel::None);
    Engine::new(&config).expect("engine")
});

/// The parameter types of `run` in the package `wit`.
pub fn param_types(wit: &str) -> anyhow::Result<Vec<Type>> {
    static CACHE: LazyLock<Mutex<HashMap<String, Vec<Type>>>> = LazyLock::new(Default::default);
    if let Some(types) = CACHE.lock().unwrap().get(wit) {
        return Ok(types.clone());
    }
    let mut resolve = Resolve::default();
    let pkg = resolve.push_str("gen.wit", wit).context("parse WIT")?;
    let world = resolve.select_world(&[pkg], Some("gen"))?;
    let mut module = wit_component::dummy_module(&resolve, world, ManglingAndAbi::Standard32);
    wit_component::embed_component_metadata(&mut module, &resolve, world, StringEncoding::UTF8)?;
    let bytes = ComponentEncoder::default()
        .module(&module)?
        .validate(true)
        .encode()
        .context("encode component")?;
    let component = Component::new(&ENGINE, &bytes)?;
    let component_ty = component.component_type();
    let api = component_ty
        .get_export(&ENGINE, "grove:gen/api")
        .ok_or_else(|| anyhow!("no api export"))?;
    let ComponentItem::ComponentInstance(api) = api.ty else {
        return Err(anyhow!("api is not an instance"));
    };
    let run = api
        .get_export(&ENGINE, "run")
        .ok_or_else(|| anyhow!("no run export"))?;
    let ComponentItem::ComponentFunc(run) = run.ty else {
        return Err(anyhow!("run is not a function"));
    };
    let types: Vec<Type> = run.params().map(|(_, ty)| ty).collect();
    CACHE.lock().unwrap().insert(wit.to_owned(), types.clone());
    Ok(types)
}

/// The wasmtime type of one WIT type.
pub fn real_type(ty: &Wit) -> Type {
    let text = wit_text(std::slice::from_ref(ty));
    let mut types = param_types(&text).unwrap_or_else(|e| panic!("{e:?}\n{text}"));
    types.pop().expect("one parameter")
}

/// Leaf types.
fn primitive() -> impl Strategy<Value = Wit> {
    prop_oneof![
        Just(Wit::Bool),
        Just(Wit::S8),
        Just(Wit::U8),
        Just(Wit::S16),
        Just(Wit::U16),
        Just(Wit::S32),
        Just(Wit::U32),
        Just(Wit::S64),
        Just(Wit::U64),
        Just(Wit::F32),
        Just(Wit::F64),
        Just(Wit::Char),
        Just(Wit::String),
        (1..=6usize).prop_map(Wit::Enum),
        // The component model allows 1 to 32 flags.
        (1..=32usize).prop_map(Wit::Flags),
    ]
}

/// Types valid as map keys.
fn map_key() -> impl Strategy<Value = Wit> {
    prop_oneof![
        Just(Wit::String),
        Just(Wit::U32),
        Just(Wit::S64),
        Just(Wit::Char),
        Just(Wit::Bool)
    ]
}

/// WIT types of every kind, nested up to `depth` levels.
pub fn wit_type(depth: u32) -> impl Strategy<Value = Wit> {
    primitive().prop_recursive(depth, 24, 4, |inner| {
        let boxed = || inner.clone().prop_map(Box::new);
        prop_oneof![
            boxed().prop_map(Wit::List),
            Just(Wit::List(Box::new(Wit::U8))),
            (boxed(), 1..=4u32).prop_map(|(t, n)| Wit::FixedList(t, n)),
            (map_key().prop_map(Box::new), boxed()).prop_map(|(k, v)| Wit::Map(k, v)),
            prop::collection::vec(inner.clone(), 1..=4).prop_map(Wit::Tuple),
            prop::collection::vec(inner.clone(), 1..=4).prop_map(Wit::Record),
            prop::collection::vec(prop::option::of(inner.clone()), 1..=4).prop_map(Wit::Variant),
            boxed().prop_map(Wit::Option),
            boxed().prop_map(|t| Wit::Option(Box::new(Wit::Option(t)))),
            (prop::option::of(boxed()), prop::option::of(boxed()))
                .prop_map(|(ok, err)| Wit::Result(ok, err)),
        ]
    })
}

fn int<T>(min: T, max: T) -> impl Strategy<Value = T>
where
    T: Arbitrary + Copy + std::fmt::Debug + Default + 'static,
{
    prop_oneof![
        1 => Just(min),
        1 => Just(max),
        1 => Just(T::default()),
        5 => any::<T>(),
    ]
}

fn f32_value() -> impl Strategy<Value = f32> {
    prop_oneof![
        Just(f32::NAN),
        Just(-f32::NAN),
        Just(f32::INFINITY),
        Just(f32::NEG_INFINITY),
        Just(0.0),
        Just(-0.0),
        Just(f32::MIN),
        Just(f32::MAX),
        Just(f32::MIN_POSITIVE),
        Just(f32::from_bits(1)),
        any::<u32>().prop_map(f32::from_bits),
        any::<f32>(),
    ]
}

fn f64_value() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(f64::NAN),
        Just(-f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(0.0),
        Just(-0.0),
        Just(f64::MIN),
        Just(f64::MAX),
        Just(f64::MIN_POSITIVE),
        Just(f64::from_bits(1)),
        any::<u64>().prop_map(f64::from_bits),
        any::<f64>(),
    ]
}

fn string_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z ]{0,12}",
        Just("héllo wörld ✓ 日本語 🦀".to_owned()),
        any::<String>(),
    ]
}

/// Values of type `ty`, extremes included.
pub fn value(ty: &Wit) -> BoxedStrategy<Val> {
    match ty {
        Wit::Bool => any::<bool>().prop_map(Val::Bool).boxed(),
        Wit::S8 => int(i8::MIN, i8::MAX).prop_map(Val::S8).boxed(),
        Wit::U8 => int(u8::MIN, u8::MAX).prop_map(Val::U8).boxed(),
        Wit::S16 => int(i16::MIN, i16::MAX).prop_map(Val::S16).boxed(),
        Wit::U16 => int(u16::MIN, u16::MAX).prop_map(Val::U16).boxed(),
        Wit::S32 => int(i32::MIN, i32::MAX).prop_map(Val::S32).boxed(),
        Wit::U32 => int(u32::MIN, u32::MAX).prop_map(Val::U32).boxed(),
        Wit::S64 => int(i64::MIN, i64::MAX).prop_map(Val::S64).boxed(),
        Wit::U64 => int(u64::MIN, u64::MAX).prop_map(Val::U64).boxed(),
        Wit::F32 => f32_value().prop_map(Val::Float32).boxed(),
        Wit::F64 => f64_value().prop_map(Val::Float64).boxed(),
        Wit::Char => prop_oneof![
            Just('\0'),
            Just('\u{7f}'),
            Just('\u{80}'),
            Just('\u{ffff}'),
            Just('\u{10ffff}'),
            any::<char>()
        ]
        .prop_map(Val::Char)
        .boxed(),
        Wit::String => string_value().prop_map(Val::String).boxed(),
        Wit::List(t) if **t == Wit::U8 => prop::collection::vec(any::<u8>(), 0..300)
            .prop_map(|bytes| Val::List(bytes.into_iter().map(Val::U8).collect()))
            .boxed(),
        Wit::List(t) => prop::collection::vec(value(t), 0..5)
            .prop_map(Val::List)
            .boxed(),
        Wit::FixedList(t, n) => prop::collection::vec(value(t), *n as usize)
            .prop_map(Val::FixedLengthList)
            .boxed(),
        Wit::Map(k, v) => prop::collection::vec((value(k), value(v)), 0..4)
            .prop_map(Val::Map)
            .boxed(),
        Wit::Tuple(ts) => ts
            .iter()
            .map(value)
            .collect::<Vec<_>>()
            .prop_map(Val::Tuple)
            .boxed(),
        Wit::Record(fields) => fields
            .iter()
            .map(value)
            .collect::<Vec<_>>()
            .prop_map(|vals| {
                Val::Record(
                    vals.into_iter()
                        .enumerate()
                        .map(|(i, v)| (field_name(i), v))
                        .collect(),
                )
            })
            .boxed(),
        Wit::Variant(cases) => {
            let cases: Vec<BoxedStrategy<Val>> = cases
                .iter()
                .enumerate()
                .map(|(i, payload)| match payload {
                    None => Just(Val::Variant(case_name(i), None)).boxed(),
                    Some(t) => value(t)
                        .prop_map(move |v| Val::Variant(case_name(i), Some(Box::new(v))))
                        .boxed(),
                })
                .collect();
            prop::strategy::Union::new(cases).boxed()
        }
        Wit::Enum(n) => (0..*n).prop_map(|i| Val::Enum(enum_name(i))).boxed(),
        Wit::Flags(n) => {
            let n = *n;
            any::<u32>()
                .prop_map(move |bits| {
                    Val::Flags(
                        (0..n)
                            .filter(|i| bits & (1 << i) != 0)
                            .map(flag_name)
                            .collect(),
                    )
                })
                .boxed()
        }
        Wit::Option(t) => prop_oneof![
            1 => Just(Val::Option(None)),
            3 => value(t).prop_map(|v| Val::Option(Some(Box::new(v)))),
        ]
        .boxed(),
        Wit::Result(ok, err) => {
            let side = |t: &Option<Box<Wit>>| -> BoxedStrategy<Option<Box<Val>>> {
                match t {
                    None => Just(None).boxed(),
                    Some(t) => value(t).prop_map(|v| Some(Box::new(v))).boxed(),
                }
            };
            prop_oneof![
                side(ok).prop_map(|v| Val::Result(Ok(v))),
                side(err).prop_map(|v| Val::Result(Err(v))),
            ]
            .boxed()
        }
    }
}

/// A WIT type with a few values of it.
pub fn typed_values(depth: u32) -> impl Strategy<Value = (Wit, Vec<Val>)> {
    wit_type(depth).prop_flat_map(|ty| {
        let values = prop::collection::vec(value(&ty), 1..6);
        (Just(ty), values)
    })
}

/// Equality that compares floats by their bits, NaN payloads and the sign
/// of zero included.
pub fn same(a: &Val, b: &Val) -> bool {
    let all = |a: &[Val], b: &[Val]| a.len() == b.len() && a.iter().zip(b).all(|(a, b)| same(a, b));
    let boxed = |a: &Option<Box<Val>>, b: &Option<Box<Val>>| match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => same(a, b),
        _ => false,
    };
    match (a, b) {
        (Val::Float32(a), Val::Float32(b)) => a.to_bits() == b.to_bits(),
        (Val::Float64(a), Val::Float64(b)) => a.to_bits() == b.to_bits(),
        (Val::List(a), Val::List(b))
        | (Val::Tuple(a), Val::Tuple(b))
        | (Val::FixedLengthList(a), Val::FixedLengthList(b)) => all(a, b),
        (Val::Map(a), Val::Map(b)) => {
            a.len() == b.len()
                && a.iter()
                    .zip(b)
                    .all(|((ka, va), (kb, vb))| same(ka, kb) && same(va, vb))
        }
        (Val::Record(a), Val::Record(b)) => {
            a.len() == b.len()
                && a.iter()
                    .zip(b)
                    .all(|((na, va), (nb, vb))| na == nb && same(va, vb))
        }
        (Val::Variant(na, a), Val::Variant(nb, b)) => na == nb && boxed(a, b),
        (Val::Option(a), Val::Option(b)) => boxed(a, b),
        (Val::Result(Ok(a)), Val::Result(Ok(b))) | (Val::Result(Err(a)), Val::Result(Err(b))) => {
            boxed(a, b)
        }
        (Val::Result(_), Val::Result(_)) => false,
        _ => a == b,
    }
}

/// List and map elements in a value, nested ones included.
pub fn element_count(val: &Val) -> usize {
    let boxed = |v: &Option<Box<Val>>| v.as_deref().map_or(0, element_count);
    match val {
        Val::List(items) | Val::FixedLengthList(items) => {
            items.len() + items.iter().map(element_count).sum::<usize>()
        }
        Val::Map(entries) => {
            entries.len()
                + entries
                    .iter()
                    .map(|(k, v)| element_count(k) + element_count(v))
                    .sum::<usize>()
        }
        Val::Tuple(items) => items.iter().map(element_count).sum(),
        Val::Record(fields) => fields.iter().map(|(_, v)| element_count(v)).sum(),
        Val::Variant(_, v) | Val::Option(v) => boxed(v),
        Val::Result(Ok(v) | Err(v)) => boxed(v),
        _ => 0,
    }
}

/// The wasmtime type of the WIT type expression `expr`, with `decls` (named
/// type declarations) in scope.
pub fn wit(decls: &str, expr: &str) -> Type {
    let text = package(&[expr.to_owned()], decls);
    let mut types = param_types(&text).unwrap_or_else(|e| panic!("{e:?}\n{text}"));
    types.pop().expect("one parameter")
}

/// Test-case count for the property tests: a few hundred in a normal run,
/// many more with `GROVE_SOAK` set.
pub fn cases() -> u32 {
    if std::env::var_os("GROVE_SOAK").is_some() {
        20_000
    } else {
        512
    }
}
