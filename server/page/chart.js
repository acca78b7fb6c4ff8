// One SVG line chart: time across, a line per name, a cursor moved by the mouse or the keys.
// It knows nothing of tally: the page hands it points and is told which one was picked.

const W = 560, H = 170, L = 46, R = 10, T = 8, B = 22;
const SVG_NS = "http://www.w3.org/2000/svg";
const finite = (v) => v !== null && v !== undefined && Number.isFinite(v);

export function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

export function format(v, fmt) {
  if (!finite(v)) return "–";
  switch (fmt) {
    case "int": return Math.round(v).toLocaleString("en");
    case "pct": return `${(v * 100).toFixed(1)}%`;
    case "s": return v < 10 ? `${v.toFixed(2)} s` : `${v.toFixed(0)} s`;
    default: return Math.abs(v) >= 100 ? v.toFixed(0) : String(Number(v.toPrecision(3)));
  }
}

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 2.5, 5, 10].map((m) => m * p).find((m) => m >= v);
}

export class LineChart {
  // host: where the chart goes; tip: the shared tooltip; onPick(k): a point was chosen.
  constructor(host, { id, title }, tip, onPick) {
    this.title = title;
    this.tip = tip;
    this.onPick = onPick;
    this.cursor = null;
    this.frames = [];
    this.rows = [];
    this.names = [];
    this.box = document.createElement("figure");
    this.box.className = "chart";
    this.box.id = id;
    this.box.innerHTML = `<h3>${escapeHtml(title)}</h3>`;
    this.svg = document.createElementNS(SVG_NS, "svg");
    this.svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    this.svg.setAttribute("tabindex", "0");
    this.svg.setAttribute("role", "group");
    this.svg.setAttribute("aria-roledescription", "chart");
    this.svg.setAttribute("aria-describedby", tip.id);
    this.legend = document.createElement("div");
    this.legend.className = "legend";
    this.box.append(this.svg, this.legend);
    host.append(this.box);
    this.svg.addEventListener("keydown", (e) => this.onKey(e));
    this.svg.addEventListener("mousemove", (e) => this.setCursor(this.nearest(e), e));
    this.svg.addEventListener("mouseleave", () => this.setCursor(null));
    this.svg.addEventListener("blur", () => { this.tip.hidden = true; });
    this.svg.addEventListener("click", (e) => {
      const hit = e.target.dataset ? e.target.dataset.k : undefined; // a dot itself: that one
      const k = hit !== undefined ? Number(hit) : this.nearest(e);
      if (k !== null) this.onPick(k);
    });
  }

  // frames: [{t (Unix s), live}]; rows[k]: Map(name -> value or null) at frames[k].
  draw(frames, rows, names) {
    Object.assign(this, { frames, rows, names });
    this.svg.setAttribute("aria-label",
      `${this.title}: ${names.join(", ") || "no data"}; ${frames.length} points, ` +
      "arrow keys step through them, Enter lists the events behind one");
    if (!frames.length) { this.svg.innerHTML = ""; return; }
    const t0 = frames[0].t, t1 = Math.max(frames[frames.length - 1].t, t0 + 1);
    let vmax = 0;
    for (const m of rows) for (const v of m.values()) if (finite(v)) vmax = Math.max(vmax, v);
    const ymax = niceMax(vmax);
    const x = (this.x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R));
    const y = (v) => T + (1 - v / ymax) * (H - T - B);
    let out = "";
    for (let i = 0; i <= 4; i++) {
      const v = (ymax * i) / 4, yy = y(v).toFixed(1);
      out += `<line class="grid" x1="${L}" x2="${W - R}" y1="${yy}" y2="${yy}"/>`;
      out += `<text class="axis" x="${L - 4}" y="${Number(yy) + 3}" text-anchor="end">${format(v)}</text>`;
    }
    const tick = [60, 300, 600, 900, 1800, 3600].find((s) => (t1 - t0) / s <= 6) || 7200;
    for (let t = Math.ceil(t0 / tick) * tick; t <= t1; t += tick) {
      const label = new Date(t * 1000).toTimeString().slice(0, 5);
      out += `<text class="axis" x="${x(t).toFixed(1)}" y="${H - 6}" text-anchor="middle">${label}</text>`;
    }
    names.forEach((name, i) => {
      let d = "", pen = "M", dots = "";
      rows.forEach((m, k) => {
        const v = m.get(name);
        if (!finite(v)) { pen = "M"; return; }
        const px = x(frames[k].t).toFixed(1), py = y(v).toFixed(1);
        d += `${pen}${px},${py}`;
        pen = "L";
        dots += `<circle class="pt k${i % 8}" r="2.2" cx="${px}" cy="${py}" data-k="${k}" ` +
          `data-t="${frames[k].t}" data-line="${escapeHtml(name)}"/>`;
      });
      out += `<path class="line k${i % 8}" d="${d}"/>${dots}`;
    });
    if (this.cursor !== null && this.cursor < frames.length) {
      const cx = x(frames[this.cursor].t).toFixed(1);
      out += `<line class="cursor" x1="${cx}" x2="${cx}" y1="${T}" y2="${H - B}"/>`;
    }
    this.svg.innerHTML = out;
    this.legend.innerHTML = names
      .map((n, i) => `<span><i class="k${i % 8}"></i>${escapeHtml(n)}</span>`).join("");
  }

  nearest(e) {
    if (!this.frames.length || !this.x) return null;
    const rect = this.svg.getBoundingClientRect();
    const vx = ((e.clientX - rect.left) / rect.width) * W;
    let best = 0;
    this.frames.forEach((f, k) => {
      if (Math.abs(this.x(f.t) - vx) < Math.abs(this.x(this.frames[best].t) - vx)) best = k;
    });
    return best;
  }

  // Move the cursor to point k (null: none) and say its values in the tooltip.
  setCursor(k, e) {
    this.cursor = k;
    this.draw(this.frames, this.rows, this.names);
    const tip = this.tip;
    if (k === null) { tip.hidden = true; return; }
    const f = this.frames[k];
    tip.innerHTML = `<b>${new Date(f.t * 1000).toLocaleTimeString()}</b>${f.live ? " (live)" : ""}` +
      this.names.map((n, i) => `<br><i class="swatch k${i % 8}"></i> ${escapeHtml(n)}: ` +
        format(this.rows[k].get(n))).join("");
    tip.hidden = false;
    const rect = this.svg.getBoundingClientRect();
    const px = e ? e.clientX : rect.left + (this.x(f.t) / W) * rect.width;
    const py = e ? e.clientY : rect.top;
    tip.style.left = `${Math.max(4, Math.min(px + 12, window.innerWidth - tip.offsetWidth - 8))}px`;
    tip.style.top = `${Math.max(py - tip.offsetHeight - 8, 4)}px`;
  }

  onKey(e) {
    const n = this.frames.length;
    if (!n) return;
    const k = this.cursor ?? n - 1;
    const moves = { ArrowLeft: k - 1, ArrowRight: k + 1, Home: 0, End: n - 1 };
    if (e.key in moves) {
      e.preventDefault();
      this.setCursor(Math.max(0, Math.min(n - 1, moves[e.key])));
    } else if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      this.onPick(k);
    }
  }
}
