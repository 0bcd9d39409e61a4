//! The multiplayer world demo (`examples/world`) end to end: game clients log
//! in over QUIC, move, attack across cell borders, query the world, receive
//! snapshot datagrams from their cell, and log out.

mod common;

use std::time::Duration;

use grove_gateway_quic::client::{Client, ClientConfig, Received, Session};
use grove_gateway_quic::{CloseCode, Gateway, GatewayConfig, Identity};
use grove_host::gateway::{self, Authenticator};
use grove_host::Host;
use world_shared::{CellView, Command, PlayerState, Rect, Reply, Request};

use common::{eventually, ok};

const WAIT: Duration = Duration::from_secs(10);

async fn world() -> (Host, Gateway, Client) {
    let host = common::host_of(&["world_auth", "world_player", "world_cell"]);
    let identity = Identity::self_signed(&["localhost".into()]).unwrap();
    let config = GatewayConfig::new("127.0.0.1:0".parse().unwrap(), identity);
    let auth: Authenticator = "world-auth.login".parse().unwrap();
    let gateway = gateway::start(&host, config, auth).await.unwrap();
    let client = Client::new(ClientConfig::pinned(gateway.fingerprint())).unwrap();
    (host, gateway, client)
}

/// The next reply frame, skipping snapshot datagrams.
async fn reply(session: &Session) -> Reply {
    loop {
        match tokio::time::timeout(WAIT, session.recv()).await {
            Ok(Ok(Received::Frame(bytes))) => return serde_json::from_slice(&bytes).unwrap(),
            Ok(Ok(Received::Datagram(_))) => continue,
            Ok(Err(closed)) => panic!("session closed: {closed}"),
            Err(_) => panic!("no reply within {WAIT:?}"),
        }
    }
}

/// Reads `session`'s snapshot datagrams into `view`, skipping frames, until
/// the view shows the session's player `ayla` as `wanted`; returns the cell.
async fn view_until(
    session: &Session,
    view: &mut CellView,
    wanted: impl Fn(&PlayerState) -> bool,
) -> u32 {
    loop {
        match tokio::time::timeout(WAIT, session.recv()).await {
            Ok(Ok(Received::Datagram(bytes))) => assert!(view.receive(&bytes)),
            Ok(Ok(Received::Frame(_))) => continue,
            other => panic!("no snapshot: {other:?}"),
        }
        if let Some((seen, _, players)) = view.players() {
            if players.iter().any(|p| p.name == "ayla" && wanted(p)) {
                return seen;
            }
        }
    }
}

async fn login(client: &Client, gateway: &Gateway, name: &str) -> (Session, u32) {
    let session = client
        .connect(gateway.local_addr(), name.as_bytes())
        .await
        .unwrap();
    assert_eq!(session.owner(), format!("world-player/{name}"));
    match reply(&session).await {
        Reply::Welcome { name: n, cell, .. } => {
            assert_eq!(n, name);
            (session, cell)
        }
        other => panic!("expected a welcome, got {other:?}"),
    }
}

async fn command(session: &Session, id: u64, command: Command) -> Reply {
    let frame = serde_json::to_vec(&Request { id, command }).unwrap();
    session.send(&frame).await.unwrap();
    reply(session).await
}

/// Puts a character that has no client into a cell, as a neighbour would.
async fn place(host: &Host, name: &str, x: f32, y: f32, vx: f32) {
    let cell = world_shared::cell_of(x, y);
    let character =
        format!("{{name: \"{name}\", session: 0, x: {x}, y: {y}, vx: {vx}, vy: 0, hp: 100}}");
    ok(host, &format!("world-cell/{cell}"), "enter", &[&character]).await;
}

#[tokio::test]
async fn players_log_in_see_each_other_and_log_out() {
    let (host, gateway, client) = world().await;
    let (ayla, cell) = login(&client, &gateway, "ayla").await;
    let (bren, _) = login(&client, &gateway, "bren").await;
    assert_eq!(
        ok(&host, "world-player/ayla", "whereabouts", &[]).await,
        format!("some({cell})")
    );
    let everything = Command::Query {
        area: Rect::world(),
        limit: 10,
    };
    match command(&ayla, 1, everything.clone()).await {
        Reply::Ok {
            id, total, players, ..
        } => {
            assert_eq!((id, total), (1, Some(2)));
            let mut names: Vec<String> = players.into_iter().map(|p| p.name).collect();
            names.sort();
            assert_eq!(names, ["ayla", "bren"]);
        }
        other => panic!("{other:?}"),
    }
    // Rejected names never reach a player.
    let refused = client.connect(gateway.local_addr(), b"9lives").await;
    assert!(refused.is_err());

    assert_eq!(command(&bren, 2, Command::Logout).await, Reply::ok(2));
    let closed = tokio::time::timeout(WAIT, bren.closed()).await.unwrap();
    assert_eq!(closed.code, Some(CloseCode::ClosedByActor));
    assert_eq!(closed.reason, "logged out");
    match command(&ayla, 3, everything).await {
        Reply::Ok { total, .. } => assert_eq!(total, Some(1)),
        other => panic!("{other:?}"),
    }
    // A client that just goes away leaves the world too.
    ayla.close("quit");
    eventually("ayla left the world", WAIT, || async {
        ok(&host, &format!("world-cell/{cell}"), "population", &[]).await == "0"
    })
    .await;
}

#[tokio::test]
async fn area_damage_reaches_players_across_cell_borders() {
    let (host, gateway, client) = world().await;
    let (ayla, _) = login(&client, &gateway, "ayla").await;
    // Two characters on either side of the border between cells 0 and 1.
    place(&host, "west", 98.0, 50.0, 0.0).await;
    place(&host, "east", 102.0, 50.0, 0.0).await;
    let aoe = Command::Aoe {
        x: 100.0,
        y: 50.0,
        radius: 5.0,
        damage: 30,
    };
    match command(&ayla, 1, aoe).await {
        Reply::Ok { hits, .. } => assert_eq!(hits, Some(2)),
        other => panic!("{other:?}"),
    }
    let area = Command::Query {
        area: Rect::around(100.0, 50.0, 10.0),
        limit: 10,
    };
    match command(&ayla, 2, area).await {
        Reply::Ok { total, players, .. } => {
            assert_eq!(total, Some(2));
            assert!(players.iter().all(|p| p.hp == 70), "{players:?}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_world_tick_moves_players_into_the_next_cell() {
    let (host, _gateway, _client) = world().await;
    place(&host, "runner", 99.0, 50.0, 100.0).await;
    assert_eq!(ok(&host, "world-cell/0", "population", &[]).await, "1");
    eventually("runner crossed into cell 1", WAIT, || async {
        ok(&host, "world-cell/1", "population", &[]).await == "1"
    })
    .await;
    assert_eq!(ok(&host, "world-cell/0", "population", &[]).await, "0");
    // The old cell still knows where the runner went.
    assert_eq!(
        ok(
            &host,
            "world-cell/0",
            "set-velocity",
            &["\"runner\"", "0", "0"]
        )
        .await,
        "err(moved(1))"
    );
}

#[tokio::test]
async fn clients_receive_snapshots_of_their_cell_and_bad_commands_get_errors() {
    let (_host, gateway, client) = world().await;
    let (ayla, cell) = login(&client, &gateway, "ayla").await;
    // The client rebuilds its cell from the keyframes and deltas.
    let mut view = CellView::default();
    assert_eq!(view_until(&ayla, &mut view, |_| true).await, cell);
    // A new velocity reaches the client (in a delta within 200 ms, or the
    // next keyframe at worst).
    let started = std::time::Instant::now();
    ayla.send(br#"{"id":1,"cmd":"set-velocity","vx":0.25,"vy":0}"#)
        .await
        .unwrap();
    view_until(&ayla, &mut view, |p| p.vx == 0.25).await;
    assert!(started.elapsed() < Duration::from_secs(3));

    ayla.send(b"{not json").await.unwrap();
    match reply(&ayla).await {
        Reply::Error { id, message } => {
            assert_eq!(id, 0);
            assert!(message.starts_with("not a command"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let too_wide = Command::Aoe {
        x: 1.0,
        y: 1.0,
        radius: 10_000.0,
        damage: 1,
    };
    assert!(matches!(
        command(&ayla, 5, too_wide).await,
        Reply::Error { id: 5, .. }
    ));
}
