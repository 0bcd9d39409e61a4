//! Values of an older version of a type brought to the current one: records
//! that gained `option` fields at their end, at any depth.

mod common;

use grove_values::check::{check, conform};
use wasmtime::component::Val;

const DECLS: &str = "
    record item { name: string, count: u32, note: option<string>, tags: option<list<string>> }
    variant slot { empty, holding(item) }
";

fn old_item(name: &str) -> Val {
    Val::Record(vec![
        ("name".into(), Val::String(name.into())),
        ("count".into(), Val::U32(1)),
    ])
}

fn new_item(name: &str) -> Val {
    Val::Record(vec![
        ("name".into(), Val::String(name.into())),
        ("count".into(), Val::U32(1)),
        ("note".into(), Val::Option(None)),
        ("tags".into(), Val::Option(None)),
    ])
}

#[test]
fn a_record_missing_trailing_options_gets_none_at_any_depth() {
    let ty = common::wit(DECLS, "tuple<item, list<slot>, option<item>>");
    let mut val = Val::Tuple(vec![
        old_item("axe"),
        Val::List(vec![
            Val::Variant("empty".into(), None),
            Val::Variant("holding".into(), Some(Box::new(old_item("bow")))),
        ]),
        Val::Option(Some(Box::new(old_item("cap")))),
    ]);
    assert!(check(&val, &ty).is_err(), "an old record fits the new type");
    conform(&mut val, &ty);
    assert_eq!(check(&val, &ty), Ok(()));
    assert_eq!(
        val,
        Val::Tuple(vec![
            new_item("axe"),
            Val::List(vec![
                Val::Variant("empty".into(), None),
                Val::Variant("holding".into(), Some(Box::new(new_item("bow")))),
            ]),
            Val::Option(Some(Box::new(new_item("cap")))),
        ])
    );
}

#[test]
fn a_value_of_the_type_or_of_another_shape_is_left_as_it_is() {
    let ty = common::wit(DECLS, "item");
    let mut current = new_item("axe");
    conform(&mut current, &ty);
    assert_eq!(current, new_item("axe"));

    // A required field missing is not filled in: the check says what is wrong.
    let mut short = Val::Record(vec![("name".into(), Val::String("axe".into()))]);
    conform(&mut short, &ty);
    assert_eq!(
        short,
        Val::Record(vec![("name".into(), Val::String("axe".into()))])
    );
    assert!(check(&short, &ty).is_err());

    // Fields in another order are not guessed at.
    let mut swapped = Val::Record(vec![
        ("count".into(), Val::U32(1)),
        ("name".into(), Val::String("axe".into())),
    ]);
    conform(&mut swapped, &ty);
    assert!(matches!(&swapped, Val::Record(fields) if fields.len() == 2));
}
