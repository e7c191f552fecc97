-- wrk script: POST the JSON body in $BODY to the URL given on the command line, with $KEY as the API key.
wrk.method = "POST"
wrk.body = os.getenv("BODY")
wrk.headers["Content-Type"] = "application/json"
local key = os.getenv("KEY")
if key and key ~= "" then
  wrk.headers["X-API-Key"] = key
end
