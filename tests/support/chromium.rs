//! Headless Chromium (Debian's `chromium`) driven over the DevTools
//! protocol, with a WebSocket client small enough to read: navigate, click
//! where a user clicks (mouse events at the element's box), read the DOM,
//! take a screenshot, and list every request the page made.
//!
//! The browser may reach loopback only: every host name but 127.0.0.1 maps
//! to "not found" (`--host-resolver-rules`), so it never asks the machine's
//! nameserver; no proxy, no background networking, no component updates.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// Where Debian installs it.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// A running headless browser with one page attached.
pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    ws: WebSocket,
    next_id: u64,
    /// Every DevTools event received so far, in order.
    pub events: Vec<Value>,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

impl Browser {
    /// Starts Chromium and attaches to its first page.
    pub async fn start() -> Self {
        let profile = tempfile::tempdir().expect("profile dir");
        let child = Command::new(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-default-apps",
                "--disable-extensions",
                "--disable-sync",
                "--disable-features=Translate,OptimizationHints,MediaRouter",
                "--no-proxy-server",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromium");
        // Chromium writes its DevTools port into the profile once it listens.
        let port_file = profile.path().join("DevToolsActivePort");
        let start = Instant::now();
        let port: u16 = loop {
            if let Some(p) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|t| t.lines().next().and_then(|l| l.trim().parse().ok()))
            {
                break p;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "chromium did not start its DevTools listener within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let page_url = loop {
            let list = http_get(port, "/json/list").await;
            let pages: Value = serde_json::from_str(&list).unwrap_or(Value::Null);
            if let Some(url) = pages.as_array().and_then(|a| {
                a.iter()
                    .find(|p| p["type"] == "page")
                    .and_then(|p| p["webSocketDebuggerUrl"].as_str())
            }) {
                break url.to_string();
            }
            assert!(start.elapsed() < Duration::from_secs(60), "no page target");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let path = page_url
            .split_once("/devtools/")
            .map(|(_, p)| format!("/devtools/{p}"))
            .expect("a DevTools page URL");
        let ws = WebSocket::connect(port, &path).await;
        let mut b = Self {
            child,
            _profile: profile,
            ws,
            next_id: 0,
            events: Vec::new(),
        };
        for domain in ["Page.enable", "Network.enable", "Runtime.enable"] {
            b.call(domain, json!({})).await;
        }
        b
    }

    /// Sends one command and waits for its result (events are kept).
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({"id": id, "method": method, "params": params});
        self.ws.send(&msg.to_string()).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let text = tokio::time::timeout(left, self.ws.recv())
                .await
                .unwrap_or_else(|_| panic!("no answer to {method} within 60 s"));
            let v: Value = serde_json::from_str(&text).expect("DevTools JSON");
            if v["id"] == id {
                if let Some(e) = v.get("error") {
                    panic!("{method} failed: {e}");
                }
                return v["result"].clone();
            }
            self.events.push(v);
        }
    }

    /// Evaluates `expression` in the page (promises awaited); its value.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{expression} threw: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Loads `url` and waits until the document is complete.
    pub async fn goto(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url})).await;
        self.wait_for(
            "the page to load",
            "document.readyState === 'complete' && document.URL !== 'about:blank'",
            Duration::from_secs(30),
        )
        .await;
    }

    /// Polls `condition` (a JS expression) until it is true.
    pub async fn wait_for(&mut self, what: &str, condition: &str, within: Duration) {
        let start = Instant::now();
        loop {
            if self.eval(&format!("!!({condition})")).await == Value::Bool(true) {
                return;
            }
            assert!(
                start.elapsed() < within,
                "{what}: not within {within:?}; the page:\n{}",
                self.eval("document.body ? document.body.innerText : ''")
                    .await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks the middle of the element `selector` matches, as a mouse does.
    pub async fn click(&mut self, selector: &str) {
        let sel = serde_json::to_string(selector).expect("selector");
        let at = self
            .eval(&format!(
                "(() => {{ const e = document.querySelector({sel}); if (!e) return null; e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()"
            ))
            .await;
        let (x, y) = match at.as_array().map(Vec::as_slice) {
            Some([x, y]) => (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0)),
            _ => panic!("nothing to click at {selector}"),
        };
        for kind in ["mouseMoved", "mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
            )
            .await;
        }
    }

    /// Types `text` into the element `selector` matches.
    pub async fn type_into(&mut self, selector: &str, text: &str) {
        self.click(selector).await;
        self.call("Input.insertText", json!({"text": text})).await;
    }

    /// The whole DOM as HTML.
    pub async fn dom(&mut self) -> String {
        self.eval("document.documentElement.outerHTML")
            .await
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// A PNG of the whole page (not just the window), written to `path`.
    pub async fn screenshot(&mut self, path: &Path) -> PathBuf {
        let width = self
            .eval("document.documentElement.clientWidth")
            .await
            .as_f64()
            .unwrap_or(1280.0);
        let height = self
            .eval("Math.ceil(document.documentElement.scrollHeight)")
            .await
            .as_f64()
            .unwrap_or(900.0);
        let shot = self
            .call(
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": true,
                       "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}}),
            )
            .await;
        let png = base64_decode(shot["data"].as_str().expect("screenshot data"));
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::write(path, png).expect("write screenshot");
        path.to_path_buf()
    }

    /// Emulates a screen `width` × `height` CSS pixels (a phone when `mobile`).
    pub async fn viewport(&mut self, width: u32, height: u32, mobile: bool) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}),
        )
        .await;
    }

    /// Every URL the page requested so far.
    pub fn requested_urls(&self) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| e["method"] == "Network.requestWillBeSent")
            .filter_map(|e| e["params"]["request"]["url"].as_str().map(str::to_string))
            .collect()
    }
}

/// A GET on the DevTools HTTP endpoint; the body. (It keeps the
/// connection open whatever the request says: read `Content-Length`.)
async fn http_get(port: u16, path: &str) -> String {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)).await else {
        return String::new();
    };
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return String::new();
    }
    let mut raw = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let read = async {
        loop {
            if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if raw.len() >= end + 4 + len {
                    return String::from_utf8_lossy(&raw[end + 4..end + 4 + len]).into_owned();
                }
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return String::new(),
                Ok(n) => raw.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .unwrap_or_default()
}

// === impl WebSocket ===

/// The client side of RFC 6455, text messages only: what DevTools speaks.
struct WebSocket {
    tcp: TcpStream,
    /// Bytes read past the last frame.
    buf: Vec<u8>,
}

impl WebSocket {
    async fn connect(port: u16, path: &str) -> Self {
        let mut tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect to DevTools");
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: ZWdyZXNzLXNlbnRpbmVsIQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        tcp.write_all(req.as_bytes()).await.expect("handshake");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = tcp.read(&mut chunk).await.expect("handshake reply");
            assert!(n > 0, "DevTools closed during the handshake");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        assert!(
            head.starts_with("HTTP/1.1 101"),
            "handshake refused: {head}"
        );
        Self {
            tcp,
            buf: buf[end..].to_vec(),
        }
    }

    /// Sends one text frame, masked as a client must.
    async fn send(&mut self, text: &str) {
        self.frame(0x1, text.as_bytes()).await;
    }

    async fn frame(&mut self, opcode: u8, payload: &[u8]) {
        let mut f = vec![0x80 | opcode];
        let len = payload.len();
        if len < 126 {
            f.push(0x80 | len as u8);
        } else if len <= u16::MAX as usize {
            f.push(0x80 | 126);
            f.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            f.push(0x80 | 127);
            f.extend_from_slice(&(len as u64).to_be_bytes());
        }
        let mask = [0x5a, 0xc3, 0x1e, 0x77];
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.tcp.write_all(&f).await.expect("send frame");
    }

    async fn fill(&mut self, n: usize) {
        let mut chunk = vec![0u8; 64 * 1024];
        while self.buf.len() < n {
            let got = self.tcp.read(&mut chunk).await.expect("read frame");
            assert!(got > 0, "DevTools closed the connection");
            self.buf.extend_from_slice(&chunk[..got]);
        }
    }

    /// The next whole text message (fragments joined, pings answered).
    async fn recv(&mut self) -> String {
        let mut message = Vec::new();
        loop {
            self.fill(2).await;
            let (b0, b1) = (self.buf[0], self.buf[1]);
            let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0f);
            let mut len = u64::from(b1 & 0x7f);
            let mut at = 2;
            if len == 126 {
                self.fill(4).await;
                len = u64::from(u16::from_be_bytes([self.buf[2], self.buf[3]]));
                at = 4;
            } else if len == 127 {
                self.fill(10).await;
                let mut b = [0u8; 8];
                b.copy_from_slice(&self.buf[2..10]);
                len = u64::from_be_bytes(b);
                at = 10;
            }
            let masked = b1 & 0x80 != 0;
            let mask_len = if masked { 4 } else { 0 };
            let total = at + mask_len + usize::try_from(len).expect("frame size");
            self.fill(total).await;
            let mut payload = self.buf[at + mask_len..total].to_vec();
            if masked {
                let mask = [
                    self.buf[at],
                    self.buf[at + 1],
                    self.buf[at + 2],
                    self.buf[at + 3],
                ];
                for (i, b) in payload.iter_mut().enumerate() {
                    *b ^= mask[i % 4];
                }
            }
            self.buf.drain(..total);
            match opcode {
                0x0..=0x2 => {
                    message.extend_from_slice(&payload);
                    if fin {
                        return String::from_utf8_lossy(&message).into_owned();
                    }
                }
                0x8 => panic!("DevTools closed the WebSocket"),
                0x9 => self.frame(0xA, &payload).await,
                _ => {}
            }
        }
    }
}

/// Standard base64 (DevTools sends screenshots that way).
pub fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter_map(value) {
        acc = (acc << 6) | c;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}
