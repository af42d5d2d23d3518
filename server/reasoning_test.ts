import assert from "node:assert/strict";
import { ReasoningStream, splitReasoning } from "./reasoning.ts";

const QWEN3 = { opensInPrompt: false };
const R1 = { opensInPrompt: true };

Deno.test("splitReasoning() takes the think block apart from the answer", () => {
  assert.deepEqual(splitReasoning("<think>\nadd them\n</think>\n\n4", QWEN3), {
    reasoning: "\nadd them\n",
    content: "4",
  });
  // Thinking switched off (the template closed an empty block in the prompt): all answer.
  assert.deepEqual(splitReasoning("4", QWEN3), { reasoning: null, content: "4" });
  // A block cut short by max_tokens: all reasoning.
  assert.deepEqual(splitReasoning("<think>\nadd th", QWEN3), { reasoning: "\nadd th", content: "" });
  // DeepSeek-R1: the prompt opened the block.
  assert.deepEqual(splitReasoning("add them</think>\n4", R1), { reasoning: "add them", content: "4" });
  // "<think>" later in an answer is text.
  assert.deepEqual(splitReasoning("Say <think>", QWEN3), { reasoning: null, content: "Say <think>" });
});

Deno.test("ReasoningStream gives the same split however the text is cut", () => {
  const text = "<think>\nadd them\n</think>\n\n4 apples";
  for (let step = 1; step <= text.length; step++) {
    const s = new ReasoningStream(QWEN3);
    let reasoning = "";
    let content = "";
    for (let i = 0; i < text.length; i += step) {
      const got = s.push(text.slice(i, i + step));
      reasoning += got.reasoning;
      content += got.content;
      assert.ok(!got.reasoning.includes("<") && !got.content.includes("<"), "no tag ever leaks");
    }
    const end = s.finish();
    assert.deepEqual(
      [reasoning + end.reasoning, content + end.content],
      ["\nadd them\n", "4 apples"],
      `step ${step}`,
    );
  }
});
