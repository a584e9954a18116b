//! The real `hookledger serve` binary as a child process, for the tests that kill it, restart
//! it or break its disk: start it and learn its address, SIGKILL or SIGTERM it, call its API,
//! and run the `hookledger verify` command on its file while it is stopped (DuckDB lets one
//! process open a file at a time).

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

pub const TOKEN: &str = "crash-test-token-0123456789";

/// How long a start may take before the test gives up (far above what it takes).
const START_BOUND: Duration = Duration::from_secs(90);

/// A running `hookledger serve`.
pub struct ServeChild {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
}

impl ServeChild {
    /// Starts serve on `db` with `env` (besides the token), its stderr appended to `log`, and
    /// waits for `listening on ...`. Panics with the log when it does not come up.
    pub fn start(db: &Path, env: &[(&str, &str)], log: &Path) -> Self {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_hookledger"));
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--db"])
            .arg(db)
            .env("HOOKLEDGER_API_TOKEN", TOKEN)
            .stdout(Stdio::piped())
            .stderr(stderr);
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut seen = Vec::new();
        let base = loop {
            match rx.recv_timeout(START_BOUND) {
                Ok(line) => match line.strip_prefix("listening on ") {
                    Some(addr) => break addr.to_owned(),
                    None => seen.push(line),
                },
                Err(e) => {
                    let _ = child.kill();
                    let status = child.wait();
                    panic!(
                        "serve did not come up ({e:?}, {status:?})\nstdout: {seen:#?}\nstderr log:\n{}",
                        std::fs::read_to_string(log).unwrap_or_default()
                    );
                }
            }
        };
        Self { child, base }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// SIGKILL: nothing in the process runs after it. Returns once the process is gone.
    pub fn kill(mut self) -> ExitStatus {
        self.child.kill().unwrap();
        self.child.wait().unwrap()
    }

    /// SIGTERM (a graceful stop), then the exit status.
    pub fn stop(mut self) -> ExitStatus {
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        self.child.wait().unwrap()
    }
}

impl Drop for ServeChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `hookledger verify --db PATH`: its exit status and what it printed.
pub fn cli_verify(db: &Path) -> (ExitStatus, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hookledger"))
        .args(["verify", "--db"])
        .arg(db)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status, text)
}

/// Asserts that `hookledger verify` passes on `db` (the server must be stopped).
pub fn assert_cli_verify(db: &Path, when: &str) {
    let (status, text) = cli_verify(db);
    assert!(
        status.success(),
        "{when}: hookledger verify: {status}: {text}"
    );
}

/// One API call with the token; the status and the JSON answer (or the text as a string).
pub async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<&Value>,
) -> reqwest::Result<(u16, Value)> {
    let mut req = client
        .request(method, url)
        .bearer_auth(TOKEN)
        .timeout(Duration::from_secs(60));
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let text = resp.text().await?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

pub async fn get(client: &reqwest::Client, url: &str) -> (u16, Value) {
    call(client, reqwest::Method::GET, url, None)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

pub async fn post_json(client: &reqwest::Client, url: &str, body: &Value) -> (u16, Value) {
    call(client, reqwest::Method::POST, url, Some(body))
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"))
}

/// `GET /v1/verify` must answer ok.
pub async fn assert_api_verify(client: &reqwest::Client, base: &str, when: &str) {
    let (status, verdict) = get(client, &format!("{base}/v1/verify")).await;
    assert_eq!(status, 200, "{when}: {verdict}");
    assert_eq!(verdict["ok"], Value::Bool(true), "{when}: {verdict}");
}

/// Registers a webhook for every event type; its id.
pub async fn register(client: &reqwest::Client, base: &str, url: &str) -> String {
    let (status, webhook) = post_json(
        client,
        &format!("{base}/v1/webhooks"),
        &serde_json::json!({ "url": url }),
    )
    .await;
    assert_eq!(status, 201, "{webhook}");
    webhook["id"].as_str().unwrap().to_owned()
}
