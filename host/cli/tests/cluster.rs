//! Three real `grove run` processes on loopback, clustered through a real
//! `redis-server`: one activation per actor whichever host is called, calls
//! and their chains and deadlines across hosts, and failover after `kill -9`.

#[path = "../../runtime/tests/common/mod.rs"]
mod common;
mod running;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::redis::RedisServer;
use running::RunningHost;
use serde_json::Value;

/// Lease TTL of the test clusters: a dead host's actors move within it.
const LEASE_TTL_MS: u64 = 1500;

struct Cluster {
    hosts: Vec<Option<RunningHost>>,
    redis: RedisServer,
    plugins: tempfile::TempDir,
    data: tempfile::TempDir,
    flags: Vec<String>,
    /// Where hosts started from now on reach Redis, if not directly.
    redis_via: Option<String>,
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Cluster {
    /// Redis and `n` hosts serving `plugins`, each started with `flags`.
    fn start(n: usize, plugins: &[&str], flags: &[&str]) -> Cluster {
        let mut cluster = Cluster {
            hosts: Vec::new(),
            redis: RedisServer::start(),
            plugins: common::plugin_dir(plugins),
            data: tempfile::tempdir().unwrap(),
            flags: flags.iter().map(|f| (*f).to_owned()).collect(),
            redis_via: None,
        };
        // The first host fills the shared compile cache for the others.
        cluster.add_host();
        let started: Vec<RunningHost> = std::thread::scope(|s| {
            let starting: Vec<_> = (1..n)
                .map(|i| {
                    let cluster = &cluster;
                    s.spawn(move || cluster.spawn_host(i))
                })
                .collect();
            starting.into_iter().map(|h| h.join().unwrap()).collect()
        });
        cluster.hosts.extend(started.into_iter().map(Some));
        cluster
    }

    fn spawn_host(&self, index: usize) -> RunningHost {
        let listen = format!("127.0.0.1:{}", free_udp_port());
        let ttl = LEASE_TTL_MS.to_string();
        let url = self.redis_via.clone().unwrap_or_else(|| self.redis.url());
        let mut flags = vec![
            "--redis",
            &url,
            "--cluster",
            "test",
            "--listen",
            &listen,
            "--lease-ttl-ms",
            &ttl,
            "--call-timeout-ms",
            "10000",
        ];
        flags.extend(self.flags.iter().map(String::as_str));
        let log = self.data.path().join(format!("host-{index}.log"));
        RunningHost::spawn(self.plugins.path(), self.data.path(), &flags, Some(&log))
    }

    /// Starts one more host.
    fn add_host(&mut self) -> usize {
        let host = self.spawn_host(self.hosts.len());
        self.hosts.push(Some(host));
        self.hosts.len() - 1
    }

    fn host(&self, i: usize) -> &RunningHost {
        self.hosts[i].as_ref().expect("the host was killed")
    }

    /// The log of host `i` so far.
    fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.data.path().join(format!("host-{i}.log"))).unwrap_or_default()
    }

    /// Host `i`'s gateway address and certificate fingerprint, as it
    /// printed them.
    fn gateway(&self, i: usize) -> (std::net::SocketAddr, grove_gateway_quic::Fingerprint) {
        let log = self.log(i);
        let after = |prefix: &str| {
            let start = log
                .find(prefix)
                .unwrap_or_else(|| panic!("no `{prefix}` in {log}"))
                + prefix.len();
            log[start..].split_whitespace().next().unwrap().to_owned()
        };
        (
            after("gateway: quic://").parse().unwrap(),
            after("gateway certificate sha256: ").parse().unwrap(),
        )
    }

    /// The id of the host that owns `actor` in the placement directory.
    fn owner(&self, actor: &str) -> String {
        self.redis
            .cli(&[
                "HGET",
                &format!("grove-cluster:{{{actor}}}:owner@test"),
                "host",
            ])
            .trim()
            .to_owned()
    }

    /// The cluster id of host `i`, from its `GET /v1/cluster`.
    fn id(&self, i: usize) -> String {
        let status =
            running::reqwest::blocking_get(&format!("{}/v1/cluster", self.host(i).url)).unwrap();
        let status: Value = serde_json::from_str(&status).unwrap();
        status["host"].as_str().unwrap().to_owned()
    }

    /// Which host has cluster id `id`, by its `GET /v1/cluster`.
    fn index_of(&self, id: &str) -> usize {
        (0..self.hosts.len())
            .find(|&i| {
                self.hosts[i].as_ref().is_some_and(|h| {
                    let status =
                        running::reqwest::blocking_get(&format!("{}/v1/cluster", h.url)).unwrap();
                    serde_json::from_str::<Value>(&status).unwrap()["host"] == id
                })
            })
            .unwrap_or_else(|| panic!("no host has id {id}"))
    }
}

/// POSTs a call to `host`'s HTTP API; the status and the JSON body.
async fn post(
    client: &reqwest::Client,
    host: &str,
    actor: &str,
    function: &str,
    args: &str,
) -> (u16, Value) {
    let (actor_type, key) = actor.split_once('/').unwrap();
    let url = format!("{host}/v1/actors/{actor_type}/{key}/{function}");
    match client
        .post(url)
        .body(args.to_owned())
        .header("content-type", "application/json")
        .send()
        .await
    {
        Ok(response) => {
            let status = response.status().as_u16();
            let body = response.json().await.unwrap_or(Value::Null);
            (status, body)
        }
        Err(error) => (0, Value::String(error.to_string())),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn every_host_reaches_the_one_activation_of_an_actor() {
    let cluster = Cluster::start(3, &["counter", "probe"], &[]);
    // The same counter through each host in turn: one activation, one value.
    for (i, expected) in ["5", "10", "15"].iter().enumerate() {
        assert_eq!(
            cluster.host(i).call_ok(&["counter/7", "add", "5"]),
            *expected
        );
    }
    // A storm of first calls: 1,000 probes, each called by all three hosts
    // at once, are each activated exactly once in the cluster.
    let urls: Vec<String> = (0..3).map(|i| cluster.host(i).url.clone()).collect();
    let client = reqwest::Client::new();
    let failures = runtime().block_on(async {
        let semaphore = Arc::new(tokio::sync::Semaphore::new(96));
        let mut calls = tokio::task::JoinSet::new();
        for key in 0..1000 {
            for url in &urls {
                let (client, url, semaphore) = (client.clone(), url.clone(), semaphore.clone());
                calls.spawn(async move {
                    let _permit = semaphore.acquire().await.unwrap();
                    post(
                        &client,
                        &url,
                        &format!("probe/storm-{key}"),
                        "lifecycle-counts",
                        "[]",
                    )
                    .await
                });
            }
        }
        let mut failures = Vec::new();
        while let Some(done) = calls.join_next().await {
            let (status, body) = done.unwrap();
            if status != 200 {
                failures.push((status, body));
            }
        }
        failures
    });
    assert!(
        failures.is_empty(),
        "{} calls failed, e.g. {:?}",
        failures.len(),
        &failures[..1]
    );
    let mut owners: HashMap<String, usize> = HashMap::new();
    for key in 0..1000 {
        let actor = format!("probe/storm-{key}");
        // Asked again through any host: activated once, never deactivated.
        let counts = cluster.host(key % 3).call_ok(&[&actor, "lifecycle-counts"]);
        assert_eq!(counts, "(1, 0)", "{actor} was activated more than once");
        *owners.entry(cluster.owner(&actor)).or_default() += 1;
    }
    // Placement spreads the actors over the hosts.
    assert_eq!(owners.len(), 3, "{owners:?}");
    assert!(owners.values().all(|&n| n > 150), "{owners:?}");
}

#[test]
fn chains_deadlines_and_errors_hold_across_hosts() {
    // Two choices by default, prefer-local for probes: a probe lives where
    // it was first called.
    let cluster = Cluster::start(
        3,
        &["probe"],
        &[
            "--placement",
            "two-choices",
            "--placement",
            "probe=prefer-local",
        ],
    );
    for (i, key) in ["a", "b", "c"].iter().enumerate() {
        assert_eq!(
            cluster
                .host(i)
                .call_ok(&[&format!("probe/{key}"), "recall"]),
            "none"
        );
    }
    let owners: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|k| cluster.owner(&format!("probe/{k}")))
        .collect();
    assert!(
        owners[0] != owners[1] && owners[1] != owners[2] && owners[0] != owners[2],
        "{owners:?}"
    );

    // a (host 0) -> b (host 1) -> c (host 2), called through host 2.
    assert_eq!(
        cluster
            .host(2)
            .call_ok(&["probe/a", "relay", r#"["b", "c"]"#]),
        r#"ok(["a", "b", "c"])"#
    );
    // a -> b -> a: the chain crosses hosts, and the cycle is still caught.
    let cycle = cluster
        .host(1)
        .call_ok(&["probe/a", "relay", r#"["b", "a"]"#]);
    assert!(cycle.starts_with("err(reentrancy("), "{cycle}");
    assert!(cycle.contains("probe/a -> probe/b -> probe/a"), "{cycle}");

    // A caller's deadline holds on the other host: c spins, a gave it 300 ms.
    let start = Instant::now();
    let late = cluster
        .host(0)
        .call_ok(&["probe/a", "provoke", "\"c\"", "spin", "some(300)"]);
    assert!(late.starts_with("err(timeout("), "{late}");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );

    // A trap on another host comes back typed.
    let trapped = cluster
        .host(0)
        .call_ok(&["probe/a", "provoke", "\"b\"", "trap", "none"]);
    assert!(trapped.starts_with("err(trapped("), "{trapped}");
    assert!(trapped.contains("provoked"), "{trapped}");

    // One-way sends from a (host 0) to c (host 2) run in the order sent,
    // across deactivations of c every 7 notes.
    cluster
        .host(0)
        .call_ok(&["probe/a", "post-notes", "\"c\"", "0", "150", "7"]);
    let expected: Vec<String> = (0..150).map(|n| n.to_string()).collect();
    let expected = format!("[{}]", expected.join(", "));
    let start = Instant::now();
    loop {
        let notes = cluster.host(1).call_ok(&["probe/c", "notes"]);
        if notes == expected {
            break;
        }
        assert!(
            notes.len() <= expected.len() && expected.starts_with(notes.trim_end_matches(']')),
            "out of order: {notes}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "notes never all arrived: {notes}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Bad arguments are refused before anything crosses.
    let (status, body) = cluster.host(1).post("/v1/actors/probe/a/relay", r#"[7]"#);
    assert_eq!(status, 400, "{body}");
}

#[test]
fn a_killed_host_s_actors_answer_again_on_the_survivors_with_nothing_acknowledged_lost() {
    let mut cluster = Cluster::start(3, &["counter"], &[]);
    let urls: Vec<String> = (0..3).map(|i| cluster.host(i).url.clone()).collect();
    let counters: Vec<String> = (0..30).map(|k| format!("counter/fail-{k}")).collect();
    // Every counter placed before the kill.
    for (k, counter) in counters.iter().enumerate() {
        assert_eq!(cluster.host(k % 3).call_ok(&[counter, "add", "0"]), "0");
    }
    let victim = cluster.index_of(&cluster.owner(&counters[0]));
    let on_victim: Vec<&String> = counters
        .iter()
        .filter(|c| cluster.owner(c) == cluster.owner(&counters[0]))
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let rt = runtime();
    // Three writers, each adding 1 to every counter in turn through every
    // host but the victim; each counts its acknowledged and its unknown adds.
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let survivors: Vec<String> = urls
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != victim)
                .map(|(_, u)| u.clone())
                .collect();
            let counters = counters.clone();
            let stop = stop.clone();
            rt.spawn(async move {
                let client = reqwest::Client::new();
                let mut acked: HashMap<String, u64> = HashMap::new();
                let mut unknown: HashMap<String, u64> = HashMap::new();
                let mut round = 0;
                while !stop.load(Ordering::Relaxed) {
                    for (k, counter) in counters.iter().enumerate() {
                        let url = &survivors[(k + w + round) % survivors.len()];
                        let (status, _) = post(&client, url, counter, "add", "[1]").await;
                        let tally = if status == 200 {
                            &mut acked
                        } else {
                            &mut unknown
                        };
                        *tally.entry(counter.clone()).or_default() += 1;
                    }
                    round += 1;
                }
                (acked, unknown)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1000));
    let killed_at = Instant::now();
    cluster.hosts[victim].take().unwrap().kill();
    // Every actor of the dead host answers again within the lease's bound.
    let survivor = (victim + 1) % 3;
    for counter in &on_victim {
        loop {
            if cluster
                .host(survivor)
                .call(&[counter, "get"])
                .status
                .success()
            {
                break;
            }
            assert!(
                killed_at.elapsed() < Duration::from_millis(LEASE_TTL_MS * 4),
                "{counter} did not come back"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let back = killed_at.elapsed();
    assert!(
        back < Duration::from_millis(LEASE_TTL_MS * 3),
        "back after {back:?}"
    );
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, Ordering::Relaxed);
    let mut acked: HashMap<String, u64> = HashMap::new();
    let mut unknown: HashMap<String, u64> = HashMap::new();
    for writer in writers {
        let (a, u) = rt.block_on(writer).unwrap();
        for (k, n) in a {
            *acked.entry(k).or_default() += n;
        }
        for (k, n) in u {
            *unknown.entry(k).or_default() += n;
        }
    }
    for counter in &counters {
        let value: u64 = cluster
            .host(survivor)
            .call_ok(&[counter, "get"])
            .parse()
            .unwrap();
        let acked = acked.get(counter).copied().unwrap_or(0);
        let unknown = unknown.get(counter).copied().unwrap_or(0);
        // Nothing acknowledged is lost; only a call that failed with its
        // fate unknown (in flight on the victim) may have counted.
        assert!(
            value >= acked && value <= acked + unknown,
            "{counter}: value {value}, {acked} acknowledged, {unknown} failed"
        );
        assert!(acked > 0, "{counter} was never written");
    }
    // The survivors saw the host leave.
    let log = cluster.log(survivor);
    assert!(log.contains("host left the cluster"), "{log}");
    let status = std::process::Command::new(running::GROVE)
        .args(["cluster", "status", "--host", &cluster.host(survivor).url])
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(status.contains("2 hosts"), "{status}");
}

#[test]
fn a_joining_host_takes_new_actors_and_a_draining_host_leaves_without_a_failed_call() {
    let mut cluster = Cluster::start(2, &["counter"], &[]);
    let joined = cluster.add_host();
    let joined_id = cluster.id(joined);
    // The others see the new lease at their next look (a sixth of the TTL).
    std::thread::sleep(Duration::from_millis(LEASE_TTL_MS / 2));
    let counters: Vec<String> = (0..60).map(|k| format!("counter/join-{k}")).collect();
    for (k, counter) in counters.iter().enumerate() {
        assert_eq!(cluster.host(k % 2).call_ok(&[counter, "add", "0"]), "0");
    }
    let on_joined = counters
        .iter()
        .filter(|c| cluster.owner(c) == joined_id)
        .count();
    assert!(
        on_joined >= 8,
        "only {on_joined} of 60 new actors went to the new host"
    );

    // Host 1 drains while writers keep adding through hosts 0 and 2.
    let leaving = 1;
    let leaving_id = cluster.id(leaving);
    let on_leaving: Vec<String> = counters
        .iter()
        .filter(|c| cluster.owner(c) == leaving_id)
        .cloned()
        .collect();
    assert!(!on_leaving.is_empty());
    let stop = Arc::new(AtomicBool::new(false));
    let rt = runtime();
    let writers: Vec<_> = [0, joined]
        .iter()
        .map(|&i| {
            let url = cluster.host(i).url.clone();
            let counters = counters.clone();
            let stop = stop.clone();
            rt.spawn(async move {
                let client = reqwest::Client::new();
                let mut acked: HashMap<String, u64> = HashMap::new();
                let mut failed = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    for counter in &counters {
                        let (status, body) = post(&client, &url, counter, "add", "[1]").await;
                        if status == 200 {
                            *acked.entry(counter.clone()).or_default() += 1;
                        } else {
                            failed.push((counter.clone(), status, body));
                        }
                    }
                }
                (acked, failed)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let leaving_log = cluster.hosts[leaving].take().unwrap().interrupt();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let mut acked: HashMap<String, u64> = HashMap::new();
    for writer in writers {
        let (a, failed) = rt.block_on(writer).unwrap();
        assert!(
            failed.is_empty(),
            "{} calls failed during the drain, e.g. {:?}; the leaving host's log:\n{leaving_log}",
            failed.len(),
            failed[0]
        );
        for (k, n) in a {
            *acked.entry(k).or_default() += n;
        }
    }
    for counter in &counters {
        let value = cluster.host(0).call_ok(&[counter, "get"]);
        assert_eq!(value, acked[counter].to_string(), "{counter}");
    }
}

/// A TCP proxy to Redis that can cut every connection through it, as a
/// network partition between one host and Redis would.
struct Proxy {
    port: u16,
    cut: Arc<AtomicBool>,
    open: Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Proxy {
    fn start(to: u16) -> Proxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let open: Arc<std::sync::Mutex<Vec<std::net::TcpStream>>> = Arc::default();
        let (cut2, open2) = (cut.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if cut2.load(Ordering::SeqCst) {
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", to)) else {
                    continue;
                };
                let mut open = open2.lock().unwrap();
                open.push(client.try_clone().unwrap());
                open.push(server.try_clone().unwrap());
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Proxy { port, cut, open }
    }

    /// Drops every connection and refuses new ones.
    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

#[test]
fn a_host_cut_off_from_redis_stops_serving_before_its_actors_move() {
    let mut cluster = Cluster::start(2, &["counter"], &["--placement", "prefer-local"]);
    // A third host reaches Redis through a proxy.
    let proxy = Proxy::start(cluster.redis.port);
    let url = format!("redis://127.0.0.1:{}", proxy.port);
    cluster.redis_via = Some(url);
    let isolated = cluster.add_host();
    let counters: Vec<String> = (0..10).map(|k| format!("counter/cut-{k}")).collect();
    for counter in &counters {
        assert_eq!(cluster.host(isolated).call_ok(&[counter, "add", "7"]), "7");
    }
    let isolated_id = cluster.id(isolated);
    assert!(counters.iter().all(|c| cluster.owner(c) == isolated_id));

    let cut_at = Instant::now();
    proxy.cut();
    // It fences itself: the process exits with an error, within the TTL.
    let mut host = cluster.hosts[isolated].take().unwrap();
    let exited = loop {
        if let Some(status) = host.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            cut_at.elapsed() < Duration::from_millis(LEASE_TTL_MS * 3),
            "the cut-off host kept running"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let fenced_after = cut_at.elapsed();
    assert!(!exited.success());
    assert!(
        fenced_after < Duration::from_millis(LEASE_TTL_MS),
        "fenced only after {fenced_after:?}"
    );
    assert!(
        cluster.log(isolated).contains("fenced"),
        "{}",
        cluster.log(isolated)
    );
    // Its actors come back on the others with their state.
    for counter in &counters {
        assert_eq!(cluster.host(0).call_ok(&[counter, "add", "1"]), "8");
    }
}

/// The firing times a probe recorded for reminder `name`.
fn fired(host: &RunningHost, actor: &str, name: &str) -> Vec<u64> {
    let list = host.call_ok(&[actor, "reminders", &format!("\"{name}\"")]);
    list.trim_matches(['[', ']'])
        .split(", ")
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect()
}

#[test]
fn reminders_fire_once_in_the_cluster_and_survive_their_host() {
    let mut cluster = Cluster::start(3, &["probe"], &["--placement", "prefer-local"]);
    let victim = 2;
    // Set on the victim (where prefer-local placed the actors): a periodic
    // reminder every 300 ms, and a one-shot due after the victim is killed.
    let tick = cluster.host(victim).call_ok(&[
        "probe/tick",
        "start-reminder",
        "\"tick\"",
        "300",
        "some(300)",
    ]);
    assert_eq!(tick, "ok");
    let ring =
        cluster
            .host(victim)
            .call_ok(&["probe/ring", "start-reminder", "\"ring\"", "2500", "none"]);
    assert_eq!(ring, "ok");
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        !fired(cluster.host(0), "probe/tick", "tick").is_empty(),
        "the periodic reminder never fired"
    );
    cluster.hosts[victim].take().unwrap().kill();
    let killed_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;

    // The survivors take the reminders over; each firing runs on one of
    // them only.
    std::thread::sleep(Duration::from_millis(LEASE_TTL_MS * 2 + 2500));
    let ticks = fired(cluster.host(0), "probe/tick", "tick");
    let after: Vec<u64> = ticks
        .iter()
        .copied()
        .filter(|&t| t > killed_ms + LEASE_TTL_MS)
        .collect();
    assert!(
        after.len() >= 4,
        "the periodic reminder stopped with its host: {ticks:?}"
    );
    // The slots missed while the victim's lease ran out fire late, merged
    // into one, just before the next slot. Once both survivors schedule the
    // reminder, each slot fires on one of them only: two hosts firing one
    // slot would do so within milliseconds of each other.
    let steady: Vec<u64> = ticks
        .iter()
        .copied()
        .filter(|&t| t > killed_ms + LEASE_TTL_MS * 2 + 600)
        .collect();
    assert!(steady.len() >= 2, "{ticks:?}");
    for pair in steady.windows(2) {
        assert!(pair[1] - pair[0] >= 150, "one slot fired twice: {ticks:?}");
    }
    let slots = (ticks[ticks.len() - 1] - ticks[0]) / 300 + 1;
    assert!(
        ticks.len() as u64 <= slots,
        "{} firings in {slots} slots: {ticks:?}",
        ticks.len()
    );
    let rings = fired(cluster.host(1), "probe/ring", "ring");
    assert_eq!(
        rings.len(),
        1,
        "the one-shot reminder fired {} times: {rings:?}",
        rings.len()
    );
}

#[test]
fn a_client_on_one_host_drives_an_actor_on_another_and_a_third_pushes_to_it() {
    let cluster = Cluster::start(
        3,
        &["echo"],
        &[
            "--placement",
            "prefer-local",
            "--gateway",
            "127.0.0.1:0",
            "--gateway-auth",
            "echo.login",
        ],
    );
    // ayla lives on host 1, bren on host 2; the client comes in at host 0.
    assert_eq!(cluster.host(1).call_ok(&["echo/ayla", "events"]), "[]");
    assert_eq!(cluster.host(2).call_ok(&["echo/bren", "events"]), "[]");
    let (gateway, fingerprint) = cluster.gateway(0);
    let ids: Vec<String> = (0..3).map(|i| cluster.id(i)).collect();
    runtime().block_on(async {
        use grove_gateway_quic::client::{Client, ClientConfig, Received};
        let recv = |session: &grove_gateway_quic::client::Session| {
            let session = session.clone();
            async move {
                loop {
                    match tokio::time::timeout(Duration::from_secs(10), session.recv()).await {
                        Ok(Ok(Received::Frame(bytes))) => {
                            return String::from_utf8_lossy(&bytes).into_owned()
                        }
                        Ok(Ok(Received::Datagram(_))) => continue,
                        other => panic!("no frame: {other:?}"),
                    }
                }
            }
        };
        let client = Client::new(ClientConfig::pinned(fingerprint)).unwrap();
        let session = client.connect(gateway, b"ayla").await.unwrap();
        assert_eq!(session.owner(), "echo/ayla");
        // Its owner on host 1 heard of it, under an id naming host 0. (The
        // login may be answered while the connect event is on its way, and
        // this call, from another sender, may overtake it.)
        let expected = format!("[\"connect {}\"]", session.id());
        let start = Instant::now();
        let mut events = cluster.host(1).call_ok(&["echo/ayla", "events"]);
        while events != expected && start.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(50)).await;
            events = cluster.host(1).call_ok(&["echo/ayla", "events"]);
        }
        assert_eq!(
            events,
            format!("[\"connect {}\"]", session.id()),
            "owner {}; hosts {ids:?}; via 0: {} via 2: {}\n{}\n----\n{}\n----\n{}",
            cluster.owner("echo/ayla"),
            cluster.host(0).call_ok(&["echo/ayla", "events"]),
            cluster.host(2).call_ok(&["echo/ayla", "events"]),
            cluster.log(0),
            cluster.log(1),
            cluster.log(2),
        );
        // Frames go to ayla on host 1, which echoes them back through host 0.
        for text in ["one", "two", "three"] {
            session.send(text.as_bytes()).await.unwrap();
        }
        for text in ["one", "two", "three"] {
            assert_eq!(recv(&session).await, text);
        }
        // bren, on host 2, pushes to the session held by host 0.
        let pushed = cluster.host(2).call_ok(&[
            "echo/bren",
            "push",
            &session.id().to_string(),
            "[104, 105]",
            "true",
        ]);
        assert_eq!(pushed, "ok");
        assert_eq!(recv(&session).await, "hi");
        // A session that does not exist is refused as it is on one host.
        let unknown = session.id() + 1000;
        let refused =
            cluster
                .host(2)
                .call_ok(&["echo/bren", "push", &unknown.to_string(), "[1]", "true"]);
        assert_eq!(refused, "err(unknown-session)");
        // The client leaves; its owner on host 1 hears why.
        session.close("bye");
        let start = Instant::now();
        loop {
            let events = cluster.host(1).call_ok(&["echo/ayla", "events"]);
            if events.contains("disconnect") {
                assert!(events.contains("client-closed: bye"), "{events}");
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "{events}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

#[test]
fn a_superseded_activation_cannot_overwrite_its_successor_s_state() {
    let cluster = Cluster::start(2, &["counter"], &["--placement", "prefer-local"]);
    let host = cluster.host(0);
    assert_eq!(host.call_ok(&["counter/fenced", "add", "5"]), "5");
    // Another claim of the actor, as when a host took it over while this one
    // was cut off: the epoch in the placement entry moves on.
    let entry = "grove-cluster:{counter/fenced}:owner@test";
    assert_eq!(
        cluster.redis.cli(&["HINCRBY", entry, "epoch", "1"]).trim(),
        "2"
    );
    // The activation still running here is refused its write, and ends.
    let refused = host.call(&["counter/fenced", "add", "100"]);
    assert!(!refused.status.success());
    let error = String::from_utf8_lossy(&refused.stderr);
    assert!(error.contains("superseded"), "{error}");
    let row = cluster
        .redis
        .cli(&["HGET", "grove:{counter/fenced}:counter", ""]);
    // The refused write left the row as it was.
    assert_eq!(row.trim(), "5");
    // The next call activates it under a claim of its own, from that state.
    assert_eq!(host.call_ok(&["counter/fenced", "add", "1"]), "6");
}

/// The version of `actor_type` that `host` runs, from `GET /v1/plugins`.
fn version_on(host: &RunningHost, actor_type: &str) -> String {
    let listed: Value = serde_json::from_str(
        &running::reqwest::blocking_get(&format!("{}/v1/plugins", host.url)).unwrap(),
    )
    .unwrap();
    listed["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["actor_type"] == actor_type)
        .map(|p| p["sha256"].as_str().unwrap().to_owned())
        .unwrap_or_default()
}

fn sha256_of(plugin: &str) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(common::plugin(plugin))
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_owned()
}

fn grove_deploy(host: &RunningHost, plugin: &str, flags: &[&str]) -> std::process::Output {
    std::process::Command::new(running::GROVE)
        .args(["deploy", "--host", &host.url])
        .arg(common::plugin(plugin))
        .args(flags)
        .output()
        .unwrap()
}

/// Waits until every host runs `version` of the counter.
fn wait_for_version(cluster: &Cluster, hosts: usize, version: &str) {
    let start = Instant::now();
    loop {
        let running: Vec<String> = (0..hosts)
            .map(|i| version_on(cluster.host(i), "counter"))
            .collect();
        if running.iter().all(|v| v == version) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "hosts run {running:?}, not {version}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_deploy_to_one_host_reaches_every_host_and_so_does_a_rollback() {
    let cluster = Cluster::start(3, &["counter"], &["--placement", "prefer-local"]);
    // A counter on each host.
    for i in 0..3 {
        assert_eq!(
            cluster
                .host(i)
                .call_ok(&[&format!("counter/{i}"), "add", "5"]),
            "5"
        );
    }
    let next = sha256_of("counter_next");
    let deployed = grove_deploy(cluster.host(0), "counter_next", &[]);
    assert!(
        deployed.status.success(),
        "{}",
        String::from_utf8_lossy(&deployed.stderr)
    );
    wait_for_version(&cluster, 3, &next);
    // Every counter moved where it runs, with its state; the leases say so.
    for i in 0..3 {
        let counter = format!("counter/{i}");
        assert_eq!(cluster.host(2).call_ok(&[&counter, "version"]), "\"next\"");
        assert_eq!(cluster.host(1).call_ok(&[&counter, "get"]), "5");
    }
    // The leases publish it with their next renewal.
    let start = Instant::now();
    loop {
        let status = std::process::Command::new(running::GROVE)
            .args(["cluster", "status", "--host", &cluster.host(1).url])
            .output()
            .unwrap();
        let status = String::from_utf8_lossy(&status.stdout).into_owned();
        if status.matches(&format!("counter@{}", &next[..12])).count() == 3 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "{status}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // A version that cannot start is rolled back on every host.
    let rolled_back = grove_deploy(cluster.host(1), "counter_unstartable", &["--force"]);
    assert!(!rolled_back.status.success());
    assert!(
        String::from_utf8_lossy(&rolled_back.stderr).contains("was rolled back"),
        "{}",
        String::from_utf8_lossy(&rolled_back.stderr)
    );
    std::thread::sleep(Duration::from_millis(2500));
    wait_for_version(&cluster, 3, &next);
    // Every host knows: the failed version is refused on another host
    // unless forced.
    let again = grove_deploy(cluster.host(2), "counter_unstartable", &[]);
    assert!(!again.status.success());
    assert!(
        // (Host 2 may have tried the version itself before the cluster's
        // rollback reached it: then it refuses it as rolled back here.)
        String::from_utf8_lossy(&again.stderr).contains("was rolled back"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    wait_for_version(&cluster, 3, &next);
    for i in 0..3 {
        let counter = format!("counter/{i}");
        assert_eq!(cluster.host(0).call_ok(&[&counter, "add", "1"]), "6");
    }
}
