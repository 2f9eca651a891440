//! The in-process store. Stub.
