//! A `grove run` process for tests, and blocking HTTP helpers.

// Each test binary uses a part of these helpers.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const GROVE: &str = env!("CARGO_BIN_EXE_grove");

pub struct RunningHost {
    /// The process.
    pub child: Child,
    /// The HTTP API's base URL.
    pub url: String,
}

impl RunningHost {
    pub fn start(plugins: &Path, data: &Path) -> RunningHost {
        Self::start_with(plugins, data, &[])
    }

    pub fn start_with(plugins: &Path, data: &Path, flags: &[&str]) -> RunningHost {
        Self::spawn(plugins, data, flags, None)
    }

    /// Starts a host, and waits until it serves. With `log`, what it prints
    /// goes to that file; otherwise its standard error is kept for
    /// [`RunningHost::interrupt`].
    pub fn spawn(plugins: &Path, data: &Path, flags: &[&str], log: Option<&Path>) -> RunningHost {
        let (stdout, stderr) = match log {
            Some(path) => {
                let file = std::fs::File::create(path).unwrap();
                (Stdio::from(file.try_clone().unwrap()), Stdio::from(file))
            }
            None => (Stdio::null(), Stdio::piped()),
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(GROVE)
            .args(["run", "--plugins"])
            .arg(plugins)
            .arg("--data")
            .arg(data)
            .args(["--http", &format!("127.0.0.1:{port}")])
            .args(flags)
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap();
        let host = RunningHost {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let start = Instant::now();
        // A large plugin (a JavaScript or Python actor carries its engine)
        // compiles for tens of seconds in a debug build, more on a busy box.
        while reqwest::blocking_get(&format!("{}/v1/health", host.url)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(180),
                "grove run did not start serving"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        host
    }

    /// Kills the process at once (`kill -9`).
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the host the way Ctrl-C does, and returns what it logged (if
    /// its log was not sent to a file).
    pub fn interrupt(mut self) -> String {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "grove run exited with {status:?}");
        let mut log = String::new();
        if let Some(mut stderr) = self.child.stderr.take() {
            std::io::Read::read_to_string(&mut stderr, &mut log).unwrap();
        }
        log
    }

    pub fn call(&self, args: &[&str]) -> Output {
        Command::new(GROVE)
            .args(["call", "--host", &self.url])
            .args(args)
            .output()
            .unwrap()
    }

    pub fn call_ok(&self, args: &[&str]) -> String {
        let out = self.call(args);
        assert!(
            out.status.success(),
            "grove call {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim_end().to_owned()
    }

    pub fn post(&self, path: &str, body: &str) -> (u16, Value) {
        let response = reqwest::blocking_post(&format!("{}{path}", self.url), body);
        (response.0, serde_json::from_str(&response.1).unwrap())
    }
}

impl Drop for RunningHost {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Tiny blocking HTTP helpers on top of reqwest's async client.
pub mod reqwest {
    pub fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    pub fn blocking_get(url: &str) -> Result<String, ::reqwest::Error> {
        runtime().block_on(async { ::reqwest::get(url).await?.text().await })
    }

    /// The body and `Content-Type` of a GET.
    pub fn blocking_get_typed(url: &str) -> (String, String) {
        runtime().block_on(async {
            let response = ::reqwest::get(url).await.unwrap();
            let content_type = response.headers()[::reqwest::header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .to_owned();
            (response.text().await.unwrap(), content_type)
        })
    }

    pub fn blocking_post(url: &str, body: &str) -> (u16, String) {
        runtime().block_on(async {
            let response = ::reqwest::Client::new()
                .post(url)
                .body(body.to_owned())
                .send()
                .await
                .unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        })
    }
}
