//! Progress reporting for the binaries: indicatif bars on a terminal, plain lines when stderr is not one (CI
//! logs, pipes), JSON lines with `--progress json` (wrappers; schema in [`json`]), nothing with
//! `--quiet`.
//!
//! In every mode callers get an `indicatif::ProgressBar` to `inc()`; only bar mode draws it.

pub mod json;

use std::io::IsTerminal as _;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The `--progress` value both binaries take. (The variants carry `//` comments only: doc
/// comments would turn every `--help` that shows the flag into the long format.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Style {
    // Bars on a terminal, else plain lines.
    #[default]
    Auto,
    // Bars (drawn only when stderr is a terminal).
    Bars,
    // Plain lines: the messages, no bars.
    Plain,
    // One JSON object per line on stderr, every line (README: Machine-readable progress).
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Bars,
    Plain,
    Quiet,
    Json,
}

impl Mode {
    pub fn detect(quiet: bool) -> Mode {
        if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Bars
        } else {
            Mode::Plain
        }
    }

    /// The mode `--progress STYLE` and `--quiet` ask for (clap lets only one be given).
    pub fn new(style: Style, quiet: bool) -> Mode {
        match style {
            Style::Auto => Mode::detect(quiet),
            Style::Bars => Mode::Bars,
            Style::Plain => Mode::Plain,
            Style::Json => Mode::Json,
        }
    }
}

/// Sets how this process writes its stderr, before the command runs: with `Style::Json`
/// every line is JSON, its messages ([`notice`]) and its final [`error`] included.
pub fn init(style: Style) {
    if style == Style::Json {
        json::set_enabled();
    }
}

/// A message that is not progress (a warning, a note, a summary): printed with `--quiet`
/// too, as a `message` event in JSON mode.
pub fn notice(msg: impl AsRef<str>) {
    json::message(msg.as_ref());
}

/// The failure a binary exits with: `error: MESSAGE`, or an `error` event in JSON mode.
pub fn error(code: u8, message: &str) {
    if json::enabled() {
        json::emit(json::Event::Error { code, message });
    } else {
        eprintln!("error: {message}");
    }
}

#[derive(Debug, Clone)]
pub struct Progress {
    mode: Mode,
    multi: MultiProgress,
    /// JSON mode: the bars the ticker samples.
    json: Option<Arc<json::Bars>>,
}

impl Progress {
    pub fn new(mode: Mode) -> Progress {
        let multi = MultiProgress::new();
        if mode != Mode::Bars {
            multi.set_draw_target(ProgressDrawTarget::hidden());
        }
        let json = (mode == Mode::Json).then(|| {
            json::set_enabled();
            json::Bars::start()
        });
        Progress { mode, multi, json }
    }

    /// A status line (plain, bar and JSON modes).
    pub fn say(&self, msg: impl AsRef<str>) {
        match self.mode {
            Mode::Quiet => {}
            // Above the bars; `--progress bars` off a terminal draws none, and indicatif
            // would drop the line too.
            Mode::Bars if !self.multi.is_hidden() => {
                let _ = self.multi.println(msg.as_ref());
            }
            Mode::Bars | Mode::Plain | Mode::Json => json::message(msg.as_ref()),
        }
    }

    /// A byte-counting bar with rate and ETA, for a phase of the command (`write`, `load`).
    pub fn bytes(&self, total: u64, label: &str) -> ProgressBar {
        self.bar(total, label, label, None)
    }

    /// A byte-counting bar for one item of a phase (a blob of `download`, a volume of
    /// `restore`); a bar shows the item (a digest shortened), JSON both.
    pub fn item_bytes(&self, total: u64, phase: &str, item: &str) -> ProgressBar {
        let shown = match item.strip_prefix("sha256:") {
            Some(hex) if hex.len() > 12 => &hex[..12],
            _ => item,
        };
        self.bar(total, shown, phase, Some(item))
    }

    fn bar(&self, total: u64, shown: &str, phase: &str, item: Option<&str>) -> ProgressBar {
        let pb = self.multi.add(ProgressBar::new(total));
        pb.set_style(
            ProgressStyle::with_template("{prefix:>12.bold} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta} {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        pb.set_prefix(shown.to_string());
        if self.mode == Mode::Bars {
            pb.enable_steady_tick(Duration::from_millis(200));
        }
        if let Some(j) = &self.json {
            j.track(pb.clone(), phase, item);
        }
        pb
    }

    pub fn remove(&self, pb: &ProgressBar) {
        if let Some(j) = &self.json {
            // Stopped where it is (finish_and_clear would move it to its length), so the
            // end event says how far it really got.
            pb.abandon();
            j.reap();
        }
        pb.finish_and_clear();
        self.multi.remove(pb);
    }
}

/// Human sizes for messages: 1.5 GiB, 20.0 MiB, 512 B.
pub fn human(bytes: u64) -> String {
    indicatif::BinaryBytes(bytes).to_string()
}
