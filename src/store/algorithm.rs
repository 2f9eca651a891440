//! The four algorithms as pure integer arithmetic on millisecond timestamps, shared by the
//! memory store and mirrored line by line in the Redis Lua script. Stub.
