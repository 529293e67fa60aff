-- Argo CD health check for routeiq.io/RouteIQGateway (source of truth; argocd-cm-patch.yaml embeds it).
-- The operator writes status.observedGeneration and the Ready, Progressing, Degraded and
-- ResolvedRefs conditions (operator/routeiq_operator/gateway/status.py).
hs = {}

local function condition(conditions, kind)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function describe(c)
  local text = c.reason or ""
  if c.message ~= nil and c.message ~= "" then
    if text ~= "" then
      text = text .. ": "
    end
    text = text .. c.message
  end
  return text
end

-- reasons for Ready=False that only mean "not there yet"; any other reason is a failure
local waiting_reasons = { WaitingForReplicas = true, RollingOut = true }

if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "waiting for the operator to report status"
  return hs
end

local generation = obj.metadata.generation
if generation ~= nil and obj.status.observedGeneration ~= generation then
  hs.status = "Progressing"
  hs.message = "waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local conditions = obj.status.conditions
local degraded = condition(conditions, "Degraded")
if degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(degraded)
  return hs
end

local ready = condition(conditions, "Ready")
if ready == nil then
  hs.status = "Progressing"
  hs.message = "waiting for the Ready condition"
  return hs
end
if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = tostring(obj.status.readyReplicas or 0) .. " replicas ready"
  if obj.status.endpoint ~= nil then
    hs.message = hs.message .. " at " .. obj.status.endpoint
  end
  return hs
end
if ready.status == "False" and ready.reason ~= nil and not waiting_reasons[ready.reason] then
  hs.status = "Degraded"
  hs.message = describe(ready)
  return hs
end
hs.status = "Progressing"
hs.message = describe(ready)
return hs
