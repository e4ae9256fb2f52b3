-- FlightSeal arming gate for ArduPilot (AP_Scripting, Lua 5.3).
--
-- Arming is refused through Lua auxiliary authorisation until the FlightSeal agent on the
-- companion computer has sent a fresh "pass" verdict. Protocol: docs/adr/0005-gate-protocol.md, transport 0012,
-- authentication 0015.
--  * fail-closed: blocked from boot; a pass lapses after PASS_LAPSE_MS; a fail, a malformed
--    verdict or any error in this script blocks again;
--  * only verdicts from the agent's channel and system/component id, bound to this gate's per-load
--    nonce, carrying an HMAC-SHA256 under the airframe's gate key (a file the agent installed), with a
--    strictly increasing (epoch, counter) sequence, are taken; each one is answered with an ack the
--    gate authenticates the same way; verdicts with a wrong MAC are counted and reported, never acted on;
--  * never arms or disarms: while armed, a fail or a lapse only refuses the next arming;
--  * self-contained: it decodes the one message it needs from the raw mavlink_message_t.
-- The constants below are part of this file's digest, so the signed manifest attests them too.

local GATE_VERSION = 4            -- sent in every ack

local AGENT_SYSID = 1
local AGENT_COMPID = 191          -- MAV_COMP_ID_ONBOARD_COMPUTER
local AGENT_CHANNEL = 1           -- MAVLink channel of SERIAL1, the companion computer's port
local KEY_FILES = { "APM/flightseal_gate.key", "flightseal_gate.key" }  -- a board's SD card, then SITL's directory
local KEY_LEN = 32
local MAC_LEN = 16                -- HMAC-SHA256, truncated
local MIN_VM_I_COUNT = 100000     -- SCR_VM_I_COUNT this gate needs: a MAC costs about 11000 VM instructions
local MAX_MACS_PER_RUN = 2        -- verdicts authenticated per run, so a run stays within MIN_VM_I_COUNT
local PASS_LAPSE_MS = 3000
local UPDATE_MS = 100
local RX_QUEUE = 25               -- ArduPilot's largest script queue: a 57600-baud radio (~40 TUNNELs/s) cannot
local MAX_MSGS_PER_RUN = 25       -- fill it between two runs, so a flood from it never pushes the agent's verdicts out
local MAX_CRCS_PER_RUN = 12       -- CRC checks (~1,400 VM instructions each) per run; the rest wait for the next

local MSG_TUNNEL = 385
local CRC_EXTRA = 147             -- TUNNEL
local PAYLOAD_LEN = 133           -- TUNNEL, untruncated: payload_type(2) target(2) length(1) payload(128)
local TUNNEL_TYPE = 62946         -- 0xF5E2: FlightSeal gate verdict (private range)
local MAGIC = "FSV3"              -- verdict: magic kind nonce(8) epoch(i4) counter(i4) text length, text, MAC
local ACK_MAGIC = "FSA4"          -- ack: magic result version flags foreign(I2) nonce(8) epoch counter gate-epoch, MAC
local ACK_ARMED = 1               -- flags: the vehicle is armed (the agent trusts this, not a HEARTBEAT anyone can send)
local HEADER = 22
local MAX_TEXT = 41               -- ArduPilot keeps 42 bytes of aux auth text, NUL included
local VERDICT_PASS = 1
local VERDICT_FAIL = 2
local ACCEPTED, STALE, DENIED, FAILED = 0, 1, 2, 4   -- MAV_RESULT values; STALE: nonce not ours

local PREFIX = "FlightSeal: "
local WAITING = PREFIX .. "waiting"
local LAPSED = PREFIX .. "verdict lapsed"
local BAD = PREFIX .. "bad verdict"
local BROKEN = PREFIX .. "gate error"
local NO_KEY = PREFIX .. "no gate key"
local LOW_VM = PREFIX .. "SCR_VM_I_COUNT too low"
local FORGED = PREFIX .. "forged verdict seen"
local PASSING = PREFIX .. "pass"

local K = {
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2 }
local M = 0xFFFFFFFF
local W = {}
-- one SHA-256 compression of the 64-byte block into state h (8 words), in place
local function compress(h, block)
  local w = W
  for i = 1, 16 do w[i] = string.unpack(">I4", block, i * 4 - 3) end
  for i = 17, 64 do
    local x, y = w[i - 15], w[i - 2]
    w[i] = (w[i - 16] + w[i - 7] + ((x >> 7 | x << 25) ~ (x >> 18 | x << 14) ~ (x >> 3))
      + ((y >> 17 | y << 15) ~ (y >> 19 | y << 13) ~ (y >> 10))) & M
  end
  local a, b, c, d, e, f, g, hh = h[1], h[2], h[3], h[4], h[5], h[6], h[7], h[8]
  for i = 1, 64 do
    local t1 = hh + ((e >> 6 | e << 26) ~ (e >> 11 | e << 21) ~ (e >> 25 | e << 7)) + (g ~ (e & (f ~ g))) + K[i] + w[i]
    hh, g, f, e, d, c, b = g, f, e, (d + t1) & M, c, b, a
    a = (t1 + ((b >> 2 | b << 30) ~ (b >> 13 | b << 19) ~ (b >> 22 | b << 10)) + ((b & c) | (d & (b | c)))) & M
  end
  h[1], h[2], h[3], h[4] = (h[1] + a) & M, (h[2] + b) & M, (h[3] + c) & M, (h[4] + d) & M
  h[5], h[6], h[7], h[8] = (h[5] + e) & M, (h[6] + f) & M, (h[7] + g) & M, (h[8] + hh) & M
end

-- SHA-256 of prefix state h0 (after n0 bytes) extended by msg; returns the 32-byte digest
local function sha256_from(h0, n0, msg)
  local h = { h0[1], h0[2], h0[3], h0[4], h0[5], h0[6], h0[7], h0[8] }
  local total = n0 + #msg
  msg = msg .. "\128" .. string.rep("\0", (55 - total) % 64) .. string.pack(">I8", total * 8)
  for i = 1, #msg, 64 do compress(h, string.sub(msg, i, i + 63)) end
  return string.pack(">I4I4I4I4I4I4I4I4", h[1], h[2], h[3], h[4], h[5], h[6], h[7], h[8])
end

local IV = { 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19 }
local inner, outer = nil, nil     -- SHA-256 states after the key's ipad and opad blocks

local function xor_block(key, pad)
  local out = {}
  for i = 1, 64 do out[i] = string.char(((string.byte(key, i) or 0) ~ pad) & 0xFF) end
  return table.concat(out)
end

local function mac(data)
  return string.sub(sha256_from(outer, 64, sha256_from(inner, 64, data)), 1, MAC_LEN)
end

-- the gate key: 32 random bytes the agent wrote beside the scripts directory at `flightseal gate install`
local function load_key()
  for _, path in ipairs(KEY_FILES) do
    local f = io.open(path, "rb")
    if f ~= nil then
      local key = f:read(KEY_LEN + 1)
      f:close()
      if key == nil or #key ~= KEY_LEN then return nil end
      return key
    end
  end
  return nil
end

local auth_id = arming:get_aux_auth_id()
if auth_id == nil then
  -- ArduPilot itself now refuses arming ("Too many auxiliary authorisers")
  gcs:send_text(2, PREFIX .. "no aux auth slot")
  return
end
arming:set_aux_auth_failed(auth_id, WAITING)

local vm = param:get("SCR_VM_I_COUNT")
if vm == nil or vm < MIN_VM_I_COUNT then
  -- a MAC would overrun the VM limit and kill the gate in the middle of a run: refuse, and say why
  arming:set_aux_auth_failed(auth_id, LOW_VM)
  gcs:send_text(2, LOW_VM .. " (need " .. MIN_VM_I_COUNT .. ")")
  return
end
local key = load_key()
if key == nil then
  arming:set_aux_auth_failed(auth_id, NO_KEY)
  gcs:send_text(2, NO_KEY .. ": run flightseal gate install")
  return
end
inner = { table.unpack(IV) }
compress(inner, xor_block(key, 0x36))
outer = { table.unpack(IV) }
compress(outer, xor_block(key, 0x5C))
key = nil
-- A new nonce at every load (boot or scripting restart): a verdict made for an earlier load, whose
-- sequence this load has not seen, is refused as STALE. Fresh, not secret: boot count, clocks and
-- the PRNG, through the MAC so the agent's key decides it and nobody can choose it.
local nonce = string.sub(mac(string.pack("<c4i4I4I4i4i4", "FSN3", math.floor(param:get("STAT_BOOTCNT") or 0),
  millis():toint() & 0xFFFFFFFF, micros():toint() & 0xFFFFFFFF, math.random(0, 0x7FFFFFFF),
  math.random(0, 0x7FFFFFFF))), 1, 8)

local pass_ms = nil               -- receive time of the newest pass, nil when blocking
local block_text = WAITING
local shown = WAITING
local last_epoch, last_counter = 0, 0
local foreign = 0                 -- verdicts from the agent's ids whose MAC was wrong, since load
local macs = 0                    -- MACs computed in this run
local crcs = 0                    -- CRCs checked in this run

local function crc_ok(msg, len)
  local bytes = { string.byte(msg, 4, 12 + len) }
  bytes[#bytes + 1] = CRC_EXTRA
  local crc = 0xFFFF
  for i = 1, #bytes do
    local tmp = bytes[i] ~ (crc & 0xFF)
    tmp = (tmp ~ (tmp << 4)) & 0xFF
    crc = ((crc >> 8) ~ (tmp << 8) ~ (tmp << 3) ~ (tmp >> 4)) & 0xFFFF
  end
  -- ck[] holds the received CRC; ArduPilot hands BAD_CRC frames to scripts too
  return crc == string.unpack("<I2", msg, 277)
end

local acks = {}                   -- sent after the run's new state is in effect

local function ack(result, epoch, counter)
  local flags = arming:is_armed() and ACK_ARMED or 0
  local data = string.pack("<c4BBBI2c8i4i4i4", ACK_MAGIC, result, GATE_VERSION, flags, foreign & 0xFFFF, nonce,
                           epoch, counter, last_epoch)
  data = data .. mac(data)
  acks[#acks + 1] = string.pack("<I2BBB", TUNNEL_TYPE, AGENT_SYSID, AGENT_COMPID, #data) .. data
    .. string.rep("\0", 128 - #data)
end

local function block(text)
  pass_ms = nil
  block_text = text
end

-- A fail verdict's text is what the pilot reads after "PreArm: ": ours, printable, within ArduPilot's buffer.
local function valid_text(text)
  return #text > #PREFIX and #text <= MAX_TEXT and string.sub(text, 1, #PREFIX) == PREFIX
    and string.find(text, "[^\32-\126]") == nil
end

-- msg is ArduPilot's mavlink_message_t: checksum(2) magic len incompat compat seq sysid compid
-- msgid(3) payload(264) ck(2) signature(13); MAVLink2 drops trailing zero bytes, so pad to PAYLOAD_LEN
local function handle(msg, chan, ts)
  if #msg < 278 then return end
  local magic, len = string.unpack("<BB", msg, 3)
  local sysid, compid, msgid = string.unpack("<BBI3", msg, 8)
  if msgid ~= MSG_TUNNEL or magic ~= 0xFD or len > PAYLOAD_LEN then return end
  if chan ~= AGENT_CHANNEL or sysid ~= AGENT_SYSID or compid ~= AGENT_COMPID then return end
  local payload = string.sub(msg, 13, 12 + len) .. string.rep("\0", PAYLOAD_LEN - len)
  local ptype, _, _, plen = string.unpack("<I2BBB", payload)
  if ptype ~= TUNNEL_TYPE or plen < HEADER + MAC_LEN or plen > PAYLOAD_LEN - 5 then return end
  crcs = crcs + 1
  if not crc_ok(msg, len) then return end
  local tag, verdict, vnonce, epoch, counter, tlen = string.unpack("<c4Bc8i4i4B", payload, 6)
  if tag ~= MAGIC or HEADER + tlen + MAC_LEN ~= plen then return end
  macs = macs + 1
  local data = string.sub(payload, 6, 5 + HEADER + tlen)
  if mac(data) ~= string.sub(payload, 6 + HEADER + tlen, 5 + plen) then
    -- not made with the gate key: never acted on, never answered; counted in every ack and told once
    if foreign == 0 then gcs:send_text(2, FORGED) end
    foreign = foreign + 1
    return
  end
  if vnonce ~= nonce then
    ack(STALE, epoch, counter)  -- made for an earlier load (a replay, or the agent not yet told): our nonce
    return
  end
  if epoch < last_epoch or (epoch == last_epoch and counter <= last_counter) then
    ack(DENIED, epoch, counter)   -- replayed or reordered: ignored; the ack tells the agent where we are
    return
  end
  last_epoch, last_counter = epoch, counter
  local text = string.sub(data, HEADER + 1)
  if verdict == VERDICT_PASS and tlen == 0 then
    pass_ms = ts
    ack(ACCEPTED, epoch, counter)
  elseif verdict == VERDICT_FAIL and valid_text(text) then
    block(text)
    ack(ACCEPTED, epoch, counter)
  else
    block(BAD)
    ack(FAILED, epoch, counter)
  end
end

local function apply(now)
  local text = block_text
  if pass_ms ~= nil then
    local age = now - pass_ms
    if age < 0 then age = age + 4294967296 end   -- millis() wrapped
    if age < PASS_LAPSE_MS then
      text = PASSING
    else
      block(LAPSED)
      text = LAPSED
    end
  end
  if pass_ms ~= nil then
    arming:set_aux_auth_passed(auth_id)
  else
    arming:set_aux_auth_failed(auth_id, string.sub(text, 1, 41))
  end
  if text ~= shown then
    shown = text
    gcs:send_text(pass_ms ~= nil and 6 or 4, text)
  end
end

local function step()
  acks = {}
  macs, crcs = 0, 0
  for _ = 1, MAX_MSGS_PER_RUN do
    if macs >= MAX_MACS_PER_RUN or crcs >= MAX_CRCS_PER_RUN then break end   -- the rest wait for the next run
    local msg, chan, ts = mavlink:receive_chan()
    if msg == nil then break end
    handle(msg, chan, ts:toint())
  end
  apply(millis():toint())
  for i = 1, #acks do
    mavlink:send_chan(AGENT_CHANNEL, MSG_TUNNEL, acks[i])
  end
end

local function update()
  local ok, err = pcall(step)
  if not ok then
    block(BROKEN)
    arming:set_aux_auth_failed(auth_id, BROKEN)
    shown = BROKEN
    gcs:send_text(3, string.sub(BROKEN .. ": " .. tostring(err), 1, 50))
  end
  return update, UPDATE_MS
end

mavlink:init(RX_QUEUE, 1)
mavlink:register_rx_msgid(MSG_TUNNEL)
gcs:send_text(6, "FlightSeal gate v" .. GATE_VERSION .. " running")
return update, UPDATE_MS
