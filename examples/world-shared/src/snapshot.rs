//! Snapshot datagrams: how a cell tells the clients in it where everyone is.
//!
//! A cell sends a **keyframe** of all its players (position, velocity, hit
//! points) every [`KEYFRAME_EVERY`] ticks. In between, every
//! [`SNAPSHOT_EVERY`] ticks, it sends a **delta** against that keyframe:
//! the players who changed since it (a new velocity, a hit, an arrival) and
//! those who left, and nothing at all when no one changed. Players move by
//! a fixed rule ([`step`]), so a client moves everyone on by itself from the
//! keyframe and needs to hear only what the rule cannot tell it.
//!
//! Each delta carries every change since its keyframe, and deltas go on
//! until the next keyframe once anything changed, so a lost delta is made
//! good by the next one, and a lost keyframe by the next keyframe. A client
//! that enters a cell is sent the cell's last keyframe at once. A client
//! applies a delta only once all its parts arrived.
//!
//! Datagrams stay under [`MAX_SNAPSHOT_BYTES`]; a keyframe or delta too big
//! for one is sent in parts, each saying its index and the count. All
//! numbers are big-endian:
//!
//! ```text
//! datagram = kind u8 (1 keyframe, 2 delta) · cell u32 · tick u64 ·
//!            keyframe-tick u64 (= tick in a keyframe) · part u8 · parts u8 ·
//!            entry*
//! entry    = 0 · name · x f32 · y f32 · vx f32 · vy f32 · hp u8   (a player's state)
//!          | 1 · name                                              (a player who left)
//! name     = length u8 · UTF-8
//! ```

use std::collections::{BTreeMap, BTreeSet};

use crate::{TICK_MS, WORLD_SIZE};

/// Cells send a snapshot (a keyframe or a delta) at most every this many
/// ticks (200 ms): clients move players on by themselves in between, so a
/// change another player makes reaches them within 200 ms, and a crowd
/// costs half the datagrams of a 100 ms cadence.
pub const SNAPSHOT_EVERY: u64 = 10;

/// Cells send a keyframe every this many ticks (1 s).
pub const KEYFRAME_EVERY: u64 = 50;

/// Largest snapshot datagram payload; stays under QUIC's minimum path size.
pub const MAX_SNAPSHOT_BYTES: usize = 1100;

const KEYFRAME: u8 = 1;
const DELTA: u8 = 2;
const HEADER: usize = 1 + 4 + 8 + 8 + 1 + 1;

/// One player as snapshots carry it: enough to move it on between them.
#[derive(Debug, Clone, PartialEq)]
pub struct PlayerState {
    /// The player's name.
    pub name: String,
    /// Position.
    pub x: f32,
    /// Position.
    pub y: f32,
    /// Velocity, in units per second.
    pub vx: f32,
    /// Velocity, in units per second.
    pub vy: f32,
    /// Hit points left (saturated at 255).
    pub hp: u8,
}

impl PlayerState {
    /// One world tick of movement, by [`step`].
    pub fn step(&mut self) {
        step(&mut self.x, &mut self.y, &mut self.vx, &mut self.vy);
    }
}

/// One world tick of movement: the rule cells apply every [`TICK_MS`], and
/// clients repeat between snapshots. A player moves by its velocity and
/// bounces off the world's edges.
pub fn step(x: &mut f32, y: &mut f32, vx: &mut f32, vy: &mut f32) {
    let dt = TICK_MS as f32 / 1000.0;
    *x += *vx * dt;
    *y += *vy * dt;
    if *x < 0.0 || *x > WORLD_SIZE {
        *vx = -*vx;
        *x = x.clamp(0.0, WORLD_SIZE);
    }
    if *y < 0.0 || *y > WORLD_SIZE {
        *vy = -*vy;
        *y = y.clamp(0.0, WORLD_SIZE);
    }
}

/// An entry of a snapshot datagram.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    /// A player's state at the datagram's tick.
    Player(PlayerState),
    /// A player who left the cell since the keyframe.
    Left(String),
}

/// A decoded snapshot datagram.
#[derive(Debug, Clone, PartialEq)]
pub struct Datagram {
    /// Whether it is (part of) a keyframe.
    pub keyframe: bool,
    /// The cell.
    pub cell: u32,
    /// The tick it describes.
    pub tick: u64,
    /// The keyframe it is relative to (its own tick for a keyframe).
    pub keyframe_tick: u64,
    /// Its index among the parts of its keyframe or delta.
    pub part: u8,
    /// How many parts there are.
    pub parts: u8,
    /// What it says.
    pub entries: Vec<Entry>,
}

fn name_bytes(name: &str) -> &[u8] {
    let bytes = name.as_bytes();
    bytes.get(..255).unwrap_or(bytes)
}

fn entry_len(entry: &Entry) -> usize {
    match entry {
        Entry::Player(p) => 2 + name_bytes(&p.name).len() + 17,
        Entry::Left(name) => 2 + name_bytes(name).len(),
    }
}

/// Encodes a keyframe (`keyframe_tick == tick`) or a delta as datagrams of
/// at most [`MAX_SNAPSHOT_BYTES`]. Past 255 parts, the rest is dropped (a
/// cell holds far fewer players).
pub fn encode(cell: u32, tick: u64, keyframe_tick: u64, entries: &[Entry]) -> Vec<Vec<u8>> {
    let kind = if tick == keyframe_tick {
        KEYFRAME
    } else {
        DELTA
    };
    let mut parts: Vec<Vec<u8>> = Vec::new();
    let mut current: Vec<u8> = Vec::with_capacity(MAX_SNAPSHOT_BYTES);
    let header = |out: &mut Vec<u8>| {
        out.push(kind);
        out.extend_from_slice(&cell.to_be_bytes());
        out.extend_from_slice(&tick.to_be_bytes());
        out.extend_from_slice(&keyframe_tick.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
    };
    header(&mut current);
    for entry in entries {
        if current.len() + entry_len(entry) > MAX_SNAPSHOT_BYTES && current.len() > HEADER {
            parts.push(std::mem::take(&mut current));
            header(&mut current);
        }
        match entry {
            Entry::Player(p) => {
                let name = name_bytes(&p.name);
                current.push(0);
                current.push(name.len() as u8);
                current.extend_from_slice(name);
                for v in [p.x, p.y, p.vx, p.vy] {
                    current.extend_from_slice(&v.to_be_bytes());
                }
                current.push(p.hp);
            }
            Entry::Left(name) => {
                let name = name_bytes(name);
                current.push(1);
                current.push(name.len() as u8);
                current.extend_from_slice(name);
            }
        }
    }
    parts.push(current);
    parts.truncate(255);
    let count = parts.len() as u8;
    for (index, part) in parts.iter_mut().enumerate() {
        if let Some(slot) = part.get_mut(HEADER - 2..HEADER) {
            slot.copy_from_slice(&[index as u8, count]);
        }
    }
    parts
}

/// Reads a snapshot datagram. One that is not a snapshot, is cut short,
/// names a part past its count, lies further than a keyframe interval from
/// its keyframe or holds a name that is not UTF-8 reads as
/// `None`.
pub fn decode(bytes: &[u8]) -> Option<Datagram> {
    let (&kind, rest) = bytes.split_first()?;
    if kind != KEYFRAME && kind != DELTA {
        return None;
    }
    let (cell, rest) = rest.split_first_chunk::<4>()?;
    let (tick, rest) = rest.split_first_chunk::<8>()?;
    let (keyframe_tick, rest) = rest.split_first_chunk::<8>()?;
    let (&[part, parts], mut rest) = rest.split_first_chunk::<2>()?;
    let (tick, keyframe_tick) = (
        u64::from_be_bytes(*tick),
        u64::from_be_bytes(*keyframe_tick),
    );
    // A delta is never older than a keyframe interval: a client moves
    // players on over that gap, so a longer one is refused.
    if part >= parts
        || (kind == KEYFRAME) != (tick == keyframe_tick)
        || keyframe_tick > tick
        || tick - keyframe_tick > KEYFRAME_EVERY
    {
        return None;
    }
    let mut entries = Vec::new();
    while let Some((&tag, tail)) = rest.split_first() {
        let (&len, tail) = tail.split_first()?;
        let (name, tail) = tail.split_at_checked(usize::from(len))?;
        let name = String::from_utf8(name.to_vec()).ok()?;
        match tag {
            0 => {
                let mut values = [0f32; 4];
                let mut tail = tail;
                for value in &mut values {
                    let (v, t) = tail.split_first_chunk::<4>()?;
                    *value = f32::from_be_bytes(*v);
                    tail = t;
                }
                let (&hp, tail) = tail.split_first()?;
                let [x, y, vx, vy] = values;
                entries.push(Entry::Player(PlayerState {
                    name,
                    x,
                    y,
                    vx,
                    vy,
                    hp,
                }));
                rest = tail;
            }
            1 => {
                entries.push(Entry::Left(name));
                rest = tail;
            }
            _ => return None,
        }
    }
    Some(Datagram {
        keyframe: kind == KEYFRAME,
        cell: u32::from_be_bytes(*cell),
        tick,
        keyframe_tick,
        part,
        parts,
        entries,
    })
}

/// What a cell sends its clients, kept between ticks: its last keyframe
/// and what changed since.
#[derive(Debug, Default)]
pub struct SnapshotStream {
    /// The tick of the last keyframe, and its datagrams (sent again to a
    /// client entering the cell).
    keyframe: Option<(u64, Vec<Vec<u8>>)>,
    /// Players whose state the rule cannot tell since the keyframe.
    changed: BTreeSet<String>,
    /// Players who left since the keyframe.
    left: BTreeSet<String>,
}

impl SnapshotStream {
    /// `name`'s state changed other than by the rule (a new velocity, a
    /// hit), or it arrived.
    pub fn changed(&mut self, name: &str) {
        self.left.remove(name);
        self.changed.insert(name.to_owned());
    }

    /// `name` left the cell.
    pub fn left(&mut self, name: &str) {
        self.changed.remove(name);
        self.left.insert(name.to_owned());
    }

    /// The datagrams of the last keyframe, for a client entering the cell.
    pub fn last_keyframe(&self) -> &[Vec<u8>] {
        self.keyframe
            .as_ref()
            .map_or(&[], |(_, datagrams)| datagrams)
    }

    /// The datagrams to send at `tick` for the cell's `players`: a keyframe
    /// when one is due, a delta while anything changed since the last
    /// keyframe (so that a lost delta is made good by the next), otherwise
    /// none.
    pub fn snapshot(&mut self, cell: u32, tick: u64, players: &[PlayerState]) -> Vec<Vec<u8>> {
        let due = self
            .keyframe
            .as_ref()
            .is_none_or(|(at, _)| tick.saturating_sub(*at) >= KEYFRAME_EVERY);
        if due {
            let entries: Vec<Entry> = players.iter().cloned().map(Entry::Player).collect();
            let datagrams = encode(cell, tick, tick, &entries);
            self.keyframe = Some((tick, datagrams.clone()));
            self.changed.clear();
            self.left.clear();
            return datagrams;
        }
        if self.changed.is_empty() && self.left.is_empty() {
            return Vec::new();
        }
        let keyframe_tick = self.keyframe.as_ref().map_or(tick, |(at, _)| *at);
        let mut entries: Vec<Entry> = players
            .iter()
            .filter(|p| self.changed.contains(&p.name))
            .cloned()
            .map(Entry::Player)
            .collect();
        entries.extend(self.left.iter().cloned().map(Entry::Left));
        encode(cell, tick, keyframe_tick, &entries)
    }
}

/// The parts of one keyframe or delta, each once it has arrived.
type Parts = Vec<Option<Vec<Entry>>>;

/// What a client knows of its cell, rebuilt from snapshot datagrams that
/// may come late, out of order or not at all.
#[derive(Debug, Default)]
pub struct CellView {
    /// The last complete keyframe: its cell, tick and players.
    base: Option<(u32, u64, BTreeMap<String, PlayerState>)>,
    /// Parts of a keyframe still arriving: cell, tick, parts.
    keyframe_parts: Option<(u32, u64, Parts)>,
    /// The newest complete delta on the base: its tick and entries.
    delta: Option<(u64, Vec<Entry>)>,
    /// Parts of a newer delta still arriving: tick, parts.
    delta_parts: Option<(u64, Parts)>,
}

/// Fills `part` of `slots`; the entries of every part once all arrived.
fn complete(slots: &mut Parts, part: u8, entries: Vec<Entry>) -> Option<Vec<Entry>> {
    if let Some(slot) = slots.get_mut(usize::from(part)) {
        *slot = Some(entries);
    }
    if slots.iter().any(Option::is_none) {
        return None;
    }
    Some(
        slots
            .iter_mut()
            .flat_map(|p| p.take().unwrap_or_default())
            .collect(),
    )
}

impl CellView {
    /// Takes in one datagram; `false` if it is not a snapshot.
    pub fn receive(&mut self, bytes: &[u8]) -> bool {
        let Some(d) = decode(bytes) else {
            return false;
        };
        if d.keyframe {
            self.keyframe(d);
        } else {
            self.delta(d);
        }
        true
    }

    fn keyframe(&mut self, d: Datagram) {
        let parts = usize::from(d.parts);
        // An older keyframe of the same cell says less, unless the cell
        // started over (an activation counts ticks from 0): then it is far
        // older than anything the cell sent since.
        let older = |cell: u32, at: u64| {
            cell == d.cell && at >= d.tick && at - d.tick <= 2 * KEYFRAME_EVERY
        };
        if self
            .base
            .as_ref()
            .is_some_and(|(cell, at, _)| older(*cell, *at))
        {
            return;
        }
        if self
            .keyframe_parts
            .as_ref()
            .is_some_and(|(cell, at, _)| older(*cell, *at) && *at != d.tick)
        {
            return;
        }
        let same = matches!(&self.keyframe_parts, Some((cell, tick, slots))
            if *cell == d.cell && *tick == d.tick && slots.len() == parts);
        if !same {
            self.keyframe_parts = Some((d.cell, d.tick, vec![None; parts]));
        }
        let Some((_, _, slots)) = &mut self.keyframe_parts else {
            return;
        };
        let Some(entries) = complete(slots, d.part, d.entries) else {
            return;
        };
        let players = entries
            .into_iter()
            .filter_map(|entry| match entry {
                Entry::Player(p) => Some((p.name.clone(), p)),
                Entry::Left(_) => None,
            })
            .collect();
        self.base = Some((d.cell, d.tick, players));
        self.keyframe_parts = None;
        self.delta = None;
        self.delta_parts = None;
    }

    fn delta(&mut self, d: Datagram) {
        let on_base = self
            .base
            .as_ref()
            .is_some_and(|(cell, at, _)| *cell == d.cell && *at == d.keyframe_tick);
        // A delta no newer than the one applied says less.
        if !on_base || self.delta.as_ref().is_some_and(|(tick, _)| *tick >= d.tick) {
            return;
        }
        let parts = usize::from(d.parts);
        let same = matches!(&self.delta_parts, Some((tick, slots))
            if *tick == d.tick && slots.len() == parts);
        if !same {
            if self
                .delta_parts
                .as_ref()
                .is_some_and(|(tick, _)| *tick > d.tick)
            {
                return;
            }
            self.delta_parts = Some((d.tick, vec![None; parts]));
        }
        let Some((_, slots)) = &mut self.delta_parts else {
            return;
        };
        if let Some(entries) = complete(slots, d.part, d.entries) {
            self.delta = Some((d.tick, entries));
            self.delta_parts = None;
        }
    }

    /// The cell and tick the view stands at, and every player in it then
    /// (in name order), once a keyframe has arrived.
    pub fn players(&self) -> Option<(u32, u64, Vec<PlayerState>)> {
        let (cell, keyframe_tick, base) = self.base.as_ref()?;
        let tick = self.delta.as_ref().map_or(*keyframe_tick, |(t, _)| *t);
        let mut players = base.clone();
        for player in players.values_mut() {
            for _ in *keyframe_tick..tick {
                player.step();
            }
        }
        for entry in self.delta.iter().flat_map(|(_, entries)| entries) {
            match entry {
                Entry::Player(p) => {
                    players.insert(p.name.clone(), p.clone());
                }
                Entry::Left(name) => {
                    players.remove(name);
                }
            }
        }
        Some((*cell, tick, players.into_values().collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn player(name: &str, x: f32, y: f32, vx: f32, vy: f32, hp: u8) -> PlayerState {
        PlayerState {
            name: name.into(),
            x,
            y,
            vx,
            vy,
            hp,
        }
    }

    #[test]
    fn keyframes_and_deltas_split_into_datagrams_and_read_back() {
        let players: Vec<Entry> = (0..120)
            .map(|i| Entry::Player(player(&format!("bot-{i}"), i as f32, 2.5, -1.0, 3.0, 100)))
            .chain([Entry::Left("gone".into())])
            .collect();
        let datagrams = encode(42, 19, 10, &players);
        assert!(datagrams.len() > 1);
        assert!(datagrams.iter().all(|d| d.len() <= MAX_SNAPSHOT_BYTES));
        let mut read = Vec::new();
        for (i, bytes) in datagrams.iter().enumerate() {
            let d = decode(bytes).unwrap();
            assert!(!d.keyframe);
            assert_eq!((d.cell, d.tick, d.keyframe_tick), (42, 19, 10));
            assert_eq!(
                (usize::from(d.part), usize::from(d.parts)),
                (i, datagrams.len())
            );
            read.extend(d.entries);
        }
        assert_eq!(read, players);
        let keyframe = decode(&encode(1, 7, 7, &[])[0]).unwrap();
        assert!(keyframe.keyframe && keyframe.entries.is_empty());
    }

    #[test]
    fn malformed_datagrams_read_as_none() {
        let entries = [
            Entry::Player(player("ann", 1.0, 2.0, 3.0, 4.0, 5)),
            Entry::Left("bo".into()),
        ];
        let datagram = encode(7, 9, 8, &entries).remove(0);
        // Header, then 2 + 3 + 17 and 2 + 2 bytes.
        let boundaries = [HEADER, HEADER + 22, HEADER + 26];
        assert_eq!(datagram.len(), HEADER + 26);
        for end in 0..=datagram.len() {
            let decoded = decode(&datagram[..end]);
            assert_eq!(decoded.is_some(), boundaries.contains(&end), "cut at {end}");
        }
        let mut bad = datagram.clone();
        bad[HEADER + 2] = 0xff; // a name that is not UTF-8
        assert_eq!(decode(&bad), None);
        let mut bad = datagram.clone();
        bad[HEADER] = 7; // an unknown entry
        assert_eq!(decode(&bad), None);
        let mut bad = datagram.clone();
        bad[HEADER - 2] = 1; // part 1 of 1
        assert_eq!(decode(&bad), None);
        let mut bad = datagram.clone();
        bad[0] = KEYFRAME; // a keyframe whose tick is not its own
        assert_eq!(decode(&bad), None);
        let mut bad = datagram.clone();
        bad[0] = 3;
        assert_eq!(decode(&bad), None);
        assert_eq!(decode(&[]), None);
    }

    /// A cell's players under the movement rule and random changes, sent
    /// through a stream that loses datagrams.
    struct Sim {
        players: Vec<PlayerState>,
        rng: u64,
    }

    impl Sim {
        fn next(&mut self) -> u64 {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            self.rng
        }

        fn chance(&mut self, percent: u64) -> bool {
            self.next() % 100 < percent
        }
    }

    fn sorted(mut players: Vec<PlayerState>) -> Vec<PlayerState> {
        players.sort_by(|a, b| a.name.cmp(&b.name));
        players
    }

    #[test]
    fn a_client_rebuilds_the_cell_exactly_despite_lost_datagrams() {
        let mut sim = Sim {
            players: (0..60)
                .map(|i| player(&format!("p{i}"), 10.0 * i as f32, 500.0, 37.5, -80.0, 100))
                .collect(),
            rng: 0x9e37_79b9_7f4a_7c15,
        };
        let mut stream = SnapshotStream::default();
        let mut view = CellView::default();
        let (mut exact, mut sent) = (0, 0);
        for tick in 1..=200 * SNAPSHOT_EVERY {
            for p in &mut sim.players {
                p.step();
            }
            // Changes the rule cannot tell: velocities, hits, comings and
            // goings.
            if sim.chance(30) {
                let i = (sim.next() % sim.players.len() as u64) as usize;
                let vx = (sim.next() % 200) as f32 - 100.0;
                sim.players[i].vx = vx;
                let name = sim.players[i].name.clone();
                stream.changed(&name);
            }
            if sim.chance(10) {
                let i = (sim.next() % sim.players.len() as u64) as usize;
                sim.players[i].hp = sim.players[i].hp.wrapping_sub(7);
                let name = sim.players[i].name.clone();
                stream.changed(&name);
            }
            if sim.chance(3) {
                let gone = sim.players.swap_remove(0);
                stream.left(&gone.name);
            }
            if sim.chance(3) {
                let name = format!("new{tick}");
                sim.players.push(player(&name, 1.0, 999.0, 5.0, 5.0, 50));
                stream.changed(&name);
            }
            if !tick.is_multiple_of(SNAPSHOT_EVERY) {
                continue;
            }
            let datagrams = stream.snapshot(3, tick, &sim.players);
            sent += datagrams.len();
            // A fifth of the datagrams are lost.
            let mut complete = true;
            for datagram in &datagrams {
                if sim.chance(20) {
                    complete = false;
                } else {
                    assert!(view.receive(datagram));
                }
            }
            // Whenever everything sent at a tick arrived, on a keyframe the
            // client has, the view is the cell, exactly.
            if complete && !datagrams.is_empty() {
                if let Some((cell, at, players)) = view.players() {
                    if at == tick {
                        assert_eq!(cell, 3);
                        assert_eq!(players, sorted(sim.players.clone()), "tick {tick}");
                        exact += 1;
                    }
                }
            }
        }
        // Of the 200 snapshot ticks, those after a keyframe lost in part
        // wait for the next one; the rest were rebuilt exactly.
        assert!(exact >= 80, "{exact} exact, {sent} datagrams");
        // A final keyframe, delivered whole, always rebuilds the cell.
        let last = 200 * SNAPSHOT_EVERY + KEYFRAME_EVERY;
        for datagram in stream.snapshot(3, last, &sim.players) {
            assert!(view.receive(&datagram));
        }
        let (_, at, players) = view.players().unwrap();
        assert_eq!(at, last);
        assert_eq!(players, sorted(sim.players.clone()));
    }

    #[test]
    fn a_quiet_cell_sends_nothing_between_keyframes() {
        let mut players = vec![player("a", 1.0, 1.0, 10.0, 0.0, 100)];
        let mut stream = SnapshotStream::default();
        let mut sent = Vec::new();
        for tick in (SNAPSHOT_EVERY..=3 * KEYFRAME_EVERY).step_by(SNAPSHOT_EVERY as usize) {
            for p in &mut players {
                for _ in 0..SNAPSHOT_EVERY {
                    p.step();
                }
            }
            if !stream.snapshot(0, tick, &players).is_empty() {
                sent.push(tick);
            }
        }
        // Keyframes only: the client moves the player by itself.
        assert_eq!(
            sent,
            vec![
                SNAPSHOT_EVERY,
                SNAPSHOT_EVERY + KEYFRAME_EVERY,
                SNAPSHOT_EVERY + 2 * KEYFRAME_EVERY
            ]
        );
        // One change: deltas repeat it until the next keyframe (a lost one
        // is made good by the next), then the cell is quiet again.
        stream.changed("a");
        let keyframe = SNAPSHOT_EVERY + 2 * KEYFRAME_EVERY;
        let mut deltas = 0;
        let between = keyframe + SNAPSHOT_EVERY..keyframe + KEYFRAME_EVERY;
        for tick in between.step_by(SNAPSHOT_EVERY as usize) {
            let delta = stream.snapshot(0, tick, &players);
            assert_eq!(delta.len(), 1);
            assert!(!decode(&delta[0]).unwrap().keyframe);
            deltas += 1;
        }
        assert_eq!(deltas, KEYFRAME_EVERY / SNAPSHOT_EVERY - 1);
        let next_keyframe = stream.snapshot(0, keyframe + KEYFRAME_EVERY, &players);
        assert!(decode(&next_keyframe[0]).unwrap().keyframe);
        let quiet = keyframe + KEYFRAME_EVERY + SNAPSHOT_EVERY;
        assert!(stream.snapshot(0, quiet, &players).is_empty());
        // A client that comes in gets the last keyframe.
        let mut view = CellView::default();
        for datagram in stream.last_keyframe() {
            view.receive(datagram);
        }
        assert_eq!(view.players().unwrap().2.len(), 1);
    }

    #[test]
    fn a_view_follows_its_player_into_a_younger_cell_and_waits_for_whole_deltas() {
        let mut view = CellView::default();
        let ann = player("ann", 150.0, 150.0, 0.0, 0.0, 90);
        // Cell 11 at tick 3000.
        for d in encode(11, 3000, 3000, &[Entry::Player(ann.clone())]) {
            assert!(view.receive(&d));
        }
        assert_eq!(view.players().unwrap().1, 3000);
        // Ann walks into cell 12, whose activation started a moment ago:
        // its ticks are far lower, and its keyframe still counts.
        let ann_east = player("ann", 201.0, 150.0, 5.0, 0.0, 90);
        for d in encode(12, 20, 20, &[Entry::Player(ann_east.clone())]) {
            assert!(view.receive(&d));
        }
        assert_eq!(view.players(), Some((12, 20, vec![ann_east.clone()])));
        // A delta in two parts: nothing of it counts until both arrived.
        let many: Vec<Entry> = (0..80)
            .map(|i| Entry::Player(player(&format!("p{i:02}"), 250.0, 150.0, 0.0, 0.0, 1)))
            .collect();
        let parts = encode(12, 30, 20, &many);
        assert_eq!(parts.len(), 2);
        assert!(view.receive(&parts[1]));
        let (_, at, players) = view.players().unwrap();
        assert_eq!((at, players.len()), (20, 1));
        assert!(view.receive(&parts[0]));
        let (_, at, players) = view.players().unwrap();
        assert_eq!((at, players.len()), (30, 81));
        // A late delta changes nothing.
        let stale = encode(12, 25, 20, &[Entry::Left("ann".into())]);
        assert!(view.receive(&stale[0]));
        assert_eq!(view.players().unwrap().2.len(), 81);
        // A delta claiming a gap past a keyframe interval is refused.
        let far = encode(12, 20 + KEYFRAME_EVERY + 1, 20, &[]);
        assert!(!view.receive(&far[0]));
    }
}
