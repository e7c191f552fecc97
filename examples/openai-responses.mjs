import OpenAI from "openai";
const client = new OpenAI(); // reads OPENAI_BASE_URL and OPENAI_API_KEY

const first = await client.responses.create({ model: "sim-small", input: "My name is Ada." });
console.log(first.id, first.output_text);

// Stored (store: true is the default), so the conversation continues on any replica.
const next = await client.responses.create({ model: "sim-small", input: "What is my name?", previous_response_id: first.id });
console.log(next.output_text);

const stream = client.responses.stream({ model: "sim-small", input: "stream it", store: false });
stream.on("response.output_text.delta", (event) => process.stdout.write(event.delta));
console.log(" |", (await stream.finalResponse()).status);

const call = await client.responses.create({
  model: "sim-small", store: false,
  tools: [{ type: "function", name: "get_weather", description: "The weather in a city", strict: false,
    parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] } }],
  input: "What is the weather in Paris? Use get_weather.",
});
console.log(call.output.find((item) => item.type === "function_call"));
