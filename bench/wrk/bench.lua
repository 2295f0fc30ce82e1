-- wrk script of the smtpsettings benchmarks.
--   BENCH_METHOD     GET (default) or POST
--   BENCH_CREDS      file of "HOST TOKEN" lines: each request picks one at random and sends
--                    Host: HOST and Cookie: asc_auth_key=TOKEN (all requests pre-built in init)
--   BENCH_BODY_FILE  request body (sent as application/json)
--   BENCH_HOST       Host header when there is no BENCH_CREDS
-- done() prints one line "BENCHJSON {...}" with the counts and latency percentiles in microseconds.

local method = os.getenv("BENCH_METHOD") or "GET"
local creds = os.getenv("BENCH_CREDS")
local body_file = os.getenv("BENCH_BODY_FILE")
local fixed_host = os.getenv("BENCH_HOST")
local prepared = {}
local n = 0

function init(args)
  local body = nil
  if body_file then
    local f = assert(io.open(body_file, "rb"))
    body = f:read("*a")
    f:close()
  end
  local path = wrk.path
  if creds then
    for line in io.lines(creds) do
      local host, token = line:match("^(%S+)%s+(%S+)")
      if host then
        local headers = { ["Host"] = host, ["Cookie"] = "asc_auth_key=" .. token }
        if body then headers["Content-Type"] = "application/json" end
        n = n + 1
        prepared[n] = wrk.format(method, path, headers, body)
      end
    end
  else
    local headers = {}
    if fixed_host then headers["Host"] = fixed_host end
    if body then headers["Content-Type"] = "application/json" end
    n = 1
    prepared[1] = wrk.format(method, path, headers, body)
  end
  math.randomseed(os.time() + math.floor(os.clock() * 1000000))
end

function request()
  if n == 1 then return prepared[1] end
  return prepared[math.random(n)]
end

function done(summary, latency, requests)
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\n',
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.status,
    summary.errors.timeout))
end
