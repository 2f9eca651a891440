pub mod listener;
pub mod tls;
