-- FlightSeal arming gate for ArduPilot (AP_Scripting, Lua 5.3).
--
-- Arming is refused through Lua auxiliary authorisation until the FlightSeal agent on the
-- companion computer has sent a fresh "pass" verdict. Protocol: docs/adr/0005-gate-protocol.md, transport 0012.
--  * fail-closed: blocked from boot; a pass lapses after PASS_LAPSE_MS; a fail, a malformed
--    verdict or any error in this script blocks again;
--  * only verdicts from the agent's channel and system/component id, with a strictly increasing
--    (epoch, counter) sequence, are taken; each one is answered with a COMMAND_ACK;
--  * never arms or disarms: while armed, a fail or a lapse only refuses the next arming;
--  * self-contained: it decodes the one message it needs from the raw mavlink_message_t.
-- The constants below are part of this file's digest, so the signed manifest attests them too.

local GATE_VERSION = 2            -- sent in every COMMAND_ACK (progress field)

local AGENT_SYSID = 1
local AGENT_COMPID = 191          -- MAV_COMP_ID_ONBOARD_COMPUTER
local AGENT_CHANNEL = 1           -- MAVLink channel of SERIAL1, the companion computer's port
local REQUIRE_SIGNED = false      -- true: take only MAVLink2-signed verdicts
local PASS_LAPSE_MS = 3000
local UPDATE_MS = 100
local MAX_MSGS_PER_RUN = 4        -- bounds the work per run far below SCR_VM_I_COUNT
local RX_QUEUE = 8

local MSG_TUNNEL = 385
local MSG_COMMAND_ACK = 77
local CRC_EXTRA = 147             -- TUNNEL
local PAYLOAD_LEN = 133           -- TUNNEL, untruncated: payload_type(2) target(2) length(1) payload(128)
local TUNNEL_TYPE = 62946         -- 0xF5E2: FlightSeal gate verdict (private range)
local GATE_CMD = 31010            -- MAV_CMD_USER_1: the command our acks are about
local MAGIC = "FSV2"
local HEADER = 14                 -- magic(4) kind(1) epoch(i4) counter(i4) text length(1), then the text
local MAX_TEXT = 41               -- ArduPilot keeps 42 bytes of aux auth text, NUL included
local VERDICT_PASS = 1
local VERDICT_FAIL = 2
local ACCEPTED, DENIED, FAILED = 0, 2, 4

local PREFIX = "FlightSeal: "
local WAITING = PREFIX .. "waiting"
local LAPSED = PREFIX .. "verdict lapsed"
local BAD = PREFIX .. "bad verdict"
local BROKEN = PREFIX .. "gate error"
local PASSING = PREFIX .. "pass"

local auth_id = arming:get_aux_auth_id()
if auth_id == nil then
  -- ArduPilot itself now refuses arming ("Too many auxiliary authorisers")
  gcs:send_text(2, PREFIX .. "no aux auth slot")
  return
end
arming:set_aux_auth_failed(auth_id, WAITING)

local pass_ms = nil               -- receive time of the newest pass, nil when blocking
local block_text = WAITING
local shown = WAITING
local last_epoch, last_counter = 0, 0

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

local function ack(result, value)
  acks[#acks + 1] = string.pack("<I2BBi4BB", GATE_CMD, result, GATE_VERSION, value, AGENT_SYSID, AGENT_COMPID)
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
  local magic, len, iflags = string.unpack("<BBB", msg, 3)
  local sysid, compid, msgid = string.unpack("<BBI3", msg, 8)
  if msgid ~= MSG_TUNNEL or magic ~= 0xFD or len > PAYLOAD_LEN then return end
  if chan ~= AGENT_CHANNEL or sysid ~= AGENT_SYSID or compid ~= AGENT_COMPID then return end
  if REQUIRE_SIGNED and (iflags & 1) == 0 then return end
  local payload = string.sub(msg, 13, 12 + len) .. string.rep("\0", PAYLOAD_LEN - len)
  local ptype, _, _, plen = string.unpack("<I2BBB", payload)
  if ptype ~= TUNNEL_TYPE or plen < HEADER or plen > PAYLOAD_LEN - 5 then return end
  if not crc_ok(msg, len) then return end
  local data = string.sub(payload, 6, 5 + plen)
  local tag, verdict, epoch, counter, tlen = string.unpack("<c4Bi4i4B", data)
  if epoch < last_epoch or (epoch == last_epoch and counter <= last_counter) then
    ack(DENIED, last_epoch)   -- replayed or reordered: ignored; tells the agent where we are
    return
  end
  last_epoch, last_counter = epoch, counter
  local text = string.sub(data, HEADER + 1, HEADER + tlen)
  if tag ~= MAGIC or #text ~= tlen then
    block(BAD)
    ack(FAILED, counter)
  elseif verdict == VERDICT_PASS and tlen == 0 then
    pass_ms = ts
    ack(ACCEPTED, counter)
  elseif verdict == VERDICT_FAIL and valid_text(text) then
    block(text)
    ack(ACCEPTED, counter)
  else
    block(BAD)
    ack(FAILED, counter)
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
  for _ = 1, MAX_MSGS_PER_RUN do
    local msg, chan, ts = mavlink:receive_chan()
    if msg == nil then break end
    handle(msg, chan, ts:toint())
  end
  apply(millis():toint())
  for i = 1, #acks do
    mavlink:send_chan(AGENT_CHANNEL, MSG_COMMAND_ACK, acks[i])
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
