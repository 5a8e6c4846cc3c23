//! One error type; its variant decides the exit code (2 = the user's input, 1 = anything else).
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A config key has a bad value, is unknown, or is missing.
    #[error("config error at `{key}`: {msg}")]
    Config { key: String, msg: String },
    /// A data file or folder can't be used.
    #[error("data error in {}: {msg}", path.display())]
    Data { path: PathBuf, msg: String },
    /// A command-line argument is wrong.
    #[error("{0}")]
    Usage(String),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A checkpoint does not fit the model it is loaded into.
    #[error("checkpoint {}: {msg}", path.display())]
    Checkpoint { path: PathBuf, msg: String },
    /// The device can't be used.
    #[error("device error: {0}")]
    Device(String),
    /// Training diverged or failed.
    #[error("{0}")]
    Training(String),
}

impl Error {
    pub fn config(key: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Config {
            key: key.into(),
            msg: msg.into(),
        }
    }
    pub fn data(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Data {
            path: path.into(),
            msg: msg.into(),
        }
    }
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
    /// Exit code for the CLI: 2 when the user's input (arguments, config, data, paths,
    /// checkpoints, device) is at fault, 1 otherwise (training failures, bugs).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Training(_) => 1,
            _ => 2,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
