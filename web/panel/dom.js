// DOM building without HTML parsing: every string becomes a text node or a property, never markup.
// (LoRA metadata is untrusted: a title like <img src=x onerror=…> must show as those characters.)

const SVG_NS = "http://www.w3.org/2000/svg";
const BLOCKED_ATTR = /^(on|srcdoc$|formaction$)/i;

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

function apply(el, props) {
  if (!props) return;
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null) continue;
    if (key === "class") el.setAttribute("class", Array.isArray(value) ? value.filter(Boolean).join(" ") : value);
    else if (key === "text") el.textContent = String(value);
    else if (key === "style") {
      for (const [prop, v] of Object.entries(value)) {
        if (prop.startsWith("--")) el.style.setProperty(prop, v);
        else el.style[prop] = v;
      }
    }
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "on") for (const [ev, fn] of Object.entries(value)) el.addEventListener(ev, fn);
    else if (key === "props") Object.assign(el, value);
    else {
      if (BLOCKED_ATTR.test(key)) throw new Error(`lorawb: attribute ${key} is not allowed`);
      if (value === false) continue;
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
}

// h("div", {class: "x", text: "…", on: {click}}, child, "text", [more])
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  apply(el, props);
  append(el, children);
  return el;
}

export function s(tag, props, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  apply(el, props);
  append(el, children);
  return el;
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

export function fmtSize(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return i === 0 ? `${v} B` : `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

export function fmtNum(x, digits = 3) {
  if (x === null || x === undefined || Number.isNaN(x)) return "–";
  return Number(x).toPrecision(digits).replace(/\.?0+(e|$)/, "$1");
}

export function fmtPct(x) {
  if (x === null || x === undefined) return "–";
  return `${(x * 100).toFixed(x >= 0.1 ? 1 : 2)} %`;
}

export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    const ta = h("textarea", { style: { position: "fixed", opacity: "0" }, props: { value: text } });
    document.body.append(ta);
    ta.select();
    let ok = false;
    try { ok = document.execCommand("copy"); } catch { ok = false; }
    ta.remove();
    return ok;
  }
}

export function debounce(fn, ms) {
  let t = null;
  const wrapped = (...args) => {
    clearTimeout(t);
    t = setTimeout(() => fn(...args), ms);
  };
  wrapped.cancel = () => clearTimeout(t);
  return wrapped;
}

export function download(name, text, type = "text/csv") {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = h("a", { href: url, download: name, style: { display: "none" } });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

// Family badges: short code and hue per family (unknown families get a neutral badge with their own name).
const FAMILIES = {
  sd15: ["SD1", 210], sd2: ["SD2", 190], sdxl: ["XL", 265], sdxl_refiner: ["XLR", 285], sd3: ["SD3", 320],
  flux: ["FLX", 25], wan: ["WAN", 150], hunyuan_video: ["HYV", 95],
};

export function familyBadge(family, variant) {
  const [code, hue] = FAMILIES[family] ?? [String(family ?? "?").slice(0, 3).toUpperCase(), null];
  const badge = h("span", {
    class: "lwb-badge", title: variant ? `${family} (${variant})` : (family ?? "unknown family"),
    style: hue === null ? {} : { "--lwb-hue": String(hue) },
  }, code);
  if (hue === null) badge.classList.add("lwb-badge-unknown");
  return badge;
}
