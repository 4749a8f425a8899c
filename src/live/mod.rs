//! `verify --watch`: a live view for a provider's change window. Every
//! target × route is checked again and again (each pair on its own loop,
//! so a hanging route never delays the others), with the prober and dialer
//! `verify` uses; each credential is checked over each route at its own
//! `every` (a row `<route> credential`), with the same dialer.
//!
//! On a terminal the table is redrawn in place, one line per pair, with
//! the latest changes below it; without one (a pipe, a file, CI) only the
//! changes are printed, one line each, the first result of every pair
//! included so the log says where it started. When `stop` completes
//! (Ctrl-C), a summary lists every change seen and the state of each pair.
//!
//! [`Board`] is the pure part (results in, changes and text out); [`run`]
//! owns the loops, the clock and the terminal.
//!
//! # Layout
//! - this file: [`run`], the loops, the clock and the terminal;
//! - `board`: [`Board`], the pure part.

mod board;

use std::future::Future;
use std::io::{self, Write};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use board::clock;
pub use board::{Board, Change};

use crate::config::Config;
use crate::credential::check::Checked;
use crate::dial::fmt_duration;
use crate::probe::{ProbeOutcome, Prober};

/// Clears a terminal and puts the cursor top left.
const CLEAR: &str = "\x1b[H\x1b[2J";

/// Watches every target × route of `config`, checking each pair every
/// `interval`, until `stop` completes; writes to `out` (redrawn in place
/// when `tty`, else one line per change), then the summary. Returns the
/// board for callers that want more.
pub async fn run(
    config: Config,
    interval: Duration,
    out: &mut (dyn Write + Send),
    tty: bool,
    stop: impl Future<Output = ()>,
) -> io::Result<Board> {
    let started = SystemTime::now();
    let mut board = Board::new(&config, started);
    let heading = format!(
        "egress-sentinel verify --watch · {} · every {} · Ctrl-C for the summary",
        config.file.display(),
        fmt_duration(interval)
    );
    let (tx, mut rx) = mpsc::channel::<Seen>(64);
    let mut loops = spawn_loops(&config, interval, &tx);
    drop(tx);
    if tty {
        draw(out, &board, &heading)?;
    } else {
        writeln!(out, "{heading}")?;
        out.flush()?;
    }
    // On a terminal the "since" column ages even when nothing changes.
    let mut redraw = tokio::time::interval(Duration::from_secs(1));
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            got = rx.recv() => {
                let change = match got {
                    None => break,
                    Some(Seen::Probe(o)) => board.observe(*o, SystemTime::now()),
                    Some(Seen::Credential(c)) => board.observe_credential(*c, SystemTime::now()),
                };
                if tty {
                    draw(out, &board, &heading)?;
                } else if let Some(c) = change {
                    writeln!(out, "{}", c.line())?;
                    out.flush()?;
                }
            }
            _ = redraw.tick(), if tty => draw(out, &board, &heading)?,
        }
    }
    loops.abort_all();
    let now = SystemTime::now();
    if tty {
        draw(out, &board, &heading)?;
    }
    write!(out, "\n{}", board.summary(now))?;
    out.flush()?;
    Ok(board)
}

/// A result from one of the loops.
enum Seen {
    Probe(Box<ProbeOutcome>),
    Credential(Box<Checked>),
}

/// One loop per target × route probing every `interval`, and one per
/// credential × route checking it at its own `every` (providers rate-limit
/// token endpoints: the watch's interval is not theirs), all with one
/// dialer.
fn spawn_loops(config: &Config, interval: Duration, sink: &mpsc::Sender<Seen>) -> JoinSet<()> {
    let dialer = crate::verify::dialer_for(config);
    let prober = crate::verify::prober_with(config, &dialer);
    let checker = Prober::new(dialer, config.probe.max_body);
    let mut loops = JoinSet::new();
    for target in &config.targets {
        for route in &target.routes {
            let (t, r, p, tx) = (target.clone(), route.clone(), prober.clone(), sink.clone());
            loops.spawn(every(interval, move || {
                let (t, r, p, tx) = (t.clone(), r.clone(), p.clone(), tx.clone());
                async move {
                    let o = p.probe(&t, &r).await;
                    tx.send(Seen::Probe(Box::new(o))).await.is_ok()
                }
            }));
            let Some(cred) = target.credential.clone() else {
                continue;
            };
            let (t, r, p, tx) = (target.clone(), route.clone(), checker.clone(), sink.clone());
            loops.spawn(every(cred.every, move || {
                let (t, r, p, c, tx) = (t.clone(), r.clone(), p.clone(), cred.clone(), tx.clone());
                async move {
                    let checked = crate::credential::check::run(&p, &t, &c, &r).await;
                    tx.send(Seen::Credential(Box::new(checked))).await.is_ok()
                }
            }));
        }
    }
    loops
}

/// Runs `step` now and every `period` until it returns false.
async fn every<F, Fut>(period: Duration, mut step: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !step().await {
            return;
        }
    }
}

fn draw(out: &mut (dyn Write + Send), board: &Board, heading: &str) -> io::Result<()> {
    let now = SystemTime::now();
    let heading = format!("{heading} · {}", clock(now));
    write!(out, "{CLEAR}{}", board.screen(&heading, now))?;
    out.flush()
}
