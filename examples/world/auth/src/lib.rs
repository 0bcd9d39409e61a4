//! `world-auth`: the world demo's authenticator. The gateway calls `login`
//! with a client's first packet, the player's name, and the session goes to
//! `world-player/<name>`.

mod bindings {
    wit_bindgen::generate!({
        path: [
            "../../../wit/actor",
            "../wit/world-auth.wit",
            "wit/world.wit",
        ],
        world: "grove-example:world-auth-plugin/auth-actor",
        with: {
            "grove:actor/host@0.1.0": grove_guest::host,
            "grove:actor/types@0.1.0": grove_guest::types,
        },
    });
}

use bindings::exports::grove_example::world_auth::world_auth::Guest;
use grove_guest::ActorRef;

struct Auth;

impl grove_guest::Actor for Auth {}

impl Guest for Auth {
    fn login(credentials: Vec<u8>) -> Result<ActorRef, String> {
        let name = std::str::from_utf8(&credentials)
            .map_err(|_| "the player name is not UTF-8".to_owned())?;
        if !world_shared::valid_name(name) {
            return Err(format!(
                "`{}` is not a player name: 1 to 32 letters, digits, '-' or '_', starting with a letter",
                name.chars().take(40).collect::<String>()
            ));
        }
        Ok(ActorRef {
            actor_type: "world-player".into(),
            key: name.to_owned(),
        })
    }
}

grove_guest::export_actor!(Auth with_types_in bindings);
