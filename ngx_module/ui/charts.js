// Small line charts drawn as SVG: one or two series over the last samples,
// the y axis from 0 to the series' maximum (or a fixed one).

const NS = 'http://www.w3.org/2000/svg';

function el(name, attrs) {
    const e = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    return e;
}

// series: [{ values: [number|null], cls: 'a' }]; capacity: the samples the
// width holds; max: a fixed top, else the largest value; label: how to
// print the top.
export function drawChart(svg, series, { capacity, max, label }) {
    // drawn in the SVG's own pixels, so that lines and text keep their size
    const w = Math.max(svg.clientWidth, 60), h = Math.max(svg.clientHeight, 30);
    svg.setAttribute('viewBox', `0 0 ${w} ${h}`);
    const pad = 2;
    let top = max;
    if (top === undefined) {
        top = 0;
        for (const s of series) {
            for (const v of s.values) if (v !== null && v > top) top = v;
        }
        if (top === 0) top = 1;
    }
    const x = (i) => pad + (w - 2 * pad) * (i / Math.max(capacity - 1, 1));
    const y = (v) => h - pad - (h - 2 * pad - 10) * Math.min(v / top, 1);

    const parts = [el('line', { x1: 0, y1: h - pad, x2: w, y2: h - pad,
                                class: 'axis' })];
    for (const s of series) {
        const offset = capacity - s.values.length;
        let d = '';
        let pen = false;
        s.values.forEach((v, i) => {
            if (v === null || Number.isNaN(v)) {
                pen = false;
                return;
            }
            d += `${pen ? 'L' : 'M'}${x(offset + i).toFixed(1)},${y(v).toFixed(1)}`;
            pen = true;
        });
        if (d) parts.push(el('path', { d, class: `series ${s.cls || ''}` }));
    }
    const t = el('text', { x: w - pad, y: 9, class: 'top', 'text-anchor': 'end' });
    t.textContent = label ? label(top) : String(top);
    parts.push(t);
    svg.replaceChildren(...parts);
}
