//! The side port: `/metrics`, `/healthz`, `/readyz`.

pub mod server;
