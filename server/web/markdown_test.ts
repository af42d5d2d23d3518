import assert from "node:assert/strict";
import { parseInline, parseMarkdown, toDom } from "./markdown.js";

/**
 * A DOM shim with only what a safe renderer may use: createElement, createTextNode, createDocumentFragment,
 * appendChild, setAttribute and textContent. Nodes are not extensible, so a renderer that set innerHTML (or any
 * other property) would throw here instead of passing silently.
 */
class ShimNode {
  readonly childNodes: ShimNode[] = [];
  readonly attributes = new Map<string, string>();
  #text = "";
  constructor(readonly nodeName: string, text = "") {
    this.#text = text;
    Object.preventExtensions(this);
  }
  appendChild(n: ShimNode): ShimNode {
    this.childNodes.push(n);
    return n;
  }
  setAttribute(name: string, value: string): void {
    this.attributes.set(name, String(value));
  }
  get textContent(): string {
    return this.nodeName === "#text" ? this.#text : this.childNodes.map((c) => c.textContent).join("");
  }
  set textContent(v: string) {
    this.childNodes.length = 0;
    this.childNodes.push(new ShimNode("#text", String(v)));
  }
}

const created: string[] = [];
const doc = {
  createElement(tag: string) {
    created.push(tag);
    return new ShimNode(tag);
  },
  createTextNode: (text: string) => new ShimNode("#text", text),
  createDocumentFragment: () => new ShimNode("#fragment"),
} as unknown as Parameters<typeof toDom>[1];

/** Serializes a shim tree as HTML, escaping text the way a browser would show it. */
function html(n: ShimNode): string {
  if (n.nodeName === "#text") return n.textContent.replace(/&/g, "&amp;").replace(/</g, "&lt;");
  const inner = n.childNodes.map(html).join("");
  if (n.nodeName === "#fragment") return inner;
  const attrs = [...n.attributes].map(([k, v]) => ` ${k}="${v}"`).join("");
  return `<${n.nodeName}${attrs}>${inner}</${n.nodeName}>`;
}

function render(src: string): string {
  return html(toDom(parseMarkdown(src), doc) as unknown as ShimNode);
}

const SAFE_TAGS = new Set(["p", "h3", "h4", "h5", "h6", "pre", "code", "ul", "ol", "li", "strong", "em"]);

Deno.test("markdown: paragraphs, headings, emphasis and inline code", () => {
  assert.equal(
    render("Hello **big** and *small* `x<y`"),
    "<p>Hello <strong>big</strong> and <em>small</em> <code>x&lt;y</code></p>",
  );
  assert.equal(render("one\ntwo\n\nthree"), "<p>one\ntwo</p><p>three</p>");
  assert.equal(render("# Title\ntext"), "<h3>Title</h3><p>text</p>");
  assert.equal(
    render("__bold__ _it_ snake_case_name"),
    "<p><strong>bold</strong> <em>it</em> snake_case_name</p>",
  );
  assert.equal(render("**bold with *nested* em**"), "<p><strong>bold with <em>nested</em> em</strong></p>");
  assert.equal(render("2 * 3 * 4"), "<p>2 * 3 * 4</p>", "spaced asterisks are not emphasis");
  assert.equal(render("`` a`b ``"), "<p><code>a`b</code></p>");
});

Deno.test("markdown: fenced code keeps its text literally, and an unclosed fence runs to the end", () => {
  assert.equal(
    render("Look:\n```ts\nconst a = **b**;\n<b>x</b>\n```\nafter"),
    '<p>Look:</p><pre data-lang="ts"><code>const a = **b**;\n&lt;b>x&lt;/b></code></pre><p>after</p>',
  );
  assert.equal(render("```\nstreaming so far"), "<pre><code>streaming so far</code></pre>");
  assert.equal(
    render("~~~\na\n```\nb\n~~~"),
    "<pre><code>a\n```\nb</code></pre>",
    "only the opening marker closes",
  );
  assert.equal(render('```js" onload="x\ncode\n```'), "<pre><code>code</code></pre>");
});

Deno.test("markdown: bullet and numbered lists, with continuation lines", () => {
  assert.equal(render("- a\n- **b**\n* c"), "<ul><li>a</li><li><strong>b</strong></li><li>c</li></ul>");
  assert.equal(render("3. x\n4. y\n  more"), '<ol start="3"><li>x</li><li>y more</li></ol>');
  assert.equal(render("1. x\n\n- y"), "<ol><li>x</li></ol><ul><li>y</li></ul>");
  assert.deepEqual(parseMarkdown("- a\n- b")[0], {
    type: "ul",
    items: [[{ type: "text", text: "a" }], [{ type: "text", text: "b" }]],
  });
});

Deno.test("markdown: HTML in model text stays text (no element, no attribute from the model)", () => {
  created.length = 0;
  const attack = [
    '<img src=x onerror="alert(1)">',
    "<script>alert(2)</script>",
    "**<svg onload=alert(3)>**",
    "`<iframe src=javascript:alert(4)>`",
    "- <a href=javascript:alert(5)>x</a>",
    '```"><img src=x onerror=alert(6)>\n<style>*{}</style>\n```',
  ].join("\n\n");
  const out = toDom(parseMarkdown(attack), doc) as unknown as ShimNode;
  assert.ok(created.every((t) => SAFE_TAGS.has(t)), `unexpected elements: ${created}`);
  assert.match(out.textContent, /<img src=x onerror="alert\(1\)">/);
  assert.match(out.textContent, /<script>alert\(2\)<\/script>/);
  assert.match(out.textContent, /<style>\*\{\}<\/style>/);
  const attrs: string[] = [];
  const walk = (n: ShimNode) => {
    for (const [k, v] of n.attributes) attrs.push(`${k}=${v}`);
    n.childNodes.forEach(walk);
  };
  walk(out);
  assert.deepEqual(attrs, [], "the fence's info string is dropped when it is not a plain language name");
});

Deno.test("markdown: random text of markup characters only ever makes whitelisted nodes", () => {
  const alphabet = [
    "<",
    ">",
    "*",
    "_",
    "`",
    "#",
    " ",
    "\n",
    "-",
    "1.",
    "a",
    "img",
    "=",
    '"',
    "~~~",
    "```",
    "&",
  ];
  let seed = 7;
  const rand = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  for (let i = 0; i < 300; i++) {
    created.length = 0;
    const src = Array.from({ length: 40 }, () => alphabet[Math.floor(rand() * alphabet.length)]).join("");
    const out = toDom(parseMarkdown(src), doc) as unknown as ShimNode;
    assert.ok(created.every((t) => SAFE_TAGS.has(t)), `input ${JSON.stringify(src)} made ${created}`);
    const walk = (n: ShimNode) => {
      for (const [k, v] of n.attributes) {
        const ok = (k === "data-lang" && /^[\w+#.-]+$/.test(v)) || (k === "start" && /^\d+$/.test(v));
        assert.ok(ok, `input ${JSON.stringify(src)} made attribute ${k}=${v}`);
      }
      n.childNodes.forEach(walk);
    };
    walk(out);
  }
});

Deno.test("parseInline() leaves unmatched markers as text", () => {
  assert.deepEqual(parseInline("a **b"), [{ type: "text", text: "a **b" }]);
  assert.deepEqual(parseInline("`open"), [{ type: "text", text: "`open" }]);
});
