-- The Lua side of the virtual FC's ArduPilot-like bindings (sim/vfc/lua_host.py loads it).
-- ArduPilot's C bindings cost no VM instructions; these wrappers do, so the instruction limit
-- is a little stricter here than on the FC.
local host, debug_sethook = ...
local error, pcall, select, setmetatable, tostring, type = error, pcall, select, setmetatable, tostring, type
local tpack, tunpack, mtype = table.pack, table.unpack, math.type

local function argcheck(n, expected)
  if n > expected then error("bad argument #" .. n .. " (too many arguments)", 3) end
  if n < expected then error("bad argument #" .. n .. " (too few arguments)", 3) end
end

local function call(f, ...)
  local r = tpack(pcall(f, ...))
  if not r[1] then error(tostring(r[2]), 0) end
  return tunpack(r, 2, r.n)
end

local u32mt = {}
local function u32(v)
  v = v & 0xFFFFFFFF
  return setmetatable({ v = v }, u32mt)
end
local function u32v(x)
  if type(x) == "table" then return x.v end
  return x
end
u32mt.__index = {
  -- lua_Integer is 32 bits on ArduPilot: toint wraps above 2^31
  toint = function(self) local v = self.v if v >= 0x80000000 then v = v - 0x100000000 end return v end,
  tofloat = function(self) return self.v + 0.0 end,
}
u32mt.__tostring = function(self) return tostring(self.v) end
u32mt.__add = function(a, b) return u32(u32v(a) + u32v(b)) end
u32mt.__sub = function(a, b) return u32(u32v(a) - u32v(b)) end
u32mt.__eq = function(a, b) return u32v(a) == u32v(b) end
u32mt.__lt = function(a, b) return u32v(a) < u32v(b) end
u32mt.__le = function(a, b) return u32v(a) <= u32v(b) end

local function singleton(name)
  local t = {}
  local function method(fname, nargs, f)
    t[fname] = function(self, ...)
      if self ~= t then error("bad argument #1 to '" .. fname .. "' (" .. name .. " expected)", 2) end
      argcheck(select("#", ...), nargs)
      return f(...)
    end
  end
  return t, method
end

local function integer(x, lo, hi, what)
  if mtype(x) == "float" and x == x // 1 then x = x // 1 | 0 end
  if mtype(x) ~= "integer" or x < lo or x > hi then
    error("bad argument (" .. what .. " out of range)", 3)
  end
  return x
end

local function make_env()
  local env = {}
  for _, k in ipairs({ "assert", "error", "ipairs", "next", "pairs", "pcall", "setmetatable", "tonumber",
                       "tostring", "type" }) do
    env[k] = _G[k]
  end
  env.load = function(chunk, name, mode, e) return load(chunk, name, "t", e or env) end
  for _, lib in ipairs({ "math", "string", "table" }) do
    local copy = {}
    for k, v in pairs(_G[lib]) do copy[k] = v end
    env[lib] = copy
  end

  local arming, am = singleton("arming")
  am("get_aux_auth_id", 0, function() return host.aux_get_id() end)
  am("set_aux_auth_passed", 1, function(id) host.aux_passed(integer(id, 0, 255, "auth_id")) end)
  am("set_aux_auth_failed", 2, function(id, msg)
    if type(msg) ~= "string" then error("bad argument #3 (string expected)", 2) end
    host.aux_failed(integer(id, 0, 255, "auth_id"), msg)
  end)
  am("is_armed", 0, function() return host.is_armed() end)
  am("arm", 0, function() return host.arm_request() end)
  am("disarm", 0, function() return host.disarm_request() end)
  env.arming = arming

  local mavlink = {}
  -- mavlink methods accept both ':' and '.' (arg_offset in lua_bindings.cpp)
  local function body(nargs, f, ...)
    argcheck(select("#", ...), nargs)
    return f(...)
  end
  local function mav(fname, nargs, f)
    mavlink[fname] = function(...)
      if select("#", ...) > 0 and (...) == mavlink then return body(nargs, f, select(2, ...)) end
      return body(nargs, f, ...)
    end
  end
  mav("init", 2, function(q, n) call(host.mav_init, integer(q, 0, 25, "queue"), integer(n, 0, 25, "count")) end)
  mav("register_rx_msgid", 1, function(id) return call(host.mav_register, integer(id, 0, 0xFFFFFF, "msgid")) end)
  mav("receive_chan", 0, function()
    local msg, chan, ts = call(host.mav_receive)
    if msg == nil then return end
    return msg, chan, u32(ts)
  end)
  mav("send_chan", 3, function(chan, msgid, payload)
    if type(payload) ~= "string" then error("bad argument #3 (string expected)", 2) end
    return call(host.mav_send, integer(chan, 0, host.channels - 1, "chan"), integer(msgid, 0, 0xFFFFFF, "msgid"),
                payload)
  end)
  mav("block_command", 1, function(id) return host.mav_block(integer(id, 0, 0xFFFF, "command")) end)
  env.mavlink = mavlink

  local gcs, gm = singleton("gcs")
  gm("send_text", 2, function(sev, text)
    if type(text) ~= "string" then error("bad argument #3 (string expected)", 2) end
    host.send_text(integer(sev, 0, 7, "severity"), text)
  end)
  env.gcs = gcs

  local io = {}
  io.open = function(path, mode)
    if type(path) ~= "string" then error("bad argument #1 to 'open' (string expected)", 2) end
    mode = mode or "r"
    if mode ~= "r" and mode ~= "rb" then return nil, path .. ": read-only in this host", 13 end
    local data = host.file_read(path)
    if data == nil then return nil, path .. ": No such file or directory", 2 end
    local pos = 1
    local f = {}
    function f.read(self, n)
      if pos > #data then return nil end
      local chunk
      if n == "a" or n == "*a" then chunk = string.sub(data, pos) else chunk = string.sub(data, pos, pos + n - 1) end
      pos = pos + #chunk
      return chunk
    end
    function f.close(self) data = "" return true end
    return f
  end
  env.io = io

  local param, pm = singleton("param")
  pm("get", 1, function(name)
    if type(name) ~= "string" then error("bad argument #2 (string expected)", 2) end
    return host.param_get(name)
  end)
  env.param = param

  env.millis = function(...) argcheck(select("#", ...), 0) return u32(host.millis()) end
  env.micros = function(...) argcheck(select("#", ...), 0) return u32(host.millis() * 1000) end
  env.uint32_t = function(v) return u32(u32v(v or 0) // 1 | 0) end
  return env
end

local state = { overtime = false }
local function hook()
  if not state.overtime then
    state.overtime = true
    debug_sethook(hook, "", 1)  -- like lua_scripts::hook: keep failing until the run unwinds
  end
  error("Exceeded CPU time", 0)
end

-- Called from Python, pcall(fn) then runs no VM instruction outside the script: after an overrun
-- the hook fires on every instruction, so any Lua code of ours around the call would fail too.
local function arm_hook(limit)
  state.overtime = false
  debug_sethook(hook, "", limit)
end

local function compile(source, chunkname, env)
  return load(source, chunkname, "t", env)
end

return { make_env = make_env, arm_hook = arm_hook, pcall = pcall, compile = compile, state = state,
         clear_hook = debug_sethook }
