// A virtualised list: fixed row height, only the visible rows (plus a small overscan) exist in the DOM, and the
// row elements are reused while scrolling. Rows are asked for by index; an index whose data is not loaded yet is
// rendered as a placeholder and redrawn when `refresh()` is called.

import { h } from "./dom.js";

export class VirtualList {
  // getItem(index) -> item | undefined; createRow() -> element; renderRow(el, item, index, selected)
  constructor({ rowHeight, getItem, createRow, renderRow, overscan = 6, onScroll = null, label = "list" }) {
    this.rowHeight = rowHeight;
    this.getItem = getItem;
    this.createRow = createRow;
    this.renderRow = renderRow;
    this.overscan = overscan;
    this.onScroll = onScroll;
    this.total = 0;
    this.selected = null;
    this.pool = [];
    this.frame = 0;
    this.viewport = h("div", { class: "lwb-vlist", role: "listbox", tabindex: "0", "aria-label": label });
    this.spacer = h("div", { class: "lwb-vlist-spacer" });
    this.layer = h("div", { class: "lwb-vlist-layer" });
    this.spacer.append(this.layer);
    this.viewport.append(this.spacer);
    this.viewport.addEventListener("scroll", () => {
      this.schedule();
      this.onScroll?.(this.viewport.scrollTop);
    }, { passive: true });
    this.resize = new ResizeObserver(() => this.schedule());
    this.resize.observe(this.viewport);
  }

  get element() { return this.viewport; }

  setRowHeight(px) {
    if (px === this.rowHeight) return;
    const first = Math.floor(this.viewport.scrollTop / this.rowHeight);
    this.rowHeight = px;
    this.spacer.style.height = `${this.total * px}px`;
    this.viewport.scrollTop = first * px;
    this.refresh();
  }

  setTotal(n) {
    this.total = n;
    this.spacer.style.height = `${n * this.rowHeight}px`;
    this.refresh();
  }

  setSelected(key) {
    this.selected = key;
    this.refresh();
  }

  scrollTo(top) { this.viewport.scrollTop = top; this.schedule(); }

  scrollToIndex(index) {
    const top = index * this.rowHeight;
    const vh = this.viewport.clientHeight;
    if (top < this.viewport.scrollTop) this.viewport.scrollTop = top;
    else if (top + this.rowHeight > this.viewport.scrollTop + vh) this.viewport.scrollTop = top + this.rowHeight - vh;
    this.schedule();
  }

  visibleRange() {
    const vh = this.viewport.clientHeight || 400;
    const first = Math.max(0, Math.floor(this.viewport.scrollTop / this.rowHeight) - this.overscan);
    const last = Math.min(this.total, Math.ceil((this.viewport.scrollTop + vh) / this.rowHeight) + this.overscan);
    return [first, last];
  }

  schedule() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => { this.frame = 0; this.draw(); });
  }

  // Data changed: redraw now, so rows and anything drawn beside them (the count) change in the same task.
  refresh() {
    if (this.frame) { cancelAnimationFrame(this.frame); this.frame = 0; }
    this.draw();
  }

  draw() {
    const [first, last] = this.visibleRange();
    const count = Math.max(0, last - first);
    while (this.pool.length < count) {
      const row = this.createRow();
      row.classList.add("lwb-vrow");
      row.style.height = `${this.rowHeight}px`;
      this.layer.append(row);
      this.pool.push(row);
    }
    while (this.pool.length > count) this.pool.pop().remove();
    for (let i = 0; i < count; i += 1) {
      const index = first + i;
      const row = this.pool[i];
      row.style.transform = `translateY(${index * this.rowHeight}px)`;
      row.style.height = `${this.rowHeight}px`;
      row.dataset.index = String(index);
      const item = this.getItem(index);
      const selected = item !== undefined && item !== null && this.selected !== null && item.key === this.selected;
      row.setAttribute("aria-selected", selected ? "true" : "false");
      this.renderRow(row, item, index, selected);
    }
  }

  destroy() {
    cancelAnimationFrame(this.frame);
    this.resize.disconnect();
    this.viewport.remove();
    this.pool = [];
  }
}
