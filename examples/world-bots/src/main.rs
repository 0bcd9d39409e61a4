//! Load bots for the multiplayer world demo (`examples/world`).
//!
//! Run with: `cargo run --release -p world-bots -- --cert .grove/gateway/cert.pem --clients 500`
//! against `./scripts/demo` (or any `grove run --gateway ... --gateway-auth world-auth.login`).
//!
//! Each bot is one client, over QUIC or (`--transport ws`) over the
//! gateway's WebSocket door: it logs in with its name, then sends commands
//! at a fixed rate (2 per second by default, the seed's method) for a set
//! time — `set-velocity`, `aoe` and `query` (some of them over the whole
//! world) — and finally, once every bot has its last replies, logs out (so
//! that the logouts, each a cell leave and a deactivation, do not land
//! among the last commands). The report gives, per command type, the
//! count, errors and p50/p95/p99/max latency from sending a command to
//! reading its reply, then messages per second and connection failures,
//! and, on Linux, how busy the machine's CPUs were while the commands ran
//! and how much of them the hypervisor took (steal): the bots usually share
//! the box with the host, and a tail measured on saturated or stolen cores
//! measures the box, not Grove.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use grove_gateway_quic::client::{Client, ClientConfig, Closed, Received, ServerTrust, Session};
use grove_gateway_quic::websocket_client::WsSession;
use grove_gateway_quic::{Fingerprint, Identity};
use tokio::sync::{watch, Semaphore};
use world_shared::{Command, Rect, Reply, Request, MAX_SPEED, WORLD_SIZE};

#[derive(Parser)]
#[command(about = "Load bots for Grove's multiplayer world demo")]
struct Args {
    /// The gateway's address; several, comma-separated, spread the bots
    /// over the gateways of a cluster's hosts (bot `n` logs in at gateway
    /// `n mod count`).
    #[arg(
        long,
        alias = "connect",
        value_delimiter = ',',
        default_value = "127.0.0.1:7071"
    )]
    gateway: Vec<SocketAddr>,
    /// How the bots reach the gateway: `quic`, or `ws` for its WebSocket
    /// door (`--gateway` then names the WebSocket addresses).
    #[arg(long, value_enum, default_value_t = Transport::Quic)]
    transport: Transport,
    /// With `--transport ws`: the door is plain `ws://` (`grove run
    /// --gateway-ws-plain`), so no certificate is checked.
    #[arg(long)]
    plain: bool,
    /// The gateway certificate's SHA-256 fingerprint, as `grove run` prints it.
    #[arg(long, conflicts_with = "cert")]
    pin: Option<Fingerprint>,
    /// The gateway's certificate (PEM) to pin, e.g. `.grove/gateway/cert.pem`.
    #[arg(long)]
    cert: Option<PathBuf>,
    /// Bots to run.
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// Commands per second per bot.
    #[arg(long, default_value_t = 2.0)]
    rate: f64,
    /// How long the bots send commands, in seconds.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Share of commands that are queries.
    #[arg(long, default_value_t = 0.4)]
    query_share: f64,
    /// Share of commands that are area attacks.
    #[arg(long, default_value_t = 0.2)]
    aoe_share: f64,
    /// Share of queries that cover the whole world (the rest cover 200 × 200
    /// units around a random point).
    #[arg(long, default_value_t = 0.1)]
    world_query_share: f64,
    /// Bots per UDP socket.
    #[arg(long, default_value_t = 100)]
    per_socket: usize,
    /// Logins in flight at once while the bots connect.
    #[arg(long, default_value_t = 100)]
    connect_concurrency: usize,
    /// Bot names are `<prefix>-<n>`.
    #[arg(long, default_value = "bot")]
    prefix: String,
}

/// How the bots reach the gateway.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Transport {
    /// Grove's QUIC protocol, with datagrams.
    Quic,
    /// The WebSocket door: one TCP connection per bot.
    Ws,
}

/// A bot's session, through either door.
#[derive(Clone)]
enum Bot {
    Quic(Session),
    Ws(WsSession),
}

impl Bot {
    async fn send(&self, payload: &[u8]) -> Result<(), Closed> {
        match self {
            Bot::Quic(session) => session.send(payload).await,
            Bot::Ws(session) => session.send(payload).await,
        }
    }

    /// The next message. Over WebSocket, snapshots arrive as messages too;
    /// the world's JSON replies start with `{` and its snapshots never do.
    async fn recv(&self) -> Result<Received, Closed> {
        match self {
            Bot::Quic(session) => session.recv().await,
            Bot::Ws(session) => {
                let payload = session.recv().await?;
                Ok(if payload.first() == Some(&b'{') {
                    Received::Frame(payload)
                } else {
                    Received::Datagram(payload)
                })
            }
        }
    }
}

/// How long a bot waits for its last replies after its last command, and
/// then for the other bots' before it logs out anyway.
const DRAIN: Duration = Duration::from_secs(5);

/// Latencies in microseconds and error counts, per command type.
#[derive(Default)]
struct Stats {
    latencies: HashMap<&'static str, Vec<u32>>,
    errors: HashMap<&'static str, u64>,
}

impl Stats {
    fn record(&mut self, kind: &'static str, took: Duration) {
        let micros = u32::try_from(took.as_micros()).unwrap_or(u32::MAX);
        self.latencies.entry(kind).or_default().push(micros);
    }

    fn error(&mut self, kind: &'static str) {
        *self.errors.entry(kind).or_default() += 1;
    }
}

/// Counters shared by all bots.
#[derive(Default)]
struct Totals {
    stats: Mutex<Stats>,
    sent: AtomicU64,
    frames: AtomicU64,
    datagrams: AtomicU64,
    datagram_bytes: AtomicU64,
    connect_failures: AtomicU64,
    dropped_sessions: AtomicU64,
}

/// A small deterministic generator, one per bot.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn coord(&mut self) -> f32 {
        self.unit() as f32 * WORLD_SIZE
    }
}

/// Locks one of the bots' shared tables. A poisoned lock is taken as it is:
/// the tables hold plain counters and timestamps that a panicking holder
/// cannot leave half-updated in a way that matters to the report.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Commands waiting for their reply: id -> (kind, sent at).
type Pending = Arc<Mutex<HashMap<u64, (&'static str, Instant)>>>;

fn pick(args: &Args, rng: &mut Rng) -> (&'static str, Command) {
    let roll = rng.unit();
    if roll < args.query_share {
        if rng.unit() < args.world_query_share {
            let area = Rect::world();
            return ("query-world", Command::Query { area, limit: 50 });
        }
        let area = Rect::around(rng.coord(), rng.coord(), 100.0);
        ("query", Command::Query { area, limit: 50 })
    } else if roll < args.query_share + args.aoe_share {
        let (x, y) = (rng.coord(), rng.coord());
        let command = Command::Aoe {
            x,
            y,
            radius: 20.0,
            damage: 5,
        };
        ("aoe", command)
    } else {
        let angle = rng.unit() * std::f64::consts::TAU;
        let speed = rng.unit() * f64::from(MAX_SPEED);
        let command = Command::SetVelocity {
            vx: (angle.cos() * speed) as f32,
            vy: (angle.sin() * speed) as f32,
        };
        ("set-velocity", command)
    }
}

/// Reads a session's frames and datagrams, matching replies to commands.
async fn read_replies(
    session: Bot,
    pending: Pending,
    totals: Arc<Totals>,
    logout: Arc<Mutex<Option<Instant>>>,
) {
    while let Ok(received) = session.recv().await {
        let bytes = match received {
            Received::Datagram(datagram) => {
                totals.datagrams.fetch_add(1, Ordering::Relaxed);
                totals
                    .datagram_bytes
                    .fetch_add(datagram.len() as u64, Ordering::Relaxed);
                continue;
            }
            Received::Frame(bytes) => bytes,
        };
        totals.frames.fetch_add(1, Ordering::Relaxed);
        let (id, ok) = match serde_json::from_slice::<Reply>(&bytes) {
            Ok(Reply::Ok { id, .. }) => (id, true),
            Ok(Reply::Error { id, .. }) => (id, false),
            _ => continue,
        };
        let Some((kind, sent)) = lock(&pending).remove(&id) else {
            continue;
        };
        let mut stats = lock(&totals.stats);
        if ok {
            stats.record(kind, sent.elapsed());
        } else {
            stats.error(kind);
        }
        if kind == "logout" {
            *lock(&logout) = Some(Instant::now());
        }
    }
}

/// Logs one bot in; returns its session once the player is in the world.
async fn login(door: &Door, args: &Args, n: usize, totals: &Totals) -> Option<Bot> {
    let name = format!("{}-{n}", args.prefix);
    let started = Instant::now();
    let gateway = *args.gateway.get(n % args.gateway.len().max(1))?;
    let connected = match door {
        Door::Quic(client) => client
            .connect(gateway, name.as_bytes())
            .await
            .map(Bot::Quic),
        Door::Ws(None) => WsSession::connect_plain(gateway, name.as_bytes())
            .await
            .map(Bot::Ws),
        Door::Ws(Some(trust)) => {
            WsSession::connect_tls(gateway, trust, "localhost", name.as_bytes())
                .await
                .map(Bot::Ws)
        }
    };
    let session = match connected {
        Ok(session) => session,
        Err(error) => {
            eprintln!("{name}: cannot connect: {error}");
            totals.connect_failures.fetch_add(1, Ordering::Relaxed);
            return None;
        }
    };
    loop {
        match tokio::time::timeout(Duration::from_secs(10), session.recv()).await {
            Ok(Ok(Received::Frame(bytes))) => {
                if let Ok(Reply::Welcome { .. }) = serde_json::from_slice(&bytes) {
                    lock(&totals.stats).record("login", started.elapsed());
                    return Some(session);
                }
            }
            Ok(Ok(Received::Datagram(_))) => {}
            Ok(Err(closed)) => {
                eprintln!("{name}: closed before entering the world: {closed}");
                break;
            }
            Err(_) => {
                eprintln!("{name}: no welcome within 10 s");
                break;
            }
        }
    }
    lock(&totals.stats).error("login");
    totals.connect_failures.fetch_add(1, Ordering::Relaxed);
    None
}

/// Sends commands at the bot's rate until `until`, waits for its last
/// replies, then for every other bot's (`still_waiting` counts the bots
/// not done yet), then logs out.
async fn play(
    session: Bot,
    args: Arc<Args>,
    n: usize,
    (start, until): (Instant, Instant),
    totals: Arc<Totals>,
    still_waiting: Arc<watch::Sender<usize>>,
) {
    let pending: Pending = Arc::default();
    let logged_out = Arc::new(Mutex::new(None));
    let mut reader = tokio::spawn(read_replies(
        session.clone(),
        pending.clone(),
        totals.clone(),
        logged_out.clone(),
    ));
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (n as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D));
    let period = Duration::from_secs_f64(1.0 / args.rate.max(0.001));
    // Spread the bots' sends evenly over one period.
    let mut next = start + period.mul_f64(rng.unit());
    let mut id = 0;
    while next < until {
        tokio::time::sleep_until(next.into()).await;
        next += period;
        let (kind, command) = pick(&args, &mut rng);
        id += 1;
        let frame = serde_json::to_vec(&Request { id, command }).unwrap_or_default();
        lock(&pending).insert(id, (kind, Instant::now()));
        if session.send(&frame).await.is_err() {
            totals.dropped_sessions.fetch_add(1, Ordering::Relaxed);
            break;
        }
        totals.sent.fetch_add(1, Ordering::Relaxed);
    }
    // Give the last replies a moment, then log out.
    let drain = Instant::now() + DRAIN;
    while !lock(&pending).is_empty() && Instant::now() < drain {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let unanswered: Vec<&'static str> = lock(&pending).drain().map(|(_, (k, _))| k).collect();
    {
        let mut stats = lock(&totals.stats);
        for kind in unanswered {
            stats.error(kind);
        }
    }
    // A burst of logouts while other bots still wait for replies would
    // measure a crowd leaving, not the game being played.
    still_waiting.send_modify(|n| *n = n.saturating_sub(1));
    let mut others = still_waiting.subscribe();
    let _ = tokio::time::timeout(DRAIN, others.wait_for(|n| *n == 0)).await;
    id += 1;
    let frame = serde_json::to_vec(&Request {
        id,
        command: Command::Logout,
    })
    .unwrap_or_default();
    lock(&pending).insert(id, ("logout", Instant::now()));
    if session.send(&frame).await.is_ok() {
        // The reader ends when the gateway closes the session.
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut reader).await;
    }
    if lock(&logged_out).is_none() {
        lock(&totals.stats).error("logout");
    }
    reader.abort();
}

/// Where the bots log in.
#[derive(Clone)]
enum Door {
    Quic(Client),
    /// WebSocket, with TLS checked this way unless plain.
    Ws(Option<ServerTrust>),
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    let Some(last) = sorted.len().checked_sub(1) else {
        return 0.0;
    };
    let rank = ((p / 100.0) * last as f64).round() as usize;
    sorted
        .get(rank.min(last))
        .map_or(0.0, |&micros| f64::from(micros) / 1000.0)
}

/// The machine's CPU time from `/proc/stat`, in clock ticks summed over
/// every CPU.
#[derive(Clone, Copy, Debug, PartialEq)]
struct CpuTimes {
    cores: usize,
    /// Running anything: user, nice, system, irq and softirq.
    busy: u64,
    /// Taken by the hypervisor for other guests while this one had work.
    steal: u64,
    /// Every column, idle included.
    total: u64,
}

impl CpuTimes {
    fn read() -> Option<CpuTimes> {
        CpuTimes::parse(&std::fs::read_to_string("/proc/stat").ok()?)
    }

    /// Parses `/proc/stat`: the `cpu` line sums the columns `user nice
    /// system idle iowait irq softirq steal ...` over the CPUs, each of which
    /// has a `cpuN` line of its own.
    fn parse(stat: &str) -> Option<CpuTimes> {
        let mut lines = stat.lines();
        let mut fields = lines.next()?.split_whitespace();
        if fields.next()? != "cpu" {
            return None;
        }
        let columns: Vec<u64> = fields.map_while(|f| f.parse().ok()).collect();
        let column = |i: usize| columns.get(i).copied().unwrap_or(0);
        let cores = lines
            .filter(|line| {
                line.strip_prefix("cpu")
                    .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
            })
            .count();
        // Guest time (columns 8 and 9) is already counted in user and nice.
        Some(CpuTimes {
            cores,
            busy: column(0) + column(1) + column(2) + column(5) + column(6),
            steal: column(7),
            total: (0..8).map(column).sum(),
        })
    }

    /// Cores busy and cores stolen on average from `self` to `later`.
    fn cores_used(&self, later: &CpuTimes) -> (f64, f64) {
        let total = later.total.saturating_sub(self.total).max(1) as f64;
        let share = |from: u64, to: u64| to.saturating_sub(from) as f64 / total;
        let cores = later.cores as f64;
        (
            share(self.busy, later.busy) * cores,
            share(self.steal, later.steal) * cores,
        )
    }
}

fn report(
    args: &Args,
    totals: &Totals,
    connected: usize,
    run: Duration,
    cpu: Option<(CpuTimes, CpuTimes)>,
) {
    let stats = lock(&totals.stats);
    println!(
        "world-bots: {} clients ({connected} in the world, {} connection failures), {} commands/s each for {} s",
        args.clients,
        totals.connect_failures.load(Ordering::Relaxed),
        args.rate,
        run.as_secs()
    );
    println!(
        "{:<14}{:>9}{:>8}{:>10}{:>10}{:>10}{:>10}",
        "command", "count", "errors", "p50 ms", "p95 ms", "p99 ms", "max ms"
    );
    for kind in [
        "login",
        "set-velocity",
        "aoe",
        "query",
        "query-world",
        "logout",
    ] {
        let mut latencies = stats.latencies.get(kind).cloned().unwrap_or_default();
        latencies.sort_unstable();
        println!(
            "{kind:<14}{:>9}{:>8}{:>10.2}{:>10.2}{:>10.2}{:>10.2}",
            latencies.len(),
            stats.errors.get(kind).copied().unwrap_or(0),
            percentile(&latencies, 50.0),
            percentile(&latencies, 95.0),
            percentile(&latencies, 99.0),
            latencies.last().map_or(0.0, |m| f64::from(*m) / 1000.0),
        );
    }
    let secs = run.as_secs_f64().max(0.001);
    let sent = totals.sent.load(Ordering::Relaxed) as f64 / secs;
    let frames = totals.frames.load(Ordering::Relaxed) as f64 / secs;
    let datagrams = totals.datagrams.load(Ordering::Relaxed) as f64 / secs;
    println!(
        "messages/s: {:.0} commands sent, {:.0} frames and {:.0} snapshot datagrams received ({:.0} in all)",
        sent,
        frames,
        datagrams,
        sent + frames + datagrams
    );
    let per_client = connected.max(1) as f64;
    println!(
        "snapshots per client: {:.1} datagrams/s, {:.0} bytes/s",
        datagrams / per_client,
        totals.datagram_bytes.load(Ordering::Relaxed) as f64 / secs / per_client,
    );
    println!(
        "sessions dropped during the run: {}",
        totals.dropped_sessions.load(Ordering::Relaxed)
    );
    if let Some((before, after)) = cpu {
        let (busy, stolen) = before.cores_used(&after);
        println!(
            "machine CPU while commands ran: {busy:.2} of {} cores busy (host, bots and the rest), {stolen:.2} stolen by the hypervisor",
            after.cores
        );
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    let pin = match (&args.pin, &args.cert) {
        (Some(pin), _) => Some(*pin),
        (None, Some(cert)) => {
            let pem =
                std::fs::read(cert).with_context(|| format!("cannot read {}", cert.display()))?;
            Some(
                Identity::certificate_fingerprint(&pem)
                    .with_context(|| format!("{} holds no certificate", cert.display()))?,
            )
        }
        (None, None) => None,
    };
    anyhow::ensure!(!args.gateway.is_empty(), "give at least one --gateway");
    let doors = match (args.transport, pin) {
        (Transport::Ws, _) if args.plain => vec![Door::Ws(None)],
        (Transport::Ws, Some(pin)) => vec![Door::Ws(Some(ServerTrust::Pinned(pin)))],
        (Transport::Quic, Some(pin)) => {
            let sockets = args.clients.div_ceil(args.per_socket.max(1)).max(1);
            (0..sockets)
                .map(|_| Client::new(ClientConfig::pinned(pin)).map(Door::Quic))
                .collect::<Result<Vec<_>, _>>()?
        }
        (_, None) => {
            anyhow::bail!("give the gateway's --pin or --cert (or --plain with --transport ws)")
        }
    };
    let totals = Arc::new(Totals::default());

    // Log everybody in first, a bounded number at a time.
    let gate = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let logins: Vec<_> = (0..args.clients)
        .zip(doors.iter().cycle())
        .map(|(n, door)| {
            let (door, args, totals, gate) =
                (door.clone(), args.clone(), totals.clone(), gate.clone());
            tokio::spawn(async move {
                let _permit = gate.acquire().await.ok()?;
                login(&door, &args, n, &totals).await.map(|s| (n, s))
            })
        })
        .collect();
    let mut sessions = Vec::new();
    for login in logins {
        if let Ok(Some(session)) = login.await {
            sessions.push(session);
        }
    }
    let connected = sessions.len();
    eprintln!(
        "{connected} bots in the world; sending commands for {} s",
        args.seconds
    );

    let start = Instant::now();
    let until = start + Duration::from_secs(args.seconds);
    let cpu = tokio::spawn(async move {
        let before = CpuTimes::read()?;
        tokio::time::sleep_until(until.into()).await;
        Some((before, CpuTimes::read()?))
    });
    let still_waiting = Arc::new(watch::Sender::new(connected));
    let players: Vec<_> = sessions
        .into_iter()
        .map(|(n, session)| {
            tokio::spawn(play(
                session,
                args.clone(),
                n,
                (start, until),
                totals.clone(),
                still_waiting.clone(),
            ))
        })
        .collect();
    for player in players {
        let _ = player.await;
    }
    let cpu = cpu.await.ok().flatten();
    report(&args, &totals, connected, until - start, cpu);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "cpu  1000 10 500 8000 40 0 50 100 7 0\n\
                          cpu0 500 5 250 4000 20 0 25 50 0 0\n\
                          cpu1 500 5 250 4000 20 0 25 50 0 0\n\
                          intr 12345 0 0\n\
                          ctxt 999\n";

    #[test]
    fn proc_stat_gives_the_busy_and_stolen_ticks_and_the_core_count() {
        let times = CpuTimes::parse(BEFORE).unwrap();
        assert_eq!(
            times,
            CpuTimes {
                cores: 2,
                busy: 1000 + 10 + 500 + 50,
                steal: 100,
                total: 1000 + 10 + 500 + 8000 + 40 + 50 + 100,
            }
        );
        assert_eq!(CpuTimes::parse("intr 1 2 3\n"), None);
    }

    #[test]
    fn cores_used_are_the_shares_of_the_ticks_between_two_readings() {
        let before = CpuTimes::parse(BEFORE).unwrap();
        // 200 ticks later on two cores: 150 busy, 30 stolen, 20 idle.
        let after = CpuTimes {
            busy: before.busy + 150,
            steal: before.steal + 30,
            total: before.total + 200,
            ..before
        };
        let (busy, stolen) = before.cores_used(&after);
        assert!((busy - 1.5).abs() < 1e-9, "{busy}");
        assert!((stolen - 0.3).abs() < 1e-9, "{stolen}");
    }
}
