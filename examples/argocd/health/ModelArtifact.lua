-- Argo CD health check for routeiq.io/ModelArtifact (source of truth; argocd-cm-patch.yaml embeds it).
-- status.phase is Pending, Verifying, Ready or Failed; conditions carry the reason.
hs = {}

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

-- the condition that explains a failure: Degraded=True first, then any condition that is False
local function failure(conditions)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == "Degraded" and c.status == "True" then
      return c
    end
  end
  for _, c in ipairs(conditions) do
    if c.type ~= "Degraded" and c.status == "False" then
      return c
    end
  end
  return nil
end

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

local phase = obj.status.phase
if phase == "Ready" then
  hs.status = "Healthy"
  hs.message = "verified"
  if obj.status.strategy ~= nil then
    hs.message = hs.message .. " " .. obj.status.strategy .. " artifact"
  end
  if obj.status.digest ~= nil then
    hs.message = hs.message .. ", digest " .. obj.status.digest
  end
  return hs
end
if phase == "Failed" then
  hs.status = "Degraded"
  local c = failure(obj.status.conditions)
  if c ~= nil then
    hs.message = describe(c)
  else
    hs.message = "artifact verification failed"
  end
  return hs
end
hs.status = "Progressing"
if phase == "Verifying" then
  hs.message = "verifying the artifact"
else
  hs.message = "waiting for the artifact to be fetched"
end
return hs
