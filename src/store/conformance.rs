//! Conformance vectors every store must pass. Stub.
