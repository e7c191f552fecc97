// OpenAI's npm SDK, unchanged, on /v1/responses of a running HelixAgent. Driven by NodeClientTests.cs, which starts the
// gateway and reads the one JSON object this prints. Environment: HELIXAGENT_URL, HELIXAGENT_KEY, SIM_MODEL.
import OpenAI from "openai";

const client = new OpenAI({ baseURL: `${process.env.HELIXAGENT_URL}/v1`, apiKey: process.env.HELIXAGENT_KEY, maxRetries: 0, timeout: 30_000 });
const model = process.env.SIM_MODEL;
const out = {};

// An answer, stored (the default), read back and continued.
const first = await client.responses.create({ model, input: "My name is Ada." });
out.create = { id: first.id, status: first.status, text: first.output_text, usage: first.usage };
const again = await client.responses.retrieve(first.id);
out.retrieve = { id: again.id, text: again.output_text };
const next = await client.responses.create({ model, input: "What is my name?", previous_response_id: first.id });
out.continued = { previous: next.previous_response_id, text: next.output_text };
const items = await client.responses.inputItems.list(first.id);
out.input_items = items.data.map((i) => ({ type: i.type, role: i.role }));

// A stream through the SDK's helper: event types in order, sequence numbers, the final response.
const stream = client.responses.stream({ model, input: "stream these words", store: false });
const events = [];
const sequence = [];
let deltas = "";
for await (const event of stream) {
  events.push(event.type);
  sequence.push(event.sequence_number);
  if (event.type === "response.output_text.delta") deltas += event.delta;
}
const final = await stream.finalResponse();
out.stream = { events, sequence, deltas, final_text: final.output_text, final_status: final.status };

// A function-calling loop with store: false: the client resends the whole input.
const tools = [{
  type: "function", name: "get_weather", description: "The weather in a city", strict: false,
  parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
}];
const input = [{ role: "user", content: "What is the weather in Paris? Use get_weather." }];
const call = await client.responses.create({ model, input, tools, tool_choice: "required", store: false });
const fc = call.output.find((i) => i.type === "function_call");
const after = await client.responses.create({
  model, tools, store: false,
  input: [...input, fc, { type: "function_call_output", call_id: fc.call_id, output: "18 degrees and sunny" }],
});
out.tools = { name: fc.name, arguments: JSON.parse(fc.arguments), call_id: fc.call_id, final_text: after.output_text };

// Typed errors.
async function errorOf(promise) {
  try { await promise; return null; } catch (e) { return { class: e.constructor.name, status: e.status, param: e.param ?? null }; }
}
out.errors = {
  bad_key: await errorOf(new OpenAI({ baseURL: client.baseURL, apiKey: "hx-not-a-key", maxRetries: 0 }).responses.create({ model, input: "hi" })),
  unknown_model: await errorOf(client.responses.create({ model: "no-such-model", input: "hi" })),
  unknown_response: await errorOf(client.responses.retrieve("resp_0123456789abcdef0123456789abcdef")),
  bad_previous: await errorOf(client.responses.create({ model, input: "hi", previous_response_id: "resp_nope" })),
};

console.log(JSON.stringify(out));
