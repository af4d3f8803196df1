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

/// The script `$file` after the shared prelude (Redis' clock, the time override and `fmt`),
/// joined at compile time.
macro_rules! with_prelude {
    ($file:literal) => {
        concat!(include_str!("lua/prelude.lua"), include_str!($file))
    };
}

pub(crate) static GCRA: LazyLock<LuaScript> =
    LazyLock::new(|| LuaScript::new(with_prelude!("lua/gcra.lua")));
pub(crate) static SLIDING_WINDOW: LazyLock<LuaScript> =
    LazyLock::new(|| LuaScript::new(with_prelude!("lua/sliding_window.lua")));
pub(crate) static DRAIN: LazyLock<LuaScript> =
    LazyLock::new(|| LuaScript::new(with_prelude!("lua/drain.lua")));
