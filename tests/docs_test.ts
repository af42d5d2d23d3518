/**
 * Keeps citations of our own docs honest (docs/style.md F): every `docs/X.md` named in a source file or in the
 * top-level markdown must exist, and every section it cites must be a heading of that file:
 *   docs/quantization.md §1.2          a numbered heading ("### 1.2 …"); ranges "§1.1–1.2" check both ends
 *   docs/quantization.md App. C        an appendix heading ("## Appendix C. …")
 *   docs/style.md H                    a lettered heading ("### H. …")
 *   §1.2 steps 3, 6–8 / §6 item 7      top-level numbered list items inside that section
 *   pitfall 15                         item 15 of the pitfalls section (§6 of quantization.md)
 * Inside docs/, bare names of sibling files (`webgpu.md §3`) are checked the same way.
 */
import assert from "node:assert/strict";
import { dirname, join, relative, resolve } from "node:path";

const ROOT = resolve(dirname(new URL(import.meta.url).pathname), "..");
const DOCS = join(ROOT, "docs");

/** One section of a doc: its id ("1.2", "C") and the top-level numbered items in its body. */
interface Section {
  id: string;
  title: string;
  items: Set<number>;
}

/** Headings of a markdown file as sections; "## Appendix C. …" has id "C". Fenced code is skipped. */
export function parseSections(markdown: string): Section[] {
  const sections: Section[] = [];
  let fenced = false;
  for (const line of markdown.split("\n")) {
    if (line.startsWith("```")) fenced = !fenced;
    if (fenced) continue;
    const heading = /^#{1,6}\s+(.*)$/.exec(line);
    if (heading) {
      // "1.2 …", "6. …", "H. …", "Appendix C. …"; a letter needs its dot ("A new …" is no section).
      const id = /^(?:Appendix\s+([A-Z])\.?|([A-Z])\.|(\d+(?:\.\d+)*)\.?)(?:\s|$)/.exec(heading[1]);
      sections.push({ id: id ? id[1] ?? id[2] ?? id[3] : "", title: heading[1], items: new Set() });
      continue;
    }
    const item = /^(\d+)\.\s/.exec(line);
    if (item && sections.length > 0) sections[sections.length - 1].items.add(Number(item[1]));
  }
  return sections;
}

/** A citation found in a file: the doc, the section ids and the list items it names. */
interface Citation {
  where: string;
  doc: string;
  sections: string[];
  /** [section id, item number]; section "pitfalls" means the pitfalls section */
  items: [string, number][];
}

/** Numbers of "3, 6–8 and 9". */
function numberList(text: string): number[] {
  const out: number[] = [];
  for (const m of text.matchAll(/(\d+)(?:\s*[–-]\s*(\d+))?/g)) {
    const a = Number(m[1]);
    const b = m[2] ? Number(m[2]) : a;
    for (let n = a; n <= b; n++) out.push(n);
  }
  return out;
}

const NUMS = String.raw`\d+(?:\s*[–-]\s*\d+)?(?:\s*(?:,|and)\s*\d+(?:\s*[–-]\s*\d+)?)*`;
/** The chain of references that may follow a doc name: §N, App. X, a style letter, steps, items, pitfalls. */
const CHAIN = new RegExp(
  String
    .raw`^(?:\s*(?:,|;|and)?\s*(?:§\d+(?:\.\d+)*(?:\s*[–-]\s*\d+(?:\.\d+)*)?(?:\s+(?:steps?|items?)\s+${NUMS})?` +
    String.raw`|App(?:endix|\.)\s*[A-Z]\b|pitfalls?\s+${NUMS}))+`,
);

/** Citations of docs in one file's text; comment markers between wrapped lines are dropped first. */
export function findCitations(text: string, where: string, { bare = false } = {}): Citation[] {
  const flat = text.replace(/\n\s*(?:\*|\/\/)?\s*/g, " ").trimEnd();
  const name = bare ? String.raw`(?:docs\/)?([a-z_]+)\.md` : String.raw`docs\/([a-z_]+)\.md`;
  const out: Citation[] = [];
  for (const m of flat.matchAll(new RegExp(String.raw`(?<![\w./-])${name}`, "g"))) {
    const rest = flat.slice(m.index! + m[0].length, m.index! + m[0].length + 200);
    const c: Citation = { where, doc: `${m[1]}.md`, sections: [], items: [] };
    const letter = /^ ([A-Z])(?=[),:;]|\.(?!\w)|$)/.exec(rest);
    if (m[1] === "style" && letter) c.sections.push(letter[1]);
    const chain = CHAIN.exec(rest)?.[0] ?? "";
    let current = "";
    for (
      const r of chain.matchAll(
        /§(\d+(?:\.\d+)*)(?:\s*[–-]\s*(\d+(?:\.\d+)*))?|App(?:endix|\.)\s*([A-Z])|(steps?|items?|pitfalls?)\s+([^§]*?)(?=\s*(?:[,;]\s*)?(?:§|App|pitfall|$))/g,
      )
    ) {
      if (r[1]) {
        c.sections.push(r[1]);
        if (r[2]) c.sections.push(r[2]);
        current = r[2] ?? r[1];
      } else if (r[3]) {
        c.sections.push(r[3]);
      } else if (r[4]) {
        const section = r[4].startsWith("pitfall") ? "pitfalls" : current;
        for (const n of numberList(r[5])) c.items.push([section, n]);
      }
    }
    out.push(c);
  }
  return out;
}

function* files(dir: string, ext: string): Generator<string> {
  for (const entry of Deno.readDirSync(dir)) {
    if (entry.name.startsWith(".") || entry.name === "node_modules") continue;
    const path = join(dir, entry.name);
    if (entry.isDirectory) yield* files(path, ext);
    else if (entry.name.endsWith(ext)) yield path;
  }
}

/** Every citation problem in the repository, one line each. */
function danglingCitations(): string[] {
  const docs = new Map<string, Section[]>();
  for (const path of files(DOCS, ".md")) {
    docs.set(relative(DOCS, path), parseSections(Deno.readTextFileSync(path)));
  }
  const citations: Citation[] = [];
  const problems: string[] = [];
  const scan = (path: string, bare: boolean) => {
    const text = Deno.readTextFileSync(path);
    // A clone of the repository has no ../shared/docs: cite docs/ instead.
    if (/shared\/docs\//.test(text)) problems.push(`${relative(ROOT, path)}: cites ../shared/docs`);
    citations.push(...findCitations(text, relative(ROOT, path), { bare }));
  };
  for (const path of files(ROOT, ".ts")) scan(path, false);
  for (const name of ["README.md", "BENCHMARKS.md"]) scan(join(ROOT, name), false);
  for (const path of files(DOCS, ".md")) scan(path, true);
  for (const c of citations) {
    // Inside docs/, a bare "x.md" that is not one of ours (e.g. README.md) is not a citation.
    const sections = docs.get(c.doc);
    if (!sections) {
      if (!c.where.startsWith("docs/") || c.sections.length > 0) {
        problems.push(`${c.where}: docs/${c.doc} does not exist`);
      }
      continue;
    }
    const find = (id: string) =>
      id === "pitfalls" ? sections.find((s) => /pitfall/i.test(s.title)) : sections.find((s) => s.id === id);
    for (const id of c.sections) {
      if (!find(id)) problems.push(`${c.where}: docs/${c.doc} has no section ${id}`);
    }
    for (const [id, n] of c.items) {
      const s = find(id);
      if (!s) {
        problems.push(`${c.where}: docs/${c.doc} has no section ${id || "(none cited before the item)"}`);
      } else if (!s.items.has(n)) problems.push(`${c.where}: docs/${c.doc} section ${s.id} has no item ${n}`);
    }
  }
  return problems;
}

Deno.test("parseSections() reads numbered, lettered and appendix headings and their list items", () => {
  const md =
    "# T\n## A new thing\n## 1. One\n1. a\n2. b\n   3. nested\n### 1.2 Sub\n```\n## 9. fenced\n```\n## Appendix C. X\n### H. Tests\n";
  const s = parseSections(md);
  assert.deepEqual(s.map((x) => x.id), ["", "", "1", "1.2", "C", "H"]);
  assert.deepEqual([...s[2].items], [1, 2]);
});

Deno.test("findCitations() parses sections, ranges, appendices, style letters, steps, items and pitfalls", () => {
  const text = [
    "/** (docs/quantization.md §1.2 steps 3, 6–8): and docs/quantization.md §1.1–1.2 and",
    " * docs/quantization.md App. C, docs/style.md H): docs/quantization.md §5 and pitfall 15, gptq's",
    " * docs/quantization.md §1.4, §2.1–2.3): docs/webgpu.md: request; docs/quantization.md §6 item 7. */",
  ].join("\n");
  const got = findCitations(text, "x.ts").map((c) => ({ doc: c.doc, sections: c.sections, items: c.items }));
  assert.deepEqual(got, [
    { doc: "quantization.md", sections: ["1.2"], items: [["1.2", 3], ["1.2", 6], ["1.2", 7], ["1.2", 8]] },
    { doc: "quantization.md", sections: ["1.1", "1.2"], items: [] },
    { doc: "quantization.md", sections: ["C"], items: [] },
    { doc: "style.md", sections: ["H"], items: [] },
    { doc: "quantization.md", sections: ["5"], items: [["pitfalls", 15]] },
    { doc: "quantization.md", sections: ["1.4", "2.1", "2.3"], items: [] },
    { doc: "webgpu.md", sections: [], items: [] },
    { doc: "quantization.md", sections: ["6"], items: [["6", 7]] },
  ]);
});

Deno.test("every docs/*.md citation in the repository names an existing file and section", () => {
  const problems = danglingCitations();
  assert.deepEqual(problems, [], `Dangling doc citations:\n${problems.join("\n")}`);
});
