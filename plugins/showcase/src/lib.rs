//! The `inventory` actor: an item list whose interface uses every kind of WIT
//! type (records, variants, enums, flags, options, results, tuples, lists and
//! every scalar), persisted in state as JSON.

mod bindings {
    wit_bindgen::generate!({
        path: ["../../wit/actor", "../../wit/examples/showcase.wit"],
        world: "grove-example:showcase/inventory-actor",
        with: {
            "grove:actor/host@0.1.0": grove_guest::host,
            "grove:actor/types@0.1.0": grove_guest::types,
        },
    });
}

use std::cell::RefCell;

use bindings::exports::grove_example::showcase::inventory::{Change, Guest, Item, Rarity, Tags};
use serde::{Deserialize, Serialize};

const TABLE: &str = "inventory";

/// An item as stored: the WIT types are converted to plain serde-friendly ones.
#[derive(Serialize, Deserialize)]
struct StoredItem {
    name: String,
    rarity: u8,
    count: u32,
    weight: f32,
    tags: u8,
    note: Option<String>,
}

impl From<&Item> for StoredItem {
    fn from(item: &Item) -> Self {
        StoredItem {
            name: item.name.clone(),
            rarity: item.rarity as u8,
            count: item.count,
            weight: item.weight,
            tags: item.tags.bits(),
            note: item.note.clone(),
        }
    }
}

impl From<StoredItem> for Item {
    fn from(s: StoredItem) -> Self {
        Item {
            name: s.name,
            rarity: match s.rarity {
                0 => Rarity::Common,
                1 => Rarity::Rare,
                _ => Rarity::Legendary,
            },
            count: s.count,
            weight: s.weight,
            tags: Tags::from_bits_truncate(s.tags),
            note: s.note,
        }
    }
}

thread_local! {
    static ITEMS: RefCell<Vec<Item>> = const { RefCell::new(Vec::new()) };
}

fn save(items: &[Item]) -> Result<(), String> {
    let stored: Vec<StoredItem> = items.iter().map(StoredItem::from).collect();
    grove_guest::state::save(TABLE, &grove_guest::self_key(), None, &stored)
        .map_err(|e| e.to_string())
}

fn total_weight(items: &[Item]) -> f64 {
    items
        .iter()
        .map(|i| f64::from(i.weight) * f64::from(i.count))
        .sum()
}

struct Inventory;

impl grove_guest::Actor for Inventory {
    fn on_activate() {
        let stored: Vec<StoredItem> =
            match grove_guest::state::load(TABLE, &grove_guest::self_key(), None) {
                Ok(items) => items.unwrap_or_default(),
                Err(e) => panic!("could not load the inventory: {e}"),
            };
        ITEMS.set(stored.into_iter().map(Item::from).collect());
    }
}

impl Guest for Inventory {
    fn add_item(item: Item, limit: Option<f64>) -> Result<Change, String> {
        ITEMS.with_borrow_mut(|items| {
            let mut next = items.clone();
            match next.iter_mut().find(|i| i.name == item.name) {
                Some(existing) => existing.count = existing.count.saturating_add(item.count),
                None => next.push(item.clone()),
            }
            if let Some(limit) = limit {
                let weight = total_weight(&next);
                if weight > limit {
                    return Err(format!("too heavy: {weight} > {limit}"));
                }
            }
            save(&next)?;
            *items = next;
            Ok(Change::Added(item))
        })
    }

    fn remove_item(name: String) -> Result<Item, Option<String>> {
        ITEMS.with_borrow_mut(|items| {
            let pos = items.iter().position(|i| i.name == name).ok_or(None)?;
            let mut next = items.clone();
            let removed = next.remove(pos);
            save(&next).map_err(Some)?;
            *items = next;
            Ok(removed)
        })
    }

    fn items() -> Vec<Item> {
        ITEMS.with_borrow(|items| items.clone())
    }

    fn find(rarities: Vec<Rarity>) -> Vec<(u32, Item)> {
        ITEMS.with_borrow(|items| {
            (0u32..)
                .zip(items.iter())
                .filter(|(_, item)| rarities.contains(&item.rarity))
                .map(|(pos, item)| (pos, item.clone()))
                .collect()
        })
    }

    fn summary() -> (u32, u64, f64, Option<String>) {
        ITEMS.with_borrow(|items| {
            let kinds = u32::try_from(items.len()).unwrap_or(u32::MAX);
            let count = items.iter().map(|i| u64::from(i.count)).sum();
            let heaviest = items
                .iter()
                .max_by(|a, b| a.weight.total_cmp(&b.weight))
                .map(|i| i.name.clone());
            (kinds, count, total_weight(items), heaviest)
        })
    }

    fn scalars(
        a: i8,
        b: u16,
        c: i32,
        d: i64,
        e: u64,
        f: char,
        g: bool,
    ) -> (i8, u16, i32, i64, u64, char, bool) {
        (a, b, c, d, e, f, g)
    }

    fn clear() -> Change {
        ITEMS.with_borrow_mut(|items| {
            if let Err(e) = save(&[]) {
                panic!("could not clear the inventory: {e}");
            }
            items.clear();
        });
        Change::Cleared
    }
}

grove_guest::export_actor!(Inventory with_types_in bindings);
