//! One error type for the core library. Every variant that comes from input names where the
//! input was (file and line, or tensor), so the binary can print it as is; errors from other
//! crates are kept as sources.

use std::path::PathBuf;

/// What the `tokenizers` crate returns as its error.
pub type TokenizerError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Malformed content at a known line (1-based) of a text file.
    #[error("{path}:{line}: {msg}")]
    Parse { path: PathBuf, line: usize, msg: String },

    /// Malformed content in a file where no line applies (binary formats, whole-file JSON).
    #[error("{path}: {msg}")]
    Format { path: PathBuf, msg: String },

    /// A JSON file that does not parse or does not have the expected fields.
    #[error("{path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    /// A safetensors file that cannot be read or written.
    #[error("{path}: {source}")]
    Safetensors {
        path: PathBuf,
        #[source]
        source: safetensors::SafeTensorError,
    },

    /// A named tensor is missing or does not have the expected shape or type.
    #[error("{path}: tensor `{tensor}`: {msg}")]
    Tensor { path: PathBuf, tensor: String, msg: String },

    /// A setting or argument that cannot be used; `what` names the setting or its group.
    #[error("{what}: {msg}")]
    Config { what: &'static str, msg: String },

    /// Something asked for is not where it was looked for (a named model, a data set).
    #[error("{0}")]
    NotFound(String),

    /// Input handed to a function that it cannot work on (an empty batch, a token outside the
    /// vocabulary, too little data to train on).
    #[error("{0}")]
    Input(String),

    /// The model is not in the state the operation needs (no adapter to save, one already attached).
    #[error("{0}")]
    ModelState(String),

    /// Training produced a loss that is not a finite number.
    #[error("{what}: loss became {value} at {at}")]
    NonFiniteLoss { what: &'static str, value: f32, at: String },

    /// The tokenizer library failed; `context` says at what.
    #[error("{context}: {source}")]
    Tokenizer {
        context: String,
        #[source]
        source: TokenizerError,
    },

    /// The WGSL grounding kernel (soft-gpu) could not start or run.
    #[cfg(feature = "gpu")]
    #[error("the WGSL grounding kernel: {0}")]
    Kernel(#[from] soft_gpu::GpuError),

    /// A tensor's values could not be read back in the expected element type.
    #[error("reading tensor values: {0}")]
    TensorData(#[from] burn::tensor::DataError),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    pub fn parse(path: impl Into<PathBuf>, line: usize, msg: impl Into<String>) -> Self {
        Error::Parse { path: path.into(), line, msg: msg.into() }
    }

    pub fn format(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Format { path: path.into(), msg: msg.into() }
    }

    pub fn json(path: impl Into<PathBuf>, source: serde_json::Error) -> Self {
        Error::Json { path: path.into(), source }
    }

    pub fn safetensors(path: impl Into<PathBuf>, source: safetensors::SafeTensorError) -> Self {
        Error::Safetensors { path: path.into(), source }
    }

    pub fn tensor(path: impl Into<PathBuf>, tensor: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Tensor { path: path.into(), tensor: tensor.into(), msg: msg.into() }
    }

    pub fn config(what: &'static str, msg: impl Into<String>) -> Self {
        Error::Config { what, msg: msg.into() }
    }

    pub fn tokenizer(context: impl Into<String>, source: TokenizerError) -> Self {
        Error::Tokenizer { context: context.into(), source }
    }
}
