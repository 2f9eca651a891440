//! Escaping of key components. Stub.
