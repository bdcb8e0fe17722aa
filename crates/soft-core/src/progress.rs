//! What long-running work reports as it goes. The library only emits events; the CLI turns
//! them into progress bars or log lines, the web app into signals. Events carry plain numbers
//! only, so every layer (the model's generation included) can report without knowing another.

#[derive(Debug, Clone)]
pub enum Event<'a> {
    /// A phase begins, with its number of steps when known.
    Begin { what: &'a str, total: Option<u64> },
    /// One step of the current phase is done.
    Step { loss: Option<f32> },
    /// An epoch ended: its mean training loss and the validation HR@10 and NDCG@10.
    Epoch { epoch: usize, loss: f32, hr_at_10: f64, ndcg_at_10: f64 },
    /// The current phase ended.
    End,
    /// A note worth showing (early stopping, the best epoch...).
    Note(String),
}

pub type Progress<'a> = &'a mut dyn FnMut(Event);

/// A sink that ignores everything, for tests and callers that do not care.
pub fn silent(_: Event) {}
