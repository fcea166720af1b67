-- Argo CD health check for vaultkey.dev/VaultKey.
-- Install: deploy/argocd/argocd-cm-patch.yaml inlines this file verbatim (a test checks that).
-- Argo CD runs it in gopher-lua (Lua 5.1) with only the base and table libraries open (no
-- string library, so no string methods), with the live object in the global `obj`, and takes
-- the returned table: hs.status (Healthy, Progressing, Degraded, ...) and hs.message.
--
--   Healthy      Ready=True for the current generation
--   Progressing  no status or no Ready condition yet; the operator has not observed the current
--                generation; Ready=False with a transient reason (the operator retries by itself);
--                Ready=Unknown
--   Degraded     Ready=False with any other reason (the spec, the vault or its permissions need
--                a person: InvalidSpec, KeyExistsNotAdopted, Forbidden, VaultUnreachable, ...)
--   Suspended    the VaultKey is paused (annotation vaultkey.dev/paused: a Paused=True
--                condition); its message says since when
-- The message is the Ready condition's message (the Paused condition's when paused).

-- Ready=False reasons that clear without a change to the spec (see reason_for in
-- src/controller/failure.rs).
local transient = {
  Throttled = true,
  Paced = true,
  Recovering = true,
  VaultTimeout = true,
  VaultServerError = true,
  VaultConflict = true,
  IdentityUnavailable = true,
}

hs = {}

local status = obj.status
local ready = nil
local paused = nil
if status ~= nil and status.conditions ~= nil then
  for _, condition in ipairs(status.conditions) do
    if condition.type == "Ready" then
      ready = condition
    end
    if condition.type == "Paused" and condition.status == "True" then
      paused = condition
    end
  end
end

-- Paused: the operator does nothing for the object until the annotation is removed, whatever
-- Ready or the generation say.
if paused ~= nil then
  hs.status = "Suspended"
  hs.message = paused.message
  return hs
end

if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to reconcile the VaultKey"
  return hs
end

local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end
local observed = ready.observedGeneration
if observed == nil then
  observed = status.observedGeneration
end
if generation ~= nil and observed ~= generation then
  hs.status = "Progressing"
  if observed == nil then
    hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  else
    hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
      .. " (status is for generation " .. tostring(observed) .. ")"
  end
  return hs
end

local message = ready.message
if message == nil or message == "" then
  message = ready.reason
end
hs.message = message

if ready.status == "True" then
  hs.status = "Healthy"
elseif ready.status == "False" and not transient[ready.reason] then
  hs.status = "Degraded"
else
  hs.status = "Progressing"
end
return hs
