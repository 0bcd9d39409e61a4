//! The multiplayer world demo's shared vocabulary: the map and its cells, the
//! JSON messages a game client exchanges with its player actor, and the
//! binary snapshot datagrams cells push to the clients that see them
//! ([`snapshot`]).
//!
//! The world is a square of [`WORLD_SIZE`] units, cut into a grid of
//! [`GRID`] × [`GRID`] cells (100 by default, as in the seed's server). Cell
//! `i` covers column `i % GRID` and row `i / GRID`. A client sees the cell its
//! player is in.

use serde::{Deserialize, Serialize};

pub mod snapshot;

pub use snapshot::{CellView, PlayerState, SnapshotStream, KEYFRAME_EVERY, SNAPSHOT_EVERY};

/// The world's width and height, in units.
pub const WORLD_SIZE: f32 = 1000.0;

/// Cells per side of the map.
pub const GRID: u32 = 10;

/// Width and height of one cell.
pub const CELL_SIZE: f32 = WORLD_SIZE / GRID as f32;

/// The world tick: cells move their players every 20 ms.
pub const TICK_MS: u64 = 20;

/// Fastest a player may move, in units per second.
pub const MAX_SPEED: f32 = 100.0;

/// Largest area-damage radius.
pub const MAX_AOE_RADIUS: f32 = 250.0;

/// Most players one query returns (the total is always counted).
pub const MAX_QUERY_LIMIT: u32 = 500;

/// Hit points of a fresh player.
pub const FULL_HP: u32 = 100;

/// An axis-aligned rectangle, `x0 <= x1`, `y0 <= y1`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rect {
    /// Left edge.
    pub x0: f32,
    /// Top edge.
    pub y0: f32,
    /// Right edge.
    pub x1: f32,
    /// Bottom edge.
    pub y1: f32,
}

impl Rect {
    /// The rectangle between two corners, in any order, clipped to the world.
    pub fn clipped(x0: f32, y0: f32, x1: f32, y1: f32) -> Rect {
        let clip = |v: f32| {
            if v.is_finite() {
                v.clamp(0.0, WORLD_SIZE)
            } else {
                0.0
            }
        };
        let (x0, x1, y0, y1) = (clip(x0), clip(x1), clip(y0), clip(y1));
        let (x0, x1) = (x0.min(x1), x0.max(x1));
        let (y0, y1) = (y0.min(y1), y0.max(y1));
        Rect { x0, y0, x1, y1 }
    }

    /// The whole world.
    pub fn world() -> Rect {
        Rect::clipped(0.0, 0.0, WORLD_SIZE, WORLD_SIZE)
    }

    /// The square around `(x, y)` reaching `radius` each way.
    pub fn around(x: f32, y: f32, radius: f32) -> Rect {
        Rect::clipped(x - radius, y - radius, x + radius, y + radius)
    }

    /// Whether `(x, y)` lies inside (edges included).
    pub fn contains(&self, x: f32, y: f32) -> bool {
        x >= self.x0 && x <= self.x1 && y >= self.y0 && y <= self.y1
    }

    /// The cells this rectangle overlaps, row by row.
    pub fn cells(&self) -> Vec<u32> {
        let (cx0, cy0) = (column(self.x0), column(self.y0));
        let (cx1, cy1) = (column(self.x1), column(self.y1));
        (cy0..=cy1)
            .flat_map(|cy| (cx0..=cx1).map(move |cx| cy * GRID + cx))
            .collect()
    }
}

/// The grid column (or row) of a coordinate.
fn column(v: f32) -> u32 {
    ((v / CELL_SIZE) as u32).min(GRID - 1)
}

/// The cell holding `(x, y)`.
pub fn cell_of(x: f32, y: f32) -> u32 {
    column(y.clamp(0.0, WORLD_SIZE)) * GRID + column(x.clamp(0.0, WORLD_SIZE))
}

/// The area a cell covers.
pub fn cell_rect(cell: u32) -> Rect {
    let (cx, cy) = ((cell % GRID) as f32, (cell / GRID) as f32);
    Rect {
        x0: cx * CELL_SIZE,
        y0: cy * CELL_SIZE,
        x1: (cx + 1.0) * CELL_SIZE,
        y1: (cy + 1.0) * CELL_SIZE,
    }
}

/// A valid player name: 1 to 32 ASCII letters, digits, `-` or `_`, starting
/// with a letter.
pub fn valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A command from a client: one JSON frame on the reliable stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Chosen by the client; echoed in the reply.
    pub id: u64,
    /// What to do.
    #[serde(flatten)]
    pub command: Command,
}

/// The commands a client may send (`"cmd"` in the JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Command {
    /// Move at `(vx, vy)` units per second (clamped to [`MAX_SPEED`]).
    SetVelocity {
        /// Horizontal speed.
        vx: f32,
        /// Vertical speed.
        vy: f32,
    },
    /// Deal `damage` to every other player within `radius` of `(x, y)`,
    /// whatever cells they are in.
    Aoe {
        /// Centre.
        x: f32,
        /// Centre.
        y: f32,
        /// Reach (at most [`MAX_AOE_RADIUS`]).
        radius: f32,
        /// Hit points taken from each player hit.
        damage: u32,
    },
    /// The players inside a rectangle, up to the whole world.
    Query {
        /// The area.
        #[serde(flatten)]
        area: Rect,
        /// Most players to list (at most [`MAX_QUERY_LIMIT`]); all are counted.
        #[serde(default = "default_limit")]
        limit: u32,
    },
    /// Leave the world; the session is closed after the reply.
    Logout,
}

fn default_limit() -> u32 {
    50
}

impl Command {
    /// The command's name, as in the JSON.
    pub fn name(&self) -> &'static str {
        match self {
            Command::SetVelocity { .. } => "set-velocity",
            Command::Aoe { .. } => "aoe",
            Command::Query { .. } => "query",
            Command::Logout => "logout",
        }
    }
}

/// One player as a query lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlayerView {
    /// The player's name.
    pub name: String,
    /// Position.
    pub x: f32,
    /// Position.
    pub y: f32,
    /// Hit points left.
    pub hp: u32,
}

/// A frame from the player actor to its client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Reply {
    /// Sent once the player has entered the world after login.
    Welcome {
        /// The player's name.
        name: String,
        /// The cell it entered.
        cell: u32,
        /// Position.
        x: f32,
        /// Position.
        y: f32,
    },
    /// A command succeeded.
    Ok {
        /// The request's id.
        id: u64,
        /// Players hit (`aoe`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hits: Option<u32>,
        /// Players in the area (`query`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        total: Option<u32>,
        /// Up to `limit` of them (`query`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        players: Vec<PlayerView>,
    },
    /// A command failed.
    Error {
        /// The request's id (0 if it could not be read).
        id: u64,
        /// Why.
        message: String,
    },
}

impl Reply {
    /// A success with nothing to report.
    pub fn ok(id: u64) -> Reply {
        Reply::Ok {
            id,
            hits: None,
            total: None,
            players: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_cover_the_world_row_by_row() {
        assert_eq!(cell_of(0.0, 0.0), 0);
        assert_eq!(cell_of(150.0, 0.0), 1);
        assert_eq!(cell_of(0.0, 150.0), GRID);
        assert_eq!(cell_of(WORLD_SIZE, WORLD_SIZE), GRID * GRID - 1);
        assert_eq!(
            cell_rect(11),
            Rect {
                x0: 100.0,
                y0: 100.0,
                x1: 200.0,
                y1: 200.0
            }
        );
        assert_eq!(Rect::world().cells().len(), (GRID * GRID) as usize);
        // An area straddling a corner touches four cells.
        assert_eq!(
            Rect::around(100.0, 100.0, 10.0).cells(),
            vec![0, 1, GRID, GRID + 1]
        );
        assert_eq!(
            Rect::clipped(50.0, 50.0, -20.0, f32::NAN),
            Rect {
                x0: 0.0,
                y0: 0.0,
                x1: 50.0,
                y1: 50.0
            }
        );
    }

    #[test]
    fn commands_read_from_the_documented_json() {
        let r: Request =
            serde_json::from_str(r#"{"id":7,"cmd":"set-velocity","vx":1.5,"vy":-2}"#).unwrap();
        assert_eq!(r.command, Command::SetVelocity { vx: 1.5, vy: -2.0 });
        let r: Request =
            serde_json::from_str(r#"{"id":8,"cmd":"query","x0":0,"y0":0,"x1":1000,"y1":1000}"#)
                .unwrap();
        assert_eq!(
            r.command,
            Command::Query {
                area: Rect::world(),
                limit: 50
            }
        );
        let r: Request = serde_json::from_str(r#"{"id":9,"cmd":"logout"}"#).unwrap();
        assert_eq!(r.command, Command::Logout);
        assert_eq!(
            serde_json::to_string(&Reply::ok(3)).unwrap(),
            r#"{"type":"ok","id":3}"#
        );
    }

    #[test]
    fn names_follow_the_rules() {
        assert!(valid_name("bot-17"));
        assert!(!valid_name("17bot"));
        assert!(!valid_name(""));
        assert!(!valid_name("a/b"));
        assert!(!valid_name(&"a".repeat(33)));
    }
}
