-- Runs an Argo CD resource health script the way Argo CD does, for tests/argocd_health.rs.
--
-- The test embeds Lua 5.1 (the `mlua` crate, features lua51 + vendored: no system Lua) and
-- evaluates this chunk, which returns one function:
--
--   run(script_source, script_name, object_source) -> status, message
--
-- object_source is a Lua chunk `return { ... }` holding the resource (the test converts JSON to
-- it). The result is the returned hs.status and hs.message (or "" when the script set none).
-- Errors are raised (error(..., 0)) with a "test-harness:" prefix when the script fails to load
-- or raises an error, or when its result is not what Argo CD accepts (a table whose status is a
-- known health code, message a string or nil).
--
-- Like Argo CD's gopher-lua VM (Lua 5.1, standard libraries closed): the script sees `obj`,
-- the base functions, `table` and a safe `os` (time and date only), but no string, math, io,
-- debug or load functions; string methods ("x"):upper() fail as they do there.

local function fail(text)
  error("test-harness: " .. text, 0)
end

local codes = {
  Healthy = true,
  Progressing = true,
  Degraded = true,
  Suspended = true,
  Missing = true,
  Unknown = true,
}

return function(script, script_name, object_source)
  local object_chunk, load_err = loadstring(object_source, "=object")
  if object_chunk == nil then
    fail("object: " .. load_err)
  end
  setfenv(object_chunk, {})
  local obj = object_chunk()

  local env = {
    obj = obj,
    assert = assert,
    error = error,
    getmetatable = getmetatable,
    ipairs = ipairs,
    next = next,
    pairs = pairs,
    pcall = pcall,
    print = function(...)
      local n = select("#", ...)
      local parts = { ... }
      for i = 1, n do
        io.stderr:write(tostring(parts[i]), i < n and "\t" or "\n")
      end
    end,
    rawequal = rawequal,
    rawget = rawget,
    rawset = rawset,
    select = select,
    setmetatable = setmetatable,
    tonumber = tonumber,
    tostring = tostring,
    type = type,
    unpack = unpack,
    xpcall = xpcall,
    _VERSION = _VERSION,
    table = {
      concat = table.concat,
      insert = table.insert,
      remove = table.remove,
      sort = table.sort,
    },
    os = { time = os.time, date = os.date, clock = os.clock, difftime = os.difftime },
  }
  env._G = env

  local chunk, compile_err = loadstring(script, "=" .. script_name)
  if chunk == nil then
    fail(compile_err)
  end
  setfenv(chunk, env)

  -- No string library: strings get no methods while the script runs.
  local string_meta = getmetatable("")
  local string_index = string_meta.__index
  string_meta.__index = {}
  local ok, hs = pcall(chunk)
  string_meta.__index = string_index
  if not ok then
    fail("script error: " .. tostring(hs))
  end

  if type(hs) ~= "table" then
    fail("the script returned " .. type(hs) .. ", not a table")
  end
  if type(hs.status) ~= "string" or not codes[hs.status] then
    fail("hs.status is not a health status: " .. tostring(hs.status))
  end
  if hs.message ~= nil and type(hs.message) ~= "string" then
    fail("hs.message is a " .. type(hs.message) .. ", not a string")
  end
  return hs.status, hs.message or ""
end
