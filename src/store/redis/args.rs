//! The scripts' arguments for one policy, defined once: [`FIELDS`] orders them, [`push_policy`]
//! sends them in that order, and [`prelude`] gives the scripts `POLICY_WIDTH` and
//! `policy_args(b)`, which reads the policy starting at `ARGV[b]` into a table of named fields.
//! Adding a field here changes both sides at once. [`push_literal`] writes the same fields as a
//! Lua table literal, for check scripts compiled for one set of policies (`compiled`), which then
//! get no policy arguments at all.

use std::fmt::Write as _;
use std::sync::Arc;

use fred::types::Value;

use crate::config::compiled::Mode;
use crate::millis;
use crate::store::algorithm::Params;
use crate::store::{
    PolicyCheck, CONCURRENCY_RETRY_MS, EVENTS_MAX, EVENT_REPEAT_MS, EVENT_TTL_MS, SUSPECTS_MAX,
    SUSPECT_BUCKET_MS,
};

use super::algorithm_code;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    /// `f`, `s`, `l`, `t` or `c` (text).
    Alg,
    Limit,
    /// Window ms (concurrency: the lease).
    Window,
    Burst,
    /// 1 for an enforce policy, 0 for shadow.
    Enforce,
    /// ms, 0 = none.
    BlockFor,
    /// 1: checked but charged after the response.
    Deferred,
    /// Escalation multiplier, 0 = none.
    Mult,
    /// Escalation cap, ms.
    Max,
    /// Escalation memory, ms.
    Memory,
    /// The policy's name (text): block reasons and offence records.
    Name,
}

/// Arguments per policy.
pub(super) const WIDTH: usize = FIELDS.len();

/// Every field, in argument order, with its Lua name.
const FIELDS: [(Field, &str); 11] = [
    (Field::Alg, "alg"),
    (Field::Limit, "limit"),
    (Field::Window, "window"),
    (Field::Burst, "burst"),
    (Field::Enforce, "enforce"),
    (Field::BlockFor, "block_for"),
    (Field::Deferred, "deferred"),
    (Field::Mult, "mult"),
    (Field::Max, "max"),
    (Field::Memory, "memory"),
    (Field::Name, "name"),
];

pub(super) fn int(v: u64) -> Value {
    Value::Integer(i64::try_from(v).unwrap_or(i64::MAX))
}

// The name is last and the algorithm first: `Fields::ints` holds every field between them.
const _: () =
    assert!(matches!(FIELDS[0].0, Field::Alg) && matches!(FIELDS[WIDTH - 1].0, Field::Name));

/// A policy's script fields (`N`: how its name is held): what [`push_policy`] sends and
/// [`push_literal`] writes, and what a compiled check script is looked up by (`Compiled` in
/// redis.rs), so a request finds its script without writing the literal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Fields<N> {
    alg: &'static str,
    /// The numeric fields, in [`FIELDS`] order.
    ints: [u64; WIDTH - 2],
    name: N,
}

impl<'a> Fields<&'a Arc<str>> {
    pub(super) fn of(check: &PolicyCheck<'a>) -> Self {
        let policy = check.policy;
        let p = Params::of_check(check);
        let (mult, max, memory) = policy.escalation.map_or((0, 0, 0), |e| {
            (e.multiplier, millis::ceil(e.max), millis::ceil(e.memory))
        });
        let mut ints = [0; WIDTH - 2];
        for (i, (field, _)) in FIELDS[1..WIDTH - 1].iter().enumerate() {
            ints[i] = match field {
                Field::Limit => p.limit,
                Field::Window => p.window_ms,
                Field::Burst => p.burst,
                Field::Enforce => u64::from(policy.mode == Mode::Enforce),
                Field::BlockFor => policy.block_for.map_or(0, millis::ceil),
                Field::Deferred => u64::from(check.deferred),
                Field::Mult => mult,
                Field::Max => max,
                Field::Memory => memory,
                Field::Alg | Field::Name => 0,
            };
        }
        Fields {
            alg: algorithm_code(p.algorithm),
            ints,
            name: &policy.name,
        }
    }

    pub(super) fn to_owned(&self) -> Fields<Arc<str>> {
        Fields {
            alg: self.alg,
            ints: self.ints,
            name: self.name.clone(),
        }
    }

    pub(super) fn matches(&self, owned: &Fields<Arc<str>>) -> bool {
        self.alg == owned.alg && self.ints == owned.ints && **self.name == *owned.name
    }
}

/// Append the arguments of `check`, in [`FIELDS`] order.
pub(super) fn push_policy(args: &mut Vec<Value>, check: &PolicyCheck<'_>) {
    let f = Fields::of(check);
    args.push(Value::String(f.alg.into()));
    args.extend(f.ints.iter().map(|&v| int(v)));
    args.push(Value::String((&**f.name).into()));
}

/// Append the policy of `check` as a Lua table literal with the fields `policy_args` reads, in
/// [`FIELDS`] order: `{alg = 'f', limit = 5, ...}`. `scratch` is reused between calls.
pub(super) fn push_literal(out: &mut String, scratch: &mut Vec<Value>, check: &PolicyCheck<'_>) {
    scratch.clear();
    push_policy(scratch, check);
    out.push('{');
    for (i, ((_, name), value)) in FIELDS.iter().zip(scratch.iter()).enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(name);
        out.push_str(" = ");
        match value {
            Value::Integer(n) => {
                let _ = write!(out, "{n}");
            }
            other => push_lua_string(out, other.as_str().as_deref().unwrap_or("")),
        }
    }
    out.push('}');
}

/// A Lua string literal holding `text` exactly: anything but plain ASCII letters, digits and a
/// few safe marks is written as a decimal escape, so no byte of a name can end the literal.
fn push_lua_string(out: &mut String, text: &str) {
    out.push('"');
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "\\{b:03}");
        }
    }
    out.push('"');
}

/// A check request's shape (`lua/check.lua`, `header`): its policies, revocation entries and
/// flags in one argument. The scripts get these from the prelude.
pub(super) mod shape {
    /// Its first key (after the revocation entries) is the client's block entry.
    pub(in super::super) const BLOCK: u64 = 1;
    /// The request's only group.
    pub(in super::super) const SINGLE: u64 = 2;
    /// The lease id follows.
    pub(in super::super) const LEASE: u64 = 4;
    /// The request id follows.
    pub(in super::super) const NONCE: u64 = 8;
    /// Times the number of revocation entries (at most 3).
    pub(in super::super) const REVS: u64 = 16;
    /// Times the number of policies.
    pub(in super::super) const N: u64 = 64;
}

/// What every script starts with: the contract's constants (so both stores share one number)
/// and the policy argument reader.
pub(super) fn prelude() -> String {
    let mut out = format!(
        "local EVENTS_MAX = {EVENTS_MAX}\nlocal EVENT_TTL_MS = {EVENT_TTL_MS}\n\
         local EVENT_REPEAT_MS = {EVENT_REPEAT_MS}\nlocal SUSPECT_BUCKET_MS = \
         {SUSPECT_BUCKET_MS}\nlocal SUSPECTS_MAX = {SUSPECTS_MAX}\n\
         local CONCURRENCY_RETRY_MS = {CONCURRENCY_RETRY_MS}\nlocal POLICY_WIDTH = {}\n\
         local SHAPE_BLOCK, SHAPE_SINGLE, SHAPE_LEASE, SHAPE_NONCE, SHAPE_REVS, SHAPE_N = \
         {}, {}, {}, {}, {}, {}\n\
         local function policy_args(b)\n  return {{",
        FIELDS.len(),
        shape::BLOCK,
        shape::SINGLE,
        shape::LEASE,
        shape::NONCE,
        shape::REVS,
        shape::N,
    );
    for (i, (field, name)) in FIELDS.iter().enumerate() {
        let text = matches!(field, Field::Alg | Field::Name);
        let sep = if i == 0 { "" } else { ", " };
        let _ = if text {
            write!(out, "{sep}{name} = ARGV[b + {i}]")
        } else {
            write!(out, "{sep}{name} = tonumber(ARGV[b + {i}])")
        };
    }
    out.push_str("}\nend\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::compiled::{Algorithm, Policy};
    use std::time::Duration;

    #[test]
    fn the_reader_names_every_field_at_its_position() {
        let text = prelude();
        assert!(text.contains("local POLICY_WIDTH = 11\n"));
        assert!(text.contains("alg = ARGV[b + 0], limit = tonumber(ARGV[b + 1])"));
        assert!(text.contains("name = ARGV[b + 10]}"));
        let policy = Policy::new("p", Algorithm::TokenBucket, 5, Duration::from_secs(1));
        let mut args = Vec::new();
        push_policy(&mut args, &PolicyCheck::new(&policy, "k"));
        assert_eq!(args.len(), FIELDS.len());
        assert_eq!(args[0], Value::String("t".into()));
        assert_eq!(args[10], Value::String("p".into()));
    }

    #[test]
    fn a_literal_holds_the_same_fields_and_escapes_the_name() {
        let policy = Policy::new(
            "a\"b]]\n",
            Algorithm::FixedWindow,
            5,
            Duration::from_secs(1),
        );
        let mut out = String::new();
        push_literal(&mut out, &mut Vec::new(), &PolicyCheck::new(&policy, "k"));
        assert_eq!(
            out,
            "{alg = \"f\", limit = 5, window = 1000, burst = 5, enforce = 1, block_for = 0, \
             deferred = 0, mult = 0, max = 0, memory = 0, name = \"a\\034b\\093\\093\\010\"}"
        );
    }
}
