//! The console's browser harness: the real `hookledger serve` binary (see [`super::serve_child`])
//! driven by real headless Chromium through chromedriver (WebDriver, with fantoccini).
//!
//! Without chromedriver the console tests print `*** SKIPPED` and pass locally; under `CI=true`
//! they fail instead (`.ci/chromium` installs Debian's `chromium` and `chromium-driver`).
//! Waits poll the page until a condition holds, bounded far above what it takes; nothing
//! sleeps for a fixed time and no assertion is on a duration.

#![allow(dead_code)]

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

/// How long a condition may take to hold before the test gives up (far above what it takes).
const BOUND: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);

/// A headless Chromium session and the chromedriver serving it (killed on drop).
pub struct Browser {
    driver: Child,
    pub client: Client,
}

impl Drop for Browser {
    /// chromedriver and the Chromium it started share a process group of their own: all go.
    fn drop(&mut self) {
        unsafe { libc::kill(-(self.driver.id() as i32), libc::SIGKILL) };
        let _ = self.driver.wait();
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// chromedriver and Chromium, or `None` after a loud skip; under `CI=true` their absence fails.
fn tools(test: &str) -> Option<(PathBuf, Option<PathBuf>)> {
    let driver = std::env::var_os("HOOKLEDGER_CHROMEDRIVER")
        .map(PathBuf::from)
        .or_else(|| on_path("chromedriver"));
    let chromium = on_path("chromium").or_else(|| on_path("chromium-browser"));
    match driver {
        Some(d) => Some((d, chromium)),
        None if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{test}: chromedriver not found under CI=true (run .ci/chromium)")
        }
        None => {
            eprintln!(
                "\n*** SKIPPED {test}: no chromedriver on PATH (apt-get install chromium \
                 chromium-driver, or run .ci/chromium); under CI=true this fails ***\n"
            );
            None
        }
    }
}

impl Browser {
    /// A fresh headless session at 1280×900, or `None` (skipped) without chromedriver.
    pub async fn start(test: &str) -> Option<Self> {
        let (driver_bin, chromium) = tools(test)?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let driver = Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let mut options = json!({
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,900"],
        });
        if let Some(c) = chromium {
            options["binary"] = json!(c);
        }
        let mut caps = serde_json::Map::new();
        caps.insert("goog:chromeOptions".into(), options);
        caps.insert("goog:loggingPrefs".into(), json!({ "browser": "ALL" }));
        let url = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        let mut browser = Self {
            driver,
            client: loop {
                let connector = hyper_util::client::legacy::connect::HttpConnector::new();
                match ClientBuilder::new(connector)
                    .capabilities(caps.clone())
                    .connect(&url)
                    .await
                {
                    Ok(c) => break c,
                    Err(_) if started.elapsed() < BOUND => tokio::time::sleep(POLL).await,
                    Err(e) => panic!("no WebDriver session at {url}: {e}"),
                }
            },
        };
        browser.size(1280, 900).await;
        Some(browser)
    }

    pub async fn size(&mut self, width: u32, height: u32) {
        self.client.set_window_size(width, height).await.unwrap();
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    /// Waits until `css` matches an element whose text satisfies `ok`; that text.
    pub async fn text_where(&self, css: &str, ok: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        let mut last = String::new();
        loop {
            if let Ok(el) = self.client.find(Locator::Css(css)).await {
                if let Ok(t) = el.text().await {
                    if ok(&t) {
                        return t;
                    }
                    last = t;
                }
            }
            if started.elapsed() > BOUND {
                let page = self.body_text().await;
                panic!("`{css}` never satisfied the condition; last text {last:?}\npage:\n{page}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until at least `n` elements match `css`.
    pub async fn count_at_least(&self, css: &str, n: usize) {
        let started = Instant::now();
        loop {
            let found = self
                .client
                .find_all(Locator::Css(css))
                .await
                .map(|v| v.len());
            if found.as_ref().is_ok_and(|k| *k >= n) {
                return;
            }
            if started.elapsed() > BOUND {
                let page = self.body_text().await;
                panic!("never {n} of `{css}` (found {found:?})\npage:\n{page}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits for `css` and answers its text.
    pub async fn text(&self, css: &str) -> String {
        self.text_where(css, |_| true).await
    }

    /// Waits until the page's text contains `needle`.
    pub async fn sees(&self, needle: &str) {
        self.text_where("body", |t| t.contains(needle)).await;
    }

    pub async fn body_text(&self) -> String {
        match self.client.find(Locator::Css("body")).await {
            Ok(el) => el.text().await.unwrap_or_default(),
            Err(e) => format!("(no body: {e})"),
        }
    }

    pub async fn click(&self, css: &str) {
        let el = self
            .client
            .wait()
            .at_most(BOUND)
            .for_element(Locator::Css(css))
            .await;
        let mut el = el.unwrap_or_else(|e| panic!("no `{css}`: {e}"));
        // A refresh may redraw the element between finding and clicking it: find it again.
        let started = Instant::now();
        loop {
            match el.click().await {
                Ok(()) => return,
                Err(e) if e.is_stale_element_reference() && started.elapsed() < BOUND => {
                    tokio::time::sleep(POLL).await;
                    if let Ok(again) = self.client.find(Locator::Css(css)).await {
                        el = again;
                    }
                }
                Err(e) => panic!("click `{css}`: {e}"),
            }
        }
    }

    pub async fn fill(&self, css: &str, value: &str) {
        let el = self
            .client
            .wait()
            .at_most(BOUND)
            .for_element(Locator::Css(css))
            .await;
        let el = el.unwrap_or_else(|e| panic!("no `{css}`: {e}"));
        el.clear().await.unwrap();
        el.send_keys(value).await.unwrap();
    }

    /// Runs `script` in the page (WebDriver's execute is not subject to the page's CSP).
    pub async fn js(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap()
    }

    /// Waits until `script` answers `expected`.
    pub async fn js_until(&self, script: &str, expected: Value) {
        let started = Instant::now();
        loop {
            let got = self.js(script).await;
            if got == expected {
                return;
            }
            if started.elapsed() > BOUND {
                let page = self.body_text().await;
                panic!("`{script}` answered {got}, never {expected}\npage:\n{page}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Every input and select on the page has a label, and no link, button or field is taken
    /// out of the keyboard's tab order.
    pub async fn assert_keyboard_ready(&self, page: &str) {
        let unlabelled = self
            .js(
                "return [...document.querySelectorAll('input, select, textarea')] \
                 .filter((e) => e.labels.length === 0 && !e.getAttribute('aria-label')) \
                 .map((e) => e.id || e.name)",
            )
            .await;
        assert_eq!(
            unlabelled,
            Value::Array(vec![]),
            "{page}: unlabelled fields"
        );
        let untabbable = self
            .js("return [...document.querySelectorAll('a[href], button, input, select, textarea')] \
                 .filter((e) => e.tabIndex < 0).map((e) => e.id || e.textContent)")
            .await;
        assert_eq!(
            untabbable,
            Value::Array(vec![]),
            "{page}: out of the tab order"
        );
    }

    /// The browser console's entries since the last call.
    pub async fn console_log(&self) -> Vec<Value> {
        let answer = self.client.issue_cmd(BrowserLog).await.unwrap();
        answer.as_array().cloned().unwrap_or_default()
    }

    /// Fails on any SEVERE entry in the browser console (errors, CSP violations, failed loads
    /// other than `allowed`, for example a deliberately wrong token's 401).
    pub async fn assert_no_console_errors(&self, page: &str, allowed: &[&str]) {
        let errors: Vec<Value> = self
            .console_log()
            .await
            .into_iter()
            .filter(|e| e["level"] == "SEVERE")
            .filter(|e| {
                let m = e["message"].as_str().unwrap_or("");
                !allowed.iter().any(|a| m.contains(a))
            })
            .collect();
        assert!(errors.is_empty(), "console errors on {page}: {errors:#?}");
    }

    /// A PNG of the whole page, not only the viewport: Chromium's DevTools
    /// `Page.captureScreenshot` with `captureBeyondViewport`, clipped to the document's size
    /// from `Page.getLayoutMetrics` (through chromedriver's `goog/cdp/execute`).
    pub async fn full_page_png(&self) -> Vec<u8> {
        let metrics = self
            .client
            .issue_cmd(Cdp("Page.getLayoutMetrics", json!({})))
            .await
            .unwrap();
        let size = &metrics["cssContentSize"];
        let (width, height) = (size["width"].as_f64(), size["height"].as_f64());
        let (Some(width), Some(height)) = (width, height) else {
            panic!("no content size in {metrics}");
        };
        let shot = self
            .client
            .issue_cmd(Cdp(
                "Page.captureScreenshot",
                json!({
                    "format": "png",
                    "captureBeyondViewport": true,
                    "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
                }),
            ))
            .await
            .unwrap();
        let data = shot["data"].as_str().expect("a screenshot's data");
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .expect("base64 PNG")
    }

    /// Saves a full-page PNG of the page as `<target dir>/console-screenshots/NAME.png`.
    pub async fn screenshot(&self, name: &str) {
        let png = self.full_page_png().await;
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    /// Screenshots of the current page at 1280 and at 390 pixels wide (then back to 1280).
    /// At 390 the page must fit the window's width: only a table may scroll, inside its box.
    pub async fn screenshots(&mut self, name: &str) {
        self.screenshot(&format!("{name}-1280")).await;
        self.size(390, 844).await;
        self.screenshot(&format!("{name}-390")).await;
        let widths = self
            .js("const d = document.documentElement; return [d.scrollWidth, d.clientWidth];")
            .await;
        let (page, window) = (widths[0].as_u64().unwrap(), widths[1].as_u64().unwrap());
        assert!(
            page <= window,
            "{name} at 390 px is {page} px wide in a window of {window}"
        );
        self.size(1280, 900).await;
    }

    /// Signs in with `token` on the sign-in page at `base`.
    pub async fn sign_in(&self, base: &str, token: &str) {
        self.goto(&format!("{base}/")).await;
        self.fill("#token", token).await;
        self.click("#signin button[type=submit]").await;
    }
}

/// `<target dir>/console-screenshots`, the target dir found from the binary under test.
pub fn screenshot_dir() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_hookledger"));
    // <target>/release/hookledger
    bin.parent()
        .and_then(|p| p.parent())
        .map(|t| t.join("console-screenshots"))
        .expect("the binary sits in <target>/<profile>/")
}

/// A Chromium DevTools command (`cmd` with `params`) through chromedriver's
/// `POST /session/{id}/goog/cdp/execute`; its answer is the command's result.
#[derive(Debug)]
struct Cdp(&'static str, Value);

impl fantoccini::wd::WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!(
            "session/{}/goog/cdp/execute",
            session.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _url: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(json!({ "cmd": self.0, "params": self.1 }).to_string()),
        )
    }
}

/// The width and height of a PNG, from its IHDR chunk (bytes 16..24).
pub fn png_size(png: &[u8]) -> (u32, u32) {
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&png[16..20]), be(&png[20..24]))
}

/// chromedriver's `POST /session/{id}/se/log` for the browser console.
#[derive(Debug)]
struct BrowserLog;

impl fantoccini::wd::WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _url: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(json!({ "type": "browser" }).to_string()),
        )
    }
}
