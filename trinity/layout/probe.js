// The in-page check, evaluated in a page that the guardian shows in an iframe (the
// iframe is the viewport). Two calls:
//
// mode "measure": resize the frame to each width in turn, measure the layout there
//   (overflow, clipping, wrapped headings, long blocks) and, at the axe width, tell
//   what axe-core must judge from what earlier pages already settled.
//   returns {results: [{width, viewport, layout: [layout record], axe: [axe record]}],
//            axeNeeded}
// mode "axe" (only when axeNeeded, once the guardian has loaded axe-core into the
//   page): back at the axe width, run axe on the nodes "measure" chose.
//   returns {width, viewport, records: [axe record]}
//
// args: {mode, widths: [[width, height], ...], axeWidth, axeViewport: [width, height],
//        axeRules: [rule, ...], limits: LayoutLimits.as_json(),
//        attribute: "data-trinity-block", ignoreClass: the theme's heal class or null
//        (left out of element paths, so an element keeps its path once healed)}
// layout record: {kind, block, element, tag, reason, measured, limit}, where `reason`
//   says which variant of a kind was found ("page"/"box" for overflow, "x"/"y" for
//   clipped); axe record: {rule, element, block, summary, contrast, expected};
//   `viewport` is the width the page really had.
//
// Measuring reads layout and writes nothing, so the browser lays the page out once per
// width. The page's own code is left alone; what the probe keeps between calls is a
// symbol-keyed property of the window, and the contrast verdicts in the harness.
async (args) => {
  const ATTRIBUTE = args.attribute;
  const LIMITS = args.limits;
  const IGNORED_CLASS = args.ignoreClass;
  // Layout rounds to whole pixels in places (scrollWidth, clientWidth): a pixel is noise.
  const SLACK = 1;
  // The longest wait for the page's resize handlers (a frame, as a rule).
  const SETTLE_MS = 100;
  const HEADING = /^H[1-6]$/;
  const paths = new Map();

  let findings = [];
  let reported = new Set();

  const own = (object, key) => Object.prototype.hasOwnProperty.call(object, key);

  function slotOf(block) {
    return block !== null && own(LIMITS.slots, block) ? LIMITS.slots[block] : LIMITS.default;
  }

  function blockOf(el) {
    const holder = el.closest(`[${ATTRIBUTE}]`);
    return holder === null ? null : holder.getAttribute(ATTRIBUTE);
  }

  // A short path that names the same element at every width: tag, #id or first class,
  // and :nth-of-type when siblings share the tag; it stops at the nearest id.
  function cssPath(el) {
    if (paths.has(el)) return paths.get(el);
    const parts = [];
    for (let node = el; node !== null; node = node.parentElement) {
      const tag = node.localName;
      if (node.id) {
        parts.unshift(`${tag}#${CSS.escape(node.id)}`);
        break;
      }
      if ((tag === "body" || tag === "html") && parts.length > 0) break;
      let part = tag;
      const cls = Array.from(node.classList).find((name) => name !== IGNORED_CLASS);
      if (cls !== undefined) part += `.${CSS.escape(cls)}`;
      const parent = node.parentElement;
      if (parent !== null) {
        const same = Array.from(parent.children).filter((s) => s.localName === tag);
        if (same.length > 1) part += `:nth-of-type(${same.indexOf(node) + 1})`;
      }
      parts.unshift(part);
    }
    const path = parts.join(" > ");
    paths.set(el, path);
    return path;
  }

  function report(kind, el, reason, measured, limit) {
    const element = cssPath(el);
    const key = `${kind}|${element}`;
    if (reported.has(key)) return; // once per element and kind, at this width
    reported.add(key);
    findings.push({
      kind,
      block: blockOf(el),
      element,
      tag: el.localName,
      reason,
      measured: measured === null ? null : Math.round(measured * 10) / 10,
      limit,
    });
  }

  function lineHeight(style) {
    const size = parseFloat(style.fontSize);
    const value = style.lineHeight;
    if (value === "normal") return 1.2 * size; // what most fonts' metrics come to
    if (value.endsWith("px")) return parseFloat(value);
    const number = parseFloat(value);
    return Number.isFinite(number) ? number * size : 1.2 * size;
  }

  const visibleX = (style) => style.overflowX === "visible";
  const hides = (value) => value === "hidden" || value === "clip";
  const isRoot = (el) => el === document.documentElement || el === document.body;
  // SVG's insides are drawn, not laid out: its outer element is measured, nothing within.
  const isLeaf = (el) => el instanceof SVGSVGElement || el instanceof HTMLImageElement;

  // How far right an element reaches: its box, or its content where that is not clipped
  // (a long word sticks out of a paragraph whose box fits; scrollWidth sees it).
  function reach(el, style) {
    const rect = el.getBoundingClientRect();
    if (!visibleX(style) || el.clientWidth === 0) return rect.right;
    return Math.max(rect.right, rect.left + el.clientLeft + el.scrollWidth);
  }

  // The element children of `parent` that reach past `edge` (display: contents passes
  // its children through; fixed elements do not scroll with the page, so never count).
  function passing(parent, edge) {
    const found = [];
    for (const child of parent.children) {
      if (!(child instanceof HTMLElement || child instanceof SVGSVGElement)) continue;
      const style = getComputedStyle(child);
      if (style.display === "none" || style.position === "fixed") continue;
      if (style.display === "contents") {
        found.push(...passing(child, edge));
      } else if (reach(child, style) > edge + SLACK) {
        found.push(child);
      }
    }
    return found;
  }

  // The right edge of the inside of an element's border: what its children should stay
  // inside.
  function innerRight(el) {
    return el.getBoundingClientRect().left + el.clientLeft + el.clientWidth;
  }

  // The elements to blame for `el` reaching past `edge`: the deepest ones that reach
  // past it and stick out of their own parent too. A paragraph as wide as a column that
  // is too wide is not to blame, so when no child sticks out of `el`, `el` is (a grid
  // column widened by a long line, a box given a width, a word that cannot break).
  function culprits(el, edge) {
    if (isLeaf(el)) return [el];
    if (!isRoot(el) && !visibleX(getComputedStyle(el))) return [el];
    const inside = innerRight(el);
    const children = passing(el, edge).filter(
      (child) => reach(child, getComputedStyle(child)) > inside + SLACK,
    );
    return children.length === 0 ? [el] : children.flatMap((child) => culprits(child, edge));
  }

  function checkPage() {
    const width = window.innerWidth;
    if (document.documentElement.scrollWidth <= width + SLACK) {
      // The root may hide the overflow (overflow-x: hidden on body): look anyway, cheaply.
      const roots = [document.documentElement, document.body].filter((el) => el !== null);
      if (roots.every((el) => visibleX(getComputedStyle(el)))) return;
    }
    for (const el of culprits(document.documentElement, width)) {
      if (isRoot(el)) continue;
      report("overflow", el, "page", reach(el, getComputedStyle(el)), width);
    }
  }

  // Content wider than its own box, inside a block (scrolling boxes are fine; a box
  // placed outside its parent on purpose, position: absolute, is the theme's choice).
  function checkBox(el, style) {
    if (!visibleX(style) || el.clientWidth === 0) return;
    if (el.scrollWidth <= el.clientWidth + SLACK) return;
    const edge = innerRight(el);
    const left = edge - el.clientWidth;
    const blamed = culprits(el, edge);
    for (const culprit of blamed) {
      if (culprit !== el && getComputedStyle(culprit).position === "absolute") continue;
      const needs = culprit === el ? el.scrollWidth : reach(culprit, getComputedStyle(culprit)) - left;
      report("overflow", culprit, "box", needs, el.clientWidth);
    }
  }

  // Content cut off by overflow: hidden or clip, unless the cut is the design: an
  // ellipsis, a line clamp, or the 1-pixel box of text kept for screen readers only.
  function checkClipped(el, style) {
    if (isRoot(el)) return;
    const clipsX = hides(style.overflowX) && el.scrollWidth > el.clientWidth + SLACK;
    const clipsY = hides(style.overflowY) && el.scrollHeight > el.clientHeight + SLACK;
    if (!clipsX && !clipsY) return;
    if (style.textOverflow === "ellipsis") return;
    const clamp = style.webkitLineClamp || style.lineClamp || "none";
    if (clamp !== "none" && clamp !== "") return;
    if (el.clientWidth <= 2 || el.clientHeight <= 2) return;
    if (clipsY) {
      report("clipped", el, "y", el.scrollHeight, el.clientHeight);
    } else {
      report("clipped", el, "x", el.scrollWidth, el.clientWidth);
    }
  }

  // Lines a heading's text takes: its text's line boxes, rects on one line merged
  // (a link or <em> inside a heading makes several rects per line).
  function lineCount(el) {
    const range = document.createRange();
    const rects = [];
    const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node !== null; node = walker.nextNode()) {
      if (node.data.trim() === "") continue;
      range.selectNodeContents(node);
      for (const rect of range.getClientRects()) {
        if (rect.width > 0.5 && rect.height > 0) rects.push(rect);
      }
    }
    rects.sort((a, b) => a.top + a.bottom - (b.top + b.bottom));
    let lines = 0;
    let bottom = -Infinity;
    for (const rect of rects) {
      const middle = (rect.top + rect.bottom) / 2;
      if (middle > bottom) {
        lines += 1;
        bottom = rect.bottom;
      } else {
        bottom = Math.max(bottom, rect.bottom);
      }
    }
    return lines;
  }

  function checkHeading(el, block) {
    const allowed = slotOf(block).heading_lines;
    if (allowed === null) return;
    const lines = lineCount(el);
    if (lines > allowed) report("heading-wrap", el, "lines", lines, allowed);
  }

  function checkBlockLength(el, style, block) {
    const allowed = slotOf(block).block_lines;
    if (allowed === null) return;
    const lines = el.getBoundingClientRect().height / lineHeight(style);
    if (lines > allowed) report("too-long", el, "lines", lines, allowed);
  }

  function visit(el, block) {
    const style = getComputedStyle(el);
    if (style.display === "none") return;
    if (el.hasAttribute(ATTRIBUTE)) {
      block = el.getAttribute(ATTRIBUTE);
      checkBlockLength(el, style, block);
    }
    checkClipped(el, style);
    if (block !== null) {
      checkBox(el, style);
      if (HEADING.test(el.tagName)) checkHeading(el, block);
    }
    for (const child of el.children) {
      if (child instanceof HTMLElement) visit(child, block);
    }
  }

  function measure() {
    findings = [];
    reported = new Set();
    checkPage();
    if (document.body !== null) visit(document.body, null);
    return findings;
  }

  // The viewport is the iframe around the page: resize it. A page with scripts may lay
  // itself out again on `resize`, which the browser fires before the next frame: wait
  // for one then (never longer than SETTLE_MS). A page without scripts needs no wait:
  // its layout follows its CSS, which the next measurement brings up to date.
  async function resize(width, height) {
    const frame = window.frameElement;
    if (frame === null) return; // opened on its own: the viewport is what it is
    if (frame.style.width === `${width}px` && frame.style.height === `${height}px`) return;
    frame.style.width = `${width}px`;
    frame.style.height = `${height}px`;
    if (document.scripts.length === 0 && window.onresize === null) return;
    await new Promise((resolve) => {
      requestAnimationFrame(() => resolve());
      setTimeout(resolve, SETTLE_MS);
    });
  }

  // ---------------------------------------------------------------- axe-core
  //
  // axe-core costs about 1 ms per node it judges, and its script 80 ms to load into a
  // page: more than the rest of the check. So it judges only what could fail and has
  // not been judged already, and is loaded only into a page that has such a node
  // (the guardian loads it when the measuring call says `axeNeeded`):
  // - color-contrast: text whose look (colour, size, weight, shadow, the opacity and
  //   backgrounds behind it up to the first opaque one) was judged on an earlier page
  //   of this tab gets that verdict again; unseen looks, and text over images,
  //   filters, blends or out-of-flow boxes (whose background need not be an
  //   ancestor's), go to axe;
  // - target-size: only targets under 24 px in width or height (a larger one passes),
  //   leaving out links inside a sentence, which the rule exempts;
  // - image-alt: only images with no alt attribute or a blank one (alt="" passes).
  // Text covered by an element that is not its ancestor (a sticky header, say) is the
  // one case the verdicts can miss; the themes Trinity ships have none.
  const WORK = Symbol.for("trinity.axeWork");
  const VERDICTS = contrastVerdicts();
  const TARGETS = [
    "a[href]", "button", "input:not([type=hidden])", "select", "textarea", "summary",
    "[tabindex]", "[onclick]", "[role=button]", "[role=link]", "[role=checkbox]",
    "[role=radio]", "[role=switch]", "[role=tab]", "[role=menuitem]", "[role=option]",
  ].join(",");
  const MIN_TARGET = 24;

  // The verdicts live in the harness around the page, which outlives it: one tab's
  // pages share them. JSON strings, so no object outlives the page that made it.
  function contrastVerdicts() {
    try {
      const host = window.frameElement === null ? window : window.parent;
      if (!(host.__trinityContrastVerdicts instanceof host.Map)) {
        host.__trinityContrastVerdicts = new host.Map();
      }
      return host.__trinityContrastVerdicts;
    } catch (error) {
      return new Map();
    }
  }

  // Elements with text of their own, as axe's color-contrast sees them (rendered, more
  // than a pixel in size: screen-reader-only text is clipped to one).
  function textElements() {
    const found = new Set();
    if (document.body === null) return found;
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node !== null; node = walker.nextNode()) {
      const el = node.parentElement;
      if (el === null || found.has(el) || node.data.trim() === "") continue;
      const rect = el.getBoundingClientRect();
      if (rect.width > 1 && rect.height > 1) found.add(el);
    }
    return found;
  }

  // What decides axe's contrast verdict for `el`, as a string; null when something
  // other than its ancestors may be behind it, so no earlier verdict can stand for it.
  function contrastKey(el) {
    if (el.closest("label, button, input, select, textarea, [aria-disabled], [disabled]")) {
      return null; // axe's exemptions for disabled controls: let axe see each one
    }
    const style = getComputedStyle(el);
    const text = el.textContent.trim();
    const parts = [
      el.localName, style.color, style.fontSize, style.fontWeight, style.textShadow,
      style.webkitTextStrokeWidth, text.length <= 1 ? "short" : "text",
      el.closest("[aria-hidden=true]") === null ? "shown" : "hidden",
    ];
    for (let node = el; node !== null; node = node.parentElement) {
      const s = node === el ? style : getComputedStyle(node);
      if (s.backgroundImage !== "none" || s.filter !== "none" || s.mixBlendMode !== "normal") {
        return null;
      }
      parts.push(s.opacity, s.backgroundColor);
      if (isOpaque(s.backgroundColor)) return JSON.stringify(parts);
      if (s.position === "absolute" || s.position === "fixed" || s.position === "sticky") {
        return null;
      }
      if (s.transform !== "none") return null;
    }
    parts.push("canvas");
    return JSON.stringify(parts);
  }

  function isOpaque(color) {
    const match = /^rgba?\(([^)]*)\)$/.exec(color);
    if (match === null) return false;
    const channels = match[1].split(/[\s,/]+/).filter((part) => part !== "");
    return channels.length === 3 || parseFloat(channels[3]) >= 1;
  }

  // A link inside a sentence, which target-size exempts: inline, among text of its own.
  function inSentence(el) {
    if (getComputedStyle(el).display !== "inline" || el.parentElement === null) return false;
    return Array.from(el.parentElement.childNodes).some(
      (node) => node.nodeType === Node.TEXT_NODE && node.data.trim() !== "",
    );
  }

  function axeRecord(rule, el, summary, contrast, expected) {
    return { rule, element: cssPath(el), block: blockOf(el), summary, contrast, expected };
  }

  // What axe must judge at this width, and the findings known without it.
  function planAxe(rules) {
    const work = { nodes: new Set(), rules: new Set(), contrast: [] };
    const known = [];
    if (rules.includes("color-contrast")) {
      for (const el of textElements()) {
        const key = contrastKey(el);
        if (key !== null && VERDICTS.has(key)) {
          const verdict = VERDICTS.get(key);
          if (verdict !== "") {
            const v = JSON.parse(verdict);
            known.push(axeRecord("color-contrast", el, v.summary, v.contrast, v.expected));
          }
          continue;
        }
        work.nodes.add(el);
        work.rules.add("color-contrast");
        work.contrast.push([el, key]);
      }
    }
    if (rules.includes("target-size")) {
      for (const el of document.querySelectorAll(TARGETS)) {
        const rect = el.getBoundingClientRect();
        if (rect.width === 0 || rect.height === 0) continue;
        if (rect.width >= MIN_TARGET && rect.height >= MIN_TARGET) continue;
        if (inSentence(el)) continue;
        work.nodes.add(el);
        work.rules.add("target-size");
      }
    }
    if (rules.includes("image-alt")) {
      for (const img of document.querySelectorAll("img")) {
        const alt = img.getAttribute("alt");
        if (alt !== null && (alt === "" || alt.trim() !== "")) continue;
        work.nodes.add(img);
        work.rules.add("image-alt");
      }
    }
    return { work, known };
  }

  // axe-core on the nodes planAxe chose, with only the rules they need; one object per
  // failing node; each contrast verdict kept for the pages after this one.
  async function runAxe(work) {
    const results = await axe.run(
      { include: Array.from(work.nodes, (node) => [node]) },
      {
        runOnly: { type: "rule", values: Array.from(work.rules) },
        resultTypes: ["violations"],
        iframes: false,
        elementRef: true,
        performanceTimer: false,
      },
    );
    const found = [];
    const failed = new Map();
    for (const rule of results.violations) {
      for (const node of rule.nodes) {
        const el = node.element;
        if (!(el instanceof Element)) continue;
        const data = node.any.length > 0 && node.any[0].data ? node.any[0].data : {};
        const record = axeRecord(
          rule.id,
          el,
          node.failureSummary || rule.help,
          typeof data.contrastRatio === "number" ? data.contrastRatio : null,
          typeof data.expectedContrastRatio === "string"
            ? parseFloat(data.expectedContrastRatio)
            : null,
        );
        found.push(record);
        if (rule.id === "color-contrast") failed.set(el, record);
      }
    }
    for (const [el, key] of work.contrast) {
      if (key === null) continue;
      const record = failed.get(el);
      VERDICTS.set(key, record === undefined ? "" : JSON.stringify(record));
    }
    return found;
  }

  // ---------------------------------------------------------------- the two calls

  // "measure": every width, in order; at the axe width, what is known without axe and
  // whether axe is needed (the nodes are kept on the window for the "axe" call).
  async function measureAll() {
    if (document.fonts) await document.fonts.ready;
    const results = [];
    let axeNeeded = false;
    for (const [width, height] of args.widths) {
      await resize(width, height);
      const layout = measure();
      let known = [];
      if (width === args.axeWidth) {
        const plan = planAxe(args.axeRules);
        known = plan.known;
        window[WORK] = plan.work;
        axeNeeded = plan.work.nodes.size > 0;
      }
      results.push({ width, viewport: window.innerWidth, layout, axe: known });
    }
    return { results, axeNeeded };
  }

  // "axe": back at the axe width, axe-core on the nodes "measure" chose.
  async function axeAll() {
    const [width, height] = args.axeViewport;
    await resize(width, height);
    const work = window[WORK];
    delete window[WORK];
    const found = work === undefined ? [] : await runAxe(work);
    return { width, viewport: window.innerWidth, records: found };
  }

  return args.mode === "axe" ? axeAll() : measureAll();
}
