//! Errors the library reports; each message says what is wrong and how to fix it.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error(
        "no GPU adapter found ({0}). Install a Vulkan, Metal or DX12 driver; on a machine \
         without a GPU install Mesa's lavapipe (`apt-get install mesa-vulkan-drivers`) and \
         set WGPU_BACKEND=vulkan"
    )]
    NoAdapter(String),
    #[error("GPU error: {0}")]
    Gpu(String),
    #[error("shader error in {file}:\n{message}")]
    Shader { file: String, message: String },
    #[error("invalid problem: {0}")]
    Problem(String),
    #[error("too large: {0}")]
    TooLarge(String),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("file error: {0}")]
    Io(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
