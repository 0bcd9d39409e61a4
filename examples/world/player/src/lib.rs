//! `world-player`: one player of the world demo. It owns its client's
//! session, reads the client's JSON commands (see `world_shared::Command`),
//! turns them into calls on the map cells — `aoe` and `query` on every cell
//! their area touches — and answers the client on the reliable stream.
//!
//! The cell that holds the player's character is the authority on its
//! position; the player only remembers which cell that is. Cells tell it when
//! the character crosses into a neighbour (`moved`), and a cell that no longer
//! holds it answers `moved(<cell>)`, so a stale memory costs one extra call.

mod bindings {
    wit_bindgen::generate!({
        path: [
            "../../../wit/actor",
            "../wit/world-player.wit",
            "../wit/world-cell-proxy.wit",
            "wit/world.wit",
        ],
        world: "grove-example:world-player-plugin/player-actor",
        with: {
            "grove:actor/host@0.1.0": grove_guest::host,
            "grove:actor/types@0.1.0": grove_guest::types,
        },
        generate_all,
    });
}

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::time::Duration;

use bindings::exports::grove_example::world_player::world_player::Guest;
use bindings::grove_example::world_cell_proxy::world_cell::{Character, NotHere, WorldCell};
use grove_guest::{session, timer, CallError, DisconnectReason, SessionId};
use world_shared::{
    cell_of, Command, PlayerView, Rect, Reply, Request, FULL_HP, MAX_AOE_RADIUS, MAX_QUERY_LIMIT,
    MAX_SPEED, WORLD_SIZE,
};

/// Keeps the player active while its client is connected, however quiet.
const PRESENCE_TIMER: &str = "presence";

#[derive(Default)]
struct Me {
    session: Option<SessionId>,
    cell: Option<u32>,
}

thread_local! {
    static ME: RefCell<Me> = RefCell::default();
    /// Handles on the cells this player has talked to.
    static CELLS: RefCell<HashMap<u32, WorldCell>> = RefCell::default();
}

struct Player;

fn name() -> String {
    grove_guest::self_key()
}

fn with_cell<T>(cell: u32, f: impl FnOnce(&WorldCell) -> T) -> T {
    CELLS.with_borrow_mut(|cells| {
        let handle = cells
            .entry(cell)
            .or_insert_with(|| WorldCell::new(&cell.to_string()));
        f(handle)
    })
}

fn call_failed(error: CallError) -> String {
    format!("a cell could not answer: {error:?}")
}

/// Runs `f` on the cell holding this player's character, following it if it
/// has moved on.
fn on_my_cell<T>(
    f: impl Fn(&WorldCell) -> Result<Result<T, NotHere>, CallError>,
) -> Result<T, String> {
    for _ in 0..4 {
        let Some(cell) = ME.with_borrow(|me| me.cell) else {
            return Err("not in the world".into());
        };
        match with_cell(cell, &f).map_err(call_failed)? {
            Ok(value) => return Ok(value),
            Err(NotHere::Moved(next)) => ME.with_borrow_mut(|me| me.cell = Some(next)),
            Err(NotHere::Unknown) => {
                ME.with_borrow_mut(|me| me.cell = None);
                return Err("not in the world".into());
            }
        }
    }
    Err("the character keeps moving between cells; try again".into())
}

/// Puts a fresh character for this player into the world.
fn spawn(session: SessionId) -> Result<(u32, f32, f32), String> {
    let name = name();
    let random = std::collections::hash_map::RandomState::new().hash_one(&name);
    let x = (random % 10_000) as f32 / 10_000.0 * WORLD_SIZE;
    let y = ((random >> 32) % 10_000) as f32 / 10_000.0 * WORLD_SIZE;
    let cell = cell_of(x, y);
    let character = Character {
        name,
        session,
        x,
        y,
        vx: 0.0,
        vy: 0.0,
        hp: FULL_HP,
    };
    with_cell(cell, |c| c.enter(&character)).map_err(call_failed)?;
    ME.with_borrow_mut(|me| me.cell = Some(cell));
    Ok((cell, x, y))
}

/// Takes this player's character out of the world, if it is in.
fn leave_world() {
    if ME.with_borrow(|me| me.cell.is_some()) {
        let name = name();
        let _ = on_my_cell(|c| c.leave(&name));
        ME.with_borrow_mut(|me| me.cell = None);
    }
}

fn reply(session: SessionId, reply: &Reply) {
    if let Ok(bytes) = serde_json::to_vec(reply) {
        // The client may have gone; its on-disconnect follows.
        let _ = session::send(session, &bytes);
    }
}

fn run(command: Command, id: u64, session: SessionId) -> Result<Reply, String> {
    match command {
        Command::SetVelocity { vx, vy } => {
            if !vx.is_finite() || !vy.is_finite() {
                return Err("velocity must be finite".into());
            }
            let speed = (vx * vx + vy * vy).sqrt();
            let scale = if speed > MAX_SPEED {
                MAX_SPEED / speed
            } else {
                1.0
            };
            let name = name();
            on_my_cell(|c| c.set_velocity(&name, vx * scale, vy * scale))?;
            Ok(Reply::ok(id))
        }
        Command::Aoe {
            x,
            y,
            radius,
            damage,
        } => {
            if !(0.0..=MAX_AOE_RADIUS).contains(&radius) || !x.is_finite() || !y.is_finite() {
                return Err(format!("radius must be within 0..={MAX_AOE_RADIUS}"));
            }
            let name = name();
            let mut hits = 0;
            for cell in Rect::around(x, y, radius).cells() {
                hits +=
                    with_cell(cell, |c| c.aoe(&name, x, y, radius, damage)).map_err(call_failed)?;
            }
            Ok(Reply::Ok {
                id,
                hits: Some(hits),
                total: None,
                players: Vec::new(),
            })
        }
        Command::Query { area, limit } => {
            let area = Rect::clipped(area.x0, area.y0, area.x1, area.y1);
            let limit = limit.min(MAX_QUERY_LIMIT);
            let mut total = 0;
            let mut players = Vec::new();
            for cell in area.cells() {
                let wanted = limit.saturating_sub(players.len() as u32);
                let found = with_cell(cell, |c| {
                    c.query(area.x0, area.y0, area.x1, area.y1, wanted)
                })
                .map_err(call_failed)?;
                total += found.total;
                players.extend(found.players.into_iter().map(|p| PlayerView {
                    name: p.name,
                    x: p.x,
                    y: p.y,
                    hp: p.hp,
                }));
            }
            Ok(Reply::Ok {
                id,
                hits: None,
                total: Some(total),
                players,
            })
        }
        Command::Logout => {
            leave_world();
            reply(session, &Reply::ok(id));
            session::close(session, "logged out");
            Ok(Reply::ok(id))
        }
    }
}

impl grove_guest::Actor for Player {
    fn on_connect(session: SessionId) {
        let previous = ME.with_borrow_mut(|me| me.session.replace(session));
        if let Some(previous) = previous {
            session::close(previous, "logged in from another client");
        }
        // A new login starts afresh, wherever an earlier one left the
        // character.
        leave_world();
        match spawn(session) {
            Ok((cell, x, y)) => {
                let welcome = Reply::Welcome {
                    name: name(),
                    cell,
                    x,
                    y,
                };
                reply(session, &welcome);
                let minute = Duration::from_secs(60);
                timer::periodic(PRESENCE_TIMER, minute, minute, true);
            }
            Err(message) => {
                session::close(session, &format!("cannot enter the world: {message}"));
            }
        }
    }

    fn on_message(session: SessionId, payload: Vec<u8>, _reliable: bool) {
        if ME.with_borrow(|me| me.session) != Some(session) {
            return;
        }
        let answer = match serde_json::from_slice::<Request>(&payload) {
            Ok(Request { id, command }) => {
                let logout = command == Command::Logout;
                match run(command, id, session) {
                    Ok(_) if logout => return,
                    Ok(answer) => answer,
                    Err(message) => Reply::Error { id, message },
                }
            }
            Err(error) => Reply::Error {
                id: 0,
                message: format!("not a command: {error}"),
            },
        };
        reply(session, &answer);
    }

    fn on_disconnect(session: SessionId, _reason: DisconnectReason) {
        if ME.with_borrow(|me| me.session) != Some(session) {
            return;
        }
        ME.with_borrow_mut(|me| me.session = None);
        leave_world();
        timer::cancel(PRESENCE_TIMER);
        grove_guest::deactivate_after_turn();
    }
}

impl Guest for Player {
    fn moved(cell: u32) {
        ME.with_borrow_mut(|me| {
            if me.cell.is_some() {
                me.cell = Some(cell);
            }
        });
    }

    fn whereabouts() -> Option<u32> {
        ME.with_borrow(|me| me.cell)
    }
}

grove_guest::export_actor!(Player with_types_in bindings);
