//! Failover time: three `grove run` processes clustered through a real
//! `redis-server` with the default lease (3 s TTL); the host running an
//! actor is killed with `kill -9`, and the time from the kill until the actor
//! answers again through a survivor is measured, ten times (a new host
//! replaces each one killed). Prints min / median / max.
//!
//! Run with: `scripts/build-plugins && cargo bench -p grove-cli --bench failover`.
//! `GROVE_BENCH_KILLS` sets the number of kills (default 10).

#[path = "../../runtime/tests/common/mod.rs"]
mod common;
#[path = "../tests/running/mod.rs"]
mod running;

use std::time::{Duration, Instant};

use common::redis::RedisServer;
use running::RunningHost;

fn spawn(
    redis: &RedisServer,
    plugins: &std::path::Path,
    data: &std::path::Path,
    n: usize,
) -> RunningHost {
    let listen = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.to_string())
        .expect("a free UDP port");
    let url = redis.url();
    let log = data.join(format!("host-{n}.log"));
    let flags = ["--redis", &url, "--cluster", "bench", "--listen", &listen];
    RunningHost::spawn(plugins, data, &flags, Some(&log))
}

fn id_of(host: &RunningHost) -> String {
    let status =
        running::reqwest::blocking_get(&format!("{}/v1/cluster", host.url)).expect("status");
    let status: serde_json::Value = serde_json::from_str(&status).expect("JSON");
    status["host"].as_str().unwrap_or_default().to_owned()
}

fn main() {
    let kills: usize = std::env::var("GROVE_BENCH_KILLS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10);
    let redis = RedisServer::start();
    let plugins = common::plugin_dir(&["counter"]);
    let data = tempfile::tempdir().expect("a temporary directory");
    let mut started = 0;
    let mut hosts: Vec<RunningHost> = (0..3)
        .map(|_| {
            started += 1;
            spawn(&redis, plugins.path(), data.path(), started)
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let mut took = Vec::new();
    for round in 0..kills {
        let actor = format!("counter/failover-{round}");
        assert_eq!(hosts[0].call_ok(&[&actor, "add", "1"]), "1");
        let owner = redis
            .cli(&[
                "HGET",
                &format!("grove-cluster:{{{actor}}}:owner@bench"),
                "host",
            ])
            .trim()
            .to_owned();
        let victim = hosts
            .iter()
            .position(|h| id_of(h) == owner)
            .expect("the owner is one of the hosts");
        let killed_at = Instant::now();
        hosts.remove(victim).kill();
        loop {
            if hosts[0].call(&[&actor, "get"]).status.success() {
                break;
            }
            assert!(
                killed_at.elapsed() < Duration::from_secs(30),
                "{actor} never came back"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let back = killed_at.elapsed();
        assert_eq!(
            hosts[0].call_ok(&[&actor, "get"]),
            "1",
            "{actor} lost its state"
        );
        eprintln!("kill {}: {actor} back after {back:?}", round + 1);
        took.push(back);
        started += 1;
        hosts.push(spawn(&redis, plugins.path(), data.path(), started));
        // The new host's lease reaches the others' view within a second.
        std::thread::sleep(Duration::from_secs(1));
    }
    took.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("## Failover after kill -9 (lease TTL 3 s, three hosts, {kills} kills)");
    println!();
    println!("| min | median | max |");
    println!("|---|---|---|");
    println!(
        "| {:.0} ms | {:.0} ms | {:.0} ms |",
        ms(took[0]),
        ms(took[took.len() / 2]),
        ms(took[took.len() - 1])
    );
}
