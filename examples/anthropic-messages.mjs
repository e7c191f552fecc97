import Anthropic from "@anthropic-ai/sdk";
const client = new Anthropic(); // reads ANTHROPIC_BASE_URL and ANTHROPIC_API_KEY

const message = await client.messages.create({
  model: "sim-small", max_tokens: 256, messages: [{ role: "user", content: "hello gateway" }],
});
console.log(message.content[0].text);

const stream = client.messages.stream({
  model: "sim-small", max_tokens: 256, messages: [{ role: "user", content: "stream it" }],
});
stream.on("text", (text) => process.stdout.write(text));
console.log(" |", (await stream.finalMessage()).stop_reason);

const call = await client.messages.create({
  model: "sim-small", max_tokens: 256,
  tools: [{ name: "get_weather", description: "The weather in a city",
    input_schema: { type: "object", properties: { city: { type: "string" } }, required: ["city"] } }],
  messages: [{ role: "user", content: "What is the weather in Paris? Use get_weather." }],
});
console.log(call.stop_reason, call.content.find((block) => block.type === "tool_use"));
