//! A program in a real terminal: a detached tmux session on a server of
//! its own (its own socket, so no test sees another's panes), its screen
//! read with `capture-pane`, keys sent as a user types them.

use std::time::{Duration, Instant};

use tokio::process::Command;

/// Where Debian installs it.
pub const TMUX: &str = "/usr/bin/tmux";

/// A tmux server of its own with one session, killed when dropped.
pub struct Tmux {
    socket: String,
}

impl Tmux {
    /// Starts `command` in a detached 200×50 session; `tag` names the
    /// server's socket (with the process id).
    pub async fn start(tag: &str, command: &str) -> Self {
        let socket = format!("egress-{tag}-{}", std::process::id());
        let t = Self { socket };
        t.run(&[
            "new-session",
            "-d",
            "-s",
            "main",
            "-x",
            "200",
            "-y",
            "50",
            command,
        ])
        .await;
        t
    }

    /// Runs `tmux <args>` against this server; its stdout.
    pub async fn run(&self, args: &[&str]) -> String {
        let out = Command::new(TMUX)
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .await
            .expect("run tmux");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The visible screen.
    pub async fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "main"]).await
    }

    /// Everything the pane ever showed: the scrollback and the screen.
    pub async fn history(&self) -> String {
        self.run(&["capture-pane", "-p", "-S", "-", "-t", "main"])
            .await
    }

    /// Types `keys` (tmux key names, `C-c` for Ctrl-C).
    pub async fn keys(&self, keys: &str) {
        self.run(&["send-keys", "-t", "main", keys]).await;
    }

    /// Polls the screen until `check` holds; returns that screen.
    pub async fn wait_for(
        &self,
        within: Duration,
        what: &str,
        check: impl Fn(&str) -> bool,
    ) -> String {
        let start = Instant::now();
        loop {
            let screen = self.screen().await;
            if check(&screen) {
                return screen;
            }
            assert!(
                start.elapsed() < within,
                "no {what} within {within:?}; the screen:\n{screen}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = std::process::Command::new(TMUX)
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}
