//! Progress for long work: an indicatif bar with rate and ETA on a terminal, plain log lines
//! otherwise (CI logs, pipes).

use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use soft_core::progress::Event;

pub struct Reporter {
    bar: Option<ProgressBar>,
    terminal: bool,
    phase: String,
    started: Instant,
    steps: u64,
    total: Option<u64>,
    last_loss: Option<f32>,
    last_line: Instant,
}

/// Without a terminal, a log line at most this often.
const LOG_EVERY_SECS: f64 = 15.0;

impl Reporter {
    pub fn new() -> Self {
        Self {
            bar: None,
            terminal: std::io::stderr().is_terminal(),
            phase: String::new(),
            started: Instant::now(),
            steps: 0,
            total: None,
            last_loss: None,
            last_line: Instant::now(),
        }
    }

    pub fn handle(&mut self, event: Event) {
        match event {
            Event::Begin { what, total } => {
                self.phase = what.to_string();
                self.started = Instant::now();
                self.last_line = Instant::now();
                self.steps = 0;
                self.total = total;
                if self.terminal {
                    let bar = total.map(ProgressBar::new).unwrap_or_else(ProgressBar::new_spinner);
                    bar.set_style(
                        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {per_sec} ETA {eta} {msg}")
                            .expect("valid template")
                            .progress_chars("=> "),
                    );
                    bar.set_prefix(what.to_string());
                    self.bar = Some(bar);
                }
            }
            Event::Step { loss } => {
                self.steps += 1;
                self.last_loss = loss.or(self.last_loss);
                if let Some(bar) = &self.bar {
                    bar.inc(1);
                    if let Some(l) = loss {
                        bar.set_message(format!("loss {l:.4}"));
                    }
                } else if self.last_line.elapsed().as_secs_f64() >= LOG_EVERY_SECS {
                    self.last_line = Instant::now();
                    let secs = self.started.elapsed().as_secs_f64();
                    let rate = self.steps as f64 / secs.max(1e-9);
                    let eta = self
                        .total
                        .map(|t| format!(", ETA {:.0} s", t.saturating_sub(self.steps) as f64 / rate.max(1e-9)))
                        .unwrap_or_default();
                    let total = self.total.map(|t| format!("/{t}")).unwrap_or_default();
                    let loss = self.last_loss.map(|l| format!(" loss {l:.4}")).unwrap_or_default();
                    eprintln!("{}: step {}{total}{loss} ({rate:.2} steps/s{eta})", self.phase, self.steps);
                }
            }
            Event::End => {
                let secs = self.started.elapsed().as_secs_f64();
                if let Some(bar) = self.bar.take() {
                    bar.finish_and_clear();
                }
                if !self.terminal {
                    eprintln!(
                        "{}: {} steps in {secs:.1} s ({:.2} steps/s)",
                        self.phase,
                        self.steps,
                        self.steps as f64 / secs.max(1e-9)
                    );
                }
            }
            Event::Epoch { epoch, loss, hr_at_10, ndcg_at_10 } => {
                eprintln!("epoch {epoch}: loss {loss:.4}  valid HR@10 {hr_at_10:.4}  NDCG@10 {ndcg_at_10:.4}");
            }
            Event::Note(text) => eprintln!("{text}"),
        }
    }
}
