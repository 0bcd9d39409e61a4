//! Whether a new version of a plugin accepts every call the running one
//! accepts, and if not, why, in WIT terms.
//!
//! A new version may add functions; each function the old version has must
//! still be there with the same parameters, each of a type equal to the old
//! one or evolved compatibly, and a result type likewise. A type evolves
//! compatibly when it is the same kind and:
//!
//! * a `record` keeps its fields, in order, and adds fields only at the end,
//!   each an `option` (a value from an old caller has none);
//! * a `variant` or `enum` keeps its cases, in order, and adds cases only at
//!   the end; `flags` keep theirs and may add more at the end;
//! * a `list`, `option`, `result` or `tuple` holds compatible types.
//!
//! Anything else — a removed function, a parameter added, removed or
//! retyped, a field renamed — is a breaking change.

use wasmtime::component::Type;

use crate::plugin::{Function, Plugin};

/// The breaking changes from `old` to `new`, one readable line each; empty
/// when `new` accepts every call `old` accepts.
pub(crate) fn breaking_changes(old: &Plugin, new: &Plugin) -> Vec<String> {
    let mut changes = Vec::new();
    if old.interface != new.interface {
        changes.push(format!(
            "the actor interface was `{}`, now `{}`",
            old.interface, new.interface
        ));
    }
    for function in &old.functions {
        match new.function(&function.name) {
            None => changes.push(format!(
                "function `{}` was removed (was `{}`)",
                function.name, function.signature
            )),
            Some((_, evolved)) => {
                let found = function_changes(function, evolved);
                if !found.is_empty() {
                    changes.push(format!(
                        "function `{}`: {} (was `{}`, now `{}`)",
                        function.name,
                        found.join("; "),
                        function.signature,
                        evolved.signature
                    ));
                }
            }
        }
    }
    changes
}

fn function_changes(old: &Function, new: &Function) -> Vec<String> {
    let mut changes = Vec::new();
    if old.params.len() != new.params.len() {
        changes.push(format!(
            "it took {} parameters, now {}",
            old.params.len(),
            new.params.len()
        ));
        return changes;
    }
    for (was, now) in old.params.iter().zip(&new.params) {
        let at = format!("parameter `{}`", was.name);
        if was.name != now.name {
            changes.push(format!("{at} is now called `{}`", now.name));
        }
        type_changes(&at, &was.ty, &now.ty, &mut changes);
    }
    match (&old.result, &new.result) {
        (None, None) => {}
        (Some(_), None) => changes.push("it no longer returns a result".into()),
        (None, Some(_)) => changes.push("it returns a result it did not return".into()),
        (Some(was), Some(now)) => type_changes("the result", was, now, &mut changes),
    }
    changes
}

/// Appends to `changes` how `now` breaks values of `was`, at `at`.
fn type_changes(at: &str, was: &Type, now: &Type, changes: &mut Vec<String>) {
    use Type as T;
    match (was, now) {
        (T::List(a), T::List(b)) => {
            type_changes(&format!("{at}, element"), &a.ty(), &b.ty(), changes)
        }
        (T::Option(a), T::Option(b)) => {
            type_changes(&format!("{at}, `some`"), &a.ty(), &b.ty(), changes)
        }
        (T::Result(a), T::Result(b)) => {
            payload_changes(&format!("{at}, `ok`"), a.ok(), b.ok(), changes);
            payload_changes(&format!("{at}, `err`"), a.err(), b.err(), changes);
        }
        (T::Tuple(a), T::Tuple(b)) => {
            if a.types().len() != b.types().len() {
                changes.push(format!(
                    "{at}: a tuple of {} became a tuple of {}",
                    a.types().len(),
                    b.types().len()
                ));
                return;
            }
            for (i, (x, y)) in a.types().zip(b.types()).enumerate() {
                type_changes(&format!("{at}, element {i}"), &x, &y, changes);
            }
        }
        (T::Record(a), T::Record(b)) => {
            let (old_fields, new_fields): (Vec<_>, Vec<_>) =
                (a.fields().collect(), b.fields().collect());
            for (i, field) in old_fields.iter().enumerate() {
                match new_fields.get(i) {
                    Some(evolved) if evolved.name == field.name => type_changes(
                        &format!("{at}, field `{}`", field.name),
                        &field.ty,
                        &evolved.ty,
                        changes,
                    ),
                    Some(evolved) => changes.push(format!(
                        "{at}: field `{}` became `{}`",
                        field.name, evolved.name
                    )),
                    None => changes.push(format!("{at}: field `{}` was removed", field.name)),
                }
            }
            for added in new_fields.iter().skip(old_fields.len()) {
                if !matches!(added.ty, T::Option(_)) {
                    changes.push(format!(
                        "{at}: new field `{}` is a {}, not an option an old caller may leave out",
                        added.name,
                        grove_values::check::type_name(&added.ty)
                    ));
                }
            }
        }
        (T::Variant(a), T::Variant(b)) => {
            let new_cases: Vec<_> = b.cases().collect();
            for (i, case) in a.cases().enumerate() {
                match new_cases.get(i) {
                    Some(evolved) if evolved.name == case.name => payload_changes(
                        &format!("{at}, case `{}`", case.name),
                        case.ty.clone(),
                        evolved.ty.clone(),
                        changes,
                    ),
                    Some(evolved) => changes.push(format!(
                        "{at}: case `{}` became `{}`",
                        case.name, evolved.name
                    )),
                    None => changes.push(format!("{at}: case `{}` was removed", case.name)),
                }
            }
        }
        (T::Enum(a), T::Enum(b)) => names_kept(at, "case", a.names(), b.names(), changes),
        (T::Flags(a), T::Flags(b)) => names_kept(at, "flag", a.names(), b.names(), changes),
        (was, now) => {
            let (a, b) = (
                grove_values::check::type_name(was),
                grove_values::check::type_name(now),
            );
            if a != b || !is_scalar(was) {
                changes.push(format!("{at}: was {a}, now {b}"));
            }
        }
    }
}

fn payload_changes(at: &str, was: Option<Type>, now: Option<Type>, changes: &mut Vec<String>) {
    match (was, now) {
        (None, None) => {}
        (Some(a), Some(b)) => type_changes(at, &a, &b, changes),
        (Some(_), None) => changes.push(format!("{at}: its payload was removed")),
        (None, Some(_)) => changes.push(format!("{at}: it has a payload it did not have")),
    }
}

/// Checks that the names of an enum's cases or a flags type are kept, in
/// order, with new ones only at the end.
fn names_kept<'a>(
    at: &str,
    what: &str,
    was: impl Iterator<Item = &'a str>,
    now: impl Iterator<Item = &'a str>,
    changes: &mut Vec<String>,
) {
    let now: Vec<&str> = now.collect();
    for (i, name) in was.enumerate() {
        match now.get(i) {
            Some(&evolved) if evolved == name => {}
            Some(evolved) => changes.push(format!("{at}: {what} `{name}` became `{evolved}`")),
            None => changes.push(format!("{at}: {what} `{name}` was removed")),
        }
    }
}

/// Types equal whenever their names are.
fn is_scalar(ty: &Type) -> bool {
    use Type as T;
    matches!(
        ty,
        T::Bool
            | T::S8
            | T::U8
            | T::S16
            | T::U16
            | T::S32
            | T::U32
            | T::S64
            | T::U64
            | T::Float32
            | T::Float64
            | T::Char
            | T::String
    )
}
