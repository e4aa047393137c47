/**
 * A small time-series chart as plain SVG (no chart library: a few lines per series, a value
 * axis, the last value in the legend); sized by its viewBox, so it scales with the page.
 */
export interface Series {
  label: string;
  /** [time in ms, value], oldest first. */
  points: readonly (readonly [number, number])[];
}

const W = 320;
const H = 120;
const PAD = { left: 36, right: 8, top: 8, bottom: 18 };

export function LineChart({ title, series, unit }: { title: string; series: readonly Series[]; unit: string }) {
  const all = series.flatMap((s) => s.points);
  const t0 = Math.min(...all.map((p) => p[0]));
  const t1 = Math.max(...all.map((p) => p[0]));
  const max = Math.max(0, ...all.map((p) => p[1])) || 1;
  const x = (t: number) => PAD.left + ((t - t0) / Math.max(1, t1 - t0)) * (W - PAD.left - PAD.right);
  const y = (v: number) => H - PAD.bottom - (v / max) * (H - PAD.top - PAD.bottom);
  const summary = series.map((s) => `${s.label} ${formatValue(s.points.at(-1)?.[1])} ${unit}`).join(", ");
  return (
    <figure class="chart">
      <figcaption>{title}</figcaption>
      <svg viewBox={`0 0 ${W} ${H}`} role="img" aria-label={`${title}: ${all.length < 2 ? "collecting data" : summary}`}>
        <line class="axis" x1={PAD.left} y1={y(0)} x2={W - PAD.right} y2={y(0)} />
        <text class="tick" x={PAD.left - 4} y={y(max) + 4} text-anchor="end">
          {formatValue(max)}
        </text>
        <text class="tick" x={PAD.left - 4} y={y(0)} text-anchor="end">
          0
        </text>
        {all.length < 2 ? (
          <text class="tick" x={W / 2} y={H / 2} text-anchor="middle">
            collecting data…
          </text>
        ) : (
          series.map((s, i) => <polyline key={s.label} class={`series-${i}`} points={s.points.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" ")} />)
        )}
      </svg>
      <ul class="legend">
        {series.map((s, i) => (
          <li key={s.label} class={`series-${i}`}>
            {s.label}: {formatValue(s.points.at(-1)?.[1])} {unit}
          </li>
        ))}
      </ul>
    </figure>
  );
}

function formatValue(v: number | undefined): string {
  if (v === undefined || Number.isNaN(v)) return "–";
  return v >= 100 ? v.toFixed(0) : v >= 1 ? v.toFixed(1) : v.toPrecision(2);
}
