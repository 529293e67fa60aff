-- Argo CD health check for routeiq.io/RoutingExperiment (source of truth; argocd-cm-patch.yaml embeds it).
-- status.phase is Pending, Running, Promoted, RolledBack, Inconclusive or Failed; status.verdict is
-- promote, rollback or inconclusive. A promote verdict under manual promotion waits for spec.approved.
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

-- the condition that explains a bad outcome: Degraded=True first, then any condition that is False
local function explanation(conditions)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == "Degraded" and c.status == "True" then
      return describe(c)
    end
  end
  for _, c in ipairs(conditions) do
    if c.type ~= "Degraded" and c.status == "False" then
      return describe(c)
    end
  end
  return nil
end

local function progress(status)
  local text = tostring(status.samples or 0) .. " samples"
  if status.leader ~= nil then
    text = text .. ", leader " .. status.leader
  end
  return text
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

local status = obj.status
local phase = status.phase
local spec = obj.spec or {}
local on_verdict = spec.onVerdict or {}

if phase == "Promoted" then
  hs.status = "Healthy"
  hs.message = "promoted"
  if status.leader ~= nil then
    hs.message = hs.message .. " " .. status.leader
  end
  hs.message = hs.message .. " after " .. tostring(status.samples or 0) .. " samples"
  return hs
end
if phase == "Inconclusive" then
  hs.status = "Healthy"
  hs.message = "inconclusive after " .. tostring(status.samples or 0) .. " samples; the control stays"
  return hs
end
if phase == "RolledBack" then
  hs.status = "Degraded"
  hs.message = "rolled back"
  local why = explanation(status.conditions)
  if why ~= nil then
    hs.message = hs.message .. ": " .. why
  end
  return hs
end
if phase == "Failed" then
  hs.status = "Degraded"
  hs.message = explanation(status.conditions) or "the experiment failed"
  return hs
end
if status.verdict == "promote" and (on_verdict.promotion or "manual") == "manual" and spec.approved ~= true then
  hs.status = "Suspended"
  hs.message = "waiting for approval to promote"
  if status.leader ~= nil then
    hs.message = hs.message .. " " .. status.leader
  end
  hs.message = hs.message .. " (set spec.approved: true)"
  return hs
end
hs.status = "Progressing"
if phase == "Running" then
  hs.message = "running: " .. progress(status)
else
  hs.message = "waiting for the experiment to start"
end
return hs
