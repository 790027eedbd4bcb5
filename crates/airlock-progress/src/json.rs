//! `--progress json`: the event schema (version [`SCHEMA_VERSION`], documented in the
//! README's "Machine-readable progress"), its one-line encoding, and the sampler that turns
//! the byte bars callers `inc()` into rate-limited `bytes` events.
//!
//! Callers keep the `indicatif::ProgressBar` they always had (hidden in this mode): a ticker
//! thread samples each live bar's position every [`TICK`], and a bar is reported at most once
//! per [`INTERVAL`] (or `$AIRLOCK_PROGRESS_INTERVAL_MS`), only when it moved, so a 50 GB load prints a few lines a second, never
//! one per chunk. Every bar gets a `start` event when it is made and an `end` event, with the
//! position it really reached, when it is removed.

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use serde::Serialize;

/// The `"v"` of every line; bumped when a field changes meaning or disappears (new fields
/// and event types may be added within a version).
pub const SCHEMA_VERSION: u32 = 1;
/// The shortest gap between two `running` events of one bar, unless
/// `AIRLOCK_PROGRESS_INTERVAL_MS` says otherwise (quieter CI logs; the tests' short phases).
pub const INTERVAL: Duration = Duration::from_millis(500);
/// How often live bars are sampled (at most: more often for a shorter interval).
const TICK: Duration = Duration::from_millis(100);

/// [`INTERVAL`], or `$AIRLOCK_PROGRESS_INTERVAL_MS` (1 ms to 1 h).
fn interval_from_env() -> Duration {
    std::env::var("AIRLOCK_PROGRESS_INTERVAL_MS")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|ms| (1..=3_600_000).contains(ms))
        .map_or(INTERVAL, Duration::from_millis)
}

/// Whether this process writes JSON lines on stderr (set once from `--progress json`).
static JSON: AtomicBool = AtomicBool::new(false);

pub(crate) fn set_enabled() {
    clock();
    JSON.store(true, Ordering::Relaxed);
}

pub fn enabled() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// The instant `t` counts from: the first use, early in `main`.
fn clock() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// One line of the stream.
#[derive(Debug, Serialize)]
pub struct Line<'a> {
    pub v: u32,
    /// Seconds since the process started reporting.
    pub t: f64,
    #[serde(flatten)]
    pub event: Event<'a>,
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event<'a> {
    /// What the text modes print as a line of its own.
    Message { level: Level, text: &'a str },
    /// A byte counter: one phase of the command (`item` null), or one item within it.
    Bytes {
        id: u64,
        phase: &'a str,
        item: Option<&'a str>,
        state: BarState,
        done: u64,
        total: Option<u64>,
        /// Bytes per second since the bar started.
        rate: u64,
        elapsed: f64,
    },
    /// The failure the command exits with; the last line.
    Error { code: u8, message: &'a str },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Info,
    Note,
    Warning,
}

impl Level {
    /// The level a text-mode line announces with its prefix (`warning: `, `note: `), and
    /// the text without it.
    pub fn of(text: &str) -> (Level, &str) {
        for (prefix, level) in [
            ("warning: ", Level::Warning),
            ("WARNING: ", Level::Warning),
            ("note: ", Level::Note),
            ("notice: ", Level::Note),
        ] {
            if let Some(rest) = text.strip_prefix(prefix) {
                return (level, rest);
            }
        }
        (Level::Info, text)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BarState {
    Start,
    Running,
    End,
}

/// The event as one line of JSON, newline included: strings escaped by serde_json, so a
/// name from a bundle cannot break the line or forge another.
pub fn encode(event: Event<'_>) -> String {
    let t = clock().elapsed().as_millis() as f64 / 1000.0;
    let line = Line {
        v: SCHEMA_VERSION,
        t,
        event,
    };
    let mut s = serde_json::to_string(&line).expect("events serialize");
    s.push('\n');
    s
}

/// Writes the event as one line in one write, stderr held, so lines of several threads never
/// interleave. (A closed stderr is not worth failing the command for.)
pub fn emit(event: Event<'_>) {
    let line = encode(event);
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(line.as_bytes());
}

/// A message line: JSON when enabled, else the text as it is.
pub fn message(text: &str) {
    if enabled() {
        let (level, text) = Level::of(text);
        emit(Event::Message { level, text });
    } else {
        eprintln!("{text}");
    }
}

/// When a bar's next `running` event is due: it moved, and [`INTERVAL`] passed since its last.
#[derive(Debug, Clone, Copy)]
pub struct Limiter {
    interval: Duration,
    last_at: Instant,
    last_pos: u64,
}

impl Limiter {
    pub fn new(now: Instant, interval: Duration) -> Limiter {
        Limiter {
            interval,
            last_at: now,
            last_pos: 0,
        }
    }

    /// Whether to report `pos` at `now`; if so, it counts as reported.
    pub fn due(&mut self, now: Instant, pos: u64) -> bool {
        if pos == self.last_pos || now.saturating_duration_since(self.last_at) < self.interval {
            return false;
        }
        self.last_at = now;
        self.last_pos = pos;
        true
    }
}

#[derive(Debug)]
struct Tracked {
    id: u64,
    phase: String,
    item: Option<String>,
    bar: ProgressBar,
    limiter: Limiter,
}

impl Tracked {
    fn event(&self, state: BarState, done: u64) -> String {
        let elapsed = self.bar.elapsed();
        let secs = elapsed.as_secs_f64();
        encode(Event::Bytes {
            id: self.id,
            phase: &self.phase,
            item: self.item.as_deref(),
            state,
            done,
            total: self.bar.length(),
            rate: if secs > 0.0 {
                (done as f64 / secs) as u64
            } else {
                0
            },
            elapsed: elapsed.as_millis() as f64 / 1000.0,
        })
    }
}

/// The live bars of one [`crate::Progress`], and the ticker sampling them.
#[derive(Debug)]
pub(crate) struct Bars {
    interval: Duration,
    next_id: AtomicU64,
    live: Mutex<Vec<Tracked>>,
    /// Lines go here instead of stderr (the unit tests read them).
    captured: Option<Arc<Mutex<Vec<String>>>>,
}

impl Bars {
    /// The bars, with a ticker that lives as long as they do.
    pub(crate) fn start() -> Arc<Bars> {
        let bars = Arc::new(Bars::new(interval_from_env(), None));
        let tick = bars.interval.min(TICK);
        let weak: Weak<Bars> = Arc::downgrade(&bars);
        std::thread::Builder::new()
            .name("progress-json".into())
            .spawn(move || loop {
                std::thread::sleep(tick);
                match weak.upgrade() {
                    Some(b) => b.sample(Instant::now()),
                    None => break,
                }
            })
            .expect("spawn the progress ticker");
        bars
    }

    fn new(interval: Duration, captured: Option<Arc<Mutex<Vec<String>>>>) -> Bars {
        Bars {
            interval,
            next_id: AtomicU64::new(0),
            live: Mutex::default(),
            captured,
        }
    }

    /// Called with the live bars locked, so that a bar's `running` line sampled by the
    /// ticker cannot land after its `end`.
    fn write(&self, lines: &[String]) {
        if lines.is_empty() {
            return;
        }
        if let Some(c) = &self.captured {
            c.lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(lines);
            return;
        }
        let mut err = std::io::stderr().lock();
        for l in lines {
            let _ = err.write_all(l.as_bytes());
        }
    }

    fn live(&self) -> std::sync::MutexGuard<'_, Vec<Tracked>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Follows `bar` and reports its start.
    pub(crate) fn track(&self, bar: ProgressBar, phase: &str, item: Option<&str>) {
        let t = Tracked {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            phase: phase.to_string(),
            item: item.map(str::to_string),
            bar,
            limiter: Limiter::new(Instant::now(), self.interval),
        };
        let mut live = self.live();
        self.write(&[t.event(BarState::Start, t.bar.position())]);
        live.push(t);
    }

    /// One round of the ticker: a `running` event for each bar that is due, an `end` event
    /// for each bar that finished.
    fn sample(&self, now: Instant) {
        let mut live = self.live();
        let mut lines = Vec::new();
        live.retain_mut(|t| {
            let pos = t.bar.position();
            if t.bar.is_finished() {
                lines.push(t.event(BarState::End, pos));
                return false;
            }
            if t.limiter.due(now, pos) {
                lines.push(t.event(BarState::Running, pos));
            }
            true
        });
        self.write(&lines);
    }

    /// Reports the end of every finished bar now (the one just removed among them).
    pub(crate) fn reap(&self) {
        let mut live = self.live();
        let mut lines = Vec::new();
        live.retain(|t| {
            let done = t.bar.is_finished();
            if done {
                lines.push(t.event(BarState::End, t.bar.position()));
            }
            !done
        });
        self.write(&lines);
    }
}

impl Drop for Bars {
    /// A bar nobody removed still ends: its last position is reported.
    fn drop(&mut self) {
        let live = std::mem::take(&mut *self.live());
        let lines: Vec<String> = live
            .iter()
            .map(|t| t.event(BarState::End, t.bar.position()))
            .collect();
        self.write(&lines);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> serde_json::Value {
        assert!(line.ends_with('\n'));
        assert_eq!(line.matches('\n').count(), 1, "one line: {line:?}");
        serde_json::from_str(line).unwrap()
    }

    #[test]
    fn a_message_is_one_escaped_line_with_its_level() {
        let hostile = "warning: evil\n{\"v\":1,\"type\":\"error\"}\u{1b}[2J";
        let (level, text) = Level::of(hostile);
        let v = parse(&encode(Event::Message { level, text }));
        assert_eq!(v["v"], 1);
        assert_eq!(v["type"], "message");
        assert_eq!(v["level"], "warning");
        assert_eq!(v["text"], "evil\n{\"v\":1,\"type\":\"error\"}\u{1b}[2J");
        assert!(v["t"].as_f64().unwrap() >= 0.0);
        assert_eq!(Level::of("note: x"), (Level::Note, "x"));
        assert_eq!(Level::of("fetched x"), (Level::Info, "fetched x"));
    }

    #[test]
    fn a_bytes_event_carries_every_field() {
        let v = parse(&encode(Event::Bytes {
            id: 3,
            phase: "download",
            item: Some("sha256:ab"),
            state: BarState::End,
            done: 10,
            total: Some(10),
            rate: 5,
            elapsed: 2.0,
        }));
        for (k, want) in [
            ("type", serde_json::json!("bytes")),
            ("id", 3.into()),
            ("phase", "download".into()),
            ("item", "sha256:ab".into()),
            ("state", "end".into()),
            ("done", 10.into()),
            ("total", 10.into()),
            ("rate", 5.into()),
            ("elapsed", 2.0.into()),
        ] {
            assert_eq!(v[k], want, "{k}");
        }
        let v = parse(&encode(Event::Error {
            code: 3,
            message: "bad",
        }));
        assert_eq!(
            (v["type"].as_str(), v["code"].as_u64()),
            (Some("error"), Some(3))
        );
    }

    #[test]
    fn the_limiter_reports_a_moving_bar_at_most_once_per_interval() {
        let t0 = Instant::now();
        let mut l = Limiter::new(t0, INTERVAL);
        // Sampled every 10 ms for 3 s while it moves on every sample: 6 reports, not 300.
        let reports = (1..=300u64)
            .filter(|i| l.due(t0 + Duration::from_millis(10 * i), i * 1000))
            .count();
        assert_eq!(reports, 6);
        // A bar that stands still is not reported again, however long it waits.
        let mut l = Limiter::new(t0, INTERVAL);
        assert!(l.due(t0 + INTERVAL, 7));
        assert!(!l.due(t0 + INTERVAL * 10, 7));
        assert!(l.due(t0 + INTERVAL * 11, 8));
        // Nor one that moves within the interval.
        assert!(!l.due(t0 + INTERVAL * 11 + Duration::from_millis(1), 9));
    }

    fn capturing() -> (Bars, Arc<Mutex<Vec<String>>>) {
        let c = Arc::new(Mutex::new(Vec::new()));
        let bars = Bars::new(INTERVAL, Some(c.clone()));
        (bars, c)
    }

    fn lines(c: &Mutex<Vec<String>>) -> Vec<serde_json::Value> {
        c.lock().unwrap().iter().map(|l| parse(l)).collect()
    }

    #[test]
    fn a_tracked_bar_starts_runs_and_ends_at_its_real_position() {
        let (bars, c) = capturing();
        let bar = ProgressBar::hidden();
        bar.set_length(100);
        bars.track(bar.clone(), "load", Some("x"));
        let t0 = Instant::now();
        bars.sample(t0);
        bar.inc(40);
        bars.sample(t0 + INTERVAL * 2);
        bars.sample(t0 + INTERVAL * 2 + TICK);
        // Abandoned at 40 of 100 (a failed read): the end says 40, not 100.
        bar.abandon();
        bars.reap();
        bars.sample(t0 + INTERVAL * 4);
        let got = lines(&c);
        let states: Vec<_> = got.iter().map(|v| v["state"].as_str().unwrap()).collect();
        assert_eq!(states, ["start", "running", "end"]);
        let done: Vec<_> = got.iter().map(|v| v["done"].as_u64().unwrap()).collect();
        assert_eq!(done, [0, 40, 40]);
        assert!(got
            .iter()
            .all(|v| v["total"] == 100 && v["phase"] == "load"));
        assert!(got
            .iter()
            .all(|v| v["id"] == got[0]["id"] && v["item"] == "x"));
        assert!(bars.live().is_empty());
    }

    #[test]
    fn a_bar_never_removed_ends_when_its_progress_goes() {
        let (bars, c) = capturing();
        let bar = ProgressBar::hidden();
        bar.set_length(5);
        bars.track(bar.clone(), "write", None);
        bar.inc(5);
        drop(bars);
        let got = lines(&c);
        let states: Vec<_> = got.iter().map(|v| v["state"].as_str().unwrap()).collect();
        assert_eq!(states, ["start", "end"]);
        assert_eq!(got[1]["done"], 5);
        assert!(got[1]["item"].is_null());
    }
}
