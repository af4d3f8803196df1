//! The Lua scripts. Each touches only keys of one limiter key, which share a hash tag.

use std::sync::LazyLock;

use redis::Script;

/// A script with its source kept at hand for the `EVAL` fallback.
pub(crate) struct LuaScript {
    pub(crate) code: &'static str,
    pub(crate) script: Script,
}

impl LuaScript {
    fn new(code: &'static str) -> Self {
        Self {
            code,
            script: Script::new(code),
        }
    }
}

pub(crate) static GCRA: LazyLock<LuaScript> =
    LazyLock::new(|| LuaScript::new(include_str!("lua/gcra.lua")));
pub(crate) static SLIDING_WINDOW: LazyLock<LuaScript> =
    LazyLock::new(|| LuaScript::new(include_str!("lua/sliding_window.lua")));
pub(crate) static DRAIN: LazyLock<LuaScript> =
    LazyLock::new(|| LuaScript::new(include_str!("lua/drain.lua")));
