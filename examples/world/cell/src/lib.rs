//! `world-cell`: one square of the world demo's map (keys `0` to `99`).
//!
//! Each world tick (every 20 ms, a fixed-rate timer) the cell moves its
//! players, bounces them off the world's edges, and hands those who crossed
//! its border to the neighbouring cell with a one-way `enter`, telling their
//! player actors where they went. It pushes snapshot datagrams to all of its
//! players' clients at once (`send-to-sessions`): a keyframe of everyone
//! every second, and between keyframes, every tenth tick, a delta of the
//! players who changed in a way the movement rule cannot tell, only when
//! someone did (`world_shared::snapshot`). A client sees the cell it is in;
//! one entering gets the last keyframe at once. Cell `i` sends on the ticks
//! where `tick + i` is a multiple of ten, so that a tenth of the cells send
//! on each tick: cells that started ticking together would otherwise wake
//! every client's connection at the same moment, and every call between
//! actors made then would wait behind those writes.
//!
//! A cell with no players stops ticking and is deactivated when idle.

mod bindings {
    wit_bindgen::generate!({
        path: [
            "../../../wit/actor",
            "../wit/world-cell.wit",
            "../wit/world-cell-proxy.wit",
            "../wit/world-player-proxy.wit",
            "wit/world.wit",
        ],
        world: "grove-example:world-cell-plugin/cell-actor",
        with: {
            "grove:actor/host@0.1.0": grove_guest::host,
            "grove:actor/types@0.1.0": grove_guest::types,
        },
        generate_all,
    });
}

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use bindings::exports::grove_example::world_cell::world_cell::{
    Character, Guest, NotHere, PlayerView, QueryResult,
};
use bindings::grove_example::world_cell_proxy::world_cell as cell_proxy;
use bindings::grove_example::world_player_proxy::world_player::WorldPlayer;
use grove_guest::{session, timer};
use world_shared::snapshot::step;
use world_shared::{
    cell_of, cell_rect, PlayerState, Rect, SnapshotStream, FULL_HP, GRID, SNAPSHOT_EVERY, TICK_MS,
};

const TICK_TIMER: &str = "tick";

/// How long (in ticks) a cell remembers where a departed player went: 5 s.
const FORWARD_TICKS: u64 = 250;

#[derive(Default)]
struct Cell {
    players: Vec<Character>,
    /// Players who crossed into another cell: name -> (that cell, tick).
    departed: HashMap<String, (u32, u64)>,
    tick: u64,
    ticking: bool,
    /// Handles on neighbouring cells.
    neighbours: HashMap<u32, cell_proxy::WorldCell>,
    /// The snapshots sent to the players' clients.
    snapshots: SnapshotStream,
}

thread_local! {
    static CELL: RefCell<Cell> = RefCell::default();
}

struct WorldCell;

fn index() -> u32 {
    grove_guest::self_key().parse().unwrap_or(u32::MAX)
}

impl Cell {
    fn position(&self, name: &str) -> Option<usize> {
        self.players.iter().position(|p| p.name == name)
    }

    fn not_here(&self, name: &str) -> NotHere {
        match self.departed.get(name) {
            Some((cell, _)) => NotHere::Moved(*cell),
            None => NotHere::Unknown,
        }
    }

    fn start_ticking(&mut self) {
        if !self.ticking {
            let tick = Duration::from_millis(TICK_MS);
            timer::periodic(TICK_TIMER, tick, tick, true);
            self.ticking = true;
        }
    }

    /// One world tick: move, hand over border crossers, push snapshots.
    fn tick(&mut self, me: u32) {
        self.tick += 1;
        for p in &mut self.players {
            step(&mut p.x, &mut p.y, &mut p.vx, &mut p.vy);
        }
        let (staying, leaving): (Vec<Character>, Vec<Character>) =
            std::mem::take(&mut self.players)
                .into_iter()
                .partition(|p| cell_of(p.x, p.y) == me);
        self.players = staying;
        for p in leaving {
            let next = cell_of(p.x, p.y);
            let handle = self
                .neighbours
                .entry(next)
                .or_insert_with(|| cell_proxy::WorldCell::new(&next.to_string()));
            let handed = handle.send_enter(&cell_proxy::Character {
                name: p.name.clone(),
                session: p.session,
                x: p.x,
                y: p.y,
                vx: p.vx,
                vy: p.vy,
                hp: p.hp,
            });
            if handed.is_ok() {
                let _ = WorldPlayer::new(&p.name).send_moved(next);
                self.snapshots.left(&p.name);
                self.departed.insert(p.name, (next, self.tick));
            } else {
                // The neighbour cannot take it now; keep the character here.
                self.players.push(p);
            }
        }
        if self.tick.is_multiple_of(50) {
            let now = self.tick;
            self.departed.retain(|_, (_, at)| now - *at < FORWARD_TICKS);
        }
        let snapshot_due = (self.tick + u64::from(me)).is_multiple_of(SNAPSHOT_EVERY);
        if snapshot_due && !self.players.is_empty() {
            self.push_snapshot(me);
        }
        if self.players.is_empty() && self.departed.is_empty() {
            timer::cancel(TICK_TIMER);
            self.ticking = false;
        }
    }

    fn push_snapshot(&mut self, me: u32) {
        let states: Vec<PlayerState> = self
            .players
            .iter()
            .map(|p| PlayerState {
                name: p.name.clone(),
                x: p.x,
                y: p.y,
                vx: p.vx,
                vy: p.vy,
                hp: p.hp.min(255) as u8,
            })
            .collect();
        let datagrams = self.snapshots.snapshot(me, self.tick, &states);
        if datagrams.is_empty() {
            return;
        }
        let sessions: Vec<u64> = self.players.iter().map(|p| p.session).collect();
        for datagram in datagrams {
            session::multicast(&sessions, &datagram, false);
        }
    }
}

impl grove_guest::Actor for WorldCell {
    fn on_activate() {
        let me = index();
        if me >= GRID * GRID {
            panic!(
                "`{}` is not a cell of the map (0 to {})",
                grove_guest::self_key(),
                GRID * GRID - 1
            );
        }
    }

    fn on_timer(name: String) {
        if name == TICK_TIMER {
            let me = index();
            CELL.with_borrow_mut(|cell| cell.tick(me));
        }
    }
}

impl Guest for WorldCell {
    fn enter(character: Character) {
        CELL.with_borrow_mut(|cell| {
            cell.departed.remove(&character.name);
            if let Some(at) = cell.position(&character.name) {
                cell.players.swap_remove(at);
            }
            // The newcomer's client starts from the last keyframe; the next
            // delta carries the newcomer to everyone.
            for datagram in cell.snapshots.last_keyframe() {
                session::multicast(&[character.session], datagram, false);
            }
            cell.snapshots.changed(&character.name);
            cell.players.push(character);
            cell.start_ticking();
        });
    }

    fn leave(name: String) -> Result<(), NotHere> {
        CELL.with_borrow_mut(|cell| match cell.position(&name) {
            Some(at) => {
                cell.players.swap_remove(at);
                cell.snapshots.left(&name);
                Ok(())
            }
            None => Err(cell.not_here(&name)),
        })
    }

    fn set_velocity(name: String, vx: f32, vy: f32) -> Result<(), NotHere> {
        CELL.with_borrow_mut(|cell| match cell.position(&name) {
            Some(at) => {
                let p = &mut cell.players[at];
                p.vx = vx;
                p.vy = vy;
                cell.snapshots.changed(&name);
                Ok(())
            }
            None => Err(cell.not_here(&name)),
        })
    }

    fn aoe(attacker: String, x: f32, y: f32, radius: f32, damage: u32) -> u32 {
        let reach = radius * radius;
        CELL.with_borrow_mut(|cell| {
            let mut hits = 0;
            let mut hit = Vec::new();
            for p in cell.players.iter_mut().filter(|p| p.name != attacker) {
                let (dx, dy) = (p.x - x, p.y - y);
                if dx * dx + dy * dy <= reach {
                    hits += 1;
                    p.hp = p.hp.saturating_sub(damage);
                    if p.hp == 0 {
                        // Defeated players rise again where they fell.
                        p.hp = FULL_HP;
                    }
                    hit.push(p.name.clone());
                }
            }
            for name in hit {
                cell.snapshots.changed(&name);
            }
            hits
        })
    }

    fn query(x0: f32, y0: f32, x1: f32, y1: f32, limit: u32) -> QueryResult {
        let area = Rect::clipped(x0, y0, x1, y1);
        let mine = cell_rect(index());
        let everything = area.contains(mine.x0, mine.y0) && area.contains(mine.x1, mine.y1);
        CELL.with_borrow(|cell| {
            let mut total = 0;
            let mut players = Vec::new();
            for p in cell
                .players
                .iter()
                .filter(|p| everything || area.contains(p.x, p.y))
            {
                total += 1;
                if players.len() < limit as usize {
                    players.push(PlayerView {
                        name: p.name.clone(),
                        x: p.x,
                        y: p.y,
                        hp: p.hp,
                    });
                }
            }
            QueryResult { total, players }
        })
    }

    fn population() -> u32 {
        CELL.with_borrow(|cell| cell.players.len() as u32)
    }
}

grove_guest::export_actor!(WorldCell with_types_in bindings);
