//! The `echo` actor: owns game-client sessions and echoes what they send.
//! See `wit/examples/echo.wit` for its commands.

mod bindings {
    wit_bindgen::generate!({
        path: ["../../wit/actor", "../../wit/examples/echo.wit", "wit/world.wit"],
        world: "grove-example:echo-plugin/echo-actor",
        with: {
            "grove:actor/host@0.1.0": grove_guest::host,
            "grove:actor/types@0.1.0": grove_guest::types,
        },
    });
}

use std::cell::RefCell;
use std::time::Duration;

use bindings::exports::grove_example::echo::echo::Guest;
use grove_guest::{session, timer, ActorRef, DisconnectReason, SessionError, SessionId};

thread_local! {
    static EVENTS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    static SESSIONS: RefCell<Vec<SessionId>> = const { RefCell::new(Vec::new()) };
    /// Running tick timers: (timer name, session, ticks sent, ticks wanted).
    static TICKS: RefCell<Vec<(String, SessionId, u32, u32)>> = const { RefCell::new(Vec::new()) };
}

struct Echo;

fn record(event: String) {
    EVENTS.with_borrow_mut(|events| events.push(event));
}

fn reason_text(reason: &DisconnectReason) -> String {
    match reason {
        DisconnectReason::ClientClosed(r) => format!("client-closed: {r}"),
        DisconnectReason::TimedOut => "timed-out".into(),
        DisconnectReason::ClosedByActor(r) => format!("closed-by-actor: {r}"),
        DisconnectReason::Kicked(r) => format!("kicked: {r}"),
        DisconnectReason::HostShutdown => "host-shutdown".into(),
    }
}

/// Runs a text command; `false` if the message is not one.
fn command(session: SessionId, text: &str) -> bool {
    let mut words = text.splitn(2, ' ');
    match (words.next(), words.next()) {
        (Some("tick"), Some(rest)) => {
            let mut numbers = rest.split(' ').filter_map(|n| n.parse::<u32>().ok());
            let (Some(count), Some(period)) = (numbers.next(), numbers.next()) else {
                return false;
            };
            let name = format!("tick-{session}");
            TICKS.with_borrow_mut(|ticks| ticks.push((name.clone(), session, 0, count)));
            let period = Duration::from_millis(period.into());
            timer::periodic(&name, period, period, false);
            true
        }
        (Some("close"), Some(reason)) => {
            session::close(session, reason);
            true
        }
        (Some("big"), Some(size)) => {
            let Ok(size) = size.parse::<usize>() else {
                return false;
            };
            let answer = match session::send(session, &vec![b'x'; size]) {
                Ok(()) => "sent".to_owned(),
                Err(SessionError::TooLarge(limit)) => format!("too-large {limit}"),
                Err(e) => format!("{e:?}"),
            };
            let _ = session::send(session, answer.as_bytes());
            true
        }
        (Some("burst"), Some(count)) => {
            let Ok(count) = count.parse::<u32>() else {
                return false;
            };
            for n in 0..count {
                let _ =
                    grove_guest::host::send_to_session(session, format!("u{n}").as_bytes(), false);
            }
            let _ = session::send(session, format!("burst {count}").as_bytes());
            true
        }
        _ => false,
    }
}

impl grove_guest::Actor for Echo {
    fn on_connect(session: SessionId) {
        SESSIONS.with_borrow_mut(|sessions| sessions.push(session));
        record(format!("connect {session}"));
    }

    fn on_message(session: SessionId, payload: Vec<u8>, reliable: bool) {
        if let Ok(text) = std::str::from_utf8(&payload) {
            if command(session, text) {
                return;
            }
        }
        // A client that went away meanwhile is not an error worth trapping.
        let _ = grove_guest::host::send_to_session(session, &payload, reliable);
    }

    fn on_disconnect(session: SessionId, reason: DisconnectReason) {
        SESSIONS.with_borrow_mut(|sessions| sessions.retain(|s| *s != session));
        record(format!("disconnect {session} {}", reason_text(&reason)));
    }

    fn on_timer(name: String) {
        let due = TICKS.with_borrow_mut(|ticks| {
            let tick = ticks.iter_mut().find(|t| t.0 == name)?;
            tick.2 += 1;
            Some((tick.1, tick.2, tick.3))
        });
        let Some((session, sent, wanted)) = due else {
            return;
        };
        let _ = session::send(session, format!("tick {sent}").as_bytes());
        if sent >= wanted {
            timer::cancel(&name);
            TICKS.with_borrow_mut(|ticks| ticks.retain(|t| t.0 != name));
        }
    }
}

impl Guest for Echo {
    fn login(credentials: Vec<u8>) -> Result<ActorRef, String> {
        let name =
            String::from_utf8(credentials).map_err(|_| "the name is not UTF-8".to_owned())?;
        if name.is_empty() {
            return Err("empty name".into());
        }
        if name.contains('/') {
            return Err(format!("`{name}` contains a slash"));
        }
        if name.starts_with("banned") {
            return Err(format!("{name} is banned"));
        }
        Ok(ActorRef {
            actor_type: "echo".into(),
            key: name,
        })
    }

    fn events() -> Vec<String> {
        EVENTS.with_borrow(|events| events.clone())
    }

    fn sessions() -> Vec<SessionId> {
        SESSIONS.with_borrow(|sessions| sessions.clone())
    }

    fn push(session: SessionId, payload: Vec<u8>, reliable: bool) -> Result<(), SessionError> {
        grove_guest::host::send_to_session(session, &payload, reliable)
    }

    fn broadcast(payload: Vec<u8>, reliable: bool) -> u32 {
        SESSIONS.with_borrow(|sessions| session::multicast(sessions, &payload, reliable))
    }
}

grove_guest::export_actor!(Echo with_types_in bindings);
