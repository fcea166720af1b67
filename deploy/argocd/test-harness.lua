-- Runs an Argo CD resource health script the way Argo CD does, for tests/argocd_health.rs.
--
--   lua5.4 deploy/argocd/test-harness.lua deploy/argocd/vaultkey-health.lua < object.lua
--
-- stdin: a Lua chunk `return { ... }` holding the resource (the test converts JSON to it).
-- stdout: the returned hs.status on the first line, hs.message (or nothing) on the second.
-- Exit status 1 when the script fails to load or raises an error, 2 when its result is not
-- what Argo CD accepts (a table whose status is a known health code, message a string or nil).
--
-- Like Argo CD's gopher-lua VM (Lua 5.1, standard libraries closed): the script sees `obj`,
-- the base functions, `table` and a safe `os` (time and date only), but no string, math, io,
-- debug or load functions; string methods ("x"):upper() fail as they do there.

local function fail(code, text)
  io.stderr:write("test-harness: ", text, "\n")
  os.exit(code)
end

local script_path = arg[1]
if script_path == nil then
  fail(1, "usage: lua5.4 test-harness.lua HEALTH.lua < OBJECT.lua")
end
local script_file = io.open(script_path, "r")
if script_file == nil then
  fail(1, "cannot open " .. script_path)
end
local script = script_file:read("a")
script_file:close()

local object_chunk, load_err = load(io.read("a"), "=object", "t", {})
if object_chunk == nil then
  fail(1, "object: " .. load_err)
end
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
    local parts = table.pack(...)
    for i = 1, parts.n do
      io.stderr:write(tostring(parts[i]), i < parts.n and "\t" or "\n")
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
  unpack = table.unpack,
  xpcall = xpcall,
  _VERSION = "Lua 5.1",
  table = {
    concat = table.concat,
    insert = table.insert,
    remove = table.remove,
    sort = table.sort,
  },
  os = { time = os.time, date = os.date, clock = os.clock, difftime = os.difftime },
}
env._G = env

local chunk, compile_err = load(script, "=" .. script_path, "t", env)
if chunk == nil then
  fail(1, compile_err)
end

-- No string library: strings get no methods while the script runs.
local string_meta = getmetatable("")
local string_index = string_meta.__index
string_meta.__index = {}
local ok, hs = pcall(chunk)
string_meta.__index = string_index
if not ok then
  fail(1, "script error: " .. tostring(hs))
end

local codes = {
  Healthy = true,
  Progressing = true,
  Degraded = true,
  Suspended = true,
  Missing = true,
  Unknown = true,
}
if type(hs) ~= "table" then
  fail(2, "the script returned " .. type(hs) .. ", not a table")
end
if type(hs.status) ~= "string" or not codes[hs.status] then
  fail(2, "hs.status is not a health status: " .. tostring(hs.status))
end
if hs.message ~= nil and type(hs.message) ~= "string" then
  fail(2, "hs.message is a " .. type(hs.message) .. ", not a string")
end
io.write(hs.status, "\n", hs.message or "", "\n")
