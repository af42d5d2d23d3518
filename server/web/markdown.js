// A tiny, safe Markdown renderer for model output. parseMarkdown() turns text into a plain node tree;
// toDom() maps that tree to DOM nodes with createElement/createTextNode/textContent only, so model text can
// never become markup (no innerHTML anywhere). Covered: paragraphs, headings, fenced code blocks (an
// unclosed fence, as while streaming, runs to the end), inline code, bold, italic, flat lists.

/**
 * @typedef {{type: "text", text: string} | {type: "code", text: string}
 *   | {type: "strong" | "em", children: Inline[]}} Inline
 * @typedef {{type: "p", children: Inline[]} | {type: "h", level: number, children: Inline[]}
 *   | {type: "pre", lang: string, text: string}
 *   | {type: "ul", items: Inline[][]} | {type: "ol", start: number, items: Inline[][]}} Block
 */

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)/;
const HEADING = /^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const BULLET = /^\s*[-*+]\s+(.*)$/;
const ORDERED = /^\s*(\d{1,9})[.)]\s+(.*)$/;

/**
 * Parses Markdown into blocks.
 * @param {string} src
 * @returns {Block[]}
 */
export function parseMarkdown(src) {
  const lines = String(src).replace(/\r\n?/g, "\n").split("\n");
  /** @type {Block[]} */
  const blocks = [];
  /** @type {string[]} */
  let para = [];
  const flushPara = () => {
    if (para.length) blocks.push({ type: "p", children: parseInline(para.join("\n")) });
    para = [];
  };
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const fence = FENCE.exec(line);
    if (fence) {
      flushPara();
      const marker = fence[1];
      const body = [];
      for (i++; i < lines.length; i++) {
        const close = lines[i].trim();
        if (close.startsWith(marker[0].repeat(marker.length)) && /^(`+|~+)$/.test(close)) break;
        body.push(lines[i]);
      }
      // The info string becomes an attribute only when it is a plain language name.
      const lang = /^[\w+#.-]{1,20}$/.test(fence[2]) ? fence[2] : "";
      blocks.push({ type: "pre", lang, text: body.join("\n") });
      continue;
    }
    if (line.trim() === "") {
      flushPara();
      continue;
    }
    const heading = HEADING.exec(line);
    if (heading) {
      flushPara();
      blocks.push({ type: "h", level: heading[1].length, children: parseInline(heading[2]) });
      continue;
    }
    const bullet = BULLET.exec(line);
    const ordered = bullet ? null : ORDERED.exec(line);
    if (bullet || ordered) {
      flushPara();
      const kind = bullet ? "ul" : "ol";
      const last = blocks[blocks.length - 1];
      const item = parseInline(bullet ? bullet[1] : /** @type {RegExpExecArray} */ (ordered)[2]);
      if (last && last.type === kind && !lines[i - 1]?.match(/^\s*$/)) last.items.push(item);
      else if (kind === "ul") blocks.push({ type: "ul", items: [item] });
      else {blocks.push({
          type: "ol",
          start: Number(/** @type {RegExpExecArray} */ (ordered)[1]),
          items: [item],
        });}
      continue;
    }
    const last = blocks[blocks.length - 1];
    if (para.length === 0 && last && (last.type === "ul" || last.type === "ol") && /^\s+\S/.test(line)) {
      // An indented line continues the previous list item.
      last.items[last.items.length - 1].push({ type: "text", text: " " }, ...parseInline(line.trim()));
      continue;
    }
    para.push(line);
  }
  flushPara();
  return blocks;
}

// Code spans first (their content is literal), then bold, then italic; `_` only at word boundaries so that
// snake_case names stay as they are.
const INLINE = new RegExp(
  [
    /(`+)([^`]|[^`][\s\S]*?[^`])\1(?!`)/.source,
    /\*\*(?=\S)([\s\S]*?\S)\*\*/.source,
    /(?<![\w])__(?=\S)([\s\S]*?\S)__(?![\w])/.source,
    /\*(?=[^\s*])([\s\S]*?[^\s*])\*/.source,
    /(?<![\w])_(?=[^\s_])([\s\S]*?[^\s_])_(?![\w])/.source,
  ].join("|"),
);

/**
 * Parses inline Markdown.
 * @param {string} text
 * @returns {Inline[]}
 */
export function parseInline(text) {
  /** @type {Inline[]} */
  const out = [];
  let rest = text;
  for (;;) {
    const m = INLINE.exec(rest);
    if (!m) break;
    if (m.index > 0) out.push({ type: "text", text: rest.slice(0, m.index) });
    if (m[1] !== undefined) {
      const code = m[2];
      const trimmed = /^ .* $/.test(code) && code.trim() !== "" ? code.slice(1, -1) : code;
      out.push({ type: "code", text: trimmed });
    } else if (m[3] !== undefined || m[4] !== undefined) {
      out.push({ type: "strong", children: parseInline(m[3] ?? m[4]) });
    } else {
      out.push({ type: "em", children: parseInline(m[5] ?? m[6]) });
    }
    rest = rest.slice(m.index + m[0].length);
  }
  if (rest) out.push({ type: "text", text: rest });
  return out;
}

/**
 * Maps blocks to DOM nodes. Only fixed tag names are created and model text only ever reaches
 * createTextNode or textContent.
 * @param {Block[]} blocks
 * @param {Document} doc
 * @returns {DocumentFragment}
 */
export function toDom(blocks, doc) {
  const frag = doc.createDocumentFragment();
  const inline = (/** @type {Element} */ parent, /** @type {Inline[]} */ nodes) => {
    for (const n of nodes) {
      if (n.type === "text") parent.appendChild(doc.createTextNode(n.text));
      else if (n.type === "code") {
        const el = doc.createElement("code");
        el.textContent = n.text;
        parent.appendChild(el);
      } else {
        const el = doc.createElement(n.type === "strong" ? "strong" : "em");
        inline(el, n.children);
        parent.appendChild(el);
      }
    }
  };
  for (const b of blocks) {
    if (b.type === "pre") {
      const pre = doc.createElement("pre");
      const code = doc.createElement("code");
      if (b.lang) pre.setAttribute("data-lang", b.lang);
      code.textContent = b.text;
      pre.appendChild(code);
      frag.appendChild(pre);
    } else if (b.type === "ul" || b.type === "ol") {
      const list = doc.createElement(b.type);
      if (b.type === "ol" && b.start !== 1) list.setAttribute("start", String(b.start));
      for (const item of b.items) {
        const li = doc.createElement("li");
        inline(li, item);
        list.appendChild(li);
      }
      frag.appendChild(list);
    } else {
      // Headings in an answer sit below the page's own h1/h2.
      const el = doc.createElement(b.type === "p" ? "p" : `h${Math.min(6, b.level + 2)}`);
      inline(el, b.children);
      frag.appendChild(el);
    }
  }
  return frag;
}

/**
 * Renders Markdown text into DOM nodes.
 * @param {string} src Untrusted text (model output).
 * @param {Document} [doc]
 * @returns {DocumentFragment}
 */
export function renderMarkdown(src, doc = globalThis.document) {
  return toDom(parseMarkdown(src), doc);
}
