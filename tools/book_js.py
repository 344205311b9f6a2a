"""JavaScript that tools/check_book.py runs inside each page of the built book."""

JS_WAIT_READY = """
async (timeoutMs) => {
  const deadline = Date.now() + timeoutMs;
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const notes = [];
  // Widgets: every view placeholder gets a rendered .widget-subarea before it.
  const hasState = !!document.querySelector(
    'script[type="application/vnd.jupyter.widget-state+json"]');
  const views = Array.from(document.querySelectorAll(
    'script[type="application/vnd.jupyter.widget-view+json"]'));
  const rendered = (s) => {
    const prev = s.previousElementSibling;
    return !!(prev && prev.classList.contains("widget-subarea") && prev.childElementCount > 0);
  };
  while (hasState && views.some((s) => !rendered(s)) && Date.now() < deadline) {
    await sleep(100);
  }
  const unrendered = views.filter((s) => !rendered(s)).map((s) => {
    try { return JSON.parse(s.textContent).model_id; } catch (e) { return "?"; }
  });
  // MathJax 3: wait for the initial typesetting.
  if (window.MathJax && window.MathJax.startup && window.MathJax.startup.promise) {
    await Promise.race([window.MathJax.startup.promise, sleep(Math.max(0, deadline - Date.now()))]);
  }
  // Images (force lazy ones to load).
  for (const img of document.images) { if (img.loading === "lazy") img.loading = "eager"; }
  while (Array.from(document.images).some((i) => !i.complete) && Date.now() < deadline) {
    await sleep(100);
  }
  if (document.fonts && document.fonts.ready) {
    await Promise.race([document.fonts.ready, sleep(Math.max(0, deadline - Date.now()))]);
  }
  return {views: views.length, unrendered: unrendered};
}
"""

JS_INSPECT = r"""
() => {
  const visible = (el) => !!el && el.getClientRects().length > 0 &&
    (typeof el.checkVisibility !== "function" || el.checkVisibility({visibilityProperty: true}));
  const short = (s) => (s.length > 80 ? s.slice(0, 77) + "..." : s);
  // Broken images.
  const brokenImages = Array.from(document.images)
    .filter((img) => !img.complete || img.naturalWidth === 0)
    .map((img) => short(img.getAttribute("src") || img.currentSrc || "(no src)"));
  // Raw (untypeset) math in visible text, outside code.
  const skip = "pre, code, script, style, textarea, kbd, samp, mjx-container, .highlight";
  const rawMath = [];
  const pattern = /\$\$|\\\(|\\\[|\\begin\{/;
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const el = node.parentElement;
    if (!el || el.closest(skip) || !pattern.test(node.textContent) || !visible(el)) continue;
    rawMath.push(short(node.textContent.trim()));
  }
  // Stray markup in the prose: a dollar sign, a TeX command or a {glue:...}
  // role left as text. Code, the outputs of code cells and math elements
  // (checked above and below) are skipped. Text hidden in a collapsed
  // dropdown is checked too: a reader opens it.
  const proseSkip = skip + ", .cell_output, .output, span.math, div.math, .headerlink";
  const strayKinds = [
    ["unresolved-glue", /\{glue(:[A-Za-z]*)?\}/],
    ["raw-tex", /\\[A-Za-z]+/],
    ["stray-dollar", /\$/],
  ];
  const around = (text, index) => {
    const start = Math.max(0, index - 40);
    const snippet = text.slice(start, index + 40).replace(/\s+/g, " ").trim();
    return (start > 0 ? "..." : "") + snippet + (index + 40 < text.length ? "..." : "");
  };
  const strayMarkup = [];
  const seenStray = new Set();
  const prose = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = prose.nextNode(); node; node = prose.nextNode()) {
    const el = node.parentElement;
    const text = node.textContent;
    if (!el || el.closest(proseSkip) || (pattern.test(text) && visible(el))) continue;  // raw-math has it
    for (const [kind, re] of strayKinds) {
      const match = re.exec(text);
      if (!match) continue;
      const snippet = around(text, match.index);
      if (!seenStray.has(kind + snippet)) strayMarkup.push({kind, text: snippet});
      seenStray.add(kind + snippet);
    }
  }
  // Math elements (Sphinx: span.math / div.math) that MathJax did not process.
  const mathEls = Array.from(document.querySelectorAll("span.math, div.math"));
  const untypeset = mathEls.filter((el) => !el.querySelector("mjx-container"))
    .map((el) => short(el.textContent.trim()));
  const mathErrors = Array.from(document.querySelectorAll("mjx-merror, .MathJax_Error"))
    .map((el) => short(el.getAttribute("data-mjx-error") || el.textContent.trim()));
  // Links and anchors.
  const links = Array.from(document.querySelectorAll("a[href]"))
    .map((a) => ({href: a.href, raw: a.getAttribute("href")}))
    .filter((l) => /^https?:/.test(l.href));
  const ids = Array.from(document.querySelectorAll("[id]")).map((el) => el.id)
    .concat(Array.from(document.querySelectorAll("a[name]")).map((a) => a.name));
  return {
    brokenImages, rawMath, strayMarkup, untypeset, mathErrors, links, ids,
    mathCount: mathEls.length,
    widgetCount: document.querySelectorAll(".widget-subarea > .jupyter-widgets, .widget-subarea > .lm-Widget").length,
  };
}
"""

# Let CSS transitions (e.g. the theme's sidebar) finish before a screenshot.
JS_SETTLE = """
async (timeoutMs) => {
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  await sleep(200);
  const running = document.getAnimations().filter((a) => a.playState === "running" &&
    a.effect && a.effect.getComputedTiming().endTime !== Infinity);
  await Promise.race([Promise.all(running.map((a) => a.finished.catch(() => null))), sleep(timeoutMs)]);
  await sleep(100);
}
"""

# Sliders: ipywidgets 8 (noUiSlider handles) and plain <input type=range>.
JS_MARK_SLIDERS = """
() => {
  const visible = (el) => !!el && el.getClientRects().length > 0 &&
    (typeof el.checkVisibility !== "function" || el.checkVisibility({visibilityProperty: true}));
  const handles = Array.from(document.querySelectorAll(".noUi-handle, input[type=range]"))
    .filter(visible);
  handles.forEach((h, i) => h.setAttribute("data-book-check-slider", String(i)));
  return handles.length;
}
"""

JS_SLIDER_STATE = r"""
(handle) => {
  const visible = (el) => !!el && el.getClientRects().length > 0 &&
    (typeof el.checkVisibility !== "function" || el.checkVisibility({visibilityProperty: true}));
  const isRange = handle.tagName === "INPUT";
  // The slider widget itself (description, track, readout) is excluded from
  // the signature: a dead slider still moves its own handle and readout.
  const sliderEl = isRange ? handle : (handle.closest(".widget-slider") || handle.closest(".noUi-target"));
  const container = handle.closest(".widget-subarea") || handle.closest(".cell_output") ||
    handle.closest("section") || document.body;
  const parts = [];
  for (const img of container.querySelectorAll("img")) {
    if (!sliderEl.contains(img) && visible(img)) parts.push("img:" + img.currentSrc);
  }
  for (const c of container.querySelectorAll("canvas")) {
    if (!sliderEl.contains(c) && visible(c)) {
      try { parts.push("canvas:" + c.toDataURL()); } catch (e) { parts.push("canvas"); }
    }
  }
  const walker = document.createTreeWalker(container, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const el = n.parentElement;
    if (el && !sliderEl.contains(el) && n.textContent.trim() && visible(el)) parts.push(n.textContent.trim());
  }
  const value = isRange ? Number(handle.value) : Number(handle.getAttribute("aria-valuenow"));
  const min = isRange ? Number(handle.min || 0) : Number(handle.getAttribute("aria-valuemin"));
  const max = isRange ? Number(handle.max || 100) : Number(handle.getAttribute("aria-valuemax"));
  const readout = sliderEl.querySelector(".widget-readout");
  return {
    signature: parts.join("\n"),
    value, min, max,
    readout: readout ? readout.textContent.trim() : String(value),
  };
}
"""
