-- wrk script for bench/dsync_bench.py --wrk: replays pre-signed requests read from a file, each thread its
-- own slice (wrapping around when it runs out), and prints p50/p99 latency and status counts as JSON.
-- Usage: wrk -t T -c C -d D -s bench/presigned.lua URL -- FILE THREADS METHOD PATH
-- FILE lines: "<WorkOS-Signature>\t<body>".
local counter = 0
local threads = {}

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local file, nthreads, method, path = args[1], tonumber(args[2]), args[3], args[4]
  reqs = {}
  local i = 0
  for line in io.lines(file) do
    if i % nthreads == id then
      local sig, body = line:match("^(.-)\t(.*)$")
      local headers = {["Content-Type"] = "application/json", ["WorkOS-Signature"] = sig}
      if method == "GET" then
        reqs[#reqs + 1] = wrk.format("GET", path, headers, nil)
      else
        reqs[#reqs + 1] = wrk.format(method, path, headers, body)
      end
    end
    i = i + 1
  end
  idx = 0
  codes = {}
end

function request()
  idx = idx % #reqs + 1
  return reqs[idx]
end

function response(status, headers, body)
  codes[status] = (codes[status] or 0) + 1
end

function done(summary, latency, requests)
  local merged = {}
  for _, t in ipairs(threads) do
    local c = t:get("codes")
    for k, v in pairs(c) do merged[k] = (merged[k] or 0) + v end
  end
  local parts = {}
  for k, v in pairs(merged) do parts[#parts + 1] = string.format('"%d": %d', k, v) end
  io.write(string.format('WRKJSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"socket_errors": %d, "statuses": {%s}}\n', summary.requests, summary.duration, latency:percentile(50),
    latency:percentile(99), summary.errors.connect + summary.errors.read + summary.errors.write +
    summary.errors.timeout, table.concat(parts, ", ")))
end
