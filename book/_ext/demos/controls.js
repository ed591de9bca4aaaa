/*
 * The controls every in-page demo builds its panel from (book/_ext/demos.py adds this file before the demo's own
 * script): window.minidiffControls = {el, control, select, slider}.
 */
(function () {
  "use strict";
  // el("p", {class: "note", text: "hello"}, child, ...): an element with attributes ("text" sets its text).
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") e.textContent = v; else e.setAttribute(k, v);
    }
    for (const c of children) e.append(c);
    return e;
  }

  function control(label, input) {
    return el("label", { class: "minidiff-demo-control" }, el("span", { text: label }), input);
  }

  // options: [[value, text], ...]
  function select(name, options, value) {
    const s = el("select", { name });
    for (const [v, text] of options) s.append(el("option", { value: v, text }));
    s.value = value;
    return s;
  }

  function slider(name, min, max, step, value) {
    return el("input", { type: "range", name, min, max, step, value });
  }

  window.minidiffControls = { el, control, select, slider };
})();
