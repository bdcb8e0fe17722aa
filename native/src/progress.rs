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
    last_loss: Option<f32>,
}

impl Reporter {
    pub fn new() -> Self {
        Self { bar: None, terminal: std::io::stderr().is_terminal(), phase: String::new(), started: Instant::now(), steps: 0, last_loss: None }
    }

    pub fn handle(&mut self, event: Event) {
        match event {
            Event::Begin { what, total } => {
                self.phase = what.to_string();
                self.started = Instant::now();
                self.steps = 0;
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
                }
            }
            Event::End => {
                let secs = self.started.elapsed().as_secs_f64();
                if let Some(bar) = self.bar.take() {
                    bar.finish_and_clear();
                }
                if !self.terminal {
                    eprintln!("{}: {} steps in {secs:.1} s ({:.2} steps/s)", self.phase, self.steps, self.steps as f64 / secs.max(1e-9));
                }
            }
            Event::Epoch { epoch, loss, valid } => {
                eprintln!("epoch {epoch}: loss {loss:.4}  valid HR@10 {:.4}  NDCG@10 {:.4}", valid.hr_at(10), valid.ndcg_at(10));
            }
            Event::Note(text) => eprintln!("{text}"),
        }
    }
}
