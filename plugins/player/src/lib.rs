//! The `player` actor (Rust): stats kept in state, attacks on other players
//! (typed Rust → Rust calls) and guild membership (typed Rust → Python calls
//! to the `guild` actor in plugins/guild-py).

mod bindings {
    wit_bindgen::generate!({
        path: [
            "../../wit/actor",
            "../../wit/examples/player.wit",
            "../../wit/examples/player-proxy.wit",
            "../../wit/examples/guild-proxy.wit",
            "wit/world.wit",
        ],
        world: "my-game:player-plugin/player-actor",
        with: {
            "grove:actor/host@0.1.0": grove_guest::host,
            "grove:actor/types@0.1.0": grove_guest::types,
        },
        generate_all,
        additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
    });
}

use bindings::exports::my_game::player::player::{
    AttackError, Class, Guest, Hit, PlayerError, Stats,
};
use bindings::my_game::guild_proxy::guild::{self, Guild};
use bindings::my_game::player_proxy::player::{self as proxy, Player};
use grove_guest::state;

const TABLE: &str = "player";

fn load() -> Result<Stats, PlayerError> {
    state::load(TABLE, &grove_guest::self_key(), None)
        .expect("player state is readable")
        .ok_or(PlayerError::Unknown)
}

fn save(stats: &Stats) {
    // A write that was not stored must not be reported as done: trapping ends
    // the turn with an error for the caller and keeps the old stats.
    state::save(TABLE, &grove_guest::self_key(), None, stats).expect("player state is writable");
}

fn class_name(class: Class) -> &'static str {
    match class {
        Class::Warrior => "warrior",
        Class::Mage => "mage",
        Class::Rogue => "rogue",
    }
}

// The proxy carries its own copies of the player types: convert at the edge.

fn to_proxy_hit(hit: Hit) -> proxy::Hit {
    match hit {
        Hit::Melee(n) => proxy::Hit::Melee(n),
        Hit::Spell(s) => proxy::Hit::Spell(proxy::Spell {
            name: s.name,
            power: s.power,
        }),
        Hit::Miss => proxy::Hit::Miss,
    }
}

fn from_proxy_class(class: proxy::Class) -> Class {
    match class {
        proxy::Class::Warrior => Class::Warrior,
        proxy::Class::Mage => Class::Mage,
        proxy::Class::Rogue => Class::Rogue,
    }
}

fn from_proxy_stats(s: proxy::Stats) -> Stats {
    Stats {
        name: s.name,
        class: from_proxy_class(s.class),
        level: s.level,
        hp: s.hp,
        title: s.title,
        guild: s.guild,
        items: s.items,
    }
}

fn from_proxy_error(e: proxy::PlayerError) -> PlayerError {
    match e {
        proxy::PlayerError::Defeated(name) => PlayerError::Defeated(name),
        proxy::PlayerError::Unknown => PlayerError::Unknown,
    }
}

fn to_guild_class(class: Class) -> guild::Class {
    match class {
        Class::Warrior => guild::Class::Warrior,
        Class::Mage => guild::Class::Mage,
        Class::Rogue => guild::Class::Rogue,
    }
}

fn member_line(m: &guild::Member) -> String {
    let class = match m.class {
        guild::Class::Warrior => "warrior",
        guild::Class::Mage => "mage",
        guild::Class::Rogue => "rogue",
    };
    match &m.title {
        Some(title) => format!("{} the {title} ({class}, level {})", m.name, m.level),
        None => format!("{} ({class}, level {})", m.name, m.level),
    }
}

struct PlayerActor;

impl Guest for PlayerActor {
    fn create(name: String, class: Class, level: u32) -> Stats {
        let stats = Stats {
            name,
            class,
            level,
            hp: 100 + 10 * level as i32,
            title: None,
            guild: None,
            items: Vec::new(),
        };
        save(&stats);
        stats
    }

    fn info() -> Result<Stats, PlayerError> {
        load()
    }

    fn take_hit(hit: Hit) -> Result<Stats, PlayerError> {
        let mut stats = load()?;
        if stats.hp <= 0 {
            return Err(PlayerError::Defeated(stats.name));
        }
        let damage = match hit {
            Hit::Melee(n) => n as i32,
            // Mages resist spells.
            Hit::Spell(spell) if stats.class == Class::Mage => spell.power as i32 / 2,
            Hit::Spell(spell) => spell.power as i32,
            Hit::Miss => 0,
        };
        stats.hp -= damage;
        save(&stats);
        Ok(stats)
    }

    fn give(items: Vec<String>) -> Vec<String> {
        let Ok(mut stats) = load() else {
            return Vec::new();
        };
        stats.items.extend(items);
        save(&stats);
        stats.items
    }

    fn attack(target: String, hit: Hit) -> Result<Stats, AttackError> {
        match Player::new(&target).take_hit(&to_proxy_hit(hit)) {
            Ok(Ok(stats)) => Ok(from_proxy_stats(stats)),
            Ok(Err(refusal)) => Err(AttackError::Refused(from_proxy_error(refusal))),
            Err(call_error) => Err(AttackError::Unreachable(format!("{call_error:?}"))),
        }
    }

    fn join_guild(name: String, title: Option<String>) -> Result<Vec<String>, String> {
        let mut stats = load().map_err(|_| "create the player first".to_owned())?;
        let member = guild::Member {
            player: grove_guest::self_key(),
            name: stats.name.clone(),
            class: to_guild_class(stats.class),
            level: stats.level,
            title: title.clone(),
        };
        let roster = match Guild::new(&name).add_member(&member) {
            Ok(Ok(roster)) => roster,
            Ok(Err(refusal)) => return Err(format!("the guild refused: {refusal:?}")),
            Err(call_error) => return Err(format!("the guild could not be asked: {call_error:?}")),
        };
        stats.guild = Some(roster.guild.clone());
        stats.title = title;
        save(&stats);
        grove_guest::log::info(&format!(
            "{} ({}) joined {}",
            stats.name,
            class_name(stats.class),
            roster.guild
        ));
        Ok(roster.members.iter().map(member_line).collect())
    }
}

impl grove_guest::Actor for PlayerActor {}

grove_guest::export_actor!(PlayerActor with_types_in bindings);
