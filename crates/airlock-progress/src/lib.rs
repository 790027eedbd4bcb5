//! Progress reporting for the binaries: indicatif bars on a terminal, plain lines when stderr is not one (CI
//! logs, pipes), nothing with `--quiet`.

use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Bars,
    Plain,
    Quiet,
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
}

#[derive(Debug, Clone)]
pub struct Progress {
    mode: Mode,
    multi: MultiProgress,
}

impl Progress {
    pub fn new(mode: Mode) -> Progress {
        let multi = MultiProgress::new();
        if mode != Mode::Bars {
            multi.set_draw_target(ProgressDrawTarget::hidden());
        }
        Progress { mode, multi }
    }

    /// A status line (plain and bar modes).
    pub fn say(&self, msg: impl AsRef<str>) {
        match self.mode {
            Mode::Quiet => {}
            Mode::Bars => {
                let _ = self.multi.println(msg.as_ref());
            }
            Mode::Plain => eprintln!("{}", msg.as_ref()),
        }
    }

    /// A byte-counting bar with rate and ETA.
    pub fn bytes(&self, total: u64, label: &str) -> ProgressBar {
        let pb = self.multi.add(ProgressBar::new(total));
        pb.set_style(
            ProgressStyle::with_template("{prefix:>12.bold} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta} {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        pb.set_prefix(label.to_string());
        if self.mode == Mode::Bars {
            pb.enable_steady_tick(Duration::from_millis(200));
        }
        pb
    }

    pub fn remove(&self, pb: &ProgressBar) {
        pb.finish_and_clear();
        self.multi.remove(pb);
    }
}

/// Human sizes for messages: 1.5 GiB, 20.0 MiB, 512 B.
pub fn human(bytes: u64) -> String {
    indicatif::BinaryBytes(bytes).to_string()
}
