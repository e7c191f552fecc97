// Anthropic's npm SDK, unchanged, against a running HelixAgent. Driven by NodeClientTests.cs, which starts the gateway
// and reads the one JSON object this prints. Environment: HELIXAGENT_URL, HELIXAGENT_KEY, SIM_MODEL (a simulator model),
// THINKING_MODEL (a route to an Anthropic upstream that answers with a signed thinking block).
import Anthropic from "@anthropic-ai/sdk";

const baseURL = process.env.HELIXAGENT_URL;
const apiKey = process.env.HELIXAGENT_KEY;
const sim = process.env.SIM_MODEL;
const thinkingModel = process.env.THINKING_MODEL;
const client = new Anthropic({ baseURL, apiKey, maxRetries: 0, timeout: 30_000 });
const out = {};

// An answer.
const message = await client.messages.create({
  model: sim, max_tokens: 128, messages: [{ role: "user", content: "Say hello in five words." }],
});
out.message = {
  id: message.id, type: message.type, role: message.role, stop_reason: message.stop_reason,
  text: message.content.filter((b) => b.type === "text").map((b) => b.text).join(""),
  input_tokens: message.usage.input_tokens, output_tokens: message.usage.output_tokens,
};

// A stream, as raw events (their order) and through the SDK's stream helper (its accumulated message).
const raw = await client.messages.create({
  model: sim, max_tokens: 128, stream: true, messages: [{ role: "user", content: "Tell me about rivers." }],
});
const events = [];
let streamedText = "";
for await (const event of raw) {
  events.push(event.type);
  if (event.type === "content_block_delta" && event.delta.type === "text_delta") streamedText += event.delta.text;
}
const helper = client.messages.stream({
  model: sim, max_tokens: 128, messages: [{ role: "user", content: "Tell me about lakes." }],
});
let helperText = "";
helper.on("text", (t) => { helperText += t; });
const final = await helper.finalMessage();
out.stream = {
  events, text: streamedText, helper_text: helperText, helper_stop_reason: final.stop_reason,
  helper_output_tokens: final.usage.output_tokens,
};

// A tool loop: the model calls the tool, the client answers with a tool_result, the model answers in text.
const tools = [{
  name: "get_weather", description: "The weather in a city",
  input_schema: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
}];
const history = [{ role: "user", content: "What is the weather in Paris? Use get_weather." }];
const call = await client.messages.create({ model: sim, max_tokens: 256, tools, tool_choice: { type: "any" }, messages: history });
const toolUse = call.content.find((b) => b.type === "tool_use");
history.push({ role: "assistant", content: call.content });
history.push({ role: "user", content: [{ type: "tool_result", tool_use_id: toolUse.id, content: "18 degrees and sunny" }] });
const after = await client.messages.create({ model: sim, max_tokens: 256, tools, messages: history });
out.tools = {
  stop_reason: call.stop_reason, name: toolUse.name, input: toolUse.input, id: toolUse.id,
  final_stop_reason: after.stop_reason,
  final_text: after.content.filter((b) => b.type === "text").map((b) => b.text).join(""),
};

// count_tokens.
const counted = await client.messages.countTokens({ model: sim, messages: [{ role: "user", content: "How many tokens is this?" }] });
out.count_tokens = counted.input_tokens;

// Pass-through to an Anthropic target: the thinking block and its signature come back as the upstream sent them.
const thought = await client.messages.create({
  model: thinkingModel, max_tokens: 2048, thinking: { type: "enabled", budget_tokens: 1024 },
  messages: [{ role: "user", content: "Why is the sky blue?" }],
});
const thinking = thought.content.find((b) => b.type === "thinking");
out.thinking = { thinking: thinking?.thinking, signature: thinking?.signature };

// Typed errors.
async function errorOf(promise) {
  try { await promise; return null; } catch (e) {
    return { class: e.constructor.name, status: e.status, type: e.error?.error?.type, request_id: e.requestID ?? null };
  }
}
out.errors = {
  bad_key: await errorOf(new Anthropic({ baseURL, apiKey: "hx-not-a-key", maxRetries: 0 }).messages.create({
    model: sim, max_tokens: 16, messages: [{ role: "user", content: "hi" }],
  })),
  unknown_model: await errorOf(client.messages.create({ model: "no-such-model", max_tokens: 16, messages: [{ role: "user", content: "hi" }] })),
  no_max_tokens: await errorOf(client.messages.create({ model: sim, messages: [{ role: "user", content: "hi" }] })),
};

console.log(JSON.stringify(out));
