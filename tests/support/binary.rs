//! The real `gemini-phone` binary as a process of its own, for tests that must kill it
//! (SIGKILL, SIGTERM) or restart it: a clean environment, a free loopback port, and a
//! child that is killed (by its own pid only) when the handle is dropped.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

/// How long the binary may take to answer `/health` after it is started.
const START_WAIT: Duration = Duration::from_secs(20);

/// Where the process writes its logs.
pub enum Logs<'a> {
    /// stderr to the test's own (shown on failure), stdout discarded.
    Inherit,
    /// Both into `name` inside `dir`, which is also the working directory (so no stray
    /// `.env` is read).
    File { dir: &'a Path, name: &'a str },
}

/// A running server process.
pub struct ServerProcess {
    child: Child,
    port: u16,
}

impl ServerProcess {
    /// Starts the binary with nothing in its environment but `PATH`, a listen address on a
    /// free port, `PUBLIC_URL`, the shipped prompts, and `vars`; returns once `/health`
    /// answers.
    pub async fn start(vars: &[(&str, &str)], logs: Logs<'_>) -> ServerProcess {
        let port = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_gemini-phone"));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("PUBLIC_URL", "https://phone.example.com")
            .env(
                "PROMPTS_DIR",
                concat!(env!("CARGO_MANIFEST_DIR"), "/prompts"),
            )
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .envs(vars.iter().copied())
            .stdin(Stdio::null());
        match logs {
            Logs::Inherit => {
                command.stdout(Stdio::null()).stderr(Stdio::inherit());
            }
            Logs::File { dir, name } => {
                let log = std::fs::File::create(dir.join(name)).expect("log file");
                command
                    .current_dir(dir)
                    .stdout(log.try_clone().expect("log file"))
                    .stderr(log);
            }
        }
        let child = command.spawn().expect("start the server binary");
        let server = ServerProcess { child, port };
        server.wait_healthy().await;
        server
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn http(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `ws://127.0.0.1:PORT{path}`.
    pub fn ws(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{path}", self.port)
    }

    /// `GET /health` as JSON, if the server answers.
    pub async fn health(&self) -> Option<serde_json::Value> {
        let response = reqwest::get(self.http("/health")).await.ok()?;
        response.json().await.ok()
    }

    async fn wait_healthy(&self) {
        let deadline = Instant::now() + START_WAIT;
        while Instant::now() < deadline {
            if let Ok(answer) = reqwest::get(self.http("/health")).await
                && answer.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the server did not come up");
    }

    /// SIGKILL: no drain, no clean exit.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM: the server drains and exits on its own.
    pub fn terminate(&self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM failed");
    }

    /// Waits up to `within` for the process to exit; true if it did.
    pub async fn exited_within(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.child.try_wait().expect("child status").is_some() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // Kills this child alone; a no-op once it has exited.
        self.kill();
    }
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}
