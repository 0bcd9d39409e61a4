//! What activations may use: the host-wide limits, the limits every actor
//! type runs under by default, and overrides for one actor type.
//!
//! An override is a [`LimitRule`], `TYPE.KEY=VALUE` (`player.memory-mib=128`,
//! or `*.timers=64` for every type), given on the command line with
//! `--limit` or read from a limits file (TOML, one table per actor type):
//!
//! ```toml
//! [player]
//! memory-mib = 128
//! mailbox = 4096
//!
//! ["*"]
//! log-lines-per-second = 20
//! ```
//!
//! Rules for `*` change the defaults, whatever order they come in; rules
//! for a type start from those defaults. `docs/limits.md` lists every key.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

/// Limits that may differ between actor types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActorLimits {
    /// Most linear memory one activation may use, in bytes.
    pub max_memory: usize,
    /// Longest a single turn may run guest code before it is stopped (time
    /// spent waiting in host calls — state, other actors — not counted).
    pub turn_deadline: Duration,
    /// Longest a single turn may take on the wall clock, host calls
    /// included; a turn past it is stopped and its activation ends.
    pub turn_wall_time: Duration,
    /// Messages an activation's mailbox holds before senders wait.
    pub mailbox_capacity: usize,
    /// Timers one activation may hold at once.
    pub max_timers: usize,
    /// Reminders one actor may hold at once.
    pub max_reminders: usize,
    /// Proxy handles one activation may hold at once.
    pub max_proxies: usize,
    /// Log lines one activation may write a second (its `log` import,
    /// stdout and stderr together), after a burst of twice as many.
    pub log_lines_per_second: u32,
    /// Rows one actor may keep stored (`u64::MAX`: no quota).
    pub max_state_rows: u64,
    /// Bytes of row values one actor may keep stored (`u64::MAX`: no
    /// quota).
    pub max_state_bytes: u64,
}

impl Default for ActorLimits {
    fn default() -> Self {
        ActorLimits {
            max_memory: 64 << 20,
            turn_deadline: Duration::from_secs(5),
            turn_wall_time: Duration::from_secs(60),
            mailbox_capacity: 1024,
            max_timers: 1024,
            max_reminders: 1024,
            max_proxies: 10_000,
            log_lines_per_second: 100,
            max_state_rows: u64::MAX,
            max_state_bytes: u64::MAX,
        }
    }
}

/// Every limit a host runs its activations under.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most activations alive at once on this host.
    pub max_activations: u32,
    /// Most turns running at once on this host: turns that started and
    /// have not finished, waiting on the host or on other actors included.
    /// Each holds a fiber stack; an idle activation holds none. A turn
    /// past the limit waits for one to finish.
    pub max_running_turns: u32,
    /// Most data one host call's arguments, or one call's result, may copy
    /// out of an activation, counted as wasmtime's hostcall fuel counts it:
    /// the size of a `Val` (40 bytes) per list element, plus the bytes of
    /// each string. It also bounds how long lifting one value can hold a
    /// worker thread, which no epoch interrupt reaches.
    pub max_copy: usize,
    /// Instances of each plugin version made ahead of the activations that
    /// will run them, once its type has activated: an activation that finds
    /// one skips instantiation. Each holds one of the
    /// [`Limits::max_activations`] slots until an activation takes it or an
    /// activation of any type needs its slot.
    pub warm_activations: u32,
    /// Memory slots of each plugin version prepared while the host is
    /// idle, once its type has activated: its image mapped, its memory
    /// made accessible and the pages its first turns write written ahead,
    /// as a deactivated actor of the version leaves a slot. An activation
    /// on one is spared the kernel's work on a slot no instance of its
    /// plugin used before. Each prepared slot keeps those pages resident
    /// (and holds two memory mappings, as every slot used does) until an
    /// activation takes it: one of the version's, or, once many slots sit
    /// unused, one of another type's. Slots are prepared once per version.
    pub prepared_slots: u32,
    /// The limits of every actor type without overrides of its own.
    pub actor: ActorLimits,
    /// The limits of actor types with overrides.
    pub by_type: BTreeMap<String, ActorLimits>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_activations: 30_000,
            max_running_turns: 1_024,
            // Above the largest message between actors (1 Mi elements of
            // 40 bytes), so that limit is met first with its own error.
            max_copy: 48 << 20,
            warm_activations: 4,
            prepared_slots: 256,
            actor: ActorLimits::default(),
            by_type: BTreeMap::new(),
        }
    }
}

impl Limits {
    /// The limits `actor_type` runs under.
    pub fn for_type(&self, actor_type: &str) -> &ActorLimits {
        self.by_type.get(actor_type).unwrap_or(&self.actor)
    }

    /// The most memory any activation may use: what the engine reserves
    /// for each.
    pub fn largest_memory(&self) -> usize {
        self.by_type
            .values()
            .map(|l| l.max_memory)
            .fold(self.actor.max_memory, usize::max)
    }

    /// Applies `rules`: those for every type (`*`) first, then those for
    /// one type, each starting from the defaults. A later rule for the same
    /// type and key wins.
    pub fn apply(&mut self, rules: &[LimitRule]) {
        for rule in rules.iter().filter(|r| r.actor_type == ANY_TYPE) {
            rule.key.set(&mut self.actor, rule.value);
        }
        for rule in rules.iter().filter(|r| r.actor_type != ANY_TYPE) {
            let limits = self
                .by_type
                .entry(rule.actor_type.clone())
                .or_insert_with(|| self.actor.clone());
            rule.key.set(limits, rule.value);
        }
    }
}

/// The actor type of a rule for every type.
pub const ANY_TYPE: &str = "*";

/// A limit that may be set per actor type; its name is the `KEY` of a
/// [`LimitRule`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKey {
    /// `memory-mib`: [`ActorLimits::max_memory`], in MiB.
    MemoryMib,
    /// `turn-deadline-ms`: [`ActorLimits::turn_deadline`].
    TurnDeadlineMs,
    /// `turn-wall-ms`: [`ActorLimits::turn_wall_time`].
    TurnWallMs,
    /// `mailbox`: [`ActorLimits::mailbox_capacity`].
    Mailbox,
    /// `timers`: [`ActorLimits::max_timers`].
    Timers,
    /// `reminders`: [`ActorLimits::max_reminders`].
    Reminders,
    /// `proxies`: [`ActorLimits::max_proxies`].
    Proxies,
    /// `log-lines-per-second`: [`ActorLimits::log_lines_per_second`].
    LogLinesPerSecond,
    /// `state-rows`: [`ActorLimits::max_state_rows`].
    StateRows,
    /// `state-mib`: [`ActorLimits::max_state_bytes`], in MiB.
    StateMib,
}

impl LimitKey {
    /// Every key, as written in a rule.
    pub const ALL: [(LimitKey, &'static str); 10] = [
        (LimitKey::MemoryMib, "memory-mib"),
        (LimitKey::TurnDeadlineMs, "turn-deadline-ms"),
        (LimitKey::TurnWallMs, "turn-wall-ms"),
        (LimitKey::Mailbox, "mailbox"),
        (LimitKey::Timers, "timers"),
        (LimitKey::Reminders, "reminders"),
        (LimitKey::Proxies, "proxies"),
        (LimitKey::LogLinesPerSecond, "log-lines-per-second"),
        (LimitKey::StateRows, "state-rows"),
        (LimitKey::StateMib, "state-mib"),
    ];

    /// The key as written in a rule.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(key, _)| *key == self)
            .map_or("", |(_, name)| name)
    }

    fn set(self, limits: &mut ActorLimits, value: u64) {
        let size = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        match self {
            LimitKey::MemoryMib => limits.max_memory = size(value).saturating_mul(1 << 20),
            LimitKey::TurnDeadlineMs => limits.turn_deadline = Duration::from_millis(value),
            LimitKey::TurnWallMs => limits.turn_wall_time = Duration::from_millis(value),
            LimitKey::Mailbox => limits.mailbox_capacity = size(value),
            LimitKey::Timers => limits.max_timers = size(value),
            LimitKey::Reminders => limits.max_reminders = size(value),
            LimitKey::Proxies => limits.max_proxies = size(value),
            LimitKey::LogLinesPerSecond => {
                limits.log_lines_per_second = u32::try_from(value).unwrap_or(u32::MAX);
            }
            LimitKey::StateRows => limits.max_state_rows = value,
            LimitKey::StateMib => limits.max_state_bytes = value.saturating_mul(1 << 20),
        }
    }

    /// The largest value the key takes: memory past the address space, or
    /// a count past what a host can hold, is refused when it is given.
    fn most(self) -> u64 {
        match self {
            LimitKey::MemoryMib => 4 << 10, // a 32-bit memory's 4 GiB
            LimitKey::TurnDeadlineMs | LimitKey::TurnWallMs => 24 * 3600 * 1000,
            LimitKey::Mailbox
            | LimitKey::Timers
            | LimitKey::Reminders
            | LimitKey::Proxies
            | LimitKey::LogLinesPerSecond => 1 << 24,
            LimitKey::StateRows | LimitKey::StateMib => 1 << 40,
        }
    }
}

impl fmt::Display for LimitKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for LimitKey {
    type Err = LimitError;

    fn from_str(s: &str) -> Result<Self, LimitError> {
        LimitKey::ALL
            .iter()
            .find(|(_, name)| *name == s)
            .map(|(key, _)| *key)
            .ok_or_else(|| LimitError::UnknownKey(s.to_owned()))
    }
}

/// One override: `TYPE.KEY=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitRule {
    /// The actor type, or [`ANY_TYPE`].
    pub actor_type: String,
    /// What it limits.
    pub key: LimitKey,
    /// The value, in the key's unit; at least 1.
    pub value: u64,
}

/// Why a limit rule or a limits file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// Not `TYPE.KEY=VALUE`.
    #[error("`{0}` is not TYPE.KEY=VALUE (e.g. player.memory-mib=128)")]
    Malformed(String),
    /// No such key.
    #[error("`{0}` is not a limit; the limits are {keys}", keys = key_list())]
    UnknownKey(String),
    /// The value is not a whole number in range.
    #[error("{key} must be a whole number from 1 to {most}, not `{value}`")]
    BadValue {
        /// The key.
        key: LimitKey,
        /// The value given.
        value: String,
        /// The largest value allowed.
        most: u64,
    },
    /// The limits file could not be read or parsed.
    #[error("limits file {path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What was wrong.
        message: String,
    },
}

fn key_list() -> String {
    LimitKey::ALL
        .iter()
        .map(|(_, name)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}

impl LimitRule {
    fn new(actor_type: &str, key: &str, value: &str) -> Result<LimitRule, LimitError> {
        let key: LimitKey = key.parse()?;
        let bad = || LimitError::BadValue {
            key,
            value: value.to_owned(),
            most: key.most(),
        };
        let value: u64 = value.trim().parse().map_err(|_| bad())?;
        if value == 0 || value > key.most() {
            return Err(bad());
        }
        Ok(LimitRule {
            actor_type: actor_type.to_owned(),
            key,
            value,
        })
    }

    /// Reads the rules of a limits file.
    pub fn read_file(path: &Path) -> Result<Vec<LimitRule>, LimitError> {
        let failed = |message: String| LimitError::File {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| failed(e.to_string()))?;
        let tables: BTreeMap<String, BTreeMap<String, toml::Value>> =
            toml::from_str(&text).map_err(|e| failed(e.to_string()))?;
        let mut rules = Vec::new();
        for (actor_type, keys) in &tables {
            for (key, value) in keys {
                let value = match value {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let rule = LimitRule::new(actor_type, key, &value)
                    .map_err(|e| failed(format!("[{actor_type}] {e}")))?;
                rules.push(rule);
            }
        }
        Ok(rules)
    }
}

impl FromStr for LimitRule {
    type Err = LimitError;

    fn from_str(s: &str) -> Result<Self, LimitError> {
        let malformed = || LimitError::Malformed(s.to_owned());
        let (name, value) = s.split_once('=').ok_or_else(malformed)?;
        let (actor_type, key) = name.trim().split_once('.').ok_or_else(malformed)?;
        if actor_type.is_empty() {
            return Err(malformed());
        }
        LimitRule::new(actor_type, key, value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_for_every_type_come_first_and_types_start_from_them() {
        let rules: Vec<LimitRule> = ["player.mailbox=10", "*.timers=5", "*.mailbox=20"]
            .iter()
            .map(|r| r.parse().unwrap())
            .collect();
        let mut limits = Limits::default();
        limits.apply(&rules);
        let player = limits.for_type("player");
        assert_eq!((player.mailbox_capacity, player.max_timers), (10, 5));
        let room = limits.for_type("room");
        assert_eq!((room.mailbox_capacity, room.max_timers), (20, 5));
    }

    #[test]
    fn a_bad_rule_says_what_is_wrong() {
        let err = |s: &str| s.parse::<LimitRule>().unwrap_err().to_string();
        assert!(err("player.memory=1").contains("the limits are memory-mib,"));
        assert!(err("player=1").contains("not TYPE.KEY=VALUE"));
        assert!(err("player.mailbox=0").contains("from 1 to"));
        assert!(err("player.memory-mib=9000").contains("from 1 to 4096"));
    }

    #[test]
    fn a_limits_file_names_its_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("limits.toml");
        std::fs::write(
            &path,
            "[player]\nmemory-mib = 128\n\n[\"*\"]\nproxies = 50\n",
        )
        .unwrap();
        let rules = LimitRule::read_file(&path).unwrap();
        let mut limits = Limits::default();
        limits.apply(&rules);
        assert_eq!(limits.for_type("player").max_memory, 128 << 20);
        assert_eq!(limits.for_type("player").max_proxies, 50);
        assert_eq!(limits.largest_memory(), 128 << 20);

        std::fs::write(&path, "[player]\nmailbox = -3\n").unwrap();
        let error = LimitRule::read_file(&path).unwrap_err().to_string();
        assert!(
            error.contains("[player] mailbox must be a whole number"),
            "{error}"
        );
        std::fs::write(&path, "[player\n").unwrap();
        let error = LimitRule::read_file(&path).unwrap_err().to_string();
        assert!(error.contains("limits.toml"), "{error}");
    }
}
